//! Restore of one disk: to any writer, or to a sparse file verified after writing.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::codec::Id;
use crate::error::{Error, Result};
use crate::image_file::{find_mismatch, ImageWriter};
use crate::index::Index;
use crate::manifest::DiskManifest;
use crate::repo::Repository;

/// Grains fetched and opened together.
const BATCH: u64 = 64;

/// Figures of a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreStats {
    /// Bytes of disk restored (the capacity).
    pub bytes: u64,
    /// Chunks read from the repository.
    pub chunks_read: u64,
    /// Grains that were zero (not read).
    pub zero_grains: u64,
}

impl Repository {
    fn disk_of(&self, snapshot: &Id, disk: &str) -> Result<DiskManifest> {
        let s = self.snapshot(snapshot)?;
        s.manifest
            .disks
            .into_iter()
            .find(|d| d.name == disk)
            .ok_or_else(|| Error::NoDisk {
                snapshot: snapshot.to_hex(),
                disk: disk.to_string(),
            })
    }

    /// Calls `f(offset, data)` for every grain of `d` in order, `data == None` for zero
    /// grains; chunks are fetched, decrypted and checked in parallel batches.
    fn for_each_grain(
        &self,
        snapshot: &Id,
        d: &DiskManifest,
        stats: &mut RestoreStats,
        mut f: impl FnMut(u64, usize, Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        let (index, scan) = self.load_index()?;
        let cs = u64::from(d.chunk_size);
        let n = d.grains.len();
        let mut g0 = 0;
        while g0 < n {
            let k = (n - g0).min(BATCH);
            let data: Vec<Result<Option<Vec<u8>>>> = (g0..g0 + k)
                .into_par_iter()
                .map(|g| match d.grains.get(g).flatten() {
                    None => Ok(None),
                    Some(id) => self
                        .fetch(&index, &id, snapshot, d, g * cs, &scan)
                        .map(Some),
                })
                .collect();
            for (i, r) in data.into_iter().enumerate() {
                let off = (g0 + i as u64) * cs;
                let len = (d.capacity - off).min(cs) as usize;
                let r = r?;
                match &r {
                    Some(b) if b.len() != len => {
                        return Err(Error::corrupt(
                            crate::error::Object::Chunk,
                            &format!(
                                "{} (disk {} offset {off})",
                                d.grains.get(g0 + i as u64).flatten().unwrap_or(Id([0; 32])),
                                d.name
                            ),
                            format!("{} bytes where the grain has {len}", b.len()),
                        ))
                    }
                    Some(_) => stats.chunks_read += 1,
                    None => stats.zero_grains += 1,
                }
                f(off, len, r.as_deref())?;
            }
            g0 += k;
        }
        stats.bytes = d.capacity;
        Ok(())
    }

    fn fetch(
        &self,
        index: &Index,
        id: &Id,
        snapshot: &Id,
        d: &DiskManifest,
        offset: u64,
        scan: &crate::repo::Scan<()>,
    ) -> Result<Vec<u8>> {
        if !index.contains(id) {
            if let Some((name, e)) = scan.damaged.first() {
                tracing::warn!(index = %name, error = %e, "a chunk may be missing because of this damaged index");
            }
            return Err(Error::ChunkMissing {
                id: id.to_hex(),
                manifest: snapshot.to_hex(),
                disk: d.name.clone(),
                offset,
            });
        }
        self.read_chunk(index, id)
    }

    /// Restores disk `disk` of backup `snapshot` through `sink(offset, data)`, called for
    /// every grain in order with `None` for a zero grain (a sink writing to a zeroed or
    /// new target may skip those); every chunk is checked against its id first.
    ///
    /// ```
    /// # use vinfra_vcb::{BackupOptions, InitOptions, KdfParams, LocalDir, MemDisk, Repository};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let repo = Repository::init(LocalDir::create(dir.path()).unwrap(), b"pw",
    /// #     &InitOptions::default().kdf(KdfParams::INSECURE_FAST)).unwrap();
    /// let mut disk = MemDisk::new(1 << 20);
    /// disk.write_at(b"data", 70_000);
    /// let s = repo.backup(&BackupOptions::new("vm", 0), &[("d", &disk.snapshot())]).unwrap();
    /// let mut written = Vec::new();
    /// repo.restore_disk_with(&s.id, "d", |off, data| {
    ///     if data.is_some() { written.push(off) }
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(written, vec![65536]);
    /// ```
    pub fn restore_disk_with(
        &self,
        snapshot: &Id,
        disk: &str,
        mut sink: impl FnMut(u64, Option<&[u8]>) -> std::io::Result<()>,
    ) -> Result<RestoreStats> {
        let _lock = self.lock(false)?;
        let d = self.disk_of(snapshot, disk)?;
        let mut stats = RestoreStats::default();
        self.for_each_grain(snapshot, &d, &mut stats, |off, _, data| {
            sink(off, data).map_err(|e| Error::RestoreWrite {
                disk: disk.to_string(),
                path: format!("(sink, offset {off})").into(),
                source: e,
            })
        })?;
        Ok(stats)
    }

    /// Restores disk `disk` of backup `snapshot` to `out`, every chunk checked against
    /// its id on the way.
    pub fn restore_disk(
        &self,
        snapshot: &Id,
        disk: &str,
        out: &mut dyn Write,
    ) -> Result<RestoreStats> {
        // Shared: prune (which moves chunks between packs) waits until this is done.
        let _lock = self.lock(false)?;
        let d = self.disk_of(snapshot, disk)?;
        let zeros = vec![0u8; d.chunk_size as usize];
        let mut stats = RestoreStats::default();
        let werr = |e| Error::RestoreWrite {
            disk: disk.to_string(),
            path: "(writer)".into(),
            source: e,
        };
        self.for_each_grain(snapshot, &d, &mut stats, |_, len, data| {
            out.write_all(data.unwrap_or(&zeros[..len])).map_err(werr)
        })?;
        out.flush().map_err(werr)?;
        Ok(stats)
    }

    /// Restores disk `disk` of backup `snapshot` into the file `path` (created or
    /// truncated; zero grains left as holes), makes it durable, then reads it back and
    /// checks every grain against the backup.
    pub fn restore_disk_to_file(
        &self,
        snapshot: &Id,
        disk: &str,
        path: &Path,
    ) -> Result<RestoreStats> {
        // Shared: prune (which moves chunks between packs) waits until this is done.
        let _lock = self.lock(false)?;
        let d = self.disk_of(snapshot, disk)?;
        let werr = |e| Error::RestoreWrite {
            disk: disk.to_string(),
            path: path.to_path_buf(),
            source: e,
        };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(werr)?;
        f.set_len(d.capacity).map_err(werr)?;
        let mut stats = RestoreStats::default();
        // Around the page cache where the filesystem allows it (see `image_file`).
        let mut writer = ImageWriter::new(path, f.try_clone().map_err(werr)?).map_err(werr)?;
        self.for_each_grain(snapshot, &d, &mut stats, |off, _, data| match data {
            Some(b) => writer.put(off, b).map_err(werr),
            None => Ok(()),
        })?;
        writer.finish().map_err(werr)?;
        f.sync_all().map_err(werr)?;
        // Read back every written grain and check it against its id, in parallel. Zero
        // grains are holes of the file just truncated and sized: not read back.
        let cs = u64::from(d.chunk_size);
        let written: Vec<(u64, usize, Id)> = d
            .grains
            .chunks()
            .map(|(g, id)| (g * cs, (d.capacity - g * cs).min(cs) as usize, id))
            .collect();
        let bad = find_mismatch(path, &f, &written, |id, bytes| self.keys.id(bytes) == *id);
        match bad {
            Ok(None) => {}
            Ok(Some(offset)) => {
                return Err(Error::RestoreMismatch {
                    disk: disk.to_string(),
                    path: path.to_path_buf(),
                    offset,
                })
            }
            Err(e) => return Err(werr(e)),
        }
        Ok(stats)
    }
}
