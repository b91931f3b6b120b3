//! Maintenance mode: a plan that empties a host, or what blocks it.

use serde::Serialize;

use crate::error::Result;
use crate::packing::{place_groups_complete, BACKTRACK_STEPS};
use crate::placement::{Chooser, Rejected};
use crate::state::State;
use crate::validate::{Cluster, CPU, MEM};

/// One evacuation move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EvacuationMove {
    /// VM id.
    pub vm: String,
    /// Destination host.
    pub to: String,
    /// Powered-off VMs only change registration (no VMotion).
    pub powered_on: bool,
}

/// A VM that cannot leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Blocker {
    /// VM id.
    pub vm: String,
    /// Why each host refused it.
    pub rejected: Vec<Rejected>,
}

/// The plan to empty a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EvacuationPlan {
    /// The host entering maintenance mode.
    pub host: String,
    /// Moves, in order.
    pub moves: Vec<EvacuationMove>,
    /// What blocks the evacuation (empty = the host can enter maintenance mode).
    pub blocked: Vec<Blocker>,
}

impl EvacuationPlan {
    /// Whether every VM can leave.
    pub fn complete(&self) -> bool {
        self.blocked.is_empty()
    }
}

/// Plan the evacuation of `host`: affinity groups move whole, most constrained and
/// largest first, each to the host that leaves the cluster best balanced.
///
/// ```
/// use vinfra_drs::{evacuate, Cluster, ClusterSpec, HostSpec, VmSpec};
///
/// let spec = ClusterSpec::new(
///     vec![HostSpec::new("a", 10_000, 10_000), HostSpec::new("b", 10_000, 10_000)],
///     vec![VmSpec::new("x", 2000, 2000).on("a")],
/// );
/// let plan = evacuate(&Cluster::new(spec)?, "a")?;
/// assert!(plan.complete());
/// assert_eq!(plan.moves[0].to, "b");
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn evacuate(c: &Cluster, host: &str) -> Result<EvacuationPlan> {
    let h = c.host_index(host)?;
    let mut c2 = c.clone();
    c2.hosts[h].maintenance = true;
    let c2 = &c2;
    let mut state = State::current(c2);
    let leaving: Vec<usize> = (0..c2.vms.len())
        .filter(|&v| c2.vms[v].host == Some(h))
        .collect();
    let groups = running_groups_in_order(c2, h, &leaving);
    let mut plan = EvacuationPlan {
        host: host.to_owned(),
        moves: Vec::new(),
        blocked: Vec::new(),
    };
    let mut chooser = Chooser::new(&mut state);
    for g in &groups {
        match move_group(&mut chooser, g, h) {
            Some(d) => {
                for &v in g {
                    plan.moves.push(EvacuationMove {
                        vm: c2.vms[v].id.clone(),
                        to: c2.hosts[d].id.clone(),
                        powered_on: true,
                    });
                }
            }
            None => {
                for &v in g {
                    let rejected = (0..c2.hosts.len())
                        .filter(|&d| d != h)
                        .filter_map(|d| {
                            chooser
                                .state
                                .check(v, d, g)
                                .err()
                                .map(|why| Rejected::new(c2, d, why))
                        })
                        .collect();
                    plan.blocked.push(Blocker {
                        vm: c2.vms[v].id.clone(),
                        rejected,
                    });
                }
            }
        }
    }
    if !plan.blocked.is_empty() {
        // The greedy order got stuck: a complete search may still find room for everyone.
        let mut fresh = State::current(c2);
        for g in &groups {
            for &v in g {
                fresh.take(v);
            }
        }
        if let Some(to) = place_groups_complete(&fresh, &groups, BACKTRACK_STEPS) {
            plan.blocked.clear();
            plan.moves.clear();
            for (g, &d) in groups.iter().zip(&to) {
                for &v in g {
                    fresh.put(v, d);
                    plan.moves.push(EvacuationMove {
                        vm: c2.vms[v].id.clone(),
                        to: c2.hosts[d].id.clone(),
                        powered_on: true,
                    });
                }
            }
            state = fresh;
        }
    }
    for &v in &leaving {
        if c2.vms[v].powered_on {
            continue;
        }
        // Powered-off VMs only need a host their rules allow.
        match (0..c2.hosts.len()).find(|&d| state.static_reject(v, d).is_none()) {
            Some(d) => plan.moves.push(EvacuationMove {
                vm: c2.vms[v].id.clone(),
                to: c2.hosts[d].id.clone(),
                powered_on: false,
            }),
            None => plan.blocked.push(Blocker {
                vm: c2.vms[v].id.clone(),
                rejected: (0..c2.hosts.len())
                    .filter_map(|d| {
                        state
                            .static_reject(v, d)
                            .map(|why| Rejected::new(c2, d, why))
                    })
                    .collect(),
            }),
        }
    }
    Ok(plan)
}

