//! The vmfs disk adapter: I/O round trip, range checks, the exclusive lock
//! against a second host (in this process and in another process), and I/O
//! refused after self-fencing.
// Test patterns are byte-sized on purpose.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::error::Error as _;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vinfra_host::vmfs_disk::{MountedHost, VmfsDiskBackend, VmfsDiskError};
use vinfra_testkit::{guest, kvm_or_skip, run, test_in_child, Finished};
use vinfra_vmfs::{
    FileDevice, ManualClock, MemDevice, MkfsOptions, MonotonicClock, MountOptions, Volume,
};
use vinfra_vmm_core::devices::block::BlockBackend;

const MIB: u64 = 1 << 20;

fn small_mkfs() -> MkfsOptions {
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    o.blocks_per_cluster = 512;
    o
}

fn mem_volume() -> (Volume, Arc<ManualClock>) {
    let dev = Arc::new(MemDevice::new(48 << 20));
    Volume::mkfs(dev.as_ref(), &small_mkfs()).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let vol = Volume::mount(dev, 1, &MountOptions::default(), clock.clone()).unwrap();
    (vol, clock)
}

fn file_volume(path: &Path) {
    let dev = FileDevice::create(path, 48 << 20).unwrap();
    Volume::mkfs(&dev, &small_mkfs()).unwrap();
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The vmfs error inside an adapter `io::Error`, found through the source chain.
fn vmfs_source(e: &io::Error) -> &vinfra_vmfs::Error {
    let inner = e.get_ref().unwrap();
    let adapter = inner.downcast_ref::<VmfsDiskError>().unwrap();
    adapter
        .source()
        .unwrap()
        .downcast_ref::<vinfra_vmfs::Error>()
        .unwrap()
}

#[test]
fn round_trip_read_write_flush_len() {
    let (vol, _clock) = mem_volume();
    let disk = Arc::new(VmfsDiskBackend::create(&vol, "/vm1.vmdk", 4 * MIB).unwrap());
    assert_eq!(disk.len(), 4 * MIB);
    // A never-written disk reads as zeros.
    let mut buf = vec![1u8; 4096];
    disk.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    // Sector writes, a write across a 64 KiB grain, and the last sector.
    let cases = [
        (0u64, pattern(1, 512)),
        (512 * 7, pattern(2, 4096)),
        (65536 - 1024, pattern(3, 8192)),
        (4 * MIB - 512, pattern(4, 512)),
    ];
    for (off, data) in &cases {
        disk.write_at(data, *off).unwrap();
    }
    disk.flush().unwrap();
    for (off, data) in &cases {
        let mut back = vec![0u8; data.len()];
        disk.read_at(&mut back, *off).unwrap();
        assert_eq!(&back, data, "offset {off}");
    }
    // Several vCPU threads at once (the trait's Send + Sync): disjoint sectors.
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let d = disk.clone();
            std::thread::spawn(move || {
                for i in 0..16u64 {
                    let off = MIB + (u64::from(t) * 16 + i) * 512;
                    d.write_at(&pattern(t ^ i as u8, 512), off).unwrap();
                    let mut back = vec![0u8; 512];
                    d.read_at(&mut back, off).unwrap();
                    assert_eq!(back, pattern(t ^ i as u8, 512));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::into_inner(disk).unwrap().close().unwrap();
    // Reopened (the lock was released): everything is there.
    let disk = VmfsDiskBackend::open(&vol, "/vm1.vmdk").unwrap();
    for (off, data) in &cases {
        let mut back = vec![0u8; data.len()];
        disk.read_at(&mut back, *off).unwrap();
        assert_eq!(&back, data, "offset {off} after reopen");
    }
    let mut back = vec![0u8; 512];
    disk.read_at(&mut back, MIB + 17 * 512).unwrap();
    assert_eq!(back, pattern(1 ^ 1, 512));
}

#[test]
fn out_of_range_access_is_an_error() {
    let (vol, _clock) = mem_volume();
    let disk = VmfsDiskBackend::create(&vol, "/d.vmdk", MIB).unwrap();
    let mut buf = vec![0u8; 1024];
    for off in [MIB - 512, MIB, MIB + 512, u64::MAX - 100, u64::MAX] {
        let e = disk.read_at(&mut buf, off).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "read at {off}: {e}");
        let e = disk.write_at(&buf, off).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "write at {off}: {e}");
        assert!(e.to_string().contains("beyond the capacity"), "{e}");
    }
    // Nothing was written by the refused requests.
    let mut last = vec![1u8; 512];
    disk.read_at(&mut last, MIB - 512).unwrap();
    assert!(last.iter().all(|b| *b == 0));
}

#[test]
fn second_host_in_this_process_is_refused_while_the_first_holds_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    file_volume(&lun);
    let a = MountedHost::mount(&lun, 1, &MountOptions::default()).unwrap();
    let disk = VmfsDiskBackend::create(a.volume(), "/vm1.vmdk", MIB).unwrap();
    disk.write_at(&[5u8; 512], 0).unwrap();
    disk.flush().unwrap();

    // Host 2 on its own open of the same file (its own OFD, as another process has).
    let dev_b = Arc::new(FileDevice::open(&lun, false).unwrap());
    let b = Volume::mount(
        dev_b,
        2,
        &MountOptions::default(),
        Arc::new(MonotonicClock::new()),
    )
    .unwrap();
    let e = VmfsDiskBackend::open(&b, "/vm1.vmdk").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("locked by host 1, alive, heartbeat"),
        "{text}"
    );
    assert!(matches!(
        e.source().unwrap().downcast_ref::<vinfra_vmfs::Error>(),
        Some(vinfra_vmfs::Error::Locked { .. })
    ));
    assert!(!a.fenced());

    // Powered off on host 1: host 2 may open it and sees the data.
    disk.close().unwrap();
    let d2 = VmfsDiskBackend::open(&b, "/vm1.vmdk").unwrap();
    let mut back = [0u8; 512];
    d2.read_at(&mut back, 0).unwrap();
    assert_eq!(back, [5u8; 512]);
    d2.close().unwrap();
    b.unmount().unwrap();
    a.unmount().unwrap();
}

