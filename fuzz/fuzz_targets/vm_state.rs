#![no_main]
//! Feeds arbitrary bytes to the VM state decoder: it must return an error or a state,
//! never panic, and a state it accepts must re-encode to the same bytes.
use libfuzzer_sys::fuzz_target;
use vinfra_vmm_core::state;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = state::decode(data) {
        let again = state::encode(&decoded).expect("a decoded state re-encodes");
        assert_eq!(again, data, "decode/encode is not canonical");
    }
});
