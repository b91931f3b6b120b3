//! The block-map cache of an open file: reads through one long-lived handle stay right
//! across that handle's own allocating writes, truncations and extensions, across the
//! direct, single and double indirect ranges; other handles see renamed, deleted and
//! re-created files correctly.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;

use proptest::prelude::*;
use vinfra_vmfs::{Error, LockMode, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};

const BS: u64 = 4096;
/// File blocks 0..12 are direct, 12..1032 single indirect, then double indirect.
const DOUBLE: u64 = (12 + 1020) * BS;

fn volume() -> (Arc<MemDevice>, Volume) {
    let dev = Arc::new(MemDevice::new(64 << 20));
    let mut o = MkfsOptions::default();
    o.max_inodes = 128;
    o.blocks_per_cluster = 1024;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let v = Volume::mount(
        dev.clone(),
        1,
        &MountOptions::default(),
        Arc::new(ManualClock::new(0)),
    )
    .unwrap();
    (dev, v)
}

fn read(f: &vinfra_vmfs::File, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0xeeu8; len];
    let n = f.read_at(&mut b, off).unwrap();
    b.truncate(n);
    b
}

fn want(model: &[u8], off: u64, len: usize) -> Vec<u8> {
    let s = (off as usize).min(model.len());
    let e = (off as usize + len).min(model.len());
    model[s..e].to_vec()
}

#[test]
fn a_cached_hole_or_block_reads_right_after_this_handles_changes() {
    let (dev, v) = volume();
    let f = v.create("/f").unwrap();
    // A sparse file: a hole everywhere, cached as such by the reads.
    f.set_len(DOUBLE + 64 * BS).unwrap();
    for off in [0, 20 * BS, DOUBLE + 3 * BS] {
        assert_eq!(read(&f, off, 8192), vec![0u8; 8192]);
    }
    // Allocating writes into cached holes, in each range of the map.
    for (i, off) in [0, 20 * BS, DOUBLE + 3 * BS].into_iter().enumerate() {
        f.write_at(&vec![i as u8 + 1; 8192], off + 100).unwrap();
        let mut w = vec![0u8; 100];
        w.extend(vec![i as u8 + 1; 8192]);
        w.extend(vec![0u8; 100]);
        assert_eq!(read(&f, off, w.len()), w);
    }
    // One read across direct, hole and indirect blocks.
    let all = read(&f, 0, (DOUBLE + 8 * BS) as usize);
    assert_eq!(all[100], 1);
    assert_eq!(all[(20 * BS) as usize + 100], 2);
    assert_eq!(all[(DOUBLE + 3 * BS) as usize + 100], 3);
    assert_eq!(all.iter().filter(|&&b| b != 0).count(), 3 * 8192);
    // Truncate below cached blocks, then extend: the old data must not come back.
    f.set_len(21 * BS).unwrap();
    assert_eq!(read(&f, DOUBLE, 4 * BS as usize), Vec::<u8>::new());
    f.set_len(DOUBLE + 64 * BS).unwrap();
    assert_eq!(read(&f, DOUBLE + 3 * BS, 8192 + 100), vec![0u8; 8192 + 100]);
    assert_eq!(read(&f, 20 * BS + 100, 4), vec![2u8; 4]);
    // Truncate inside a block: its tail reads as zeros after the extension.
    f.set_len(20 * BS + 102).unwrap();
    f.set_len(22 * BS).unwrap();
    assert_eq!(read(&f, 20 * BS + 100, 4), vec![2, 2, 0, 0]);
    // A write that reuses freed blocks for another part of the file.
    f.write_at(&vec![9u8; 4 * BS as usize], DOUBLE).unwrap();
    assert_eq!(
        read(&f, DOUBLE, 4 * BS as usize),
        vec![9u8; 4 * BS as usize]
    );
    assert_eq!(read(&f, 20 * BS + 100, 4), vec![2, 2, 0, 0]);
    drop(f);
    v.unmount().unwrap();
    assert!(vinfra_vmfs::fsck::check(dev.as_ref(), false)
        .unwrap()
        .is_clean());
}

#[test]
fn rename_delete_and_recreate_read_the_right_file() {
    let (_dev, v) = volume();
    let a = v.create("/a").unwrap();
    a.write_at(&vec![1u8; 3 * BS as usize], 0).unwrap();
    // An open file cannot be renamed or deleted under its handle.
    assert!(matches!(v.rename("/a", "/b"), Err(Error::Locked { .. })));
    assert!(matches!(v.delete("/a"), Err(Error::Locked { .. })));
    assert_eq!(read(&a, BS, 4), vec![1u8; 4]);
    drop(a);
    v.rename("/a", "/b").unwrap();
    let b = v.open("/b", LockMode::SharedRead).unwrap();
    assert_eq!(read(&b, 2 * BS, 4), vec![1u8; 4]);
    drop(b);
    v.delete("/b").unwrap();
    // The inode (and likely its blocks) are reused by a new file with other data.
    let c = v.create("/b").unwrap();
    c.write_at(&vec![2u8; 2 * BS as usize], BS).unwrap();
    drop(c);
    let c = v.open("/b", LockMode::SharedRead).unwrap();
    assert_eq!(
        read(&c, 0, 3 * BS as usize)[..BS as usize],
        vec![0u8; BS as usize]
    );
    assert_eq!(read(&c, BS, 2 * BS as usize), vec![2u8; 2 * BS as usize]);
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u32, u8),
    SetLen(u64),
    Read(u64, u32),
}

fn offset() -> impl Strategy<Value = u64> {
    // Mostly near the edges of the direct, single and double indirect ranges.
    prop_oneof![
        0u64..64 * BS,
        (1000 * BS)..(1100 * BS),
        (DOUBLE - 8 * BS)..(DOUBLE + 2200 * BS),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (offset(), 1u32..40_000, 1u8..255).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        1 => offset().prop_map(Op::SetLen),
        4 => (offset(), 1u32..300_000).prop_map(|(o, l)| Op::Read(o, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn one_long_lived_handle_reads_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let (dev, v) = volume();
        let f = v.create("/f").unwrap();
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                Op::Write(off, len, byte) => {
                    let data = vec![byte; len as usize];
                    f.write_at(&data, off).unwrap();
                    let end = off as usize + len as usize;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].copy_from_slice(&data);
                }
                Op::SetLen(len) => {
                    f.set_len(len).unwrap();
                    model.resize(len as usize, 0);
                }
                Op::Read(off, len) => {
                    prop_assert_eq!(read(&f, off, len as usize), want(&model, off, len as usize));
                }
            }
            prop_assert_eq!(f.len(), model.len() as u64);
        }
        prop_assert!(read(&f, 0, model.len()) == model);
        drop(f);
        let g = v.open("/f", LockMode::SharedRead).unwrap();
        prop_assert!(read(&g, 0, model.len()) == model);
        drop(g);
        v.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
        prop_assert!(r.is_clean(), "{:?}", r.errors);
    }
}
