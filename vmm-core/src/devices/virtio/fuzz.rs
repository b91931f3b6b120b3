//! Fuzz harness for virtio-blk request processing, and the small driver
//! helpers it needs. Not a stable API: it exists so that the cargo-fuzz target
//! (`fuzz/fuzz_targets/virtio_blk_request.rs`), a proptest in this crate and
//! the benches run the same code, and a crash input replays as a unit test.
//!
//! [`fuzz_process_request`] builds guest memory with a hole in it, lets the
//! fuzz bytes write the descriptor table, the available ring and the request
//! buffers, initialises the device through its registers like a driver, and
//! notifies. It then checks, with `assert!`, the device's memory-safety
//! contract: every byte the device changed lies in the used ring or in a
//! buffer some descriptor marked device-writable, and lies on a page the dirty
//! bitmap marks.
//!
//! ```
//! use vinfra_vmm_core::devices::virtio::fuzz::fuzz_process_request;
//!
//! let outcome = fuzz_process_request(&[3, 0, 1, 0]);
//! assert!(outcome.requests <= 8);
//! ```

#![doc(hidden)]

use std::sync::Arc;

use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MmapRegion,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::mmio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use super::{VirtioBlk, VirtioBlkConfig};
use crate::devices::block::MemBackend;
use crate::devices::MmioDevice;

/// Where a driver placed its queue, and what it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverSetup {
    /// QueueNum.
    pub size: u16,
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    /// Features to acknowledge (VIRTIO_F_VERSION_1 is bit 32).
    pub features: u64,
}

/// Writes a 32-bit register the way a driver does.
pub fn write_reg(dev: &mut dyn MmioDevice, offset: u64, value: u32) {
    dev.mmio_write(offset, &value.to_le_bytes());
}

