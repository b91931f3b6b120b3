//! Resource pools and DRS rules through the API, against a cluster of two fake hosts
//! served in this process (no KVM, no root: runs anywhere). The hosts share one list of
//! VMs, as hosts on one volume do, and start a VM where the center asks. Covered: create,
//! read, change and delete of both; bad input (4xx naming the field, nothing changed);
//! the roles (read_only 403, operator allowed); the events with their user; DRS
//! recommending the migration an anti-affinity rule needs, and placing a power-on away
//! from its anti-affinity partner; DRS keeping a recommendation's destination while it
//! stays about as good (hysteresis).
#![allow(clippy::unwrap_used)]

mod fake_cluster;
mod support;

use fake_cluster::{cluster, cluster_of, vm};
use serde_json::{json, Value};
use support::Center;

fn users(center: &Center, admin: &str) -> (String, String) {
    for (name, role) in [("ro", "read_only"), ("op", "operator")] {
        center.ok(
            admin,
            "POST",
            "/api/vinfra/users",
            &json!({"name": name, "role": role, "password": format!("{name}-password")})
                .to_string(),
            201,
        );
    }
    (
        center.login("ro", "ro-password"),
        center.login("op", "op-password"),
    )
}

/// The status, the error's field and the body of a refused request.
fn refused(center: &Center, token: &str, method: &str, path: &str, body: Value) -> (u16, String) {
    let (s, e) = center.call(token, method, path, &body.to_string());
    assert!(s >= 400, "{method} {path} {body}: {s} {e}");
    (s, e["error"]["field"].as_str().unwrap_or("").to_string())
}

