//! The on-disk format does not drift: every record kind's encoding of a fixed sample equals
//! the golden bytes in `tests/fixtures/format/`, the golden bytes decode back into the
//! sample, and a fixed set of corrupted records (bytes changed, crc recomputed so the field
//! checks run) is accepted or refused exactly as recorded in `outcomes.txt`, with the same
//! error text.
//!
//! The fixtures were written by the hand-placed-offset encoders, before each layout became
//! one struct in `src/format/`.
//! After an intended format change, rewrite them with
//! `VMFS_BLESS_FORMAT=1 cargo test -p vinfra-vmfs --test format_layout` and review the diff.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::fmt::Debug;
use std::path::PathBuf;

use vinfra_vmfs::format::{
    decode_dir, decode_indirect, decode_journal_tail, encode_dir, encode_indirect,
    encode_journal_header, ClusterBlock, DirEntry, Geometry, HeartbeatSlot, Inode, Kind, LockMode,
    LockRecord, Superblock, Txn, SECTOR,
};

const BS: usize = 4096;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format")
}

fn bless() -> bool {
    std::env::var_os("VMFS_BLESS_FORMAT").is_some()
}

fn to_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2 + b.len() / 16);
    for line in b.chunks(32) {
        for x in line {
            s.push_str(&format!("{x:02x}"));
        }
        s.push('\n');
    }
    s
}

fn from_hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Compares `got` with the fixture `name`, or writes it under `VMFS_BLESS_FORMAT`.
fn golden(name: &str, got: &str) {
    let path = fixtures().join(name);
    if bless() {
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with VMFS_BLESS_FORMAT=1)", path.display()));
    if want != got {
        let line = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{name} differs from the fixture from line {} on:\n want {:?}\n  got {:?}",
            line + 1,
            want.lines().nth(line),
            got.lines().nth(line)
        );
    }
}

fn geo() -> Geometry {
    Geometry::layout(4096, 256, 1024, 16, 8, 64 << 20).unwrap()
}

fn superblock() -> Superblock {
    Superblock {
        uuid: core::array::from_fn(|i| 0xa0 + i as u8),
        geo: geo(),
        lease_ms: 8000,
        interval_ms: 1000,
        label: "lun0-golden".into(),
    }
}

fn heartbeat() -> HeartbeatSlot {
    HeartbeatSlot {
        live: true,
        host: 3,
        generation: 0x0102_0304,
        counter: 0x1122_3344_5566_7788,
        stamp_ms: 0x0a0b_0c0d_0e0f,
        pid: 4242,
        name: "esx3.example".into(),
    }
}

fn lock() -> LockRecord {
    let mut lk = LockRecord::free(200);
    lk.mode = Some(LockMode::SharedRead);
    lk.holders = (1 << 0) | (1 << 2) | (1 << 63);
    lk.gens[0] = 1;
    lk.gens[2] = 4;
    lk.gens[63] = 0xdead_beef;
    lk.seq = 3;
    lk.aux = 7;
    lk.applied_seq = 0x0102_0304_0506;
    lk.dirty = Some((5, 9, 0x77));
    lk
}

fn lock_exclusive() -> LockRecord {
    let mut lk = LockRecord::free(129);
    lk.mode = Some(LockMode::Exclusive);
    lk.holders = 1 << 1;
    lk.gens[1] = 2;
    lk.seq = 11;
    lk
}

fn inode() -> Inode {
    let mut ino = Inode::free(5);
    ino.kind = Kind::File;
    ino.generation = 3;
    ino.size = (1 << 41) + 17;
    ino.blocks = 0x1_0000_0001;
    ino.parent = 1;
    ino.flags = 1;
    ino.change = 0x55;
    ino.direct = core::array::from_fn(|i| 1000 + i as u32 * 3);
    ino.indirect = [9, 10, 0xffff_fffe];
    ino
}