/// Reads a 32-bit register the way a driver does.
pub fn read_reg(dev: &mut dyn MmioDevice, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.mmio_read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Runs the driver initialisation sequence of virtio 1.2, 3.1.1 (reset,
/// ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queue 0 setup, DRIVER_OK) and
/// returns the status register read back at the end.
pub fn init_driver(dev: &mut dyn MmioDevice, setup: DriverSetup) -> u32 {
    write_reg(dev, 0x70, 0);
    write_reg(dev, 0x70, STATUS_ACKNOWLEDGE);
    write_reg(dev, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write_reg(dev, 0x24, 0);
    write_reg(dev, 0x20, (setup.features & 0xffff_ffff) as u32); // low half
    write_reg(dev, 0x24, 1);
    write_reg(dev, 0x20, (setup.features >> 32) as u32); // high half
    write_reg(
        dev,
        0x70,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    write_reg(dev, 0x30, 0);
    write_reg(dev, 0x38, u32::from(setup.size));
    for (reg, addr) in [(0x80, setup.desc), (0x90, setup.avail), (0xa0, setup.used)] {
        write_reg(dev, reg, (addr & 0xffff_ffff) as u32); // low half
        write_reg(dev, reg + 4, (addr >> 32) as u32); // high half
    }
    write_reg(dev, 0x44, 1);
    let status = read_reg(dev, 0x70);
    write_reg(dev, 0x70, status | STATUS_DRIVER_OK);
    read_reg(dev, 0x70)
}

/// What one harness run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuzzOutcome {
    /// Requests the device answered.
    pub requests: u64,
    /// Whether the device ended in DEVICE_NEEDS_RESET.
    pub needs_reset: bool,
    /// Whether the write-set check ran (it is skipped when device-writable
    /// buffers overlap the rings or indirect tables, which the device may
    /// legitimately rewrite mid-run).
    pub write_set_checked: bool,
    /// Bytes of guest memory the device changed.
    pub changed_bytes: u64,
}

/// Guest RAM of the harness: 64 KiB at 0 and 32 KiB at 128 KiB, with a hole
/// between them.
pub const FUZZ_RAM: [(u64, usize); 2] = [(0, 0x1_0000), (0x2_0000, 0x8000)];
const DESC_TABLE: u64 = 0x0;
const AVAIL_RING: u64 = 0x1000;
const USED_RING: u64 = 0x2000;
const DATA_AREA: u64 = 0x3000;
const DATA_AREA_LEN: usize = 0xd000;
/// Addresses descriptors map to: both RAM regions, the hole and past the end.
const ADDR_SPAN: u64 = 0x3_0000;
const DISK_BYTES: usize = 0x1_0000;

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

/// Runs one fuzz input; see the module documentation for what it checks.
///
/// Input layout: byte 0 = log2 of the queue size (mod 9), byte 1 = flags
/// (bit 0 read-only disk, bit 1 notify twice, bit 2 also acknowledge an
/// unoffered feature), bytes 2..4 = available index, then the descriptor
/// table (16 bytes per entry; an address or length with its top bit clear
/// is folded into the harness's address span), the available ring entries,
/// and the rest is copied into the buffer area.
pub fn fuzz_process_request(data: &[u8]) -> FuzzOutcome {
    let mut input = Input(data);
    let [size_log2, flags] = input.take::<2>();
    let size = 1u16 << (size_log2 % 9);
    let read_only = flags & 1 != 0;
    let ranges: Vec<(GuestAddress, usize)> = FUZZ_RAM
        .iter()
        .map(|(a, l)| (GuestAddress(*a), *l))
        .collect();
    let Ok(mem) = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&ranges) else {
        return FuzzOutcome::default();
    };
    let raw_idx = u16::from_le_bytes(input.take::<2>());
    let avail_idx = if raw_idx & 0x8000 == 0 {
        raw_idx % (size + 1)
    } else {
        raw_idx
    };
    let mut table = Vec::with_capacity(usize::from(size) * 16);
    for _ in 0..size {
        let raw_addr = u64::from_le_bytes(input.take::<8>());
        let raw_len = u32::from_le_bytes(input.take::<4>());
        let addr = if raw_addr >> 63 == 0 {
            raw_addr % ADDR_SPAN
        } else {
            raw_addr
        };
        let len = if raw_len >> 31 == 0 {
            raw_len % 0x4000
        } else {
            raw_len
        };
        table.extend_from_slice(&addr.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&input.take::<4>()); // flags, next
    }
    let mut avail = vec![0u8; 4 + 2 * usize::from(size)];
    avail[2..4].copy_from_slice(&avail_idx.to_le_bytes());
    for i in 0..usize::from(size) {
        avail[4 + 2 * i..6 + 2 * i].copy_from_slice(&input.take::<2>());
    }
    let payload = &input.0[..input.0.len().min(DATA_AREA_LEN)];
    let written = mem.write_slice(&table, GuestAddress(DESC_TABLE)).is_ok()
        && mem.write_slice(&avail, GuestAddress(AVAIL_RING)).is_ok()
        && mem.write_slice(payload, GuestAddress(DATA_AREA)).is_ok();
    if !written {
        return FuzzOutcome::default();
    }

    let disk: Vec<u8> = (0..DISK_BYTES)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    let Ok(irq) = EventFd::new(EFD_NONBLOCK) else {
        return FuzzOutcome::default();
    };
    let Ok(mut dev) = VirtioBlk::new(
        VirtioBlkConfig::new("fuzz-disk", read_only),
        Arc::new(MemBackend::from_vec(disk)),
        mem.clone(),
        irq,
    ) else {
        return FuzzOutcome::default();
    };
    let mut features = 1u64 << 32;
    if flags & 4 != 0 {
        features |= 1 << 29; // VIRTIO_RING_F_EVENT_IDX, not offered
    }
    init_driver(
        &mut dev,
        DriverSetup {
            size,
            desc: DESC_TABLE,
            avail: AVAIL_RING,
            used: USED_RING,
            features,
        },
    );

    // Everything the driver wrote is in place: from here on, every change
    // is the device's.
    let before = snapshot(&mem);
    reset_bitmaps(&mem);
    write_reg(&mut dev, 0x50, 0);
    if flags & 2 != 0 {
        write_reg(&mut dev, 0x50, 0);
    }
    let after = snapshot(&mem);

    let allowed = allowed_writes(&before, size);
    let mut changed_bytes = 0u64;
    for (gpa, (b, a)) in changed(&before, &after) {
        changed_bytes += 1;
        assert_ne!(b, a);
        assert!(
            page_dirty(&mem, gpa),
            "device write at {gpa:#x} not in the dirty bitmap"
        );
        if let Some(allowed) = &allowed {
            assert!(
                allowed.iter().any(|(s, e)| (*s..*e).contains(&gpa)),
                "device wrote {gpa:#x}, outside the used ring and device-writable buffers"
            );
        }
    }
    let stats = dev.stats();
    FuzzOutcome {
        requests: stats.requests,
        needs_reset: dev.device_status() & super::mmio::STATUS_NEEDS_RESET != 0,
        write_set_checked: allowed.is_some(),
        changed_bytes,
    }
}

/// Guest RAM contents as (guest address, bytes) per region.
pub(crate) fn snapshot(mem: &GuestMemoryMmap<AtomicBitmap>) -> Vec<(u64, Vec<u8>)> {
    FUZZ_RAM
        .iter()
        .map(|(start, len)| {
            let mut buf = vec![0u8; *len];
            // The ranges are the regions the memory was built from.
            let _ = mem.read_slice(&mut buf, GuestAddress(*start));
            (*start, buf)
        })
        .collect()
}

pub(crate) fn changed<'a>(
    before: &'a [(u64, Vec<u8>)],
    after: &'a [(u64, Vec<u8>)],
) -> impl Iterator<Item = (u64, (u8, u8))> + 'a {
    before.iter().zip(after).flat_map(|((start, b), (_, a))| {
        b.iter()
            .zip(a)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(move |(i, (x, y))| (start + i as u64, (*x, *y)))
    })
}

