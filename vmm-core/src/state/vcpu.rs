//! vCPU state: what KVM holds for one vCPU, captured and restored through its ioctls.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, Xsave,
    KVM_MAX_CPUID_ENTRIES, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

use super::error::{Result, StateError};

/// Everything KVM keeps for one x86-64 vCPU that a paused guest needs to continue.
///
/// Field order is the on-disk order (postcard): changing it needs a format version bump
/// (see `STATE-FORMAT.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID entries set on the vCPU (`KVM_GET_CPUID2`).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// MSR values that KVM returned, in ascending index order (`KVM_GET_MSRS`).
    pub msrs: Vec<kvm_msr_entry>,
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// Legacy FPU/SSE state (`KVM_GET_FPU`); XSAVE below supersedes it on restore.
    pub fpu: FpuState,
    /// The XSAVE area as 32-bit words (`KVM_GET_XSAVE2`, or `KVM_GET_XSAVE` when the host
    /// lacks `KVM_CAP_XSAVE2`); empty when the host has no XSAVE at all.
    pub xsave: Vec<u32>,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers DR0-DR3, DR6, DR7.
    pub debugregs: kvm_debugregs,
    /// The in-kernel local APIC's register page.
    pub lapic: kvm_lapic_state,
    /// Pending exceptions, interrupts, NMIs, SMM and interrupt shadow.
    pub vcpu_events: kvm_vcpu_events,
    /// Runnable, halted, waiting for INIT/SIPI.
    pub mp_state: kvm_mp_state,
    /// The guest TSC frequency in kHz, when KVM reports it (`KVM_GET_TSC_KHZ`).
    pub tsc_khz: Option<u32>,
}

/// The legacy FPU/SSE register file (`struct kvm_fpu`), in a serialisable form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    /// x87 registers ST0-ST7 (80 bits each, padded to 16 bytes).
    pub fpr: [[u8; 16]; 8],
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word.
    pub fsw: u16,
    /// Abridged x87 tag word.
    pub ftwx: u8,
    /// Last x87 opcode.
    pub last_opcode: u16,
    /// Last x87 instruction pointer.
    pub last_ip: u64,
    /// Last x87 data pointer.
    pub last_dp: u64,
    /// XMM0-XMM15.
    pub xmm: [[u8; 16]; 16],
    /// SSE control and status register.
    pub mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        FpuState {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
    }
}

impl From<&FpuState> for kvm_fpu {
    fn from(f: &FpuState) -> Self {
        kvm_fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        }
    }
}

/// MSRs saved even where `KVM_GET_MSR_INDEX_LIST` does not list them (it omits the MTRRs,
/// for one). Those the host cannot read are skipped at capture.
pub const EXTRA_MSRS: &[u32] = &[
    0x0000_0010, // IA32_TSC
    0x0000_001b, // IA32_APIC_BASE
    0x0000_003b, // IA32_TSC_ADJUST
    0x0000_0174, // IA32_SYSENTER_CS
    0x0000_0175, // IA32_SYSENTER_ESP
    0x0000_0176, // IA32_SYSENTER_EIP
    0x0000_01a0, // IA32_MISC_ENABLE
    0x0000_0277, // IA32_PAT
    0x0000_02ff, // IA32_MTRR_DEF_TYPE
    0x0000_0250, // IA32_MTRR_FIX64K_00000
    0x0000_0258, // IA32_MTRR_FIX16K_80000
    0x0000_0259, // IA32_MTRR_FIX16K_A0000
    0x0000_0268, // IA32_MTRR_FIX4K_C0000 .. F8000
    0x0000_0269,
    0x0000_026a,
    0x0000_026b,
    0x0000_026c,
    0x0000_026d,
    0x0000_026e,
    0x0000_026f,
    0x0000_0200, // IA32_MTRR_PHYSBASE0 / PHYSMASK0 .. 7
    0x0000_0201,
    0x0000_0202,
    0x0000_0203,
    0x0000_0204,
    0x0000_0205,
    0x0000_0206,
    0x0000_0207,
    0x0000_0208,
    0x0000_0209,
    0x0000_020a,
    0x0000_020b,
    0x0000_020c,
    0x0000_020d,
    0x0000_020e,
    0x0000_020f,
    0x0000_06e0, // IA32_TSC_DEADLINE
    0xc000_0080, // EFER
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0103, // TSC_AUX
    0x0000_0011, // KVM wall clock (legacy)
    0x0000_0012, // KVM system time (legacy)
    0x4b56_4d00, // KVM wall clock
    0x4b56_4d01, // KVM system time
    0x4b56_4d02, // KVM async page fault
    0x4b56_4d03, // KVM steal time
    0x4b56_4d04, // KVM PV EOI
    0x4b56_4d05, // KVM poll control
];

