//! Fuzz the vcb manifest decoder: the record envelope on raw bytes, the body decoder on
//! raw bytes and behind a valid envelope. Whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::vcb_record;
use vinfra_vcb::format::{check_record, decode_manifest, encode_manifest};

fn body(b: &[u8]) {
    if let Ok(m) = decode_manifest(b) {
        let again = encode_manifest(&m);
        assert_eq!(again, b, "the encoding is canonical");
        assert!(decode_manifest(&again).is_ok_and(|n| n == m));
        for d in &m.disks {
            // A zero run may cover billions of grains (a huge sparse disk): walking every
            // grain is for small maps only; the chunk grains are bounded by the input.
            if d.grains.len() <= 1 << 16 {
                assert_eq!(d.grains.iter().count() as u64, d.grains.len());
            }
            assert!(d.grains.chunks().all(|(i, _)| i < d.grains.len()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = check_record(data);
    body(data);
    if let Ok(payload) = check_record(&vcb_record(b"VCBM", data)) {
        body(payload);
    }
});
