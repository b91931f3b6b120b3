//! Tier-2 tests of `vinfra_vmm_core::state` against real KVM: a small real-mode guest runs
//! up to a port write, is captured (vCPU, VM, memory), restored into a fresh VM (in this
//! process, and in a child process), compared field by field, and then runs on from the
//! saved instruction.
//!
//! Each test first opens `/dev/kvm` and prints `SKIP: <why>` when it cannot (under
//! `CI=true` it fails instead).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Sizes and byte patterns here are small values on a 64-bit host.
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vinfra_testkit::{run, test_in_child};
use vinfra_vmm_core::boot::cpu_setup::{self, EntryMode, PDPT_ADDR, PD_ADDR, PML4_ADDR};
use vinfra_vmm_core::state::{self, MemoryLayout, VcpuState, VmFdState, VmState};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

/// Set in the child process: the directory holding the saved state.
const CHILD_DIR_ENV: &str = "VINFRA_STATE_TEST_CHILD_DIR";
/// Guest RAM size for the child-process test, MiB (override to measure larger guests).
const MEM_MIB_ENV: &str = "VINFRA_STATE_TEST_MEM_MIB";
/// How long the child of `restore_in_child_process` may take to restore and run.
const CHILD_LIMIT: Duration = Duration::from_secs(300);

const CODE_GPA: u64 = 0x1000;
const DATA_GPA: u64 = 0x2000;
const DATA_BYTE: u8 = 0x5a;
const EXIT_PORT: u16 = 0xf4;
const DONE_PORT: u16 = 0xf5;
/// Where the vCPU stands once the first `out` has completed.
const SAVED_RIP: u64 = 0x1004;
const RBX: u64 = 0x77;

/// Set in the child process: which CPU mode the saved guest runs in.
const CHILD_MODE_ENV: &str = "VINFRA_STATE_TEST_CHILD_MODE";

/// The CPU mode the test guest runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 16-bit real mode, as after reset.
    Real,
    /// 64-bit long mode with paging, set up as the VMM's own Linux entry does.
    Long,
}

impl Mode {
    fn code(self) -> &'static [u8] {
        match self {
            Mode::Real => REAL_CODE,
            Mode::Long => LONG_CODE,
        }
    }
}

/// The VMM's long-mode entry, pointed at the test program.
const LONG_ENTRY: EntryMode = EntryMode::Long64 {
    entry: CODE_GPA,
    boot_params: 0,
};

/// Real-mode guest: report 0x41, then (after the snapshot) report BL, copy the data byte
/// to the next address and report it, then signal done.
const REAL_CODE: &[u8] = &[
    0xb0, 0x41, // mov al, 0x41
    0xe6, 0xf4, // out 0xf4, al          <- snapshot after this one
    0x88, 0xd8, // mov al, bl
    0xe6, 0xf4, // out 0xf4, al
    0xa0, 0x00, 0x20, // mov al, [0x2000]
    0xa2, 0x01, 0x20, // mov [0x2001], al
    0xe6, 0xf4, // out 0xf4, al
    0xe6, 0xf5, // out 0xf5, al
    0xeb, 0xfe, // jmp $
];

/// The same program in 64-bit code (absolute addressing through a SIB byte).
const LONG_CODE: &[u8] = &[
    0xb0, 0x41, // mov al, 0x41
    0xe6, 0xf4, // out 0xf4, al          <- snapshot after this one
    0x88, 0xd8, // mov al, bl
    0xe6, 0xf4, // out 0xf4, al
    0x8a, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00, // mov al, [0x2000]
    0x88, 0x04, 0x25, 0x01, 0x20, 0x00, 0x00, // mov [0x2001], al
    0xe6, 0xf4, // out 0xf4, al
    0xe6, 0xf5, // out 0xf5, al
    0xeb, 0xfe, // jmp $
];

