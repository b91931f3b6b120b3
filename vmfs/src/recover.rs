//! Failover: wait out a silent host's lease, replay its journal, break its locks, reclaim
//! its heartbeat slot.

use crate::device::Cas;
use crate::error::{ConfigError, Error, Result, SlotState};
use crate::format::{HeartbeatSlot, LockRecord, SECTOR};
use crate::lease::Verdict;
use crate::mount::Shared;

/// What a recovery took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// The dead host.
    pub host: u32,
    /// Its generation.
    pub generation: u32,
    /// Time spent waiting for its lease to expire (our clock).
    pub lease_wait_ms: u64,
    /// Time spent replaying its journal and breaking its locks.
    pub replay_ms: u64,
    /// Locks broken.
    pub locks_broken: u64,
}

/// `Volume::recover_host`.
pub(crate) fn recover_host(sh: &Shared, h: u32, timeout_ms: u64) -> Result<RecoveryStats> {
    if h == sh.host {
        return Err(ConfigError::RecoverSelf.into());
    }
    let t0 = sh.now();
    let deadline = t0 + timeout_ms;
    let slot = loop {
        sh.check_lease()?;
        let (slot, v) = sh.verdict(h)?;
        match v {
            Verdict::Free => {
                return Ok(RecoveryStats {
                    host: h,
                    ..Default::default()
                })
            }
            Verdict::Dead { .. } => break slot,
            Verdict::Alive { .. } => {
                if sh.now() >= deadline {
                    return Err(Error::SlotBusy {
                        host: h,
                        state: SlotState::Lease(v),
                    });
                }
                let _ = sh.tick();
                sh.clock.sleep_ms((sh.interval_ms / 4).clamp(1, 100));
            }
        }
    };
    let t1 = sh.now();
    sh.ensure_replayed(h, slot.generation)?;
    let g = sh.geo();
    let mut broken = 0;
    let n = g.n_locks();
    let mut i = 0;
    while i < n {
        let k = 256u64.min(n - i);
        let raw = sh.read(g.lock_at(i), k as usize * SECTOR)?;
        for j in 0..k {
            let s = &raw[j as usize * SECTOR..(j as usize + 1) * SECTOR];
            let Ok(rec) = LockRecord::decode(s, i + j) else {
                continue;
            };
            if rec.holders & (1u64 << h) == 0 || rec.gens[h as usize] != slot.generation {
                continue;
            }
            let mut new = rec.clone();
            new.holders &= !(1u64 << h);
            new.gens[h as usize] = 0;
            if new.holders == 0 {
                new.mode = None;
            }
            new.seq += 1;
            if let Cas::Written = sh
                .dev
                .compare_and_write(g.lock_at(i + j), s, &new.encode())?
            {
                broken += 1;
            }
        }
        i += k;
    }
    // Reclaim the slot so the host's next mount starts clean.
    let raw = sh.read(g.hb_at(h), SECTOR)?;
    if let Ok(cur) = HeartbeatSlot::decode(&raw, h) {
        if cur.generation == slot.generation && cur.counter == slot.counter {
            let mut free = cur.clone();
            free.live = false;
            let _ = sh.dev.compare_and_write(g.hb_at(h), &raw, &free.encode())?;
        }
    }
    let t2 = sh.now();
    tracing::info!(
        host = sh.host,
        dead = h,
        locks = broken,
        "recovered a dead host"
    );
    Ok(RecoveryStats {
        host: h,
        generation: slot.generation,
        lease_wait_ms: t1 - t0,
        replay_ms: t2 - t1,
        locks_broken: broken,
    })
}
