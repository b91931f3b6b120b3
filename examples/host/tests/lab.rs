//! `vinfra-lab` end to end: a 3-host cluster brought up (in network namespaces as root,
//! on loopback otherwise), every VM running on some host, then brought down: no host
//! process, namespace or bridge left. Also `up --foreground` ended by SIGINT, which
//! brings the lab down by itself.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vinfra_testkit::{guest, is_root, kvm_or_skip, run, skip};

const LAB: &str = env!("CARGO_BIN_EXE_vinfra-lab");

/// One lab at a time: their guests' vCPUs spin, and two cores are all there is.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lab number `up` chose (the first free one).
fn lab_id(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("lab.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let net = v["net"].as_object().unwrap();
    net.values().next().unwrap()["id"].to_string()
}

fn lab(dir: &Path, args: &[&str]) -> vinfra_testkit::Finished {
    run(
        Command::new(LAB).arg("--dir").arg(dir).args(args),
        Duration::from_secs(60),
    )
}

fn pids(dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(dir.join("lab.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| u32::try_from(h["pid"].as_u64().unwrap()).unwrap())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            != Some("Z")
    })
}

/// The `vinfra-vm` children of `hosts`.
fn vm_pids(hosts: &[u32]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let exe = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid.is_some_and(|p| hosts.contains(&p))
            && exe
                .split(|&b| b == 0)
                .next()
                .is_some_and(|e| e.ends_with(b"vinfra-vm"))
        {
            found.push(pid);
        }
    }
    found
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `status` shows every VM on some host.
fn wait_all_placed(dir: &Path, vms: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        // A foreground `up` may not have written its record yet. Look before `status`
        // runs: a record that appears while it runs does not make its failure wrong.
        let starting = !dir.join("lab.json").exists();
        let s = lab(dir, &["status"]);
        assert!(s.success() || starting, "{s}");
        let placed = s
            .stdout
            .lines()
            .filter(|l| l.starts_with("vm-") && l.contains("host "))
            .count();
        if placed == vms {
            return s.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "not every VM placed:\n{}",
            s.stdout
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn prerequisites() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !kvm_or_skip() {
        return None;
    }
    guest("workload")?;
    Some(
        ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

#[test]
fn a_three_host_lab_comes_up_runs_every_vm_and_goes_down_cleanly() {
    let Some(_one) = prerequisites() else {
        return;
    };
    let root = is_root();
    if !root {
        skip("network namespaces need root: the lab runs on loopback");
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let up = lab(&dir, &["up", "--hosts", "3", "--vms", "3"]);
    assert!(up.success(), "{up}");
    let id = lab_id(&dir);
    assert!(up.stdout.contains("3 hosts"), "{up}");
    let hosts = pids(&dir);
    assert_eq!(hosts.len(), 3);
    if root {
        for h in 1..=3 {
            assert!(netns_list().contains(&format!("vlab{id}-h{h}")));
        }
        // Each host has its VMotion interface on the lab's second bridge.
        let vmk = Command::new("ip")
            .args(["-n", &format!("vlab{id}-h1"), "-br", "addr", "show", "vmk1"])
            .output()
            .unwrap();
        let vmk = String::from_utf8_lossy(&vmk.stdout);
        assert!(vmk.contains(&format!("10.78.{id}.1/24")), "{vmk}");
    }
    let status = wait_all_placed(&dir, 3);
    assert_eq!(status.matches("running").count(), 3, "{status}");
    // A second `up` on the same folder is refused, and changes nothing.
    let again = lab(&dir, &["up", "--hosts", "1", "--vms", "0"]);
    assert!(!again.success() && again.stderr.contains("down"), "{again}");
    assert!(hosts.iter().all(|&p| alive(p)));

    // The VM processes (`vinfra-vm`, children of the hosts), which down waits for too.
    let vms = vm_pids(&hosts);
    assert_eq!(vms.len(), 3, "{vms:?}");
    let down = lab(&dir, &["down"]);
    assert!(down.success(), "{down}");
    assert!(down.stdout.contains("3 hosts stopped"), "{down}");
    assert!(hosts.iter().all(|&p| !alive(p)), "a host outlived down");
    assert!(vms.iter().all(|&p| !alive(p)), "a VM process outlived down");
    assert!(!netns_list().contains(&format!("vlab{id}-")));
    for bridge in [format!("vlab{id}"), format!("vlab{id}v")] {
        let link = Command::new("ip")
            .args(["link", "show", &bridge])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(!link.status.success(), "bridge {bridge} outlived down");
    }
    // Every host stopped by itself on SIGTERM (VMs stopped, volume unmounted).
    for h in 1..=3 {
        let events = std::fs::read_to_string(dir.join(format!("host{h}.events"))).unwrap();
        assert!(events.contains(r#""why":"Stopped""#), "host {h}: {events}");
    }
    let status = lab(&dir, &["status"]);
    assert!(
        !status.success() && status.stderr.contains("no lab here"),
        "{status}"
    );
}

#[test]
fn ctrl_c_of_a_foreground_lab_brings_it_down() {
    let Some(_one) = prerequisites() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let mut child = Command::new(LAB)
        .arg("--dir")
        .arg(&dir)
        .args([
            "up",
            "--hosts",
            "2",
            "--vms",
            "1",
            "--loopback",
            "--foreground",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_all_placed(&dir, 1);
    let hosts = pids(&dir);
    // SAFETY: kill(2) of the child this test started.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "up --foreground ignored SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(hosts.iter().all(|&p| !alive(p)), "a host outlived Ctrl-C");
    assert!(!dir.join("lab.json").exists());
}
