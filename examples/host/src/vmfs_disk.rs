//! A vmfs virtual disk behind a vmm-core virtio-blk device.
//!
//! vmm-core and vmfs depend on no sibling crate (DESIGN.md), so the seam
//! between them lives here: [`VmfsDiskBackend`] implements vmm-core's
//! [`BlockBackend`] over an open [`VirtualDisk`].
//!
//! # Locking: never a second power-on
//!
//! [`VirtualDisk::open`] takes the disk's top layer (and its descriptor and
//! change-tracking file) with an exclusive on-disk lock, as a running VM's disk
//! must be. A second opener — another host process on the same volume — is
//! refused while this host's heartbeat is alive, with vmfs's
//! `... locked by host N, alive, heartbeat ...` error. That refusal is what
//! keeps HA or an operator from powering the same VM on twice.
//!
//! # Heartbeats
//!
//! vmfs does not renew a host's heartbeat by itself: the caller drives
//! [`Volume::tick`], either from its own loop or with
//! [`Volume::spawn_heartbeat`], a thread that ticks with the volume's clock
//! (mount with a [`MonotonicClock`] for real use) and stops when its
//! [`HeartbeatThread`] handle is dropped. [`MountedHost`] bundles a mounted
//! volume, its heartbeat thread and its event channel for a VMM process.
//! Keep it alive for as long as the VM runs.
//!
//! # Self-fencing
//!
//! When a host cannot renew its heartbeat for half a lease (a stalled
//! process, a lost path to the LUN), vmfs fences it: every further file
//! operation fails with `Error::Fenced`, and a `VolumeEvent::Fenced` arrives
//! on the event channel. Another host may break the lock a whole lease after
//! it last saw the heartbeat move, so the fenced host must not write again.
//! vmfs's own file reads, writes and syncs check the lease; the backend also
//! checks it before every request itself, so the guarantee does not rest on
//! every path inside `VirtualDisk` touching a vmfs file. From the moment of
//! fencing, every read, write and flush returns an `io::Error` whose source
//! is the vmfs `Fenced` error, and virtio-blk completes the request with
//! `VIRTIO_BLK_S_IOERR`. The guest sees I/O errors, never a write that lands
//! after another host took the disk over. A VMM should also watch
//! [`MountedHost::fenced`] and stop the VM (its memory may hold writes it
//! could not flush; the surviving host restarts it from the disk).
//!
//! ```
//! use std::sync::Arc;
//! use vinfra_host::vmfs_disk::VmfsDiskBackend;
//! use vinfra_vmfs::{ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};
//! use vinfra_vmm_core::devices::block::BlockBackend;
//!
//! let dev = Arc::new(MemDevice::new(48 << 20));
//! let mut opts = MkfsOptions::default();
//! opts.max_inodes = 256;
//! opts.blocks_per_cluster = 512;
//! Volume::mkfs(dev.as_ref(), &opts).unwrap();
//! let clock = Arc::new(ManualClock::new(0));
//! let vol = Volume::mount(dev, 1, &MountOptions::default(), clock).unwrap();
//!
//! let disk = VmfsDiskBackend::create(&vol, "/vm1.vmdk", 1 << 20).unwrap();
//! disk.write_at(&[7u8; 512], 4096).unwrap();
//! disk.flush().unwrap();
//! let mut sector = [0u8; 512];
//! disk.read_at(&mut sector, 4096).unwrap();
//! assert_eq!(sector, [7u8; 512]);
//! assert_eq!(disk.len(), 1 << 20);
//! disk.close().unwrap();
//! ```

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError, RwLock};

use vinfra_vmfs::disk::VirtualDisk;
use vinfra_vmfs::{FileDevice, HeartbeatThread, MonotonicClock, MountOptions, Volume, VolumeEvent};
use vinfra_vmm_core::devices::block::BlockBackend;

