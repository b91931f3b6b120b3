//! A backup job through a real `vinfra-lab` of 2 hosts (network namespaces, as root; the
//! workload guest on KVM): a running VM with a disk is backed up three times by a job
//! that keeps 2, through the hosts' vcb role; the repository then lists 2 backups of it
//! (the retention forgot and pruned the oldest), the newest comes back as a new VM, and
//! its disk is written back into the VM once it is off.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{Center, Lab};

#[test]
fn a_job_backs_a_lab_vm_up_keeps_two_and_one_is_restored() {
    let Some(lab) = Lab::up(2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lab_arg = ["--lab".to_string(), lab.path().display().to_string()];
    let center = Center::start(dir.path(), &lab_arg);
    let admin = center.admin();
    center.wait_hosts(&admin, 2);
    let spec = json!({"spec": {"name": "bk", "kernel": lab.kernel.display().to_string(),
        "memory_mib": 32, "disks": [{"size_mib": 8}]}});
    center.ok(&admin, "POST", "/api/vcenter/vm", &spec.to_string(), 201);
    center.op(&admin, "/api/vcenter/vm/bk/power?action=start", "");

    let repository = lab.dir.path().join("backups").display().to_string();
    let job = json!({"name": "lab", "vms": ["bk"], "repository": repository,
        "schedule": "daily 03:00", "keep_last": 2, "incremental": true});
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/backup/job",
        &job.to_string(),
        201,
    );
    for run in 0..3 {
        let started = center.ok(
            &admin,
            "POST",
            "/api/vinfra/backup/job/lab?action=run",
            "",
            202,
        );
        assert_eq!(started["tasks"].as_array().unwrap().len(), 1, "{started}");
        let mut last = Value::Null;
        center.wait(&format!("run {run} of the job"), 60, || {
            last = center.ok(&admin, "GET", "/api/vinfra/backup/job/lab", "", 200);
            last["running"] == false
                && last["last_result"]["state"]
                    .as_str()
                    .is_some_and(|s| s != "running")
        });
        assert_eq!(last["last_result"]["state"], "succeeded", "{last}");
    }
    let query = format!("/api/vinfra/backup/backups?repository={repository}&vm=bk");
    let backups = center.ok(&admin, "GET", &query, "", 200);
    let backups = backups.as_array().unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");
    assert!(backups
        .iter()
        .all(|b| b["vm"] == "bk" && b["disks"] == json!(["disk0"])));
    assert!(
        backups[1]["parent"].is_string(),
        "the job's backups are incremental: {backups:?}"
    );

    let newest = backups[1]["id"].as_str().unwrap();
    let restore = json!({"repository": repository, "backup": newest, "name": "bk-restored"});
    center.op(
        &admin,
        "/api/vcenter/vm/bk?action=restore",
        &restore.to_string(),
    );
    center.wait("the restored VM in the inventory", 20, || {
        center
            .call(&admin, "GET", "/api/vcenter/vm/bk-restored", "")
            .0
            == 200
    });
    let restored = center.ok(&admin, "GET", "/api/vcenter/vm/bk-restored", "", 200);
    assert_eq!(restored["info"]["state"], "shut_off", "{restored}");

    // The disk goes back into the VM itself only once it is off.
    let body = json!({"repository": repository, "backup": newest, "disk": 0}).to_string();
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/vm/bk?action=restore-disk",
        &body,
    );
    assert_eq!(s, 409, "{e}");
    center.op(&admin, "/api/vcenter/vm/bk/power?action=stop", "");
    let done = center.op(&admin, "/api/vcenter/vm/bk?action=restore-disk", &body);
    assert_eq!(done["kind"], "vm.restore-disk", "{done}");
}
