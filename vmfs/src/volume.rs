//! Mounting: the superblock, this host's heartbeat slot and lease, events, growth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::device::{BlockDevice, Cas};
use crate::error::{Error, Result};
use crate::format::{
    encode_journal_header, ClusterBlock, Geometry, HeartbeatSlot, Inode, Kind, LockMode,
    LockRecord, Superblock, MAX_HOSTS, SECTOR,
};
use crate::lease::{Lease, LeaseAction, Liveness, Verdict};

/// Options of `mkfs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MkfsOptions {
    /// Block size (power of two, 4 KiB ..= 1 MiB).
    pub block_size: u32,
    /// Inode table entries (multiple of 64).
    pub max_inodes: u32,
    /// Data blocks per resource cluster.
    pub blocks_per_cluster: u32,
    /// Growth limit in clusters; `None`: four times what fits now (at least 64).
    pub max_clusters: Option<u32>,
    /// Journal blocks per host.
    pub journal_blocks: u32,
    /// Heartbeat lease in ms.
    pub lease_ms: u32,
    /// Heartbeat interval in ms.
    pub interval_ms: u32,
    /// Label.
    pub label: String,
    /// Volume UUID (the caller draws it).
    pub uuid: [u8; 16],
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            block_size: 4096,
            max_inodes: 4096,
            blocks_per_cluster: 1024,
            max_clusters: None,
            journal_blocks: 32,
            lease_ms: 8000,
            interval_ms: 1000,
            label: String::new(),
            uuid: [0; 16],
        }
    }
}

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

#[derive(Debug, Default)]
pub(crate) struct LockTable {
    pub cache: HashMap<u64, LockRecord>,
    pub held: HashMap<u64, (LockMode, usize)>,
}