fn pointers() -> Vec<u32> {
    (0..1020u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect()
}

fn cluster() -> ClusterBlock {
    let mut cl = ClusterBlock::empty(3, 1021);
    for i in [0, 5, 7, 8, 100, 1019, 1020] {
        cl.set(i, true);
    }
    cl
}

fn entries() -> Vec<DirEntry> {
    vec![
        DirEntry {
            ino: 2,
            kind: Kind::Dir,
            name: "a".into(),
        },
        DirEntry {
            ino: 3,
            kind: Kind::File,
            name: "bé-flat.vmdk".into(),
        },
        DirEntry {
            ino: 0xffff_0001,
            kind: Kind::File,
            name: "x".repeat(255),
        },
    ]
}

fn txn() -> Txn {
    Txn {
        host: 1,
        seq: 9,
        records: vec![
            (4096, vec![1, 2, 3]),
            (0, vec![]),
            (1 << 40, vec![0xee; 37]),
        ],
    }
}

/// Every record kind: its fixture name, sample bytes, and the decoder that reads them.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Where the record's crc lives (for resealing corrupted copies).
    seal: Seal,
    /// Decodes with the identity the sample was written for (`wrong`: one off).
    decode: fn(&[u8], bool) -> String,
}

#[derive(Clone, Copy)]
enum Seal {
    /// crc32 of 0..508 at 508.
    Sector,
    /// crc32 of the block with the 4-byte field at this offset zeroed.
    Block(usize),
    /// crc32 of the txn header 0..28 and the announced payload, at 28.
    Txn,
    /// A free lock: all zeros, no crc.
    None,
}

fn outcome<T: Debug>(r: vinfra_vmfs::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {:08x}", crc32fast::hash(format!("{v:?}").as_bytes())),
        // Long texts (a 255-byte name) are cut, with a checksum of the whole.
        Err(e) => match e.to_string() {
            t if t.len() > 100 => {
                let cut = (0..=60).rev().find(|&i| t.is_char_boundary(i)).unwrap_or(0);
                format!("err {}… {:08x}", &t[..cut], crc32fast::hash(t.as_bytes()))
            }
            t => format!("err {t}"),
        },
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "superblock",
            bytes: superblock().encode().to_vec(),
            seal: Seal::Sector,
            decode: |b, _| outcome(Superblock::decode(b)),
        },
        Case {
            name: "heartbeat_slot",
            bytes: heartbeat().encode().to_vec(),
            seal: Seal::Sector,
            decode: |b, w| outcome(HeartbeatSlot::decode(b, 3 + u32::from(w))),
        },
        Case {
            name: "lock_record",
            bytes: lock().encode().to_vec(),
            seal: Seal::Sector,
            decode: |b, w| outcome(LockRecord::decode(b, 200 + u64::from(w))),
        },
        Case {
            name: "lock_record_exclusive",
            bytes: lock_exclusive().encode().to_vec(),
            seal: Seal::Sector,
            decode: |b, w| outcome(LockRecord::decode(b, 129 - u64::from(w))),
        },
        Case {
            name: "lock_record_free",
            bytes: LockRecord::free(7).encode().to_vec(),
            seal: Seal::None,
            decode: |b, w| outcome(LockRecord::decode(b, 7 + u64::from(w))),
        },
        Case {
            name: "inode",
            bytes: inode().encode().to_vec(),
            seal: Seal::Sector,
            decode: |b, w| outcome(Inode::decode(b, 5 + u32::from(w))),
        },
        Case {
            name: "indirect_block",
            bytes: encode_indirect(BS, 5, 2, &pointers()),
            seal: Seal::Block(12),
            decode: |b, w| outcome(decode_indirect(b, BS, 5, 2 + u8::from(w))),
        },
        Case {
            name: "indirect_block_short",
            bytes: encode_indirect(BS, 6, 1, &[1, 2, 3]),
            seal: Seal::Block(12),
            decode: |b, w| outcome(decode_indirect(b, BS, 6 + u32::from(w), 1)),
        },
        Case {
            name: "cluster_block",
            bytes: cluster().encode(BS),
            seal: Seal::Block(16),
            decode: |b, w| outcome(ClusterBlock::decode(b, BS, 3, 1021 + u32::from(w))),
        },
        Case {
            name: "dir_block",
            bytes: encode_dir(BS, &entries()).unwrap(),
            seal: Seal::Block(12),
            decode: |b, w| outcome(decode_dir(b, if w { BS / 2 } else { BS })),
        },
        Case {
            name: "journal_header",
            bytes: encode_journal_header(4, 17, 0x1234_5678).to_vec(),
            seal: Seal::Sector,
            decode: |b, w| outcome(decode_journal_tail(b, 4 + u32::from(w))),
        },
        Case {
            name: "journal_txn",
            bytes: txn().encode(),
            seal: Seal::Txn,
            decode: |b, w| {
                outcome(Txn::decode(
                    b,
                    1 + u32::from(w),
                    if w { 64 } else { 1 << 20 },
                ))
            },
        },
    ]
}

