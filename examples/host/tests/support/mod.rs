//! A `vinfra-lab` cluster for the end-to-end tests of the reference host (`host_e2e`,
//! `host_vm_ops`): real `vinfra-host` processes (in network namespaces as root), driven
//! through their API. One lab at a time per test binary: the guests' vCPUs spin, and two
//! cores are all there is.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vinfra_host::api::ApiToken;
use vinfra_testkit::{guest, is_root, kvm_or_skip, run, skip};

pub const LAB: &str = env!("CARGO_BIN_EXE_vinfra-lab");

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A lab, brought down when dropped.
pub struct Lab {
    _one: std::sync::MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    /// The test guest the lab's VMs run.
    pub kernel: PathBuf,
    pub token: ApiToken,
    /// Each host's API URL, host 1 first.
    pub apis: Vec<String>,
    agent: ureq::Agent,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run(
            Command::new(LAB).arg("--dir").arg(self.path()).arg("down"),
            Duration::from_secs(30),
        );
    }
}

impl Lab {
    /// `hosts` hosts and no VM, the VMs to run `guest_name`, with more `vinfra-lab up`
    /// arguments; `None` (after a skip, a failure under CI) without KVM or the guest.
    pub fn up_guest(hosts: u32, guest_name: &str, more: &[&str]) -> Option<Lab> {
        Self::up_guest_env(hosts, guest_name, more, &[])
    }

    /// [`Lab::up_guest`] with more environment for `vinfra-lab up` (its hosts inherit
    /// it).
    pub fn up_guest_env(
        hosts: u32,
        guest_name: &str,
        more: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Option<Lab> {
        if !kvm_or_skip() {
            return None;
        }
        let kernel = guest(guest_name)?;
        if !is_root() {
            skip("network namespaces need root: the lab runs on loopback");
        }
        let one = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let up = run(
            Command::new(LAB)
                .arg("--dir")
                .arg(dir.path().join("lab"))
                .args(["up", "--vms", "0", "--hosts"])
                .arg(hosts.to_string())
                .args(more)
                .envs(env.iter().copied()),
            Duration::from_secs(60),
        );
        assert!(up.success(), "{up}");
        let record: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("lab/lab.json")).unwrap(),
        )
        .unwrap();
        let apis = record["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["api"].as_str().unwrap().to_string())
            .collect();
        let token = ApiToken::from_key_file(&dir.path().join("lab/cluster.key")).unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let lab = Lab {
            _one: one,
            dir,
            kernel,
            token,
            apis,
            agent,
        };
        // Every host answers its API.
        for h in 1..=hosts {
            lab.wait(&format!("host {h}'s API"), || {
                lab.send(h, "GET", "/host", "", true).0 == 200
            });
        }
        Some(lab)
    }

    /// The lab's folder (`vinfra-lab --dir`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    /// One request to host `host`'s API: the status and the body (JSON, or the text as
    /// a JSON string); status 0 when the host does not answer.
    pub fn send(
        &self,
        host: u32,
        method: &str,
        path: &str,
        body: &str,
        auth: bool,
    ) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.apis[host as usize - 1]);
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if auth {
            request = request.header("Authorization", format!("Bearer {}", self.token.as_str()));
        }
        if !body.is_empty() {
            request = request.header("Content-Type", "application/json");
        }
        let Ok(mut response) = self
            .agent
            .run(request.body(body.as_bytes().to_vec()).unwrap())
        else {
            return (0, Value::Null);
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request that must answer `want`; its body.
    pub fn ok(&self, host: u32, method: &str, path: &str, body: &str, want: u16) -> Value {
        let (status, v) = self.send(host, method, path, body, true);
        assert_eq!(status, want, "{method} {path} {body} on host {host}: {v}");
        v
    }

    /// Waits up to 40 s for `done`.
    pub fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(40);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs an operation with this body to its end; returns the finished task.
    pub fn op_with(&self, host: u32, name: &str, op: &str, body: &str) -> Value {
        let t = self.ok(host, "POST", &format!("/vms/{name}/{op}"), body, 202);
        self.task(host, t["task"].as_u64().unwrap())
    }

    /// Waits for task `id` of `host` to end; returns it.
    pub fn task(&self, host: u32, id: u64) -> Value {
        let mut last = Value::Null;
        self.wait(&format!("task {id} on host {host}"), || {
            last = self.ok(host, "GET", &format!("/tasks/{id}"), "", 200);
            last["state"] != "running"
        });
        last
    }

    /// Types `text` on `vm`'s console through `host`'s API (a WebSocket) and leaves at
    /// once: the host still delivers it.
    pub fn type_in(&self, host: u32, vm: &str, text: &str) {
        let url = self.apis[host as usize - 1].replace("http://", "ws://")
            + &format!("/api/v1/vms/{vm}/console");
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", self.token.as_str()).parse().unwrap(),
        );
        let (mut ws, _) = tungstenite::connect(request).unwrap();
        ws.send(tungstenite::Message::text(text)).unwrap();
        ws.flush().unwrap();
    }

    /// `GET /vms/NAME` of `host`.
    pub fn vm(&self, host: u32, name: &str) -> Value {
        self.ok(host, "GET", &format!("/vms/{name}"), "", 200)
    }

    /// Events of `host` with this name and VM (read page by page: the API answers at most
    /// 1000 at a time).
    pub fn events(&self, host: u32, event: &str, vm: &str) -> Vec<Value> {
        let mut found = Vec::new();
        let mut after = 0;
        loop {
            let page = self.ok(host, "GET", &format!("/events?after={after}"), "", 200);
            let page = page.as_array().unwrap();
            let Some(last) = page.last() else {
                return found;
            };
            after = last["seq"].as_u64().unwrap();
            found.extend(
                page.iter()
                    .filter(|e| e["event"] == event && e["data"]["vm"] == vm)
                    .cloned(),
            );
        }
    }
}
