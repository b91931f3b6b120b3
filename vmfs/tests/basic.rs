//! Single- and two-host behaviour on an in-memory device with a manual clock.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;

use vinfra_vmfs::{
    BlockDevice, Clock, Error, Kind, LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions,
    Volume,
};

fn setup(size: usize) -> (Arc<MemDevice>, Arc<ManualClock>) {
    let dev = Arc::new(MemDevice::new(size));
    let mut o = MkfsOptions::default();
    o.max_inodes = 512;
    o.blocks_per_cluster = 256;
    o.lease_ms = 2000;
    o.interval_ms = 200;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    (dev, Arc::new(ManualClock::new(1_000)))
}

fn mount(dev: &Arc<MemDevice>, clock: &Arc<ManualClock>, host: u32) -> Volume {
    Volume::mount(dev.clone(), host, &MountOptions::default(), clock.clone()).unwrap()
}

#[test]
fn files_and_directories_on_one_host() {
    let (dev, clock) = setup(64 << 20);
    let v = mount(&dev, &clock, 0);
    v.mkdir("/vm1").unwrap();
    let f = v.create("/vm1/disk.flat").unwrap();
    f.write_at(b"hello world", 10).unwrap();
    let mut b = [0u8; 21];
    assert_eq!(f.read_at(&mut b, 0).unwrap(), 21);
    assert_eq!(&b[..10], &[0; 10]);
    assert_eq!(&b[10..], b"hello world");
    // Far beyond 2 TiB, sparse.
    let far = (2u64 << 40) + 12345;
    f.write_at(b"far", far).unwrap();
    assert_eq!(f.len(), far + 3);
    let mut c = [0u8; 3];
    f.read_at(&mut c, far).unwrap();
    assert_eq!(&c, b"far");
    let st = v.stat("/vm1/disk.flat").unwrap();
    assert_eq!(st.size, far + 3);
    assert!(st.blocks <= 6, "sparse: {} blocks", st.blocks);
    f.set_len(5).unwrap();
    f.set_len(100).unwrap();
    let mut d = [9u8; 100];
    f.read_at(&mut d, 0).unwrap();
    assert_eq!(&d[..5], &[0; 5]);
    assert_eq!(&d[5..], &[0; 95][..], "the truncated tail reads as zeros");
    drop(f);
    v.rename("/vm1/disk.flat", "/vm1/disk2.flat").unwrap();
    v.mkdir("/vm2").unwrap();
    v.rename("/vm1/disk2.flat", "/vm2/disk.flat").unwrap();
    assert!(matches!(
        v.rename("/vm2", "/vm2/x"),
        Err(Error::InvalidName(_))
    ));
    let names: Vec<String> = v.list("/").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["vm1", "vm2"]);
    assert!(matches!(v.delete("/vm2"), Err(Error::NotEmpty(_))));
    v.delete("/vm2/disk.flat").unwrap();
    v.delete("/vm2").unwrap();
    v.delete("/vm1").unwrap();
    assert!(v.list("/").unwrap().is_empty());
    assert!(matches!(v.stat("/vm1"), Err(Error::NotFound(_))));
    assert_eq!(v.stat("/").unwrap().kind, Kind::Dir);
    v.unmount().unwrap();
    fsck_clean(dev.as_ref());
}

#[test]
fn large_blocks_round_trip_and_stay_consistent() {
    // 64 KiB blocks: directories, bitmaps and indirect blocks are journaled by changed
    // sectors only.
    let dev = Arc::new(MemDevice::new(96 << 20));
    let mut o = MkfsOptions::default();
    o.block_size = 64 << 10;
    o.max_inodes = 256;
    o.blocks_per_cluster = 64;
    o.journal_blocks = 8;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let v = mount(&dev, &clock, 2);
    v.mkdir("/d").unwrap();
    let data: Vec<u8> = (0..(3 << 20) + 777).map(|i: u32| (i % 251) as u8).collect();
    for k in 0..20 {
        let f = v.create(&format!("/d/f{k}")).unwrap();
        f.write_at(&data[..(k + 1) * 100_000], (k * 7) as u64)
            .unwrap();
    }
    let f = v.create("/d/big").unwrap();
    f.write_at(&data, 0).unwrap();
    f.write_at(b"tail", (3u64 << 40) + 5).unwrap();
    let mut back = vec![0u8; data.len()];
    f.read_at(&mut back, 0).unwrap();
    assert!(back == data);
    f.set_len(1 << 20).unwrap();
    drop(f);
    for k in (0..20).step_by(2) {
        v.delete(&format!("/d/f{k}")).unwrap();
    }
    let g = v.open("/d/f3", LockMode::SharedRead).unwrap();
    let mut b = vec![0u8; 400_000];
    g.read_at(&mut b, 21).unwrap();
    assert!(b[..] == data[..400_000]);
    drop(g);
    v.unmount().unwrap();
    fsck_clean(dev.as_ref());
}

