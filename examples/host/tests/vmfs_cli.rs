//! The `vmfs` command line, end to end on an image file.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vinfra_testkit::{run, Finished};

const BIN: &str = env!("CARGO_BIN_EXE_vmfs");

/// Runs the `vmfs` command with `args`; a hang fails the test instead of stalling it.
fn run_vmfs(args: &[&str]) -> Finished {
    run(Command::new(BIN).args(args), Duration::from_secs(120))
}

/// Runs the `vmfs` command with `args`, expects success and returns its output.
fn vmfs(args: &[&str]) -> String {
    let out = run_vmfs(args);
    assert!(out.success(), "vmfs {args:?}: {out}");
    out.stdout
}

#[test]
fn mkfs_copy_in_and_out_disks_snapshots_info_fsck_grow() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let img = img.to_str().unwrap();
    vmfs(&[
        "mkfs",
        img,
        "--size",
        "64M",
        "--max-inodes",
        "256",
        "--label",
        "lun0",
    ]);
    vmfs(&["mkdir", img, "--host", "1", "/vm1"]);
    let src = dir.path().join("in.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    vmfs(&[
        "cp-in",
        img,
        "--host",
        "1",
        src.to_str().unwrap(),
        "/vm1/file",
    ]);
    let ls = vmfs(&["ls", img, "--host", "2", "/vm1"]);
    assert!(ls.contains("File\t300000\t") && ls.contains("file"), "{ls}");
    let dst = dir.path().join("out.bin");
    vmfs(&[
        "cp-out",
        img,
        "--host",
        "2",
        "/vm1/file",
        dst.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&dst).unwrap() == data);
    vmfs(&[
        "mkdisk",
        img,
        "--host",
        "1",
        "/vm1/vm1.vmdk",
        "--size",
        "16M",
    ]);
    let snap = vmfs(&["snapshot", img, "--host", "1", "/vm1/vm1.vmdk"]);
    assert!(snap.contains("/vm1/vm1-000001-delta"), "{snap}");
    let info = vmfs(&["info", img]);
    assert!(
        info.contains("label \"lun0\"") && info.contains("host 1: free"),
        "{info}"
    );
    let fsck = vmfs(&["fsck", img]);
    assert!(fsck.contains("clean"), "{fsck}");
    let grown = vmfs(&["grow", img, "--host", "3", "--size", "128M"]);
    assert!(grown.contains("clusters"), "{grown}");
    assert!(vmfs(&["fsck", img]).contains("clean"));
    vmfs(&["rm", img, "--host", "1", "/vm1/file"]);
    // A damaged superblock is refused with a typed error, not a panic.
    let mut raw = std::fs::read(img).unwrap();
    raw[40] ^= 0xff;
    std::fs::write(img, &raw).unwrap();
    let out = run_vmfs(&["info", img]);
    assert!(!out.success() && !out.timed_out, "{out}");
    assert!(out.stderr.contains("corrupt superblock"), "{out}");
}

/// No host of `img` is mounted and no lock is held, as `vmfs info` reports it.
fn assert_nothing_mounted(img: &str, after: &str) {
    let info = vmfs(&["info", img]);
    assert!(
        !info.contains(": mounted") && !info.contains("held by"),
        "after {after}: {info}"
    );
}

