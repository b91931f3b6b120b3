//! A mounted volume's shared state: the superblock, this host's heartbeat slot and lease,
//! what it believes about other hosts, its lock table and journal position, events.
//!
//! The layer under the lock manager (the `locks` module takes and releases locks on this
//! state) and over the journal; the file layer and the [`crate::Volume`] facade sit above.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::device::{BlockDevice, Cas};
use crate::error::{ConfigError, Error, ReadOnlyReason, Result, SlotState};
use crate::format::{Geometry, HeartbeatSlot, LockMode, LockRecord, Superblock, MAX_HOSTS, SECTOR};
use crate::gather::Gatherer;
use crate::journal::{Journal, JournalState};
use crate::lease::{Lease, LeaseAction, Verdict};
use crate::liveness::Liveness;

/// Options of `mount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MountOptions {
    /// Overrides the volume's lease (tests use short leases).
    pub lease_ms: Option<u32>,
    /// Overrides the volume's heartbeat interval.
    pub interval_ms: Option<u32>,
    /// Informational host name written in the slot.
    pub name: String,
    /// Informational pid written in the slot.
    pub pid: u32,
    /// If our slot looks live (a crashed earlier incarnation), wait for its lease to expire
    /// and take it over instead of failing.
    pub take_over_slot: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            lease_ms: None,
            interval_ms: None,
            name: String::new(),
            pid: 0,
            take_over_slot: true,
        }
    }
}

/// Something the caller must know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VolumeEvent {
    /// This host could not renew its heartbeat for half a lease and stopped using its
    /// locks: stop the VMs whose disks it held.
    Fenced {
        /// This host.
        host: u32,
        /// Locks it held (lock indices).
        locks: Vec<u64>,
    },
}

/// This mount's view of the on-disk locks.
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    /// The last image seen of each lock record (saves a read when it is still current).
    pub cache: HashMap<u64, LockRecord>,
    /// Locks this mount holds: mode and reference count.
    pub held: HashMap<u64, (LockMode, usize)>,
}

/// State shared by a mounted volume's handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dev: Arc<dyn BlockDevice>,
    pub clock: Arc<dyn Clock>,
    pub host: u32,
    pub generation: u32,
    pub sb: Mutex<Superblock>,
    pub lease_ms: u64,
    pub interval_ms: u64,
    pub lease: Mutex<Lease>,
    hb: Mutex<HeartbeatSlot>,
    pub liveness: Mutex<Liveness>,
    pub locks: Mutex<LockTable>,
    pub meta: Mutex<JournalState>,
    events: Mutex<Sender<VolumeEvent>>,
    events_rx: Mutex<Option<Receiver<VolumeEvent>>>,
    fenced_reported: AtomicBool,
    poisoned: AtomicBool,
    /// Lock-free copy of the lease's validity horizon (ms), for the I/O hot path.
    valid_until: AtomicU64,
    pub unmounted: AtomicBool,
    /// Last committed transaction not yet checkpointed (0: none): lock releases name it.
    dirty_seq: AtomicU64,
    /// Open files that may park deferred allocations (see `gather`).
    pub gatherers: Mutex<Vec<Weak<dyn Gatherer>>>,
}

