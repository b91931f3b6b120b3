//! Fuzz the vmotion wire decoders: the hello and the plaintext frame, on raw bytes and on
//! the same bytes behind a valid magic / header and crc32 (so the field and payload checks
//! run). Whatever decodes must re-encode to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmotion::wire::{
    decode_plain_frame, encode_plain_frame, FrameHeader, Hello, MessageType, FRAME_HEADER_BYTES,
    HELLO_BYTES, MAGIC,
};

fn hello(b: &[u8]) {
    if let Ok(h) = Hello::decode(b) {
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
    }
}

fn frame(b: &[u8]) {
    if let Ok((header, message)) = decode_plain_frame(b) {
        let again = encode_plain_frame(header.seq, &message).expect("a decoded message encodes");
        assert_eq!(decode_plain_frame(&again), Ok((header, message)));
        assert_eq!(again, b, "the encoding is canonical");
    }
}

/// `data` as a hello's fields behind the magic, with a valid crc.
fn sealed_hello(data: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(
        data.iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(HELLO_BYTES - 12),
    );
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The first byte as the message type (any known one), the rest as the payload, behind a
/// clean header (written by `FrameHeader::encode`, the layout's one source) and a valid
/// crc. Unknown type bytes are the raw path's job.
fn sealed_frame(data: &[u8]) -> Option<Vec<u8>> {
    let (ty, payload) = data.split_first()?;
    let header = FrameHeader {
        message_type: MessageType::from_wire(*ty).ok()?,
        flags: 0,
        len: u32::try_from(payload.len()).ok()?,
        seq: 7,
    };
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len() + 4);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    hello(data);
    frame(data);
    hello(&sealed_hello(data));
    if let Some(sealed) = sealed_frame(data) {
        frame(&sealed);
    }
});
