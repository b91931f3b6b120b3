//! Places two new VMs on a three-host cluster, then runs one balancing pass and prints
//! the recommendations: `cargo run -p vinfra-drs --example place_and_balance`.
//!
//! esx-1 carries four busy VMs, two of which must not share a host (a broken
//! anti-affinity rule); esx-2 and esx-3 are nearly idle.

use vinfra_drs::{balance, place, Cluster};

const CLUSTER: &str = r#"{
  "hosts": [{"id": "esx-1", "cpu_mhz": 12000, "mem_mb": 32768},
            {"id": "esx-2", "cpu_mhz": 12000, "mem_mb": 32768},
            {"id": "esx-3", "cpu_mhz": 12000, "mem_mb": 32768}],
  "vms": [{"id": "dc-1",  "cpu_mhz": 2000, "mem_mb": 4096, "cpu_demand_mhz": 1800, "host": "esx-1"},
          {"id": "dc-2",  "cpu_mhz": 2000, "mem_mb": 4096, "cpu_demand_mhz": 1800, "host": "esx-1"},
          {"id": "db",    "cpu_mhz": 4000, "mem_mb": 8192, "cpu_demand_mhz": 3500, "host": "esx-1"},
          {"id": "app",   "cpu_mhz": 4000, "mem_mb": 8192, "cpu_demand_mhz": 3000, "host": "esx-1"},
          {"id": "mail",  "cpu_mhz": 1000, "mem_mb": 2048, "cpu_demand_mhz": 200,  "host": "esx-2"},
          {"id": "web-1", "cpu_mhz": 2000, "mem_mb": 2048, "powered_on": false},
          {"id": "web-2", "cpu_mhz": 2000, "mem_mb": 2048, "powered_on": false}],
  "rules": [{"kind": "vm_anti_affinity", "id": "dcs", "vms": ["dc-1", "dc-2"]},
            {"kind": "vm_anti_affinity", "id": "webs", "vms": ["web-1", "web-2"]}]
}"#;

fn main() -> Result<(), vinfra_drs::Error> {
    let cluster = Cluster::from_json(CLUSTER)?;

    let plan = place(&cluster, &["web-1", "web-2"])?;
    println!("placement of web-1 and web-2 (kept apart by rule \"webs\"):");
    for p in &plan.placements {
        let host = p.host.as_deref().unwrap_or("nowhere");
        println!(
            "  {} -> {host} (imbalance after {:.3})",
            p.vm, p.imbalance_after
        );
        for r in &p.rejected {
            println!("    not {}: {}", r.host, r.why);
        }
    }
    for vm in &plan.unplaced {
        println!("  {vm}: no host can take it");
    }

    let plan = balance(&cluster);
    println!(
        "balancing: imbalance {:.3} -> {:.3} (target {:.3}), stopped because {:?}",
        plan.imbalance_before, plan.imbalance_after, plan.target, plan.stop
    );
    for r in &plan.recommendations {
        println!(
            "  priority {}: move {} from {} to {} ({})",
            r.priority, r.vm, r.from, r.to, r.reason
        );
    }
    for u in &plan.unresolved {
        println!("  unresolved: {}: {}", u.vm, u.reason);
    }
    Ok(())
}
