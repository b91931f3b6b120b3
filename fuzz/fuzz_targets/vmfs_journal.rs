//! Fuzz the vmfs journal header and transaction decoders, on raw bytes and sealed (valid
//! magic, version, host, length and crc, so the record list of a transaction is parsed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::sealed;
use vinfra_vmfs::format::{decode_journal_header, decode_journal_tail, RecordKind, Txn, SECTOR};

const MAX: usize = 1 << 20;

fn txn(b: &[u8]) {
    if let Ok(t) = Txn::decode(b, 1, MAX) {
        assert!(Txn::decode(&t.encode(), 1, MAX).is_ok_and(|u| u == t));
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_journal_header(data, 1);
    txn(data);
    let header = sealed(RecordKind::JournalHeader { host: 1 }, data, SECTOR);
    let _ = decode_journal_tail(&header, 1);
    txn(&sealed(RecordKind::JournalTxn { host: 1 }, data, MAX));
});
