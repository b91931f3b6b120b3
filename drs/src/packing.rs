//! Bin packing: place every running VM on as few hosts as possible, under the rules.
//!
//! Exact bin completion first (a bin whose items fill it to capacity in both
//! dimensions cannot be improved; up to five items per bin on small instances), then
//! minimum-bin-slack search for what is left,
//! then a local search that tries to empty the least-filled bins. Affinity groups are
//! single items; anti-affinity partners never share a bin; bins are matched to hosts
//! their items allow. Everything is bounded by [`PackOptions::step_budget`].

mod backtrack;
mod fewer;
mod heuristic;
mod matching;
mod near;
mod packer;
mod wide;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

pub(crate) use backtrack::place_groups_complete;
use backtrack::Backtrack;
pub use backtrack::{BACKTRACK_MAX_ITEMS, BACKTRACK_STEPS};

use crate::model::CapacityModel;
use crate::state::State;
use crate::validate::{Cluster, CPU, MEM};

/// Bounds for [`pack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackOptions {
    /// Search steps (candidate items looked at) for the whole run.
    pub step_budget: u64,
    /// Search nodes per bin in the minimum-slack phase.
    pub nodes_per_bin: u64,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            step_budget: 400_000_000,
            nodes_per_bin: 20_000,
        }
    }
}

impl PackOptions {
    /// Options with the given step budget.
    pub fn with_budget(step_budget: u64) -> Self {
        Self {
            step_budget,
            ..Self::default()
        }
    }
}

/// A packing of the running VMs onto hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PackPlan {
    /// Distinct hosts that received a VM.
    pub hosts_used: usize,
    /// A lower bound on the hosts any packing needs.
    pub lower_bound: usize,
    /// `(vm id, host id)` for every placed VM, in VM order.
    pub assignment: Vec<(String, String)>,
    /// VMs that could not be placed.
    pub unplaced: Vec<String>,
    /// Search steps spent.
    pub steps: u64,
}

/// FxHash-style multiplicative hasher: the exact-completion lookups are the hot loop
/// and their keys are plain integers from the input.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

fn key(s: [u64; 2]) -> (u64, u64) {
    (s[CPU], s[MEM])
}

/// One packable unit: an affinity group of running VMs.
#[derive(Debug, Clone)]
struct Item {
    vms: Vec<usize>,
    size: [u64; 2],
    anti: Vec<usize>,
    allowed: Option<Vec<bool>>,
}

fn items_of(c: &Cluster) -> Vec<Item> {
    let usable: Vec<bool> = c.hosts.iter().map(|h| h.usable()).collect();
    let all_usable = usable.iter().all(|&u| u);
    let mut out = Vec::new();
    for g in &c.groups {
        let vms: Vec<usize> = g
            .vms
            .iter()
            .copied()
            .filter(|&v| c.vms[v].powered_on)
            .collect();
        let Some(&first) = vms.first() else { continue };
        let (size, anti) = size_and_anti(c, &vms);
        // Fold host usability into the mask only where it matters.
        let allowed = match &c.vms[first].allowed {
            Some(a) => Some(a.iter().zip(&usable).map(|(&x, &u)| x && u).collect()),
            None if all_usable => None,
            None => Some(usable.clone()),
        };
        out.push(Item {
            vms,
            size,
            anti,
            allowed,
        });
    }
    out
}

fn fits(s: [u64; 2], rem: [u64; 2]) -> bool {
    s[CPU] <= rem[CPU] && s[MEM] <= rem[MEM]
}

fn sub(a: [u64; 2], b: [u64; 2]) -> [u64; 2] {
    [a[CPU] - b[CPU], a[MEM] - b[MEM]]
}

fn disjoint(a: &[usize], b: &[usize]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return false,
        }
    }
    true
}

/// Summed footprint of `vms` and the anti-affinity rules of any of them, sorted.
fn size_and_anti(c: &Cluster, vms: &[usize]) -> ([u64; 2], Vec<usize>) {
    let mut size = [0u64; 2];
    let mut anti = Vec::new();
    for &v in vms {
        let f = c.vms[v].footprint();
        size[CPU] += f[CPU];
        size[MEM] += f[MEM];
        anti.extend_from_slice(&c.vms[v].anti);
    }
    anti.sort_unstable();
    anti.dedup();
    (size, anti)
}

