//! Random access to a disk inside a backup, without restoring it: the basis for reading
//! guest filesystems straight from the repository (file-level restore) and for copying
//! a backup into another repository (a [`DiskReader`] is a [`DiskSource`]).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex, PoisonError};

use crate::codec::Id;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::lock::LockGuard;
use crate::manifest::DiskManifest;
use crate::repo::Repository;
use crate::source::DiskSource;

/// Decoded grains kept for repeated reads (4 MiB at 64 KiB grains).
const CACHE_GRAINS: usize = 64;

#[derive(Debug, Default)]
struct Cache {
    grains: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
}

/// One disk of one backup, readable at any offset. Holds a shared lock, so a prune
/// cannot move its chunks while it is open, and its own handle on the repository, so it
/// can be shared (`Arc`) with filesystem readers that want an owned, `'static` device.
///
/// ```
/// use std::io::{Read, Seek, SeekFrom};
/// use vinfra_vcb::{BackupOptions, InitOptions, KdfParams, LocalDir, MemDisk, Repository};
/// # let dir = tempfile::tempdir().unwrap();
/// let repo = Repository::init(LocalDir::create(dir.path()).unwrap(), b"pw",
///     &InitOptions::default().kdf(KdfParams::INSECURE_FAST)).unwrap();
/// let mut disk = MemDisk::new(1 << 20);
/// disk.write_at(b"superblock", 1024);
/// let s = repo.backup(&BackupOptions::new("vm", 0), &[("d", &disk.snapshot())]).unwrap();
///
/// let r = repo.disk_reader(&s.id, "d").unwrap();
/// let mut b = [0u8; 10];
/// r.read_at(&mut b, 1024).unwrap();
/// assert_eq!(&b, b"superblock");
/// let mut c = r.cursor();
/// c.seek(SeekFrom::Start(1029)).unwrap();
/// let mut rest = [0u8; 5];
/// c.read_exact(&mut rest).unwrap();
/// assert_eq!(&rest, b"block");
/// ```
#[derive(Debug)]
pub struct DiskReader {
    repo: Repository,
    snapshot: Id,
    disk: DiskManifest,
    index: Index,
    cache: Mutex<Cache>,
    _lock: LockGuard,
}

impl Repository {
    /// Opens disk `disk` of backup `snapshot` for random access.
    pub fn disk_reader(&self, snapshot: &Id, disk: &str) -> Result<DiskReader> {
        let lock = self.lock(false)?;
        let s = self.snapshot(snapshot)?;
        let d = s
            .manifest
            .disk(disk)
            .cloned()
            .ok_or_else(|| Error::NoDisk {
                snapshot: snapshot.to_hex(),
                disk: disk.to_string(),
            })?;
        let (index, _) = self.load_index()?;
        Ok(DiskReader {
            repo: self.clone(),
            snapshot: *snapshot,
            disk: d,
            index,
            cache: Mutex::new(Cache::default()),
            _lock: lock,
        })
    }
}

impl DiskReader {
    /// The disk's capacity.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity
    }

    /// The backup this disk belongs to.
    pub fn snapshot_id(&self) -> &Id {
        &self.snapshot
    }

    /// The disk's manifest entry.
    pub fn manifest(&self) -> &DiskManifest {
        &self.disk
    }

    /// Grain `g`'s bytes (`None`: zeros), from the cache or the repository.
    fn grain(&self, g: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(id) = self.disk.grains.get(g).flatten() else {
            return Ok(None);
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = cache.grains.get(&g) {
            return Ok(Some(b.clone()));
        }
        if !self.index.contains(&id) {
            return Err(Error::ChunkMissing {
                id: id.to_hex(),
                manifest: self.snapshot.to_hex(),
                disk: self.disk.name.clone(),
                offset: g * u64::from(self.disk.chunk_size),
            });
        }
        let data = Arc::new(self.repo.read_chunk(&self.index, &id)?);
        if cache.order.len() >= CACHE_GRAINS {
            if let Some(old) = cache.order.pop_front() {
                cache.grains.remove(&old);
            }
        }
        cache.order.push_back(g);
        cache.grains.insert(g, data.clone());
        Ok(Some(data))
    }

    /// Fills `buf` from `offset` (within the capacity); every chunk read is checked
    /// against its id.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.disk.capacity);
        if end.is_none() {
            return Err(Error::Invalid(format!(
                "read of {} bytes at {offset} past the disk's {} bytes",
                buf.len(),
                self.disk.capacity
            )));
        }
        let cs = u64::from(self.disk.chunk_size);
        let mut pos = 0;
        while pos < buf.len() {
            let o = offset + pos as u64;
            let (g, within) = (o / cs, (o % cs) as usize);
            let n = (cs as usize - within).min(buf.len() - pos);
            let piece = &mut buf[pos..pos + n];
            match self.grain(g)? {
                Some(data) => piece.copy_from_slice(&data[within..within + n]),
                None => piece.fill(0),
            }
            pos += n;
        }
        Ok(())
    }

    /// The disk's partition table (MBR or GPT), read from the backup.
    pub fn partitions(&self) -> Result<crate::partition::PartitionTable> {
        crate::partition::read_table(self.disk.capacity, |off, buf| self.read_at(buf, off))
    }

    /// A `Read + Seek` view from offset 0 (for filesystem readers that want one).
    pub fn cursor(&self) -> DiskCursor<'_> {
        DiskCursor {
            reader: self,
            pos: 0,
        }
    }
}

/// `Read + Seek` over a [`DiskReader`].
#[derive(Debug)]
pub struct DiskCursor<'a> {
    reader: &'a DiskReader,
    pos: u64,
}

impl Read for DiskCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.reader.capacity().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        self.reader
            .read_at(&mut buf[..n], self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DiskCursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.reader.capacity().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let t = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = t;
        Ok(t)
    }
}

impl DiskSource for DiskReader {
    fn capacity(&self) -> u64 {
        self.disk.capacity
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        DiskReader::read_at(self, buf, offset).map_err(io::Error::other)
    }

    /// The grains that hold chunks.
    fn allocated(&self) -> Vec<(u64, u64)> {
        let cs = u64::from(self.disk.chunk_size);
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (g, _) in self.disk.grains.chunks() {
            let start = g * cs;
            let len = cs.min(self.disk.capacity - start);
            match out.last_mut() {
                Some((o, l)) if *o + *l == start => *l += len,
                _ => out.push((start, len)),
            }
        }
        out
    }

    fn change_id(&self) -> Option<u64> {
        self.disk.change_id
    }

    /// A backup knows no changes of its own: a copy reads every allocated grain.
    fn changed_since(&self, _change_id: u64) -> Option<Vec<(u64, u64)>> {
        None
    }
}