fn region_bitmap(mem: &GuestMemoryMmap<AtomicBitmap>, gpa: u64) -> Option<(&AtomicBitmap, u64)> {
    let region = mem.find_region(GuestAddress(gpa))?;
    let mmap: &MmapRegion<AtomicBitmap> = region;
    Some((mmap.bitmap(), gpa - region.start_addr().0))
}

pub(crate) fn reset_bitmaps(mem: &GuestMemoryMmap<AtomicBitmap>) {
    for (start, _) in FUZZ_RAM {
        if let Some((bitmap, _)) = region_bitmap(mem, start) {
            bitmap.reset();
        }
    }
}

pub(crate) fn page_dirty(mem: &GuestMemoryMmap<AtomicBitmap>, gpa: u64) -> bool {
    region_bitmap(mem, gpa).is_some_and(|(bitmap, offset)| {
        usize::try_from(offset).is_ok_and(|offset| bitmap.dirty_at(offset))
    })
}

/// Ranges the device may write, from the driver's descriptor table before
/// the run; `None` when a device-writable buffer overlaps the rings or an
/// indirect table, since then the tables may legitimately change mid-run.
fn allowed_writes(before: &[(u64, Vec<u8>)], size: u16) -> Option<Vec<(u64, u64)>> {
    let ram0 = &before[0].1;
    let read_desc = |table: &[u8], i: usize| -> Option<(u64, u32, u16)> {
        let d = table.get(i * 16..i * 16 + 16)?;
        let addr = u64::from_le_bytes(d[0..8].try_into().ok()?);
        let len = u32::from_le_bytes(d[8..12].try_into().ok()?);
        let flags = u16::from_le_bytes(d[12..14].try_into().ok()?);
        Some((addr, len, flags))
    };
    let used_end = USED_RING + 6 + 8 * u64::from(size);
    let mut allowed = vec![(USED_RING, used_end)];
    let mut protected = vec![(0u64, DATA_AREA)];
    let mut writable = Vec::new();
    let table = &ram0[..];
    for i in 0..usize::from(size) {
        let (addr, len, flags) = read_desc(table, i)?;
        if flags & 4 != 0 {
            // An indirect table: its writable buffers count too.
            let end = addr.saturating_add(u64::from(len));
            protected.push((addr, end));
            let Some(ind) = read_range(before, addr, len) else {
                continue;
            };
            for j in 0..ind.len() / 16 {
                let (a, l, f) = read_desc(&ind, j)?;
                if f & 2 != 0 {
                    writable.push((a, a.saturating_add(u64::from(l))));
                }
            }
        } else if flags & 2 != 0 {
            writable.push((addr, addr.saturating_add(u64::from(len))));
        }
    }
    let overlaps = |(s, e): (u64, u64)| protected.iter().any(|(ps, pe)| s < *pe && *ps < e);
    if writable.iter().any(|w| overlaps(*w)) {
        return None;
    }
    allowed.extend(writable);
    Some(allowed)
}

fn read_range(mem: &[(u64, Vec<u8>)], addr: u64, len: u32) -> Option<Vec<u8>> {
    mem.iter().find_map(|(start, bytes)| {
        let off = usize::try_from(addr.checked_sub(*start)?).ok()?;
        bytes
            .get(off..off.checked_add(len as usize)?)
            .map(<[u8]>::to_vec)
    })
}

/// A device and a driver that keep a batch of equal read or write requests in
/// flight, for benches: each [`RequestLoop::run_batch`] posts `batch`
/// requests, notifies once and checks that all completed with OK.
///
/// ```
/// use vinfra_vmm_core::devices::virtio::fuzz::RequestLoop;
///
/// let mut reads = RequestLoop::new(false, 64 * 1024, 4).unwrap();
/// assert_eq!(reads.run_batch(), 4 * 64 * 1024);
/// ```
pub struct RequestLoop {
    mem: GuestMemoryMmap<AtomicBitmap>,
    dev: VirtioBlk,
    batch: u16,
    request_bytes: u32,
    avail_idx: u16,
    next_sector: u64,
}

