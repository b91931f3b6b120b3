//! The host API over real HTTP on 127.0.0.1, and the `vinfra` command against it.
//!
//! The server is the real one (`vinfra_host::api::serve`); behind it is `FakeHost`, a
//! small in-memory `HostService` that tests the HTTP layer, not a stand-in for the host:
//! it keeps VMs in a map, runs operations on threads and echoes consoles.

// Test helpers outside #[test] functions unwrap too: a failure there is the test's.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;
use vinfra_host::api::*;

const KEY_HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// A release the tests give to operations that wait for it (to watch them mid-way).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) -> bool {
        let open = self.open.lock().unwrap();
        let (open, timeout) = self
            .cv
            .wait_timeout_while(open, Duration::from_secs(20), |o| !*o)
            .unwrap();
        !timeout.timed_out() && *open
    }

    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

struct FakeVm {
    spec: VmSpec,
    state: PowerState,
    host: Option<u32>,
}

struct FakeHost {
    vms: Mutex<BTreeMap<String, FakeVm>>,
    events: EventLog,
    gate: Arc<Gate>,
}

impl FakeHost {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            vms: Mutex::default(),
            events: EventLog::new(64),
            gate: Arc::default(),
        })
    }

    fn info(vm: &FakeVm) -> VmInfo {
        let mut info = VmInfo::new(vm.spec.clone(), vm.state);
        info.host = vm.host;
        if vm.state == PowerState::Running {
            info.stats = Some(VmStats {
                cpu_percent: 1.5,
                rss_bytes: 5 << 20,
                ..VmStats::default()
            });
        }
        info
    }

    /// Everything a refused request must leave alone.
    fn snapshot(&self) -> Vec<(String, PowerState, Option<u32>)> {
        self.vms
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.state, v.host))
            .collect()
    }

    fn set_state(&self, name: &str, state: PowerState, host: Option<u32>) {
        if let Some(vm) = self.vms.lock().unwrap().get_mut(name) {
            vm.state = state;
            vm.host = host;
        }
    }
}