/// Environment variables that turn [`helper_open_as_host_2`] into a child host.
const HELPER_VOLUME: &str = "VMFS_DISK_TEST_VOLUME";

/// Not a test of its own: the child process of
/// [`second_host_in_another_process_is_refused`]. Mounts the volume as host 2,
/// tries to open the disk and prints the outcome on one line.
#[test]
fn helper_open_as_host_2() {
    let Some(volume) = std::env::var_os(HELPER_VOLUME) else {
        return;
    };
    let host = MountedHost::mount(Path::new(&volume), 2, &MountOptions::default()).unwrap();
    match VmfsDiskBackend::open(host.volume(), "/vm1.vmdk") {
        Ok(d) => {
            println!("HELPER-OPENED len={}", d.len());
            d.close().unwrap();
        }
        Err(e) => println!("HELPER-REFUSED {e}"),
    }
    host.unmount().unwrap();
}

fn run_helper(lun: &Path) -> String {
    let out = run(
        test_in_child("helper_open_as_host_2").env(HELPER_VOLUME, lun),
        Duration::from_secs(60),
    );
    assert!(out.success(), "helper failed: {out}");
    out.stdout
}

#[test]
fn second_host_in_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    file_volume(&lun);
    let a = MountedHost::mount(&lun, 1, &MountOptions::default()).unwrap();
    let disk = VmfsDiskBackend::create(a.volume(), "/vm1.vmdk", MIB).unwrap();
    disk.flush().unwrap();

    let refused = run_helper(&lun);
    assert!(
        refused.contains("HELPER-REFUSED open disk /vm1.vmdk: ")
            && refused.contains("locked by host 1, alive, heartbeat"),
        "{refused}"
    );
    // The refusal left host 1's disk usable.
    disk.write_at(&[9u8; 512], 512).unwrap();
    disk.flush().unwrap();
    disk.close().unwrap();

    let opened = run_helper(&lun);
    assert!(
        opened.contains(&format!("HELPER-OPENED len={MIB}")),
        "{opened}"
    );
    a.unmount().unwrap();
}

