//! The virtio-blk device: configuration space, request queue, interrupt.
//!
//! Requests are processed synchronously, on the vCPU thread, inside the
//! QueueNotify write. That needs no worker thread, no locking between threads
//! and no eventfd plumbing for notifications; the exit that delivered the
//! notify is already paid for, and for an in-memory or page-cache-backed disk
//! the copy costs less than a thread hand-off would. The price is that the
//! vCPU is busy while the backend works, which is why the work per notify is
//! bounded (see [`MAX_ROUNDS`]).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{debug, trace, warn};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_CONFIG;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestMemoryError};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::{
    Action, MmioTransport, INT_CONFIG, INT_VRING, STATUS_ALL, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
};
use super::queue::{wants_interrupt, QueueSlot};
use super::request::{
    parse, ChainError, Completion, Done, Executor, ParseError, RequestError, Segment, ID_LEN,
};
use super::state::VirtioBlkState;
use super::{VirtioError, SECTOR_SIZE, SEGMENT_SIZE_MAX, SEG_MAX};
use crate::devices::block::BlockBackend;
use crate::devices::MmioDevice;

/// Logical block size advertised in the config space.
const BLK_SIZE: u32 = 512;

/// Rounds of at most queue-size chains one notify may run. A driver cannot
/// have more than queue-size chains outstanding, so one round normally drains
/// the queue; the extra rounds catch chains another vCPU adds meanwhile. What
/// is left after that waits for the next notify, so a guest can never keep a
/// vCPU thread inside the device (where the VMM could not pause it).
pub(crate) const MAX_ROUNDS: usize = 4;

/// How a virtio-blk device presents itself.
///
/// ```
/// use vinfra_vmm_core::devices::virtio::VirtioBlkConfig;
///
/// let config = VirtioBlkConfig::new("boot-disk", true);
/// assert!(config.read_only);
/// let json = serde_json::to_string(&config).unwrap();
/// assert_eq!(json, r#"{"id":"boot-disk","read_only":true}"#);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtioBlkConfig {
    /// Serial the guest reads with GET_ID (at most 20 bytes).
    pub id: String,
    /// Offer `VIRTIO_BLK_F_RO` and refuse writes.
    pub read_only: bool,
}

impl VirtioBlkConfig {
    /// A configuration with the given id and access mode.
    pub fn new(id: impl Into<String>, read_only: bool) -> VirtioBlkConfig {
        VirtioBlkConfig {
            id: id.into(),
            read_only,
        }
    }
}

/// Counters of a virtio-blk device.
///
/// ```
/// use vinfra_vmm_core::devices::virtio::VirtioBlkStats;
///
/// let stats = VirtioBlkStats::default();
/// assert_eq!(stats.requests, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtioBlkStats {
    /// QueueNotify writes for queue 0.
    pub notifies: u64,
    /// Requests answered (any status).
    pub requests: u64,
    /// Read (IN) requests completed successfully.
    pub reads: u64,
    /// Write (OUT) requests completed successfully.
    pub writes: u64,
    /// Flushes completed successfully.
    pub flushes: u64,
    /// GET_ID requests completed successfully.
    pub get_ids: u64,
    /// Bytes read from the disk into the guest.
    pub bytes_read: u64,
    /// Bytes written from the guest to the disk.
    pub bytes_written: u64,
    /// Requests answered with VIRTIO_BLK_S_IOERR.
    pub io_errors: u64,
    /// Requests answered with VIRTIO_BLK_S_UNSUPP.
    pub unsupported: u64,
    /// Times the device entered DEVICE_NEEDS_RESET.
    pub needs_reset: u64,
}

impl VirtioBlkStats {
    /// Counts one answered request.
    pub(crate) fn count(&mut self, completion: &Completion) {
        self.requests += 1;
        match completion {
            Completion::Done(Done::Read { bytes }) => {
                self.reads += 1;
                self.bytes_read += u64::from(*bytes);
            }
            Completion::Done(Done::Write { bytes }) => {
                self.writes += 1;
                self.bytes_written += u64::from(*bytes);
            }
            Completion::Done(Done::Flush) => self.flushes += 1,
            Completion::Done(Done::GetId { .. }) => self.get_ids += 1,
            Completion::Failed(RequestError::Unsupported(kind)) => {
                debug!(kind, "virtio-blk: unsupported request type");
                self.unsupported += 1;
            }
            Completion::Failed(why) => {
                debug!(%why, "virtio-blk: request failed");
                self.io_errors += 1;
            }
        }
    }
}

