//! Runs the built `vinfra-drs` binary on a small cluster for every subcommand, in text
//! and `--json`, and checks the answers; bad input must give a clear error and a
//! non-zero exit status, never a panic.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::NamedTempFile;
use vinfra_testkit::Finished;

/// Three hosts; two domain controllers that must stay apart, both on esx-1; one VM off.
const CLUSTER: &str = r#"{
  "hosts": [{"id": "esx-1", "cpu_mhz": 10000, "mem_mb": 16384},
            {"id": "esx-2", "cpu_mhz": 10000, "mem_mb": 16384},
            {"id": "esx-3", "cpu_mhz": 10000, "mem_mb": 16384}],
  "vms": [{"id": "dc-1", "cpu_mhz": 2000, "mem_mb": 2048, "host": "esx-1"},
          {"id": "dc-2", "cpu_mhz": 2000, "mem_mb": 2048, "host": "esx-1"},
          {"id": "web", "cpu_mhz": 1000, "mem_mb": 1024, "powered_on": false}],
  "rules": [{"kind": "vm_anti_affinity", "id": "dcs", "vms": ["dc-1", "dc-2"]}]
}"#;

fn cluster_file(json: &str) -> NamedTempFile {
    let mut f = NamedTempFile::new().unwrap();
    f.write_all(json.as_bytes()).unwrap();
    f
}

/// Runs `vinfra-drs` with `args`; a hang fails the test instead of stalling it.
fn run(args: &[&str]) -> Finished {
    vinfra_testkit::run(
        Command::new(env!("CARGO_BIN_EXE_vinfra-drs")).args(args),
        Duration::from_secs(120),
    )
}

/// Runs a subcommand on `file` (inserted after the subcommand name) and expects success.
fn ok(sub: &str, file: &Path, rest: &[&str], json: bool) -> String {
    let path = file.to_str().unwrap();
    let mut args = vec![sub, path];
    args.extend_from_slice(rest);
    if json {
        args.push("--json");
    }
    let out = run(&args);
    assert!(out.success(), "{args:?} failed: {}", out.stderr);
    out.stdout
}

fn ok_json(sub: &str, file: &Path, rest: &[&str]) -> Value {
    let text = ok(sub, file, rest, true);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sub}: not JSON ({e}): {text}"))
}

/// A failure: non-zero status, one `vinfra-drs: ...` line naming `needle`, no panic.
fn fails(args: &[&str], needle: &str) {
    let out = run(args);
    let stderr = &out.stderr;
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(out.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.starts_with("vinfra-drs: ") && stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr:?}"
    );
}

#[test]
fn place_puts_the_new_vm_on_an_empty_host() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("place", f.path(), &["web"]);
    let host = v["placements"][0]["host"].as_str().unwrap();
    assert_ne!(host, "esx-1");
    assert_eq!(v["placements"][0]["vm"], "web");
    assert_eq!(v["unplaced"].as_array().unwrap().len(), 0);
    let text = ok("place", f.path(), &["web"], false);
    assert!(text.contains(&format!("web on {host}")), "{text}");
}

#[test]
fn balance_fixes_the_broken_rule_first() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("balance", f.path(), &[]);
    let first = &v["recommendations"][0];
    assert_eq!(first["priority"], 1);
    assert_eq!(first["from"], "esx-1");
    assert!(["dc-1", "dc-2"].contains(&first["vm"].as_str().unwrap()));
    let text = ok("balance", f.path(), &[], false);
    assert!(text.starts_with("imbalance "), "{text}");
    assert!(text.contains("priority 1"), "{text}");
}

#[test]
fn evacuate_spreads_the_domain_controllers() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("evacuate", f.path(), &["esx-1"]);
    assert_eq!(v["host"], "esx-1");
    assert_eq!(v["blocked"].as_array().unwrap().len(), 0);
    let to: Vec<&str> = v["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert_eq!(to.len(), 2, "{v}");
    assert_ne!(to[0], to[1]);
    assert!(!to.contains(&"esx-1"));
    let text = ok("evacuate", f.path(), &["esx-1"], false);
    assert!(
        text.starts_with("esx-1 can enter maintenance mode"),
        "{text}"
    );
}

#[test]
fn entitlements_of_an_uncontended_cluster_are_the_demands() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("entitlements", f.path(), &[]);
    assert_eq!(v["capacity"], serde_json::json!([30000, 49152]));
    assert_eq!(
        v["vms"],
        serde_json::json!([[2000, 2048], [2000, 2048], [0, 0]])
    );
    let text = ok("entitlements", f.path(), &[], false);
    assert!(text.contains("vm dc-1: 2000 MHz, 2048 MB"), "{text}");
    assert!(!text.contains("vm web"), "{text}");
}

