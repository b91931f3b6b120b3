//! Our side of `benches/peers/vcb-restic-borg.sh`: a disk image is written into a vmfs
//! virtual disk (as a VM would), backed up from a frozen snapshot read through a second
//! mount (full), then the changed 4 KiB blocks of a second image are written into the
//! disk (so changed-block tracking records them) and backed up again (incremental); then
//! the whole image is restored, the repository verified, and single files restored
//! straight from the incremental backup. Prints one `key=value` line per figure.
//!
//! `cargo run --release -p vinfra-vcb --example peer_bench -- WORK OLD.img NEW.img
//! [PARTITION-IMAGE:GUEST-PATH ...]` — each `IMAGE:PATH` is backed up on its own and
//! `PATH` restored out of it (the first is taken from NEW.img itself when IMAGE is `-`).
//! Without arguments: a small synthetic run (no filesystem), so the test script's run of
//! every example stays quick.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "example code"
)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vinfra_vcb::files::GuestFs;
use vinfra_vcb::vmfs::{prepare, VmfsSnapshot};
use vinfra_vcb::{BackupOptions, InitOptions, LocalDir, MemDisk, Repository, VerifyLevel};
use vinfra_vmfs::disk::VirtualDisk;
use vinfra_vmfs::{FileDevice, ManualClock, MkfsOptions, MountOptions, Volume};

const PASSWORD: &[u8] = b"bench";
const BLOCK: usize = 4096;
const COPY: usize = 4 << 20;