pub(crate) use crate::journal::JournalState;

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
    valid_until: std::sync::atomic::AtomicU64,
    pub unmounted: AtomicBool,
    /// Last committed transaction not yet checkpointed (0: none): lock releases name it.
    dirty_seq: std::sync::atomic::AtomicU64,
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
    pub fn check_lease(&self) -> Result<()> {
        if self.unmounted.load(Ordering::SeqCst) {
            return Err(Error::ReadOnly("unmounted".into()));
        }
        let now = self.now();
        if now < self.valid_until.load(Ordering::Acquire) {
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
                            state: "slot overwritten by another host".into(),
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
}

/// A mounted volume (cheap to clone; clones share the mount).
#[derive(Debug, Clone)]
pub struct Volume {
    pub(crate) sh: Arc<Shared>,
}

/// A running heartbeat thread; stops when dropped.
#[derive(Debug)]
pub struct HeartbeatThread {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl Drop for HeartbeatThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// One host as seen in `info`.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// The slot.
    pub slot: HeartbeatSlot,
    /// Our verdict.
    pub verdict: Verdict,
}

/// A held lock as seen in `info`.
#[derive(Debug, Clone)]
pub struct LockInfo {
    /// The record.
    pub record: LockRecord,
    /// What it protects.
    pub what: String,
}

impl Volume {
    /// Formats `dev`.
    pub fn mkfs(dev: &dyn BlockDevice, o: &MkfsOptions) -> Result<Superblock> {
        let len = dev.len()?;
        // Two passes: the cluster count decides the layout's size, which decides the count.
        let layout = |max_clusters| {
            Geometry::layout(
                o.block_size,
                o.max_inodes,
                o.blocks_per_cluster,
                max_clusters,
                o.journal_blocks,
                len,
            )
        };
        let mut geo = layout(o.max_clusters.unwrap_or(64))?;
        if o.max_clusters.is_none() {
            geo = layout((geo.n_clusters * 4).max(64))?;
        }
        if o.interval_ms == 0 || o.lease_ms < 2 * o.interval_ms {
            return Err(Error::Config("lease must be at least two intervals".into()));
        }
        let bs = geo.block_size as usize;
        let zero = vec![0u8; 1 << 20];
        let zero_range = |start: u64, end: u64| -> Result<()> {
            let mut o = start;
            while o < end {
                let n = ((end - o) as usize).min(zero.len());
                dev.write_at(&zero[..n], o)?;
                o += n as u64;
            }
            Ok(())
        };
        zero_range(0, geo.cluster_offset)?;
        for c in 0..geo.n_clusters {
            dev.write_at(
                &ClusterBlock::empty(c, geo.bpc).encode(bs),
                geo.cluster_at(c),
            )?;
        }
        for h in 0..MAX_HOSTS {
            dev.write_at(&encode_journal_header(h, 0, 0), geo.journal_at(h))?;
        }
        let mut root = Inode::free(1);
        root.kind = Kind::Dir;
        root.parent = 1;
        root.generation = 1;
        dev.write_at(&root.encode(), geo.inode_at(1))?;
        let sb = Superblock {
            uuid: o.uuid,
            geo,
            lease_ms: o.lease_ms,
            interval_ms: o.interval_ms,
            label: o.label.clone(),
        };
        dev.flush()?;
        dev.write_at(&sb.encode(), 0)?;
        dev.flush()?;
        tracing::info!(clusters = geo.n_clusters, "volume formatted");
        Ok(sb)
    }

    /// Reads the superblock without mounting.
    pub fn superblock(dev: &dyn BlockDevice) -> Result<Superblock> {
        let mut b = vec![0u8; SECTOR];
        dev.read_at(&mut b, 0)?;
        Superblock::decode(&b)
    }

    /// Mounts as host `host` (0..64): claims its heartbeat slot by ATS, takes its journal
    /// lock and replays its journal.
    pub fn mount(
        dev: Arc<dyn BlockDevice>,
        host: u32,
        opts: &MountOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Volume> {
        if host >= MAX_HOSTS {
            return Err(Error::Config(format!("host id {host} >= {MAX_HOSTS}")));
        }
        let sb = Self::superblock(dev.as_ref())?;
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
            return Err(Error::Config("lease must be at least two intervals".into()));
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
                        state: verdict.describe(lease_ms),
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
                            state: "contended".into(),
                        });
                    }
                }
            }
        };
        let now = clock.now_ms();
        let sh = Arc::new(Shared {
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
            valid_until: std::sync::atomic::AtomicU64::new(now + lease_ms / 2),
            unmounted: AtomicBool::new(false),
            dirty_seq: std::sync::atomic::AtomicU64::new(0),
            clock,
        });
        let vol = Volume { sh };
        // Our journal lock: a stale one of an earlier incarnation is ours to take.
        vol.sh.acquire_wait(
            host as u64,
            LockMode::Exclusive,
            "journal",
            3 * lease_ms + 1000,
        )?;
        let (applied, head) = crate::journal::replay(&vol.sh, host)?;
        vol.sh.mark_applied(applied)?;
        {
            let mut j = lock_mutex(&vol.sh.meta);
            j.applied = applied;
            j.head = head;
        }
        tracing::info!(host, generation = vol.sh.generation, "mounted");
        Ok(vol)
    }

    /// This host's id.
    pub fn host(&self) -> u32 {
        self.sh.host
    }
    /// This mount's generation.
    pub fn generation(&self) -> u32 {
        self.sh.generation
    }
    /// The lease in ms.
    pub fn lease_ms(&self) -> u64 {
        self.sh.lease_ms
    }
    /// The current superblock.
    pub fn superblock_now(&self) -> Superblock {
        lock_mutex(&self.sh.sb).clone()
    }
    /// The device.
    pub fn device(&self) -> Arc<dyn BlockDevice> {
        self.sh.dev.clone()
    }

    /// Renews the heartbeat if due; fails with `Fenced` once the lease is lost.
    pub fn tick(&self) -> Result<LeaseAction> {
        self.sh.tick()
    }

    /// Whether this host may still act under its locks.
    pub fn check_lease(&self) -> Result<()> {
        self.sh.check_lease()
    }

    /// Runs `tick` on a thread every quarter interval until the handle is dropped.
    pub fn spawn_heartbeat(&self) -> HeartbeatThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let sh = self.sh.clone();
        let join = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) && !sh.unmounted.load(Ordering::SeqCst) {
                if let Err(Error::Fenced { .. }) = sh.tick() {
                    break;
                }
                sh.clock.sleep_ms((sh.interval_ms / 4).max(1));
            }
        });
        HeartbeatThread {
            stop,
            join: Some(join),
        }
    }

    /// The event channel (once; later calls get `None`).
    pub fn events(&self) -> Option<Receiver<VolumeEvent>> {
        lock_mutex(&self.sh.events_rx).take()
    }

    /// Every heartbeat slot in use, with our verdict.
    pub fn hosts(&self) -> Result<Vec<HostInfo>> {
        let mut out = Vec::new();
        for h in 0..MAX_HOSTS {
            let (slot, verdict) = self.sh.verdict(h)?;
            if slot.generation != 0 {
                out.push(HostInfo { slot, verdict });
            }
        }
        Ok(out)
    }

    /// Every lock record currently held.
    pub fn locks(&self) -> Result<Vec<LockInfo>> {
        list_locks(self.sh.dev.as_ref(), &self.sh.geo())
    }

    /// Releases every lock, marks the slot free.
    pub fn unmount(self) -> Result<()> {
        self.sync()?;
        let held: Vec<u64> = lock_mutex(&self.sh.locks).held.keys().copied().collect();
        for idx in held {
            if idx != self.sh.host as u64 {
                self.sh.release_all(idx)?;
            }
        }
        self.sh.release_all(self.sh.host as u64)?;
        let mut hb = lock_mutex(&self.sh.hb);
        let mut next = hb.clone();
        next.live = false;
        next.counter += 1;
        let off = self.sh.geo().hb_at(self.sh.host);
        if let Cas::Written = self
            .sh
            .dev
            .compare_and_write(off, &hb.encode(), &next.encode())?
        {
            *hb = next;
        }
        self.sh.unmounted.store(true, Ordering::SeqCst);
        self.sh.dev.flush()?;
        tracing::info!(host = self.sh.host, "unmounted");
        Ok(())
    }

    /// Checkpoints this host's journal: every committed metadata change is made durable
    /// in place (committed changes are already durable through the journal).
    pub fn sync(&self) -> Result<()> {
        let mut j = lock_mutex(&self.sh.meta);
        crate::journal::checkpoint(&self.sh, &mut j)
    }

    /// Grows the volume into a device that the administrator has already enlarged.
    pub fn grow(&self) -> Result<u32> {
        let sh = &self.sh;
        let mut op = crate::op::Op::begin(sh)?;
        op.lock(crate::format::LOCK_VOLUME, "volume")?;
        sh.refresh_sb()?;
        let mut sb = lock_mutex(&sh.sb).clone();
        let g = sb.geo;
        let len = sh.dev.len()?;
        let fit = len.saturating_sub(g.data_offset) / (g.bpc as u64 * g.block_size as u64);
        let n = fit.min(g.max_clusters as u64) as u32;
        let mut c = g.n_clusters;
        // Each transaction adds the clusters that fit in the journal and the superblock
        // that counts them, so a crash leaves a consistent, partly grown volume.
        while c < n {
            let step = (op.room_blocks().saturating_sub(2) as u32).max(1);
            let upto = (c + step).min(n);
            for k in c..upto {
                op.put(
                    g.cluster_at(k),
                    ClusterBlock::empty(k, g.bpc).encode(g.block_size as usize),
                );
            }
            sb.geo.n_clusters = upto;
            sb.geo.total_blocks = len / g.block_size as u64;
            op.put(0, sb.encode().to_vec());
            op.commit_keep_locks()?;
            c = upto;
        }
        op.finish()?;
        sh.refresh_sb()?;
        tracing::info!(clusters = c, "volume grown");
        Ok(c.max(g.n_clusters))
    }

    /// Takes on-disk lock `index` (see the README's lock index space) in `mode`, or says
    /// who holds it. The raw lock API, for callers that protect their own resources
    /// (HA uses it for datastore heartbeats); files take theirs through `open`.
    pub fn lock_index(&self, index: u64, mode: LockMode) -> Result<()> {
        if index >= self.sh.geo().n_locks() {
            return Err(Error::Config(format!("lock index {index} out of range")));
        }
        self.sh
            .try_acquire(index, mode, &describe_lock(&self.sh.geo(), index))
    }

    /// Releases a lock taken with [`Volume::lock_index`].
    pub fn unlock_index(&self, index: u64) -> Result<()> {
        self.sh.release(index)
    }

    /// Re-reads the superblock (another host may have grown the volume).
    pub fn refresh(&self) -> Result<()> {
        self.sh.refresh_sb()
    }
}

/// Reads every held lock record.
pub fn list_locks(dev: &dyn BlockDevice, g: &Geometry) -> Result<Vec<LockInfo>> {
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
                out.push(LockInfo {
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
    let base = crate::format::LOCK_INODE_BASE;
    if idx < MAX_HOSTS as u64 {
        format!("journal of host {idx}")
    } else if idx == crate::format::LOCK_VOLUME {
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
