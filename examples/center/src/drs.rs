//! DRS for the center: the cluster as `vinfra-drs` sees it, built from what the hosts
//! report (their capacity and load, the VMs' definitions and measured statistics), and
//! the three questions the center asks it: where a VM should start, which migrations
//! would balance the cluster, and how a host is emptied for maintenance.
//! [`cluster_spec_with_policy`] (and [`inventory_spec`], the same from the store) adds
//! what only the center knows: the cluster's resource pools and DRS rules.
//!
//! Units. The hosts report CPUs and CPU use in percent of one core; drs counts MHz. The
//! center counts one logical CPU as [`MHZ_PER_CPU`] MHz, so a VM's CPU reservation in
//! its definition (`resources.cpu_mhz`) is in the same unit: 500 reserves half a core.
//! Memory: a VM's demand is the resident memory of its process (guest pages touched plus
//! the VMM's own), capped at its configured size.
//!
//! ```
//! use vinfra_center::drs::{cluster_spec, recommendations};
//! use vinfra_center::model::{ClusterSettings, Host, HostState, Vm};
//! use vinfra_host::api::{HostCapacity, HostInfo, PowerState, VmInfo, VmSpec};
//!
//! let host = |id, name: &str| Host {
//!     name: name.into(),
//!     address: String::new(),
//!     state: HostState::Connected,
//!     report: Some(HostInfo::new(id, name, HostCapacity { cpus: 2, memory_mib: 1024 })),
//!     event_cursor: 0,
//!     seen_ms: 0,
//! };
//! let hosts = [host(1, "esx-1"), host(2, "esx-2")];
//! let vms: Vec<Vm> = (0..4)
//!     .map(|n| {
//!         let mut info = VmInfo::new(VmSpec::new(format!("vm-{n}"), "/g.elf", 128), PowerState::Running);
//!         info.host = Some(1); // all four on esx-1
//!         Vm { name: format!("vm-{n}"), info, host: Some("esx-1".into()), resource_pool: None, seen_ms: 0 }
//!     })
//!     .collect();
//! let spec = cluster_spec(&hosts, &vms, &ClusterSettings::default().drs);
//! let plan = recommendations(spec)?;
//! assert!(!plan.recommendations.is_empty());
//! assert!(plan.recommendations.iter().all(|r| r.from == "esx-1" && r.to == "esx-2"));
//! # Ok::<(), vinfra_drs::Error>(())
//! ```

use vinfra_drs::{
    Allocation, AutomationLevel, BalancePlan, Cluster, ClusterSpec, EvacuationPlan, HostPower,
    HostSpec, PlacementPlan, Settings, Shares, VmSpec as DrsVm,
};
use vinfra_host::api::{PowerState, RestartPriority};

use crate::model::{DrsAutomation, DrsSettings, Host, HostState, Vm};

mod policy;
pub use policy::{
    check_pool_tree, cluster_capacity, cluster_spec_with_policy, inventory_spec, PolicySpec,
    PoolTreeError,
};

/// What one logical CPU counts for, in drs's MHz.
pub const MHZ_PER_CPU: i64 = 1000;

const MIB: u64 = 1 << 20;

/// The cluster as drs sees it: every host that has reported (those that do not answer
/// now as powered off, those in maintenance mode as such), every VM with its measured
/// demand, placed on the host that runs it.
#[must_use]
pub fn cluster_spec(hosts: &[Host], vms: &[Vm], settings: &DrsSettings) -> ClusterSpec {
    let drs_hosts = hosts.iter().filter_map(host_spec).collect();
    let drs_vms = vms.iter().map(|vm| vm_spec(vm, hosts)).collect();
    let mut spec = ClusterSpec::new(drs_hosts, drs_vms);
    let mut drs_settings = Settings::default();
    drs_settings.automation = match settings.automation {
        DrsAutomation::Manual => AutomationLevel::Manual,
        DrsAutomation::PartiallyAutomated => AutomationLevel::PartiallyAutomated,
        DrsAutomation::FullyAutomated => AutomationLevel::FullyAutomated,
    };
    drs_settings.migration_threshold = settings.threshold;
    spec.settings = drs_settings;
    spec
}

