#![no_main]
//! Feeds arbitrary bytes to the VM state decoder: it must return an error or a state,
//! never panic, and a state it accepts must survive another encode/decode unchanged.
use libfuzzer_sys::fuzz_target;
use vinfra_vmm_core::state;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = state::decode(data) {
        // Not byte-identical: postcard accepts non-minimal varints and KVM structs of
        // other sizes (zero-padded), so compare values instead.
        if let Ok(again) = state::encode(&decoded) {
            let twice = state::decode(&again).expect("an encoded state decodes");
            assert_eq!(twice, decoded);
        }
    }
});
