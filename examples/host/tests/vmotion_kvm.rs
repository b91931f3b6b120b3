//! Live migration between two real `vinfra-vm` processes on loopback, with the `workload`
//! test guest on KVM: idle and dirtying guests move and their heartbeat counter goes on; a
//! VM whose disk is on a shared vmfs volume moves and the destination reads what the
//! source wrote; a destination killed mid-copy, a destination without a CPU feature, and a
//! tampered frame all leave the VM running on the source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use vinfra_testkit::{guest, kvm_or_skip, run, Console};

const BIN: &str = env!("CARGO_BIN_EXE_vinfra-vm");
const VMFS: &str = env!("CARGO_BIN_EXE_vmfs");
const WAIT: Duration = Duration::from_secs(20);

/// One migration at a time: each VM's vCPU spins (the test guests poll), and two cores
/// shared by several migrating pairs make every copy crawl.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A `vinfra-vm` process: its console (stdout) and log (stderr) captured, its stdin ours.
struct VmProcess {
    child: Child,
    stdin: ChildStdin,
    console: Console,
    log: Console,
}

impl VmProcess {
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vinfra-vm");
        let pump = |from: Box<dyn Read + Send>, to: Console| {
            std::thread::spawn(move || {
                let mut from = from;
                let _ = std::io::copy(&mut from, &mut to.writer());
            });
        };
        let (console, log) = (Console::new(), Console::new());
        pump(Box::new(child.stdout.take().unwrap()), console.clone());
        pump(Box::new(child.stderr.take().unwrap()), log.clone());
        let stdin = child.stdin.take().unwrap();
        Self {
            child,
            stdin,
            console,
            log,
        }
    }

    fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Sends `ping n` and waits for `PONG n`.
    fn ping(&mut self, n: u32) {
        let from = self.console.len();
        self.send(&format!("ping {n}"));
        self.console.wait_for_from(from, &format!("PONG {n}"), WAIT);
    }

    /// The last `HB n` on the console.
    fn last_heartbeat(&self) -> u64 {
        heartbeats(&self.console.text())
            .last()
            .copied()
            .unwrap_or(0)
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "vinfra-vm {} did not exit; log:\n{}",
            self.child.id(),
            self.log.text()
        );
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn heartbeats(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("HB "))
        .filter_map(|n| n.split_whitespace().next()?.parse().ok())
        .collect()
}

struct Guest {
    kernel: PathBuf,
    memory_mib: u64,
    cmdline: String,
}

impl Guest {
    fn args(&self) -> Vec<String> {
        vec![
            "--kernel".into(),
            self.kernel.display().to_string(),
            "--memory-mib".into(),
            self.memory_mib.to_string(),
            "--cmdline".into(),
            self.cmdline.clone(),
        ]
    }
}

fn workload(memory_mib: u64, mib: u64, rate: u64) -> Option<Guest> {
    if !kvm_or_skip() {
        return None;
    }
    Some(Guest {
        kernel: guest("workload")?,
        memory_mib,
        cmdline: format!("workload.mib={mib} workload.rate={rate}"),
    })
}

/// Starts `vinfra-vm incoming` on a free port; returns it and its address.
fn destination(g: &Guest, security: &[String], extra: &[String]) -> (VmProcess, String) {
    let p = VmProcess::spawn(
        Command::new(BIN)
            .args(["incoming", "--listen", "127.0.0.1:0"])
            .args(security)
            .args(g.args())
            .args(extra),
    );
    let end = p.log.wait_for("waiting for a migration on ", WAIT);
    p.log.wait_for_from(end, "\n", WAIT);
    let rest = p.log.text()[end..].to_string();
    let addr = rest.split_whitespace().next().unwrap().to_string();
    (p, addr)
}

/// Starts `vinfra-vm run --control` and waits for the guest's second heartbeat.
fn source(g: &Guest, control: &Path, extra: &[String]) -> VmProcess {
    let mut p = VmProcess::spawn(
        Command::new(BIN)
            .arg("run")
            .arg("--control")
            .arg(control)
            .args(g.args())
            .args(extra),
    );
    p.console.wait_for("HB 2", WAIT);
    p.ping(1);
    p
}

fn key_file(dir: &Path) -> Vec<String> {
    let key = dir.join("cluster.key");
    let done = run(Command::new(BIN).arg("keygen"), WAIT);
    assert!(done.success(), "{done}");
    std::fs::write(&key, done.stdout).unwrap();
    vec!["--key-file".into(), key.display().to_string()]
}

