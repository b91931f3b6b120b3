//! The lock manager: on-disk locks taken by compare-and-write, the breaking of a dead
//! host's locks, and what a caller that is not the file layer reads of them.
//!
//! Every lock is a 512-byte record at an index of the lock area (the README's lock index
//! space: host journals, the volume, inodes, clusters, inode groups). A host joins a record
//! by one compare-and-write; a holder whose heartbeat has been silent for a whole lease is
//! broken after its journal is replayed. The answers are typed: a refusal names the holder
//! and this host's [`LockVerdict`] on it, and [`LockInfo`] lists every holder with the
//! lease's [`Verdict`], so a caller such as HA branches on values, not words.
//!
//! ```
//! use std::sync::Arc;
//! use vinfra_vmfs::locks::{LockError, LockVerdict};
//! use vinfra_vmfs::{LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions, Verdict, Volume};
//!
//! # fn main() -> vinfra_vmfs::Result<()> {
//! let lun = Arc::new(MemDevice::new(32 << 20));
//! Volume::mkfs(lun.as_ref(), &MkfsOptions::default())?;
//! let clock = Arc::new(ManualClock::new(0));
//! let esx1 = Volume::mount(lun.clone(), 1, &MountOptions::default(), clock.clone())?;
//! let esx2 = Volume::mount(lun.clone(), 2, &MountOptions::default(), clock.clone())?;
//!
//! let disk = esx1.create("/vm1-flat.vmdk")?;
//! let info = esx2.lock_info("/vm1-flat.vmdk")?;
//! assert_eq!(info.mode, Some(LockMode::Exclusive));
//! assert_eq!(info.holders[0].host, 1);
//! assert!(info.holders[0].verdict.is_alive() && !info.holders[0].breakable());
//!
//! // The raw lock API answers with who holds it and how this host judges the holder.
//! match esx2.lock_index(info.index, LockMode::Exclusive) {
//!     Err(LockError::Held { holder: 1, verdict: LockVerdict::Lease(Verdict::Alive { .. }), .. }) => {}
//!     other => panic!("{other:?}"),
//! }
//! drop(disk);
//! esx2.lock_index(info.index, LockMode::Exclusive)?;
//! esx2.unlock_index(info.index)?;
//! # Ok(())
//! # }
//! ```

use crate::device::{BlockDevice, Cas};
use crate::error::{Error, Result};
use crate::format::{
    Geometry, LockMode, LockRecord, LOCK_INODE_BASE, LOCK_VOLUME, MAX_HOSTS, SECTOR,
};
use crate::journal::JournalGuard;
use crate::lease::Verdict;
use crate::mount::{lock_mutex, Shared};

pub use crate::error::{LockError, LockVerdict};

/// A lock as this host sees it now: the record on disk, and a verdict on each holder.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock index.
    pub index: u64,
    /// What it protects ("inode 12", "cluster 3", ...).
    pub what: String,
    /// The mode it is held in (`None`: free).
    pub mode: Option<LockMode>,
    /// Every host the record names.
    pub holders: Vec<Holder>,
}

/// One holder of a lock and how this host judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The host.
    pub host: u32,
    /// The mount (slot generation) that took the lock.
    pub generation: u32,
    /// This host's verdict on the holder's heartbeat slot now (observe-and-wait: a host is
    /// dead after a whole lease of silence on this host's clock).
    pub verdict: Verdict,
    /// The slot no longer shows that mount (freed, or mounted again since): the lock is a
    /// left-over of a host that went away.
    pub stale: bool,
}

impl Holder {
    /// Whether another host may break this holder's claim (after replaying its journal):
    /// it is stale, or dead by the lease.
    pub fn breakable(&self) -> bool {
        self.stale || !self.verdict.is_alive()
    }
}

/// A held lock as `Volume::locks` and [`list_locks`] list it (records only, no verdicts).
#[derive(Debug, Clone)]
pub struct HeldLock {
    /// The record.
    pub record: LockRecord,
    /// What it protects.
    pub what: String,
}

