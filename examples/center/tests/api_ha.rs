//! The center's HA policy against three fake hosts served in this process (no KVM, no
//! root: runs anywhere). The hosts share one VM table, as real hosts share the volume:
//! each reports every VM, a start runs the VM on the host asked, a patch rewrites its HA
//! settings. Admission control refuses the power-on that would break the failures to
//! tolerate, with the reason, admits what fits and everything when it is off;
//! `GET …/ha` answers the capacity; `PATCH /api/vcenter/vm/{vm}` reaches a host, is
//! refused to read-only users and names the field of bad input.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use support::Center;
use vinfra_host::api::{
    serve, ApiError, ApiToken, Console, HostCapacity, HostEvent, HostInfo, HostService,
    IncomingReady, IncomingRequest, PowerState, Result, ServerHandle, TaskHandle, VmInfo, VmOp,
    VmPatch, VmSpec,
};

type Vms = Arc<Mutex<BTreeMap<String, VmInfo>>>;

/// One host of 8 CPUs and 2 GiB: 3 slots of a VM reserving 512 MiB (536 with overhead).
struct FakeHost {
    id: u32,
    vms: Vms,
    patches: Arc<Mutex<Vec<(String, VmPatch)>>>,
}

impl HostService for FakeHost {
    fn host_info(&self) -> Result<HostInfo> {
        Ok(HostInfo::new(
            self.id,
            format!("fake{}", self.id),
            HostCapacity {
                cpus: 8,
                memory_mib: 2048,
            },
        ))
    }
    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        Ok(self.vms.lock().unwrap().values().cloned().collect())
    }
    fn vm(&self, name: &str) -> Result<VmInfo> {
        self.vms
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::VmNotFound(name.into()))
    }
    fn create_vm(&self, _: VmSpec) -> Result<VmInfo> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn delete_vm(&self, _: &str) -> Result<()> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()> {
        let mut vms = self.vms.lock().unwrap();
        let vm = vms
            .get_mut(name)
            .ok_or_else(|| ApiError::VmNotFound(name.into()))?;
        match op {
            VmOp::Start => {
                vm.state = PowerState::Running;
                vm.host = Some(self.id);
                task.succeed(json!({"host": self.id}));
                Ok(())
            }
            _ => Err(ApiError::Unsupported("fake".into())),
        }
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
    fn patch_vm(&self, name: &str, patch: VmPatch) -> Result<VmInfo> {
        let mut vms = self.vms.lock().unwrap();
        let vm = vms
            .get_mut(name)
            .ok_or_else(|| ApiError::VmNotFound(name.into()))?;
        let ha = patch.ha.clone().unwrap_or_default();
        if let Some(p) = ha.priority {
            vm.spec.ha.priority = p;
        }
        if let Some(r) = ha.isolation_response {
            vm.spec.ha.isolation_response = r;
        }
        self.patches.lock().unwrap().push((name.into(), patch));
        Ok(vm.clone())
    }
}

/// A VM of 512 MiB reserving all of it, running on host `on` or off.
fn vm(name: &str, on: Option<u32>) -> VmInfo {
    let mut spec = VmSpec::new(name, "/guest.elf", 512);
    spec.resources.reservation_mib = 512;
    let state = if on.is_some() {
        PowerState::Running
    } else {
        PowerState::ShutOff
    };
    let mut info = VmInfo::new(spec, state);
    info.host = on;
    info
}

struct Fixture {
    center: Center,
    admin: String,
    vms: Vms,
    patches: Arc<Mutex<Vec<(String, VmPatch)>>>,
    _servers: Vec<ServerHandle>,
    _dir: tempfile::TempDir,
}

/// Five running VMs over three hosts (9 slots), web-6 and web-7 off.
fn fixture() -> Fixture {
    let mut table = BTreeMap::new();
    for i in 1..=5u32 {
        let name = format!("web-{i}");
        table.insert(name.clone(), vm(&name, Some((i - 1) % 3 + 1)));
    }
    for name in ["web-6", "web-7"] {
        table.insert(name.to_string(), vm(name, None));
    }
    let vms: Vms = Arc::new(Mutex::new(table));
    let patches = Arc::new(Mutex::new(Vec::new()));
    let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    let mut servers = Vec::new();
    for id in 1..=3 {
        let host = Arc::new(FakeHost {
            id,
            vms: vms.clone(),
            patches: patches.clone(),
        });
        let server = serve("127.0.0.1:0".parse().unwrap(), token.clone(), host).unwrap();
        args.push("--host".to_string());
        args.push(format!("esx-{id}=http://{}", server.local_addr()));
        servers.push(server);
    }
    let center = Center::start(dir.path(), &args);
    let admin = center.admin();
    center.wait_hosts(&admin, 3);
    center.wait("the 7 VMs with their hosts", 20, || {
        let vms = center.ok(
            &admin,
            "GET",
            "/api/vcenter/vm?power_state=running",
            "",
            200,
        );
        vms.as_array().unwrap().len() == 5
            && vms
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["host"].is_string())
    });
    Fixture {
        center,
        admin,
        vms,
        patches,
        _servers: servers,
        _dir: dir,
    }
}