#[test]
fn large_sequential_file_round_trips() {
    let (dev, clock) = setup(64 << 20);
    let v = mount(&dev, &clock, 1);
    let f = v.create("/big").unwrap();
    let data: Vec<u8> = (0..(9 << 20))
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    f.write_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    f.read_at(&mut back, 0).unwrap();
    assert!(back == data);
    f.set_len(4096 * 3 + 1).unwrap();
    drop(f);
    v.delete("/big").unwrap();
    let f = v.create("/big2").unwrap();
    f.write_at(&data, 0).unwrap();
    drop(f);
    v.unmount().unwrap();
    fsck_clean(dev.as_ref());
}

fn fsck_clean(dev: &dyn BlockDevice) {
    let r = vinfra_vmfs::fsck::check(dev, false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}

#[test]
fn a_live_owner_keeps_its_lock_and_a_dead_one_loses_it_after_the_lease() {
    let (dev, clock) = setup(32 << 20);
    let a = mount(&dev, &clock, 3);
    let b = mount(&dev, &clock, 5);
    let f = a.create("/vm.vmdk").unwrap();
    f.write_at(b"owned by a", 0).unwrap();
    let err = b.open("/vm.vmdk", LockMode::Exclusive).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("locked by host 3, alive, heartbeat"), "{msg}");
    assert!(matches!(
        b.open("/vm.vmdk", LockMode::SharedRead),
        Err(Error::Locked { holder: 3, .. })
    ));
    // a keeps renewing: b never gets it.
    for _ in 0..30 {
        clock.advance(200);
        a.tick().unwrap();
        b.tick().unwrap();
        assert!(b.open("/vm.vmdk", LockMode::Exclusive).is_err());
    }
    let e = b.delete("/vm.vmdk");
    assert!(matches!(e, Err(Error::Locked { holder: 3, .. })), "{e:?}");
    // a dies (no more renewals, the handle is never released).
    std::mem::forget(f);
    let t0 = clock.now_ms();
    let g = b
        .open_wait("/vm.vmdk", LockMode::Exclusive, 10_000)
        .unwrap();
    assert!(
        clock.now_ms() - t0 >= 2000,
        "broken only after a whole lease"
    );
    let mut buf = [0u8; 10];
    g.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"owned by a");
    // a wakes up: it has fenced itself.
    assert!(matches!(a.tick(), Err(Error::Fenced { host: 3 })));
    let ev = a.events().unwrap().try_recv().unwrap();
    assert!(matches!(
        ev,
        vinfra_vmfs::VolumeEvent::Fenced { host: 3, .. }
    ));
    assert!(matches!(a.create("/x"), Err(Error::Fenced { .. })));
}

#[test]
fn shared_readers_and_multi_writers() {
    let (dev, clock) = setup(32 << 20);
    let a = mount(&dev, &clock, 0);
    let b = mount(&dev, &clock, 1);
    let f = a.create("/shared").unwrap();
    f.write_at(&[1u8; 8192], 0).unwrap();
    drop(f);
    let r1 = a.open("/shared", LockMode::SharedRead).unwrap();
    let r2 = b.open("/shared", LockMode::SharedRead).unwrap();
    assert!(r2.write_at(b"x", 0).is_err());
    assert!(b.open("/shared", LockMode::Exclusive).is_err());
    drop((r1, r2));
    let w1 = a.open("/shared", LockMode::MultiWriter).unwrap();
    let w2 = b.open("/shared", LockMode::MultiWriter).unwrap();
    w1.write_at(b"aa", 0).unwrap();
    w2.write_at(b"bb", 4096).unwrap();
    assert!(matches!(w2.write_at(b"grow", 8190), Err(Error::Mode(_))));
    let mut x = [0u8; 2];
    w2.read_at(&mut x, 0).unwrap();
    assert_eq!(&x, b"aa");
}

