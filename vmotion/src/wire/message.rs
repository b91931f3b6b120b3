//! Every message a frame carries, and its payload encoding.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::pages::{Pages, PAGE_SIZE};
use super::reader::{put, Reader};
use crate::error::{Error, Result};

/// Largest payload a frame carries (16 MiB), checked before anything is read or allocated.
/// It bounds a message, so it lives with the messages; frames check it from the header.
pub const MAX_PAYLOAD_BYTES: u32 = 16 << 20;

/// Longest `Abort` reason, in bytes of UTF-8.
pub const MAX_REASON_BYTES: usize = 1024;

macro_rules! message_types {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// A frame's `type` byte.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $($(#[$doc])* $name,)*
        }

        impl MessageType {
            /// The byte on the wire.
            #[must_use]
            pub fn to_wire(self) -> u8 {
                match self {
                    $(Self::$name => $value,)*
                }
            }

            /// The type a byte names; an unknown byte is an error.
            pub fn from_wire(value: u8) -> Result<Self> {
                match value {
                    $($value => Ok(Self::$name),)*
                    _ => Err(Error::UnknownMessageType(value)),
                }
            }
        }
    };
}

message_types! {
    /// [`Message::Auth`].
    Auth = 0x01,
    /// [`Message::CpuFeatures`].
    CpuFeatures = 0x02,
    /// [`Message::CpuVerdict`].
    CpuVerdict = 0x03,
    /// [`Message::MemoryLayout`].
    MemoryLayout = 0x04,
    /// [`Message::LayoutAccepted`].
    LayoutAccepted = 0x05,
    /// [`Message::Pages`].
    Pages = 0x06,
    /// [`Message::RoundEnd`].
    RoundEnd = 0x07,
    /// [`Message::State`].
    State = 0x08,
    /// [`Message::Handover`].
    Handover = 0x09,
    /// [`Message::Ready`].
    Ready = 0x0a,
    /// [`Message::Commit`].
    Commit = 0x0b,
    /// [`Message::Done`].
    Done = 0x0c,
    /// [`Message::Abort`].
    Abort = 0x0d,
}

/// One CPUID leaf as the guest sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CpuidLeaf {
    /// EAX input.
    pub function: u32,
    /// ECX input (sub-leaf).
    pub index: u32,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct CpuidLeafLayout {
    function: U32,
    index: U32,
    eax: U32,
    ebx: U32,
    ecx: U32,
    edx: U32,
}
const _: () = assert!(size_of::<CpuidLeafLayout>() == 24);

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuidRegister {
    /// EAX (0 on the wire).
    Eax,
    /// EBX (1).
    Ebx,
    /// ECX (2).
    Ecx,
    /// EDX (3).
    Edx,
}

impl CpuidRegister {
    fn to_wire(self) -> u8 {
        match self {
            Self::Eax => 0,
            Self::Ebx => 1,
            Self::Ecx => 2,
            Self::Edx => 3,
        }
    }

    fn from_wire(value: u8) -> Result<Self> {
        match value {
            0 => Ok(Self::Eax),
            1 => Ok(Self::Ebx),
            2 => Ok(Self::Ecx),
            3 => Ok(Self::Edx),
            _ => Err(Error::InvalidValue {
                what: "cpu verdict register",
                value: value.into(),
            }),
        }
    }
}

/// Feature bits the guest was shown that the destination cannot show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MissingFeature {
    /// The leaf's EAX input.
    pub function: u32,
    /// The leaf's ECX input.
    pub index: u32,
    /// The register.
    pub register: CpuidRegister,
    /// The missing bits.
    pub mask: u32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct MissingFeatureLayout {
    function: U32,
    index: U32,
    register: u8,
    pad: [u8; 3],
    mask: U32,
}
const _: () = assert!(size_of::<MissingFeatureLayout>() == 16);

/// The destination's answer to `CpuFeatures`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuVerdict {
    /// Whether the destination can show the guest everything it was shown.
    pub ok: bool,
    /// What it cannot show.
    pub missing: Vec<MissingFeature>,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct CpuVerdictHead {
    ok: u8,
    count: U16,
}