fn set_ha(f: &Fixture, ha: Value) {
    f.center.ok(
        &f.admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        &json!({ "ha": ha }).to_string(),
        200,
    );
}

fn running(f: &Fixture) -> usize {
    f.center
        .ok(
            &f.admin,
            "GET",
            "/api/vcenter/vm?power_state=running",
            "",
            200,
        )
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn admission_control_refuses_what_breaks_the_failures_to_tolerate() {
    let f = fixture();
    let c = &f.center;
    let ha = c.ok(
        &f.admin,
        "GET",
        "/api/vcenter/cluster/cluster-1/ha",
        "",
        200,
    );
    // Defaults: admission control on, 1 failure, slots. 9 slots, 6 after one failure.
    assert_eq!(ha["admission_control"], true, "{ha}");
    assert_eq!(ha["policy"], "slots", "{ha}");
    assert_eq!(
        (
            &ha["failures_asked"],
            &ha["failures_tolerated"],
            &ha["satisfied"]
        ),
        (&json!(1), &json!(1), &json!(true)),
        "{ha}"
    );
    assert_eq!(ha["slots"]["slot_memory_mib"], 536, "{ha}");
    assert_eq!(
        (
            &ha["slots"]["total"],
            &ha["slots"]["used"],
            &ha["slots"]["failover"]
        ),
        (&json!(9), &json!(5), &json!(6)),
        "{ha}"
    );
    assert_eq!(ha["hosts"].as_array().unwrap().len(), 3, "{ha}");
    assert_eq!(ha["hosts"][0]["state"], "connected", "{ha}");

    // Two failures asked: 3 slots left for 6 VMs. Refused with the reason; nothing runs.
    set_ha(
        &f,
        json!({"admission_control": true, "failures_tolerated": 2}),
    );
    let (status, e) = c.call(
        &f.admin,
        "POST",
        "/api/vcenter/vm/web-6/power?action=start",
        "",
    );
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["kind"], "ha_admission_refused", "{e}");
    let why = e["error"]["message"].as_str().unwrap();
    assert!(
        why.starts_with(
            "powering on web-6 (512 MiB reserved) would leave 1 host failure tolerated, \
             the cluster's HA policy asks 2"
        ),
        "{why}"
    );
    assert_eq!(
        f.vms.lock().unwrap()["web-6"].state,
        PowerState::ShutOff,
        "refused: no host was asked"
    );
    let ha = c.ok(
        &f.admin,
        "GET",
        "/api/vcenter/cluster/cluster-1/ha",
        "",
        200,
    );
    assert_eq!(ha["satisfied"], false, "{ha}");
    assert_eq!(ha["slots"]["failover"], 3, "{ha}");
    let events = c.ok(&f.admin, "GET", "/api/vinfra/events?target=web-6", "", 200);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "vm.power_on_refused" && e["message"] == why),
        "{events}"
    );

    // One failure: the sixth VM fits (6 slots after one failure), also on a named host.
    set_ha(
        &f,
        json!({"admission_control": true, "failures_tolerated": 1}),
    );
    c.op(
        &f.admin,
        "/api/vcenter/vm/web-6/power?action=start&host=esx-3",
        "",
    );
    c.wait("web-6 running", 20, || running(&f) == 6);
    // The seventh does not: 7 VMs, 6 slots after one failure.
    let (status, e) = c.call(
        &f.admin,
        "POST",
        "/api/vcenter/vm/web-7/power?action=start",
        "",
    );
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("powering on web-7 (512 MiB reserved) would leave 0 host failures tolerated, the cluster's HA policy asks 1"),
        "{e}"
    );
    // The percentage policy measures reservations: 7 × 536 MiB of 6 GiB leaves 39 %.
    set_ha(
        &f,
        json!({"admission_control": true, "failures_tolerated": 1, "policy": "percentage",
               "cpu_failover_percent": 25, "memory_failover_percent": 50}),
    );
    let (status, e) = c.call(
        &f.admin,
        "POST",
        "/api/vcenter/vm/web-7/power?action=start",
        "",
    );
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keeps 25 % and 50 % free for failover"),
        "{e}"
    );
    // A percentage over 100 names its field; nothing changes.
    let (status, e) = c.call(
        &f.admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        r#"{"ha": {"admission_control": true, "failures_tolerated": 1, "memory_failover_percent": 101}}"#,
    );
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (422, Some("ha.memory_failover_percent")),
        "{e}"
    );
    let ha = c.ok(
        &f.admin,
        "GET",
        "/api/vcenter/cluster/cluster-1/ha",
        "",
        200,
    );
    assert_eq!(
        (
            &ha["policy"],
            &ha["percentage"]["memory_asked_percent"],
            &ha["percentage"]["memory_capacity_mib"],
        ),
        (&json!("percentage"), &json!(50), &json!(3 * 2048)),
        "{ha}"
    );
    assert_eq!(ha["slots"]["used"], 6, "{ha}");

    // Admission control off: everything is admitted.
    set_ha(
        &f,
        json!({"admission_control": false, "failures_tolerated": 2}),
    );
    c.op(&f.admin, "/api/vcenter/vm/web-7/power?action=start", "");
    c.wait("web-7 running", 20, || running(&f) == 7);
    let ha = c.ok(
        &f.admin,
        "GET",
        "/api/vcenter/cluster/cluster-1/ha",
        "",
        200,
    );
    assert_eq!(
        (&ha["admission_control"], &ha["failures_tolerated"]),
        (&json!(false), &json!(0)),
        "{ha}"
    );
}

