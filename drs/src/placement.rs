//! Initial placement of one VM or a batch, with the reason each other host was rejected.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::load::Loads;
use crate::model::AutomationLevel;
use crate::state::{Reject, State};
use crate::validate::{Cluster, CPU, MEM};

mod room;

pub use room::{PrerequisiteMove, MAX_PREREQUISITES};

/// A host that was not chosen because it could not take the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Rejected {
    /// Host id.
    pub host: String,
    /// Why.
    pub why: Reject,
}

impl Rejected {
    pub(crate) fn new(c: &Cluster, host: usize, why: Reject) -> Self {
        Self {
            host: c.hosts[host].id.clone(),
            why,
        }
    }
}

/// Where one VM goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Placement {
    /// VM id.
    pub vm: String,
    /// Chosen host, none when no host can take it.
    pub host: Option<String>,
    /// Applied automatically (partially/fully automated) or only recommended (manual).
    pub automatic: bool,
    /// Cluster imbalance after this placement.
    pub imbalance_after: f64,
    /// Whether a host with the same image tag was chosen for page sharing.
    pub shares_image: bool,
    /// Every host that could not take it, and why (after the prerequisite moves).
    pub rejected: Vec<Rejected>,
    /// Migrations to make first, when no host could take the VM as the cluster stands
    /// (empty otherwise).
    pub prerequisites: Vec<PrerequisiteMove>,
}

/// Placement of a batch, in the order it was decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PlacementPlan {
    /// One entry per requested VM.
    pub placements: Vec<Placement>,
    /// VMs that could not be placed.
    pub unplaced: Vec<String>,
}

/// How much imbalance a placement may cost to land beside a VM of the same image
/// when memory is the bottleneck (page sharing saves memory the metric does not see).
pub const SHARING_BONUS: f64 = 0.02;

/// How a host ranks for a VM, lowest best: contention, broken should-rules, the
/// imbalance after (less any sharing bonus), VMs already there.
type HostRank = (bool, u32, f64, u32);

/// Chooses hosts for VMs one at a time over a live [`State`].
pub(crate) struct Chooser<'s, 'c> {
    pub state: &'s mut State<'c>,
    pub loads: Loads,
    memory_bound: bool,
}

impl<'s, 'c> Chooser<'s, 'c> {
    pub fn new(state: &'s mut State<'c>) -> Self {
        let c = state.c;
        let loads = Loads::new(c, &state.host_of, |v| c.vms[v].footprint());
        let memory_bound = loads.mean(MEM) > loads.mean(CPU);
        Self {
            state,
            loads,
            memory_bound,
        }
    }

    /// Best host for `v` (moving along with `moving`), or every host's refusal.
    pub fn best(
        &self,
        v: usize,
        moving: &[usize],
    ) -> Result<(usize, f64, bool), Vec<(usize, Reject)>> {
        let c = self.state.c;
        let w = c.vms[v].footprint();
        let from = self.state.host_of[v];
        let image = c.vms[v].image;
        let mut best: Option<(HostRank, usize, bool)> = None;
        let mut rejected = Vec::new();
        for h in 0..c.hosts.len() {
            if let Err(r) = self.state.check(v, h, moving) {
                rejected.push((h, r));
                continue;
            }
            let after = self.loads.after(w, from, Some(h));
            let shares =
                image.is_some_and(|i| self.state.images.get(&(i, h)).copied().unwrap_or(0) > 0);
            let bonus = if shares && self.memory_bound {
                SHARING_BONUS
            } else {
                0.0
            };
            // A host the VM's demand would push into contention comes last, then hosts
            // that break a should-rule, then the balance; between hosts the balance
            // cannot tell apart (a VM with no demand or reservation yet), the one with
            // fewer VMs.
            let contends = !self.state.demand_fits(&[v], h);
            let key = (
                contends,
                self.state.soft_penalty(v, h),
                after - bonus,
                self.state.vms_on[h],
            );
            if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
                best = Some((key, h, shares));
            }
        }
        match best {
            Some((_, h, shares)) => Ok((h, self.loads.after(w, from, Some(h)), shares)),
            None => Err(rejected),
        }
    }

    pub fn apply(&mut self, v: usize, h: usize) {
        let w = self.state.c.vms[v].footprint();
        let from = self.state.host_of[v];
        self.loads.apply(w, from, Some(h));
        self.state.put(v, h);
    }
}

