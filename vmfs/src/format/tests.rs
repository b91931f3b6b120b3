//! Round trips, corruption, the README byte tables against the layouts, and sealing.

use super::*;
use proptest::prelude::*;

use super::cluster::ClusterHeader;
use super::dir::{DirHeader, EntryHeader};
use super::heartbeat::HeartbeatLayout;
use super::indirect::IndirectHeader;
use super::inode::InodeLayout;
use super::journal::{JournalHeaderLayout, TxnHeader, TxnRecordHeader};
use super::lock::LockLayout;
use super::superblock::SuperblockLayout;

fn geo() -> Geometry {
    Geometry::layout(4096, 256, 1024, 16, 8, 64 << 20).unwrap()
}

#[test]
fn roundtrips() {
    let sb = Superblock {
        uuid: [7; 16],
        geo: geo(),
        lease_ms: 8000,
        interval_ms: 1000,
        label: "lun0".into(),
    };
    assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
    let hb = HeartbeatSlot {
        live: true,
        host: 3,
        generation: 2,
        counter: 99,
        stamp_ms: 5,
        pid: 42,
        name: "esx3".into(),
    };
    assert_eq!(HeartbeatSlot::decode(&hb.encode(), 3).unwrap(), hb);
    let mut lk = LockRecord::free(200);
    lk.mode = Some(LockMode::SharedRead);
    lk.holders = 0b101;
    lk.gens[0] = 1;
    lk.gens[2] = 4;
    lk.seq = 3;
    assert_eq!(LockRecord::decode(&lk.encode(), 200).unwrap(), lk);
    assert!(LockRecord::decode(&lk.encode(), 201).is_err());
    let mut ino = Inode::free(5);
    ino.kind = Kind::File;
    ino.size = 1 << 41;
    ino.direct[3] = 77;
    ino.indirect[2] = 9;
    assert_eq!(Inode::decode(&ino.encode(), 5).unwrap(), ino);
    let ents = vec![
        DirEntry {
            ino: 2,
            kind: Kind::Dir,
            name: "a".into(),
        },
        DirEntry {
            ino: 3,
            kind: Kind::File,
            name: "bé".into(),
        },
    ];
    assert_eq!(
        decode_dir(&encode_dir(4096, &ents).unwrap(), 4096).unwrap(),
        ents
    );
    let mut cl = ClusterBlock::empty(3, 1024);
    cl.set(5, true);
    assert_eq!(
        ClusterBlock::decode(&cl.encode(4096), 4096, 3, 1024).unwrap(),
        cl
    );
    let ptrs: Vec<u32> = (0..1020).collect();
    assert_eq!(
        decode_indirect(&encode_indirect(4096, 5, 2, &ptrs), 4096, 5, 2).unwrap(),
        ptrs
    );
    let t = Txn {
        host: 1,
        seq: 9,
        records: vec![(4096, vec![1, 2, 3]), (0, vec![])],
    };
    assert_eq!(Txn::decode(&t.encode(), 1, 1 << 20).unwrap(), t);
    assert_eq!(
        decode_journal_header(&encode_journal_header(4, 17, 0), 4).unwrap(),
        17
    );
}

#[test]
fn bit_flips_are_detected() {
    let sb = Superblock {
        uuid: [7; 16],
        geo: geo(),
        lease_ms: 8000,
        interval_ms: 1000,
        label: String::new(),
    }
    .encode();
    for bit in 0..(SECTOR * 8) {
        let mut b = sb;
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(Superblock::decode(&b).is_err(), "bit {bit}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..4200), n in 0u32..70) {
        let _ = Superblock::decode(&b);
        let _ = HeartbeatSlot::decode(&b, n);
        let _ = LockRecord::decode(&b, n as u64);
        let _ = Inode::decode(&b, n);
        let _ = decode_dir(&b, b.len());
        let _ = decode_indirect(&b, b.len(), n, 1);
        let _ = ClusterBlock::decode(&b, b.len(), n, 1024);
        let _ = decode_journal_header(&b, n);
        let _ = Txn::decode(&b, n, 4096);
    }

    #[test]
    fn mutated_records_never_panic(pos in 0usize..512, val in any::<u8>()) {
        let mut lk = LockRecord::free(9);
        lk.mode = Some(LockMode::Exclusive);
        lk.holders = 2;
        lk.seq = 1;
        let mut b = lk.encode();
        b[pos] = val;
        let _ = LockRecord::decode(&b, 9);
        let t = Txn { host: 1, seq: 2, records: vec![(1, vec![5; 40])] }.encode();
        let mut t2 = t.clone();
        let p = pos % t2.len();
        t2[p] = val;
        let _ = Txn::decode(&t2, 1, 4096);
    }
}

// ---------------------------------------------------------------------------------------
// The README's byte tables against the layouts

/// A layout's fields as (name, offset, size), in order; the list must name every field
/// (checked by [`fields_cover`]).
macro_rules! fields {
    ($t:ty: $($f:ident),* $(,)?) => {{
        let z = <$t as zerocopy::FromZeros>::new_zeroed();
        let v: Vec<(&'static str, usize, usize)> = vec![$((
            stringify!($f),
            core::mem::offset_of!($t, $f),
            core::mem::size_of_val(&z.$f),
        )),*];
        (v, size_of::<$t>())
    }};
}