/// Errors of the vmfs disk adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmfsDiskError {
    /// A guest request failed in vmfs (carried inside the `io::Error` the
    /// device sees; its source is the vmfs error).
    #[error("vmfs disk {path}: {op} at {offset}+{len}: {source}")]
    Io {
        /// The disk's descriptor path on the volume.
        path: String,
        /// `read`, `write` or `flush`.
        op: &'static str,
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: usize,
        /// What vmfs said.
        #[source]
        source: vinfra_vmfs::Error,
    },
    /// A request reaches past the end of the disk.
    #[error("vmfs disk {path}: {op} at {offset}+{len} beyond the capacity {capacity}")]
    OutOfRange {
        /// The disk's descriptor path on the volume.
        path: String,
        /// `read` or `write`.
        op: &'static str,
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: usize,
        /// Disk size in bytes.
        capacity: u64,
    },
    /// The volume file could not be opened or mounted.
    #[error("mount {volume} as host {host}: {source}")]
    Mount {
        /// The volume (image file) path.
        volume: String,
        /// Host id asked for.
        host: u32,
        /// What vmfs said.
        #[source]
        source: vinfra_vmfs::Error,
    },
    /// A request while this host does not hold the disk (released for a migration).
    #[error("vmfs disk {path}: {op} at {offset}+{len} while its lock is released")]
    Released {
        /// The disk's descriptor path on the volume.
        path: String,
        /// `read`, `write` or `flush`.
        op: &'static str,
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: usize,
    },
    /// The disk could not be created or opened.
    #[error("open disk {path}: {source}")]
    Open {
        /// The disk's descriptor path on the volume.
        path: String,
        /// What vmfs said (a live owner's refusal names it).
        #[source]
        source: vinfra_vmfs::Error,
    },
}

/// Result of the adapter's setup calls.
pub type Result<T, E = VmfsDiskError> = std::result::Result<T, E>;

/// A vmfs virtual disk as a vmm-core block backend, held exclusively.
///
/// `VirtualDisk::write_at` needs `&mut self` while the device calls the
/// backend from several vCPU threads through `&self`, hence the lock: reads
/// share it, writes and flushes take it alone.
#[derive(Debug)]
pub struct VmfsDiskBackend {
    /// `None` while the lock is released (a VM migrating away, or one arriving).
    disk: RwLock<Option<VirtualDisk>>,
    volume: Volume,
    path: String,
    /// Known once the disk was opened; kept across a release.
    capacity: AtomicU64,
}

impl VmfsDiskBackend {
    /// Opens the disk at `path` (a `.vmdk` descriptor) exclusively; refused
    /// while another live host holds it.
    pub fn open(volume: &Volume, path: &str) -> Result<Self> {
        let disk = VirtualDisk::open(volume, path).map_err(|source| VmfsDiskError::Open {
            path: path.to_string(),
            source,
        })?;
        Ok(Self::from_disk(volume, path, disk))
    }

    /// Creates a thin disk of `capacity` bytes at `path`, held exclusively.
    pub fn create(volume: &Volume, path: &str, capacity: u64) -> Result<Self> {
        let disk =
            VirtualDisk::create(volume, path, capacity).map_err(|source| VmfsDiskError::Open {
                path: path.to_string(),
                source,
            })?;
        Ok(Self::from_disk(volume, path, disk))
    }

    fn from_disk(volume: &Volume, path: &str, disk: VirtualDisk) -> Self {
        VmfsDiskBackend {
            capacity: AtomicU64::new(disk.capacity()),
            disk: RwLock::new(Some(disk)),
            volume: volume.clone(),
            path: path.to_string(),
        }
    }

    /// A backend for the disk at `path` that does not hold it yet: I/O fails until
    /// [`VmfsDiskBackend::acquire`] (a VM arriving by live migration takes the lock only
    /// when the source has released it, at the switchover).
    pub fn detached(volume: &Volume, path: &str) -> Self {
        VmfsDiskBackend {
            capacity: AtomicU64::new(0),
            disk: RwLock::new(None),
            volume: volume.clone(),
            path: path.to_string(),
        }
    }

    /// Flushes the disk and releases its locks; I/O fails until [`VmfsDiskBackend::acquire`].
    /// Releasing a released disk does nothing.
    pub fn release(&self) -> Result<()> {
        let mut disk = self.disk.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = disk.as_mut() {
            d.sync().map_err(|source| VmfsDiskError::Open {
                path: self.path.clone(),
                source,
            })?;
        }
        *disk = None;
        Ok(())
    }