impl HostService for FakeHost {
    fn host_info(&self) -> Result<HostInfo> {
        let mut info = HostInfo::new(
            1,
            "esx1",
            HostCapacity {
                cpus: 2,
                memory_mib: 4096,
            },
        );
        info.ha = vec![
            HaPeer {
                id: 1,
                verdict: HaVerdict::Alive,
                heard_ms_ago: None,
            },
            HaPeer {
                id: 2,
                verdict: HaVerdict::Alive,
                heard_ms_ago: Some(120),
            },
        ];
        let vms = self.vms.lock().unwrap();
        info.vms.defined = u32::try_from(vms.len()).unwrap();
        Ok(info)
    }

    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        Ok(self.vms.lock().unwrap().values().map(Self::info).collect())
    }

    fn vm(&self, name: &str) -> Result<VmInfo> {
        let vms = self.vms.lock().unwrap();
        vms.get(name)
            .map(Self::info)
            .ok_or_else(|| ApiError::VmNotFound(name.into()))
    }

    fn create_vm(&self, spec: VmSpec) -> Result<VmInfo> {
        let mut vms = self.vms.lock().unwrap();
        if vms.contains_key(&spec.name) {
            return Err(ApiError::VmExists(spec.name));
        }
        self.events
            .push(1, "vm_created", json!({"vm": spec.name.clone()}));
        let vm = FakeVm {
            spec: spec.clone(),
            state: PowerState::ShutOff,
            host: None,
        };
        let info = Self::info(&vm);
        vms.insert(spec.name, vm);
        Ok(info)
    }

    fn delete_vm(&self, name: &str) -> Result<()> {
        let mut vms = self.vms.lock().unwrap();
        let vm = vms
            .get(name)
            .ok_or_else(|| ApiError::VmNotFound(name.into()))?;
        if vm.state != PowerState::ShutOff {
            return Err(ApiError::WrongState {
                vm: name.into(),
                state: vm.state,
                needed: "it must be shut off".into(),
            });
        }
        vms.remove(name);
        Ok(())
    }

    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()> {
        let mut vms = self.vms.lock().unwrap();
        if let VmOp::Restore(r) = &op {
            if vms.contains_key(&r.name) {
                return Err(ApiError::VmExists(r.name.clone()));
            }
        }
        let vm = vms
            .get_mut(name)
            .ok_or_else(|| ApiError::VmNotFound(name.into()))?;
        let need = |ok: bool, needed: &str| {
            if ok {
                Ok(())
            } else {
                Err(ApiError::WrongState {
                    vm: name.into(),
                    state: vm.state,
                    needed: needed.into(),
                })
            }
        };
        let running = vm.state == PowerState::Running;
        if running && vm.host != Some(1) {
            return Err(ApiError::RunningElsewhere {
                vm: name.into(),
                host: vm.host.unwrap_or(0).to_string(),
            });
        }
        match &op {
            VmOp::Start => need(vm.state == PowerState::ShutOff, "it must be shut off")?,
            VmOp::Stop | VmOp::Reset | VmOp::Shutdown(_) => need(running, "it must be running")?,
            VmOp::Migrate(m) => {
                need(running, "it must be running")?;
                if m.to != "2" {
                    return Err(ApiError::UnknownHost(m.to.clone()));
                }
            }
            _ => {}
        }
        let gate = Arc::clone(&self.gate);
        let name = name.to_string();
        match op {
            VmOp::Start => {
                vm.state = PowerState::Running;
                vm.host = Some(1);
                task.succeed(json!({"boot_ms": 12}));
            }
            VmOp::Stop | VmOp::Shutdown(_) => {
                vm.state = PowerState::ShutOff;
                vm.host = None;
                // A shutdown says what it was asked (its body's defaults filled in).
                task.succeed(match op {
                    VmOp::Shutdown(r) => json!([r.timeout_ms(), r.force_after]),
                    _ => Value::Null,
                });
            }
            VmOp::Reset => task.succeed(Value::Null),
            VmOp::Migrate(_) => {
                vm.host = Some(2);
                task.succeed(json!({"downtime_ms": 3}));
            }
            VmOp::Snapshot(s) => task.succeed(json!({"snapshot": s.name.unwrap_or("s1".into())})),
            // A revert that breaks: its handle is dropped without a result.
            VmOp::Revert(_) => drop(task),
            VmOp::Clone(c) => {
                let mut spec = vm.spec.clone();
                spec.name.clone_from(&c.name);
                vms.insert(
                    c.name.clone(),
                    FakeVm {
                        spec,
                        state: PowerState::ShutOff,
                        host: None,
                    },
                );
                task.succeed(json!({"vm": c.name}));
            }
            VmOp::Backup(b) => {
                std::thread::spawn(move || {
                    task.progress(0.5, "copying blocks");
                    if gate.wait() {
                        task.succeed(json!({"repository": b.repository, "bytes": 4096}));
                    } else {
                        task.fail(&ApiError::Internal("the test never released".into()));
                    }
                });
            }
            VmOp::Restore(r) => {
                let mut spec = vm.spec.clone();
                spec.name.clone_from(&r.name);
                vms.insert(
                    r.name.clone(),
                    FakeVm {
                        spec,
                        state: PowerState::ShutOff,
                        host: None,
                    },
                );
                task.succeed(json!({"vm": r.name, "from": name}));
            }
            other => {
                task.fail(&ApiError::Unsupported(format!("{:?}", other.kind())));
            }
        }
        Ok(())
    }

    fn console(&self, name: &str) -> Result<Console> {
        let vm = self.vm(name)?;
        if vm.state != PowerState::Running {
            return Err(ApiError::WrongState {
                vm: name.into(),
                state: vm.state,
                needed: "it must be running".into(),
            });
        }
        let (viewer, mut guest) = console_pair(CONSOLE_QUEUE);
        // The "guest": greets, then echoes input in capitals until it reads "quit".
        std::thread::spawn(move || {
            let _ = guest.send_output("login: \u{e9}".as_bytes());
            while let Some(input) = guest.recv_input() {
                let text = String::from_utf8_lossy(&input).to_uppercase();
                if guest.send_output(text.as_bytes()).is_err() || text.contains("QUIT") {
                    return;
                }
            }
        });
        Ok(viewer)
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<HostEvent>> {
        Ok(self.events.after(after, limit))
    }

    fn prepare_incoming(&self, request: IncomingRequest) -> Result<IncomingReady> {
        let vms = self.vms.lock().unwrap();
        let vm = vms
            .get(&request.vm)
            .ok_or_else(|| ApiError::VmNotFound(request.vm.clone()))?;
        if vm.spec.cmdline.contains("avx512") {
            return Err(ApiError::CpuIncompatible {
                vm: request.vm,
                missing: vec!["avx512f".into()],
            });
        }
        Ok(IncomingReady {
            address: "127.0.0.1:7450".into(),
        })
    }
}

/// A server on a free loopback port with a fake host behind it.
struct Setup {
    host: Arc<FakeHost>,
    server: ServerHandle,
    token: ApiToken,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
}

