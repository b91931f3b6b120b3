//! criterion benches for the vmfs crate: lock acquire+release (ATS and Disk Paxos, in
//! memory and on a file), metadata create+stat+delete,
//! 4 KiB in-place I/O on an in-memory device, and create+stat+delete on a file device
//! (each transaction's commit is one `fdatasync`; more figures come from
//! `benches/peers/vmfs-io.sh`).
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use vinfra_vmfs::{
    BlockDevice, FileDevice, LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume,
};

fn volume() -> Volume {
    mounted(Arc::new(MemDevice::new(64 << 20)))
}

fn mounted(dev: Arc<dyn BlockDevice>) -> Volume {
    let mut o = MkfsOptions::default();
    o.max_inodes = 1024;
    o.blocks_per_cluster = 1024;
    Volume::mkfs(dev.as_ref(), &o).expect("mkfs");
    Volume::mount(
        dev,
        0,
        &MountOptions::default(),
        Arc::new(ManualClock::new(0)),
    )
    .expect("mount")
}

fn acquire_release(c: &mut Criterion, name: &str, v: &Volume) {
    let idx = v.superblock_now().geo.inode_lock(500);
    c.bench_function(name, |b| {
        b.iter(|| {
            v.lock_index(idx, LockMode::Exclusive).expect("lock");
            v.unlock_index(idx).expect("unlock");
        })
    });
}

/// A volume made for a device without compare-and-write (Disk Paxos, 8 hosts), host 0.
fn disk_paxos(lun: Arc<dyn BlockDevice>) -> Volume {
    let mut o = MkfsOptions::default();
    o.max_inodes = 1024;
    o.blocks_per_cluster = 1024;
    Volume::mkfs_without_ats(lun.clone(), &o, 8).expect("mkfs");
    let clock = Arc::new(ManualClock::new(0));
    let dev = vinfra_vmfs::paxos::open_for_host(lun, 0, clock.clone()).expect("paxos device");
    Volume::mount(dev, 0, &MountOptions::default(), clock).expect("mount")
}

fn locks(c: &mut Criterion) {
    acquire_release(c, "vmfs_lock_acquire_release", &volume());
    let mem: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    acquire_release(c, "vmfs_lock_acquire_release_disk_paxos", &disk_paxos(mem));
    // On a file: ATS is an OFD-locked read-compare-write (no flush); Disk Paxos flushes
    // (fdatasync) three times per compare-and-write.
    for paxos in [false, true] {
        let path =
            std::env::temp_dir().join(format!("vmfs-lock-{}-{paxos}.img", std::process::id()));
        let dev: Arc<dyn BlockDevice> =
            Arc::new(FileDevice::create(&path, 64 << 20).expect("image"));
        let (name, v) = if paxos {
            ("vmfs_lock_acquire_release_file_disk_paxos", disk_paxos(dev))
        } else {
            ("vmfs_lock_acquire_release_file", mounted(dev))
        };
        acquire_release(c, name, &v);
        v.unmount().expect("unmount");
        let _ = std::fs::remove_file(&path);
    }
}

fn create_stat_delete(c: &mut Criterion, name: &str, v: &Volume) {
    let mut n = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            let p = format!("/f{n}");
            n += 1;
            drop(v.create(&p).expect("create"));
            v.stat(&p).expect("stat");
            v.delete(&p).expect("delete");
        })
    });
}

fn metadata(c: &mut Criterion) {
    create_stat_delete(c, "vmfs_create_stat_delete", &volume());
    let path = std::env::temp_dir().join(format!("vmfs-bench-{}.img", std::process::id()));
    let dev = Arc::new(FileDevice::create(&path, 64 << 20).expect("image file"));
    let v = mounted(dev);
    create_stat_delete(c, "vmfs_create_stat_delete_file", &v);
    v.unmount().expect("unmount");
    let _ = std::fs::remove_file(&path);
}

fn data(c: &mut Criterion) {
    let v = volume();
    let f = v.create("/data").expect("create");
    f.write_at(&vec![1u8; 16 << 20], 0).expect("fill");
    let mut k = 0u64;
    let buf = vec![7u8; 4096];
    c.bench_function("vmfs_write_4k_in_place", |b| {
        b.iter(|| {
            k = (k + 7919) % 4096;
            f.write_at(&buf, k * 4096).expect("write");
        })
    });
    let mut out = vec![0u8; 4096];
    c.bench_function("vmfs_read_4k", |b| {
        b.iter(|| {
            k = (k + 7919) % 4096;
            f.read_at(&mut out, k * 4096).expect("read");
        })
    });
}

criterion_group!(benches, locks, metadata, data);
criterion_main!(benches);
