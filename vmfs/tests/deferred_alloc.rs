//! Deferred allocation (README, "Deferred allocation"): the allocations of a file held
//! exclusively are committed at sync, close, `set_len`, a full journal or a quarter lease,
//! not per write. Crash at the Nth device write, over many seeds, with allocating writes
//! synced and not: every write acknowledged by a sync reads back, nothing else was lost
//! that a sync covered, a block never shows what a deleted file left in it, fsck is clean.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use vinfra_testkit::{for_each_seed, seeds};
use vinfra_vmfs::{
    CountingDevice, Error, Faults, FaultyDevice, File, LockMode, ManualClock, MemDevice,
    MkfsOptions, MountOptions, Volume,
};

/// What a deleted file leaves in the blocks new writes reuse; no write ever stores it.
const STALE: u8 = 0xEE;
const FILES: usize = 3;

fn opts(journal_blocks: u32) -> MkfsOptions {
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    o.blocks_per_cluster = 128;
    o.journal_blocks = journal_blocks;
    o.lease_ms = 2000;
    o.interval_ms = 200;
    o
}

/// One file as the test knows it: `synced` is what a sync acknowledged; bytes in `unsure`
/// were written (or the size grew) since.
#[derive(Default)]
struct Model {
    synced: Vec<u8>,
    latest: Vec<u8>,
    unsure: Vec<bool>,
    /// The size an interrupted `set_len` was cutting to (truncation commits in steps, each
    /// leaving a consistent, shorter file).
    cut: Option<usize>,
}

impl Model {
    fn write(&mut self, off: usize, data: &[u8]) {
        let end = off + data.len();
        if self.latest.len() < end {
            self.latest.resize(end, 0);
        }
        if self.unsure.len() < end {
            self.unsure.resize(end, true);
        }
        self.latest[off..end].copy_from_slice(data);
        self.unsure[off..end].fill(true);
    }

    fn synced(&mut self) {
        self.synced = self.latest.clone();
        self.unsure = vec![false; self.latest.len()];
    }
}

fn is_crash(e: &Error) -> bool {
    vinfra_vmfs::faulty::is_crash(e) || matches!(e, Error::Fenced { .. })
}