#[test]
fn mount_refuses_a_live_slot_and_bad_volumes() {
    let (dev, clock) = setup(32 << 20);
    let _a = mount(&dev, &clock, 2);
    let mut o = MountOptions::default();
    o.take_over_slot = false;
    let e = Volume::mount(dev.clone(), 2, &o, clock.clone()).unwrap_err();
    assert!(matches!(e, Error::SlotBusy { host: 2, .. }), "{e}");
    let garbage = Arc::new(MemDevice::new(1 << 20));
    garbage.write_at(b"garbage!", 0).unwrap();
    assert!(matches!(
        Volume::mount(garbage, 0, &MountOptions::default(), clock.clone()),
        Err(Error::Corrupt { .. })
    ));
    let mut short = dev.snapshot();
    short.truncate(short.len() / 2);
    let e = Volume::mount(
        Arc::new(MemDevice::from_bytes(short)),
        0,
        &MountOptions::default(),
        clock.clone(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("shorter than the volume"), "{e}");
    let mut img = dev.snapshot();
    img[8] = 1; // version 1: the single-slot journal of before
    let v2 = Arc::new(MemDevice::from_bytes(img));
    assert!(Volume::mount(v2, 0, &MountOptions::default(), clock.clone()).is_err());
}

#[test]
fn growth_adds_clusters_seen_by_other_hosts() {
    let (dev, clock) = setup(16 << 20);
    let a = mount(&dev, &clock, 0);
    let b = mount(&dev, &clock, 1);
    let before = a.superblock_now().geo.n_clusters;
    dev.set_len(48 << 20).unwrap();
    let after = a.grow().unwrap();
    assert!(after > before);
    let f = b.create("/fill").unwrap();
    // More than the original volume holds.
    f.write_at(&vec![7u8; 20 << 20], 0).unwrap();
    assert_eq!(b.superblock_now().geo.n_clusters, after);
    drop(f);
    a.unmount().unwrap();
    b.unmount().unwrap();
    fsck_clean(dev.as_ref());
}

#[test]
fn fsck_finds_and_repairs_leaks_and_stale_locks() {
    let (dev, clock) = setup(16 << 20);
    let a = mount(&dev, &clock, 0);
    let f = a.create("/f").unwrap();
    f.write_at(&[1; 10000], 0).unwrap();
    drop(f);
    a.unmount().unwrap();
    fsck_clean(dev.as_ref());
    // Leak a block by hand and leave a lock naming an unmounted host.
    let sb = Volume::superblock(dev.as_ref()).unwrap();
    let g = sb.geo;
    let mut cl = vec![0u8; 4096];
    dev.read_at(&mut cl, g.cluster_at(0)).unwrap();
    let mut c = vinfra_vmfs::format::ClusterBlock::decode(&cl, 4096, 0, g.bpc).unwrap();
    c.set(g.bpc - 1, true);
    dev.write_at(&c.encode(4096), g.cluster_at(0)).unwrap();
    let mut lk = vinfra_vmfs::format::LockRecord::free(g.inode_lock(7));
    lk.mode = Some(LockMode::Exclusive);
    lk.holders = 1 << 9;
    lk.gens[9] = 4;
    lk.seq = 1;
    dev.write_at(&lk.encode(), g.lock_at(g.inode_lock(7)))
        .unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert_eq!(r.leaked.len(), 1, "{:?}", r.errors);
    assert_eq!(r.stale_locks, [g.inode_lock(7)]);
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), true).unwrap();
    assert_eq!(r.repaired.len(), 2, "{:?}", r.repaired);
    fsck_clean(dev.as_ref());
    // A flipped bit in an inode is reported, not a panic.
    let mut raw = vec![0u8; 512];
    dev.read_at(&mut raw, g.inode_at(1)).unwrap();
    raw[20] ^= 4;
    dev.write_at(&raw, g.inode_at(1)).unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(!r.is_clean());
}