/// MSRs the source guest gets non-default values for, to prove they travel.
const TEST_MSRS: &[(u32, u64)] = &[
    (0x174, 0x10),                        // SYSENTER_CS
    (0x175, 0x1234_5000),                 // SYSENTER_ESP
    (0x176, 0xffff_8000_0012_3456),       // SYSENTER_EIP
    (0xc000_0081, 0x0023_0010_0000_0000), // STAR
    (0xc000_0082, 0xffff_ffff_8100_0000), // LSTAR
    (0xc000_0083, 0xffff_ffff_8100_1000), // CSTAR
    (0xc000_0084, 0x4_7700),              // SFMASK
    (0xc000_0102, 0xffff_8880_0000_0000), // KERNEL_GS_BASE
    (0x277, 0x0006_0606_0006_0606),       // PAT
];

/// KVM, or `None` after vinfra-testkit's `SKIP` line (a failure under `CI=true`).
fn kvm_or_skip() -> Option<Kvm> {
    vinfra_testkit::kvm_or_skip().then(|| Kvm::new().unwrap())
}

/// Deterministic content: the code, the data byte, and a pattern over some pages spread
/// across memory (the rest stays zero, so the memory file is sparse).
fn fill(mem: &GuestMemoryMmap<AtomicBitmap>, mode: Mode) {
    mem.write_slice(mode.code(), GuestAddress(CODE_GPA))
        .unwrap();
    if mode == Mode::Long {
        cpu_setup::write_boot_tables(mem, LONG_ENTRY).unwrap();
        // Accessed (and dirty) bits preset on the entries the run walks, so the run does
        // not change memory and the child can compare against a fresh fill.
        for (gpa, bits) in [(PML4_ADDR, 0x20u64), (PDPT_ADDR, 0x20), (PD_ADDR, 0x60)] {
            let entry: u64 = mem.read_obj(GuestAddress(gpa)).unwrap();
            mem.write_obj(entry | bits, GuestAddress(gpa)).unwrap();
        }
    }
    mem.write_obj(DATA_BYTE, GuestAddress(DATA_GPA)).unwrap();
    let size = mem.iter().map(|r| r.len()).sum::<u64>();
    for (i, gpa) in pattern_pages(size).enumerate() {
        let page: Vec<u8> = (0..4096u32)
            .map(|b| (b as u8) ^ (i as u8).wrapping_mul(31))
            .collect();
        mem.write_slice(&page, GuestAddress(gpa)).unwrap();
    }
}

fn pattern_pages(size: u64) -> impl Iterator<Item = u64> {
    (0..16u64).map(move |i| 0x10_0000 + i * ((size - 0x10_0000) / 16) / 4096 * 4096)
}

fn check_memory(mem: &GuestMemoryMmap<AtomicBitmap>, expected: &GuestMemoryMmap<AtomicBitmap>) {
    for (r, e) in mem.iter().zip(expected.iter()) {
        assert_eq!(r.start_addr(), e.start_addr());
        assert_eq!(r.len(), e.len());
        let mut a = vec![0u8; r.len() as usize];
        let mut b = vec![0u8; e.len() as usize];
        r.read_slice(&mut a, MemoryRegionAddress(0)).unwrap();
        e.read_slice(&mut b, MemoryRegionAddress(0)).unwrap();
        assert!(a == b, "guest memory differs after restore");
    }
}

