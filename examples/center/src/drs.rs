//! DRS for the center: the cluster as `vinfra-drs` sees it, built from what the hosts
//! report (their capacity and load, the VMs' definitions and measured statistics), and
//! the three questions the center asks it: where a VM should start, which migrations
//! would balance the cluster, and how a host is emptied for maintenance.
//!
//! Units. The hosts report CPUs and CPU use in percent of one core; drs counts MHz. The
//! center counts one logical CPU as [`MHZ_PER_CPU`] MHz, so a VM's CPU reservation in
//! its definition (`resources.cpu_mhz`) is in the same unit: 500 reserves half a core.
//! Memory: a VM's demand is the resident memory of its process (guest pages touched plus
//! the VMM's own), capped at its configured size.
//!
//! ```
//! use vinfra_center::drs::{cluster_spec, recommendations, DrsSettings, HostView};
//! use vinfra_host::api::{HostCapacity, HostInfo, PowerState, VmInfo, VmSpec};
//!
//! let mut a = HostInfo::new(1, "esx-1", HostCapacity { cpus: 2, memory_mib: 1024 });
//! let b = HostInfo::new(2, "esx-2", HostCapacity { cpus: 2, memory_mib: 1024 });
//! a.maintenance = false;
//! let hosts = [HostView::connected(&a), HostView::connected(&b)];
//! let mut vms = Vec::new();
//! for n in 0..4 {
//!     let mut vm = VmInfo::new(VmSpec::new(format!("vm-{n}"), "/guest.elf", 128), PowerState::Running);
//!     vm.host = Some(1); // all four on esx-1
//!     vms.push(vm);
//! }
//! let spec = cluster_spec(&hosts, &vms, &DrsSettings::default());
//! let plan = recommendations(spec)?;
//! assert!(plan.recommendations.iter().all(|r| r.from == "esx-1" && r.to == "esx-2"));
//! assert!(!plan.recommendations.is_empty());
//! # Ok::<(), vinfra_drs::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vinfra_drs::{
    Allocation, AutomationLevel, BalancePlan, Cluster, ClusterSpec, EvacuationPlan, HostPower,
    HostSpec, PlacementPlan, Settings, Shares, VmSpec as DrsVm,
};
use vinfra_host::api::{HostInfo, PowerState, RestartPriority, VmInfo};

/// What one logical CPU counts for, in drs's MHz.
pub const MHZ_PER_CPU: i64 = 1000;

const MIB: u64 = 1 << 20;

/// How the center runs DRS for a cluster (stored with the cluster, `PATCH`ed by
/// administrators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrsSettings {
    /// Whether DRS runs at all for the cluster.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Manual (placements and migrations are recommendations), partially automated
    /// (placement automatic) or fully automated (migrations applied up to the
    /// threshold's priority).
    #[serde(default)]
    pub automation: Automation,
    /// 1 (mandatory moves only) … 5 (aggressive), VMware's migration threshold.
    #[serde(default = "three")]
    pub migration_threshold: u8,
    /// How often a balancing pass runs (vCenter's default: every 5 minutes).
    #[serde(default = "five_minutes")]
    pub interval_s: u32,
}

fn yes() -> bool {
    true
}
fn three() -> u8 {
    3
}
fn five_minutes() -> u32 {
    300
}

impl Default for DrsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            automation: Automation::default(),
            migration_threshold: three(),
            interval_s: five_minutes(),
        }
    }
}

/// Why settings were refused (the field and what it must be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SettingsError {
    /// The field, as in the JSON.
    pub field: &'static str,
    /// What it must be.
    pub why: &'static str,
}

impl DrsSettings {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=5).contains(&self.migration_threshold) {
            return Err(SettingsError {
                field: "migration_threshold",
                why: "must be 1 (conservative) to 5 (aggressive)",
            });
        }
        if !(10..=86_400).contains(&self.interval_s) {
            return Err(SettingsError {
                field: "interval_s",
                why: "must be 10 s to one day",
            });
        }
        Ok(())
    }
}

/// DRS automation level (vinfra-drs's `AutomationLevel`, in the API's words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Automation {
    /// Placements and migrations are recommendations a person applies.
    Manual,
    /// Placement of power-ons is automatic; migrations are recommendations.
    PartiallyAutomated,
    /// Placement and migrations are automatic.
    #[default]
    FullyAutomated,
}

impl From<Automation> for AutomationLevel {
    fn from(a: Automation) -> Self {
        match a {
            Automation::Manual => Self::Manual,
            Automation::PartiallyAutomated => Self::PartiallyAutomated,
            Automation::FullyAutomated => Self::FullyAutomated,
        }
    }
}

/// A host as the center knows it.
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    /// Its last report.
    pub info: &'a HostInfo,
    /// Whether it answers: a host that does not is given no VM and none is moved to it.
    pub connected: bool,
}

impl<'a> HostView<'a> {
    /// A host that answers.
    #[must_use]
    pub fn connected(info: &'a HostInfo) -> Self {
        Self {
            info,
            connected: true,
        }
    }
}

