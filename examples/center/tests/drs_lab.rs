//! DRS through the center, on a real `vinfra-lab` of 3 hosts (network namespaces as
//! root; test guests on KVM): four busy VMs started on one host make an imbalance the
//! center's recommendations undo; a fully automated pass applies them by live
//! migration (each VM moved once, the hosts' own view changes); a VM started with no
//! host named is placed by DRS off the busy host; bad DRS requests are refused.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{Center, Lab};

fn hosts_of(center: &Center, token: &str) -> Vec<(String, String)> {
    center
        .ok(token, "GET", "/api/vcenter/vm", "", 200)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["host"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn drs_balances_a_lab_and_places_power_ons() {
    let Some(lab) = Lab::up(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lab_arg = ["--lab".to_string(), lab.path().display().to_string()];
    let center = Center::start(dir.path(), &lab_arg);
    let admin = center.admin();
    center.wait_hosts(&admin, 3);
    // Four VMs whose guests dirty memory all the time (busy vCPUs), all on esx-1.
    let names = ["d1", "d2", "d3", "d4"];
    for name in names {
        let spec = json!({"name": name, "kernel": lab.kernel, "memory_mib": 32,
                          "cmdline": "workload.mib=4 workload.rate=16"});
        center.ok(
            &admin,
            "POST",
            "/api/vcenter/vm",
            &json!({"spec": spec, "host": "esx-1"}).to_string(),
            201,
        );
        center.op(
            &admin,
            &format!("/api/vcenter/vm/{name}/power?action=start&host=esx-1"),
            "",
        );
    }
    // The center sees them running on esx-1 with measured CPU.
    center.wait("measured CPU of the four VMs", 30, || {
        let vms = center.ok(&admin, "GET", "/api/vcenter/vm?host=esx-1", "", 200);
        let vms = vms.as_array().unwrap();
        vms.len() == 4
            && vms
                .iter()
                .all(|v| v["info"]["stats"]["cpu_percent"].as_f64().unwrap_or(0.0) > 1.0)
    });

    // Manual (the default): recommendations, nothing applied.
    let pass = center.drs_pass(&admin);
    let recs = pass["recommendations"].as_array().unwrap();
    assert!(
        !recs.is_empty(),
        "no recommendation for 4 VMs on one host: {pass}"
    );
    assert!(
        recs.iter()
            .all(|r| r["from"] == "esx-1" && r["to"] != "esx-1"),
        "{pass}"
    );
    assert!(pass["imbalance_after"].as_f64() < pass["imbalance"].as_f64());
    let ran = center.ok(
        &admin,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=run",
        "",
        200,
    );
    assert!(ran["applied"].as_array().unwrap().is_empty(), "{ran}");

    // Bad requests change nothing.
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=explode",
        "",
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("action")),
        "{e}"
    );
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs/recommendations?action=apply",
        r#"{"vm": "d1", "too": "esx-2"}"#,
    );
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("too")), "{e}");
    let (s, _) = center.call(
        &admin,
        "GET",
        "/api/vcenter/cluster/nowhere/drs/recommendations",
        "",
    );
    assert_eq!(s, 404);
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "ro", "role": "read_only", "password": "read-only-pw"}"#,
        201,
    );
    let ro = center.login("ro", "read-only-pw");
    let (s, _) = center.call(
        &ro,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=run",
        "",
    );
    assert_eq!(s, 403);
    assert!(hosts_of(&center, &admin).iter().all(|(_, h)| h == "esx-1"));

    // Fully automated: one pass moves VMs off esx-1 by live migration, each once.
    center.ok(
        &admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        r#"{"drs": {"automation": "fully_automated", "threshold": 3}}"#,
        200,
    );
    let ran = center.ok(
        &admin,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=run",
        "",
        200,
    );
    let applied = ran["applied"].as_array().unwrap();
    assert!(!applied.is_empty(), "{ran}");
    let mut moved: Vec<&str> = applied.iter().map(|r| r["vm"].as_str().unwrap()).collect();
    moved.sort_unstable();
    moved.dedup();
    assert_eq!(
        moved.len(),
        applied.len(),
        "a VM moved twice in one pass: {ran}"
    );
    // A second pass while the migrations run asks for none of them again.
    let again = center.ok(
        &admin,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=run",
        "",
        200,
    );
    for r in again["applied"].as_array().unwrap() {
        assert!(!moved.contains(&r["vm"].as_str().unwrap()), "{again}");
    }
    for vm in &moved {
        let tasks = center.ok(
            &admin,
            "GET",
            &format!("/api/cis/tasks?target={vm}"),
            "",
            200,
        );
        let relocate = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "vm.relocate")
            .cloned()
            .unwrap_or_else(|| panic!("no relocate task of {vm}: {tasks}"));
        assert_eq!(relocate["user"], "drs", "{relocate}");
        let done = center.task(&admin, relocate["id"].as_u64().unwrap());
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    center.wait("the moved VMs off esx-1", 15, || {
        let now = hosts_of(&center, &admin);
        moved.iter().all(|vm| {
            now.iter()
                .any(|(n, h)| n == vm && !h.is_empty() && h != "esx-1")
        })
    });
    // The hosts agree: each moved VM runs on exactly the host the center says.
    for (name, host) in hosts_of(&center, &admin) {
        let id: u64 = host.trim_start_matches("esx-").parse().unwrap();
        let seen = lab.host_get(1, &format!("/vms/{name}"));
        assert_eq!(seen["host"].as_u64(), Some(id), "{name}: {seen}");
    }

    // A start with no host named goes where DRS puts it: not on the busiest host. (A VM
    // that just moved has no statistics until its new host has measured it, and drs
    // takes its configured size as its demand meanwhile: wait for the measurements.)
    center.wait("every VM measured where it runs now", 15, || {
        let vms = center.ok(&admin, "GET", "/api/vcenter/vm", "", 200);
        vms.as_array()
            .unwrap()
            .iter()
            .all(|v| v["info"]["stats"]["cpu_percent"].as_f64().unwrap_or(0.0) > 1.0)
    });
    let spec = json!({"name": "placed", "kernel": lab.kernel, "memory_mib": 32,
                      "cmdline": "workload.mib=1"});
    center.ok(
        &admin,
        "POST",
        "/api/vcenter/vm",
        &json!({"spec": spec}).to_string(),
        201,
    );
    let busiest = {
        let now = hosts_of(&center, &admin);
        let count = |h: &str| now.iter().filter(|(_, x)| x == h).count();
        ["esx-1", "esx-2", "esx-3"]
            .into_iter()
            .max_by_key(|h| count(h))
            .unwrap()
            .to_string()
    };
    center.op(&admin, "/api/vcenter/vm/placed/power?action=start", "");
    center.wait("placed runs", 10, || {
        let v = center.ok(&admin, "GET", "/api/vcenter/vm/placed", "", 200);
        v["info"]["state"] == "running"
    });
    let v = center.ok(&admin, "GET", "/api/vcenter/vm/placed", "", 200);
    assert_ne!(v["host"].as_str(), Some(busiest.as_str()), "{v}");
    let events = center.ok(
        &admin,
        "GET",
        "/api/vinfra/events?target=cluster-1",
        "",
        200,
    );
    assert!(
        events.to_string().contains("drs.applied"),
        "no drs.applied event: {events}"
    );
}

