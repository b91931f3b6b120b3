//! Device tests, one module per topic: [`transport`] registers, [`requests`]
//! round trips against `MemBackend`, each kind of [`bad_input`], the dirty
//! bitmap and snapshot/restore ([`state`]), and [`properties`]. This module holds
//! the shared driver harness. The driver side is built from virtio-queue's mock rings over a
//! real `GuestMemoryMmap<AtomicBitmap>`. (Not `MockSplitQueue` itself: in
//! virtio-queue 0.18 it places the used ring inside the available ring for
//! queues larger than 8 entries, as its ring `end()` counts elements, not
//! bytes.)

// Test arithmetic on small, known values; a type list of setup mutations.
#![allow(clippy::cast_possible_truncation, clippy::type_complexity)]

use std::sync::Arc;

use proptest::prelude::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, MmapRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::fuzz::{fuzz_process_request, init_driver, read_reg, write_reg, DriverSetup};
use super::mmio::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
};
use super::*;
use crate::devices::block::MemBackend;
use crate::devices::MmioDevice;

type Mem = GuestMemoryMmap<AtomicBitmap>;

const RAM: usize = 4 << 20;
const QUEUE_BASE: u64 = 0x1_0000;
const AVAIL_BASE: u64 = QUEUE_BASE + 0x1000;
const USED_BASE: u64 = QUEUE_BASE + 0x2000;
const BUF_BASE: u64 = 0x10_0000;
const DISK: usize = 256 * 1024;
const VERSION_1: u64 = 1 << 32;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

const REG_STATUS: u64 = 0x70;
const REG_NOTIFY: u64 = 0x50;
const REG_READY: u64 = 0x44;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Setup {
    mem: Mem,
    disk: Arc<MemBackend>,
    dev: VirtioBlk,
    irq: EventFd,
}

fn setup(read_only: bool) -> Setup {
    let mem = Mem::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let disk = Arc::new(MemBackend::from_vec(pattern(DISK, 7)));
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let dev = VirtioBlk::new(
        VirtioBlkConfig::new("vinfra-test-disk", read_only),
        disk.clone(),
        mem.clone(),
        irq.try_clone().unwrap(),
    )
    .unwrap();
    Setup {
        mem,
        disk,
        dev,
        irq,
    }
}

/// One submitted request, as the driver remembers it.
#[derive(Debug, Clone, Copy)]
struct Req {
    head: u16,
    data: u64,
    status: u64,
}

/// The driver side: virtio-queue's mock rings plus descriptor and buffer
/// allocation.
struct Driver<'a> {
    desc_table: DescriptorTable<'a, Mem>,
    avail: AvailRing<'a, Mem>,
    used_ring: UsedRing<'a, Mem>,
    mem: &'a Mem,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
    next_buf: u64,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a Mem, size: u16) -> Driver<'a> {
        Driver {
            desc_table: DescriptorTable::new(mem, GuestAddress(QUEUE_BASE), size),
            avail: AvailRing::new(mem, GuestAddress(AVAIL_BASE), size),
            used_ring: UsedRing::new(mem, GuestAddress(USED_BASE), size),
            mem,
            size,
            next_desc: 0,
            avail_idx: 0,
            next_buf: BUF_BASE,
        }
    }

    fn setup(&self) -> DriverSetup {
        DriverSetup {
            size: self.size,
            desc: QUEUE_BASE,
            avail: AVAIL_BASE,
            used: USED_BASE,
            features: VERSION_1,
        }
    }

    fn init(&self, dev: &mut VirtioBlk) {
        let status = init_driver(dev, self.setup());
        assert_eq!(
            status,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
        );
    }

    fn alloc(&mut self, len: u64) -> u64 {
        if self.next_buf + len > RAM as u64 {
            self.next_buf = BUF_BASE;
        }
        let addr = self.next_buf;
        self.next_buf = (addr + len + 15) & !15;
        addr
    }

    /// Stores `descs` (addr, len, flags, next) at table indices from `first`.
    fn store_raw(&self, first: u16, descs: &[(u64, u32, u16, u16)]) {
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            let d = RawDescriptor::from(SplitDescriptor::new(*addr, *len, *flags, *next));
            self.desc_table.store(first + i as u16, d).unwrap();
        }
    }

    /// Writes a chain of (addr, len, writable) buffers and returns its head.
    fn chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, (addr, len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let mut flags = if *writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let next = (index + 1) % self.size;
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.store_raw(index, &[(*addr, *len, flags, next)]);
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        head
    }

    fn publish(&mut self, head: u16) {
        let slot = usize::from(self.avail_idx % self.size);
        self.avail.ring().ref_at(slot).unwrap().store(head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.avail.idx().store(self.avail_idx);
    }

    fn header(&mut self, kind: u32, sector: u64) -> u64 {
        let addr = self.alloc(16);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(addr)).unwrap();
        addr
    }

    /// A request with a 16-byte header, one data buffer and a status byte.
    fn request(&mut self, kind: u32, sector: u64, data: Option<(&[u8], bool)>) -> Req {
        let hdr = self.header(kind, sector);
        let status = self.alloc(1);
        self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        let mut bufs = vec![(hdr, 16, false)];
        let mut data_addr = 0;
        if let Some((bytes, writable)) = data {
            data_addr = self.alloc(bytes.len() as u64);
            self.mem
                .write_slice(bytes, GuestAddress(data_addr))
                .unwrap();
            bufs.push((data_addr, bytes.len() as u32, writable));
        }
        bufs.push((status, 1, true));
        let head = self.chain(&bufs);
        self.publish(head);
        Req {
            head,
            data: data_addr,
            status,
        }
    }

    fn read(&mut self, sector: u64, len: usize) -> Req {
        self.request(T_IN, sector, Some((&vec![0u8; len], true)))
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Req {
        self.request(T_OUT, sector, Some((data, false)))
    }

    fn status(&self, req: Req) -> u8 {
        self.mem.read_obj(GuestAddress(req.status)).unwrap()
    }

    fn data(&self, req: Req, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(req.data))
            .unwrap();
        buf
    }

    fn used_idx(&self) -> u16 {
        self.used_ring.idx().load()
    }

    /// (head, len) of used-ring entry `i`.
    fn used(&self, i: u16) -> (u32, u32) {
        let e = self
            .used_ring
            .ring()
            .ref_at(usize::from(i % self.size))
            .unwrap()
            .load();
        (e.id(), e.len())
    }
}

fn notify(dev: &mut VirtioBlk) {
    write_reg(dev, REG_NOTIFY, 0);
}

fn needs_reset(dev: &mut VirtioBlk) -> bool {
    read_reg(dev, REG_STATUS) & STATUS_NEEDS_RESET != 0
}

mod bad_input;
mod net;
mod properties;
mod requests;
mod state;
mod transport;