/// Place the named VMs (as if powering them on), largest and most constrained first.
/// Other running VMs stay where they are, unless no host can take a VM: then up to
/// [`MAX_PREREQUISITES`] migrations that make room are searched for (bounded) and
/// returned with its placement in [`Placement::prerequisites`].
///
/// ```
/// use vinfra_drs::{place, Cluster, ClusterSpec, HostSpec, VmSpec};
///
/// let spec = ClusterSpec::new(
///     vec![HostSpec::new("a", 10_000, 10_000), HostSpec::new("b", 10_000, 10_000)],
///     vec![VmSpec::new("x", 4000, 4000).on("a"), VmSpec::new("new", 2000, 2000)],
/// );
/// let plan = place(&Cluster::new(spec)?, &["new"])?;
/// assert_eq!(plan.placements[0].host.as_deref(), Some("b")); // the emptier host
/// assert!(plan.unplaced.is_empty());
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn place(c: &Cluster, vms: &[&str]) -> Result<PlacementPlan> {
    let mut idx = Vec::with_capacity(vms.len());
    for id in vms {
        let v = c.vm_index(id)?;
        if idx.contains(&v) {
            return Err(Error::InvalidRequest {
                reason: format!("vm {id:?} listed twice"),
            });
        }
        idx.push(v);
    }
    let mut state = State::current(c);
    for &v in &idx {
        state.take(v);
    }
    let automatic = c.settings.automation != AutomationLevel::Manual;
    let mut chooser = Chooser::new(&mut state);
    // Most constrained first, then by size normalized to the largest host.
    let allowed = |v: usize| {
        c.vms[v]
            .allowed
            .as_ref()
            .map_or(c.hosts.len(), |a| a.iter().filter(|&&x| x).count())
    };
    let cap = c.hosts.iter().fold([1u64, 1u64], |m, h| {
        [m[0].max(h.capacity[CPU]), m[1].max(h.capacity[MEM])]
    });
    let size = |v: usize| {
        let f = c.vms[v].footprint();
        f[CPU] as f64 / cap[CPU] as f64 + f[MEM] as f64 / cap[MEM] as f64
    };
    let mut order = idx.clone();
    order.sort_by(|&a, &b| {
        (
            allowed(a),
            std::cmp::Reverse(c.groups[c.vms[a].group].vms.len()),
        )
            .cmp(&(
                allowed(b),
                std::cmp::Reverse(c.groups[c.vms[b].group].vms.len()),
            ))
            .then(size(b).total_cmp(&size(a)))
            .then(a.cmp(&b))
    });
    let mut plan = PlacementPlan {
        placements: Vec::new(),
        unplaced: Vec::new(),
    };
    for v in order {
        let mut found = chooser.best(v, &[]);
        let mut prerequisites = Vec::new();
        if found.is_err() {
            // No host takes it as things stand: a few migrations may make room.
            if let Some(moves) = chooser.make_room(v) {
                prerequisites = moves
                    .into_iter()
                    .map(|(u, from, to)| PrerequisiteMove {
                        vm: c.vms[u].id.clone(),
                        from: c.hosts[from].id.clone(),
                        to: c.hosts[to].id.clone(),
                    })
                    .collect();
                found = chooser.best(v, &[]);
            }
        }
        let entry = match found {
            Ok((h, after, shares)) => {
                let rejected = (0..c.hosts.len())
                    .filter(|&o| o != h)
                    .filter_map(|o| {
                        chooser
                            .state
                            .check(v, o, &[])
                            .err()
                            .map(|why| Rejected::new(c, o, why))
                    })
                    .collect();
                chooser.apply(v, h);
                Placement {
                    vm: c.vms[v].id.clone(),
                    host: Some(c.hosts[h].id.clone()),
                    automatic,
                    imbalance_after: after,
                    shares_image: shares,
                    rejected,
                    prerequisites,
                }
            }
            Err(rej) => {
                plan.unplaced.push(c.vms[v].id.clone());
                Placement {
                    vm: c.vms[v].id.clone(),
                    host: None,
                    automatic,
                    imbalance_after: chooser.loads.imbalance(),
                    shares_image: false,
                    rejected: rej
                        .into_iter()
                        .map(|(h, why)| Rejected::new(c, h, why))
                        .collect(),
                    prerequisites,
                }
            }
        };
        plan.placements.push(entry);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn two_hosts() -> ClusterSpec {
        ClusterSpec::new(
            vec![
                HostSpec::new("a", 10_000, 10_000),
                HostSpec::new("b", 10_000, 10_000),
            ],
            vec![
                VmSpec::new("x", 4000, 4000).on("a"),
                VmSpec::new("new", 2000, 2000),
            ],
        )
    }

    #[test]
    fn goes_to_the_emptier_host() {
        let c = Cluster::new(two_hosts()).unwrap();
        let p = place(&c, &["new"]).unwrap();
        assert_eq!(p.placements[0].host.as_deref(), Some("b"));
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn vms_that_weigh_nothing_yet_spread_over_the_hosts() {
        // Idle (demand measured as nothing) and without reservations, as VMs that HA
        // restarts or an evacuation moves often are: every host leaves the balance the
        // same, and the hosts with fewer VMs are chosen, not always the first.
        let hosts = ["a", "b", "c"]
            .map(|h| HostSpec::new(h, 10_000, 10_000))
            .to_vec();
        let vms = (0..6)
            .map(|i| {
                let mut v = VmSpec::new(format!("idle-{i}"), 1000, 1000);
                v.cpu_demand_mhz = Some(0);
                v.mem_demand_mb = Some(0);
                v
            })
            .collect();
        let c = Cluster::new(ClusterSpec::new(hosts, vms)).unwrap();
        let names: Vec<String> = (0..6).map(|i| format!("idle-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = place(&c, &names).unwrap();
        let mut on: std::collections::BTreeMap<String, u32> = Default::default();
        for pl in &p.placements {
            *on.entry(pl.host.clone().unwrap()).or_default() += 1;
        }
        assert_eq!(
            on.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2],
            "{on:?}"
        );
    }

    #[test]
    fn anti_affinity_and_capacity_are_explained() {
        let mut s = two_hosts();
        s.vms[1].mem_mb = 7000;
        // Reservations are what capacity must cover: x's and new's cannot share a host.
        s.vms[0].mem.reservation = 4000;
        s.vms[1].mem.reservation = 7000;
        s.vms.push(VmSpec::new("y", 100, 100).on("b"));
        s.rules.push(RuleSpec::VmAntiAffinity {
            id: "apart".into(),
            vms: vec!["new".into(), "y".into()],
        });
        // x cannot make room by leaving a.
        s.rules.push(RuleSpec::VmHost {
            id: "x-on-a".into(),
            vms: vec!["x".into()],
            hosts: vec!["a".into()],
            mode: VmHostMode::MustRunOn,
        });
        let c = Cluster::new(s).unwrap();
        let p = place(&c, &["new"]).unwrap();
        assert_eq!(p.placements[0].host, None);
        let why: Vec<String> = p.placements[0]
            .rejected
            .iter()
            .map(|r| r.why.to_string())
            .collect();
        assert!(why.iter().any(|w| w.contains("memory")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("anti-affinity")), "{why:?}");
    }

    #[test]
    fn same_image_is_colocated_when_memory_bound() {
        let mut s = ClusterSpec::new(
            vec![
                HostSpec::new("a", 100_000, 10_000),
                HostSpec::new("b", 100_000, 10_000),
            ],
            vec![
                VmSpec::new("x", 100, 4500).on("a"),
                VmSpec::new("y", 100, 4400).on("b"),
                VmSpec::new("new", 100, 500),
            ],
        );
        s.vms[0].image = Some("w2k3".into());
        s.vms[2].image = Some("w2k3".into());
        let c = Cluster::new(s).unwrap();
        let p = place(&c, &["new"]).unwrap();
        assert_eq!(p.placements[0].host.as_deref(), Some("a"));
        assert!(p.placements[0].shares_image);
    }

    /// Three hosts of 10,000 MB: a and b hold 5,060 MB of reservations (4,940 free), c
    /// holds two VMs of 2,036 MB (5,928 free). "new" needs 7,075 MB (7,000 reserved + 75
    /// overhead) and must join its affinity partner z2 on c: one migration of z1 makes
    /// room.
    fn crowded() -> ClusterSpec {
        let mut s = ClusterSpec::new(
            crate::model::three_hosts(),
            vec![
                VmSpec::new("x", 1000, 5000).on("a"),
                VmSpec::new("y", 1000, 5000).on("b"),
                VmSpec::new("z1", 1000, 2000).on("c"),
                VmSpec::new("z2", 1000, 2000).on("c"),
                VmSpec::new("new", 1000, 7000),
            ],
        );
        for vm in &mut s.vms {
            vm.mem.reservation = vm.mem_mb;
        }
        s.vms[4].powered_on = false;
        s
    }

    #[test]
    fn room_is_made_with_prerequisite_migrations() {
        let mut s = crowded();
        s.rules.push(RuleSpec::VmAffinity {
            id: "tog".into(),
            vms: vec!["z2".into(), "new".into()],
        });
        let c = Cluster::new(s).unwrap();
        let p = place(&c, &["new"]).unwrap();
        assert!(p.unplaced.is_empty(), "{p:?}");
        let pl = &p.placements[0];
        assert_eq!(pl.host.as_deref(), Some("c"));
        assert_eq!(pl.prerequisites.len(), 1, "{pl:?}");
        let m = &pl.prerequisites[0];
        assert_eq!((m.vm.as_str(), m.from.as_str()), ("z1", "c"));
        assert!(m.to == "a" || m.to == "b");
        // Admission control admits what those migrations make room for.
        crate::admit_power_on(&c, "new").unwrap();
        // Without the rule, any host made roomy will do; still one migration.
        let c = Cluster::new(crowded()).unwrap();
        let p = place(&c, &["new"]).unwrap();
        assert!(p.unplaced.is_empty());
        assert_eq!(p.placements[0].prerequisites.len(), 1);
    }

    #[test]
    fn no_prerequisites_when_it_fits_or_when_nothing_helps() {
        let c = Cluster::new(two_hosts()).unwrap();
        assert!(place(&c, &["new"]).unwrap().placements[0]
            .prerequisites
            .is_empty());
        let mut s = crowded();
        s.vms[4].mem.reservation = 9_990; // no host can ever hold it with its overhead
        let c = Cluster::new(s).unwrap();
        let p = place(&c, &["new"]).unwrap();
        assert_eq!(p.unplaced, vec!["new".to_owned()]);
        assert!(p.placements[0].prerequisites.is_empty());
    }

    #[test]
    fn affinity_group_lands_together() {
        let mut s = two_hosts();
        s.vms.push(VmSpec::new("new2", 1000, 1000));
        s.rules.push(RuleSpec::VmAffinity {
            id: "tog".into(),
            vms: vec!["new".into(), "new2".into()],
        });
        let c = Cluster::new(s).unwrap();
        let p = place(&c, &["new", "new2"]).unwrap();
        assert_eq!(p.placements[0].host, p.placements[1].host);
    }
}
