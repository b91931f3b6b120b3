//! The crate's error type and the typed answers inside it (who holds a lock and how this
//! host judges it, why a handle or a configuration is refused).
//!
//! A leaf module (it depends only on the lease's [`Verdict`]), so every layer can use it.

use std::fmt;
use std::io;

use crate::lease::Verdict;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on a volume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device failed an I/O.
    #[error("device {op} at offset {offset}: {source}")]
    Io {
        /// The operation (read, write, flush, ...).
        op: &'static str,
        /// Byte offset of the I/O.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An access beyond the end of the device.
    #[error("access at {offset}+{len} beyond the device end {dev_len}")]
    OutOfBounds {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Device length.
        dev_len: u64,
    },
    /// An on-disk structure failed its checks.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What structure.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// An on-disk structure has an unknown version.
    #[error("unsupported {what} version {found}")]
    Version {
        /// What structure.
        what: &'static str,
        /// The version found.
        found: u32,
    },
    /// A lock is held by a live host (or one whose lease has not expired yet).
    #[error("{what} locked by host {holder}, {verdict}")]
    Locked {
        /// What is locked ("/a/b", "cluster 3", ...).
        what: String,
        /// One holder.
        holder: u32,
        /// Why it is not ours: the holder's lease verdict ("alive, heartbeat 2 s ago"), or
        /// a reason on this side (contention, this host holds it already).
        verdict: LockVerdict,
    },
    /// This host could not renew its heartbeat in time and stopped using its locks.
    #[error("host {host} fenced itself: heartbeat not renewed for half a lease")]
    Fenced {
        /// This host.
        host: u32,
    },
    /// The heartbeat slot is in use by a live host.
    #[error("heartbeat slot {host} is in use: {state}")]
    SlotBusy {
        /// The slot.
        host: u32,
        /// Its liveness, or why it could not be taken.
        state: SlotState,
    },
    /// No such file or directory.
    #[error("{0}: not found")]
    NotFound(String),
    /// The name exists.
    #[error("{0}: already exists")]
    Exists(String),
    /// A path component is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// The operation needs a file.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// The directory is not empty.
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    /// A bad path or name.
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// No free block.
    #[error("no space left on the volume")]
    NoSpace,
    /// No free inode.
    #[error("no free inode left on the volume")]
    NoInodes,
    /// The file would exceed the maximum size.
    #[error("file size {0} exceeds the maximum")]
    TooLarge(u64),
    /// The handle's lock mode does not allow this.
    #[error("{0}")]
    Mode(#[from] ModeError),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A metadata transaction does not fit in the journal.
    #[error("transaction of {0} bytes does not fit in the journal")]
    TxnTooLarge(usize),
    /// An offline operation (`fsck` repair) needs the volume unmounted by every host.
    #[error("volume in use: hosts {hosts:?} show mounted; unmount them, or recover them from another host, before repairing")]
    InUse {
        /// The hosts whose heartbeat slot shows them mounted.
        hosts: Vec<u32>,
    },
    /// The volume is mounted read-only.
    #[error("volume is read-only: {0}")]
    ReadOnly(ReadOnlyReason),
}

impl Error {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }

    /// Names where a structure that failed its checks lives (`inode 12`, `indirect block
    /// 4711 of inode 12`): a reader of a damaged volume learns which file and block.
    pub(crate) fn at(self, place: impl std::fmt::Display) -> Self {
        match self {
            Error::Corrupt { what, detail } => Error::Corrupt {
                what,
                detail: format!("{detail} ({place})"),
            },
            e => e,
        }
    }
}

/// Why a lock is not ours, as this host judged it when it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockVerdict {
    /// The holder's heartbeat, judged by the lease: alive (or not yet silent for a whole
    /// lease).
    Lease(Verdict),
    /// The holder's heartbeat slot cannot be read, so it counts as alive.
    SlotUnreadable(String),
    /// This host (this mount) holds it already.
    ThisHost,
    /// It is held in another mode by hosts that may hold it.
    OtherMode,
    /// Other hosts kept changing the record: gave up after this many compare-and-writes.
    GaveUp {
        /// Compare-and-writes tried.
        attempts: u32,
    },
    /// Another host is taking the holder's journal lock at the same time.
    Contended,
    /// Other hosts kept changing the record while this host released it.
    ReleaseContended,
    /// Other hosts kept changing this host's journal lock while it recorded a checkpoint.
    JournalContended,
    /// The holder's journal is being replayed by another host.
    Replaying,
}

impl fmt::Display for LockVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockVerdict::Lease(v) => v.fmt(f),
            LockVerdict::SlotUnreadable(e) => write!(f, "heartbeat slot unreadable: {e}"),
            LockVerdict::ThisHost => f.write_str("held by this host"),
            LockVerdict::OtherMode => f.write_str("held in another mode"),
            LockVerdict::GaveUp { attempts } => {
                write!(f, "contended, gave up after {attempts} attempts")
            }
            LockVerdict::Contended => f.write_str("contended"),
            LockVerdict::ReleaseContended => f.write_str("release contended"),
            LockVerdict::JournalContended => f.write_str("journal contended"),
            LockVerdict::Replaying => f.write_str("being replayed"),
        }
    }
}

/// Why a heartbeat slot could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotState {
    /// A live host holds it.
    #[error("{0}")]
    Lease(Verdict),
    /// Other hosts kept writing it.
    #[error("contended")]
    Contended,
    /// Another host wrote our slot: it claims our host id.
    #[error("slot overwritten by another host")]
    Overwritten,
}

