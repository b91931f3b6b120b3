//! Guest RAM: layout, allocation, KVM memory slots, page-sharing advice.
//!
//! Memory map (guest-physical):
//!
//! | range | use |
//! |---|---|
//! | `0` – `0xA0000` | RAM: boot structures (GDT, page tables, start info, command line) |
//! | `0xA0000` – `0x100000` | RAM, reported reserved (legacy VGA/BIOS hole) |
//! | `0x100000` – min(size, 3 GiB) | RAM: kernel at 1 MiB, then free |
//! | `0xC0000000` – `0x100000000` | MMIO hole: virtio-mmio devices at `0xd0000000`, LAPIC, IOAPIC |
//! | `0x100000000` – … | RAM beyond 3 GiB, if any |

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

use crate::error::{Error, MemoryError, Result};

/// Guest memory as the VMM and its devices see it: every region carries a bitmap of
/// the pages the VMM itself wrote (KVM's dirty log cannot see those writes).
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;

/// Start of the MMIO hole below 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// End of the MMIO hole (4 GiB).
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Start of the legacy hole that the memory map reports as reserved.
pub const LEGACY_HOLE_START: u64 = 0xA_0000;
/// Where high memory (and the kernel) starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of a reserved range.
pub const E820_RESERVED: u32 = 2;

/// The E820 memory map both boot protocols give the guest, as `(address, size, type)`:
/// low RAM, the legacy hole reserved, then every RAM region above 1 MiB.
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u32)> {
    let mut table = vec![
        (0, LEGACY_HOLE_START, E820_RAM),
        (
            LEGACY_HOLE_START,
            HIMEM_START - LEGACY_HOLE_START,
            E820_RESERVED,
        ),
    ];
    for r in mem.iter() {
        let start = r.start_addr().raw_value().max(HIMEM_START);
        let end = r.start_addr().raw_value() + r.len();
        if end > start {
            table.push((start, end - start, E820_RAM));
        }
    }
    table
}

/// The RAM ranges for `bytes` of guest memory, split around the MMIO hole.
pub fn ram_ranges(bytes: u64) -> Vec<(GuestAddress, u64)> {
    if bytes <= MMIO_HOLE_START {
        vec![(GuestAddress(0), bytes)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START),
            (GuestAddress(MMIO_HOLE_END), bytes - MMIO_HOLE_START),
        ]
    }
}

/// Allocates anonymous guest memory of `bytes`.
pub fn create(bytes: u64) -> Result<GuestMemoryMmap> {
    let ranges = ram_ranges(bytes)
        .into_iter()
        .map(|(a, len)| {
            usize::try_from(len)
                .map(|len| (a, len))
                .map_err(|_| MemoryError::TooLargeForHost { bytes: len }.into())
        })
        .collect::<Result<Vec<_>>>()?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Allocate(e).into())
}

/// Builds guest memory from regions mapped elsewhere (e.g. from a snapshot file).
pub fn from_regions(regions: Vec<GuestRegionMmap<AtomicBitmap>>) -> Result<GuestMemoryMmap> {
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Regions(e).into())
}

/// Registers (or re-registers, to toggle dirty logging) every region as KVM slot `i`.
pub fn register_slots(vm: &VmFd, mem: &GuestMemoryMmap, log_dirty: bool) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(MemoryError::HostAddress)?;
        let desc = kvm_userspace_memory_region {
            slot: u32::try_from(slot).map_err(|_| MemoryError::TooManyRegions)?,
            flags: if log_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the mapping behind `host` lives as long as `mem`, and the VM holds an
        // Arc of the memory for as long as the VmFd exists, so KVM never sees a dangling
        // userspace address.
        unsafe { vm.set_user_memory_region(desc) }.map_err(Error::kvm("set memory region"))?;
    }
    Ok(())
}

/// Advises the kernel that guest RAM may be merged with identical pages (KSM).
pub fn set_mergeable(mem: &GuestMemoryMmap) -> Result<()> {
    for region in mem.iter() {
        let m: &MmapRegion<AtomicBitmap> = region;
        // SAFETY: the range is exactly one live mapping we own; MADV_MERGEABLE does not
        // change its contents.
        let rc = unsafe {
            libc::madvise(
                m.as_ptr().cast::<libc::c_void>(),
                m.size(),
                libc::MADV_MERGEABLE,
            )
        };
        if rc != 0 {
            return Err(Error::io("madvise(MADV_MERGEABLE)")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// The VMM-side dirty bitmap of a region.
pub fn region_bitmap(region: &GuestRegionMmap<AtomicBitmap>) -> &AtomicBitmap {
    let m: &MmapRegion<AtomicBitmap> = region;
    m.bitmap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_around_the_hole() {
        assert_eq!(ram_ranges(1 << 30), vec![(GuestAddress(0), 1 << 30)]);
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_HOLE_START));
        assert_eq!(
            r[1],
            (GuestAddress(MMIO_HOLE_END), (4 << 30) - MMIO_HOLE_START)
        );
    }
}