/// The cluster as drs sees it: every host (those that do not answer as powered off),
/// every VM with its measured demand, placed on the host that runs it.
#[must_use]
pub fn cluster_spec(hosts: &[HostView<'_>], vms: &[VmInfo], settings: &DrsSettings) -> ClusterSpec {
    let drs_hosts = hosts.iter().map(host_spec).collect();
    let drs_vms = vms.iter().map(|vm| vm_spec(vm, hosts)).collect();
    let mut spec = ClusterSpec::new(drs_hosts, drs_vms);
    let mut drs_settings = Settings::default();
    drs_settings.automation = settings.automation.into();
    drs_settings.migration_threshold = settings.migration_threshold;
    spec.settings = drs_settings;
    spec
}

fn host_spec(h: &HostView<'_>) -> HostSpec {
    let c = &h.info.capacity;
    let mut spec = HostSpec::new(
        h.info.name.clone(),
        i64::from(c.cpus.max(1)) * MHZ_PER_CPU,
        i64::try_from(c.memory_mib.max(1)).unwrap_or(i64::MAX),
    );
    spec.maintenance = h.info.maintenance;
    if !h.connected {
        spec.power = HostPower::Off;
    }
    spec
}

fn vm_spec(vm: &VmInfo, hosts: &[HostView<'_>]) -> DrsVm {
    let s = &vm.spec;
    let mem_mb = i64::from(s.memory_mib.max(1));
    let mut d = DrsVm::new(
        s.name.clone(),
        i64::from(s.vcpus.max(1)) * MHZ_PER_CPU,
        mem_mb,
    );
    let running = matches!(vm.state, PowerState::Running | PowerState::Paused);
    d.powered_on = running;
    d.host = vm
        .host
        .filter(|_| running)
        .and_then(|id| hosts.iter().find(|h| h.info.id == id))
        .map(|h| h.info.name.clone());
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
    Ok(vinfra_drs::balance(&Cluster::new(spec)?))
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
    use vinfra_host::api::{HostCapacity, VmSpec, VmStats};

    fn host(id: u32, name: &str) -> HostInfo {
        HostInfo::new(
            id,
            name,
            HostCapacity {
                cpus: 2,
                memory_mib: 2048,
            },
        )
    }

    fn vm(name: &str, on: Option<u32>, cpu_percent: f64) -> VmInfo {
        let mut vm = VmInfo::new(
            VmSpec::new(name, "/g/workload.elf", 256),
            if on.is_some() {
                PowerState::Running
            } else {
                PowerState::ShutOff
            },
        );
        vm.host = on;
        vm.stats = Some(VmStats {
            cpu_percent,
            rss_bytes: 100 * MIB,
            ..VmStats::default()
        });
        vm
    }

    #[test]
    fn measured_demand_and_placement_are_what_the_hosts_report() {
        let (a, b) = (host(1, "esx-1"), host(2, "esx-2"));
        let hosts = [HostView::connected(&a), HostView::connected(&b)];
        let spec = cluster_spec(
            &hosts,
            &[vm("x", Some(2), 50.0), vm("y", None, 0.0)],
            &DrsSettings::default(),
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
        let (a, b) = (host(1, "esx-1"), host(2, "esx-2"));
        let hosts = [
            HostView::connected(&a),
            HostView {
                info: &b,
                connected: false,
            },
        ];
        let vms: Vec<_> = (0..4)
            .map(|n| vm(&format!("v{n}"), Some(1), 90.0))
            .collect();
        let settings = DrsSettings {
            migration_threshold: 5,
            ..DrsSettings::default()
        };
        let plan = recommendations(cluster_spec(&hosts, &vms, &settings)).unwrap();
        assert!(
            plan.recommendations.iter().all(|r| r.to != "esx-2"),
            "{plan:?}"
        );
        let mut new = vm("new", None, 0.0);
        new.state = PowerState::ShutOff;
        let mut all = vms.clone();
        all.push(new);
        let p = placement(cluster_spec(&hosts, &all, &settings), "new").unwrap();
        assert_eq!(p.placements[0].host.as_deref(), Some("esx-1"));
    }

    #[test]
    fn an_imbalanced_cluster_gets_migrations_to_the_idle_host() {
        let (a, b) = (host(1, "esx-1"), host(2, "esx-2"));
        let hosts = [HostView::connected(&a), HostView::connected(&b)];
        let vms: Vec<_> = (0..4)
            .map(|n| vm(&format!("v{n}"), Some(1), 40.0))
            .collect();
        let plan = recommendations(cluster_spec(&hosts, &vms, &DrsSettings::default())).unwrap();
        assert!(!plan.recommendations.is_empty());
        assert!(plan
            .recommendations
            .iter()
            .all(|r| r.from == "esx-1" && r.to == "esx-2"));
        assert!(plan.imbalance_after < plan.imbalance_before);
    }

    #[test]
    fn evacuation_moves_every_vm_off() {
        let (a, b) = (host(1, "esx-1"), host(2, "esx-2"));
        let hosts = [HostView::connected(&a), HostView::connected(&b)];
        let vms: Vec<_> = (0..3)
            .map(|n| vm(&format!("v{n}"), Some(1), 10.0))
            .collect();
        let plan =
            evacuation(cluster_spec(&hosts, &vms, &DrsSettings::default()), "esx-1").unwrap();
        assert!(plan.complete(), "{plan:?}");
        assert_eq!(plan.moves.len(), 3);
    }

    #[test]
    fn settings_are_checked() {
        let mut s = DrsSettings::default();
        assert!(s.validate().is_ok());
        s.migration_threshold = 6;
        assert_eq!(s.validate().unwrap_err().field, "migration_threshold");
        let bad: Result<DrsSettings, _> = serde_json::from_str(r#"{"threshold": 3}"#);
        assert!(bad.is_err(), "unknown keys are refused");
    }
}