/// Every way out of a command unmounts: a command that fails (`mkdir` of a directory
/// that exists, `ls` of a missing path, `cp-in` of a missing file) and one stopped by
/// Ctrl-C (SIGINT) in the middle of a copy, which also keeps what it copied.
#[test]
fn failing_and_interrupted_commands_unmount() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let img = img.to_str().unwrap();
    vmfs(&["mkfs", img, "--size", "64M", "--max-inodes", "256"]);
    vmfs(&["mkdir", img, "--host", "0", "/d"]);
    let missing = dir.path().join("missing");
    for args in [
        vec!["mkdir", img, "--host", "0", "/d"],
        vec!["ls", img, "--host", "3", "/missing"],
        vec![
            "cp-in",
            img,
            "--host",
            "4",
            missing.to_str().unwrap(),
            "/d/x",
        ],
    ] {
        let out = run_vmfs(&args);
        assert!(
            !out.success() && !out.timed_out,
            "{args:?} should fail: {out}"
        );
        assert!(out.stderr.starts_with("vmfs: "), "{args:?}: {out}");
        assert_nothing_mounted(img, &format!("{args:?}"));
    }

    // cp-in from a FIFO that a slow producer keeps open: the copy is under way when
    // SIGINT arrives.
    let fifo = dir.path().join("slow.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let child = vinfra_testkit::spawn(Command::new(BIN).args([
        "cp-in",
        img,
        "--host",
        "2",
        fifo.to_str().unwrap(),
        "/d/big",
    ]));
    let written = Arc::new(AtomicUsize::new(0));
    let producer = {
        let fifo = fifo.clone();
        let written = written.clone();
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            // Ends when the reader is gone (EPIPE).
            for _ in 0..3000 {
                if std::io::Write::write_all(&mut w, &[7u8; 65536]).is_err() {
                    break;
                }
                written.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Three 64 KiB chunks through a 64 KiB pipe: cp-in has read (and written) some.
    let t = std::time::Instant::now();
    while written.load(Ordering::SeqCst) < 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "cp-in never read");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(vmfs(&["info", img]).contains("host 2: mounted"));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait(Duration::from_secs(60));
    assert_eq!(out.code(), Some(130), "{out}");
    assert!(out.stderr.contains("stopped"), "{out}");
    producer.join().unwrap();
    assert_nothing_mounted(img, "SIGINT");
    let ls = vmfs(&["ls", img, "--host", "1", "/d"]);
    let size: u64 = ls
        .lines()
        .find(|l| l.ends_with("\tbig"))
        .and_then(|l| l.split('\t').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(size > 0, "{ls}");
    let back = dir.path().join("big.out");
    vmfs(&[
        "cp-out",
        img,
        "--host",
        "1",
        "/d/big",
        back.to_str().unwrap(),
    ]);
    let back = std::fs::read(&back).unwrap();
    assert!(back.len() as u64 == size && back.iter().all(|&b| b == 7));
    assert!(vmfs(&["fsck", img]).contains("clean"));
}

/// `mkfs --disk-paxos`: a volume for storage without compare-and-write, found again by
/// every command; hosts outside the Disk Paxos hosts and growing the image are refused.
#[test]
fn a_disk_paxos_volume_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let img = img.to_str().unwrap();
    vmfs(&[
        "mkfs",
        img,
        "--size",
        "64M",
        "--max-inodes",
        "256",
        "--disk-paxos",
        "4",
    ]);
    vmfs(&["mkdir", img, "--host", "1", "/vm1"]);
    let src = dir.path().join("in.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    vmfs(&["cp-in", img, "--host", "3", src.to_str().unwrap(), "/vm1/f"]);
    let ls = vmfs(&["ls", img, "--host", "2", "/vm1"]);
    assert!(ls.contains("File\t100000\t"), "{ls}");
    let out = run_vmfs(&["ls", img, "--host", "4", "/"]);
    assert!(
        !out.success() && out.stderr.contains("Disk Paxos hosts"),
        "{out}"
    );
    let out = run_vmfs(&["grow", img, "--host", "1", "--size", "128M"]);
    assert!(
        !out.success() && out.stderr.contains("cannot be resized"),
        "{out}"
    );
    assert!(vmfs(&["fsck", img]).contains("clean"));
}

#[test]
fn a_damaged_volume_is_copied_off_read_only_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let img = img.to_str().unwrap();
    let local = |name: &str, len: usize, k: u8| {
        let p = dir.path().join(name);
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ k).collect();
        std::fs::write(&p, &data).unwrap();
        (p.to_str().unwrap().to_string(), data)
    };
    let (disk, disk_data) = local("disk", 300 << 10, 1);
    let (top, top_data) = local("top", 5000, 2);
    vmfs(&["mkfs", img, "--size", "64M", "--max-inodes", "256"]);
    vmfs(&["mkdir", img, "--host", "1", "/vm1"]);
    vmfs(&["cp-in", img, "--host", "1", &disk, "/vm1/disk"]);
    vmfs(&["cp-in", img, "--host", "1", &top, "/top"]);
    vmfs(&["mkdisk", img, "--host", "1", "/d.vmdk", "--size", "2M"]);
    vmfs(&["snapshot", img, "--host", "1", "/d.vmdk"]);
    let dev = vinfra_vmfs::FileDevice::open(std::path::Path::new(img), false).unwrap();
    let g = vinfra_vmfs::Volume::superblock(&dev).unwrap().geo;
    let ro = vinfra_vmfs::ReadOnlyVolume::mount(Arc::new(dev)).unwrap();
    let vm1 = ro.stat("/vm1").unwrap().ino;
    drop(ro);
    // The primary superblock and /vm1's inode are damaged.
    let mut raw = std::fs::read(img).unwrap();
    raw[40] ^= 0xff;
    raw[g.inode_at(vm1) as usize + 20] ^= 0xff;
    std::fs::write(img, &raw).unwrap();

    let out = run_vmfs(&["ls", img, "--host", "1", "/"]);
    assert!(
        !out.success() && out.stderr.contains("corrupt superblock"),
        "{out}"
    );
    let out = run_vmfs(&["ls", img, "--read-only", "/"]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("top") && out.stdout.contains("vm1"),
        "{out}"
    );
    assert!(out.stderr.contains("backup copy"), "{out}");
    assert!(out.stderr.contains(&format!("inode {vm1}")), "{out}");
    let copied = dir.path().join("copied");
    let copied_s = copied.to_str().unwrap();
    vmfs(&["cp-out", img, "--read-only", "/top", copied_s]);
    assert!(std::fs::read(&copied).unwrap() == top_data);
    let out = run_vmfs(&["cp-out", img, "--read-only", "/vm1/disk", copied_s]);
    assert!(
        !out.success() && out.stderr.contains(&format!("inode {vm1}")),
        "{out}"
    );
    assert_eq!(std::fs::read(img).unwrap(), raw, "read-only commands wrote");

    // The file below the damaged directory, found by inode and copied off before repair.
    let out = run_vmfs(&["ls", img, "--read-only", "--inodes"]);
    assert!(out.success(), "{out}");
    let under = format!("\t#{vm1}/disk");
    let line = out
        .stdout
        .lines()
        .find(|l| l.ends_with(&under))
        .unwrap_or_else(|| panic!("no back-reference path: {out}"));
    assert!(out.stderr.contains(&format!("inode {vm1}")), "{out}");
    let ino = line.split('\t').next().unwrap();
    vmfs(&["cp-out", img, "--read-only", ino, copied_s]);
    assert!(std::fs::read(&copied).unwrap() == disk_data);
    // A virtual disk, through its chain and as of its base.
    for layers in [None, Some("1")] {
        let mut args = vec!["cp-out", img, "--read-only", "--disk", "/d.vmdk", copied_s];
        args.extend(layers.iter().flat_map(|l| ["--layers", *l]));
        vmfs(&args);
        assert!(std::fs::read(&copied).unwrap() == vec![0u8; 2 << 20]);
    }
    assert_eq!(std::fs::read(img).unwrap(), raw, "read-only commands wrote");

    let out = run_vmfs(&["fsck", img]);
    assert_eq!(out.code(), Some(2), "{out}");
    let out = run_vmfs(&["fsck", img, "--repair"]);
    assert!(out.success(), "{out}");
    for want in [
        "repaired: primary superblock restored from its backup",
        &format!("quarantined: inode {vm1} cleared"),
        "/lost+found/disk",
        "clean",
    ] {
        assert!(out.stdout.contains(want), "{want}: {out}");
    }
    vmfs(&["cp-out", img, "--host", "1", "/lost+found/disk", copied_s]);
    assert!(std::fs::read(&copied).unwrap() == disk_data);
    assert!(vmfs(&["fsck", img]).contains("clean"));
    assert_nothing_mounted(img, "repair");
}

