//! Tier 2: the `net` guest on our virtio-net, through host TAP devices, inside network
//! namespaces each test creates and removes. Needs KVM, root, `ip` and `ping`.
//!
//! The VMM opens its TAP in the test's own namespace (that is where TUNSETIFF creates
//! it); the test then moves the TAP into its private namespace, where all addresses
//! live, so nothing outside the namespace is ever a target.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::config;
use vinfra_testkit::{guest, isolated, kvm_or_skip, skip, tool_or_skip, Console};
use vinfra_vmm_core::{MacAddr, NetConfig, Vm, VmConfig};

/// KVM tests in one binary run one at a time (the machine has two cores).
static KVM: Mutex<()> = Mutex::new(());
const T: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);
static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, removed (with every link in it) on drop.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("vn{tag}{}x{n}", std::process::id() % 100_000);
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }

    /// Moves `tap` (in this process's namespace) into the namespace, up, on `bridge`
    /// (made if missing) or with `addr`.
    fn adopt(&self, tap: &str, bridge: Option<&str>, addr: Option<&str>) {
        ip(&["link", "set", tap, "netns", &self.0]);
        if let Some(br) = bridge {
            let exists = Command::new("ip")
                .args(["-n", &self.0, "link", "show", br])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if !exists {
                ip(&["-n", &self.0, "link", "add", br, "type", "bridge"]);
                ip(&["-n", &self.0, "link", "set", br, "up"]);
            }
            ip(&["-n", &self.0, "link", "set", tap, "master", br]);
        }
        if let Some(a) = addr {
            ip(&["-n", &self.0, "addr", "add", a, "dev", tap]);
        }
        ip(&["-n", &self.0, "link", "set", tap, "up"]);
    }

    /// Runs `f` on a thread that has entered the namespace.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on a valid namespace fd affects only this thread.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn ping(&self, target: &str, count: u32) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ping", "-c"])
            .arg(count.to_string())
            .args(["-i", "0.2", "-W", "2", target])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stdin(Stdio::null())
            .status();
    }
}

/// KVM, root, ip, ping and the net guest; `None` after a skip.
fn prerequisites() -> Option<PathBuf> {
    if !kvm_or_skip() {
        return None;
    }
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    });
    if !root {
        skip("TAP devices and network namespaces need root");
        return None;
    }
    if !tool_or_skip("ip", &["-V"], "apt-get install iproute2")
        || !tool_or_skip("ping", &["-V"], "apt-get install iputils-ping")
    {
        return None;
    }
    guest("net")
}

fn tap_name(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("vt{tag}{}x{n}", std::process::id() % 100_000)
}

fn net_vm(kernel: PathBuf, con: &Console, tap: &str, mac: u32, cmdline: &str) -> VmConfig {
    config(kernel, con)
        .memory_mib(16)
        .cmdline(cmdline)
        .net(NetConfig::tap(tap, MacAddr::local(mac)))
}

fn udp_echo(ns: &Ns, target: &str, payload: &[u8]) -> Vec<u8> {
    let target = target.to_owned();
    let payload = payload.to_vec();
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..20 {
            s.send_to(&payload, (target.as_str(), 7)).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        Vec::new()
    })
}

#[test]
fn net_guest_answers_ping_and_udp_echo_through_tap() {
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kernel) = prerequisites() else {
        return;
    };
    isolated("net_guest_answers_ping_and_udp_echo_through_tap", T, || {
        let ns = Ns::new("p");
        let tap = tap_name("p");
        let con = Console::default();
        let mut vm = Vm::create(net_vm(kernel, &con, &tap, 2, "net.ip=10.77.0.2")).unwrap();
        ns.adopt(&tap, None, Some("10.77.0.1/24"));
        vm.start().unwrap();
        con.wait_for("NET-READY mac=52:54:00:00:00:02 ip=10.77.0.2", WAIT);
        let out = ns.ping("10.77.0.2", 3);
        assert!(
            out.contains("3 received"),
            "ping:\n{out}\nconsole:\n{}",
            con.text()
        );
        con.wait_for("NET-RX icmp echo from 10.77.0.1 seq=3", WAIT);
        let back = udp_echo(&ns, "10.77.0.2", b"hello vinfra");
        assert_eq!(back, b"hello vinfra", "console:\n{}", con.text());
        con.wait_for("NET-RX udp from 10.77.0.1:", WAIT);
        let stats = vm.nets()[0].lock().unwrap().stats();
        println!("nic stats: {stats:?}");
        assert!(stats.tx_frames >= 5 && stats.rx_frames >= 5, "{stats:?}");
        assert_eq!(stats.tx_forged + stats.tx_malformed + stats.needs_reset, 0);
        vm.stop().unwrap();
    });
}

