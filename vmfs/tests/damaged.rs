//! Reads of a damaged volume: a structure that fails its checks is a typed
//! `Error::Corrupt` that names where it lives (the inode, the block), and what is intact
//! still reads.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeSet;
use std::sync::Arc;

use vinfra_testkit::{for_each_seed, seeds};
use vinfra_vmfs::format::{decode_indirect, Inode, SB_BACKUP_AT, SECTOR};
use vinfra_vmfs::{
    fsck, BlockDevice, Error, Faults, FaultyDevice, Kind, LockMode, ManualClock, MemDevice,
    MkfsOptions, MountOptions, ReadOnlyVolume, Volume,
};

fn mount(dev: &Arc<MemDevice>, host: u32) -> Volume {
    Volume::mount(
        dev.clone(),
        host,
        &MountOptions::default(),
        Arc::new(ManualClock::new(0)),
    )
    .unwrap()
}

#[test]
fn damaged_inodes_and_indirect_blocks_are_named_and_the_rest_reads() {
    let dev = Arc::new(MemDevice::new(32 << 20));
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let v = mount(&dev, 1);
    // 100 KiB at 4 KiB blocks: 12 direct blocks, the rest under an indirect block.
    let a = v.create("/a").unwrap();
    a.write_at(&[1u8; 100 << 10], 0).unwrap();
    a.close().unwrap();
    let b = v.create("/b").unwrap();
    b.write_at(b"intact", 0).unwrap();
    b.close().unwrap();
    let c = v.create("/c").unwrap();
    c.write_at(b"doomed", 0).unwrap();
    c.close().unwrap();
    let (ia, ic) = (v.stat("/a").unwrap().ino, v.stat("/c").unwrap().ino);
    v.unmount().unwrap();

    let g = Volume::superblock(dev.as_ref()).unwrap().geo;
    let mut sector = vec![0u8; SECTOR];
    dev.read_at(&mut sector, g.inode_at(ia)).unwrap();
    let blk = Inode::decode(&sector, ia).unwrap().indirect[0];
    assert_ne!(blk, 0);
    // Flip a pointer byte of the indirect block and a byte of /c's inode.
    let off = blk as u64 * g.block_size as u64 + 100;
    let mut x = [0u8; 1];
    dev.read_at(&mut x, off).unwrap();
    dev.write_at(&[x[0] ^ 0xff], off).unwrap();
    dev.read_at(&mut x, g.inode_at(ic) + 20).unwrap();
    dev.write_at(&[x[0] ^ 0xff], g.inode_at(ic) + 20).unwrap();

    let v = mount(&dev, 2);
    let a = v.open("/a", LockMode::SharedRead).unwrap();
    let mut head = vec![0u8; 12 << 12];
    a.read_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&x| x == 1), "the direct blocks are intact");
    let e = a.read_at(&mut [0u8; 4096], 60 << 10).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let words = e.to_string();
    assert!(
        words.contains(&format!("indirect block {blk} of inode {ia}")),
        "{words}"
    );
    let e = v.stat("/c").unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(&format!("inode {ic}")), "{e}");
    let b = v.open("/b", LockMode::SharedRead).unwrap();
    let mut back = [0u8; 6];
    b.read_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"intact");
}

/// splitmix64: the test's own seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A file the test wrote: where, what, and the sectors it is made of.
struct Written {
    path: String,
    ino: u32,
    data: Vec<u8>,
    /// Inode sector, indirect blocks' sectors, data blocks' sectors (byte offsets).
    own: Vec<u64>,
    /// The inodes of its ancestor directories (root excluded).
    ancestors: Vec<u32>,
}

fn sectors_of_block(b: u32, bs: u64) -> impl Iterator<Item = u64> {
    (0..bs / SECTOR as u64).map(move |k| b as u64 * bs + k * SECTOR as u64)
}

