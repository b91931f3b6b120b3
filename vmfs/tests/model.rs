//! proptest: random operation sequences on one host against an in-memory model.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::map_entry
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use vinfra_vmfs::{Error, ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Write(u8, u32, u16, u8),
    Truncate(u8, u32),
    Delete(u8),
    Rename(u8, u8),
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Create),
        (0u8..6, 0u32..200_000, 1u16..20_000, any::<u8>())
            .prop_map(|(a, b, c, d)| Op::Write(a, b, c, d)),
        (0u8..6, 0u32..200_000).prop_map(|(a, b)| Op::Truncate(a, b)),
        (0u8..6).prop_map(Op::Delete),
        (0u8..6, 0u8..6).prop_map(|(a, b)| Op::Rename(a, b)),
        Just(Op::Remount),
    ]
}

fn name(i: u8) -> String {
    if i % 2 == 0 {
        format!("/f{i}")
    } else {
        format!("/d/f{i}")
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn one_host_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dev = Arc::new(MemDevice::new(24 << 20));
        let mut o = MkfsOptions::default();
        o.max_inodes = 128;
        o.blocks_per_cluster = 128;
        o.journal_blocks = 8;
        Volume::mkfs(dev.as_ref(), &o).unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let mut v = Volume::mount(dev.clone(), 4, &MountOptions::default(), clock.clone()).unwrap();
        v.mkdir("/d").unwrap();
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Create(i) => {
                    let r = v.create(&name(i));
                    if model.contains_key(&name(i)) {
                        prop_assert!(matches!(r, Err(Error::Exists(_))));
                    } else {
                        r.unwrap();
                        model.insert(name(i), Vec::new());
                    }
                }
                Op::Write(i, off, len, byte) => {
                    if let Some(m) = model.get_mut(&name(i)) {
                        let f = v.open(&name(i), vinfra_vmfs::LockMode::Exclusive).unwrap();
                        let data = vec![byte; len as usize];
                        f.write_at(&data, off as u64).unwrap();
                        let end = off as usize + len as usize;
                        if m.len() < end {
                            m.resize(end, 0);
                        }
                        m[off as usize..end].copy_from_slice(&data);
                    }
                }
                Op::Truncate(i, len) => {
                    if let Some(m) = model.get_mut(&name(i)) {
                        let f = v.open(&name(i), vinfra_vmfs::LockMode::Exclusive).unwrap();
                        f.set_len(len as u64).unwrap();
                        m.resize(len as usize, 0);
                    }
                }
                Op::Delete(i) => {
                    let r = v.delete(&name(i));
                    if model.remove(&name(i)).is_some() {
                        r.unwrap();
                    } else {
                        prop_assert!(matches!(r, Err(Error::NotFound(_))));
                    }
                }
                Op::Rename(i, j) => {
                    let r = v.rename(&name(i), &name(j));
                    if !model.contains_key(&name(i)) {
                        prop_assert!(r.is_err());
                    } else if model.contains_key(&name(j)) {
                        prop_assert!(r.is_err());
                    } else {
                        r.unwrap();
                        let d = model.remove(&name(i)).unwrap();
                        model.insert(name(j), d);
                    }
                }
                Op::Remount => {
                    v.clone().unmount().unwrap();
                    v = Volume::mount(dev.clone(), 4, &MountOptions::default(), clock.clone()).unwrap();
                }
            }
            for (n, m) in &model {
                prop_assert_eq!(v.stat(n).unwrap().size, m.len() as u64);
            }
        }
        for (n, m) in &model {
            let f = v.open(n, vinfra_vmfs::LockMode::SharedRead).unwrap();
            let mut b = vec![0u8; m.len()];
            prop_assert_eq!(f.read_at(&mut b, 0).unwrap(), m.len());
            prop_assert!(&b == m, "content of {}", n);
        }
        let mut listed: Vec<String> = v.list("/").unwrap().into_iter().filter(|e| e.name != "d").map(|e| format!("/{}", e.name)).collect();
        listed.extend(v.list("/d").unwrap().into_iter().map(|e| format!("/d/{}", e.name)));
        listed.sort();
        let want: Vec<String> = model.keys().cloned().collect();
        prop_assert_eq!(listed, want);
        v.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
        prop_assert!(r.is_clean(), "{:?}", r.errors);
    }
}