#[test]
fn two_vms_on_one_bridge_talk_on_different_bridges_do_not() {
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kernel) = prerequisites() else {
        return;
    };
    isolated(
        "two_vms_on_one_bridge_talk_on_different_bridges_do_not",
        T,
        || {
            let ns = Ns::new("b");
            let (tap1, tap2, tap3) = (tap_name("a"), tap_name("b"), tap_name("c"));
            let con1 = Console::default();
            let mut vm1 = Vm::create(net_vm(
                kernel.clone(),
                &con1,
                &tap1,
                0x11,
                "net.ip=10.78.0.1",
            ))
            .unwrap();
            ns.adopt(&tap1, Some("pga"), None);
            vm1.start().unwrap();
            con1.wait_for("NET-READY", WAIT);

            // Same port group (bridge): VM 2 pings VM 1.
            let con2 = Console::default();
            let mut vm2 = Vm::create(net_vm(
                kernel.clone(),
                &con2,
                &tap2,
                0x12,
                "net.ip=10.78.0.2 net.ping=10.78.0.1:3",
            ))
            .unwrap();
            ns.adopt(&tap2, Some("pga"), None);
            vm2.start().unwrap();
            con2.wait_for("NET-PING sent=3 received=3", WAIT);
            vm2.stop().unwrap();
            drop(vm2);

            // Another port group: VM 3 finds nobody.
            let con3 = Console::default();
            let mut vm3 = Vm::create(net_vm(
                kernel,
                &con3,
                &tap3,
                0x13,
                "net.ip=10.78.0.3 net.ping=10.78.0.1:3",
            ))
            .unwrap();
            ns.adopt(&tap3, Some("pgb"), None);
            vm3.start().unwrap();
            con3.wait_for("NET-PING no ARP answer from 10.78.0.1", WAIT);
            assert!(
                !con1.text().contains("from 10.78.0.3"),
                "VM 1 heard VM 3:\n{}",
                con1.text()
            );
            vm3.stop().unwrap();
            vm1.stop().unwrap();
        },
    );
}

#[test]
fn snapshot_restore_keeps_the_nic_working_and_announces() {
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kernel) = prerequisites() else {
        return;
    };
    isolated(
        "snapshot_restore_keeps_the_nic_working_and_announces",
        T,
        || {
            let ns = Ns::new("s");
            let tap = tap_name("s");
            let dir = tempfile::tempdir().unwrap();
            let snap = dir.path().join("snap");
            let con = Console::default();
            let cfg = net_vm(kernel, &con, &tap, 0x21, "net.ip=10.79.0.2");
            let mut vm = Vm::create(cfg.clone()).unwrap();
            ns.adopt(&tap, None, Some("10.79.0.1/24"));
            vm.start().unwrap();
            con.wait_for("NET-READY", WAIT);
            let out = ns.ping("10.79.0.2", 2);
            assert!(out.contains("2 received"), "ping before:\n{out}");
            vm.pause().unwrap();
            vm.snapshot(&snap).unwrap();
            let before = vm.nets()[0].lock().unwrap().stats();
            drop(vm); // closes the TAP, which the kernel then removes

            let mut vm = Vm::restore(cfg, &snap).unwrap();
            ns.adopt(&tap, None, Some("10.79.0.1/24"));
            // The announcement goes out on resume: watch for it on the namespace side.
            vm.resume().unwrap();
            let out = ns.ping("10.79.0.2", 3);
            assert!(
                out.contains("3 received"),
                "ping after restore:\n{out}\n{}",
                con.text()
            );
            let after = vm.nets()[0].lock().unwrap().stats();
            println!("before {before:?}\nafter {after:?}");
            assert_eq!(after.announces, 1);
            assert!(after.rx_frames > before.rx_frames && after.tx_frames > before.tx_frames);
            vm.stop().unwrap();
        },
    );
}

