//! Block backends: where a virtio-blk device's sectors live.
//!
//! [`BlockBackend`] is the consumer-side seam between the virtio-blk device
//! model and storage: the device needs positioned reads and writes, a flush and
//! a length, nothing else. [`FileBackend`] (a regular file or block device,
//! through `pread`/`pwrite`) lives here, and with the `test-utils` feature
//! `MemBackend` (a byte vector, for tests, benches and the fuzz target). vmfs
//! virtual disks implement the trait from their own crate.
//!
//! ```
//! use vinfra_vmm_core::devices::block::{BlockBackend, MemBackend};
//!
//! let disk = MemBackend::new(4096);
//! disk.write_at(b"hello", 512).unwrap();
//! let mut buf = [0u8; 5];
//! disk.read_at(&mut buf, 512).unwrap();
//! assert_eq!(&buf, b"hello");
//! assert_eq!(disk.len(), 4096);
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
#[cfg(any(test, feature = "test-utils"))]
use std::sync::{PoisonError, RwLock};

/// Errors of the block backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The backing file could not be opened.
    #[error("open disk {path}: {source}")]
    Open {
        /// The file that was opened.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The backing file's size could not be read.
    #[error("read size of disk {path}: {source}")]
    Metadata {
        /// The file whose size was asked.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Storage behind a virtio-blk device: positioned byte I/O on a fixed-size disk.
///
/// Offsets and lengths are in bytes. The device only issues requests that lie
/// entirely inside `0..len()`, in whole 512-byte sectors; an implementation must
/// still return an error (never panic) for anything else. Reads and writes may
/// come from several vCPU threads at once (hence `Send + Sync` and `&self`).
///
/// ```
/// use std::io;
/// use vinfra_vmm_core::devices::block::BlockBackend;
///
/// /// A disk of zeroes that refuses writes.
/// struct Zeroes(u64);
///
/// impl BlockBackend for Zeroes {
///     fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
///         buf.fill(0);
///         Ok(())
///     }
///     fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
///         Err(io::Error::from(io::ErrorKind::PermissionDenied))
///     }
///     fn flush(&self) -> io::Result<()> {
///         Ok(())
///     }
///     fn len(&self) -> u64 {
///         self.0
///     }
/// }
///
/// let disk = Zeroes(1 << 20);
/// let mut sector = [1u8; 512];
/// disk.read_at(&mut sector, 0).unwrap();
/// assert!(sector.iter().all(|b| *b == 0));
/// ```
#[allow(clippy::len_without_is_empty)] // a zero-length disk is legal but unremarkable
pub trait BlockBackend: Send + Sync {
    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Stores `buf` at `offset..offset + buf.len()`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// The disk size in bytes (the device exposes `len() / 512` sectors).
    fn len(&self) -> u64;
}

/// A disk in a file (or a host block device), accessed with `pread`/`pwrite`.
///
/// The size is read once at open: the guest sees a fixed capacity, so growing
/// the file behind the VM's back does not change what it may address.
///
/// ```
/// use vinfra_vmm_core::devices::block::{BlockBackend, FileBackend};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("disk.img");
/// std::fs::write(&path, vec![0u8; 8192]).unwrap();
///
/// let disk = FileBackend::open(&path, false).unwrap();
/// disk.write_at(&[7u8; 512], 1024).unwrap();
/// disk.flush().unwrap();
/// assert_eq!(disk.len(), 8192);
/// assert_eq!(std::fs::read(&path).unwrap()[1024], 7);
///
/// let ro = FileBackend::open(&path, true).unwrap();
/// assert!(ro.write_at(&[0u8; 512], 0).is_err());
/// ```
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    len: u64,
    read_only: bool,
}

impl FileBackend {
    /// Opens `path` for reading, and for writing unless `read_only`.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<FileBackend, BlockError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| BlockError::Metadata {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        Ok(FileBackend {
            file,
            len,
            read_only,
        })
    }

    /// Whether the file was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}

impl BlockBackend for FileBackend {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.len, buf.len(), offset)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "disk is read-only",
            ));
        }
        check_range(self.len, buf.len(), offset)?;
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// A disk held in memory, for tests, benches and the fuzz target (feature
/// `test-utils`).
///
/// ```
/// use vinfra_vmm_core::devices::block::{BlockBackend, MemBackend};
///
/// let disk = MemBackend::from_vec(vec![1u8; 1024]);
/// assert!(disk.read_at(&mut [0u8; 512], 1024).is_err()); // past the end
/// disk.write_at(&[2u8; 512], 512).unwrap();
/// assert_eq!(disk.contents()[512], 2);
/// ```
#[cfg(any(test, feature = "test-utils"))]
#[derive(Debug, Default)]
pub struct MemBackend {
    data: RwLock<Vec<u8>>,
    flushes: std::sync::atomic::AtomicU64,
}

#[cfg(any(test, feature = "test-utils"))]
impl MemBackend {
    /// A zero-filled disk of `len` bytes.
    pub fn new(len: usize) -> MemBackend {
        MemBackend::from_vec(vec![0; len])
    }

    /// A disk holding `data`.
    pub fn from_vec(data: Vec<u8>) -> MemBackend {
        MemBackend {
            data: RwLock::new(data),
            flushes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A copy of the whole disk.
    pub fn contents(&self) -> Vec<u8> {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times [`BlockBackend::flush`] was called.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(any(test, feature = "test-utils"))]
impl BlockBackend for MemBackend {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(PoisonError::into_inner);
        let start = check_range(data.len() as u64, buf.len(), offset)?;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        let start = check_range(data.len() as u64, buf.len(), offset)?;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64
    }
}

/// Checks that `offset..offset + len` lies inside a disk of `disk_len` bytes and
/// returns the offset as an index.
fn check_range(disk_len: u64, len: usize, offset: u64) -> io::Result<usize> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= disk_len => usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large")),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("range {offset}+{len} is outside the disk ({disk_len} bytes)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_backend_round_trip_and_bounds() {
        let disk = MemBackend::new(2048);
        disk.write_at(&[9; 512], 1536).unwrap();
        let mut buf = [0; 512];
        disk.read_at(&mut buf, 1536).unwrap();
        assert_eq!(buf, [9; 512]);
        assert!(disk.read_at(&mut buf, 1537).is_err());
        assert!(disk.write_at(&buf, u64::MAX).is_err());
        disk.flush().unwrap();
        assert_eq!(disk.flush_count(), 1);
    }

    #[test]
    fn file_backend_round_trip_read_only_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let disk = FileBackend::open(&path, false).unwrap();
        assert!(!disk.is_read_only());
        disk.write_at(&[5; 1024], 2048).unwrap();
        disk.flush().unwrap();
        let mut buf = [0; 1024];
        disk.read_at(&mut buf, 2048).unwrap();
        assert_eq!(buf, [5; 1024]);
        assert!(disk.read_at(&mut buf, 3584).is_err());

        let ro = FileBackend::open(&path, true).unwrap();
        assert!(ro.write_at(&[0; 512], 0).is_err());
        ro.flush().unwrap();

        let err = FileBackend::open(dir.path().join("missing"), true).unwrap_err();
        assert!(matches!(err, BlockError::Open { .. }));
        assert!(err.to_string().starts_with("open disk "));
    }
}
