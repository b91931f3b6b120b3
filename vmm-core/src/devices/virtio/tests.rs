//! Device tests: the transport registers, request round trips against
//! `MemBackend`, each kind of bad driver input, snapshot/restore and the dirty
//! bitmap. The driver side is built from virtio-queue's mock rings over a
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

// ---- transport ----------------------------------------------------------

#[test]
fn registers_identify_a_modern_block_device() {
    let mut s = setup(false);
    let dev = &mut s.dev;
    assert_eq!(read_reg(dev, 0x00), 0x7472_6976);
    assert_eq!(read_reg(dev, 0x04), 2);
    assert_eq!(read_reg(dev, 0x08), 2);
    assert_eq!(read_reg(dev, 0x0c), u32::from_le_bytes(*b"VINF"));
    assert_eq!(read_reg(dev, 0x34), u32::from(QUEUE_SIZE_MAX));
    write_reg(dev, 0x14, 0);
    let low = read_reg(dev, 0x10);
    write_reg(dev, 0x14, 1);
    let high = read_reg(dev, 0x10);
    write_reg(dev, 0x14, 2);
    assert_eq!(read_reg(dev, 0x10), 0);
    let features = u64::from(low) | (u64::from(high) << 32);
    // VERSION_1, SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH; not RO, not EVENT_IDX.
    assert_eq!(
        features,
        VERSION_1 | (1 << 1) | (1 << 2) | (1 << 6) | (1 << 9)
    );
    // Queues other than 0 do not exist.
    write_reg(dev, 0x30, 1);
    assert_eq!(read_reg(dev, 0x34), 0);
    write_reg(dev, 0x30, 0);
    // No shared memory regions.
    assert_eq!(read_reg(dev, 0xb0), u32::MAX);
    assert_eq!(read_reg(dev, 0xfc), 0);
    // A misaligned or narrow register read returns zeroes.
    let mut two = [0xaau8; 2];
    dev.mmio_read(0x00, &mut two);
    assert_eq!(two, [0, 0]);
    assert_eq!(read_reg(dev, 0x02), 0);
}

#[test]
fn read_only_device_offers_ro() {
    let mut s = setup(true);
    write_reg(&mut s.dev, 0x14, 0);
    assert_ne!(read_reg(&mut s.dev, 0x10) & (1 << 5), 0);
}

#[test]
fn config_space_holds_capacity_and_limits() {
    let mut s = setup(false);
    let dev = &mut s.dev;
    let mut cap = [0u8; 8];
    dev.mmio_read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK / 512) as u64);
    assert_eq!(read_reg(dev, 0x108), SEGMENT_SIZE_MAX);
    assert_eq!(read_reg(dev, 0x10c), SEG_MAX);
    assert_eq!(read_reg(dev, 0x114), 512);
    let mut byte = [0u8; 1];
    dev.mmio_read(0x101, &mut byte);
    assert_eq!(byte[0], ((DISK / 512) >> 8) as u8);
    // Beyond the fields: zeroes; writes change nothing.
    assert_eq!(read_reg(dev, 0x200), 0);
    write_reg(dev, 0x100, 1);
    dev.mmio_read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK / 512) as u64);
}

#[test]
fn feature_negotiation_refuses_unoffered_and_legacy_drivers() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    // A feature the device did not offer (EVENT_IDX): FEATURES_OK is refused.
    let mut bad = drv.setup();
    bad.features |= 1 << 29;
    let status = init_driver(&mut s.dev, bad);
    assert_eq!(status & STATUS_FEATURES_OK, 0);
    assert_eq!(status & STATUS_DRIVER_OK, 0);
    // No VERSION_1: a legacy driver, refused.
    let mut legacy = drv.setup();
    legacy.features = 1 << 9;
    let status = init_driver(&mut s.dev, legacy);
    assert_eq!(status & STATUS_FEATURES_OK, 0);
    // A subset of the offer is accepted.
    let mut good = drv.setup();
    good.features |= 1 << 9;
    let status = init_driver(&mut s.dev, good);
    assert_eq!(
        status,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
    assert_eq!(s.dev.state().driver_features, good.features);
    // Features cannot change after FEATURES_OK.
    write_reg(&mut s.dev, 0x24, 0);
    write_reg(&mut s.dev, 0x20, 0);
    assert_eq!(s.dev.state().driver_features, good.features);
}