fn migrate(
    control: &Path,
    to: &str,
    security: &[String],
    extra: &[&str],
) -> vinfra_testkit::Finished {
    run(
        Command::new(BIN)
            .args(["migrate", "--json", "--to", to, "--control"])
            .arg(control)
            .args(security)
            .args(extra),
        Duration::from_secs(60),
    )
}

/// After a migration: the source exited, the destination runs the guest with its
/// counter continued and answers on its console.
fn check_moved(
    mut src: VmProcess,
    mut dst: VmProcess,
    done: &vinfra_testkit::Finished,
) -> serde_json::Value {
    assert!(
        done.success(),
        "migrate: {done}\nsource log:\n{}\ndestination log:\n{}",
        src.log.text(),
        dst.log.text()
    );
    let stats: serde_json::Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(
        src.wait_exit(WAIT),
        Some(0),
        "the source exits 0: {}",
        src.log.text()
    );
    assert!(src.log.text().contains("moved to"), "{}", src.log.text());
    let last_on_source = src.last_heartbeat();
    assert!(last_on_source >= 2);
    // The next heartbeat comes from the destination and continues the count.
    let next = format!("HB {}", last_on_source + 1);
    dst.console.wait_for(&next, WAIT);
    let on_dest = heartbeats(&dst.console.text());
    assert!(
        on_dest.iter().all(|n| *n > last_on_source),
        "the counter went back on the destination: source ended at {last_on_source}, destination shows {on_dest:?}"
    );
    dst.ping(77);
    assert!(dst.alive());
    stats
}

#[test]
fn an_idle_and_a_dirtying_guest_move_and_keep_counting() {
    let _one = serial();
    // The dirtying guest's source turns its dirty log on when the migration starts, the
    // idle one's when it starts (the default).
    for (mib, rate, late) in [(32, 0, false), (64, 50, true)] {
        let Some(g) = workload(128, mib, rate) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let security = key_file(dir.path());
        let (dst, addr) = destination(&g, &security, &[]);
        let control = dir.path().join("ctl");
        let late_log = if late {
            vec!["--late-dirty-log".to_string()]
        } else {
            vec![]
        };
        let src = source(&g, &control, &late_log);
        let done = migrate(&control, &addr, &security, &[]);
        let stats = check_moved(src, dst, &done);
        assert_eq!(stats["encrypted"], true);
        assert_eq!(stats["destination_confirmed"], true);
        assert!(stats["downtime_ms"].as_f64().unwrap() < 1000.0, "{stats}");
        eprintln!("workload.mib={mib} rate={rate}: {stats}");
    }
}

