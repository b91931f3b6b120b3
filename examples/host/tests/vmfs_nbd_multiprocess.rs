//! Real processes sharing one volume over NBD (no compare-and-write: Disk Paxos locks),
//! served by a real `nbdkit` (file plugin) on one image: many `vmfs stress` hosts at once
//! over a Unix socket, and hosts in network namespaces reaching the server over a bridge,
//! one of them cut off mid-run. Without nbdkit (or, for the partition, root and `ip`) the
//! tests print `SKIP`; under `CI=true` they fail.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vinfra_testkit::{run, spawn, tool_or_skip, NetLab, Running};
use vinfra_vmfs::{paxos, BlockDevice, FileDevice, MonotonicClock, MountOptions, Volume};

mod vmfs_stress;
use vmfs_stress::{check_acknowledged_writes, summary};

const BIN: &str = env!("CARGO_BIN_EXE_vmfs");
/// Disk Paxos areas for every heartbeat slot.
const PAXOS_HOSTS: u32 = 64;
/// The image: Disk Paxos areas for 64 hosts and 2048 inodes take ~250 MB of it.
const IMAGE_BYTES: u64 = 448 << 20;

/// A process this test started; killed (by its handle) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nbdkit` serving `img` (file plugin: every write goes to the image, so this test can
/// also read it directly), started through `cmd` (plain, or in a namespace).
fn nbdkit(mut cmd: Command, img: &Path, listen: &[&str]) -> Proc {
    let child = cmd
        .args(["-f", "--exit-with-parent"])
        .args(listen)
        .arg("file")
        .arg(img)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc(child)
}

/// `vmfs mkfs --disk-paxos` through the server at `addr` (run by `cmd`), proving it
/// answers; retried while it starts.
fn mkfs_over_nbd(mut cmd: impl FnMut() -> Command, addr: &str, lease_ms: u32, interval_ms: u32) {
    let t = Instant::now();
    loop {
        let done = run(
            cmd()
                .args(["mkfs", addr, "--disk-paxos", &PAXOS_HOSTS.to_string()])
                .args(["--max-inodes", "2048", "--blocks-per-cluster", "256"])
                .args(["--lease-ms", &lease_ms.to_string()])
                .args(["--interval-ms", &interval_ms.to_string()]),
            Duration::from_secs(60),
        );
        if done.success() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10) && done.stderr.contains("connect"),
            "vmfs mkfs {addr}: {done}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The image as host `host` sees it, read directly (the server writes through to it).
fn mount_image(img: &Path, host: u32) -> Volume {
    let clock = Arc::new(MonotonicClock::new());
    let file: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(img, false).unwrap());
    let dev = paxos::open_for_host(file, host, clock.clone()).unwrap();
    Volume::mount(dev, host, &MountOptions::default(), clock).unwrap()
}

fn prepare(img: &Path, locks: u32) {
    let v = mount_image(img, 63);
    vmfs_stress::prepare(&v, locks);
    v.unmount().unwrap();
}

fn fsck_clean(img: &Path) {
    let file: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(img, false).unwrap());
    let dev = paxos::open_for_host(file, 0, Arc::new(MonotonicClock::new())).unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}

/// The counter each lock's file holds: one increment per acquisition.
fn lock_counters(img: &Path, locks: u32) -> Vec<u64> {
    let v = mount_image(img, 63);
    let out = vmfs_stress::lock_counters(&v, locks);
    v.unmount().unwrap();
    out
}

