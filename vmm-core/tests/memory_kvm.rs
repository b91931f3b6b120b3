//! Tier 2: dirty-page logging and page sharing with the workload guest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::config;
use vinfra_testkit::{guest, isolated, kvm_or_skip, skip, Console};
use vinfra_vmm_core::{ksm, Vm};
use vm_memory::{Bytes, GuestAddress};

const T: Duration = Duration::from_secs(20);

#[test]
fn dirty_log_reports_touched_pages() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "dirty_log_reports_touched_pages",
        Duration::from_secs(60),
        || {
            let Some(k) = guest("workload") else { return };
            let con = Console::default();
            let mut vm = Vm::create(config(k, &con).cmdline("workload.mib=4")).unwrap();
            vm.start().unwrap();
            let ready = con.wait_for("VINFRA-READY", T);
            vm.enable_dirty_log().unwrap();
            vm.fetch_and_clear_dirty().unwrap();
            const COUNT: u64 = 100;
            vm.serial_input(format!("touch 37 {COUNT}\n").as_bytes());
            let end = con.wait_for_from(ready, &format!(" {COUNT}\n"), T);
            let bitmap = vm.fetch_and_clear_dirty().unwrap();
            let text = con.text();
            let line = text[ready..end]
                .lines()
                .find(|l| l.starts_with("TOUCHED "))
                .unwrap();
            let gpa =
                u64::from_str_radix(line.split(' ').nth(1).unwrap().trim_start_matches("0x"), 16)
                    .unwrap();
            for i in 0..COUNT {
                assert!(
                    bitmap.is_dirty(gpa + i * 4096),
                    "page {i} at {:#x} not dirty",
                    gpa + i * 4096
                );
            }
            let extra = bitmap.count() - COUNT;
            println!(
                "dirty pages: {} ({} touched, {extra} extra)",
                bitmap.count(),
                COUNT
            );
            assert!(extra < 64, "{extra} extra dirty pages");
            vm.disable_dirty_log().unwrap();
            assert!(vm.fetch_and_clear_dirty().is_err());
            vm.stop().unwrap();
        },
    );
}

/// Writes by the VMM itself (as virtio-blk does) bypass KVM's log: they must come from
/// the vm-memory bitmap, and a fetch clears them.
#[test]
fn dirty_log_includes_vmm_writes() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "dirty_log_includes_vmm_writes",
        Duration::from_secs(30),
        || {
            let dir = tempfile::tempdir().unwrap();
            let k = dir.path().join("tiny.elf");
            std::fs::write(&k, common::tiny_guest(b"", 0)).unwrap();
            let con = Console::default();
            let mut vm = Vm::create(config(k, &con).memory_mib(16)).unwrap();
            vm.enable_dirty_log().unwrap();
            assert_eq!(vm.fetch_and_clear_dirty().unwrap().count(), 0);
            vm.memory()
                .write_obj(0xabcdu64, GuestAddress(0x50_0000))
                .unwrap();
            vm.memory()
                .write_slice(&[1u8; 8192], GuestAddress(0x70_0800))
                .unwrap();
            let b = vm.fetch_and_clear_dirty().unwrap();
            let pages: Vec<u64> = b.pages().collect();
            assert_eq!(pages, vec![0x50_0000, 0x70_0000, 0x70_1000, 0x70_2000]);
            assert_eq!(vm.fetch_and_clear_dirty().unwrap().count(), 0);
        },
    );
}

fn write_knob(dir: &Path, name: &str, value: &str) -> Option<String> {
    let p = dir.join(name);
    let old = std::fs::read_to_string(&p).ok()?;
    std::fs::write(&p, value).ok()?;
    Some(old.trim().to_string())
}

#[test]
fn page_sharing_merges_identical_guest_pages() {
    if !kvm_or_skip() {
        return;
    }
    let dir = Path::new(ksm::KSM_SYSFS);
    // KSM is not installed by CI but comes with the kernel (Debian's has it) and CI runs
    // as root: under CI a missing or read-only KSM, or one that merges nothing, means a
    // broken runner, and a skip would hide that page sharing goes untested, so it fails.
    let Some(old_run) = write_knob(dir, "run", "1") else {
        skip(format_args!(
            "{} is not writable (needs root and KSM)",
            dir.join("run").display()
        ));
        return;
    };
    let old_sleep = write_knob(dir, "sleep_millisecs", "10");
    let old_scan = write_knob(dir, "pages_to_scan", "4000");
    let outcome = std::panic::catch_unwind(|| {
        isolated(
            "page_sharing_merges_identical_guest_pages",
            Duration::from_secs(60),
            || {
                let Some(k) = guest("workload") else { return };
                let con = Console::default();
                let mut vm = Vm::create(
                    config(k, &con)
                        .cmdline("workload.mib=16")
                        .page_sharing(true),
                )
                .unwrap();
                vm.start().unwrap();
                con.wait_for("VINFRA-READY", T);
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut last = ksm::report().unwrap();
                // The guest wrote the same word to each of its 4096 pages: most should merge.
                const WANT: u64 = 1024;
                while last.pages_sharing < WANT && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    last = ksm::report().unwrap();
                }
                vm.stop().unwrap();
                if last.pages_sharing == 0 {
                    skip(format_args!(
                        "ksmd merged nothing within 15 s (host busy?): {last:?}"
                    ));
                } else {
                    println!("ksm: {last:?}");
                    assert!(last.saved_bytes > 0);
                }
            },
        );
    });
    write_knob(dir, "run", &old_run);
    if let Some(v) = old_sleep {
        write_knob(dir, "sleep_millisecs", &v);
    }
    if let Some(v) = old_scan {
        write_knob(dir, "pages_to_scan", &v);
    }
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
