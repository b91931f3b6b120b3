//! Damage: flipped bytes, truncated and missing files, a wrong password, an unknown
//! version. Each gives an error naming what and where, verify pinpoints it, and backups
//! that do not need the damaged object stay restorable.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::path::Path;

use common::{files, init, noise, open, restore, PW};
use vinfra_vcb::{BackupOptions, Error, Id, LocalDir, MemDisk, Object, Repository, VerifyLevel};

struct Fixture {
    dir: tempfile::TempDir,
    repo: Repository,
    /// (backup, its disk, the packs it added)
    backups: Vec<(Id, Vec<u8>, Vec<String>)>,
}

/// Three backups: a full one, an incremental changing grain 3, one changing grain 7.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::new(1 << 20);
    disk.write_at(&noise(1, 6 * 65536), 0);
    let mut backups = Vec::new();
    for (t, grain) in [(0u64, None), (1, Some(3usize)), (2, Some(7))] {
        if let Some(g) = grain {
            disk.write_at(&noise(100 + t, 65536), g * 65536);
        }
        let before = files(dir.path(), "data");
        let s = repo
            .backup(&BackupOptions::new("vm", t), &[("d", &disk.snapshot())])
            .unwrap();
        let added = files(dir.path(), "data")
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        backups.push((s.id, disk.as_bytes().to_vec(), added));
    }
    Fixture { dir, repo, backups }
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn flipped_byte_in_a_pack_is_pinpointed_and_other_backups_restore() {
    let f = fixture();
    let (b1, b2, b3) = (&f.backups[0], &f.backups[1], &f.backups[2]);
    assert_eq!(b2.2.len(), 1);
    // Grain 3's new chunk is the only blob in backup 2's pack: hit it at byte 100.
    flip(&f.dir.path().join(&b2.2[0]), 100);
    let e = restore(&f.repo, &b2.0, "d").unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::Corrupt {
                what: Object::Chunk,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(b2.2[0].rsplit('/').next().unwrap()),
        "names the pack: {msg}"
    );
    assert!(msg.contains("at offset 16"), "names where: {msg}");
    assert!(restore(&f.repo, &b1.0, "d").unwrap() == b1.1);
    // Backup 3 still has grain 3 from backup 2: it is hit too.
    assert!(restore(&f.repo, &b3.0, "d").is_err());

    assert!(
        f.repo.verify(VerifyLevel::Structure).unwrap().is_ok(),
        "structure is intact"
    );
    let r = f.repo.verify(VerifyLevel::ReadData).unwrap();
    let mut want = vec![b2.0, b3.0];
    want.sort();
    assert_eq!(r.damaged_snapshots(), want);
    let p = r.problems.iter().find(|p| !p.affected.is_empty()).unwrap();
    assert!(
        p.affected
            .iter()
            .all(|a| a.disk == "d" && a.offset == 3 * 65536),
        "{p:?}"
    );
    // Prune neither fails on nor hides the damage; the intact backup stays restorable.
    f.repo.forget(&[b3.0]).unwrap();
    f.repo.prune().unwrap();
    assert!(restore(&f.repo, &b1.0, "d").unwrap() == b1.1);
    let r = f.repo.verify(VerifyLevel::ReadData).unwrap();
    assert_eq!(r.damaged_snapshots(), vec![b2.0]);
}

#[test]
fn truncated_and_missing_packs_are_named() {
    let f = fixture();
    let (b1, b3) = (&f.backups[0], &f.backups[2]);
    let p3 = f.dir.path().join(&b3.2[0]);
    let len = std::fs::metadata(&p3).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p3)
        .unwrap()
        .set_len(len / 4)
        .unwrap();
    let e = restore(&f.repo, &b3.0, "d").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                what: Object::Pack,
                ..
            }
        ),
        "{e}"
    );
    let r = f.repo.verify(VerifyLevel::Structure).unwrap();
    assert_eq!(r.damaged_snapshots(), vec![b3.0]);
    assert!(restore(&f.repo, &b1.0, "d").unwrap() == b1.1);

    std::fs::remove_file(&p3).unwrap();
    let e = restore(&f.repo, &b3.0, "d").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Missing {
                what: Object::Pack,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("missing"), "{e}");
    let r = f.repo.verify(VerifyLevel::ReadData).unwrap();
    assert_eq!(r.damaged_snapshots(), vec![b3.0]);
}

