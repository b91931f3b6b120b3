//! A VM in a child process of its own, as `vinfra-host run` runs it: a real `vinfra-vm run`
//! on KVM with the workload guest, driven through [`VmProcess`]: the control requests
//! (status, reset, snapshot and consolidate of a vmfs disk, power off), `--host-id auto`
//! skipping a live slot, a live migration asked for on the control socket, and the parent
//! lease: a child whose host goes silent stops with 75 after half a lease, one whose host
//! is gone (the pipe closes) stops at once.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use vinfra_host::migration::MigrateSettings;
use vinfra_host::vm_process::{Start, VmProcess, VmProcessError, VmSpec};
use vinfra_host::vmfs_disk::{MountedHost, VmfsDiskBackend};
use vinfra_testkit::{guest, kvm_or_skip};
use vinfra_vmfs::{FileDevice, MkfsOptions, MountOptions, Volume};
use vinfra_vmm_core::VmConfig;

const VM_BIN: &str = env!("CARGO_BIN_EXE_vinfra-vm");
const WAIT: Duration = Duration::from_secs(30);
/// Long enough that a test that does not feed the lease is not stopped by it.
const NO_LEASE_MS: u64 = 600_000;

fn workload(kernel: &Path) -> VmConfig {
    let mut c = VmConfig::new(kernel);
    c.cmdline = "workload.mib=1 workload.rate=0".into();
    c.memory_mib = 32;
    c.vcpus = 1;
    c
}

fn spawn(spec: &mut VmSpec) -> (VmProcess, Receiver<String>) {
    spec.binary = Some(VM_BIN.into());
    let (tx, rx) = mpsc::channel();
    let p = VmProcess::spawn(spec, move |line| {
        let _ = tx.send(line);
    })
    .unwrap();
    (p, rx)
}

/// Waits for a console line containing `what`.
#[track_caller]
fn line(rx: &Receiver<String>, what: &str) -> String {
    let end = Instant::now() + WAIT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let l = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {what:?} on the console within {WAIT:?}"));
        if l.contains(what) {
            return l;
        }
    }
}

