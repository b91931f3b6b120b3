//! The serialisable state of a virtio-blk device, for snapshot and restore.
//!
//! "State in, state out" (as vm-superio does it): [`VirtioBlk::state`] returns
//! a plain value, [`VirtioBlk::from_state`] validates one and builds a live
//! device. The disk contents and guest memory are not part of it: they come
//! back as the backend and memory given to `from_state`. The VM's state blob
//! around it carries the version and checksum.
//!
//! [`VirtioBlk::state`]: super::VirtioBlk::state
//! [`VirtioBlk::from_state`]: super::VirtioBlk::from_state

use serde::{Deserialize, Serialize};

use super::{VirtioBlkConfig, VirtioBlkStats};

/// Everything a virtio-blk device needs to continue after a restore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtioBlkState {
    /// The device's configuration (id, read-only).
    pub config: VirtioBlkConfig,
    /// Disk size in sectors when saved; restore refuses a backend of another size.
    pub capacity_sectors: u64,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// Features the driver wrote (acknowledged ones once FEATURES_OK is set).
    pub driver_features: u64,
    /// Device status register (virtio status bits).
    pub status: u32,
    /// InterruptStatus (bit 0: used ring, bit 1: configuration change).
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// Queue 0.
    pub queue: VirtioQueueState,
    /// Counters, so that they continue across a restore.
    pub stats: VirtioBlkStats,
}

/// The state of one split virtqueue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtioQueueState {
    /// QueueNum as the driver set it.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Guest-physical address of the descriptor table.
    pub desc_table: u64,
    /// Guest-physical address of the driver (available) ring.
    pub avail_ring: u64,
    /// Guest-physical address of the device (used) ring.
    pub used_ring: u64,
    /// Next available-ring index the device will read.
    pub next_avail: u16,
    /// Next used-ring index the device will write.
    pub next_used: u16,
    /// Whether VIRTIO_RING_F_EVENT_IDX is in use on this queue.
    pub event_idx: bool,
}
