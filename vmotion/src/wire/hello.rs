//! The hello: 64 bytes each side sends in the clear before any frame.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::reader::Reader;
use crate::error::{Error, Result};

/// First eight bytes of a hello.
pub const MAGIC: [u8; 8] = *b"VINFRAVM";

/// The protocol version this build speaks (both ends of its range).
pub const PROTOCOL_VERSION: u16 = 1;

/// Size of a hello on the wire.
pub const HELLO_BYTES: usize = size_of::<HelloLayout>();

/// The hello's bytes; the one place its offsets are written.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct HelloLayout {
    magic: [u8; 8],
    version_min: U16,
    version_max: U16,
    role: u8,
    security: u8,
    reserved: U16,
    capabilities: U64,
    nonce: [u8; 32],
    reserved2: U32,
    crc: U32,
}
const _: () = assert!(size_of::<HelloLayout>() == 64);

/// Which end of the migration sent a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The host the VM leaves.
    Source,
    /// The host the VM moves to.
    Destination,
}

impl Role {
    fn to_wire(self) -> u8 {
        match self {
            Self::Source => 1,
            Self::Destination => 2,
        }
    }

    fn from_wire(value: u8) -> Result<Self> {
        match value {
            1 => Ok(Self::Source),
            2 => Ok(Self::Destination),
            _ => Err(Error::InvalidValue {
                what: "hello role",
                value: value.into(),
            }),
        }
    }
}

/// How frames are protected; both hellos must name the same mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// A crc32 per frame, no authentication (chosen explicitly on both sides).
    Plaintext,
    /// AES-256-GCM with per-direction keys.
    Aead,
}

impl SecurityMode {
    fn to_wire(self) -> u8 {
        match self {
            Self::Plaintext => 0,
            // 1 was ChaCha20-Poly1305 (builds before 2026-12-04): refused as unknown, so
            // such a peer fails at the hello rather than at the first tag.
            Self::Aead => 2,
        }
    }

    fn from_wire(value: u8) -> Result<Self> {
        match value {
            0 => Ok(Self::Plaintext),
            2 => Ok(Self::Aead),
            _ => Err(Error::InvalidValue {
                what: "hello security",
                value: value.into(),
            }),
        }
    }
}

/// The optional features a side offers; a session uses the [`intersection`](Self::intersection)
/// of both hellos. Bits this build does not know are kept, so a newer peer's offer survives
/// decoding, and dropped by the intersection with this side's own offer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// zstd-compressed `Pages` payloads.
    pub const ZSTD: Self = Self(1 << 0);
    /// Auto-converge (vCPU throttling).
    pub const AUTO_CONVERGE: Self = Self(1 << 1);
    /// vmfs disk lock handover.
    pub const DISK_HANDOVER: Self = Self(1 << 2);

    /// What both sides offer.
    #[must_use]
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether every bit of `other` is set here.
    #[must_use]
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One side's hello.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hello {
    /// Lowest protocol version this side speaks (≥ 1).
    pub version_min: u16,
    /// Highest protocol version this side speaks (≥ `version_min`).
    pub version_max: u16,
    /// Which end sent it.
    pub role: Role,
    /// The framing this side wants.
    pub security: SecurityMode,
    /// The optional features this side offers.
    pub capabilities: Capabilities,
    /// Fresh random bytes for this migration (key derivation, replay protection).
    pub nonce: [u8; 32],
}

impl Hello {
    /// The 64 bytes on the wire, crc included.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut layout = HelloLayout {
            magic: MAGIC,
            version_min: self.version_min.into(),
            version_max: self.version_max.into(),
            role: self.role.to_wire(),
            security: self.security.to_wire(),
            reserved: 0.into(),
            capabilities: self.capabilities.0.into(),
            nonce: self.nonce,
            reserved2: 0.into(),
            crc: 0.into(),
        };
        layout.crc = crc32fast::hash(&layout.as_bytes()[..CRC_AT]).into();
        let mut out = [0u8; HELLO_BYTES];
        out.copy_from_slice(layout.as_bytes());
        out
    }

    /// Decodes exactly [`HELLO_BYTES`] bytes: magic, crc, reserved fields, the version
    /// range, role and security are all checked.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(bytes, "hello");
        let layout: HelloLayout = reader.read()?;
        reader.finish()?;
        if layout.magic != MAGIC {
            return Err(Error::BadMagic);
        }
        let stored = layout.crc.get();
        let computed = crc32fast::hash(&layout.as_bytes()[..CRC_AT]);
        if stored != computed {
            return Err(Error::Checksum {
                what: "hello",
                stored,
                computed,
            });
        }
        if layout.reserved.get() != 0 {
            return Err(Error::Reserved {
                what: "hello reserved",
            });
        }
        if layout.reserved2.get() != 0 {
            return Err(Error::Reserved {
                what: "hello reserved2",
            });
        }
        let (min, max) = (layout.version_min.get(), layout.version_max.get());
        if min == 0 || min > max {
            return Err(Error::BadVersionRange { min, max });
        }
        Ok(Self {
            version_min: min,
            version_max: max,
            role: Role::from_wire(layout.role)?,
            security: SecurityMode::from_wire(layout.security)?,
            capabilities: Capabilities(layout.capabilities.get()),
            nonce: layout.nonce,
        })
    }
}

/// Where the hello's crc sits: it covers every byte before it.
const CRC_AT: usize = std::mem::offset_of!(HelloLayout, crc);