#[test]
fn io_fails_after_self_fencing() {
    let (vol, clock) = mem_volume();
    let disk = VmfsDiskBackend::create(&vol, "/vm1.vmdk", MIB).unwrap();
    disk.write_at(&[3u8; 512], 0).unwrap();
    disk.flush().unwrap();
    let events = vol.events().unwrap();
    // No heartbeat renewal for half a lease: the host fences itself.
    clock.advance(vol.lease_ms() / 2 + 1);
    let mut buf = [0u8; 512];
    // Written and never-written sectors alike.
    for off in [0, 4096] {
        let e = disk.read_at(&mut buf, off).unwrap_err();
        assert!(
            matches!(vmfs_source(&e), vinfra_vmfs::Error::Fenced { host: 1 }),
            "{e}"
        );
    }
    let e = disk.write_at(&[4u8; 512], 0).unwrap_err();
    assert!(
        matches!(vmfs_source(&e), vinfra_vmfs::Error::Fenced { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("fenced itself"), "{e}");
    let e = disk.flush().unwrap_err();
    assert!(
        matches!(vmfs_source(&e), vinfra_vmfs::Error::Fenced { .. }),
        "{e}"
    );
    let event = events.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(
        matches!(event, vinfra_vmfs::VolumeEvent::Fenced { host: 1, .. }),
        "{event:?}"
    );
}

/// Word `j` of sector `s` of vmm-core/guests/ABI.md's host pattern.
fn host_word(s: u32, j: u32) -> u32 {
    0x5eed_0000 ^ s.wrapping_mul(0x9e37_79b1) ^ j
}

fn host_sector(s: u32) -> Vec<u8> {
    (0..128)
        .flat_map(|j| host_word(s, j).to_le_bytes())
        .collect()
}

fn guest_sector(s: u32) -> Vec<u8> {
    (0..128)
        .flat_map(|j| (host_word(s, j) ^ 0xffff_ffff).to_le_bytes())
        .collect()
}

/// Runs `vmfs-vm` with `args`, killing it after `limit`.
fn run_vmfs_vm(args: &[&OsStr], limit: Duration) -> Finished {
    run(
        Command::new(env!("CARGO_BIN_EXE_vmfs-vm")).args(args),
        limit,
    )
}

/// `vmfs-vm` arguments: host 1 runs `/vm1.vmdk` of the volume `lun` with `kernel`.
fn host1_runs_vm1<'a>(lun: &'a Path, kernel: &'a OsStr) -> [&'a OsStr; 8] {
    [
        "--volume".as_ref(),
        lun.as_os_str(),
        "--host-id".as_ref(),
        "1".as_ref(),
        "--disk".as_ref(),
        "/vm1.vmdk".as_ref(),
        "--kernel".as_ref(),
        kernel,
    ]
}

#[test]
fn vmfs_vm_binary_is_refused_while_another_host_runs_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    file_volume(&lun);
    let a = MountedHost::mount(&lun, 3, &MountOptions::default()).unwrap();
    let disk = VmfsDiskBackend::create(a.volume(), "/vm1.vmdk", MIB).unwrap();
    let done = run_vmfs_vm(
        &host1_runs_vm1(&lun, "no-kernel-needed.elf".as_ref()),
        Duration::from_secs(30),
    );
    assert_eq!(done.code(), Some(1), "{done}");
    assert!(
        done.stderr.contains("locked by host 3, alive, heartbeat"),
        "{done}"
    );
    disk.close().unwrap();
    a.unmount().unwrap();
}

#[test]
fn kvm_disk_guest_on_a_vmfs_disk() {
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("disk") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    file_volume(&lun);
    // Host 3 prepares the disk: the host pattern in sectors 0..64.
    let prep = MountedHost::mount(&lun, 3, &MountOptions::default()).unwrap();
    let disk = VmfsDiskBackend::create(prep.volume(), "/vm1.vmdk", MIB).unwrap();
    for s in 0..64u32 {
        disk.write_at(&host_sector(s), u64::from(s) * 512).unwrap();
    }
    disk.close().unwrap();
    prep.unmount().unwrap();

    // Host 1 runs the VM in its own process (vmfs-vm).
    let done = run_vmfs_vm(
        &host1_runs_vm1(&lun, kernel.as_os_str()),
        Duration::from_secs(60),
    );
    assert_eq!(done.code(), Some(0), "{done}");
    assert!(done.stdout.contains("DISK-OK sectors=64"), "{done}");

    // Host 2 reads what the guest wrote, through vmfs.
    let b = MountedHost::mount(&lun, 2, &MountOptions::default()).unwrap();
    let disk = VmfsDiskBackend::open(b.volume(), "/vm1.vmdk").unwrap();
    for s in 0..64u32 {
        let mut back = vec![0u8; 512];
        disk.read_at(&mut back, u64::from(s) * 512).unwrap();
        assert_eq!(back, host_sector(s), "host pattern, sector {s}");
        disk.read_at(&mut back, u64::from(64 + s) * 512).unwrap();
        assert_eq!(
            back,
            guest_sector(64 + s),
            "guest pattern, sector {}",
            64 + s
        );
    }
    disk.close().unwrap();
    b.unmount().unwrap();
}
