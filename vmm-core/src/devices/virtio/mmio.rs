//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): the
//! register file every virtio-mmio device shares.
//!
//! The transport knows features, status, the queue setup and the interrupt
//! status; it knows nothing about block devices. A register write that needs
//! the device (a queue notification, a refused queue setup) comes back as an
//! [`Action`] for the device to carry out.

use tracing::{debug, info, warn};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS,
    VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_USED_HIGH, VIRTIO_MMIO_QUEUE_USED_LOW,
    VIRTIO_MMIO_SHM_BASE_HIGH, VIRTIO_MMIO_SHM_BASE_LOW, VIRTIO_MMIO_SHM_LEN_HIGH,
    VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;

use super::queue::{GuestMem, QueueSlot};
use super::QUEUE_SIZE_MAX;

/// "virt" in little-endian: the MagicValue register.
pub(crate) const MAGIC: u32 = 0x7472_6976;
/// The transport version this device implements (2 = modern, no legacy).
pub(crate) const VERSION: u32 = 2;
/// VendorID: "VINF" little-endian; drivers do not interpret it.
pub(crate) const VENDOR_ID: u32 = u32::from_le_bytes(*b"VINF");

pub(crate) const STATUS_ACKNOWLEDGE: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
pub(crate) const STATUS_DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
pub(crate) const STATUS_FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
pub(crate) const STATUS_DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
pub(crate) const STATUS_NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;
pub(crate) const STATUS_FAILED: u32 = VIRTIO_CONFIG_S_FAILED;
/// Every status bit this transport knows.
pub(crate) const STATUS_ALL: u32 = STATUS_ACKNOWLEDGE
    | STATUS_DRIVER
    | STATUS_FEATURES_OK
    | STATUS_DRIVER_OK
    | STATUS_NEEDS_RESET
    | STATUS_FAILED;

/// InterruptStatus bit: the used ring was updated.
pub(crate) const INT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration (or device status) changed.
pub(crate) const INT_CONFIG: u32 = 2;

/// What the device must do after a register write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    None,
    /// The driver notified queue `n` (QueueNotify).
    Notify(u32),
    /// The driver reset the device (Status = 0); the transport is reset already.
    Reset,
    /// The driver's setup is unusable: the device must enter DEVICE_NEEDS_RESET.
    Fault(String),
}

/// The transport registers of one device.
#[derive(Debug)]
pub(crate) struct MmioTransport {
    pub(crate) device_id: u32,
    /// Features the device offers.
    pub(crate) device_features: u64,
    pub(crate) device_features_sel: u32,
    /// Features the driver wrote (checked against the offer at FEATURES_OK).
    pub(crate) driver_features: u64,
    pub(crate) driver_features_sel: u32,
    pub(crate) status: u32,
    pub(crate) interrupt_status: u32,
    pub(crate) config_generation: u32,
    pub(crate) queue_sel: u32,
    /// The device's virtqueues, by index (virtio-blk: one; virtio-net: rx, tx).
    pub(crate) queues: Vec<QueueSlot>,
}

impl MmioTransport {
    pub(crate) fn new(
        device_id: u32,
        device_features: u64,
        queues: Vec<QueueSlot>,
    ) -> MmioTransport {
        MmioTransport {
            device_id,
            device_features,
            device_features_sel: 0,
            driver_features: 0,
            driver_features_sel: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            queue_sel: 0,
            queues,
        }
    }

    /// Device reset (virtio 1.2, 2.4): everything back to its initial value.
    pub(crate) fn reset(&mut self) {
        self.device_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_sel = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
    }

    /// Whether the driver finished initialisation and the device may run.
    pub(crate) fn is_running(&self) -> bool {
        self.status & (STATUS_DRIVER_OK | STATUS_NEEDS_RESET | STATUS_FAILED) == STATUS_DRIVER_OK
    }

    /// The features both sides agreed on (valid once FEATURES_OK is set).
    pub(crate) fn acked_features(&self) -> u64 {
        self.driver_features & self.device_features
    }

