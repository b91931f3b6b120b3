//! Large files written around the page cache (`O_DIRECT`).
//!
//! A pack is written once and then, as a rule, not read again until a restore or a
//! verify. Through the page cache every byte is first copied into freshly allocated
//! cache pages: on the virtual machines backups run on, that copy (and the zeroing and
//! faulting of the new pages) cost as much CPU per byte as compressing it. With
//! `O_DIRECT` the device reads the data from a buffer this process reuses. The block-
//! aligned body goes direct; the tail of less than a block is written normally.
//! Filesystems without `O_DIRECT` (tmpfs) refuse the flag and get buffered writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Alignment of buffer, length and offset that `O_DIRECT` asks for (4 KiB covers
/// every logical block size in use).
pub(crate) const ALIGN: usize = 4096;
/// Files below this go through the page cache (index files, manifests, locks).
pub(crate) const MIN_DIRECT: usize = 1 << 20;

/// `path` opened for `O_DIRECT` with `opts`; `None` where the filesystem refuses it.
pub(crate) fn open_direct(path: &Path, opts: &mut OpenOptions) -> io::Result<Option<File>> {
    match opts.custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Direct writes for one repository directory.
#[derive(Debug, Default)]
pub(crate) struct DirectWriter {
    /// Set once the filesystem refused `O_DIRECT`: buffered from then on.
    unsupported: AtomicBool,
    /// A buffer kept between writes (already faulted in), with room to align.
    spare: Mutex<Vec<u8>>,
}

impl DirectWriter {
    /// Writes `data` to a new file at `path` (created, truncated), synced when
    /// `durable`. Returns `false`, having written nothing, when direct I/O is not
    /// available here (the caller writes the file normally).
    pub(crate) fn write(&self, path: &Path, data: &[u8], durable: bool) -> io::Result<bool> {
        if data.len() < MIN_DIRECT || self.unsupported.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let body = data.len() / ALIGN * ALIGN;
        let Some(f) = open_direct(
            path,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?
        else {
            self.unsupported.store(true, Ordering::Relaxed);
            return Ok(false);
        };
        // Taken out of the mutex, so concurrent writers never wait on each other; the
        // last one to finish leaves its buffer for the next write.
        let mut buf = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        if buf.len() < body + ALIGN {
            buf = vec![0u8; body + ALIGN];
        }
        let start = buf.as_ptr().align_offset(ALIGN);
        let aligned = &mut buf[start..start + body];
        aligned.copy_from_slice(&data[..body]);
        let r = f.write_all_at(aligned, 0);
        *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = buf;
        if let Err(e) = r {
            if e.raw_os_error() == Some(libc::EINVAL) {
                // The filesystem takes the flag but not these writes: buffered instead.
                self.unsupported.store(true, Ordering::Relaxed);
                return Ok(false);
            }
            return Err(e);
        }
        drop(f);
        // The tail (and the sync) through an ordinary descriptor.
        let f = OpenOptions::new().write(true).open(path)?;
        f.write_all_at(&data[body..], body as u64)?;
        if durable {
            f.sync_all()?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_go_direct_with_their_tail_and_tmpfs_falls_back() {
        let w = DirectWriter::default();
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..MIN_DIRECT + 4096 * 3 + 77)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let p = dir.path().join("pack");
        // ext4 and xfs take O_DIRECT; whatever the filesystem, the file must be whole.
        let direct = w.write(&p, &data, true).unwrap();
        if !direct {
            std::fs::write(&p, &data).unwrap();
        }
        assert_eq!(std::fs::read(&p).unwrap(), data);
        // Rewritten shorter: truncated, not left with the old tail.
        if direct {
            assert!(w.write(&p, &data[..MIN_DIRECT + 5], true).unwrap());
            assert_eq!(std::fs::read(&p).unwrap(), &data[..MIN_DIRECT + 5]);
        }
        // Small files are the caller's.
        assert!(!w.write(&p, &data[..100], true).unwrap());
        // tmpfs refuses O_DIRECT: nothing written, and buffered from then on.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let t = tempfile::tempdir_in(shm).unwrap();
            let w = DirectWriter::default();
            let q = t.path().join("pack");
            if !w.write(&q, &data, true).unwrap() {
                assert!(w.unsupported.load(Ordering::Relaxed));
                assert!(!w.write(&q, &data, true).unwrap());
            }
        }
    }
}
