//! Tier 2: boot the test guests on /dev/kvm (each VM in a child process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{config, linux_probe_program, tiny_bzimage, tiny_elf, tiny_guest};
use vinfra_testkit::{guest, isolated, kvm_or_skip, linux_kit, skip_allowed_in_ci, Console};
use vinfra_vmm_core::{
    BootProtocol, DiskConfig, Error, ExitReason, HostKvm, PowerState, SerialInputSource, Vm,
    VmConfig,
};

const T: Duration = Duration::from_secs(20);
const CHILD: Duration = Duration::from_secs(60);

/// Starts `vm`, expects a clean poweroff and `marker` on the console.
fn run_to_clean_poweroff(vm: &mut Vm, con: &Console, marker: &str) {
    vm.start().unwrap();
    assert_eq!(
        vm.wait_timeout(T),
        Some(ExitReason::Poweroff { code: 0 }),
        "console:\n{}",
        con.text()
    );
    assert!(con.text().contains(marker), "console:\n{}", con.text());
}

fn boot_ready(vcpus: u32) {
    let Some(k) = guest("ready") else { return };
    let con = Console::default();
    let mut vm = Vm::create(config(k, &con).vcpus(vcpus)).unwrap();
    assert_eq!(vm.boot_protocol(), Some(BootProtocol::Pvh));
    assert_eq!(vm.power_state(), PowerState::ShutOff);
    run_to_clean_poweroff(&mut vm, &con, "VINFRA-READY");
    assert_eq!(vm.power_state(), PowerState::ShutOff);
}

#[test]
fn tiny_guest_prints_and_exits_with_its_code() {
    if !kvm_or_skip() {
        return;
    }
    isolated("tiny_guest_prints_and_exits_with_its_code", CHILD, || {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("tiny.elf");
        std::fs::write(&k, tiny_guest(b"A\n", 42)).unwrap();
        let con = Console::default();
        let mut vm = Vm::create(config(k, &con).memory_mib(4)).unwrap();
        vm.start().unwrap();
        assert_eq!(vm.wait_timeout(T), Some(ExitReason::Poweroff { code: 42 }));
        assert_eq!(con.text(), "A\n");
    });
}

fn boot_linux_probe(image: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("kernel");
    std::fs::write(&k, image).unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, [7u8; 5000]).unwrap();
    let con = Console::default();
    let mut vm = Vm::create(config(k, &con).memory_mib(16).initrd(&initrd)).unwrap();
    assert_eq!(vm.boot_protocol(), Some(BootProtocol::Linux64));
    vm.start().unwrap();
    assert_eq!(
        vm.wait_timeout(T),
        Some(ExitReason::Poweroff { code: 0x40 })
    );
    assert_eq!(con.text(), "L");
}

/// The Linux 64-bit entry (long mode, identity paging, rsi = zero page) with an ELF
/// that has no PVH note and with a bzImage: real Linux cannot boot on nested KVM, so a
/// probe checks what it would be handed.
#[test]
fn linux_protocol_enters_long_mode_with_boot_params() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "linux_protocol_enters_long_mode_with_boot_params",
        CHILD,
        || {
            boot_linux_probe(tiny_elf(&linux_probe_program(), false));
            boot_linux_probe(tiny_bzimage(&linux_probe_program()));
        },
    );
}

/// A guest that faults with no IDT (int3 → #GP → double → triple fault) ends as
/// Crashed, and the VMM stays up.
#[test]
fn faulting_guest_is_reported_crashed() {
    if !kvm_or_skip() {
        return;
    }
    isolated("faulting_guest_is_reported_crashed", CHILD, || {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("fault.elf");
        std::fs::write(&k, tiny_elf(&[0xcc, 0xeb, 0xfe], true)).unwrap();
        let con = Console::default();
        let mut vm = Vm::create(config(k, &con).memory_mib(4)).unwrap();
        vm.start().unwrap();
        let r = vm.wait_timeout(T);
        println!("exit: {r:?}");
        assert!(matches!(r, Some(ExitReason::Crashed { .. })), "{r:?}");
        assert_eq!(vm.power_state(), PowerState::Crashed);
    });
}

