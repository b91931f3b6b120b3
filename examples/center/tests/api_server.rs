//! The center's API without hosts: a real `vinfra-center` process on loopback. Login and
//! sessions, permissions per role (403 with a JSON error), bad input (4xx naming the
//! field, nothing changed), the event log and its live stream, HTTPS with the
//! self-signed certificate, the OpenAPI document, metrics, the web console's page, and a
//! restart that keeps users, sessions, settings and events.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use support::{basic, Center, ADMIN_PASSWORD};

fn kinds(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn login_sessions_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let center = Center::start(dir.path(), &[]);

    // No session, a wrong password, an unknown user: 401 with a JSON error.
    let (s, e) = center.send("GET", "/api/vcenter/host", &[], "");
    assert_eq!(s, 401, "{e}");
    assert_eq!(e["error"]["kind"], "unauthenticated");
    let (s, e) = center.send(
        "POST",
        "/api/session",
        &[("Authorization", basic("admin", "nope-nope"))],
        "",
    );
    assert_eq!(s, 401, "{e}");
    let (s, _) = center.send(
        "POST",
        "/api/session",
        &[("Authorization", basic("nobody", ADMIN_PASSWORD))],
        "",
    );
    assert_eq!(s, 401);
    let (s, _) = center.send(
        "GET",
        "/api/vcenter/host",
        &[("vinfra-api-session-id", "made-up".into())],
        "",
    );
    assert_eq!(s, 401);

    let admin = center.admin();
    let who = center.ok(&admin, "GET", "/api/session", "", 200);
    assert_eq!(who, json!({"user": "admin", "role": "administrator"}));
    // The same token as a bearer token, and as the cookie for GET only.
    let (s, _) = center.send(
        "GET",
        "/api/session",
        &[("Authorization", format!("Bearer {admin}"))],
        "",
    );
    assert_eq!(s, 200);
    let cookie = [("Cookie", format!("vinfra_session={admin}"))];
    assert_eq!(
        center.send("GET", "/api/vcenter/cluster", &cookie, "").0,
        200
    );
    let patch = r#"{"drs": {"automation": "fully_automated", "threshold": 4}}"#;
    let (s, e) = center.send("PATCH", "/api/vcenter/cluster/cluster-1", &cookie, patch);
    assert_eq!(s, 401, "a cookie alone must not change anything: {e}");

    // Users of each role.
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "ro", "role": "read_only", "password": "read-only-pw"}"#,
        201,
    );
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "op", "role": "operator", "password": "operator-pw"}"#,
        201,
    );
    let ro = center.login("ro", "read-only-pw");
    let op = center.login("op", "operator-pw");

    // read_only reads, and may not act: 403 with a JSON error, nothing done.
    center.ok(&ro, "GET", "/api/vcenter/cluster", "", 200);
    for (method, path, body) in [
        ("POST", "/api/vcenter/vm/web/power?action=stop", ""),
        (
            "POST",
            "/api/vcenter/vm",
            r#"{"spec": {"name": "x", "kernel": "/k", "memory_mib": 16}}"#,
        ),
        ("PATCH", "/api/vcenter/cluster/cluster-1", patch),
        (
            "POST",
            "/api/vcenter/host",
            r#"{"name": "esx-9", "address": "127.0.0.1:9"}"#,
        ),
        (
            "POST",
            "/api/vinfra/users",
            r#"{"name": "x", "role": "administrator", "password": "12345678"}"#,
        ),
    ] {
        let (s, e) = center.call(&ro, method, path, body);
        assert_eq!(s, 403, "{method} {path}: {e}");
        assert_eq!(e["error"]["kind"], "forbidden", "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("ro"),
            "{e}"
        );
    }
    // An operator runs VMs but does not reconfigure the cluster.
    let (s, _) = center.call(&op, "PATCH", "/api/vcenter/cluster/cluster-1", patch);
    assert_eq!(s, 403);
    let (s, e) = center.call(&op, "POST", "/api/vcenter/vm/web/power?action=stop", "");
    assert_eq!(s, 404, "allowed, but there is no such VM: {e}");
    let cluster = center.ok(&ro, "GET", "/api/vcenter/cluster/cluster-1", "", 200);
    assert_eq!(
        cluster["settings"]["drs"]["automation"], "manual",
        "nothing changed"
    );
    assert_eq!(
        center.ok(&admin, "GET", "/api/vcenter/host", "", 200),
        json!([])
    );

    // The administrator may; the change is an event with the user's name.
    let changed = center.ok(
        &admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        patch,
        200,
    );
    assert_eq!(changed["settings"]["drs"]["threshold"], 4);
    let events = center.ok(&ro, "GET", "/api/vinfra/events", "", 200);
    let reconfigured: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "cluster.reconfigured")
        .collect();
    assert_eq!(reconfigured.len(), 1, "{events}");
    assert_eq!(reconfigured[0]["user"], "admin");
    assert!(kinds(&events).contains(&"session.login_failed".to_string()));

    // Logout ends the session.
    let (s, _) = center.call(&op, "DELETE", "/api/session", "");
    assert_eq!(s, 204);
    assert_eq!(center.call(&op, "GET", "/api/session", "").0, 401);
}