pub(crate) fn lock_mutex<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the volume: the data under these mutexes is
    // re-validated from the device.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn geo(&self) -> Geometry {
        lock_mutex(&self.sb).geo
    }
    pub fn bs(&self) -> usize {
        lock_mutex(&self.sb).geo.block_size as usize
    }
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.dev.read_at(&mut b, off)?;
        Ok(b)
    }

    pub fn read_slot(&self, h: u32) -> Result<HeartbeatSlot> {
        let g = self.geo();
        HeartbeatSlot::decode(&self.read(g.hb_at(h), SECTOR)?, h)
    }

    /// Fails with `Fenced` once the lease is no longer valid, and reports it once.
    ///
    /// Every read and write calls this, so the common answer comes from the clock's
    /// coarse reading (a few ns, where the precise one costs about 30 ns, a tenth of
    /// vmfs's share of a cached 4 KiB read): the latest time it allows for must still be
    /// before the horizon. Otherwise (near the horizon, or fenced: the horizon is then 0)
    /// the precise clock and the lease itself decide, as before.
    pub fn check_lease(&self) -> Result<()> {
        if self.unmounted.load(Ordering::SeqCst) {
            return Err(Error::ReadOnly(ReadOnlyReason::Unmounted));
        }
        let valid_until = self.valid_until.load(Ordering::Acquire);
        let (coarse, slack) = self.clock.now_ms_coarse();
        if coarse.saturating_add(slack) < valid_until {
            return Ok(());
        }
        let now = self.now();
        if now < valid_until {
            return Ok(());
        }
        let valid = lock_mutex(&self.lease).valid(now);
        if valid {
            return Ok(());
        }
        lock_mutex(&self.lease).poll(now);
        self.report_fence();
        Err(Error::Fenced { host: self.host })
    }

    fn report_fence(&self) {
        if !self.fenced_reported.swap(true, Ordering::SeqCst) {
            let locks: Vec<u64> = lock_mutex(&self.locks).held.keys().copied().collect();
            tracing::warn!(
                host = self.host,
                "heartbeat lease lost: fencing, locks abandoned"
            );
            let _ = lock_mutex(&self.events).send(VolumeEvent::Fenced {
                host: self.host,
                locks,
            });
        }
    }

    /// After a failure past a commit point: stop renewing and acting, so that another host
    /// breaks our locks after the lease and replays our journal.
    pub fn poison(&self, e: &Error) {
        tracing::error!(host = self.host, "metadata commit failed ({e}); fencing");
        self.poisoned.store(true, Ordering::SeqCst);
        self.valid_until.store(0, Ordering::Release);
        lock_mutex(&self.lease).fence();
        self.report_fence();
    }

    /// Adds an open file that may park deferred allocations (dropped ones are pruned).
    pub fn register_gatherer(&self, g: Weak<dyn Gatherer>) {
        let mut v = lock_mutex(&self.gatherers);
        v.retain(|w| w.strong_count() > 0);
        v.push(g);
    }

    /// The open files that may have parked deferred allocations.
    pub fn gatherers(&self) -> Vec<Arc<dyn Gatherer>> {
        lock_mutex(&self.gatherers)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    pub fn set_dirty_seq(&self, seq: u64) {
        self.dirty_seq.store(seq, Ordering::SeqCst);
    }

    pub fn dirty_seq(&self) -> u64 {
        self.dirty_seq.load(Ordering::SeqCst)
    }

    pub fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Renews the heartbeat if due.
    pub fn tick(&self) -> Result<LeaseAction> {
        let now = self.now();
        let action = lock_mutex(&self.lease).poll(now);
        match action {
            LeaseAction::Fence => {
                self.valid_until.store(0, Ordering::Release);
                self.report_fence();
                Err(Error::Fenced { host: self.host })
            }
            LeaseAction::WaitUntil(_) => Ok(action),
            LeaseAction::Renew => {
                let mut hb = lock_mutex(&self.hb);
                let mut next = hb.clone();
                next.counter += 1;
                next.stamp_ms = now;
                let off = self.geo().hb_at(self.host);
                match self
                    .dev
                    .compare_and_write(off, &hb.encode(), &next.encode())
                {
                    Ok(Cas::Written) => {
                        *hb = next;
                        let mut l = lock_mutex(&self.lease);
                        l.renewed(now);
                        if !l.fenced() {
                            self.valid_until
                                .store(now + self.lease_ms / 2, Ordering::Release);
                        }
                        Ok(LeaseAction::Renew)
                    }
                    Ok(Cas::Mismatch(_)) => {
                        // Someone else wrote our slot: another host claims our id.
                        tracing::error!(host = self.host, "heartbeat slot overwritten");
                        lock_mutex(&self.lease).renew_failed(now);
                        Err(Error::SlotBusy {
                            host: self.host,
                            state: SlotState::Overwritten,
                        })
                    }
                    Err(e) => {
                        tracing::debug!(host = self.host, "heartbeat renewal failed: {e}");
                        lock_mutex(&self.lease).renew_failed(now);
                        Err(e)
                    }
                }
            }
        }
    }

    /// What we believe about host `h` (reads its slot).
    pub fn verdict(&self, h: u32) -> Result<(HeartbeatSlot, Verdict)> {
        let slot = self.read_slot(h)?;
        let now = self.now();
        let v = lock_mutex(&self.liveness).observe(h, &slot, now);
        Ok((slot, v))
    }

    pub fn refresh_sb(&self) -> Result<()> {
        let sb = Superblock::decode(&self.read(0, SECTOR)?)?;
        *lock_mutex(&self.sb) = sb;
        Ok(())
    }

    /// This host's journal (the geometry as of now).
    pub fn journal(&self) -> Journal<'_> {
        Journal {
            dev: self.dev.as_ref(),
            geo: self.geo(),
            host: self.host,
            guard: self,
        }
    }

    /// The event channel (once; later calls get `None`).
    pub fn take_events(&self) -> Option<Receiver<VolumeEvent>> {
        lock_mutex(&self.events_rx).take()
    }

    /// Marks this host's heartbeat slot free (at unmount), if it is still ours.
    pub fn free_slot(&self) -> Result<()> {
        let mut hb = lock_mutex(&self.hb);
        let mut next = hb.clone();
        next.live = false;
        next.counter += 1;
        let off = self.geo().hb_at(self.host);
        if let Cas::Written = self
            .dev
            .compare_and_write(off, &hb.encode(), &next.encode())?
        {
            *hb = next;
        }
        Ok(())
    }

    /// Claims heartbeat slot `host` of the volume on `dev` by ATS (waiting out a crashed
    /// earlier incarnation if `opts` allow) and returns the mount's state. Nothing else is
    /// taken yet: the caller takes the journal lock and replays the journal.
    pub fn claim(
        dev: Arc<dyn BlockDevice>,
        host: u32,
        opts: &MountOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Shared> {
        if host >= MAX_HOSTS {
            return Err(ConfigError::HostId {
                host,
                max: MAX_HOSTS,
            }
            .into());
        }
        let sb = {
            let mut b = vec![0u8; SECTOR];
            dev.read_at(&mut b, 0)?;
            Superblock::decode(&b)?
        };
        let need = sb.geo.data_offset + sb.geo.data_blocks() * sb.geo.block_size as u64;
        let have = dev.len()?;
        if have < need {
            return Err(Error::corrupt(
                "volume",
                format!("device of {have} bytes is shorter than the volume ({need} bytes)"),
            ));
        }
        let lease_ms = opts.lease_ms.unwrap_or(sb.lease_ms) as u64;
        let interval_ms = opts.interval_ms.unwrap_or(sb.interval_ms) as u64;
        if interval_ms == 0 || lease_ms < 2 * interval_ms {
            return Err(ConfigError::LeaseTooShort.into());
        }
        let geo = sb.geo;
        let (tx, rx) = channel();
        let mut liveness = Liveness::new(lease_ms, MAX_HOSTS as usize);
        // Claim the slot.
        let deadline = clock.now_ms() + 3 * lease_ms + 1000;
        let slot = loop {
            let mut raw = vec![0u8; SECTOR];
            dev.read_at(&mut raw, geo.hb_at(host))?;
            let cur = HeartbeatSlot::decode(&raw, host)?;
            let now = clock.now_ms();
            let verdict = liveness.observe(host, &cur, now);
            let takeable = match verdict {
                Verdict::Free | Verdict::Dead { .. } => true,
                Verdict::Alive { .. } => false,
            };
            if !takeable {
                if !opts.take_over_slot || now > deadline {
                    return Err(Error::SlotBusy {
                        host,
                        state: SlotState::Lease(verdict),
                    });
                }
                clock.sleep_ms(interval_ms.min(250));
                continue;
            }
            let next = HeartbeatSlot {
                live: true,
                host,
                generation: cur.generation.wrapping_add(1).max(1),
                counter: cur.counter + 1,
                stamp_ms: now,
                pid: opts.pid,
                name: opts.name.clone(),
            };
            match dev.compare_and_write(geo.hb_at(host), &raw, &next.encode())? {
                Cas::Written => break next,
                Cas::Mismatch(_) => {
                    if clock.now_ms() > deadline {
                        return Err(Error::SlotBusy {
                            host,
                            state: SlotState::Contended,
                        });
                    }
                }
            }
        };
        let now = clock.now_ms();
        Ok(Shared {
            dev,
            host,
            generation: slot.generation,
            sb: Mutex::new(sb),
            lease_ms,
            interval_ms,
            lease: Mutex::new(Lease::new(interval_ms, lease_ms, now)),
            hb: Mutex::new(slot),
            liveness: Mutex::new(liveness),
            locks: Mutex::new(LockTable::default()),
            meta: Mutex::new(JournalState::default()),
            events: Mutex::new(tx),
            events_rx: Mutex::new(Some(rx)),
            fenced_reported: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            valid_until: AtomicU64::new(now + lease_ms / 2),
            unmounted: AtomicBool::new(false),
            dirty_seq: AtomicU64::new(0),
            gatherers: Mutex::new(Vec::new()),
            clock,
        })
    }
}
