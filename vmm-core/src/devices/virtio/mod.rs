//! virtio devices over the virtio-mmio transport (version 2, "modern").
//!
//! Two devices: [`VirtioBlk`], a virtio-blk disk with one split virtqueue,
//! backed by any [`BlockBackend`](crate::devices::block::BlockBackend), and
//! [`VirtioNet`], a NIC with a receive and a transmit queue, backed by any
//! [`NetBackend`](crate::devices::net::NetBackend) (a host TAP in practice).
//! Each implements [`MmioDevice`](crate::devices::MmioDevice): the VMM puts it on
//! the MMIO bus in a window of [`MMIO_WINDOW_SIZE`] bytes and registers its
//! interrupt [`EventFd`](vmm_sys_util::eventfd::EventFd) as a KVM irqfd.
//!
//! Code map:
//! - `mmio` — the transport registers (features, status, queue setup, interrupt).
//! - `queue` — validating the driver's queue setup; queue state for snapshots;
//!   whether the driver wants an interrupt (`VIRTQ_AVAIL_F_NO_INTERRUPT`).
//! - `request` — parsing one descriptor chain into a block request and running it.
//! - `blk` — the device: config space, notify handling, stats.
//! - `frame` — gathering a transmit chain, scattering a received frame.
//! - `net` — the NIC: config space, security policy, receive thread, state.
//! - `state` — [`VirtioBlkState`], the serialisable device state.
//! - `fuzz` — the fuzz harness and a bench driver, shared by the cargo-fuzz
//!   target, a proptest and the benches (feature `test-utils`).
//!
//! Guest input is untrusted: descriptors, ring indices and register values
//! are bounds-checked, every guest-memory access goes through vm-memory (which
//! refuses addresses outside guest RAM and records device writes in the
//! dirty bitmap), and the work done per notify is bounded. A request that can
//! be answered is answered with `VIRTIO_BLK_S_IOERR`; a chain without a usable
//! status byte, or a broken ring, puts the device in `DEVICE_NEEDS_RESET`.
//!
//! Wiring a disk into a VM (device *i*, per the test-guest ABI):
//! 1. create an `EventFd` (`EFD_NONBLOCK`) and register a clone of it with
//!    `VmFd::register_irqfd(&evt, 5 + i)` — the device writes to it whenever
//!    it sets a bit in InterruptStatus;
//! 2. `VirtioBlk::new(config, backend, guest_memory.clone(), evt)`; the guest
//!    memory must be the same `GuestMemoryMmap<AtomicBitmap>` the VM maps,
//!    so the device's writes land in the dirty bitmap the VMM merges with
//!    KVM's dirty log;
//! 3. put it on the MMIO bus at `0xd000_0000 + i * 0x1000`, length
//!    [`MMIO_WINDOW_SIZE`], behind a lock; the bus passes offsets inside the
//!    window;
//! 4. tell the guest: `virtio_mmio.device=4K@0xd0000000:5` on the kernel
//!    command line (one per device; ACPI for kernels built without
//!    `VIRTIO_MMIO_CMDLINE_DEVICES`).
//!
//! Snapshot: pause the vCPUs (so no MMIO access is in flight), save
//! [`VirtioBlk::state`], and on restore call [`VirtioBlk::from_state`] with the
//! restored memory, the same disk, and a fresh eventfd registered as above.
//!
//! ```
//! use std::sync::Arc;
//! use vinfra_vmm_core::devices::block::MemBackend;
//! use vinfra_vmm_core::devices::virtio::{VirtioBlk, VirtioBlkConfig};
//! use vinfra_vmm_core::devices::MmioDevice;
//! use vm_memory::{bitmap::AtomicBitmap, GuestAddress, GuestMemoryMmap};
//! use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
//!
//! let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
//! let disk = Arc::new(MemBackend::new(1 << 20));
//! let irq = EventFd::new(EFD_NONBLOCK).unwrap();
//! let mut blk = VirtioBlk::new(VirtioBlkConfig::new("disk0", false), disk, mem, irq).unwrap();
//!
//! let mut word = [0u8; 4];
//! blk.mmio_read(0x0, &mut word); // MagicValue
//! assert_eq!(u32::from_le_bytes(word), 0x7472_6976);
//! blk.mmio_read(0x100, &mut word); // capacity, low half, in 512-byte sectors
//! assert_eq!(u32::from_le_bytes(word), 2048);
//! ```

mod blk;
mod frame;
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzz;
mod mmio;
mod net;
#[cfg(any(test, feature = "test-utils"))]
pub mod net_fuzz;
mod queue;
mod request;
mod state;
#[cfg(test)]
mod tests;

pub use blk::{VirtioBlk, VirtioBlkConfig, VirtioBlkStats};
pub use frame::{RxError, TxError, FRAME_MAX_BYTES, FRAME_MIN_BYTES, NET_HDR_LEN};
pub use net::{
    rarp_announce, NetPolicy, NetWorker, VirtioNet, VirtioNetConfig, VirtioNetState,
    VirtioNetStats, FRAMES_PER_ROUND, RX_QUEUE, TX_QUEUE,
};
pub use state::{VirtioBlkState, VirtioQueueState};

/// Size of a virtio-mmio device's window on the MMIO bus.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Largest queue the device offers (QueueNumMax).
pub const QUEUE_SIZE_MAX: u16 = 256;
/// Bytes per virtio-blk sector (capacity and request offsets use this unit).
pub const SECTOR_SIZE: u64 = 512;
/// Most data segments per request the device advertises (config `seg_max`).
pub const SEG_MAX: u32 = 32;
/// Largest data segment the device advertises (config `size_max`).
pub const SEGMENT_SIZE_MAX: u32 = 64 * 1024;
/// Largest data payload of one request; larger ones are answered with IOERR.
///
/// A driver that honours `seg_max` and `size_max` never exceeds it; the cap
/// bounds the buffer a hostile guest can make the VMM allocate.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SEGMENT_SIZE_MAX as u64;

/// Errors of the virtio devices.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VirtioError {
    /// The disk id does not fit the 20 bytes GET_ID returns.
    #[error("virtio-blk id is {len} bytes, at most 20 allowed")]
    IdTooLong {
        /// Length of the id given.
        len: usize,
    },
    /// A saved state does not describe a device this build can restore.
    #[error("invalid virtio device state: {reason}")]
    InvalidState {
        /// What is wrong with it.
        reason: String,
    },
    /// The device's own eventfd could not be made.
    #[error("create the device's eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// A saved state names a disk size other than the backend's.
    #[error("virtio-blk state has {saved} sectors but the backend has {backend}")]
    CapacityMismatch {
        /// Capacity in the state, in sectors.
        saved: u64,
        /// Capacity of the backend given to `from_state`, in sectors.
        backend: u64,
    },
    /// The saved queue setup is not valid for the given guest memory.
    #[error("restore virtio queue: {source}")]
    Queue {
        /// What virtio-queue said.
        #[source]
        source: virtio_queue::Error,
    },
}
