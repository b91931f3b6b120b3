//! The public facade: [`Volume`] formats, mounts and unmounts, and offers the file,
//! namespace, lock and recovery operations of the layers under it (format, block map,
//! journal, mount and locks, operations, files and namespace, recovery).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::device::BlockDevice;
use crate::error::{ConfigError, Error, LockError, Result};
use crate::file::File;
use crate::format::{
    encode_journal_header, ClusterBlock, DirEntry, Geometry, HeartbeatSlot, Inode, Kind, LockMode,
    Superblock, MAX_HOSTS, SECTOR,
};
use crate::lease::{LeaseAction, Verdict};
use crate::locks::{HeldLock, LockInfo};
use crate::mount::{lock_mutex, Shared};
use crate::namespace::{self, Stat};
use crate::op::{self, Op};
use crate::recover::{self, RecoveryStats};

pub use crate::locks::{describe_lock, list_locks};
pub use crate::mount::{MountOptions, VolumeEvent};

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

impl Volume {
    /// Formats `dev`.
    pub fn mkfs(dev: &dyn BlockDevice, o: &MkfsOptions) -> Result<Superblock> {
        let geo = Self::plan(o, dev.len()?)?;
        Self::mkfs_with(dev, o, geo)
    }

    /// Formats a volume for a device **without** an atomic compare-and-write: a Disk
    /// Paxos area for `hosts` hosts (ids `0..hosts`) at the end of `inner`, covering the
    /// heartbeat slots and lock records, and the volume in front of it. Each host then
    /// mounts the device [`crate::paxos::open_for_host`] gives it. See the README,
    /// "Locks without compare-and-write".
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vinfra_vmfs::{paxos, BlockDevice, MemDevice, MkfsOptions, MonotonicClock};
    /// use vinfra_vmfs::{MountOptions, Volume};
    ///
    /// let lun: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    /// let mut opts = MkfsOptions::default();
    /// opts.max_inodes = 256;
    /// Volume::mkfs_without_ats(lun.clone(), &opts, 2)?;
    /// let clock = Arc::new(MonotonicClock::new());
    /// let dev = paxos::open_for_host(lun, 1, clock.clone())?;
    /// let vol = Volume::mount(dev, 1, &MountOptions::default(), clock)?;
    /// vol.mkdir("/vm1")?;
    /// vol.unmount()?;
    /// # Ok::<(), vinfra_vmfs::Error>(())
    /// ```
    pub fn mkfs_without_ats(
        inner: Arc<dyn BlockDevice>,
        o: &MkfsOptions,
        hosts: u32,
    ) -> Result<Superblock> {
        // The layout on the whole device bounds the one on the smaller device in front of
        // the areas (fewer clusters, never more lock records).
        let full = Self::plan(o, inner.len()?)?;
        let cover = full.lock_offset + full.n_locks() * SECTOR as u64;
        let h = crate::paxos::PaxosDevice::format(inner.as_ref(), hosts, cover)?;
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::MonotonicClock::new());
        let dev = crate::paxos::PaxosDevice::open(inner, 0, clock)?;
        let geo = Self::plan(o, h.exposed)?;
        let end = geo.lock_offset + geo.n_locks() * SECTOR as u64;
        if end > h.cover {
            return Err(Error::corrupt(
                "paxos header",
                format!("lock records end at {end}, past the covered {}", h.cover),
            ));
        }
        Self::mkfs_with(&dev, o, geo)
    }

    /// The geometry `mkfs` lays out on a device of `len` bytes.
    fn plan(o: &MkfsOptions, len: u64) -> Result<Geometry> {
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
        Ok(geo)
    }

    fn mkfs_with(dev: &dyn BlockDevice, o: &MkfsOptions, geo: Geometry) -> Result<Superblock> {
        if o.interval_ms == 0 || o.lease_ms < 2 * o.interval_ms {
            return Err(ConfigError::LeaseTooShort.into());
        }
        let bs = geo.block_size as usize;
        // The metadata area and the cluster blocks are zeroed by the device (no zeros go
        // through the page cache of an image file: at 1 MiB blocks the 64 journals alone
        // are 256 MiB), then only the sectors that hold something are written.
        dev.write_zeroes(0, geo.cluster_at(geo.n_clusters))?;
        for c in 0..geo.n_clusters {
            let b = ClusterBlock::empty(c, geo.bpc).encode(bs);
            dev.write_at(nonzero_head(&b), geo.cluster_at(c))?;
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
        dev.write_at(&sb.encode(), crate::format::SB_BACKUP_AT)?;
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

    /// Reads the superblock, falling back to its backup copy
    /// ([`crate::format::SB_BACKUP_AT`]) when the primary fails its checks; says which copy
    /// it used. For readers of a damaged volume ([`crate::ReadOnlyVolume`], fsck):
    /// [`Volume::mount`] itself trusts only the primary, which `fsck --repair` restores.
    ///
    /// ```
    /// use vinfra_vmfs::{BlockDevice, MemDevice, MkfsOptions, Volume};
    ///
    /// let lun = MemDevice::new(32 << 20);
    /// Volume::mkfs(&lun, &MkfsOptions::default())?;
    /// lun.write_at(&[0xff; 16], 0)?; // the primary is damaged
    /// let (sb, from_backup) = Volume::superblock_or_backup(&lun)?;
    /// assert!(from_backup);
    /// assert_eq!(sb.geo.block_size, 4096);
    /// # Ok::<(), vinfra_vmfs::Error>(())
    /// ```
    pub fn superblock_or_backup(dev: &dyn BlockDevice) -> Result<(Superblock, bool)> {
        let primary = Self::superblock(dev);
        let e = match primary {
            Ok(sb) => return Ok((sb, false)),
            Err(e @ (Error::Io { .. } | Error::OutOfBounds { .. })) => return Err(e),
            Err(e) => e,
        };
        let mut b = vec![0u8; SECTOR];
        dev.read_at(&mut b, crate::format::SB_BACKUP_AT)?;
        match Superblock::decode(&b) {
            Ok(sb) => Ok((sb, true)),
            // The primary's complaint is the one to show: an old volume has no backup.
            Err(_) => Err(e),
        }
    }

    /// Mounts as host `host` (0..64): claims its heartbeat slot by ATS, takes its journal
    /// lock and replays its journal.
    pub fn mount(
        dev: Arc<dyn BlockDevice>,
        host: u32,
        opts: &MountOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Volume> {
        // A LUN made by `mkfs_without_ats`, mounted bare, would take its locks by the
        // device's own compare-and-write while other hosts use Disk Paxos: refuse.
        if let Ok(Some(_)) = crate::paxos::PaxosDevice::header(dev.as_ref()) {
            return Err(ConfigError::NeedsDiskPaxos.into());
        }
        let sh = Arc::new(Shared::claim(dev, host, opts, clock)?);
        let lease_ms = sh.lease_ms;
        let vol = Volume { sh };
        // Our journal lock: a stale one of an earlier incarnation is ours to take.
        vol.sh.acquire_wait(
            host as u64,
            LockMode::Exclusive,
            "journal",
            3 * lease_ms + 1000,
        )?;
        let (applied, head) =
            crate::journal::replay(vol.sh.dev.as_ref(), &vol.sh.geo(), host, host)?;
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

    /// Renews the heartbeat if due (fails with `Fenced` once the lease is lost), and
    /// commits open files' deferred allocations that are a quarter lease old.
    pub fn tick(&self) -> Result<LeaseAction> {
        let action = self.sh.tick()?;
        op::settle_stale(&self.sh);
        Ok(action)
    }

    /// Whether this host may still act under its locks.
    pub fn check_lease(&self) -> Result<()> {
        self.sh.check_lease()
    }

    /// Runs `tick` on a thread every quarter interval until the handle is dropped.
    ///
    /// When the device's descriptors are fixed ([`BlockDevice::fixed_fds`]: image files,
    /// memory), the thread has a file table of its own holding only them and stdio by the
    /// time this returns: it keeps no other file of the embedder open, and a
    /// single-threaded embedder's reads and writes are not slowed by a shared table.
    pub fn spawn_heartbeat(&self) -> HeartbeatThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let sh = self.sh.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let join = std::thread::spawn(move || {
            let table = crate::fd_table::private_table(sh.dev.as_ref());
            tracing::debug!(?table, "heartbeat file table");
            let _ = ready_tx.send(());
            while !s2.load(Ordering::SeqCst) && !sh.unmounted.load(Ordering::SeqCst) {
                if let Err(Error::Fenced { .. }) = sh.tick() {
                    break;
                }
                op::settle_stale(&sh);
                sh.clock.sleep_ms((sh.interval_ms / 4).max(1));
            }
        });
        // Only a panic on the thread leaves this without an answer.
        let _ = ready_rx.recv();
        HeartbeatThread {
            stop,
            join: Some(join),
        }
    }

    /// The event channel (once; later calls get `None`).
    pub fn events(&self) -> Option<Receiver<VolumeEvent>> {
        self.sh.take_events()
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
    pub fn locks(&self) -> Result<Vec<HeldLock>> {
        list_locks(self.sh.dev.as_ref(), &self.sh.geo())
    }

    /// The lock of `path` (a file's or a directory's inode lock) as it is on disk now:
    /// its mode and every holder with this host's verdict on it (see [`crate::locks`]).
    pub fn lock_info(&self, path: &str) -> Result<LockInfo> {
        let ino = self.stat(path)?.ino;
        Ok(self.lock_info_at(self.sh.geo().inode_lock(ino))?)
    }

    /// Lock `index` (see the README's lock index space) as it is on disk now, with this
    /// host's verdict on each holder.
    pub fn lock_info_at(&self, index: u64) -> Result<LockInfo, LockError> {
        self.sh.lock_info(index)
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
        self.sh.free_slot()?;
        self.sh.unmounted.store(true, Ordering::SeqCst);
        self.sh.dev.flush()?;
        tracing::info!(host = self.sh.host, "unmounted");
        Ok(())
    }

    /// Commits the allocations that open files deferred, then checkpoints this host's
    /// journal: every committed metadata change is made durable in place (committed
    /// changes are already durable through the journal).
    pub fn sync(&self) -> Result<()> {
        if self
            .sh
            .gatherers()
            .iter()
            .any(|g| g.gathered_since().is_some())
        {
            let mut op = Op::begin(&self.sh)?;
            op.settle_gathered(&|_| true)?;
            op.finish()?;
        }
        let mut j = lock_mutex(&self.sh.meta);
        self.sh.journal().checkpoint(&mut j)
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
            op.put(crate::format::SB_BACKUP_AT, sb.encode().to_vec());
            op.commit_keep_locks()?;
            c = upto;
        }
        op.finish()?;
        sh.refresh_sb()?;
        tracing::info!(clusters = c, "volume grown");
        Ok(c.max(g.n_clusters))
    }

    /// Takes on-disk lock `index` (see the README's lock index space) in `mode`, or says
    /// who holds it and how this host judges the holder ([`LockError::Held`]). The raw
    /// lock API, for callers that protect their own resources (HA uses it for datastore
    /// heartbeats); files take theirs through `open`. See [`crate::locks`].
    pub fn lock_index(&self, index: u64, mode: LockMode) -> Result<(), LockError> {
        if index >= self.sh.geo().n_locks() {
            return Err(LockError::OutOfRange { index });
        }
        self.sh
            .try_acquire(index, mode, &describe_lock(&self.sh.geo(), index))
    }

    /// Releases a lock taken with [`Volume::lock_index`].
    pub fn unlock_index(&self, index: u64) -> Result<(), LockError> {
        self.sh.release(index)
    }

    /// Re-reads the superblock (another host may have grown the volume).
    pub fn refresh(&self) -> Result<()> {
        self.sh.refresh_sb()
    }

    /// Creates a directory.
    pub fn mkdir(&self, path: &str) -> Result<()> {
        namespace::mkdir(&self.sh, path)
    }

    /// Creates a file and opens it with an exclusive lock.
    pub fn create(&self, path: &str) -> Result<File> {
        namespace::create(&self.sh, path)
    }

    /// Opens a file with a lock in `mode`. A live holder in a conflicting mode refuses:
    /// "locked by host 3, alive, heartbeat 2 s ago".
    pub fn open(&self, path: &str, mode: LockMode) -> Result<File> {
        namespace::open(&self.sh, path, mode)
    }

    /// Like [`Volume::open`], but waits up to `timeout_ms` of the volume's clock for a
    /// holder to release, or to be found dead (a whole lease of silence) and broken.
    pub fn open_wait(&self, path: &str, mode: LockMode, timeout_ms: u64) -> Result<File> {
        namespace::open_wait(&self.sh, path, mode, timeout_ms)
    }

    /// Deletes a file (not open anywhere) or an empty directory.
    pub fn delete(&self, path: &str) -> Result<()> {
        namespace::delete(&self.sh, path)
    }

    /// Renames `from` to `to` (which must not exist).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        namespace::rename(&self.sh, from, to)
    }

    /// Lists a directory.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        namespace::list(&self.sh, path)
    }

    /// Describes a path.
    pub fn stat(&self, path: &str) -> Result<Stat> {
        namespace::stat(&self.sh, path)
    }

    /// Whether a path exists.
    pub fn exists(&self, path: &str) -> Result<bool> {
        namespace::exists(&self.sh, path)
    }

    /// Recovers host `h` once it has been silent for a whole lease (waiting at most
    /// `timeout_ms`): replays its journal, breaks every lock it holds and frees its slot.
    /// Refuses with [`Error::SlotBusy`] (and the holder's verdict) while it is alive.
    pub fn recover_host(&self, h: u32, timeout_ms: u64) -> Result<RecoveryStats> {
        recover::recover_host(&self.sh, h, timeout_ms)
    }
}

/// The part of an encoded block up to its last non-zero byte, in whole sectors: what
/// `mkfs` writes over a block the device has already zeroed.
fn nonzero_head(b: &[u8]) -> &[u8] {
    let sectors = b
        .chunks(SECTOR)
        .rposition(|s| !crate::format::all_zero(s))
        .map_or(0, |i| i + 1);
    &b[..(sectors * SECTOR).min(b.len())]
}