    /// Opens the disk exclusively again (refused while another live host holds it).
    /// Acquiring a held disk does nothing.
    pub fn acquire(&self) -> Result<()> {
        let mut disk = self.disk.write().unwrap_or_else(PoisonError::into_inner);
        if disk.is_none() {
            let d = VirtualDisk::open(&self.volume, &self.path).map_err(|source| {
                VmfsDiskError::Open {
                    path: self.path.clone(),
                    source,
                }
            })?;
            self.capacity.store(d.capacity(), Ordering::Release);
            *disk = Some(d);
        }
        Ok(())
    }

    /// Runs `f` on the disk alone (no guest I/O meanwhile): a snapshot for a backup, a
    /// consolidation after it. `Err` when the disk is released.
    pub fn with_disk<T>(&self, f: impl FnOnce(&mut VirtualDisk) -> T) -> Result<T, String> {
        let mut disk = self.disk.write().unwrap_or_else(PoisonError::into_inner);
        match disk.as_mut() {
            Some(d) => Ok(f(d)),
            None => Err(format!(
                "disk {} is released (not held by this host)",
                self.path
            )),
        }
    }

    /// Whether this backend holds the disk's lock.
    pub fn held(&self) -> bool {
        self.disk
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The disk's descriptor path on the volume.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Flushes and releases the disk's locks (dropping releases them too, but
    /// without a flush and without reporting errors).
    pub fn close(self) -> io::Result<()> {
        if self.held() {
            self.flush()?;
        }
        drop(self.disk);
        Ok(())
    }

    fn io_error(
        &self,
        op: &'static str,
        offset: u64,
        len: usize,
        e: vinfra_vmfs::Error,
    ) -> io::Error {
        let kind = match e {
            vinfra_vmfs::Error::TooLarge(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(
            kind,
            VmfsDiskError::Io {
                path: self.path.clone(),
                op,
                offset,
                len,
                source: e,
            },
        )
    }

    fn released(&self, op: &'static str, offset: u64, len: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotConnected,
            VmfsDiskError::Released {
                path: self.path.clone(),
                op,
                offset,
                len,
            },
        )
    }

    fn held_disk<'a>(
        &self,
        disk: Option<&'a VirtualDisk>,
        op: &'static str,
        offset: u64,
        len: usize,
    ) -> io::Result<&'a VirtualDisk> {
        disk.ok_or_else(|| self.released(op, offset, len))
    }

    fn held_disk_mut<'a>(
        &self,
        disk: Option<&'a mut VirtualDisk>,
        op: &'static str,
        offset: u64,
        len: usize,
    ) -> io::Result<&'a mut VirtualDisk> {
        disk.ok_or_else(|| self.released(op, offset, len))
    }

    /// Refuses requests past the end and any request once this host is fenced.
    fn admit(&self, op: &'static str, offset: u64, len: usize) -> io::Result<()> {
        let in_range = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.len());
        if !in_range {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                VmfsDiskError::OutOfRange {
                    path: self.path.clone(),
                    op,
                    offset,
                    len,
                    capacity: self.len(),
                },
            ));
        }
        self.volume
            .check_lease()
            .map_err(|e| self.io_error(op, offset, len, e))
    }
}