/// `hosts` `vmfs stress` processes (hosts 0..hosts), each with its own connection to one
/// nbdkit, for `secs` seconds: the lock counters equal the acquisitions (a second
/// holder would lose an update) and fsck is clean.
fn host_processes_share_one_export(hosts: u32, secs: u64, lease_ms: u32, interval_ms: u32) {
    if !tool_or_skip("nbdkit", &["--version"], "apt-get install nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    FileDevice::create(&img, IMAGE_BYTES).unwrap();
    let sock = dir.path().join("lun.sock");
    let _server = nbdkit(
        Command::new("nbdkit"),
        &img,
        &["-U", sock.to_str().unwrap()],
    );
    let addr = format!("nbd+unix://{}", sock.display());
    mkfs_over_nbd(|| Command::new(BIN), &addr, lease_ms, interval_ms);
    let locks = 3u32;
    prepare(&img, locks);
    let t = Instant::now();
    let children: Vec<Running> = (0..hosts)
        .map(|h| {
            spawn(
                Command::new(BIN)
                    .args(["stress", &addr, "--host", &h.to_string()])
                    .args(["--secs", &secs.to_string(), "--seed", "17"])
                    .args(["--locks", &locks.to_string()])
                    .args(["--nbd-timeout-ms", &(lease_ms / 4).to_string()]),
            )
        })
        .collect();
    let mut sums = vec![0u64; locks as usize];
    let mut total_ops = 0;
    for c in children {
        let limit = Duration::from_secs(150);
        let out = c.wait(limit);
        assert!(!out.timed_out, "host ran past {limit:?}: {}", out.stderr);
        assert!(out.success(), "host failed: {out}");
        let s = summary(&out.stdout);
        total_ops += s.ops;
        for (k, a) in s.acquired.iter().enumerate() {
            sums[k] += a;
        }
    }
    println!(
        "{hosts} hosts over NBD: {total_ops} operations, lock acquisitions {sums:?}, {:?}",
        t.elapsed()
    );
    // On a loaded machine most of a short run goes to mounting (Disk Paxos for the
    // journal locks): ask for work done, not for a rate.
    assert!(total_ops > 0, "the hosts did work");
    assert!(sums.iter().sum::<u64>() > 0, "locks were taken");
    assert_eq!(
        lock_counters(&img, locks),
        sums,
        "lost updates: two holders"
    );
    let v = mount_image(&img, 63);
    assert!(v.list("/shared").unwrap().is_empty());
    v.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn eight_host_processes_share_one_nbd_export() {
    host_processes_share_one_export(8, 4, 8000, 500);
}

/// Every heartbeat slot in use over one server: 64 processes on two cores, a short run,
/// a lease long enough that a host starved of CPU for a while does not fence itself.
#[test]
fn sixty_four_host_processes_share_one_nbd_export() {
    host_processes_share_one_export(64, 4, 30_000, 1000);
}

/// Hosts 1–3 in their own network namespaces reach nbdkit (in the switch's namespace)
/// over a bridge. Host 1 holds lock L0 and writes under it; its link goes down mid-run.
/// It fences itself and stops (its last acknowledged write comes before any other host
/// takes L0); hosts 2 and 3 take L0 over only after its lease, replaying its journal;
/// every write it acknowledged reads back; no lock had two holders; fsck is clean. With
/// its link back, host 1 is back only through a new mount.
#[test]
fn a_host_cut_off_from_the_nbd_server_fences_itself_and_the_others_take_over() {
    if !tool_or_skip("nbdkit", &["--version"], "apt-get install nbdkit") {
        return;
    }
    let Some(lab) = NetLab::new(3) else { return };
    let (lease_ms, interval_ms, seed) = (4000u32, 400u32, 5u64);
    let dir = tempfile::tempdir().unwrap();
    let img: PathBuf = dir.path().join("lun.img");
    FileDevice::create(&img, IMAGE_BYTES).unwrap();
    let port = "10809";
    let _server = nbdkit(
        lab.switch_command("nbdkit"),
        &img,
        &["-i", &lab.switch_ip(), "-p", port],
    );
    let addr = format!("nbd://{}:{port}", lab.switch_ip());
    mkfs_over_nbd(|| lab.command(2, BIN), &addr, lease_ms, interval_ms);
    // One lock, so that every lock attempt of hosts 2 and 3 goes for host 1's.
    let locks = 1u32;
    prepare(&img, locks);
    // Well under half a lease: no request of a cut-off host is still waiting when it
    // fences itself.
    let nbd_timeout = (lease_ms / 4).to_string();

    let t0 = Instant::now();
    let mut writer = Proc(
        lab.command(1, BIN)
            .args(["stress", &addr, "--host", "1", "--mode", "writer"])
            .args(["--secs", "60", "--seed", &seed.to_string()])
            .args(["--nbd-timeout-ms", &nbd_timeout])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = writer.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send((unix_ms(), l)).is_err() {
                break;
            }
        }
    });
    let (_, first) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first, "LOCKED");
    let others_secs = 16u64;
    let others: Vec<Running> = (2..=3)
        .map(|h| {
            spawn(
                lab.command(h, BIN)
                    .args(["stress", &addr, "--host", &h.to_string()])
                    .args(["--secs", &others_secs.to_string(), "--seed", "7"])
                    .args(["--locks", &locks.to_string()])
                    .args(["--nbd-timeout-ms", &nbd_timeout]),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // All times below are wall-clock ms, the clock the host processes report in.
    let cut_ms = unix_ms();
    lab.set_link(1, false);
    let cut = Instant::now();
    println!("host 1's link down at {:?}", cut - t0);

    // Host 1 stops by itself (fenced, or its server gone), well before a lease is up.
    let exited = loop {
        if writer.0.try_wait().unwrap().is_some() {
            break Instant::now();
        }
        assert!(
            cut.elapsed() < Duration::from_millis(u64::from(lease_ms) * 3),
            "host 1 still running {:?} after its link went down",
            cut.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = writer.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut writer.0.stderr.take().unwrap(), &mut err).unwrap();
    println!(
        "host 1 exited {:?} after the cut: {status}: {}",
        exited - cut,
        err.trim()
    );
    assert!(!status.success(), "host 1 went on without its server");
    reader.join().unwrap();
    let mut acked: Option<(u64, u64)> = None;
    let mut fenced: Option<u64> = None;
    while let Ok((at, l)) = rx.try_recv() {
        // When this test read the line: later than the acknowledgement itself.
        if let Some(i) = l.strip_prefix("ACK ") {
            acked = Some((at, i.parse().unwrap()));
        }
        // Host 1's own clock reading, at most its watcher's 10 ms after the fence.
        if let Some(t) = l.strip_prefix("FENCED ") {
            fenced = Some(t.parse().unwrap());
        }
    }
    let fenced = fenced.expect("host 1 said it fenced itself");
    let (last_ack_at, last_ack) = acked.expect("host 1 acknowledged writes before the cut");

    let mut sums = vec![0u64; locks as usize];
    let mut takeover: Option<u64> = None;
    for c in others {
        let out = c.wait(Duration::from_secs(60));
        assert!(!out.timed_out, "host ran past its time: {}", out.stderr);
        assert!(out.success(), "host failed: {out}");
        let s = summary(&out.stdout);
        for (k, a) in s.acquired.iter().enumerate() {
            sums[k] += a;
        }
        if s.first_unix_ms[0] > 0 {
            let at = s.first_unix_ms[0];
            takeover = Some(takeover.map_or(at, |t: u64| t.min(at)));
        }
    }
    let takeover = takeover.expect("hosts 2 and 3 took L0 over");
    let after_cut = |t: u64| t as i64 - cut_ms as i64;
    println!(
        "L0 taken over {} ms after the cut (lease {lease_ms} ms), host 1 fenced {} ms after \
         it; its last ack {} ms after it; acquisitions {sums:?}",
        after_cut(takeover),
        after_cut(fenced),
        after_cut(last_ack_at)
    );
    // The safety property: host 1 fenced itself (no request of its issued after that,
    // and the ones before it ended within the NBD timeout) before another host took its
    // lock. (When the lock was broken depends on when host 1 last renewed its heartbeat,
    // which a loaded machine may delay: no bound on it here but this one.) Its process
    // may take longer to exit (its unmount fails, its last request times out); its
    // connection is reset then, so nothing it queued is sent later.
    assert!(
        last_ack_at < takeover && fenced < takeover,
        "host 1 fenced {} ms after the cut, L0 taken over {} ms after it",
        after_cut(fenced),
        after_cut(takeover)
    );
    assert!(
        takeover >= cut_ms + u64::from(lease_ms) / 2,
        "L0 broken {} ms after the cut, before host 1 could have fenced itself",
        after_cut(takeover)
    );
    // L0's counter counts only hosts 2 and 3 (the writer never writes that file).
    assert_eq!(
        lock_counters(&img, locks),
        sums,
        "lost updates: two holders"
    );

    // Every write host 1 acknowledged is there (its journal was replayed by the host
    // that broke its locks); only the one in flight may be partial.
    let v = mount_image(&img, 63);
    let hb = v.spawn_heartbeat();
    // Its file's lock is still host 1's: this host breaks it after watching a lease.
    v.recover_host(1, 20_000).unwrap();
    check_acknowledged_writes(&v, 1, seed, last_ack + 1);
    drop(hb);
    v.unmount().unwrap();
    fsck_clean(&img);

    // Link back up: host 1 comes back with a new mount (a new generation of its slot).
    lab.set_link(1, true);
    let back = run(
        lab.command(1, BIN)
            .args(["ls", &addr, "--host", "1", "/h1"])
            .args(["--nbd-timeout-ms", &nbd_timeout]),
        Duration::from_secs(60),
    );
    assert!(back.success(), "host 1 mounting again: {back}");
    assert!(back.stdout.contains("data"), "{back}");
    // Nothing host 1 had queued before its cut reached the server once its link was back.
    assert_eq!(
        lock_counters(&img, locks),
        sums,
        "L0 changed after the link came back"
    );
    fsck_clean(&img);
}

/// The wall clock in ms since the epoch, as `vmfs stress` reports it.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
