//! The shared block device: a LUN with an atomic compare-and-write (ATS).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::error::{ConfigError, Error, Result};

/// Outcome of a compare-and-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// The bytes matched `expected` and `new` is now written.
    Written,
    /// The bytes did not match; they are returned (SCSI returns the miscompare too).
    Mismatch(Vec<u8>),
}

/// A block device shared by every host of a volume.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Writes all of `buf` at `offset` (durable only after [`BlockDevice::flush`]).
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<()>;
    /// Size in bytes.
    fn len(&self) -> Result<u64>;
    /// Whether the device has no bytes.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Resizes the device (the administrator growing the LUN).
    fn set_len(&self, len: u64) -> Result<()>;
    /// Atomically: if the bytes at `offset` equal `expected`, write `new` (same length).
    /// Atomic against every other compare-and-write on an overlapping range, from any
    /// process, and durable when it returns `Written`.
    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas>;
    /// Makes `len` bytes at `offset` read as zeros, like a write of zeros (durable only
    /// after [`BlockDevice::flush`]). This body writes them, 1 MiB at a time; a device
    /// that can zero without moving the bytes (SCSI WRITE SAME, NBD WRITE_ZEROES, a file's
    /// `fallocate`) overrides it, so that `mkfs` neither sends hundreds of MiB of zeros
    /// nor, on an image file, fills the page cache with them.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        write_zeroes_by_writing(self, offset, len)
    }
    /// The file descriptors this device does its I/O through, when they stay the same
    /// for its whole life (none for a device in memory); `None`, the default, when it may
    /// open others later, as a network device that reconnects does. With `Some`, a
    /// volume's heartbeat thread keeps a file table of its own holding only these and
    /// stdio, so that a single-threaded embedder's reads and writes take the kernel's
    /// faster path for an unshared table (see `vmfs/src/fd_table.rs`).
    fn fixed_fds(&self) -> Option<Vec<BorrowedFd<'_>>> {
        None
    }
}

fn check_cas_args(expected: &[u8], new: &[u8]) -> Result<()> {
    if expected.len() != new.len() || new.is_empty() {
        return Err(ConfigError::CasLengths {
            expected: expected.len(),
            new: new.len(),
        }
        .into());
    }
    Ok(())
}

fn bounds(offset: u64, len: usize, dev_len: u64) -> Result<()> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(e) if e <= dev_len => Ok(()),
        _ => Err(Error::OutOfBounds {
            offset,
            len: len as u64,
            dev_len,
        }),
    }
}

/// An in-memory device.
#[derive(Debug, Default)]
pub struct MemDevice {
    data: RwLock<Vec<u8>>,
}

impl MemDevice {
    /// A zeroed device of `len` bytes.
    pub fn new(len: usize) -> Self {
        MemDevice {
            data: RwLock::new(vec![0; len]),
        }
    }
    /// A device holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemDevice {
            data: RwLock::new(bytes),
        }
    }
    /// A copy of the contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().map(|d| d.clone()).unwrap_or_default()
    }
    fn poisoned() -> Error {
        Error::Io {
            op: "lock",
            offset: 0,
            source: std::io::Error::other("poisoned memory device"),
        }
    }
}

impl BlockDevice for MemDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let d = self.data.read().map_err(|_| Self::poisoned())?;
        bounds(offset, buf.len(), d.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&d[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut d = self.data.write().map_err(|_| Self::poisoned())?;
        bounds(offset, buf.len(), d.len() as u64)?;
        let o = offset as usize;
        d[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn fixed_fds(&self) -> Option<Vec<BorrowedFd<'_>>> {
        Some(Vec::new())
    }
    fn len(&self) -> Result<u64> {
        Ok(self.data.read().map_err(|_| Self::poisoned())?.len() as u64)
    }
    fn set_len(&self, len: u64) -> Result<()> {
        let len = usize::try_from(len).map_err(|_| Error::from(ConfigError::Length))?;
        self.data
            .write()
            .map_err(|_| Self::poisoned())?
            .resize(len, 0);
        Ok(())
    }
    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        check_cas_args(expected, new)?;
        let mut d = self.data.write().map_err(|_| Self::poisoned())?;
        bounds(offset, new.len(), d.len() as u64)?;
        let o = offset as usize;
        let cur = &mut d[o..o + new.len()];
        if cur != expected {
            return Ok(Cas::Mismatch(cur.to_vec()));
        }
        cur.copy_from_slice(new);
        Ok(Cas::Written)
    }
}