/// Size of the XSAVE buffer handed to `KVM_SET_XSAVE` at least, in 32-bit words (64 KiB).
///
/// `KVM_SET_XSAVE` copies as many bytes as the vCPU's XSAVE size, which restore cannot ask
/// for without the `Kvm` handle; the largest XSAVE area of any x86 CPU so far (AMX included)
/// is about 11 KiB, so a zero-padded 64 KiB buffer always covers it. Components past the
/// saved data stay zero and are marked absent by the saved XSTATE_BV.
const XSAVE_RESTORE_WORDS: usize = 16 * 1024;

/// Words in the fixed part of `struct kvm_xsave` (4 KiB).
const XSAVE_REGION_WORDS: usize = 1024;

/// The MSR indices that [`capture_vcpu`] asks KVM for: `KVM_GET_MSR_INDEX_LIST` plus
/// [`EXTRA_MSRS`], sorted and without duplicates.
pub fn msrs_to_save(kvm: &Kvm) -> Result<Vec<u32>> {
    let list = kvm
        .get_msr_index_list()
        .map_err(StateError::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    let mut indices: Vec<u32> = list.as_slice().to_vec();
    indices.extend_from_slice(EXTRA_MSRS);
    indices.sort_unstable();
    indices.dedup();
    Ok(indices)
}

/// Captures the state of a vCPU that is not running (its thread is outside `KVM_RUN`).
///
/// The vCPU must have re-entered `KVM_RUN` once after its last I/O or MMIO exit (for
/// instance with `immediate_exit` set), so that KVM has completed that instruction: only
/// then do the registers describe a consistent point. Other vCPUs of the VM must be stopped
/// too (`KVM_GET_VCPU_EVENTS` is not safe against running siblings).
pub fn capture_vcpu(kvm: &Kvm, vcpu: &VcpuFd) -> Result<VcpuState> {
    // KVM_GET_MP_STATE may deliver pending INIT/SIPI into the LAPIC and registers, so it
    // runs first; KVM_GET_VCPU_EVENTS runs last because earlier GETs can still settle
    // pending events (the order Firecracker documents for the same reasons).
    let mp_state = vcpu
        .get_mp_state()
        .map_err(StateError::kvm("KVM_GET_MP_STATE"))?;
    let regs = vcpu.get_regs().map_err(StateError::kvm("KVM_GET_REGS"))?;
    let sregs = vcpu.get_sregs().map_err(StateError::kvm("KVM_GET_SREGS"))?;
    let fpu = FpuState::from(&vcpu.get_fpu().map_err(StateError::kvm("KVM_GET_FPU"))?);
    let xsave = capture_xsave(kvm, vcpu)?;
    let xcrs = if kvm.check_extension(Cap::Xcrs) {
        vcpu.get_xcrs().map_err(StateError::kvm("KVM_GET_XCRS"))?
    } else {
        kvm_xcrs::default()
    };
    let debugregs = vcpu
        .get_debug_regs()
        .map_err(StateError::kvm("KVM_GET_DEBUGREGS"))?;
    let lapic = vcpu.get_lapic().map_err(StateError::kvm("KVM_GET_LAPIC"))?;
    let tsc_khz = vcpu.get_tsc_khz().ok();
    let msrs = read_msrs(vcpu, &msrs_to_save(kvm)?)?;
    let vcpu_events = vcpu
        .get_vcpu_events()
        .map_err(StateError::kvm("KVM_GET_VCPU_EVENTS"))?;
    let cpuid = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(StateError::kvm("KVM_GET_CPUID2"))?
        .as_slice()
        .to_vec();
    tracing::debug!(
        msrs = msrs.len(),
        cpuid = cpuid.len(),
        xsave_bytes = xsave.len() * 4,
        rip = regs.rip,
        "captured vcpu"
    );
    Ok(VcpuState {
        cpuid,
        msrs,
        regs,
        sregs,
        fpu,
        xsave,
        xcrs,
        debugregs,
        lapic,
        vcpu_events,
        mp_state,
        tsc_khz,
    })
}

/// Restores a captured state into a freshly created vCPU that has not run yet.
///
/// The vCPU must belong to a VM on which [`super::restore_vm`] already ran (the LAPIC
/// state refers to the in-kernel irqchip) and must have the same vCPU id as the one
/// captured. The host is assumed to have the same CPU model (see `STATE-FORMAT.md`).
pub fn restore_vcpu(vcpu: &VcpuFd, state: &VcpuState) -> Result<()> {
    // Order, and why:
    // - CPUID first: which MSRs and XSAVE components KVM accepts depends on it.
    // - TSC frequency before the TSC MSR value, which KVM interprets at that frequency.
    // - SET_REGS clears pending exceptions, so it precedes SET_VCPU_EVENTS, which is last.
    // - SET_SREGS restores the APIC base, which SET_LAPIC needs.
    // - SET_LAPIC precedes SET_MSRS: the TSC deadline MSR is accepted only by a
    //   configured LAPIC.
    // - FPU before XSAVE: XSAVE is the superset and wins.
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|source| StateError::Fam {
        what: "cpuid",
        source,
    })?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(StateError::kvm("KVM_SET_CPUID2"))?;
    if let Some(khz) = state.tsc_khz {
        restore_tsc_khz(vcpu, khz)?;
    }
    vcpu.set_mp_state(state.mp_state)
        .map_err(StateError::kvm("KVM_SET_MP_STATE"))?;
    vcpu.set_regs(&state.regs)
        .map_err(StateError::kvm("KVM_SET_REGS"))?;
    vcpu.set_sregs(&state.sregs)
        .map_err(StateError::kvm("KVM_SET_SREGS"))?;
    vcpu.set_fpu(&kvm_fpu::from(&state.fpu))
        .map_err(StateError::kvm("KVM_SET_FPU"))?;
    restore_xsave(vcpu, &state.xsave)?;
    if state.xcrs.nr_xcrs > 0 {
        vcpu.set_xcrs(&state.xcrs)
            .map_err(StateError::kvm("KVM_SET_XCRS"))?;
    }
    vcpu.set_debug_regs(&state.debugregs)
        .map_err(StateError::kvm("KVM_SET_DEBUGREGS"))?;
    vcpu.set_lapic(&state.lapic)
        .map_err(StateError::kvm("KVM_SET_LAPIC"))?;
    write_msrs(vcpu, &state.msrs)?;
    vcpu.set_vcpu_events(&state.vcpu_events)
        .map_err(StateError::kvm("KVM_SET_VCPU_EVENTS"))?;
    tracing::debug!(rip = state.regs.rip, "restored vcpu");
    Ok(())
}

