//! Hosts in separate processes sharing one NBD export (`nbdkit`, which has no
//! compare-and-write) through Disk Paxos: each process takes a file's exclusive lock in
//! turn and increments a counter in it; the count equals the increments (a second holder
//! would lose updates), one process is killed with SIGKILL while it holds the lock and a
//! survivor breaks it after the lease, and fsck is clean. Without nbdkit the test prints
//! `SKIP`; under `CI=true` it fails.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinfra_testkit::tool_or_skip;
use vinfra_vmfs::nbd::{NbdAddr, NbdDevice, NbdOptions};
use vinfra_vmfs::{
    paxos, BlockDevice, LockMode, MkfsOptions, MonotonicClock, MountOptions, Volume,
};

const CHILD_ENV: &str = "VMFS_PAXOS_CHILD";
const ROUNDS: u64 = 5;

/// A process this test started; killed (by its handle) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nbdkit(sock: &Path) -> Proc {
    let child = Command::new("nbdkit")
        .args(["-f", "--exit-with-parent", "-U"])
        .arg(sock)
        .args(["memory", "size=64M"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nbdkit did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// The export without the single-client promise: its own compare-and-write is refused,
/// so every lock decision here is Disk Paxos's.
fn export(sock: &Path) -> Arc<dyn BlockDevice> {
    let mut o = NbdOptions::default();
    o.timeout_ms = 10_000;
    Arc::new(NbdDevice::connect(NbdAddr::Unix(sock.to_path_buf()), o).unwrap())
}

fn mount(sock: &Path, host: u32) -> Volume {
    let clock = Arc::new(MonotonicClock::new());
    let dev = paxos::open_for_host(export(sock), host, clock.clone()).unwrap();
    Volume::mount(dev, host, &MountOptions::default(), clock).unwrap()
}

/// One increment of the counter under the file's exclusive lock.
fn increment(v: &Volume, host: u32, hold: Duration) {
    let f = v
        .open_wait("/counter", LockMode::Exclusive, 60_000)
        .unwrap();
    let mut b = [0u8; 8];
    f.read_at(&mut b, 0).unwrap();
    let next = (u64::from_le_bytes(b) + 1).to_le_bytes();
    f.write_at(&next, 0).unwrap();
    std::thread::sleep(hold);
    f.read_at(&mut b, 0).unwrap();
    assert_eq!(b, next, "host {host}: the counter changed under its lock");
    f.sync().unwrap();
    f.close().unwrap();
}

/// The body of a child process (run by the test below through its own binary).
#[test]
#[ignore]
fn child_host() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (host, sock, mode) = {
        let mut it = arg.splitn(3, ',');
        let host: u32 = it.next().unwrap().parse().unwrap();
        let mode = it.next().unwrap().to_string();
        (host, it.next().unwrap().to_string(), mode)
    };
    let v = mount(Path::new(&sock), host);
    let _hb = v.spawn_heartbeat();
    if mode == "hold" {
        // Take the lock and stop, holding it, until the parent kills this process.
        let _f = v
            .open_wait("/counter", LockMode::Exclusive, 60_000)
            .unwrap();
        println!("HOLDING");
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let t0 = Instant::now();
    for round in 0..ROUNDS {
        increment(&v, host, Duration::from_millis(3));
        if round == 0 {
            // The first lock of every survivor waits for host 4's lease and replay.
            println!("FIRST_MS {}", t0.elapsed().as_millis());
        }
    }
    v.unmount().unwrap();
}

fn child(host: u32, sock: &Path, mode: &str) -> Proc {
    let exe = std::env::current_exe().unwrap();
    let c = Command::new(exe)
        .args([
            "--exact",
            "child_host",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{host},{mode},{}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc(c)
}

#[test]
fn hosts_in_separate_processes_share_locks_over_nbd_with_disk_paxos() {
    if !tool_or_skip("nbdkit", &["--version"], "apt-get install nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("paxos.sock");
    let _server = nbdkit(&sock);
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    o.lease_ms = 3000;
    o.interval_ms = 300;
    Volume::mkfs_without_ats(export(&sock), &o, 5).unwrap();
    let v0 = mount(&sock, 0);
    v0.create("/counter")
        .unwrap()
        .write_at(&[0u8; 8], 0)
        .unwrap();
    v0.unmount().unwrap();

    // Host 4 takes the lock and is killed with SIGKILL while holding it.
    let mut holder = child(4, &sock, "hold");
    {
        use std::io::{BufRead, BufReader};
        let out = holder.0.stdout.take().unwrap();
        let line = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("HOLDING"));
        assert!(line.is_some(), "host 4 never took the lock");
    }
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let killed = Instant::now();

    let kids: Vec<Proc> = (1..4).map(|h| child(h, &sock, "count")).collect();
    let mut first_ms = u64::MAX;
    for mut k in kids {
        let st = k.0.wait().unwrap();
        assert!(st.success(), "a host process failed: {st}");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut k.0.stdout.take().unwrap(), &mut out).unwrap();
        for l in out.lines() {
            // The harness prints it after "test child_host ... " on the same line.
            if let Some((_, ms)) = l.split_once("FIRST_MS ") {
                let digits: String = ms.chars().take_while(char::is_ascii_digit).collect();
                first_ms = first_ms.min(digits.parse().unwrap());
            }
        }
    }
    // Failover: the first survivor's lock came a lease (3 s) plus replay after it
    // started; the goal is lease + 1 s (generous here for a loaded machine).
    eprintln!("failover over NBD with Disk Paxos: {first_ms} ms (lease 3000 ms)");
    assert!(
        (2900..6000).contains(&first_ms),
        "failover took {first_ms} ms"
    );
    // Host 4's lock was broken only after its lease (3 s of silence seen by a survivor).
    assert!(killed.elapsed() >= Duration::from_millis(3000));

    let v = mount(&sock, 0);
    v.recover_host(4, 10_000).ok();
    let f = v.open("/counter", LockMode::SharedRead).unwrap();
    let mut b = [0u8; 8];
    f.read_at(&mut b, 0).unwrap();
    assert_eq!(
        u64::from_le_bytes(b),
        3 * ROUNDS,
        "lost updates: two holders at once"
    );
    drop(f);
    v.unmount().unwrap();
    let dev = paxos::open_for_host(export(&sock), 0, Arc::new(MonotonicClock::new())).unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}
