//! A datacentre for the browser tests: a `vinfra-lab` of hosts running test-guest VMs and
//! a real `vinfra-center` over HTTPS (its self-signed certificate) managing them; both
//! ended when dropped (the lab through `vinfra-lab down`, the center by its PID).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vinfra_testkit::{guest, is_root, kvm_or_skip, run, skip};

/// The center binary of this package.
const CENTER: &str = env!("CARGO_BIN_EXE_vinfra-center");

/// A built binary of the workspace (`vinfra-lab`, `vinfra-host`): next to this test's
/// `deps/` folder, where `cargo test --workspace` puts every package's binaries. Built
/// once with cargo when missing (a `cargo test -p vinfra-center` builds only this package).
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let path = profile_dir.join(name);
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "vinfra-host", "--bins"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let built = run(&mut build, Duration::from_secs(900));
        assert!(
            built.success(),
            "cargo build -p vinfra-host --bins: {built}"
        );
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A lab and its center.
pub struct Datacentre {
    pub dir: tempfile::TempDir,
    lab: PathBuf,
    center: Option<Child>,
    /// The console's URL (`https://127.0.0.1:PORT/`).
    pub url: String,
    pub user: String,
    pub password: String,
}

impl Datacentre {
    /// `hosts` hosts running `vms` VMs of the `workload` test guest, and the center;
    /// `None` after a skip (a failure under CI) without KVM, root or the guest kit.
    pub fn up(hosts: u32, vms: u32) -> Option<Datacentre> {
        if !kvm_or_skip() {
            return None;
        }
        let kernel = guest("workload")?;
        if !is_root() {
            skip("the lab's network namespaces need root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let lab = dir.path().join("lab");
        let lab_bin = workspace_binary("vinfra-lab");
        workspace_binary("vinfra-host");
        let up = run(
            Command::new(&lab_bin)
                .arg("--dir")
                .arg(&lab)
                .args([
                    "up",
                    "--hosts",
                    &hosts.to_string(),
                    "--vms",
                    &vms.to_string(),
                ])
                .arg("--kernel")
                .arg(&kernel),
            Duration::from_secs(120),
        );
        let mut dc = Datacentre {
            dir,
            lab: lab.clone(),
            center: None,
            url: String::new(),
            user: "admin".into(),
            password: "browser-test-password".into(),
        };
        assert!(up.success(), "vinfra-lab up: {up}");

        let password_file = dc.dir.path().join("admin-password");
        std::fs::write(&password_file, &dc.password).unwrap();
        let port = super::free_port();
        let log = std::fs::File::create(dc.dir.path().join("center.log")).unwrap();
        let mut center = Command::new(CENTER);
        center
            .arg("--state-dir")
            .arg(dc.dir.path().join("center"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            // The lab's hosts (esx-1…) and its cluster key.
            .arg("--lab")
            .arg(&lab)
            .arg("--admin-password-file")
            .arg(&password_file)
            .arg("--web-dir")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist"));
        dc.center = Some(
            center
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        dc.url = format!("https://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = dc.center.as_mut().map(Child::try_wait) {
                panic!("vinfra-center exited ({status}):\n{}", dc.center_log());
            }
            assert!(
                Instant::now() < deadline,
                "vinfra-center did not listen within 30 s:\n{}",
                dc.center_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(dc)
    }

    /// The center's output so far.
    pub fn center_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("center.log")).unwrap_or_default()
    }
}

impl Drop for Datacentre {
    fn drop(&mut self) {
        if let Some(mut center) = self.center.take() {
            let _ = center.kill();
            let _ = center.wait();
        }
        let _ = run(
            Command::new(workspace_binary("vinfra-lab"))
                .arg("--dir")
                .arg(&self.lab)
                .arg("down"),
            Duration::from_secs(30),
        );
    }
}