/// One guest memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryRegion {
    /// Guest physical base address.
    pub base: u64,
    /// Size in bytes.
    pub bytes: u64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct MemoryRegionLayout {
    base: U64,
    bytes: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct MemoryLayoutHead {
    page_size: U32,
    count: U16,
}

/// The end of a pre-copy round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoundEnd {
    /// The round that ended.
    pub round: u32,
    /// Pages sent in it.
    pub pages_sent: u64,
    /// Pages dirty after it (informational).
    pub pages_left: u64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RoundEndLayout {
    round: U32,
    pages_sent: U64,
    pages_left: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AbortHead {
    code: U16,
    len: U16,
}

/// Why a side aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortCode {
    /// No common protocol version (1).
    Version,
    /// The hellos name different security modes (2).
    Security,
    /// Authentication failed (3).
    Auth,
    /// The destination cannot show the guest's CPU features (4).
    Cpu,
    /// The memory layout does not match the destination's VM (5).
    MemoryLayout,
    /// The time limit passed (6).
    TimeLimit,
    /// A disk lock was refused (7).
    LockRefused,
    /// The VM failed (8).
    VmError,
    /// The peer broke the protocol (9).
    Protocol,
    /// The user cancelled (10).
    Cancelled,
}

impl AbortCode {
    const ALL: [Self; 10] = [
        Self::Version,
        Self::Security,
        Self::Auth,
        Self::Cpu,
        Self::MemoryLayout,
        Self::TimeLimit,
        Self::LockRefused,
        Self::VmError,
        Self::Protocol,
        Self::Cancelled,
    ];

    /// The code on the wire.
    #[must_use]
    pub fn to_wire(self) -> u16 {
        match self {
            Self::Version => 1,
            Self::Security => 2,
            Self::Auth => 3,
            Self::Cpu => 4,
            Self::MemoryLayout => 5,
            Self::TimeLimit => 6,
            Self::LockRefused => 7,
            Self::VmError => 8,
            Self::Protocol => 9,
            Self::Cancelled => 10,
        }
    }

    /// The code a wire value names; an unknown value is an error.
    pub fn from_wire(value: u16) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|code| code.to_wire() == value)
            .ok_or(Error::InvalidValue {
                what: "abort code",
                value: value.into(),
            })
    }
}

/// Every message a frame carries (README, "Messages").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// SHA-256 of both hellos, the first frame each side sends.
    Auth([u8; 32]),
    /// The CPUID leaves the guest was shown (source to destination).
    CpuFeatures(Vec<CpuidLeaf>),
    /// Whether the destination can show them.
    CpuVerdict(CpuVerdict),
    /// The guest's memory regions, in 4 KiB pages.
    MemoryLayout(Vec<MemoryRegion>),
    /// The destination's VM has the same layout.
    LayoutAccepted,
    /// A batch of up to 512 consecutive page frames.
    Pages(Pages),
    /// The end of a pre-copy round.
    RoundEnd(RoundEnd),
    /// The VM's opaque state blob.
    State(Vec<u8>),
    /// The source released this many disk locks.
    Handover {
        /// How many.
        disks: u16,
    },
    /// The destination restored the VM and holds its disks; not running.
    Ready,
    /// The point of no return for the source.
    Commit,
    /// The destination resumed the VM.
    Done {
        /// The destination's clock when it resumed.
        resumed_at_ms: u64,
    },
    /// Either side gives up before `Commit`.
    Abort {
        /// Why.
        code: AbortCode,
        /// A human-readable reason (≤ [`MAX_REASON_BYTES`] bytes).
        reason: String,
    },
}

