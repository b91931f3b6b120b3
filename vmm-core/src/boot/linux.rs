//! The Linux x86-64 boot protocol: zero page (`boot_params`), E820 table, initrd.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::KernelLoaderResult;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{Error, MemoryError, Result};
use crate::memory::{e820_map, GuestMemoryMmap, PAGE_SIZE};

/// Where the zero page is written.
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// Highest initrd address when the kernel does not say (`initrd_addr_max` default).
const INITRD_ADDR_MAX_DEFAULT: u64 = 0x37ff_ffff;

/// Copies the initrd to the top of low RAM and returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    f: &mut File,
    path: &Path,
    kernel: &KernelLoaderResult,
) -> Result<(u64, u64)> {
    let ferr = |source| Error::File {
        what: "initrd",
        path: path.to_owned(),
        source,
    };
    let size = f.seek(SeekFrom::End(0)).map_err(ferr)?;
    f.seek(SeekFrom::Start(0)).map_err(ferr)?;
    let max = kernel
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m != 0)
        .unwrap_or(INITRD_ADDR_MAX_DEFAULT);
    let low_end = mem
        .iter()
        .next()
        .map(|r| r.start_addr().raw_value() + r.len())
        .unwrap_or(0)
        .min(max + 1);
    let addr = low_end.checked_sub(size).map(|a| a & !(PAGE_SIZE - 1));
    let too_small = || Error::MemoryTooSmall {
        mib: (mem.last_addr().0 + 1) >> 20,
        reason: format!("the initrd ({size} bytes) does not fit after the kernel"),
    };
    let addr = addr
        .filter(|&a| a >= kernel.kernel_end)
        .ok_or_else(too_small)?;
    let len = usize::try_from(size).map_err(|_| too_small())?;
    mem.read_exact_volatile_from(GuestAddress(addr), f, len)
        .map_err(MemoryError::write("load initrd"))?;
    Ok((addr, size))
}

/// Writes the zero page (with the ACPI RSDP address, if any) and returns (64-bit entry
/// point, zero page address).
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    kernel: &KernelLoaderResult,
    cmdline_addr: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> Result<(u64, u64)> {
    let mut params = boot_params::default();
    let entry = match kernel.setup_header {
        Some(h) => {
            params.hdr = h;
            // The 64-bit entry of a bzImage is 0x200 past the protected-mode start.
            kernel.kernel_load.raw_value() + 0x200
        }
        None => {
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
            kernel.kernel_load.raw_value()
        }
    };
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = u32::try_from(cmdline_addr).unwrap_or(0);
    params.hdr.cmdline_size = u32::try_from(cmdline_len).unwrap_or(0);
    params.acpi_rsdp_addr = rsdp.unwrap_or(0);
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = u32::try_from(addr).map_err(|_| MemoryError::InitrdAbove4GiB)?;
        params.hdr.ramdisk_size = u32::try_from(size).map_err(|_| MemoryError::InitrdAbove4GiB)?;
    }
    let table = e820_map(mem);
    for (i, (addr, size, type_)) in table.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = u8::try_from(table.len()).unwrap_or(0);
    mem.write_obj(params, GuestAddress(BOOT_PARAMS_ADDR))
        .map_err(MemoryError::write("write boot params"))?;
    Ok((entry, BOOT_PARAMS_ADDR))
}
