//! The NBD block device against a real server (`nbdkit`, Debian package `nbdkit`; CI
//! installs it): a volume over a Unix socket and over TCP, a server that disappears and
//! comes back (an I/O error, then a reconnect), one that stalls (a timeout) or answers with
//! errors (typed), a host whose server is gone fencing itself at half a lease, and zeroing
//! by the server's `WRITE_ZEROES` where it has one.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinfra_testkit::tool_or_skip;
use vinfra_vmfs::nbd::{nbd_error, NbdAddr, NbdDevice, NbdError, NbdOptions};
use vinfra_vmfs::{
    BlockDevice, LockMode, MkfsOptions, MonotonicClock, MountOptions, Volume, VolumeEvent,
};

fn nbdkit_or_skip() -> bool {
    tool_or_skip("nbdkit", &["--version"], "apt-get install nbdkit")
}

/// An nbdkit process this test started; killed (by its handle) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nbdkit` in the foreground listening on `addr` with `args` (plugin, filters)
/// and waits until it accepts connections.
fn nbdkit(addr: &NbdAddr, args: &[&str]) -> Server {
    let mut cmd = Command::new("nbdkit");
    cmd.args(["-f", "--exit-with-parent"]);
    match addr {
        NbdAddr::Unix(p) => {
            let _ = std::fs::remove_file(p);
            cmd.arg("-U").arg(p);
        }
        NbdAddr::Tcp(a) => {
            cmd.args(["-i", &a.ip().to_string(), "-p", &a.port().to_string()]);
        }
    }
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // It reports our readiness probes and the injected faults as errors.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let t = Instant::now();
    loop {
        let up = match addr {
            NbdAddr::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            NbdAddr::Tcp(a) => std::net::TcpStream::connect(a).is_ok(),
        };
        if up {
            return server;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nbdkit {args:?} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unix(dir: &Path, name: &str) -> NbdAddr {
    NbdAddr::Unix(dir.join(name))
}

fn free_port() -> NbdAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let a: SocketAddr = l.local_addr().unwrap();
    NbdAddr::Tcp(a)
}

fn opts(timeout_ms: u64) -> NbdOptions {
    let mut o = NbdOptions::default();
    o.timeout_ms = timeout_ms;
    o.single_client = true;
    o
}

fn small_volume() -> MkfsOptions {
    let mut o = MkfsOptions::default();
    o.max_inodes = 256;
    o.lease_ms = 2000;
    o.interval_ms = 200;
    o
}

#[test]
fn a_volume_over_nbd_on_a_unix_socket_and_on_tcp() {
    if !nbdkit_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for addr in [unix(dir.path(), "lun.sock"), free_port()] {
        let _server = nbdkit(&addr, &["memory", "size=64M"]);
        let dev = Arc::new(NbdDevice::connect(addr.clone(), opts(5000)).unwrap());
        assert_eq!(dev.len().unwrap(), 64 << 20);
        // Bigger than one request: split and put back together.
        let big: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
        dev.write_at(&big, 4096).unwrap();
        dev.flush().unwrap();
        let mut back = vec![0u8; big.len()];
        dev.read_at(&mut back, 4096).unwrap();
        assert!(back == big, "{addr}: read back");
        assert!(dev.read_at(&mut [0u8; 2], (64 << 20) - 1).is_err());
        Volume::mkfs(dev.as_ref(), &small_volume()).unwrap();
        let v = Volume::mount(
            dev.clone(),
            3,
            &MountOptions::default(),
            Arc::new(MonotonicClock::new()),
        )
        .unwrap();
        v.mkdir("/vm1").unwrap();
        let f = v.create("/vm1/disk").unwrap();
        f.write_at(&big[..3 << 20], 0).unwrap();
        f.sync().unwrap();
        drop(f);
        let f = v.open("/vm1/disk", LockMode::SharedRead).unwrap();
        let mut back = vec![0u8; 3 << 20];
        f.read_at(&mut back, 0).unwrap();
        assert!(back[..] == big[..3 << 20]);
        drop(f);
        v.unmount().unwrap();
        let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
        assert!(r.is_clean(), "{addr}: {:#?}", r.errors);
    }
}

/// `write_zeroes` sends `NBD_CMD_WRITE_ZEROES` to a server that takes it (nbdkit's log
/// filter records each request) and writes zeros to one that does not (the nozero filter
/// hides the command); either way the range reads as zeros and its neighbours are kept.
#[test]
fn write_zeroes_uses_the_servers_command_and_falls_back_to_writing() {
    if !nbdkit_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, filters, sends_zero) in [
        ("zero", &["--filter=log"][..], true),
        ("nozero", &["--filter=log", "--filter=nozero"][..], false),
    ] {
        let addr = unix(dir.path(), &format!("{name}.sock"));
        let log = dir.path().join(format!("{name}.log"));
        let logfile = format!("logfile={}", log.display());
        let mut args = filters.to_vec();
        args.extend(["memory", "size=64M", &logfile]);
        let _server = nbdkit(&addr, &args);
        let dev = NbdDevice::connect(addr, opts(5000)).unwrap();
        dev.write_at(&vec![0xa5u8; 8 << 20], 0).unwrap();
        // Not aligned to anything, and more than one write of the fallback.
        dev.write_zeroes(4097, (3 << 20) + 5).unwrap();
        let mut back = vec![0u8; 8 << 20];
        dev.read_at(&mut back, 0).unwrap();
        let end = 4097 + (3 << 20) + 5;
        assert!(back[..4097].iter().all(|&b| b == 0xa5), "{name}: before");
        assert!(back[4097..end].iter().all(|&b| b == 0), "{name}: zeroed");
        assert!(back[end..].iter().all(|&b| b == 0xa5), "{name}: after");
        assert!(
            dev.write_zeroes((64 << 20) - 10, 11).is_err(),
            "{name}: past the end"
        );
        drop(dev);
        let log = std::fs::read_to_string(&log).unwrap();
        let zero_requests = log.lines().filter(|l| l.contains(" Zero ")).count();
        assert_eq!(zero_requests > 0, sends_zero, "{name}: {log}");
    }
    // mkfs for Disk Paxos zeroes through the Paxos device, which hands the zeroing to the
    // NBD device: no zeros cross the socket.
    let addr = unix(dir.path(), "mkfs.sock");
    let log = dir.path().join("mkfs.log");
    let logfile = format!("logfile={}", log.display());
    let _server = nbdkit(&addr, &["--filter=log", "memory", "size=256M", &logfile]);
    let dev = Arc::new(NbdDevice::connect(addr, opts(5000)).unwrap());
    Volume::mkfs_without_ats(dev.clone(), &small_volume(), 4).unwrap();
    drop(dev);
    let log = std::fs::read_to_string(&log).unwrap();
    let written: u64 = log
        .lines()
        .filter(|l| l.contains(" Write "))
        .filter_map(|l| l.split("count=").nth(1)?.split_whitespace().next())
        .map(|c| u64::from_str_radix(c.trim_start_matches("0x"), 16).unwrap())
        .sum();
    assert!(log.contains(" Zero "), "mkfs sent no WRITE_ZEROES: {log}");
    assert!(
        written < 8 << 20,
        "mkfs wrote {written} bytes: zeros went over the socket"
    );
}

#[test]
fn compare_and_write_needs_the_single_client_promise() {
    if !nbdkit_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = unix(dir.path(), "cas.sock");
    let _server = nbdkit(&addr, &["memory", "size=1M"]);
    let dev = NbdDevice::connect(addr, NbdOptions::default()).unwrap();
    let e = dev.compare_and_write(0, &[0; 512], &[1; 512]).unwrap_err();
    assert!(
        matches!(nbd_error(&e), Some(NbdError::Unsupported(_))),
        "{e}"
    );
    assert!(Volume::mkfs(&dev, &small_volume()).is_err());
}

#[test]
fn a_lost_server_is_an_io_error_and_the_next_operation_reconnects() {
    if !nbdkit_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing: PathBuf = dir.path().join("lun.raw");
    std::fs::write(&backing, vec![0u8; 4 << 20]).unwrap();
    let file = format!("file={}", backing.display());
    let addr = unix(dir.path(), "lost.sock");
    let server = nbdkit(&addr, &["file", &file]);
    let dev = NbdDevice::connect(addr.clone(), opts(2000)).unwrap();
    dev.write_at(b"before", 0).unwrap();
    dev.flush().unwrap();
    drop(server);
    let t = Instant::now();
    let e = dev.read_at(&mut [0u8; 6], 0).unwrap_err();
    assert!(nbd_error(&e).is_some(), "{e}");
    // Still gone: connecting again fails too, as an I/O error.
    assert!(dev.read_at(&mut [0u8; 6], 0).is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
    let _server = nbdkit(&addr, &["file", &file]);
    let mut back = [0u8; 6];
    dev.read_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"before");
}

#[test]
fn a_stalled_server_times_out_and_server_errors_are_typed() {
    if !nbdkit_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slow = unix(dir.path(), "slow.sock");
    let _slow = nbdkit(&slow, &["--filter=delay", "memory", "size=1M", "rdelay=5"]);
    let dev = NbdDevice::connect(slow, opts(300)).unwrap();
    let t = Instant::now();
    let e = dev.read_at(&mut [0u8; 512], 0).unwrap_err();
    assert!(
        matches!(nbd_error(&e), Some(NbdError::Timeout { .. })),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let failing = unix(dir.path(), "eio.sock");
    let _failing = nbdkit(
        &failing,
        &[
            "--filter=error",
            "memory",
            "size=1M",
            "error=EIO",
            "error-pread-rate=100%",
        ],
    );
    let dev = NbdDevice::connect(failing, opts(2000)).unwrap();
    let e = dev.read_at(&mut [0u8; 512], 0).unwrap_err();
    assert!(
        matches!(nbd_error(&e), Some(NbdError::Server { errno: 5, .. })),
        "{e}"
    );
    // A server's error leaves the connection usable.
    dev.write_at(&[1u8; 512], 0).unwrap();
}

#[test]
fn a_host_whose_server_is_gone_fences_itself_at_half_a_lease() {
    if !nbdkit_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = unix(dir.path(), "fence.sock");
    let server = nbdkit(&addr, &["memory", "size=32M"]);
    let dev = Arc::new(NbdDevice::connect(addr, opts(300)).unwrap());
    Volume::mkfs(dev.as_ref(), &small_volume()).unwrap();
    let v = Volume::mount(
        dev,
        1,
        &MountOptions::default(),
        Arc::new(MonotonicClock::new()),
    )
    .unwrap();
    let events = v.events().unwrap();
    let _hb = v.spawn_heartbeat();
    let f = v.create("/vm.vmdk").unwrap();
    f.write_at(b"running", 0).unwrap();
    let t = Instant::now();
    drop(server);
    let ev = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(matches!(ev, VolumeEvent::Fenced { host: 1, .. }), "{ev:?}");
    // Half the 2 s lease, plus a heartbeat interval and a timed-out request.
    assert!(
        t.elapsed() < Duration::from_millis(1800),
        "{:?}",
        t.elapsed()
    );
    assert!(f.write_at(b"x", 0).is_err());
}

/// The fuzz target's corpus (fuzz/corpus/vmfs_nbd_reply) through the same decoders, so
/// that a crash input added there replays as a plain test.
#[test]
fn the_nbd_reply_fuzz_corpus_decodes_without_panicking() {
    use vinfra_vmfs::nbd::proto::replay_server;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/vmfs_nbd_reply");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let r = replay_server(&data);
        n += 1;
        if r.handshake_ok && r.read_ok {
            assert_eq!(r.read[1], 1, "the valid seed reads back its bytes");
        }
    }
    assert!(n >= 4, "{n} corpus files in {}", dir.display());
}

/// 64 hosts (every heartbeat slot) mount one volume over one NBD export — threads of this
/// process sharing one `NbdDevice`, whose compare-and-write is atomic within it — and
/// take turns on three lock files, each incrementing a counter under the lock and checking
/// that nobody else wrote it meanwhile: a double holder would lose an update or see
/// another's write. Then the counters equal the acquisitions and fsck is clean.
#[test]
fn sixty_four_hosts_share_a_volume_over_one_nbd_export() {
    if !nbdkit_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = unix(dir.path(), "64.sock");
    let _server = nbdkit(&addr, &["memory", "size=64M"]);
    let dev = Arc::new(NbdDevice::connect(addr, opts(10_000)).unwrap());
    let mut o = small_volume();
    o.max_inodes = 512;
    // Generous: 64 heartbeat threads share two cores with the rest of the test run.
    o.lease_ms = 20_000;
    o.interval_ms = 1000;
    Volume::mkfs(dev.as_ref(), &o).unwrap();
    let mount = |h: u32| {
        Volume::mount(
            dev.clone(),
            h,
            &MountOptions::default(),
            Arc::new(MonotonicClock::new()),
        )
        .unwrap()
    };
    let v = mount(0);
    v.mkdir("/locks").unwrap();
    for j in 0..3 {
        v.create(&format!("/locks/L{j}"))
            .unwrap()
            .write_at(&[0u8; 16], 0)
            .unwrap();
    }
    v.unmount().unwrap();
    let threads: Vec<_> = (0..64u32)
        .map(|h| {
            let v = mount(h);
            std::thread::spawn(move || {
                let _hb = v.spawn_heartbeat();
                let mut acquired = [0u64; 3];
                let mine = v.create(&format!("/h{h}")).unwrap();
                mine.write_at(&h.to_le_bytes().repeat(1000), 0).unwrap();
                mine.sync().unwrap();
                drop(mine);
                for k in 0..4u32 {
                    let j = ((h + k) % 3) as usize;
                    let f = v
                        .open_wait(&format!("/locks/L{j}"), LockMode::Exclusive, 120_000)
                        .unwrap();
                    let mut rec = [0u8; 16];
                    f.read_at(&mut rec, 0).unwrap();
                    let count = u64::from_le_bytes(rec[8..].try_into().unwrap());
                    let mut next = [0u8; 16];
                    next[..8].copy_from_slice(&u64::from(h).to_le_bytes());
                    next[8..].copy_from_slice(&(count + 1).to_le_bytes());
                    f.write_at(&next, 0).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                    let mut again = [0u8; 16];
                    f.read_at(&mut again, 0).unwrap();
                    assert_eq!(again, next, "host {h}: L{j} written by another holder");
                    f.sync().unwrap();
                    f.close().unwrap();
                    acquired[j] += 1;
                }
                drop(_hb);
                v.unmount().unwrap();
                acquired
            })
        })
        .collect();
    let mut sums = [0u64; 3];
    for t in threads {
        for (s, a) in sums.iter_mut().zip(t.join().unwrap()) {
            *s += a;
        }
    }
    assert_eq!(sums.iter().sum::<u64>(), 64 * 4);
    let v = mount(5);
    for (j, want) in sums.iter().enumerate() {
        let f = v
            .open(&format!("/locks/L{j}"), LockMode::SharedRead)
            .unwrap();
        let mut rec = [0u8; 16];
        f.read_at(&mut rec, 0).unwrap();
        assert_eq!(
            u64::from_le_bytes(rec[8..].try_into().unwrap()),
            *want,
            "L{j}"
        );
    }
    assert_eq!(v.list("/").unwrap().len(), 65);
    v.unmount().unwrap();
    let r = vinfra_vmfs::fsck::check(dev.as_ref(), false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}