/// A device on a file (or a block device node), shared by processes.
///
/// Compare-and-write holds an OFD byte-range write lock (`F_OFD_SETLKW`) on exactly the
/// compared range around its read-compare-write, so it is atomic against every other
/// compare-and-write on that range from any process or any other open of the file. Within
/// one open, a mutex serialises threads (OFD locks do not exclude their own description).
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    direct: bool,
    ats: Mutex<()>,
    /// Last known length: saves an fstat per I/O; re-read when an access looks out of
    /// bounds (another host may have grown the LUN).
    len_cache: std::sync::atomic::AtomicU64,
}

const DIRECT_ALIGN: usize = 4096;

impl FileDevice {
    /// Opens an existing image; `direct` adds `O_DIRECT` (I/O through 4 KiB-aligned bounces).
    pub fn open(path: &Path, direct: bool) -> Result<Self> {
        let mut oo = OpenOptions::new();
        oo.read(true).write(true);
        if direct {
            oo.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits());
        }
        let file = oo.open(path).map_err(|source| Error::Io {
            op: "open",
            offset: 0,
            source,
        })?;
        let len = file.metadata().map_err(Self::io("stat", 0))?.len();
        Ok(FileDevice {
            file,
            path: path.to_path_buf(),
            direct,
            ats: Mutex::new(()),
            len_cache: std::sync::atomic::AtomicU64::new(len),
        })
    }

    /// Creates (or truncates) an image of `len` bytes (sparse).
    pub fn create(path: &Path, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| Error::Io {
                op: "create",
                offset: 0,
                source,
            })?;
        file.set_len(len).map_err(|source| Error::Io {
            op: "set_len",
            offset: len,
            source,
        })?;
        drop(file);
        Self::open(path, false)
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(op: &'static str, offset: u64) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { op, offset, source }
    }

    fn range_lock(&self, offset: u64, len: usize, lock: bool) -> Result<()> {
        let fl = libc::flock {
            l_type: if lock {
                libc::F_WRLCK as libc::c_short
            } else {
                libc::F_UNLCK as libc::c_short
            },
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: i64::try_from(offset).map_err(|_| Error::from(ConfigError::Offset))?,
            l_len: len as i64,
            l_pid: 0,
        };
        let arg = if lock {
            nix::fcntl::FcntlArg::F_OFD_SETLKW(&fl)
        } else {
            nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)
        };
        nix::fcntl::fcntl(self.file.as_fd(), arg)
            .map(|_| ())
            .map_err(|e| Error::Io {
                op: "ofd lock",
                offset,
                source: std::io::Error::from(e),
            })
    }

    fn aligned_span(offset: u64, len: usize) -> (u64, usize) {
        let a = DIRECT_ALIGN as u64;
        let start = offset / a * a;
        let end = (offset + len as u64).div_ceil(a) * a;
        (start, (end - start) as usize)
    }

    /// A zeroed buffer of `len` bytes at a 4 KiB-aligned address, as a range in a Vec.
    fn bounce(len: usize) -> (Vec<u8>, usize) {
        let v = vec![0u8; len + DIRECT_ALIGN];
        let addr = v.as_ptr() as usize;
        let skew = (DIRECT_ALIGN - addr % DIRECT_ALIGN) % DIRECT_ALIGN;
        (v, skew)
    }

    fn raw_read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !self.direct {
            return pread_exact(&self.file, buf, offset).map_err(Self::io("read", offset));
        }
        let (start, span) = Self::aligned_span(offset, buf.len());
        let (mut v, skew) = Self::bounce(span);
        let b = &mut v[skew..skew + span];
        pread_exact(&self.file, b, start).map_err(Self::io("read", offset))?;
        let s = (offset - start) as usize;
        buf.copy_from_slice(&b[s..s + buf.len()]);
        Ok(())
    }

    fn raw_write(&self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.direct {
            return self
                .file
                .write_all_at(buf, offset)
                .map_err(Self::io("write", offset));
        }
        let (start, span) = Self::aligned_span(offset, buf.len());
        let (mut v, skew) = Self::bounce(span);
        let b = &mut v[skew..skew + span];
        if start != offset || span != buf.len() {
            pread_exact(&self.file, b, start).map_err(Self::io("read", offset))?;
        }
        let s = (offset - start) as usize;
        b[s..s + buf.len()].copy_from_slice(buf);
        self.file
            .write_all_at(b, start)
            .map_err(Self::io("write", offset))
    }
}

