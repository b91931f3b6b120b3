//! One metadata operation of this host: its short-term locks, the record images it will
//! commit as one journal transaction, and the allocation, block-map and directory logic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{MutexGuard, TryLockError};

use crate::bmap::{self, Changed, IndBlocks, MapStore};
use crate::device::BlockDevice;
use crate::error::{Error, LockError, Result};
use crate::format::{
    decode_dir, encode_dir, valid_name, ClusterBlock, DirEntry, Geometry, Inode, Kind, LockMode,
    INODES_PER_GROUP, SECTOR,
};
use crate::gather::Gathered;
use crate::journal::{diff_records, JournalState};
use crate::mount::{lock_mutex, Shared};

#[derive(Debug)]
struct DirBlk {
    entries: Vec<DirEntry>,
    dirty: bool,
    orig: Option<Vec<u8>>,
}

/// Which end of a cluster an allocation takes blocks from.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Data (and directory) blocks: lowest free first.
    Bottom,
    /// Indirect blocks: highest free first.
    Top,
}

/// A metadata operation in progress.
#[derive(Debug)]
pub(crate) struct Op<'a> {
    pub sh: &'a Shared,
    j: MutexGuard<'a, JournalState>,
    pub geo: Geometry,
    pub bs: usize,
    locks: Vec<u64>,
    recs: BTreeMap<u64, Vec<u8>>,
    ind: IndBlocks,
    dirs: HashMap<u32, DirBlk>,
    clusters: BTreeMap<u32, (ClusterBlock, Changed)>,
    cluster_orig: HashMap<u32, Vec<u8>>,
    freed: HashSet<u32>,
    committed: bool,
    /// The transaction links data blocks written before it: flush them first, so that it
    /// never becomes durable without them (a crash would expose stale data).
    links_data: bool,
    /// When the deferred changes it carries were started (see `gather`).
    gathered_since: Option<u64>,
}

fn metadata_timeout(sh: &Shared) -> u64 {
    2 * sh.lease_ms + 2000
}

