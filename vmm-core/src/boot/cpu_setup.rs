//! Per-vCPU architectural setup: GDT, identity page tables, segment and control
//! registers for a 32-bit PVH entry or a 64-bit Linux entry, FPU, MSRs, CPUID, LAPIC.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::cpuid::{self, CpuidMask};
use crate::error::{Error, MemoryError, Result};
use crate::kvm;
use crate::memory::GuestMemoryMmap;

/// Where the GDT lives.
pub const GDT_ADDR: u64 = 0x500;
/// PML4 of the identity page tables (64-bit entry).
pub const PML4_ADDR: u64 = 0x9000;
/// PDPT of the identity page tables.
pub const PDPT_ADDR: u64 = 0xA000;
/// First of four page directories mapping 4 GiB with 2 MiB pages.
pub const PD_ADDR: u64 = 0xB000;
/// Initial stack pointer for the Linux entry.
pub const BOOT_STACK: u64 = 0x8FF0;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT descriptor from access flags, base and limit (the packed hardware format).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The segment register KVM should load for GDT `entry` at `index`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "each field is masked to its width"
)]
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 48) & 0xf) << 16) | (entry & 0xffff);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: limit as u32,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

/// Which entry state a vCPU starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 32-bit protected mode, paging off, `ebx` = start info (PVH).
    Protected32 {
        /// Entry point.
        entry: u64,
        /// `hvm_start_info` address.
        start_info: u64,
    },
    /// 64-bit long mode on identity page tables, `rsi` = boot_params (Linux).
    Long64 {
        /// Entry point.
        entry: u64,
        /// Zero page address.
        boot_params: u64,
    },
}

impl EntryMode {
    /// The GDT this mode runs on: null, code, data, TSS.
    fn gdt(self) -> [u64; 4] {
        match self {
            EntryMode::Protected32 { .. } => [
                0,
                gdt_entry(0xc09b, 0, 0xfffff),
                gdt_entry(0xc093, 0, 0xfffff),
                gdt_entry(0x008b, 0, 0x67),
            ],
            EntryMode::Long64 { .. } => [
                0,
                gdt_entry(0xa09b, 0, 0xfffff),
                gdt_entry(0xc093, 0, 0xfffff),
                gdt_entry(0x808b, 0, 0xfffff),
            ],
        }
    }
}

/// Writes identity page tables that map the first 4 GiB with 2 MiB pages.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<()> {
    let w = |v: u64, a: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(MemoryError::write("write page tables"))
    };
    w(PDPT_ADDR | 0x3, PML4_ADDR)?;
    for pd in 0..4u64 {
        w((PD_ADDR + pd * 0x1000) | 0x3, PDPT_ADDR + pd * 8)?;
        for i in 0..512u64 {
            let phys = ((pd * 512 + i) << 21) | 0x83; // present, writable, 2 MiB page
            w(phys, PD_ADDR + pd * 0x1000 + i * 8)?;
        }
    }
    Ok(())
}

/// Writes what `mode` needs in guest memory before [`entry_sregs`] can take effect:
/// the GDT at [`GDT_ADDR`] and, for [`EntryMode::Long64`], the identity page tables.
pub fn write_boot_tables(mem: &GuestMemoryMmap, mode: EntryMode) -> Result<()> {
    for (i, e) in mode.gdt().iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(MemoryError::write("write gdt"))?;
    }
    if let EntryMode::Long64 { .. } = mode {
        write_identity_page_tables(mem)?;
    }
    Ok(())
}