#[test]
fn a_vm_with_a_vmfs_disk_moves_and_the_destination_reads_what_the_source_wrote() {
    let _one = serial();
    let Some(g) = workload(64, 8, 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun.img");
    let img_s = img.display().to_string();
    let mkfs = run(
        Command::new(VMFS).args([
            "mkfs",
            &img_s,
            "--size",
            "64M",
            "--lease-ms",
            "4000",
            "--interval-ms",
            "200",
        ]),
        WAIT,
    );
    assert!(mkfs.success(), "{mkfs}");
    let mkdisk = run(
        Command::new(VMFS).args(["mkdisk", "--size", "4M", &img_s, "/vm1.vmdk"]),
        WAIT,
    );
    assert!(mkdisk.success(), "{mkdisk}");
    let disk = |host: &str| -> Vec<String> {
        [
            "--volume",
            &img_s,
            "--host-id",
            host,
            "--vmfs-disk",
            "/vm1.vmdk",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let plain = vec!["--plaintext".to_string()];
    let (mut dst, addr) = destination(&g, &plain, &disk("2"));
    let control = dir.path().join("ctl");
    let mut src = source(&g, &control, &disk("1"));
    let from = src.console.len();
    src.send("dwrite 5 305419896");
    src.console.wait_for_from(from, "DWROTE 5 305419896", WAIT);
    let done = migrate(&control, &addr, &plain, &[]);
    let from = dst.console.len();
    dst.send("dread 5");
    dst.console.wait_for_from(from, "DREAD 5 305419896", WAIT);
    let from = dst.console.len();
    dst.send("dwrite 6 7");
    dst.console.wait_for_from(from, "DWROTE 6 7", WAIT);
    check_moved(src, dst, &done);
}

#[test]
fn killing_the_destination_mid_migration_leaves_the_vm_running_on_the_source() {
    let _one = serial();
    let Some(g) = workload(256, 128, 100) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plain = vec!["--plaintext".to_string()];
    let (mut dst, addr) = destination(&g, &plain, &[]);
    let control = dir.path().join("ctl");
    let mut src = source(&g, &control, &[]);
    // Capped at 20 MiB/s the copy takes seconds: time to kill the destination within it.
    let ctl = control.clone();
    let migration = std::thread::spawn(move || {
        migrate(
            &ctl,
            &addr,
            &["--plaintext".to_string()],
            &["--bandwidth-mib", "20"],
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(dst.alive(), "{}", dst.log.text());
    dst.child.kill().unwrap();
    let done = migration.join().unwrap();
    assert_eq!(done.code(), Some(1), "{done}");
    assert!(done.stderr.contains("the VM runs on the source"), "{done}");
    assert!(src.alive(), "{}", src.log.text());
    let before = src.last_heartbeat();
    src.ping(2);
    src.console.wait_for(&format!("HB {}", before + 1), WAIT);
    // A second try, to a new destination, moves it: the dirty log the first left on is
    // fetched afresh rather than trusted.
    let (dst, addr) = destination(&g, &plain, &[]);
    let done = migrate(&control, &addr, &plain, &[]);
    check_moved(src, dst, &done);
}

#[test]
fn a_destination_without_a_cpu_feature_refuses_before_memory_moves() {
    let _one = serial();
    let Some(g) = workload(64, 8, 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let plain = vec!["--plaintext".to_string()];
    // x2APIC (leaf 1 ecx bit 21): shown to the guest here, and hideable even on nested KVM.
    let hide = vec!["--hide-cpuid".to_string(), "1.0.ecx:0x200000".to_string()];
    let (mut dst, addr) = destination(&g, &plain, &hide);
    let control = dir.path().join("ctl");
    let mut src = source(&g, &control, &[]);
    let done = migrate(&control, &addr, &plain, &[]);
    assert_eq!(done.code(), Some(1), "{done}");
    assert!(done.stderr.contains("lacks CPU features"), "{done}");
    assert!(done.stderr.contains("0x1.0 Ecx bits 0x200000"), "{done}");
    assert_eq!(dst.wait_exit(WAIT), Some(1));
    assert!(
        dst.log.text().contains("lacks CPU features"),
        "{}",
        dst.log.text()
    );
    assert!(src.alive());
    src.ping(3);
}

/// Relays one connection from a free port to `to`, flipping one bit of the byte at
/// offset `flip` of the source's stream.
fn tampering_relay(to: String, flip: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (from_src, _) = listener.accept().unwrap();
        let to_dst = TcpStream::connect(to).unwrap();
        let (mut src_r, mut dst_w) = (from_src.try_clone().unwrap(), to_dst.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut back_r = to_dst;
            let mut back_w = from_src;
            let _ = std::io::copy(&mut back_r, &mut back_w);
            let _ = back_w.shutdown(std::net::Shutdown::Both);
        });
        let mut seen = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match src_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if (seen..seen + n).contains(&flip) {
                buf[flip - seen] ^= 0x10;
            }
            seen += n;
            if dst_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = dst_w.shutdown(std::net::Shutdown::Both);
    });
    addr
}

#[test]
fn a_tampered_frame_is_refused_and_the_vm_keeps_running() {
    let _one = serial();
    let Some(g) = workload(64, 16, 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let security = key_file(dir.path());
    let (mut dst, addr) = destination(&g, &security, &[]);
    // One bit in the page data, well past the handshake.
    let relay = tampering_relay(addr, 1 << 20);
    let control = dir.path().join("ctl");
    let mut src = source(&g, &control, &[]);
    let done = migrate(&control, &relay, &security, &[]);
    assert_eq!(done.code(), Some(1), "{done}");
    assert!(done.stderr.contains("the VM runs on the source"), "{done}");
    assert_eq!(dst.wait_exit(WAIT), Some(1));
    assert!(
        dst.log.text().contains("tag does not verify"),
        "{}",
        dst.log.text()
    );
    assert!(src.alive());
    src.ping(4);
    let before = src.last_heartbeat();
    src.console.wait_for(&format!("HB {}", before + 1), WAIT);
}

#[test]
fn a_wrong_cluster_key_is_refused() {
    let _one = serial();
    let Some(g) = workload(64, 8, 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ours = key_file(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let theirs = key_file(other_dir.path());
    let (mut dst, addr) = destination(&g, &theirs, &[]);
    let control = dir.path().join("ctl");
    let mut src = source(&g, &control, &[]);
    let done = migrate(&control, &addr, &ours, &[]);
    assert_eq!(done.code(), Some(1), "{done}");
    assert_eq!(dst.wait_exit(WAIT), Some(1));
    assert!(
        dst.log.text().contains("authentication failed"),
        "{}",
        dst.log.text()
    );
    assert!(src.alive());
    src.ping(5);
}