impl Message {
    /// The frame type for this message.
    #[must_use]
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Auth(_) => MessageType::Auth,
            Self::CpuFeatures(_) => MessageType::CpuFeatures,
            Self::CpuVerdict(_) => MessageType::CpuVerdict,
            Self::MemoryLayout(_) => MessageType::MemoryLayout,
            Self::LayoutAccepted => MessageType::LayoutAccepted,
            Self::Pages(_) => MessageType::Pages,
            Self::RoundEnd(_) => MessageType::RoundEnd,
            Self::State(_) => MessageType::State,
            Self::Handover { .. } => MessageType::Handover,
            Self::Ready => MessageType::Ready,
            Self::Commit => MessageType::Commit,
            Self::Done { .. } => MessageType::Done,
            Self::Abort { .. } => MessageType::Abort,
        }
    }

    /// The payload bytes. Fails where the value could not be decoded again: a list over
    /// 65 535 entries, a `Pages` batch outside 1..=512 pages or past the last pfn, a
    /// reason over [`MAX_REASON_BYTES`], a payload over the frame cap.
    pub fn encode_payload(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Self::Auth(hash) => out.extend_from_slice(hash),
            Self::CpuFeatures(leaves) => {
                put(&mut out, &count16("cpu features", leaves.len())?);
                for leaf in leaves {
                    put(
                        &mut out,
                        &CpuidLeafLayout {
                            function: leaf.function.into(),
                            index: leaf.index.into(),
                            eax: leaf.eax.into(),
                            ebx: leaf.ebx.into(),
                            ecx: leaf.ecx.into(),
                            edx: leaf.edx.into(),
                        },
                    );
                }
            }
            Self::CpuVerdict(verdict) => {
                put(
                    &mut out,
                    &CpuVerdictHead {
                        ok: verdict.ok.into(),
                        count: count16("cpu verdict", verdict.missing.len())?,
                    },
                );
                for missing in &verdict.missing {
                    put(
                        &mut out,
                        &MissingFeatureLayout {
                            function: missing.function.into(),
                            index: missing.index.into(),
                            register: missing.register.to_wire(),
                            pad: [0; 3],
                            mask: missing.mask.into(),
                        },
                    );
                }
            }
            Self::MemoryLayout(regions) => {
                put(
                    &mut out,
                    &MemoryLayoutHead {
                        page_size: PAGE_SIZE_U32.into(),
                        count: count16("memory layout", regions.len())?,
                    },
                );
                for region in regions {
                    put(
                        &mut out,
                        &MemoryRegionLayout {
                            base: region.base.into(),
                            bytes: region.bytes.into(),
                        },
                    );
                }
            }
            Self::Pages(pages) => pages.encode(&mut out)?,
            Self::RoundEnd(end) => put(
                &mut out,
                &RoundEndLayout {
                    round: end.round.into(),
                    pages_sent: end.pages_sent.into(),
                    pages_left: end.pages_left.into(),
                },
            ),
            Self::State(blob) => out.extend_from_slice(blob),
            Self::Handover { disks } => put(&mut out, &U16::new(*disks)),
            Self::Done { resumed_at_ms } => put(&mut out, &U64::new(*resumed_at_ms)),
            Self::Abort { code, reason } => {
                if reason.len() > MAX_REASON_BYTES {
                    return Err(reason_too_long(reason.len()));
                }
                put(
                    &mut out,
                    &AbortHead {
                        code: code.to_wire().into(),
                        len: count16("abort reason", reason.len())?,
                    },
                );
                out.extend_from_slice(reason.as_bytes());
            }
            Self::LayoutAccepted | Self::Ready | Self::Commit => {}
        }
        if out.len() > MAX_PAYLOAD_BYTES as usize {
            return Err(Error::TooLarge {
                what: "frame payload",
                len: out.len() as u64,
                max: MAX_PAYLOAD_BYTES.into(),
            });
        }
        Ok(out)
    }

    /// Decodes the payload of a frame of type `message_type`: every length is checked
    /// against the bytes present, and the payload must be consumed exactly.
    pub fn decode_payload(message_type: MessageType, payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload, payload_name(message_type));
        let message = match message_type {
            MessageType::Auth => Self::Auth(r.read()?),
            MessageType::CpuFeatures => {
                let count: U16 = r.read()?;
                let leaves = read_list(&mut r, count.get(), |l: CpuidLeafLayout| {
                    Ok(CpuidLeaf {
                        function: l.function.get(),
                        index: l.index.get(),
                        eax: l.eax.get(),
                        ebx: l.ebx.get(),
                        ecx: l.ecx.get(),
                        edx: l.edx.get(),
                    })
                })?;
                Self::CpuFeatures(leaves)
            }
            MessageType::CpuVerdict => {
                let head: CpuVerdictHead = r.read()?;
                let ok = match head.ok {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(Error::InvalidValue {
                            what: "cpu verdict ok",
                            value: other.into(),
                        })
                    }
                };
                let missing = read_list(&mut r, head.count.get(), |m: MissingFeatureLayout| {
                    if m.pad != [0; 3] {
                        return Err(Error::Reserved {
                            what: "cpu verdict padding",
                        });
                    }
                    Ok(MissingFeature {
                        function: m.function.get(),
                        index: m.index.get(),
                        register: CpuidRegister::from_wire(m.register)?,
                        mask: m.mask.get(),
                    })
                })?;
                Self::CpuVerdict(CpuVerdict { ok, missing })
            }
            MessageType::MemoryLayout => {
                let head: MemoryLayoutHead = r.read()?;
                if head.page_size.get() != PAGE_SIZE_U32 {
                    return Err(Error::InvalidValue {
                        what: "memory layout page size",
                        value: head.page_size.get().into(),
                    });
                }
                let regions = read_list(&mut r, head.count.get(), |m: MemoryRegionLayout| {
                    Ok(MemoryRegion {
                        base: m.base.get(),
                        bytes: m.bytes.get(),
                    })
                })?;
                Self::MemoryLayout(regions)
            }
            MessageType::LayoutAccepted => Self::LayoutAccepted,
            MessageType::Pages => Self::Pages(Pages::decode(&mut r)?),
            MessageType::RoundEnd => {
                let end: RoundEndLayout = r.read()?;
                Self::RoundEnd(RoundEnd {
                    round: end.round.get(),
                    pages_sent: end.pages_sent.get(),
                    pages_left: end.pages_left.get(),
                })
            }
            MessageType::State => {
                let blob = r.rest();
                if blob.len() > MAX_PAYLOAD_BYTES as usize {
                    return Err(Error::TooLarge {
                        what: "state blob",
                        len: blob.len() as u64,
                        max: MAX_PAYLOAD_BYTES.into(),
                    });
                }
                Self::State(blob.to_vec())
            }
            MessageType::Handover => {
                let disks: U16 = r.read()?;
                Self::Handover { disks: disks.get() }
            }
            MessageType::Ready => Self::Ready,
            MessageType::Commit => Self::Commit,
            MessageType::Done => {
                let at: U64 = r.read()?;
                Self::Done {
                    resumed_at_ms: at.get(),
                }
            }
            MessageType::Abort => {
                let head: AbortHead = r.read()?;
                let code = AbortCode::from_wire(head.code.get())?;
                let len = usize::from(head.len.get());
                if len > MAX_REASON_BYTES {
                    return Err(reason_too_long(len));
                }
                let reason = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| Error::ReasonNotUtf8)?
                    .to_owned();
                Self::Abort { code, reason }
            }
        };
        r.finish()?;
        Ok(message)
    }
}

