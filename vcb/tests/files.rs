//! File-level restore out of image backups: ext4, FAT and NTFS filesystems built with the
//! Debian tools (mke2fs -d, mkfs.fat + mcopy, mkntfs + ntfscp), placed on disks with and
//! without a partition table, backed up, and read back file by file from the repository.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use vinfra_testkit::tool_or_skip;
use vinfra_vcb::files::{EntryKind, FindQuery, FsKind, GuestFs};
use vinfra_vcb::{
    BackupOptions, Encryption, Error, InitOptions, KdfParams, LocalDir, MemDisk, Repository,
    VerifyLevel,
};

const MIB: usize = 1 << 20;
/// Where the first partition starts on the partitioned disks (sector 2048).
const PART_START: usize = MIB;

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tools_or_skip() -> bool {
    tool_or_skip("mke2fs", &["-V"], "apt-get install e2fsprogs")
        && tool_or_skip("mkfs.fat", &["--help"], "apt-get install dosfstools")
        && tool_or_skip("mcopy", &["-V"], "apt-get install mtools")
        && tool_or_skip("mkntfs", &["--version"], "apt-get install ntfs-3g")
        && tool_or_skip("ntfscp", &["--version"], "apt-get install ntfs-3g")
}

/// The guest's files: path -> content. `big` spans several 64 KiB grains.
fn tree(version: u8) -> BTreeMap<&'static str, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("hello.txt", b"hello from the guest\n".to_vec());
    t.insert("big.bin", common::noise(u64::from(version), 300_000));
    t.insert("empty", Vec::new());
    t.insert("docs/readme.md", b"# docs\n".repeat(1000));
    t.insert("docs/deep/notes.conf", b"key = value\n".to_vec());
    t
}

fn stage(dir: &Path, files: &BTreeMap<&str, Vec<u8>>) {
    for (p, data) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
}

/// An ext4 image of `len` bytes holding `files` and a symlink, laid out the same way
/// every time (fixed UUID, hash seed and time), so a rebuilt image differs from the
/// previous one only where the content changed.
fn ext4_image(work: &Path, files: &BTreeMap<&str, Vec<u8>>, len: usize) -> Vec<u8> {
    let src = work.join("ext4-src");
    let _ = std::fs::remove_dir_all(&src);
    stage(&src, files);
    std::os::unix::fs::symlink("docs/readme.md", src.join("link")).unwrap();
    let img = work.join("ext4.img");
    let _ = std::fs::remove_file(&img);
    let uuid = "0b6bd2a4-7c2f-4a5e-9d3e-5b1f7f0e1a11";
    sh(Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-U", uuid])
        .arg(format!("-Ehash_seed={uuid}"))
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg(format!("{}k", len / 1024)));
    std::fs::read(img).unwrap()
}

fn fat_image(work: &Path, files: &BTreeMap<&str, Vec<u8>>, len: usize) -> Vec<u8> {
    let src = work.join("fat-src");
    stage(&src, files);
    let img = work.join("fat.img");
    sh(Command::new("mkfs.fat")
        .args(["-C", "-F", "16", "-i", "12345678"])
        .arg(&img)
        .arg((len / 1024).to_string()));
    let entries: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sh(Command::new("mcopy")
        .arg("-s")
        .arg("-i")
        .arg(&img)
        .args(&entries)
        .arg("::/"));
    std::fs::read(img).unwrap()
}

