//! The reference host's disk operations end to end, through its API, on a `vinfra-lab`
//! cluster of real `vinfra-host` processes (each VM a `vinfra-vm` child on KVM): a VM
//! made with a thin vmfs disk, its disk filled with the `disk` guest's host pattern,
//! snapshotted, cloned linked and full; the source and both clones boot on two hosts and
//! each guest checks the pattern; the clones' writes stay their own; a revert discards
//! what was written after the snapshot, and neither a revert nor a delete may pull
//! layers from under a linked clone. A VM with a NIC on a port group the host lacks is
//! refused with the port group's name. VMs with NICs on the lab's `vm-net` port group
//! ping each other across hosts. A running VM is snapshotted and backed up through its
//! process, and the backup restored as a new VM that boots; one of its disks is written
//! back into it (off) from the backup. A host that stops during a backup folds the
//! frozen disk back first.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vinfra_vmfs::disk::VirtualDisk;
use vinfra_vmfs::{FileDevice, MonotonicClock, MountOptions, Volume};

mod support;
use support::Lab;

/// The test's vmfs slot (hosts use 1..=N, the lab 15, VM children 16..63).
const TEST_SLOT: u32 = 14;
/// Sectors of the disk guest's host pattern (its default).
const SECTORS: u64 = 64;

fn host_word(s: u64, j: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation, reason = "the pattern wraps in u32")]
    let s32 = s as u32;
    #[allow(clippy::cast_possible_truncation, reason = "j < 128")]
    let j32 = j as u32;
    0x5eed_0000 ^ s32.wrapping_mul(0x9e37_79b1) ^ j32
}

/// Runs `f` with a mount of the lab (in `lab_dir`)'s volume of the test's own.
fn with_volume<T>(lab_dir: &std::path::Path, f: impl FnOnce(&Volume) -> T) -> T {
    with_volume_at(&volume_path(lab_dir), f)
}

/// The lab's volume (from `lab.json`, which `vinfra-lab down` removes; the volume stays).
fn volume_path(lab_dir: &std::path::Path) -> PathBuf {
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(lab_dir.join("lab.json")).unwrap()).unwrap();
    PathBuf::from(record["volume"].as_str().unwrap())
}

fn with_volume_at<T>(path: &std::path::Path, f: impl FnOnce(&Volume) -> T) -> T {
    let dev = Arc::new(FileDevice::open(path, false).unwrap());
    let mut mo = MountOptions::default();
    mo.pid = std::process::id();
    mo.name = "host_vm_ops".into();
    let volume = Volume::mount(dev, TEST_SLOT, &mo, Arc::new(MonotonicClock::new())).unwrap();
    let heartbeat = volume.spawn_heartbeat();
    let out = f(&volume);
    drop(heartbeat);
    volume.unmount().unwrap();
    out
}