/// Reads every held lock record (no mount needed).
pub fn list_locks(dev: &dyn BlockDevice, g: &Geometry) -> Result<Vec<HeldLock>> {
    let n = g.n_locks();
    let mut out = Vec::new();
    let chunk = 256u64;
    let mut i = 0;
    while i < n {
        let k = chunk.min(n - i);
        let mut b = vec![0u8; k as usize * SECTOR];
        dev.read_at(&mut b, g.lock_at(i))?;
        for j in 0..k {
            let s = &b[j as usize * SECTOR..(j as usize + 1) * SECTOR];
            let rec = LockRecord::decode(s, i + j)?;
            if rec.mode.is_some() {
                out.push(HeldLock {
                    what: describe_lock(g, i + j),
                    record: rec,
                });
            }
        }
        i += k;
    }
    Ok(out)
}

/// Words for a lock index.
pub fn describe_lock(g: &Geometry, idx: u64) -> String {
    let base = LOCK_INODE_BASE;
    if idx < MAX_HOSTS as u64 {
        format!("journal of host {idx}")
    } else if idx == LOCK_VOLUME {
        "volume".into()
    } else if idx < base {
        format!("reserved lock {idx}")
    } else if idx < base + g.max_inodes as u64 {
        format!("inode {}", idx - base)
    } else if idx < base + g.max_inodes as u64 + g.max_clusters as u64 {
        format!("cluster {}", idx - base - g.max_inodes as u64)
    } else {
        format!(
            "inode group {}",
            idx - base - g.max_inodes as u64 - g.max_clusters as u64
        )
    }
}

/// How a holder stands.
enum Standing {
    /// Its slot shows another generation or is free: its locks are left-overs.
    Stale,
    /// Silent for a whole lease.
    Dead,
    /// Alive (or not yet silent for a lease): the verdict for a refusal.
    Alive(LockVerdict),
}

impl JournalGuard for Shared {
    fn check_lease(&self) -> Result<()> {
        Shared::check_lease(self)
    }
    fn mark_applied(&self, seq: u64) -> Result<()> {
        Shared::mark_applied(self, seq)
    }
    fn set_dirty_seq(&self, seq: u64) {
        Shared::set_dirty_seq(self, seq)
    }
}

impl Shared {
    fn standing(&self, h: u32, g: u32) -> Result<Standing> {
        if h >= MAX_HOSTS {
            return Ok(Standing::Stale);
        }
        let (slot, v) = match self.verdict(h) {
            Ok(x) => x,
            Err(e @ Error::Corrupt { .. }) => {
                return Ok(Standing::Alive(LockVerdict::SlotUnreadable(e.to_string())))
            }
            Err(e) => return Err(e),
        };
        if !slot.live || slot.generation != g {
            return Ok(Standing::Stale);
        }
        Ok(match v {
            Verdict::Free => Standing::Stale,
            Verdict::Dead { .. } => Standing::Dead,
            Verdict::Alive { .. } => Standing::Alive(LockVerdict::Lease(v)),
        })
    }

    /// Lock `idx` as it is on disk now, with this host's verdict on each holder.
    pub(crate) fn lock_info(&self, idx: u64) -> Result<LockInfo, LockError> {
        let g = self.geo();
        if idx >= g.n_locks() {
            return Err(LockError::OutOfRange { index: idx });
        }
        let rec = self.read_lock(idx)?;
        let mut holders = Vec::new();
        for (host, generation) in rec.holder_list() {
            let (verdict, stale) = if host >= MAX_HOSTS {
                (Verdict::Free, true)
            } else {
                let (slot, v) = self.verdict(host)?;
                (v, !slot.live || slot.generation != generation)
            };
            holders.push(Holder {
                host,
                generation,
                verdict,
                stale,
            });
        }
        Ok(LockInfo {
            index: idx,
            what: describe_lock(&g, idx),
            mode: rec.mode,
            holders,
        })
    }

    /// Reads lock record `idx`. A plain read may overlap another host's compare-and-write
    /// of the record and see it half written (a bad crc): read again before calling it
    /// damaged.
    fn read_lock(&self, idx: u64) -> Result<LockRecord> {
        let g = self.geo();
        let mut tries = 0;
        loop {
            match LockRecord::decode(&self.read(g.lock_at(idx), SECTOR)?, idx) {
                Err(Error::Corrupt { .. }) if tries < 8 => {
                    tries += 1;
                    std::thread::yield_now();
                }
                r => return r,
            }
        }
    }