/// The blocks of `ino` as the test sees them from the format: (indirect, data).
fn blocks_of(
    dev: &MemDevice,
    g: &vinfra_vmfs::format::Geometry,
    ino: &Inode,
) -> (Vec<u32>, Vec<u32>) {
    let bs = g.block_size as usize;
    let mut data: Vec<u32> = ino.direct.iter().copied().filter(|&b| b != 0).collect();
    let mut ind = Vec::new();
    let mut stack: Vec<(u32, u8)> = ino
        .indirect
        .iter()
        .enumerate()
        .filter(|(_, &b)| b != 0)
        .map(|(i, &b)| (b, i as u8 + 1))
        .collect();
    while let Some((b, level)) = stack.pop() {
        ind.push(b);
        let mut raw = vec![0u8; bs];
        dev.read_at(&mut raw, b as u64 * bs as u64).unwrap();
        for p in decode_indirect(&raw, bs, ino.ino, level).unwrap() {
            if p != 0 {
                if level == 1 {
                    data.push(p);
                } else {
                    stack.push((p, level - 1));
                }
            }
        }
    }
    (ind, data)
}

fn contents(seed: u64, i: usize, len: usize) -> Vec<u8> {
    let mut r = Rng(seed * 1000 + i as u64);
    (0..len).map(|_| r.next() as u8).collect()
}

/// Builds a tree of directories and files (some past the direct blocks, some renamed).
/// With `crash`, the host dies mounted instead of unmounting: its last transactions are
/// committed in its journal and not checkpointed, its slot shows it mounted.
fn populate(dev: &Arc<MemDevice>, seed: u64, rng: &mut Rng, crash: bool) -> Vec<Written> {
    let v = mount(dev, 1);
    let dirs = ["/d0", "/d1", "/d0/e", "/d0/e/f", "/d2"];
    for d in dirs {
        v.mkdir(d).unwrap();
    }
    let mut paths = Vec::new();
    for i in 0..18 {
        let dir = if i % 6 == 5 {
            ""
        } else {
            dirs[rng.below(dirs.len() as u64) as usize]
        };
        let len = match rng.below(4) {
            0 => rng.below(600) as usize,
            1 => rng.below(20 << 10) as usize,
            _ => (40 << 10) + rng.below(80 << 10) as usize,
        };
        let p = format!("{dir}/file{i}");
        let f = v.create(&p).unwrap();
        let data = contents(seed, i, len);
        f.write_at(&data, 0).unwrap();
        f.close().unwrap();
        paths.push((p, data));
    }
    // Renames keep the back references current.
    for k in 0..3 {
        let i = rng.below(paths.len() as u64) as usize;
        let to = format!("{}/renamed{k}", dirs[rng.below(dirs.len() as u64) as usize]);
        v.rename(&paths[i].0, &to).unwrap();
        paths[i].0 = to;
    }
    let g = Volume::superblock(dev.as_ref()).unwrap().geo;
    let bs = g.block_size as u64;
    let mut out = Vec::new();
    for (path, data) in paths {
        let ino = v.stat(&path).unwrap().ino;
        let mut ancestors = Vec::new();
        let mut at = String::new();
        for c in path
            .split('/')
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            at = format!("{at}/{c}");
            ancestors.push(v.stat(&at).unwrap().ino);
        }
        out.push(Written {
            path,
            ino,
            data,
            own: Vec::new(),
            ancestors,
        });
    }
    if crash {
        std::mem::forget(v);
    } else {
        v.unmount().unwrap();
    }
    for w in &mut out {
        let mut s = vec![0u8; SECTOR];
        dev.read_at(&mut s, g.inode_at(w.ino)).unwrap();
        let i = Inode::decode(&s, w.ino).unwrap();
        let (ind, data) = blocks_of(dev, &g, &i);
        w.own.push(g.inode_at(w.ino));
        for b in ind.into_iter().chain(data) {
            w.own.extend(sectors_of_block(b, bs));
        }
    }
    out
}