/// What a handle's lock mode does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModeError {
    /// A write through a shared-read handle.
    #[error("{path}: opened read-only")]
    ReadOnly {
        /// The handle's path.
        path: String,
    },
    /// A multi-writer handle writing past the allocated size.
    #[error(
        "{path}: multi-writer handles write only inside the allocated size \
         (use an eager-zeroed file)"
    )]
    MultiWriterGrows {
        /// The handle's path.
        path: String,
    },
    /// `set_len` without an exclusive lock.
    #[error("{path}: set_len needs an exclusive lock")]
    SetLenNeedsExclusive {
        /// The handle's path.
        path: String,
    },
}

/// An invalid option or argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The lease must cover at least two heartbeat intervals.
    #[error("lease must be at least two intervals")]
    LeaseTooShort,
    /// A host id outside the heartbeat slots.
    #[error("host id {host} >= {max}")]
    HostId {
        /// The id.
        host: u32,
        /// The number of slots.
        max: u32,
    },
    /// A lock index beyond the volume's lock area.
    #[error("lock index {index} out of range")]
    LockIndex {
        /// The index.
        index: u64,
    },
    /// `recover_host` of this very host.
    #[error("a host cannot recover itself")]
    RecoverSelf,
    /// `revert` or `consolidate` of a disk without a snapshot.
    #[error("disk has no snapshot")]
    NoSnapshot,
    /// A device length that does not fit in memory.
    #[error("length")]
    Length,
    /// A device offset that does not fit the file API.
    #[error("offset")]
    Offset,
    /// A compare-and-write whose expected and new images differ in length (or are empty).
    #[error("compare_and_write lengths {expected} and {new}")]
    CasLengths {
        /// Length of the expected image.
        expected: usize,
        /// Length of the new image.
        new: usize,
    },
    /// A block size that is not a power of two in 4 KiB ..= 1 MiB (for `Geometry::layout`).
    #[error("block size {0}")]
    BlockSize(u32),
    /// A volume made for Disk Paxos mounted on the bare device: mount the device
    /// `paxos::open_for_host` gives.
    #[error("volume uses Disk Paxos locks: mount it through paxos::open_for_host")]
    NeedsDiskPaxos,
    /// An inode count that is not a multiple of an inode group (for `Geometry::layout`).
    #[error("max inodes {0}")]
    MaxInodes(u32),
    /// Blocks per cluster that do not fit a cluster bitmap (for `Geometry::layout`).
    #[error("blocks per cluster {0}")]
    BlocksPerCluster(u32),
    /// No cluster, or a journal outside 4 ..= 4096 blocks (for `Geometry::layout`).
    #[error("clusters or journal size")]
    ClustersOrJournal,
    /// A device too small for one cluster after the metadata (for `Geometry::layout`).
    #[error("device of {dev_len} bytes holds no cluster (metadata needs {metadata})")]
    NoCluster {
        /// Device length.
        dev_len: u64,
        /// Bytes the metadata needs.
        metadata: u64,
    },
    /// More than 2^32 blocks (for `Geometry::layout`).
    #[error("volume would exceed 2^32 blocks")]
    TooManyBlocks,
}

/// Why the volume refuses changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadOnlyReason {
    /// It has been unmounted.
    #[error("unmounted")]
    Unmounted,
}

/// The answer of the raw lock API ([`crate::Volume::lock_index`],
/// [`crate::Volume::unlock_index`]): who holds a lock and how this host judges it, or why
/// this host cannot act on locks at all.
///
/// It converts into [`Error`] with `?` (a refusal becomes [`Error::Locked`], a fence
/// [`Error::Fenced`]), and back, so the lock manager and the file layer share one engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another host (or this one) holds the lock.
    #[error("{what} locked by host {holder}, {verdict}")]
    Held {
        /// What is locked ("/a/b", "cluster 3", ...).
        what: String,
        /// One holder.
        holder: u32,
        /// How this host judged it.
        verdict: LockVerdict,
    },
    /// This host fenced itself (its lease ran out) and no longer acts on locks.
    #[error("host {host} fenced itself: heartbeat not renewed for half a lease")]
    Fenced {
        /// This host.
        host: u32,
    },
    /// No such lock index on this volume.
    #[error("lock index {index} out of range")]
    OutOfRange {
        /// The index.
        index: u64,
    },
    /// The device failed, a record on it is damaged, or the volume is unmounted.
    #[error(transparent)]
    Device(Box<Error>),
}

// Written out rather than `#[from]`: a refusal must come out as the one `Error::Locked`
// whichever API it went through, not wrapped in a second variant.
impl From<LockError> for Error {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Held {
                what,
                holder,
                verdict,
            } => Error::Locked {
                what,
                holder,
                verdict,
            },
            LockError::Fenced { host } => Error::Fenced { host },
            LockError::OutOfRange { index } => Error::Config(ConfigError::LockIndex { index }),
            LockError::Device(e) => *e,
        }
    }
}

impl From<Error> for LockError {
    fn from(e: Error) -> Self {
        match e {
            Error::Locked {
                what,
                holder,
                verdict,
            } => LockError::Held {
                what,
                holder,
                verdict,
            },
            Error::Fenced { host } => LockError::Fenced { host },
            e => LockError::Device(Box::new(e)),
        }
    }
}
