//! What only the center knows that DRS honours: a cluster's resource pools (a tree of
//! reservations, limits and shares, and the VMs in each pool) and its rules (affinity,
//! anti-affinity, VM-host). [`cluster_spec_with_policy`] adds them to the hosts' view
//! that [`super::cluster_spec`] builds; [`check_pool_tree`] is the test a pool's
//! reservation must pass before it is stored.
//!
//! Rules name VMs and hosts that come and go with the hosts' reports: a member that is
//! not in the inventory now is left out, and a rule left with too few members (or one
//! that contradicts another, say after a host went away) is ignored for this pass and
//! said so, rather than failing every DRS question of the cluster.

use std::collections::HashSet;

use vinfra_drs::{Allocation, Cluster, ClusterSpec, PoolSpec, RuleSpec, VmHostMode};

use super::{cluster_spec, shares, MHZ_PER_CPU};
use crate::model::{
    Cluster as CenterCluster, DrsSettings, Host, HostState, PoolAllocation, ResourcePool, Rule,
    RuleKind, Vm, VmHostMode as Mode,
};
use crate::store::Store;

/// The cluster as DRS sees it with its pools and rules, and the rules it had to leave
/// out (with why).
#[derive(Debug, Clone)]
pub struct PolicySpec {
    /// The input of `vinfra-drs`.
    pub spec: ClusterSpec,
    /// `rule NAME ignored: why`, one per rule left out.
    pub ignored: Vec<String>,
}

/// [`super::cluster_spec`] with the cluster's resource pools (`pools`, every VM in the
/// pool its record names) and its enabled `rules`: both only of this cluster.
#[must_use]
pub fn cluster_spec_with_policy(
    hosts: &[Host],
    vms: &[Vm],
    settings: &DrsSettings,
    pools: &[ResourcePool],
    rules: &[Rule],
) -> PolicySpec {
    let mut spec = cluster_spec(hosts, vms, settings);
    let pool_names: HashSet<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    spec.pools = pools.iter().map(pool_spec).collect();
    // `cluster_spec` keeps the VMs' order.
    for (d, record) in spec.vms.iter_mut().zip(vms) {
        d.pool = record
            .resource_pool
            .clone()
            .filter(|p| pool_names.contains(p.as_str()));
    }
    let mut ignored = Vec::new();
    let candidates: Vec<RuleSpec> = rules
        .iter()
        .filter(|r| r.definition.enabled)
        .filter_map(|r| match rule_spec(r, &spec) {
            Ok(rule) => Some(rule),
            Err(why) => {
                ignored.push(format!("rule {} ignored: {why}", r.name));
                None
            }
        })
        .collect();
    spec.rules = candidates.clone();
    if !candidates.is_empty() && Cluster::new(spec.clone()).is_err() {
        // Keep the rules that hold together, in name order; say why the others went.
        spec.rules.clear();
        for rule in candidates {
            let mut with = spec.clone();
            with.rules.push(rule.clone());
            match Cluster::new(with) {
                Ok(_) => spec.rules.push(rule),
                Err(e) => ignored.push(format!("rule {} ignored: {e}", rule.id())),
            }
        }
    }
    PolicySpec { spec, ignored }
}

/// [`cluster_spec_with_policy`] over the inventory as `store` holds it now: every host
/// and VM, the pools and rules of cluster `c`.
pub fn inventory_spec(store: &dyn Store, c: &CenterCluster) -> crate::store::Result<PolicySpec> {
    let hosts = store.hosts()?;
    let vms = store.vms()?;
    let mut pools = store.resource_pools()?;
    pools.retain(|p| p.cluster == c.name);
    let mut rules = store.rules()?;
    rules.retain(|r| r.cluster == c.name);
    Ok(cluster_spec_with_policy(
        &hosts,
        &vms,
        &c.settings.drs,
        &pools,
        &rules,
    ))
}

fn allocation(a: &PoolAllocation) -> Allocation {
    let mut d = Allocation::default();
    d.reservation = i64::try_from(a.reservation).unwrap_or(i64::MAX);
    d.limit = a.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    d.shares = shares(a.shares);
    d.expandable = a.expandable_reservation;
    d
}

fn pool_spec(p: &ResourcePool) -> PoolSpec {
    let mut d = PoolSpec::new(p.name.clone(), p.parent.as_deref());
    d.cpu = allocation(&p.cpu_allocation);
    d.mem = allocation(&p.memory_allocation);
    d
}