/// Reads all of `buf` at `offset` of `file` (`read_exact_at` by `pread` system calls).
///
/// Why not `std`'s `read_exact_at`: it calls libc's `pread`, which in a process with more
/// than one thread (a mounted volume has its heartbeat thread) brackets the system call
/// with two atomic updates of the thread's cancellation state, for POSIX thread
/// cancellation, which Rust never uses: about 10 ns of a 1 µs cached 4 KiB read.
/// rustix makes the system call itself.
fn pread_exact(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pread(file, &mut *buf, offset) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl FileDevice {
    /// Zeros a range with `fallocate`, which drops the range from the page cache instead
    /// of filling it: `ZERO_RANGE` (the blocks stay allocated, as after a write of
    /// zeros), else `PUNCH_HOLE` (tmpfs has no `ZERO_RANGE`), else a write of zeros.
    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        use nix::errno::Errno;
        use nix::fcntl::{fallocate, FallocateFlags as F};
        let off = i64::try_from(offset).map_err(|_| Error::from(ConfigError::Offset))?;
        let n = i64::try_from(len).map_err(|_| Error::from(ConfigError::Offset))?;
        if n == 0 || self.holds_no_data(off, n) {
            return Ok(());
        }
        let modes = [
            F::FALLOC_FL_ZERO_RANGE | F::FALLOC_FL_KEEP_SIZE,
            F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        ];
        for mode in modes {
            match fallocate(self.file.as_fd(), mode, off, n) {
                Ok(()) => return Ok(()),
                // Not supported by this filesystem (or mode): try the next way.
                Err(Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS) => {}
                Err(e) => {
                    return Err(Error::Io {
                        op: "fallocate",
                        offset,
                        source: std::io::Error::from(e),
                    })
                }
            }
        }
        let zero = vec![0u8; 1 << 20];
        let mut at = offset;
        while at < offset + len {
            let k = usize::try_from(offset + len - at).map_or(zero.len(), |r| r.min(zero.len()));
            self.raw_write(&zero[..k], at)?;
            at += k as u64;
        }
        Ok(())
    }

    /// Whether the file holds no data in `off..off + n` (holes only: it reads as zeros),
    /// as a freshly created sparse image does wherever nothing was written yet. Zeroing
    /// such a range is not needed, and `fallocate` would turn it into unwritten extents:
    /// `mkfs` on the bench's image left 133 extents that way and 67 without, and ext4
    /// walks them on every later write into the image.
    fn holds_no_data(&self, off: i64, n: i64) -> bool {
        use nix::unistd::{lseek, Whence};
        // Moves the file position only, which `pread`/`pwrite` do not use.
        match lseek(self.file.as_fd(), off, Whence::SeekData) {
            Ok(next) => next >= off.saturating_add(n),
            // No data at or after `off`.
            Err(nix::errno::Errno::ENXIO) => true,
            // No `SEEK_DATA` here: zero it.
            Err(_) => false,
        }
    }

    /// [`Self::check`] for a span whose length may not fit a slice.
    fn check_span(&self, offset: u64, len: u64) -> Result<()> {
        match usize::try_from(len) {
            Ok(l) => self.check(offset, l),
            Err(_) => Err(Error::OutOfBounds {
                offset,
                len,
                dev_len: self.len()?,
            }),
        }
    }

    fn check(&self, offset: u64, len: usize) -> Result<()> {
        let cached = self.len_cache.load(std::sync::atomic::Ordering::Relaxed);
        if bounds(offset, len, cached).is_ok() {
            return Ok(());
        }
        bounds(offset, len, self.len()?)
    }
}

