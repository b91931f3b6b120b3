//! Fuzz harness for virtio-net's descriptor and frame handling. Not a stable
//! API: the cargo-fuzz target (`fuzz/fuzz_targets/virtio_net_frames.rs`) and a
//! proptest in this crate run the same code.
//!
//! [`fuzz_net_frames`] lets the fuzz bytes write both queues' descriptor
//! tables, available rings and buffers, and a few frames for the backend to
//! deliver; it drives the device through its registers like a driver,
//! notifies the transmit queue and runs one receive round. It asserts that
//! every byte the device changed lies on a page the dirty bitmap marks and
//! that the counters add up.
//!
//! ```
//! use vinfra_vmm_core::devices::virtio::net_fuzz::fuzz_net_frames;
//!
//! let outcome = fuzz_net_frames(&[2, 0, 1, 0, 1, 0]);
//! assert!(outcome.tx_handled <= 4);
//! ```

#![doc(hidden)]

use std::sync::Arc;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::fuzz::{changed, page_dirty, read_reg, reset_bitmaps, snapshot, write_reg, FUZZ_RAM};
use super::mmio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use super::{VirtioNet, VirtioNetConfig};
use crate::devices::net::{MacAddr, MemNetBackend};
use crate::devices::MmioDevice;

/// What one harness run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFuzzOutcome {
    /// Transmit chains the device consumed (sent or dropped).
    pub tx_handled: u64,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Whether the device ended in DEVICE_NEEDS_RESET.
    pub needs_reset: bool,
    /// Bytes of guest memory the device changed.
    pub changed_bytes: u64,
}

/// The harness NIC's MAC.
pub const FUZZ_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const RINGS: [(u64, u64, u64); 2] = [(0x0, 0x1000, 0x2000), (0x3000, 0x4000, 0x5000)];
const DATA_AREA: u64 = 0x6000;
const DATA_AREA_LEN: usize = 0xa000;
const ADDR_SPAN: u64 = 0x3_0000;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
}