fn setup() -> Setup {
    let host = FakeHost::new();
    let token = ApiToken::from_key_hex(KEY_HEX).unwrap();
    let server = serve(
        "127.0.0.1:0".parse().unwrap(),
        token.clone(),
        Arc::clone(&host) as Arc<dyn HostService>,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    Setup {
        host,
        server,
        token,
        agent,
        _dir: dir,
        key_file,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.server.local_addr())
    }

    /// One request; `token` None sends no Authorization header.
    fn send(&self, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        if !body.is_empty() {
            request = request.header("Content-Type", "application/json");
        }
        let request = request.body(body.as_bytes().to_vec()).unwrap();
        let mut response = self.agent.run(request).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"))
        };
        (status, value)
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.send(method, path, body, Some(self.token.as_str()))
    }

    fn ok(&self, method: &str, path: &str, body: &str, status: u16) -> Value {
        let (got, value) = self.call(method, path, body);
        assert_eq!(got, status, "{method} {path} {body}: {value}");
        value
    }

    fn create(&self, name: &str) {
        let spec = json!({"name": name, "kernel": "/guests/ready.elf", "memory_mib": 32,
            "disks": [{"size_mib": 8}], "nics": [{"portgroup": "vm-net", "mac": "52:54:00:00:00:01"}],
            "ha": {"priority": "high", "isolation_response": "power_off"},
            "resources": {"cpu_mhz": 100, "shares": 2000, "reservation_mib": 16, "limit_mib": 32}});
        self.ok("POST", "/vms", &spec.to_string(), 201);
    }

    /// Starts an operation and waits for its task to end.
    fn run_op(&self, name: &str, op: &str, body: &str) -> TaskInfo {
        let started = self.ok("POST", &format!("/vms/{name}/{op}"), body, 202);
        self.wait_task(started["task"].as_u64().unwrap(), |t| {
            t.state != TaskState::Running
        })
    }

    fn task(&self, id: u64) -> TaskInfo {
        serde_json::from_value(self.ok("GET", &format!("/tasks/{id}"), "", 200)).unwrap()
    }

    fn wait_task(&self, id: u64, until: impl Fn(&TaskInfo) -> bool) -> TaskInfo {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let task = self.task(id);
            if until(&task) {
                return task;
            }
            assert!(Instant::now() < deadline, "task {id} stuck: {task:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn vinfra(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_vinfra"))
            .args(args)
            .env(
                "VINFRA_HOST",
                format!("http://{}", self.server.local_addr()),
            )
            .env("VINFRA_KEY_FILE", &self.key_file)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

