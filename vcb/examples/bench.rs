//! Quick figures: full backup, incremental after a 5 % change, restore and verify of a
//! mostly-zero disk image in memory.
//!
//! `cargo run --release -p vinfra-vcb --example bench -- [MiB (default 256; 32 in a
//! debug build, as the test script runs every example)]`
//!
//! `... --example bench -- --image PATH`: the same steps on a raw disk image read into
//! memory (e.g. an ext4 image built with `mke2fs -d` from /usr/lib: real binaries,
//! which compress unlike the synthetic data); its non-zero grains count as allocated.
//! Environment: `VCB_ZSTD_LEVEL` (default: the repository default), `VCB_ENCRYPTION`
//! (`aes`, the default, `xchacha` or `none`), to compare settings; `VCB_BENCH_FULL_ONLY`
//! stops after the full backup (for a profiler); `VCB_BENCH_COLD` drops the repository
//! from the page cache before each verify (python3), so verify reads from the disk.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "example code"
)]

use std::time::Instant;

use rand::{Rng, RngCore, SeedableRng};
use vinfra_vcb::{
    BackupOptions, Encryption, InitOptions, KdfParams, LocalDir, MemDisk, Repository, VerifyLevel,
};

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() {
    let default_mib = if cfg!(debug_assertions) { 32 } else { 256 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut disk, used) = match args.as_slice() {
        [flag, path] if flag == "--image" => {
            let disk = MemDisk::from_vec(std::fs::read(path).unwrap());
            let used = disk
                .as_bytes()
                .chunks(65536)
                .filter(|c| c.iter().any(|&b| b != 0))
                .count() as u64
                * 65536;
            (disk, used)
        }
        _ => {
            let mib = args.first().map_or(default_mib, |a| a.parse().unwrap());
            synthetic(mib << 20, &mut rng)
        }
    };
    let cap = disk.as_bytes().len();
    let mib = cap >> 20;
    let grains = cap / 65536;
    let dir = tempfile::tempdir().unwrap();
    let mut init = InitOptions::default().kdf(KdfParams::INSECURE_FAST);
    if let Ok(l) = std::env::var("VCB_ZSTD_LEVEL") {
        init = init.zstd_level(l.parse().unwrap());
    }
    match std::env::var("VCB_ENCRYPTION").as_deref() {
        Ok("xchacha") => init = init.encryption(Encryption::XChaCha20Poly1305),
        Ok("none") => init = init.encryption(Encryption::None),
        _ => {}
    }
    let repo = Repository::init(LocalDir::create(dir.path()).unwrap(), b"pw", &init).unwrap();
    println!(
        "image: {mib} MiB, {} MiB of data, rayon threads: {}, zstd level {}, {:?}",
        used >> 20,
        rayon::current_num_threads(),
        init.zstd_level,
        init.encryption
    );

    let frozen = disk.snapshot();
    let (full, s, cs) = timed(|| {
        repo.backup(&BackupOptions::new("vm", 1), &[("d", &frozen)])
            .unwrap()
    });
    let st = full.manifest.disks[0].stats;
    println!(
        "full backup: {s:.2} s ({cs:.2} CPU s), {:.0} MiB/s of image, {:.0} MiB/s of data read, {} MiB stored",
        mb_s(cap as u64, s),
        mb_s(st.bytes_read, s),
        st.bytes_new >> 20
    );

    if std::env::var_os("VCB_BENCH_FULL_ONLY").is_some() {
        return;
    }
    // 5 % of the grains rewritten: half with new random data, half with their old bytes.
    let n = grains / 20;
    for i in 0..n {
        let g = rng.random_range(0..grains);
        if i % 2 == 0 {
            let mut buf = vec![0u8; 4096];
            rng.fill_bytes(&mut buf);
            disk.write_at(&buf, g * 65536 + 8192);
        } else {
            let old = disk.as_bytes()[g * 65536..g * 65536 + 4096].to_vec();
            disk.write_at(&old, g * 65536);
        }
    }
    let frozen = disk.snapshot();
    let (inc, si, csi) = timed(|| {
        repo.backup(&BackupOptions::new("vm", 2), &[("d", &frozen)])
            .unwrap()
    });
    let st = inc.manifest.disks[0].stats;
    println!(
        "incremental (5 % of grains written): {si:.3} s ({csi:.2} CPU s; {:.1} % of the full), {} MiB read, {} KiB stored",
        100.0 * si / s,
        st.bytes_read >> 20,
        st.bytes_new >> 10
    );

    let out = dir.path().join("restored.img");
    let (_, sr, csr) = timed(|| repo.restore_disk_to_file(&inc.id, "d", &out).unwrap());
    println!(
        "restore to a file, verified: {sr:.2} s ({csr:.2} CPU s), {:.0} MiB/s of image",
        mb_s(cap as u64, sr)
    );
    assert!(std::fs::read(&out).unwrap() == disk.as_bytes());

    for level in [VerifyLevel::ReadData, VerifyLevel::ReadPacks] {
        if std::env::var_os("VCB_BENCH_COLD").is_some() {
            evict(dir.path());
        }
        let (r, sv, csv) = timed(|| repo.verify(level).unwrap());
        assert!(r.is_ok());
        println!(
            "verify ({level:?}): {sv:.2} s ({csv:.2} CPU s), {:.0} MiB/s of packs",
            mb_s(r.bytes_read, sv)
        );
    }
}

/// A quarter of the grains hold data: half random (incompressible), half text-like.
fn synthetic(cap: usize, rng: &mut rand_chacha::ChaCha8Rng) -> (MemDisk, u64) {
    let mut disk = MemDisk::new(cap);
    let grains = cap / 65536;
    let words: Vec<&[u8]> = vec![
        b"vinfra ", b"backup ", b"grain ", b"chunk ", b"the ", b"of ", b"disk\n",
    ];
    let mut used = 0u64;
    for g in 0..grains {
        if rng.random_range(0..4) != 0 {
            continue;
        }
        let mut buf = vec![0u8; 65536];
        if rng.random_bool(0.5) {
            rng.fill_bytes(&mut buf);
        } else {
            let mut pos = 0;
            while pos < buf.len() {
                let w = words[rng.random_range(0..words.len())];
                let n = w.len().min(buf.len() - pos);
                buf[pos..pos + n].copy_from_slice(&w[..n]);
                pos += n;
            }
        }
        disk.write_at(&buf, g * 65536);
        used += 65536;
    }
    (disk, used)
}

/// Drops the repository's files from the page cache (`posix_fadvise(DONTNEED)`, through
/// python3 to keep this example free of `unsafe`), so verify reads them from the disk.
fn evict(dir: &std::path::Path) {
    let script = "import os,sys\nfor r,_,fs in os.walk(sys.argv[1]):\n for f in fs:\n  fd=os.open(os.path.join(r,f),os.O_RDONLY); os.fdatasync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd)";
    let ok = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "evicting the page cache failed");
}

/// Runs `f`: its result, wall seconds and CPU seconds (user + system, all threads, from
/// /proc: comparable on a loaded machine, where wall time is not).
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let cpu = || {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        (f[0] + f[1]) as f64 / 100.0
    };
    // Minor page faults (fresh memory touched): with VCB_BENCH_FAULTS, printed per step.
    let faults = || {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.split_whitespace()
            .nth(7)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let (t, c, pf) = (Instant::now(), cpu(), faults());
    let r = f();
    if std::env::var_os("VCB_BENCH_FAULTS").is_some() {
        println!("  ({} minor page faults)", faults() - pf);
    }
    (r, t.elapsed().as_secs_f64(), cpu() - c)
}