#[test]
fn deleted_index_is_a_clear_error_and_the_next_backup_heals() {
    let f = fixture();
    for i in files(f.dir.path(), "index") {
        std::fs::remove_file(f.dir.path().join(i)).unwrap();
    }
    let b1 = &f.backups[0];
    let e = restore(&f.repo, &b1.0, "d").unwrap_err();
    assert!(matches!(e, Error::ChunkMissing { .. }), "{e}");
    assert!(e.to_string().contains("missing from every index"), "{e}");
    let r = f.repo.verify(VerifyLevel::Structure).unwrap();
    assert_eq!(r.damaged_snapshots().len(), 3);
    assert_eq!(r.unindexed_packs, 3);
    let packs = files(f.dir.path(), "data");
    let e = f.repo.prune().unwrap_err();
    assert!(
        matches!(e, Error::ChunkMissing { .. }),
        "prune refuses: {e}"
    );
    assert_eq!(files(f.dir.path(), "data"), packs, "no pack deleted");
    // The packs describe themselves: the index is rebuilt from their trailers.
    let st = f.repo.repair_index().unwrap();
    assert_eq!((st.packs_indexed, st.packs_unreadable), (3, 0));
    assert!(f.repo.verify(VerifyLevel::ReadData).unwrap().is_ok());
    for (id, want, _) in &f.backups {
        assert!(restore(&f.repo, id, "d").unwrap() == *want);
    }
    for i in files(f.dir.path(), "index") {
        std::fs::remove_file(f.dir.path().join(i)).unwrap();
    }
    // A new backup (incremental from backup 3, whose chunks are unindexed) stores again
    // what the index lacks, which makes the older backups restorable again.
    let disk = MemDisk::from_vec(b1.1.clone()).snapshot();
    let s = f
        .repo
        .backup(&BackupOptions::new("vm", 9), &[("d", &disk)])
        .unwrap();
    assert!(restore(&f.repo, &s.id, "d").unwrap() == b1.1);
    assert_eq!(
        restore(&f.repo, &b1.0, "d").unwrap(),
        b1.1,
        "its chunks are indexed again"
    );
}

#[test]
fn damaged_index_and_manifest_files_are_named() {
    let f = fixture();
    let (b1, b2) = (&f.backups[0], &f.backups[1]);
    let idx = files(f.dir.path(), "index");
    flip(&f.dir.path().join(&idx[0]), 20);
    let r = f.repo.verify(VerifyLevel::Structure).unwrap();
    assert!(r.problems.iter().any(|p| matches!(&p.error, Error::Corrupt { what: Object::Index, name, .. } if *name == idx[0])), "{r:?}");
    let e = f.repo.prune().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Corrupt {
                what: Object::Index,
                ..
            }
        ),
        "prune refuses: {e}"
    );
    std::fs::remove_file(f.dir.path().join(&idx[0])).unwrap();

    let m2 = format!("snapshots/{}", b2.0);
    flip(&f.dir.path().join(&m2), 30);
    let e = f.repo.snapshot(&b2.0).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("manifest {m2}: corrupted")),
        "{e}"
    );
    assert!(f.repo.snapshots().is_err());
    let r = f.repo.verify(VerifyLevel::Structure).unwrap();
    assert!(r.problems.iter().any(|p| matches!(
        &p.error,
        Error::Corrupt {
            what: Object::Manifest,
            ..
        }
    )));
    assert!(
        f.repo.prune().is_err(),
        "prune refuses with a damaged manifest"
    );
    // A manifest cut short.
    let p = f.dir.path().join(&m2);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    assert!(matches!(
        f.repo.snapshot(&b2.0),
        Err(Error::Truncated {
            what: Object::Manifest,
            ..
        })
    ));
    // A manifest swapped for another's bytes: caught by its name.
    std::fs::copy(f.dir.path().join(format!("snapshots/{}", b1.0)), &p).unwrap();
    assert!(f
        .repo
        .snapshot(&b2.0)
        .unwrap_err()
        .to_string()
        .contains("does not match its name"));
    let _ = b1;
}

#[test]
fn wrong_password_and_unknown_version() {
    let f = fixture();
    let e = Repository::open(LocalDir::open(f.dir.path()).unwrap(), b"wrong").unwrap_err();
    assert!(matches!(e, Error::WrongPassword), "{e}");
    let repo = open(f.dir.path());
    assert_eq!(
        restore(&repo, &f.backups[2].0, "d").unwrap(),
        f.backups[2].1
    );

    let cfg = f.dir.path().join("config");
    let good = std::fs::read(&cfg).unwrap();
    let mut v = good.clone();
    v[4] = 2;
    std::fs::write(&cfg, &v).unwrap();
    let e = Repository::open(LocalDir::open(f.dir.path()).unwrap(), PW).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Version {
                what: Object::Config,
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "config config: unknown format version 2 (this build reads 1)"
    );
    std::fs::write(&cfg, &good[..50]).unwrap();
    let e = Repository::open(LocalDir::open(f.dir.path()).unwrap(), PW).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                what: Object::Config,
                ..
            }
        ),
        "{e}"
    );
    std::fs::remove_file(&cfg).unwrap();
    let e = Repository::open(LocalDir::open(f.dir.path()).unwrap(), PW).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Missing {
                what: Object::Config,
                ..
            }
        ),
        "{e}"
    );
    // And init refuses to overwrite a repository.
    std::fs::write(&cfg, &good).unwrap();
    let e = Repository::init(
        LocalDir::open(f.dir.path()).unwrap(),
        PW,
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Exists(_)), "{e}");
}

