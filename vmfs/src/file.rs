//! An open file and the lock it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::bmap::{self, IndCache};
use crate::device::BlockDevice;
use crate::error::{Error, ModeError, Result};
use crate::format::{ptrs_per_block, Inode, LockMode, SECTOR};
use crate::gather::{Gathered, Gatherer};
use crate::mount::{lock_mutex, Shared};
use crate::op::Op;
use crate::run_cache::RunCache;

/// Blocks one write transaction may map at least (journal room permitting).
const MIN_BATCH: u64 = 1024;

/// An open file. Dropping it releases its lock.
#[derive(Debug)]
pub struct File {
    sh: Arc<Shared>,
    bs: u64,
    /// `bs` is `1 << bs_shift` (the superblock's block size is a power of two): `read_at`
    /// shifts and masks where a division by `bs` would cost some 40 cycles per read.
    bs_shift: u32,
    mode: LockMode,
    path: String,
    st: Arc<Mutex<State>>,
    closed: AtomicBool,
}

/// What an open file caches, under one lock: its inode and block map. Nothing but this
/// handle can change either while the handle is open: an exclusive lock keeps every other
/// handle (of any host) out, and shared-read and multi-writer locks admit no handle that
/// allocates, truncates or changes the size. So the cache is only ever cleared by this
/// handle's own changes and never re-read from the volume.
///
/// `inode` and the map include this handle's deferred allocations (`gathered`), which are
/// not on the volume yet: a lookup reads their indirect blocks from `gathered`.
#[derive(Debug)]
struct State {
    inode: Inode,
    runs: RunCache,
    ind: IndCache,
    gathered: Option<Gathered>,
}

impl State {
    /// `(physical block, blocks left in its run)` of file block `f`; 0 is a hole.
    #[inline(always)]
    fn lookup(&mut self, dev: &dyn BlockDevice, bs: u64, f: u64) -> Result<(u64, u64)> {
        let State {
            inode,
            runs,
            ind,
            gathered,
        } = self;
        let over = gathered.as_ref().map(|g| &g.ind);
        runs.lookup(ind, over, dev, bs as usize, inode, f)
    }

    /// This handle mapped new blocks `(first file block, physical blocks)` (and may have added
    /// indirect blocks): the runs are updated in place rather than re-read, which with
    /// 1 MiB blocks would mean decoding a 262,140-pointer leaf after every such write.
    fn mapped<'a>(&mut self, inode: Inode, new: impl Iterator<Item = (u64, &'a [u32])>) {
        self.inode = inode;
        self.ind.map.clear();
        for (f, ps) in new {
            self.runs.set_run(f, ps);
        }
    }

    /// The map changed (this handle truncated).
    fn changed(&mut self, inode: Inode) {
        self.inode = inode;
        self.runs.clear();
        self.ind.map.clear();
    }
}

/// The window of one write call mapped at once: file block `f0` is `phys[0]`; bytes
/// `pos..bend` of the file are written from the caller's buffer, which starts at file
/// offset `off`.
#[derive(Clone, Copy)]
struct Span {
    f0: u64,
    pos: u64,
    bend: u64,
    off: u64,
}

enum Seg {
    /// In place: (device offset, range in the caller's buffer).
    Place(u64, std::ops::Range<usize>),
    /// A new block: (block, offset in block, range in the caller's buffer).
    New(u32, usize, std::ops::Range<usize>),
}

impl Gatherer for Mutex<State> {
    fn take_if(&self, pred: &dyn Fn(&Gathered) -> bool) -> Option<Gathered> {
        let mut st = lock_mutex(self);
        if st.gathered.as_ref().is_some_and(pred) {
            st.gathered.take()
        } else {
            None
        }
    }

    fn gathered_since(&self) -> Option<u64> {
        lock_mutex(self).gathered.as_ref().map(|g| g.since_ms)
    }

    fn parked_record(&self, off: u64) -> Option<Vec<u8>> {
        lock_mutex(self)
            .gathered
            .as_ref()
            .and_then(|g| g.recs.get(&off).cloned())
    }
}

