//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test binary uses a part; test code"
)]

use std::path::Path;

use vinfra_vcb::{Id, InitOptions, KdfParams, LocalDir, Repository};

pub const PW: &[u8] = b"correct horse";

pub fn init(dir: &Path) -> Repository {
    let o = InitOptions::default().kdf(KdfParams::INSECURE_FAST);
    Repository::init(LocalDir::create(dir).unwrap(), PW, &o).unwrap()
}

pub fn open(dir: &Path) -> Repository {
    Repository::open(LocalDir::open(dir).unwrap(), PW).unwrap()
}

pub fn restore(repo: &Repository, id: &Id, disk: &str) -> vinfra_vcb::Result<Vec<u8>> {
    let mut out = Vec::new();
    repo.restore_disk(id, disk, &mut out)?;
    Ok(out)
}

/// The files under `dir` of the repository at `root`, as names relative to `root`.
pub fn files(root: &Path, dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    r.fill_bytes(&mut v);
    v
}