#[test]
fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let center = Center::start(dir.path(), &[]);
    let admin = center.admin();
    let before_cluster = center.ok(&admin, "GET", "/api/vcenter/cluster/cluster-1", "", 200);

    let cases: [(&str, &str, &str, u16, &str); 10] = [
        (
            "PATCH",
            "/api/vcenter/cluster/cluster-1",
            r#"{"drs": {"automation": "manual", "threshold": 9}}"#,
            422,
            "drs.threshold",
        ),
        (
            "PATCH",
            "/api/vcenter/cluster/cluster-1",
            r#"{"colour": "red"}"#,
            400,
            "colour",
        ),
        (
            "POST",
            "/api/vcenter/host",
            r#"{"name": "esx-9", "address": "ftp://x"}"#,
            422,
            "address",
        ),
        (
            "POST",
            "/api/vcenter/host",
            r#"{"name": "../etc", "address": "127.0.0.1:9"}"#,
            422,
            "name",
        ),
        (
            "POST",
            "/api/vcenter/host",
            r#"{"address": "127.0.0.1:9"}"#,
            400,
            "name",
        ),
        (
            "POST",
            "/api/vcenter/vm",
            r#"{"spec": {"name": "web", "kernel": "/k", "memory_mib": 0}}"#,
            422,
            "spec.memory_mib",
        ),
        (
            "POST",
            "/api/vcenter/vm",
            r#"{"spec": {"name": "web", "kernel": "/k", "memory_mib": 16}, "host": "esx-7"}"#,
            422,
            "host",
        ),
        (
            "POST",
            "/api/vcenter/vm/web/power?action=explode",
            "",
            422,
            "action",
        ),
        (
            "GET",
            "/api/vcenter/vm?power_state=on_fire",
            "",
            400,
            "power_state",
        ),
        (
            "GET",
            "/api/vinfra/stats/vm/web?window=1decade",
            "",
            400,
            "window",
        ),
    ];
    for (method, path, body, status, field) in cases {
        let (s, e) = center.call(&admin, method, path, body);
        assert_eq!(s, status, "{method} {path} {body}: {e}");
        assert_eq!(e["error"]["field"], field, "{method} {path} {body}: {e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    let (s, e) = center.call(&admin, "POST", "/api/vcenter/host", "{not json");
    assert_eq!(s, 400, "{e}");
    assert_eq!(
        center.call(&admin, "GET", "/api/vcenter/vm/nosuch", "").0,
        404
    );
    assert_eq!(
        center.call(&admin, "GET", "/api/cis/tasks/12345", "").0,
        404
    );
    assert_eq!(center.call(&admin, "GET", "/api/no/such/route", "").0, 404);

    // Nothing changed.
    assert_eq!(
        center.ok(&admin, "GET", "/api/vcenter/cluster/cluster-1", "", 200),
        before_cluster
    );
    assert_eq!(
        center.ok(&admin, "GET", "/api/vcenter/host", "", 200),
        json!([])
    );
    assert_eq!(
        center.ok(&admin, "GET", "/api/vcenter/vm", "", 200),
        json!([])
    );
    assert_eq!(
        center.ok(&admin, "GET", "/api/cis/tasks", "", 200),
        json!([])
    );
}

#[test]
fn events_stream_live_and_metrics_openapi_and_console_page_answer() {
    let dir = tempfile::tempdir().unwrap();
    let center = Center::start(dir.path(), &[]);
    let admin = center.admin();

    // The stream: the backlog (the login), then a live event.
    let addr = center.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /api/vinfra/events/stream HTTP/1.1\r\nHost: {addr}\r\nvinfra-api-session-id: {admin}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = Vec::new();
    let mut line = String::new();
    let mut added = false;
    for _ in 0..200 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(data) = line.trim().strip_prefix("data:") {
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            seen.push(event["kind"].as_str().unwrap().to_string());
            if !added {
                added = true;
                center.ok(
                    &admin,
                    "POST",
                    "/api/vinfra/users",
                    r#"{"name": "later", "role": "read_only", "password": "12345678"}"#,
                    201,
                );
            }
            if event["kind"] == "user.added" {
                break;
            }
        }
    }
    assert_eq!(seen, ["session.login", "user.added"]);

    let (s, text) = center.send("GET", "/metrics", &[], "");
    assert_eq!(s, 200);
    let text = text.as_str().unwrap();
    assert!(
        text.contains("vinfra_center_hosts{state=\"connected\"} 0"),
        "{text}"
    );
    assert!(text.contains("# EOF"));

    let (s, doc) = center.send("GET", "/api/openapi.json", &[], "");
    assert_eq!(s, 200);
    for path in [
        "/api/session",
        "/api/vcenter/vm/{vm}/power",
        "/api/vinfra/events/stream",
        "/api/cis/tasks/{task}",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }

    let (s, page) = center.send("GET", "/", &[], "");
    assert_eq!(s, 200);
    let page = page.as_str().unwrap();
    assert!(
        page.contains("npm ci") || page.contains("<script"),
        "{page}"
    );
}

#[test]
fn https_by_default_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let center = Center::start_with(dir.path(), false, &[]);
    assert!(center.url.starts_with("https://"), "{}", center.url);
    let cert = dir.path().join("center/tls/cert.pem");
    assert!(std::fs::read_to_string(&cert)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let admin = center.admin();
    let (s, _) = center.call(&admin, "GET", "/api/vcenter/datacenter", "");
    assert_eq!(s, 200);
    // Plain HTTP to the HTTPS port gets no API answer.
    let addr = center.url.trim_start_matches("https://");
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(plain, "GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = BufReader::new(plain).read_line(&mut answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_restart_keeps_users_sessions_settings_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut center = Center::start(dir.path(), &[]);
    let admin = center.admin();
    center.ok(
        &admin,
        "POST",
        "/api/vinfra/users",
        r#"{"name": "ro", "role": "read_only", "password": "read-only-pw"}"#,
        201,
    );
    center.ok(
        &admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        r#"{"ha": {"admission_control": false, "failures_tolerated": 1}}"#,
        200,
    );
    let before = center.ok(&admin, "GET", "/api/vinfra/events", "", 200);
    let status = center.stop().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    let center = Center::start(dir.path(), &[]);
    // The session survives (only its hash is stored), and so does everything else.
    assert_eq!(
        center.ok(&admin, "GET", "/api/session", "", 200)["user"],
        "admin"
    );
    center.login("ro", "read-only-pw");
    let cluster = center.ok(&admin, "GET", "/api/vcenter/cluster/cluster-1", "", 200);
    assert_eq!(cluster["settings"]["ha"]["admission_control"], false);
    let after = center.ok(&admin, "GET", "/api/vinfra/events", "", 200);
    assert_eq!(
        after.as_array().unwrap()[..before.as_array().unwrap().len()],
        before.as_array().unwrap()[..]
    );
    // The first user was not made again: the password file is not read again.
    let users = center.ok(&admin, "GET", "/api/vinfra/users", "", 200);
    assert_eq!(users.as_array().unwrap().len(), 2, "{users}");
}

#[test]
fn a_built_console_is_served_with_index_html_for_its_own_routes() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("dist");
    std::fs::create_dir_all(web.join("assets")).unwrap();
    std::fs::write(
        web.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .unwrap();
    std::fs::write(web.join("assets/app.js"), "console.log(1)").unwrap();
    let center = Center::start(dir.path(), &["--web-dir".into(), web.display().to_string()]);
    let (s, page) = center.send("GET", "/", &[], "");
    assert_eq!(
        (s, page.as_str()),
        (200, Some("<!doctype html><title>console</title>"))
    );
    let (s, js) = center.send("GET", "/assets/app.js", &[], "");
    assert_eq!((s, js.as_str()), (200, Some("console.log(1)")));
    // A route of the console itself (reloaded in the browser) is its page.
    let (s, page) = center.send("GET", "/vm/web", &[], "");
    assert_eq!(
        (s, page.as_str()),
        (200, Some("<!doctype html><title>console</title>"))
    );
    // The API's unknown paths stay JSON errors.
    let (s, e) = center.send("GET", "/api/nope", &[], "");
    assert_eq!(s, 404, "{e}");
    assert_eq!(e["error"]["kind"], "not_found");
}
