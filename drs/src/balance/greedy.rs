//! Greedy balancing, one move at a time, that never stalls while an improving move exists.
//!
//! Each step first looks where a good move usually is: per CPU-compatibility class (the
//! hosts sharing a `compat_group`, VMotion stays inside one), the most loaded hosts of the
//! class as sources and the least loaded of the class and of the whole cluster as
//! destinations. Only when that finds nothing is every (running VM, usable host) pair
//! evaluated, so "no improving move" is exact: the pass stops with it only when no single
//! compatible, rule-abiding move lowers the imbalance. Every evaluation is O(1) from the
//! per-host sums in [`crate::load::Loads`].

use std::collections::BTreeMap;

use super::{rec, Pass, StopReason};
use crate::load::priority_for_imbalance;
use crate::validate::MEM;

/// How many of the most and least loaded hosts of a class the quick look considers.
const CANDIDATE_HOSTS: usize = 6;

/// The best move found so far: (score, gain, VM, destination). The score is the gain,
/// raised by [`KEEP_TOLERANCE`](super::KEEP_TOLERANCE) for a move the last pass
/// recommended (hysteresis).
type Best = Option<(f64, f64, usize, usize)>;

impl Pass<'_> {
    /// Greedy balancing until the imbalance reaches `target`, no move pays for itself, or
    /// the cap.
    pub(super) fn balance_to(&mut self, target: f64) -> StopReason {
        let c = self.c;
        let mut stop = StopReason::MoveCap;
        let usable: Vec<usize> = (0..c.hosts.len())
            .filter(|&h| self.loads.usable(h))
            .collect();
        // Hosts per compatibility class; a BTreeMap keeps the order deterministic.
        let mut classes: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
        for &h in &usable {
            classes.entry(c.hosts[h].compat).or_default().push(h);
        }
        let mut all = usable.clone();
        // Every iteration either adds a recommendation or stops: bounded by `cap`.
        while self.recs.len() < self.cap {
            let now = self.loads.imbalance();
            if now <= target {
                stop = StopReason::TargetReached;
                break;
            }
            let found = self
                .quick_look(now, &mut classes, &mut all)
                .or_else(|| self.full_scan(now, &usable));
            let Some((_, gain, v, d)) = found else {
                stop = StopReason::NoImprovingMove;
                break;
            };
            let p = priority_for_imbalance(now, usable.len());
            let from = self.state.host_of[v];
            let reason = format!(
                "balance: imbalance {now:.4} above target {target:.4}, {:?} is more loaded than {:?}",
                from.map_or("-", |f| c.hosts[f].id.as_str()),
                c.hosts[d].id
            );
            self.recs
                .push(rec(c, v, from, d, p, gain, reason, self.automatic(p)));
            self.do_move(v, d);
            self.loads.resum();
        }
        stop
    }

    /// The best move from the most loaded hosts of each class to the least loaded hosts
    /// of the same class and of the cluster.
    fn quick_look(
        &self,
        now: f64,
        classes: &mut BTreeMap<Option<u32>, Vec<usize>>,
        all: &mut [usize],
    ) -> Best {
        let loads = &self.loads;
        let by_rank =
            |a: &usize, b: &usize| loads.rank(*b).total_cmp(&loads.rank(*a)).then(a.cmp(b));
        all.sort_by(by_rank);
        let k = CANDIDATE_HOSTS.min(all.len());
        let coolest = &all[all.len() - k..];
        let mut best: Best = None;
        for hosts in classes.values_mut() {
            hosts.sort_by(by_rank);
            let k = CANDIDATE_HOSTS.min(hosts.len());
            let (sources, dests) = (&hosts[..k], &hosts[hosts.len() - k..]);
            // The cluster's coolest hosts that the class's own list does not hold already.
            let extra: Vec<usize> = coolest
                .iter()
                .copied()
                .filter(|d| !dests.contains(d))
                .collect();
            for &s in sources {
                for &v in &self.on_host[s] {
                    for &d in dests.iter().chain(&extra) {
                        self.consider(now, v, s, d, &mut best);
                    }
                }
            }
        }
        best
    }

    /// The best move over every running VM and every usable host.
    fn full_scan(&self, now: f64, usable: &[usize]) -> Best {
        let mut best: Best = None;
        for &s in usable {
            for &v in &self.on_host[s] {
                for &d in usable {
                    self.consider(now, v, s, d, &mut best);
                }
            }
        }
        best
    }

    /// Keep moving `v` from `s` to `d` in `best` if it gains more and is allowed.
    fn consider(&self, now: f64, v: usize, s: usize, d: usize, best: &mut Best) {
        let c = self.c;
        // Affinity groups are repaired as a whole by the mandatory pass, never split here.
        // Compatibility and hard VM-host rules first: one lookup in the VM's host mask.
        if d == s || c.groups[c.vms[v].group].vms.len() > 1 || !c.vms[v].allows(d) {
            return;
        }
        let gain = now - self.loads.after(self.ent.vms[v], Some(s), Some(d));
        // Most passes keep nothing: no hashing then.
        let score = if !self.kept.is_empty() && self.kept.contains(&(v, d)) {
            gain * (1.0 + super::KEEP_TOLERANCE)
        } else {
            gain
        };
        if gain <= 1e-12 || best.is_some_and(|(b, ..)| score <= b) {
            return;
        }
        let min_gain = c.settings.min_gain_per_gib * c.vms[v].demand[MEM] as f64 / 1024.0;
        // Balancing never creates contention: demand must stay within the destination.
        if gain >= min_gain
            && self.state.demand_fits(&[v], d)
            && self.state.check(v, d, &[]).is_ok()
        {
            *best = Some((score, gain, v, d));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::{balance, balance_keeping, BalancePlan, Cluster, StopReason};

    /// Sixteen hosts in two compatibility groups: the eight "intel" hosts are all busier
    /// than the eight "amd" ones, and one intel host is busier than the other intel hosts.
    /// The most and least loaded hosts of the cluster are never compatible.
    #[test]
    fn balancing_does_not_stall_across_compatibility_groups() {
        let mut hosts = Vec::new();
        let mut vms = Vec::new();
        for i in 0..16 {
            let mut h = HostSpec::new(format!("h{i}"), 10_000, 10_000);
            h.compat_group = Some(if i < 8 { "intel" } else { "amd" }.into());
            hosts.push(h);
            let n = match i {
                0 => 9,
                1..8 => 6,
                _ => 1,
            };
            for k in 0..n {
                vms.push(VmSpec::new(format!("v{i}-{k}"), 1000, 1000).on(format!("h{i}")));
            }
        }
        let mut spec = ClusterSpec::new(hosts, vms);
        spec.settings.migration_threshold = 5;
        let p = balance(&Cluster::new(spec).unwrap());
        assert!(!p.recommendations.is_empty(), "{p:?}");
        assert!(p.recommendations.iter().all(|r| r.from == "h0"));
        assert!(p.imbalance_after < p.imbalance_before);
        assert_eq!(p.stop, StopReason::NoImprovingMove);
    }

    /// Hysteresis: the last pass's destination is kept while it is about as good as the
    /// best (the load measured between two passes moves a little), and given up once it
    /// is clearly worse; the pass ends as balanced either way.
    #[test]
    fn the_last_recommendation_is_kept_only_while_it_is_about_as_good() {
        let spec = |c_load: i64| {
            let mut s = ClusterSpec::new(
                ["a", "b", "c"]
                    .map(|h| HostSpec::new(h, 10_000, 10_000))
                    .to_vec(),
                vec![
                    VmSpec::new("x", 3000, 3000).on("a"),
                    VmSpec::new("y", 3000, 3000).on("a"),
                    VmSpec::new("z", c_load, c_load).on("c"),
                ],
            );
            s.settings.migration_threshold = 5;
            Cluster::new(s).unwrap()
        };
        let first = |p: &BalancePlan| {
            (
                p.recommendations[0].vm.clone(),
                p.recommendations[0].to.clone(),
            )
        };
        // c carries a little more than b (nothing): b is best, c within the tolerance.
        let near = spec(20);
        assert_eq!(first(&balance(&near)), ("x".into(), "b".into()));
        let kept = balance_keeping(&near, &[("x", "c")]);
        assert_eq!(first(&kept), ("x".into(), "c".into()));
        assert!(kept.imbalance_after < kept.imbalance_before);
        // c carries a lot more: the old destination is given up.
        let far = spec(1500);
        assert_eq!(
            first(&balance_keeping(&far, &[("x", "c")])),
            ("x".into(), "b".into())
        );
        // Names no longer in the cluster are ignored.
        assert_eq!(
            first(&balance_keeping(&near, &[("gone", "c"), ("x", "gone")])),
            ("x".into(), "b".into())
        );
    }
}
