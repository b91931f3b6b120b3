//! A center killed (SIGKILL) in the middle of a fully automated DRS pass, against two
//! fake hosts served in this process (no KVM, no root: runs anywhere): the pass had
//! started one migration and was asking a host for the second when it died. Started
//! again, the center has lost neither (the second was recorded before its host was
//! asked, and is found among the host's tasks), follows both to their end, and no VM is
//! ever asked to migrate twice: not by the new center's first pass while they run, nor
//! by one after they ended.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::Center;
use vinfra_host::api::{
    serve, ApiError, ApiToken, Console, HostCapacity, HostEvent, HostInfo, HostService,
    IncomingReady, IncomingRequest, PowerState, Result, TaskHandle, VmInfo, VmOp, VmSpec, VmStats,
};

/// What both fake hosts see: where each VM runs, every migration asked for, the ones
/// not yet ended.
#[derive(Default)]
struct Shared {
    vms: Mutex<BTreeMap<String, u32>>,
    asked: Mutex<Vec<String>>,
    pending: Mutex<Vec<(TaskHandle, String, u32)>>,
    /// Holds the second migration's request (the center dies meanwhile) until released.
    hold_second: AtomicBool,
}

struct FakeHost {
    id: u32,
    shared: Arc<Shared>,
}

impl FakeHost {
    fn info(&self, name: &str, host: u32) -> VmInfo {
        let mut info = VmInfo::new(VmSpec::new(name, "/k", 512), PowerState::Running);
        info.host = Some(host);
        if host == self.id {
            // Busy: DRS wants these spread.
            info.stats = Some(VmStats {
                cpu_percent: 90.0,
                rss_bytes: 512 << 20,
                ..VmStats::default()
            });
        }
        info
    }
}