/// The page size as the `MemoryLayout` message states it.
const PAGE_SIZE_U32: u32 = {
    assert!(PAGE_SIZE <= u32::MAX as usize);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "asserted to fit just above"
    )]
    let size = PAGE_SIZE as u32;
    size
};

/// Reads `count` fixed-size entries, checking that they fit before allocating.
fn read_list<L, T>(
    r: &mut Reader<'_>,
    count: u16,
    mut convert: impl FnMut(L) -> Result<T>,
) -> Result<Vec<T>>
where
    L: FromBytes + KnownLayout + Immutable + Unaligned,
{
    let count = usize::from(count);
    r.ensure(count * size_of::<L>())?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(convert(r.read()?)?);
    }
    Ok(out)
}

/// A list length as its `u16` count, or the error for a list too long to send.
fn count16(what: &'static str, len: usize) -> Result<U16> {
    u16::try_from(len)
        .map(U16::new)
        .map_err(|_| Error::TooLarge {
            what,
            len: len as u64,
            max: u16::MAX.into(),
        })
}

fn reason_too_long(len: usize) -> Error {
    Error::TooLarge {
        what: "abort reason",
        len: len as u64,
        max: MAX_REASON_BYTES as u64,
    }
}

/// The name of a payload in errors.
fn payload_name(message_type: MessageType) -> &'static str {
    match message_type {
        MessageType::Auth => "auth payload",
        MessageType::CpuFeatures => "cpu features payload",
        MessageType::CpuVerdict => "cpu verdict payload",
        MessageType::MemoryLayout => "memory layout payload",
        MessageType::LayoutAccepted => "layout accepted payload",
        MessageType::Pages => "pages payload",
        MessageType::RoundEnd => "round end payload",
        MessageType::State => "state payload",
        MessageType::Handover => "handover payload",
        MessageType::Ready => "ready payload",
        MessageType::Commit => "commit payload",
        MessageType::Done => "done payload",
        MessageType::Abort => "abort payload",
    }
}