type Fields = (Vec<(&'static str, usize, usize)>, usize);

/// The fields follow each other without gaps and fill the layout.
fn fields_cover(what: &str, (fields, size): &Fields) {
    let mut at = 0;
    for &(name, off, len) in fields {
        assert_eq!(off, at, "{what}: {name} at {off}, expected {at}");
        at += len;
    }
    assert_eq!(
        at, *size,
        "{what}: fields end at {at}, the layout is {size} bytes"
    );
}

/// Every layout, under the name of its README table, with the name of the variable part
/// that follows it (if any).
fn layouts() -> Vec<(&'static str, Fields, Option<&'static str>)> {
    vec![
        (
            "superblock",
            fields!(SuperblockLayout: magic, version, flags, uuid, block_size, max_hosts,
                total_blocks, max_inodes, bpc, n_clusters, max_clusters, journal_blocks,
                lease_ms, interval_ms, root_ino, offsets, label, _reserved, crc),
            None,
        ),
        (
            "heartbeat-slot",
            fields!(HeartbeatLayout: magic, version, state, _pad, host, generation, counter,
                stamp_ms, pid, name, _reserved, crc),
            None,
        ),
        (
            "lock-record",
            fields!(LockLayout: magic, version, mode, _pad, index, seq, holders, gens, aux,
                _pad2, applied_seq, dirty_host, dirty_gen, dirty_seq, _reserved, crc),
            None,
        ),
        (
            "journal-header",
            fields!(JournalHeaderLayout: magic, version, _pad, host, _pad2, applied_seq,
                tail, _reserved, crc),
            None,
        ),
        (
            "journal-txn",
            fields!(TxnHeader: magic, version, _pad, host, count, seq, payload_len, crc),
            Some("records"),
        ),
        (
            "journal-txn-record",
            fields!(TxnRecordHeader: offset, len),
            Some("bytes"),
        ),
        (
            "inode",
            fields!(InodeLayout: magic, version, kind, _pad, ino, generation, size, blocks,
                parent, flags, change, direct, indirect, name_len, name, _reserved, crc),
            None,
        ),
        (
            "indirect-block",
            fields!(IndirectHeader: magic, ino, level, _pad, crc),
            Some("ptrs"),
        ),
        (
            "resource-cluster",
            fields!(ClusterHeader: magic, version, _pad, index, free, crc, bpc, _reserved),
            Some("bitmap"),
        ),
        (
            "directory-block",
            fields!(DirHeader: magic, version, count, used, crc),
            Some("entries"),
        ),
        (
            "directory-entry",
            fields!(EntryHeader: ino, kind, name_len),
            Some("name"),
        ),
    ]
}

/// One README table row: offset, size (`None` when it is not a number: the variable
/// part), field name.
type Row = (usize, Option<usize>, String);

/// The rows of the table after each `<!-- layout: NAME -->` line.
fn readme_tables() -> Vec<(String, Vec<Row>)> {
    let mut out: Vec<(String, Vec<Row>)> = Vec::new();
    let mut lines = include_str!("../../README.md").lines().peekable();
    while let Some(l) = lines.next() {
        let Some(name) = l
            .trim()
            .strip_prefix("<!-- layout: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        while lines.peek().is_some_and(|l| !l.starts_with('|')) {
            lines.next();
        }
        let mut rows = Vec::new();
        // The header row and the separator.
        lines.next();
        lines.next();
        while let Some(l) = lines.next_if(|l| l.starts_with('|')) {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert!(cells.len() >= 3, "{name}: row {l:?}");
            let off = cells[0]
                .parse()
                .unwrap_or_else(|_| panic!("{name}: offset in {l:?}"));
            let size = match cells[1].split_once('×') {
                Some((a, b)) => a
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .zip(b.trim().parse::<usize>().ok())
                    .map(|(a, b)| a * b),
                None => cells[1].parse().ok(),
            };
            rows.push((off, size, cells[2].trim_matches('`').to_string()));
        }
        assert!(!rows.is_empty(), "{name}: no table after the marker");
        out.push((name.to_string(), rows));
    }
    out
}

#[test]
fn readme_byte_tables_match_the_layouts() {
    let tables = readme_tables();
    let layouts = layouts();
    for (name, fields, tail) in &layouts {
        fields_cover(name, fields);
        let (_, rows) = tables
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("README has no `<!-- layout: {name} -->` table"));
        // The README may leave out padding and reserved bytes.
        let want: Vec<Row> = fields
            .0
            .iter()
            .filter(|(f, _, _)| !f.starts_with('_'))
            .map(|&(f, off, len)| (off, Some(len), f.to_string()))
            .chain(tail.map(|t| (fields.1, None, t.to_string())))
            .collect();
        let got: Vec<Row> = rows
            .iter()
            .filter(|(_, _, f)| !f.starts_with('_'))
            .cloned()
            .collect();
        assert_eq!(got, want, "README table {name} (off, size, field)");
    }
    for (name, _) in &tables {
        assert!(
            layouts.iter().any(|(n, _, _)| n == name),
            "README table {name} names no layout"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Sealing

/// splitmix64, for reproducible random buffers.
fn mix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every kind, a buffer length for it, and its decoder called with the sealed identity.
/// A decoder under test, answering with the decoded value's debug text.
type Decoder = fn(&[u8]) -> Result<String>;

fn sealable() -> Vec<(RecordKind, usize, Decoder)> {
    fn s<T: std::fmt::Debug>(r: Result<T>) -> Result<String> {
        r.map(|v| format!("{v:?}"))
    }
    vec![
        (RecordKind::Superblock, SECTOR, |b| s(Superblock::decode(b))),
        (RecordKind::HeartbeatSlot { host: 3 }, SECTOR, |b| {
            s(HeartbeatSlot::decode(b, 3))
        }),
        (RecordKind::LockRecord { index: 200 }, SECTOR, |b| {
            s(LockRecord::decode(b, 200))
        }),
        (RecordKind::Inode { ino: 7 }, SECTOR, |b| {
            s(Inode::decode(b, 7))
        }),
        (RecordKind::IndirectBlock { ino: 7, level: 2 }, 4096, |b| {
            s(decode_indirect(b, b.len(), 7, 2))
        }),
        (RecordKind::ClusterBlock { index: 1, bpc: 256 }, 4096, |b| {
            s(ClusterBlock::decode(b, b.len(), 1, 256))
        }),
        (RecordKind::DirBlock, 4096, |b| s(decode_dir(b, b.len()))),
        (RecordKind::JournalHeader { host: 1 }, SECTOR, |b| {
            s(decode_journal_tail(b, 1))
        }),
        (RecordKind::JournalTxn { host: 1 }, 300, |b| {
            s(Txn::decode(b, 1, 1 << 20))
        }),
    ]
}

/// Sealed random bytes get past the envelope: a decoder either accepts them or refuses a
/// field, never the magic, version, identity or crc.
#[test]
fn sealed_random_bytes_reach_the_field_checks() {
    let mut rng = 7u64;
    for (kind, len, decode) in sealable() {
        let mut accepted = 0;
        for round in 0..300 {
            // Half the rounds are sparse (mostly zeros) so that some records decode.
            let dense = round % 2 == 0;
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    let x = mix(&mut rng);
                    if dense || x % 16 == 0 {
                        (x >> 8) as u8
                    } else {
                        0
                    }
                })
                .collect();
            seal(kind, &mut b).unwrap();
            match decode(&b) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    let t = e.to_string();
                    assert!(
                        !t.contains("crc")
                            && !t.contains("bad magic")
                            && !matches!(e, Error::Version { .. })
                            && !t.ends_with(": host")
                            && !t.contains(" at slot ")
                            && !t.contains("owner or level")
                            && !t.contains("index or size")
                            && !t.contains("host count or root inode")
                            && !t.contains("truncated"),
                        "{kind:?} round {round}: {t}"
                    );
                }
            }
        }
        println!("{kind:?}: {accepted} of 300 sealed buffers decode");
    }
}