#[test]
fn a_vm_process_answers_its_control_requests() {
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("workload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    let mut mk = MkfsOptions::default();
    mk.max_inodes = 256;
    mk.blocks_per_cluster = 512;
    Volume::mkfs(&FileDevice::create(&lun, 96 << 20).unwrap(), &mk).unwrap();
    // The disk, made by an admin mount; and slot 16 held live, so `--host-id auto` must
    // move on to the next.
    let admin = MountedHost::mount(&lun, 16, &MountOptions::default()).unwrap();
    VmfsDiskBackend::create(admin.volume(), "/vm1.vmdk", 8 << 20)
        .unwrap()
        .close()
        .unwrap();

    let mut spec = VmSpec::new("vm1", workload(&kernel), dir.path(), NO_LEASE_MS);
    spec.volume = Some(lun.clone());
    spec.vmfs_disks = vec!["/vm1.vmdk".into()];
    let (mut vm, console) = spawn(&mut spec);
    let status = vm.wait_ready(WAIT).unwrap();
    line(&console, "VINFRA-READY");
    assert_eq!(
        serde_json::to_value(status.state).unwrap(),
        serde_json::json!("running")
    );
    assert_eq!((status.vcpus, status.memory_mib), (1, 32));
    // The control socket has the disk of a live slot-17 host locked: the admin mount
    // cannot open it.
    assert!(VmfsDiskBackend::open(admin.volume(), "/vm1.vmdk").is_err());

    // `status` is answered within a turn of the watch loop.
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        vm.status().unwrap();
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("status round trip: slowest of 10 {slowest:?}");
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");

    // The backup handshake on disk 0; a disk it does not have is refused, by name.
    let info = vm.snapshot(0, None).unwrap();
    assert_eq!(info.capacity, 8 << 20);
    assert!(!info.frozen.is_empty(), "{info:?}");
    vm.consolidate(0).unwrap();
    let again = vm.snapshot(0, Some(info.change_id)).unwrap();
    assert!(again.change_id > info.change_id, "{again:?}");
    vm.consolidate(0).unwrap();
    match vm.snapshot(3, None) {
        Err(VmProcessError::Failed { error, .. }) => assert!(error.contains("no vmfs disk 3")),
        other => panic!("{other:?}"),
    }

    // Reset: the guest boots again in the same process.
    let pid = vm.pid();
    let t = Instant::now();
    vm.reset().unwrap();
    eprintln!("reset answered in {:?}", t.elapsed());
    line(&console, "VINFRA-READY");
    assert_eq!(vm.pid(), pid);
    assert!(vm.try_wait().unwrap().is_none());
    let stats = vm.stats().unwrap();
    eprintln!("{stats:?}");
    assert!(stats.rss_bytes > 1 << 20, "{stats:?}");

    // Power off: answered, then the process exits 0 and releases the disk.
    let t = Instant::now();
    vm.power_off().unwrap();
    let exit = vm.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
    eprintln!("power_off to exit {:?}", t.elapsed());
    assert_eq!(exit.code, Some(0), "{exit:?}");
    VmfsDiskBackend::open(admin.volume(), "/vm1.vmdk")
        .unwrap()
        .close()
        .unwrap();
    assert!(!dir.path().join("vm1.sock").exists());
    admin.unmount().unwrap();
}

#[test]
fn a_vm_whose_host_goes_silent_stops_with_75_after_half_a_lease() {
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("workload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lease_ms = 2000;
    let mut spec = VmSpec::new("quiet", workload(&kernel), dir.path(), lease_ms);
    let (mut vm, console) = spawn(&mut spec);
    // Fed every 50 ms, as the host does, it runs on past half a lease.
    let fed_until = Instant::now() + Duration::from_millis(lease_ms * 3 / 2);
    while Instant::now() < fed_until {
        vm.feed_lease();
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.feed_lease();
    let silent = Instant::now();
    assert!(vm.try_wait().unwrap().is_none(), "stopped while fed");
    line(&console, "HB ");
    let exit = vm.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
    let after = silent.elapsed();
    eprintln!("silent for {after:?} -> exit {exit:?} (lease {lease_ms} ms)");
    assert_eq!(exit.code, Some(75), "{exit:?}");
    assert!(
        after >= Duration::from_millis(lease_ms / 2 - 100)
            && after <= Duration::from_millis(lease_ms / 2 + 700),
        "stopped {after:?} after the last byte"
    );
}

#[test]
fn a_vm_whose_host_is_gone_stops_at_once() {
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("workload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = VmSpec::new("orphan", workload(&kernel), dir.path(), NO_LEASE_MS);
    let (mut vm, console) = spawn(&mut spec);
    vm.wait_ready(WAIT).unwrap();
    line(&console, "VINFRA-READY");
    // The host's end of the pipe closes as when the host dies.
    let t = Instant::now();
    vm.close_lease();
    let exit = vm.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
    eprintln!("pipe closed -> exit {exit:?} after {:?}", t.elapsed());
    assert_eq!(exit.code, Some(75), "{exit:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn a_vm_process_migrates_through_its_control_socket() {
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("workload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = VmSpec::new("mover", workload(&kernel), dir.path(), NO_LEASE_MS);
    let (mut src, console) = spawn(&mut spec);
    src.wait_ready(WAIT).unwrap();
    line(&console, "HB ");
    // The destination: `vinfra-vm incoming` with the same configuration, on a port
    // free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut dst_spec = VmSpec::new("arrived", workload(&kernel), dir.path(), NO_LEASE_MS);
    dst_spec.start = Start::Incoming {
        listen: addr.clone(),
        key_file: None,
    };
    let (mut dst, dst_console) = spawn(&mut dst_spec);
    // Its control socket answers only once the VM runs there, and says so at once: the
    // host's loop asks each arriving VM every tick (a socket bound but not yet served
    // once held each question for the whole 1 s timeout, so the loop fed no lease for
    // seconds and the children took their host for dead).
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert!(dst.status().is_err());
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    let settings = MigrateSettings {
        to: addr,
        key_file: None,
        plaintext: true,
        downtime_ms: 50,
        bandwidth_bytes_per_s: None,
        time_limit_ms: 60_000,
        auto_converge: true,
    };
    let mut progress = 0;
    let stats = src.migrate(settings, |_| progress += 1).unwrap();
    eprintln!(
        "migrated: downtime {:.1} ms, {progress} progress events",
        stats.downtime_ms
    );
    assert!(progress > 0);
    let exit = src.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
    // The guest goes on counting on the destination, which answers as a VM process.
    line(&dst_console, "HB ");
    let status = dst.wait_ready(WAIT).unwrap();
    assert_eq!(
        serde_json::to_value(status.state).unwrap(),
        serde_json::json!("running")
    );
    dst.power_off().unwrap();
    let exit = dst.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
}

/// Graceful shutdown and the I/O counters through the control socket: `status` counts
/// the console bytes both ways and the disk requests; `power_button` makes the workload
/// guest say SHUTDOWN and power off (the process exits 0).
#[test]
fn the_power_button_shuts_the_workload_down_and_status_counts_its_io() {
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("workload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut config = workload(&kernel);
    config.disks.push(vinfra_vmm_core::DiskConfig::new(&disk));
    let mut spec = VmSpec::new("polite", config, dir.path(), NO_LEASE_MS);
    let (mut vm, console) = spawn(&mut spec);
    vm.wait_ready(WAIT).unwrap();
    line(&console, "VINFRA-READY");
    let typed = b"dwrite 2 9\n";
    vm.send_console(typed).unwrap();
    line(&console, "DWROTE 2 9");
    let end = Instant::now() + WAIT;
    let io = loop {
        // The status copy is refreshed each turn of the watch loop (10 ms).
        let io = vm.status().unwrap().io;
        // The line seen on the console may be newer than the copy.
        if (io.disk_writes >= 1 && io.console_out_bytes >= 24) || Instant::now() > end {
            break io;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(io.console_in_bytes, typed.len() as u64, "{io:?}");
    assert!(io.console_out_bytes >= 24, "{io:?}");
    assert_eq!((io.disk_writes, io.disk_written_bytes), (1, 512), "{io:?}");

    vm.press_power_button().unwrap();
    line(&console, "SHUTDOWN");
    let exit = vm.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
}