#[test]
fn forged_source_mac_is_dropped_and_counted() {
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kernel) = prerequisites() else {
        return;
    };
    isolated("forged_source_mac_is_dropped_and_counted", T, || {
        let ns = Ns::new("f");
        let tap = tap_name("f");
        let con = Console::default();
        let mut vm = Vm::create(net_vm(
            kernel,
            &con,
            &tap,
            0x31,
            "net.ip=10.80.0.2 net.forge=1",
        ))
        .unwrap();
        ns.adopt(&tap, None, Some("10.80.0.1/24"));
        vm.start().unwrap();
        con.wait_for("NET-FORGED sent=1", WAIT);
        // The NIC keeps working after the drop.
        let out = ns.ping("10.80.0.2", 1);
        assert!(out.contains("1 received"), "ping:\n{out}");
        let stats = vm.nets()[0].lock().unwrap().stats();
        assert_eq!(stats.tx_forged, 1, "{stats:?}");
        vm.stop().unwrap();
    });
}

#[test]
fn evil_guest_attacking_virtio_net_does_not_take_the_vmm_down() {
    use std::sync::Arc;
    use vinfra_vmm_core::devices::net::MemNetBackend;
    use vinfra_vmm_core::{DiskConfig, ExitReason};

    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    // Only KVM and the guest: the NIC's backend is in memory, no TAP, no root.
    if !kvm_or_skip() {
        return;
    }
    let Some(kernel) = guest("evil") else { return };
    isolated(
        "evil_guest_attacking_virtio_net_does_not_take_the_vmm_down",
        T,
        || {
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("disk.img");
            std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
            let backend = Arc::new(MemNetBackend::new());
            // Frames waiting for the guest, so the hostile receive buffers get used.
            let mut bcast = vec![0xffu8; 6];
            bcast.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 0x99, 0x08, 0x00]);
            bcast.resize(60, 0);
            for _ in 0..32 {
                backend.inject(&bcast);
            }
            let con = Console::default();
            let mut vm = Vm::create(config(kernel, &con).disk(DiskConfig::new(&img)).net(
                NetConfig::backend("mem", MacAddr::local(0x41), backend.clone()),
            ))
            .unwrap();
            vm.start().unwrap();
            let r = vm.wait_timeout(WAIT);
            let text = con.text();
            println!("{text}");
            assert!(text.contains("EVIL-DONE"), "console:\n{text}");
            assert_eq!(r, Some(ExitReason::Poweroff { code: 0 }));
            for case in [
                "tx_outside_ram",
                "tx_writable",
                "tx_oversized",
                "tx_loop",
                "tx_index_oob",
                "rx_outside_ram",
                "rx_read_only",
                "tx_flood",
            ] {
                assert!(
                    text.contains(&format!("EVIL net_{case} ")),
                    "{case} missing:\n{text}"
                );
            }
            assert!(
                text.contains("EVIL net_recovery used=1 needs_reset=0"),
                "console:\n{text}"
            );
            let stats = vm.nets()[0].lock().unwrap().stats();
            println!("nic stats: {stats:?}");
            assert!(
                stats.tx_malformed >= 2 && stats.tx_oversized >= 1,
                "{stats:?}"
            );
            assert!(stats.needs_reset >= 1, "{stats:?}");
            assert!(stats.rx_bad_chain >= 1, "{stats:?}");
            assert!(
                !backend.take_sent().is_empty(),
                "the recovery frame went out"
            );
        },
    );
}
