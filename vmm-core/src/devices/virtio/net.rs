//! The virtio-net device: configuration space (MAC, link status), a receive
//! and a transmit queue, the VI3 security policy, and the receive thread.
//!
//! Transmit runs synchronously on the vCPU thread inside the QueueNotify write
//! (as virtio-blk does): the exit is paid for already and a TAP write is a
//! short syscall. Receive cannot: frames arrive when the guest is not looking,
//! so a [`NetWorker`] thread polls the backend and fills the receive queue
//! under the device's lock. Both directions do bounded work per wake-up.
//!
//! The worker writes guest memory only while the device is *enabled*: the VMM
//! disables it while the vCPUs are paused (so a snapshot or a migration sees
//! memory and queue state that agree) and enables it on start and resume.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, trace, warn};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_CONFIG;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::frame::{
    gather_tx, rx_header, scatter_rx, RxError, TxError, FRAME_MAX_BYTES, NET_HDR_LEN,
};
use super::mmio::{
    Action, MmioTransport, INT_CONFIG, INT_VRING, STATUS_ALL, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
};
use super::queue::{wants_interrupt, GuestMem, QueueSlot};
use super::state::VirtioQueueState;
use super::VirtioError;
use crate::devices::net::{MacAddr, NetBackend};
use crate::devices::MmioDevice;

/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Frames one wake-up of the receive thread, or one transmit notify, may move
/// at most. Beyond that the rest waits for the next round, so a flood cannot
/// keep a vCPU (or the device lock) busy, and other VMs keep their share.
pub const FRAMES_PER_ROUND: usize = 256;

/// The VI3 security policy of a port: each `false` (the default) is "reject".
///
/// ```
/// use vinfra_vmm_core::devices::virtio::NetPolicy;
///
/// let p: NetPolicy = serde_json::from_str("{}").unwrap();
/// assert_eq!(p, NetPolicy::default());
/// assert!(!p.forged_transmits && !p.mac_changes && !p.promiscuous);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct NetPolicy {
    /// Accept frames whose source MAC is not the NIC's (else dropped, counted).
    pub forged_transmits: bool,
    /// Let the guest change the NIC's MAC (a write to the config space);
    /// else the write is ignored and counted.
    pub mac_changes: bool,
    /// Deliver unicast frames addressed to other MACs (a bridge floods those
    /// to every port); else dropped, counted.
    pub promiscuous: bool,
}

/// How a virtio-net device presents itself.
///
/// ```
/// use vinfra_vmm_core::devices::net::MacAddr;
/// use vinfra_vmm_core::devices::virtio::VirtioNetConfig;
///
/// let c = VirtioNetConfig::new("net0", MacAddr::local(7));
/// let json = serde_json::to_string(&c).unwrap();
/// assert_eq!(json, r#"{"id":"net0","mac":"52:54:00:00:00:07","policy":{"forged_transmits":false,"mac_changes":false,"promiscuous":false}}"#);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtioNetConfig {
    /// Instance name (unique per VM; names the device state in snapshots).
    pub id: String,
    /// The NIC's MAC address.
    pub mac: MacAddr,
    /// Security policy.
    #[serde(default)]
    pub policy: NetPolicy,
}

impl VirtioNetConfig {
    /// A NIC with the default (all reject) policy.
    pub fn new(id: impl Into<String>, mac: MacAddr) -> VirtioNetConfig {
        VirtioNetConfig {
            id: id.into(),
            mac,
            policy: NetPolicy::default(),
        }
    }
}

/// Counters of a virtio-net device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtioNetStats {
    /// Frames sent to the backend.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames received and given to the guest.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Transmit chains dropped as malformed (writable, short, outside memory).
    pub tx_malformed: u64,
    /// Transmit chains longer than a frame may be.
    pub tx_oversized: u64,
    /// Frames dropped because their source MAC was not the NIC's.
    pub tx_forged: u64,
    /// Frames the backend refused (full queue, link down).
    pub tx_backend_errors: u64,
    /// Received frames dropped because they were for another MAC.
    pub rx_filtered: u64,
    /// Received frames dropped because the receive chain was unusable.
    pub rx_bad_chain: u64,
    /// Received frames dropped as too short or too long.
    pub rx_bad_frame: u64,
    /// Backend receive errors.
    pub rx_backend_errors: u64,
    /// Guest attempts to change the MAC that the policy refused.
    pub mac_changes_rejected: u64,
    /// Announcements (RARP) sent after a restore.
    pub announces: u64,
    /// Times the device entered DEVICE_NEEDS_RESET.
    pub needs_reset: u64,
}

