//! Image backup: full, then incremental forever from changed-block tracking.
//!
//! Per disk, every grain gets one of four fates: outside the source's allocated ranges
//! it is recorded as zero without being read; unchanged since the parent backup (the
//! source's change tracking says so, and the parent's chunk is still indexed) it takes
//! the parent's entry without being read; otherwise it is read, and recorded as zero if
//! all zeros, as the parent's chunk if it hashes the same (a grain written with the same
//! bytes), as an existing chunk if the index has it (dedup), or stored as a new chunk.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::codec::Id;
use crate::error::{Error, Result};
use crate::index::{Index, IndexPack};
use crate::manifest::{grain_count, DiskManifest, DiskStats, GrainMap, Manifest};
use crate::pack::{pack_name, seal_chunk, PackWriter, SealedChunk};
use crate::record::INDEX;
use crate::repo::{Repository, Snapshot};
use crate::source::{grain_set, DiskSource};

/// Grains read and processed together (4 MiB at 64 KiB).
const BATCH: usize = 64;

/// Which backup an incremental starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Parent {
    /// The latest backup of the same VM (the default).
    Latest,
    /// This backup.
    Id(Id),
    /// None: read every allocated grain (still storing only what is new).
    None,
}

/// What to back up and how.
///
/// ```
/// use vinfra_vcb::{BackupOptions, Parent};
/// let o = BackupOptions::new("vm1", 1_700_000_000).host("esx2").config(b"{}".to_vec()).parent(Parent::None);
/// assert_eq!(o.vm, "vm1");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackupOptions {
    /// The VM's name.
    pub vm: String,
    /// The host making the backup.
    pub host: String,
    /// The time to record, seconds since the epoch (the library reads no clock).
    pub time_unix_s: u64,
    /// The VM's configuration blob.
    pub config: Vec<u8>,
    /// Which backup to be incremental from.
    pub parent: Parent,
}

impl BackupOptions {
    /// A backup of `vm` at `time_unix_s`.
    pub fn new(vm: &str, time_unix_s: u64) -> BackupOptions {
        BackupOptions {
            vm: vm.to_string(),
            host: String::new(),
            time_unix_s,
            config: Vec::new(),
            parent: Parent::Latest,
        }
    }
    /// With the host's name.
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }
    /// With the VM's configuration.
    pub fn config(mut self, config: Vec<u8>) -> Self {
        self.config = config;
        self
    }
    /// With this parent choice.
    pub fn parent(mut self, parent: Parent) -> Self {
        self.parent = parent;
        self
    }
}

/// Packs being written by one backup.
struct Writer<'r> {
    repo: &'r Repository,
    pack: PackWriter,
    /// Chunks in the open pack or in packs already written by this backup.
    stored: HashSet<Id>,
    written: Vec<IndexPack>,
}

impl Writer<'_> {
    fn add(&mut self, c: &SealedChunk) -> Result<()> {
        if !self.stored.insert(c.id) {
            return Ok(());
        }
        self.pack.add(c);
        if self.pack.is_full() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let enc = self.repo.keys.encrypted();
        let pack = std::mem::replace(&mut self.pack, PackWriter::new(enc));
        let (id, bytes, blobs) = pack.finish(&self.repo.keys);
        self.repo.write(&pack_name(&id), &bytes)?;
        tracing::debug!(pack = %id.short(), bytes = bytes.len(), blobs = blobs.len(), "pack written");
        self.written.push(IndexPack { pack: id, blobs });
        Ok(())
    }
}

/// One grain's fate before reading.
#[derive(Clone, Copy)]
enum Plan {
    Zero,
    Keep(Option<Id>),
    Read,
}

impl Repository {
    /// Backs up `disks` (name, source) as one backup of `opts.vm` and publishes its
    /// manifest. Holds a shared lock: backups run together, prune waits.
    pub fn backup(
        &self,
        opts: &BackupOptions,
        disks: &[(&str, &dyn DiskSource)],
    ) -> Result<Snapshot> {
        let _lock = self.lock(false)?;
        let mut names = HashSet::new();
        for (n, _) in disks {
            if !names.insert(*n) {
                return Err(Error::Invalid(format!("disk {n} given twice")));
            }
        }
        let (index, _) = self.load_index()?;
        let parent = self.parent_of(opts)?;
        let mut w = Writer {
            repo: self,
            pack: PackWriter::new(self.keys.encrypted()),
            stored: HashSet::new(),
            written: Vec::new(),
        };
        let mut out = Vec::new();
        for (name, src) in disks {
            let pd = parent.as_ref().and_then(|p| p.manifest.disk(name));
            out.push(self.backup_disk(&index, &mut w, name, *src, pd)?);
        }
        w.flush()?;
        if !w.written.is_empty() {
            // The packs are in place before the index that names them.
            self.write_named(INDEX, "index", &crate::index::encode_index(&w.written))?;
        }
        let manifest = Manifest {
            time_unix_s: opts.time_unix_s,
            vm: opts.vm.clone(),
            host: opts.host.clone(),
            parent: parent.as_ref().map(|p| p.id),
            config: opts.config.clone(),
            disks: out,
        };
        // The commit point: the manifest's rename.
        let id = self.write_manifest(&manifest)?;
        tracing::info!(vm = %opts.vm, snapshot = %id.short(), "backup committed");
        Ok(Snapshot { id, manifest })
    }