/// Sets up both queues (size `size`) and DRIVER_OK, as a driver does.
pub fn init_net_driver(dev: &mut dyn MmioDevice, size: u16, rings: [(u64, u64, u64); 2]) -> u32 {
    write_reg(dev, 0x70, 0);
    write_reg(dev, 0x70, STATUS_ACKNOWLEDGE);
    write_reg(dev, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write_reg(dev, 0x24, 0);
    write_reg(dev, 0x20, 1 << 5); // VIRTIO_NET_F_MAC
    write_reg(dev, 0x24, 1);
    write_reg(dev, 0x20, 1); // VIRTIO_F_VERSION_1
    write_reg(
        dev,
        0x70,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    for (q, (desc, avail, used)) in rings.iter().enumerate() {
        write_reg(dev, 0x30, u32::try_from(q).unwrap_or(0));
        write_reg(dev, 0x38, u32::from(size));
        for (reg, addr) in [(0x80, *desc), (0x90, *avail), (0xa0, *used)] {
            write_reg(dev, reg, (addr & 0xffff_ffff) as u32); // low half
            write_reg(dev, reg + 4, (addr >> 32) as u32); // high half
        }
        write_reg(dev, 0x44, 1);
    }
    let status = read_reg(dev, 0x70);
    write_reg(dev, 0x70, status | STATUS_DRIVER_OK);
    read_reg(dev, 0x70)
}

/// Runs one fuzz input; see the module documentation.
///
/// Layout: byte 0 = log2 of the queue size (mod 5), byte 1 = flags (bit 0:
/// allow forged transmits, bit 1: promiscuous), then per queue (receive,
/// transmit) the available index (2 bytes), the descriptor table (16 bytes
/// per entry, addresses folded into the harness's span unless the top bit is
/// set) and the ring entries; then one byte giving the number of frames (mod
/// 5) to inject, each preceded by a 2-byte length; the rest fills the buffer
/// area.
pub fn fuzz_net_frames(data: &[u8]) -> NetFuzzOutcome {
    let mut input = Input(data);
    let [size_log2, flags] = input.take::<2>();
    let size = 1u16 << (size_log2 % 5);
    let ranges: Vec<(GuestAddress, usize)> = FUZZ_RAM
        .iter()
        .map(|(a, l)| (GuestAddress(*a), *l))
        .collect();
    let Ok(mem) = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&ranges) else {
        return NetFuzzOutcome::default();
    };
    for (desc, avail, _) in RINGS {
        let raw_idx = u16::from_le_bytes(input.take::<2>());
        let idx = if raw_idx & 0x8000 == 0 {
            raw_idx % (size + 1)
        } else {
            raw_idx
        };
        let mut table = Vec::with_capacity(usize::from(size) * 16);
        for _ in 0..size {
            let raw_addr = u64::from_le_bytes(input.take::<8>());
            let raw_len = u32::from_le_bytes(input.take::<4>());
            let addr = if raw_addr >> 63 == 0 {
                DATA_AREA + raw_addr % (ADDR_SPAN - DATA_AREA)
            } else {
                raw_addr
            };
            let len = if raw_len >> 31 == 0 {
                raw_len % 0x800
            } else {
                raw_len
            };
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&input.take::<4>());
        }
        let mut ring = vec![0u8; 4 + 2 * usize::from(size)];
        ring[2..4].copy_from_slice(&idx.to_le_bytes());
        for i in 0..usize::from(size) {
            ring[4 + 2 * i..6 + 2 * i].copy_from_slice(&input.take::<2>());
        }
        if mem.write_slice(&table, GuestAddress(desc)).is_err()
            || mem.write_slice(&ring, GuestAddress(avail)).is_err()
        {
            return NetFuzzOutcome::default();
        }
    }
    let backend = Arc::new(MemNetBackend::new());
    let [frames] = input.take::<1>();
    for _ in 0..frames % 5 {
        let len = usize::from(u16::from_le_bytes(input.take::<2>()) % 1600);
        let mut frame: Vec<u8> = input.0.iter().take(len).copied().collect();
        input.0 = &input.0[frame.len()..];
        frame.resize(len, 0);
        backend.inject(&frame);
    }
    let payload = &input.0[..input.0.len().min(DATA_AREA_LEN)];
    if mem.write_slice(payload, GuestAddress(DATA_AREA)).is_err() {
        return NetFuzzOutcome::default();
    }
    let Ok(irq) = EventFd::new(EFD_NONBLOCK) else {
        return NetFuzzOutcome::default();
    };
    let mut config = VirtioNetConfig::new("fuzz-net", FUZZ_MAC);
    config.policy.forged_transmits = flags & 1 != 0;
    config.policy.promiscuous = flags & 2 != 0;
    let Ok(mut dev) = VirtioNet::new(config, backend.clone(), mem.clone(), irq) else {
        return NetFuzzOutcome::default();
    };
    init_net_driver(&mut dev, size, RINGS);
    dev.set_enabled(true);

    let before = snapshot(&mem);
    reset_bitmaps(&mem);
    write_reg(&mut dev, 0x50, 1);
    dev.process_rx();
    let after = snapshot(&mem);

    let mut changed_bytes = 0u64;
    for (gpa, _) in changed(&before, &after) {
        changed_bytes += 1;
        assert!(
            page_dirty(&mem, gpa),
            "device write at {gpa:#x} not in the dirty bitmap"
        );
    }
    let s = dev.stats();
    let tx_handled =
        s.tx_frames + s.tx_malformed + s.tx_oversized + s.tx_forged + s.tx_backend_errors;
    assert!(tx_handled <= u64::from(size), "more transmits than chains");
    assert_eq!(
        backend.take_sent().len() as u64,
        s.tx_frames,
        "frames sent vs counted"
    );
    NetFuzzOutcome {
        tx_handled,
        rx_frames: s.rx_frames,
        needs_reset: dev.device_status() & super::mmio::STATUS_NEEDS_RESET != 0,
        changed_bytes,
    }
}