/// Everything a virtio-net device needs to continue after a restore. The
/// backend is not part of it: the VMM attaches the same TAP (or port group)
/// again by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtioNetState {
    /// The configuration the device was created with.
    pub config: VirtioNetConfig,
    /// The MAC in use (differs from the configured one only where the policy
    /// allows MAC changes).
    pub mac: MacAddr,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// Features the driver wrote.
    pub driver_features: u64,
    /// Device status register.
    pub status: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// Receive queue, then transmit queue.
    pub queues: [VirtioQueueState; 2],
    /// Counters.
    pub stats: VirtioNetStats,
}

/// Why the device stopped (DEVICE_NEEDS_RESET).
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error("{queue} available ring: {source}")]
    AvailRing {
        queue: &'static str,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("{queue} used ring: {source}")]
    UsedRing {
        queue: &'static str,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("queue rings outside the new guest memory")]
    RingsOutsideMemory,
    #[error("{0}")]
    Transport(String),
}

/// A virtio-net NIC on the virtio-mmio transport (version 2).
///
/// Offers `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC` and `VIRTIO_NET_F_STATUS`
/// (link always up); no checksum or segmentation offloads, no mergeable
/// receive buffers, no control queue. Queue 0 receives, queue 1 transmits.
///
/// ```
/// use std::sync::Arc;
/// use vinfra_vmm_core::devices::net::{MacAddr, MemNetBackend};
/// use vinfra_vmm_core::devices::virtio::{VirtioNet, VirtioNetConfig};
/// use vinfra_vmm_core::devices::MmioDevice;
/// use vm_memory::{bitmap::AtomicBitmap, GuestAddress, GuestMemoryMmap};
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
///
/// let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
/// let mac = MacAddr::local(1);
/// let mut net = VirtioNet::new(
///     VirtioNetConfig::new("net0", mac),
///     Arc::new(MemNetBackend::new()),
///     mem,
///     EventFd::new(EFD_NONBLOCK).unwrap(),
/// )
/// .unwrap();
/// let mut w = [0u8; 4];
/// net.mmio_read(0x8, &mut w); // DeviceID
/// assert_eq!(u32::from_le_bytes(w), 1);
/// let mut m = [0u8; 6];
/// net.mmio_read(0x100, &mut m); // config space: the MAC
/// assert_eq!(m, mac.0);
///
/// let state = net.state();
/// let bytes = postcard::to_allocvec(&state).unwrap();
/// let again: vinfra_vmm_core::devices::virtio::VirtioNetState = postcard::from_bytes(&bytes).unwrap();
/// assert_eq!(again, state);
/// ```
pub struct VirtioNet {
    config: VirtioNetConfig,
    mac: MacAddr,
    config_space: Vec<u8>,
    backend: Arc<dyn NetBackend>,
    mem: GuestMemoryMmap<AtomicBitmap>,
    irq: EventFd,
    /// Woken when the driver posts receive buffers or the device is enabled.
    rx_kick: Arc<EventFd>,
    transport: MmioTransport,
    stats: VirtioNetStats,
    /// Whether the receive side may write guest memory (see the module doc).
    enabled: bool,
    /// Send an announcement on the next enable (set by `from_state`).
    announce_pending: bool,
    /// The receive thread stopped for want of buffers (or because the device was
    /// not running) and waits for a kick. Read and written under the device's lock,
    /// so a kick cannot be lost; when it is false the thread is polling the backend
    /// and a kick would only wake it for nothing.
    rx_starved: bool,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
}

impl fmt::Debug for VirtioNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioNet")
            .field("config", &self.config)
            .field("mac", &self.mac)
            .field("transport", &self.transport)
            .field("stats", &self.stats)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn offered_features() -> u64 {
    (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS)
}

/// `struct virtio_net_config` up to `status`: mac[6], status (le16).
fn config_space(mac: MacAddr) -> Vec<u8> {
    let mut c = vec![0u8; 8];
    c[..6].copy_from_slice(&mac.0);
    let link_up = u16::try_from(VIRTIO_NET_S_LINK_UP).unwrap_or(1);
    c[6..8].copy_from_slice(&link_up.to_le_bytes());
    c
}

impl VirtioNet {
    /// A NIC, not yet initialised by a driver, on `backend`. `irq` is
    /// signalled whenever the device raises its interrupt.
    pub fn new(
        config: VirtioNetConfig,
        backend: Arc<dyn NetBackend>,
        mem: GuestMemoryMmap<AtomicBitmap>,
        irq: EventFd,
    ) -> Result<VirtioNet, VirtioError> {
        let rx_kick = EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        Ok(VirtioNet {
            config_space: config_space(config.mac),
            mac: config.mac,
            config,
            backend,
            mem,
            irq,
            rx_kick: Arc::new(rx_kick),
            transport: MmioTransport::new(
                VIRTIO_ID_NET,
                offered_features(),
                vec![QueueSlot::new()?, QueueSlot::new()?],
            ),
            stats: VirtioNetStats::default(),
            enabled: false,
            announce_pending: false,
            rx_starved: true,
            tx_buf: Vec::with_capacity(NET_HDR_LEN + FRAME_MAX_BYTES),
            rx_buf: vec![0u8; NET_HDR_LEN + FRAME_MAX_BYTES + 1],
        })
    }

    /// A NIC that continues from `state`, on a backend attached to the same
    /// network, with the same guest memory contents in `mem`. It announces its
    /// MAC (one RARP frame, as QEMU's self-announce does) when first enabled,
    /// so the switches learn its new port at once.
    pub fn from_state(
        state: VirtioNetState,
        backend: Arc<dyn NetBackend>,
        mem: GuestMemoryMmap<AtomicBitmap>,
        irq: EventFd,
    ) -> Result<VirtioNet, VirtioError> {
        let mut net = VirtioNet::new(state.config.clone(), backend, mem, irq)?;
        if state.status & !STATUS_ALL != 0 {
            return Err(invalid(format!("unknown status bits {:#x}", state.status)));
        }
        if state.status & STATUS_FEATURES_OK != 0
            && state.driver_features & !net.transport.device_features != 0
        {
            return Err(invalid(format!(
                "acknowledged features {:#x} not offered ({:#x})",
                state.driver_features, net.transport.device_features
            )));
        }
        if state.mac != state.config.mac && !state.config.policy.mac_changes {
            return Err(invalid(format!(
                "MAC {} differs from the configured {} but the policy rejects MAC changes",
                state.mac, state.config.mac
            )));
        }
        if state.queues.iter().any(|q| q.ready) && state.status & STATUS_FEATURES_OK == 0 {
            return Err(invalid(
                "queue ready before feature negotiation".to_string(),
            ));
        }
        let t = &mut net.transport;
        t.queues = vec![
            QueueSlot::from_state(&state.queues[RX_QUEUE], &net.mem)?,
            QueueSlot::from_state(&state.queues[TX_QUEUE], &net.mem)?,
        ];
        t.device_features_sel = state.device_features_sel;
        t.driver_features_sel = state.driver_features_sel;
        t.driver_features = state.driver_features;
        t.status = state.status;
        t.interrupt_status = state.interrupt_status & (INT_VRING | INT_CONFIG);
        t.config_generation = state.config_generation;
        t.queue_sel = state.queue_sel;
        net.mac = state.mac;
        net.config_space = config_space(state.mac);
        net.stats = state.stats;
        net.announce_pending = true;
        Ok(net)
    }

    /// The state to save; see [`VirtioNetState`].
    pub fn state(&self) -> VirtioNetState {
        let t = &self.transport;
        let q = |i: usize| t.queues.get(i).map(QueueSlot::state).unwrap_or_default();
        VirtioNetState {
            config: self.config.clone(),
            mac: self.mac,
            device_features_sel: t.device_features_sel,
            driver_features_sel: t.driver_features_sel,
            driver_features: t.driver_features,
            status: t.status,
            interrupt_status: t.interrupt_status,
            config_generation: t.config_generation,
            queue_sel: t.queue_sel,
            queues: [q(RX_QUEUE), q(TX_QUEUE)],
            stats: self.stats,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> VirtioNetStats {
        self.stats
    }

    /// The configuration the device was created with.
    pub fn config(&self) -> &VirtioNetConfig {
        &self.config
    }

    /// The MAC in use.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The device status register.
    pub fn device_status(&self) -> u32 {
        self.transport.status
    }

    /// Replaces the guest memory (see `VirtioBlk::set_memory`).
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

    /// Lets the receive side run (VM started or resumed) or stops it (VM
    /// paused). Enabling a restored device sends its announcement.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if on {
            if self.announce_pending {
                self.announce_pending = false;
                self.announce();
            }
            self.kick_rx();
        }
    }

    /// Wakes the receive thread if it waits for buffers or for the device to run.
    fn kick_rx(&mut self) {
        if self.rx_starved {
            self.rx_starved = false;
            let _ = self.rx_kick.write(1);
        }
    }

    /// Sends a RARP request from the NIC's MAC (what QEMU's self-announce
    /// sends): every bridge on the way learns which port the MAC is behind,
    /// without the VMM knowing the guest's IP address.
    pub fn announce(&mut self) {
        let frame = rarp_announce(self.mac);
        match self.backend.send(&frame) {
            Ok(()) => {
                self.stats.announces += 1;
                info!(mac = %self.mac, "virtio-net: announced");
            }
            Err(e) => {
                self.stats.tx_backend_errors += 1;
                warn!(mac = %self.mac, error = %e, "virtio-net: announce failed");
            }
        }
    }

    /// Runs the transmit queue (a QueueNotify of queue 1).
    fn process_tx(&mut self) {
        if !self.transport.is_running() {
            trace!("virtio-net: transmit notify while not running, ignored");
            return;
        }
        let mem = &self.mem;
        let Some(slot) = self.transport.queues.get_mut(TX_QUEUE) else {
            return;
        };
        if !slot.queue.ready() {
            return;
        }
        let mut used = false;
        let mut fault = None;
        for _ in 0..FRAMES_PER_ROUND {
            let chain = match slot.queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(source) => {
                    fault = Some(Fault::AvailRing {
                        queue: "transmit",
                        source,
                    });
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            match gather_tx(chain, mem, &mut self.tx_buf) {
                Ok(frame) => {
                    let src =
                        MacAddr([frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]);
                    if src != self.mac && !self.config.policy.forged_transmits {
                        self.stats.tx_forged += 1;
                        debug!(%src, mac = %self.mac, "virtio-net: forged transmit dropped");
                    } else {
                        match self.backend.send(frame) {
                            Ok(()) => {
                                self.stats.tx_frames += 1;
                                self.stats.tx_bytes += frame.len() as u64;
                            }
                            Err(e) => {
                                self.stats.tx_backend_errors += 1;
                                trace!(error = %e, "virtio-net: backend refused a frame");
                            }
                        }
                    }
                }
                Err(TxError::Oversized { .. }) => self.stats.tx_oversized += 1,
                Err(e) => {
                    self.stats.tx_malformed += 1;
                    debug!(error = %e, "virtio-net: transmit chain dropped");
                }
            }
            if let Err(source) = slot.queue.add_used(mem, head, 0) {
                fault = Some(Fault::UsedRing {
                    queue: "transmit",
                    source,
                });
                break;
            }
            used = true;
        }
        if used && Self::wants_interrupt(&mut self.transport, TX_QUEUE, mem) {
            self.raise(INT_VRING);
        }
        if let Some(f) = fault {
            self.enter_needs_reset(&f);
        }
    }

    /// Whether the driver wants an interrupt for new used entries on `queue` (it may
    /// suppress them with VIRTQ_AVAIL_F_NO_INTERRUPT, as polling drivers do: each
    /// interrupt is an eventfd write and an injection for nothing).
    fn wants_interrupt(transport: &mut MmioTransport, queue: usize, mem: &GuestMem) -> bool {
        transport
            .queues
            .get_mut(queue)
            .is_none_or(|q| wants_interrupt(&mut q.queue, mem))
    }

    /// Whether the receive thread should read the backend: the device runs, is
    /// enabled, and the driver has posted a buffer.
    fn rx_ready(&self) -> bool {
        if !self.enabled || !self.transport.is_running() {
            return false;
        }
        let Some(slot) = self.transport.queues.get(RX_QUEUE) else {
            return false;
        };
        if !slot.queue.ready() {
            return false;
        }
        match slot
            .queue
            .avail_idx(&self.mem, std::sync::atomic::Ordering::Acquire)
        {
            Ok(idx) => idx.0 != slot.queue.next_avail(),
            Err(_) => true, // let process_rx find the fault and report it
        }
    }

    /// Moves up to [`FRAMES_PER_ROUND`] frames from the backend into receive
    /// buffers. Returns whether it stopped for want of buffers (the thread
    /// then waits for the driver's notify instead of polling the backend).
    pub(crate) fn process_rx(&mut self) -> bool {
        let mut used = false;
        let mut starved = false;
        let mut fault = None;
        for _ in 0..FRAMES_PER_ROUND {
            if !self.rx_ready() {
                starved = true;
                break;
            }
            let len = match self.backend.recv(&mut self.rx_buf[NET_HDR_LEN..]) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    self.stats.rx_backend_errors += 1;
                    debug!(error = %e, "virtio-net: backend receive error");
                    break;
                }
            };
            if !(14..=FRAME_MAX_BYTES).contains(&len) {
                self.stats.rx_bad_frame += 1;
                continue;
            }
            let dst = &self.rx_buf[NET_HDR_LEN..NET_HDR_LEN + 6];
            let for_us = dst == self.mac.0 || dst[0] & 1 != 0;
            if !for_us && !self.config.policy.promiscuous {
                self.stats.rx_filtered += 1;
                continue;
            }
            self.rx_buf[..NET_HDR_LEN].copy_from_slice(&rx_header());
            let mem = &self.mem;
            let Some(slot) = self.transport.queues.get_mut(RX_QUEUE) else {
                break;
            };
            let chain = match slot.queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(source) => {
                    fault = Some(Fault::AvailRing {
                        queue: "receive",
                        source,
                    });
                    break;
                }
            };
            let Some(chain) = chain else {
                // rx_ready saw a buffer; another reader cannot exist (we hold
                // the lock), so this is a ring the driver rewrote: drop.
                self.stats.rx_bad_chain += 1;
                break;
            };
            let head = chain.head_index();
            let written = match scatter_rx(chain, mem, &self.rx_buf[..NET_HDR_LEN + len]) {
                Ok(n) => {
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += len as u64;
                    n
                }
                Err(e) => {
                    self.stats.rx_bad_chain += 1;
                    if !matches!(e, RxError::TooSmall { .. }) {
                        debug!(error = %e, "virtio-net: receive chain refused");
                    }
                    0
                }
            };
            if let Err(source) = slot.queue.add_used(mem, head, written) {
                fault = Some(Fault::UsedRing {
                    queue: "receive",
                    source,
                });
                break;
            }
            used = true;
        }
        if used && Self::wants_interrupt(&mut self.transport, RX_QUEUE, &self.mem) {
            self.raise(INT_VRING);
        }
        if let Some(f) = fault {
            self.enter_needs_reset(&f);
            starved = true;
        }
        self.rx_starved = starved;
        starved
    }

    fn enter_needs_reset(&mut self, why: &Fault) {
        warn!(reason = %why, id = %self.config.id, "virtio-net: bad driver input, device needs reset");
        self.stats.needs_reset += 1;
        self.transport.status |= STATUS_NEEDS_RESET;
        if self.transport.status & STATUS_DRIVER_OK != 0 {
            self.raise(INT_CONFIG);
        }
    }

    fn raise(&mut self, bit: u32) {
        self.transport.interrupt_status |= bit;
        if let Err(e) = self.irq.write(1) {
            warn!(error = %e, "virtio-net: signal interrupt eventfd");
        }
    }

    /// A guest write into the config space: only the MAC is writable, and
    /// only where the policy allows MAC changes.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        let end = start.saturating_add(data.len());
        if end > 6 {
            trace!(offset, "virtio-net: config write outside the MAC ignored");
            return;
        }
        if !self.config.policy.mac_changes {
            self.stats.mac_changes_rejected += 1;
            debug!("virtio-net: MAC change refused by policy");
            return;
        }
        self.mac.0[start..end].copy_from_slice(data);
        self.config_space[start..end].copy_from_slice(data);
        info!(mac = %self.mac, "virtio-net: guest changed the MAC");
    }
}

