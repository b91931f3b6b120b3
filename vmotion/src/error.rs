//! The crate's error type.

/// What went wrong. Every decode failure names the structure and the field at fault; all
/// of them are protocol violations that the state machines answer with an `Abort`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the structure needs.
    #[error("{what} truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes present.
        got: u64,
    },
    /// Bytes left over after the structure.
    #[error("{what}: {extra} trailing bytes")]
    TrailingBytes {
        /// The structure being decoded.
        what: &'static str,
        /// How many bytes are left over.
        extra: u64,
    },
    /// The hello does not start with `VINFRAVM`.
    #[error("hello: bad magic")]
    BadMagic,
    /// A stored crc32 does not match the bytes.
    #[error("{what}: crc32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The structure being decoded.
        what: &'static str,
        /// The crc on the wire.
        stored: u32,
        /// The crc of the bytes received.
        computed: u32,
    },
    /// A reserved field or padding is not zero.
    #[error("{what}: reserved bits are not zero")]
    Reserved {
        /// The field.
        what: &'static str,
    },
    /// A hello's version range is empty or starts at 0.
    #[error("hello: bad version range {min}..={max}")]
    BadVersionRange {
        /// `version_min`.
        min: u16,
        /// `version_max`.
        max: u16,
    },
    /// A field holds a value the protocol does not define.
    #[error("{what}: invalid value {value}")]
    InvalidValue {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A frame's message type is not one the protocol defines.
    #[error("frame: unknown message type {0:#04x}")]
    UnknownMessageType(u8),
    /// A length over its cap (checked before anything is allocated).
    #[error("{what}: {len} over the maximum of {max}")]
    TooLarge {
        /// The field or structure.
        what: &'static str,
        /// The length found or requested.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// A `Pages` batch whose bitmaps and page data do not agree with its length.
    #[error("pages batch: {0}")]
    PagesBatch(&'static str),
    /// A frame payload this build does not decode (a zstd-compressed payload).
    #[error("frame: {0} is not supported")]
    Unsupported(&'static str),
    /// An `Abort` reason that is not UTF-8.
    #[error("abort: reason is not utf-8")]
    ReasonNotUtf8,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