#[test]
fn every_route_answers_its_happy_path() {
    let s = setup();
    s.create("web1");
    let vm: VmInfo = serde_json::from_value(s.ok("GET", "/vms/web1", "", 200)).unwrap();
    assert_eq!(
        (vm.spec.name.as_str(), vm.state),
        ("web1", PowerState::ShutOff)
    );
    assert_eq!(vm.spec.ha.priority, RestartPriority::High);
    assert_eq!(vm.spec.nics[0].mac.as_deref(), Some("52:54:00:00:00:01"));
    let list: Vec<VmInfo> = serde_json::from_value(s.ok("GET", "/vms", "", 200)).unwrap();
    assert_eq!(list.len(), 1);
    let host: HostInfo = serde_json::from_value(s.ok("GET", "/host", "", 200)).unwrap();
    assert_eq!(
        (host.id, host.name.as_str(), host.vms.defined),
        (1, "esx1", 1)
    );
    assert_eq!(host.ha.len(), 2);

    // Start takes no body, or `{}`.
    let start = s.run_op("web1", "start", "");
    assert_eq!(start.state, TaskState::Success, "{start:?}");
    assert_eq!((start.op, start.vm.as_str()), (OpKind::Start, "web1"));
    assert_eq!(start.result, Some(json!({"boot_ms": 12})));
    assert_eq!(start.progress, 1.0);
    assert!(start.ended_ms.unwrap() >= start.started_ms);
    let vm: VmInfo = serde_json::from_value(s.ok("GET", "/vms/web1", "", 200)).unwrap();
    assert_eq!((vm.state, vm.host), (PowerState::Running, Some(1)));
    assert!(vm.stats.is_some());
    for (op, body) in [
        ("reset", "{}"),
        ("snapshot", r#"{"name":"before"}"#),
        ("snapshot", ""),
        ("clone", r#"{"name":"web2","full":true}"#),
        ("backup", r#"{"repository":"/backups","incremental":true}"#),
    ] {
        if op == "backup" {
            s.host.gate.release();
        }
        let task = s.run_op("web1", op, body);
        assert_eq!(task.state, TaskState::Success, "{op}: {task:?}");
    }
    assert_eq!(
        s.run_op("web1", "snapshot", r#"{"name":"before"}"#).result,
        Some(json!({"snapshot": "before"}))
    );
    assert_eq!(
        s.run_op("web1", "shutdown", "").result,
        Some(json!([30000, false]))
    );
    assert_eq!(s.run_op("web1", "start", "{}").state, TaskState::Success);
    let t = s.run_op(
        "web1",
        "shutdown",
        r#"{"timeout_ms":5000,"force_after":true}"#,
    );
    assert_eq!(t.result, Some(json!([5000, true])));
    assert_eq!(s.run_op("web1", "start", "{}").state, TaskState::Success);
    assert_eq!(s.run_op("web1", "stop", "").state, TaskState::Success);
    let restore = s.run_op(
        "web1",
        "restore",
        r#"{"repository":"/backups","name":"web3"}"#,
    );
    assert_eq!(restore.result, Some(json!({"vm": "web3", "from": "web1"})));
    s.ok("GET", "/vms/web3", "", 200);
    s.run_op("web1", "start", "");
    let migrate = s.run_op("web1", "migrate", r#"{"to":"2"}"#);
    assert_eq!(migrate.result, Some(json!({"downtime_ms": 3})));

    let tasks: Vec<TaskInfo> = serde_json::from_value(s.ok("GET", "/tasks", "", 200)).unwrap();
    assert_eq!(tasks.len(), 15, "{tasks:?}");
    assert!(tasks.windows(2).all(|w| w[0].id < w[1].id));

    let ready = s.ok("POST", "/incoming", r#"{"vm":"web2"}"#, 200);
    assert_eq!(ready, json!({"address": "127.0.0.1:7450"}));
    let events: Vec<HostEvent> =
        serde_json::from_value(s.ok("GET", "/events?after=0", "", 200)).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].event.as_str()), (1, "vm_created"));
    assert_eq!(s.ok("GET", "/events?after=1&limit=5", "", 200), json!([]));

    assert_eq!(s.ok("DELETE", "/vms/web2", "", 204), Value::Null);
    s.ok("GET", "/vms/web2", "", 404);
}

/// method, path, body, token, status, code
type Case<'a> = (&'a str, &'a str, String, Option<&'a str>, u16, &'a str);

#[test]
fn bad_input_is_refused_with_a_json_error_and_changes_nothing() {
    let s = setup();
    s.create("web1");
    s.create("off1");
    s.create("avx");
    s.ok("POST", "/vms/web1/start", "", 202);
    let host_vms = |s: &Setup| {
        s.host.set_state("elsewhere", PowerState::Running, Some(3));
    };
    s.create("elsewhere");
    host_vms(&s);
    {
        let mut vms = s.host.vms.lock().unwrap();
        vms.get_mut("avx").unwrap().spec.cmdline = "needs avx512".into();
    }
    let before = s.host.snapshot();
    let tasks_before = s.ok("GET", "/tasks", "", 200);
    let big = format!(
        r#"{{"name":"big","kernel":"{}","memory_mib":1}}"#,
        "k".repeat(BODY_LIMIT)
    );
    let good_token = s.token.as_str().to_string();
    let wrong_token = ApiToken::from_key_hex(&"22".repeat(32)).unwrap();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("POST", "/vms", "{not json".into(), Some(&good_token), 400, "malformed_request"),
        ("POST", "/vms", r#"{"name":"x","kernel":"k","memory_mib":32,"colour":"red"}"#.into(), Some(&good_token), 400, "malformed_request"),
        ("POST", "/vms", r#"{"name":"x","kernel":"k","memory_mib":-1}"#.into(), Some(&good_token), 400, "malformed_request"),
        ("POST", "/vms", r#"{"name":"x","kernel":"k"}"#.into(), Some(&good_token), 400, "malformed_request"),
        ("POST", "/vms", big, Some(&good_token), 413, "body_too_large"),
        ("POST", "/vms/web1/migrate", r#"{"to":"2","bandwidth":9}"#.into(), Some(&good_token), 400, "malformed_request"),
        ("POST", "/vms/web1/stop", r#"{"force":true}"#.into(), Some(&good_token), 400, "malformed_request"),
        ("GET", "/events?after=soon", String::new(), Some(&good_token), 400, "malformed_request"),
        ("GET", "/vms/..%2Fetc", String::new(), Some(&good_token), 400, "invalid_name"),
        ("GET", "/host", String::new(), None, 401, "unauthorized"),
        ("GET", "/vms", String::new(), Some(wrong_token.as_str()), 401, "unauthorized"),
        ("DELETE", "/vms/web1", String::new(), Some("garbage"), 401, "unauthorized"),
        ("POST", "/vms/web1/stop", "{not json".into(), None, 401, "unauthorized"),
        ("GET", "/vms/nosuch", String::new(), Some(&good_token), 404, "vm_not_found"),
        ("POST", "/vms/nosuch/start", String::new(), Some(&good_token), 404, "vm_not_found"),
        ("DELETE", "/vms/nosuch", String::new(), Some(&good_token), 404, "vm_not_found"),
        ("POST", "/incoming", r#"{"vm":"nosuch"}"#.into(), Some(&good_token), 404, "vm_not_found"),
        ("GET", "/tasks/999", String::new(), Some(&good_token), 404, "task_not_found"),
        ("GET", "/tasks/abc", String::new(), Some(&good_token), 404, "task_not_found"),
        ("GET", "/nothing/here", String::new(), Some(&good_token), 404, "not_found"),
        ("PUT", "/vms", "{}".into(), Some(&good_token), 405, "method_not_allowed"),
        ("POST", "/vms/web1/start", String::new(), Some(&good_token), 409, "wrong_state"),
        ("DELETE", "/vms/web1", String::new(), Some(&good_token), 409, "wrong_state"),
        ("POST", "/vms/off1/migrate", r#"{"to":"2"}"#.into(), Some(&good_token), 409, "wrong_state"),
        ("POST", "/vms/elsewhere/stop", String::new(), Some(&good_token), 409, "running_elsewhere"),
        ("POST", "/vms", r#"{"name":"web1","kernel":"k","memory_mib":32}"#.into(), Some(&good_token), 409, "vm_exists"),
        ("POST", "/vms/off1/restore", r#"{"repository":"/b","name":"web1"}"#.into(), Some(&good_token), 409, "vm_exists"),
        ("POST", "/vms", r#"{"name":"x","kernel":"k","memory_mib":0}"#.into(), Some(&good_token), 422, "invalid_value"),
        ("POST", "/vms", r#"{"name":"../x","kernel":"k","memory_mib":32}"#.into(), Some(&good_token), 422, "invalid_value"),
        ("POST", "/vms", r#"{"name":"x","kernel":"k","memory_mib":32,"nics":[{"portgroup":"p","mac":"01:00:5e:00:00:01"}]}"#.into(), Some(&good_token), 422, "invalid_value"),
        ("POST", "/vms", r#"{"name":"x","kernel":"k","memory_mib":32,"resources":{"reservation_mib":64}}"#.into(), Some(&good_token), 422, "invalid_value"),
        ("POST", "/vms/web1/clone", r#"{"name":"a/b"}"#.into(), Some(&good_token), 422, "invalid_value"),
        ("POST", "/vms/web1/migrate", r#"{"to":"9"}"#.into(), Some(&good_token), 422, "unknown_host"),
        ("POST", "/vms/web1/shutdown", r#"{"timeout_ms":0}"#.into(), Some(&good_token), 422, "invalid_value"),
        ("POST", "/vms/web1/shutdown", r#"{"timeout_ms":3600001}"#.into(), Some(&good_token), 422, "invalid_value"),
        ("POST", "/vms/web1/shutdown", r#"{"force":true}"#.into(), Some(&good_token), 400, "malformed_request"),
        ("POST", "/incoming", r#"{"vm":"avx"}"#.into(), Some(&good_token), 422, "cpu_incompatible"),
        ("GET", "/vms/web1/console", String::new(), Some(&good_token), 400, "malformed_request"),
    ];
    for (method, path, body, token, status, code) in &cases {
        let (got, value) = s.send(method, path, body, *token);
        let shown = if body.len() > 80 {
            "<big>"
        } else {
            body.as_str()
        };
        assert_eq!(got, *status, "{method} {path} {shown}: {value}");
        let error: ErrorBody = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{method} {path}: not an error body ({e}): {value}"));
        assert_eq!(error.error.code, *code, "{method} {path} {shown}: {value}");
        assert!(!error.error.message.is_empty());
        assert_eq!(
            s.host.snapshot(),
            before,
            "{method} {path} {shown} changed the VMs"
        );
    }
    // Refused operations leave no task behind.
    assert_eq!(s.ok("GET", "/tasks", "", 200), tasks_before);
    let (_, value) = s.send("POST", "/incoming", r#"{"vm":"avx"}"#, Some(&good_token));
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("avx512f"),
        "{value}"
    );
}

#[test]
fn a_task_shows_its_progress_then_its_result() {
    let s = setup();
    s.create("db1");
    let started = s.ok(
        "POST",
        "/vms/db1/backup",
        r#"{"repository":"/backups"}"#,
        202,
    );
    let id = started["task"].as_u64().unwrap();
    let midway = s.wait_task(id, |t| t.progress == 0.5);
    assert_eq!(midway.state, TaskState::Running);
    assert_eq!(midway.message, "copying blocks");
    assert!(midway.result.is_none() && midway.ended_ms.is_none());
    s.host.gate.release();
    let done = s.wait_task(id, |t| t.state != TaskState::Running);
    assert_eq!(done.state, TaskState::Success);
    assert_eq!(done.progress, 1.0);
    assert_eq!(
        done.result,
        Some(json!({"repository": "/backups", "bytes": 4096}))
    );

    // A task whose work dropped its handle without a result has failed, not hung.
    let revert = s.run_op("db1", "revert", r#"{"snapshot":"s1"}"#);
    assert_eq!(revert.state, TaskState::Error);
    assert_eq!(revert.error.unwrap().code, "internal");
}

/// A console WebSocket, or the status and body of the handshake's refusal.
fn connect_console(
    s: &Setup,
    name: &str,
    token: &str,
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, (u16, Vec<u8>)> {
    let addr = s.server.local_addr();
    let mut request = format!("ws://{addr}/api/v1/vms/{name}/console")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::handshake::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err((r.status().as_u16(), r.body().clone().unwrap_or_default()))
        }
        Err(e) => panic!("console {name}: {e}"),
    }
}

fn read_text(socket: &mut tungstenite::WebSocket<std::net::TcpStream>, until: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(until) {
        match socket.read().unwrap() {
            Message::Text(t) => seen.push_str(t.as_str()),
            Message::Close(c) => panic!("closed ({c:?}) before {until:?}; got {seen:?}"),
            _ => {}
        }
    }
    seen
}

#[test]
fn the_console_websocket_carries_output_and_input() {
    let s = setup();
    s.create("web1");
    s.run_op("web1", "start", "");
    let mut socket = connect_console(&s, "web1", s.token.as_str()).unwrap();
    assert_eq!(read_text(&mut socket, "login: \u{e9}"), "login: \u{e9}");
    socket.send(Message::Text("root\n".into())).unwrap();
    assert_eq!(read_text(&mut socket, "ROOT\n"), "ROOT\n");
    socket
        .send(Message::Binary(b"binary".to_vec().into()))
        .unwrap();
    read_text(&mut socket, "BINARY");
    // The guest's end closes: the viewer gets a close frame.
    socket.send(Message::Text("quit".into())).unwrap();
    read_text(&mut socket, "QUIT");
    loop {
        match socket.read() {
            Ok(Message::Close(frame)) => {
                assert_eq!(u16::from(frame.unwrap().code), 1000);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }

    // Refusals come back as the handshake's HTTP answer, with the JSON error.
    for (name, token, status) in [("nosuch", s.token.as_str(), 404), ("web1", "wrong", 401)] {
        let (got, body) = connect_console(&s, name, token).map(|_| ()).unwrap_err();
        assert_eq!(got, status);
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(!body.error.code.is_empty());
    }
    s.create("off1");
    let (got, body) = connect_console(&s, "off1", s.token.as_str())
        .map(|_| ())
        .unwrap_err();
    let body: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!((got, body.error.code.as_str()), (409, "wrong_state"));
}

#[test]
fn stop_closes_open_consoles_and_the_port() {
    let s = setup();
    s.create("web1");
    s.run_op("web1", "start", "");
    let mut socket = connect_console(&s, "web1", s.token.as_str()).unwrap();
    read_text(&mut socket, "login");
    let began = Instant::now();
    s.server.stop();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let closed = loop {
        match socket.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    assert_eq!(closed, Some(1001));
    // The port itself is not probed: the tests run in parallel, and another test's
    // server may be given the port this one just freed.
}

/// `PATCH /vms/NAME` reads its body before the host sees it: an empty patch names `ha`,
/// a wrong value is malformed, and a host without the method refuses (the trait's
/// default: this fake keeps no settings); the cluster host's rewrite of the settings on
/// the volume is tested in `cluster::vm_settings`.
#[test]
fn patch_vm_checks_its_body_and_defaults_to_unsupported() {
    let s = setup();
    s.create("web1");
    let (status, e) = s.call("PATCH", "/vms/web1", r#"{"ha": {}}"#);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (422, Some("invalid_value")),
        "{e}"
    );
    let (status, e) = s.call("PATCH", "/vms/web1", r#"{"ha": {"priority": "urgent"}}"#);
    assert_eq!(status, 400, "{e}");
    let (status, e) = s.call("PATCH", "/vms/web1", r#"{"memory_mib": 64}"#);
    assert_eq!(status, 400, "{e}");
    let (status, e) = s.call(
        "PATCH",
        "/vms/web1",
        r#"{"ha": {"restart_priority": "low", "isolation_response": "power_off"}}"#,
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (422, Some("unsupported")),
        "{e}"
    );
}

#[test]
fn openapi_json_needs_no_token_and_lists_every_route() {
    let s = setup();
    let (status, doc) = s.send("GET", "/openapi.json", "", None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = [
        ("get", "/api/v1/host"),
        ("get", "/api/v1/vms"),
        ("post", "/api/v1/vms"),
        ("get", "/api/v1/vms/{name}"),
        ("delete", "/api/v1/vms/{name}"),
        ("patch", "/api/v1/vms/{name}"),
        ("post", "/api/v1/vms/{name}/start"),
        ("post", "/api/v1/vms/{name}/stop"),
        ("post", "/api/v1/vms/{name}/reset"),
        ("post", "/api/v1/vms/{name}/shutdown"),
        ("post", "/api/v1/vms/{name}/migrate"),
        ("post", "/api/v1/vms/{name}/snapshot"),
        ("post", "/api/v1/vms/{name}/revert"),
        ("post", "/api/v1/vms/{name}/clone"),
        ("post", "/api/v1/vms/{name}/backup"),
        ("post", "/api/v1/vms/{name}/restore"),
        ("post", "/api/v1/vms/{name}/restore-disk"),
        ("get", "/api/v1/vms/{name}/console"),
        ("get", "/api/v1/tasks"),
        ("get", "/api/v1/tasks/{id}"),
        ("get", "/api/v1/events"),
        ("post", "/api/v1/incoming"),
        ("post", "/api/v1/host/maintenance"),
        ("get", "/api/v1/backups"),
        ("post", "/api/v1/backups/forget"),
        ("get", "/api/v1/backups/files"),
        ("get", "/api/v1/backups/file"),
        ("get", "/api/v1/openapi.json"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (method, path) in routes {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
        // Every documented route exists on the server: with a token, none is a 404 of
        // the router (a 404 for an unknown VM or task names that instead).
        let real = path.replace("{name}", "web1").replace("{id}", "1");
        let (status, value) = s.call(&method.to_uppercase(), &real.replace("/api/v1", ""), "");
        assert!(
            !(status == 404 && value["error"]["code"] == "not_found") && status != 405,
            "{method} {path}: {status} {value}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    for schema in [
        "VmSpec",
        "VmInfo",
        "HostInfo",
        "TaskInfo",
        "ErrorBody",
        "HostEvent",
        "BackupDir",
        "BackupFileEntry",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // The shutdown's body and the per-VM I/O counters (issue 13).
    let schemas = &doc["components"]["schemas"];
    for field in ["timeout_ms", "force_after"] {
        assert!(
            schemas["ShutdownRequest"]["properties"][field].is_object(),
            "{field}"
        );
    }
    for field in [
        "disk_reads",
        "disk_writes",
        "disk_read_bytes",
        "console_in_bytes",
        "console_bytes",
    ] {
        assert!(
            schemas["VmStats"]["properties"][field].is_object(),
            "{field}"
        );
    }
    // The document itself is open; nothing else is.
    assert_eq!(
        paths["/api/v1/openapi.json"]["get"]["security"],
        json!([{}])
    );
}

#[test]
fn vinfra_prints_json_tables_and_fails_with_exit_1() {
    let s = setup();
    let out = s.vinfra(&[
        "vm",
        "create",
        "web1",
        "--kernel",
        "/guests/ready.elf",
        "--memory-mib",
        "48",
        "--disk-mib",
        "8",
        "--nic",
        "vm-net=52:54:00:00:00:09",
        "--priority",
        "high",
        "--isolation-response",
        "shut-down",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "created web1 (shut off)\n"
    );
    let vm: VmInfo = serde_json::from_value(s.ok("GET", "/vms/web1", "", 200)).unwrap();
    assert_eq!(vm.spec.memory_mib, 48);
    assert_eq!(vm.spec.ha.isolation_response, IsolationResponse::ShutDown);

    let out = s.vinfra(&["--json", "vm", "start", "web1"]);
    assert!(out.status.success(), "{out:?}");
    let task: TaskInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((task.state, task.op), (TaskState::Success, OpKind::Start));

    let out = s.vinfra(&["--json", "vm", "list"]);
    let vms: Vec<VmInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((vms.len(), vms[0].state), (1, PowerState::Running));
    let out = s.vinfra(&["--json", "host", "status"]);
    let host: HostInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(host.name, "esx1");

    // A reader that goes away before the output (`| head -0`) ends it quietly: no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vinfra"))
        .args(["--json", "vm", "list"])
        .env("VINFRA_HOST", format!("http://{}", s.server.local_addr()))
        .env("VINFRA_KEY_FILE", &s.key_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(101), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );

    let out = s.vinfra(&["vm", "list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME  STATE    HOST"), "{table}");
    assert!(lines[1].starts_with("web1  running  1"), "{table}");
    let out = s.vinfra(&["host", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("esx1 (id 1)"));
    let out = s.vinfra(&["task", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("start  web1  success  100%"));
    // Shutdown's flags reach the host (the fake answers what it was asked).
    let out = s.vinfra(&[
        "--json",
        "vm",
        "shutdown",
        "web1",
        "--timeout-ms",
        "5000",
        "--force-after",
    ]);
    let task: TaskInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task.result, Some(json!([5000, true])), "{out:?}");
    let out = s.vinfra(&["--json", "vm", "start", "web1"]);
    assert!(out.status.success(), "{out:?}");

    // Errors: the API's message, exit 1.
    let out = s.vinfra(&["vm", "start", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vinfra: no VM named nosuch\n"
    );
    assert!(out.stdout.is_empty());
    let out = s.vinfra(&["vm", "delete", "web1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("vinfra: VM web1 is running"));
    let out = s.vinfra(&["vm", "migrate", "web1", "--to", "9"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vinfra: no host 9 in the cluster\n"
    );
    // A task that fails: exit 1 with its error.
    let out = s.vinfra(&["vm", "revert", "web1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed: the task ended without a result")
    );
    // A wrong key: 401, said so.
    std::fs::write(&s.key_file, "22".repeat(32)).unwrap();
    let out = s.vinfra(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("vinfra: missing or wrong API token"));
    // No host at all.
    let out = Command::new(env!("CARGO_BIN_EXE_vinfra"))
        .args(["vm", "list"])
        .env_remove("VINFRA_HOST")
        .env("VINFRA_KEY_FILE", &s.key_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
}

#[test]
fn vinfra_task_wait_follows_progress_to_the_result() {
    let s = setup();
    s.create("db1");
    let out = s.vinfra(&[
        "--json",
        "vm",
        "backup",
        "db1",
        "--repository",
        "/backups",
        "--no-wait",
    ]);
    assert!(out.status.success(), "{out:?}");
    let started: TaskStarted = serde_json::from_slice(&out.stdout).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vinfra"))
        .args(["task", "wait", &started.task.to_string()])
        .env("VINFRA_HOST", format!("http://{}", s.server.local_addr()))
        .env("VINFRA_KEY_FILE", &s.key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Without a terminal the progress is a line per step; release the task once seen.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(
        line,
        format!("task {} (backup db1):  50% copying blocks\n", started.task)
    );
    s.host.gate.release();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("task {} (backup db1): success", started.task)),
        "{stdout}"
    );
    assert!(stdout.contains("4096"), "{stdout}");
}

#[test]
fn vinfra_console_pipes_input_and_output() {
    let s = setup();
    s.create("web1");
    s.run_op("web1", "start", "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vinfra"))
        .args(["vm", "console", "web1"])
        .env("VINFRA_HOST", format!("http://{}", s.server.local_addr()))
        .env("VINFRA_KEY_FILE", &s.key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\nquit\n").unwrap();
    }
    // The guest closes after "quit": the command ends by itself, exit 0.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("login: \u{e9}"), "{stdout}");
    assert!(
        stdout.contains("HELLO\n") && stdout.contains("QUIT"),
        "{stdout}"
    );
    let out = s.vinfra(&["vm", "console", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vinfra: no VM named nosuch\n"
    );
}

#[test]
fn a_loop_bridge_serves_from_a_host_loop_and_a_silent_loop_is_503() {
    let (tx, rx) = std::sync::mpsc::channel::<ApiCall>();
    // The host loop: answers what it knows, leaves the rest unanswered.
    let host_loop = std::thread::spawn(move || {
        for call in rx {
            match call {
                ApiCall::ListVms(reply) => reply.send(Ok(vec![VmInfo::new(
                    VmSpec::new("web1", "/k", 32),
                    PowerState::ShutOff,
                )])),
                ApiCall::StartOp { task, reply, .. } => {
                    reply.send(Ok(()));
                    task.succeed(json!({"here": true}));
                }
                other => std::mem::forget(other),
            }
        }
    });
    let bridge = LoopBridge::new(
        move |call| tx.send(call).is_ok(),
        Duration::from_millis(300),
    );
    let token = ApiToken::from_key_hex(KEY_HEX).unwrap();
    let server = serve(
        "127.0.0.1:0".parse().unwrap(),
        token.clone(),
        Arc::new(bridge),
    )
    .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| {
        let mut r = agent
            .get(format!("http://{}/api/v1{path}", server.local_addr()))
            .header("Authorization", format!("Bearer {}", token.as_str()))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_json::<Value>().unwrap())
    };
    let (status, vms) = get("/vms");
    assert_eq!(
        (status, vms[0]["spec"]["name"].as_str()),
        (200, Some("web1"))
    );
    let mut r = agent
        .post(format!(
            "http://{}/api/v1/vms/web1/start",
            server.local_addr()
        ))
        .header("Authorization", format!("Bearer {}", token.as_str()))
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.body_mut().read_json::<TaskStarted>().unwrap().task;
    // The loop finishes the task after it answered; a loaded machine may show it running.
    let deadline = Instant::now() + Duration::from_secs(10);
    let task = loop {
        let (_, task) = get(&format!("/tasks/{id}"));
        if task["state"] != "running" || Instant::now() > deadline {
            break task;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(task["result"], json!({"here": true}), "{task}");
    let (status, error) = get("/host");
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    server.stop();
    host_loop.join().unwrap();
}

#[test]
fn the_backup_routes_check_their_input_before_the_host_sees_it() {
    let s = setup();
    // Bad input names its field (422) or is unreadable (400); this fake keeps no backups.
    let e = s.ok("GET", "/backups?repository=relative", "", 422);
    assert_eq!(e["error"]["code"], "invalid_value");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("repository"),
        "{e}"
    );
    let e = s.ok("GET", "/backups?repository=/r&vm=../x", "", 422);
    assert!(
        e["error"]["message"].as_str().unwrap().starts_with("vm"),
        "{e}"
    );
    s.ok("GET", "/backups", "", 400);
    s.ok("GET", "/backups?repository=/r&colour=1", "", 400);
    let e = s.ok("GET", "/backups?repository=/r&vm=web1", "", 422);
    assert_eq!(e["error"]["code"], "unsupported", "{e}");
    let e = s.ok(
        "POST",
        "/backups/forget",
        r#"{"repository": "/r", "vm": "web1", "keep_last": 0}"#,
        422,
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("keep_last"),
        "{e}"
    );
    s.ok("POST", "/backups/forget", r#"{"repository": "/r"}"#, 400);
    let e = s.ok(
        "POST",
        "/backups/forget",
        r#"{"repository": "/r", "vm": "web1", "keep_last": 2}"#,
        422,
    );
    assert_eq!(e["error"]["code"], "unsupported", "{e}");
}
