//! Fuzz the ha packet decoder: raw bytes (refused without panicking, or else a forgery
//! that found the key), and the same bytes as a body behind a valid header and tag, so the
//! body checks run. Whatever opens must seal back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_ha::wire::{Codec, HEADER, TAG};
use vinfra_ha::ClusterKey;

fn check(codec: &Codec, b: &[u8]) {
    if let Ok(p) = codec.open(b) {
        assert_eq!(codec.seal(&p), b, "the encoding is canonical");
    }
}

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new(&ClusterKey::from_bytes([0x42; 32]));
    check(&codec, data);
    // data[0] picks the kind, the rest is the body, tagged with the right key.
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let Ok(n) = u16::try_from(body.len()) else {
        return;
    };
    let mut b = b"VHA1".to_vec();
    b.push(kind % 4);
    b.push(0);
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&[0; HEADER - 8]);
    b.extend_from_slice(body);
    let tag = codec.tag_of(&b);
    b.extend_from_slice(&tag[..TAG]);
    check(&codec, &b);
});