#[test]
fn encoders_write_the_golden_bytes() {
    for c in cases() {
        golden(&format!("{}.hex", c.name), &to_hex(&c.bytes));
    }
    // A free lock and a never-used record are all zeros.
    assert_eq!(LockRecord::free(7).encode(), [0u8; SECTOR]);
}

fn read_fixture(name: &str) -> Vec<u8> {
    from_hex(&std::fs::read_to_string(fixtures().join(format!("{name}.hex"))).unwrap())
}

#[test]
fn golden_bytes_decode_into_the_samples() {
    if bless() {
        return;
    }
    assert_eq!(
        Superblock::decode(&read_fixture("superblock")).unwrap(),
        superblock()
    );
    assert_eq!(
        HeartbeatSlot::decode(&read_fixture("heartbeat_slot"), 3).unwrap(),
        heartbeat()
    );
    assert_eq!(
        LockRecord::decode(&read_fixture("lock_record"), 200).unwrap(),
        lock()
    );
    assert_eq!(
        LockRecord::decode(&read_fixture("lock_record_exclusive"), 129).unwrap(),
        lock_exclusive()
    );
    assert_eq!(
        LockRecord::decode(&read_fixture("lock_record_free"), 7).unwrap(),
        LockRecord::free(7)
    );
    assert_eq!(Inode::decode(&read_fixture("inode"), 5).unwrap(), inode());
    assert_eq!(
        decode_indirect(&read_fixture("indirect_block"), BS, 5, 2).unwrap(),
        pointers()
    );
    let mut short = vec![1, 2, 3];
    short.resize(1020, 0);
    assert_eq!(
        decode_indirect(&read_fixture("indirect_block_short"), BS, 6, 1).unwrap(),
        short
    );
    assert_eq!(
        ClusterBlock::decode(&read_fixture("cluster_block"), BS, 3, 1021).unwrap(),
        cluster()
    );
    assert_eq!(
        decode_dir(&read_fixture("dir_block"), BS).unwrap(),
        entries()
    );
    assert_eq!(
        decode_journal_tail(&read_fixture("journal_header"), 4).unwrap(),
        (17, 0x1234_5678)
    );
    assert_eq!(
        Txn::decode(&read_fixture("journal_txn"), 1, 1 << 20).unwrap(),
        txn()
    );
}

/// splitmix64: a fixed sequence that needs no crate (the fixture must never change).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn reseal(b: &mut [u8], seal: Seal) {
    match seal {
        Seal::Sector if b.len() >= SECTOR => {
            let c = crc32fast::hash(&b[..508]);
            b[508..512].copy_from_slice(&c.to_le_bytes());
        }
        Seal::Block(at) if b.len() >= at + 4 => {
            b[at..at + 4].fill(0);
            let c = crc32fast::hash(b);
            b[at..at + 4].copy_from_slice(&c.to_le_bytes());
        }
        Seal::Txn if b.len() >= 32 => {
            let n = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
            let mut h = crc32fast::Hasher::new();
            h.update(&b[..28]);
            h.update(&b[32..b.len().min(32usize.saturating_add(n))]);
            let c = h.finalize();
            b[28..32].copy_from_slice(&c.to_le_bytes());
        }
        _ => {}
    }
}