/// The issue's DRS benchmark (ignored: run it with `--ignored --nocapture`): six busy VMs
/// started on esx-1 of a 3-host lab, the cluster fully automated at threshold 3, passes
/// run one after another (each once the last one's migrations ended, as the 5-minute
/// automation would, only sooner) until a pass recommends nothing; prints the imbalance
/// before and after, the migrations counted and the time from the first pass to balance.
///
/// ```sh
/// cargo build -p vinfra-host --bins
/// cargo test -p vinfra-center --test drs_lab -- --ignored --nocapture
/// ```
#[test]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
fn drs_restores_balance_by_live_migration() {
    const VMS: usize = 6;
    let Some(lab) = Lab::up(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lab_arg = ["--lab".to_string(), lab.path().display().to_string()];
    let center = Center::start(dir.path(), &lab_arg);
    let admin = center.admin();
    center.wait_hosts(&admin, 3);
    for i in 1..=VMS {
        let name = format!("b{i}");
        let spec = json!({"name": name, "kernel": lab.kernel, "memory_mib": 32,
                          "cmdline": "workload.mib=4 workload.rate=16"});
        center.ok(
            &admin,
            "POST",
            "/api/vcenter/vm",
            &json!({"spec": spec, "host": "esx-1"}).to_string(),
            201,
        );
        center.op(
            &admin,
            &format!("/api/vcenter/vm/{name}/power?action=start&host=esx-1"),
            "",
        );
    }
    let measured = || {
        let vms = center.ok(&admin, "GET", "/api/vcenter/vm", "", 200);
        let vms = vms.as_array().unwrap().clone();
        vms.len() == VMS
            && vms
                .iter()
                .all(|v| v["info"]["stats"]["cpu_percent"].as_f64().unwrap_or(0.0) > 1.0)
    };
    center.wait("every VM measured on esx-1", 60, measured);
    center.ok(
        &admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        r#"{"drs": {"automation": "fully_automated", "threshold": 3}}"#,
        200,
    );
    let started = std::time::Instant::now();
    let mut first = None;
    let mut migrations = 0;
    let mut passes = 0;
    let last = loop {
        let ran = center.ok(
            &admin,
            "POST",
            "/api/vcenter/cluster/cluster-1/drs?action=run",
            "",
            200,
        );
        passes += 1;
        first.get_or_insert(ran["imbalance"].as_f64().unwrap());
        let applied = ran["applied"].as_array().unwrap().clone();
        if applied.is_empty() || passes == 10 {
            break ran;
        }
        migrations += applied.len();
        for r in &applied {
            let vm = r["vm"].as_str().unwrap();
            let tasks = center.ok(
                &admin,
                "GET",
                &format!("/api/cis/tasks?target={vm}"),
                "",
                200,
            );
            let id = tasks.as_array().unwrap()[0]["id"].as_u64().unwrap();
            let done = center.task(&admin, id);
            assert_eq!(done["state"], "succeeded", "{done}");
        }
        // The next pass sees every VM measured where it runs now.
        center.wait("every VM measured where it runs", 60, measured);
    };
    let counts: Vec<usize> = ["esx-1", "esx-2", "esx-3"]
        .iter()
        .map(|h| {
            hosts_of(&center, &admin)
                .iter()
                .filter(|(_, x)| x == h)
                .count()
        })
        .collect();
    println!(
        "drs balance: imbalance {:.3} -> {:.3} (target {:.3}) by {migrations} live migrations \
         in {passes} passes, {:.1} s from the first pass; VMs per host {counts:?}",
        first.unwrap(),
        last["imbalance"].as_f64().unwrap(),
        last["target"].as_f64().unwrap(),
        started.elapsed().as_secs_f64()
    );
}
