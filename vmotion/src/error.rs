//! The crate's error type.

use crate::wire::{AbortCode, MemoryRegion, MessageType, MissingFeature};

/// Which end of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The host the VM leaves.
    Source,
    /// The host the VM moves to.
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// What went wrong. Decode failures name the structure and the field at fault (protocol
/// violations that the state machines answer with an `Abort`); the rest name the step of
/// the migration that failed. Whatever the error, the README's failure model says which
/// side runs the VM afterwards: before `Commit` it is the source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The two sides share no protocol version.
    #[error(
        "no common protocol version: ours {ours_min}..={ours_max}, peer's {peer_min}..={peer_max}"
    )]
    VersionMismatch {
        /// Our lowest version.
        ours_min: u16,
        /// Our highest version.
        ours_max: u16,
        /// The peer's lowest version.
        peer_min: u16,
        /// The peer's highest version.
        peer_max: u16,
    },
    /// One side wants encryption and the other plaintext.
    #[error("security mismatch: this side uses {ours}, the peer {peer}")]
    SecurityMismatch {
        /// Ours (`plaintext` or `aes-256-gcm`).
        ours: &'static str,
        /// The peer's.
        peer: &'static str,
    },
    /// The peer's hello names the same role as ours (two sources or two destinations).
    #[error("the peer is also a {0}")]
    RoleMismatch(Side),
    /// A frame's tag does not verify, or the peer's transcript hash differs: the peer
    /// does not hold the cluster key, or the stream was tampered with.
    #[error("authentication failed ({0}): wrong cluster key or a tampered stream")]
    Auth(&'static str),
    /// A frame arrived out of sequence (replayed, dropped or reordered).
    #[error("frame out of sequence: expected {expected}, got {got}")]
    Sequence {
        /// The sequence number due.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// The destination cannot show the guest CPU features it was shown on the source.
    #[error("the destination lacks CPU features the guest uses: {}", missing_list(.missing))]
    CpuIncompatible {
        /// What is missing.
        missing: Vec<MissingFeature>,
    },
    /// The source's memory layout is not the destination VM's.
    #[error(
        "memory layout mismatch: source {source_layout:?}, destination {destination_layout:?}"
    )]
    LayoutMismatch {
        /// The source's regions.
        source_layout: Vec<MemoryRegion>,
        /// The destination's regions.
        destination_layout: Vec<MemoryRegion>,
    },
    /// A message arrived that the protocol does not allow at this point.
    #[error("unexpected {got:?} message while {phase}")]
    UnexpectedMessage {
        /// What the receiver was doing.
        phase: &'static str,
        /// What arrived.
        got: MessageType,
    },
    /// A page frame outside the accepted memory layout.
    #[error("page frame {pfn:#x} is outside the memory layout")]
    PfnOutOfRange {
        /// The page frame number.
        pfn: u64,
    },
    /// A pre-copy round number went backwards.
    #[error("round {got} after round {current}")]
    RoundBackwards {
        /// The round in progress.
        current: u32,
        /// The round received.
        got: u32,
    },
    /// The migration ran past its time limit and was abandoned.
    #[error("the migration passed its time limit of {limit_ms} ms")]
    TimeLimit {
        /// The limit.
        limit_ms: u64,
    },
    /// The peer aborted.
    #[error("the {by} aborted ({code:?}): {reason}")]
    Aborted {
        /// Which side.
        by: Side,
        /// Its reason code.
        code: AbortCode,
        /// Its words.
        reason: String,
    },
    /// An operation on the VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The stream failed (connection refused, reset, closed, timed out).
    #[error("{op}: {kind}: {message}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error's words.
        message: String,
    },
    /// The peer closed the stream in the middle of the migration.
    #[error("the peer closed the connection while {phase}")]
    Closed {
        /// What this side was doing.
        phase: &'static str,
    },
    /// The migration's outcome is unknown to this side: the destination holds the whole
    /// VM and the source may or may not have committed (README, "Failure model").
    #[error("in doubt: {0}")]
    InDoubt(&'static str),
    /// The caller cancelled the migration.
    #[error("cancelled")]
    Cancelled,
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

impl Error {
    /// An I/O error as this crate's (kept comparable: the kind and the words).
    #[must_use]
    pub fn io(op: &'static str, e: &std::io::Error) -> Self {
        Error::Io {
            op,
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// A closed stream, said of what this side was doing (drivers do not know the
    /// phase); any other error as it is.
    #[must_use]
    pub fn closed_while(self, phase: &'static str) -> Self {
        match self {
            Error::Closed { .. } => Error::Closed { phase },
            e => e,
        }
    }

    /// The abort code this error is reported to the peer with.
    #[must_use]
    pub fn abort_code(&self) -> AbortCode {
        match self {
            Error::VersionMismatch { .. } => AbortCode::Version,
            Error::SecurityMismatch { .. } => AbortCode::Security,
            Error::Auth(_) | Error::Sequence { .. } => AbortCode::Auth,
            Error::CpuIncompatible { .. } => AbortCode::Cpu,
            Error::LayoutMismatch { .. } => AbortCode::MemoryLayout,
            Error::TimeLimit { .. } => AbortCode::TimeLimit,
            Error::Vm(e) if e.is_lock_refused() => AbortCode::LockRefused,
            Error::Vm(_) => AbortCode::VmError,
            Error::Cancelled => AbortCode::Cancelled,
            Error::Aborted { code, .. } => *code,
            _ => AbortCode::Protocol,
        }
    }
}

fn missing_list(missing: &[MissingFeature]) -> String {
    let parts: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "leaf {:#x}.{} {:?} bits {:#x}",
                m.function, m.index, m.register, m.mask
            )
        })
        .collect();
    parts.join(", ")
}

/// A VM operation the migration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmOp {
    /// Start logging dirty pages.
    EnableDirtyLog,
    /// Fetch and clear the dirty log.
    FetchDirty,
    /// Stop logging dirty pages.
    DisableDirtyLog,
    /// Throttle the vCPUs.
    Throttle,
    /// Park the vCPUs.
    Pause,
    /// Let them run.
    Resume,
    /// Capture the vCPU and device state.
    CaptureState,
    /// Flush the disks and release their exclusive locks.
    ReleaseDisks,
    /// Take the disks' exclusive locks (back).
    AcquireDisks,
    /// Build the VM from the received state.
    Restore,
    /// Stop the VM for good (the other side has it).
    Discard,
    /// Read guest memory (a page to send).
    ReadMemory,
    /// Write guest memory (a page received).
    WriteMemory,
}

/// Why a VM operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmErrorKind {
    /// A disk's exclusive lock is held by another live host.
    LockRefused,
    /// Anything else.
    Failed,
}

/// A failed VM operation: which, why, and the VM's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vm {op:?} failed: {message}")]
pub struct VmError {
    /// The operation.
    pub op: VmOp,
    /// The kind of failure.
    pub kind: VmErrorKind,
    /// The VM's error, as text (the VMM's error types stay out of the protocol).
    pub message: String,
}

impl VmError {
    /// A failure of `op`.
    pub fn failed(op: VmOp, message: impl std::fmt::Display) -> Self {
        Self {
            op,
            kind: VmErrorKind::Failed,
            message: message.to_string(),
        }
    }

    /// A refused disk lock.
    pub fn lock_refused(op: VmOp, message: impl std::fmt::Display) -> Self {
        Self {
            op,
            kind: VmErrorKind::LockRefused,
            message: message.to_string(),
        }
    }

    /// Whether a disk lock was refused.
    #[must_use]
    pub fn is_lock_refused(&self) -> bool {
        self.kind == VmErrorKind::LockRefused
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