#[test]
fn admit_accepts_a_vm_that_fits() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("admit", f.path(), &["web"]);
    assert_eq!(v["admitted"], true);
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(ok("admit", f.path(), &["web"], false), "web: admitted\n");
}

#[test]
fn admit_refuses_a_reservation_the_cluster_cannot_meet() {
    let json = CLUSTER.replace(
        r#""powered_on": false}"#,
        r#""powered_on": false, "mem": {"reservation": 100000}}"#,
    );
    let f = cluster_file(&json);
    let v = ok_json("admit", f.path(), &["web"]);
    assert_eq!(v["admitted"], false);
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("web"), "{reason}");
    let text = ok("admit", f.path(), &["web"], false);
    assert!(text.starts_with("admission refused"), "{text}");
}

#[test]
fn ha_admission_tolerates_one_host_failure() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("ha-admission", f.path(), &["--tolerate", "1"]);
    assert_eq!(v["slots"]["admitted"], true);
    assert_eq!(v["percentage"]["admitted"], true);
    let text = ok("ha-admission", f.path(), &["--tolerate", "1"], false);
    assert!(text.starts_with("slots: "), "{text}");
    assert!(text.contains("percentage: "), "{text}");
    assert!(!text.contains("NOT"), "{text}");
}

#[test]
fn ha_restart_keeps_the_domain_controllers_apart() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("ha-restart", f.path(), &["esx-1"]);
    let hosts: Vec<&str> = v["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "{v}");
    assert_ne!(hosts[0], hosts[1]);
    assert!(!hosts.contains(&"esx-1"));
    assert_eq!(v["not_restarted"].as_array().unwrap().len(), 0);
    let text = ok("ha-restart", f.path(), &["esx-1"], false);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("restart ")).count(),
        2
    );
}

#[test]
fn pack_needs_two_hosts_for_two_vms_kept_apart() {
    let f = cluster_file(CLUSTER);
    let v = ok_json("pack", f.path(), &[]);
    assert_eq!(v["hosts_used"], 2);
    assert_eq!(v["unplaced"].as_array().unwrap().len(), 0);
    assert_eq!(v["assignment"].as_array().unwrap().len(), 2);
    let text = ok("pack", f.path(), &[], false);
    assert!(text.starts_with("2 hosts used"), "{text}");
    // The baseline runs only when asked for.
    assert!(!text.contains("first-fit-decreasing"), "{text}");
    let text = ok("pack", f.path(), &["--compare-ffd"], false);
    assert!(text.contains("first-fit-decreasing: 2 hosts"), "{text}");
}

#[test]
fn generate_writes_a_cluster_the_other_commands_read() {
    let out = run(&["generate", "triplets", "--vms", "12", "--seed", "3"]);
    assert!(out.success(), "{out}");
    let spec: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(spec["vms"].as_array().unwrap().len(), 12);
    let f = cluster_file(&out.stdout);
    let v = ok_json("pack", f.path(), &[]);
    assert_eq!(v["unplaced"].as_array().unwrap().len(), 0);
    assert_eq!(v["hosts_used"], v["lower_bound"]);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    fails(
        &["balance", "/nonexistent/cluster.json"],
        "read /nonexistent/cluster.json",
    );
    let garbage = cluster_file("{\"hosts\": [");
    let path = garbage.path().to_str().unwrap();
    fails(&["balance", path], "parse cluster json");
    fails(&["pack", path, "--json"], "parse cluster json");

    let zero = cluster_file(&CLUSTER.replace("\"cpu_mhz\": 10000", "\"cpu_mhz\": 0"));
    fails(
        &["balance", zero.path().to_str().unwrap()],
        "cpu_mhz must be > 0",
    );
    let contradictory = cluster_file(&CLUSTER.replace(
        "\"rules\": [",
        "\"rules\": [{\"kind\": \"vm_affinity\", \"id\": \"tog\", \"vms\": [\"dc-1\", \"dc-2\"]}, ",
    ));
    fails(
        &["place", contradictory.path().to_str().unwrap(), "web"],
        "contradictory rules",
    );

    let f = cluster_file(CLUSTER);
    let path = f.path().to_str().unwrap();
    fails(&["place", path, "nope"], "unknown vm \"nope\"");
    fails(
        &["evacuate", path, "esx-9", "--json"],
        "unknown host \"esx-9\"",
    );
    fails(&["ha-restart", path, "esx-9"], "unknown host \"esx-9\"");
    fails(&["generate", "pyramids"], "unknown family");

    // Argument errors come from clap: exit status 2 and a usage message.
    let out = run(&["place", path]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("Usage"), "{out}");
}