#[test]
fn ready_guest_exits_zero_one_vcpu() {
    if !kvm_or_skip() {
        return;
    }
    isolated("ready_guest_exits_zero_one_vcpu", CHILD, || boot_ready(1));
}

#[test]
fn ready_guest_exits_zero_two_vcpus() {
    if !kvm_or_skip() {
        return;
    }
    isolated("ready_guest_exits_zero_two_vcpus", CHILD, || boot_ready(2));
}

#[test]
fn workload_answers_serial_commands_pauses_and_resumes() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "workload_answers_serial_commands_pauses_and_resumes",
        CHILD,
        || {
            let Some(k) = guest("workload") else { return };
            let con = Console::default();
            let mut vm = Vm::create(config(k, &con).cmdline("workload.mib=4")).unwrap();
            vm.start().unwrap();
            con.wait_for("VINFRA-READY", T);
            assert_eq!(vm.serial_input(b"rate 2\n"), 7);
            con.wait_for("OK rate 2", T);
            let hb1 = con.wait_for("HB 1\n", T);

            vm.pause().unwrap();
            assert_eq!(vm.power_state(), PowerState::Paused);
            let frozen = con.len();
            std::thread::sleep(Duration::from_millis(2500));
            assert_eq!(con.len(), frozen, "output while paused:\n{}", con.text());
            assert!(!con.text()[hb1..].contains("HB 3"));

            vm.resume().unwrap();
            assert_eq!(vm.power_state(), PowerState::Running);
            con.wait_for_from(hb1, "HB 3\n", Duration::from_secs(5));

            vm.serial_input_handle().send(b"exit 7\n");
            assert_eq!(vm.wait_timeout(T), Some(ExitReason::Poweroff { code: 7 }));
        },
    );
}

/// Sends `ping <i>` for `i` in `first..first + count`, one at a time, and returns each
/// round trip (serial input to `PONG <i>` on the console), sorted.
fn ping_round_trips(vm: &Vm, con: &Console, first: u64, count: u64) -> Vec<Duration> {
    let mut rtts = Vec::new();
    for i in first..first + count {
        let from = con.len();
        let sent = Instant::now();
        vm.serial_input(format!("ping {i}\n").as_bytes());
        con.wait_for_from(from, &format!("PONG {i}\n"), T);
        rtts.push(sent.elapsed());
    }
    rtts.sort();
    rtts
}

/// `ping <n>` is answered with `PONG <n>`, idle and while the guest dirties memory as
/// fast as it can (the downtime probe of live migration sends one per millisecond).
#[test]
fn workload_answers_ping_with_pong() {
    if !kvm_or_skip() {
        return;
    }
    isolated("workload_answers_ping_with_pong", CHILD, || {
        let Some(k) = guest("workload") else { return };
        let con = Console::default();
        let cfg = config(k, &con).cmdline("workload.mib=16");
        let mut vm = Vm::create(cfg).unwrap();
        vm.start().unwrap();
        con.wait_for("VINFRA-READY", T);
        vm.serial_input(b"ping 0x10\n");
        con.wait_for("PONG 16\n", T);
        let from = con.len();
        vm.serial_input(b"ping\nping 1 2\n");
        let first = con.wait_for_from(from, "ERR usage: ping <n>\n", T);
        con.wait_for_from(first, "ERR usage: ping <n>\n", T);
        let report = |what: &str, rtts: &[Duration]| {
            let pct = |p: usize| rtts[(rtts.len() - 1) * p / 100];
            println!(
                "ping {what}: n={} median={:?} p90={:?} p99={:?} max={:?}",
                rtts.len(),
                pct(50),
                pct(90),
                pct(99),
                pct(100)
            );
        };
        let idle = ping_round_trips(&vm, &con, 100, 200);
        report("idle", &idle);
        vm.serial_input(b"rate 100000\n");
        con.wait_for("OK rate 100000\n", T);
        let busy = ping_round_trips(&vm, &con, 1000, 200);
        report("at full dirty rate", &busy);
        // Generous bounds (the machine is shared): they catch a ping that waits for a
        // heartbeat or a whole batch, not a slow machine.
        for (what, rtts) in [("idle", &idle), ("busy", &busy)] {
            assert!(
                rtts[rtts.len() / 2] < Duration::from_millis(20),
                "{what}: {rtts:?}"
            );
        }
        vm.serial_input(b"exit 0\n");
        assert_eq!(vm.wait_timeout(T), Some(ExitReason::Poweroff { code: 0 }));
    });
}