#[test]
fn uncontended_lock_acquire_and_release_take_two_device_ios() {
    let (dev, clock) = setup(16 << 20);
    let counting = Arc::new(vinfra_vmfs::CountingDevice::new(dev.clone()));
    let v = Volume::mount(counting.clone(), 0, &MountOptions::default(), clock.clone()).unwrap();
    let idx = v.superblock_now().geo.inode_lock(100);
    // First use: the record was never seen, the zero guess is right.
    for _ in 0..5 {
        let before = counting.total();
        v.lock_index(idx, LockMode::Exclusive).unwrap();
        v.unlock_index(idx).unwrap();
        assert_eq!(counting.total() - before, 2, "{:?}", counting.counts());
    }
}

#[test]
fn a_metadata_transaction_costs_one_flush_and_a_large_thin_write_commits_once() {
    let dev = Arc::new(MemDevice::new(160 << 20));
    let mut o = MkfsOptions::default();
    o.max_inodes = 512;
    o.blocks_per_cluster = 16384;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let counting = Arc::new(vinfra_vmfs::CountingDevice::new(dev.clone()));
    let clock = Arc::new(ManualClock::new(1_000));
    let v = Volume::mount(counting.clone(), 0, &MountOptions::default(), clock).unwrap();
    v.mkdir("/d").unwrap();
    let flushes = || counting.counts()[3];
    let before = flushes();
    let n = 50;
    for i in 0..n {
        let p = format!("/d/f{i}");
        drop(v.create(&p).unwrap());
        v.stat(&p).unwrap();
        v.delete(&p).unwrap();
    }
    // Two transactions per cycle, one flush each, plus a checkpoint when the ring wraps.
    let used = flushes() - before;
    assert!(
        (2 * n..2 * n + n / 4).contains(&used),
        "{used} flushes for {n} create+stat+delete cycles"
    );
    // A 64 MiB first write into a thin file: a commit per batch of blocks, not per block.
    let f = v.create("/d/big").unwrap();
    let before = flushes();
    f.write_at(&vec![7u8; 64 << 20], 0).unwrap();
    let used = flushes() - before;
    assert!(used <= 4, "{used} flushes for a 64 MiB thin write");
    let mut back = vec![0u8; 4096];
    f.read_at(&mut back, (64 << 20) - 4096).unwrap();
    assert!(back.iter().all(|&b| b == 7));
    drop(f);
    v.unmount().unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}

