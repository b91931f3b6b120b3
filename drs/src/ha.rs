//! What the HA crate needs from DRS: admission control for host failures and the
//! placement of the VMs to restart after failures.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{HostPower, RestartPriority};
use crate::packing::{place_groups_complete, BACKTRACK_STEPS};
use crate::placement::{Chooser, Rejected};
use crate::state::State;
use crate::validate::{Cluster, CPU, MEM};

/// Smallest slot, as VI3 used when no VM has a reservation.
pub const MIN_SLOT: [u64; 2] = [256, 128];

/// Slot-based admission control ("tolerate N host failures").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SlotReport {
    /// Slot size `[cpu MHz, mem MB]`: the largest reservations of running VMs.
    pub slot: [u64; 2],
    /// Slots per usable host, by host id.
    pub slots_per_host: Vec<(String, u64)>,
    /// All slots.
    pub total_slots: u64,
    /// Slots left after the `tolerate` hosts with most slots fail.
    pub failover_slots: u64,
    /// Running VMs (one slot each).
    pub needed_slots: u64,
    /// Host failures to tolerate.
    pub tolerate: u32,
    /// Whether the cluster can tolerate them.
    pub admitted: bool,
}

/// Slot-based admission: can the running VMs restart after the `tolerate` largest hosts fail?
///
/// ```
/// use vinfra_drs::{ha, Cluster, ClusterSpec, HostSpec, VmSpec};
///
/// let hosts = ["a", "b", "c"].map(|h| HostSpec::new(h, 10_000, 10_000)).to_vec();
/// let vms = vec![VmSpec::new("x", 2000, 2000).on("a"), VmSpec::new("y", 2000, 2000).on("b")];
/// let c = Cluster::new(ClusterSpec::new(hosts, vms))?;
/// assert!(ha::slot_admission(&c, 1).admitted);
/// assert!(ha::percentage_admission(&c, 25, 25)?.admitted);
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn slot_admission(c: &Cluster, tolerate: u32) -> SlotReport {
    let mut slot = MIN_SLOT;
    let mut needed = 0u64;
    for vm in c.vms.iter().filter(|v| v.powered_on) {
        needed += 1;
        // As VMware HA: the memory slot counts the VM's overhead with its reservation.
        let r = vm.reserved();
        slot[CPU] = slot[CPU].max(r[CPU]);
        slot[MEM] = slot[MEM].max(r[MEM]);
    }
    let per: Vec<(String, u64)> = c
        .usable_hosts()
        .map(|h| {
            let cap = c.hosts[h].capacity;
            (
                c.hosts[h].id.clone(),
                (cap[CPU] / slot[CPU]).min(cap[MEM] / slot[MEM]),
            )
        })
        .collect();
    let mut counts: Vec<u64> = per.iter().map(|p| p.1).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = counts.iter().sum();
    let lost: u64 = counts.iter().take(tolerate as usize).sum();
    let failover = total - lost;
    let admitted = (tolerate as usize) < counts.len() && failover >= needed;
    SlotReport {
        slot,
        slots_per_host: per,
        total_slots: total,
        failover_slots: failover,
        needed_slots: needed,
        tolerate,
        admitted,
    }
}

/// Percentage-based admission control.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PercentReport {
    /// Usable capacity `[cpu, mem]`.
    pub capacity: [u64; 2],
    /// Reservations of running VMs (at least the minimum slot each).
    pub reserved: [u64; 2],
    /// Free fraction in percent.
    pub free_percent: [f64; 2],
    /// Required free percent `[cpu, mem]`.
    pub required_percent: [u8; 2],
    /// Whether both are met.
    pub admitted: bool,
}