#[test]
fn restart_priority_is_patched_through_a_host_by_operators_only() {
    let f = fixture();
    let c = &f.center;
    c.ok(
        &f.admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "ro", "role": "read_only", "password": "read-only-pw"}"#,
        201,
    );
    c.ok(
        &f.admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "op", "role": "operator", "password": "operator-pw"}"#,
        201,
    );
    let ro = c.login("ro", "read-only-pw");
    let op = c.login("op", "operator-pw");
    let body = r#"{"ha": {"restart_priority": "high", "isolation_response": "shut_down"}}"#;

    let (status, e) = c.call(&ro, "PATCH", "/api/vcenter/vm/web-1", body);
    assert_eq!(
        (status, e["error"]["kind"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    for (bad, field) in [
        (r#"{"ha": {"priority": "urgent"}}"#, "ha.priority"),
        (
            r#"{"ha": {"isolation_response": "panic"}}"#,
            "ha.isolation_response",
        ),
        (r#"{"ha": {"colour": "red"}}"#, "ha.colour"),
        (r#"{"memory_mib": 64}"#, "memory_mib"),
        (r#"{"ha": {}}"#, "ha"),
    ] {
        let (status, e) = c.call(&op, "PATCH", "/api/vcenter/vm/web-1", bad);
        assert_eq!(
            (status, e["error"]["field"].as_str()),
            (400, Some(field)),
            "{bad}: {e}"
        );
    }
    let (status, _) = c.call(&op, "PATCH", "/api/vcenter/vm/nothing", body);
    assert_eq!(status, 404);
    assert!(
        f.patches.lock().unwrap().is_empty(),
        "nothing reached a host"
    );

    let vm = c.ok(&op, "PATCH", "/api/vcenter/vm/web-1", body, 200);
    assert_eq!(vm["info"]["spec"]["ha"]["priority"], "high", "{vm}");
    assert_eq!(
        vm["info"]["spec"]["ha"]["isolation_response"], "shut_down",
        "{vm}"
    );
    assert_eq!(f.patches.lock().unwrap().len(), 1);
    // Only the priority: the isolation response stays.
    let vm = c.ok(
        &f.admin,
        "PATCH",
        "/api/vcenter/vm/web-1",
        r#"{"ha": {"priority": "disabled"}}"#,
        200,
    );
    assert_eq!(vm["info"]["spec"]["ha"]["priority"], "disabled", "{vm}");
    let vm = c.ok(&f.admin, "GET", "/api/vcenter/vm/web-1", "", 200);
    assert_eq!(
        (
            &vm["info"]["spec"]["ha"]["priority"],
            &vm["info"]["spec"]["ha"]["isolation_response"]
        ),
        (&json!("disabled"), &json!("shut_down")),
        "{vm}"
    );
    let (_, doc) = c.send("GET", "/api/openapi.json", &[], "");
    assert!(doc["paths"]["/api/vcenter/vm/{vm}"]["patch"].is_object());
    assert!(doc["paths"]["/api/vcenter/cluster/{cluster}/ha"]["get"].is_object());
    assert!(doc["components"]["schemas"]["HaStatus"].is_object());
    let events = c.ok(&f.admin, "GET", "/api/vinfra/events?target=web-1", "", 200);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "vm.reconfigured" && e["user"] == "op"),
        "{events}"
    );
}