/// Every metadata sector of the volume worth damaging, by kind.
fn metadata_targets(dev: &MemDevice) -> Vec<u64> {
    let g = Volume::superblock(dev).unwrap().geo;
    let bs = g.block_size as u64;
    // Each superblock copy as often as a few inodes.
    let mut t = vec![0; 6];
    t.extend([SB_BACKUP_AT; 6]);
    for h in [0, 1, 2] {
        t.push(g.hb_at(h));
        t.push(g.journal_at(h));
    }
    // The first sectors of host 1's journal ring (its transactions).
    for k in 0..16 {
        t.push(g.journal_at(1) + bs + k * SECTOR as u64);
    }
    for i in [0u64, 1, 2, 64] {
        t.push(g.lock_at(i));
    }
    for c in 0..g.n_clusters {
        t.push(g.cluster_at(c));
    }
    for ino in 1..g.max_inodes {
        let mut s = vec![0u8; SECTOR];
        dev.read_at(&mut s, g.inode_at(ino)).unwrap();
        let Ok(i) = Inode::decode(&s, ino) else {
            continue;
        };
        if i.kind == Kind::Free {
            continue;
        }
        // Inodes three times over, so that they are hit as often as the rest.
        t.extend([g.inode_at(ino); 3]);
        let (ind, data) = blocks_of(dev, &g, &i);
        for b in ind {
            t.extend(sectors_of_block(b, bs).take(2));
        }
        if i.kind == Kind::Dir {
            for b in data {
                t.extend(sectors_of_block(b, bs).take(2));
            }
        }
    }
    t
}

/// Overwrites 1–5 of `targets` (never both superblock copies) with random bytes or one
/// flipped bit; returns the sectors hit.
fn damage(dev: &MemDevice, targets: &[u64], rng: &mut Rng) -> BTreeSet<u64> {
    let mut damaged = BTreeSet::new();
    for _ in 0..1 + rng.below(5) {
        let at = targets[rng.below(targets.len() as u64) as usize];
        if (at == SB_BACKUP_AT && damaged.contains(&0))
            || (at == 0 && damaged.contains(&SB_BACKUP_AT))
        {
            continue; // one superblock copy must survive
        }
        let junk: Vec<u8> = if rng.below(2) == 0 {
            (0..SECTOR).map(|_| rng.next() as u8).collect()
        } else {
            let mut s = vec![0u8; SECTOR];
            dev.read_at(&mut s, at).unwrap();
            let k = rng.below(SECTOR as u64) as usize;
            s[k] ^= 1 << rng.below(8);
            s
        };
        dev.write_at(&junk, at).unwrap();
        damaged.insert(at);
    }
    damaged
}

fn tree(ro: &ReadOnlyVolume, dir: &str, out: &mut Vec<(u32, String)>) {
    let l = ro.list(if dir.is_empty() { "/" } else { dir }).unwrap();
    assert!(l.damaged.is_empty(), "{dir}: {:?}", l.damaged);
    for e in l.entries {
        let p = format!("{dir}/{}", e.name);
        out.push((e.ino, p.clone()));
        if e.kind == Kind::Dir {
            tree(ro, &p, out);
        }
    }
}