    /// A guest read of `data.len()` bytes at `offset`; `config` is the
    /// device-specific configuration space mapped at 0x100.
    pub(crate) fn read(&self, offset: u64, data: &mut [u8], config: &[u8]) {
        data.fill(0);
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data, config);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            warn!(
                offset,
                len = data.len(),
                "virtio-mmio: register read not 32-bit aligned"
            );
            return;
        }
        let Ok(reg) = u32::try_from(offset) else {
            return;
        };
        let value = match reg {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device_id,
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => low(self.device_features),
                1 => high(self.device_features),
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected(|_| u32::from(QUEUE_SIZE_MAX)),
            VIRTIO_MMIO_QUEUE_NUM => self.selected(|q| u32::from(q.num)),
            VIRTIO_MMIO_QUEUE_READY => self.selected(|q| u32::from(q.queue.ready())),
            VIRTIO_MMIO_QUEUE_DESC_LOW => self.selected(|q| low(q.desc)),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => self.selected(|q| high(q.desc)),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => self.selected(|q| low(q.avail)),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => self.selected(|q| high(q.avail)),
            VIRTIO_MMIO_QUEUE_USED_LOW => self.selected(|q| low(q.used)),
            VIRTIO_MMIO_QUEUE_USED_HIGH => self.selected(|q| high(q.used)),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            // No shared-memory regions: a length of all ones says "none".
            VIRTIO_MMIO_SHM_LEN_LOW
            | VIRTIO_MMIO_SHM_LEN_HIGH
            | VIRTIO_MMIO_SHM_BASE_LOW
            | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            _ => {
                debug!(
                    offset,
                    "virtio-mmio: read of a write-only or unknown register"
                );
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write of `data` at `offset` (below the config space, which the
    /// device handles).
    pub(crate) fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMem) -> Action {
        if data.len() != 4 || offset % 4 != 0 {
            warn!(
                offset,
                len = data.len(),
                "virtio-mmio: register write not 32-bit aligned"
            );
            return Action::None;
        }
        let (Ok(reg), Ok(bytes)) = (u32::try_from(offset), <[u8; 4]>::try_from(data)) else {
            return Action::None;
        };
        let value = u32::from_le_bytes(bytes);
        match reg {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM => {
                if let Some(q) = self.setup_slot("QueueNum") {
                    // Out-of-range values are kept and refused at QueueReady.
                    q.num = u16::try_from(value).unwrap_or(0);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW => self.set_queue_addr(|q| &mut q.desc, value, false),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => self.set_queue_addr(|q| &mut q.desc, value, true),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => self.set_queue_addr(|q| &mut q.avail, value, false),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => self.set_queue_addr(|q| &mut q.avail, value, true),
            VIRTIO_MMIO_QUEUE_USED_LOW => self.set_queue_addr(|q| &mut q.used, value, false),
            VIRTIO_MMIO_QUEUE_USED_HIGH => self.set_queue_addr(|q| &mut q.used, value, true),
            VIRTIO_MMIO_QUEUE_READY => return self.write_queue_ready(value, mem),
            VIRTIO_MMIO_QUEUE_NOTIFY => return Action::Notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => return self.write_status(value),
            _ => debug!(
                offset,
                value, "virtio-mmio: write to a read-only or unknown register"
            ),
        }
        Action::None
    }

    /// A register value of the selected queue; queues the device does not
    /// have read as absent (QueueNumMax 0).
    fn selected(&self, value: impl Fn(&QueueSlot) -> u32) -> u32 {
        self.selected_slot().map_or(0, value)
    }

    fn selected_slot(&self) -> Option<&QueueSlot> {
        usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get(i))
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & STATUS_DRIVER == 0 || self.status & STATUS_FEATURES_OK != 0 {
            warn!(
                status = self.status,
                "virtio-mmio: driver features written out of order, ignored"
            );
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            sel => debug!(
                sel,
                value, "virtio-mmio: driver features beyond bit 63 ignored"
            ),
        }
    }

    /// The selected queue, if its setup registers may change: a queue the
    /// device has, before it is ready and before the device was started.
    fn setup_slot(&mut self, what: &str) -> Option<&mut QueueSlot> {
        let started = self.status & STATUS_DRIVER_OK != 0;
        let sel = self.queue_sel;
        let Some(q) = usize::try_from(sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
        else {
            debug!(
                queue = sel,
                what, "virtio-mmio: setup of a queue that does not exist"
            );
            return None;
        };
        if q.queue.ready() || started {
            warn!(
                what,
                "virtio-mmio: queue setup changed while the queue runs, ignored"
            );
            return None;
        }
        Some(q)
    }

    fn set_queue_addr(&mut self, field: fn(&mut QueueSlot) -> &mut u64, value: u32, high: bool) {
        let Some(q) = self.setup_slot("queue address") else {
            return;
        };
        let slot = field(q);
        *slot = if high {
            (*slot & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (*slot & !0xffff_ffff) | u64::from(value)
        };
    }

    fn write_queue_ready(&mut self, value: u32, mem: &GuestMem) -> Action {
        let event_idx = self.acked_features() & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let sel = self.queue_sel;
        let Some(q) = usize::try_from(sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
        else {
            return Action::None;
        };
        if value == 0 {
            q.queue.set_ready(false);
            return Action::None;
        }
        if q.queue.ready() {
            return Action::None;
        }
        match q.activate(mem, event_idx) {
            Ok(()) => {
                debug!(queue = sel, size = q.num, "virtio-mmio: queue ready");
                Action::None
            }
            Err(reason) => Action::Fault(format!("queue {sel} setup refused: {reason}")),
        }
    }

    fn write_status(&mut self, value: u32) -> Action {
        if value == 0 {
            info!(
                device_id = self.device_id,
                "virtio-mmio: device reset by the driver"
            );
            self.reset();
            return Action::Reset;
        }
        let old = self.status;
        let value = value & STATUS_ALL;
        // The driver only adds bits; NEEDS_RESET is the device's to set.
        if old & !value & !STATUS_NEEDS_RESET != 0 {
            warn!(
                old,
                value, "virtio-mmio: driver cleared status bits without a reset, ignored"
            );
            return Action::None;
        }
        let mut new = (value & !STATUS_NEEDS_RESET) | (old & STATUS_NEEDS_RESET);
        let added = new & !old;
        if added & STATUS_FEATURES_OK != 0 && !self.features_acceptable() {
            warn!(
                offered = self.device_features,
                acked = self.driver_features,
                "virtio-mmio: driver features refused (unknown bits or no VIRTIO_F_VERSION_1)"
            );
            new &= !STATUS_FEATURES_OK;
        }
        if added & STATUS_DRIVER_OK != 0 && new & STATUS_FEATURES_OK == 0 {
            warn!("virtio-mmio: DRIVER_OK without FEATURES_OK, ignored");
            new &= !STATUS_DRIVER_OK;
        }
        if new & !old & STATUS_DRIVER_OK != 0 {
            info!(
                device_id = self.device_id,
                features = self.acked_features(),
                "virtio-mmio: driver ready"
            );
        }
        self.status = new;
        Action::None
    }

    fn features_acceptable(&self) -> bool {
        self.status & STATUS_DRIVER != 0
            && self.driver_features & !self.device_features == 0
            && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
    }
}

fn read_config(offset: u64, data: &mut [u8], config: &[u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

fn low(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32 // truncation intended: the low half
}

fn high(v: u64) -> u32 {
    (v >> 32) as u32 // truncation intended: the high half
}
