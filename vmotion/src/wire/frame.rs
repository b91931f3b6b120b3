//! The frame header and the plaintext (crc32) framing.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::message::{Message, MessageType, MAX_PAYLOAD_BYTES};
use super::reader::Reader;
use crate::error::{Error, Result};

/// Size of a frame header.
pub const FRAME_HEADER_BYTES: usize = size_of::<FrameHeaderLayout>();

/// Size of the crc32 trailer of a plaintext frame.
pub const PLAIN_TRAILER_BYTES: usize = 4;

/// `flags` bit 0: the payload is zstd-compressed (only where negotiated).
pub const FLAG_ZSTD: u8 = 1 << 0;

/// The frame header's bytes; the one place its offsets are written.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct FrameHeaderLayout {
    message_type: u8,
    flags: u8,
    reserved: U16,
    len: U32,
    seq: U64,
}
const _: () = assert!(size_of::<FrameHeaderLayout>() == 16);

/// A decoded frame header: what follows it and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The message the payload holds.
    pub message_type: MessageType,
    /// Flag bits ([`FLAG_ZSTD`]); unknown bits are refused.
    pub flags: u8,
    /// Payload bytes on the wire (≤ [`MAX_PAYLOAD_BYTES`]).
    pub len: u32,
    /// This direction's sequence number.
    pub seq: u64,
}

impl FrameHeader {
    /// The 16 bytes on the wire.
    #[must_use]
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let layout = FrameHeaderLayout {
            message_type: self.message_type.to_wire(),
            flags: self.flags,
            reserved: 0.into(),
            len: self.len.into(),
            seq: self.seq.into(),
        };
        let mut out = [0u8; FRAME_HEADER_BYTES];
        out.copy_from_slice(layout.as_bytes());
        out
    }

    /// Decodes a header read off a stream: the type must be known, the flags and reserved
    /// bits clear, and `len` within [`MAX_PAYLOAD_BYTES`], so that a reader can then
    /// allocate and read `len` + trailer bytes safely.
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<Self> {
        let layout = FrameHeaderLayout::read_from_bytes(bytes).map_err(|_| Error::Truncated {
            what: "frame header",
            needed: FRAME_HEADER_BYTES as u64,
            got: bytes.len() as u64,
        })?;
        let message_type = MessageType::from_wire(layout.message_type)?;
        if layout.flags & !FLAG_ZSTD != 0 {
            return Err(Error::Reserved {
                what: "frame flags",
            });
        }
        if layout.reserved.get() != 0 {
            return Err(Error::Reserved {
                what: "frame reserved",
            });
        }
        let len = layout.len.get();
        if len > MAX_PAYLOAD_BYTES {
            return Err(Error::TooLarge {
                what: "frame payload",
                len: len.into(),
                max: MAX_PAYLOAD_BYTES.into(),
            });
        }
        Ok(Self {
            message_type,
            flags: layout.flags,
            len,
            seq: layout.seq.get(),
        })
    }

    /// Bytes the payload and a trailer of `trailer_bytes` take after the header.
    #[must_use]
    pub fn body_bytes(&self, trailer_bytes: usize) -> usize {
        // `len` is at most 16 MiB, so this fits any usize this crate builds for.
        self.len as usize + trailer_bytes
    }
}

/// The header for `payload` of `message_type`, refusing a payload over the cap.
pub(super) fn header_for(
    seq: u64,
    message_type: MessageType,
    payload: &[u8],
) -> Result<FrameHeader> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_PAYLOAD_BYTES)
        .ok_or(Error::TooLarge {
            what: "frame payload",
            len: payload.len() as u64,
            max: MAX_PAYLOAD_BYTES.into(),
        })?;
    Ok(FrameHeader {
        message_type,
        flags: 0,
        len,
        seq,
    })
}

/// A whole plaintext frame: header, payload and the crc32 of both.
///
/// Fails only where the message could not be decoded again: a payload over
/// [`MAX_PAYLOAD_BYTES`] or a field over its own cap (see [`Message::encode_payload`]).
pub fn encode_plain_frame(seq: u64, message: &Message) -> Result<Vec<u8>> {
    let payload = message.encode_payload()?;
    let header = header_for(seq, message.message_type(), &payload)?;
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len() + PLAIN_TRAILER_BYTES);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes exactly one plaintext frame: the header, the length against the bytes
/// present, the crc32, then the payload.
pub fn decode_plain_frame(bytes: &[u8]) -> Result<(FrameHeader, Message)> {
    let mut reader = Reader::new(bytes, "frame");
    let head: [u8; FRAME_HEADER_BYTES] = reader.read()?;
    let header = FrameHeader::decode(&head)?;
    let body = header.body_bytes(PLAIN_TRAILER_BYTES);
    if reader.remaining() < body {
        return Err(Error::Truncated {
            what: "frame",
            needed: (FRAME_HEADER_BYTES + body) as u64,
            got: bytes.len() as u64,
        });
    }
    let payload = reader.take(header.len as usize)?;
    let trailer: [u8; PLAIN_TRAILER_BYTES] = reader.read()?;
    reader.finish()?;
    let stored = u32::from_le_bytes(trailer);
    let computed = crc32fast::hash(&bytes[..FRAME_HEADER_BYTES + payload.len()]);
    if stored != computed {
        return Err(Error::Checksum {
            what: "frame",
            stored,
            computed,
        });
    }
    if header.flags & FLAG_ZSTD != 0 {
        return Err(Error::Unsupported("a zstd-compressed payload"));
    }
    let message = Message::decode_payload(header.message_type, payload)?;
    Ok((header, message))
}