#[test]
fn random_metadata_damage_is_repaired_and_every_intact_file_reads_back() {
    // Over all seeds: files lost with their own sectors, files put back by their back
    // reference, files quarantined in /lost+found, superblocks restored from the backup.
    let (mut lost, mut put_back, mut quarantined, mut sb_restored) = (0, 0, 0, 0);
    let mut backup_rewritten = 0;
    let mut uncertain_seeds = 0;
    let all = seeds(0..120);
    let many = all.len() > 1;
    for_each_seed(all, |seed| {
        let mut rng = Rng(seed);
        let dev = Arc::new(MemDevice::new(24 << 20));
        let mut o = MkfsOptions::default();
        o.max_inodes = 128;
        o.journal_blocks = 4;
        Volume::mkfs(dev.as_ref(), &o).unwrap();
        let crash = seed % 2 == 1;
        let files = populate(&dev, seed, &mut rng, crash);
        let g = Volume::superblock(dev.as_ref()).unwrap().geo;
        let targets = metadata_targets(&dev);
        let damaged = damage(dev.as_ref(), &targets, &mut rng);
        let intact = |w: &Written| w.own.iter().all(|s| !damaged.contains(s));
        // A crashed host's damaged journal (a transaction in its ring, or both copies of
        // its floor) cuts its replay short: recovery, like mount's, then goes back to an
        // earlier committed state, so what exactly reads back is not the test's to say;
        // only typed errors, no writes by the read-only mount, and a clean repair are.
        let ring = g.journal_at(1) + g.block_size as u64
            ..g.journal_at(1) + g.journal_blocks as u64 * g.block_size as u64;
        let uncertain = crash
            && (damaged.iter().any(|s| ring.contains(s))
                || (damaged.contains(&g.lock_at(1)) && damaged.contains(&g.journal_at(1))));
        uncertain_seeds += usize::from(uncertain);

        // Read-only: nothing written; every intact file reads by its inode, and by its
        // path unless the way there is damaged (then a typed error, never a panic).
        let before = dev.snapshot();
        let ro = ReadOnlyVolume::mount(dev.clone()).unwrap();
        for w in &files {
            let by_ino = ro.open_inode(w.ino).and_then(|f| {
                let mut b = vec![0u8; w.data.len()];
                f.read_at(&mut b, 0).map(|n| {
                    b.truncate(n);
                    b
                })
            });
            if uncertain {
                let _ = ro.open(&w.path);
                continue;
            }
            let dirs_intact = w
                .ancestors
                .iter()
                .all(|&d| !damaged.contains(&g.inode_at(d)));
            if intact(w) && dirs_intact {
                assert_eq!(ro.back_path(w.ino), w.path, "seed {seed}: back references");
            }
            match (intact(w), by_ino) {
                (true, Ok(b)) => assert!(b == w.data, "seed {seed}: {} reads wrong", w.path),
                (true, Err(e)) => panic!("seed {seed}: intact {} unreadable: {e}", w.path),
                (false, Err(e)) => assert!(matches!(e, Error::Corrupt { .. }), "seed {seed}: {e}"),
                // A crashed host's journal, replayed in memory, may hold the damaged
                // inode's or indirect block's last image: then it reads, and right.
                (false, Ok(b)) if crash => assert!(b == w.data, "seed {seed}: {}", w.path),
                (false, Ok(_)) => panic!("seed {seed}: damaged {} read without error", w.path),
            }
            if let Err(e) = ro.open(&w.path) {
                assert!(
                    matches!(e, Error::Corrupt { .. }),
                    "seed {seed}: {}: {e}",
                    w.path
                );
            }
        }
        drop(ro);
        assert!(
            dev.snapshot() == before,
            "seed {seed}: the read-only mount wrote"
        );

        // Repair, then every intact file is on the volume: at its own path when its
        // directories' inodes are intact (back references), else under /lost+found.
        if crash {
            let e = fsck::check(dev.as_ref(), true);
            assert!(
                matches!(e, Err(Error::InUse { .. })) || e.as_ref().is_ok_and(|r| r.is_clean()),
                "seed {seed}: {e:?}"
            );
            let clock = ManualClock::new(0);
            let freed = fsck::release_dead_hosts(dev.as_ref(), &clock).unwrap();
            assert!(
                freed == [1] || damaged.contains(&g.hb_at(1)),
                "seed {seed}: {freed:?}"
            );
        }
        let r = fsck::check(dev.as_ref(), true).unwrap();
        lost += files.iter().filter(|w| !intact(w)).count();
        put_back += r
            .repaired
            .iter()
            .filter(|x| x.contains("back reference)"))
            .count();
        quarantined += r
            .quarantined
            .iter()
            .filter(|x| x.contains("lost+found"))
            .count();
        backup_rewritten += r
            .repaired
            .iter()
            .filter(|x| x.contains("backup superblock written"))
            .count();
        sb_restored += r
            .repaired
            .iter()
            .filter(|x| x.contains("restored from its backup"))
            .count();
        assert!(
            r.is_clean(),
            "seed {seed}: after repair {:?}\n{:?}",
            r.errors,
            r.repaired
        );
        let again = fsck::check(dev.as_ref(), false).unwrap();
        assert!(again.is_clean(), "seed {seed}: {:?}", again.errors);
        let ro = ReadOnlyVolume::mount(dev.clone()).unwrap();
        let mut found = Vec::new();
        tree(&ro, "", &mut found);
        let v = mount(&dev, 2);
        for w in files.iter().filter(|w| intact(w) && !uncertain) {
            let at = found
                .iter()
                .find(|(i, _)| *i == w.ino)
                .map(|(_, p)| p.clone());
            let at =
                at.unwrap_or_else(|| panic!("seed {seed}: {} lost; {:?}", w.path, r.quarantined));
            let dirs_ok = w.ancestors.iter().all(|&d| {
                !damaged.contains(
                    &vinfra_vmfs::Volume::superblock(dev.as_ref())
                        .unwrap()
                        .geo
                        .inode_at(d),
                )
            });
            if dirs_ok {
                assert_eq!(
                    at, w.path,
                    "seed {seed}: not put back by its back reference"
                );
            } else {
                assert!(
                    at.starts_with("/lost+found/") || at == w.path,
                    "seed {seed}: {at}"
                );
            }
            let f = v.open(&at, LockMode::SharedRead).unwrap();
            let mut b = vec![0u8; w.data.len()];
            f.read_at(&mut b, 0).unwrap();
            assert!(b == w.data, "seed {seed}: {at} reads wrong after repair");
        }
        // The repaired volume takes writes.
        let f = v.create("/after-repair").unwrap();
        f.write_at(&[7u8; 70 << 10], 0).unwrap();
        f.close().unwrap();
        v.mkdir("/d9").unwrap();
        v.unmount().unwrap();
        let last = fsck::check(dev.as_ref(), false).unwrap();
        assert!(
            last.is_clean(),
            "seed {seed}: {:?}\ndamaged {damaged:?} (geometry {g:?})\nrepair: {:?}",
            last.errors,
            r.repaired
        );
    });
    eprintln!(
        "lost {lost}, put back {put_back}, quarantined {quarantined}, superblocks \
         {sb_restored}, backups rewritten {backup_rewritten}, seeds with a crashed host's journal cut {uncertain_seeds}"
    );
    if many {
        // The seeds reach every kind of recovery, or the test proves less than it says.
        assert!(lost > 0 && put_back > 0 && quarantined > 0 && sb_restored > 0);
        assert!(backup_rewritten > 0);
    }
}