/// A VM set up the way a VMM would at boot: TSS, irqchip, PIT, memory slots.
fn new_vm(kvm: &Kvm, mem: &GuestMemoryMmap<AtomicBitmap>) -> VmFd {
    let vm = kvm.create_vm().unwrap();
    vm.set_tss_address(0xfffb_d000).unwrap();
    vm.create_irq_chip().unwrap();
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .unwrap();
    for (slot, region) in mem.iter().enumerate() {
        let slot_region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region stays mapped for as long as the VM lives (the test keeps
        // `mem` alive beside the VM).
        unsafe { vm.set_user_memory_region(slot_region) }.unwrap();
    }
    vm
}

/// Runs until the next port write and returns (port, byte); other exits fail the test.
fn run_to_out(vcpu: &mut VcpuFd) -> (u16, u8) {
    for _ in 0..16 {
        match vcpu.run().unwrap() {
            VcpuExit::IoOut(port, data) => return (port, data[0]),
            VcpuExit::IoIn(_, data) => data.fill(0),
            other => panic!("unexpected vcpu exit {other:?}"),
        }
    }
    panic!("guest did not write a port within 16 exits");
}

/// Lets KVM complete the in-flight `out` (as a pausing VMM does with immediate_exit).
fn complete_pending_io(vcpu: &mut VcpuFd) {
    vcpu.set_kvm_immediate_exit(1);
    let err = vcpu
        .run()
        .expect_err("KVM_RUN with immediate_exit must return EINTR");
    assert_eq!(err.errno(), libc::EINTR);
    vcpu.set_kvm_immediate_exit(0);
}

struct Saved {
    state: VmState,
    mem: GuestMemoryMmap<AtomicBitmap>,
    _vm: VmFd,
    _vcpus: Vec<VcpuFd>,
}

/// Boots the guest to its first port write, captures everything, writes the two files.
fn run_source_and_save(kvm: &Kvm, mode: Mode, mem_bytes: usize, dir: &Path) -> Saved {
    let mem =
        GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), mem_bytes)]).unwrap();
    fill(&mem, mode);
    let vm = new_vm(kvm, &mem);
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.set_cpuid2(&cpuid).unwrap();
    // A second vCPU that never runs: an application processor still waiting for INIT/SIPI.
    let ap = vm.create_vcpu(1).unwrap();
    ap.set_cpuid2(&cpuid).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    match mode {
        Mode::Real => {
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
        }
        Mode::Long => cpu_setup::entry_sregs(&mut sregs, LONG_ENTRY),
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE_GPA;
    regs.rflags = 2;
    regs.rbx = RBX;
    regs.rcx = 0xdead_beef_cafe_f00d;
    regs.rsp = 0x8000;
    vcpu.set_regs(&regs).unwrap();
    let written = vcpu
        .set_msrs(&cpu_setup::msr_list(TEST_MSRS).unwrap())
        .unwrap();
    assert_eq!(
        written,
        TEST_MSRS.len(),
        "source refused test msr {:#x}",
        TEST_MSRS[written].0
    );

    assert_eq!(run_to_out(&mut vcpu), (EXIT_PORT, 0x41));
    complete_pending_io(&mut vcpu);

    let vcpu_state = state::capture_vcpu(kvm, &vcpu).unwrap();
    assert_eq!(vcpu_state.regs.rip, SAVED_RIP);
    let ap_state = state::capture_vcpu(kvm, &ap).unwrap();
    assert_ne!(
        ap_state.mp_state, vcpu_state.mp_state,
        "ap should not be runnable"
    );
    let saved = VmState {
        vcpus: vec![vcpu_state, ap_state],
        vm: state::capture_vm(&vm).unwrap(),
        devices: vec![state::DeviceBlob::new("exit-port", "0xf4", &EXIT_PORT).unwrap()],
        memory: MemoryLayout::of(&mem),
    };
    let state_bytes = state::save_state(&saved, &dir.join("vm.state")).unwrap();
    let stats = state::save_memory(&mem, &dir.join("vm.mem")).unwrap();
    println!(
        "saved: state {} bytes, {} msrs; memory {} MiB guest, {} bytes written, file {} bytes apparent / {} allocated",
        state_bytes,
        saved.vcpus[0].msrs.len(),
        stats.guest_bytes >> 20,
        stats.data_bytes_written,
        stats.file_apparent_bytes,
        stats.file_allocated_bytes
    );
    Saved {
        state: saved,
        mem,
        _vm: vm,
        _vcpus: vec![vcpu, ap],
    }
}

fn msr_map(s: &VcpuState) -> BTreeMap<u32, u64> {
    s.msrs.iter().map(|e| (e.index, e.data)).collect()
}