#[test]
fn status_zero_resets_the_device_and_it_works_again() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.read(0, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_ne!(read_reg(&mut s.dev, 0x60), 0);

    write_reg(&mut s.dev, REG_STATUS, 0);
    let state = s.dev.state();
    assert_eq!(state.status, 0);
    assert_eq!(state.driver_features, 0);
    assert_eq!(state.interrupt_status, 0);
    assert!(!state.queue.ready);
    assert_eq!(state.queue.next_avail, 0);
    assert_eq!(read_reg(&mut s.dev, REG_READY), 0);

    // A fresh driver on a fresh ring works.
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.read(1, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_eq!(drv.used_idx(), 1);
}

#[test]
fn driver_cannot_clear_status_bits_or_start_without_features_ok() {
    let mut s = setup(false);
    let dev = &mut s.dev;
    write_reg(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write_reg(dev, REG_STATUS, STATUS_ACKNOWLEDGE);
    assert_eq!(
        read_reg(dev, REG_STATUS),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER
    );
    write_reg(
        dev,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    assert_eq!(read_reg(dev, REG_STATUS) & STATUS_DRIVER_OK, 0);
    // The driver cannot set NEEDS_RESET itself.
    write_reg(
        dev,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_NEEDS_RESET,
    );
    assert_eq!(read_reg(dev, REG_STATUS) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn notify_before_driver_ok_is_ignored() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    let r = drv.read(0, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), 0xff);
    assert_eq!(drv.used_idx(), 0);
}

#[test]
fn interrupt_is_signalled_and_acknowledged() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    assert!(s.irq.read().is_err(), "no interrupt before any request");
    drv.read(0, 512);
    drv.read(1, 512);
    notify(&mut s.dev);
    assert_eq!(s.irq.read().unwrap(), 1, "one interrupt per notify");
    assert_eq!(read_reg(&mut s.dev, 0x60), 1);
    write_reg(&mut s.dev, 0x64, 1);
    assert_eq!(read_reg(&mut s.dev, 0x60), 0);
}

// ---- requests -----------------------------------------------------------

#[test]
fn write_then_read_round_trip() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let data = pattern(4096, 99);
    let w = drv.write(10, &data);
    notify(&mut s.dev);
    assert_eq!(drv.status(w), S_OK);
    assert_eq!(&s.disk.contents()[10 * 512..10 * 512 + 4096], &data[..]);
    let r = drv.read(10, 4096);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_eq!(drv.data(r, 4096), data);
    assert_eq!(drv.used_idx(), 2);
    assert_eq!(drv.used(0), (u32::from(w.head), 1));
    assert_eq!(drv.used(1), (u32::from(r.head), 4097));
    let stats = s.dev.stats();
    assert_eq!((stats.requests, stats.reads, stats.writes), (2, 1, 1));
    assert_eq!((stats.bytes_read, stats.bytes_written), (4096, 4096));
    assert_eq!(stats.io_errors, 0);
}

#[test]
fn read_spread_over_several_descriptors_and_combined_header() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    // Header split 10 + 6 bytes; data in three pieces; status in its own byte.
    let hdr = drv.header(T_IN, 3);
    let (a, b, c) = (drv.alloc(512), drv.alloc(1000), drv.alloc(24));
    let status = drv.alloc(1);
    let head = drv.chain(&[
        (hdr, 10, false),
        (hdr + 10, 6, false),
        (a, 512, true),
        (b, 1000, true),
        (c, 24, true),
        (status, 1, true),
    ]);
    drv.publish(head);
    notify(&mut s.dev);
    let req = Req {
        head,
        data: a,
        status,
    };
    assert_eq!(drv.status(req), S_OK);
    let mut got = vec![0u8; 1536];
    s.mem.read_slice(&mut got[..512], GuestAddress(a)).unwrap();
    s.mem
        .read_slice(&mut got[512..1512], GuestAddress(b))
        .unwrap();
    s.mem.read_slice(&mut got[1512..], GuestAddress(c)).unwrap();
    assert_eq!(&got[..], &s.disk.contents()[3 * 512..3 * 512 + 1536]);
    assert_eq!(drv.used(0).1, 1537);
}