/// A valid record is already sealed: sealing it changes no byte.
#[test]
fn sealing_a_valid_record_changes_nothing() {
    let sb = Superblock {
        uuid: [7; 16],
        geo: geo(),
        lease_ms: 8000,
        interval_ms: 1000,
        label: "x".into(),
    };
    let mut lk = LockRecord::free(200);
    lk.mode = Some(LockMode::Exclusive);
    lk.holders = 2;
    let hb = HeartbeatSlot {
        host: 3,
        live: true,
        ..HeartbeatSlot::default()
    };
    let mut cl = ClusterBlock::empty(1, 256);
    cl.set(3, true);
    let ents = [DirEntry {
        ino: 2,
        kind: Kind::Dir,
        name: "a".into(),
    }];
    let records: Vec<(RecordKind, Vec<u8>)> = vec![
        (RecordKind::Superblock, sb.encode().to_vec()),
        (RecordKind::HeartbeatSlot { host: 3 }, hb.encode().to_vec()),
        (RecordKind::LockRecord { index: 200 }, lk.encode().to_vec()),
        (
            RecordKind::Inode { ino: 7 },
            Inode::free(7).encode().to_vec(),
        ),
        (
            RecordKind::IndirectBlock { ino: 7, level: 2 },
            encode_indirect(4096, 7, 2, &[1, 2, 3]),
        ),
        (
            RecordKind::ClusterBlock { index: 1, bpc: 256 },
            cl.encode(4096),
        ),
        (RecordKind::DirBlock, encode_dir(4096, &ents).unwrap()),
        (
            RecordKind::JournalHeader { host: 1 },
            encode_journal_header(1, 5, 512).to_vec(),
        ),
        (
            RecordKind::JournalTxn { host: 1 },
            Txn {
                host: 1,
                seq: 2,
                records: vec![(8, vec![1; 9])],
            }
            .encode(),
        ),
    ];
    for (kind, bytes) in records {
        let mut b = bytes.clone();
        seal(kind, &mut b).unwrap();
        assert_eq!(b, bytes, "{kind:?}");
    }
}

