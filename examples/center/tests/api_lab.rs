//! The center running a real `vinfra-lab` of 3 hosts (network namespaces, as root; test
//! guests on KVM): the hosts connect, a VM is created, started, watched on its console
//! through the center's proxy, relocated by live migration (the hosts' own view
//! changes), stopped and deleted, all through the center's API; a read-only user cannot
//! power it off; refused requests change nothing; a restart of the center keeps its
//! tasks and events and finds the hosts again; a host is removed and added back; a host
//! that dies becomes `not_responding`.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Center, Lab};
use tungstenite::client::IntoClientRequest;

/// Reads the VM's console through the center until `pattern` shows (10 s at most).
fn console_shows(center: &Center, token: &str, vm: &str, pattern: &str) -> bool {
    let addr = center.url.trim_start_matches("http://").to_string();
    let mut request = format!("ws://{addr}/api/vcenter/vm/{vm}/console")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("vinfra-api-session-id", token.parse().unwrap());
    let stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (mut socket, _) = tungstenite::client(request, stream).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match socket.read() {
            Ok(tungstenite::Message::Text(t)) => seen.push_str(t.as_str()),
            Ok(tungstenite::Message::Binary(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(_) => {}
            Err(tungstenite::Error::Io(_)) => {}
            Err(e) => panic!("console: {e} after {seen:?}"),
        }
        if seen.contains(pattern) {
            let _ = socket.close(None);
            return true;
        }
    }
    false
}

#[test]
fn the_center_runs_a_lab() {
    let Some(lab) = Lab::up(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lab_arg = ["--lab".to_string(), lab.path().display().to_string()];
    let mut center = Center::start(dir.path(), &lab_arg);
    let admin = center.admin();
    center.wait("3 connected hosts", 30, || {
        center.hosts_connected(&admin) == 3
    });
    let names: Vec<Value> = center
        .ok(&admin, "GET", "/api/vcenter/host", "", 200)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].clone())
        .collect();
    assert_eq!(names, [json!("esx-1"), json!("esx-2"), json!("esx-3")]);
    let cluster = center.ok(&admin, "GET", "/api/vcenter/cluster/cluster-1", "", 200);
    assert_eq!(cluster["hosts_connected"], 3, "{cluster}");
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "ro", "role": "read_only", "password": "read-only-pw"}"#,
        201,
    );
    let ro = center.login("ro", "read-only-pw");

    // Create through esx-1; every host sees it (the volume is shared).
    let spec =
        json!({"name": "web", "kernel": lab.kernel, "memory_mib": 32, "cmdline": "workload.mib=1"});
    let vm = center.ok(
        &admin,
        "POST",
        "/api/vcenter/vm",
        &json!({"spec": spec, "host": "esx-1"}).to_string(),
        201,
    );
    assert_eq!(vm["info"]["state"], "shut_off", "{vm}");
    assert_eq!(lab.host_get(3, "/vms/web")["state"], "shut_off");
    // A second create of the same name is refused.
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/vm",
        &json!({"spec": spec}).to_string(),
    );
    assert_eq!(s, 409, "{e}");

    // Start on esx-1.
    center.op(
        &admin,
        "/api/vcenter/vm/web/power?action=start&host=esx-1",
        "",
    );
    let seen = lab.host_get(2, "/vms/web");
    assert_eq!(
        (seen["state"].as_str(), seen["host"].as_u64()),
        (Some("running"), Some(1)),
        "{seen}"
    );
    center.wait("the center sees web on esx-1", 10, || {
        let v = center.ok(&ro, "GET", "/api/vcenter/vm/web", "", 200);
        v["host"] == "esx-1" && v["info"]["state"] == "running"
    });
    let running = center.ok(
        &ro,
        "GET",
        "/api/vcenter/vm?power_state=running&host=esx-1",
        "",
        200,
    );
    assert_eq!(running.as_array().unwrap().len(), 1, "{running}");
    assert!(
        console_shows(&center, &admin, "web", "HB"),
        "no heartbeat on the console"
    );

    // Its HA restart priority, changed through the center while it runs: the hosts
    // rewrite its settings on the volume, and every host reads them back; a running VM
    // keeps running. The failover capacity counts it.
    let vm = center.ok(
        &admin,
        "PATCH",
        "/api/vcenter/vm/web",
        r#"{"ha": {"priority": "high", "isolation_response": "power_off"}}"#,
        200,
    );
    assert_eq!(vm["info"]["spec"]["ha"]["priority"], "high", "{vm}");
    let seen = lab.host_get(3, "/vms/web");
    assert_eq!(
        (
            seen["spec"]["ha"]["priority"].as_str(),
            seen["spec"]["ha"]["isolation_response"].as_str(),
            seen["state"].as_str()
        ),
        (Some("high"), Some("power_off"), Some("running")),
        "{seen}"
    );
    let ha = center.ok(&ro, "GET", "/api/vcenter/cluster/cluster-1/ha", "", 200);
    assert_eq!(ha["slots"]["used"], 1, "{ha}");
    assert_eq!(ha["hosts"].as_array().unwrap().len(), 3, "{ha}");
    assert!(
        ha["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["verdict"] == "alive"),
        "{ha}"
    );

    // read_only cannot power it off; it keeps running.
    let (s, e) = center.call(&ro, "POST", "/api/vcenter/vm/web/power?action=stop", "");
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["kind"], "forbidden");
    assert_eq!(lab.host_get(1, "/vms/web")["state"], "running");

    // Refused relocations change nothing.
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/vm/web?action=relocate",
        r#"{"host": "esx-1"}"#,
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("host")),
        "{e}"
    );
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/vm/web?action=relocate",
        r#"{"host": "esx-9"}"#,
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("host")),
        "{e}"
    );
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/vm/web?action=relocate",
        r#"{"hots": "esx-2"}"#,
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("hots")),
        "{e}"
    );
    assert_eq!(lab.host_get(1, "/vms/web")["host"], 1);

    // Relocate to esx-2: the hosts' own view changes.
    let task = center.op(
        &admin,
        "/api/vcenter/vm/web?action=relocate",
        r#"{"host": "esx-2"}"#,
    );
    assert_eq!(task["user"], "admin");
    assert_eq!(task["host"], "esx-1");
    center.wait("the hosts see web on host 2", 10, || {
        lab.host_get(3, "/vms/web")["host"] == 2
    });
    center.wait("the center sees web on esx-2", 10, || {
        center.ok(&ro, "GET", "/api/vcenter/vm/web", "", 200)["host"] == "esx-2"
    });

    // Stop (on esx-2, where it now runs).
    let task = center.op(&admin, "/api/vcenter/vm/web/power?action=stop", "");
    assert_eq!(task["host"], "esx-2", "{task}");
    assert_eq!(lab.host_get(1, "/vms/web")["state"], "shut_off");

    // A linked clone, passed through to the host.
    center.op(
        &admin,
        "/api/vcenter/vm/web?action=clone",
        r#"{"name": "web-2"}"#,
    );
    assert_eq!(lab.host_get(2, "/vms/web-2")["state"], "shut_off");
    center.wait("the center sees web-2", 10, || {
        center.call(&ro, "GET", "/api/vcenter/vm/web-2", "").0 == 200
    });
    // web (diskless) has no snapshot, and its summary says so (the hosts list them).
    let web = center.ok(&ro, "GET", "/api/vcenter/vm/web", "", 200);
    assert_eq!(web["info"]["snapshots"], serde_json::json!([]), "{web}");
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/vm/web?action=clone",
        r#"{"name": "web-2"}"#,
    );
    assert!((400..500).contains(&s), "{e}");

    // Maintenance mode of a host, as a task.
    center.op(
        &admin,
        "/api/vcenter/host/esx-3?action=enter-maintenance",
        "",
    );
    assert_eq!(lab.host_get(3, "/host")["maintenance"], true);
    center.wait("esx-3 in maintenance", 10, || {
        center.ok(&ro, "GET", "/api/vcenter/host/esx-3", "", 200)["state"] == "maintenance"
    });
    let (s, e) = center.call(
        &admin,
        "POST",
        "/api/vcenter/vm/web/power?action=start&host=esx-3",
        "",
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("host")),
        "{e}"
    );
    center.op(
        &admin,
        "/api/vcenter/host/esx-3?action=exit-maintenance",
        "",
    );
    center.wait("esx-3 out of maintenance", 10, || {
        center.ok(&ro, "GET", "/api/vcenter/host/esx-3", "", 200)["state"] == "connected"
    });

    // Statistics were sampled.
    let samples = center.ok(
        &ro,
        "GET",
        "/api/vinfra/stats/host/esx-1?window=1h",
        "",
        200,
    );
    assert!(!samples.as_array().unwrap().is_empty(), "{samples}");

    let tasks = center.ok(&ro, "GET", "/api/cis/tasks", "", 200);
    let kinds: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "host.exit_maintenance",
            "host.enter_maintenance",
            "vm.clone",
            "vm.stop",
            "vm.relocate",
            "vm.start"
        ],
        "{tasks}"
    );
    let events = center.ok(&ro, "GET", "/api/vinfra/events?limit=1000", "", 200);
    let events = events.as_array().unwrap();
    assert!(events
        .iter()
        .any(|e| e["kind"] == "vm.relocate" && e["user"] == "admin"));
    // One VM's events and tasks.
    let of_web = center.ok(
        &ro,
        "GET",
        "/api/vinfra/events?target=web&limit=1000",
        "",
        200,
    );
    assert!(
        of_web
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["target"] == "web"),
        "{of_web}"
    );
    assert!(of_web.as_array().unwrap().len() >= 6, "{of_web}");
    let web_tasks = center.ok(&ro, "GET", "/api/cis/tasks?target=web", "", 200);
    assert_eq!(web_tasks.as_array().unwrap().len(), 4, "{web_tasks}");
    assert!(
        events
            .iter()
            .any(|e| e["host"] == "esx-2" && e["user"].is_null()),
        "hosts' events are copied in"
    );

    // Restart: tasks and events kept, hosts found again.
    assert!(center.stop().unwrap().success());
    let center = Center::start(dir.path(), &lab_arg);
    let tasks_after = center.ok(&admin, "GET", "/api/cis/tasks", "", 200);
    assert_eq!(tasks_after, tasks);
    let after = center.ok(&admin, "GET", "/api/vinfra/events?limit=1000", "", 200);
    assert_eq!(after.as_array().unwrap()[..events.len()], events[..]);
    center.wait("3 connected hosts again", 30, || {
        center.hosts_connected(&admin) == 3
    });

    // A host removed from the inventory and added back by its address.
    let esx3 = center.ok(&admin, "GET", "/api/vcenter/host/esx-3", "", 200);
    center.ok(&admin, "DELETE", "/api/vcenter/host/esx-3", "", 204);
    assert_eq!(
        center.call(&admin, "GET", "/api/vcenter/host/esx-3", "").0,
        404
    );
    let add = json!({"name": "esx-3", "address": esx3["address"]}).to_string();
    let (s, e) = center.call(&ro, "POST", "/api/vcenter/host", &add);
    assert_eq!(s, 403, "{e}");
    center.ok(&admin, "POST", "/api/vcenter/host", &add, 201);
    let (s, e) = center.call(&admin, "POST", "/api/vcenter/host", &add);
    assert_eq!(s, 409, "{e}");
    center.wait("esx-3 connected again", 30, || {
        center.hosts_connected(&admin) == 3
    });

    // Delete: gone from the hosts too.
    center.ok(&admin, "DELETE", "/api/vcenter/vm/web-2", "", 204);
    center.ok(&admin, "DELETE", "/api/vcenter/vm/web", "", 204);
    assert!(lab.host_try_get(1, "/vms/web").is_err());
    assert_eq!(
        center.ok(&admin, "GET", "/api/vcenter/vm", "", 200),
        json!([])
    );

    // A host that dies is not_responding after 3 missed polls, with a warning event.
    let pid = lab.host_pid(3);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    center.wait("esx-3 not responding", 20, || {
        center.ok(&admin, "GET", "/api/vcenter/host/esx-3", "", 200)["state"] == "not_responding"
    });
    let events = center.ok(&admin, "GET", "/api/vinfra/events?limit=1000", "", 200);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "host.not_responding"
                && e["target"] == "esx-3"
                && e["severity"] == "warning"),
        "{events}"
    );
    assert_eq!(center.hosts_connected(&admin), 2);
}
