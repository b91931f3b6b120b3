//! Fuzz the vmfs lock-record and resource-cluster decoders, on raw bytes and sealed
//! (valid magic, version, index and crc, so the mode, holder and bitmap checks run).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::{sealed, sealed_block};
use vinfra_vmfs::format::{ClusterBlock, LockRecord, RecordKind, SECTOR};

fn lock(b: &[u8]) {
    if let Ok(r) = LockRecord::decode(b, 200) {
        assert!(LockRecord::decode(&r.encode(), 200).is_ok_and(|s| s == r));
    }
}

fn cluster(b: &[u8]) {
    if let Ok(c) = ClusterBlock::decode(b, b.len(), 1, 256) {
        let again = ClusterBlock::decode(&c.encode(b.len()), b.len(), 1, 256);
        assert!(again.is_ok_and(|d| d == c));
    }
}

fuzz_target!(|data: &[u8]| {
    lock(data);
    cluster(data);
    lock(&sealed(RecordKind::LockRecord { index: 200 }, data, SECTOR));
    cluster(&sealed_block(RecordKind::ClusterBlock { index: 1, bpc: 256 }, data));
});
