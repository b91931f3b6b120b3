//! Tier 2: a VM created before its state arrives (the live-migration destination),
//! restored from a running guest's captured state (each VM in a child process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::config;
use vinfra_testkit::{guest, isolated, kvm_or_skip, Console};
use vinfra_vmm_core::memory::GuestMemoryMmap;
use vinfra_vmm_core::state::VmState;
use vinfra_vmm_core::{Error, ExitReason, IncomingVm, PowerState, SnapshotMismatch, Vm, VmConfig};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
};

const T: Duration = Duration::from_secs(20);
const CHILD: Duration = Duration::from_secs(120);

fn vm_config(kernel: PathBuf, con: &Console, mib: u64) -> VmConfig {
    config(kernel, con)
        .memory_mib(mib)
        .cmdline("workload.mib=4 workload.rate=1")
}

/// The guest-physical addresses of the pages of `mem` that are not all zeros (what a
/// migration's first round sends).
fn nonzero_pages(mem: &GuestMemoryMmap) -> Vec<GuestAddress> {
    const ZERO: [u8; 4096] = [0; 4096];
    let mut page = [0u8; 4096];
    let mut pages = Vec::new();
    for r in mem.iter() {
        for off in (0..r.len()).step_by(page.len()) {
            r.read_slice(&mut page, MemoryRegionAddress(off)).unwrap();
            // Slice equality is one memcmp, quick even in a debug build.
            if page != ZERO {
                pages.push(r.start_addr().unchecked_add(off));
            }
        }
    }
    pages
}

/// Copies `pages` from `src` to `dst`.
fn copy_pages(src: &GuestMemoryMmap, dst: &GuestMemoryMmap, pages: &[GuestAddress]) {
    let mut page = [0u8; 4096];
    for &gpa in pages {
        src.read_slice(&mut page, gpa).unwrap();
        dst.write_slice(&page, gpa).unwrap();
    }
}

/// Runs the workload guest with `vcpus` until it prints `until`, pauses it and captures
/// its state; the VM is returned paused so its RAM can be copied.
fn source(kernel: PathBuf, con: &Console, mib: u64, vcpus: u32, until: &str) -> (Vm, VmState) {
    let mut src = Vm::create(vm_config(kernel, con, mib).vcpus(vcpus)).unwrap();
    src.start().unwrap();
    con.wait_for(until, T);
    src.pause().unwrap();
    let state = src.capture_state().unwrap();
    (src, state)
}

/// The migration destination: the VM is made first, the RAM written into it while
/// nothing runs, then the state applied; the guest carries on from where it was, with
/// dirty logging off.
#[test]
fn an_incoming_vm_takes_memory_then_state_and_runs_on() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "an_incoming_vm_takes_memory_then_state_and_runs_on",
        CHILD,
        || {
            let Some(k) = guest("workload") else { return };
            let con = Console::default();
            let (src, state) = source(k.clone(), &con, 64, 1, "HB 2\n");

            let con2 = Console::default();
            let incoming = Vm::incoming(vm_config(k, &con2, 64)).unwrap();
            println!("{incoming:?}");
            let pages = nonzero_pages(src.memory());
            copy_pages(src.memory(), incoming.memory(), &pages);
            println!("copied {} non-zero pages", pages.len());
            drop(src);
            let mut dst = incoming.restore(state).unwrap();
            assert_eq!(dst.power_state(), PowerState::Paused);
            assert!(!dst.dirty_log_enabled());
            assert!(matches!(
                dst.fetch_and_clear_dirty(),
                Err(Error::InvalidState { .. })
            ));
            dst.resume().unwrap();
            con2.wait_for("HB 3\n", T);
            assert!(!con2.text().contains("HB 2\n"), "{}", con2.text());
            dst.serial_input(b"ping 5\n");
            con2.wait_for("PONG 5\n", T);
            dst.serial_input(b"exit 4\n");
            assert_eq!(dst.wait_timeout(T), Some(ExitReason::Poweroff { code: 4 }));
        },
    );
}

