//! The byte format: the hello exchanged in the clear, the frame around every later
//! message, and every message's payload. Byte tables in the crate's README ("Protocol").
//!
//! Encoding is infallible except where a value could not be decoded again (a list longer
//! than its `u16` count, a payload over [`MAX_PAYLOAD_BYTES`]); decoding checks every
//! length against the bytes present before use, rejects reserved bits that are set and
//! returns a typed [`Error`](crate::Error) on any input, never a panic.
//!
//! Frames are built in two steps so that the AEAD mode can replace the plaintext crc32
//! trailer: [`Message::encode_payload`] / [`FrameHeader::encode`] make the pieces, and
//! [`encode_plain_frame`] / [`decode_plain_frame`] put the crc32 framing around them.

mod frame;
mod hello;
mod message;
mod pages;
mod reader;

pub use frame::{
    decode_plain_frame, encode_plain_frame, FrameHeader, FLAG_ZSTD, FRAME_HEADER_BYTES,
    PLAIN_TRAILER_BYTES,
};
pub use hello::{Capabilities, Hello, Role, SecurityMode, HELLO_BYTES, MAGIC, PROTOCOL_VERSION};
pub use message::{
    AbortCode, CpuVerdict, CpuidLeaf, CpuidRegister, MemoryRegion, Message, MessageType,
    MissingFeature, RoundEnd, MAX_PAYLOAD_BYTES, MAX_REASON_BYTES,
};
pub use pages::{
    encode_pages_with, is_zero, BatchCount, Page, PageRef, Pages, PagesView, MAX_PAGES_PER_BATCH,
    PAGE_SIZE,
};

#[cfg(test)]
mod tests;
