//! Fuzz the vmfs inode and indirect-block decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::format::{decode_indirect, Inode};

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = Inode::decode(data, 7) {
        assert!(Inode::decode(&i.encode(), 7).is_ok_and(|j| j == i));
    }
    let _ = decode_indirect(data, data.len(), 7, 2);
});
