//! Round trips against a model: random writes between backups; every restore point
//! restores exactly the disk at its snapshot, before and after forget + prune.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::collections::BTreeSet;

use common::{init, noise, restore};
use proptest::prelude::*;
use vinfra_vcb::{
    BackupOptions, BackupOverlay, DiskSource, MemDisk, Parent, VerifyLevel, MEM_GRAIN,
};

const CAP: usize = 2 << 20;

#[derive(Debug, Clone)]
struct Write {
    offset: usize,
    len: usize,
    /// None: random bytes; Some(b): filled with b (0 included: data turning to zeros).
    fill: Option<u8>,
    seed: u64,
}

fn write() -> impl Strategy<Value = Write> {
    (
        0..CAP,
        1usize..150_000,
        prop::option::of(prop::sample::select(vec![0u8, 1, 0xff])),
        any::<u64>(),
    )
        .prop_map(|(offset, len, fill, seed)| Write {
            offset,
            len: len.min(CAP - offset),
            fill,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn every_restore_point_restores_its_disk(
        steps in prop::collection::vec(prop::collection::vec(write(), 0..6), 1..6),
        forget_mask in any::<u8>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        let mut disk = MemDisk::new(CAP);
        let mut points: Vec<(vinfra_vcb::Id, Vec<u8>)> = Vec::new();
        for (t, ws) in steps.iter().enumerate() {
            let mut touched = BTreeSet::new();
            for w in ws {
                let data = match w.fill {
                    Some(b) => vec![b; w.len],
                    None => noise(w.seed, w.len),
                };
                disk.write_at(&data, w.offset);
                for g in w.offset / MEM_GRAIN as usize..=(w.offset + w.len - 1) / MEM_GRAIN as usize {
                    touched.insert(g);
                }
            }
            let frozen = disk.snapshot();
            let s = repo.backup(&BackupOptions::new("vm", t as u64), &[("d", &frozen)]).unwrap();
            let read = s.manifest.disks[0].stats.bytes_read;
            if t == 0 {
                let alloc: u64 = frozen.allocated().iter().map(|r| r.1).sum();
                prop_assert_eq!(read, alloc);
            } else {
                // Incremental: exactly the grains written since the previous backup.
                prop_assert_eq!(read, touched.len() as u64 * MEM_GRAIN);
                prop_assert_eq!(s.manifest.parent, Some(points[t - 1].0));
            }
            points.push((s.id, frozen.as_bytes().to_vec()));
        }
        for (id, want) in &points {
            prop_assert!(&restore(&repo, id, "d").unwrap() == want);
        }
        // Forget some, prune, and the rest still restore and verify.
        let gone: Vec<_> = points.iter().enumerate().filter(|(i, _)| forget_mask & (1 << i) != 0).map(|(_, p)| p.0).collect();
        repo.forget(&gone).unwrap();
        repo.prune().unwrap();
        let report = repo.verify(VerifyLevel::ReadData).unwrap();
        prop_assert!(report.is_ok(), "{:?}", report);
        for (id, want) in points.iter().filter(|p| !gone.contains(&p.0)) {
            prop_assert!(&restore(&repo, id, "d").unwrap() == want);
        }
        // A backup after the prune still deduplicates against what is left.
        let again = repo.backup(&BackupOptions::new("vm", 99).parent(Parent::None), &[("d", &disk.snapshot())]).unwrap();
        prop_assert!(restore(&repo, &again.id, "d").unwrap() == disk.as_bytes());
    }
}

#[test]
fn unchanged_rewrites_store_nothing_and_clones_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::new(CAP);
    let data = noise(1, CAP / 2);
    disk.write_at(&data, 0);
    let full = repo
        .backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())])
        .unwrap();
    assert_eq!(full.manifest.disks[0].stats.chunks_new, 16);
    // The guest writes the same bytes again: read (CBT says changed), stored: nothing.
    disk.write_at(&data[..3 * 65536], 0);
    let s = repo
        .backup(&BackupOptions::new("vm", 2), &[("d", &disk.snapshot())])
        .unwrap();
    assert_eq!(s.manifest.disks[0].stats.bytes_read, 3 * 65536);
    assert_eq!(s.manifest.disks[0].stats.bytes_new, 0);
    // A clone of the VM under another name: full read, nothing new stored.
    let clone = MemDisk::from_vec(disk.as_bytes().to_vec()).snapshot();
    let c = repo
        .backup(&BackupOptions::new("vm-clone", 3), &[("d", &clone)])
        .unwrap();
    assert_eq!(c.manifest.parent, None);
    assert_eq!(c.manifest.disks[0].stats.bytes_new, 0);
    // Two disks in one backup, restored separately, to a verified sparse file.
    let other = MemDisk::from_vec(noise(2, 1 << 20)).snapshot();
    let two = repo
        .backup(
            &BackupOptions::new("vm", 4).config(b"{\"mem\":512}".to_vec()),
            &[("d", &disk.snapshot()), ("e", &other)],
        )
        .unwrap();
    let file = dir.path().join("e.img");
    let st = repo.restore_disk_to_file(&two.id, "e", &file).unwrap();
    assert!(std::fs::read(&file).unwrap() == other.as_bytes());
    assert_eq!(st.chunks_read, 16);
    let back = repo.snapshot(&two.id).unwrap();
    assert_eq!(back.manifest.config, b"{\"mem\":512}");
    assert_eq!(
        repo.find_snapshot(&two.id.to_hex()[..10]).unwrap().id,
        two.id
    );
    let long = "x".repeat(2000);
    let e = repo
        .backup(&BackupOptions::new(&long, 5), &[("d", &clone)])
        .unwrap_err();
    assert!(matches!(e, vinfra_vcb::Error::Invalid(_)), "{e}");
    let e = repo
        .backup(
            &BackupOptions::new("vm", 5),
            &[("d", &clone), ("d", &clone)],
        )
        .unwrap_err();
    assert!(matches!(e, vinfra_vcb::Error::Invalid(_)), "{e}");
    assert!(matches!(
        repo.restore_disk(&two.id, "nope", &mut Vec::new()),
        Err(vinfra_vcb::Error::NoDisk { .. })
    ));
}