fn du(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| e.unwrap())
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                du(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Writes `img` into `disk`: everything (`prev` None, skipping zero blocks, as a thin
/// disk would hold them) or only the 4 KiB blocks that differ from `prev`.
fn write_image(disk: &mut VirtualDisk, img: &std::fs::File, prev: Option<&std::fs::File>) -> u64 {
    let len = img.metadata().unwrap().len();
    let (mut a, mut b) = (vec![0u8; COPY], vec![0u8; COPY]);
    let mut written = 0;
    let mut off = 0u64;
    while off < len {
        let n = COPY.min((len - off) as usize);
        img.read_exact_at(&mut a[..n], off).unwrap();
        if let Some(p) = prev {
            p.read_exact_at(&mut b[..n], off).unwrap();
        }
        // Runs of consecutive differing blocks go down as one write each.
        let mut run: Option<usize> = None;
        let blocks = n.div_ceil(BLOCK);
        for i in 0..=blocks {
            let differs = i < blocks && {
                let blk = &a[i * BLOCK..((i + 1) * BLOCK).min(n)];
                match prev {
                    Some(_) => blk != &b[i * BLOCK..i * BLOCK + blk.len()],
                    None => blk.iter().any(|&x| x != 0),
                }
            };
            match (differs, run) {
                (true, None) => run = Some(i),
                (false, Some(start)) => {
                    let (s, e) = (start * BLOCK, (i * BLOCK).min(n));
                    disk.write_at(&a[s..e], off + s as u64).unwrap();
                    written += (e - s) as u64;
                    run = None;
                }
                _ => {}
            }
        }
        off += n as u64;
    }
    written
}

/// CPU seconds of this process so far (user + system, every thread), from /proc: the
/// steadier figure on a shared machine.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0] + f[1]) as f64 / 100.0
}

fn synthetic(work: &Path) -> (PathBuf, PathBuf) {
    let mut d = MemDisk::new(16 << 20);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = |n: usize| {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    d.write_at(&noise(8 << 20), 0);
    let old = work.join("old.img");
    std::fs::write(&old, d.as_bytes()).unwrap();
    for k in 0..20 {
        d.write_at(&noise(BLOCK), k * 20 * BLOCK);
    }
    let new = work.join("new.img");
    std::fs::write(&new, d.as_bytes()).unwrap();
    (old, new)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tmp;
    let (work, old, new, files) = if args.len() >= 3 {
        let files = args[3..].to_vec();
        (
            PathBuf::from(&args[0]),
            PathBuf::from(&args[1]),
            PathBuf::from(&args[2]),
            files,
        )
    } else {
        tmp = tempfile::tempdir().unwrap();
        let (o, n) = synthetic(tmp.path());
        (tmp.path().to_path_buf(), o, n, Vec::new())
    };
    let old_f = std::fs::File::open(&old).unwrap();
    let new_f = std::fs::File::open(&new).unwrap();
    let cap = old_f.metadata().unwrap().len();

    // The shared LUN: a vmfs volume on a file, mounted by the VM's host and the proxy.
    let lun_path = work.join("lun.vmfs");
    let _ = std::fs::remove_file(&lun_path);
    let lun: Arc<FileDevice> =
        Arc::new(FileDevice::create(&lun_path, cap * 2 + (512 << 20)).unwrap());
    // VMFS-5's 1 MiB file blocks (a 4 KiB-block file runs out of block pointers long
    // before 2 GiB), 32 MiB clusters; changed-block tracking stays at 64 KiB grains.
    let mut mk = MkfsOptions::default();
    mk.max_inodes = 64; // the fewest: metadata grows with the block size
    mk.block_size = 1 << 20;
    mk.blocks_per_cluster = 32;
    mk.journal_blocks = 4;
    Volume::mkfs(lun.as_ref(), &mk).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let esx = Volume::mount(lun.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
    let proxy = Volume::mount(lun, 2, &MountOptions::default(), clock).unwrap();
    let mut disk = VirtualDisk::create(&esx, "/vm.vmdk", cap).unwrap();
    let t = Instant::now();
    let data = write_image(&mut disk, &old_f, None);
    disk.sync().unwrap();
    println!(
        "setup_write_s={:.2} data_bytes={data}",
        t.elapsed().as_secs_f64()
    );

    let repo_dir = work.join("ours-repo");
    let _ = std::fs::remove_dir_all(&repo_dir);
    let repo = Repository::init(
        LocalDir::create(&repo_dir).unwrap(),
        PASSWORD,
        &InitOptions::default(),
    )
    .unwrap();

    // Full.
    let info = prepare(&mut disk, None).unwrap();
    let snap = VmfsSnapshot::open(&proxy, info).unwrap();
    let (t, c) = (Instant::now(), cpu_s());
    let full = repo
        .backup(&BackupOptions::new("vm", 1), &[("disk0", &snap)])
        .unwrap();
    let full_s = t.elapsed().as_secs_f64();
    println!("full_cpu_s={:.2}", cpu_s() - c);
    let change_id = full.manifest.disks[0].change_id;
    drop(snap);
    disk.consolidate().unwrap();
    let size_full = du(&repo_dir);
    println!("full_s={full_s:.3} image_bytes={cap} repo_bytes_full={size_full}");

    // The guest's changes, then the incremental from changed-block tracking.
    let changed = write_image(&mut disk, &new_f, Some(&old_f));
    disk.sync().unwrap();
    let info = prepare(&mut disk, change_id).unwrap();
    let snap = VmfsSnapshot::open(&proxy, info).unwrap();
    let t = Instant::now();
    let incr = repo
        .backup(&BackupOptions::new("vm", 2), &[("disk0", &snap)])
        .unwrap();
    let incr_s = t.elapsed().as_secs_f64();
    drop(snap);
    disk.consolidate().unwrap();
    let added = du(&repo_dir) - size_full;
    let st = incr.manifest.disks[0].stats;
    println!(
        "incr_s={incr_s:.3} changed_bytes={changed} incr_read_bytes={} incr_added_bytes={added}",
        st.bytes_read
    );

    // Whole-image restore (sparse, read back and checked), verify.
    let out = work.join("ours-restore.img");
    let _ = std::fs::remove_file(&out);
    let t = Instant::now();
    repo.restore_disk_to_file(&incr.id, "disk0", &out).unwrap();
    println!("restore_s={:.3}", t.elapsed().as_secs_f64());
    let same = {
        let r = std::fs::File::open(&out).unwrap();
        let (mut a, mut b) = (vec![0u8; COPY], vec![0u8; COPY]);
        let mut off = 0;
        let mut same = true;
        while off < cap {
            let n = COPY.min((cap - off) as usize);
            r.read_exact_at(&mut a[..n], off).unwrap();
            new_f.read_exact_at(&mut b[..n], off).unwrap();
            same &= a[..n] == b[..n];
            off += n as u64;
        }
        same
    };
    assert!(same, "the restored image differs from NEW");
    std::fs::remove_file(&out).unwrap();
    let (t, c) = (Instant::now(), cpu_s());
    let v = repo.verify(VerifyLevel::ReadData).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    println!(
        "verify_s={:.3} verify_cpu_s={:.2} verify_bytes={}",
        t.elapsed().as_secs_f64(),
        cpu_s() - c,
        v.bytes_read
    );
    let (t, c) = (Instant::now(), cpu_s());
    let v = repo.verify(VerifyLevel::ReadPacks).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    println!(
        "verify_packs_s={:.3} verify_packs_cpu_s={:.2}",
        t.elapsed().as_secs_f64(),
        cpu_s() - c
    );
    drop(repo);
    drop(disk);

    // Single files straight out of image backups: a fresh process's work (open the
    // repository, derive the key, find the filesystem, restore the file).
    for spec in &files {
        let (img, path) = spec.split_once(':').unwrap();
        let (id, label) = if img == "-" {
            (incr.id, "ext4")
        } else {
            let repo = Repository::open(LocalDir::open(&repo_dir).unwrap(), PASSWORD).unwrap();
            let bytes = std::fs::read(img).unwrap();
            let snap = MemDisk::from_vec(bytes).snapshot();
            let s = repo
                .backup(&BackupOptions::new(img, 3), &[("disk0", &snap)])
                .unwrap();
            (s.id, Path::new(img).file_stem().unwrap().to_str().unwrap())
        };
        let into = work.join(format!("ours-file-{label}"));
        let _ = std::fs::remove_dir_all(&into);
        let t = Instant::now();
        let repo = Repository::open(LocalDir::open(&repo_dir).unwrap(), PASSWORD).unwrap();
        let reader = Arc::new(repo.disk_reader(&id, "disk0").unwrap());
        let mut fs = GuestFs::open(reader, None).unwrap();
        let st = fs.restore(path, &into).unwrap();
        println!(
            "file_restore_{label}_s={:.3} file_bytes_{label}={} file_fs_{label}={}",
            t.elapsed().as_secs_f64(),
            st.bytes,
            fs.kind().name()
        );
    }
}