/// Runs `f` on a VM's disk `0` through a mount of the lab's volume of the test's own.
fn with_disk<T>(lab: &Lab, vm: &str, f: impl FnOnce(&mut VirtualDisk) -> T) -> T {
    with_volume(&lab.path(), |volume| {
        // A child that just exited may hold its disk's locks a moment longer.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut disk = loop {
            match VirtualDisk::open(volume, &format!("/vms/{vm}/disk0.vmdk")) {
                Ok(d) => break d,
                Err(e) => {
                    assert!(Instant::now() < deadline, "open {vm}'s disk: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let out = f(&mut disk);
        disk.sync().unwrap();
        out
    })
}

/// The first word of each sector of `range` as the disk reads now.
fn first_words(disk: &VirtualDisk, range: std::ops::Range<u64>) -> Vec<u32> {
    range
        .map(|s| {
            let mut b = [0u8; 4];
            disk.read_at(&mut b, s * 512).unwrap();
            u32::from_le_bytes(b)
        })
        .collect()
}

impl Lab {
    fn create(&self, host: u32, name: &str, extra: Value) {
        let mut spec = json!({"name": name, "kernel": self.kernel, "memory_mib": 16,
                              "ha": {"priority": "disabled"}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        self.ok(host, "POST", "/vms", &spec.to_string(), 201);
    }

    fn succeeds(&self, host: u32, name: &str, op: &str, body: Value) -> Value {
        let t = self.op_with(host, name, op, &body.to_string());
        assert_eq!(t["state"], "success", "{op} {name} {body}: {t}");
        t
    }

    fn console_has(&self, host: u32, vm: &str, prefix: &str) -> bool {
        self.events(host, "console", vm).iter().any(|e| {
            e["data"]["line"]
                .as_str()
                .is_some_and(|l| l.starts_with(prefix))
        })
    }

    /// Deletes a VM that is off; a disk lock its ended process left (for up to a lease)
    /// is waited out.
    fn delete(&self, host: u32, vm: &str) {
        self.wait(&format!("{vm} deleted"), || {
            let (s, e) = self.send(host, "DELETE", &format!("/vms/{vm}"), "", true);
            assert!(
                s == 204
                    || (s == 409
                        && e["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("still locked")),
                "DELETE {vm}: {s} {e}"
            );
            s == 204
        });
    }

    /// Whether no host runs a VM process.
    fn quiet(&self) -> bool {
        (1..=u32::try_from(self.apis.len()).unwrap())
            .all(|h| self.ok(h, "GET", "/host", "", 200)["vms"]["running_here"] == 0)
    }

    /// Starts a `disk` guest VM and waits for its verdict and its exit.
    fn boot_disk_guest(&self, host: u32, vm: &str) {
        self.succeeds(host, vm, "start", json!({}));
        self.wait(&format!("{vm}'s disk check"), || {
            self.console_has(host, vm, "DISK-OK") || self.console_has(host, vm, "DISK-FAIL")
        });
        let lines: Vec<Value> = self.events(host, "console", vm);
        assert!(
            self.console_has(host, vm, "DISK-OK"),
            "{vm} on host {host}: {lines:?}"
        );
        // The guest powers off after its check, and HA's VM monitoring starts it again
        // (a process exit 0 may as well be a migration's end) until it gives up: a stop
        // through the API at a moment it runs, or no VM process on any host for 3 s, leaves
        // it off.
        let mut quiet_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "{vm} never stopped: {}",
                self.vm(1, vm)
            );
            // Between an exit and the restart the VM looks off for a moment: only a stop
            // that succeeded counts.
            let (s, t) = self.send(host, "POST", &format!("/vms/{vm}/stop"), "{}", true);
            if s == 202 {
                let id = t["task"].as_u64().unwrap();
                let mut state = Value::Null;
                self.wait("stop task", || {
                    state = self.ok(host, "GET", &format!("/tasks/{id}"), "", 200)["state"].clone();
                    state != "running"
                });
                if state == "success" {
                    std::thread::sleep(Duration::from_millis(500));
                    assert_eq!(self.vm(1, vm)["state"], "shut_off", "{vm} after its stop");
                    break;
                }
            }
            if !self.quiet() {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > Duration::from_secs(3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn disks_are_snapshotted_reverted_and_cloned_through_the_api() {
    let Some(lab) = Lab::up_guest(2, "disk", &[]) else {
        return;
    };
    // A VM with a 4 MiB thin disk; GET lists it.
    // Its resource settings (what DRS and HA admission read) are kept as given.
    let resources = json!({"cpu_mhz": 500, "shares": 2000, "reservation_mib": 3, "limit_mib": 8});
    lab.create(
        1,
        "tpl",
        json!({"disks": [{"size_mib": 4}], "resources": resources}),
    );
    let v = lab.vm(2, "tpl");
    assert_eq!(v["spec"]["disks"], json!([{"size_mib": 4}]), "{v}");
    assert_eq!(v["spec"]["resources"], resources, "{v}");
    // The host pattern the guest checks, written through vmfs.
    with_disk(&lab, "tpl", |d| {
        assert_eq!(d.capacity(), 4 << 20);
        for s in 0..SECTORS {
            let sector: Vec<u8> = (0..128)
                .flat_map(|j| host_word(s, j).to_le_bytes())
                .collect();
            d.write_at(&sector, s * 512).unwrap();
        }
    });
    lab.succeeds(1, "tpl", "snapshot", json!({"name": "s1"}));
    let (s, e) = lab.send(
        1,
        "POST",
        "/vms/tpl/snapshot",
        &json!({"name": "s1"}).to_string(),
        true,
    );
    assert_eq!(s, 422, "a second snapshot s1: {e}");

    // A linked clone (on a new snapshot of tpl) and a full one, asked of host 2.
    let t = lab.succeeds(2, "tpl", "clone", json!({"name": "lc"}));
    assert_eq!(t["result"]["base"], "clone-lc", "{t}");
    lab.succeeds(2, "tpl", "clone", json!({"name": "fc", "full": true}));
    for vm in ["lc", "fc"] {
        assert_eq!(lab.vm(1, vm)["spec"]["resources"], resources, "{vm}");
        let v = lab.vm(1, vm);
        assert_eq!(v["state"], "shut_off", "{v}");
        assert_eq!(v["spec"]["disks"], json!([{"size_mib": 4}]), "{v}");
    }
    let (s, e) = lab.send(
        2,
        "POST",
        "/vms/tpl/clone",
        &json!({"name": "lc"}).to_string(),
        true,
    );
    assert!(s == 409 && e["error"]["code"] == "vm_exists", "{s} {e}");

    // All three boot, on both hosts; each guest finds the pattern and writes its own.
    lab.boot_disk_guest(1, "tpl");
    lab.boot_disk_guest(2, "lc");
    lab.boot_disk_guest(1, "fc");
    let guest_first = |s: u64| !host_word(s, 0);
    let written: Vec<u32> = (SECTORS..2 * SECTORS).map(guest_first).collect();
    for vm in ["tpl", "lc", "fc"] {
        with_disk(&lab, vm, |d| {
            assert_eq!(first_words(d, SECTORS..2 * SECTORS), written, "{vm}");
            assert_eq!(first_words(d, 0..2)[0], host_word(0, 0), "{vm}");
        });
    }

    // Neither a revert below the clone's base nor a delete takes layers from lc.
    let (s, e) = lab.send(
        1,
        "POST",
        "/vms/tpl/revert",
        &json!({"snapshot": "s1"}).to_string(),
        true,
    );
    assert!(
        s == 409
            && e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("linked clone lc"),
        "{s} {e}"
    );
    let (s, e) = lab.send(2, "DELETE", "/vms/tpl", "", true);
    assert!(
        s == 409
            && e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("linked clone lc"),
        "{s} {e}"
    );
    // Revert to the clone's snapshot: tpl's boot's writes are gone, lc keeps its own.
    lab.succeeds(2, "tpl", "revert", json!({}));
    with_disk(&lab, "tpl", |d| {
        assert_eq!(first_words(d, SECTORS..2 * SECTORS), vec![0; 64]);
        assert_eq!(first_words(d, 0..1), vec![host_word(0, 0)]);
    });
    with_disk(&lab, "lc", |d| {
        assert_eq!(first_words(d, SECTORS..2 * SECTORS), written);
    });
    // The reverted VM boots again on its snapshot.
    lab.boot_disk_guest(2, "tpl");

    // A NIC on a port group host 1 lacks (it has vm-net only): refused, naming it; GET shows its MAC.
    lab.create(1, "nic", json!({"nics": [{"portgroup": "dmz"}]}));
    let v = lab.vm(1, "nic");
    let mac = v["spec"]["nics"][0]["mac"].as_str().unwrap().to_string();
    assert!(mac.starts_with("02:") && mac.len() == 17, "{v}");
    let (s, e) = lab.send(1, "POST", "/vms/nic/start", "{}", true);
    assert!(
        s == 422 && e["error"]["message"].as_str().unwrap().contains("\"dmz\""),
        "{s} {e}"
    );
    assert_eq!(lab.vm(2, "nic")["state"], "shut_off");

    // Deleting the clone first frees the source.
    for vm in ["lc", "fc", "tpl", "nic"] {
        lab.delete(1, vm);
    }
    assert_eq!(lab.ok(2, "GET", "/vms", "", 200), json!([]));
}

/// The line of `vm`'s console on `host` that starts with `prefix`, once it is there.
/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

/// Asserts that `op` on VM `w` with `body` is refused with 422 naming `field`.
fn refused_on(lab: &Lab, op: &str, body: &Value, field: &str) {
    let (s, e) = lab.send(1, "POST", &format!("/vms/w/{op}"), &body.to_string(), true);
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        s == 422 && message.starts_with(&format!("{field}:")),
        "{op} {body}: {s} {e}"
    );
}

fn console_line(lab: &Lab, host: u32, vm: &str, prefix: &str) -> String {
    let mut line = String::new();
    lab.wait(&format!("{prefix} from {vm}"), || {
        if let Some(e) = lab.events(host, "console", vm).iter().find(|e| {
            e["data"]["line"]
                .as_str()
                .is_some_and(|l| l.starts_with(prefix))
        }) {
            line = e["data"]["line"].as_str().unwrap().to_string();
        }
        !line.is_empty()
    });
    line
}

#[test]
fn vms_on_two_hosts_talk_on_the_vm_port_group() {
    let Some(lab) = Lab::up_guest(2, "net", &[]) else {
        return;
    };
    // Each host's switch has vm-net on a VXLAN to the other (vinfra-lab as root).
    lab.create(
        1,
        "echo",
        json!({"nics": [{"portgroup": "vm-net"}], "cmdline": "net.ip=192.168.77.2"}),
    );
    lab.create(
        1,
        "pinger",
        json!({"nics": [{"portgroup": "vm-net", "mac": "02:00:00:77:00:01"}],
               "cmdline": "net.ip=192.168.77.1 net.ping=192.168.77.2:5"}),
    );
    lab.succeeds(2, "echo", "start", json!({}));
    let ready = console_line(&lab, 2, "echo", "NET-READY");
    let mac = lab.vm(1, "echo")["spec"]["nics"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ready.contains(&format!("mac={mac}")),
        "{ready} (GET: {mac})"
    );
    lab.succeeds(1, "pinger", "start", json!({}));
    let ready = console_line(&lab, 1, "pinger", "NET-READY");
    assert!(ready.contains("mac=02:00:00:77:00:01"), "{ready}");
    let ping = console_line(&lab, 1, "pinger", "NET-PING ");
    assert_eq!(
        ping, "NET-PING sent=5 received=5",
        "pinger on host 1 to echo on host 2"
    );
    assert!(
        lab.events(2, "console", "echo")
            .iter()
            .any(|e| e["data"]["line"]
                .as_str()
                .is_some_and(|l| l.starts_with("NET-RX icmp echo from 192.168.77.1"))),
        "echo saw no ping"
    );
    lab.succeeds(2, "echo", "stop", json!({}));
    lab.succeeds(1, "pinger", "stop", json!({}));
    for vm in ["echo", "pinger"] {
        lab.delete(2, vm);
    }
}

#[test]
fn a_running_vm_is_snapshotted_and_backed_up_through_its_process() {
    let Some(lab) = Lab::up_guest(1, "workload", &[]) else {
        return;
    };
    lab.create(
        1,
        "w",
        json!({"disks": [{"size_mib": 2}], "cmdline": "workload.mib=1"}),
    );
    let marker = 0xabcd_1234u32.to_le_bytes();
    with_disk(&lab, "w", |d| d.write_at(&marker, 100 * 512).unwrap());
    lab.succeeds(1, "w", "start", json!({}));
    lab.wait("w ready", || lab.console_has(1, "w", "VINFRA-READY"));

    // The VM's disk and console I/O, as its process counts them (issue 13's statistics).
    let typed = "dwrite 3 7\ndread 3\n";
    lab.type_in(1, "w", typed);
    lab.wait("w's disk answers", || lab.console_has(1, "w", "DREAD 3 7"));
    // The counts are the VM process's copy, refreshed every 10 ms: the console line may
    // be newer.
    let mut st = Value::Null;
    lab.wait("w's I/O counts", || {
        st = lab.vm(1, "w")["stats"].clone();
        st["disk_reads"].as_u64() >= Some(1) && st["console_bytes"].as_u64() > Some(30)
    });
    assert!(st["disk_writes"].as_u64() >= Some(1), "{st}");
    assert!(st["disk_reads"].as_u64() >= Some(1), "{st}");
    assert!(st["disk_written_bytes"].as_u64() >= Some(512), "{st}");
    assert!(st["disk_read_bytes"].as_u64() >= Some(512), "{st}");
    assert_eq!(
        st["console_in_bytes"].as_u64(),
        Some(typed.len() as u64),
        "{st}"
    );
    assert!(st["console_bytes"].as_u64() > Some(30), "{st}");

    // A backup of the running VM, restored as a new VM that boots.
    let repo = lab.dir.path().join("backups").display().to_string();
    let t = lab.succeeds(1, "w", "backup", json!({"repository": repo}));
    assert!(t["result"]["backup"].is_string(), "{t}");
    assert_eq!(lab.vm(1, "w")["state"], "running");
    lab.succeeds(1, "w", "restore", json!({"repository": repo, "name": "wr"}));
    let v = lab.vm(1, "wr");
    assert_eq!(v["state"], "shut_off", "{v}");
    assert_eq!(v["spec"]["disks"], json!([{"size_mib": 2}]), "{v}");
    let (s, e) = lab.send(
        1,
        "POST",
        "/vms/w/restore",
        &json!({"repository": repo, "name": "wr"}).to_string(),
        true,
    );
    assert!(s == 409 && e["error"]["code"] == "vm_exists", "{s} {e}");
    with_disk(&lab, "wr", |d| {
        let mut b = [0u8; 4];
        d.read_at(&mut b, 100 * 512).unwrap();
        assert_eq!(b, marker);
    });
    lab.succeeds(1, "wr", "start", json!({}));
    lab.wait("wr ready", || lab.console_has(1, "wr", "VINFRA-READY"));
    lab.succeeds(1, "wr", "stop", json!({}));
    lab.delete(1, "wr");
    // Disks that are not the VM's are named as such; a disk goes back only into a VM
    // that is off.
    for (op, body, field) in [
        ("backup", json!({"repository": repo, "disks": [3]}), "disks"),
        ("backup", json!({"repository": repo, "disks": []}), "disks"),
    ] {
        refused_on(&lab, op, &body, field);
    }
    let (s, e) = lab.send(
        1,
        "POST",
        "/vms/w/restore-disk",
        &json!({"repository": repo, "disk": 0}).to_string(),
        true,
    );
    assert!(s == 409 && e["error"]["code"] == "wrong_state", "{s} {e}");
    // The child holds the disk: it takes the snapshot, and the VM runs on.
    let t = lab.succeeds(1, "w", "snapshot", json!({"name": "hot"}));
    assert_eq!(t["result"]["layers"], 2, "{t}");
    let v = lab.vm(1, "w");
    assert_eq!(v["state"], "running");
    // The VM lists its snapshots, with when they were taken.
    let listed = v["snapshots"].clone();
    assert_eq!(listed[0]["name"], "hot", "{v}");
    assert!(
        listed[0]["taken_ms"].as_u64() > Some(1_700_000_000_000),
        "{v}"
    );
    // What needs the VM off says so.
    for (op, body) in [("revert", json!({})), ("clone", json!({"name": "w2"}))] {
        let (s, e) = lab.send(1, "POST", &format!("/vms/w/{op}"), &body.to_string(), true);
        assert!(
            s == 409 && e["error"]["code"] == "wrong_state",
            "{op}: {s} {e}"
        );
    }
    lab.succeeds(1, "w", "stop", json!({}));
    // Disk 0 written back from the backup: the marker the backup holds returns, and a
    // grain the backup holds as zero reads zero again; the VM's snapshot stays.
    let bad = 0xdead_beefu32.to_le_bytes();
    with_disk(&lab, "w", |d| {
        d.write_at(&bad, 100 * 512).unwrap();
        d.write_at(&bad, 2000 * 512).unwrap();
    });
    for (body, field) in [
        (json!({"repository": repo, "disk": 1}), "disk"),
        (
            json!({"repository": repo, "disk": 0, "backup": "00"}),
            "backup",
        ),
    ] {
        refused_on(&lab, "restore-disk", &body, field);
    }
    // A restore that fails half way (a copy of the repository whose packs are damaged)
    // leaves the disk as it was: its redo log is reverted.
    let damaged = lab.dir.path().join("damaged");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&repo)
        .arg(&damaged)
        .status()
        .unwrap();
    assert!(copied.success());
    let mut packs = 0;
    for entry in walk(&damaged.join("data")) {
        // A byte in every 8: whatever a pack holds where (small compressed chunks too).
        let mut bytes = std::fs::read(&entry).unwrap();
        for b in bytes.iter_mut().step_by(8) {
            *b ^= 0x40;
        }
        std::fs::write(&entry, bytes).unwrap();
        packs += 1;
    }
    assert!(packs > 0);
    let (s, e) = lab.send(
        1,
        "POST",
        "/vms/w/restore-disk",
        &json!({"repository": damaged.display().to_string(), "disk": 0}).to_string(),
        true,
    );
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        s == 500 && message.contains("authentication failed"),
        "{s} {e}"
    );
    with_disk(&lab, "w", |d| {
        let mut b = [0u8; 4];
        d.read_at(&mut b, 100 * 512).unwrap();
        assert_eq!(b, bad, "a failed restore changed the disk");
        assert_eq!(d.chain().len(), 2, "{:?}", d.chain());
    });
    let t = lab.succeeds(
        1,
        "w",
        "restore-disk",
        json!({"repository": repo, "disk": 0}),
    );
    assert_eq!(t["result"]["zeroed_bytes"], 65536, "{t}");
    assert!(t["result"]["written_bytes"].as_u64() > Some(0), "{t}");
    with_disk(&lab, "w", |d| {
        let mut b = [0u8; 4];
        d.read_at(&mut b, 100 * 512).unwrap();
        assert_eq!(b, marker);
        d.read_at(&mut b, 2000 * 512).unwrap();
        assert_eq!(b, [0; 4]);
        assert_eq!(d.chain().len(), 2, "{:?}", d.chain());
    });
    assert!(
        !lab.events(1, "vm_disk_restored", "w").is_empty(),
        "no vm_disk_restored event"
    );
    let t = lab.succeeds(1, "w", "revert", json!({"snapshot": "hot"}));
    assert_eq!(t["result"]["snapshot"], "hot", "{t}");
    with_disk(&lab, "w", |d| {
        assert_eq!(d.chain().len(), 2, "{:?}", d.chain())
    });
    lab.succeeds(1, "w", "start", json!({}));
    lab.succeeds(1, "w", "stop", json!({}));
    // Peers' HA readings hold the VM's ha.json for moments (shared reads) while the delete
    // comes: the delete waits them out (it once failed the request with "locked").
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (lab_dir, stop) = (lab.path(), stop.clone());
        std::thread::spawn(move || {
            with_volume(&lab_dir, |volume| {
                let mut held = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match volume.open("/vms/w/ha.json", vinfra_vmfs::LockMode::SharedRead) {
                        Ok(f) => {
                            held += 1;
                            std::thread::sleep(Duration::from_millis(200));
                            f.close().unwrap();
                        }
                        Err(vinfra_vmfs::Error::Locked { .. }) => {}
                        // Gone (or going): the delete went through.
                        Err(_) => break,
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                held
            })
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    lab.delete(1, "w");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
}

/// VM `w` (a 2 MiB disk, the `workload` guest) made and started on host 1, once ready.
fn start_w(lab: &Lab) {
    lab.create(
        1,
        "w",
        json!({"disks": [{"size_mib": 2}], "cmdline": "workload.mib=1"}),
    );
    lab.succeeds(1, "w", "start", json!({}));
    lab.wait("w ready", || lab.console_has(1, "w", "VINFRA-READY"));
}

/// A backup repository in the lab's folder with the cluster's password and the key
/// derivation `kdf` (costly ones make a backup's thread take a while to open it).
fn slow_repository(lab: &Lab, kdf: vinfra_vcb::KdfParams) -> PathBuf {
    let repo = lab.dir.path().join("slow-backups");
    std::fs::create_dir_all(&repo).unwrap();
    let password =
        vinfra_host::cluster::backup::password_from_key_file(&lab.path().join("cluster.key"))
            .unwrap();
    let mut opts = vinfra_vcb::InitOptions::default();
    opts.kdf = kdf;
    vinfra_vcb::Repository::init(vinfra_vcb::LocalDir::open(&repo).unwrap(), &password, &opts)
        .unwrap();
    repo
}

/// A backup that keeps its host busy for longer than half a lease (here a repository
/// whose argon2id takes seconds to open; a large disk takes as long to store) leaves the
/// VMs of that host running: the host goes on telling their processes that its lease
/// holds (they stop after half a lease without word) while the backup works.
#[test]
fn a_slow_backup_leaves_the_vms_of_its_host_running() {
    let Some(lab) = Lab::up_guest(1, "workload", &["--lease-ms", "2000"]) else {
        return;
    };
    start_w(&lab);

    // The repository, with the cluster's password and a costly key derivation.
    let t0 = Instant::now();
    let repo = slow_repository(&lab, vinfra_vcb::KdfParams::new(256 << 10, 16, 1));
    let kdf = t0.elapsed();
    assert!(
        kdf > Duration::from_millis(1500),
        "opening the repository takes {kdf:?}: not the half lease (1 s) and more this test needs"
    );

    // The request is answered once the disks are frozen; the repository work goes on.
    let t0 = Instant::now();
    let started = lab.ok(
        1,
        "POST",
        "/vms/w/backup",
        &json!({"repository": repo.display().to_string()}).to_string(),
        202,
    );
    let answered = t0.elapsed();
    assert!(
        answered < kdf / 2,
        "the backup was answered after {answered:?}: the repository work held the request"
    );
    // Meanwhile the VM's other operations wait for it, and say so.
    let (s, e) = lab.send(1, "POST", "/vms/w/stop", "{}", true);
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        s == 409 && e["error"]["code"] == "wrong_state" && message.contains("backup"),
        "{s} {e}"
    );
    let t = lab.task(1, started["task"].as_u64().unwrap());
    assert_eq!(t["state"], "success", "{t}");
    assert!(t["result"]["backup"].is_string(), "{t}");
    let exited = lab.events(1, "vm_exited", "w");
    assert!(exited.is_empty(), "w stopped during the backup: {exited:?}");
    assert_eq!(lab.vm(1, "w")["state"], "running");
    // Restoring it and forgetting backups open the same repository: the VM runs on.
    lab.succeeds(
        1,
        "w",
        "restore",
        json!({"repository": repo.display().to_string(), "name": "wr"}),
    );
    let forgot = lab.ok(
        1,
        "POST",
        "/backups/forget",
        &json!({"repository": repo.display().to_string(), "vm": "w", "keep_last": 1}).to_string(),
        200,
    );
    assert_eq!(forgot["forgotten"], json!([]), "{forgot}");
    let exited = lab.events(1, "vm_exited", "w");
    assert!(
        exited.is_empty(),
        "w stopped during a restore or forget: {exited:?}"
    );
    assert_eq!(lab.vm(1, "w")["state"], "running");
}

/// An operation asked for right after a start waits for the VM's process, which answers
/// on its control socket only once its VM runs (here a second after the start, behind a
/// wrapper that sleeps before it runs `vinfra-vm`; on a loaded machine it is the
/// volume's mount and the VM's build). It was refused before ("connect to the VM's
/// control socket …: No such file or directory"), and so was a backup job's first run.
#[test]
fn an_operation_right_after_a_start_waits_for_the_vm_process() {
    let wrapper_dir = tempfile::tempdir().unwrap();
    let wrapper = wrapper_dir.path().join("slow-vinfra-vm");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsleep 1\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_vinfra-vm")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let env = [("VINFRA_VM_BIN", wrapper.as_os_str())];
    let Some(lab) = Lab::up_guest_env(1, "workload", &[], &env) else {
        return;
    };
    lab.create(
        1,
        "w",
        json!({"disks": [{"size_mib": 2}], "cmdline": "workload.mib=1"}),
    );
    lab.succeeds(1, "w", "start", json!({}));
    let t0 = Instant::now();
    let t = lab.succeeds(1, "w", "snapshot", json!({"name": "early"}));
    assert_eq!(t["result"]["snapshot"], "early", "{t}");
    assert!(
        t0.elapsed() > Duration::from_millis(300),
        "the snapshot did not wait for the VM's process (the wrapper sleeps 1 s)"
    );
    let repo = lab.dir.path().join("backups").display().to_string();
    let t = lab.succeeds(1, "w", "backup", json!({"repository": repo}));
    assert!(t["result"]["backup"].is_string(), "{t}");
    lab.wait("w ready", || lab.console_has(1, "w", "VINFRA-READY"));
    assert_eq!(lab.vm(1, "w")["state"], "running");
}

/// A host that stops while a backup of one of its VMs is under way cancels the backup
/// and folds the VM's disk back before it stops the VM: no redo log of the backup stays
/// on the volume. Before, each such stop left one more layer under the disk.
#[test]
fn a_host_that_stops_during_a_backup_folds_the_disks_back() {
    let Some(lab) = Lab::up_guest(1, "workload", &[]) else {
        return;
    };
    start_w(&lab);
    // A repository whose key takes a while to derive: the stop comes while the backup's
    // thread is at it, with the disk frozen.
    let repo = slow_repository(&lab, vinfra_vcb::KdfParams::new(256 << 10, 6, 1));
    lab.ok(
        1,
        "POST",
        "/vms/w/backup",
        &json!({"repository": repo.display().to_string()}).to_string(),
        202,
    );

    let volume = volume_path(&lab.path());
    let down = vinfra_testkit::run(
        std::process::Command::new(support::LAB)
            .arg("--dir")
            .arg(lab.path())
            .arg("down"),
        Duration::from_secs(30),
    );
    assert!(down.success(), "{down}");
    let chain = with_volume_at(&volume, |v| {
        VirtualDisk::open(v, "/vms/w/disk0.vmdk")
            .unwrap()
            .chain()
            .to_vec()
    });
    assert_eq!(chain.len(), 1, "redo logs left: {chain:?}");
    // The stop came during the backup (else this test proves nothing), and the host
    // waited for it.
    let log = std::fs::read_to_string(lab.path().join("host1.log")).unwrap();
    assert!(
        log.contains("the host stopped during the backup"),
        "the backup was not under way at the stop: {log}"
    );
    let events = std::fs::read_to_string(lab.path().join("host1.events")).unwrap();
    assert!(
        !events.contains("backup_abandoned"),
        "the host gave up waiting for the backup: {events}"
    );
}