impl MmioDevice for VirtioNet {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data, &self.config_space);
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        match self.transport.write(offset, data, &self.mem) {
            Action::None => {}
            Action::Reset => {
                // Keep the MAC the guest set only while the policy allows it;
                // a reset otherwise restores the configured one.
                if !self.config.policy.mac_changes {
                    self.mac = self.config.mac;
                    self.config_space = config_space(self.mac);
                }
            }
            Action::Notify(0) => self.kick_rx(),
            Action::Notify(1) => self.process_tx(),
            Action::Notify(queue) => trace!(queue, "virtio-net: notify for a missing queue"),
            Action::Fault(why) => self.enter_needs_reset(&Fault::Transport(why)),
        }
        // The driver finished setup: it may have posted buffers before DRIVER_OK.
        if self.transport.is_running() {
            self.kick_rx();
        }
    }
}

fn invalid(reason: String) -> VirtioError {
    VirtioError::InvalidState { reason }
}

/// The frame QEMU's self-announce sends: a RARP request ("who is this MAC")
/// from `mac` to broadcast, padded to the 60-byte minimum.
pub fn rarp_announce(mac: MacAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&MacAddr::BROADCAST.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&0x8035u16.to_be_bytes()); // RARP
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&3u16.to_be_bytes()); // reverse request
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0; 4]);
    f.resize(60, 0);
    f
}

