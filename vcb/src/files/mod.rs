//! File-level restore straight out of an image backup: the guest's filesystems (ext4,
//! FAT, NTFS) read from the repository's chunks with random access, through the disk's
//! partition table, without restoring the disk. Only the grains holding the metadata
//! and the files asked for are fetched.
//!
//! The filesystems are parsed by read-only crates made for the job (`ext4-view`,
//! `fatfs`, `ntfs`); this module gives them a byte device over a [`DiskReader`] and one
//! path-based interface over all three: [`GuestFs::list`], [`GuestFs::find`],
//! [`GuestFs::restore`] (to a directory) and [`GuestFs::write_tar`].
//!
//! Paths are absolute and `/`-separated on every filesystem (`/Windows/win.ini`); FAT and
//! NTFS compare names without case, as their guests do.

pub(crate) mod damage;
mod export;
mod ext4;
mod fat;
mod find;
mod ntfs;
mod volume;

use std::io::Write;
use std::sync::{Arc, PoisonError};

use crate::error::{Error, Result};
use crate::partition::TableKind;
use crate::reader::DiskReader;
use crate::source::DiskSource;
use volume::{Stash, Volume};

pub use damage::AffectedFile;
pub use export::FileRestoreStats;
pub use find::FindQuery;

/// Most entries a walk visits (a bound against a looping or hostile directory tree).
const MAX_WALK_ENTRIES: usize = 10_000_000;
/// Deepest directory a walk descends into.
const MAX_WALK_DEPTH: usize = 256;

/// Which filesystem a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsKind {
    /// ext2, ext3 or ext4.
    Ext4,
    /// FAT12, FAT16 or FAT32.
    Fat,
    /// NTFS.
    Ntfs,
}

impl FsKind {
    /// The name used in messages and `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Fat => "fat",
            FsKind::Ntfs => "ntfs",
        }
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (ext4).
    Symlink,
    /// A device, fifo or socket (listed, never restored).
    Other,
}

/// One file or directory of a guest filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileEntry {
    /// Absolute path, `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Length in bytes (0 for directories).
    pub size: u64,
    /// Last modification, seconds since the epoch (FAT stores local time; it is taken
    /// as UTC).
    pub modified_s: i64,
    /// Unix permission bits where the filesystem has them (ext4).
    pub mode: Option<u32>,
}

impl FileEntry {
    /// The last path component (empty for the root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// A partition (or the whole disk) and the filesystem found on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VolumeInfo {
    /// Partition number as Linux names them; 0 for a disk without a partition table.
    pub partition: u32,
    /// First byte on the disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The filesystem recognised there, if any.
    pub fs: Option<FsKind>,
}

/// What a backend can fail with, before the caller adds where.
#[derive(Debug)]
pub(crate) enum FsError {
    NotFound,
    NotADirectory,
    Other(String),
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        match e.kind() {
            std::io::ErrorKind::NotFound => FsError::NotFound,
            _ => FsError::Other(e.to_string()),
        }
    }
}

pub(crate) type FsResult<T> = std::result::Result<T, FsError>;

/// The three readers behind one interface (private: callers see [`GuestFs`]).
pub(crate) trait FsRead {
    /// Metadata of `path`.
    fn stat(&mut self, path: &str) -> FsResult<FileEntry>;
    /// The entries of directory `dir` (without `.` and `..`), with full paths.
    fn list(&mut self, dir: &str) -> FsResult<Vec<FileEntry>>;
    /// Streams regular file `path` into `out`; returns the bytes written.
    fn copy(&mut self, path: &str, out: &mut dyn Write) -> FsResult<u64>;
    /// The target of symlink `path`.
    fn link_target(&mut self, path: &str) -> FsResult<String>;
}

/// A guest filesystem inside a backup, opened read-only.
///
/// ```
/// use std::sync::Arc;
/// use vinfra_vcb::files::GuestFs;
/// use vinfra_vcb::{BackupOptions, InitOptions, KdfParams, LocalDir, MemDisk, Repository};
/// # let dir = tempfile::tempdir().unwrap();
/// let repo = Repository::init(LocalDir::create(dir.path()).unwrap(), b"pw",
///     &InitOptions::default().kdf(KdfParams::INSECURE_FAST)).unwrap();
/// // A disk that holds no filesystem: opening one says so, naming the backup and disk.
/// let mut disk = MemDisk::new(1 << 20);
/// let s = repo.backup(&BackupOptions::new("vm", 0), &[("d", &disk.snapshot())]).unwrap();
/// let reader = Arc::new(repo.disk_reader(&s.id, "d").unwrap());
/// let err = GuestFs::open(reader, None).unwrap_err();
/// assert!(err.to_string().contains("no filesystem"), "{err}");
/// ```
///
/// With a filesystem there (`tests/files.rs` builds ext4, FAT and NTFS images):
///
/// ```ignore
/// let mut fs = GuestFs::open(Arc::new(repo.disk_reader(&id, "disk0")?), None)?;
/// for e in fs.list("/etc")? { println!("{} {}", e.size, e.path); }
/// let hits = fs.find("/", &FindQuery::new().name("*.conf")?.min_size(1))?;
/// fs.restore("/etc/hosts", Path::new("/tmp/out"))?;      // /tmp/out/hosts
/// fs.write_tar("/home", std::io::stdout().lock())?;       // a tar stream of the tree
/// ```
pub struct GuestFs {
    inner: Box<dyn FsRead>,
    kind: FsKind,
    location: String,
    stash: Stash,
}

