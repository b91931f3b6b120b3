//! On-disk locks taken by compare-and-write, and the breaking of a dead host's locks.

use crate::device::Cas;
use crate::error::{Error, Result};
use crate::format::{LockMode, LockRecord, SECTOR};
use crate::lease::Verdict;
use crate::volume::{lock_mutex, Shared};

/// How a holder stands.
enum Standing {
    /// Its slot shows another generation or is free: its locks are left-overs.
    Stale,
    /// Silent for a whole lease.
    Dead,
    /// Alive (or not yet silent for a lease): the words for a refusal.
    Alive(String),
}

impl Shared {
    fn standing(&self, h: u32, g: u32) -> Result<Standing> {
        if h >= crate::format::MAX_HOSTS {
            return Ok(Standing::Stale);
        }
        let (slot, v) = match self.verdict(h) {
            Ok(x) => x,
            Err(e @ Error::Corrupt { .. }) => {
                return Ok(Standing::Alive(format!("heartbeat slot unreadable: {e}")))
            }
            Err(e) => return Err(e),
        };
        if !slot.live || slot.generation != g {
            return Ok(Standing::Stale);
        }
        Ok(match v {
            Verdict::Free => Standing::Stale,
            Verdict::Dead { .. } => Standing::Dead,
            Verdict::Alive { .. } => Standing::Alive(v.describe(self.lease_ms)),
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
    fn plan(&self, cur: &LockRecord, mode: LockMode, what: &str) -> Result<LockRecord> {
        let mut rec = cur.clone();
        if let Some(m) = cur.mode {
            let compatible = m == mode && mode != LockMode::Exclusive;
            let mut breaks = Vec::new();
            for (h, g) in cur.holder_list() {
                if h == self.host && g == self.generation {
                    if compatible {
                        continue;
                    }
                    return Err(Error::Locked {
                        what: what.to_string(),
                        host: h,
                        state: "held by this host".into(),
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
                    Standing::Alive(state) => {
                        if !compatible {
                            return Err(Error::Locked {
                                what: what.to_string(),
                                host: h,
                                state,
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
            return Err(Error::Locked {
                what: what.to_string(),
                host: rec.holder_list().first().map_or(0, |x| x.0),
                state: "held in another mode".into(),
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
    pub(crate) fn try_acquire(&self, idx: u64, mode: LockMode, what: &str) -> Result<()> {
        self.check_lease()?;
        {
            let mut t = lock_mutex(&self.locks);
            if let Some((m, n)) = t.held.get_mut(&idx) {
                if *m == mode && mode != LockMode::Exclusive {
                    *n += 1;
                    return Ok(());
                }
                return Err(Error::Locked {
                    what: what.to_string(),
                    host: self.host,
                    state: "held by this host".into(),
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
                Err(Error::Locked { .. }) if !fresh => {
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
        Err(Error::Locked {
            what: what.to_string(),
            host: self.host,
            state: "contended, gave up after 16 attempts".into(),
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
    ) -> Result<()> {
        let deadline = self.now() + timeout_ms;
        let mut n: u64 = 0;
        loop {
            match self.try_acquire(idx, mode, what) {
                Err(Error::Locked { .. }) if self.now() < deadline => {
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
    pub(crate) fn release(&self, idx: u64) -> Result<()> {
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
    pub(crate) fn release_all(&self, idx: u64) -> Result<()> {
        let held = lock_mutex(&self.locks).held.remove(&idx);
        if held.is_none() {
            return Ok(());
        }
        if lock_mutex(&self.lease).fenced() {
            return Err(Error::Fenced { host: self.host });
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
        let ours = self.update_held(idx, cur, "release", |cur| {
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
        let ours = self.update_held(idx, cur, "journal", |cur| {
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
        what: &str,
        change: impl Fn(&LockRecord) -> Option<LockRecord>,
    ) -> Result<bool> {
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
        Err(Error::Locked {
            what: format!("lock {idx}"),
            host: self.host,
            state: format!("{what} contended"),
        })
    }

    /// Before we change anything a lock covers: the last releaser `h` (generation `gen`)
    /// had written its transactions up to `seq` in place without a flush. Flush them and
    /// raise `h`'s journal floor so that no later replay of `h` writes them over our
    /// changes. Waits while `h`'s journal is being replayed.
    fn settle(&self, h: u32, gen: u32, seq: u64) -> Result<()> {
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
                return Err(Error::Locked {
                    what: format!("journal of host {h}"),
                    host: list.first().map_or(h, |x| x.0),
                    state: "being replayed".into(),
                });
            }
            let _ = self.tick();
            self.clock.sleep_ms((self.interval_ms / 4).clamp(1, 100));
        }
    }

    /// Makes sure the journal of host `h` (generation `g`, judged dead or stale) has been
    /// replayed before any of its locks is broken.
    pub(crate) fn ensure_replayed(&self, h: u32, g: u32) -> Result<()> {
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
                        Standing::Alive(state) => {
                            return Err(Error::Locked {
                                what: format!("journal of host {h}"),
                                host: x,
                                state,
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
            let (replayed, _) = crate::journal::replay(self, h)?;
            let mut done = LockRecord::free(idx);
            done.seq = mine.seq + 1;
            done.aux = g;
            done.applied_seq = mine.applied_seq.max(replayed);
            self.dev
                .compare_and_write(geo.lock_at(idx), &mine.encode(), &done.encode())?;
            return Ok(());
        }
        Err(Error::Locked {
            what: format!("journal of host {h}"),
            host: h,
            state: "contended".into(),
        })
    }
}