fn host_spec(h: &Host) -> Option<HostSpec> {
    let report = h.report.as_ref()?;
    let c = &report.capacity;
    let mut spec = HostSpec::new(
        h.name.clone(),
        i64::from(c.cpus.max(1)) * MHZ_PER_CPU,
        i64::try_from(c.memory_mib.max(1)).unwrap_or(i64::MAX),
    );
    spec.maintenance = report.maintenance || h.state == HostState::Maintenance;
    if h.state == HostState::NotResponding {
        spec.power = HostPower::Off;
    }
    Some(spec)
}

fn vm_spec(record: &Vm, hosts: &[Host]) -> DrsVm {
    let vm = &record.info;
    let s = &vm.spec;
    let mem_mb = i64::from(s.memory_mib.max(1));
    let mut d = DrsVm::new(
        s.name.clone(),
        i64::from(s.vcpus.max(1)) * MHZ_PER_CPU,
        mem_mb,
    );
    let running = matches!(vm.state, PowerState::Running | PowerState::Paused);
    d.powered_on = running;
    // Only on a host drs knows (one that has reported).
    d.host = record
        .host
        .clone()
        .filter(|h| running && hosts.iter().any(|k| &k.name == h && k.report.is_some()));
    if let Some(stats) = &vm.stats {
        // Percent of one core -> MHz; never above the configured size (so the cast
        // below cannot truncate: the value is clamped to it first).
        let cpu_mhz = stats.cpu_percent.max(0.0) * MHZ_PER_CPU as f64 / 100.0;
        #[allow(clippy::cast_possible_truncation, reason = "clamped to the VM's size")]
        let cpu = cpu_mhz.min(d.cpu_mhz as f64).round() as i64;
        d.cpu_demand_mhz = Some(cpu.min(d.cpu_mhz));
        let rss_mib = i64::try_from(stats.rss_bytes / MIB).unwrap_or(i64::MAX);
        d.mem_demand_mb = Some(rss_mib.min(mem_mb));
    }
    let r = &s.resources;
    d.cpu = Allocation::default();
    d.cpu.reservation = i64::from(r.cpu_mhz);
    d.cpu.shares = shares(r.shares);
    d.mem = Allocation::default();
    d.mem.reservation = i64::try_from(r.reservation_mib).unwrap_or(i64::MAX);
    d.mem.limit = r.limit_mib.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    d.mem.shares = shares(r.shares);
    d.restart_priority = match s.ha.priority {
        RestartPriority::Disabled => vinfra_drs::RestartPriority::Disabled,
        RestartPriority::Low => vinfra_drs::RestartPriority::Low,
        RestartPriority::High => vinfra_drs::RestartPriority::High,
        _ => vinfra_drs::RestartPriority::Medium,
    };
    // VMs that boot the same kernel share most of their pages (KSM).
    d.image = Some(s.kernel.clone());
    d
}

fn shares(v: u32) -> Shares {
    match v {
        500 => Shares::Low,
        1000 => Shares::Normal,
        2000 => Shares::High,
        v => Shares::Custom(v),
    }
}

/// One balancing pass: the migrations that would bring the cluster to the threshold's
/// target, with their priorities and reasons, and whatever rule no move can repair.
pub fn recommendations(spec: ClusterSpec) -> vinfra_drs::Result<BalancePlan> {
    recommendations_keeping(spec, &[])
}

/// [`recommendations`] that keeps the last pass's (VM, destination) pairs while they
/// stay about as good as the best (see `vinfra_drs::balance_keeping`).
pub fn recommendations_keeping(
    spec: ClusterSpec,
    previous: &[(String, String)],
) -> vinfra_drs::Result<BalancePlan> {
    let previous: Vec<(&str, &str)> = previous
        .iter()
        .map(|(v, h)| (v.as_str(), h.as_str()))
        .collect();
    Ok(vinfra_drs::balance_keeping(&Cluster::new(spec)?, &previous))
}

/// Where `vm` (already in `spec`, not placed) should start, with any migrations that
/// must make room first.
pub fn placement(spec: ClusterSpec, vm: &str) -> vinfra_drs::Result<PlacementPlan> {
    vinfra_drs::place(&Cluster::new(spec)?, &[vm])
}