/// Reads `indices` in batches; an MSR that KVM refuses is skipped, the rest are kept.
fn read_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    // Each pass consumes at least one index, so this runs at most `indices.len()` times.
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|source| StateError::Fam {
            what: "msrs",
            source,
        })?;
        let read = vcpu
            .get_msrs(&mut msrs)
            .map_err(StateError::kvm("KVM_GET_MSRS"))?
            .min(batch.len());
        out.extend_from_slice(&msrs.as_slice()[..read]);
        if read < batch.len() {
            tracing::trace!(msr = batch[read], "msr not readable, not saved");
            rest = &rest[read + 1..];
        } else {
            rest = &rest[read..];
        }
    }
    Ok(out)
}

/// Writes all saved MSRs; KVM refusing any of them is an error, since the guest read it.
fn write_msrs(vcpu: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<()> {
    for batch in entries.chunks(KVM_MAX_MSR_ENTRIES) {
        let msrs = Msrs::from_entries(batch).map_err(|source| StateError::Fam {
            what: "msrs",
            source,
        })?;
        let written = vcpu
            .set_msrs(&msrs)
            .map_err(StateError::kvm("KVM_SET_MSRS"))?;
        if written < batch.len() {
            return Err(StateError::MsrRefused {
                index: batch[written].index,
                written,
                expected: batch.len(),
            });
        }
    }
    Ok(())
}

fn capture_xsave(kvm: &Kvm, vcpu: &VcpuFd) -> Result<Vec<u32>> {
    if !kvm.check_extension(Cap::Xsave) {
        return Ok(Vec::new());
    }
    let size = usize::try_from(kvm.check_extension_int(Cap::Xsave2)).unwrap_or(0);
    if size == 0 {
        let xsave = vcpu.get_xsave().map_err(StateError::kvm("KVM_GET_XSAVE"))?;
        return Ok(xsave.region.to_vec());
    }
    let extra_words = size
        .saturating_sub(std::mem::size_of::<kvm_xsave>())
        .div_ceil(4);
    let mut xsave = Xsave::new(extra_words).map_err(|source| StateError::Fam {
        what: "xsave",
        source,
    })?;
    // SAFETY: `xsave` holds `size` bytes or more, the size KVM_CAP_XSAVE2 just reported for
    // this process; this module never enables dynamic XSTATE features in between.
    unsafe { vcpu.get_xsave2(&mut xsave) }.map_err(StateError::kvm("KVM_GET_XSAVE2"))?;
    let mut words = xsave.as_fam_struct_ref().xsave.region.to_vec();
    words.extend_from_slice(xsave.as_slice());
    Ok(words)
}

fn restore_xsave(vcpu: &VcpuFd, words: &[u32]) -> Result<()> {
    if words.is_empty() {
        return Ok(());
    }
    let total = words.len().max(XSAVE_RESTORE_WORDS);
    let mut xsave = Xsave::new(total - XSAVE_REGION_WORDS).map_err(|source| StateError::Fam {
        what: "xsave",
        source,
    })?;
    let (head, tail) = words.split_at(words.len().min(XSAVE_REGION_WORDS));
    // SAFETY: only plain integers are written; the length of the flexible array is untouched.
    let fixed = unsafe { &mut xsave.as_mut_fam_struct().xsave.region };
    fixed[..head.len()].copy_from_slice(head);
    xsave.as_mut_slice()[..tail.len()].copy_from_slice(tail);
    // SAFETY: the buffer holds at least XSAVE_RESTORE_WORDS words, more than the XSAVE size
    // of any x86 CPU (see the constant), so KVM never reads past it.
    unsafe { vcpu.set_xsave2(&xsave) }.map_err(StateError::kvm("KVM_SET_XSAVE"))
}

/// Puts the saved TSC frequency back when the new vCPU's differs by more than 250 ppm
/// (the tolerance QEMU and Firecracker use for calibration noise).
fn restore_tsc_khz(vcpu: &VcpuFd, saved_khz: u32) -> Result<()> {
    let Ok(current) = vcpu.get_tsc_khz() else {
        return Ok(());
    };
    let diff = u64::from(current.abs_diff(saved_khz));
    if diff * 1_000_000 <= u64::from(saved_khz) * 250 {
        return Ok(());
    }
    tracing::info!(
        saved_khz,
        current,
        "scaling guest tsc to the saved frequency"
    );
    vcpu.set_tsc_khz(saved_khz)
        .map_err(StateError::kvm("KVM_SET_TSC_KHZ"))
}