#[test]
fn flush_reaches_the_backend() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.request(T_FLUSH, 0, None);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_eq!(s.disk.flush_count(), 1);
    assert_eq!(s.dev.stats().flushes, 1);
}

#[test]
fn get_id_returns_the_padded_id_or_a_prefix() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.request(T_GET_ID, 0, Some((&[0xee; 20], true)));
    let short = drv.request(T_GET_ID, 0, Some((&[0xee; 6], true)));
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    let mut want = b"vinfra-test-disk".to_vec();
    want.resize(20, 0);
    assert_eq!(drv.data(r, 20), want);
    assert_eq!(drv.used(0).1, 21);
    assert_eq!(drv.status(short), S_OK);
    assert_eq!(drv.data(short, 6), b"vinfra");
}

#[test]
fn id_longer_than_20_bytes_is_refused() {
    let mem = Mem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let err = VirtioBlk::new(
        VirtioBlkConfig::new("x".repeat(21), false),
        Arc::new(MemBackend::new(512)),
        mem,
        EventFd::new(EFD_NONBLOCK).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, VirtioError::IdTooLong { len: 21 }));
}

#[test]
fn unsupported_request_type_answers_unsupp() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let discard = drv.request(11, 0, Some((&[0u8; 16], false)));
    notify(&mut s.dev);
    assert_eq!(drv.status(discard), S_UNSUPP);
    assert_eq!(s.dev.stats().unsupported, 1);
    assert!(!needs_reset(&mut s.dev));
}

