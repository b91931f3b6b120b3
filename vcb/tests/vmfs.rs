//! Hot backup of a vmfs virtual disk: the VM (host 1) keeps writing while the backup
//! proxy (host 2, another mount of the same volume) reads the frozen snapshot; full,
//! then incremental from changed-block tracking; each restores the disk as it was when
//! frozen.
#![cfg(feature = "vmfs")]
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::sync::Arc;

use common::{init, noise, restore};
use vinfra_vcb::vmfs::{prepare, restore_to_vmfs, restore_vm, VmfsSnapshot};
use vinfra_vcb::{BackupOptions, VerifyLevel};
use vinfra_vmfs::disk::VirtualDisk;
use vinfra_vmfs::{ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};

const CAP: u64 = 8 << 20;

#[test]
fn vm_writes_while_the_proxy_backs_up_its_frozen_disk() {
    let lun = Arc::new(MemDevice::new(128 << 20));
    Volume::mkfs(lun.as_ref(), &MkfsOptions::default()).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let esx1 = Volume::mount(lun.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
    let proxy = Volume::mount(lun, 2, &MountOptions::default(), clock).unwrap();
    esx1.mkdir("/vm1").unwrap();
    let mut disk = VirtualDisk::create(&esx1, "/vm1/vm1.vmdk", CAP).unwrap();
    let mut model = vec![0u8; CAP as usize];
    let write = |disk: &mut VirtualDisk, model: &mut Vec<u8>, seed: u64, off: usize, len: usize| {
        let d = noise(seed, len);
        disk.write_at(&d, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&d);
    };
    write(&mut disk, &mut model, 1, 0, 1 << 20);
    write(&mut disk, &mut model, 2, 5 << 20, 300_000);

    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut since = None;
    let mut points = Vec::new();
    for round in 0..3u64 {
        let info = prepare(&mut disk, since).unwrap();
        let frozen = model.clone();
        let snap = VmfsSnapshot::open(&proxy, info).unwrap();
        // The VM writes into its redo log while the proxy reads the frozen layers.
        let s = std::thread::scope(|sc| {
            let vm = sc.spawn(|| {
                for i in 0..20u64 {
                    let off = ((round * 7 + i * 13) % 120) as usize * 65536;
                    write(&mut disk, &mut model, 100 * round + i, off, 10_000);
                }
            });
            let s = repo
                .backup(
                    &BackupOptions::new("vm1", round).host("proxy"),
                    &[("disk0", &snap)],
                )
                .unwrap();
            vm.join().unwrap();
            s
        });
        drop(snap);
        disk.consolidate().unwrap();
        let d = &s.manifest.disks[0];
        if round == 0 {
            // Never-written grains are not read: 16 + 5 of 128.
            assert_eq!(d.stats.bytes_read, 21 * 65536);
        } else {
            // Only the grains the VM wrote during the previous round.
            assert!(d.stats.bytes_read <= 20 * 65536, "{:?}", d.stats);
            assert!(d.stats.bytes_read > 0);
        }
        since = d.change_id;
        points.push((s.id, frozen));
    }
    for (id, want) in &points {
        assert!(restore(&repo, id, "disk0").unwrap() == *want);
    }
    assert!(repo.verify(VerifyLevel::ReadData).unwrap().is_ok());
    // Restored as a new vmfs disk (by the proxy host), it reads back as frozen.
    let (restored, st) =
        restore_to_vmfs(&repo, &points[1].0, "disk0", &proxy, "/vm1/restored.vmdk").unwrap();
    assert_eq!(restored.capacity(), CAP);
    assert_eq!(st.zero_grains + st.chunks_read, 128, "{st:?}");
    assert!(st.zero_grains > 64, "{st:?}");
    let mut got = vec![0u8; CAP as usize];
    restored.read_at(&mut got, 0).unwrap();
    assert!(got == points[1].1);
    // The live disk still reads what the VM wrote, after consolidation.
    let mut buf = vec![0u8; CAP as usize];
    disk.read_at(&mut buf, 0).unwrap();
    assert!(buf == model);
}

#[test]
fn a_layer_the_vm_still_writes_is_refused_with_its_holder() {
    let lun = Arc::new(MemDevice::new(64 << 20));
    Volume::mkfs(lun.as_ref(), &MkfsOptions::default()).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let esx1 = Volume::mount(lun.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
    let proxy = Volume::mount(lun, 2, &MountOptions::default(), clock).unwrap();
    let mut disk = VirtualDisk::create(&esx1, "/vm2.vmdk", 1 << 20).unwrap();
    disk.write_at(b"x", 0).unwrap();
    let mut info = prepare(&mut disk, None).unwrap();
    // The new redo log is the VM's, held exclusively: not part of a frozen image.
    info.frozen = disk.chain().to_vec();
    let e = VmfsSnapshot::open(&proxy, info).unwrap_err();
    assert!(e.to_string().contains("locked by host 1"), "{e}");
}

#[test]
fn a_whole_vm_is_restored_into_a_folder_of_the_volume() {
    let lun = Arc::new(MemDevice::new(64 << 20));
    Volume::mkfs(lun.as_ref(), &MkfsOptions::default()).unwrap();
    let vol = Volume::mount(
        lun,
        1,
        &MountOptions::default(),
        Arc::new(ManualClock::new(0)),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let mut a = vinfra_vcb::MemDisk::new(1 << 20);
    a.write_at(&noise(1, 100_000), 0);
    let mut b = vinfra_vcb::MemDisk::new(3 << 20);
    b.write_at(&noise(2, 5000), 2 << 20);
    let s = repo
        .backup(
            &BackupOptions::new("vm3", 1).config(b"{\"vcpus\":2}".to_vec()),
            &[("boot", &a.snapshot()), ("data", &b.snapshot())],
        )
        .unwrap();
    let vm = restore_vm(&repo, &s.id, &vol, "/vms/vm3").unwrap();
    assert_eq!(vm.config, b"{\"vcpus\":2}");
    for ((name, vd), src) in vm.disks.iter().zip([&a, &b]) {
        let mut got = vec![0u8; vd.capacity() as usize];
        vd.read_at(&mut got, 0).unwrap();
        assert!(got == src.as_bytes(), "{name}");
    }
    assert!(vol.exists("/vms/vm3/data.vmdk").unwrap());
}