impl BlockBackend for VmfsDiskBackend {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.admit("read", offset, buf.len())?;
        let disk = self.disk.read().unwrap_or_else(PoisonError::into_inner);
        self.held_disk(disk.as_ref(), "read", offset, buf.len())?
            .read_at(buf, offset)
            .map_err(|e| self.io_error("read", offset, buf.len(), e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.admit("write", offset, buf.len())?;
        let mut disk = self.disk.write().unwrap_or_else(PoisonError::into_inner);
        self.held_disk_mut(disk.as_mut(), "write", offset, buf.len())?
            .write_at(buf, offset)
            .map_err(|e| self.io_error("write", offset, buf.len(), e))
    }

    fn flush(&self) -> io::Result<()> {
        self.admit("flush", 0, 0)?;
        let mut disk = self.disk.write().unwrap_or_else(PoisonError::into_inner);
        self.held_disk_mut(disk.as_mut(), "flush", 0, 0)?
            .sync()
            .map_err(|e| self.io_error("flush", 0, 0, e))
    }

    fn len(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }
}

/// The vmfs slots a VM process picks from with `--host-id auto`: above the cluster's host
/// ids (1..16), below 63, the slot the admin commands (`vinfra-host vm create|list`)
/// mount as.
pub const AUTO_SLOTS: Range<u32> = 16..63;

/// A volume mounted by this process as one host, with its heartbeat running.
///
/// The heartbeat thread ticks with the real monotonic clock and stops when
/// this value is dropped (or on [`MountedHost::unmount`]).
#[derive(Debug)]
pub struct MountedHost {
    volume: Volume,
    heartbeat: Option<HeartbeatThread>,
    events: Option<Receiver<VolumeEvent>>,
}

impl MountedHost {
    /// Opens the volume file and mounts it as `host`, then starts its heartbeat.
    ///
    /// `opts` may shorten the lease (tests); the default takes over this host's
    /// slot from a crashed earlier incarnation after its lease.
    pub fn mount(volume: &Path, host: u32, opts: &MountOptions) -> Result<Self> {
        let merr = |source| VmfsDiskError::Mount {
            volume: volume.display().to_string(),
            host,
            source,
        };
        let dev = Arc::new(FileDevice::open(volume, false).map_err(merr)?);
        let vol = Volume::mount(dev, host, opts, Arc::new(MonotonicClock::new())).map_err(merr)?;
        Ok(Self::from_volume(vol))
    }

    /// Mounts the volume in the first slot of `slots` that is free or dead, for a process
    /// that needs a slot of its own but no particular one (a VM child of a host:
    /// `vinfra-vm --host-id auto`, [`AUTO_SLOTS`]).
    ///
    /// Each slot is claimed by mount's compare-and-write with `take_over_slot` off: a live
    /// slot, or one another process claimed first, answers `SlotBusy` and the next is
    /// tried. A slot left by a killed process looks live until a mount has watched it for
    /// a lease, so every busy slot is skipped; only when all are busy is the first one
    /// waited for (mount takes a dead holder's slot over after its lease).
    pub fn mount_any(volume: &Path, slots: Range<u32>, opts: &MountOptions) -> Result<Self> {
        let mut quick = opts.clone();
        quick.take_over_slot = false;
        for host in slots.clone() {
            match Self::mount(volume, host, &quick) {
                Ok(m) => return Ok(m),
                Err(VmfsDiskError::Mount {
                    source: vinfra_vmfs::Error::SlotBusy { .. },
                    ..
                }) => tracing::debug!(host, "vmfs slot busy, trying the next"),
                Err(e) => return Err(e),
            }
        }
        let mut patient = opts.clone();
        patient.take_over_slot = true;
        Self::mount(volume, slots.start, &patient)
    }

    /// This host's slot on the volume.
    pub fn host_id(&self) -> u32 {
        self.volume.host()
    }

    /// Starts the heartbeat of an already mounted volume.
    pub fn from_volume(volume: Volume) -> Self {
        let heartbeat = Some(volume.spawn_heartbeat());
        let events = volume.events();
        MountedHost {
            volume,
            heartbeat,
            events,
        }
    }

    /// The mounted volume.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// Whether this host has fenced itself (its disks then refuse all I/O).
    pub fn fenced(&self) -> bool {
        let event = self.events.as_ref().and_then(|rx| rx.try_recv().ok());
        if let Some(VolumeEvent::Fenced { host, locks }) = &event {
            tracing::error!(host, locks = locks.len(), "vmfs host fenced itself");
        }
        event.is_some() || self.volume.check_lease().is_err()
    }

    /// Stops the heartbeat and unmounts (releasing every lock this host still holds).
    pub fn unmount(mut self) -> Result<(), vinfra_vmfs::Error> {
        drop(self.heartbeat.take());
        self.volume.clone().unmount()
    }
}