fn event_users(center: &Center, token: &str, kind: &str) -> Vec<String> {
    center
        .ok(token, "GET", "/api/vinfra/events?limit=1000", "", 200)
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["user"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn resource_pools_are_edited_checked_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (center, _servers, _vms) = cluster(dir.path(), true);
    let admin = center.admin();
    let (ro, op) = users(&center, &admin);
    const POOLS: &str = "/api/vcenter/resource-pool";

    let prod = center.ok(
        &admin,
        "POST",
        POOLS,
        r#"{"name": "prod", "cpu_allocation": {"reservation": 1000, "shares": 2000}}"#,
        201,
    );
    assert_eq!(prod["cluster"], "cluster-1");
    assert_eq!(prod["parent"], Value::Null);
    assert_eq!(prod["cpu_allocation"]["expandable_reservation"], true);
    assert_eq!(prod["memory_allocation"]["shares"], 1000);

    // Bad input: 4xx naming the field, nothing stored.
    for (body, status, field) in [
        (json!({"name": "prod"}), 409, "name"),
        (json!({"name": "bad name!"}), 422, "name"),
        (
            json!({"name": "x", "cpu_allocation": {"reservation": 10, "limit": 5}}),
            422,
            "cpu_allocation.reservation",
        ),
        // Two hosts of 4096 MiB: the cluster cannot hold 9000.
        (
            json!({"name": "x", "memory_allocation": {"reservation": 9000}}),
            409,
            "memory_allocation",
        ),
        (json!({"name": "x", "parent": "nowhere"}), 422, "parent"),
        (json!({"name": "x", "cluster": "nowhere"}), 422, "cluster"),
        (json!({"name": "x", "colour": "red"}), 400, "colour"),
    ] {
        let (s, f) = refused(&center, &admin, "POST", POOLS, body.clone());
        assert_eq!((s, f.as_str()), (status, field), "{body}");
    }
    assert_eq!(
        center
            .ok(&admin, "GET", POOLS, "", 200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An operator may; read-only may not.
    let web = center.ok(
        &op,
        "POST",
        POOLS,
        r#"{"name": "web", "parent": "prod", "cpu_allocation": {"reservation": 500}}"#,
        201,
    );
    assert_eq!(web["parent"], "prod");
    for (method, path, body) in [
        ("POST", POOLS.to_string(), json!({"name": "y"})),
        (
            "PATCH",
            format!("{POOLS}/web"),
            json!({"cpu_allocation": {"shares": 500}}),
        ),
        ("DELETE", format!("{POOLS}/web"), Value::Null),
        (
            "POST",
            format!("{POOLS}/web?action=add_vms"),
            json!({"vms": ["a"]}),
        ),
    ] {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (s, e) = center.call(&ro, method, &path, &body);
        assert_eq!(s, 403, "{method} {path}: {e}");
        assert_eq!(e["error"]["kind"], "forbidden");
    }

    // A pool cannot go under itself or its child; a fixed reservation holds its children.
    let (s, f) = refused(
        &center,
        &op,
        "PATCH",
        &format!("{POOLS}/prod"),
        json!({"parent": "web"}),
    );
    assert_eq!((s, f.as_str()), (422, "parent"));
    // An expandable parent lends its children what its own reservation lacks.
    center.ok(
        &op,
        "PATCH",
        &format!("{POOLS}/web"),
        r#"{"cpu_allocation": {"reservation": 2000}, "parent": "prod"}"#,
        200,
    );
    let (s, f) = refused(
        &center,
        &op,
        "PATCH",
        &format!("{POOLS}/prod"),
        json!({"cpu_allocation": {"expandable_reservation": false}}),
    );
    assert_eq!((s, f.as_str()), (409, "cpu_allocation"));
    let changed = center.ok(
        &op,
        "PATCH",
        &format!("{POOLS}/web"),
        r#"{"cpu_allocation": {"limit": 2500, "shares": 500}, "memory_allocation": {"reservation": 256}}"#,
        200,
    );
    assert_eq!(changed["cpu_allocation"]["limit"], 2500);
    assert_eq!(changed["cpu_allocation"]["reservation"], 2000, "kept");
    assert_eq!(changed["memory_allocation"]["reservation"], 256);
    let cleared = center.ok(
        &op,
        "PATCH",
        &format!("{POOLS}/web"),
        r#"{"cpu_allocation": {"limit": null}}"#,
        200,
    );
    assert_eq!(cleared["cpu_allocation"]["limit"], Value::Null);

    // VMs in and out.
    let (s, f) = refused(
        &center,
        &op,
        "POST",
        &format!("{POOLS}/web?action=add_vms"),
        json!({"vms": ["a", "zz"]}),
    );
    assert_eq!((s, f.as_str()), (422, "vms[1]"));
    let (s, f) = refused(
        &center,
        &op,
        "POST",
        &format!("{POOLS}/web?action=move"),
        json!({"vms": ["a"]}),
    );
    assert_eq!((s, f.as_str()), (422, "action"));
    assert_eq!(
        center.ok(&op, "GET", "/api/vcenter/vm/a", "", 200)["resource_pool"],
        Value::Null,
        "nothing changed"
    );
    let web = center.ok(
        &op,
        "POST",
        &format!("{POOLS}/web?action=add_vms"),
        r#"{"vms": ["a", "b"]}"#,
        200,
    );
    assert_eq!(web["vms"], json!(["a", "b"]));
    assert_eq!(
        center.ok(&ro, "GET", "/api/vcenter/vm/a", "", 200)["resource_pool"],
        "web"
    );
    let web = center.ok(
        &op,
        "POST",
        &format!("{POOLS}/web?action=remove_vms"),
        r#"{"vms": ["b"]}"#,
        200,
    );
    assert_eq!(web["vms"], json!(["a"]));
    let (s, f) = refused(
        &center,
        &op,
        "POST",
        &format!("{POOLS}/web?action=remove_vms"),
        json!({"vms": ["b"]}),
    );
    assert_eq!((s, f.as_str()), (422, "vms[0]"));
    let prod = center.ok(&ro, "GET", &format!("{POOLS}/prod"), "", 200);
    assert_eq!(prod["children"], json!(["web"]));

    // DRS reads the pools: recommendations still answer.
    center.drs_pass(&ro);

    // Deleting a pool moves its VMs to its parent.
    assert_eq!(
        center.call(&op, "DELETE", &format!("{POOLS}/web"), "").0,
        204
    );
    assert_eq!(
        center.ok(&ro, "GET", "/api/vcenter/vm/a", "", 200)["resource_pool"],
        "prod"
    );
    assert_eq!(center.call(&op, "GET", &format!("{POOLS}/web"), "").0, 404);
    assert_eq!(
        center.call(&op, "DELETE", &format!("{POOLS}/prod"), "").0,
        204
    );
    assert_eq!(
        center.ok(&ro, "GET", "/api/vcenter/vm/a", "", 200)["resource_pool"],
        Value::Null
    );

    // Every change is an event with its user.
    assert_eq!(
        event_users(&center, &ro, "resource_pool.created"),
        ["admin", "op"]
    );
    assert_eq!(
        event_users(&center, &ro, "resource_pool.reconfigured").len(),
        3
    );
    assert_eq!(event_users(&center, &ro, "resource_pool.vms_added"), ["op"]);
    assert_eq!(
        event_users(&center, &ro, "resource_pool.vms_removed"),
        ["op"]
    );
    assert_eq!(
        event_users(&center, &ro, "resource_pool.deleted"),
        ["op", "op"]
    );

    let doc = center.ok(&ro, "GET", "/api/openapi.json", "", 200);
    for path in [
        "/api/vcenter/resource-pool",
        "/api/vcenter/resource-pool/{pool}",
        "/api/vcenter/cluster/{cluster}/rules",
        "/api/vcenter/cluster/{cluster}/rules/{rule}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} in the OpenAPI document"
        );
    }
}

#[test]
fn rules_are_edited_checked_and_honoured_by_drs() {
    let dir = tempfile::tempdir().unwrap();
    let (center, _servers, vms) = cluster(dir.path(), true);
    let admin = center.admin();
    let (ro, op) = users(&center, &admin);
    const RULES: &str = "/api/vcenter/cluster/cluster-1/rules";
    const RECS: &str = "/api/vcenter/cluster/cluster-1/drs/recommendations";

    // Two small VMs on one host of an idle cluster: nothing to recommend.
    let before = center.ok(&ro, "GET", RECS, "", 200);
    assert_eq!(before["recommendations"], json!([]), "{before}");

    let apart = center.ok(
        &op,
        "POST",
        RULES,
        r#"{"name": "apart", "kind": "anti_affinity", "vms": ["a", "b"]}"#,
        201,
    );
    assert_eq!(
        apart,
        json!({"name": "apart", "cluster": "cluster-1", "kind": "anti_affinity",
               "enabled": true, "vms": ["a", "b"]})
    );

    // Bad input: 4xx naming the field; read-only 403.
    for (body, status, field) in [
        (
            json!({"name": "apart", "kind": "affinity", "vms": ["c", "d"]}),
            409,
            "name",
        ),
        (
            json!({"name": "one", "kind": "anti_affinity", "vms": ["a"]}),
            422,
            "vms",
        ),
        (
            json!({"name": "x", "kind": "anti_affinity", "vms": ["a", "zz"]}),
            422,
            "vms[1]",
        ),
        (
            json!({"name": "x", "kind": "anti_affinity", "vms": ["a", "a"]}),
            422,
            "vms[1]",
        ),
        (
            json!({"name": "x", "kind": "vm_host", "vms": ["a"], "hosts": ["esx-9"], "mode": "must_run_on"}),
            422,
            "hosts[0]",
        ),
        (
            json!({"name": "x", "kind": "vm_host", "vms": ["a"], "hosts": ["fake-1"]}),
            422,
            "mode",
        ),
        (
            json!({"name": "x", "kind": "affinity", "vms": ["a", "c"], "mode": "must_run_on"}),
            422,
            "mode",
        ),
        // Contradicts "apart".
        (
            json!({"name": "together", "kind": "affinity", "vms": ["a", "b"]}),
            409,
            "vms",
        ),
        (
            json!({"name": "x", "kind": "sideways", "vms": ["a", "b"]}),
            400,
            "",
        ),
    ] {
        let (s, f) = refused(&center, &op, "POST", RULES, body.clone());
        assert_eq!((s, f.as_str()), (status, field), "{body}");
    }
    let (s, _) = refused(
        &center,
        &ro,
        "POST",
        RULES,
        json!({"name": "y", "kind": "affinity", "vms": ["c", "d"]}),
    );
    assert_eq!(s, 403);
    let (s, _) = refused(
        &center,
        &ro,
        "DELETE",
        &format!("{RULES}/apart"),
        Value::Null,
    );
    assert_eq!(s, 403);
    assert_eq!(
        center
            .ok(&ro, "GET", RULES, "", 200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // DRS now recommends separating a and b (priority 1, the rule named in the reason).
    let recs = center.ok(&ro, "GET", RECS, "", 200);
    let r = &recs["recommendations"][0];
    assert_eq!(
        (r["priority"].as_u64(), r["to"].as_str()),
        (Some(1), Some("fake-2")),
        "{recs}"
    );
    assert!(r["reason"].as_str().unwrap().contains("apart"), "{recs}");

    // Disabled, the rule is not honoured; and an affinity rule may then be added.
    let off = center.ok(
        &op,
        "PATCH",
        &format!("{RULES}/apart"),
        r#"{"enabled": false}"#,
        200,
    );
    assert_eq!(off["enabled"], false);
    assert_eq!(
        center.ok(&ro, "GET", RECS, "", 200)["recommendations"],
        json!([])
    );
    center.ok(
        &op,
        "POST",
        RULES,
        r#"{"name": "together", "kind": "affinity", "vms": ["a", "b"]}"#,
        201,
    );
    let (s, f) = refused(
        &center,
        &op,
        "PATCH",
        &format!("{RULES}/apart"),
        json!({"enabled": true}),
    );
    assert_eq!((s, f.as_str()), (409, "vms"));
    assert_eq!(
        center
            .call(&op, "DELETE", &format!("{RULES}/together"), "")
            .0,
        204
    );
    assert_eq!(
        center.call(&op, "GET", &format!("{RULES}/together"), "").0,
        404
    );
    assert_eq!(
        center
            .call(&op, "GET", "/api/vcenter/cluster/nowhere/rules", "")
            .0,
        404
    );

    // Placement: c starts away from d (on fake-2, the emptier host) when a rule says so.
    center.ok(
        &op,
        "POST",
        RULES,
        r#"{"name": "c-not-with-d", "kind": "anti_affinity", "vms": ["c", "d"]}"#,
        201,
    );
    center.op(&op, "/api/vcenter/vm/c/power?action=start", "");
    let c = vms
        .lock()
        .unwrap()
        .iter()
        .find(|v| v.spec.name == "c")
        .cloned()
        .unwrap();
    assert_eq!(c.host, Some(1), "c placed on fake-1, away from d");

    // A VM-host rule binds to hosts, and its fields show.
    let bound = center.ok(
        &admin,
        "POST",
        RULES,
        r#"{"name": "d-on-2", "kind": "vm_host", "vms": ["d"], "hosts": ["fake-2"], "mode": "should_run_on"}"#,
        201,
    );
    assert_eq!(bound["hosts"], json!(["fake-2"]));
    assert_eq!(bound["mode"], "should_run_on");
    let got = center.ok(&ro, "GET", &format!("{RULES}/d-on-2"), "", 200);
    assert_eq!(got, bound);

    // Automation: a fully automated cluster's pass repairs the rule itself.
    center.ok(
        &op,
        "PATCH",
        &format!("{RULES}/apart"),
        r#"{"enabled": true}"#,
        200,
    );
    center.ok(
        &admin,
        "PATCH",
        "/api/vcenter/cluster/cluster-1",
        r#"{"drs": {"automation": "fully_automated", "threshold": 1}}"#,
        200,
    );
    let pass = center.ok(
        &op,
        "POST",
        "/api/vcenter/cluster/cluster-1/drs?action=run",
        "",
        200,
    );
    assert_eq!(pass["applied"].as_array().unwrap().len(), 1, "{pass}");
    let host_of = |name: &str| {
        vms.lock()
            .unwrap()
            .iter()
            .find(|v| v.spec.name == name)
            .unwrap()
            .host
    };
    center.wait("a and b apart", 20, || host_of("a") != host_of("b"));
    center.wait("the center sees them apart", 20, || {
        center.ok(&ro, "GET", RECS, "", 200)["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["reason"].as_str().unwrap_or("").contains("apart"))
    });

    assert_eq!(
        event_users(&center, &ro, "rule.created"),
        ["op", "op", "op", "admin"]
    );
    assert_eq!(event_users(&center, &ro, "rule.reconfigured"), ["op", "op"]);
    assert_eq!(event_users(&center, &ro, "rule.deleted"), ["op"]);
}

/// Concurrent changes are checked one after the other: 32 children asking 600 MHz each
/// of a parent that holds a fixed 1000 at once get one yes and 31 409s (checked against
/// the same inventory, two could both have passed).
#[test]
fn concurrent_pool_changes_cannot_overcommit_a_fixed_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (center, _servers, _vms) = cluster(dir.path(), true);
    let admin = center.admin();
    const POOLS: &str = "/api/vcenter/resource-pool";
    const ASKS: usize = 32;
    center.ok(
        &admin,
        "POST",
        POOLS,
        r#"{"name": "fixed", "cpu_allocation": {"reservation": 1000, "expandable_reservation": false}}"#,
        201,
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..ASKS)
            .map(|i| {
                let (requests, admin) = (center.requests(), &admin);
                s.spawn(move || {
                    let body = json!({"name": format!("child-{i}"), "parent": "fixed",
                                      "cpu_allocation": {"reservation": 600}});
                    requests.call(admin, "POST", POOLS, &body.to_string()).0
                })
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        ASKS - 1,
        "{statuses:?}"
    );
    let pools = center.ok(&admin, "GET", POOLS, "", 200);
    let children = pools
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["parent"] == "fixed")
        .count();
    assert_eq!(children, 1, "{pools}");
}

/// DRS hysteresis: the recommendation the DRS card shows keeps its destination while
/// another host becomes a hair less loaded (what the hosts measure moves a little from
/// one pass to the next), and changes once the old destination is clearly worse. Before,
/// each pass chose afresh, and the card's row flipped between two about equally idle
/// hosts.
#[test]
fn a_recommendation_keeps_its_destination_while_it_stays_about_as_good() {
    let dir = tempfile::tempdir().unwrap();
    let busy = |name: &str, host: u32, cpu: f64| {
        let mut v = vm(name, Some(host));
        v.stats.as_mut().unwrap().cpu_percent = cpu;
        v
    };
    let (center, _servers, vms) = cluster_of(
        dir.path(),
        true,
        &[1, 2, 3],
        vec![
            busy("x", 1, 70.0),
            busy("y", 1, 50.0),
            busy("w", 2, 4.0),
            busy("z", 3, 5.0),
        ],
    );
    let admin = center.admin();
    let first = || {
        let pass = center.drs_pass(&admin);
        let r = &pass["recommendations"][0];
        (
            r["vm"].as_str().unwrap_or("").to_string(),
            r["to"].as_str().unwrap_or("").to_string(),
        )
    };
    // w's measured CPU changes on the hosts; the center sees it at its next poll.
    let set_w = |cpu: f64| {
        for v in vms.lock().unwrap().iter_mut() {
            if v.spec.name == "w" {
                v.stats.as_mut().unwrap().cpu_percent = cpu;
            }
        }
        center.wait("the center sees w's new load", 20, || {
            let list = center.ok(&admin, "GET", "/api/vcenter/vm", "", 200);
            list.as_array().unwrap().iter().any(|v| {
                v["name"] == "w" && v["info"]["stats"]["cpu_percent"].as_f64() == Some(cpu)
            })
        });
    };
    let (moved, to) = first();
    assert_eq!(to, "fake-2", "{moved} → {to}: fake-2 is the least loaded");
    // fake-3 now carries a hair less than fake-2: the recommendation stays.
    set_w(6.0);
    assert_eq!(first(), (moved.clone(), "fake-2".to_string()));
    assert_eq!(first(), (moved.clone(), "fake-2".to_string()));
    // fake-2 is clearly busier now: the recommendation goes to fake-3.
    set_w(40.0);
    assert_eq!(first().1, "fake-3");
}