/// Summed size of the items in a bin.
fn bin_size(items: &[Item], bin: &[usize]) -> [u64; 2] {
    let mut s = [0u64; 2];
    for &i in bin {
        s[CPU] += items[i].size[CPU];
        s[MEM] += items[i].size[MEM];
    }
    s
}

/// Put every VM of a group on `h`, or none of them.
fn try_put_group(state: &mut State<'_>, vms: &[usize], h: usize) -> bool {
    let mut placed = Vec::new();
    for &v in vms {
        if state.check(v, h, vms).is_ok() {
            state.put(v, h);
            placed.push(v);
        } else {
            for v in placed {
                state.take(v);
            }
            return false;
        }
    }
    true
}

fn lower_bound(c: &Cluster, items: &[Item]) -> usize {
    let mut lb = 0;
    for r in [CPU, MEM] {
        let need: u64 = items.iter().map(|i| i.size[r]).sum();
        let mut caps: Vec<u64> = c.usable_hosts().map(|h| c.hosts[h].capacity[r]).collect();
        caps.sort_unstable_by(|a, b| b.cmp(a));
        let mut got = 0u64;
        let mut n = 0;
        for cap in caps {
            if got >= need {
                break;
            }
            got += cap;
            n += 1;
        }
        lb = lb.max(n);
    }
    lb
}

/// Pack every running VM onto as few usable hosts as possible under the rules.
///
/// When the heuristics leave VMs unplaced, a complete backtracking search (bounded by
/// what is left of the step budget) looks for any placement that keeps every rule.
///
/// ```
/// use vinfra_drs::{first_fit_decreasing, pack, Cluster, ClusterSpec, HostSpec, PackOptions, VmSpec};
///
/// // Two hosts' worth of VMs, each host filled exactly by three of them.
/// let sizes = [(40, 26), (30, 37), (30, 37), (40, 26), (30, 37), (30, 37)];
/// let hosts = (0..4).map(|i| HostSpec::new(format!("h{i}"), 100, 100)).collect();
/// let vms = sizes.iter().enumerate().map(|(i, &(c, m))| VmSpec::new(format!("v{i}"), c, m));
/// let c = Cluster::new(ClusterSpec::new(hosts, vms.collect()))?;
/// let plan = pack(&c, &PackOptions::default());
/// assert_eq!((plan.hosts_used, plan.lower_bound), (2, 2));
/// assert!(plan.unplaced.is_empty());
/// assert!(first_fit_decreasing(&c).hosts_used >= plan.hosts_used); // the baseline
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn pack(c: &Cluster, opts: &PackOptions) -> PackPlan {
    let plan = heuristic::pack_heuristic(c, opts);
    // Never worse than the baseline: it is cheap next to the heuristics.
    let ffd = first_fit_decreasing(c);
    let plan = if (ffd.unplaced.len(), ffd.hosts_used) < (plan.unplaced.len(), plan.hosts_used) {
        PackPlan {
            steps: plan.steps + ffd.steps,
            ..ffd
        }
    } else {
        PackPlan {
            steps: plan.steps + ffd.steps,
            ..plan
        }
    };
    let items = items_of(c);
    // The search recurses once per item: keep it to instances where that depth is small.
    if plan.unplaced.is_empty()
        || plan.steps >= opts.step_budget
        || items.len() > BACKTRACK_MAX_ITEMS
    {
        return plan;
    }
    let hosts: Vec<usize> = c.usable_hosts().collect();
    let mut search = Backtrack {
        c,
        items: &items,
        hosts: &hosts,
        used: vec![[0, 0]; c.hosts.len()],
        anti: vec![Vec::new(); c.hosts.len()],
        host_of: vec![None; items.len()],
        steps: plan.steps,
        budget: opts
            .step_budget
            .min(plan.steps.saturating_add(BACKTRACK_STEPS)),
    };
    if !search.run() {
        return PackPlan {
            steps: search.steps,
            ..plan
        };
    }
    let mut state = State::empty_with(c, CapacityModel::Footprint);
    for (i, h) in search.host_of.iter().enumerate() {
        if let Some(h) = *h {
            for &v in &items[i].vms {
                state.put(v, h);
            }
        }
    }
    plan_from_state(&state, plan.lower_bound, search.steps)
}

