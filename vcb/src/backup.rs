//! Image backup: full, then incremental forever from changed-block tracking.
//!
//! Per disk, every grain gets one of four fates: outside the source's allocated ranges
//! it is recorded as zero without being read; unchanged since the parent backup (the
//! source's change tracking says so, and the parent's chunk is still indexed) it takes
//! the parent's entry without being read; otherwise it is read, and recorded as zero if
//! all zeros, as the parent's chunk if it hashes the same (a grain written with the same
//! bytes), as an existing chunk if the index has it (dedup), or stored as a new chunk.
//! A new chunk some of whose 4 KiB blocks are already stored in whole chunks (the
//! unchanged blocks of a partly rewritten grain, a file copied from another) is stored
//! as a composite of its other blocks and references to those (module `blocks`).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, SyncSender};

use rayon::prelude::*;

use crate::blocks::{hash_blocks, BlockMap, Form};
use crate::codec::{is_zero, Id};
use crate::composite::encode_composite;
use crate::error::{Error, Result};
use crate::index::{ChunkBlocks, Index, IndexPack};
use crate::manifest::{
    grain_count, DiskManifest, DiskStats, GrainMap, Manifest, MAX_CONFIG, MAX_DISKS, MAX_STR,
};
use crate::pack::{pack_name, seal_chunk, seal_composite, PackWriter, SealedChunk};
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

