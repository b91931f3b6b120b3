//! Hot backup of a running VM from another process: `vmfs-vm` runs the workload guest on
//! a vmfs disk and keeps writing sectors (serial `dwrite` commands) while this process —
//! the backup proxy, host 2 of the same volume — asks it over the backup control socket to
//! freeze the disk, reads the frozen layers from its own mount, backs them up (full, then
//! incremental from changed-block tracking), and asks it to consolidate. Each restore
//! point is compared byte for byte with the frozen image read at the time, and the disk
//! after the VM stops holds every write the guest made, during the backups too.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code; 8 MiB disks"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vinfra_host::backup_control::{request, Request};
use vinfra_host::vmfs_disk::{MountedHost, VmfsDiskBackend};
use vinfra_testkit::{guest, kvm_or_skip};
use vinfra_vcb::vmfs::VmfsSnapshot;
use vinfra_vcb::{BackupOptions, DiskSource, InitOptions, KdfParams, LocalDir, Repository};
use vinfra_vmfs::{FileDevice, MkfsOptions, MountOptions, Volume};

const DISK_MIB: u64 = 8;
/// Sectors the guest writes: the first 2 MiB (32 grains).
const SECTORS: u64 = 4096;
const WAIT: Duration = Duration::from_secs(60);

/// What the writer thread has had acknowledged: (sector, value) in order.
type Acked = Arc<Mutex<Vec<(u64, u32)>>>;

fn frozen_image(s: &VmfsSnapshot) -> Vec<u8> {
    let mut v = vec![0u8; s.capacity() as usize];
    s.read_at(&mut v, 0).unwrap();
    v
}

fn sector_value(img: &[u8], s: u64) -> Option<u32> {
    let b = &img[(s * 512) as usize..(s * 512 + 512) as usize];
    let w = u32::from_le_bytes(b[..4].try_into().unwrap());
    b.chunks(4)
        .all(|c| u32::from_le_bytes(c.try_into().unwrap()) == w)
        .then_some(w)
}