/// NTFS: ntfscp copies into existing directories only, so the files sit at the root.
fn ntfs_image(work: &Path, files: &BTreeMap<&str, Vec<u8>>, len: usize) -> Vec<u8> {
    let img = work.join("ntfs.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(len as u64).unwrap();
    sh(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(&img));
    for (p, data) in files.iter().filter(|(p, _)| !p.contains('/')) {
        let tmp = work.join("ntfs-file");
        std::fs::write(&tmp, data).unwrap();
        sh(Command::new("ntfscp").arg("-q").arg(&img).arg(&tmp).arg(p));
    }
    std::fs::read(img).unwrap()
}

/// A disk with an MBR: partition 1 (type 0x83) and partition 2 (type 0x07) at the
/// given images, one after the other from 1 MiB.
fn mbr_disk(parts: &[(u8, &[u8])]) -> MemDisk {
    let total: usize = parts.iter().map(|(_, p)| p.len()).sum();
    let mut disk = MemDisk::new(PART_START + total + MIB);
    let mut mbr = vec![0u8; 512];
    let mut at = PART_START;
    for (i, (kind, img)) in parts.iter().enumerate() {
        let e = 446 + 16 * i;
        mbr[e + 4] = *kind;
        mbr[e + 8..e + 12].copy_from_slice(&u32::try_from(at / 512).unwrap().to_le_bytes());
        let n = u32::try_from(img.len() / 512).unwrap();
        mbr[e + 12..e + 16].copy_from_slice(&n.to_le_bytes());
        disk.write_at(img, at);
        at += img.len();
    }
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    disk.write_at(&mbr, 0);
    disk
}

fn read(fs: &mut GuestFs, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = fs.read_file(path, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

fn open_fs(repo: &Repository, id: &vinfra_vcb::Id, partition: Option<u32>) -> GuestFs {
    GuestFs::open(Arc::new(repo.disk_reader(id, "disk0").unwrap()), partition).unwrap()
}

/// Lists, reads, finds and restores the files of `files` from `fs`.
fn check_fs(fs: &mut GuestFs, files: &BTreeMap<&str, Vec<u8>>, with_dirs: bool, out: &Path) {
    let root: Vec<String> = fs
        .list("/")
        .unwrap()
        .iter()
        .map(|e| e.name().to_lowercase())
        .collect();
    for p in files.keys().filter(|p| with_dirs || !p.contains('/')) {
        let top = p.split('/').next().unwrap();
        assert!(root.contains(&top.to_lowercase()), "{top} not in {root:?}");
        assert_eq!(read(fs, &format!("/{p}")), files[p], "{p}");
        assert_eq!(fs.stat(p).unwrap().size, files[p].len() as u64);
    }
    // Names compare without case on FAT and NTFS, exactly on ext4.
    let upper = fs.stat("/HELLO.TXT");
    assert_eq!(upper.is_ok(), fs.kind() != FsKind::Ext4, "{upper:?}");
    match fs.stat("/no/such/file").unwrap_err() {
        Error::FileNotFound { path, location } => {
            assert_eq!(path, "/no/such/file");
            assert!(location.contains("disk0"), "{location}");
        }
        e => panic!("{e}"),
    }
    let big = fs.find("/", &FindQuery::new().min_size(100_000)).unwrap();
    assert_eq!(big.len(), 1, "{big:?}");
    assert_eq!(big[0].name().to_lowercase(), "big.bin");
    let txt = fs
        .find("/", &FindQuery::new().name("*.TXT").unwrap())
        .unwrap();
    assert_eq!(txt.len(), 1, "{txt:?}");
    if with_dirs {
        let conf = fs
            .find("/", &FindQuery::new().name("*.conf").unwrap())
            .unwrap();
        assert_eq!(conf.len(), 1);
        assert!(
            conf[0]
                .path
                .to_lowercase()
                .ends_with("/docs/deep/notes.conf"),
            "{conf:?}"
        );
        let dirs = fs
            .find("/docs", &FindQuery::new().kind(EntryKind::Dir))
            .unwrap();
        assert_eq!(dirs.len(), 2, "{dirs:?}");
    }

    // One file, then the whole tree, to a directory.
    fs.restore("/big.bin", out).unwrap();
    let one = std::fs::read_dir(out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read(one).unwrap(), files["big.bin"]);
    let all = out.join("all");
    let stats = fs.restore("/", &all).unwrap();
    let n = files
        .keys()
        .filter(|p| with_dirs || !p.contains('/'))
        .count() as u64;
    assert_eq!(stats.files, n);
    for p in files.keys().filter(|p| with_dirs || !p.contains('/')) {
        let found = find_ci(&all, p);
        assert_eq!(std::fs::read(found).unwrap(), files[p], "{p}");
    }

    // The same as a tar stream, unpacked by the tar crate's reader.
    let mut tarball = Vec::new();
    fs.write_tar("/", &mut tarball).unwrap();
    let mut got = BTreeMap::new();
    for e in tar::Archive::new(&tarball[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Regular {
            let p = e.path().unwrap().to_string_lossy().to_lowercase();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            got.insert(p, data);
        }
    }
    for p in files.keys().filter(|p| with_dirs || !p.contains('/')) {
        assert_eq!(
            got.get(&p.to_lowercase()),
            Some(&files[p]),
            "{p} in the tar"
        );
    }
}

/// `rel` under `dir`, matching each component without case (FAT may change case).
fn find_ci(dir: &Path, rel: &str) -> std::path::PathBuf {
    let mut cur = dir.to_path_buf();
    for c in rel.split('/') {
        let e = std::fs::read_dir(&cur)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .eq_ignore_ascii_case(c)
            })
            .unwrap_or_else(|| panic!("{c} not under {}", cur.display()));
        cur = e;
    }
    cur
}

#[test]
fn files_restore_from_ext4_and_ntfs_partitions_and_a_bare_fat_disk() {
    if !tools_or_skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = common::init(repo_dir.path());
    let files = tree(1);

    // ext4 in partition 1, NTFS in partition 2 of an MBR disk.
    let ext4 = ext4_image(work.path(), &files, 16 * MIB);
    let ntfs = ntfs_image(work.path(), &files, 16 * MIB);
    let mut disk = mbr_disk(&[(0x83, &ext4), (0x07, &ntfs)]);
    let s = repo
        .backup(
            &BackupOptions::new("vm1", 1),
            &[("disk0", &disk.snapshot())],
        )
        .unwrap();
    let reader = Arc::new(repo.disk_reader(&s.id, "disk0").unwrap());
    let vols = vinfra_vcb::files::volumes(reader).unwrap();
    let kinds: Vec<_> = vols.iter().map(|v| (v.partition, v.fs)).collect();
    assert_eq!(kinds, [(1, Some(FsKind::Ext4)), (2, Some(FsKind::Ntfs))]);

    let mut fs = open_fs(&repo, &s.id, None);
    assert_eq!(fs.kind(), FsKind::Ext4);
    check_fs(&mut fs, &files, true, &work.path().join("out-ext4"));
    assert_eq!(fs.stat("/link").unwrap().kind, EntryKind::Symlink);
    assert_eq!(fs.link_target("/link").unwrap(), "docs/readme.md");
    let linked = std::fs::read_link(work.path().join("out-ext4/all/link")).unwrap();
    assert_eq!(linked, Path::new("docs/readme.md"));

    let mut fs = open_fs(&repo, &s.id, Some(2));
    assert_eq!(fs.kind(), FsKind::Ntfs);
    check_fs(&mut fs, &files, false, &work.path().join("out-ntfs"));

    // FAT on a disk without a partition table.
    let fat = fat_image(work.path(), &files, 16 * MIB);
    let mut disk = MemDisk::new(16 * MIB);
    disk.write_at(&fat, 0);
    let s = repo
        .backup(
            &BackupOptions::new("vm2", 1),
            &[("disk0", &disk.snapshot())],
        )
        .unwrap();
    let mut fs = open_fs(&repo, &s.id, None);
    assert_eq!(fs.kind(), FsKind::Fat);
    check_fs(&mut fs, &files, true, &work.path().join("out-fat"));

    // A partition that holds nothing recognisable, and one that does not exist.
    let err = GuestFs::open(Arc::new(repo.disk_reader(&s.id, "disk0").unwrap()), Some(3));
    assert!(matches!(err, Err(Error::NoFilesystem { .. })), "{err:?}");
}

#[test]
fn files_spanning_changed_grains_restore_from_every_backup_after_an_incremental() {
    if !tools_or_skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = common::init(repo_dir.path());
    let v1 = tree(1);
    let img1 = ext4_image(work.path(), &v1, 16 * MIB);
    let mut disk = mbr_disk(&[(0x83, &img1)]);
    let full = repo
        .backup(&BackupOptions::new("vm", 1), &[("disk0", &disk.snapshot())])
        .unwrap();

    // The guest rewrites big.bin (300 KB over five grains) and appends to readme.md;
    // the disk sees exactly the grains whose bytes changed, as changed-block tracking
    // would record them.
    let mut v2 = tree(2);
    v2.get_mut("docs/readme.md").unwrap().extend(b"appended\n");
    let img2 = ext4_image(work.path(), &v2, 16 * MIB);
    let grain = 64 << 10;
    let mut changed = 0;
    for (i, (a, b)) in img1.chunks(grain).zip(img2.chunks(grain)).enumerate() {
        if a != b {
            disk.write_at(b, PART_START + i * grain);
            changed += 1;
        }
    }
    assert!(changed >= 5, "{changed} grains changed");
    let incr = repo
        .backup(&BackupOptions::new("vm", 2), &[("disk0", &disk.snapshot())])
        .unwrap();
    assert_eq!(incr.manifest.parent, Some(full.id));
    let stats = incr.manifest.disks[0].stats;
    assert_eq!(
        stats.bytes_read,
        changed as u64 * grain as u64,
        "only changed grains read"
    );

    let mut old = open_fs(&repo, &full.id, None);
    let mut new = open_fs(&repo, &incr.id, None);
    for (p, data) in &v1 {
        assert_eq!(&read(&mut old, p), data, "{p} in the full backup");
    }
    for (p, data) in &v2 {
        assert_eq!(&read(&mut new, p), data, "{p} in the incremental");
    }
    assert_ne!(v1["big.bin"], v2["big.bin"]);
}

#[test]
fn a_damaged_chunk_under_a_file_names_the_chunk_not_the_filesystem() {
    if !tools_or_skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = common::init(repo_dir.path());
    let files = tree(3);
    let img = ext4_image(work.path(), &files, 16 * MIB);
    let mut disk = mbr_disk(&[(0x83, &img)]);
    let s = repo
        .backup(&BackupOptions::new("vm", 1), &[("disk0", &disk.snapshot())])
        .unwrap();
    // Remove every index file: the metadata grains are still cached by nobody, so
    // opening the filesystem must fail with the repository's typed error.
    for f in common::files(repo_dir.path(), "index") {
        std::fs::remove_file(repo_dir.path().join(f)).unwrap();
    }
    let repo = common::open(repo_dir.path());
    let err = GuestFs::open(Arc::new(repo.disk_reader(&s.id, "disk0").unwrap()), None).unwrap_err();
    assert!(matches!(err, Error::ChunkMissing { .. }), "{err}");
}

/// verify names the guest file a damaged chunk belongs to: a byte flipped inside the
/// stored data of `big.bin` on an ext4 partition (an unencrypted repository, so that the
/// test can find the file's bytes in a pack; the noise does not compress, so it is
/// stored as it is).
#[test]
fn verify_names_the_guest_file_a_damaged_chunk_belongs_to() {
    if !tools_or_skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repo_dir = tempfile::tempdir().unwrap();
    let o = InitOptions::default()
        .kdf(KdfParams::INSECURE_FAST)
        .encryption(Encryption::None);
    let repo = Repository::init(LocalDir::create(repo_dir.path()).unwrap(), b"pw", &o).unwrap();
    let files = tree(4);
    let img = ext4_image(work.path(), &files, 16 * MIB);
    let mut disk = mbr_disk(&[(0x83, &img)]);
    let s = repo
        .backup(&BackupOptions::new("vm", 1), &[("disk0", &disk.snapshot())])
        .unwrap();
    let needle = &files["big.bin"][150_000..150_064];
    let mut flipped = false;
    for p in common::files(repo_dir.path(), "data") {
        let path = repo_dir.path().join(&p);
        let mut b = std::fs::read(&path).unwrap();
        if let Some(at) = b.windows(needle.len()).position(|w| w == needle) {
            b[at + 10] ^= 0x40;
            std::fs::write(&path, b).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "big.bin's bytes not found in any pack");
    for level in [VerifyLevel::ReadPacks, VerifyLevel::ReadData] {
        let r = repo.verify(level).unwrap();
        assert_eq!(r.problems.len(), 1, "{level:?}: {:?}", r.problems);
        let p = &r.problems[0];
        assert!(p.error.to_string().contains("hash mismatch"), "{}", p.error);
        assert_eq!(p.affected.len(), 1);
        let a = &p.affected[0];
        assert_eq!(a.snapshot, s.id);
        assert_eq!(a.disk, "disk0");
        let names: Vec<_> = a
            .files
            .iter()
            .map(|f| (f.partition, f.path.clone()))
            .collect();
        assert_eq!(names, vec![(1, Some("/big.bin".to_string()))], "{level:?}");
    }
    // Structure does not read data, so it names no files (and finds nothing here).
    assert!(repo.verify(VerifyLevel::Structure).unwrap().is_ok());
}