impl<'a> Op<'a> {
    pub fn begin(sh: &'a Shared) -> Result<Op<'a>> {
        sh.check_lease()?;
        Ok(Op::with(sh, lock_mutex(&sh.meta)))
    }

    /// Like [`Op::begin`], but `None` when another operation of this host is running (for
    /// the heartbeat thread, which must never wait for one) or the lease is gone.
    pub fn try_begin(sh: &'a Shared) -> Option<Op<'a>> {
        sh.check_lease().ok()?;
        let j = match sh.meta.try_lock() {
            Ok(j) => j,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(Op::with(sh, j))
    }

    fn with(sh: &'a Shared, j: MutexGuard<'a, JournalState>) -> Op<'a> {
        let geo = sh.geo();
        Op {
            sh,
            j,
            geo,
            bs: geo.block_size as usize,
            locks: Vec::new(),
            recs: BTreeMap::new(),
            ind: IndBlocks::default(),
            dirs: HashMap::new(),
            clusters: BTreeMap::new(),
            cluster_orig: HashMap::new(),
            freed: HashSet::new(),
            committed: false,
            links_data: false,
            gathered_since: None,
        }
    }

    /// This transaction links data blocks written before it (see `links_data`).
    pub fn links_data(&mut self) {
        self.links_data = true;
    }

    // ------------------------------------------------------------------ deferred allocation

    /// Carries on with a file's parked change set (this operation must have none yet).
    pub fn resume(&mut self, g: Gathered) {
        debug_assert!(self.locks.is_empty() && self.recs.is_empty());
        self.locks = g.locks;
        self.recs = g.recs;
        self.ind = g.ind;
        self.clusters = g.clusters;
        self.cluster_orig = g.cluster_orig;
        self.gathered_since = Some(g.since_ms);
        self.links_data = true;
    }

    /// Whether this operation carries a file's deferred changes.
    pub fn carries_gathered(&self) -> bool {
        self.gathered_since.is_some()
    }

    /// When the deferred changes this operation carries were started (`now` if none).
    pub fn gathered_since(&self, now: u64) -> u64 {
        self.gathered_since.unwrap_or(now)
    }

    /// Parks this operation's changes, uncommitted and with their locks, in a file (an
    /// allocating write; no directory change or free can be parked).
    pub fn suspend(mut self, now: u64) -> Gathered {
        assert!(
            self.dirs.values().all(|d| !d.dirty) && self.freed.is_empty(),
            "only allocations are deferred"
        );
        let g = Gathered {
            locks: std::mem::take(&mut self.locks),
            recs: std::mem::take(&mut self.recs),
            ind: std::mem::take(&mut self.ind),
            clusters: std::mem::take(&mut self.clusters),
            cluster_orig: std::mem::take(&mut self.cluster_orig),
            since_ms: self.gathered_since(now),
        };
        self.committed = true;
        g
    }

    /// Commits a parked change set as its own transaction and releases its locks. A
    /// failure fences this host: the file's handle already showed those writes.
    pub fn settle(&mut self, g: Gathered) -> Result<()> {
        let mine = Gathered {
            locks: std::mem::take(&mut self.locks),
            recs: std::mem::take(&mut self.recs),
            ind: std::mem::take(&mut self.ind),
            clusters: std::mem::take(&mut self.clusters),
            cluster_orig: std::mem::take(&mut self.cluster_orig),
            since_ms: 0,
        };
        // This operation's own directory blocks and frees stay out of that transaction.
        let dirs = std::mem::take(&mut self.dirs);
        let freed = std::mem::take(&mut self.freed);
        let links = std::mem::replace(&mut self.links_data, true);
        let since = self.gathered_since.take();
        self.locks = g.locks;
        self.recs = g.recs;
        self.ind = g.ind;
        self.clusters = g.clusters;
        self.cluster_orig = g.cluster_orig;
        let r = self.commit_keep_locks().and_then(|()| {
            for l in std::mem::take(&mut self.locks).into_iter().rev() {
                self.sh.release(l)?;
            }
            Ok(())
        });
        if let Err(e) = &r {
            self.sh.poison(e);
        }
        self.locks = mine.locks;
        self.recs = mine.recs;
        self.ind = mine.ind;
        self.clusters = mine.clusters;
        self.cluster_orig = mine.cluster_orig;
        self.dirs = dirs;
        self.freed = freed;
        self.links_data = links;
        self.gathered_since = since;
        r
    }

    /// Commits the parked change sets of this host's open files for which `pred` holds.
    pub fn settle_gathered(&mut self, pred: &dyn Fn(&Gathered) -> bool) -> Result<usize> {
        let mut n = 0;
        for g in self.sh.gatherers() {
            if let Some(c) = g.take_if(pred) {
                self.settle(c)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Commits what this operation carries now (deferred changes included) and releases
    /// its cluster locks, keeping the rest: the journal needs room.
    pub fn commit_now(&mut self) -> Result<()> {
        self.commit_keep_locks()?;
        self.gathered_since = None;
        self.release_clusters()
    }

    /// Gives back blocks this operation allocated and has not linked (their data could not
    /// be written).
    pub fn unalloc(&mut self, blocks: &[u32]) {
        for &b in blocks {
            if let Some((c, i)) = self.geo.block_cluster(b) {
                if let Some((cl, ch)) = self.clusters.get_mut(&c) {
                    cl.set(i, false);
                    ch.touch(cluster_byte(i), 1);
                }
            }
        }
    }

    /// Takes a short-term exclusive metadata lock, waiting out a dead holder's lease.
    pub fn lock(&mut self, idx: u64, what: &str) -> Result<()> {
        if self.locks.contains(&idx) {
            return Ok(());
        }
        if lock_mutex(&self.sh.locks).held.contains_key(&idx) {
            // Held by this host: perhaps for an open file's deferred allocations, which
            // are committed now rather than waited for.
            self.settle_gathered(&|g| g.holds(idx))?;
        }
        self.sh
            .acquire_wait(idx, LockMode::Exclusive, what, metadata_timeout(self.sh))?;
        self.locks.push(idx);
        Ok(())
    }

    /// Takes a lock now or reports who holds it.
    pub fn lock_now(&mut self, idx: u64, what: &str) -> Result<()> {
        if self.locks.contains(&idx) {
            return Ok(());
        }
        self.sh.try_acquire(idx, LockMode::Exclusive, what)?;
        self.locks.push(idx);
        Ok(())
    }

    /// Forgets cached blocks that are not dirty (after taking a lock, re-read under it).
    pub fn drop_clean_caches(&mut self) {
        self.ind.retain_dirty();
        self.dirs.retain(|_, d| d.dirty);
    }

    /// Keeps lock `idx` after the operation (it becomes a file handle's lock).
    pub fn keep_lock(&mut self, idx: u64) {
        self.locks.retain(|&l| l != idx);
    }

    fn try_lock(&mut self, idx: u64, what: &str) -> Result<bool> {
        if self.locks.contains(&idx) {
            return Ok(true);
        }
        match self.sh.try_acquire(idx, LockMode::Exclusive, what) {
            Ok(()) => {
                self.locks.push(idx);
                Ok(true)
            }
            Err(LockError::Held { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub fn put(&mut self, off: u64, bytes: Vec<u8>) {
        self.recs.insert(off, bytes);
    }

    /// At most the bytes the transaction would take now (changed blocks count the
    /// sectors that changed; new indirect blocks none when they go home before the commit).
    pub fn pending_bytes(&self) -> usize {
        let recs: usize = self.recs.values().map(|v| v.len() + 12).sum();
        let dirs = self.dirs.values().filter(|d| d.dirty).count() * (self.bs + 12);
        let clusters: usize = self.clusters.values().map(|c| c.1.journal_bytes()).sum();
        recs + dirs + clusters + self.ind.journal_bytes(self.bs, self.links_data)
    }

    /// The most bytes one transaction may take.
    pub fn journal_cap(&self) -> usize {
        (self.geo.journal_blocks as usize - 1) * self.bs - 64
    }

    /// Blocks of room left in one transaction.
    pub fn room_blocks(&self) -> usize {
        self.journal_cap().saturating_sub(self.pending_bytes()) / (self.bs + 12)
    }

    /// At most the journal bytes a change of one cluster's bitmap takes.
    pub fn cluster_journal_bytes(&self) -> usize {
        let mut c = Changed::default();
        c.touch(0, cluster_byte(self.geo.bpc.saturating_sub(1)) + 1);
        c.journal_bytes()
    }

    // ------------------------------------------------------------------ inodes

    pub fn inode(&self, ino: u32) -> Result<Inode> {
        if ino == 0 || ino >= self.geo.max_inodes {
            return Err(Error::corrupt(
                "inode",
                format!("number {ino} out of range"),
            ));
        }
        let off = self.geo.inode_at(ino);
        if let Some(b) = self.recs.get(&off) {
            return Inode::decode(b, ino);
        }
        // An open file of this host may have deferred its size and map changes.
        for g in self.sh.gatherers() {
            if let Some(b) = g.parked_record(off) {
                return Inode::decode(&b, ino);
            }
        }
        Inode::decode(&self.sh.read(self.geo.inode_at(ino), SECTOR)?, ino)
            .map_err(|e| e.at(format_args!("inode {ino}")))
    }

    pub fn set_inode(&mut self, ino: &Inode) {
        self.put(self.geo.inode_at(ino.ino), ino.encode().to_vec());
    }

    /// A free inode, from this host's preferred inode groups first.
    pub fn alloc_inode(&mut self, kind: Kind, parent: u32) -> Result<Inode> {
        let groups = self.geo.max_inodes / INODES_PER_GROUP;
        let start = self.sh.host * groups / crate::format::MAX_HOSTS;
        for pass in 0..2 {
            for k in 0..groups {
                let g = (start + k) % groups;
                let lk = self.geo.group_lock(g);
                let got = if pass == 0 {
                    self.try_lock(lk, &format!("inode group {g}"))?
                } else {
                    self.lock(lk, &format!("inode group {g}"))?;
                    true
                };
                if !got {
                    continue;
                }
                let first = g * INODES_PER_GROUP;
                let raw = self
                    .sh
                    .read(self.geo.inode_at(first), INODES_PER_GROUP as usize * SECTOR)?;
                for i in 0..INODES_PER_GROUP {
                    let ino = first + i;
                    if ino < 2 || self.recs.contains_key(&self.geo.inode_at(ino)) {
                        continue;
                    }
                    let s = &raw[i as usize * SECTOR..(i as usize + 1) * SECTOR];
                    if let Ok(old) = Inode::decode(s, ino) {
                        // A free inode whose lock is still held (its deleter is between
                        // releasing the group and the inode) is skipped, not waited for.
                        if old.kind == Kind::Free
                            && self.try_lock(self.geo.inode_lock(ino), &format!("inode {ino}"))?
                        {
                            let mut n = Inode::free(ino);
                            n.kind = kind;
                            n.parent = parent;
                            n.generation = old.generation.wrapping_add(1);
                            return Ok(n);
                        }
                    }
                }
            }
        }
        Err(Error::NoInodes)
    }

    /// Marks inode `ino` free (its group lock guards reuse until the commit is applied).
    pub fn free_inode(&mut self, ino: &Inode) -> Result<()> {
        let g = ino.ino / INODES_PER_GROUP;
        self.lock(self.geo.group_lock(g), &format!("inode group {g}"))?;
        let mut f = Inode::free(ino.ino);
        f.generation = ino.generation;
        self.set_inode(&f);
        Ok(())
    }

    // ------------------------------------------------------------------ clusters

    fn load_cluster(&mut self, c: u32) -> Result<()> {
        if self.clusters.contains_key(&c) {
            return Ok(());
        }
        let b = self.sh.read(self.geo.cluster_at(c), self.bs)?;
        let cl = ClusterBlock::decode(&b, self.bs, c, self.geo.bpc)?;
        // The original a commit diffs against: only the header and bitmap sectors when the
        // rest is zeros, as every block `encode` makes has it. With 1 MiB blocks a parked
        // set then holds a sector per cluster it allocates from, not a megabyte.
        let used = cl.used_len(self.bs);
        let orig = if crate::format::all_zero(&b[used..]) {
            b[..used].to_vec()
        } else {
            b
        };
        self.clusters.insert(c, (cl, Changed::default()));
        self.cluster_orig.insert(c, orig);
        Ok(())
    }

    /// Allocates up to `n` blocks (at least one, or an error), touching at most
    /// `max_clusters` clusters, from this host's preferred clusters first, each from the
    /// bottom of its cluster up.
    pub fn alloc(&mut self, n: usize, max_clusters: usize) -> Result<Vec<u32>> {
        self.alloc_at(n, max_clusters, End::Bottom)
    }

    /// Allocates blocks as [`Op::alloc`] does, from the `end` of each cluster.
    fn alloc_at(&mut self, n: usize, max_clusters: usize, end: End) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(n);
        for round in 0..3 {
            let nc = self.geo.n_clusters;
            let start = self.sh.host * nc / crate::format::MAX_HOSTS;
            let mut touched = 0;
            for k in 0..nc {
                if out.len() >= n || touched >= max_clusters {
                    break;
                }
                let c = (start + k) % nc;
                let first = self.geo.cluster_first_block(c);
                if !self.clusters.contains_key(&c) {
                    if !self.try_lock(self.geo.cluster_lock(c), &format!("cluster {c}"))? {
                        continue;
                    }
                    self.load_cluster(c)?;
                }
                let Some((cl, ch)) = self.clusters.get_mut(&c) else {
                    continue;
                };
                let mut took = false;
                // The next candidate up from the bottom, or the bound below the top.
                let mut cursor = match end {
                    End::Bottom => 0,
                    End::Top => u32::MAX,
                };
                while out.len() < n {
                    let next = match end {
                        End::Bottom => cl.next_free(cursor),
                        End::Top => cl.prev_free(cursor),
                    };
                    let Some(i) = next else {
                        break;
                    };
                    cursor = match end {
                        End::Bottom => i + 1,
                        End::Top => i,
                    };
                    let b = (first + i as u64) as u32;
                    if !self.freed.contains(&b) && !self.j.freed.contains(&b) {
                        cl.set(i, true);
                        ch.touch(cluster_byte(i), 1);
                        out.push(b);
                        took = true;
                    }
                }
                if took {
                    touched += 1;
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            // Open files' deferred allocations hold clusters that may have room.
            if self.settle_gathered(&|_| true)? > 0 {
                continue;
            }
            if !self.j.freed.is_empty() {
                // Blocks freed since the last checkpoint become usable after one.
                self.sh.journal().checkpoint(&mut self.j)?;
                continue;
            }
            // Another host may have grown the volume, or hold the clusters with room.
            self.sh.refresh_sb()?;
            self.geo = self.sh.geo();
            if round < 2 {
                let _ = self.sh.tick();
                self.sh.clock.sleep_ms((self.sh.interval_ms / 2).max(1));
            }
        }
        Err(Error::NoSpace)
    }

    // ------------------------------------------------------------------ block map

    /// Physical block of file block `f` of `ino` (0 = hole).
    pub fn lookup(&mut self, ino: &Inode, f: u64) -> Result<u32> {
        bmap::lookup(self, ino, f)
    }

    /// Points file block `f` of `ino` at `p` (allocating indirect blocks as needed).
    pub fn map_set(&mut self, ino: &mut Inode, f: u64, p: u32) -> Result<()> {
        bmap::map_set(self, ino, f, p)
    }

    /// Points file blocks `f..f + ps.len()` at `ps` (see [`bmap::map_set_run`]).
    pub fn map_set_run(&mut self, ino: &mut Inode, f: u64, ps: &[u32]) -> Result<()> {
        bmap::map_set_run(self, ino, f, ps)
    }

    /// Frees every block past `new_size` and sets the size, committing in as many
    /// transactions as the journal needs (each leaves a consistent, shorter file).
    pub fn truncate(&mut self, ino: &mut Inode, new_size: u64) -> Result<()> {
        let bs = self.bs as u64;
        let keep = new_size.div_ceil(bs);
        let mut blocks = bmap::mapped_from(self, ino, keep)?;
        blocks.sort_unstable();
        while !blocks.is_empty() {
            let mut clusters = BTreeSet::new();
            let mut take = 0;
            let limit = self.room_blocks().saturating_sub(6) / 3;
            for (_, p) in blocks.iter().rev() {
                if let Some((c, _)) = self.geo.block_cluster(*p) {
                    clusters.insert(c);
                }
                if clusters.len() > limit.max(1) {
                    break;
                }
                take += 1;
            }
            let take = take.max(1);
            let chunk: Vec<(u64, u32)> = blocks.split_off(blocks.len() - take);
            for (f, _) in chunk.iter().rev() {
                bmap::map_clear(self, ino, *f)?;
            }
            let lowest = chunk.first().map_or(keep, |x| x.0);
            ino.size = ino.size.min((lowest * bs).max(new_size));
            ino.change += 1;
            self.set_inode(ino);
            if !blocks.is_empty() {
                self.commit_keep_locks()?;
                self.release_clusters()?;
            }
        }
        ino.size = new_size;
        ino.change += 1;
        self.set_inode(ino);
        Ok(())
    }

    // ------------------------------------------------------------------ directories

    fn load_dir(&mut self, p: u32) -> Result<()> {
        if self.dirs.contains_key(&p) {
            return Ok(());
        }
        let b = self.sh.read(p as u64 * self.bs as u64, self.bs)?;
        let entries = decode_dir(&b, self.bs).map_err(|e| e.at(format_args!("block {p}")))?;
        self.dirs.insert(
            p,
            DirBlk {
                entries,
                dirty: false,
                orig: Some(b),
            },
        );
        Ok(())
    }

    /// The directory's blocks (file block order).
    fn dir_blocks(&mut self, dir: &Inode) -> Result<Vec<u32>> {
        let n = dir.size / self.bs as u64;
        let mut out = Vec::with_capacity(n as usize);
        for f in 0..n {
            let p = self.lookup(dir, f)?;
            if p == 0 {
                return Err(Error::corrupt(
                    "directory",
                    format!("hole in directory {}", dir.ino),
                ));
            }
            out.push(p);
        }
        Ok(out)
    }

    pub fn dir_list(&mut self, dir: &Inode) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for p in self.dir_blocks(dir)? {
            self.load_dir(p)?;
            if let Some(d) = self.dirs.get(&p) {
                out.extend(d.entries.iter().cloned());
            }
        }
        Ok(out)
    }

    pub fn dir_find(&mut self, dir: &Inode, name: &str) -> Result<Option<DirEntry>> {
        for p in self.dir_blocks(dir)? {
            self.load_dir(p)?;
            if let Some(e) = self
                .dirs
                .get(&p)
                .and_then(|d| d.entries.iter().find(|e| e.name == name))
            {
                return Ok(Some(e.clone()));
            }
        }
        Ok(None)
    }

    pub fn dir_insert(&mut self, dir: &mut Inode, e: DirEntry) -> Result<()> {
        if !valid_name(&e.name) {
            return Err(Error::InvalidName(e.name));
        }
        let need = crate::format::entry_len(&e);
        for p in self.dir_blocks(dir)? {
            self.load_dir(p)?;
            if let Some(d) = self.dirs.get_mut(&p) {
                let used: usize = d.entries.iter().map(crate::format::entry_len).sum();
                if 16 + used + need <= self.bs && d.entries.len() < u16::MAX as usize {
                    d.entries.push(e);
                    d.dirty = true;
                    return Ok(());
                }
            }
        }
        let f = dir.size / self.bs as u64;
        let p = *self.alloc(1, 1)?.first().ok_or(Error::NoSpace)?;
        self.map_set(dir, f, p)?;
        dir.blocks += 1;
        dir.size += self.bs as u64;
        dir.change += 1;
        self.dirs.insert(
            p,
            DirBlk {
                entries: vec![e],
                dirty: true,
                orig: None,
            },
        );
        self.set_inode(dir);
        Ok(())
    }

    pub fn dir_remove(&mut self, dir: &Inode, name: &str) -> Result<bool> {
        for p in self.dir_blocks(dir)? {
            self.load_dir(p)?;
            if let Some(d) = self.dirs.get_mut(&p) {
                if let Some(pos) = d.entries.iter().position(|e| e.name == name) {
                    d.entries.remove(pos);
                    d.dirty = true;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    // ------------------------------------------------------------------ commit

    fn collect(&mut self) -> Result<Vec<(u64, Vec<u8>)>> {
        let bs = self.bs;
        let recs = &mut self.recs;
        self.ind
            .take_dirty(bs, |off, img, orig| diff_records(off, img, orig, recs));
        for (b, d) in self.dirs.iter_mut() {
            if d.dirty {
                let img = encode_dir(bs, &d.entries)
                    .ok_or_else(|| Error::corrupt("directory block", "overfull"))?;
                diff_records(
                    *b as u64 * bs as u64,
                    &img,
                    d.orig.as_deref(),
                    &mut self.recs,
                );
                d.orig = Some(img);
                d.dirty = false;
            }
        }
        for (c, (cl, ch)) in self.clusters.iter_mut() {
            if ch.is_dirty() {
                let mut img = cl.encode(bs);
                let orig = self.cluster_orig.get(c).map(Vec::as_slice);
                // An original cut to its header and bitmap (`load_cluster`): past the cut
                // both it and `img` are zeros, so the sectors before it are all that differ.
                img.truncate(orig.map_or(img.len(), <[u8]>::len));
                img.shrink_to_fit();
                diff_records(self.geo.cluster_at(*c), &img, orig, &mut self.recs);
                self.cluster_orig.insert(*c, img);
                ch.clear();
            }
        }
        Ok(std::mem::take(&mut self.recs).into_iter().collect())
    }

    /// Commits what is pending as one transaction, keeping every lock.
    pub fn commit_keep_locks(&mut self) -> Result<()> {
        if self.links_data {
            // New indirect blocks go home now, with the data, before the flush below: like
            // data blocks they are unreachable until the commit links them.
            let (bs, dev) = (self.bs, self.sh.dev.as_ref());
            if let Err(e) = self.ind.take_new(bs, |off, img| dev.write_at(img, off)) {
                // A file's handle shows these blocks mapped; none of it may be undone.
                self.sh.poison(&e);
                return Err(e);
            }
        }
        let recs = match self.collect() {
            Ok(r) => r,
            Err(e) => {
                if self.links_data {
                    self.sh.poison(&e);
                }
                return Err(e);
            }
        };
        if recs.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.links_data) {
            if let Err(e) = self.sh.check_lease().and_then(|()| self.sh.dev.flush()) {
                // The handle shows these blocks mapped; none of it may be undone now.
                self.sh.poison(&e);
                return Err(e);
            }
        }
        match self.sh.journal().commit(&mut self.j, recs) {
            Ok(()) => {
                let freed = std::mem::take(&mut self.freed);
                self.j.freed.extend(freed);
                Ok(())
            }
            Err(e) => {
                // Past the commit point we cannot tell what is durable: stop acting under
                // our locks so that another host replays our journal after our lease.
                self.sh.poison(&e);
                Err(e)
            }
        }
    }

    fn release_clusters(&mut self) -> Result<()> {
        let geo = self.geo;
        let first = geo.cluster_lock(0);
        let last = geo.cluster_lock(geo.max_clusters);
        let (cl, rest): (Vec<u64>, Vec<u64>) =
            self.locks.iter().partition(|&&l| l >= first && l < last);
        self.locks = rest;
        self.clusters.clear();
        self.cluster_orig.clear();
        for l in cl {
            self.sh.release(l)?;
        }
        Ok(())
    }

    /// Commits and releases the operation's locks.
    pub fn finish(mut self) -> Result<()> {
        self.commit_keep_locks()?;
        self.committed = true;
        let locks = std::mem::take(&mut self.locks);
        for l in locks.into_iter().rev() {
            self.sh.release(l)?;
        }
        Ok(())
    }
}

/// Byte of bit `i` in a cluster block image (the bitmap starts at byte 32).
fn cluster_byte(i: u32) -> usize {
    32 + i as usize / 8
}

/// Commits the deferred allocations of this host's open files that are a quarter lease
/// old, unless an operation is running (called by the heartbeat): another host waiting
/// for one of their cluster locks then waits at most that long for a writer gone quiet.
pub(crate) fn settle_stale(sh: &Shared) {
    let now = sh.now();
    let stale = |since: u64| now >= since + sh.lease_ms / 4;
    let any = sh
        .gatherers()
        .iter()
        .any(|g| g.gathered_since().is_some_and(stale));
    if !any {
        return;
    }
    if let Some(mut op) = Op::try_begin(sh) {
        if let Err(e) = op
            .settle_gathered(&|g| stale(g.since_ms))
            .and_then(|_| op.finish())
        {
            tracing::warn!(host = sh.host, "committing deferred allocations: {e}");
        }
    }
}

impl MapStore for Op<'_> {
    fn bs(&self) -> usize {
        self.bs
    }

    fn blocks(&mut self) -> (&mut IndBlocks, &dyn BlockDevice) {
        (&mut self.ind, self.sh.dev.as_ref())
    }

    /// From the top of a cluster: a sequential write's data, allocated from the bottom,
    /// then lies in one run on the device instead of being cut by an indirect block every
    /// 1,020 blocks (at 4 KiB blocks): fewer runs in the handles' caches, one I/O for a
    /// read across leaves, and no hole in an image file amid data written before the
    /// commit that writes the indirect block.
    fn alloc_block(&mut self) -> Result<u32> {
        self.alloc_at(1, 1, End::Top)?
            .first()
            .copied()
            .ok_or(Error::NoSpace)
    }

    /// Frees block `b` (takes its cluster lock, waiting if need be).
    fn free_block(&mut self, b: u32) -> Result<()> {
        let (c, i) = self
            .geo
            .block_cluster(b)
            .ok_or_else(|| Error::corrupt("block map", format!("block {b} is not a data block")))?;
        self.lock(self.geo.cluster_lock(c), &format!("cluster {c}"))?;
        self.load_cluster(c)?;
        if let Some((cl, ch)) = self.clusters.get_mut(&c) {
            cl.set(i, false);
            ch.touch(cluster_byte(i), 1);
        }
        self.freed.insert(b);
        self.ind.remove(b);
        self.dirs.remove(&b);
        Ok(())
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        // An abandoned operation wrote nothing in place (new data blocks are unreachable
        // until a commit links them), so its locks can go.
        if !self.committed && !self.sh.poisoned() {
            for l in std::mem::take(&mut self.locks).into_iter().rev() {
                let _ = self.sh.release(l);
            }
        }
    }
}
