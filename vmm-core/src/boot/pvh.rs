//! PVH boot: `hvm_start_info` and its E820-style memory map.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use crate::error::{MemoryError, Result};
use crate::memory::{e820_map, GuestMemoryMmap};

/// Where `hvm_start_info` is written.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Where the memory map follows it.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Where the module list (the initrd) goes.
pub const MODLIST_ADDR: u64 = 0x6800;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// The memory map given to the guest: RAM with the legacy hole reserved.
pub fn memmap(mem: &GuestMemoryMmap) -> Vec<hvm_memmap_table_entry> {
    e820_map(mem)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect()
}

/// Writes the start info (version 1, with the memory map, the initrd as module 0 and
/// the ACPI RSDP address if any) and returns its address.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    cmdline_addr: u64,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> Result<u64> {
    let map = memmap(mem);
    let werr = MemoryError::write("write start info");
    for (i, e) in map.iter().enumerate() {
        let at = MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(*e, GuestAddress(at)).map_err(werr)?;
    }
    let mut nr_modules = 0;
    if let Some((paddr, size)) = initrd {
        let m = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        mem.write_obj(m, GuestAddress(MODLIST_ADDR)).map_err(werr)?;
        nr_modules = 1;
    }
    let info = hvm_start_info {
        nr_modules,
        modlist_paddr: if nr_modules > 0 { MODLIST_ADDR } else { 0 },
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: cmdline_addr,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: u32::try_from(map.len()).unwrap_or(0),
        rsdp_paddr: rsdp.unwrap_or(0),
        ..Default::default()
    };
    mem.write_obj(info, GuestAddress(START_INFO_ADDR))
        .map_err(werr)?;
    Ok(START_INFO_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{E820_RAM, HIMEM_START};
    use vm_memory::GuestAddress;

    #[test]
    fn start_info_carries_cmdline_memmap_and_initrd() {
        let mem = crate::memory::create(64 << 20).unwrap();
        let at =
            write_start_info(&mem, 0x2_0000, Some((0x300_0000, 4096)), Some(0xe_0000)).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(at)).unwrap();
        assert_eq!((info.magic, info.version), (XEN_HVM_START_MAGIC, 1));
        assert_eq!((info.cmdline_paddr, info.nr_modules), (0x2_0000, 1));
        assert_eq!(info.rsdp_paddr, 0xe_0000);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((m.paddr, m.size), (0x300_0000, 4096));
        assert_eq!(info.memmap_entries, 3);
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(
                info.memmap_paddr + 2 * std::mem::size_of::<hvm_memmap_table_entry>() as u64,
            ))
            .unwrap();
        assert_eq!(
            (last.addr, last.addr + last.size, last.type_),
            (HIMEM_START, 64 << 20, E820_RAM)
        );
    }
}