/// The running VMs among `leaving` host `h`, as affinity groups that move whole: most
/// constrained first (fewest allowed hosts), then largest.
fn running_groups_in_order(c2: &Cluster, h: usize, leaving: &[usize]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &v in leaving {
        if !c2.vms[v].powered_on {
            continue;
        }
        let g = c2.vms[v].group;
        if !groups
            .iter()
            .any(|m| m.first().is_some_and(|&f| c2.vms[f].group == g))
        {
            groups.push(
                c2.groups[g]
                    .vms
                    .iter()
                    .copied()
                    .filter(|p| leaving.contains(p) && c2.vms[*p].powered_on)
                    .collect(),
            );
        }
    }
    let allowed = |v: usize| {
        c2.vms[v]
            .allowed
            .as_ref()
            .map_or(c2.hosts.len(), |a| a.iter().filter(|&&x| x).count())
    };
    let size = |g: &Vec<usize>| -> f64 {
        let cap = c2.hosts[h].capacity;
        g.iter()
            .map(|&v| {
                let f = c2.vms[v].footprint();
                f[CPU] as f64 / cap[CPU] as f64 + f[MEM] as f64 / cap[MEM] as f64
            })
            .sum()
    };
    groups.sort_by(|a, b| {
        let (aa, ab) = (
            a.iter().map(|&v| allowed(v)).min(),
            b.iter().map(|&v| allowed(v)).min(),
        );
        aa.cmp(&ab).then(size(b).total_cmp(&size(a))).then(a.cmp(b))
    });
    groups
}

/// Move group `g` off host `h` to the host that leaves the cluster best balanced and
/// takes every member; the host, or `None` (nothing moved) when no host takes them all.
fn move_group(chooser: &mut Chooser<'_, '_>, g: &[usize], h: usize) -> Option<usize> {
    let c2 = chooser.state.c;
    // Try hosts for the first member in preference order; the rest must follow.
    let lead = g[0];
    // Hosts the group's demand keeps out of contention first, then the best balance.
    let mut candidates: Vec<(bool, f64, usize)> = Vec::new();
    for d in 0..c2.hosts.len() {
        if chooser.state.check(lead, d, g).is_ok() {
            candidates.push((
                !chooser.state.demand_fits(g, d),
                chooser
                    .loads
                    .after(c2.vms[lead].footprint(), Some(h), Some(d)),
                d,
            ));
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    for (_, _, d) in candidates {
        let mut placed = Vec::new();
        for &v in g {
            if chooser.state.check(v, d, g).is_ok() {
                chooser.apply(v, d);
                placed.push(v);
            } else {
                break;
            }
        }
        if placed.len() == g.len() {
            return Some(d);
        }
        for &v in placed.iter().rev() {
            chooser.apply(v, h);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    #[test]
    fn empties_a_host_respecting_anti_affinity() {
        let mut s = ClusterSpec::new(
            crate::model::three_hosts(),
            vec![
                VmSpec::new("d1", 1000, 1000).on("a"),
                VmSpec::new("d2", 1000, 1000).on("b"),
                VmSpec::new("x", 1000, 1000).on("a"),
            ],
        );
        s.rules.push(RuleSpec::VmAntiAffinity {
            id: "dcs".into(),
            vms: vec!["d1".into(), "d2".into()],
        });
        let c = Cluster::new(s).unwrap();
        let p = evacuate(&c, "a").unwrap();
        assert!(p.complete());
        let d1 = p.moves.iter().find(|m| m.vm == "d1").unwrap();
        assert_eq!(d1.to, "c");
    }

    /// Reservations (none here) allow either host; only c keeps x's demand within
    /// capacity, and the evacuation takes it.
    #[test]
    fn evacuation_avoids_contention() {
        let s = ClusterSpec::new(
            crate::model::three_hosts(),
            vec![
                VmSpec::new("x", 100, 5000).on("a"),
                VmSpec::new("y", 100, 6000).on("b"),
                VmSpec::new("z", 6000, 3000).on("c"),
            ],
        );
        let p = evacuate(&Cluster::new(s).unwrap(), "a").unwrap();
        assert!(p.complete());
        assert_eq!(p.moves[0].to, "c", "{p:?}");
    }

    #[test]
    fn says_what_blocks_it() {
        let mut s = ClusterSpec::new(
            vec![
                HostSpec::new("a", 10_000, 10_000),
                HostSpec::new("b", 10_000, 10_000),
            ],
            vec![
                VmSpec::new("big", 8000, 1000).on("a"),
                VmSpec::new("y", 5000, 1000).on("b"),
            ],
        );
        // Reservations are what capacity must cover: big's and y's cannot share a host.
        s.vms[0].cpu.reservation = 8000;
        s.vms[1].cpu.reservation = 5000;
        s.vms.push(VmSpec::new("pinned", 10, 10).on("a"));
        s.rules.push(RuleSpec::VmHost {
            id: "pin".into(),
            vms: vec!["pinned".into()],
            hosts: vec!["a".into()],
            mode: VmHostMode::MustRunOn,
        });
        let c = Cluster::new(s).unwrap();
        let p = evacuate(&c, "a").unwrap();
        assert!(!p.complete());
        let names: Vec<&str> = p.blocked.iter().map(|b| b.vm.as_str()).collect();
        assert!(
            names.contains(&"big") && names.contains(&"pinned"),
            "{names:?}"
        );
        let pin = p.blocked.iter().find(|b| b.vm == "pinned").unwrap();
        assert!(pin
            .rejected
            .iter()
            .any(|r| r.why.to_string().contains("pin")));
    }
}