/// A state that does not fit the incoming VM's configuration is refused with the
/// typed mismatch, whether the vCPU count or the memory size differs.
#[test]
fn an_incoming_vm_refuses_a_state_of_another_shape() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "an_incoming_vm_refuses_a_state_of_another_shape",
        CHILD,
        || {
            let Some(k) = guest("workload") else { return };
            let con = Console::default();
            let (_src, state) = source(k.clone(), &con, 64, 1, "HB 2\n");
            let e = IncomingVm::new(vm_config(k.clone(), &con, 64).vcpus(2))
                .unwrap()
                .restore(state.clone())
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::SnapshotMismatch(SnapshotMismatch::Vcpus {
                        saved: 1,
                        configured: 2
                    })
                ),
                "{e}"
            );
            let e = IncomingVm::new(vm_config(k.clone(), &con, 128))
                .unwrap()
                .restore(state.clone())
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::SnapshotMismatch(SnapshotMismatch::MemorySize { mib: 128, .. })
                ),
                "{e}"
            );
            // The hypervisor bit can be hidden on any KVM; the saved guest was shown it.
            let hide = "1.0.ecx:0x80000000".parse().unwrap();
            let e = IncomingVm::new(vm_config(k.clone(), &con, 64).hide_cpuid(hide))
                .unwrap()
                .restore(state.clone())
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::SnapshotMismatch(SnapshotMismatch::CpuidHidden { mask }) if mask == hide
                ),
                "{e}"
            );
            // The older one-call form checks the same, before it touches KVM.
            let mem = vinfra_vmm_core::memory::create(128 << 20).unwrap();
            let e = Vm::restore_from_state(vm_config(k, &con, 128), state, mem).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::SnapshotMismatch(SnapshotMismatch::MemorySize { .. })
                ),
                "{e}"
            );
        },
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// How much of a restore [`IncomingVm`] moves ahead of the switchover, for a 512 MiB
/// VM: `IncomingVm::restore` against `Vm::restore_from_state` (both given memory that
/// already holds the guest's RAM). Prints the figures; checks only that the split is
/// not slower.
#[test]
fn incoming_restore_is_quicker_than_restore_from_state_512mib() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "incoming_restore_is_quicker_than_restore_from_state_512mib",
        CHILD,
        || {
            let Some(k) = guest("workload") else { return };
            const MIB: u64 = 512;
            const RUNS: usize = 5;
            for vcpus in [1, 2] {
                let con = Console::default();
                let (src, state) = source(k.clone(), &con, MIB, vcpus, "VINFRA-READY");
                let pages = nonzero_pages(src.memory());
                let cfg = || vm_config(k.clone(), &con, MIB).vcpus(vcpus);
                let (mut whole, mut new, mut restore) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..RUNS {
                    let mem = vinfra_vmm_core::memory::create(MIB << 20).unwrap();
                    copy_pages(src.memory(), &mem, &pages);
                    let t = Instant::now();
                    let vm = Vm::restore_from_state(cfg(), state.clone(), mem).unwrap();
                    whole.push(t.elapsed());
                    drop(vm);

                    let t = Instant::now();
                    let incoming = IncomingVm::new(cfg()).unwrap();
                    new.push(t.elapsed());
                    copy_pages(src.memory(), incoming.memory(), &pages);
                    let t = Instant::now();
                    let vm = incoming.restore(state.clone()).unwrap();
                    restore.push(t.elapsed());
                    assert_eq!(vm.power_state(), PowerState::Paused);
                }
                let (whole, new, restore) = (median(whole), median(new), median(restore));
                println!(
                    "{MIB} MiB, {vcpus} vcpu(s), median of {RUNS}: Vm::restore_from_state \
                     {whole:?}; IncomingVm::new {new:?} (ahead of time) + IncomingVm::restore \
                     {restore:?} (at the switchover)"
                );
                assert!(
                    restore <= whole,
                    "restore {restore:?} vs restore_from_state {whole:?}"
                );
            }
        },
    );
}