impl std::fmt::Debug for GuestFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestFs")
            .field("kind", &self.kind)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The filesystem whose signature the first 4 KiB of a volume carry.
fn detect(vol: &Volume, len: u64) -> Option<FsKind> {
    let mut b = vec![0u8; len.min(4096) as usize];
    vol.read_exact_at(&mut b, 0).ok()?;
    if b.get(3..11) == Some(b"NTFS    ") {
        return Some(FsKind::Ntfs);
    }
    if b.get(1080..1082) == Some(&[0x53, 0xEF]) {
        return Some(FsKind::Ext4);
    }
    let boot = b.get(510..512) == Some(&[0x55, 0xAA]);
    let fat16 = b.get(54..57) == Some(b"FAT");
    let fat32 = b.get(82..87) == Some(b"FAT32");
    if boot && (fat16 || fat32) {
        return Some(FsKind::Fat);
    }
    None
}

/// The volumes of a disk (a [`DiskReader`] on a backup, or any [`DiskSource`]): its
/// partitions, or the whole disk when it has no partition table, each with the filesystem
/// recognised on it.
pub fn volumes(disk: Arc<dyn DiskSource>) -> Result<Vec<VolumeInfo>> {
    volumes_named(disk, "(disk)")
}

fn volumes_named(disk: Arc<dyn DiskSource>, name: &str) -> Result<Vec<VolumeInfo>> {
    let stash = Stash::default();
    let name: Arc<str> = name.into();
    let cap = disk.capacity();
    let vol = |start, len| Volume::new(disk.clone(), name.clone(), start, len, stash.clone());
    let failed = || stash.lock().unwrap_or_else(PoisonError::into_inner).take();
    // A filesystem on the whole disk first: a FAT or NTFS boot sector ends in 55 AA like
    // an MBR, and its boot code would be misread as partition entries.
    if let Some(fs) = detect(&vol(0, cap), cap) {
        return Ok(vec![VolumeInfo {
            partition: 0,
            offset: 0,
            len: cap,
            fs: Some(fs),
        }]);
    }
    if let Some(e) = failed() {
        return Err(e);
    }
    let table = crate::partition::read_table(cap, |off, buf| {
        disk.read_at(buf, off)
            .map_err(|e| volume::source_error(&name, off, e))
    })?;
    let spans: Vec<(u32, u64, u64)> = if table.kind == TableKind::None {
        vec![(0, 0, cap)]
    } else {
        table
            .partitions
            .iter()
            .map(|p| (p.number, p.offset, p.len))
            .collect()
    };
    let out = spans
        .into_iter()
        .map(|(partition, offset, len)| VolumeInfo {
            partition,
            offset,
            len,
            fs: detect(&vol(offset, len), len),
        })
        .collect();
    match failed() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

impl GuestFs {
    /// Opens the filesystem on partition `partition` of a disk in a backup (0: a disk
    /// without a partition table), or with `None` the first volume holding one it
    /// recognises.
    pub fn open(disk: Arc<DiskReader>, partition: Option<u32>) -> Result<GuestFs> {
        let name = format!(
            "backup {} disk {}",
            &disk.snapshot_id().to_hex()[..12],
            disk.manifest().name
        );
        GuestFs::open_source(disk, &name, partition)
    }

    /// As [`GuestFs::open`], on any [`DiskSource`] (a live snapshot, a raw image);
    /// `name` says where in errors.
    pub fn open_source(
        disk: Arc<dyn DiskSource>,
        name: &str,
        partition: Option<u32>,
    ) -> Result<GuestFs> {
        let vols = volumes_named(disk.clone(), name)?;
        let chosen = match partition {
            Some(n) => {
                vols.iter()
                    .find(|v| v.partition == n)
                    .ok_or_else(|| Error::NoFilesystem {
                        location: name.to_string(),
                        detail: format!("no partition {n}"),
                    })?
            }
            None => vols
                .iter()
                .find(|v| v.fs.is_some())
                .ok_or_else(|| Error::NoFilesystem {
                    location: name.to_string(),
                    detail: format!("none of {} volume(s) holds ext4, FAT or NTFS", vols.len()),
                })?,
        };
        let location = format!("{name} partition {}", chosen.partition);
        let Some(kind) = chosen.fs else {
            return Err(Error::NoFilesystem {
                location,
                detail: "no ext4, FAT or NTFS signature".into(),
            });
        };
        let stash = Stash::default();
        let vol = Volume::new(disk, name.into(), chosen.offset, chosen.len, stash.clone());
        let opened: FsResult<Box<dyn FsRead>> = guarded(kind, || match kind {
            FsKind::Ext4 => ext4::Ext4Fs::open(vol).map(|f| Box::new(f) as Box<dyn FsRead>),
            FsKind::Fat => fat::FatFs::open(vol).map(|f| Box::new(f) as Box<dyn FsRead>),
            FsKind::Ntfs => ntfs::NtfsFs::open(vol).map(|f| Box::new(f) as Box<dyn FsRead>),
        });
        let inner = opened.map_err(|e| to_error(&stash, kind, &location, "/", e))?;
        Ok(GuestFs {
            inner,
            kind,
            location,
            stash,
        })
    }

    /// Which filesystem this is.
    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// The typed error for a backend failure at `path`: the repository's own error when
    /// a chunk read failed underneath, else what the filesystem reader said.
    fn error(&self, path: &str, e: FsError) -> Error {
        to_error(&self.stash, self.kind, &self.location, path, e)
    }

    /// Metadata of one path.
    pub fn stat(&mut self, path: &str) -> Result<FileEntry> {
        let p = normalize(path)?;
        let inner = &mut self.inner;
        guarded(self.kind, || inner.stat(&p)).map_err(|e| self.error(&p, e))
    }

    /// The entries of a directory, sorted by name.
    pub fn list(&mut self, dir: &str) -> Result<Vec<FileEntry>> {
        let p = normalize(dir)?;
        let inner = &mut self.inner;
        let mut v = guarded(self.kind, || inner.list(&p)).map_err(|e| self.error(&p, e))?;
        v.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(v)
    }

    /// Visits `root` and everything below it, parents before children, in name order.
    pub fn walk(&mut self, root: &str, visit: &mut dyn FnMut(&FileEntry)) -> Result<()> {
        let top = self.stat(root)?;
        let mut stack = vec![(top, 0usize)];
        let mut seen = 0usize;
        while let Some((e, depth)) = stack.pop() {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return Err(Error::Invalid(format!(
                    "{}: more than {MAX_WALK_ENTRIES} entries under {root}",
                    self.location
                )));
            }
            visit(&e);
            if e.kind == EntryKind::Dir && depth < MAX_WALK_DEPTH {
                let children = self.list(&e.path)?;
                stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
            }
        }
        Ok(())
    }

    /// Everything under `root` that `query` matches.
    pub fn find(&mut self, root: &str, query: &FindQuery) -> Result<Vec<FileEntry>> {
        let mut hits = Vec::new();
        self.walk(root, &mut |e| {
            if query.matches(e) {
                hits.push(e.clone());
            }
        })?;
        Ok(hits)
    }

    /// Streams regular file `path` into `out`; returns its length.
    pub fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let p = normalize(path)?;
        let inner = &mut self.inner;
        guarded(self.kind, || inner.copy(&p, out)).map_err(|e| self.error(&p, e))
    }

    /// The target of a symbolic link.
    pub fn link_target(&mut self, path: &str) -> Result<String> {
        let p = normalize(path)?;
        let inner = &mut self.inner;
        guarded(self.kind, || inner.link_target(&p)).map_err(|e| self.error(&p, e))
    }
}

