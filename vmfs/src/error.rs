//! The crate's error type.

use std::io;

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
    /// A fault-injecting device reports that it crashed.
    #[error("device crashed (injected)")]
    Crashed,
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
    #[error("{what} locked by host {host}, {state}")]
    Locked {
        /// What is locked ("/a/b", "cluster 3", ...).
        what: String,
        /// One holder.
        host: u32,
        /// Its liveness, e.g. "alive, heartbeat 2 s ago".
        state: String,
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
        /// Its liveness.
        state: String,
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
    Mode(String),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A metadata transaction does not fit in the journal.
    #[error("transaction of {0} bytes does not fit in the journal")]
    TxnTooLarge(usize),
    /// The volume is mounted read-only.
    #[error("volume is read-only: {0}")]
    ReadOnly(String),
}

impl Error {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}
