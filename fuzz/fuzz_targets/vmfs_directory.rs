//! Fuzz the vmfs directory-block decoder (and the virtual-disk descriptor).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::format::{decode_dir, encode_dir};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_dir(data, data.len()) {
        let again = encode_dir(data.len(), &entries).map(|b| decode_dir(&b, data.len()));
        assert!(matches!(again, Some(Ok(e)) if e == entries));
    }
    let _ = vinfra_vmfs::disk::decode_descriptor(data);
});
