//! Fuzz the vmfs journal header and transaction decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::format::{decode_journal_header, Txn};

fuzz_target!(|data: &[u8]| {
    let _ = decode_journal_header(data, 1);
    if let Ok(t) = Txn::decode(data, 1, 1 << 20) {
        assert!(Txn::decode(&t.encode(), 1, 1 << 20).is_ok_and(|u| u == t));
    }
});