/// `mkfs` zeroes through `write_zeroes` and writes only the sectors that hold something:
/// over a LUN full of old bytes it must still lay out exactly what it lays out over a
/// zeroed one (every byte up to its last cluster block), on a memory device (the default
/// `write_zeroes`) and on an image file (`fallocate`).
#[test]
fn mkfs_over_a_used_lun_lays_out_the_same_bytes_as_over_a_zeroed_one() {
    let size = 96usize << 20;
    for bs in [4096u32, 64 << 10] {
        let mut o = MkfsOptions::default();
        o.block_size = bs;
        o.max_inodes = 512;
        o.blocks_per_cluster = 64;
        o.journal_blocks = (256 << 10) / bs;
        let clean = MemDevice::new(size);
        let sb = Volume::mkfs(&clean, &o).unwrap();
        // Up to the last cluster block (the slots for clusters `grow` adds are written
        // whole when it adds them).
        let meta = sb.geo.cluster_at(sb.geo.n_clusters) as usize;
        let want = &clean.snapshot()[..meta];

        let used = MemDevice::from_bytes(vec![0xee; size]);
        Volume::mkfs(&used, &o).unwrap();
        assert!(
            used.snapshot()[..meta] == *want,
            "memory device, {bs} B blocks"
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lun");
        std::fs::write(&p, vec![0xeeu8; size]).unwrap();
        let file = vinfra_vmfs::FileDevice::open(&p, false).unwrap();
        Volume::mkfs(&file, &o).unwrap();
        let mut got = vec![0u8; meta];
        file.read_at(&mut got, 0).unwrap();
        assert!(got == *want, "image file, {bs} B blocks");
    }
}

/// A clock whose coarse reading trails the precise one by `lag_ms`, at most its
/// `slack_ms` (the most a `Clock` may), and that counts its precise readings.
#[derive(Debug)]
struct TrailingClock {
    now: std::sync::atomic::AtomicU64,
    lag_ms: std::sync::atomic::AtomicU64,
    slack_ms: u64,
    precise_reads: std::sync::atomic::AtomicU64,
}

impl TrailingClock {
    fn new(now: u64, slack_ms: u64) -> Self {
        TrailingClock {
            now: now.into(),
            lag_ms: slack_ms.into(),
            slack_ms,
            precise_reads: 0.into(),
        }
    }
    fn set(&self, now: u64, lag_ms: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        assert!(lag_ms <= self.slack_ms);
        self.now.store(now, SeqCst);
        self.lag_ms.store(lag_ms, SeqCst);
    }
    fn precise_reads(&self) -> u64 {
        self.precise_reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Clock for TrailingClock {
    fn now_ms(&self) -> u64 {
        use std::sync::atomic::Ordering::SeqCst;
        self.precise_reads.fetch_add(1, SeqCst);
        self.now.load(SeqCst)
    }
    fn now_ms_coarse(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.now.load(SeqCst);
        (now.saturating_sub(self.lag_ms.load(SeqCst)), self.slack_ms)
    }
    fn sleep_ms(&self, ms: u64) {
        self.now.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The lease check on the I/O path answers from the clock's coarse reading: a read far
/// from the fence reads no precise time, one within the coarse clock's slack of it asks
/// the precise clock, and from the fence on (half a lease after the last renewal) every
/// read and write is refused, whether the coarse reading is current or trails by its
/// whole slack.
#[test]
fn reads_stop_at_the_fence_when_the_coarse_clock_trails() {
    for lag in [0, 60, 100] {
        let (dev, _) = setup(64 << 20);
        let clock = Arc::new(TrailingClock::new(1_000, 100));
        // Lease 2000 ms (`setup`): mounted at 1000, it fences at 2000 without a renewal.
        let v = Volume::mount(dev.clone(), 0, &MountOptions::default(), clock.clone()).unwrap();
        let f = v.create("/disk.flat").unwrap();
        f.write_at(&[7u8; 8192], 0).unwrap();
        let mut b = [0u8; 4096];
        clock.set(1_500, lag);
        let before = clock.precise_reads();
        for off in [0, 4096, 100] {
            assert_eq!(f.read_at(&mut b, off).unwrap(), 4096);
        }
        assert_eq!(clock.precise_reads(), before, "far from the fence: coarse");
        clock.set(1_950, 0);
        let before = clock.precise_reads();
        assert_eq!(f.read_at(&mut b, 0).unwrap(), 4096);
        assert!(clock.precise_reads() > before, "within the slack: precise");
        clock.set(1_999, lag);
        assert_eq!(f.read_at(&mut b, 0).unwrap(), 4096);
        for t in [2_000, 2_001, 2_050, 2_099, 60_000] {
            clock.set(t, lag);
            let e = f.read_at(&mut b, 0);
            assert!(
                matches!(e, Err(Error::Fenced { host: 0 })),
                "{t} {lag}: {e:?}"
            );
            let e = f.write_at(&b, 0);
            assert!(
                matches!(e, Err(Error::Fenced { host: 0 })),
                "{t} {lag}: {e:?}"
            );
        }
        // A renewal now finds the lease fenced: the fence is final.
        assert!(matches!(v.tick(), Err(Error::Fenced { host: 0 })));
        assert!(matches!(
            f.read_at(&mut b, 0),
            Err(Error::Fenced { host: 0 })
        ));
        std::mem::forget(f);
    }
}

/// A renewal moves the fence half a lease past the time it was read: reads far from the
/// new fence take the coarse path again.
#[test]
fn a_renewal_moves_the_coarse_path_on() {
    let (dev, _) = setup(64 << 20);
    let clock = Arc::new(TrailingClock::new(1_000, 100));
    let v = Volume::mount(dev.clone(), 0, &MountOptions::default(), clock.clone()).unwrap();
    let f = v.create("/disk.flat").unwrap();
    f.write_at(&[7u8; 4096], 0).unwrap();
    let mut b = [0u8; 4096];
    for t in (1_200..20_000).step_by(200) {
        clock.set(t, 0);
        v.tick().unwrap();
        // Renewed at `t`: fenced at t + 1000; 850 ms on, the coarse reading decides.
        clock.set(t + 850, 0);
        let before = clock.precise_reads();
        assert_eq!(f.read_at(&mut b, 0).unwrap(), 4096);
        assert_eq!(clock.precise_reads(), before);
        clock.set(t, 0);
    }
    drop(f);
    v.unmount().unwrap();
}