impl File {
    pub(crate) fn new(sh: Arc<Shared>, inode: Inode, mode: LockMode, path: &str) -> File {
        let st = Arc::new(Mutex::new(State {
            inode,
            runs: RunCache::default(),
            ind: IndCache::default(),
            gathered: None,
        }));
        if mode == LockMode::Exclusive {
            let dynst: Arc<dyn Gatherer> = st.clone();
            sh.register_gatherer(Arc::downgrade(&dynst));
        }
        let bs = sh.bs() as u64;
        assert!(bs.is_power_of_two(), "block size {bs} (checked at decode)");
        File {
            bs,
            bs_shift: bs.trailing_zeros(),
            sh,
            mode,
            path: path.to_string(),
            st,
            closed: AtomicBool::new(false),
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        lock_mutex(&self.st).inode.size
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inode number.
    pub fn ino(&self) -> u32 {
        lock_mutex(&self.st).inode.ino
    }
    /// The lock mode.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
    /// The path it was opened by.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Physical block of file block `f` (0 = hole).
    fn map(&self, f: u64) -> Result<u32> {
        Ok(self.map_range(f, f + 1)?.first().copied().unwrap_or(0))
    }

    /// Physical blocks of file blocks `f0..f1` (0 = hole), under one lock.
    fn map_range(&self, f0: u64, f1: u64) -> Result<Vec<u32>> {
        let dev = self.sh.dev.as_ref();
        let mut st = lock_mutex(&self.st);
        let mut out = Vec::with_capacity(usize::try_from(f1.saturating_sub(f0)).unwrap_or(0));
        let mut f = f0;
        while f < f1 {
            let (p, left) = st.lookup(dev, self.bs, f)?;
            let take = left.min(f1 - f);
            for k in 0..take {
                let b = if p == 0 { 0 } else { p + k };
                out.push(u32::try_from(b).map_err(|_| Error::corrupt("block map", "pointer"))?);
            }
            f += take;
        }
        Ok(out)
    }

    /// Reads at `off`; returns the bytes read (short at the end of the file). Holes read
    /// as zeros.
    ///
    /// The hot path: one lease check (two atomic loads and a coarse clock read), then per
    /// run of physically contiguous blocks one lock of the handle's cached map, one binary
    /// search and one device read; no heap allocation. The handle is not locked during
    /// the device read (other threads' reads of the handle go on meanwhile), nor again
    /// after the last one (a 4 KiB read is one run: one lock).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let sh = &self.sh;
        sh.check_lease()?;
        let bs = self.bs;
        let mut n = usize::MAX;
        let mut pos = 0usize;
        loop {
            let (dev, len) = {
                let mut st = lock_mutex(&self.st);
                if pos == 0 {
                    let size = st.inode.size;
                    n = (buf.len() as u64).min(size.saturating_sub(off)) as usize;
                    if n == 0 {
                        return Ok(0);
                    }
                }
                let fo = off + pos as u64;
                let within = fo & (bs - 1);
                let (p, left) = st.lookup(sh.dev.as_ref(), bs, fo >> self.bs_shift)?;
                let run_bytes = left.saturating_mul(bs) - within;
                let len = run_bytes.min((n - pos) as u64) as usize;
                ((p != 0).then(|| (p << self.bs_shift) + within), len)
            };
            let dst = &mut buf[pos..pos + len];
            match dev {
                Some(d) => sh.dev.read_at(dst, d)?,
                None => dst.fill(0),
            }
            pos += len;
            if pos >= n {
                return Ok(n);
            }
        }
    }

    /// Writes `data` at `off`. Blocks are allocated on first write (thin provisioning);
    /// the write — data, allocation and size — is durable once [`File::sync`] (or
    /// `close`, for what allocated) returns. The allocations of a handle held
    /// exclusively are deferred until then (see the README, "Deferred allocation"): other
    /// hosts see the size and blocks only after that commit.
    pub fn write_at(&self, data: &[u8], off: u64) -> Result<()> {
        if self.mode == LockMode::SharedRead {
            return Err(ModeError::ReadOnly {
                path: self.path.clone(),
            }
            .into());
        }
        let sh = &self.sh;
        let bs = self.bs;
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Error::TooLarge(u64::MAX))?;
        if end > bmap::max_file_size(bs as usize) {
            return Err(Error::TooLarge(end));
        }
        let mut pos = off;
        while pos < end {
            sh.check_lease()?;
            let f0 = pos / bs;
            let f_end = end.div_ceil(bs).min(f0 + self.batch_blocks());
            let mut bend = end.min(f_end * bs);
            let mut ino = lock_mutex(&self.st).inode.clone();
            let mut phys = self.map_range(f0, f_end)?;
            let need_alloc = phys.contains(&0);
            let grows = bend > ino.size;
            if !need_alloc && !grows {
                let sp = Span { f0, pos, bend, off };
                self.write_new_and_old(&phys, &[], sp, data)?;
                pos = bend;
                continue;
            }
            if self.mode == LockMode::MultiWriter {
                return Err(ModeError::MultiWriterGrows {
                    path: self.path.clone(),
                }
                .into());
            }
            // Allocating: under the host's metadata mutex, which serialises allocating
            // writers (of this handle too), so the map and size are re-read under it.
            let mut op = Op::begin(sh)?;
            ino = lock_mutex(&self.st).inode.clone();
            phys = self.map_range(f0, f_end)?;
            self.zero_tail(&ino, pos)?;
            // Carry on with the allocations earlier calls deferred (`ino` includes them).
            if let Some(g) = lock_mutex(&self.st).gathered.take() {
                op.resume(g);
            }
            op.links_data();
            let holes: Vec<usize> = (0..phys.len()).filter(|&i| phys[i] == 0).collect();
            // Whether `phys[i]` is a block this call allocated.
            let mut is_new = vec![false; phys.len()];
            let mut got = Vec::new();
            if !holes.is_empty() {
                // At most what this call adds to the transaction: the inode, the sectors
                // of its pointers in at most `ind` indirect blocks (new indirect blocks go
                // home with the data, not into the journal), and cluster bitmaps.
                let per_ind = ptrs_per_block(bs as usize) as u64;
                let ind = (phys.len() as u64).div_ceil(per_ind) as usize + 3;
                let rec = SECTOR + 12;
                let ptrs = (3 * ind + (phys.len() * 4).div_ceil(SECTOR)) * rec + rec;
                let per_cluster = op.cluster_journal_bytes();
                if op.carries_gathered()
                    && op.pending_bytes() + ptrs + per_cluster > op.journal_cap()
                {
                    // The journal needs room: commit what earlier calls deferred.
                    op.commit_now()?;
                }
                let room = op.journal_cap().saturating_sub(op.pending_bytes() + ptrs)
                    / per_cluster.max(1)
                    / 2;
                got = match op.alloc(holes.len(), room.max(1)) {
                    Ok(g) => g,
                    Err(e) => return Err(self.park(op, e)),
                };
                if got.len() < holes.len() {
                    let first_missing = holes[got.len()];
                    bend = bend.min((f0 + first_missing as u64) * bs).max(pos);
                }
                for (k, &b) in got.iter().enumerate() {
                    let i = holes[k];
                    if (f0 + i as u64) * bs >= bend {
                        break;
                    }
                    phys[i] = b;
                    is_new[i] = true;
                }
            }
            if bend <= pos {
                op.unalloc(&got);
                return Err(self.park(op, Error::NoSpace));
            }
            let used = ((bend - f0 * bs).div_ceil(bs)) as usize;
            phys.truncate(used);
            is_new.truncate(used);
            let sp = Span { f0, pos, bend, off };
            // The data goes into the new blocks before anything links them.
            if let Err(e) = self.write_new_and_old(&phys, &is_new, sp, data) {
                op.unalloc(&got);
                return Err(self.park(op, e));
            }
            let new_runs = runs_of(&is_new);
            let linked = (|| {
                for r in new_runs.iter().cloned() {
                    op.map_set_run(&mut ino, f0 + r.start as u64, &phys[r.clone()])?;
                    ino.blocks += r.len() as u64;
                }
                Ok(())
            })();
            if let Err(e) = linked {
                // Half linked: the handle can no longer tell what its map is.
                if op.carries_gathered() {
                    sh.poison(&e);
                }
                return Err(e);
            }
            ino.size = ino.size.max(bend);
            ino.change += 1;
            op.set_inode(&ino);
            let now = sh.now();
            let defer = now < op.gathered_since(now) + sh.lease_ms / 4;
            // The handle shows the new blocks first: a commit that fails from here on
            // fences the host (or has committed), so what it shows is never undone.
            let mut st = lock_mutex(&self.st);
            st.mapped(
                ino,
                new_runs
                    .iter()
                    .map(|r| (f0 + r.start as u64, &phys[r.clone()])),
            );
            if defer {
                // Deferred: committed at sync, close, when the journal needs room, when
                // another operation needs its cluster locks, or a quarter lease from now.
                st.gathered = Some(op.suspend(now));
            } else {
                drop(st);
                op.finish()?;
            }
            pos = bend;
        }
        Ok(())
    }

