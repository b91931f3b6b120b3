//! Fuzz the vcb index decoder (raw and behind a valid record envelope). Whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::vcb_record;
use vinfra_vcb::format::{check_record, decode_index, encode_index};

fn body(b: &[u8]) {
    if let Ok(file) = decode_index(b) {
        assert_eq!(encode_index(&file), b, "the encoding is canonical");
    }
}

fuzz_target!(|data: &[u8]| {
    body(data);
    if let Ok(payload) = check_record(&vcb_record(b"VCBI", data)) {
        body(payload);
    }
});
