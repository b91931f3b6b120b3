//! Start from a backup: a disk of a backup as a read-write block device, so a VM can
//! boot from it at once instead of after a full restore.
//!
//! Reads come from the repository (through a [`DiskReader`]: chunks fetched, checked
//! and cached on demand) until the grain is written; writes go to a local overlay file
//! of the disk's capacity, a grain at a time. The first write to a grain copies the
//! whole grain from the backup into the overlay (copy-on-write) unless the write covers
//! it, so the overlay always holds complete grains and a grain is read from exactly one
//! place. The backup is never modified. The overlay's grain map lives in memory: the
//! overlay belongs to one run of the VM (it is created empty by [`BackupOverlay::create`]).
//! A host adapts this to its block-device trait (`vinfra_host::backup_disk` for
//! vmm-core's `BlockBackend`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::reader::DiskReader;

/// A backup's disk, readable and writable, with the writes kept in an overlay file.
#[derive(Debug)]
pub struct BackupOverlay {
    disk: DiskReader,
    overlay: File,
    grain: u64,
    /// One bit per grain: set when the overlay holds it. Writers hold the lock for the
    /// whole write, so a grain is copied up once.
    present: Mutex<Vec<u64>>,
}

impl BackupOverlay {
    /// `disk` with its writes going to a new (or truncated) overlay file at `path`,
    /// sparse, of the disk's capacity.
    ///
    /// ```
    /// # use vinfra_vcb::{BackupOptions, InitOptions, KdfParams, LocalDir, MemDisk, Repository};
    /// # use vinfra_vcb::BackupOverlay;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let repo = Repository::init(LocalDir::create(dir.path().join("repo")).unwrap(), b"pw",
    /// #     &InitOptions::default().kdf(KdfParams::INSECURE_FAST)).unwrap();
    /// let mut d = MemDisk::new(1 << 20);
    /// d.write_at(b"boot", 0);
    /// let s = repo.backup(&BackupOptions::new("vm", 0), &[("d", &d.snapshot())]).unwrap();
    /// let live = BackupOverlay::create(repo.disk_reader(&s.id, "d").unwrap(),
    ///                                  &dir.path().join("overlay")).unwrap();
    /// live.write_at(b"BO", 0).unwrap();
    /// let mut b = [0u8; 4];
    /// live.read_at(&mut b, 0).unwrap();
    /// assert_eq!(&b, b"BOot");
    /// ```
    pub fn create(disk: DiskReader, path: &Path) -> Result<BackupOverlay> {
        let werr = |e| Error::RestoreWrite {
            disk: disk.manifest().name.clone(),
            path: path.to_path_buf(),
            source: e,
        };
        let overlay = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(werr)?;
        overlay.set_len(disk.capacity()).map_err(werr)?;
        let grain = u64::from(disk.manifest().chunk_size);
        let words = disk.capacity().div_ceil(grain).div_ceil(64);
        let words = usize::try_from(words).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(BackupOverlay {
            disk,
            overlay,
            grain,
            present: Mutex::new(vec![0; words]),
        })
    }

    /// The disk's capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity()
    }

    /// The backup's disk underneath.
    pub fn disk(&self) -> &DiskReader {
        &self.disk
    }

    /// Grains the overlay holds (written since [`BackupOverlay::create`]).
    pub fn grains_written(&self) -> u64 {
        let p = self.present.lock().unwrap_or_else(PoisonError::into_inner);
        p.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    fn check(&self, len: usize, offset: u64) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.capacity() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at {offset} past the disk's {} bytes",
                    self.capacity()
                ),
            )),
        }
    }

    /// Pieces of `[offset, offset + len)` within one grain each: (grain, offset, length,
    /// position in the caller's buffer).
    fn pieces(&self, offset: u64, len: usize) -> impl Iterator<Item = (u64, u64, usize, usize)> {
        let grain = self.grain;
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            if pos >= len {
                return None;
            }
            let at = offset + pos as u64;
            let n = ((grain - at % grain) as usize).min(len - pos);
            let piece = (at / grain, at, n, pos);
            pos += n;
            Some(piece)
        })
    }

    /// Reads `buf.len()` bytes at `offset`: written grains from the overlay, the others
    /// from the backup (a damaged or missing chunk is an error naming it).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(buf.len(), offset)?;
        for (g, at, n, pos) in self.pieces(offset, buf.len()) {
            let piece = &mut buf[pos..pos + n];
            let written = {
                let p = self.present.lock().unwrap_or_else(PoisonError::into_inner);
                has(&p, g)
            };
            if written {
                self.overlay.read_exact_at(piece, at)?;
            } else {
                self.disk.read_at(piece, at).map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    /// Writes `buf` at `offset` into the overlay (copying up the rest of each grain it
    /// touches from the backup the first time).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(buf.len(), offset)?;
        let mut p = self.present.lock().unwrap_or_else(PoisonError::into_inner);
        for (g, at, n, pos) in self.pieces(offset, buf.len()) {
            let data = &buf[pos..pos + n];
            if has(&p, g) {
                self.overlay.write_all_at(data, at)?;
                continue;
            }
            let start = g * self.grain;
            let len = self.grain.min(self.capacity() - start) as usize;
            if n == len {
                self.overlay.write_all_at(data, at)?;
            } else {
                let mut whole = vec![0u8; len];
                self.disk
                    .read_at(&mut whole, start)
                    .map_err(io::Error::other)?;
                let within = (at - start) as usize;
                whole[within..within + n].copy_from_slice(data);
                self.overlay.write_all_at(&whole, start)?;
            }
            set(&mut p, g);
        }
        Ok(())
    }

    /// Makes the overlay's writes durable.
    pub fn flush(&self) -> io::Result<()> {
        self.overlay.sync_data()
    }
}

fn has(bits: &[u64], g: u64) -> bool {
    bits.get((g / 64) as usize)
        .is_some_and(|w| w & (1 << (g % 64)) != 0)
}

fn set(bits: &mut [u64], g: u64) {
    if let Some(w) = bits.get_mut((g / 64) as usize) {
        *w |= 1 << (g % 64);
    }
}
