//! Fuzz the vmfs superblock and heartbeat-slot decoders, on raw bytes and on the same
//! bytes sealed with a valid magic, version and crc (so the geometry checks run).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::sealed;
use vinfra_vmfs::format::{HeartbeatSlot, RecordKind, Superblock, SECTOR};

fn superblock(b: &[u8]) {
    if let Ok(sb) = Superblock::decode(b) {
        // A decoded superblock re-encodes to a record that decodes the same.
        let again = Superblock::decode(&sb.encode());
        assert!(again.is_ok_and(|s| s.geo == sb.geo));
    }
}

fn heartbeat(b: &[u8]) {
    if let Ok(slot) = HeartbeatSlot::decode(b, 3) {
        assert!(HeartbeatSlot::decode(&slot.encode(), 3).is_ok_and(|s| s == slot));
    }
}

fuzz_target!(|data: &[u8]| {
    superblock(data);
    heartbeat(data);
    superblock(&sealed(RecordKind::Superblock, data, SECTOR));
    heartbeat(&sealed(RecordKind::HeartbeatSlot { host: 3 }, data, SECTOR));
});
