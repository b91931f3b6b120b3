//! Fuzz the vmfs directory-block and virtual-disk descriptor decoders; directory blocks
//! also sealed (valid magic, version and crc, so every entry's checks run).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::sealed_block;
use vinfra_vmfs::format::{decode_dir, encode_dir, RecordKind};

fn dir(b: &[u8]) {
    if let Ok(entries) = decode_dir(b, b.len()) {
        let again = encode_dir(b.len(), &entries).map(|e| decode_dir(&e, b.len()));
        assert!(matches!(again, Some(Ok(e)) if e == entries));
    }
}

fuzz_target!(|data: &[u8]| {
    dir(data);
    dir(&sealed_block(RecordKind::DirBlock, data));
    let _ = vinfra_vmfs::disk::decode_descriptor(data);
});
