//! Storage faults, deterministically: the storage "crashes" (fails every operation from
//! the Nth on, as a killed process stops) at every point of a backup and of a prune, and
//! fills up (ENOSPC). After each, everything committed restores, verify finds no damage,
//! and the next backup and prune succeed.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::{files, init, noise, open, restore, PW};
use vinfra_vcb::{
    BackupOptions, Error, Id, LocalDir, MemDisk, Parent, Repository, Storage, VerifyLevel,
};

/// A `LocalDir` whose operations start failing after a budget: every operation once
/// `ops` runs out (a crash), or only writes once `writes` runs out (a full disk).
#[derive(Debug)]
struct Faulty {
    inner: LocalDir,
    ops: Arc<AtomicI64>,
    writes: Arc<AtomicI64>,
}

impl Faulty {
    fn op(&self) -> io::Result<()> {
        if self.ops.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(io::Error::other("crashed"));
        }
        Ok(())
    }
    fn write(&self) -> io::Result<()> {
        self.op()?;
        if self.writes.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl Storage for Faulty {
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.op()?;
        self.inner.read(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.op()?;
        self.inner.read_range(name, offset, len)
    }
    fn size(&self, name: &str) -> io::Result<u64> {
        self.op()?;
        self.inner.size(name)
    }
    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.write()?;
        self.inner.write_atomic(name, data)
    }
    fn write_volatile(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.write()?;
        self.inner.write_volatile(name, data)
    }
    fn create_new(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.write()?;
        self.inner.create_new(name, data)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.op()?;
        self.inner.list(dir)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.op()?;
        self.inner.remove(name)
    }
}

/// The repository opened on a faulty storage whose budgets start after the opening.
fn faulty(dir: &Path, ops: i64, writes: i64) -> Repository {
    let (o, w) = (
        Arc::new(AtomicI64::new(i64::MAX)),
        Arc::new(AtomicI64::new(i64::MAX)),
    );
    let f = Faulty {
        inner: LocalDir::open(dir).unwrap(),
        ops: o.clone(),
        writes: w.clone(),
    };
    let repo = Repository::open(f, PW).unwrap();
    o.store(ops, Ordering::SeqCst);
    w.store(writes, Ordering::SeqCst);
    repo
}

fn copy_repo(from: &Path, to: &Path) {
    let names = ["config".to_string()].into_iter().chain(
        ["data", "index", "snapshots", "locks", "tmp"]
            .iter()
            .flat_map(|d| files(from, d)),
    );
    for f in names {
        let dst = to.join(&f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&f), dst).unwrap();
    }
}

/// A repository with three backups of one VM, the first forgotten (so prune repacks).
fn base() -> (tempfile::TempDir, Vec<(Id, Vec<u8>)>, MemDisk) {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::new(2 << 20);
    disk.write_at(&noise(1, 1 << 20), 0);
    let mut kept = Vec::new();
    for t in 0..3u64 {
        disk.write_at(&noise(10 + t, 100_000), (t as usize) * 200_000);
        let s = repo
            .backup(&BackupOptions::new("vm", t), &[("d", &disk.snapshot())])
            .unwrap();
        kept.push((s.id, disk.as_bytes().to_vec()));
    }
    repo.forget(&[kept[0].0]).unwrap();
    kept.remove(0);
    (dir, kept, disk)
}

/// What a crashed process leaves: its lock, which a real restart finds stale (pid gone);
/// in this process the pid is alive, so the test clears it as the restart would.
fn clear_locks(dir: &Path) {
    for l in files(dir, "locks") {
        std::fs::remove_file(dir.join(l)).unwrap();
    }
}

fn check_all(dir: &Path, kept: &[(Id, Vec<u8>)]) -> Repository {
    let repo = open(dir);
    let r = repo.verify(VerifyLevel::ReadData).unwrap();
    assert!(r.is_ok(), "{r:?}");
    for (id, want) in kept {
        assert!(restore(&repo, id, "d").unwrap() == *want);
    }
    repo
}

#[test]
fn crash_at_every_step_of_a_prune() {
    let (dir, kept, _) = base();
    let mut n = 0;
    loop {
        let d = tempfile::tempdir().unwrap();
        copy_repo(dir.path(), d.path());
        let r = faulty(d.path(), n, i64::MAX).prune();
        clear_locks(d.path());
        let repo = check_all(d.path(), &kept);
        if r.is_ok() {
            break;
        }
        // Restarted, prune finishes the job.
        repo.prune().unwrap();
        check_all(d.path(), &kept);
        n += 1;
        assert!(n < 500, "prune never finished");
    }
    assert!(n > 10, "prune took only {n} storage operations");
}

#[test]
fn crash_at_every_step_of_a_backup() {
    let (dir, kept, mut disk) = base();
    disk.write_at(&noise(99, 300_000), 1 << 20);
    let frozen = disk.snapshot();
    let mut n = 0;
    loop {
        let d = tempfile::tempdir().unwrap();
        copy_repo(dir.path(), d.path());
        let r =
            faulty(d.path(), n, i64::MAX).backup(&BackupOptions::new("vm", 9), &[("d", &frozen)]);
        clear_locks(d.path());
        let repo = check_all(d.path(), &kept);
        if let Ok(s) = r {
            assert!(restore(&repo, &s.id, "d").unwrap() == frozen.as_bytes());
            break;
        }
        assert_eq!(
            repo.snapshots().unwrap().len(),
            kept.len(),
            "no backup half-committed"
        );
        let s = repo
            .backup(&BackupOptions::new("vm", 9), &[("d", &frozen)])
            .unwrap();
        assert!(restore(&repo, &s.id, "d").unwrap() == frozen.as_bytes());
        repo.prune().unwrap();
        check_all(d.path(), &kept);
        n += 1;
        assert!(n < 500, "backup never finished");
    }
}

#[test]
fn a_full_disk_fails_the_backup_cleanly() {
    let (dir, kept, disk) = base();
    let mut big = disk.clone();
    big.write_at(&noise(7, 2 << 20), 0);
    let frozen = big.snapshot();
    // Room for the lock file only: the first pack does not fit.
    let e = faulty(dir.path(), i64::MAX, 1)
        .backup(
            &BackupOptions::new("vm", 5).parent(Parent::None),
            &[("d", &frozen)],
        )
        .unwrap_err();
    assert!(matches!(&e, Error::Storage { op: "write", .. }), "{e}");
    assert!(e.to_string().contains("No space left on device"), "{e}");
    clear_locks(dir.path());
    let repo = check_all(dir.path(), &kept);
    let s = repo
        .backup(&BackupOptions::new("vm", 6), &[("d", &frozen)])
        .unwrap();
    assert!(restore(&repo, &s.id, "d").unwrap() == frozen.as_bytes());
}