#[test]
fn workload_reboot_and_host_stop() {
    if !kvm_or_skip() {
        return;
    }
    isolated("workload_reboot_and_host_stop", CHILD, || {
        let Some(k) = guest("workload") else { return };
        let con = Console::default();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        std::fs::write(&input, b"reboot\n").unwrap();
        let cfg = config(k.clone(), &con)
            .cmdline("workload.mib=1")
            .serial_input(SerialInputSource::File { path: input });
        let mut vm = Vm::create(cfg).unwrap();
        vm.start().unwrap();
        assert_eq!(vm.wait_timeout(T), Some(ExitReason::Reboot));

        let con = Console::default();
        let mut vm = Vm::create(config(k, &con).cmdline("workload.mib=1").vcpus(2)).unwrap();
        vm.start().unwrap();
        con.wait_for("VINFRA-READY", T);
        let t = Instant::now();
        assert_eq!(vm.stop().unwrap(), ExitReason::Stopped);
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(vm.power_state(), PowerState::ShutOff);
        assert!(matches!(vm.start(), Err(Error::InvalidState { .. })));
    });
}

/// The ACPI power button (the host's graceful shutdown): the workload guest notices
/// the press, prints SHUTDOWN and powers off through the ACPI sleep control register.
#[test]
fn workload_powers_off_on_the_acpi_power_button() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "workload_powers_off_on_the_acpi_power_button",
        CHILD,
        || {
            let Some(k) = guest("workload") else { return };
            let con = Console::default();
            let mut vm = Vm::create(config(k, &con).cmdline("workload.mib=1")).unwrap();
            vm.start().unwrap();
            con.wait_for("VINFRA-READY", T);
            assert!(!con.text().contains("SHUTDOWN"));
            // A short wait on a running VM keeps to its timeout (a watch loop turns on it).
            let best = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    assert_eq!(vm.wait_timeout(Duration::from_millis(10)), None);
                    t.elapsed()
                })
                .min()
                .unwrap();
            assert!(
                best < Duration::from_millis(30),
                "wait_timeout(10 ms) took {best:?}"
            );
            vm.press_power_button().unwrap();
            assert_eq!(
                vm.wait_timeout(T),
                Some(ExitReason::Poweroff { code: 0 }),
                "console:\n{}",
                con.text()
            );
            assert!(
                con.text().contains("SHUTDOWN\n"),
                "console:\n{}",
                con.text()
            );
        },
    );
}

/// Sends `command` and waits for the line `answer` after it (heartbeats may come in
/// between).
#[track_caller]
fn ask(vm: &Vm, con: &Console, command: &str, answer: &str) {
    let from = con.len();
    vm.serial_input(format!("{command}\n").as_bytes());
    con.wait_for_from(from, &format!("{answer}\n"), T);
}

