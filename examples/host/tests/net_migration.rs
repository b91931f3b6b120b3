//! Tier 3: a VM's network follows it across a live migration. Two `vinfra-vm` processes
//! (source `run`, destination `incoming`) in one network namespace attach the same NIC
//! (same MAC) to port group `prod` of the namespace's switch; a pinger on the bridge
//! sends a UDP echo request to the `net` guest every millisecond through the migration
//! and measures the longest gap between replies, printed beside the migration's
//! downtime. The destination announces the MAC (RARP) when it resumes.
//! Needs KVM, root, iproute2 and the net guest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinfra_testkit::{guest, kvm_or_skip, run, skip, Console};

const BIN: &str = env!("CARGO_BIN_EXE_vinfra-vm");
const WAIT: Duration = Duration::from_secs(20);

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().unwrap().success();
    assert!(ok, "ip {}", args.join(" "));
}

/// A child whose stdout and stderr are captured; killed on drop.
struct Proc {
    child: Child,
    out: Console,
    log: Console,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, log) = (Console::new(), Console::new());
        for (from, to) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                out.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), log.clone()),
        ] {
            std::thread::spawn(move || {
                let mut from = from;
                let _ = std::io::copy(&mut from, &mut to.writer());
            });
        }
        Proc { child, out, log }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_network_follows_a_migrating_vm() {
    if !kvm_or_skip() {
        return;
    }
    let root = vinfra_testkit::is_root();
    if !root {
        skip("network namespaces and TAPs need root");
        return;
    }
    let Some(kernel) = guest("net") else { return };
    let ns = Ns(format!("vnmig{}", std::process::id() % 100_000));
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let sw = dir.path().join("switch.json");
    std::fs::write(&sw, r#"{"port_groups":[{"name":"prod","vlan":100}]}"#).unwrap();
    let key = dir.path().join("cluster.key");
    let done = run(Command::new(BIN).arg("keygen"), WAIT);
    assert!(done.success(), "{done}");
    std::fs::write(&key, done.stdout).unwrap();
    let in_ns = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.0, BIN]).args(args);
        c.env("RUST_LOG", "info");
        c
    };
    let vm_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory-mib",
            "16",
            "--cmdline",
            "net.ip=10.95.0.2 net.quiet=1",
            "--switch",
            sw.to_str().unwrap(),
            "--net",
            "portgroup=prod,mac=52:54:00:00:00:61",
            "--key-file",
            key.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let control = dir.path().join("ctl");
    let dst_args = vm_args(&["--listen", "127.0.0.1:0"]);
    let mut dst_cmd = in_ns(&["incoming"]);
    dst_cmd.args(&dst_args);
    let dst = Proc::spawn(&mut dst_cmd);
    let end = dst.log.wait_for("waiting for a migration on ", WAIT);
    dst.log.wait_for_from(end, "\n", WAIT);
    let addr = dst.log.text()[end..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let mut src_args = vec!["run".to_string(), "--control".into()];
    src_args.push(control.display().to_string());
    // `run` has no --key-file: only `incoming` and `migrate` do.
    let mut plain = vm_args(&[]);
    plain.truncate(plain.len() - 2);
    src_args.extend(plain);
    let src_refs: Vec<&str> = src_args.iter().map(String::as_str).collect();
    let src = Proc::spawn(&mut in_ns(&src_refs));
    src.out.wait_for("NET-READY", WAIT);
    // The switch exists now: the pinger's address goes on the port group's bridge.
    ip(&["-n", &ns.0, "addr", "add", "10.95.0.1/24", "dev", "vpg100"]);

    // The pinger: a thread in the namespace, one request a millisecond.
    let stop = Arc::new(AtomicBool::new(false));
    let path = format!("/var/run/netns/{}", ns.0);
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a valid namespace fd changes only this thread.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let s = UdpSocket::bind("10.95.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            let mut replies: Vec<Instant> = Vec::new();
            let mut wall: Vec<std::time::SystemTime> = Vec::new();
            let mut buf = [0u8; 64];
            let mut next = Instant::now();
            // Bounded: the test stops it, or 120 s pass.
            let give_up = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                if Instant::now() >= next {
                    let _ = s.send_to(b"ping", "10.95.0.2:7");
                    next += Duration::from_millis(1);
                }
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    if n > 0 {
                        replies.push(Instant::now());
                        wall.push(std::time::SystemTime::now());
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (replies, wall)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let mut mig = in_ns(&["migrate", "--json", "--to", &addr, "--control"]);
    mig.arg(&control).arg("--key-file").arg(&key);
    let done = run(&mut mig, Duration::from_secs(60));
    let t_done = Instant::now();
    assert!(
        done.success(),
        "migrate: {done}\nsource:\n{}\ndestination:\n{}",
        src.log.text(),
        dst.log.text()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (replies, wall) = pinger.join().unwrap();
    let stats: serde_json::Value = serde_json::from_str(done.stdout.trim()).unwrap();
    let downtime_ms = stats["downtime_ms"].as_f64().unwrap();
    println!("migrate: {stats}");
    let after: Vec<&Instant> = replies.iter().filter(|t| **t > t0).collect();
    assert!(
        after.len() > 100,
        "replies resumed after the move ({} after, {} in all); destination:\n{}\n{}",
        after.len(),
        replies.len(),
        dst.out.text(),
        dst.log.text()
    );
    let (gap_ms, gap_at) = replies
        .windows(2)
        .map(|w| ((w[1] - w[0]).as_secs_f64() * 1e3, w[0]))
        .fold((0.0, t0), |a, b| if b.0 > a.0 { b } else { a });
    let migrate_ms = (t_done - t0).as_secs_f64() * 1e3;
    let gap_from_start_ms = if gap_at > t0 {
        (gap_at - t0).as_secs_f64() * 1e3
    } else {
        -((t0 - gap_at).as_secs_f64() * 1e3)
    };
    println!(
        "gap starts {gap_from_start_ms:.1} ms after `migrate` was started; `migrate` took {migrate_ms:.1} ms"
    );
    if let Some(i) = replies.iter().position(|t| *t == gap_at) {
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        println!(
            "gap from unix {:.6} to {:.6}",
            unix(wall[i]),
            wall.get(i + 1).map_or(0.0, |w| unix(*w))
        );
    }
    for line in src.log.text().lines() {
        if line.contains("paused") || line.contains("moved") {
            println!("source: {line}");
        }
    }
    println!(
        "net migration: reply gap {gap_ms:.1} ms, downtime {downtime_ms:.1} ms, {} replies",
        replies.len()
    );
    for line in dst.log.text().lines() {
        if line.contains("migrat") || line.contains("resum") || line.contains("announced") {
            println!("destination: {line}");
        }
    }
    assert!(
        dst.log.text().contains("virtio-net: announced"),
        "destination log:\n{}",
        dst.log.text()
    );
    // Generous on a shared two-core machine; the figure goes to the README.
    assert!(
        gap_ms < downtime_ms + 1000.0,
        "gap {gap_ms} ms, downtime {downtime_ms} ms"
    );
}