/// Why the device stopped processing its queue (DEVICE_NEEDS_RESET).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fault {
    /// The used ring's flags could not be written.
    #[error("disable notifications: {0}")]
    DisableNotification(#[source] virtio_queue::Error),
    /// The available ring is unreadable or its index ran away.
    #[error("available ring: {0}")]
    AvailRing(#[source] virtio_queue::Error),
    /// A chain has no status byte the device can write.
    #[error("descriptor chain {head}: {error}")]
    Chain {
        /// The chain's head index.
        head: u16,
        /// What is wrong with it.
        #[source]
        error: ChainError,
    },
    /// The checked status byte could not be written.
    #[error("descriptor chain {head}: write status byte: {source}")]
    WriteStatus {
        /// The chain's head index.
        head: u16,
        /// What vm-memory said.
        #[source]
        source: GuestMemoryError,
    },
    /// The used ring could not be written.
    #[error("used ring: {0}")]
    UsedRing(#[source] virtio_queue::Error),
    /// The used ring's flags could not be written.
    #[error("enable notifications: {0}")]
    EnableNotification(#[source] virtio_queue::Error),
    /// New guest memory no longer holds the rings of the running queue.
    #[error("queue rings outside the new guest memory")]
    RingsOutsideMemory,
    /// The transport refused the driver's setup.
    #[error("{0}")]
    Transport(String),
}

/// A virtio-blk disk on the virtio-mmio transport (version 2).
///
/// Offers `VIRTIO_F_VERSION_1`, `VIRTIO_BLK_F_SIZE_MAX`, `VIRTIO_BLK_F_SEG_MAX`,
/// `VIRTIO_BLK_F_BLK_SIZE`, `VIRTIO_BLK_F_FLUSH`, and `VIRTIO_BLK_F_RO` when
/// read-only; one queue of up to [`QUEUE_SIZE_MAX`](super::QUEUE_SIZE_MAX)
/// entries. `VIRTIO_RING_F_EVENT_IDX` is not offered: requests complete inside
/// the notify, so there is nothing to batch, and without it a driver kicks on
/// every submission, which a bounded notify relies on.
///
/// ```
/// use std::sync::Arc;
/// use vinfra_vmm_core::devices::block::MemBackend;
/// use vinfra_vmm_core::devices::virtio::{VirtioBlk, VirtioBlkConfig};
/// use vm_memory::{bitmap::AtomicBitmap, GuestAddress, GuestMemoryMmap};
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
///
/// let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
/// let irq = EventFd::new(EFD_NONBLOCK).unwrap();
/// // The VMM registers a clone of the eventfd as an irqfd on the device's GSI.
/// let _irqfd = irq.try_clone().unwrap();
/// let blk = VirtioBlk::new(
///     VirtioBlkConfig::new("disk0", false),
///     Arc::new(MemBackend::new(64 * 1024)),
///     mem,
///     irq,
/// )
/// .unwrap();
/// assert_eq!(blk.capacity_sectors(), 128);
///
/// // Snapshot and restore.
/// let state = blk.state();
/// let json = serde_json::to_string(&state).unwrap();
/// let state = serde_json::from_str(&json).unwrap();
/// let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
/// let again = VirtioBlk::from_state(
///     state,
///     Arc::new(MemBackend::new(64 * 1024)),
///     mem,
///     EventFd::new(EFD_NONBLOCK).unwrap(),
/// )
/// .unwrap();
/// assert_eq!(again.state(), blk.state());
/// ```
pub struct VirtioBlk {
    config: VirtioBlkConfig,
    id: [u8; ID_LEN],
    capacity_sectors: u64,
    config_space: Vec<u8>,
    backend: Arc<dyn BlockBackend>,
    mem: GuestMemoryMmap<AtomicBitmap>,
    irq: EventFd,
    transport: MmioTransport,
    stats: VirtioBlkStats,
    buf: Vec<u8>,
    segs: Vec<Segment>,
}

impl fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("config", &self.config)
            .field("capacity_sectors", &self.capacity_sectors)
            .field("transport", &self.transport)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl VirtioBlk {
    /// A device, not yet initialised by a driver, for `backend`.
    ///
    /// The capacity is `backend.len() / 512` sectors (a partial last sector is
    /// not addressable). `irq` is signalled whenever the device raises its
    /// interrupt; the VMM registers it as an irqfd on the device's GSI.
    pub fn new(
        config: VirtioBlkConfig,
        backend: Arc<dyn BlockBackend>,
        mem: GuestMemoryMmap<AtomicBitmap>,
        irq: EventFd,
    ) -> Result<VirtioBlk, VirtioError> {
        let id = id_bytes(&config.id)?;
        let capacity_sectors = backend.len() / SECTOR_SIZE;
        let transport = MmioTransport::new(
            VIRTIO_ID_BLOCK,
            offered_features(config.read_only),
            vec![QueueSlot::new()?],
        );
        Ok(VirtioBlk {
            config_space: config_space(capacity_sectors),
            config,
            id,
            capacity_sectors,
            backend,
            mem,
            irq,
            transport,
            stats: VirtioBlkStats::default(),
            buf: Vec::new(),
            segs: Vec::new(),
        })
    }

    /// A device that continues from `state`, with the same disk contents in
    /// `backend` and the same guest memory contents in `mem`.
    pub fn from_state(
        state: VirtioBlkState,
        backend: Arc<dyn BlockBackend>,
        mem: GuestMemoryMmap<AtomicBitmap>,
        irq: EventFd,
    ) -> Result<VirtioBlk, VirtioError> {
        let mut blk = VirtioBlk::new(state.config.clone(), backend, mem, irq)?;
        if state.capacity_sectors != blk.capacity_sectors {
            return Err(VirtioError::CapacityMismatch {
                saved: state.capacity_sectors,
                backend: blk.capacity_sectors,
            });
        }
        if state.status & !STATUS_ALL != 0 {
            return Err(invalid(format!("unknown status bits {:#x}", state.status)));
        }
        if state.status & STATUS_FEATURES_OK != 0
            && state.driver_features & !blk.transport.device_features != 0
        {
            return Err(invalid(format!(
                "acknowledged features {:#x} not offered ({:#x})",
                state.driver_features, blk.transport.device_features
            )));
        }
        if state.queue.ready && state.status & STATUS_FEATURES_OK == 0 {
            return Err(invalid(
                "queue ready before feature negotiation".to_string(),
            ));
        }
        let t = &mut blk.transport;
        t.queues = vec![QueueSlot::from_state(&state.queue, &blk.mem)?];
        t.device_features_sel = state.device_features_sel;
        t.driver_features_sel = state.driver_features_sel;
        t.driver_features = state.driver_features;
        t.status = state.status;
        t.interrupt_status = state.interrupt_status & (INT_VRING | INT_CONFIG);
        t.config_generation = state.config_generation;
        t.queue_sel = state.queue_sel;
        blk.stats = state.stats;
        Ok(blk)
    }

    /// The state to save; see [`VirtioBlkState`].
    pub fn state(&self) -> VirtioBlkState {
        let t = &self.transport;
        VirtioBlkState {
            config: self.config.clone(),
            capacity_sectors: self.capacity_sectors,
            device_features_sel: t.device_features_sel,
            driver_features_sel: t.driver_features_sel,
            driver_features: t.driver_features,
            status: t.status,
            interrupt_status: t.interrupt_status,
            config_generation: t.config_generation,
            queue_sel: t.queue_sel,
            queue: t.queues.first().map(QueueSlot::state).unwrap_or_default(),
            stats: self.stats,
        }
    }

    /// Replaces the guest memory the device reads and writes (after the VMM
    /// rebuilt its memory map, e.g. on restore). A running queue whose rings
    /// no longer lie in the new memory puts the device in DEVICE_NEEDS_RESET.
    pub fn set_memory(&mut self, mem: GuestMemoryMmap<AtomicBitmap>) {
        self.mem = mem;
        let broken = self
            .transport
            .queues
            .iter()
            .any(|q| q.queue.ready() && !q.queue.is_valid(&self.mem));
        if broken {
            self.enter_needs_reset(&Fault::RingsOutsideMemory);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> VirtioBlkStats {
        self.stats
    }

    /// The configuration the device was created with.
    pub fn config(&self) -> &VirtioBlkConfig {
        &self.config
    }

    /// Disk size in 512-byte sectors, as the guest sees it.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// The device status register (virtio status bits, e.g. 0x40 =
    /// DEVICE_NEEDS_RESET).
    pub fn device_status(&self) -> u32 {
        self.transport.status
    }

    /// The interrupt eventfd the device signals.
    pub fn interrupt(&self) -> &EventFd {
        &self.irq
    }

    /// Runs the requests the driver made available on queue 0.
    fn process_queue(&mut self) {
        // The device needs only the counts; tests look at each completion.
        self.process_queue_with(drop);
    }

    /// [`Self::process_queue`], handing each completion to `observe` once it is
    /// counted and its status written; returns why the device entered
    /// DEVICE_NEEDS_RESET, if it did.
    fn process_queue_with(&mut self, mut observe: impl FnMut(Completion)) -> Option<Fault> {
        self.stats.notifies += 1;
        let running = self.transport.is_running();
        let Some(slot) = self
            .transport
            .queues
            .first_mut()
            .filter(|q| running && q.queue.ready())
        else {
            trace!("virtio-blk: notify while not running, ignored");
            return None;
        };
        let mut used = false;
        let mut fault = None;
        let mem = &self.mem;
        let queue = &mut slot.queue;
        let mut exec = Executor {
            backend: &*self.backend,
            read_only: self.config.read_only,
            capacity_sectors: self.capacity_sectors,
            id: &self.id,
            buf: &mut self.buf,
        };
        'rounds: for _ in 0..MAX_ROUNDS {
            if let Err(e) = queue.disable_notification(mem) {
                fault = Some(Fault::DisableNotification(e));
                break;
            }
            for _ in 0..queue.size() {
                let chain = match queue.iter(mem) {
                    Ok(mut chains) => chains.next(),
                    Err(e) => {
                        fault = Some(Fault::AvailRing(e));
                        break 'rounds;
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let (completion, status) = match parse(chain, mem, &mut self.segs) {
                    Ok(req) => (exec.execute(mem, &req), req.status),
                    Err(ParseError::Bad { status, error }) => {
                        (Completion::Failed(error.into()), status)
                    }
                    Err(ParseError::Chain(error)) => {
                        fault = Some(Fault::Chain { head, error });
                        break 'rounds;
                    }
                };
                self.stats.count(&completion);
                if let Err(source) = mem.write_obj(completion.status(), status) {
                    fault = Some(Fault::WriteStatus { head, source });
                    break 'rounds;
                }
                let len = completion.used_len();
                observe(completion);
                if let Err(e) = queue.add_used(mem, head, len) {
                    fault = Some(Fault::UsedRing(e));
                    break 'rounds;
                }
                used = true;
            }
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    fault = Some(Fault::EnableNotification(e));
                    break;
                }
            }
        }
        if used && wants_interrupt(queue, &self.mem) {
            self.raise(INT_VRING);
        }
        if let Some(why) = &fault {
            self.enter_needs_reset(why);
        }
        fault
    }

    /// Notifies queue 0 as a QueueNotify write does, and returns each
    /// completion and the fault, if any, for tests to match on.
    #[cfg(test)]
    pub(crate) fn notify_observed(&mut self) -> (Vec<Completion>, Option<Fault>) {
        let mut completions = Vec::new();
        let fault = self.process_queue_with(|c| completions.push(c));
        (completions, fault)
    }

    /// Stops the device until the driver resets it (virtio 1.2, 2.1.2).
    fn enter_needs_reset(&mut self, why: &Fault) {
        warn!(
            reason = %why,
            "virtio-blk: bad driver input, device needs reset"
        );
        self.stats.needs_reset += 1;
        self.transport.status |= STATUS_NEEDS_RESET;
        if self.transport.status & STATUS_DRIVER_OK != 0 {
            self.raise(INT_CONFIG);
        }
    }

    fn raise(&mut self, bit: u32) {
        self.transport.interrupt_status |= bit;
        if let Err(e) = self.irq.write(1) {
            warn!(error = %e, "virtio-blk: signal interrupt eventfd");
        }
    }
}

impl MmioDevice for VirtioBlk {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data, &self.config_space);
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            // Nothing in the config space we offer is writable.
            trace!(offset, "virtio-blk: config space write ignored");
            return;
        }
        match self.transport.write(offset, data, &self.mem) {
            Action::None | Action::Reset => {}
            Action::Notify(0) => self.process_queue(),
            Action::Notify(queue) => trace!(queue, "virtio-blk: notify for a missing queue"),
            Action::Fault(why) => self.enter_needs_reset(&Fault::Transport(why)),
        }
    }
}

fn invalid(reason: String) -> VirtioError {
    VirtioError::InvalidState { reason }
}

fn id_bytes(id: &str) -> Result<[u8; ID_LEN], VirtioError> {
    let bytes = id.as_bytes();
    if bytes.len() > ID_LEN {
        return Err(VirtioError::IdTooLong { len: bytes.len() });
    }
    let mut out = [0u8; ID_LEN];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

fn offered_features(read_only: bool) -> u64 {
    let mut features = (1u64 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_BLK_F_SIZE_MAX)
        | (1 << VIRTIO_BLK_F_SEG_MAX)
        | (1 << VIRTIO_BLK_F_BLK_SIZE)
        | (1 << VIRTIO_BLK_F_FLUSH);
    if read_only {
        features |= 1 << VIRTIO_BLK_F_RO;
    }
    features
}

/// `struct virtio_blk_config` up to `num_queues`, little-endian.
fn config_space(capacity_sectors: u64) -> Vec<u8> {
    // Offsets 0x10 (geometry), 0x18 (topology) and 0x20 (writeback) stay
    // zero: those features are not offered.
    let mut c = vec![0u8; 0x24];
    c[0x00..0x08].copy_from_slice(&capacity_sectors.to_le_bytes());
    c[0x08..0x0c].copy_from_slice(&SEGMENT_SIZE_MAX.to_le_bytes()); // size_max
    c[0x0c..0x10].copy_from_slice(&SEG_MAX.to_le_bytes()); // seg_max
    c[0x14..0x18].copy_from_slice(&BLK_SIZE.to_le_bytes()); // blk_size
    c[0x22..0x24].copy_from_slice(&1u16.to_le_bytes()); // num_queues
    c
}