/// Item indexes, largest first by the sum of their CPU and memory shares of `cap` (ties by
/// index): the order every packer here fills bins in.
fn largest_first(items: &[Item], cap: [u64; 2]) -> Vec<usize> {
    let weight = |s: [u64; 2]| s[CPU] as f64 / cap[CPU] as f64 + s[MEM] as f64 / cap[MEM] as f64;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        weight(items[b].size)
            .total_cmp(&weight(items[a].size))
            .then(a.cmp(&b))
    });
    order
}

/// First-Fit-Decreasing under the same rules: the baseline the benchmarks compare with.
pub fn first_fit_decreasing(c: &Cluster) -> PackPlan {
    let items = items_of(c);
    let lb = lower_bound(c, &items);
    let hosts: Vec<usize> = c.usable_hosts().collect();
    let cap = hosts.first().map_or([1, 1], |&h| c.hosts[h].capacity);
    let order = largest_first(&items, cap);
    let mut state = State::empty_with(c, CapacityModel::Footprint);
    let mut steps = 0u64;
    for i in order {
        let vms = &items[i].vms;
        for &h in &hosts {
            steps += 1;
            // The size test first: most hosts are too full, and it is two comparisons.
            if fits(items[i].size, state.free(h)) && try_put_group(&mut state, vms, h) {
                break;
            }
        }
    }
    plan_from_state(&state, lb, steps)
}

fn finish(
    c: &Cluster,
    items: &[Item],
    bins: &[Vec<usize>],
    bin_host: &[Option<usize>],
    lb: usize,
    steps: u64,
    hosts: &[usize],
) -> PackPlan {
    let mut state = State::empty_with(c, CapacityModel::Footprint);
    let mut leftover: Vec<usize> = Vec::new();
    let mut in_bin = vec![false; items.len()];
    for (b, bin) in bins.iter().enumerate() {
        for &i in bin {
            in_bin[i] = true;
            match bin_host.get(b).copied().flatten() {
                Some(h) => {
                    for &v in &items[i].vms {
                        state.put(v, h);
                    }
                }
                None => leftover.push(i),
            }
        }
    }
    leftover.extend((0..items.len()).filter(|&i| !in_bin[i]));
    // Whatever found no bin goes first-fit onto any host that takes it under the rules.
    for i in leftover {
        let vms = &items[i].vms;
        let used_first: Vec<usize> = hosts
            .iter()
            .copied()
            .filter(|&h| state.used[h] != [0, 0])
            .chain(hosts.iter().copied().filter(|&h| state.used[h] == [0, 0]))
            .collect();
        for h in used_first {
            if try_put_group(&mut state, vms, h) {
                break;
            }
        }
    }
    plan_from_state(&state, lb, steps)
}