/// Percentage-based admission: the reserved capacity must leave the given percentages free.
pub fn percentage_admission(
    c: &Cluster,
    cpu_percent: u8,
    mem_percent: u8,
) -> Result<PercentReport> {
    if cpu_percent > 100 || mem_percent > 100 {
        return Err(Error::InvalidRequest {
            reason: "failover percentages must be 0..=100".into(),
        });
    }
    let mut capacity = [0u64; 2];
    for h in c.usable_hosts() {
        capacity[CPU] += c.hosts[h].capacity[CPU];
        capacity[MEM] += c.hosts[h].capacity[MEM];
    }
    let mut reserved = [0u64; 2];
    for vm in c.vms.iter().filter(|v| v.powered_on) {
        let r = vm.reserved();
        reserved[CPU] += r[CPU].max(MIN_SLOT[CPU]);
        reserved[MEM] += r[MEM].max(MIN_SLOT[MEM]);
    }
    let pct = |r: usize| {
        if capacity[r] == 0 {
            0.0
        } else {
            100.0 * (capacity[r] as f64 - reserved[r] as f64) / capacity[r] as f64
        }
    };
    let free_percent = [pct(CPU), pct(MEM)];
    let admitted =
        free_percent[CPU] >= f64::from(cpu_percent) && free_percent[MEM] >= f64::from(mem_percent);
    Ok(PercentReport {
        capacity,
        reserved,
        free_percent,
        required_percent: [cpu_percent, mem_percent],
        admitted,
    })
}

/// One restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Restart {
    /// VM id.
    pub vm: String,
    /// Host to restart it on.
    pub host: String,
    /// Its priority.
    pub priority: RestartPriority,
}

/// A VM that will not be restarted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NotRestarted {
    /// VM id.
    pub vm: String,
    /// Why.
    pub reason: String,
    /// Why each host refused it (empty when it was not tried).
    pub rejected: Vec<Rejected>,
}

/// The restart plan after host failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RestartPlan {
    /// Restarts in order (high priority first).
    pub restarts: Vec<Restart>,
    /// VMs left down.
    pub not_restarted: Vec<NotRestarted>,
}