/// Corrupts each sample many ways (mostly in its header, mostly resealed so the field
/// checks run, sometimes resized or decoded for the wrong identity) and records what the
/// decoder answers.
#[test]
fn corrupted_records_get_the_recorded_answers() {
    let mut out = String::new();
    let mut rng = Mix(0x766d_6673);
    for c in cases() {
        let len = c.bytes.len();
        for i in 0..400 {
            let mut b = c.bytes.clone();
            let wrong = rng.below(10) == 0;
            let edits = 1 + rng.below(3);
            for _ in 0..edits {
                let hot = match c.name {
                    "dir_block" => 360,
                    "journal_txn" => len,
                    _ => 128,
                };
                let at = if rng.below(4) == 0 {
                    rng.below(len)
                } else {
                    rng.below(hot.min(len))
                };
                b[at] = match rng.below(4) {
                    0 => b[at] ^ (1 << rng.below(8)),
                    1 => 0,
                    2 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            match rng.below(20) {
                0 => {
                    let n = rng.below(len + 1);
                    b.truncate(n);
                }
                1 => b.extend(std::iter::repeat_n(0, 1 + rng.below(8))),
                _ => {}
            }
            if rng.below(10) != 0 {
                reseal(&mut b, c.seal);
            }
            out.push_str(&format!("{} {i} {}\n", c.name, (c.decode)(&b, wrong)));
        }
        for (what, b) in [
            ("empty", Vec::new()),
            ("zeros", vec![0; len]),
            ("zeros+1", vec![0; len + 1]),
            ("short", c.bytes[..len - 1].to_vec()),
            ("long", [c.bytes.as_slice(), &[0]].concat()),
            ("ff", vec![0xff; len]),
        ] {
            out.push_str(&format!("{} {what} {}\n", c.name, (c.decode)(&b, false)));
        }
    }
    golden("outcomes.txt", &out);
}

/// Decode cost of the hot-path records (block map and directories), for before/after
/// comparisons: `cargo test --release -p vinfra-vmfs --test format_layout -- --ignored
/// --nocapture`.
#[test]
#[ignore = "timing, run by hand in release"]
fn decode_speed() {
    use std::hint::black_box;
    use std::time::Instant;
    fn time(what: &str, n: u32, mut f: impl FnMut()) {
        for _ in 0..n / 10 {
            f();
        }
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "{what}: {:.0} ns",
            t.elapsed().as_nanos() as f64 / f64::from(n)
        );
    }
    let ind = encode_indirect(BS, 5, 2, &pointers());
    time("decode_indirect 4 KiB", 200_000, || {
        black_box(decode_indirect(black_box(&ind), BS, 5, 2).unwrap());
    });
    let big: Vec<u32> = (0..262_140).collect();
    let ind1m = encode_indirect(1 << 20, 5, 1, &big);
    time("decode_indirect 1 MiB", 500, || {
        black_box(decode_indirect(black_box(&ind1m), 1 << 20, 5, 1).unwrap());
    });
    time("encode_indirect 4 KiB", 200_000, || {
        black_box(encode_indirect(BS, 5, 2, black_box(&pointers())));
    });
    let names: Vec<DirEntry> = (0..100)
        .map(|i| DirEntry {
            ino: i + 2,
            kind: Kind::File,
            name: format!("vm{i}-flat.vmdk"),
        })
        .collect();
    let dir = encode_dir(BS, &names).unwrap();
    time("decode_dir 100 entries", 100_000, || {
        black_box(decode_dir(black_box(&dir), BS).unwrap());
    });
    time("encode_dir 100 entries", 100_000, || {
        black_box(encode_dir(BS, black_box(&names)).unwrap());
    });
    let ino = inode().encode();
    time("Inode::decode", 1_000_000, || {
        black_box(Inode::decode(black_box(&ino), 5).unwrap());
    });
    let lk = lock().encode();
    time("LockRecord::decode", 1_000_000, || {
        black_box(LockRecord::decode(black_box(&lk), 200).unwrap());
    });
    time("LockRecord::encode", 1_000_000, || {
        black_box(black_box(lock()).encode());
    });
}
