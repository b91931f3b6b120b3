//! virtio-blk on a file, through the public API only, the way the VMM wires
//! it: a `FileBackend`, guest memory with a dirty bitmap, an eventfd the VMM
//! would register as an irqfd, and MMIO reads and writes at window offsets.
//! No KVM needed: the "driver" writes the rings directly into guest memory.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::sync::Arc;

use vinfra_vmm_core::devices::block::{BlockBackend, FileBackend};
use vinfra_vmm_core::devices::virtio::fuzz::{init_driver, read_reg, write_reg, DriverSetup};
use vinfra_vmm_core::devices::virtio::{VirtioBlk, VirtioBlkConfig, MMIO_WINDOW_SIZE};
use vinfra_vmm_core::devices::MmioDevice;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

type Mem = GuestMemoryMmap<AtomicBitmap>;

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const HDR: u64 = 0x4000;
const STATUS: u64 = 0x4100;
const DATA: u64 = 0x10000;
const QSIZE: u16 = 8;

/// A polled driver that keeps one request in flight on descriptors 0..2.
struct Driver {
    mem: Mem,
    avail_idx: u16,
}

impl Driver {
    fn desc(&self, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&d, GuestAddress(DESC + 16 * i))
            .unwrap();
    }

    /// Runs one request and returns (status byte, used length).
    fn request(
        &mut self,
        dev: &mut VirtioBlk,
        kind: u32,
        sector: u64,
        len: u32,
        write: bool,
    ) -> (u8, u32) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        self.desc(0, HDR, 16, 1, 1);
        let mut last = 1;
        if len > 0 {
            self.desc(1, DATA, len, if write { 1 } else { 1 | 2 }, 2);
            last = 2;
        }
        self.desc(last, STATUS, 1, 2, 0);
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(0u16, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        write_reg(dev, 0x50, 0);
        let used_idx: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(
            used_idx, self.avail_idx,
            "request completed inside the notify"
        );
        let slot = USED + 4 + 8 * u64::from((used_idx - 1) % QSIZE);
        let used_len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
        (self.mem.read_obj(GuestAddress(STATUS)).unwrap(), used_len)
    }
}

fn device(path: &std::path::Path, read_only: bool) -> (VirtioBlk, Driver, EventFd) {
    let mem = Mem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    // The VMM keeps this clone registered as an irqfd on the device's GSI.
    let irqfd = irq.try_clone().unwrap();
    let backend: Arc<dyn BlockBackend> = Arc::new(FileBackend::open(path, read_only).unwrap());
    let mut dev = VirtioBlk::new(
        VirtioBlkConfig::new("file-disk", read_only),
        backend,
        mem.clone(),
        irq,
    )
    .unwrap();
    let status = init_driver(
        &mut dev,
        DriverSetup {
            size: QSIZE,
            desc: DESC,
            avail: AVAIL,
            used: USED,
            features: 1 << 32,
        },
    );
    assert_eq!(
        status, 0xf,
        "ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK"
    );
    (dev, Driver { mem, avail_idx: 0 }, irqfd)
}

#[test]
fn file_disk_read_write_flush_get_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let image: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &image).unwrap();
    let (mut dev, mut drv, irqfd) = device(&path, false);
    // The config space ends well inside the window the VMM maps.
    assert_eq!(read_reg(&mut dev, MMIO_WINDOW_SIZE - 4), 0);
    let mut cap = [0u8; 8];
    dev.mmio_read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 128);

    // Read sectors 4..12.
    assert_eq!(drv.request(&mut dev, 0, 4, 4096, false), (0, 4097));
    let mut got = vec![0u8; 4096];
    drv.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, image[2048..2048 + 4096]);
    assert_eq!(
        irqfd.read().unwrap(),
        1,
        "used-buffer interrupt through the irqfd"
    );
    assert_eq!(read_reg(&mut dev, 0x60), 1);
    write_reg(&mut dev, 0x64, 1);

    // Write sector 100, flush, and find it in the file.
    drv.mem
        .write_slice(&[0x5a; 512], GuestAddress(DATA))
        .unwrap();
    assert_eq!(drv.request(&mut dev, 1, 100, 512, true), (0, 1));
    assert_eq!(drv.request(&mut dev, 4, 0, 0, false), (0, 1));
    assert_eq!(
        &std::fs::read(&path).unwrap()[100 * 512..101 * 512],
        &[0x5a; 512][..]
    );

    // GET_ID and the end of the disk.
    assert_eq!(drv.request(&mut dev, 8, 0, 20, false), (0, 21));
    let mut id = [0u8; 20];
    drv.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..9], b"file-disk");
    assert_eq!(drv.request(&mut dev, 0, 127, 1024, false), (1, 1));
    let stats = dev.stats();
    assert_eq!(
        (stats.reads, stats.writes, stats.flushes, stats.io_errors),
        (1, 1, 1, 1)
    );
}

#[test]
fn read_only_file_disk_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.img");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let (mut dev, mut drv, _irqfd) = device(&path, true);
    write_reg(&mut dev, 0x14, 0);
    assert_ne!(
        read_reg(&mut dev, 0x10) & (1 << 5),
        0,
        "VIRTIO_BLK_F_RO offered"
    );
    drv.mem.write_slice(&[1; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(drv.request(&mut dev, 1, 0, 512, true), (1, 1));
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 8192]);
    assert_eq!(drv.request(&mut dev, 0, 0, 512, false), (0, 513));
}
