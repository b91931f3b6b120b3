//! What the two multi-process vmfs tests (`vmfs_multiprocess` on an image file,
//! `vmfs_nbd_multiprocess` over NBD) check the same way: the `vmfs stress` hosts' summary
//! lines, the lock counters that reveal two holders, and the writes a killed or cut-off
//! writer acknowledged. Each test mounts the volume its own way and hands it in.
#![allow(dead_code, reason = "each test binary uses part of it")]

use rand::{Rng, SeedableRng};
use vinfra_vmfs::{LockMode, Volume};

/// `/shared` and one zeroed counter file `/locks/L<j>` per lock.
pub fn prepare(v: &Volume, locks: u32) {
    v.mkdir("/shared").unwrap();
    v.mkdir("/locks").unwrap();
    for j in 0..locks {
        let f = v.create(&format!("/locks/L{j}")).unwrap();
        f.write_at(&[0u8; 16], 0).unwrap();
    }
}

/// The counter each lock's file holds: one increment per acquisition.
pub fn lock_counters(v: &Volume, locks: u32) -> Vec<u64> {
    (0..locks)
        .map(|j| {
            let f = v
                .open(&format!("/locks/L{j}"), LockMode::SharedRead)
                .unwrap();
            let mut rec = [0u8; 16];
            f.read_at(&mut rec, 0).unwrap();
            u64::from_le_bytes(rec[8..].try_into().unwrap())
        })
        .collect()
}

/// The last line a `vmfs stress` host prints (JSON).
pub struct Summary {
    pub ops: u64,
    pub acquired: Vec<u64>,
    pub first_unix_ms: Vec<u64>,
}

pub fn summary(stdout: &str) -> Summary {
    let line = stdout.lines().last().unwrap();
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    let list = |k: &str| -> Vec<u64> {
        j[k].as_array()
            .map(|a| a.iter().map(|a| a.as_u64().unwrap()).collect())
            .unwrap_or_default()
    };
    Summary {
        ops: j["ops"].as_u64().unwrap(),
        acquired: list("acquired"),
        first_unix_ms: list("first_unix_ms"),
    }
}

/// Same as the CLI's writer (src/bin/vmfs/main.rs).
fn pattern(seed: u64, i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((seed * 31 + i * 7 + j as u64) % 251) as u8)
        .collect()
}

fn writer_op(seed: u64, i: u64) -> (u64, usize) {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (i << 20));
    (
        r.random_range(0..(8u64 << 20)),
        r.random_range(1..65_536usize),
    )
}

/// The writer `host` (`vmfs stress --mode writer --seed SEED`) acknowledged `acked`
/// writes (0..acked): each reads back from `/h<host>/data`; only the one in flight may be
/// partial.
pub fn check_acknowledged_writes(v: &Volume, host: u32, seed: u64, acked: u64) {
    let f = v
        .open(&format!("/h{host}/data"), LockMode::SharedRead)
        .unwrap();
    let mut model = vec![0u8; (8 << 20) + 65_536];
    let mut end = 0u64;
    for i in 0..acked {
        let (off, len) = writer_op(seed, i);
        model[off as usize..off as usize + len].copy_from_slice(&pattern(seed, i, len));
        end = end.max(off + len as u64);
    }
    assert!(f.len() >= end, "size {} < acknowledged end {end}", f.len());
    let (fo, fl) = writer_op(seed, acked);
    let inflight = pattern(seed, acked, fl);
    let mut back = vec![0u8; f.len() as usize];
    f.read_at(&mut back, 0).unwrap();
    for (k, &b) in back.iter().enumerate() {
        let k64 = k as u64;
        let ok = b == model[k]
            || (k64 >= fo && k64 < fo + fl as u64 && b == inflight[(k64 - fo) as usize]);
        assert!(
            ok,
            "seed {seed}: byte {k} is {b}, acknowledged {}",
            model[k]
        );
    }
}