#[test]
fn a_crashed_hosts_journal_is_replayed_in_memory_by_the_read_only_mount() {
    let dev = Arc::new(MemDevice::new(32 << 20));
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let v = mount(&dev, 1);
    let f = v.create("/committed").unwrap();
    f.write_at(b"in the journal", 0).unwrap();
    f.close().unwrap();
    let ino = v.stat("/committed").unwrap().ino;
    // Host 1 dies: its slot still shows it mounted, its last transactions are only in
    // its journal (the in-place writes of the inode and the root directory are lost).
    std::mem::forget(v);
    let g = Volume::superblock(dev.as_ref()).unwrap().geo;
    dev.write_at(&[0u8; SECTOR], g.inode_at(ino)).unwrap();
    let before = dev.snapshot();

    let ro = ReadOnlyVolume::mount(dev.clone()).unwrap();
    let notes = ro.notes().join("\n");
    assert!(notes.contains("host 1 shows mounted"), "{notes}");
    assert!(notes.contains("journal of host 1"), "{notes}");
    let f = ro.open("/committed").unwrap();
    let mut b = vec![0u8; f.len() as usize];
    f.read_at(&mut b, 0).unwrap();
    assert_eq!(b, b"in the journal");
    drop(ro);
    assert!(
        dev.snapshot() == before,
        "the read-only mount wrote to the device"
    );

    // Damage beyond the safe repairs while host 1's slot shows mounted: repair refuses.
    dev.write_at(&[0xff; 8], g.inode_at(1) + 60).unwrap();
    let e = fsck::check(dev.as_ref(), true).unwrap_err();
    assert!(
        matches!(e, Error::InUse { ref hosts } if hosts == &[1]),
        "{e}"
    );
}

