//! Fuzz the vmfs superblock and heartbeat-slot decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::format::{HeartbeatSlot, Superblock};

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::decode(data) {
        // A decoded superblock re-encodes to a record that decodes the same.
        let again = Superblock::decode(&sb.encode());
        assert!(again.is_ok_and(|s| s.geo == sb.geo));
    }
    let _ = HeartbeatSlot::decode(data, 3);
});