fn plan_from_state(state: &State<'_>, lb: usize, steps: u64) -> PackPlan {
    let c = state.c;
    let mut assignment = Vec::new();
    let mut unplaced = Vec::new();
    let mut used = vec![false; c.hosts.len()];
    for (v, vm) in c.vms.iter().enumerate() {
        if !vm.powered_on {
            continue;
        }
        match state.host_of[v] {
            Some(h) => {
                used[h] = true;
                assignment.push((vm.id.clone(), c.hosts[h].id.clone()));
            }
            None => unplaced.push(vm.id.clone()),
        }
    }
    PackPlan {
        hosts_used: used.iter().filter(|&&u| u).count(),
        lower_bound: lb,
        assignment,
        unplaced,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::matching::match_bins;
    use super::*;
    use crate::model::*;

    fn triplet_cluster() -> Cluster {
        // Two hosts of 100/100 each filled exactly by three VMs; FFD needs three hosts.
        let sizes = [(40, 26), (30, 37), (30, 37), (40, 26), (30, 37), (30, 37)];
        let hosts = (0..4)
            .map(|i| HostSpec::new(format!("h{i}"), 100, 100))
            .collect();
        let vms = sizes
            .iter()
            .enumerate()
            .map(|(i, &(c, m))| VmSpec::new(format!("v{i}"), c, m))
            .collect();
        Cluster::new(ClusterSpec::new(hosts, vms)).unwrap()
    }

    #[test]
    fn exact_triplets_reach_the_bound() {
        let c = triplet_cluster();
        let p = pack(&c, &PackOptions::default());
        assert_eq!(p.lower_bound, 2);
        assert_eq!(p.hosts_used, 2);
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn ffd_places_everything_too() {
        let c = triplet_cluster();
        let p = first_fit_decreasing(&c);
        assert!(p.unplaced.is_empty());
        assert!(p.hosts_used >= 2);
    }

    #[test]
    fn heterogeneous_hosts_fill_the_big_one_first() {
        let spec = ClusterSpec::new(
            vec![
                HostSpec::new("small", 50, 50),
                HostSpec::new("big", 200, 200),
            ],
            vec![
                VmSpec::new("a", 100, 100),
                VmSpec::new("b", 100, 100),
                VmSpec::new("c", 40, 40),
            ],
        );
        let c = Cluster::new(spec).unwrap();
        let p = pack(&c, &PackOptions::default());
        assert!(p.unplaced.is_empty());
        assert_eq!(p.hosts_used, 2);
        assert!(p.assignment.iter().any(|(v, h)| v == "c" && h == "small"));
    }

    #[test]
    fn must_run_on_bins_are_matched_to_their_hosts() {
        let mut spec = ClusterSpec::new(
            (0..2)
                .map(|i| HostSpec::new(format!("h{i}"), 100, 100))
                .collect(),
            vec![
                VmSpec::new("a", 60, 60),
                VmSpec::new("b", 40, 40),
                VmSpec::new("c", 60, 60),
                VmSpec::new("d", 40, 40),
            ],
        );
        spec.rules.push(RuleSpec::VmHost {
            id: "pin".into(),
            vms: vec!["a".into()],
            hosts: vec!["h1".into()],
            mode: VmHostMode::MustRunOn,
        });
        spec.rules.push(RuleSpec::VmAntiAffinity {
            id: "ab".into(),
            vms: vec!["a".into(), "b".into()],
        });
        let c = Cluster::new(spec).unwrap();
        let p = pack(&c, &PackOptions::default());
        assert!(p.unplaced.is_empty(), "{p:?}");
        let host_of = |v: &str| p.assignment.iter().find(|(x, _)| x == v).unwrap().1.clone();
        assert_eq!(host_of("a"), "h1");
        assert_ne!(host_of("b"), "h1");
    }

    #[test]
    fn matching_reassigns_along_an_augmenting_path() {
        let c = Cluster::new(ClusterSpec::new(
            (0..3)
                .map(|i| HostSpec::new(format!("h{i}"), 100, 100))
                .collect(),
            Vec::new(),
        ))
        .unwrap();
        let item = |allowed: Option<Vec<bool>>| Item {
            vms: Vec::new(),
            size: [10, 10],
            anti: Vec::new(),
            allowed,
        };
        let items = vec![
            item(Some(vec![true, true, false])),
            item(Some(vec![true, false, false])),
            item(None),
        ];
        let bins = vec![vec![0], vec![1], vec![2]];
        let m = match_bins(&c, &items, &bins, &[0, 1, 2]);
        assert_eq!(m, vec![Some(1), Some(0), Some(2)]);
    }

    /// Sizes up to `MAX_VALUE` go through every phase without overflow.
    #[test]
    fn the_largest_sizes_pack_without_overflow() {
        let cap = crate::MAX_VALUE;
        let hosts = (0..4)
            .map(|i| HostSpec::new(format!("h{i}"), cap, cap))
            .collect();
        let vms = (0..6)
            .map(|i| VmSpec::new(format!("v{i}"), cap / 3 - i, cap / 3 - 2 * i))
            .collect();
        let c = Cluster::new(ClusterSpec::new(hosts, vms)).unwrap();
        let p = pack(&c, &PackOptions::default());
        assert!(p.unplaced.is_empty());
        assert_eq!(p.hosts_used, 2);
    }

    #[test]
    fn anti_affinity_is_kept_apart() {
        let mut spec = ClusterSpec::new(
            (0..3)
                .map(|i| HostSpec::new(format!("h{i}"), 100, 100))
                .collect(),
            vec![
                VmSpec::new("a", 10, 10),
                VmSpec::new("b", 10, 10),
                VmSpec::new("c", 10, 10),
            ],
        );
        spec.rules.push(RuleSpec::VmAntiAffinity {
            id: "r".into(),
            vms: vec!["a".into(), "b".into(), "c".into()],
        });
        let c = Cluster::new(spec).unwrap();
        let p = pack(&c, &PackOptions::default());
        assert_eq!(p.hosts_used, 3);
    }
}