    /// After a failed allocating write that changed nothing of the map: parks the
    /// allocations of earlier calls again (or lets a fresh operation go); returns `e`.
    fn park(&self, op: Op<'_>, e: Error) -> Error {
        if op.carries_gathered() {
            let now = self.sh.now();
            lock_mutex(&self.st).gathered = Some(op.suspend(now));
        }
        e
    }

    /// Commits this handle's deferred allocations, if it has any (then true): its data
    /// and the size and blocks its writes reached are durable. Unlike [`File::sync`] it
    /// does not flush when there is nothing to commit (for callers that flush after
    /// committing several files).
    pub(crate) fn commit_deferred(&self) -> Result<bool> {
        self.settle()
    }

    /// Commits this handle's deferred allocations, if it has any (then true).
    fn settle(&self) -> Result<bool> {
        if lock_mutex(&self.st).gathered.is_none() {
            return Ok(false);
        }
        let mut op = Op::begin(&self.sh)?;
        let Some(g) = lock_mutex(&self.st).gathered.take() else {
            return Ok(false);
        };
        op.settle(g)?;
        op.finish()?;
        Ok(true)
    }

    /// Blocks one write call maps and allocates in one transaction: as many as their
    /// indirect blocks fit in half the journal ring, so that a large write commits once
    /// (a 64 MiB write at 4 KiB blocks with the default 32-block journal: two commits).
    fn batch_blocks(&self) -> u64 {
        let g = self.sh.geo();
        let ring = g.journal_blocks as u64 - 1;
        let per_ind = ptrs_per_block(g.block_size as usize) as u64;
        ((ring / 2).saturating_sub(4) * per_ind).max(MIN_BATCH)
    }

