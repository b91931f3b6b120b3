//! Backup jobs against a host API served in this process by a fake host that records
//! the backups asked of it and keeps a pretend repository (no KVM, no root: runs
//! anywhere): the job routes, roles and bad input; runs now and by the scheduler (a job
//! every 2 s), retention through `POST /api/v1/backups/forget`, no second run while one
//! is in progress, the backups listed for a restore, jobs of some disks only, and one
//! disk written back into its VM.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use support::Center;
use vinfra_host::api::{
    serve, ApiError, ApiToken, BackupInfo, BackupsQuery, Console, ForgetRequest, ForgetResult,
    HostCapacity, HostEvent, HostInfo, HostService, IncomingReady, IncomingRequest, PowerState,
    RestoreDiskRequest, Result, ServerHandle, TaskHandle, VmInfo, VmOp, VmSpec,
};

/// A backup the fake host was asked for.
#[derive(Debug, Clone, PartialEq)]
struct Asked {
    vm: String,
    repository: String,
    incremental: bool,
    disks: Option<Vec<u32>>,
}

/// A host with VMs `a` and `b` running; backups end at once unless `hold` is set.
#[derive(Default)]
struct BackupHost {
    asked: Mutex<Vec<Asked>>,
    /// Repository → its backups, oldest first.
    repos: Mutex<BTreeMap<String, Vec<BackupInfo>>>,
    forgets: Mutex<Vec<ForgetRequest>>,
    /// Disks written back: the VM and the request.
    restored: Mutex<Vec<(String, RestoreDiskRequest)>>,
    hold: AtomicBool,
    held: Mutex<Vec<(TaskHandle, Asked)>>,
}

impl BackupHost {
    fn store(&self, a: &Asked) -> String {
        let mut repos = self.repos.lock().unwrap();
        let list = repos.entry(a.repository.clone()).or_default();
        let id = format!(
            "{:064x}",
            list.len() + 1 + 1000 * self.asked.lock().unwrap().len()
        );
        list.push(BackupInfo {
            id: id.clone(),
            vm: a.vm.clone(),
            time_unix_s: vinfra_host::api::system_now_ms() / 1000,
            host: "host1".into(),
            parent: None,
            disks: vec!["disk0".into()],
            bytes: 1 << 20,
            bytes_read: 1 << 20,
            bytes_new: 4096,
        });
        id
    }

    fn release(&self) {
        for (task, a) in self.held.lock().unwrap().drain(..) {
            let id = self.store(&a);
            task.succeed(serde_json::json!({ "backup": id }));
        }
    }

    fn backups_of(&self, repository: &str, vm: &str) -> usize {
        self.repos
            .lock()
            .unwrap()
            .get(repository)
            .map_or(0, |l| l.iter().filter(|b| b.vm == vm).count())
    }

    fn asked_of(&self, vm: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.vm == vm)
            .count()
    }
}

impl HostService for BackupHost {
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
        Ok(vec![self.vm("a")?, self.vm("b")?])
    }
    fn vm(&self, name: &str) -> Result<VmInfo> {
        if name != "a" && name != "b" {
            return Err(ApiError::VmNotFound(name.into()));
        }
        let mut info = VmInfo::new(VmSpec::new(name, "/k", 16), PowerState::Running);
        info.host = Some(1);
        Ok(info)
    }
    fn create_vm(&self, _: VmSpec) -> Result<VmInfo> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn delete_vm(&self, _: &str) -> Result<()> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()> {
        self.vm(name)?;
        let req = match op {
            VmOp::Backup(req) => req,
            VmOp::RestoreDisk(req) => {
                self.restored
                    .lock()
                    .unwrap()
                    .push((name.into(), req.clone()));
                task.succeed(serde_json::json!({"vm": name, "disk": req.disk}));
                return Ok(());
            }
            _ => return Err(ApiError::Unsupported("fake: backups only".into())),
        };
        let a = Asked {
            vm: name.into(),
            repository: req.repository,
            incremental: req.incremental,
            disks: req.disks,
        };
        self.asked.lock().unwrap().push(a.clone());
        if self.hold.load(Ordering::SeqCst) {
            task.progress(0.5, "reading");
            self.held.lock().unwrap().push((task, a));
        } else {
            let id = self.store(&a);
            task.succeed(serde_json::json!({ "backup": id }));
        }
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
    fn backups(&self, q: BackupsQuery) -> Result<Vec<BackupInfo>> {
        let repos = self.repos.lock().unwrap();
        let list = repos.get(&q.repository).ok_or(ApiError::InvalidValue {
            field: "repository".into(),
            why: format!("no backup repository at {}", q.repository),
        })?;
        Ok(list
            .iter()
            .filter(|b| q.vm.as_ref().is_none_or(|vm| &b.vm == vm))
            .cloned()
            .collect())
    }
    fn forget_backups(&self, r: ForgetRequest) -> Result<ForgetResult> {
        self.forgets.lock().unwrap().push(r.clone());
        let mut repos = self.repos.lock().unwrap();
        let list = repos.entry(r.repository.clone()).or_default();
        let mine: Vec<String> = list
            .iter()
            .filter(|b| b.vm == r.vm)
            .map(|b| b.id.clone())
            .collect();
        let cut = mine.len().saturating_sub(r.keep_last as usize);
        let forgotten: Vec<String> = mine[..cut].to_vec();
        list.retain(|b| !forgotten.contains(&b.id));
        Ok(ForgetResult {
            kept: mine[cut..].iter().rev().cloned().collect(),
            forgotten,
            bytes_deleted: 0,
        })
    }
}