#[test]
fn prune_repacks_live_chunks_but_keeps_a_damaged_pack_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::new(1 << 20);
    disk.write_at(&noise(1, 4 * 65536), 0);
    let a = repo
        .backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())])
        .unwrap();
    // Grain 0 rewritten: after forgetting backup a, its pack holds 3 live chunks, 1 dead.
    disk.write_at(&noise(2, 65536), 0);
    let b = repo
        .backup(&BackupOptions::new("vm", 2), &[("d", &disk.snapshot())])
        .unwrap();
    let want = disk.as_bytes().to_vec();
    repo.forget(&[a.id]).unwrap();
    let mut damaged_repo = None;
    for damage in [false, true] {
        let d2 = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), d2.path());
        let r = open(d2.path());
        let first_pack = files(d2.path(), "data")
            .into_iter()
            .find(|p| std::fs::metadata(d2.path().join(p)).unwrap().len() > 3 * 65536)
            .unwrap();
        if damage {
            // Inside the last blob (a live grain 1..3 chunk): the pack cannot be repacked.
            let len = std::fs::metadata(d2.path().join(&first_pack))
                .unwrap()
                .len() as usize;
            flip(&d2.path().join(&first_pack), len - 2000);
        }
        let st = r.prune().unwrap();
        if damage {
            assert_eq!(st.packs_deleted, 0, "{st:?}");
            assert!(files(d2.path(), "data").contains(&first_pack));
            let rep = r.verify(VerifyLevel::ReadData).unwrap();
            assert_eq!(rep.damaged_snapshots(), vec![b.id]);
            damaged_repo = Some(d2);
        } else {
            assert_eq!(
                (st.packs_deleted, st.packs_written, st.chunks_dropped),
                (1, 1, 1),
                "{st:?}"
            );
            assert!(r.verify(VerifyLevel::ReadData).unwrap().is_ok());
            assert!(restore(&r, &b.id, "d").unwrap() == want);
        }
    }
    drop(damaged_repo);
}

fn copy_dir(from: &Path, to: &Path) {
    for f in ["config"].into_iter().map(String::from).chain(
        ["data", "index", "snapshots"]
            .iter()
            .flat_map(|d| files(from, d)),
    ) {
        let dst = to.join(&f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&f), dst).unwrap();
    }
}

/// A damaged whole chunk that a composite chunk refers to: verify names it once, with
/// the grains of both backups it makes unrestorable (the composite's included), and
/// restoring the later backup fails on that grain with a corrupt-chunk error.
#[test]
fn damage_to_a_chunk_that_others_refer_to_affects_their_backups_too() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::new(1 << 20);
    let a = noise(7, 65536);
    disk.write_at(&a, 0);
    let full = repo
        .backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())])
        .unwrap();
    let packs = files(dir.path(), "data");
    assert_eq!(packs.len(), 1);
    // Blocks 2..6 of grain 0 copied to grain 5: a composite of references and zeros.
    disk.write_at(&a[8192..24576], 5 * 65536);
    let incr = repo
        .backup(&BackupOptions::new("vm", 2), &[("d", &disk.snapshot())])
        .unwrap();
    assert!(incr.manifest.disks[0].stats.bytes_new < 400);
    flip(&dir.path().join(&packs[0]), 16 + 30_000);
    let rep = repo.verify(VerifyLevel::ReadData).unwrap();
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    let mut hit: Vec<(Id, u64)> = rep.problems[0]
        .affected
        .iter()
        .map(|x| (x.snapshot, x.offset))
        .collect();
    hit.sort();
    let mut want = vec![(full.id, 0), (incr.id, 0), (incr.id, 5 * 65536)];
    want.sort();
    assert_eq!(hit, want);
    assert_eq!(rep.damaged_snapshots().len(), 2);
    let e = restore(&repo, &incr.id, "d").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Corrupt {
                what: Object::Chunk,
                ..
            }
        ),
        "{e}"
    );
    // ReadPacks and Structure agree on who is affected.
    let rep = repo.verify(VerifyLevel::ReadPacks).unwrap();
    assert_eq!(rep.problems[0].affected.len(), 3);
    assert!(repo.verify(VerifyLevel::Structure).unwrap().is_ok());
}
