//! `vinfra` (the command line, examples/host) against a real center over HTTPS that runs
//! a `vinfra-lab` of 3 hosts: `vinfra login` with the admin's password file and the
//! center's self-signed certificate as `--ca-cert` (a login that does not trust it is
//! refused), then the stored session: `host list`, `vm create`, `vm start`, `--json vm
//! list`, `vm migrate --to` (the VM's host changes), `vm console` (the guest's lines
//! through the center's WebSocket over TLS; Ctrl-] leaves), a wrong password and a read-only
//! user refused with the center's message and exit status 1, `logout`. Root, KVM and the
//! guest kit as for `api_lab` (a skip without them, a failure under `CI=true`); the
//! binaries come from `cargo build -p vinfra-host --bins`.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{bin_dir, Center, Lab};
use vinfra_testkit::{run, Finished};

/// `vinfra` with its configuration (the stored session) under `config`, and none of the
/// environment that would pick a host or a server for it.
fn vinfra(config: &Path, args: &[&str]) -> Finished {
    let exe = bin_dir().join("vinfra");
    assert!(
        exe.exists(),
        "{} missing: cargo build -p vinfra-host --bins",
        exe.display()
    );
    run(
        Command::new(exe)
            .args(args)
            .env("XDG_CONFIG_HOME", config)
            .env_remove("VINFRA_HOST")
            .env_remove("VINFRA_KEY_FILE")
            .env_remove("VINFRA_SERVER"),
        Duration::from_secs(60),
    )
}

/// `vinfra` that must succeed; its standard output.
fn ok(config: &Path, args: &[&str]) -> String {
    let done = vinfra(config, args);
    assert!(done.success(), "vinfra {args:?}: {done}");
    done.stdout
}

/// `vinfra` that must fail with exit status 1 and print `vinfra: ...want...`.
fn refused(config: &Path, args: &[&str], want: &str) {
    let done = vinfra(config, args);
    assert_eq!(done.status.code(), Some(1), "vinfra {args:?}: {done}");
    assert!(
        done.stderr.contains("vinfra: ") && done.stderr.contains(want),
        "vinfra {args:?}: wanted {want:?}: {done}"
    );
}

/// `vinfra --json vm show NAME`.
fn vm(config: &Path, name: &str) -> Value {
    serde_json::from_str(&ok(config, &["--json", "vm", "show", name])).unwrap()
}

/// `vinfra vm console NAME` through the stored session until an `HB ` line, then Ctrl-].
fn console_shows_heartbeats(config: &Path, name: &str) {
    use std::io::{Read, Write};
    let mut child = Command::new(bin_dir().join("vinfra"))
        .args(["vm", "console", name])
        .env("XDG_CONFIG_HOME", config)
        .env_remove("VINFRA_HOST")
        .env_remove("VINFRA_KEY_FILE")
        .env_remove("VINFRA_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("HB ") {
                let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
                return;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
    });
    let seen = rx.recv_timeout(Duration::from_secs(20));
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&[0x1d]);
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("vinfra vm console {name} did not leave on Ctrl-]");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let seen = seen.unwrap_or_else(|_| panic!("no console output of {name} within 20 s: {stderr}"));
    assert!(seen.contains("HB "), "{seen} {stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
}

