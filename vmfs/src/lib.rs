//! vinfra-vmfs: a clustered, lock-based filesystem shared by many hosts through one block
//! device, after VMware VMFS.
//!
//! Hosts (processes) mount one volume at the same time and talk only through it:
//! heartbeats prove liveness, on-disk lock records taken by atomic compare-and-write
//! ([`BlockDevice::compare_and_write`], SCSI ATS) give mutual exclusion, and a per-host redo
//! journal lets any survivor repair a dead host's half-done metadata change. A host that
//! cannot renew its heartbeat fences itself (half a lease) before anyone may break its
//! locks (a whole lease). The crate README documents the on-disk format byte by byte, the
//! assumptions about the medium and the failure model.
//!
//! Devices: [`FileDevice`] (an image file or a block device, ATS from an OFD lock),
//! [`nbd::NbdDevice`] (an export of an NBD server such as `nbdkit` or `qemu-nbd`) and
//! [`MemDevice`]. Storage without compare-and-write gets it from Disk Paxos over plain
//! sector reads and writes: [`Volume::mkfs_without_ats`] and [`paxos::open_for_host`]
//! (the [`paxos`] module). Writes that allocate into a file held exclusively are committed at
//! [`File::sync`] or close (deferred allocation, see the README), not one transaction per
//! write.
//!
//! Test support (the fault-injecting `faulty` device, a counting device and a manual
//! clock, as in the example below) comes with the `test-utils` feature; [`MemDevice`] is a
//! real in-memory device and always there.
//!
//! ```
//! use std::sync::Arc;
//! use vinfra_vmfs::{LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};
//!
//! # fn main() -> vinfra_vmfs::Result<()> {
//! let lun = Arc::new(MemDevice::new(32 << 20));
//! Volume::mkfs(lun.as_ref(), &MkfsOptions::default())?;
//! let clock = Arc::new(ManualClock::new(0));
//! let esx1 = Volume::mount(lun.clone(), 1, &MountOptions::default(), clock.clone())?;
//! let esx2 = Volume::mount(lun.clone(), 2, &MountOptions::default(), clock.clone())?;
//!
//! esx1.mkdir("/vm1")?;
//! let disk = esx1.create("/vm1/vm1-flat.vmdk")?; // exclusive lock, thin file
//! disk.write_at(b"boot sector", 0)?;
//!
//! // The other host is refused while host 1 is alive.
//! let err = esx2.open("/vm1/vm1-flat.vmdk", LockMode::Exclusive).unwrap_err();
//! assert!(err.to_string().contains("locked by host 1, alive"));
//!
//! drop(disk); // releases the lock
//! let f = esx2.open("/vm1/vm1-flat.vmdk", LockMode::Exclusive)?;
//! let mut buf = [0u8; 11];
//! f.read_at(&mut buf, 0)?;
//! assert_eq!(&buf, b"boot sector");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "the crate targets 64-bit hosts; on-disk values are range-checked before narrowing"
)]

pub mod clock;
pub mod device;
pub mod disk;
pub mod error;
#[cfg(any(test, feature = "test-utils"))]
pub mod faulty;
mod fd_table;
pub mod format;
pub mod fsck;
pub mod lease;
pub mod liveness;
pub mod locks;
pub mod nbd;
pub mod paxos;
pub mod readonly;
pub mod rebuild;
// The layers, each using only those above it: format, block map, journal, mount (shared
// state, lease, heartbeat, lock table) with the lock manager, operations, files,
// namespace and recovery, the `Volume` facade, virtual disks on top of it.
pub mod bmap;
mod file;
mod gather;
mod journal;
mod mount;
mod namespace;
mod op;
mod recover;
mod run_cache;
mod run_index;
pub mod volume;

#[cfg(any(test, feature = "test-utils"))]
pub use clock::ManualClock;
pub use clock::{Clock, MonotonicClock};
pub use device::{BlockDevice, Cas, CountingDevice, FileDevice, MemDevice};
pub use error::{
    ConfigError, Error, LockError, LockVerdict, ModeError, ReadOnlyReason, Result, SlotState,
};
#[cfg(any(test, feature = "test-utils"))]
pub use faulty::{Faults, FaultyDevice, IoStats};
pub use file::File;
pub use format::LockMode;
pub use format::{DirEntry, Kind};
pub use lease::{Lease, LeaseAction, Verdict};
pub use liveness::Liveness;
pub use locks::{Holder, LockInfo};
pub use namespace::Stat;
pub use readonly::{Listing, ReadOnlyDisk, ReadOnlyFile, ReadOnlyVolume};
pub use recover::RecoveryStats;
pub use volume::{HeartbeatThread, MkfsOptions, MountOptions, Volume, VolumeEvent};
