//! The fuzz targets' seed corpus (fuzz/corpus/vcb_*) replayed as a unit test: each seed
//! goes through the decoders without a panic, decoded values re-encode to the same bytes,
//! and every target has seeds that decode (so the seeds reach past the envelope checks).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::path::Path;

use vinfra_vcb::format::{
    check_record, decode_index, decode_manifest, decode_pack_unencrypted, decode_table,
    encode_index, encode_manifest, encode_table,
};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds in {}", dir.display());
    v
}

/// The record's payload, or the bytes themselves.
fn unwrap_record(b: &[u8]) -> &[u8] {
    check_record(b).unwrap_or(b)
}

#[test]
fn manifest_seeds_decode_and_round_trip() {
    let mut ok = 0;
    for s in seeds("vcb_manifest") {
        if let Ok(m) = decode_manifest(unwrap_record(&s)) {
            assert_eq!(encode_manifest(&m), unwrap_record(&s));
            ok += 1;
        }
    }
    assert!(ok >= 3, "{ok} manifest seeds decode");
}

#[test]
fn index_seeds_decode_and_round_trip() {
    let mut ok = 0;
    for s in seeds("vcb_index") {
        if let Ok(p) = decode_index(unwrap_record(&s)) {
            assert_eq!(encode_index(&p), unwrap_record(&s));
            ok += 1;
        }
    }
    assert!(ok >= 3, "{ok} index seeds decode");
}

#[test]
fn pack_seeds_decode() {
    let (mut packs, mut tables) = (0, 0);
    for s in seeds("vcb_pack") {
        if let Ok(entries) = decode_pack_unencrypted(&s) {
            assert!(entries.iter().all(|e| e.offset >= 16));
            packs += 1;
        }
        if let Ok(t) = decode_table(&s) {
            assert_eq!(encode_table(&t), s);
            tables += 1;
        }
    }
    assert!(
        packs >= 2 && tables >= 1,
        "{packs} packs, {tables} tables decode"
    );
}

#[test]
fn partition_seeds_read() {
    use vinfra_vcb::partition::{read_table, TableKind};
    let mut kinds = Vec::new();
    for s in seeds("vcb_partition") {
        let t = read_table(s.len() as u64, |off, buf| {
            buf.copy_from_slice(&s[off as usize..off as usize + buf.len()]);
            Ok(())
        });
        if let Ok(t) = t {
            assert!(t
                .partitions
                .iter()
                .all(|p| p.offset + p.len <= s.len() as u64));
            kinds.push((t.kind, t.partitions.len(), t.from_backup));
        }
    }
    assert!(kinds.contains(&(TableKind::Mbr, 3, false)), "{kinds:?}");
    assert!(kinds.contains(&(TableKind::Gpt, 2, false)), "{kinds:?}");
    assert!(kinds.contains(&(TableKind::Gpt, 2, true)), "{kinds:?}");
}

#[test]
fn guestfs_seeds_open_and_read_their_files() {
    use std::sync::Arc;
    use vinfra_vcb::files::{EntryKind, FindQuery, FsKind, GuestFs};
    use vinfra_vcb::MemDisk;
    let mut kinds = Vec::new();
    for s in seeds("vcb_guestfs") {
        let mut disk = MemDisk::new(s.len().next_multiple_of(512));
        disk.write_at(&s, 0);
        // Damaged seeds (crashes fuzzing found) must fail cleanly: errors, no panic.
        let Ok(mut fs) = GuestFs::open_source(Arc::new(disk.snapshot()), "seed", None) else {
            continue;
        };
        let Ok(files) = fs.find("/", &FindQuery::new().kind(EntryKind::File)) else {
            continue;
        };
        let mut whole = true;
        for e in &files {
            let mut out = Vec::new();
            match fs.read_file(&e.path, &mut out) {
                Ok(n) => assert_eq!(n, e.size),
                Err(_) => whole = false,
            }
        }
        if whole && !files.is_empty() {
            kinds.push(fs.kind());
        }
        // Every truncation of a seed fails cleanly or reads, never panics.
        for cut in [512, 1024, 4096, s.len() / 2] {
            let mut d = MemDisk::new(cut);
            d.write_at(&s[..cut], 0);
            if let Ok(mut fs) = GuestFs::open_source(Arc::new(d.snapshot()), "cut", None) {
                let _ = fs.find("/", &FindQuery::new());
            }
        }
    }
    kinds.sort_by_key(|k| k.name());
    assert_eq!(
        kinds,
        [FsKind::Ext4, FsKind::Fat],
        "the good seeds read whole"
    );
}

#[test]
fn composite_seeds_decode_and_round_trip() {
    use vinfra_vcb::format::{decode_composite, encode_composite, Src, BLOCK};
    let (mut ok, mut bad) = (0, 0);
    for s in seeds("vcb_composite") {
        let Some((&n, body)) = s.split_first() else {
            continue;
        };
        let blocks = usize::from(n % 16) + 1;
        match decode_composite(body, (blocks * BLOCK) as u32) {
            Ok((c, lits)) => {
                let mut chunk = vec![0u8; blocks * BLOCK];
                let mut l = lits.chunks_exact(BLOCK);
                for (i, b) in c.blocks.iter().enumerate() {
                    if *b == Src::Literal {
                        chunk[i * BLOCK..(i + 1) * BLOCK].copy_from_slice(l.next().unwrap());
                    }
                }
                assert_eq!(encode_composite(&c, &chunk), body);
                ok += 1;
            }
            Err(_) => bad += 1,
        }
    }
    assert!(
        ok >= 3 && bad >= 1,
        "{ok} composite seeds decode, {bad} fail"
    );
}