/// The rule as drs takes it, its members narrowed to what `spec` holds.
fn rule_spec(r: &Rule, spec: &ClusterSpec) -> Result<RuleSpec, String> {
    let def = &r.definition;
    let vms: Vec<String> = def
        .vms
        .iter()
        .filter(|v| spec.vms.iter().any(|d| &d.id == *v))
        .cloned()
        .collect();
    let id = r.name.clone();
    match def.kind {
        RuleKind::Affinity | RuleKind::AntiAffinity => {
            if vms.len() < 2 {
                return Err(format!(
                    "{} of its VMs in the inventory, it needs 2",
                    vms.len()
                ));
            }
            Ok(if def.kind == RuleKind::Affinity {
                RuleSpec::VmAffinity { id, vms }
            } else {
                RuleSpec::VmAntiAffinity { id, vms }
            })
        }
        RuleKind::VmHost => {
            let hosts: Vec<String> = def
                .hosts
                .iter()
                .filter(|h| spec.hosts.iter().any(|d| &d.id == *h))
                .cloned()
                .collect();
            if vms.is_empty() || hosts.is_empty() {
                return Err("none of its VMs or hosts in the inventory".into());
            }
            let mode = match def.mode.unwrap_or(Mode::ShouldRunOn) {
                Mode::MustRunOn => VmHostMode::MustRunOn,
                Mode::ShouldRunOn => VmHostMode::ShouldRunOn,
                Mode::MustNotRunOn => VmHostMode::MustNotRunOn,
                Mode::ShouldNotRunOn => VmHostMode::ShouldNotRunOn,
            };
            Ok(RuleSpec::VmHost {
                id,
                vms,
                hosts,
                mode,
            })
        }
    }
}

/// What the connected hosts (not in maintenance) give the cluster's root: `[CPU MHz,
/// memory MiB]`.
#[must_use]
pub fn cluster_capacity(hosts: &[Host]) -> [u64; 2] {
    let mut total = [0u64; 2];
    for h in hosts.iter().filter(|h| h.state == HostState::Connected) {
        let Some(report) = h.report.as_ref().filter(|r| !r.maintenance) else {
            continue;
        };
        total[0] += u64::from(report.capacity.cpus) * MHZ_PER_CPU.unsigned_abs();
        total[1] += report.capacity.memory_mib;
    }
    total
}

/// Why a tree of pools cannot hold its reservations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PoolTreeError {
    /// The pool at fault (none: the cluster's root).
    pub pool: Option<String>,
    /// `cpu_allocation` or `memory_allocation`.
    pub field: &'static str,
    /// A sentence for people.
    pub message: String,
}

/// Whether the reservations of `pools` (one cluster's, a tree) fit, per resource: a
/// pool's own reservation within its limit; its children's reservations within its
/// reservation when it is not expandable, within its limit either way (an expandable
/// pool passes what its children need beyond its own reservation up to its parent);
/// the top pools' needs within `capacity` (`[CPU MHz, memory MiB]`, see
/// [`cluster_capacity`]). VMs' own reservations are admission control's, at power-on.
pub fn check_pool_tree(pools: &[ResourcePool], capacity: [u64; 2]) -> Result<(), PoolTreeError> {
    for (r, field, unit) in [
        (0, "cpu_allocation", "MHz"),
        (1, "memory_allocation", "MiB"),
    ] {
        let alloc = |p: &ResourcePool| {
            if r == 0 {
                p.cpu_allocation.clone()
            } else {
                p.memory_allocation.clone()
            }
        };
        let top = need(pools, None, field, unit, &alloc, 0)?;
        if top > capacity[r] {
            return Err(PoolTreeError {
                pool: None,
                field,
                message: format!(
                    "{field}: the pools reserve {top} {unit}, the cluster has {} {unit}",
                    capacity[r]
                ),
            });
        }
    }
    Ok(())
}

