#![no_main]
//! The VM state decoder on hostile input, two ways: the fuzzer's bytes as a whole blob
//! (the envelope's magic, version, length and crc32 checks), and the same bytes as the
//! payload of a valid envelope (`state::seal`), so they get past the checksum and reach
//! the postcard decoding of every vCPU and device field. Either way decode must return an
//! error or a state, never panic, and a state it accepts must survive another
//! encode/decode unchanged.
use libfuzzer_sys::fuzz_target;
use vinfra_vmm_core::state;

fn check(blob: &[u8]) {
    if let Ok(decoded) = state::decode(blob) {
        // Not byte-identical: postcard accepts non-minimal varints and KVM structs of
        // other sizes (zero-padded), so compare values instead.
        if let Ok(again) = state::encode(&decoded) {
            let twice = state::decode(&again).expect("an encoded state decodes");
            assert_eq!(twice, decoded);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(sealed) = state::seal(data) {
        check(&sealed);
    }
});