/// Submits one request built by `build`, notifies, and returns its status.
fn one_status(read_only: bool, build: impl FnOnce(&mut Driver<'_>) -> Req) -> (u8, Setup) {
    let mut s = setup(read_only);
    let before = s.disk.contents();
    let status = {
        let mut drv = Driver::new(&s.mem, 64);
        drv.init(&mut s.dev);
        let req = build(&mut drv);
        notify(&mut s.dev);
        assert_eq!(drv.used_idx(), 1, "the request must be completed");
        let status = drv.status(req);
        if status != S_OK {
            assert_eq!(drv.used(0).1, 1, "an error answer writes only the status");
        }
        status
    };
    assert!(!needs_reset(&mut s.dev));
    if status != S_OK {
        assert_eq!(
            s.disk.contents(),
            before,
            "a failed request changes no sector"
        );
    }
    (status, s)
}

#[test]
fn read_beyond_capacity_is_ioerr() {
    let last = (DISK / 512) as u64;
    assert_eq!(one_status(false, |d| d.read(last, 512)).0, S_IOERR);
    assert_eq!(one_status(false, |d| d.read(last - 1, 1024)).0, S_IOERR);
    assert_eq!(one_status(false, |d| d.read(u64::MAX, 512)).0, S_IOERR);
    assert_eq!(
        one_status(false, |d| d.write(u64::MAX / 512, &[0; 512])).0,
        S_IOERR
    );
    assert_eq!(one_status(false, |d| d.read(last - 1, 512)).0, S_OK);
}

#[test]
fn write_to_read_only_disk_is_ioerr() {
    let (status, s) = one_status(true, |d| d.write(0, &[1; 512]));
    assert_eq!(status, S_IOERR);
    assert_eq!(s.dev.stats().io_errors, 1);
    // Reads, flushes and GET_ID still work on a read-only disk.
    assert_eq!(one_status(true, |d| d.read(0, 512)).0, S_OK);
    assert_eq!(one_status(true, |d| d.request(T_FLUSH, 0, None)).0, S_OK);
}

#[test]
fn data_length_not_whole_sectors_is_ioerr() {
    assert_eq!(one_status(false, |d| d.read(0, 511)).0, S_IOERR);
    assert_eq!(one_status(false, |d| d.write(0, &[0; 513])).0, S_IOERR);
}

#[test]
fn too_short_header_is_ioerr() {
    let (status, _) = one_status(false, |d| {
        let hdr = d.header(T_IN, 0);
        let data = d.alloc(512);
        let status = d.alloc(1);
        let head = d.chain(&[(hdr, 15, false), (data, 512, true), (status, 1, true)]);
        d.publish(head);
        Req { head, data, status }
    });
    assert_eq!(status, S_IOERR);
    // No readable descriptor at all.
    let (status, _) = one_status(false, |d| {
        let status = d.alloc(1);
        let head = d.chain(&[(status, 1, true)]);
        d.publish(head);
        Req {
            head,
            data: 0,
            status,
        }
    });
    assert_eq!(status, S_IOERR);
}

#[test]
fn wrong_direction_flags_are_ioerr() {
    // A read whose data buffer is device-readable.
    assert_eq!(
        one_status(false, |d| d.request(T_IN, 0, Some((&[0; 512], false)))).0,
        S_IOERR
    );
    // A write whose data buffer is device-writable.
    assert_eq!(
        one_status(false, |d| d.request(T_OUT, 0, Some((&[0; 512], true)))).0,
        S_IOERR
    );
    // A device-readable buffer after a device-writable one.
    let (status, _) = one_status(false, |d| {
        let hdr = d.header(T_IN, 0);
        let (a, b, status) = (d.alloc(512), d.alloc(512), d.alloc(1));
        let head = d.chain(&[
            (hdr, 16, false),
            (a, 512, true),
            (b, 512, false),
            (status, 1, true),
        ]);
        d.publish(head);
        Req {
            head,
            data: a,
            status,
        }
    });
    assert_eq!(status, S_IOERR);
}

#[test]
fn data_buffer_outside_guest_ram_is_ioerr() {
    for addr in [RAM as u64, RAM as u64 - 256, u64::MAX - 100] {
        let (status, _) = one_status(false, |d| {
            let hdr = d.header(T_IN, 0);
            let status = d.alloc(1);
            let head = d.chain(&[(hdr, 16, false), (addr, 512, true), (status, 1, true)]);
            d.publish(head);
            Req {
                head,
                data: addr,
                status,
            }
        });
        assert_eq!(status, S_IOERR, "buffer at {addr:#x}");
    }
}

#[test]
fn huge_request_is_ioerr() {
    let len = (MAX_REQUEST_BYTES + 512) as u32;
    let (status, _) = one_status(false, |d| {
        let hdr = d.header(T_IN, 0);
        let data = d.alloc(u64::from(len));
        let status = d.alloc(1);
        let head = d.chain(&[(hdr, 16, false), (data, len, true), (status, 1, true)]);
        d.publish(head);
        Req { head, data, status }
    });
    assert_eq!(status, S_IOERR);
}

#[test]
fn too_many_descriptors_is_ioerr() {
    let (status, _) = one_status(false, |d| {
        let hdr = d.header(T_IN, 0);
        let mut bufs = vec![(hdr, 16, false)];
        for _ in 0..=SEG_MAX {
            bufs.push((d.alloc(512), 512, true));
        }
        let status = d.alloc(1);
        bufs.push((status, 1, true));
        let head = d.chain(&bufs);
        d.publish(head);
        Req {
            head,
            data: 0,
            status,
        }
    });
    assert_eq!(status, S_IOERR);
}

/// Submits a malformed chain and checks the device stops with NEEDS_RESET,
/// raises a configuration interrupt, completes nothing, and works again
/// after a reset.
fn assert_needs_reset(build: impl FnOnce(&mut Driver<'_>)) {
    let mut s = setup(false);
    {
        let mut drv = Driver::new(&s.mem, 16);
        drv.init(&mut s.dev);
        build(&mut drv);
        notify(&mut s.dev);
        assert!(needs_reset(&mut s.dev));
        assert_eq!(drv.used_idx(), 0);
        assert_eq!(read_reg(&mut s.dev, 0x60) & 2, 2, "configuration interrupt");
        assert_eq!(s.irq.read().unwrap(), 1);
        assert_eq!(s.dev.stats().needs_reset, 1);
        // Stopped: a good request is not processed until reset.
        let r = drv.read(0, 512);
        notify(&mut s.dev);
        assert_eq!(drv.status(r), 0xff);
    }
    write_reg(&mut s.dev, REG_STATUS, 0);
    assert!(!needs_reset(&mut s.dev));
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.read(0, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
}

#[test]
fn status_byte_outside_guest_ram_needs_reset() {
    assert_needs_reset(|d| {
        let hdr = d.header(T_IN, 0);
        let data = d.alloc(512);
        let head = d.chain(&[(hdr, 16, false), (data, 512, true), (RAM as u64, 1, true)]);
        d.publish(head);
    });
}

#[test]
fn status_descriptor_not_writable_or_empty_needs_reset() {
    assert_needs_reset(|d| {
        let hdr = d.header(T_FLUSH, 0);
        let status = d.alloc(1);
        let head = d.chain(&[(hdr, 16, false), (status, 1, false)]);
        d.publish(head);
    });
    assert_needs_reset(|d| {
        let hdr = d.header(T_FLUSH, 0);
        let status = d.alloc(1);
        let head = d.chain(&[(hdr, 16, false), (status, 0, true)]);
        d.publish(head);
    });
}

#[test]
fn looping_chain_needs_reset() {
    assert_needs_reset(|d| {
        let hdr = d.header(T_IN, 0);
        let data = d.alloc(512);
        let next = VRING_DESC_F_NEXT as u16;
        let w = VRING_DESC_F_WRITE as u16;
        d.store_raw(0, &[(hdr, 16, next, 1), (data, 512, next | w, 0)]);
        d.publish(0);
    });
}

#[test]
fn descriptor_index_out_of_range_needs_reset() {
    // Head index beyond the table.
    assert_needs_reset(|d| d.publish(16));
    assert_needs_reset(|d| d.publish(u16::MAX));
    // Next index beyond the table.
    assert_needs_reset(|d| {
        let hdr = d.header(T_FLUSH, 0);
        d.store_raw(0, &[(hdr, 16, VRING_DESC_F_NEXT as u16, 99)]);
        d.publish(0);
    });
}

#[test]
fn indirect_table_beyond_the_chain_limit_needs_reset() {
    // VIRTIO_F_INDIRECT_DESC is not offered, but virtio-queue follows indirect
    // tables anyway; the device bounds how far.
    assert_needs_reset(|d| {
        let table = 0x300_000u64;
        for i in 0..300u64 {
            let desc = RawDescriptor::from(SplitDescriptor::new(
                0x200_000,
                16,
                VRING_DESC_F_NEXT as u16,
                (i + 1) as u16,
            ));
            d.mem.write_obj(desc, GuestAddress(table + 16 * i)).unwrap();
        }
        d.store_raw(0, &[(table, 300 * 16, 4, 0)]);
        d.publish(0);
    });
}

#[test]
fn avail_index_running_away_needs_reset() {
    assert_needs_reset(|d| {
        d.read(0, 512);
        // Claim 17 new entries on a 16-entry queue.
        d.avail.idx().store(17);
    });
}

#[test]
fn invalid_queue_setup_is_refused_at_queue_ready() {
    let cases: Vec<(&str, Box<dyn Fn(&mut DriverSetup)>)> = vec![
        ("size 0", Box::new(|s| s.size = 0)),
        ("size not a power of two", Box::new(|s| s.size = 12)),
        ("size over the maximum", Box::new(|s| s.size = 512)),
        ("misaligned descriptor table", Box::new(|s| s.desc += 8)),
        ("misaligned used ring", Box::new(|s| s.used += 2)),
        (
            "descriptor table outside RAM",
            Box::new(|s| s.desc = RAM as u64 - 16),
        ),
        ("used ring outside RAM", Box::new(|s| s.used = 1 << 40)),
        ("available ring at 0", Box::new(|s| s.avail = 0)),
    ];
    for (what, change) in cases {
        let mut s = setup(false);
        let drv = Driver::new(&s.mem, 16);
        let mut bad = drv.setup();
        change(&mut bad);
        let status = init_driver(&mut s.dev, bad);
        assert_eq!(
            read_reg(&mut s.dev, REG_READY),
            0,
            "{what}: queue must not be ready"
        );
        assert_ne!(
            status & STATUS_NEEDS_RESET,
            0,
            "{what}: device must need reset"
        );
        assert!(s.dev.state().queue.desc_table == bad.desc, "{what}");
    }
}

#[test]
fn queue_setup_is_frozen_while_ready() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    write_reg(&mut s.dev, 0x38, 8);
    write_reg(&mut s.dev, 0x80, 0x5000);
    let q = s.dev.state().queue;
    assert_eq!((q.size, q.desc_table), (16, QUEUE_BASE));
}

#[test]
fn many_pending_requests_complete_in_one_notify() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 32);
    drv.init(&mut s.dev);
    for i in 0..16 {
        drv.request(T_FLUSH, i, None);
    }
    notify(&mut s.dev);
    assert_eq!(drv.used_idx(), 16);
    assert_eq!(s.dev.stats().flushes, 16);
}