#[test]
fn concurrent_backups_of_two_vms_and_prune_waits() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::sync::Arc::new(init(dir.path()));
    let handles: Vec<_> = (0..2u64)
        .map(|v| {
            let repo = repo.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                let mut disk = MemDisk::new(CAP);
                for t in 0..3u64 {
                    disk.write_at(&noise(v * 10 + t, 200_000), (t as usize) * 300_000);
                    // Both VMs share a template grain: stored by either, maybe both.
                    disk.write_at(&[0x5a; 65536], CAP - 65536);
                    let s = repo
                        .backup(
                            &BackupOptions::new(&format!("vm{v}"), t),
                            &[("d", &disk.snapshot())],
                        )
                        .unwrap();
                    ids.push((s.id, disk.as_bytes().to_vec()));
                }
                ids
            })
        })
        .collect();
    let all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    for (id, want) in &all {
        assert!(&restore(&repo, id, "d").unwrap() == want);
    }
    repo.prune().unwrap();
    assert!(repo.verify(VerifyLevel::ReadData).unwrap().is_ok());
    for (id, want) in &all {
        assert!(&restore(&repo, id, "d").unwrap() == want);
    }
}

#[test]
fn retention_forgets_per_vm_and_prune_keeps_what_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::new(CAP);
    let mut all = Vec::new();
    // Two backups a day for five days.
    for i in 0..10u64 {
        disk.write_at(&noise(i, 70_000), (i as usize) * 100_000);
        let s = repo
            .backup(
                &BackupOptions::new("vm", i * 43_200),
                &[("d", &disk.snapshot())],
            )
            .unwrap();
        all.push((s.id, disk.as_bytes().to_vec()));
    }
    assert!(matches!(
        repo.forget_by_policy(&vinfra_vcb::Retention::default()),
        Err(vinfra_vcb::Error::Invalid(_))
    ));
    let plan = repo
        .forget_by_policy(&vinfra_vcb::Retention::default().last(1).daily(3))
        .unwrap();
    // Newest (day 4, second), then the newest of days 3 and 2.
    let mut want = vec![all[9].0, all[7].0, all[5].0];
    want.sort();
    let mut kept = plan.keep.clone();
    kept.sort();
    assert_eq!(kept, want);
    assert_eq!(plan.forget.len(), 7);
    repo.prune().unwrap();
    assert!(repo.verify(VerifyLevel::ReadData).unwrap().is_ok());
    for (id, data) in all.iter().filter(|a| want.contains(&a.0)) {
        assert!(&restore(&repo, id, "d").unwrap() == data);
    }
    assert_eq!(repo.snapshots().unwrap().len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    /// Random reads from a backup (crossing grains, zero grains, the disk's short last
    /// grain) return the disk's bytes.
    #[test]
    fn random_reads_from_a_backup_match_the_disk(
        writes in prop::collection::vec(write(), 1..8),
        reads in prop::collection::vec((0..CAP as u64 + 5000, 0usize..200_000), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        // A capacity that is not a multiple of the grain.
        let cap = CAP + 5000;
        let mut disk = MemDisk::new(cap);
        for w in &writes {
            let data = match w.fill { Some(b) => vec![b; w.len], None => noise(w.seed, w.len) };
            disk.write_at(&data, w.offset);
        }
        let s = repo.backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())]).unwrap();
        let r = repo.disk_reader(&s.id, "d").unwrap();
        for (off, len) in reads {
            let len = len.min(cap - off as usize);
            let mut buf = vec![0u8; len];
            r.read_at(&mut buf, off).unwrap();
            prop_assert!(buf[..] == disk.as_bytes()[off as usize..off as usize + len]);
        }
        prop_assert!(r.read_at(&mut [0u8; 2], cap as u64 - 1).is_err());
    }
}