/// Place the running VMs of the failed hosts on the survivors, by priority, under the rules.
///
/// ```
/// use vinfra_drs::{ha, Cluster, ClusterSpec, HostSpec, RuleSpec, VmSpec};
///
/// let hosts = ["a", "b", "c"].map(|h| HostSpec::new(h, 10_000, 10_000));
/// let vms = vec![VmSpec::new("dc-1", 1000, 1000).on("a"), VmSpec::new("dc-2", 1000, 1000).on("b")];
/// let mut spec = ClusterSpec::new(hosts.to_vec(), vms);
/// spec.rules.push(RuleSpec::VmAntiAffinity { id: "dcs".into(), vms: vec!["dc-1".into(), "dc-2".into()] });
/// let plan = ha::restart_plan(&Cluster::new(spec)?, &["a"])?;
/// assert_eq!((plan.restarts[0].vm.as_str(), plan.restarts[0].host.as_str()), ("dc-1", "c"));
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn restart_plan(c: &Cluster, failed: &[&str]) -> Result<RestartPlan> {
    let mut c2 = c.clone();
    let mut dead = Vec::new();
    for id in failed {
        let h = c.host_index(id)?;
        c2.hosts[h].power = HostPower::Off;
        dead.push(h);
    }
    let c2 = &c2;
    let mut state = State::current(c2);
    let mut victims: Vec<usize> = (0..c2.vms.len())
        .filter(|&v| c2.vms[v].powered_on && c2.vms[v].host.is_some_and(|h| dead.contains(&h)))
        .collect();
    for &v in &victims {
        state.take(v);
    }
    let size = |v: usize| {
        let f = c2.vms[v].footprint();
        (f[CPU], f[MEM])
    };
    victims.sort_by(|&a, &b| {
        c2.vms[b]
            .restart_priority
            .cmp(&c2.vms[a].restart_priority)
            .then(size(b).cmp(&size(a)))
            .then(a.cmp(&b))
    });
    let mut plan = RestartPlan {
        restarts: Vec::new(),
        not_restarted: Vec::new(),
    };
    let fresh = state.clone();
    let mut chooser = Chooser::new(&mut state);
    for &v in &victims {
        let vm = &c2.vms[v];
        if vm.restart_priority == RestartPriority::Disabled {
            plan.not_restarted.push(NotRestarted {
                vm: vm.id.clone(),
                reason: "restart priority disabled".into(),
                rejected: Vec::new(),
            });
            continue;
        }
        match chooser.best(v, &[]) {
            Ok((h, _, _)) => {
                chooser.apply(v, h);
                plan.restarts.push(Restart {
                    vm: vm.id.clone(),
                    host: c2.hosts[h].id.clone(),
                    priority: vm.restart_priority,
                });
            }
            Err(rej) => plan.not_restarted.push(NotRestarted {
                vm: vm.id.clone(),
                reason: "no surviving host can take it".into(),
                rejected: rej
                    .into_iter()
                    .map(|(h, why)| Rejected::new(c2, h, why))
                    .collect(),
            }),
        }
    }
    if plan.not_restarted.iter().any(|n| !n.rejected.is_empty()) {
        // Priority order left some down: a complete search may still restart them all.
        let wanted: Vec<usize> = victims
            .iter()
            .copied()
            .filter(|&v| c2.vms[v].restart_priority != RestartPriority::Disabled)
            .collect();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &v in &wanted {
            match groups
                .iter_mut()
                .find(|g| c2.vms[g[0]].group == c2.vms[v].group)
            {
                Some(g) => g.push(v),
                None => groups.push(vec![v]),
            }
        }
        if let Some(to) = place_groups_complete(&fresh, &groups, BACKTRACK_STEPS) {
            plan.not_restarted.retain(|n| n.rejected.is_empty());
            plan.restarts = wanted
                .iter()
                .map(|&v| {
                    let g = groups.iter().position(|g| g.contains(&v)).unwrap_or(0);
                    Restart {
                        vm: c2.vms[v].id.clone(),
                        host: c2.hosts[to[g]].id.clone(),
                        priority: c2.vms[v].restart_priority,
                    }
                })
                .collect();
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn cluster() -> ClusterSpec {
        let hosts = (0..3)
            .map(|i| HostSpec::new(format!("h{i}"), 4096, 4096))
            .collect();
        let mut vms = Vec::new();
        for i in 0..6 {
            let mut v = VmSpec::new(format!("v{i}"), 1000, 1000).on(format!("h{}", i % 3));
            v.mem.reservation = 1024;
            vms.push(v);
        }
        ClusterSpec::new(hosts, vms)
    }

    #[test]
    fn slots_count_the_largest_reservation() {
        let c = Cluster::new(cluster()).unwrap();
        let r = slot_admission(&c, 1);
        // 1,024 MB reserved + 28 MB overhead (20 + 8 per GiB of 1,000 MB).
        assert_eq!(r.slot, [256, 1052]);
        assert_eq!(r.total_slots, 9);
        assert_eq!(r.failover_slots, 6);
        assert!(r.admitted);
        assert!(!slot_admission(&c, 3).admitted);
    }

    #[test]
    fn percentage_admission_counts_reservations() {
        let c = Cluster::new(cluster()).unwrap();
        let r = percentage_admission(&c, 25, 25).unwrap();
        assert!(r.admitted, "{r:?}");
        assert!(!percentage_admission(&c, 25, 60).unwrap().admitted);
    }

    #[test]
    fn restarts_by_priority_and_leaves_disabled_down() {
        let mut s = cluster();
        s.vms[0].restart_priority = RestartPriority::High;
        s.vms[3].restart_priority = RestartPriority::Disabled;
        let c = Cluster::new(s).unwrap();
        let p = restart_plan(&c, &["h0"]).unwrap();
        assert_eq!(p.restarts[0].vm, "v0");
        assert_eq!(p.not_restarted.len(), 1);
        assert_eq!(p.not_restarted[0].vm, "v3");
        assert!(p.restarts.iter().all(|r| r.host != "h0"));
    }

    #[test]
    fn restart_respects_anti_affinity_and_reports_what_cannot_go() {
        let mut s = cluster();
        s.hosts.truncate(2);
        s.vms = vec![
            VmSpec::new("a", 100, 100).on("h0"),
            VmSpec::new("b", 100, 100).on("h1"),
        ];
        s.rules.push(RuleSpec::VmAntiAffinity {
            id: "ab".into(),
            vms: vec!["a".into(), "b".into()],
        });
        let c = Cluster::new(s).unwrap();
        let p = restart_plan(&c, &["h0"]).unwrap();
        assert!(p.restarts.is_empty());
        assert!(p.not_restarted[0]
            .rejected
            .iter()
            .any(|r| r.why.to_string().contains("anti-affinity")));
    }
}
