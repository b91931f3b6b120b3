//! The center against a host API served in this process by a fake host (no KVM, no
//! root: runs anywhere): a host task that outlives a restart of the center is followed
//! again by the new process and recorded once it ends, without being started twice; when
//! the host goes away its VM keeps its last known state, marked stale.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use support::Center;
use vinfra_host::api::{
    serve, ApiError, ApiToken, Console, HostCapacity, HostEvent, HostInfo, HostService,
    IncomingReady, IncomingRequest, PowerState, Result, TaskHandle, VmInfo, VmOp, VmSpec,
};

/// A host with one running VM whose operations never end on their own.
#[derive(Default)]
struct SlowHost {
    pending: Mutex<Vec<TaskHandle>>,
    started: AtomicUsize,
}

impl HostService for SlowHost {
    fn host_info(&self) -> Result<HostInfo> {
        Ok(HostInfo::new(
            1,
            "fake1",
            HostCapacity {
                cpus: 2,
                memory_mib: 4096,
            },
        ))
    }
    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        Ok(vec![self.vm("slow")?])
    }
    fn vm(&self, name: &str) -> Result<VmInfo> {
        if name != "slow" {
            return Err(ApiError::VmNotFound(name.into()));
        }
        let mut info = VmInfo::new(VmSpec::new("slow", "/k", 16), PowerState::Running);
        info.host = Some(1);
        Ok(info)
    }
    fn create_vm(&self, _: VmSpec) -> Result<VmInfo> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn delete_vm(&self, _: &str) -> Result<()> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn start_op(&self, name: &str, _: VmOp, task: TaskHandle) -> Result<()> {
        self.vm(name)?;
        self.started.fetch_add(1, Ordering::SeqCst);
        task.progress(0.5, "half way");
        self.pending.lock().unwrap().push(task);
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

#[test]
fn a_task_running_across_a_restart_is_followed_to_its_end() {
    let host = Arc::new(SlowHost::default());
    let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
    let server = serve("127.0.0.1:0".parse().unwrap(), token, host.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--host".to_string(),
        format!("fake-1=http://{}", server.local_addr()),
    ];
    let mut center = Center::start(dir.path(), &args);
    let admin = center.admin();
    center.wait("fake-1 connected", 20, || {
        center.ok(&admin, "GET", "/api/vcenter/host/fake-1", "", 200)["state"] == "connected"
    });
    center.wait("the VM slow on fake-1", 20, || {
        center.call(&admin, "GET", "/api/vcenter/vm/slow", "").1["host"] == "fake-1"
    });

    let started = center.ok(
        &admin,
        "POST",
        "/api/vcenter/vm/slow/power?action=shutdown",
        "",
        202,
    );
    let id = started["task"].as_u64().unwrap();
    center.wait("the task's progress", 20, || {
        center.ok(&admin, "GET", &format!("/api/cis/tasks/{id}"), "", 200)["message"] == "half way"
    });
    assert!(center.stop().unwrap().success());

    // Down: the host's task goes on. Back up: the task is still running, and followed.
    let center = Center::start(dir.path(), &args);
    let task = center.ok(&admin, "GET", &format!("/api/cis/tasks/{id}"), "", 200);
    assert_eq!(task["state"], "running", "{task}");
    for pending in host.pending.lock().unwrap().drain(..) {
        pending.succeed(serde_json::json!({"done": true}));
    }
    let task = center.task(&admin, id);
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["result"]["done"], true, "{task}");
    assert_eq!(task["user"], "admin");
    assert_eq!(host.started.load(Ordering::SeqCst), 1, "started once");
    let events = center.ok(&admin, "GET", "/api/vinfra/events?limit=1000", "", 200);
    let ended: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "task.succeeded" && e["data"]["task"] == id)
        .collect();
    assert_eq!(ended.len(), 1, "{events}");

    // The only host goes away: its VM keeps its last known state, marked stale.
    assert_eq!(
        center.ok(&admin, "GET", "/api/vcenter/vm/slow", "", 200)["stale"],
        false
    );
    server.stop();
    center.wait("slow stale", 20, || {
        center.ok(&admin, "GET", "/api/vcenter/vm/slow", "", 200)["stale"] == true
    });
    let vm = center.ok(&admin, "GET", "/api/vcenter/vm/slow", "", 200);
    assert_eq!(
        (vm["info"]["state"].as_str(), vm["host"].as_str()),
        (Some("running"), Some("fake-1")),
        "{vm}"
    );
    center.wait("fake-1 not responding", 20, || {
        center.ok(&admin, "GET", "/api/vcenter/host/fake-1", "", 200)["state"] == "not_responding"
    });
}