/// What the children of `parent` (none: the root) need of it, checking each on the way.
fn need(
    pools: &[ResourcePool],
    parent: Option<&str>,
    field: &'static str,
    unit: &str,
    alloc: &dyn Fn(&ResourcePool) -> PoolAllocation,
    depth: usize,
) -> Result<u64, PoolTreeError> {
    // A cycle would recurse forever; the API refuses one before it gets here.
    if depth > pools.len() {
        return Ok(0);
    }
    let mut sum = 0u64;
    for p in pools.iter().filter(|p| p.parent.as_deref() == parent) {
        let a = alloc(p);
        let fail = |message: String| PoolTreeError {
            pool: Some(p.name.clone()),
            field,
            message,
        };
        if let Some(limit) = a.limit.filter(|l| a.reservation > *l) {
            return Err(fail(format!(
                "{field}.reservation: {} {unit} is above the limit {limit} {unit} of pool {}",
                a.reservation, p.name
            )));
        }
        let children = need(pools, Some(&p.name), field, unit, alloc, depth + 1)?;
        if let Some(limit) = a.limit.filter(|l| children > *l) {
            return Err(fail(format!(
                "{field}.limit: the child pools of {} reserve {children} {unit}, above its limit {limit} {unit}",
                p.name
            )));
        }
        let own = if a.expandable_reservation {
            a.reservation.max(children)
        } else if children > a.reservation {
            return Err(fail(format!(
                "{field}.reservation: the child pools of {} reserve {children} {unit}, above its {} {unit} (not expandable)",
                p.name, a.reservation
            )));
        } else {
            a.reservation
        };
        sum = sum.saturating_add(own);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::{ClusterSettings, RuleDefinition};
    use vinfra_host::api::{HostCapacity, HostInfo, PowerState, VmInfo, VmSpec, VmStats};

    fn host(id: u32, name: &str) -> Host {
        Host {
            name: name.into(),
            address: String::new(),
            state: HostState::Connected,
            report: Some(HostInfo::new(
                id,
                name,
                HostCapacity {
                    cpus: 4,
                    memory_mib: 4096,
                },
            )),
            event_cursor: 0,
            seen_ms: 0,
        }
    }

    fn vm(name: &str, on: Option<&str>) -> Vm {
        let mut info = VmInfo::new(
            VmSpec::new(name, "/g/workload.elf", 256),
            if on.is_some() {
                PowerState::Running
            } else {
                PowerState::ShutOff
            },
        );
        info.stats = Some(VmStats {
            cpu_percent: 5.0,
            rss_bytes: 64 << 20,
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

    fn rule(name: &str, kind: RuleKind, vms: &[&str]) -> Rule {
        Rule {
            name: name.into(),
            cluster: "cluster-1".into(),
            definition: RuleDefinition {
                kind,
                enabled: true,
                vms: vms.iter().map(|v| (*v).to_string()).collect(),
                hosts: Vec::new(),
                mode: None,
            },
        }
    }

    fn pool(name: &str, parent: Option<&str>, cpu: u64, expandable: bool) -> ResourcePool {
        ResourcePool {
            name: name.into(),
            cluster: "cluster-1".into(),
            parent: parent.map(Into::into),
            cpu_allocation: PoolAllocation {
                reservation: cpu,
                expandable_reservation: expandable,
                ..PoolAllocation::default()
            },
            memory_allocation: PoolAllocation::default(),
        }
    }

    #[test]
    fn an_anti_affinity_rule_separates_two_vms_on_one_host() {
        let hosts = [host(1, "esx-1"), host(2, "esx-2")];
        let vms = [vm("a", Some("esx-1")), vm("b", Some("esx-1"))];
        let settings = ClusterSettings::default().drs;
        let plain = super::super::recommendations(cluster_spec(&hosts, &vms, &settings)).unwrap();
        assert!(plain.recommendations.is_empty(), "{plain:?}");
        let p = cluster_spec_with_policy(
            &hosts,
            &vms,
            &settings,
            &[],
            &[rule("apart", RuleKind::AntiAffinity, &["a", "b"])],
        );
        assert!(p.ignored.is_empty(), "{:?}", p.ignored);
        let plan = super::super::recommendations(p.spec).unwrap();
        let r = &plan.recommendations[0];
        assert_eq!((r.priority, r.to.as_str()), (1, "esx-2"), "{plan:?}");
        assert!(r.reason.contains("apart"), "{}", r.reason);
    }

    #[test]
    fn placement_keeps_affinity_and_anti_affinity() {
        let hosts = [host(1, "esx-1"), host(2, "esx-2")];
        let vms = [
            vm("a", Some("esx-1")),
            vm("b", Some("esx-2")),
            vm("c", None),
        ];
        let settings = ClusterSettings::default().drs;
        for (kind, want) in [
            (RuleKind::AntiAffinity, "esx-2"),
            (RuleKind::Affinity, "esx-1"),
        ] {
            let p = cluster_spec_with_policy(
                &hosts,
                &vms,
                &settings,
                &[],
                &[rule("r", kind, &["a", "c"])],
            );
            let plan = super::super::placement(p.spec, "c").unwrap();
            assert_eq!(plan.placements[0].host.as_deref(), Some(want), "{kind:?}");
        }
    }

    #[test]
    fn unknown_members_disabled_and_contradictory_rules_are_left_out() {
        let hosts = [host(1, "esx-1"), host(2, "esx-2")];
        let vms = [vm("a", Some("esx-1")), vm("b", Some("esx-2"))];
        let mut off = rule("off", RuleKind::AntiAffinity, &["a", "b"]);
        off.definition.enabled = false;
        let p = cluster_spec_with_policy(
            &hosts,
            &vms,
            &ClusterSettings::default().drs,
            &[pool("prod", None, 0, true)],
            &[
                rule("apart", RuleKind::AntiAffinity, &["a", "b"]),
                rule("gone", RuleKind::Affinity, &["a", "zz"]),
                rule("together", RuleKind::Affinity, &["a", "b"]),
                off,
            ],
        );
        assert_eq!(p.spec.rules.len(), 1, "{:?}", p.spec.rules);
        assert_eq!(p.spec.rules[0].id(), "apart");
        assert_eq!(p.ignored.len(), 2, "{:?}", p.ignored);
        assert!(
            p.ignored[0].starts_with("rule gone ignored"),
            "{:?}",
            p.ignored
        );
        assert!(p.ignored[1].contains("contradictory"), "{:?}", p.ignored);
        Cluster::new(p.spec).unwrap();
    }

    #[test]
    fn vms_go_into_their_pools() {
        let hosts = [host(1, "esx-1")];
        let mut a = vm("a", Some("esx-1"));
        a.resource_pool = Some("prod".into());
        let mut b = vm("b", None);
        b.resource_pool = Some("deleted".into());
        let mut prod = pool("prod", None, 1000, false);
        prod.memory_allocation.shares = 2000;
        let p = cluster_spec_with_policy(
            &hosts,
            &[a, b],
            &ClusterSettings::default().drs,
            &[prod],
            &[],
        );
        assert_eq!(p.spec.vms[0].pool.as_deref(), Some("prod"));
        assert_eq!(p.spec.vms[1].pool, None);
        assert_eq!(p.spec.pools[0].cpu.reservation, 1000);
        assert!(!p.spec.pools[0].cpu.expandable);
        assert_eq!(p.spec.pools[0].mem.shares, vinfra_drs::Shares::High);
        Cluster::new(p.spec).unwrap();
    }

    #[test]
    fn pool_reservations_must_fit_their_parents_and_the_cluster() {
        let cap = cluster_capacity(&[host(1, "esx-1")]);
        assert_eq!(cap, [4000, 4096]);
        check_pool_tree(&[pool("a", None, 4000, true)], cap).unwrap();
        let e = check_pool_tree(&[pool("a", None, 4001, true)], cap).unwrap_err();
        assert_eq!((e.pool, e.field), (None, "cpu_allocation"));
        // An expandable parent passes its children's need up; a fixed one refuses it.
        let tree = [
            pool("a", None, 1000, true),
            pool("b", Some("a"), 3000, true),
        ];
        check_pool_tree(&tree, cap).unwrap();
        let tree = [
            pool("a", None, 1000, false),
            pool("b", Some("a"), 3000, true),
        ];
        let e = check_pool_tree(&tree, cap).unwrap_err();
        assert_eq!(e.pool.as_deref(), Some("a"));
        let tree = [
            pool("a", None, 1000, true),
            pool("b", Some("a"), 3000, true),
            pool("c", None, 1000, true),
        ];
        check_pool_tree(&tree, cap).unwrap();
        let tree = [
            pool("a", None, 1000, true),
            pool("b", Some("a"), 3000, true),
            pool("c", None, 1001, true),
        ];
        assert!(check_pool_tree(&tree, cap).is_err());
        let mut limited = pool("a", None, 1000, true);
        limited.memory_allocation.limit = Some(10);
        limited.memory_allocation.reservation = 11;
        let e = check_pool_tree(&[limited], cap).unwrap_err();
        assert_eq!(e.field, "memory_allocation");
    }
}