    /// Computes the record after we join it, breaking stale or dead holders.
    fn plan(&self, cur: &LockRecord, mode: LockMode, what: &str) -> Result<LockRecord, LockError> {
        let mut rec = cur.clone();
        if let Some(m) = cur.mode {
            let compatible = m == mode && mode != LockMode::Exclusive;
            let mut breaks = Vec::new();
            for (h, g) in cur.holder_list() {
                if h == self.host && g == self.generation {
                    if compatible {
                        continue;
                    }
                    return Err(LockError::Held {
                        what: what.to_string(),
                        holder: h,
                        verdict: LockVerdict::ThisHost,
                    });
                }
                if h == self.host {
                    // An earlier incarnation of this host: our mount replayed its journal.
                    breaks.push((h, g, false));
                    continue;
                }
                match self.standing(h, g)? {
                    Standing::Stale => breaks.push((h, g, true)),
                    Standing::Dead => breaks.push((h, g, true)),
                    Standing::Alive(verdict) => {
                        if !compatible {
                            return Err(LockError::Held {
                                what: what.to_string(),
                                holder: h,
                                verdict,
                            });
                        }
                    }
                }
            }
            for (h, g, replay) in breaks {
                if replay && cur.index != h as u64 {
                    self.ensure_replayed(h, g)?;
                }
                tracing::info!(
                    host = self.host,
                    lock = cur.index,
                    from = h,
                    "breaking lock"
                );
                rec.holders &= !(1u64 << h);
                rec.gens[h as usize] = 0;
            }
            if rec.holders == 0 {
                rec.mode = None;
            }
        }
        if rec.mode.is_some_and(|m| m != mode) {
            return Err(LockError::Held {
                what: what.to_string(),
                holder: rec.holder_list().first().map_or(0, |x| x.0),
                verdict: LockVerdict::OtherMode,
            });
        }
        rec.mode = Some(mode);
        rec.holders |= 1u64 << self.host;
        rec.gens[self.host as usize] = self.generation;
        rec.seq += 1;
        Ok(rec)
    }