/// Field-by-field comparison of a restored vCPU with the saved one. Only what time moves
/// may differ: the TSC (forward, and by little) and the LAPIC timer's current count.
fn compare_vcpu(id: usize, saved: &VcpuState, now: &VcpuState) {
    assert_eq!(now.regs, saved.regs, "regs");
    assert_eq!(now.sregs, saved.sregs, "sregs");
    assert_eq!(now.fpu, saved.fpu, "fpu");
    assert_eq!(now.xsave, saved.xsave, "xsave");
    assert_eq!(now.xcrs, saved.xcrs, "xcrs");
    assert_eq!(now.debugregs, saved.debugregs, "debugregs");
    assert_eq!(now.vcpu_events, saved.vcpu_events, "vcpu events");
    assert_eq!(now.mp_state, saved.mp_state, "mp state");
    assert_eq!(now.cpuid, saved.cpuid, "cpuid");
    let (a, b) = (msr_map(saved), msr_map(now));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "msr set"
    );
    for (index, value) in &a {
        let now_value = b[index];
        if *index == 0x10 {
            assert!(now_value >= *value, "tsc went backwards");
        } else {
            assert_eq!(now_value, *value, "msr {index:#x}");
        }
    }
    for &(index, data) in TEST_MSRS.iter().filter(|_| id == 0) {
        assert_eq!(
            b.get(&index),
            Some(&data),
            "test msr {index:#x} not restored"
        );
    }
    let lapic = |s: &VcpuState| -> Vec<u8> {
        let mut bytes: Vec<u8> = s.lapic.regs.iter().map(|&b| b as u8).collect();
        bytes[0x390..0x394].fill(0); // timer current count
        bytes
    };
    assert_eq!(lapic(now), lapic(saved), "lapic");
}

fn compare_vm(saved: &VmFdState, now: &VmFdState) {
    assert_eq!(now.irqchip, saved.irqchip, "irqchip");
    for (i, (a, b)) in saved
        .pit2
        .channels
        .iter()
        .zip(&now.pit2.channels)
        .enumerate()
    {
        let strip = |c: &kvm_bindings::kvm_pit_channel_state| kvm_bindings::kvm_pit_channel_state {
            count_load_time: 0,
            ..*c
        };
        assert_eq!(strip(b), strip(a), "pit channel {i}");
    }
    assert_eq!(now.pit2.flags, saved.pit2.flags, "pit flags");
    assert!(
        now.clock.clock >= saved.clock.clock,
        "kvmclock went backwards"
    );
    assert!(
        now.clock.clock - saved.clock.clock < Duration::from_secs(5).as_nanos() as u64,
        "kvmclock jumped"
    );
}