/// Every sector whose last acknowledged write came before `until` (an index into the
/// acknowledged list) and was not written again before `after` holds that write.
fn check_writes(img: &[u8], acked: &[(u64, u32)], until: usize, after: usize) {
    let mut last: HashMap<u64, u32> = HashMap::new();
    for &(s, v) in &acked[..until] {
        last.insert(s, v);
    }
    let rewritten: std::collections::HashSet<u64> =
        acked[until..after].iter().map(|&(s, _)| s).collect();
    let mut checked = 0;
    for (s, v) in last {
        if !rewritten.contains(&s) {
            assert_eq!(sector_value(img, s), Some(v), "sector {s}");
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn a_running_vm_is_backed_up_from_another_process_full_then_incremental() {
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
    let sock = dir.path().join("backup.sock");

    // Host 1: the VM, in its own process.
    let mut vm = Command::new(env!("CARGO_BIN_EXE_vmfs-vm"))
        .arg("--volume")
        .arg(&lun)
        .args(["--host-id", "1", "--disk", "/vm1.vmdk", "--create-mib"])
        .arg(DISK_MIB.to_string())
        .arg("--kernel")
        .arg(&kernel)
        .args(["--cmdline", "workload.mib=1", "--memory-mib", "32"])
        .arg("--console-input")
        .arg("--backup-control")
        .arg(&sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = vm.stdin.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = vm.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let wait_for = |lines: &mpsc::Receiver<String>, what: &str| -> String {
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let l = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what:?} from the guest"));
            assert!(!l.starts_with("ERR"), "guest: {l}");
            if l.contains(what) {
                return l;
            }
        }
    };
    wait_for(&lines, "VINFRA-READY");

    // The guest writes sectors without pause, each acknowledged, until told to stop.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = {
        let (acked, stop, count) = (acked.clone(), stop.clone(), count.clone());
        std::thread::spawn(move || {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let sector = x % SECTORS;
                n += 1;
                writeln!(stdin, "dwrite {sector} {n}").unwrap();
                wait_for(&lines, &format!("DWROTE {sector} {n}"));
                acked.lock().unwrap().push((sector, n));
                count.fetch_add(1, Ordering::Relaxed);
            }
            writeln!(stdin, "exit 0").unwrap();
        })
    };
    let writes_at_least = |n: u64| {
        let end = Instant::now() + WAIT;
        while count.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < end, "the guest stopped writing");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    writes_at_least(50);

    // Host 2: the proxy (this process), with its own mount of the volume.
    let proxy = MountedHost::mount(&lun, 2, &MountOptions::default()).unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = Repository::init(
        LocalDir::create(&repo_dir).unwrap(),
        b"pw",
        &InitOptions::default().kdf(KdfParams::INSECURE_FAST),
    )
    .unwrap();
    let mut since = None;
    let mut parent = None;
    for round in 0..2u64 {
        let before = acked.lock().unwrap().len();
        let info = request(&sock, &Request::Snapshot { since })
            .unwrap()
            .info
            .unwrap();
        let snapped = acked.lock().unwrap().len();
        let snap = VmfsSnapshot::open(proxy.volume(), info).unwrap();
        let frozen = frozen_image(&snap);
        let s = repo
            .backup(
                &BackupOptions::new("vm1", round).host("proxy"),
                &[("disk0", &snap)],
            )
            .unwrap();
        // The guest kept writing while the proxy read; then the redo log is folded back.
        writes_at_least(count.load(Ordering::Relaxed) + 20);
        drop(snap);
        request(&sock, &Request::Consolidate).unwrap();

        let d = &s.manifest.disks[0];
        assert_eq!(s.manifest.parent, parent);
        if round > 0 {
            // Incremental from changed-block tracking: only grains written since the
            // last snapshot were read, at most the 32 the guest writes to.
            assert!(
                d.stats.bytes_read > 0 && d.stats.bytes_read <= 32 * 65536,
                "{:?}",
                d.stats
            );
        }
        let mut restored = Vec::new();
        repo.restore_disk(&s.id, "disk0", &mut restored).unwrap();
        assert!(
            restored == frozen,
            "round {round}: the restore differs from the snapshot"
        );
        let acked_now = acked.lock().unwrap().clone();
        // The writer has one write in flight at a time: the one acknowledged right after
        // `snapped` may have reached the disk before the freeze, its answer after it.
        check_writes(&frozen, &acked_now, before, snapped + 1);
        since = d.change_id;
        parent = Some(s.id);
    }

    // The same through the command line, as an operator's proxy would: hooks around the
    // snapshot, incremental from the library's backups (changed-block tracking goes on).
    let before = acked.lock().unwrap().len();
    let hooks = dir.path().join("hooks.log");
    let out = Command::new(env!("CARGO_BIN_EXE_vinfra-vcb"))
        .env("VCB_REPO", &repo_dir)
        .env("VCB_PASSWORD", "pw")
        .args([
            "--json",
            "backup",
            "--vm",
            "vm1",
            "--time",
            "2",
            "--host-id",
            "4",
        ])
        .arg("--vmfs-volume")
        .arg(&lun)
        .arg("--vmfs-disk")
        .arg(format!("disk0={}", sock.display()))
        .arg("--pre")
        .arg(format!("echo pre >> {}", hooks.display()))
        .arg("--post")
        .arg(format!("echo post >> {}", hooks.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&hooks).unwrap(), "pre\npost\n");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["parent"], parent.unwrap().to_hex());
    let read = v["disks"][0]["bytes_read"].as_u64().unwrap();
    assert!(read > 0 && read <= 32 * 65536, "{v}");
    let id = vinfra_vcb::Id::from_hex(v["id"].as_str().unwrap()).unwrap();
    let mut restored = Vec::new();
    repo.restore_disk(&id, "disk0", &mut restored).unwrap();
    let acked_now = acked.lock().unwrap().clone();
    check_writes(&restored, &acked_now, before, acked_now.len());

    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let status = vm.wait().unwrap();
    assert!(status.success(), "vmfs-vm: {status}");
    proxy.unmount().unwrap();

    // Nothing the guest wrote was lost by the snapshots and consolidations.
    let host3 = MountedHost::mount(&lun, 3, &MountOptions::default()).unwrap();
    let disk = VmfsDiskBackend::open(host3.volume(), "/vm1.vmdk").unwrap();
    let mut img = vec![0u8; (DISK_MIB << 20) as usize];
    use vinfra_vmm_core::devices::block::BlockBackend;
    disk.read_at(&mut img, 0).unwrap();
    let all = acked.lock().unwrap().clone();
    check_writes(&img, &all, all.len(), all.len());
    disk.close().unwrap();
    host3.unmount().unwrap();
}

