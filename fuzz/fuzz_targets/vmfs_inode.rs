//! Fuzz the vmfs inode and indirect-block decoders, on raw bytes and sealed (valid magic,
//! version, inode number and crc, so the kind, size and pointer checks run).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::{sealed, sealed_block};
use vinfra_vmfs::format::{decode_indirect, encode_indirect, Inode, RecordKind, SECTOR};

fn inode(b: &[u8]) {
    if let Ok(i) = Inode::decode(b, 7) {
        assert!(Inode::decode(&i.encode(), 7).is_ok_and(|j| j == i));
    }
}

fn indirect(b: &[u8]) {
    if let Ok(ptrs) = decode_indirect(b, b.len(), 7, 2) {
        let again = encode_indirect(b.len(), 7, 2, &ptrs);
        assert!(decode_indirect(&again, b.len(), 7, 2).is_ok_and(|p| p == ptrs));
    }
}

fuzz_target!(|data: &[u8]| {
    inode(data);
    indirect(data);
    inode(&sealed(RecordKind::Inode { ino: 7 }, data, SECTOR));
    indirect(&sealed_block(RecordKind::IndirectBlock { ino: 7, level: 2 }, data));
});