/// Restores from `dir` into a fresh VM, checks it against `saved`, runs the guest on.
/// Returns the time from opening the files to the first exit of the resumed guest.
fn restore_check_and_run(
    kvm: &Kvm,
    mode: Mode,
    dir: &Path,
    expected_mem: Option<&GuestMemoryMmap<AtomicBitmap>>,
) -> Duration {
    let started = Instant::now();
    let saved = state::load_state(&dir.join("vm.state")).unwrap();
    let decoded = started.elapsed();
    let mem = state::load_memory(&dir.join("vm.mem")).unwrap();
    let loaded = started.elapsed();
    assert_eq!(MemoryLayout::of(&mem), saved.memory);
    let vm = new_vm(kvm, &mem);
    let mut vcpus: Vec<VcpuFd> = (0..saved.vcpus.len())
        .map(|id| vm.create_vcpu(id as u64).unwrap())
        .collect();
    let created = started.elapsed();
    state::restore_vm(&vm, &saved.vm).unwrap();
    for (vcpu, vcpu_state) in vcpus.iter().zip(&saved.vcpus) {
        state::restore_vcpu(vcpu, vcpu_state).unwrap();
    }
    let restore_time = started.elapsed();
    println!(
        "restore phases (cumulative): read+decode {decoded:?}, load_memory {loaded:?}, \
         vm+vcpu created {created:?}, restore_vm+restore_vcpu {restore_time:?}"
    );

    for (id, (vcpu, vcpu_state)) in vcpus.iter().zip(&saved.vcpus).enumerate() {
        compare_vcpu(id, vcpu_state, &state::capture_vcpu(kvm, vcpu).unwrap());
    }
    let vcpu = &mut vcpus[0];
    compare_vm(&saved.vm, &state::capture_vm(&vm).unwrap());
    let long_mode_active = saved.vcpus[0].sregs.efer & (1 << 10) != 0;
    assert_eq!(long_mode_active, mode == Mode::Long, "efer.lma");
    let port: u16 = saved.devices[0].decode().unwrap();
    assert_eq!(port, EXIT_PORT);
    match expected_mem {
        Some(expected) => check_memory(&mem, expected),
        None => {
            let fresh = GuestMemoryMmap::<AtomicBitmap>::from_ranges(
                &saved
                    .memory
                    .regions
                    .iter()
                    .map(|r| (GuestAddress(r.guest_addr), r.size as usize))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            fill(&fresh, mode);
            check_memory(&mem, &fresh);
        }
    }

    // The restored vCPU continues at the saved RIP with the saved registers and memory.
    let run_started = Instant::now();
    assert_eq!(run_to_out(vcpu), (EXIT_PORT, RBX as u8));
    let first_exit = run_started.elapsed();
    assert_eq!(run_to_out(vcpu), (EXIT_PORT, DATA_BYTE));
    assert_eq!(run_to_out(vcpu).0, DONE_PORT);
    let copied: u8 = mem.read_obj(GuestAddress(DATA_GPA + 1)).unwrap();
    assert_eq!(copied, DATA_BYTE, "guest write after restore not visible");
    restore_time + first_exit
}

#[test]
fn restore_real_mode_guest_in_fresh_vm_of_same_process() {
    let Some(kvm) = kvm_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let saved = run_source_and_save(&kvm, Mode::Real, 2 << 20, dir.path());
    assert!(saved.state.vcpus[0].msrs.len() > TEST_MSRS.len());
    let took = restore_check_and_run(&kvm, Mode::Real, dir.path(), Some(&saved.mem));
    println!("restore to first guest exit: {took:?} (2 MiB)");
}

#[test]
fn restore_long_mode_guest_in_fresh_vm_of_same_process() {
    let Some(kvm) = kvm_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let saved = run_source_and_save(&kvm, Mode::Long, 4 << 20, dir.path());
    let took = restore_check_and_run(&kvm, Mode::Long, dir.path(), Some(&saved.mem));
    println!("restore to first guest exit: {took:?} (4 MiB)");
}

#[test]
fn restore_in_child_process() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mib: usize = std::env::var(MEM_MIB_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let _saved = run_source_and_save(&kvm, Mode::Long, mib << 20, dir.path());
    println!("source run + save: {:?}", started.elapsed());
    let out = run(
        test_in_child("child_side_of_restore_in_child_process")
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_MODE_ENV, "long"),
        CHILD_LIMIT,
    );
    println!(
        "child stdout:\n{}\nchild stderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(out.success(), "child restore failed: {}", out.status);
    assert!(
        out.stdout.contains("restored in child"),
        "child did not run the restore"
    );
}

/// The child half of `restore_in_child_process`; does nothing when run on its own.
#[test]
fn child_side_of_restore_in_child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let kvm = Kvm::new().expect("child cannot open /dev/kvm although the parent could");
    let mode = match std::env::var(CHILD_MODE_ENV).as_deref() {
        Ok("long") => Mode::Long,
        _ => Mode::Real,
    };
    let took = restore_check_and_run(&kvm, mode, Path::new(&dir), None);
    println!("restored in child: restore to first guest exit {took:?}");
}

#[test]
fn restore_rejects_foreign_irqchip_blob() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let vm = new_vm(&kvm, &mem);
    let mut vm_state = state::capture_vm(&vm).unwrap();
    vm_state.irqchip.ioapic.truncate(100);
    assert!(matches!(
        state::restore_vm(&vm, &vm_state),
        Err(state::StateError::IrqchipSize { .. })
    ));
}
