//! Fuzz the vmfs lock-record and resource-cluster decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::format::{ClusterBlock, LockRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = LockRecord::decode(data, 200) {
        assert!(LockRecord::decode(&r.encode(), 200).is_ok_and(|s| s == r));
    }
    let _ = ClusterBlock::decode(data, data.len(), 1, 256);
});