fn setup(host: &Arc<BackupHost>) -> (ServerHandle, tempfile::TempDir, Center, String) {
    let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
    let server = serve("127.0.0.1:0".parse().unwrap(), token, host.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--host".to_string(),
        format!("fake-1=http://{}", server.local_addr()),
    ];
    let center = Center::start(dir.path(), &args);
    let admin = center.admin();
    center.wait("fake-1 connected and its VMs", 20, || {
        center.call(&admin, "GET", "/api/vcenter/vm/b", "").1["host"] == "fake-1"
    });
    (server, dir, center, admin)
}

fn add_user(center: &Center, admin: &str, name: &str, role: &str) -> String {
    center.ok(
        admin,
        "POST",
        "/api/vinfra/users",
        &format!(r#"{{"name": "{name}", "role": "{role}", "password": "{name}-password"}}"#),
        201,
    );
    center.login(name, &format!("{name}-password"))
}

/// Waits for the job's last run to end; the job.
fn run_ended(center: &Center, token: &str, job: &str) -> Value {
    let mut last = Value::Null;
    center.wait(&format!("a run of {job} to end"), 30, || {
        last = center.ok(
            token,
            "GET",
            &format!("/api/vinfra/backup/job/{job}"),
            "",
            200,
        );
        last["running"] == false
            && last["last_result"]["state"]
                .as_str()
                .is_some_and(|s| s != "running")
    });
    last
}

#[test]
fn jobs_are_made_checked_run_now_and_list_their_backups() {
    let host = Arc::new(BackupHost::default());
    let (server, _dir, center, admin) = setup(&host);
    let ro = add_user(&center, &admin, "ro", "read_only");
    let op = add_user(&center, &admin, "op", "operator");
    let job = r#"{"name": "nightly", "vms": ["a", "b"], "repository": "/backups/main",
        "schedule": "Daily 2:00", "keep_last": 2, "incremental": true}"#;

    // read_only reads and may not change or run anything.
    assert_eq!(
        center.ok(&ro, "GET", "/api/vinfra/backup/job", "", 200),
        serde_json::json!([])
    );
    let refused = center.ok(&ro, "POST", "/api/vinfra/backup/job", job, 403);
    assert_eq!(refused["error"]["kind"], "forbidden");

    // Bad input names its field; nothing is made.
    for (body, status, field) in [
        (
            r#"{"name": "j", "vms": ["a"], "repository": "/r"}"#,
            400,
            "schedule",
        ),
        (
            r#"{"name": "j", "vms": ["a"], "repository": "/r", "schedule": "every 1h", "colour": 1}"#,
            400,
            "colour",
        ),
        (
            r#"{"name": "../j", "vms": ["a"], "repository": "/r", "schedule": "every 1h"}"#,
            422,
            "name",
        ),
        (
            r#"{"name": "j", "vms": [], "repository": "/r", "schedule": "every 1h"}"#,
            422,
            "vms",
        ),
        (
            r#"{"name": "j", "vms": ["a", "nope"], "repository": "/r", "schedule": "every 1h"}"#,
            422,
            "vms[1]",
        ),
        (
            r#"{"name": "j", "vms": ["a", "a"], "repository": "/r", "schedule": "every 1h"}"#,
            422,
            "vms[1]",
        ),
        (
            r#"{"name": "j", "vms": ["a"], "repository": "relative", "schedule": "every 1h"}"#,
            422,
            "repository",
        ),
        (
            r#"{"name": "j", "vms": ["a"], "repository": "/r", "schedule": "weekly"}"#,
            422,
            "schedule",
        ),
        (
            r#"{"name": "j", "vms": ["a"], "repository": "/r", "schedule": "every 0h"}"#,
            422,
            "schedule",
        ),
        (
            r#"{"name": "j", "vms": ["a"], "repository": "/r", "schedule": "every 1h", "keep_last": -1}"#,
            400,
            "",
        ),
        (
            r#"{"name": "j", "vms": ["a"], "repository": "/r", "schedule": "every 1h", "disks": [0, 0]}"#,
            422,
            "disks[1]",
        ),
        (
            r#"{"name": "j", "vms": ["a"], "repository": "/r", "schedule": "every 1h", "disks": [64]}"#,
            422,
            "disks[0]",
        ),
    ] {
        let e = center.ok(&op, "POST", "/api/vinfra/backup/job", body, status);
        if !field.is_empty() {
            assert_eq!(e["error"]["field"], field, "{body}: {e}");
        }
    }
    assert_eq!(
        center.ok(&op, "GET", "/api/vinfra/backup/job", "", 200),
        serde_json::json!([])
    );

    // An operator makes it: canonical schedule, the next 02:00 UTC as its first run.
    let made = center.ok(&op, "POST", "/api/vinfra/backup/job", job, 201);
    assert_eq!(made["schedule"], "daily 02:00");
    assert_eq!(made["enabled"], true);
    let next = made["next_run_ms"].as_u64().unwrap();
    assert_eq!(next % 86_400_000, 2 * 3_600_000, "{made}");
    assert!(made["last_result"].is_null());
    let dup = center.ok(&op, "POST", "/api/vinfra/backup/job", job, 409);
    assert_eq!(dup["error"]["kind"], "conflict");

    // Run now: read_only may not; an operator's run backs up both VMs, then retention.
    center.ok(
        &ro,
        "POST",
        "/api/vinfra/backup/job/nightly?action=run",
        "",
        403,
    );
    let bad = center.ok(
        &op,
        "POST",
        "/api/vinfra/backup/job/nightly?action=go",
        "",
        422,
    );
    assert_eq!(bad["error"]["field"], "action");
    for _ in 0..3 {
        let run = center.ok(
            &op,
            "POST",
            "/api/vinfra/backup/job/nightly?action=run",
            "",
            202,
        );
        assert_eq!(run["tasks"].as_array().unwrap().len(), 2, "{run}");
        for id in run["tasks"].as_array().unwrap() {
            let task = center.task(&op, id.as_u64().unwrap());
            assert_eq!(task["state"], "succeeded", "{task}");
            assert_eq!(
                (&task["kind"], &task["user"]),
                (&"vm.backup".into(), &"op".into())
            );
        }
        let done = run_ended(&center, &op, "nightly");
        assert_eq!(done["last_result"]["state"], "succeeded", "{done}");
        assert_eq!(
            done["next_run_ms"].as_u64(),
            Some(next),
            "a run now keeps the slot"
        );
    }
    let asked = host.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 6);
    assert!(asked
        .iter()
        .all(|a| a.repository == "/backups/main" && a.incremental && a.disks.is_none()));
    // keep_last 2: the third run's retention forgot each VM's oldest.
    assert_eq!(host.backups_of("/backups/main", "a"), 2);
    assert_eq!(host.backups_of("/backups/main", "b"), 2);
    let forgets = host.forgets.lock().unwrap().clone();
    assert_eq!(forgets.len(), 6);
    assert!(forgets.iter().all(|f| f.keep_last == 2));
    let done = center.ok(&ro, "GET", "/api/vinfra/backup/job/nightly", "", 200);
    assert!(
        done["last_result"]["message"]
            .as_str()
            .unwrap()
            .contains("2 of 2 VM(s) backed up, 2 old backup(s) forgotten"),
        "{done}"
    );

    // The backups of a VM, for a restore (read_only may list them).
    let list = center.ok(
        &ro,
        "GET",
        "/api/vinfra/backup/backups?repository=/backups/main&vm=a",
        "",
        200,
    );
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .all(|b| b["vm"] == "a" && b["bytes_new"] == 4096));
    let e = center.ok(
        &ro,
        "GET",
        "/api/vinfra/backup/backups?repository=/none",
        "",
        422,
    );
    assert_eq!(e["error"]["field"], "repository", "{e}");
    let e = center.ok(
        &ro,
        "GET",
        "/api/vinfra/backup/backups?repository=rel",
        "",
        422,
    );
    assert_eq!(e["error"]["field"], "repository", "{e}");
    let e = center.ok(&ro, "GET", "/api/vinfra/backup/backups", "", 400);
    assert_eq!(e["error"]["field"], "repository", "{e}");

    // Changes: read_only may not; bad input changes nothing; disabling clears the slot.
    center.ok(
        &ro,
        "PATCH",
        "/api/vinfra/backup/job/nightly",
        r#"{"keep_last": 1}"#,
        403,
    );
    let e = center.ok(
        &op,
        "PATCH",
        "/api/vinfra/backup/job/nightly",
        r#"{"schedule": "hourly"}"#,
        422,
    );
    assert_eq!(e["error"]["field"], "schedule");
    let changed = center.ok(
        &op,
        "PATCH",
        "/api/vinfra/backup/job/nightly",
        r#"{"vms": ["b"], "enabled": false, "schedule": "every 12h", "disks": [1, 0]}"#,
        200,
    );
    assert_eq!(changed["vms"], serde_json::json!(["b"]));
    assert_eq!(changed["disks"], serde_json::json!([1, 0]));
    assert_eq!(changed["schedule"], "every 12h");
    assert!(changed["next_run_ms"].is_null(), "{changed}");
    assert_eq!(changed["keep_last"], 2);
    assert_eq!(
        changed["last_result"]["state"], "succeeded",
        "the last run stays"
    );
    center.ok(&op, "PATCH", "/api/vinfra/backup/job/none", "{}", 404);

    // The log says who did what.
    let events = center.ok(&admin, "GET", "/api/vinfra/events?limit=1000", "", 200);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "nightly")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "backup.job_started").count(),
        3
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "backup.job_succeeded")
            .count(),
        3
    );
    assert!(kinds.contains(&"backup.job_created") && kinds.contains(&"backup.job_changed"));

    // The VM's own backup action takes the same path as the jobs.
    let one = center.op(
        &op,
        "/api/vcenter/vm/a?action=backup",
        r#"{"repository": "/backups/one"}"#,
    );
    assert_eq!(
        (&one["kind"], &one["user"]),
        (&"vm.backup".into(), &"op".into())
    );
    assert_eq!(host.backups_of("/backups/one", "a"), 1);
    let e = center.ok(
        &op,
        "POST",
        "/api/vcenter/vm/a?action=backup",
        r#"{"repo": "/x"}"#,
        400,
    );
    assert_eq!(e["error"]["field"], "repo", "{e}");
    center.ok(
        &ro,
        "POST",
        "/api/vcenter/vm/a?action=backup",
        r#"{"repository": "/x"}"#,
        403,
    );

    // A run of a job of some disks asks the host for those.
    center.ok(
        &op,
        "POST",
        "/api/vinfra/backup/job/nightly?action=run",
        "",
        202,
    );
    run_ended(&center, &op, "nightly");
    let last = host.asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.vm.as_str(), last.disks), ("b", Some(vec![1, 0])));

    // One disk written back into its VM: a task on its host; read_only may not; the
    // body's fields are checked by the center (the VM's state by its host).
    let restore = r#"{"repository": "/backups/main", "disk": 1}"#;
    center.ok(
        &ro,
        "POST",
        "/api/vcenter/vm/a?action=restore-disk",
        restore,
        403,
    );
    let e = center.ok(
        &op,
        "POST",
        "/api/vcenter/vm/a?action=restore-disk",
        r#"{"repository": "/backups/main"}"#,
        400,
    );
    assert_eq!(e["error"]["field"], "disk", "{e}");
    let t = center.op(&op, "/api/vcenter/vm/a?action=restore-disk", restore);
    assert_eq!(
        (&t["kind"], &t["user"], &t["state"]),
        (&"vm.restore-disk".into(), &"op".into(), &"succeeded".into()),
        "{t}"
    );
    let restored = host.restored.lock().unwrap().clone();
    assert_eq!(restored.len(), 1);
    assert_eq!((restored[0].0.as_str(), restored[0].1.disk), ("a", 1));

    // Delete: read_only may not; then it is gone (its backups stay).
    center.ok(&ro, "DELETE", "/api/vinfra/backup/job/nightly", "", 403);
    center.ok(&op, "DELETE", "/api/vinfra/backup/job/nightly", "", 204);
    center.ok(&op, "GET", "/api/vinfra/backup/job/nightly", "", 404);
    center.ok(&op, "DELETE", "/api/vinfra/backup/job/nightly", "", 404);
    assert_eq!(host.backups_of("/backups/main", "a"), 2);
    server.stop();
}