/// Packs being filled by one backup; full ones go to the writer thread.
struct Writer<'r> {
    repo: &'r Repository,
    pack: PackWriter,
    /// Chunks in the open pack or in packs already handed to the writer.
    stored: HashSet<Id>,
    written: Vec<IndexPack>,
    /// Where the blocks of whole chunks are, the repository's and this backup's.
    block_map: BlockMap,
    /// The block lists of the whole chunks this backup stores, for its index.
    block_lists: HashMap<Id, ChunkBlocks>,
    to_disk: SyncSender<(String, Vec<u8>)>,
    /// Buffers of packs written, for the next packs.
    recycled: Receiver<Vec<u8>>,
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
        let next = match self.recycled.try_recv() {
            Ok(buf) => PackWriter::with_buffer(enc, buf),
            Err(_) => PackWriter::new(enc),
        };
        let pack = std::mem::replace(&mut self.pack, next);
        let (id, bytes, blobs) = pack.finish(&self.repo.keys);
        tracing::debug!(pack = %id.short(), bytes = bytes.len(), blobs = blobs.len(), "pack sealed");
        self.to_disk
            .send((pack_name(&id), bytes))
            // The writer stopped on an error, which the backup reports instead.
            .map_err(|_| Error::Invalid("pack writer stopped".into()))?;
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
        let mut names = HashSet::new();
        for (n, _) in disks {
            if !names.insert(*n) {
                return Err(Error::Invalid(format!("disk {n} given twice")));
            }
        }
        // The manifest's limits, checked before any work.
        Manifest {
            time_unix_s: opts.time_unix_s,
            vm: opts.vm.clone(),
            host: opts.host.clone(),
            parent: None,
            config: Vec::new(),
            disks: Vec::new(),
        }
        .check()
        .map_err(Error::Invalid)?;
        if opts.config.len() > MAX_CONFIG || disks.len() > MAX_DISKS {
            return Err(Error::Invalid(format!(
                "at most {MAX_DISKS} disks and a config of {MAX_CONFIG} bytes"
            )));
        }
        if let Some((n, _)) = disks.iter().find(|(n, _)| n.len() > MAX_STR) {
            return Err(Error::Invalid(format!(
                "disk name {n:?} over {MAX_STR} bytes"
            )));
        }
        let _lock = self.lock(false)?;
        let (mut index, _) = self.load_index_with_blocks()?;
        // The map of the blocks of whole chunks replaces the lists it is made from.
        let block_map = BlockMap::from_index(&index);
        index.blocks = HashMap::new();
        let parent = self.parent_of(opts)?;
        // Packs are written (and synced) on their own thread while the next one fills.
        let (out, written, lists) = std::thread::scope(|sc| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(1);
            let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            let writer = sc.spawn(move || -> Result<()> {
                for (name, bytes) in rx {
                    self.write(&name, &bytes)?;
                    // Full (the filler has enough) or gone: the buffer is dropped.
                    let _ = back_tx.try_send(bytes);
                }
                Ok(())
            });
            let mut w = Writer {
                repo: self,
                pack: PackWriter::new(self.keys.encrypted()),
                stored: HashSet::new(),
                written: Vec::new(),
                block_map,
                block_lists: HashMap::new(),
                to_disk: tx,
                recycled: back_rx,
            };
            let r = (|| {
                let mut out = Vec::new();
                for (name, src) in disks {
                    let pd = parent.as_ref().and_then(|p| p.manifest.disk(name));
                    out.push(self.backup_disk(&index, &mut w, name, *src, pd)?);
                }
                w.flush()?;
                Ok(out)
            })();
            let written = std::mem::take(&mut w.written);
            let lists = std::mem::take(&mut w.block_lists);
            drop(w); // closes the channel: the writer finishes what it has
            let wrote = match writer.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            wrote?;
            r.map(|out| (out, written, lists))
        })?;
        if !written.is_empty() {
            // Every pack is in place before the index that names them.
            self.write_index(&written, &lists)?;
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
        let reader = BatchReader {
            src,
            name,
            index,
            parent,
            allocated: &allocated,
            changed: changed.as_deref(),
            cap,
            cs,
            n,
        };
        let mut stats = DiskStats::default();
        let mut grains = GrainMap::default();
        let mut spare = vec![0u8; BATCH * chunk as usize];
        let mut cur = reader.read(0, vec![0u8; BATCH * chunk as usize])?;
        loop {
            // Read the next batch while this one is hashed, compressed and sealed.
            let next_g0 = cur.g0 + cur.plan.len() as u64;
            let buf = std::mem::take(&mut spare);
            let (next, done) = rayon::join(
                || (next_g0 < n).then(|| reader.read(next_g0, buf)),
                || self.store_batch(index, w, &cur, &mut stats, &mut grains),
            );
            done?;
            stats.bytes_read += cur.bytes_read;
            spare = cur.buf;
            match next {
                None => break,
                Some(b) => cur = b?,
            }
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

    /// Hashes the grains of a batch that were read, stores the new chunks, and records
    /// every grain of the batch.
    fn store_batch(
        &self,
        index: &Index,
        w: &mut Writer<'_>,
        b: &Batch,
        stats: &mut DiskStats,
        grains: &mut GrainMap,
    ) -> Result<()> {
        let cs = self.config.chunk_size as usize;
        let level = i32::from(self.config.zstd_level);
        let data = |i: usize| &b.buf[i * cs..][..b.lens[i]];
        // Hash what was read, in parallel; zeros need no hash.
        let ids: Vec<Option<Option<Id>>> = (0..b.plan.len())
            .into_par_iter()
            .map(|i| {
                if !matches!(b.plan[i], Plan::Read) {
                    return None;
                }
                let d = data(i);
                Some(if is_zero(d) {
                    None
                } else {
                    Some(self.keys.id(d))
                })
            })
            .collect();
        // New chunks: neither indexed nor stored by this backup already. A grain
        // rewritten with the bytes it had is the parent's chunk, found in the index too;
        // a chunk whose index was lost is stored again.
        let mut seen = HashSet::new();
        let new: Vec<(usize, Id)> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| match id {
                Some(Some(id)) => {
                    let is_new = !index.contains(id) && !w.stored.contains(id) && seen.insert(*id);
                    is_new.then_some((i, *id))
                }
                _ => None,
            })
            .collect();
        // Each new chunk's blocks, hashed in parallel; then, in order, whole or
        // composite (a chunk may refer to blocks of one stored just before it).
        let hashes: Vec<Option<Vec<_>>> = new
            .par_iter()
            .map(|&(i, _)| hash_blocks(&self.keys, data(i)))
            .collect();
        let forms: Vec<Option<Form>> = new
            .iter()
            .zip(hashes)
            .map(|(&(_, id), h)| h.map(|h| w.block_map.choose(id, &h)))
            .collect();
        let sealed: Vec<SealedChunk> = new
            .par_iter()
            .zip(&forms)
            .map(|(&(i, id), form)| match form {
                Some(Form::Composite(c)) => {
                    let body = encode_composite(c, data(i));
                    seal_composite(&self.keys, id, &body, data(i).len() as u32, level)
                }
                _ => seal_chunk(&self.keys, id, data(i), level),
            })
            .collect();
        for c in &sealed {
            stats.bytes_new += c.stored.len() as u64;
            stats.chunks_new += 1;
            w.add(c)?;
        }
        for f in forms.into_iter().flatten() {
            if let Form::Whole(list) = f {
                if !list.blocks.is_empty() {
                    w.block_lists.insert(list.chunk, list);
                }
            }
        }
        for (plan, id) in b.plan.iter().zip(ids) {
            grains.push(match (plan, id) {
                (Plan::Zero, _) => None,
                (Plan::Keep(id), _) => *id,
                (Plan::Read, Some(id)) => id,
                (Plan::Read, None) => unreachable!("every read grain is hashed"),
            });
        }
        Ok(())
    }
}