    /// Before the size grows past a partial last block, zero its stale tail.
    fn zero_tail(&self, ino: &Inode, upto: u64) -> Result<()> {
        let sh = &self.sh;
        let bs = sh.bs() as u64;
        if ino.size % bs == 0 || upto <= ino.size {
            return Ok(());
        }
        let f = ino.size / bs;
        let p = self.map(f)?;
        if p == 0 {
            return Ok(());
        }
        let stop = upto.min((f + 1) * bs);
        let z = vec![0u8; (stop - ino.size) as usize];
        sh.dev.write_at(&z, p as u64 * bs + ino.size % bs)
    }

    fn segments(&self, phys: &[u32], is_new: &[bool], sp: Span) -> Vec<Seg> {
        let Span { f0, pos, bend, off } = sp;
        let bs = self.sh.bs() as u64;
        let mut out = Vec::new();
        let mut p = pos;
        while p < bend {
            let f = p / bs;
            let within = p % bs;
            let len = (bs - within).min(bend - p);
            let k = (f - f0) as usize;
            let blk = phys[k];
            let r = (p - off) as usize..(p - off + len) as usize;
            // A new block the write covers whole needs no zero padding: it goes straight
            // from the caller's buffer, like an in-place write (no copy, no allocation).
            if is_new.get(k) == Some(&true) && len < bs {
                out.push(Seg::New(blk, within as usize, r));
            } else {
                out.push(Seg::Place(blk as u64 * bs + within, r));
            }
            p += len;
        }
        out
    }

    /// Writes `sp` of `data`: in place into allocated blocks, zero-padded into the new
    /// ones (`is_new[i]`: `phys[i]` was just allocated; empty when none was).
    fn write_new_and_old(
        &self,
        phys: &[u32],
        is_new: &[bool],
        sp: Span,
        data: &[u8],
    ) -> Result<()> {
        let sh = &self.sh;
        sh.check_lease()?;
        let bs = sh.bs() as u64;
        // Coalesce: in-place runs go straight from the caller's buffer; new blocks are
        // zero-padded into one buffer per contiguous run.
        let mut place: Option<(u64, std::ops::Range<usize>)> = None;
        let mut fresh: Option<(u64, Vec<u8>)> = None;
        for s in self.segments(phys, is_new, sp) {
            match s {
                Seg::Place(d, r) => {
                    if let Some((fd, v)) = fresh.take() {
                        sh.dev.write_at(&v, fd)?;
                    }
                    match &mut place {
                        Some((pd, pr)) if *pd + pr.len() as u64 == d && pr.end == r.start => {
                            pr.end = r.end
                        }
                        _ => {
                            if let Some((pd, pr)) = place.take() {
                                sh.dev.write_at(&data[pr], pd)?;
                            }
                            place = Some((d, r));
                        }
                    }
                }
                Seg::New(b, within, r) => {
                    if let Some((pd, pr)) = place.take() {
                        sh.dev.write_at(&data[pr], pd)?;
                    }
                    let d = b as u64 * bs;
                    let contiguous = matches!(&fresh, Some((fd, v)) if *fd + v.len() as u64 == d);
                    if !contiguous {
                        if let Some((fd, v)) = fresh.take() {
                            sh.dev.write_at(&v, fd)?;
                        }
                        fresh = Some((d, Vec::new()));
                    }
                    if let Some((_, v)) = &mut fresh {
                        let at = v.len();
                        v.resize(at + bs as usize, 0);
                        v[at + within..at + within + r.len()].copy_from_slice(&data[r]);
                    }
                }
            }
        }
        if let Some((fd, v)) = fresh.take() {
            sh.dev.write_at(&v, fd)?;
        }
        if let Some((pd, pr)) = place.take() {
            sh.dev.write_at(&data[pr], pd)?;
        }
        Ok(())
    }