/// Start from a backup: the workload guest boots with a disk of a backup as its
/// virtio-blk device (`vinfra_host::backup_disk`), reads the sectors as they were backed
/// up, writes one (into the overlay), reads it back, and powers off; the overlay holds
/// exactly the grain written and the backup still restores as it was.
#[test]
fn a_vm_boots_straight_from_a_backup_with_its_writes_in_an_overlay() {
    if !kvm_or_skip() {
        return;
    }
    vinfra_testkit::isolated(
        "a_vm_boots_straight_from_a_backup_with_its_writes_in_an_overlay",
        Duration::from_secs(120),
        boot_from_backup,
    );
}

fn boot_from_backup() {
    use vinfra_host::backup_disk::BackupBackend;
    use vinfra_testkit::Console;
    use vinfra_vcb::MemDisk;
    use vinfra_vmm_core::{DiskConfig, ExitReason, SerialOutput, SharedWriter, Vm, VmConfig};

    let Some(kernel) = guest("workload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(
        LocalDir::create(dir.path().join("repo")).unwrap(),
        b"pw",
        &InitOptions::default().kdf(KdfParams::INSECURE_FAST),
    )
    .unwrap();
    // 1 MiB (2048 sectors); sector 5 holds 305419896 and sector 6 holds 7 in every word,
    // as the guest's `dwrite` would have left them.
    let mut disk = MemDisk::new(1 << 20);
    for (sector, value) in [(5usize, 305_419_896u32), (6, 7)] {
        disk.write_at(&value.to_le_bytes().repeat(128), sector * 512);
    }
    let s = repo
        .backup(&BackupOptions::new("vm", 1), &[("disk0", &disk.snapshot())])
        .unwrap();
    let original = disk.as_bytes().to_vec();
    let backend =
        Arc::new(BackupBackend::open(&repo, &s.id, "disk0", &dir.path().join("overlay")).unwrap());
    let con = Console::default();
    let cfg = VmConfig::new(kernel)
        .memory_mib(64)
        .serial_output(SerialOutput::Writer(SharedWriter::new(con.writer())))
        .cmdline("workload.mib=1")
        .disk(DiskConfig::backend("backup-disk0", backend.clone()));
    let mut vm = Vm::create(cfg).unwrap();
    vm.start().unwrap();
    con.wait_for("VINFRA-READY\n", WAIT);
    let ask = |command: &str, answer: &str| {
        let from = con.len();
        vm.serial_input(format!("{command}\n").as_bytes());
        con.wait_for_from(from, &format!("{answer}\n"), WAIT);
    };
    ask("dread 5", "DREAD 5 305419896");
    ask("dread 6", "DREAD 6 7");
    ask("dread 7", "DREAD 7 0");
    ask("dwrite 6 99", "DWROTE 6 99");
    ask("dread 6", "DREAD 6 99");
    ask("dread 5", "DREAD 5 305419896");
    assert!(!con.text().contains("ERR disk"), "console:\n{}", con.text());
    vm.serial_input(b"exit 0\n");
    assert_eq!(
        vm.wait_timeout(WAIT),
        Some(ExitReason::Poweroff { code: 0 })
    );
    drop(vm);
    assert_eq!(backend.overlay().grains_written(), 1);
    let mut out = Vec::new();
    repo.restore_disk(&s.id, "disk0", &mut out).unwrap();
    assert!(out == original, "the backup changed");
}