/// Runs a call into a filesystem crate, turning a panic into an error. The crates are
/// read-only and well kept, but not hardened against hostile images (fuzzing found
/// fatfs subtracting with overflow on a bad cluster number); a backup's bytes are
/// untrusted input and must never bring the process down.
fn guarded<T>(kind: FsKind, f: impl FnOnce() -> FsResult<T>) -> FsResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(FsError::Other(format!(
                "the {} reader failed on damaged structures ({why})",
                kind.name()
            )))
        }
    }
}

fn to_error(stash: &Stash, kind: FsKind, location: &str, path: &str, e: FsError) -> Error {
    if let Some(e) = stash.lock().unwrap_or_else(PoisonError::into_inner).take() {
        return e;
    }
    let (location, path) = (location.to_string(), path.to_string());
    let detail = match e {
        FsError::NotFound => return Error::FileNotFound { location, path },
        FsError::NotADirectory => "not a directory".to_string(),
        FsError::Other(detail) => detail,
    };
    Error::Filesystem {
        fs: kind.name(),
        location,
        path,
        detail,
    }
}

/// `/a/b` form: absolute, no empty, `.` or `..` components (a guest path never climbs).
fn normalize(path: &str) -> Result<String> {
    let mut out = String::new();
    for c in path.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::Invalid(format!(
                    "path {path:?}: `..` is not allowed in a guest path"
                )))
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `dir` joined with `name`.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_and_never_climb() {
        assert_eq!(normalize("").unwrap(), "/");
        assert_eq!(normalize("a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(normalize("\\Windows\\win.ini").unwrap(), "/Windows/win.ini");
        assert!(normalize("/a/../b").is_err());
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1980, 1, 1), 3652);
        assert_eq!(days_from_civil(2024, 12, 31), 20_088);
    }
}