/// The disk commands of the workload guest (what live-migration tests use to write
/// before a migration and read back after): a sector written with `dwrite` is in the
/// image file and reads back with `dread`; a sector never written reads as zeros.
#[test]
fn workload_writes_and_reads_disk_sectors() {
    if !kvm_or_skip() {
        return;
    }
    isolated("workload_writes_and_reads_disk_sectors", CHILD, || {
        let Some(k) = guest("workload") else { return };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let con = Console::default();
        let cfg = config(k, &con)
            .cmdline("workload.mib=1")
            .disk(DiskConfig::new(&img));
        let mut vm = Vm::create(cfg).unwrap();
        vm.start().unwrap();
        con.wait_for("VINFRA-READY\n", T);
        ask(&vm, &con, "dwrite 5 305419896", "DWROTE 5 305419896");
        ask(&vm, &con, "dread 5", "DREAD 5 305419896");
        ask(&vm, &con, "dread 6", "DREAD 6 0");
        ask(
            &vm,
            &con,
            "dread 2048",
            "ERR usage: dread <sector> within 2048 sectors",
        );
        ask(&vm, &con, "ping 7", "PONG 7");
        assert!(!con.text().contains("ERR disk"), "console:\n{}", con.text());
        // The counters the host reports per VM (issue 13): two sector reads, one write.
        let d = vm.disk_stats();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].reads, d[0].writes), (2, 1), "{d:?}");
        assert_eq!((d[0].bytes_read, d[0].bytes_written), (1024, 512), "{d:?}");
        let before = con.text().len() as u64;
        let c = vm.console_stats();
        let after = con.text().len() as u64;
        let sent = [
            "dwrite 5 305419896\n",
            "dread 5\n",
            "dread 6\n",
            "dread 2048\n",
            "ping 7\n",
        ];
        assert_eq!(c.in_bytes, sent.iter().map(|s| s.len() as u64).sum::<u64>());
        // A heartbeat may be printed meanwhile.
        assert!(
            (before..=after).contains(&c.out_bytes),
            "{c:?} {before} {after}"
        );
        let data = std::fs::read(&img).unwrap();
        for (j, w) in data[5 * 512..6 * 512].chunks_exact(4).enumerate() {
            assert_eq!(w, 305_419_896u32.to_le_bytes(), "sector 5 word {j}");
        }
        assert!(data[6 * 512..].iter().all(|&b| b == 0));
        assert!(data[..5 * 512].iter().all(|&b| b == 0));
        vm.serial_input(b"exit 0\n");
        assert_eq!(vm.wait_timeout(T), Some(ExitReason::Poweroff { code: 0 }));
    });
}

/// Without a disk the workload runs as before and refuses the disk commands.
#[test]
fn workload_without_disk_answers_err_no_disk() {
    if !kvm_or_skip() {
        return;
    }
    isolated("workload_without_disk_answers_err_no_disk", CHILD, || {
        let Some(k) = guest("workload") else { return };
        let con = Console::default();
        let mut vm = Vm::create(config(k, &con).cmdline("workload.mib=1")).unwrap();
        vm.start().unwrap();
        con.wait_for("VINFRA-READY\n", T);
        ask(&vm, &con, "dwrite 5 1", "ERR no disk");
        ask(&vm, &con, "dread 5", "ERR no disk");
        ask(&vm, &con, "ping 8", "PONG 8");
        vm.serial_input(b"exit 0\n");
        assert_eq!(vm.wait_timeout(T), Some(ExitReason::Poweroff { code: 0 }));
    });
}

/// The host pattern of ABI.md: word `j` of sector `s`.
fn host_word(s: u32, j: u32) -> u32 {
    0x5eed_0000 ^ s.wrapping_mul(0x9e37_79b1) ^ j
}

#[test]
fn disk_guest_reads_host_pattern_and_writes_its_own() {
    if !kvm_or_skip() {
        return;
    }
    isolated(
        "disk_guest_reads_host_pattern_and_writes_its_own",
        CHILD,
        || {
            let Some(k) = guest("disk") else { return };
            const S: u32 = 64;
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("disk.img");
            let mut data = vec![0u8; (2 * S as usize) * 512];
            for s in 0..S {
                for j in 0..128 {
                    let at = (s as usize * 512) + j as usize * 4;
                    data[at..at + 4].copy_from_slice(&host_word(s, j).to_le_bytes());
                }
            }
            std::fs::write(&img, &data).unwrap();
            let con = Console::default();
            let mut d = DiskConfig::new(&img);
            d.id = Some("vinfra-test".into());
            let cfg = config(k, &con).cmdline(format!("disk.sectors={S}")).disk(d);
            let mut vm = Vm::create(cfg).unwrap();
            run_to_clean_poweroff(&mut vm, &con, "DISK-OK sectors=64 id=vinfra-test");
            let after = std::fs::read(&img).unwrap();
            for s in S..2 * S {
                for j in 0..128 {
                    let at = (s as usize * 512) + j as usize * 4;
                    let w = u32::from_le_bytes(after[at..at + 4].try_into().unwrap());
                    assert_eq!(w, host_word(s, j) ^ 0xffff_ffff, "sector {s} word {j}");
                }
            }
        },
    );
}

