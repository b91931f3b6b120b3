//! Tier 3: snapshot a running guest in one process, restore it in another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::config;
use vinfra_testkit::{guest, isolated_env, kvm_or_skip, Console};
use vinfra_vmm_core::{memory, DiskConfig, ExitReason, PowerState, Vm, VmConfig};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

const T: Duration = Duration::from_secs(20);
const NAME: &str = "snapshot_in_one_process_restore_in_another";

fn vm_config(kernel: PathBuf, disk: PathBuf, con: &Console) -> VmConfig {
    config(kernel, con)
        .cmdline("workload.mib=4 workload.rate=1")
        .disk(DiskConfig::new(disk))
}

fn save(kernel: PathBuf, dir: PathBuf) {
    let con = Console::default();
    let mut vm = Vm::create(vm_config(kernel, dir.join("disk.img"), &con)).unwrap();
    vm.start().unwrap();
    con.wait_for("HB 3\n", T);
    vm.pause().unwrap();
    let stats = vm.snapshot(&dir.join("snap")).unwrap();
    println!("snapshot: {stats:?}");
    assert_eq!(vm.power_state(), PowerState::Paused);
    // Dropping the VM stops it: the guest lives on only in the snapshot.
}

fn restore(kernel: PathBuf, dir: PathBuf) {
    let con = Console::default();
    let mut vm = Vm::restore(
        vm_config(kernel, dir.join("disk.img"), &con),
        &dir.join("snap"),
    )
    .unwrap();
    assert_eq!(vm.power_state(), PowerState::Paused);
    vm.resume().unwrap();
    con.wait_for("HB 5\n", T);
    let first_hb = con
        .text()
        .lines()
        .find(|l| l.starts_with("HB "))
        .map(str::to_owned);
    assert_eq!(
        first_hb.as_deref(),
        Some("HB 4"),
        "console:\n{}",
        con.text()
    );
    vm.serial_input(b"rate 2\n");
    con.wait_for("OK rate 2", T);
    vm.serial_input(b"exit 9\n");
    assert_eq!(vm.wait_timeout(T), Some(ExitReason::Poweroff { code: 9 }));
}

#[test]
fn snapshot_in_one_process_restore_in_another() {
    if !kvm_or_skip() {
        return;
    }
    if let Ok(phase) = std::env::var("VINFRA_SNAPSHOT_PHASE") {
        isolated_env(NAME, T, &[], || {
            let Some(k) = guest("workload") else { return };
            let dir = PathBuf::from(std::env::var("VINFRA_SNAPSHOT_DIR").unwrap());
            match phase.as_str() {
                "save" => save(k, dir),
                _ => restore(k, dir),
            }
        });
        return;
    }
    if guest("workload").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    let d = dir.path().to_str().unwrap();
    let limit = Duration::from_secs(60);
    let out = isolated_env(
        NAME,
        limit,
        &[
            ("VINFRA_SNAPSHOT_PHASE", "save"),
            ("VINFRA_SNAPSHOT_DIR", d),
        ],
        || {},
    );
    assert!(out.contains("snapshot:"), "save phase did not snapshot");
    isolated_env(
        NAME,
        limit,
        &[
            ("VINFRA_SNAPSHOT_PHASE", "restore"),
            ("VINFRA_SNAPSHOT_DIR", d),
        ],
        || {},
    );
}

/// What live migration does, within one process: capture the paused VM's state, copy
/// its RAM into fresh memory, build a second VM from both, and resume it there.
#[test]
fn state_and_memory_move_to_a_new_vm_in_memory() {
    if !kvm_or_skip() {
        return;
    }
    isolated_env(
        "state_and_memory_move_to_a_new_vm_in_memory",
        T * 3,
        &[],
        || {
            let Some(k) = guest("workload") else { return };
            let dir = tempfile::tempdir().unwrap();
            let disk = dir.path().join("disk.img");
            std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
            let con = Console::default();
            let mut src = Vm::create(vm_config(k.clone(), disk.clone(), &con)).unwrap();
            src.start().unwrap();
            con.wait_for("HB 2\n", T);
            // A disk write before the move and reads after it: the workload's virtio
            // queue (in guest memory) and the device's queue state must move together.
            src.serial_input(b"dwrite 3 0xabcd\n");
            con.wait_for("DWROTE 3 43981\n", T);
            src.pause().unwrap();
            let state = src.capture_state().unwrap();

            let mem = memory::create(64 << 20).unwrap();
            for region in src.memory().iter() {
                let len = usize::try_from(region.len()).unwrap();
                let mut buf = vec![0u8; len];
                src.memory()
                    .read_slice(&mut buf, region.start_addr())
                    .unwrap();
                mem.write_slice(&buf, region.start_addr()).unwrap();
            }
            assert_eq!(src.stop().unwrap(), ExitReason::Stopped);

            let con2 = Console::default();
            let mut dst = Vm::restore_from_state(vm_config(k, disk, &con2), state, mem).unwrap();
            assert_eq!(dst.power_state(), PowerState::Paused);
            dst.resume().unwrap();
            con2.wait_for("HB 3\n", T);
            dst.serial_input(b"dread 3\n");
            con2.wait_for("DREAD 3 43981\n", T);
            dst.serial_input(b"dwrite 4 7\n");
            con2.wait_for("DWROTE 4 7\n", T);
            dst.serial_input(b"exit 4\n");
            assert_eq!(dst.wait_timeout(T), Some(ExitReason::Poweroff { code: 4 }));
        },
    );
}