#[test]
fn a_backup_copies_into_another_repository_and_stays_incremental() {
    use std::io::{Read, Seek, SeekFrom};
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (init(d1.path()), init(d2.path()));
    let mut disk = MemDisk::new(CAP);
    disk.write_at(&noise(1, 500_000), 100_000);
    let s = a
        .backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())])
        .unwrap();
    let reader = a.disk_reader(&s.id, "d").unwrap();
    let mut all = Vec::new();
    reader.cursor().read_to_end(&mut all).unwrap();
    assert!(all == disk.as_bytes());
    let mut c = reader.cursor();
    assert_eq!(c.seek(SeekFrom::End(-10)).unwrap(), CAP as u64 - 10);
    assert!(c.seek(SeekFrom::Current(-(CAP as i64))).is_err());
    // Copied: only the grains holding chunks are read.
    let copy = b
        .backup(&BackupOptions::new("vm", 1), &[("d", &reader)])
        .unwrap();
    assert_eq!(copy.manifest.disks[0].stats.bytes_read, 9 * 65536);
    assert_eq!(
        copy.manifest.disks[0].change_id,
        s.manifest.disks[0].change_id
    );
    drop(reader);
    // The live disk's next backup into the copy's repository is incremental from it.
    disk.write_at(&noise(2, 1000), 1_500_000);
    let next = b
        .backup(&BackupOptions::new("vm", 2), &[("d", &disk.snapshot())])
        .unwrap();
    assert_eq!(next.manifest.disks[0].stats.bytes_read, 65536);
    assert!(restore(&b, &next.id, "d").unwrap() == disk.as_bytes());
}