    /// Takes lock `idx` in `mode` now, or says who holds it. One ATS when the last-seen
    /// image of the record is current.
    pub(crate) fn try_acquire(
        &self,
        idx: u64,
        mode: LockMode,
        what: &str,
    ) -> Result<(), LockError> {
        self.check_lease()?;
        {
            let mut t = lock_mutex(&self.locks);
            if let Some((m, n)) = t.held.get_mut(&idx) {
                if *m == mode && mode != LockMode::Exclusive {
                    *n += 1;
                    return Ok(());
                }
                return Err(LockError::Held {
                    what: what.to_string(),
                    holder: self.host,
                    verdict: LockVerdict::ThisHost,
                });
            }
        }
        let g = self.geo();
        let mut cur = lock_mutex(&self.locks)
            .cache
            .get(&idx)
            .cloned()
            .unwrap_or_else(|| LockRecord::free(idx));
        // The cached image saves a read when it is current; a refusal is only ever based on
        // a fresh one.
        let mut fresh = false;
        for _ in 0..16 {
            let new = match self.plan(&cur, mode, what) {
                Ok(n) => n,
                Err(LockError::Held { .. }) if !fresh => {
                    cur = self.read_lock(idx)?;
                    fresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self
                .dev
                .compare_and_write(g.lock_at(idx), &cur.encode(), &new.encode())?
            {
                Cas::Written => {
                    {
                        let mut t = lock_mutex(&self.locks);
                        t.cache.insert(idx, new);
                        t.held.insert(idx, (mode, 1));
                    }
                    if let Some((h, gen, seq)) = cur.dirty {
                        if h != self.host {
                            if let Err(e) = self.settle(h, gen, seq) {
                                let _ = self.release_all(idx);
                                return Err(e);
                            }
                        }
                    }
                    return Ok(());
                }
                Cas::Mismatch(b) => {
                    cur = LockRecord::decode(&b, idx)?;
                    fresh = true;
                    lock_mutex(&self.locks).cache.insert(idx, cur.clone());
                }
            }
        }
        Err(LockError::Held {
            what: what.to_string(),
            holder: self.host,
            verdict: LockVerdict::GaveUp { attempts: 16 },
        })
    }

    /// Retries `try_acquire` until `timeout_ms` of our clock has passed, renewing our own
    /// heartbeat meanwhile (so a manual clock in tests keeps us alive).
    pub(crate) fn acquire_wait(
        &self,
        idx: u64,
        mode: LockMode,
        what: &str,
        timeout_ms: u64,
    ) -> Result<(), LockError> {
        let deadline = self.now() + timeout_ms;
        let mut n: u64 = 0;
        loop {
            match self.try_acquire(idx, mode, what) {
                Err(LockError::Held { .. }) if self.now() < deadline => {
                    let _ = self.tick();
                    n += 1;
                    // Spread retries of different hosts apart.
                    let step = (self.interval_ms / 4).clamp(1, 100);
                    self.clock
                        .sleep_ms(step + (self.host as u64 * 7 + n * 13) % step.max(1));
                }
                r => return r,
            }
        }
    }

    /// Drops one reference to lock `idx`; the last one releases it on disk.
    pub(crate) fn release(&self, idx: u64) -> Result<(), LockError> {
        {
            let mut t = lock_mutex(&self.locks);
            match t.held.get_mut(&idx) {
                Some((_, n)) if *n > 1 => {
                    *n -= 1;
                    return Ok(());
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
        self.release_all(idx)
    }

    /// Releases lock `idx` on disk whatever the reference count.
    pub(crate) fn release_all(&self, idx: u64) -> Result<(), LockError> {
        let held = lock_mutex(&self.locks).held.remove(&idx);
        if held.is_none() {
            return Ok(());
        }
        if lock_mutex(&self.lease).fenced() {
            return Err(LockError::Fenced { host: self.host });
        }
        let cur = lock_mutex(&self.locks)
            .cache
            .get(&idx)
            .cloned()
            .unwrap_or_else(|| LockRecord::free(idx));
        // Our journal lock needs no mark: our own replay covers it.
        let dirty = self.dirty_seq();
        let mark =
            (dirty > 0 && idx != self.host as u64).then_some((self.host, self.generation, dirty));
        let ours = self.update_held(idx, cur, LockVerdict::ReleaseContended, |cur| {
            let mut new = cur.clone();
            new.holders &= !(1u64 << self.host);
            new.gens[self.host as usize] = 0;
            if new.holders == 0 {
                new.mode = None;
            }
            new.dirty = mark.or(if idx == self.host as u64 {
                cur.dirty
            } else {
                None
            });
            Some(new)
        })?;
        if !ours {
            tracing::warn!(host = self.host, lock = idx, "lock was broken while held");
        }
        Ok(())
    }

    /// Records in our journal lock, by ATS (durable, no flush), that every transaction up
    /// to `seq` is durable in place. Retries when another host advanced it meanwhile.
    pub(crate) fn mark_applied(&self, seq: u64) -> Result<()> {
        let idx = self.host as u64;
        let cur = match lock_mutex(&self.locks).cache.get(&idx).cloned() {
            Some(c) => c,
            None => self.read_lock(idx)?,
        };
        let ours = self.update_held(idx, cur, LockVerdict::JournalContended, |cur| {
            (cur.applied_seq < seq).then(|| {
                let mut new = cur.clone();
                new.applied_seq = seq;
                new
            })
        })?;
        if ours {
            Ok(())
        } else {
            Err(Error::Fenced { host: self.host })
        }
    }

    /// Rewrites lock `idx`, which we hold (last seen as `cur`), by ATS with `change` of
    /// the current image (`None`: nothing to change), re-reading on a mismatch. `Ok(false)`
    /// when the lock is no longer ours.
    fn update_held(
        &self,
        idx: u64,
        mut cur: LockRecord,
        contended: LockVerdict,
        change: impl Fn(&LockRecord) -> Option<LockRecord>,
    ) -> Result<bool, LockError> {
        let g = self.geo();
        for _ in 0..16 {
            if cur.holders & (1u64 << self.host) == 0
                || cur.gens[self.host as usize] != self.generation
            {
                return Ok(false);
            }
            let Some(mut new) = change(&cur) else {
                return Ok(true);
            };
            new.seq = cur.seq + 1;
            match self
                .dev
                .compare_and_write(g.lock_at(idx), &cur.encode(), &new.encode())?
            {
                Cas::Written => {
                    lock_mutex(&self.locks).cache.insert(idx, new);
                    return Ok(true);
                }
                Cas::Mismatch(b) => {
                    cur = LockRecord::decode(&b, idx)?;
                    lock_mutex(&self.locks).cache.insert(idx, cur.clone());
                }
            }
        }
        Err(LockError::Held {
            what: format!("lock {idx}"),
            holder: self.host,
            verdict: contended,
        })
    }

    /// Before we change anything a lock covers: the last releaser `h` (generation `gen`)
    /// had written its transactions up to `seq` in place without a flush. Flush them and
    /// raise `h`'s journal floor so that no later replay of `h` writes them over our
    /// changes. Waits while `h`'s journal is being replayed.
    fn settle(&self, h: u32, gen: u32, seq: u64) -> Result<(), LockError> {
        let g = self.geo();
        let idx = h as u64;
        let deadline = self.now() + 2 * self.lease_ms + 2000;
        let mut flushed = false;
        loop {
            let cur = self.read_lock(idx)?;
            if cur.applied_seq >= seq {
                return Ok(());
            }
            let list = cur.holder_list();
            let writable = list.is_empty() || list == [(h, gen)];
            if writable {
                if !flushed {
                    self.dev.flush()?;
                    flushed = true;
                }
                let mut new = cur.clone();
                new.applied_seq = seq;
                new.seq += 1;
                if let Cas::Written =
                    self.dev
                        .compare_and_write(g.lock_at(idx), &cur.encode(), &new.encode())?
                {
                    return Ok(());
                }
                continue;
            }
            // A replayer (or `h`'s next mount) holds the journal: its replay ends with a
            // floor past everything `h` committed.
            if self.now() >= deadline {
                return Err(LockError::Held {
                    what: format!("journal of host {h}"),
                    holder: list.first().map_or(h, |x| x.0),
                    verdict: LockVerdict::Replaying,
                });
            }
            let _ = self.tick();
            self.clock.sleep_ms((self.interval_ms / 4).clamp(1, 100));
        }
    }

    /// Makes sure the journal of host `h` (generation `g`, judged dead or stale) has been
    /// replayed before any of its locks is broken.
    pub(crate) fn ensure_replayed(&self, h: u32, g: u32) -> Result<(), LockError> {
        let geo = self.geo();
        let idx = h as u64;
        for _ in 0..8 {
            let cur = self.read_lock(idx)?;
            if cur.mode.is_none() {
                return Ok(());
            }
            let mut must_take = false;
            for (x, xg) in cur.holder_list() {
                if x == h && xg == g {
                    must_take = true;
                } else if x == h {
                    // The host remounted since: its mount replayed its journal.
                    return Ok(());
                } else if x == self.host && xg == self.generation {
                    return Ok(());
                } else {
                    match self.standing(x, xg)? {
                        Standing::Alive(verdict) => {
                            return Err(LockError::Held {
                                what: format!("journal of host {h}"),
                                holder: x,
                                verdict,
                            })
                        }
                        Standing::Stale | Standing::Dead => must_take = true,
                    }
                }
            }
            if !must_take {
                return Ok(());
            }
            let mut mine = LockRecord::free(idx);
            mine.mode = Some(LockMode::Exclusive);
            mine.holders = 1u64 << self.host;
            mine.gens[self.host as usize] = self.generation;
            mine.seq = cur.seq + 1;
            mine.aux = cur.aux;
            mine.applied_seq = cur.applied_seq;
            if let Cas::Mismatch(_) =
                self.dev
                    .compare_and_write(geo.lock_at(idx), &cur.encode(), &mine.encode())?
            {
                continue;
            }
            tracing::info!(
                host = self.host,
                dead = h,
                "replaying a dead host's journal"
            );
            let (replayed, _) = crate::journal::replay(self.dev.as_ref(), &geo, self.host, h)?;
            let mut done = LockRecord::free(idx);
            done.seq = mine.seq + 1;
            done.aux = g;
            done.applied_seq = mine.applied_seq.max(replayed);
            self.dev
                .compare_and_write(geo.lock_at(idx), &mine.encode(), &done.encode())?;
            return Ok(());
        }
        Err(LockError::Held {
            what: format!("journal of host {h}"),
            holder: h,
            verdict: LockVerdict::Contended,
        })
    }
}