impl BlockDevice for FileDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(offset, buf.len())?;
        self.raw_read(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(offset, buf.len())?;
        self.raw_write(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        self.file.sync_data().map_err(Self::io("flush", 0))
    }
    fn len(&self) -> Result<u64> {
        let len = self.file.metadata().map_err(Self::io("stat", 0))?.len();
        self.len_cache
            .store(len, std::sync::atomic::Ordering::Relaxed);
        Ok(len)
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(Self::io("set_len", len))?;
        self.len_cache
            .store(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.check_span(offset, len)?;
        self.zero_range(offset, len)
    }
    fn fixed_fds(&self) -> Option<Vec<BorrowedFd<'_>>> {
        Some(vec![self.file.as_fd()])
    }
    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        check_cas_args(expected, new)?;
        self.check(offset, new.len())?;
        let _g = self.ats.lock().map_err(|_| Error::Io {
            op: "ats",
            offset,
            source: std::io::Error::other("poisoned"),
        })?;
        // With O_DIRECT the bounce may touch neighbouring bytes: lock the aligned span.
        let (ls, ll) = if self.direct {
            Self::aligned_span(offset, new.len())
        } else {
            (offset, new.len())
        };
        self.range_lock(ls, ll, true)?;
        let r = (|| -> Result<Cas> {
            let mut cur = vec![0u8; new.len()];
            self.raw_read(&mut cur, offset)?;
            if cur != expected {
                return Ok(Cas::Mismatch(cur));
            }
            self.raw_write(new, offset)?;
            Ok(Cas::Written)
        })();
        let u = self.range_lock(ls, ll, false);
        let r = r?;
        u?;
        Ok(r)
    }
}

impl<D: BlockDevice + ?Sized> BlockDevice for std::sync::Arc<D> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn len(&self) -> Result<u64> {
        (**self).len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        (**self).set_len(len)
    }
    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        (**self).compare_and_write(offset, expected, new)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        (**self).write_zeroes(offset, len)
    }
    fn fixed_fds(&self) -> Option<Vec<BorrowedFd<'_>>> {
        (**self).fixed_fds()
    }
}

/// Counts the operations that reach a device: instrumentation for benchmarks (`vmfs
/// bench-io` reports I/Os per operation with it) and I/O-count tests. A real wrapper, not a
/// fake, so it is built in every configuration.
#[derive(Debug)]
pub struct CountingDevice<D> {
    inner: D,
    counts: [std::sync::atomic::AtomicU64; 4],
}

impl<D: BlockDevice> CountingDevice<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> Self {
        CountingDevice {
            inner,
            counts: Default::default(),
        }
    }
    /// (reads, writes, compare-and-writes, flushes) so far.
    pub fn counts(&self) -> [u64; 4] {
        use std::sync::atomic::Ordering::Relaxed;
        [0, 1, 2, 3].map(|i| self.counts[i].load(Relaxed))
    }
    /// All I/Os so far (flushes included).
    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }
    fn bump(&self, i: usize) {
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<D: BlockDevice> BlockDevice for CountingDevice<D> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.bump(0);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.bump(1);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        self.bump(3);
        self.inner.flush()
    }
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.inner.set_len(len)
    }
    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        self.bump(2);
        self.inner.compare_and_write(offset, expected, new)
    }
    /// One write (one command, as WRITE SAME is), whatever the length.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.bump(1);
        self.inner.write_zeroes(offset, len)
    }
    fn fixed_fds(&self) -> Option<Vec<BorrowedFd<'_>>> {
        self.inner.fixed_fds()
    }
}