impl std::fmt::Debug for RequestLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLoop")
            .field("batch", &self.batch)
            .field("request_bytes", &self.request_bytes)
            .finish_non_exhaustive()
    }
}

const LOOP_QUEUE: u16 = 128;
const LOOP_HEADERS: u64 = 0x4000;
const LOOP_STATUS: u64 = 0x6000;
const LOOP_DATA: u64 = 0x10_0000;
const LOOP_DISK: u64 = 16 << 20;

impl RequestLoop {
    /// Writes (`write`) or reads of `request_bytes` (whole sectors, at most
    /// 1 MiB), `batch` (1..=32) per notify. `None` for other sizes or when
    /// memory cannot be mapped.
    pub fn new(write: bool, request_bytes: u32, batch: u16) -> Option<RequestLoop> {
        if request_bytes == 0
            || request_bytes % 512 != 0
            || request_bytes > 1 << 20
            || !(1..=32).contains(&batch)
        {
            return None;
        }
        let ram = usize::try_from(LOOP_DATA).ok()?
            + usize::from(batch) * usize::try_from(request_bytes).ok()?;
        let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), ram)]).ok()?;
        let disk = Arc::new(MemBackend::new(usize::try_from(LOOP_DISK).ok()?));
        let irq = EventFd::new(EFD_NONBLOCK).ok()?;
        let mut dev =
            VirtioBlk::new(VirtioBlkConfig::new("bench", false), disk, mem.clone(), irq).ok()?;
        for i in 0..u64::from(batch) {
            let data = LOOP_DATA + i * u64::from(request_bytes);
            let descs: [(u64, u32, u16); 3] = [
                (LOOP_HEADERS + 16 * i, 16, 1),
                (data, request_bytes, if write { 1 } else { 1 | 2 }),
                (LOOP_STATUS + i, 1, 2),
            ];
            for (j, (addr, len, flags)) in descs.into_iter().enumerate() {
                let index = 3 * i + j as u64;
                let mut d = [0u8; 16];
                d[0..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&flags.to_le_bytes());
                d[14..16].copy_from_slice(&u16::try_from(index + 1).ok()?.to_le_bytes());
                mem.write_slice(&d, GuestAddress(DESC_TABLE + 16 * index))
                    .ok()?;
            }
            let kind: u32 = if write { 1 } else { 0 };
            mem.write_obj(kind.to_le(), GuestAddress(LOOP_HEADERS + 16 * i))
                .ok()?;
        }
        let status = init_driver(
            &mut dev,
            DriverSetup {
                size: LOOP_QUEUE,
                desc: DESC_TABLE,
                avail: AVAIL_RING,
                used: USED_RING,
                features: 1 << 32,
            },
        );
        (status & STATUS_DRIVER_OK != 0).then_some(RequestLoop {
            mem,
            dev,
            batch,
            request_bytes,
            avail_idx: 0,
            next_sector: 0,
        })
    }

    /// Posts one batch, notifies, and returns the data bytes moved.
    ///
    /// # Panics
    ///
    /// When a request does not complete with status OK (a device bug).
    pub fn run_batch(&mut self) -> u64 {
        let sectors = u64::from(self.request_bytes / 512);
        for i in 0..self.batch {
            if (self.next_sector + sectors) * 512 > LOOP_DISK {
                self.next_sector = 0;
            }
            let hdr = LOOP_HEADERS + 16 * u64::from(i) + 8;
            let slot = AVAIL_RING + 4 + 2 * u64::from(self.avail_idx % LOOP_QUEUE);
            let ok = self
                .mem
                .write_obj(self.next_sector.to_le(), GuestAddress(hdr))
                .is_ok()
                && self
                    .mem
                    .write_obj(0xffu8, GuestAddress(LOOP_STATUS + u64::from(i)))
                    .is_ok()
                && self
                    .mem
                    .write_obj((3 * i).to_le(), GuestAddress(slot))
                    .is_ok();
            assert!(ok, "bench driver memory");
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.next_sector += sectors;
        }
        let idx_ok = self
            .mem
            .write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL_RING + 2))
            .is_ok();
        assert!(idx_ok, "bench driver memory");
        write_reg(&mut self.dev, 0x50, 0);
        let mut status = vec![0xffu8; usize::from(self.batch)];
        let read = self.mem.read_slice(&mut status, GuestAddress(LOOP_STATUS));
        assert!(
            read.is_ok() && status.iter().all(|s| *s == 0),
            "bench request failed"
        );
        u64::from(self.batch) * u64::from(self.request_bytes)
    }
}