// ---- dirty bitmap -------------------------------------------------------

fn dirty(mem: &Mem, gpa: u64) -> bool {
    let region = mem.find_region(GuestAddress(gpa)).unwrap();
    let mmap: &MmapRegion<AtomicBitmap> = region;
    mmap.bitmap().dirty_at(gpa as usize)
}

#[test]
fn pages_written_by_a_read_request_are_dirty() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    // Data spanning pages 0x200..0x203 (three pages, not page-aligned).
    let hdr = drv.header(T_IN, 0);
    let status = 0x300_000u64;
    let data = 0x200_800u64;
    let head = drv.chain(&[(hdr, 16, false), (data, 8192, true), (status, 1, true)]);
    drv.publish(head);
    let region = s.mem.find_region(GuestAddress(0)).unwrap();
    let mmap: &MmapRegion<AtomicBitmap> = region;
    mmap.bitmap().reset();
    notify(&mut s.dev);
    for page in [0x200_000u64, 0x201_000, 0x202_000] {
        assert!(dirty(&s.mem, page), "page {page:#x} written by the device");
    }
    assert!(dirty(&s.mem, status), "status byte page");
    assert!(dirty(&s.mem, USED_BASE), "used ring page");
    assert!(!dirty(&s.mem, 0x1ff_000), "page before the buffer");
    assert!(!dirty(&s.mem, 0x203_000), "page after the buffer");
    assert!(!dirty(&s.mem, hdr), "header page is only read");
}

