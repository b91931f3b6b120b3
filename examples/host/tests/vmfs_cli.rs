//! The `vmfs` command line, end to end on an image file.
#![allow(clippy::unwrap_used)]

use std::process::Command;
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
