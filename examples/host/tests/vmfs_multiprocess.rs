//! Real processes: 8 and 64 hosts share one image file; kill -9 of a host mid-write.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use vinfra_testkit::{for_each_seed, run, seeds, spawn, Running};
use vinfra_vmfs::{BlockDevice, FileDevice, LockMode, MonotonicClock, MountOptions, Volume};

mod vmfs_stress;
use vmfs_stress::{check_acknowledged_writes, lock_counters, summary};

const BIN: &str = env!("CARGO_BIN_EXE_vmfs");

fn mkfs(img: &Path, lease_ms: u32, interval_ms: u32) {
    let done = run(
        Command::new(BIN)
            .args([
                "mkfs",
                img.to_str().unwrap(),
                "--size",
                "96M",
                "--max-inodes",
                "2048",
            ])
            .args(["--blocks-per-cluster", "256"])
            .args([
                "--lease-ms",
                &lease_ms.to_string(),
                "--interval-ms",
                &interval_ms.to_string(),
            ]),
        Duration::from_secs(60),
    );
    assert!(done.success(), "vmfs mkfs: {done}");
}

fn mount(img: &Path, host: u32) -> Volume {
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(img, false).unwrap());
    Volume::mount(
        dev,
        host,
        &MountOptions::default(),
        Arc::new(MonotonicClock::new()),
    )
    .unwrap()
}

fn prepare(img: &Path, locks: u32) {
    let v = mount(img, 63);
    vmfs_stress::prepare(&v, locks);
    v.unmount().unwrap();
}

fn fsck_clean(img: &Path) {
    let dev = FileDevice::open(img, false).unwrap();
    let r = vinfra_vmfs::fsck::check(&dev, false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}

/// `hosts` `vmfs stress` processes (hosts 0..hosts) on one image for `secs` seconds:
/// every lock acquisition increments a counter under the lock, so the final counters
/// equal the acquisitions unless two hosts held a lock at once; fsck is clean.
fn host_processes_share_one_volume(hosts: u32, secs: u64, lease_ms: u32, interval_ms: u32) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    mkfs(&img, lease_ms, interval_ms);
    let locks = 3u32;
    prepare(&img, locks);
    let children: Vec<Running> = (0..hosts)
        .map(|h| {
            spawn(
                Command::new(BIN)
                    .args(["stress", img.to_str().unwrap(), "--host", &h.to_string()])
                    .args(["--secs", &secs.to_string(), "--seed", "11"])
                    .args(["--locks", &locks.to_string()]),
            )
        })
        .collect();
    let mut sums = vec![0u64; locks as usize];
    let mut total_ops = 0;
    for c in children {
        let limit = Duration::from_secs(120);
        let out = c.wait(limit);
        assert!(
            !out.timed_out,
            "host process ran past {limit:?}: {}",
            out.stderr
        );
        assert!(out.success(), "host failed: {out}");
        let s = summary(&out.stdout);
        total_ops += s.ops;
        for (k, a) in s.acquired.iter().enumerate() {
            sums[k] += a;
        }
    }
    println!("{hosts} hosts: {total_ops} operations, lock acquisitions {sums:?}");
    assert!(total_ops > u64::from(hosts), "the hosts did work");
    // Every acquisition incremented the counter under the lock: a lost update would mean
    // two holders at once.
    let v = mount(&img, 63);
    assert_eq!(lock_counters(&v, locks), sums, "lost updates: two holders");
    assert!(v.list("/shared").unwrap().is_empty());
    v.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn eight_host_processes_share_one_volume() {
    host_processes_share_one_volume(8, 5, 6000, 300);
}

/// Every heartbeat slot in use: 64 processes on two cores, a short run, a lease long
/// enough that a host starved of CPU for a while does not fence itself.
#[test]
fn sixty_four_host_processes_share_one_volume() {
    host_processes_share_one_volume(64, 3, 30_000, 1000);
}

#[test]
fn kill_9_of_a_host_then_failover_replays_and_keeps_acknowledged_writes() {
    for_each_seed(seeds([1, 2, 3]), |seed| {
        println!("seed {seed}");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("lun.img");
        mkfs(&img, 2000, 200);
        prepare(&img, 1);
        let host = 5u32;
        let mut child = Command::new(BIN)
            .args(["stress", img.to_str().unwrap(), "--host", &host.to_string()])
            .args([
                "--mode",
                "writer",
                "--secs",
                "60",
                "--seed",
                &seed.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "LOCKED");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let run_for = Duration::from_millis(rng.random_range(200..1500));
        let t = Instant::now();
        let mut acked: Option<u64> = None;
        while t.elapsed() < run_for {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(10)) {
                if let Some(i) = l.strip_prefix("ACK ") {
                    acked = Some(i.parse().unwrap());
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(l) = rx.try_recv() {
            if let Some(i) = l.strip_prefix("ACK ") {
                acked = Some(i.parse().unwrap());
            }
        }
        // Another host: the lock is refused while the lease runs, then recovered.
        let v = mount(&img, 9);
        let _hb = v.spawn_heartbeat();
        let e = v.open("/locks/L0", LockMode::Exclusive).unwrap_err();
        assert!(e.to_string().contains("locked by host 5"), "{e}");
        let st = v.recover_host(host, 20_000).unwrap();
        println!("failover: {st:?}");
        assert!(st.lease_wait_ms >= 1500, "{st:?}");
        v.open("/locks/L0", LockMode::Exclusive).unwrap();
        // Every acknowledged write reads back; only the one in flight may be partial.
        let n = acked.map_or(0, |a| a + 1);
        check_acknowledged_writes(&v, host, seed, n);
        println!("seed {seed}: {n} acknowledged writes verified");
        drop(_hb);
        v.unmount().unwrap();
        fsck_clean(&img);
    });
}
