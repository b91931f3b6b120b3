//! The datacentre the browser tests drive, from the center's own test support
//! (`tests/support`): a `vinfra-lab` of real hosts, a `vinfra-center` over HTTPS with its
//! self-signed certificate managing it (`--lab`), and `workload` test-guest VMs created
//! and started through the center's API (placed by the center, as the demo does).

use serde_json::json;

use crate::support::{Center, Lab, ADMIN_PASSWORD};

/// The lab, its center and its VMs. Fields drop in order: the center, its state, the lab.
pub struct Datacentre {
    pub center: Center,
    _state: tempfile::TempDir,
    pub lab: Lab,
    /// The console's URL (`https://127.0.0.1:PORT`).
    pub url: String,
    pub user: String,
    pub password: String,
}

impl Datacentre {
    /// `hosts` connected hosts running `vms` VMs (`vm-1`…); `None` after a skip (a
    /// failure under CI) without KVM, root, the guest kit or the host binaries.
    pub fn up(hosts: u32, vms: u32) -> Option<Datacentre> {
        let lab = Lab::up(hosts)?;
        let state = tempfile::tempdir().unwrap();
        let lab_arg = ["--lab".to_string(), lab.path().display().to_string()];
        let center = Center::start_with(state.path(), false, &lab_arg);
        assert!(center.url.starts_with("https://"), "{}", center.url);
        let admin = center.admin();
        center.wait(&format!("{hosts} connected hosts"), 60, || {
            let all = center.ok(&admin, "GET", "/api/vcenter/host", "", 200);
            all.as_array().is_some_and(|a| {
                a.iter().filter(|h| h["state"] == "connected").count() == hosts as usize
            })
        });
        for i in 1..=vms {
            let spec = json!({
                "name": format!("vm-{i}"),
                "kernel": lab.kernel,
                "memory_mib": 32,
                "cmdline": "workload.mib=1",
            });
            center.ok(
                &admin,
                "POST",
                "/api/vcenter/vm",
                &json!({ "spec": spec }).to_string(),
                201,
            );
        }
        for i in 1..=vms {
            let path = format!("/api/vcenter/vm/vm-{i}/power?action=start");
            let started = center.ok(&admin, "POST", &path, "", 202);
            let task = center.task(&admin, started["task"].as_u64().unwrap());
            assert_eq!(task["state"], "succeeded", "{path}: {task}");
        }
        let url = center.url.clone();
        Some(Datacentre {
            center,
            _state: state,
            lab,
            url,
            user: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
    }
}