    fn parent_of(&self, opts: &BackupOptions) -> Result<Option<Snapshot>> {
        match &opts.parent {
            Parent::None => Ok(None),
            Parent::Id(id) => self.snapshot(id).map(Some),
            Parent::Latest => {
                let scan = self.scan_snapshots()?;
                for (name, e) in &scan.damaged {
                    tracing::warn!(manifest = %name, error = %e, "damaged manifest not used as a parent");
                }
                Ok(scan
                    .good
                    .into_iter()
                    .rev()
                    .find(|s| s.manifest.vm == opts.vm))
            }
        }
    }

    fn backup_disk(
        &self,
        index: &Index,
        w: &mut Writer<'_>,
        name: &str,
        src: &dyn DiskSource,
        parent: Option<&DiskManifest>,
    ) -> Result<DiskManifest> {
        let cap = src.capacity();
        let chunk = self.config.chunk_size;
        let cs = u64::from(chunk);
        let n = grain_count(cap, chunk);
        let parent = parent.filter(|p| p.capacity == cap && p.chunk_size == chunk);
        let allocated = grain_set(&src.allocated(), cs, n);
        let changed = parent
            .and_then(|p| p.change_id)
            .and_then(|c| src.changed_since(c))
            .map(|r| grain_set(&r, cs, n));
        let level = i32::from(self.config.zstd_level);
        let mut stats = DiskStats::default();
        let mut grains = GrainMap::default();
        let mut buf = vec![0u8; BATCH * chunk as usize];
        let mut g0 = 0u64;
        while g0 < n {
            let k = (n - g0).min(BATCH as u64) as usize;
            // Decide, per grain, whether it must be read.
            let plan: Vec<Plan> = (0..k)
                .map(|i| {
                    let g = g0 + i as u64;
                    if !allocated[g as usize] {
                        return Plan::Zero;
                    }
                    match (parent, &changed) {
                        (Some(p), Some(ch)) if !ch[g as usize] => match p.grains.get(g) {
                            Some(None) => Plan::Keep(None),
                            Some(Some(id)) if index.contains(&id) || w.stored.contains(&id) => {
                                Plan::Keep(Some(id))
                            }
                            _ => Plan::Read,
                        },
                        _ => Plan::Read,
                    }
                })
                .collect();
            // Read runs of consecutive grains to read.
            let mut i = 0;
            while i < k {
                if !matches!(plan[i], Plan::Read) {
                    i += 1;
                    continue;
                }
                let mut j = i;
                while j < k && matches!(plan[j], Plan::Read) {
                    j += 1;
                }
                let off = (g0 + i as u64) * cs;
                let len = (((g0 + j as u64) * cs).min(cap) - off) as usize;
                let start = i * chunk as usize;
                src.read_at(&mut buf[start..start + len], off)
                    .map_err(|e| Error::Source {
                        disk: name.to_string(),
                        offset: off,
                        source: e,
                    })?;
                stats.bytes_read += len as u64;
                i = j;
            }
            // Hash what was read, in parallel; zeros need no hash.
            let grain_len = |i: usize| ((cap - (g0 + i as u64) * cs).min(cs)) as usize;
            let ids: Vec<Option<Option<Id>>> = (0..k)
                .into_par_iter()
                .map(|i| {
                    if !matches!(plan[i], Plan::Read) {
                        return None;
                    }
                    let data = &buf[i * chunk as usize..][..grain_len(i)];
                    Some(if is_zero(data) {
                        None
                    } else {
                        Some(self.keys.id(data))
                    })
                })
                .collect();
            // New chunks: neither indexed nor stored by this backup already.
            let mut seen = HashSet::new();
            let new: Vec<(usize, Id)> = (0..k)
                .filter_map(|i| match ids[i] {
                    // A grain rewritten with the bytes it had is the parent's chunk,
                    // found here too: only chunks missing from the index are stored
                    // (so a chunk whose index was lost is stored again).
                    Some(Some(id)) => {
                        let is_new =
                            !index.contains(&id) && !w.stored.contains(&id) && seen.insert(id);
                        is_new.then_some((i, id))
                    }
                    _ => None,
                })
                .collect();
            let sealed: Vec<SealedChunk> = new
                .par_iter()
                .map(|&(i, id)| {
                    let data = &buf[i * chunk as usize..][..grain_len(i)];
                    seal_chunk(&self.keys, id, data, level)
                })
                .collect();
            for c in &sealed {
                stats.bytes_new += c.stored.len() as u64;
                stats.chunks_new += 1;
                w.add(c)?;
            }
            for i in 0..k {
                grains.push(match (plan[i], ids[i]) {
                    (Plan::Zero, _) => None,
                    (Plan::Keep(id), _) => id,
                    (Plan::Read, Some(id)) => id,
                    (Plan::Read, None) => unreachable!("every read grain is hashed"),
                });
            }
            g0 += k as u64;
        }
        tracing::debug!(
            disk = name,
            read = stats.bytes_read,
            new = stats.bytes_new,
            "disk backed up"
        );
        Ok(DiskManifest {
            name: name.to_string(),
            capacity: cap,
            chunk_size: chunk,
            change_id: src.change_id(),
            grains,
            stats,
        })
    }
}

/// Whether every byte is zero (a word at a time).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .all(|w| w == 0)
        && tail.iter().all(|&x| x == 0)
}
