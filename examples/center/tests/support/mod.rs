//! The center's test support: a `vinfra-center` process on loopback with a state folder
//! of its own, a small HTTP client of its API, and a `vinfra-lab` of real hosts.
#![allow(dead_code, reason = "each test binary uses part of it")]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use vinfra_testkit::{guest, in_ci, is_root, kvm_or_skip, run, skip};

pub mod idle;

pub const CENTER: &str = env!("CARGO_BIN_EXE_vinfra-center");
/// The first user's password in every test.
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// Requests to a center: its URL and the agent (a clone shares its connections).
#[derive(Clone)]
pub struct Requests {
    url: String,
    agent: ureq::Agent,
}

impl Requests {
    /// A request: status and body (JSON, or the text as a JSON string).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> (u16, Value) {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        if !body.is_empty() {
            request = request.header("Content-Type", "application/json");
        }
        let mut response = self
            .agent
            .run(request.body(body.as_bytes().to_vec()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request with a session token: status and body.
    pub fn call(&self, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.send(
            method,
            path,
            &[("vinfra-api-session-id", token.into())],
            body,
        )
    }
}

impl std::ops::Deref for Center {
    type Target = Requests;

    fn deref(&self) -> &Requests {
        &self.requests
    }
}

/// A running `vinfra-center`, stopped (SIGTERM, by its PID) when dropped.
pub struct Center {
    child: Option<Child>,
    pub url: String,
    pub state: PathBuf,
    /// Its requests: `send` and `call` (through `Deref`).
    requests: Requests,
    pub stdout: mpsc::Receiver<String>,
}

impl Center {
    /// Starts a center on a free loopback port over plain HTTP with these more arguments.
    pub fn start(state: &Path, more: &[String]) -> Center {
        Self::start_with(state, true, more)
    }

    /// Starts a center (HTTPS unless `insecure`).
    pub fn start_with(state: &Path, insecure: bool, more: &[String]) -> Center {
        std::fs::create_dir_all(state).unwrap();
        let pw = state.join("admin-password");
        std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
        let key = state.join("cluster.key");
        if !key.exists() && !more.iter().any(|a| a == "--lab" || a == "--key-file") {
            std::fs::write(&key, "42".repeat(32)).unwrap();
        }
        let mut cmd = Command::new(CENTER);
        cmd.arg("--state-dir")
            .arg(state.join("center"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--admin-password-file")
            .arg(&pw)
            .args(more);
        if key.exists() && !more.iter().any(|a| a == "--lab" || a == "--key-file") {
            cmd.arg("--key-file").arg(&key);
        }
        if insecure {
            cmd.arg("--insecure-http");
        }
        // Fast polls make fast tests, unless the test chose.
        if !more.iter().any(|a| a == "--poll-ms") {
            cmd.args(["--poll-ms", "300"]);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "error");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("vinfra-center printed nothing: {e}"));
        let url = first
            .split("console at ")
            .nth(1)
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .trim_end_matches('/')
            .to_string();
        let tls = ureq::tls::TlsConfig::builder()
            // The center's certificate is self-signed (made at its first start).
            .disable_verification(true)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(tls)
            .build()
            .into();
        Center {
            child: Some(child),
            requests: Requests {
                url: url.clone(),
                agent,
            },
            url,
            state: state.to_path_buf(),
            stdout: rx,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it with SIGTERM and waits (up to 10 s) for it to exit; its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vinfra-center did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What sends requests, for other threads (the center's process stays with `self`).
    pub fn requests(&self) -> Requests {
        self.requests.clone()
    }

    /// A request with a session token that must answer `want`; the body.
    pub fn ok(&self, token: &str, method: &str, path: &str, body: &str, want: u16) -> Value {
        let (status, v) = self.send(
            method,
            path,
            &[("vinfra-api-session-id", token.into())],
            body,
        );
        assert_eq!(status, want, "{method} {path} {body}: {v}");
        v
    }

    /// `cluster-1`'s DRS pass now (`GET …/drs/recommendations`, 200).
    pub fn drs_pass(&self, token: &str) -> Value {
        self.ok(
            token,
            "GET",
            "/api/vcenter/cluster/cluster-1/drs/recommendations",
            "",
            200,
        )
    }

    /// Logs in; the session token.
    pub fn login(&self, user: &str, password: &str) -> String {
        let (status, v) = self.send(
            "POST",
            "/api/session",
            &[("Authorization", basic(user, password))],
            "",
        );
        assert_eq!(status, 201, "login as {user}: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// Logs in as the first user.
    pub fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD)
    }

    /// Waits up to `secs` for `done`.
    pub fn wait(&self, what: &str, secs: u64, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for center task `id` to end; returns it.
    pub fn task(&self, token: &str, id: u64) -> Value {
        let mut last = Value::Null;
        self.wait(&format!("task {id}"), 60, || {
            last = self.ok(token, "GET", &format!("/api/cis/tasks/{id}"), "", 200);
            last["state"] != "running"
        });
        last
    }

    /// Runs an operation to its end (a `202 {task}` answer, then the task succeeding);
    /// the finished task.
    pub fn op(&self, token: &str, path: &str, body: &str) -> Value {
        let started = self.ok(token, "POST", path, body, 202);
        let task = self.task(token, started["task"].as_u64().unwrap());
        assert_eq!(task["state"], "succeeded", "{path}: {task}");
        task
    }

    /// How many hosts the center has connected.
    pub fn hosts_connected(&self, token: &str) -> usize {
        self.ok(token, "GET", "/api/vcenter/host", "", 200)
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["state"] == "connected")
            .count()
    }

    /// Waits (30 s at most) until `hosts` hosts are connected.
    pub fn wait_hosts(&self, token: &str, hosts: usize) {
        self.wait(&format!("{hosts} connected hosts"), 30, || {
            self.hosts_connected(token) == hosts
        });
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `Authorization: Basic …`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The workspace's build folder of this test (`target/debug`), where cargo put the
/// `vinfra-lab`, `vinfra-host` and `vinfra` binaries (`cargo build -p vinfra-host --bins`).
pub fn bin_dir() -> PathBuf {
    // target/debug/deps/api_x-HASH → target/debug
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// A `vinfra-lab` of real hosts, brought down when dropped.
pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The test guest VMs run.
    pub kernel: PathBuf,
    lab: PathBuf,
}

impl Lab {
    /// `hosts` hosts with no VM, or `None` after a skip (a failure under `CI=true`)
    /// without KVM, root, the guest kit or the host binaries.
    pub fn up(hosts: u32) -> Option<Lab> {
        if !kvm_or_skip() {
            return None;
        }
        let kernel = guest("workload")?;
        if !is_root() {
            skip("the lab's hosts run in network namespaces, which need root");
            return None;
        }
        let lab = bin_dir().join("vinfra-lab");
        if !lab.exists() || !bin_dir().join("vinfra-host").exists() {
            let why = format!(
                "{} or vinfra-host missing: cargo build -p vinfra-host --bins",
                lab.display()
            );
            assert!(!in_ci(), "{why}");
            skip(why);
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let up = run(
            Command::new(&lab)
                .arg("--dir")
                .arg(dir.path().join("lab"))
                .args(["up", "--vms", "0", "--hosts"])
                .arg(hosts.to_string()),
            Duration::from_secs(60),
        );
        assert!(up.success(), "{up}");
        Some(Lab { dir, kernel, lab })
    }

    /// The lab's folder (`--lab` of the center).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    /// The process id of host `h` (1-based), as the lab recorded it.
    pub fn host_pid(&self, h: u32) -> u32 {
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(self.path().join("lab.json")).unwrap())
                .unwrap();
        u32::try_from(record["hosts"][h as usize - 1]["pid"].as_u64().unwrap()).unwrap()
    }

    /// `GET /api/v1{path}` of host `h` (1-based), straight from the host.
    pub fn host_get(&self, h: u32, path: &str) -> Value {
        self.host_try_get(h, path).unwrap()
    }

    /// As [`Lab::host_get`], the host's error as text.
    pub fn host_try_get(&self, h: u32, path: &str) -> Result<Value, String> {
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(self.path().join("lab.json")).unwrap())
                .unwrap();
        let api = record["hosts"][h as usize - 1]["api"]
            .as_str()
            .unwrap()
            .to_string();
        let token =
            vinfra_host::api::ApiToken::from_key_file(&self.path().join("cluster.key")).unwrap();
        let client = vinfra_host::api::client::Client::new(&api, token).unwrap();
        client.get(path).map_err(|e| e.to_string())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the hosts said, beside the failed assertion: the folder goes with us.
            for h in 1.. {
                let Ok(log) = std::fs::read_to_string(self.path().join(format!("host{h}.log")))
                else {
                    break;
                };
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                eprintln!("---- host{h}.log (last 60 lines) ----\n{tail}");
            }
        }
        let _ = run(
            Command::new(&self.lab)
                .arg("--dir")
                .arg(self.path())
                .arg("down"),
            Duration::from_secs(30),
        );
    }
}