#[test]
fn evil_guest_does_not_hurt_the_vmm() {
    if !kvm_or_skip() {
        return;
    }
    isolated("evil_guest_does_not_hurt_the_vmm", CHILD, || {
        let Some(k) = guest("evil") else { return };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let con = Console::default();
        let mut vm = Vm::create(config(k, &con).disk(DiskConfig::new(&img))).unwrap();
        vm.start().unwrap();
        let r = vm.wait_timeout(T);
        assert!(con.text().contains("EVIL-DONE"), "console:\n{}", con.text());
        assert_eq!(r, Some(ExitReason::Poweroff { code: 0 }));
    });
}

#[test]
fn bad_inputs_are_typed_errors() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.elf");
    std::fs::write(&tiny, tiny_guest(b"", 0)).unwrap();

    let e = Vm::create(VmConfig::new(&tiny).kvm_path(dir.path().join("no-kvm"))).unwrap_err();
    assert!(matches!(e, Error::KvmUnavailable { .. }), "{e}");
    assert!(e.to_string().contains("no-kvm"), "{e}");

    let e = Vm::create(VmConfig::new(dir.path().join("missing"))).unwrap_err();
    assert!(matches!(e, Error::File { what: "kernel", .. }), "{e}");

    let garbage = dir.path().join("garbage");
    std::fs::write(
        &garbage,
        (0..8192u32)
            .map(|i| (i * 7 + 3).to_le_bytes()[0])
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let e = Vm::create(VmConfig::new(&garbage).memory_mib(8)).unwrap_err();
    assert!(matches!(e, Error::KernelFormat { .. }), "{e}");

    let mut elf_header_only = tiny_guest(b"", 0);
    elf_header_only.truncate(100);
    let trunc = dir.path().join("trunc");
    std::fs::write(&trunc, elf_header_only).unwrap();
    let e = Vm::create(VmConfig::new(&trunc).memory_mib(8)).unwrap_err();
    assert!(matches!(e, Error::KernelFormat { .. }), "{e}");

    let e = Vm::create(VmConfig::new(&tiny).memory_mib(1)).unwrap_err();
    assert!(matches!(e, Error::MemoryTooSmall { .. }), "{e}");

    let e = Vm::create(VmConfig::new(&tiny).vcpus(200)).unwrap_err();
    assert!(matches!(e, Error::TooManyVcpus { .. }), "{e}");
    let e = Vm::create(VmConfig::new(&tiny).vcpus(0)).unwrap_err();
    assert!(matches!(e, Error::NoVcpus), "{e}");

    let e = Vm::create(VmConfig::new(&tiny).disk(DiskConfig::new(dir.path().join("nodisk"))))
        .unwrap_err();
    assert!(matches!(e, Error::File { what: "disk", .. }), "{e}");
}

#[test]
fn linux_boots_to_ready_on_hardware_kvm() {
    if !kvm_or_skip() {
        return;
    }
    if HostKvm::detect() == HostKvm::Nested {
        // The one skip CI may take: no package makes nested KVM boot Linux.
        skip_allowed_in_ci(
            "nested KVM (kvm_pvm) cannot boot an unmodified Linux kernel; run on a host with hardware KVM",
        );
        return;
    }
    let Some(linux) = linux_kit() else { return };
    isolated(
        "linux_boots_to_ready_on_hardware_kvm",
        Duration::from_secs(200),
        || {
            let con = Console::default();
            let cfg = VmConfig::new(&linux.kernel)
                .initrd(&linux.initrd)
                .memory_mib(512)
                .cmdline("console=ttyS0 reboot=k panic=-1")
                .serial_output(common::serial(&con));
            let mut vm = Vm::create(cfg).unwrap();
            assert_eq!(vm.boot_protocol(), Some(BootProtocol::Linux64));
            vm.start().unwrap();
            con.wait_for("VINFRA-READY", Duration::from_secs(120));
            vm.stop().unwrap();
        },
    );
}