#[test]
fn vinfra_talks_to_the_center() {
    let Some(lab) = Lab::up(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lab_arg = ["--lab".to_string(), lab.path().display().to_string()];
    // HTTPS with the certificate the center makes at its first start.
    let center = Center::start_with(dir.path(), false, &lab_arg);
    assert!(center.url.starts_with("https://"), "{}", center.url);
    let admin = center.admin();
    center.wait_hosts(&admin, 3);
    let url = center.url.as_str();
    let cert = dir.path().join("center/tls/cert.pem");
    let cert = cert.to_str().unwrap();
    let password = dir.path().join("admin-password");
    let password = password.to_str().unwrap();
    let config = dir.path().join("config");
    let cfg = config.as_path();

    // The self-signed certificate is trusted only when given.
    refused(
        cfg,
        &["--server", url, "login", "--password-file", password],
        "--ca-cert",
    );
    refused(cfg, &["vm", "list"], "which host?");
    let out = ok(
        cfg,
        &[
            "--server",
            url,
            "login",
            "--password-file",
            password,
            "--ca-cert",
            cert,
        ],
    );
    assert!(
        out.contains("logged in to") && out.contains("admin"),
        "{out}"
    );
    let session: PathBuf = config.join("vinfra/session.json");
    let mode = std::fs::metadata(&session).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "session file mode {mode:o}");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    assert_eq!(stored["server"], url, "{stored}");
    assert_eq!(stored["trust"]["ca_cert"], cert, "{stored}");

    // The stored session: no --server needed.
    let hosts = ok(cfg, &["host", "list"]);
    for h in ["esx-1", "esx-2", "esx-3"] {
        assert!(hosts.contains(h), "{hosts}");
    }
    let kernel = lab.kernel.to_str().unwrap();
    let out = ok(
        cfg,
        &[
            "vm",
            "create",
            "web-1",
            "--kernel",
            kernel,
            "--memory-mib",
            "32",
            "--cmdline",
            "workload.mib=1",
        ],
    );
    assert!(out.contains("created web-1"), "{out}");
    let out = ok(cfg, &["vm", "start", "web-1"]);
    assert!(out.contains("vm.start web-1): success"), "{out}");
    // The center reads the VM back when the task ends; its list follows the hosts' polls.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let web = loop {
        let list: Value = serde_json::from_str(&ok(cfg, &["--json", "vm", "list"])).unwrap();
        let web = list
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "web-1")
            .unwrap_or_else(|| panic!("web-1 not in {list}"))
            .clone();
        if web["info"]["state"] == "running" || std::time::Instant::now() > deadline {
            break web;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(web["info"]["state"], "running", "{web}");
    let from = web["host"].as_str().unwrap().to_string();

    // Live migration through the center; the center then reports the new host.
    let to = if from == "esx-2" { "esx-3" } else { "esx-2" };
    let out = ok(
        cfg,
        &["--server", url, "vm", "migrate", "web-1", "--to", to],
    );
    assert!(out.contains("vm.relocate web-1): success"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm(cfg, "web-1")["host"] != to {
        assert!(
            Instant::now() < deadline,
            "web-1 not on {to}: {}",
            vm(cfg, "web-1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its console through the center (wss, the stored --ca-cert): the guest's heartbeat
    // lines come out; Ctrl-] on stdin leaves, exit 0.
    console_shows_heartbeats(cfg, "web-1");
    // A move to where it runs is the center's 422, its message printed.
    refused(
        cfg,
        &["vm", "migrate", "web-1", "--to", to],
        &format!("already runs on {to}"),
    );

    // A wrong password: the center's 401 message, exit 1, nothing stored.
    let other = dir.path().join("other");
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let wrong = wrong.to_str().unwrap();
    refused(
        &other,
        &[
            "--server",
            url,
            "login",
            "--password-file",
            wrong,
            "--ca-cert",
            cert,
        ],
        "wrong user name or password",
    );
    assert!(!other.join("vinfra/session.json").exists());

    // A read-only user may look but not act: the center's 403 message.
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "ro", "role": "read_only", "password": "read-only-pw"}"#,
        201,
    );
    let ro_pw = dir.path().join("ro-password");
    std::fs::write(&ro_pw, "read-only-pw\n").unwrap();
    let ro_pw = ro_pw.to_str().unwrap();
    ok(
        &other,
        &[
            "--server",
            url,
            "login",
            "--user",
            "ro",
            "--password-file",
            ro_pw,
            "--ca-cert",
            cert,
        ],
    );
    assert!(ok(&other, &["vm", "list"]).contains("web-1"));
    refused(
        &other,
        &["vm", "stop", "web-1"],
        "ro (read_only) may not do this: it needs the operator role",
    );
    assert_eq!(vm(cfg, "web-1")["info"]["state"], "running");

    // Clean up through the command line, then log out: the session is gone.
    ok(cfg, &["vm", "stop", "web-1"]);
    ok(cfg, &["vm", "delete", "web-1"]);
    assert_eq!(ok(cfg, &["logout"]).trim(), "logged out");
    assert!(!session.exists());
    refused(cfg, &["--server", url, "vm", "list"], "not logged in");
    ok(&other, &["logout"]);
}
