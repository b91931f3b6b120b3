//! The crate's error type: every variant names what failed and where.

use std::fmt;
use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kinds of object in a repository, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Object {
    /// The `config` key file.
    Config,
    /// A pack file.
    Pack,
    /// A pack's trailer (its blob table).
    PackTrailer,
    /// An index file.
    Index,
    /// A manifest (one backup).
    Manifest,
    /// A chunk inside a pack.
    Chunk,
    /// A lock file.
    Lock,
    /// A disk's partition table (inside a backup or a source).
    PartitionTable,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::Config => "config",
            Object::Pack => "pack",
            Object::PackTrailer => "pack trailer",
            Object::Index => "index",
            Object::Manifest => "manifest",
            Object::Chunk => "chunk",
            Object::Lock => "lock",
            Object::PartitionTable => "partition table",
        })
    }
}

/// Who holds a lock that was in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockHolder {
    /// The lock file's name under `locks/`.
    pub name: String,
    /// Whether the lock is exclusive (forget, prune) or shared (a backup).
    pub exclusive: bool,
    /// The holder's hostname (empty when the lock file could not be decoded).
    pub hostname: String,
    /// The holder's process id.
    pub pid: u32,
    /// Why the lock is taken to be live.
    pub verdict: &'static str,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.exclusive {
            "exclusive"
        } else {
            "shared"
        };
        write!(
            f,
            "{kind} lock {} held by pid {} on {} ({})",
            self.name, self.pid, self.hostname, self.verdict
        )
    }
}

/// Everything that can go wrong with a repository, a backup or a restore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The password does not unwrap the repository's key.
    #[error("wrong password for the repository (config key check failed)")]
    WrongPassword,
    /// A file's bytes are damaged (bad magic, crc, authentication tag, field).
    #[error("{what} {name}: corrupted: {detail}")]
    Corrupt {
        /// Which kind of object.
        what: Object,
        /// Its name (path in the repository, or a chunk id and where it lives).
        name: String,
        /// What check failed.
        detail: String,
    },
    /// A file ends before its declared length.
    #[error("{what} {name}: truncated: {detail}")]
    Truncated {
        /// Which kind of object.
        what: Object,
        /// Its name.
        name: String,
        /// What was expected.
        detail: String,
    },
    /// A file that something refers to does not exist.
    #[error("{what} {name}: missing{detail}")]
    Missing {
        /// Which kind of object.
        what: Object,
        /// Its name.
        name: String,
        /// Who refers to it (", needed by ..."), or empty.
        detail: String,
    },
    /// A chunk a manifest needs is in no index.
    #[error("chunk {id}: missing from every index (needed by manifest {manifest}, disk {disk}, offset {offset})")]
    ChunkMissing {
        /// The chunk id (hex).
        id: String,
        /// The manifest needing it.
        manifest: String,
        /// The disk in that manifest.
        disk: String,
        /// Byte offset on that disk.
        offset: u64,
    },
    /// A file has a format version this build does not read.
    #[error("{what} {name}: unknown format version {found} (this build reads {supported})")]
    Version {
        /// Which kind of object.
        what: Object,
        /// Its name.
        name: String,
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A conflicting live lock.
    #[error("repository locked: {0}")]
    Locked(LockHolder),
    /// A lock file that cannot be decoded is in the way.
    #[error("repository locked by an unreadable lock {name}: {detail} (remove it with break_locks once no process uses the repository)")]
    UnreadableLock {
        /// The lock file.
        name: String,
        /// Why it could not be read.
        detail: String,
    },
    /// The storage failed.
    #[error("storage: {op} {name}: {source}")]
    Storage {
        /// The operation (read, write, list, remove).
        op: &'static str,
        /// The object's name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the disk being backed up failed.
    #[error("read disk {disk} at offset {offset}: {source}")]
    Source {
        /// The disk's name in the backup.
        disk: String,
        /// Byte offset.
        offset: u64,
        /// The source's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the restored disk failed.
    #[error("restore disk {disk} to {path}: {source}")]
    RestoreWrite {
        /// The disk's name.
        disk: String,
        /// The target.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A restored disk read back differs from the backup.
    #[error("restore disk {disk} to {path}: verification failed at offset {offset}")]
    RestoreMismatch {
        /// The disk's name.
        disk: String,
        /// The target.
        path: PathBuf,
        /// First differing grain.
        offset: u64,
    },
    /// No manifest with this id (or unique prefix).
    #[error("no backup {0}")]
    NoSnapshot(String),
    /// The backup has no disk of this name.
    #[error("backup {snapshot} has no disk {disk}")]
    NoDisk {
        /// The manifest id.
        snapshot: String,
        /// The disk asked for.
        disk: String,
    },
    /// `init` on a storage that already holds a repository.
    #[error("a repository already exists there ({0})")]
    Exists(String),
    /// A cron expression that does not parse.
    #[error("cron expression {expr:?}: {field}: {detail}")]
    Cron {
        /// The expression.
        expr: String,
        /// Which field (minute, hour, day of month, month, day of week).
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// No recognised filesystem where one was asked for.
    #[error("{location}: no filesystem: {detail}")]
    NoFilesystem {
        /// The backup disk (and partition) looked at.
        location: String,
        /// What was found instead.
        detail: String,
    },
    /// A path that does not exist in a guest filesystem.
    #[error("{location}: {path}: no such file or directory")]
    FileNotFound {
        /// The backup disk and partition.
        location: String,
        /// The guest path.
        path: String,
    },
    /// A guest filesystem could not be read (damaged or unsupported structures).
    #[error("{fs} filesystem on {location}: {path}: {detail}")]
    Filesystem {
        /// ext4, fat or ntfs.
        fs: &'static str,
        /// The backup disk and partition.
        location: String,
        /// The guest path being read.
        path: String,
        /// What the filesystem reader reported.
        detail: String,
    },
    /// Writing a restored file (or the tar stream) failed.
    #[error("write {path}: {source}")]
    FileWrite {
        /// The file written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A caller's argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The OS random source failed (only `init` draws random bytes).
    #[error("random source: {0}")]
    Random(String),
}

impl Error {
    pub(crate) fn corrupt(what: Object, name: &str, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what,
            name: name.to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn truncated(what: Object, name: &str, detail: impl Into<String>) -> Error {
        Error::Truncated {
            what,
            name: name.to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn storage(op: &'static str, name: &str, source: std::io::Error) -> Error {
        if source.kind() == std::io::ErrorKind::NotFound {
            if let Some(what) = object_of(name) {
                return Error::Missing {
                    what,
                    name: name.to_string(),
                    detail: String::new(),
                };
            }
        }
        Error::Storage {
            op,
            name: name.to_string(),
            source,
        }
    }
}

/// The kind of object a repository path names.
pub(crate) fn object_of(name: &str) -> Option<Object> {
    let top = name.split('/').next().unwrap_or("");
    Some(match top {
        "config" => Object::Config,
        "data" => Object::Pack,
        "index" => Object::Index,
        "snapshots" => Object::Manifest,
        "locks" => Object::Lock,
        _ => return None,
    })
}