// ---- snapshot / restore -------------------------------------------------

#[test]
fn state_round_trip_mid_stream() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    for i in 0..5u64 {
        drv.write(i, &pattern(512, i as u8));
    }
    notify(&mut s.dev);
    assert_eq!(drv.used_idx(), 5);
    // Two more requests made available but not yet notified when saved.
    let pending_w = drv.write(20, &pattern(1024, 42));
    let pending_r = drv.read(2, 512);

    let state = s.dev.state();
    let json = serde_json::to_string(&state).unwrap();
    let state: VirtioBlkState = serde_json::from_str(&json).unwrap();
    assert_eq!(state.queue.next_avail, 5);
    drop(s.dev);
    let mut dev = VirtioBlk::from_state(
        state.clone(),
        s.disk.clone(),
        s.mem.clone(),
        EventFd::new(EFD_NONBLOCK).unwrap(),
    )
    .unwrap();
    assert_eq!(dev.state(), state);

    notify(&mut dev);
    assert_eq!(drv.used_idx(), 7);
    assert_eq!(drv.used(5).0, u32::from(pending_w.head));
    assert_eq!(drv.status(pending_w), S_OK);
    assert_eq!(drv.status(pending_r), S_OK);
    assert_eq!(drv.data(pending_r, 512), pattern(512, 2));
    assert_eq!(
        &s.disk.contents()[20 * 512..21 * 512 + 512],
        &pattern(1024, 42)[..]
    );
    // The ring keeps wrapping correctly after the restore.
    for i in 0..20u64 {
        let r = drv.read(i % 8, 512);
        notify(&mut dev);
        assert_eq!(drv.status(r), S_OK);
    }
    assert_eq!(drv.used_idx(), 27);
    assert_eq!(dev.stats().requests, 27);
}