#[test]
fn the_scheduler_runs_due_jobs_keeps_n_and_never_overlaps_a_run() {
    let host = Arc::new(BackupHost::default());
    let (server, _dir, mut center, admin) = setup(&host);
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/backup/job",
        r#"{"name": "often", "vms": ["a"], "repository": "/backups/often",
            "schedule": "every 2s", "keep_last": 2}"#,
        201,
    );
    // Three scheduled runs: each a full backup, the retention keeps the newest 2.
    center.wait("3 scheduled backups of a", 30, || host.asked_of("a") >= 3);
    let job = run_ended(&center, &admin, "often");
    assert_eq!(job["last_result"]["state"], "succeeded", "{job}");
    assert!(
        job["next_run_ms"].as_u64() > job["last_run_ms"].as_u64(),
        "{job}"
    );
    center.wait("the retention", 10, || {
        host.backups_of("/backups/often", "a") == 2
    });
    assert!(host.asked.lock().unwrap().iter().all(|a| !a.incremental));
    let tasks = center.ok(&admin, "GET", "/api/cis/tasks?target=a", "", 200);
    let tasks = tasks.as_array().unwrap();
    assert!(tasks.len() >= 3);
    assert!(tasks
        .iter()
        .all(|t| t["user"] == "scheduler" && t["kind"] == "vm.backup"));

    // A run that does not end: no second one starts, slots are skipped, run now is 409.
    host.hold.store(true, Ordering::SeqCst);
    center.wait("a held backup", 10, || {
        !host.held.lock().unwrap().is_empty()
    });
    let asked = host.asked_of("a");
    let busy = center.ok(&admin, "GET", "/api/vinfra/backup/job/often", "", 200);
    assert_eq!(busy["running"], true, "{busy}");
    assert_eq!(busy["last_result"]["state"], "running", "{busy}");
    let e = center.ok(
        &admin,
        "POST",
        "/api/vinfra/backup/job/often?action=run",
        "",
        409,
    );
    assert_eq!(e["error"]["kind"], "conflict");
    center.wait("a skipped slot", 10, || {
        center
            .ok(
                &admin,
                "GET",
                "/api/vinfra/events?target=often&limit=1000",
                "",
                200,
            )
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "backup.job_skipped" && e["user"] == "scheduler")
    });
    assert_eq!(
        host.asked_of("a"),
        asked,
        "nothing started while the run goes on"
    );
    host.hold.store(false, Ordering::SeqCst);
    host.release();
    center.wait("the held run to end and the next to come", 20, || {
        host.asked_of("a") > asked
    });

    // Disabled: the scheduler leaves it alone, also across a restart.
    center.ok(
        &admin,
        "PATCH",
        "/api/vinfra/backup/job/often",
        r#"{"enabled": false}"#,
        200,
    );
    run_ended(&center, &admin, "often");
    let asked = host.asked_of("a");
    assert!(center.stop().unwrap().success());
    let center = Center::start(
        &center.state,
        &[
            "--host".to_string(),
            format!("fake-1=http://{}", server.local_addr()),
        ],
    );
    let admin = center.admin();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(host.asked_of("a"), asked);
    let job = center.ok(&admin, "GET", "/api/vinfra/backup/job/often", "", 200);
    assert_eq!(job["enabled"], false, "{job}");

    // A run the center stops in the middle of: failed at the next start, its task
    // followed to its end all the same.
    host.hold.store(true, Ordering::SeqCst);
    let run = center.ok(
        &admin,
        "POST",
        "/api/vinfra/backup/job/often?action=run",
        "",
        202,
    );
    let task = run["tasks"][0].as_u64().unwrap();
    center.wait("the held backup", 10, || {
        !host.held.lock().unwrap().is_empty()
    });
    let mut center = center;
    assert!(center.stop().unwrap().success());
    let center = Center::start(
        &center.state,
        &[
            "--host".to_string(),
            format!("fake-1=http://{}", server.local_addr()),
        ],
    );
    let admin = center.admin();
    let job = run_ended(&center, &admin, "often");
    assert_eq!(job["last_result"]["state"], "failed", "{job}");
    assert!(
        job["last_result"]["message"]
            .as_str()
            .unwrap()
            .contains("the center stopped"),
        "{job}"
    );
    host.release();
    assert_eq!(center.task(&admin, task)["state"], "succeeded");
    server.stop();
}
