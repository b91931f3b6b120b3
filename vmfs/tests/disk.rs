//! Virtual disks: snapshots as redo logs, revert, consolidate, changed-block tracking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use vinfra_vmfs::disk::{VirtualDisk, GRAIN};
use vinfra_vmfs::{LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};

#[test]
fn snapshots_redo_logs_and_changed_blocks() {
    let dev = Arc::new(MemDevice::new(48 << 20));
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    o.blocks_per_cluster = 512;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let a = Volume::mount(dev.clone(), 0, &MountOptions::default(), clock.clone()).unwrap();
    let b = Volume::mount(dev.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
    let cap = 8 << 20;
    let mut d = VirtualDisk::create(&a, "/vm1.vmdk", cap).unwrap();
    d.write_at(&[1u8; 100_000], 0).unwrap();
    d.sync().unwrap();
    let base_id = d.new_change_id().unwrap();
    let snap = d.snapshot().unwrap();
    assert_eq!(snap, "/vm1-000001-delta");
    // A partial-grain write after the snapshot copies the grain up.
    d.write_at(&[2u8; 10], 5).unwrap();
    d.write_at(&[3u8; 10], 3 * GRAIN + 1).unwrap();
    d.sync().unwrap();
    let mut buf = vec![0u8; 20];
    d.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..5], &[1; 5]);
    assert_eq!(&buf[5..15], &[2; 10]);
    assert_eq!(&buf[15..], &[1; 5]);
    // The base is readable from another host while the VM runs (backup proxy).
    let base = b.open("/vm1-flat", LockMode::SharedRead).unwrap();
    let mut bb = [0u8; 20];
    base.read_at(&mut bb, 0).unwrap();
    assert_eq!(bb, [1; 20]);
    assert!(b.open("/vm1-000001-delta", LockMode::SharedRead).is_err());
    drop(base);
    assert_eq!(
        d.changed_since(base_id),
        vec![(0, GRAIN), (3 * GRAIN, GRAIN)]
    );
    // Consolidate: the redo log goes into the base.
    d.consolidate().unwrap();
    assert_eq!(d.chain().len(), 1);
    d.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[5..15], &[2; 10]);
    // Snapshot then revert: the writes since are gone.
    d.snapshot().unwrap();
    d.write_at(&[9u8; 4], 0).unwrap();
    d.revert().unwrap();
    d.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..5], &[1; 5]);
    drop(d);
    // Reopen: everything persisted; another host cannot open it while we hold it.
    let d2 = VirtualDisk::open(&a, "/vm1.vmdk").unwrap();
    assert!(VirtualDisk::open(&b, "/vm1.vmdk").is_err());
    assert_eq!(d2.changed_since(base_id).len(), 2);
    drop(d2);
    a.unmount().unwrap();
    b.unmount().unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(r.is_clean(), "{:?}", r.errors);
}

/// An offset near `u64::MAX` once overflowed while building the error (a panic in debug
/// builds): it must be a plain `TooLarge` error for reads and writes alike.
#[test]
fn access_near_u64_max_is_an_error_not_a_panic() {
    let dev = Arc::new(MemDevice::new(16 << 20));
    let mut o = MkfsOptions::default();
    o.max_inodes = 64;
    o.blocks_per_cluster = 256;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let a = Volume::mount(dev, 0, &MountOptions::default(), clock).unwrap();
    let mut d = VirtualDisk::create(&a, "/edge.vmdk", 1 << 20).unwrap();
    let mut buf = [0u8; 512];
    for off in [u64::MAX, u64::MAX - 100, 1 << 20] {
        assert!(matches!(
            d.read_at(&mut buf, off),
            Err(vinfra_vmfs::Error::TooLarge(_))
        ));
        assert!(matches!(
            d.write_at(&buf, off),
            Err(vinfra_vmfs::Error::TooLarge(_))
        ));
    }
}