/// Host 1 keeps `FILES` files open and writes, syncs, truncates, closes and reopens them
/// (seeded) until the device crashes `after` writes (or `after / 8` flushes) in; returns the post-crash image and
/// the model.
fn crash_run(o: &MkfsOptions, seed: u64, after: u64) -> (Arc<MemDevice>, Vec<Model>) {
    let dev = Arc::new(FaultyDevice::new(12 << 20));
    Volume::mkfs(dev.as_ref(), o).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let a = Volume::mount(dev.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
    a.mkdir("/d").unwrap();
    // Fill most of the data area with a file of STALE bytes, then delete it: the files
    // below reuse its blocks.
    let s = a.create("/stale").unwrap();
    s.write_at(&vec![STALE; 3 << 20], 0).unwrap();
    s.close().unwrap();
    a.delete("/stale").unwrap();
    a.sync().unwrap();
    let mut handles: Vec<Option<File>> = (0..FILES)
        .map(|i| Some(a.create(&format!("/d/f{i}")).unwrap()))
        .collect();
    let mut models: Vec<Model> = (0..FILES).map(|_| Model::default()).collect();
    // Odd seeds crash at a flush, even ones at a write.
    dev.set_faults(if seed % 2 == 1 {
        Faults {
            crash_at_flush: Some(dev.flushes_issued() + after / 8 + 1),
            ..Faults::default()
        }
    } else {
        Faults {
            crash_at_write: Some(dev.writes_issued() + after),
            ..Faults::default()
        }
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for step in 0..600u64 {
        let i = rng.random_range(0..FILES);
        let kind = rng.random_range(0..20u32);
        let m = &mut models[i];
        let r: Result<(), Error> = (|| {
            if handles[i].is_none() {
                handles[i] = Some(a.open(&format!("/d/f{i}"), LockMode::Exclusive)?);
            }
            let Some(f) = handles[i].as_ref() else {
                return Ok(());
            };
            match kind {
                0..=12 => {
                    // Mostly appends (thin first writes), sometimes anywhere.
                    let off = if rng.random_bool(0.7) {
                        m.latest.len()
                    } else {
                        rng.random_range(0..200_000usize)
                    };
                    let len = rng.random_range(1..40_000usize);
                    let data = vec![(step % 200) as u8 + 1; len];
                    // Unsure from before the call: a write the crash interrupts may have
                    // reached some of its (in-place) blocks.
                    m.write(off, &data);
                    f.write_at(&data, off as u64)?;
                }
                13..=15 => {
                    f.sync()?;
                    m.synced();
                }
                16 => {
                    let len = rng.random_range(0..=m.latest.len());
                    m.cut = Some(len);
                    f.set_len(len as u64)?;
                    m.cut = None;
                    // A size change commits a transaction: one flush covers every write.
                    m.latest.truncate(len);
                    m.synced();
                }
                17 => {
                    // Close commits the deferred allocations; in-place writes stay unsure.
                    if let Some(f) = handles[i].take() {
                        f.close()?;
                    }
                }
                18 => {
                    // A quarter lease passes: the heartbeat commits deferred allocations.
                    clock.advance(600);
                    a.tick()?;
                }
                _ => a.sync()?,
            }
            Ok(())
        })();
        // TRACE_STEPS=1 with SIM_SEED=n shows what a failing seed did.
        if std::env::var("TRACE_STEPS").is_ok() {
            let m = &models[i];
            eprintln!(
                "step {step} file {i} kind {kind}: {r:?}, synced {} written {}",
                m.synced.len(),
                m.latest.len()
            );
        }
        if let Err(e) = r {
            assert!(is_crash(&e), "seed {seed}: unexpected {e}");
            break;
        }
        // Renew often enough that the manual clock never fences host 1 by itself.
        if step % 8 == 0 {
            clock.advance(1);
            let _ = a.tick();
        }
    }
    assert!(dev.crashed(), "seed {seed}: the crash point was reached");
    drop(handles);
    let img = Arc::new(MemDevice::from_bytes(dev.crash_image(seed)));
    (img, models)
}

/// Host 2 recovers host 1 and checks every file against its model; then fsck.
fn recover_and_check(img: &Arc<MemDevice>, models: &[Model], seed: u64) {
    let b = Volume::mount(
        img.clone(),
        2,
        &MountOptions::default(),
        Arc::new(ManualClock::new(0)),
    )
    .unwrap();
    b.recover_host(1, 60_000).unwrap();
    for (i, m) in models.iter().enumerate() {
        let name = format!("/d/f{i}");
        let f = b
            .open(&name, LockMode::SharedRead)
            .unwrap_or_else(|e| panic!("seed {seed}: {name}: {e}"));
        let len = f.len() as usize;
        let least = m.cut.map_or(m.synced.len(), |c| c.min(m.synced.len()));
        assert!(
            len >= least && len <= m.latest.len().max(m.synced.len()),
            "seed {seed}: {name} is {len} bytes: synced {}, written {}",
            m.synced.len(),
            m.latest.len()
        );
        let mut got = vec![0u8; len];
        f.read_at(&mut got, 0).unwrap();
        for (k, &g) in got.iter().enumerate() {
            let sure = !m.unsure.get(k).copied().unwrap_or(true);
            if sure {
                assert_eq!(g, m.synced[k], "seed {seed}: {name} byte {k} (synced)");
            } else {
                assert_ne!(g, STALE, "seed {seed}: {name} byte {k} shows stale data");
            }
        }
    }
    b.unmount().unwrap();
    let r = vinfra_vmfs::fsck::check(img.as_ref(), false).unwrap();
    assert!(r.is_clean(), "seed {seed}: {:#?}", r.errors);
}

#[test]
fn crash_with_deferred_allocations_loses_nothing_a_sync_acknowledged() {
    for_each_seed(seeds(0..48), |seed| {
        let (img, models) = crash_run(&opts(8), seed, 5 + (seed * 53) % 900);
        recover_and_check(&img, &models, seed);
    });
}

/// A 3-block journal ring (4 journal blocks): the deferred change set outgrows the room often, so commits
/// happen inside write calls too.
#[test]
fn crash_with_a_small_journal_commits_deferred_allocations_when_it_needs_room() {
    for_each_seed(seeds(200..224), |seed| {
        let (img, models) = crash_run(&opts(4), seed, 20 + (seed * 31) % 700);
        recover_and_check(&img, &models, seed);
    });
}

/// Another host sees a file's size and blocks only once its writer syncs; an operation of
/// the writer's host that needs a cluster lock the deferred allocations hold commits them
/// instead of waiting for them.
#[test]
fn other_hosts_see_deferred_writes_only_after_sync_and_local_frees_do_not_wait() {
    let dev = Arc::new(MemDevice::new(32 << 20));
    let mut o = opts(8);
    o.journal_blocks = MkfsOptions::default().journal_blocks;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let counting = Arc::new(CountingDevice::new(dev.clone()));
    let clock = Arc::new(ManualClock::new(0));
    let a = Volume::mount(counting.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
    let b = Volume::mount(dev.clone(), 2, &MountOptions::default(), clock.clone()).unwrap();
    let g = a.create("/g").unwrap();
    g.write_at(&[3u8; 100_000], 0).unwrap();
    g.close().unwrap();
    let f = a.create("/f").unwrap();
    let flushes = || counting.counts()[3];
    let before = flushes();
    for k in 0..64u64 {
        f.write_at(&[5u8; 16384], k * 16384).unwrap();
    }
    assert_eq!(
        flushes(),
        before,
        "allocating writes flush nothing before a sync"
    );
    assert_eq!(
        a.stat("/f").unwrap().size,
        1 << 20,
        "this host sees its own size"
    );
    assert_eq!(
        b.stat("/f").unwrap().size,
        0,
        "other hosts see the committed size"
    );
    f.sync().unwrap();
    assert_eq!(flushes(), before + 2, "a sync: data flush, then the commit");
    assert_eq!(b.stat("/f").unwrap().size, 1 << 20);
    // More deferred writes, in the cluster that holds /g's blocks; deleting /g frees
    // blocks there and must not wait out the metadata timeout.
    f.write_at(&[6u8; 65536], 1 << 20).unwrap();
    let t0 = vinfra_vmfs::Clock::now_ms(clock.as_ref());
    a.delete("/g").unwrap();
    let waited = vinfra_vmfs::Clock::now_ms(clock.as_ref()) - t0;
    assert!(waited < 100, "the delete waited {waited} ms");
    let mut back = vec![0u8; 65536];
    f.read_at(&mut back, 1 << 20).unwrap();
    assert!(back.iter().all(|&x| x == 6));
    drop(f);
    assert_eq!(
        b.stat("/f").unwrap().size,
        (1 << 20) + 65536,
        "close commits"
    );
    b.unmount().unwrap();
    a.unmount().unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}

/// A long write without a sync, on a volume with a 3-block journal ring: the deferred
/// change set would outgrow one transaction, so the write commits it when the journal
/// needs room (and the volume stays consistent and complete).
#[test]
fn a_long_unsynced_write_commits_when_the_journal_needs_room() {
    let dev = Arc::new(MemDevice::new(32 << 20));
    Volume::mkfs(dev.as_ref(), &opts(4)).unwrap();
    let counting = Arc::new(CountingDevice::new(dev.clone()));
    let clock = Arc::new(ManualClock::new(0));
    let a = Volume::mount(counting.clone(), 1, &MountOptions::default(), clock).unwrap();
    let f = a.create("/f").unwrap();
    let before = counting.counts()[3];
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    for k in 0..128u64 {
        f.write_at(&chunk, k * 65536).unwrap();
    }
    assert!(
        counting.counts()[3] > before,
        "8 MiB over 16 clusters do not fit one transaction of a 12 KiB ring"
    );
    f.close().unwrap();
    a.unmount().unwrap();
    let b = Volume::mount(
        dev.clone(),
        2,
        &MountOptions::default(),
        Arc::new(ManualClock::new(0)),
    )
    .unwrap();
    let f = b.open("/f", LockMode::SharedRead).unwrap();
    assert_eq!(f.len(), 128 * 65536);
    let mut back = vec![0u8; 65536];
    for k in 0..128u64 {
        f.read_at(&mut back, k * 65536).unwrap();
        assert!(back == chunk, "chunk {k}");
    }
    drop(f);
    b.unmount().unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}

/// Deleting a file whose blocks share a cluster with another file's deferred allocations
/// commits those first, in a transaction of their own: a crash at any write of the delete
/// leaves the deleted file either whole or gone, and fsck clean (no entry without its
/// inode, no inode or block without its entry).
#[test]
fn a_crash_while_a_delete_commits_deferred_allocations_leaves_the_volume_consistent() {
    for after in 1..40u64 {
        let dev = Arc::new(FaultyDevice::new(12 << 20));
        Volume::mkfs(dev.as_ref(), &opts(8)).unwrap();
        let a = Volume::mount(
            dev.clone(),
            1,
            &MountOptions::default(),
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        a.mkdir("/d").unwrap();
        let g = a.create("/d/g").unwrap();
        g.write_at(&[3u8; 20_000], 0).unwrap();
        g.close().unwrap();
        let f = a.create("/d/f").unwrap();
        f.write_at(&[5u8; 30_000], 0).unwrap();
        f.sync().unwrap();
        // Parked: these allocations hold the cluster /d/g's blocks are in.
        f.write_at(&[6u8; 30_000], 30_000).unwrap();
        dev.set_faults(Faults {
            crash_at_write: Some(dev.writes_issued() + after),
            ..Faults::default()
        });
        let deleted = a.delete("/d/g").is_ok();
        drop(f);
        let img = Arc::new(MemDevice::from_bytes(dev.crash_image(after)));
        let b = Volume::mount(
            img.clone(),
            2,
            &MountOptions::default(),
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        b.recover_host(1, 60_000).unwrap();
        if let Ok(g) = b.open("/d/g", LockMode::SharedRead) {
            assert!(
                !deleted || dev.crashed(),
                "crash at {after}: /d/g still there"
            );
            let mut back = vec![0u8; 20_000];
            assert_eq!(g.len(), 20_000, "crash at {after}");
            g.read_at(&mut back, 0).unwrap();
            assert!(back.iter().all(|&x| x == 3), "crash at {after}");
        }
        let f = b.open("/d/f", LockMode::SharedRead).unwrap();
        let mut back = vec![0u8; 30_000];
        f.read_at(&mut back, 0).unwrap();
        assert!(
            back.iter().all(|&x| x == 5),
            "crash at {after}: synced data"
        );
        drop(f);
        b.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(img.as_ref(), false).unwrap();
        assert!(r.is_clean(), "crash at {after}: {:#?}", r.errors);
    }
}