#[test]
fn heavy_damage_never_panics_and_a_repair_that_succeeds_leaves_a_clean_volume() {
    for_each_seed(seeds(1000..1024), |seed| {
        let mut rng = Rng(seed);
        let dev = Arc::new(MemDevice::new(24 << 20));
        let mut o = MkfsOptions::default();
        o.max_inodes = 128;
        o.journal_blocks = 4;
        Volume::mkfs(dev.as_ref(), &o).unwrap();
        let files = populate(&dev, seed, &mut rng, seed % 2 == 1);
        let g = Volume::superblock(dev.as_ref()).unwrap().geo;
        // 40 sectors anywhere in the metadata regions, plus the metadata targets.
        let targets = metadata_targets(&dev);
        for k in 0..60 {
            let at = if k % 3 == 0 {
                targets[rng.below(targets.len() as u64) as usize]
            } else {
                rng.below(g.data_offset / SECTOR as u64) * SECTOR as u64
            };
            let junk: Vec<u8> = (0..SECTOR).map(|_| rng.next() as u8).collect();
            dev.write_at(&junk, at).unwrap();
        }
        // Whatever is left: the read-only mount and its reads answer, typed.
        if let Ok(ro) = ReadOnlyVolume::mount(dev.clone()) {
            let _ = ro.list("/");
            for w in &files {
                let _ = ro
                    .open(&w.path)
                    .and_then(|f| f.read_at(&mut [0u8; 4096], 0));
                let _ = ro.back_path(w.ino);
            }
            let _ = ro.inodes();
        }
        let clock = ManualClock::new(0);
        let _ = fsck::release_dead_hosts(dev.as_ref(), &clock);
        match fsck::check(dev.as_ref(), true) {
            Ok(r) if r.is_clean() => {
                let v = mount(&dev, 2);
                v.create("/after").unwrap().write_at(b"x", 0).unwrap();
                v.unmount().unwrap();
                let again = fsck::check(dev.as_ref(), false).unwrap();
                assert!(again.is_clean(), "seed {seed}: {:?}", again.errors);
            }
            Ok(r) => eprintln!("seed {seed}: left damaged: {:?}", r.errors),
            Err(e) => eprintln!("seed {seed}: refused: {e}"),
        }
    });
}

#[test]
fn a_repair_that_crashes_is_finished_by_the_next_one() {
    for_each_seed(seeds(2000..2016), |seed| {
        let mut rng = Rng(seed);
        let dev = Arc::new(MemDevice::new(24 << 20));
        let mut o = MkfsOptions::default();
        o.max_inodes = 128;
        o.journal_blocks = 4;
        Volume::mkfs(dev.as_ref(), &o).unwrap();
        let files = populate(&dev, seed, &mut rng, false);
        let targets = metadata_targets(&dev);
        let damaged = damage(dev.as_ref(), &targets, &mut rng);
        let image = dev.snapshot();
        // How many writes a whole repair makes, then a crash at one of them.
        let dry = FaultyDevice::from_bytes(image.clone());
        fsck::check(&dry, true).unwrap();
        let writes = dry.writes_issued();
        let at = 1 + rng.below(writes.max(1));
        let faulty = FaultyDevice::from_bytes(image);
        faulty.set_faults(Faults {
            crash_at_write: Some(at),
            ..Faults::default()
        });
        let r = fsck::check(&faulty, true);
        assert!(
            r.as_ref().is_err_and(vinfra_vmfs::faulty::is_crash) || at > writes,
            "seed {seed}: crash at write {at} of {writes}: {r:?}"
        );
        // What survived the crash (unflushed writes dropped or torn by seed): the next
        // repair finishes the job, and every intact file is there.
        let dev = Arc::new(MemDevice::from_bytes(faulty.crash_image(seed)));
        let r = fsck::check(dev.as_ref(), true).unwrap();
        assert!(
            r.is_clean(),
            "seed {seed}: crash at {at}/{writes}: {:?}",
            r.errors
        );
        let ro = ReadOnlyVolume::mount(dev.clone()).unwrap();
        let mut found = Vec::new();
        tree(&ro, "", &mut found);
        for w in files
            .iter()
            .filter(|w| w.own.iter().all(|s| !damaged.contains(s)))
        {
            let (_, at_path) = found
                .iter()
                .find(|(i, _)| *i == w.ino)
                .unwrap_or_else(|| panic!("seed {seed}: {} lost", w.path));
            let f = ro.open(at_path).unwrap();
            let mut b = vec![0u8; w.data.len()];
            f.read_at(&mut b, 0).unwrap();
            assert!(b == w.data, "seed {seed}: {at_path} reads wrong");
        }
    });
}