/// The receive thread of one NIC. Dropping it stops the thread and joins it.
pub struct NetWorker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for NetWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetWorker").finish_non_exhaustive()
    }
}

/// Longest a receive thread sleeps without looking at its device (a bound,
/// not a period: it wakes at once on a frame, a notify or a stop).
const POLL_TIMEOUT_MS: i32 = 500;

impl NetWorker {
    /// Starts the receive thread of `dev` (named `net-<id>`).
    pub fn spawn(dev: Arc<Mutex<VirtioNet>>) -> std::io::Result<NetWorker> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let stop_fd = stop.try_clone()?;
        let (name, kick, backend) = {
            let d = dev.lock().unwrap_or_else(|e| e.into_inner());
            (
                format!("net-{}", d.config.id),
                d.rx_kick.clone(),
                d.backend.clone(),
            )
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || rx_loop(&dev, &*backend, &kick, &stop_fd))?;
        Ok(NetWorker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for NetWorker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("a virtio-net receive thread panicked");
            }
        }
    }
}

fn rx_loop(dev: &Mutex<VirtioNet>, backend: &dyn NetBackend, kick: &EventFd, stop: &EventFd) {
    use std::os::fd::AsRawFd;
    let mut starved = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: kick.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: backend.rx_fd(),
                events: if starved { 0 } else { libc::POLLIN },
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of 3 pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, POLL_TIMEOUT_MS) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                warn!(error = %e, "virtio-net: poll failed; receive thread ends");
                return;
            }
            continue;
        }
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            let _ = kick.read();
        }
        let mut d = dev.lock().unwrap_or_else(|e| e.into_inner());
        starved = d.process_rx();
    }
}