impl HostService for FakeHost {
    fn host_info(&self) -> Result<HostInfo> {
        Ok(HostInfo::new(
            self.id,
            format!("fake{}", self.id),
            HostCapacity {
                cpus: 4,
                memory_mib: 8192,
            },
        ))
    }
    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        let vms = self.shared.vms.lock().unwrap().clone();
        Ok(vms.iter().map(|(n, &h)| self.info(n, h)).collect())
    }
    fn vm(&self, name: &str) -> Result<VmInfo> {
        let host = self.shared.vms.lock().unwrap().get(name).copied();
        host.map(|h| self.info(name, h))
            .ok_or_else(|| ApiError::VmNotFound(name.into()))
    }
    fn create_vm(&self, _: VmSpec) -> Result<VmInfo> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn delete_vm(&self, _: &str) -> Result<()> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()> {
        let VmOp::Migrate(req) = op else {
            return Err(ApiError::Unsupported("fake: migrations only".into()));
        };
        let to: u32 = req.to.parse().unwrap();
        let n = {
            let mut asked = self.shared.asked.lock().unwrap();
            asked.push(name.to_string());
            asked.len()
        };
        if n == 2 {
            // The center is killed while it waits for this answer.
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.shared.hold_second.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        task.progress(0.5, "copying memory");
        self.shared
            .pending
            .lock()
            .unwrap()
            .push((task, name.to_string(), to));
        Ok(())
    }
    fn console(&self, name: &str) -> Result<Console> {
        Err(ApiError::VmNotFound(name.into()))
    }
    fn events(&self, _: u64, _: usize) -> Result<Vec<HostEvent>> {
        Ok(Vec::new())
    }
    fn prepare_incoming(&self, r: IncomingRequest) -> Result<IncomingReady> {
        Err(ApiError::VmNotFound(r.vm))
    }
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_center_killed_mid_drs_pass_loses_no_migration_and_runs_none_twice() {
    let shared = Arc::new(Shared::default());
    shared.hold_second.store(true, Ordering::SeqCst);
    for vm in ["a", "b", "c", "d"] {
        shared.vms.lock().unwrap().insert(vm.to_string(), 1);
    }
    let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
    let servers: Vec<_> = (1..=2)
        .map(|id| {
            let host = Arc::new(FakeHost {
                id,
                shared: shared.clone(),
            });
            serve("127.0.0.1:0".parse().unwrap(), token.clone(), host).unwrap()
        })
        .collect();
    let args: Vec<String> = servers
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            [
                "--host".to_string(),
                format!("esx-{}=http://{}", i + 1, s.local_addr()),
            ]
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let center = Center::start(dir.path(), &args);
    let admin = center.admin();
    center.wait_hosts(&admin, 2);
    center.wait("the four VMs measured on esx-1", 20, || {
        let vms = center.ok(&admin, "GET", "/api/vcenter/vm?host=esx-1", "", 200);
        vms.as_array().unwrap().len() == 4
    });
    center.ok(
        &admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        r#"{"drs": {"automation": "fully_automated", "threshold": 5}}"#,
        200,
    );
    let pass = center.drs_pass(&admin);
    assert!(
        pass["recommendations"].as_array().unwrap().len() >= 2,
        "the imbalance asks for two migrations at least: {pass}"
    );

    // The pass: the first migration starts, the second's request is held; the center dies.
    let url = center.url.clone();
    let auth = admin.clone();
    let runner = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let _ = agent
            .post(&format!(
                "{url}/api/vcenter/cluster/cluster-1/drs?action=run"
            ))
            .header("vinfra-api-session-id", &auth)
            .send_empty();
    });
    wait("the second migration asked for", || {
        shared.asked.lock().unwrap().len() == 2
    });
    let pid = center.pid().unwrap();
    drop(center); // SIGKILL
    shared.hold_second.store(false, Ordering::SeqCst);
    runner.join().unwrap();
    wait("both host tasks started", || {
        shared.pending.lock().unwrap().len() == 2
    });
    let first_two = shared.asked.lock().unwrap().clone();

    // Up again: both tasks are there, running, each following its host task.
    let center = Center::start(dir.path(), &args);
    assert_ne!(center.pid(), Some(pid));
    let relocations = |center: &Center| -> Vec<serde_json::Value> {
        center
            .ok(&admin, "GET", "/api/cis/tasks?limit=100", "", 200)
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "vm.relocate")
            .cloned()
            .collect()
    };
    let tasks = relocations(&center);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for t in &tasks {
        assert_eq!(
            (t["state"].as_str(), t["user"].as_str()),
            (Some("running"), Some("drs")),
            "{t}"
        );
        assert!(first_two.iter().any(|vm| t["target"] == vm.as_str()), "{t}");
    }
    // A pass while they run asks for neither again.
    center.wait_hosts(&admin, 2);
    let ran = center.ok(
        &admin,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=run",
        "",
        200,
    );
    for vm in &first_two {
        assert!(
            ran["applied"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["vm"] != vm.as_str()),
            "{ran}"
        );
    }
    // The hosts finish: the VMs run on esx-2 and both tasks succeed.
    let ended: Vec<_> = shared.pending.lock().unwrap().drain(..).collect();
    for (task, vm, to) in ended {
        shared.vms.lock().unwrap().insert(vm, to);
        task.succeed(serde_json::json!({"downtime_ms": 12.0}));
    }
    for t in relocations(&center) {
        if first_two.iter().any(|vm| t["target"] == vm.as_str()) {
            let done = center.task(&admin, t["id"].as_u64().unwrap());
            assert_eq!(done["state"], "succeeded", "{done}");
        }
    }
    // A pass after they ended: no VM is asked to migrate twice, ever.
    center.wait("the moved VMs on esx-2", 20, || {
        first_two.iter().all(|vm| {
            center.ok(&admin, "GET", &format!("/api/vcenter/vm/{vm}"), "", 200)["host"] == "esx-2"
        })
    });
    center.ok(
        &admin,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=run",
        "",
        200,
    );
    let asked = shared.asked.lock().unwrap().clone();
    let mut unique = asked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        asked.len(),
        "a VM asked to migrate twice: {asked:?}"
    );
}