/// How `host` is emptied for maintenance mode, or what blocks it.
pub fn evacuation(spec: ClusterSpec, host: &str) -> vinfra_drs::Result<EvacuationPlan> {
    vinfra_drs::evacuate(&Cluster::new(spec)?, host)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::ClusterSettings;
    use vinfra_host::api::{HostCapacity, HostInfo, VmInfo, VmSpec, VmStats};

    fn host(id: u32, name: &str) -> Host {
        Host {
            name: name.into(),
            address: String::new(),
            state: HostState::Connected,
            report: Some(HostInfo::new(
                id,
                name,
                HostCapacity {
                    cpus: 2,
                    memory_mib: 2048,
                },
            )),
            event_cursor: 0,
            seen_ms: 0,
        }
    }

    fn vm(name: &str, on: Option<&str>, cpu_percent: f64) -> Vm {
        let mut info = VmInfo::new(
            VmSpec::new(name, "/g/workload.elf", 256),
            if on.is_some() {
                PowerState::Running
            } else {
                PowerState::ShutOff
            },
        );
        info.stats = Some(VmStats {
            cpu_percent,
            rss_bytes: 100 * MIB,
            ..VmStats::default()
        });
        Vm {
            name: name.into(),
            info,
            host: on.map(Into::into),
            resource_pool: None,
            seen_ms: 0,
        }
    }

    fn drs(threshold: u8) -> DrsSettings {
        DrsSettings {
            threshold,
            ..ClusterSettings::default().drs
        }
    }

    #[test]
    fn measured_demand_and_placement_are_what_the_hosts_report() {
        let hosts = [host(1, "esx-1"), host(2, "esx-2")];
        let spec = cluster_spec(
            &hosts,
            &[vm("x", Some("esx-2"), 50.0), vm("y", None, 0.0)],
            &drs(3),
        );
        assert_eq!(spec.hosts[0].cpu_mhz, 2 * MHZ_PER_CPU);
        assert_eq!(spec.hosts[1].mem_mb, 2048);
        let x = &spec.vms[0];
        assert_eq!(x.host.as_deref(), Some("esx-2"));
        assert_eq!(x.cpu_demand_mhz, Some(500));
        assert_eq!(x.mem_demand_mb, Some(100));
        assert!(x.powered_on);
        let y = &spec.vms[1];
        assert!(!y.powered_on);
        assert_eq!(y.host, None);
    }

    #[test]
    fn a_host_that_does_not_answer_gets_nothing() {
        let mut b = host(2, "esx-2");
        b.state = HostState::NotResponding;
        let hosts = [host(1, "esx-1"), b];
        let mut vms: Vec<_> = (0..4)
            .map(|n| vm(&format!("v{n}"), Some("esx-1"), 90.0))
            .collect();
        let plan = recommendations(cluster_spec(&hosts, &vms, &drs(5))).unwrap();
        assert!(
            plan.recommendations.iter().all(|r| r.to != "esx-2"),
            "{plan:?}"
        );
        vms.push(vm("new", None, 0.0));
        let p = placement(cluster_spec(&hosts, &vms, &drs(5)), "new").unwrap();
        assert_eq!(p.placements[0].host.as_deref(), Some("esx-1"));
    }

    #[test]
    fn an_imbalanced_cluster_gets_migrations_to_the_idle_host() {
        let hosts = [host(1, "esx-1"), host(2, "esx-2")];
        let vms: Vec<_> = (0..4)
            .map(|n| vm(&format!("v{n}"), Some("esx-1"), 40.0))
            .collect();
        let plan = recommendations(cluster_spec(&hosts, &vms, &drs(3))).unwrap();
        assert!(!plan.recommendations.is_empty());
        assert!(plan
            .recommendations
            .iter()
            .all(|r| r.from == "esx-1" && r.to == "esx-2"));
        assert!(plan.imbalance_after < plan.imbalance_before);
    }

    #[test]
    fn evacuation_moves_every_vm_off() {
        let hosts = [host(1, "esx-1"), host(2, "esx-2")];
        let vms: Vec<_> = (0..3)
            .map(|n| vm(&format!("v{n}"), Some("esx-1"), 10.0))
            .collect();
        let plan = evacuation(cluster_spec(&hosts, &vms, &drs(3)), "esx-1").unwrap();
        assert!(plan.complete(), "{plan:?}");
        assert_eq!(plan.moves.len(), 3);
    }
}