/// `VirtualDisk::sync` commits what the disk's writes allocated in each of its files (the
/// flat extent, a redo log and its grain map; deferred allocation), so synced writes
/// survive a crash that drops or tears everything unflushed, over seeds.
#[test]
fn synced_disk_writes_survive_a_crash() {
    use vinfra_vmfs::{Faults, FaultyDevice};
    for seed in 0..8u64 {
        let dev = Arc::new(FaultyDevice::new(48 << 20));
        let mut o = MkfsOptions::default();
        o.max_inodes = 256;
        o.blocks_per_cluster = 512;
        Volume::mkfs(dev.as_ref(), &o).unwrap();
        let a = Volume::mount(
            dev.clone(),
            1,
            &MountOptions::default(),
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        let mut d = VirtualDisk::create(&a, "/vm.vmdk", 8 << 20).unwrap();
        d.write_at(&[1u8; 300_000], 0).unwrap();
        d.write_at(&[2u8; 5000], 6 << 20).unwrap();
        d.sync().unwrap();
        if seed % 2 == 1 {
            // And through a redo log: copy-up of partial grains, a new grain map.
            d.snapshot().unwrap();
            d.write_at(&[3u8; 10], 7).unwrap();
            d.write_at(&[4u8; 70_000], (5 << 20) + 3).unwrap();
            d.sync().unwrap();
        }
        // Unacknowledged: may or may not survive.
        d.write_at(&[9u8; 4096], 7 << 20).unwrap();
        dev.set_faults(Faults {
            crash_at_write: Some(dev.writes_issued() + 1),
            ..Faults::default()
        });
        let _ = d.sync();
        assert!(dev.crashed());
        drop(d);
        let img = Arc::new(MemDevice::from_bytes(dev.crash_image(seed)));
        let b = Volume::mount(
            img.clone(),
            2,
            &MountOptions::default(),
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        b.recover_host(1, 60_000).unwrap();
        let d = VirtualDisk::open(&b, "/vm.vmdk").unwrap();
        let mut buf = vec![0u8; 300_000];
        d.read_at(&mut buf, 0).unwrap();
        if seed % 2 == 1 {
            assert!(buf[..7].iter().all(|&x| x == 1), "seed {seed}");
            assert!(buf[7..17].iter().all(|&x| x == 3), "seed {seed}");
            assert!(buf[17..].iter().all(|&x| x == 1), "seed {seed}");
            let mut c = vec![0u8; 70_000];
            d.read_at(&mut c, (5 << 20) + 3).unwrap();
            assert!(c.iter().all(|&x| x == 4), "seed {seed}: redo log data");
        } else {
            assert!(buf.iter().all(|&x| x == 1), "seed {seed}: flat extent data");
        }
        let mut e = vec![0u8; 5000];
        d.read_at(&mut e, 6 << 20).unwrap();
        assert!(e.iter().all(|&x| x == 2), "seed {seed}");
        drop(d);
        b.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(img.as_ref(), false).unwrap();
        assert!(r.is_clean(), "seed {seed}: {:#?}", r.errors);
    }
}

#[test]
fn a_disk_and_its_snapshots_read_from_a_read_only_mount() {
    let dev = Arc::new(vinfra_vmfs::MemDevice::new(64 << 20));
    let mut o = vinfra_vmfs::MkfsOptions::default();
    o.max_inodes = 256;
    vinfra_vmfs::Volume::mkfs(dev.as_ref(), &o).unwrap();
    let clock = Arc::new(vinfra_vmfs::ManualClock::new(0));
    let v = vinfra_vmfs::Volume::mount(dev.clone(), 1, &Default::default(), clock).unwrap();
    let mut d = VirtualDisk::create(&v, "/vm.vmdk", 4 << 20).unwrap();
    d.write_at(&[1u8; 100_000], 0).unwrap();
    d.snapshot().unwrap();
    d.write_at(&[2u8; 1000], 70_000).unwrap();
    d.sync().unwrap();
    drop(d);
    v.unmount().unwrap();

    let dev_ro = dev.clone();
    let ro = vinfra_vmfs::ReadOnlyVolume::mount(dev).unwrap();
    let d = ro.open_disk("/vm.vmdk").unwrap();
    assert_eq!(d.chain().len(), 2);
    let mut now = vec![0u8; 200_000];
    d.read_at(&mut now, 0).unwrap();
    let mut want = vec![0u8; 200_000];
    want[..100_000].fill(1);
    want[70_000..71_000].fill(2);
    assert!(now == want, "the disk as the VM sees it");
    let mut base = vec![0u8; 200_000];
    d.read_at_layer(&mut base, 0, 1).unwrap();
    want[70_000..71_000].fill(1);
    assert!(base == want, "the base: the state at the snapshot");
    let delta = ro
        .stat(&format!("/{}", d.chain()[1].trim_start_matches('/')))
        .unwrap()
        .ino;
    drop(d);
    drop(ro);

    // The delta's inode damaged: the disk as it is now fails naming it, the base reads.
    let g = Volume::superblock(dev_ro.as_ref()).unwrap().geo;
    vinfra_vmfs::BlockDevice::write_at(dev_ro.as_ref(), &[0xff; 4], g.inode_at(delta) + 16)
        .unwrap();
    let ro = vinfra_vmfs::ReadOnlyVolume::mount(dev_ro.clone()).unwrap();
    let d = ro.open_disk("/vm.vmdk").unwrap();
    let e = d.read_at(&mut now, 0).unwrap_err();
    assert!(e.to_string().contains(&format!("inode {delta}")), "{e}");
    d.read_at_layer(&mut base, 0, 1).unwrap();
    assert!(base == want, "the base still reads");
}
