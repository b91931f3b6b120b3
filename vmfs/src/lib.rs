//! vinfra-vmfs: a clustered, lock-based filesystem shared by many hosts through one block
//! device, after VMware VMFS. See the crate README for the on-disk format and the failure
//! model.
#![forbid(unsafe_code)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "the crate targets 64-bit hosts; on-disk values are range-checked before narrowing"
)]

pub mod clock;
pub mod device;
pub mod disk;
pub mod error;
pub mod faulty;
pub mod format;
pub mod fsck;
pub mod lease;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use device::{BlockDevice, Cas, CountingDevice, FileDevice, MemDevice};
pub use error::{Error, Result};
pub use faulty::{Faults, FaultyDevice, IoStats};
pub use format::LockMode;
pub use lease::{Lease, LeaseAction, Liveness, Verdict};
pub mod bmap;
mod file;
mod journal;
mod lock;
mod namespace;
mod op;
mod recover;
pub mod volume;

pub use file::File;
pub use format::{DirEntry, Kind};
pub use namespace::Stat;
pub use recover::RecoveryStats;
pub use volume::{HeartbeatThread, MkfsOptions, MountOptions, Volume, VolumeEvent};