#[test]
fn from_state_refuses_inconsistent_state() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let good = s.dev.state();
    let restore = |state: VirtioBlkState, disk: usize| {
        VirtioBlk::from_state(
            state,
            Arc::new(MemBackend::new(disk)),
            s.mem.clone(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        )
    };
    assert!(restore(good.clone(), DISK).is_ok());
    assert!(matches!(
        restore(good.clone(), DISK / 2),
        Err(VirtioError::CapacityMismatch { .. })
    ));
    let mut bad = good.clone();
    bad.status |= 0x100;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.driver_features |= 1 << 29;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.queue.size = 24;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.queue.used_ring = RAM as u64;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.config.id = "y".repeat(30);
    assert!(restore(bad, DISK).is_err());
}

#[test]
fn set_memory_without_the_rings_needs_reset() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let small = Mem::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    s.dev.set_memory(small);
    assert!(needs_reset(&mut s.dev));
}

// ---- properties -----------------------------------------------------------

/// A request in the model test.
#[derive(Debug, Clone)]
enum Op {
    Read {
        sector: u64,
        sectors: usize,
    },
    Write {
        sector: u64,
        sectors: usize,
        seed: u8,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let sectors = (DISK / 512) as u64;
    prop_oneof![
        (0..sectors + 4, 1..9usize).prop_map(|(sector, sectors)| Op::Read { sector, sectors }),
        (0..sectors + 4, 1..9usize, any::<u8>()).prop_map(|(sector, sectors, seed)| Op::Write {
            sector,
            sectors,
            seed
        }),
        Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random sequences of requests, several per notify, against a plain
    /// byte-vector model of the disk.
    #[test]
    fn requests_match_a_disk_model(ops in proptest::collection::vec(op(), 1..40), batch in 1..6usize) {
        let mut s = setup(false);
        let mut model = s.disk.contents();
        // Up to 5 requests of 3 descriptors each in flight.
        let mut drv = Driver::new(&s.mem, 16);
        drv.init(&mut s.dev);
        let capacity = (DISK / 512) as u64;
        for chunk in ops.chunks(batch) {
            let mut pending = Vec::new();
            for op in chunk {
                let req = match op {
                    Op::Read { sector, sectors } => drv.read(*sector, sectors * 512),
                    Op::Write { sector, sectors, seed } => drv.write(*sector, &pattern(sectors * 512, *seed)),
                    Op::Flush => drv.request(T_FLUSH, 0, None),
                };
                pending.push((op.clone(), req));
            }
            notify(&mut s.dev);
            for (op, req) in pending {
                match op {
                    Op::Read { sector, sectors } if sector + sectors as u64 <= capacity => {
                        prop_assert_eq!(drv.status(req), S_OK);
                        let at = sector as usize * 512;
                        prop_assert_eq!(drv.data(req, sectors * 512), model[at..at + sectors * 512].to_vec());
                    }
                    Op::Write { sector, sectors, seed } if sector + sectors as u64 <= capacity => {
                        prop_assert_eq!(drv.status(req), S_OK);
                        let at = sector as usize * 512;
                        model[at..at + sectors * 512].copy_from_slice(&pattern(sectors * 512, seed));
                    }
                    Op::Flush => prop_assert_eq!(drv.status(req), S_OK),
                    _ => prop_assert_eq!(drv.status(req), S_IOERR),
                }
            }
        }
        prop_assert_eq!(s.disk.contents(), model);
        prop_assert!(!needs_reset(&mut s.dev));
    }

    /// Random bytes as descriptor table, ring and buffers: no panic, and the
    /// harness's write-set and dirty-bitmap assertions hold.
    #[test]
    fn random_queues_never_panic_or_write_outside_allowed_ranges(
        data in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let _ = fuzz_process_request(&data);
    }

    /// Random but well-formed-looking chains (addresses inside the harness
    /// RAM, sane lengths, mostly valid flags), which reach deeper than
    /// random bytes do.
    #[test]
    fn structured_queues_never_panic_or_write_outside_allowed_ranges(
        size_log2 in 0u8..6,
        flags in any::<u8>(),
        descs in proptest::collection::vec(
            (0u64..0x3_0000, prop_oneof![Just(16u32), Just(1), Just(512), Just(1024), 0u32..0x3000],
             0u16..8, 0u16..64),
            64),
        heads in proptest::collection::vec(0u16..40, 32),
        headers in proptest::collection::vec((prop_oneof![Just(0u32), Just(1), Just(4), Just(8), any::<u32>()], 0u64..140), 8),
    ) {
        let size = 1u16 << size_log2;
        let mut data = vec![size_log2, flags & 3];
        data.extend_from_slice(&(size.min(8)).to_le_bytes());
        for (addr, len, dflags, next) in descs.iter().take(usize::from(size)) {
            data.extend_from_slice(&addr.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(&(dflags & 3).to_le_bytes());
            data.extend_from_slice(&(next % (size + 2)).to_le_bytes());
        }
        for h in heads.iter().take(usize::from(size)) {
            data.extend_from_slice(&(h % (size + 1)).to_le_bytes());
        }
        // Request headers spread over the buffer area.
        for (kind, sector) in headers {
            let mut chunk = vec![0u8; 512];
            chunk[0..4].copy_from_slice(&kind.to_le_bytes());
            chunk[8..16].copy_from_slice(&sector.to_le_bytes());
            data.extend_from_slice(&chunk);
        }
        let outcome = fuzz_process_request(&data);
        prop_assert!(outcome.requests <= 4 * u64::from(size) * 2);
    }
}

#[test]
fn fuzz_harness_runs_a_valid_request() {
    // One IN request of one sector: desc 0 = header in the buffer area,
    // desc 1 = data, desc 2 = status, all inside region 0.
    let mut data = vec![2u8, 0]; // size 4, flags 0
    data.extend_from_slice(&1u16.to_le_bytes()); // avail idx 1
    let descs: [(u64, u32, u16, u16); 4] = [
        (0x3000, 16, 1, 1),
        (0x4000, 512, 1 | 2, 2),
        (0x5000, 1, 2, 0),
        (0, 0, 0, 0),
    ];
    for (addr, len, flags, next) in descs {
        data.extend_from_slice(&addr.to_le_bytes());
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(&flags.to_le_bytes());
        data.extend_from_slice(&next.to_le_bytes());
    }
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // avail ring: head 0
    let mut header = [0u8; 16];
    header[8..16].copy_from_slice(&3u64.to_le_bytes());
    data.extend_from_slice(&header); // lands at 0x3000
    let outcome = fuzz_process_request(&data);
    assert_eq!(outcome.requests, 1);
    assert!(!outcome.needs_reset);
    assert!(outcome.write_set_checked);
    // Status byte (0 over 0: unchanged), 512 data bytes (mostly nonzero), used ring.
    assert!(outcome.changed_bytes > 400, "{outcome:?}");
}
