//! kill -9 in the middle of a backup: a child process (this test binary, re-run with an
//! environment variable) backs up while the parent kills it. The repository stays
//! consistent, prune was refused while the child lived, the next backup succeeds, prune
//! breaks the dead child's lock and removes its leftovers, and everything verifies.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::time::{Duration, Instant};

use common::{files, init, noise, open, restore};
use vinfra_vcb::{BackupOptions, Error, MemDisk, Parent, VerifyLevel};

const ENV: &str = "VCB_CRASH_CHILD_REPO";

/// The child's body: back up fresh data, over and over, until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV) else {
        return; // an ordinary test run: nothing to do
    };
    let repo = open(std::path::Path::new(&dir));
    for round in 0u64.. {
        let disk = MemDisk::from_vec(noise(1000 + round, 40 << 20)).snapshot();
        repo.backup(
            &BackupOptions::new("child", round).parent(Parent::None),
            &[("d", &disk)],
        )
        .unwrap();
    }
}

#[test]
fn kill_9_during_a_backup_then_the_next_backup_and_prune_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::from_vec(noise(1, 3 << 20));
    let base = disk.snapshot();
    let b0 = repo
        .backup(&BackupOptions::new("vm", 0), &[("d", &base)])
        .unwrap();
    let packs0 = files(dir.path(), "data").len();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child has written two packs of its first backup (40 MiB: three).
    let t0 = Instant::now();
    while files(dir.path(), "data").len() < packs0 + 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "child made no progress"
        );
        assert!(child.try_wait().unwrap().is_none(), "child exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    // While it runs, prune is refused by its live shared lock.
    match repo.prune() {
        Err(Error::Locked(h)) => {
            assert!(!h.exclusive);
            assert_eq!(h.pid, child.id());
            assert_eq!(h.verdict, "its process is running");
        }
        other => panic!("prune beside a running backup: {other:?}"),
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !files(dir.path(), "locks").is_empty(),
        "the dead child's lock is left"
    );

    // The repository is consistent: what committed restores, verify is clean (the
    // killed backup's packs are in no index).
    let r = repo.verify(VerifyLevel::ReadData).unwrap();
    assert!(r.is_ok(), "{r:?}");
    let committed_by_child = repo
        .snapshots()
        .unwrap()
        .iter()
        .filter(|s| s.manifest.vm == "child")
        .count();
    if committed_by_child == 0 {
        assert!(r.unindexed_packs >= 2, "{r:?}");
    }
    assert!(restore(&repo, &b0.id, "d").unwrap() == base.as_bytes());
    // The next backup succeeds beside the stale lock.
    disk.write_at(&noise(2, 100_000), 500_000);
    let next = disk.snapshot();
    let b1 = repo
        .backup(&BackupOptions::new("vm", 1), &[("d", &next)])
        .unwrap();
    assert_eq!(b1.manifest.disks[0].stats.bytes_read, 3 * 65536);
    // Prune breaks the stale lock and removes what the killed backup left.
    let before = files(dir.path(), "data").len();
    let st = repo.prune().unwrap();
    assert!(files(dir.path(), "locks").is_empty());
    if committed_by_child == 0 {
        assert!(st.packs_deleted >= 2, "{st:?}");
        assert!(files(dir.path(), "data").len() <= before - 2);
    }
    assert!(files(dir.path(), "tmp").is_empty());
    let r = repo.verify(VerifyLevel::ReadData).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.unindexed_packs, 0);
    assert!(restore(&repo, &b0.id, "d").unwrap() == base.as_bytes());
    assert!(restore(&repo, &b1.id, "d").unwrap() == next.as_bytes());
}