/// Sets the segment, descriptor-table and control registers of `mode` in `sregs`
/// (flat segments from the GDT of [`write_boot_tables`]; for long mode, paging on
/// the tables at [`PML4_ADDR`]).
pub fn entry_sregs(sregs: &mut kvm_sregs, mode: EntryMode) {
    let gdt = mode.gdt();
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = u16::try_from(gdt.len() * 8 - 1).unwrap_or(u16::MAX);
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], 3);
    match mode {
        EntryMode::Protected32 { .. } => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryMode::Long64 { .. } => {
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
}

/// The general registers at entry: instruction pointer and the boot argument.
fn entry_regs(mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Protected32 { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
        EntryMode::Long64 { entry, boot_params } => {
            regs.rip = entry;
            regs.rsi = boot_params;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
        }
    }
    regs
}

/// Puts the BSP in the entry state: boot tables in memory, segments, control
/// registers, general registers.
pub fn setup_entry(vcpu: &VcpuFd, mem: &GuestMemoryMmap, mode: EntryMode) -> Result<()> {
    write_boot_tables(mem, mode)?;
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(Error::kvm("get sregs"))?;
    entry_sregs(&mut sregs, mode);
    vcpu.set_sregs(&sregs).map_err(Error::kvm("set sregs"))?;
    vcpu.set_regs(&entry_regs(mode))
        .map_err(Error::kvm("set regs"))?;
    Ok(())
}

/// `(index, value)` pairs as the list `KVM_SET_MSRS` takes.
pub fn msr_list(pairs: &[(u32, u64)]) -> Result<Msrs> {
    let entries: Vec<kvm_msr_entry> = pairs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|_| Error::KvmCapability("KVM_SET_MSRS"))
}

/// Default x87/SSE state as after FNINIT.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<()> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::kvm("set fpu"))
}

/// Boot MSRs for the Linux entry: syscall MSRs cleared, fast strings on.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<()> {
    const MSRS: [(u32, u64); 9] = [
        (0x174, 0),       // IA32_SYSENTER_CS
        (0x175, 0),       // IA32_SYSENTER_ESP
        (0x176, 0),       // IA32_SYSENTER_EIP
        (0xc000_0081, 0), // STAR
        (0xc000_0082, 0), // LSTAR
        (0xc000_0083, 0), // CSTAR
        (0xc000_0084, 0), // SYSCALL_MASK
        (0xc000_0102, 0), // KERNEL_GS_BASE
        (0x1a0, 1),       // IA32_MISC_ENABLE: fast strings
    ];
    let set = vcpu
        .set_msrs(&msr_list(&MSRS)?)
        .map_err(Error::kvm("set msrs"))?;
    if set != MSRS.len() {
        tracing::debug!(set, wanted = MSRS.len(), "kvm accepted only some boot msrs");
    }
    Ok(())
}

/// The supported CPUID with this vCPU's APIC id and the hypervisor bit, less the
/// `hidden` bits; [`Error::CpuidNotHidden`] when KVM shows some of those all the same.
pub fn setup_cpuid(vcpu: &VcpuFd, base: &CpuId, apic_id: u8, hidden: &[CpuidMask]) -> Result<()> {
    let mut cpuid = base.clone();
    cpuid::guest_view(cpuid.as_mut_slice(), apic_id, hidden);
    if hidden.is_empty() {
        // Nothing to check: spare the read-back at every create.
        return vcpu.set_cpuid2(&cpuid).map_err(Error::kvm("set cpuid"));
    }
    kvm::set_cpuid(vcpu, &cpuid, hidden).map(drop)
}

/// LINT0 as ExtINT and LINT1 as NMI, as a BIOS leaves the BSP's local APIC.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<()> {
    const LINT0: usize = 0x350;
    const LINT1: usize = 0x360;
    const EXTINT: u32 = 7;
    const NMI: u32 = 4;
    let mut lapic = vcpu.get_lapic().map_err(Error::kvm("get lapic"))?;
    for (off, mode) in [(LINT0, EXTINT), (LINT1, NMI)] {
        let mut b = [0u8; 4];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = lapic.regs[off + i].to_ne_bytes()[0];
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, byte) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = std::ffi::c_char::from_ne_bytes([*byte]);
        }
    }
    vcpu.set_lapic(&lapic).map_err(Error::kvm("set lapic"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code64 = segment(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(
            (code64.l, code64.db, code64.limit, code64.selector),
            (1, 0, 0xffff_ffff, 8)
        );
        assert_eq!(
            (code64.type_, code64.present, code64.s, code64.unusable),
            (0xb, 1, 1, 0)
        );
        let data = segment(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!((data.db, data.g, data.type_, data.base), (1, 1, 3, 0));
        let tss = segment(gdt_entry(0x008b, 0x1234_5678, 0x67), 3);
        assert_eq!(
            (tss.base, tss.limit, tss.s, tss.g),
            (0x1234_5678, 0x67, 0, 0)
        );
        assert_eq!(segment(0, 0).unusable, 1);
    }
}