/// Start from a backup: a backup's disk behind an overlay reads as the backup, takes
/// writes of any size and alignment (partial grains copied up from the backup, whole
/// grains written straight, writes spanning grains), reads them back against a model,
/// and leaves the backup as it was.
#[test]
fn a_backup_runs_as_a_writable_disk_over_an_overlay() {
    use rand::{Rng, RngCore, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let repo = common::init(&dir.path().join("repo"));
    let cap = (20 * MEM_GRAIN + 1000) as usize; // a short last grain
    let mut disk = MemDisk::new(cap);
    disk.write_at(
        &common::noise(1, 3 * MEM_GRAIN as usize),
        MEM_GRAIN as usize,
    );
    disk.write_at(&common::noise(2, 5000), cap - 5000);
    let s = repo
        .backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())])
        .unwrap();
    let original = disk.as_bytes().to_vec();
    let live = BackupOverlay::create(
        repo.disk_reader(&s.id, "d").unwrap(),
        &dir.path().join("overlay"),
    )
    .unwrap();
    assert_eq!(live.capacity(), cap as u64);
    let mut model = original.clone();
    let mut all = vec![0u8; cap];
    live.read_at(&mut all, 0).unwrap();
    assert!(all == model);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let g = MEM_GRAIN as usize;
    let mut writes: Vec<(usize, usize)> = vec![
        (g + 100, 512),   // inside a grain with data: copied up
        (5 * g, g),       // a whole zero grain: written straight
        (2 * g - 10, 30), // across two grains
        (cap - 700, 700), // the short last grain
        (g + 200, 100),   // again into a grain already in the overlay
    ];
    for _ in 0..40 {
        let len = rng.random_range(1..3 * g);
        writes.push((rng.random_range(0..cap - len), len));
    }
    for (off, len) in writes {
        let mut b = vec![0u8; len];
        rng.fill_bytes(&mut b);
        live.write_at(&b, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&b);
        let (o, l) = (
            off.saturating_sub(g / 2),
            (len + g).min(cap - off.saturating_sub(g / 2)),
        );
        let mut r = vec![0u8; l];
        live.read_at(&mut r, o as u64).unwrap();
        assert!(r == model[o..o + l], "after a write of {len} at {off}");
    }
    live.flush().unwrap();
    live.read_at(&mut all, 0).unwrap();
    assert!(all == model);
    assert!(live.grains_written() > 0 && live.grains_written() <= 21);
    assert!(live.read_at(&mut [0u8; 2], cap as u64 - 1).is_err());
    assert!(live.write_at(&[0u8; 2], cap as u64 - 1).is_err());
    drop(live);
    // The backup is untouched.
    assert!(common::restore(&repo, &s.id, "d").unwrap() == original);
}

/// 4 KiB-granular deduplication (README "Block references"): a grain rewritten in part
/// stores only its new blocks, a file copied from elsewhere on the disk stores nothing
/// but references, both restore exactly, and the chunks they refer to outlive the backup
/// they came from.
#[test]
fn partly_rewritten_grains_and_copied_blocks_store_only_their_new_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut disk = MemDisk::new(CAP);
    disk.write_at(&noise(1, 16 * 65536), 0);
    let full = repo
        .backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())])
        .unwrap();
    // One new 4 KiB block in grain 0; 64 KiB of grain 3 (from its block 2) copied to a
    // place 4 KiB into grain 20, so over two grains; half of grain 25 copied from grain 5
    // and half left zero.
    disk.write_at(&noise(2, 4096), 8192);
    let copy = disk.as_bytes()[3 * 65536 + 8192..4 * 65536 + 8192].to_vec();
    disk.write_at(&copy, 20 * 65536 + 4096);
    let half = disk.as_bytes()[5 * 65536..5 * 65536 + 32768].to_vec();
    disk.write_at(&half, 25 * 65536);
    let incr = repo
        .backup(&BackupOptions::new("vm", 2), &[("d", &disk.snapshot())])
        .unwrap();
    let st = incr.manifest.disks[0].stats;
    assert_eq!(st.bytes_read, 4 * 65536);
    assert_eq!(st.chunks_new, 4);
    // The one new block (random, 4096 bytes) and four small tables, not four grains.
    assert!(st.bytes_new < 4096 + 4 * 400, "{st:?}");
    let want = disk.as_bytes().to_vec();
    assert!(restore(&repo, &incr.id, "d").unwrap() == want);
    assert!(repo.verify(VerifyLevel::ReadData).unwrap().is_ok());
    // The full backup goes; the chunks the incremental refers to stay.
    repo.forget(&[full.id]).unwrap();
    let p = repo.prune().unwrap();
    assert_eq!(
        p.chunks_dropped, 0,
        "every chunk of the full is referred to"
    );
    assert!(restore(&repo, &incr.id, "d").unwrap() == want);
    assert!(repo.verify(VerifyLevel::ReadData).unwrap().is_ok());
    // The block lists survive the prune's new index: a second copy still refers.
    disk.write_at(&copy, 28 * 65536);
    let again = repo
        .backup(&BackupOptions::new("vm", 3), &[("d", &disk.snapshot())])
        .unwrap();
    assert!(
        again.manifest.disks[0].stats.bytes_new < 400,
        "{:?}",
        again.manifest.disks[0].stats
    );
    assert!(restore(&repo, &again.id, "d").unwrap() == disk.as_bytes());
}