/// [`BlockDevice::write_zeroes`] by writing zeros, 1 MiB at a time: the default, and the
/// fallback of a device whose other end cannot zero (an NBD server without
/// `WRITE_ZEROES`).
pub(crate) fn write_zeroes_by_writing<D: BlockDevice + ?Sized>(
    dev: &D,
    offset: u64,
    len: u64,
) -> Result<()> {
    let zero = vec![0u8; (1 << 20).min(usize::try_from(len).unwrap_or(usize::MAX))];
    // Past the end (or overflowing), `write_at` answers out of bounds.
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let n = usize::try_from(end - at).map_or(zero.len(), |r| r.min(zero.len()));
        dev.write_at(&zero[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pread_exact_fills_the_buffer_or_says_eof() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let mut b = vec![0u8; 4096];
        pread_exact(&f, &mut b, 5000).unwrap();
        assert_eq!(b, data[5000..9096]);
        pread_exact(&f, &mut [], 20_000).unwrap();
        let e = pread_exact(&f, &mut b, 8000).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    fn exercise(d: &dyn BlockDevice) {
        d.write_at(b"hello", 100).unwrap();
        let mut b = [0u8; 5];
        d.read_at(&mut b, 100).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(
            d.compare_and_write(100, b"hellx", b"world").unwrap(),
            Cas::Mismatch(b"hello".to_vec())
        );
        assert_eq!(
            d.compare_and_write(100, b"hello", b"world").unwrap(),
            Cas::Written
        );
        d.read_at(&mut b, 100).unwrap();
        assert_eq!(&b, b"world");
        assert!(matches!(
            d.read_at(&mut b, d.len().unwrap() - 2),
            Err(Error::OutOfBounds { .. })
        ));
        d.flush().unwrap();
    }

    /// `write_zeroes` zeros exactly its range (unaligned ends too) and refuses one past
    /// the end.
    fn exercise_zeroes(d: &dyn BlockDevice) {
        let len = 64 << 10;
        d.write_at(&vec![0xab; len], 0).unwrap();
        d.write_zeroes(1000, 20_000).unwrap();
        let mut b = vec![0u8; len];
        d.read_at(&mut b, 0).unwrap();
        assert!(b[..1000].iter().all(|&x| x == 0xab));
        assert!(b[1000..21_000].iter().all(|&x| x == 0));
        assert!(b[21_000..].iter().all(|&x| x == 0xab));
        let end = d.len().unwrap();
        assert!(matches!(
            d.write_zeroes(end - 10, 11),
            Err(Error::OutOfBounds { .. })
        ));
        d.write_zeroes(end, 0).unwrap();
    }

    #[test]
    fn mem_device_basics() {
        exercise(&MemDevice::new(8192));
        exercise_zeroes(&MemDevice::new(1 << 20));
    }

    #[test]
    fn write_zeroes_on_files_and_wrappers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lun");
        let d = FileDevice::create(&p, 1 << 20).unwrap();
        exercise_zeroes(&d);
        match FileDevice::open(&p, true) {
            Ok(dd) => exercise_zeroes(&dd),
            Err(e) => eprintln!("SKIP: O_DIRECT not supported here: {e}"),
        }
        let counted = CountingDevice::new(std::sync::Arc::new(d));
        counted.write_zeroes(0, 4096).unwrap();
        assert_eq!(counted.counts(), [0, 1, 0, 0]);
        // tmpfs has no ZERO_RANGE: the punch-hole way.
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            exercise_zeroes(&FileDevice::create(&shm.path().join("lun"), 1 << 20).unwrap());
        }
    }

    /// Zeroing a range of a sparse image that holds no data leaves it sparse (no
    /// unwritten extents for ext4 to walk later); a range with data in its middle is
    /// still zeroed.
    #[test]
    fn zeroing_a_hole_leaves_the_image_sparse() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lun");
        let d = FileDevice::create(&p, 64 << 20).unwrap();
        d.write_zeroes(4096, 32 << 20).unwrap();
        let blocks = std::fs::metadata(&p).unwrap().blocks();
        assert_eq!(blocks, 0, "512 B blocks allocated after zeroing a hole");
        d.write_at(&[0xcd; 4096], 40 << 20).unwrap();
        d.write_zeroes(36 << 20, 8 << 20).unwrap();
        let mut b = vec![1u8; 4096];
        d.read_at(&mut b, 40 << 20).unwrap();
        assert!(b.iter().all(|&x| x == 0), "data inside the range is zeroed");
    }

    #[test]
    fn file_device_basics_buffered_and_direct() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lun");
        let d = FileDevice::create(&p, 1 << 20).unwrap();
        exercise(&d);
        match FileDevice::open(&p, true) {
            Ok(dd) => exercise(&dd),
            Err(e) => eprintln!("SKIP: O_DIRECT not supported here: {e}"),
        }
    }

    #[test]
    fn file_device_cas_is_atomic_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lun");
        FileDevice::create(&p, 4096).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let d = FileDevice::open(&p, false).unwrap();
                    let mut n = 0;
                    while n < 200 {
                        let mut cur = [0u8; 8];
                        d.read_at(&mut cur, 512).unwrap();
                        let next = (u64::from_le_bytes(cur) + 1).to_le_bytes();
                        if d.compare_and_write(512, &cur, &next).unwrap() == Cas::Written {
                            n += 1;
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let d = FileDevice::open(&p, false).unwrap();
        let mut cur = [0u8; 8];
        d.read_at(&mut cur, 512).unwrap();
        assert_eq!(u64::from_le_bytes(cur), 800);
    }
}
