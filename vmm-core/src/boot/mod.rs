//! Loading a kernel and preparing what its boot protocol expects.
//!
//! An ELF with a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`) boots by PVH: 32-bit protected
//! mode, `ebx` → `hvm_start_info`. Any other ELF vmlinux, and any bzImage, boots by the
//! Linux 64-bit boot protocol: long mode on identity page tables, `rsi` → `boot_params`.

pub mod cpu_setup;
pub mod linux;
pub mod pvh;

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{Error as LoaderError, KernelLoader, KernelLoaderResult};
use vm_memory::{GuestAddress, GuestMemoryBackend};

pub use cpu_setup::EntryMode;

use crate::config::CMDLINE_MAX_BYTES;
use crate::error::{Error, Result};
use crate::memory::{GuestMemoryMmap, HIMEM_START};

/// Where the command line is written.
pub const CMDLINE_ADDR: u64 = 0x2_0000;

/// Which boot protocol a kernel image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootProtocol {
    /// Xen PVH direct boot (our test guests; Linux with `CONFIG_PVH`).
    Pvh,
    /// The Linux x86-64 boot protocol (bzImage or ELF vmlinux).
    Linux64,
}

/// Builds the kernel command line from the user's part and the keys the VMM adds.
pub fn build_cmdline(user: &str, extra: &[String]) -> Result<Cmdline> {
    let mut c = Cmdline::new(CMDLINE_MAX_BYTES).map_err(|e| Error::Cmdline(e.to_string()))?;
    if !user.trim().is_empty() {
        c.insert_str(user.trim())
            .map_err(|e| Error::Cmdline(e.to_string()))?;
    }
    for e in extra {
        c.insert_str(e).map_err(|e| Error::Cmdline(e.to_string()))?;
    }
    Ok(c)
}

/// Loads `kernel` (and `initrd`) into `mem`, writes the boot structures with the command
/// line `cmdline` builds for the kernel's protocol and, with `rsdp`, points the guest
/// at the ACPI tables already in memory (`hvm_start_info.rsdp_paddr` or
/// `boot_params.acpi_rsdp_addr`). Returns the protocol, the vCPU entry state and the
/// command line written.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &dyn Fn(BootProtocol) -> Result<Cmdline>,
    rsdp: Option<u64>,
) -> Result<(BootProtocol, EntryMode, Cmdline)> {
    let open = |p: &Path, what| {
        File::open(p).map_err(|source| Error::File {
            what,
            path: p.to_owned(),
            source,
        })
    };
    let mut f = open(kernel, "kernel")?;
    let format_err = |reason: String| Error::KernelFormat {
        path: kernel.to_owned(),
        reason,
    };
    let elf = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START)));
    let result: KernelLoaderResult = match elf {
        Ok(r) => r,
        Err(LoaderError::Elf(ElfError::InvalidElfMagicNumber)) => {
            match BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))) {
                Ok(r) => r,
                Err(e) => return Err(format_err(format!("not an ELF, and as a bzImage: {e}"))),
            }
        }
        Err(e) => return Err(map_load_error(e, kernel, mem)),
    };
    if result.kernel_end > mem.last_addr().0 + 1 {
        return Err(Error::MemoryTooSmall {
            mib: (mem.last_addr().0 + 1) >> 20,
            reason: format!("the kernel ends at {:#x}", result.kernel_end),
        });
    }
    let protocol = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(_) => BootProtocol::Pvh,
        _ => BootProtocol::Linux64,
    };
    let cmdline = cmdline(protocol)?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(|e| Error::Cmdline(e.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);
    let initrd = initrd
        .map(|p| linux::load_initrd(mem, &mut open(p, "initrd")?, p, &result))
        .transpose()?;
    match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            let start_info = pvh::write_start_info(mem, CMDLINE_ADDR, initrd, rsdp)?;
            Ok((
                BootProtocol::Pvh,
                EntryMode::Protected32 {
                    entry: entry.0,
                    start_info,
                },
                cmdline,
            ))
        }
        _ => {
            let (entry, boot_params) =
                linux::write_boot_params(mem, &result, CMDLINE_ADDR, cmdline_len, initrd, rsdp)?;
            Ok((
                BootProtocol::Linux64,
                EntryMode::Long64 { entry, boot_params },
                cmdline,
            ))
        }
    }
}

fn map_load_error(e: LoaderError, kernel: &Path, mem: &GuestMemoryMmap) -> Error {
    if matches!(e, LoaderError::Elf(ElfError::ReadKernelImage)) {
        return Error::MemoryTooSmall {
            mib: (mem.last_addr().0 + 1) >> 20,
            reason: format!("kernel {} does not fit", kernel.display()),
        };
    }
    Error::KernelFormat {
        path: kernel.to_owned(),
        reason: e.to_string(),
    }
}