#[test]
fn repair_waits_out_a_crashed_host_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let img = img.to_str().unwrap();
    vmfs(&[
        "mkfs",
        img,
        "--size",
        "32M",
        "--max-inodes",
        "256",
        "--lease-ms",
        "1000",
        "--interval-ms",
        "250",
    ]);
    vmfs(&["mkdir", img, "--host", "1", "/vm1"]);
    vmfs(&["mkdir", img, "--host", "1", "/other"]);
    vmfs(&["mkdir", img, "--host", "1", "/other/kept"]);
    // Host 3 dies mounted (this process stops using it without unmounting), after a
    // change that is only in its journal's committed transactions and in place.
    let dev = Arc::new(vinfra_vmfs::FileDevice::open(std::path::Path::new(img), false).unwrap());
    let clock = Arc::new(vinfra_vmfs::MonotonicClock::new());
    let v = vinfra_vmfs::Volume::mount(dev.clone(), 3, &Default::default(), clock).unwrap();
    v.mkdir("/vm1/by-host-3").unwrap();
    let ino = v.stat("/other").unwrap().ino;
    std::mem::forget(v);
    let g = vinfra_vmfs::Volume::superblock(dev.as_ref()).unwrap().geo;
    let mut raw = std::fs::read(img).unwrap();
    raw[g.inode_at(ino) as usize + 20] ^= 0xff;
    std::fs::write(img, &raw).unwrap();

    let out = run_vmfs(&["fsck", img, "--repair"]);
    assert!(
        !out.success() && out.stderr.contains("in use: hosts [3]"),
        "{out}"
    );
    let out = run_vmfs(&["fsck", img, "--repair", "--release-dead"]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("released: host 3"), "{out}");
    assert!(
        out.stdout.contains("replayed the journal of host 3"),
        "{out}"
    );
    assert!(out.stdout.contains("lost+found/kept"), "{out}");
    assert!(vmfs(&["fsck", img]).contains("clean"));
    assert!(vmfs(&["ls", img, "--host", "1", "/lost+found"]).contains("kept"));
    assert!(vmfs(&["ls", img, "--host", "1", "/vm1"]).contains("by-host-3"));
}
