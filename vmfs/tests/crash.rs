//! Crash at the Nth write over many seeds, and a partitioned host that fences itself.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use vinfra_testkit::{for_each_seed, seeds};
use vinfra_vmfs::{
    Error, Faults, FaultyDevice, LockMode, LockVerdict, ManualClock, MemDevice, MkfsOptions,
    MountOptions, Verdict, Volume, VolumeEvent,
};

fn opts() -> MkfsOptions {
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    o.blocks_per_cluster = 128;
    o.journal_blocks = 8;
    o.lease_ms = 2000;
    o.interval_ms = 200;
    o
}

/// Runs seeded operations until the device crashes; returns the acknowledged model and
/// the names the interrupted operation touched.
fn run_until_crash(v: &Volume, seed: u64) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for step in 0..400u64 {
        let i = rng.random_range(0..6u32);
        let name = format!("/d/f{i}");
        let kind = rng.random_range(0..10u32);
        let mut touched = vec![name.clone()];
        let r: Result<(), Error> = (|| {
            if !model.contains_key(&name) {
                let f = v.create(&name)?;
                model.insert(name.clone(), Vec::new());
                drop(f);
                return Ok(());
            }
            match kind {
                0..=5 => {
                    let f = v.open(&name, LockMode::Exclusive)?;
                    let off = rng.random_range(0..100_000u64);
                    let len = rng.random_range(1..20_000usize);
                    let data = vec![(step % 250) as u8 + 1; len];
                    f.write_at(&data, off)?;
                    f.sync()?;
                    let m = model.get_mut(&name).unwrap();
                    let end = off as usize + len;
                    if m.len() < end {
                        m.resize(end, 0);
                    }
                    m[off as usize..end].copy_from_slice(&data);
                }
                6 => {
                    let f = v.open(&name, LockMode::Exclusive)?;
                    let len = rng.random_range(0..50_000u64);
                    f.set_len(len)?;
                    model.get_mut(&name).unwrap().resize(len as usize, 0);
                }
                7 | 8 => {
                    v.delete(&name)?;
                    model.remove(&name);
                }
                _ => {
                    let to = format!("/d/r{}", rng.random_range(0..3u32));
                    touched.push(to.clone());
                    if !model.contains_key(&to) {
                        v.rename(&name, &to)?;
                        let d = model.remove(&name).unwrap();
                        model.insert(to, d);
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            assert!(
                vinfra_vmfs::faulty::is_crash(&e) || matches!(e, Error::Fenced { .. }),
                "seed {seed}: unexpected {e}"
            );
            return (model, touched);
        }
    }
    (model, Vec::new())
}

/// Host 1 runs seeded operations on a fresh volume formatted with `o` until the device
/// crashes at its `after`-th write past the setup; returns the post-crash image (unflushed
/// writes kept, dropped or torn, by seed), the acknowledged model and the uncertain names.
fn crash_run(
    o: &MkfsOptions,
    seed: u64,
    after: u64,
) -> (Arc<MemDevice>, BTreeMap<String, Vec<u8>>, Vec<String>) {
    let dev = Arc::new(FaultyDevice::new(12 << 20));
    Volume::mkfs(dev.as_ref(), o).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let a = Volume::mount(dev.clone(), 1, &MountOptions::default(), clock).unwrap();
    a.mkdir("/d").unwrap();
    dev.set_faults(Faults {
        crash_at_write: Some(dev.writes_issued() + after),
        ..Faults::default()
    });
    let (model, uncertain) = run_until_crash(&a, seed);
    assert!(dev.crashed(), "seed {seed}: the crash point was reached");
    let img = Arc::new(MemDevice::from_bytes(dev.crash_image(seed)));
    (img, model, uncertain)
}

/// Every acknowledged file reads back whole on the recovering host `b`, and nothing that
/// was never acknowledged exists (names the interrupted operation touched may go either way).
fn check_recovered(b: &Volume, model: &BTreeMap<String, Vec<u8>>, uncertain: &[String], seed: u64) {
    for (name, want) in model {
        if uncertain.contains(name) {
            continue;
        }
        let f = b
            .open(name, LockMode::SharedRead)
            .unwrap_or_else(|e| panic!("seed {seed}: {name}: {e}"));
        let mut got = vec![0u8; want.len()];
        f.read_at(&mut got, 0).unwrap();
        assert_eq!(f.len(), want.len() as u64, "seed {seed}: size of {name}");
        assert!(&got == want, "seed {seed}: content of {name}");
    }
    for e in b.list("/d").unwrap() {
        let name = format!("/d/{}", e.name);
        assert!(
            model.contains_key(&name) || uncertain.contains(&name),
            "seed {seed}: {name} should not exist"
        );
    }
}

#[test]
fn crash_at_the_nth_write_keeps_the_last_committed_state() {
    for_each_seed(seeds(0..40), |seed| {
        let (img, model, uncertain) = crash_run(&opts(), seed, 3 + (seed * 37) % 600);
        let clock_b = Arc::new(ManualClock::new(0));
        let b = Volume::mount(img.clone(), 2, &MountOptions::default(), clock_b.clone()).unwrap();
        let st = b.recover_host(1, 60_000).unwrap();
        assert!(st.lease_wait_ms >= 2000, "seed {seed}: {st:?}");
        check_recovered(&b, &model, &uncertain, seed);
        b.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(img.as_ref(), false).unwrap();
        assert!(r.is_clean(), "seed {seed}: {:#?}", r.errors);
    });
}

#[test]
fn a_partitioned_host_fences_itself_before_anyone_takes_its_locks() {
    let dev = Arc::new(FaultyDevice::new(12 << 20));
    Volume::mkfs(dev.as_ref(), &opts()).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let a = Volume::mount(dev.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
    let b = Volume::mount(dev.clone(), 2, &MountOptions::default(), clock.clone()).unwrap();
    let events = a.events().unwrap();
    let f = a.create("/vm.vmdk").unwrap();
    f.write_at(b"running", 0).unwrap();
    // A loses its path to its heartbeat slot (the LUN is still readable).
    let g = Volume::superblock(dev.as_ref()).unwrap().geo;
    dev.set_faults(Faults {
        fail_writes: vec![
            g.hb_at(1)..g.hb_at(1) + 512,
            g.hb_at(1) + 512..g.hb_at(1) + 512,
        ],
        ..Faults::default()
    });
    let t0 = vinfra_vmfs::Clock::now_ms(clock.as_ref());
    let mut fenced_at = None;
    let mut taken_at = None;
    for _ in 0..100 {
        clock.advance(100);
        let now = vinfra_vmfs::Clock::now_ms(clock.as_ref());
        if a.tick().is_err() && fenced_at.is_none() && a.check_lease().is_err() {
            fenced_at = Some(now);
        }
        let _ = b.tick();
        if taken_at.is_none() {
            match b.open("/vm.vmdk", LockMode::Exclusive) {
                Ok(h) => {
                    taken_at = Some(now);
                    let mut buf = [0u8; 7];
                    h.read_at(&mut buf, 0).unwrap();
                    assert_eq!(&buf, b"running");
                }
                Err(Error::Locked {
                    holder: 1, verdict, ..
                }) => {
                    assert!(
                        matches!(verdict, LockVerdict::Lease(Verdict::Alive { .. })),
                        "{verdict}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let fenced_at = fenced_at.expect("A fenced itself");
    let taken_at = taken_at.expect("B took the lock");
    assert!(
        fenced_at - t0 <= 1000 + 100,
        "fenced at half the lease: {}",
        fenced_at - t0
    );
    assert!(
        taken_at - t0 >= 2000,
        "taken only after a whole lease: {}",
        taken_at - t0
    );
    assert!(fenced_at < taken_at);
    assert!(matches!(
        events.try_recv(),
        Ok(VolumeEvent::Fenced { host: 1, .. })
    ));
    assert!(matches!(
        f.write_at(b"x", 0),
        Err(Error::Fenced { host: 1 })
    ));
}

/// Crash points late enough that a small journal ring has wrapped (checkpointed) several
/// times, so the post-crash image holds transactions committed but not checkpointed on
/// top of a ring whose older slots were reused.
#[test]
fn crash_after_journal_wrap_replays_every_uncheckpointed_transaction() {
    let seeds = seeds(100..116);
    let mut wrapped = 0;
    for_each_seed(seeds.iter().copied(), |seed| {
        let mut o = opts();
        o.journal_blocks = 4;
        let (img, model, uncertain) = crash_run(&o, seed, 400 + (seed * 53) % 900);
        let g = Volume::superblock(img.as_ref()).unwrap().geo;
        let mut raw = vec![0u8; 512];
        vinfra_vmfs::BlockDevice::read_at(img.as_ref(), &mut raw, g.lock_at(1)).unwrap();
        let rec = vinfra_vmfs::format::LockRecord::decode(&raw, 1).unwrap();
        if rec.applied_seq > 0 {
            wrapped += 1;
        }
        let clock_b = Arc::new(ManualClock::new(0));
        let b = Volume::mount(img.clone(), 2, &MountOptions::default(), clock_b).unwrap();
        b.recover_host(1, 60_000).unwrap();
        check_recovered(&b, &model, &uncertain, seed);
        b.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(img.as_ref(), false).unwrap();
        assert!(r.is_clean(), "seed {seed}: {:#?}", r.errors);
    });
    if seeds.len() > 1 {
        assert!(
            wrapped * 2 >= seeds.len(),
            "only {wrapped} runs wrapped the ring"
        );
    }
}

/// Host 1 changes a file and releases its lock with the change written in place but not
/// flushed; host 2 takes the lock and changes the same inode; host 1 dies. Replaying host
/// 1's journal must not put its older inode image back over host 2's change.
#[test]
fn replay_of_a_dead_host_never_undoes_a_later_change_by_another_host() {
    for crash in [false, true] {
        let dev = Arc::new(FaultyDevice::new(12 << 20));
        Volume::mkfs(dev.as_ref(), &opts()).unwrap();
        let clock_a = Arc::new(ManualClock::new(0));
        let clock_b = Arc::new(ManualClock::new(0));
        let a = Volume::mount(dev.clone(), 1, &MountOptions::default(), clock_a).unwrap();
        let b = Volume::mount(dev.clone(), 2, &MountOptions::default(), clock_b).unwrap();
        let f = a.create("/f").unwrap();
        f.write_at(&[7u8; 10_000], 0).unwrap();
        f.close().unwrap();
        a.mkdir("/dir").unwrap();
        // Host 2 takes over the file and the root directory.
        let g = b.open("/f", LockMode::Exclusive).unwrap();
        g.set_len(3000).unwrap();
        g.write_at(&[9u8; 100], 0).unwrap();
        g.sync().unwrap();
        g.close().unwrap();
        b.rename("/dir", "/moved").unwrap();
        // Host 1 dies without unmounting.
        std::mem::forget(a);
        let dev2: Arc<dyn vinfra_vmfs::BlockDevice> = if crash {
            // Host 2's committed changes are durable by their journal; drop the rest.
            Arc::new(MemDevice::from_bytes(dev.crash_image(3)))
        } else {
            dev.clone()
        };
        let c = Volume::mount(
            dev2.clone(),
            3,
            &MountOptions::default(),
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        c.recover_host(1, 60_000).unwrap();
        if crash {
            c.recover_host(2, 60_000).unwrap();
        }
        let h = c.open("/f", LockMode::SharedRead).unwrap();
        assert_eq!(h.len(), 3000, "crash {crash}");
        let mut buf = vec![0u8; 3000];
        h.read_at(&mut buf, 0).unwrap();
        assert!(buf[..100].iter().all(|&x| x == 9), "crash {crash}");
        assert!(buf[100..].iter().all(|&x| x == 7), "crash {crash}");
        drop(h);
        let names: Vec<String> = c.list("/").unwrap().into_iter().map(|e| e.name).collect();
        assert!(
            names.contains(&"moved".to_string()),
            "crash {crash}: {names:?}"
        );
        assert!(
            !names.contains(&"dir".to_string()),
            "crash {crash}: {names:?}"
        );
        if !crash {
            b.unmount().unwrap();
        } else {
            std::mem::forget(b);
        }
        c.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(dev2.as_ref(), false).unwrap();
        assert!(r.is_clean(), "crash {crash}: {:#?}", r.errors);
    }
}