    /// Sets the size: shrinking frees blocks, growing is thin (no allocation).
    pub fn set_len(&self, len: u64) -> Result<()> {
        if self.mode != LockMode::Exclusive {
            return Err(ModeError::SetLenNeedsExclusive {
                path: self.path.clone(),
            }
            .into());
        }
        let sh = &self.sh;
        if len > bmap::max_file_size(sh.bs()) {
            return Err(Error::TooLarge(len));
        }
        let mut op = Op::begin(sh)?;
        if let Some(g) = lock_mutex(&self.st).gathered.take() {
            op.resume(g);
        }
        let mut ino = lock_mutex(&self.st).inode.clone();
        if len < ino.size {
            op.truncate(&mut ino, len)?;
        } else {
            self.zero_tail(&ino, len)?;
            ino.size = len;
            ino.change += 1;
            op.set_inode(&ino);
        }
        op.finish()?;
        lock_mutex(&self.st).changed(ino);
        Ok(())
    }

    /// Makes every completed write durable: commits the allocations and size changes
    /// deferred since the last sync (one transaction, two flushes) or else flushes.
    pub fn sync(&self) -> Result<()> {
        self.sh.check_lease()?;
        if self.settle()? {
            return Ok(());
        }
        self.sh.dev.flush()
    }

    /// Commits what is deferred and releases the lock now (reporting errors, unlike drop).
    pub fn close(self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        let settled = self.settle();
        let idx = self.sh.geo().inode_lock(self.ino());
        let released = self.sh.release(idx);
        settled?;
        Ok(released?)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ = self.settle();
            let idx = self.sh.geo().inode_lock(self.ino());
            let _ = self.sh.release(idx);
        }
    }
}

/// The index ranges where `flags` holds `true`.
fn runs_of(flags: &[bool]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, _) in flags.iter().enumerate().filter(|(_, &f)| f) {
        match out.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::MonotonicClock;
    use crate::device::MemDevice;
    use crate::volume::{MkfsOptions, MountOptions, Volume};

    /// Data blocks come from the bottom of a cluster and indirect blocks from its top, so
    /// a sequential thin write at 4 KiB blocks lies in one run on the device, across the
    /// direct slots and three leaves (indirect blocks between the data would leave holes
    /// in the image file until commit, which slow a first write on ext4).
    #[test]
    fn a_sequential_thin_write_lies_in_one_run_on_the_device() {
        let dev = Arc::new(MemDevice::new(96 << 20));
        let o = MkfsOptions {
            block_size: 4096,
            blocks_per_cluster: 8192,
            journal_blocks: 64,
            ..MkfsOptions::default()
        };
        Volume::mkfs(dev.as_ref(), &o).unwrap();
        let v = Volume::mount(
            dev,
            0,
            &MountOptions::default(),
            Arc::new(MonotonicClock::new()),
        )
        .unwrap();
        let f = v.create("/seq").unwrap();
        let mib = vec![7u8; 1 << 20];
        for k in 0..12u64 {
            f.write_at(&mib, k << 20).unwrap();
        }
        f.close().unwrap();
        let f = v.open("/seq", LockMode::SharedRead).unwrap();
        let mut all = vec![0u8; 12 << 20];
        assert_eq!(f.read_at(&mut all, 0).unwrap(), all.len());
        assert!(all.iter().all(|&b| b == 7));
        assert_eq!(
            lock_mutex(&f.st).runs.len(),
            1,
            "3,072 data blocks in one run"
        );
    }
}