/// A batch of grains: the plan for each and the bytes of those read.
struct Batch {
    g0: u64,
    plan: Vec<Plan>,
    /// Each grain's length (the last grain of a disk may be short).
    lens: Vec<usize>,
    buf: Vec<u8>,
    bytes_read: u64,
}

/// Plans and reads batches of one disk (on any thread: it shares nothing mutable).
struct BatchReader<'a> {
    src: &'a dyn DiskSource,
    name: &'a str,
    index: &'a Index,
    parent: Option<&'a DiskManifest>,
    allocated: &'a [bool],
    changed: Option<&'a [bool]>,
    cap: u64,
    cs: u64,
    n: u64,
}

impl BatchReader<'_> {
    /// A grain's fate: unallocated grains are zero; with change tracking against the
    /// parent, unchanged grains keep the parent's entry (if its chunk is indexed).
    fn plan(&self, g: u64) -> Plan {
        if !self.allocated[g as usize] {
            return Plan::Zero;
        }
        match (self.parent, self.changed) {
            (Some(p), Some(ch)) if !ch[g as usize] => match p.grains.get(g) {
                Some(None) => Plan::Keep(None),
                Some(Some(id)) if self.index.contains(&id) => Plan::Keep(Some(id)),
                _ => Plan::Read,
            },
            _ => Plan::Read,
        }
    }

    fn read(&self, g0: u64, mut buf: Vec<u8>) -> Result<Batch> {
        let k = (self.n - g0).min(BATCH as u64) as usize;
        let plan: Vec<Plan> = (0..k).map(|i| self.plan(g0 + i as u64)).collect();
        let lens = (0..k)
            .map(|i| (self.cap - (g0 + i as u64) * self.cs).min(self.cs) as usize)
            .collect();
        let mut bytes_read = 0;
        // Runs of consecutive grains to read, one read each.
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
            let off = (g0 + i as u64) * self.cs;
            let len = (((g0 + j as u64) * self.cs).min(self.cap) - off) as usize;
            let start = i * self.cs as usize;
            self.src
                .read_at(&mut buf[start..start + len], off)
                .map_err(|e| Error::Source {
                    disk: self.name.to_string(),
                    offset: off,
                    source: e,
                })?;
            bytes_read += len as u64;
            i = j;
        }
        Ok(Batch {
            g0,
            plan,
            lens,
            buf,
            bytes_read,
        })
    }
}