#[test]
fn sealing_a_short_buffer_fails() {
    for (kind, _, _) in sealable() {
        let mut b = vec![0u8; kind.min_len() - 1];
        assert!(seal(kind, &mut b).is_err(), "{kind:?}");
        let mut b = vec![0u8; kind.min_len()];
        assert!(seal(kind, &mut b).is_ok(), "{kind:?}");
    }
}

/// A name or label with invalid UTF-8 decodes to text that encodes back into the field and
/// decodes the same (a fuzz finding: U+FFFD replacements grew the text past the field).
#[test]
fn string_fields_with_invalid_utf8_survive_a_second_round_trip() {
    let mut raw = HeartbeatSlot {
        live: true,
        host: 3,
        ..HeartbeatSlot::default()
    }
    .encode();
    let name_at = core::mem::offset_of!(HeartbeatLayout, name);
    for (i, b) in raw[name_at..name_at + 32].iter_mut().enumerate() {
        *b = if i % 3 == 0 { 0xff } else { b'a' };
    }
    seal(RecordKind::HeartbeatSlot { host: 3 }, &mut raw).unwrap();
    let once = HeartbeatSlot::decode(&raw, 3).unwrap();
    assert!(once.name.len() <= 32, "{:?}", once.name);
    assert!(once.name.starts_with('\u{fffd}'), "{:?}", once.name);
    let twice = HeartbeatSlot::decode(&once.encode(), 3).unwrap();
    assert_eq!(twice, once);
}

proptest::proptest! {
    /// `all_zero` agrees with a byte-by-byte scan, wherever the one non-zero byte lies.
    #[test]
    fn all_zero_agrees_with_a_byte_scan(len in 0usize..20_000, at in 0usize..20_000, v in 0u8..3) {
        let mut b = vec![0u8; len];
        if let Some(x) = b.get_mut(at) {
            *x = v;
        }
        proptest::prop_assert_eq!(super::all_zero(&b), b.iter().all(|&x| x == 0));
    }
}
