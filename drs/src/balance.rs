//! Load balancing: mandatory moves first, then greedy one-move-at-a-time balancing with
//! O(1) evaluation of each candidate move.

use serde::Serialize;

use crate::entitlement::entitlements;
use crate::load::{priority_for_imbalance, target_for_threshold, Loads};
use crate::model::AutomationLevel;
use crate::state::State;
use crate::validate::{Cluster, MEM};

/// How many of the most and least loaded hosts a balancing step considers.
const CANDIDATE_HOSTS: usize = 6;

/// A migration recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Recommendation {
    /// VM id.
    pub vm: String,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// 1 (mandatory) … 5 (slight improvement).
    pub priority: u8,
    /// Imbalance reduction (may be negative for a mandatory move).
    pub gain: f64,
    /// Memory to copy, MB (the cost side of cost–benefit).
    pub cost_mem_mb: u64,
    /// Why.
    pub reason: String,
    /// Applied automatically (fully automated, priority ≤ threshold) or only recommended.
    pub automatic: bool,
}

/// Why a pass stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// Imbalance at or below the threshold's target.
    TargetReached,
    /// No move lowers the imbalance enough to pay for itself.
    NoImprovingMove,
    /// `max_moves_per_pass` recommendations made.
    MoveCap,
    /// Threshold 1: only mandatory moves.
    MandatoryOnly,
}

/// A VM whose rule violation could not be fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Unresolved {
    /// VM id.
    pub vm: String,
    /// The violation.
    pub reason: String,
}

/// Result of one balancing pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BalancePlan {
    /// Imbalance before.
    pub imbalance_before: f64,
    /// Imbalance after all recommendations.
    pub imbalance_after: f64,
    /// Target for the threshold.
    pub target: f64,
    /// The recommendations, in order.
    pub recommendations: Vec<Recommendation>,
    /// Violations no move could fix.
    pub unresolved: Vec<Unresolved>,
    /// Why it stopped.
    pub stop: StopReason,
}

/// One pass over the cluster's current placement with its settings.
///
/// ```
/// use vinfra_drs::{balance, Cluster, ClusterSpec, HostSpec, VmSpec};
///
/// let mut spec = ClusterSpec::new(
///     vec![HostSpec::new("a", 10_000, 10_000), HostSpec::new("b", 10_000, 10_000)],
///     vec![VmSpec::new("x", 3000, 3000).on("a"), VmSpec::new("y", 3000, 3000).on("a")],
/// );
/// spec.settings.migration_threshold = 5;
/// let plan = balance(&Cluster::new(spec)?);
/// let first = &plan.recommendations[0];
/// assert_eq!((first.from.as_str(), first.to.as_str()), ("a", "b"));
/// assert!(plan.imbalance_after < plan.imbalance_before);
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn balance(c: &Cluster) -> BalancePlan {
    let ent = entitlements(c);
    let mut state = State::current(c);
    let mut loads = Loads::new(c, &state.host_of, |v| ent.vms[v]);
    let mut on_host: Vec<Vec<usize>> = vec![Vec::new(); c.hosts.len()];
    for (v, h) in state.host_of.iter().enumerate() {
        if let Some(h) = *h {
            on_host[h].push(v);
        }
    }
    let threshold = c.settings.migration_threshold;
    let automatic =
        |p: u8| c.settings.automation == AutomationLevel::FullyAutomated && p <= threshold;
    let target = target_for_threshold(threshold);
    let before = loads.imbalance();
    let mut recs: Vec<Recommendation> = Vec::new();
    let mut unresolved = Vec::new();
    let cap = c.settings.max_moves_per_pass as usize;

    let do_move = |state: &mut State<'_>,
                   loads: &mut Loads,
                   on_host: &mut Vec<Vec<usize>>,
                   v: usize,
                   to: usize| {
        let from = state.host_of[v];
        loads.apply(ent.vms[v], from, Some(to));
        if let Some(f) = from {
            on_host[f].retain(|&x| x != v);
        }
        on_host[to].push(v);
        state.put(v, to);
    };

    // Mandatory moves: hard-rule violations, then overcommitted hosts.
    for v in 0..c.vms.len() {
        if recs.len() >= cap {
            break;
        }
        let Some(reason) = state.violation(v) else {
            continue;
        };
        let from = state.host_of[v];
        // Affinity partners on the same host move with it.
        let group: Vec<usize> = c.groups[c.vms[v].group]
            .vms
            .iter()
            .copied()
            .filter(|&p| state.host_of[p] == from)
            .collect();
        let mut best: Option<(f64, usize)> = None;
        for h in 0..c.hosts.len() {
            let ok = group.iter().all(|&p| state.check(p, h, &group).is_ok());
            if ok && group_fits(&state, &group, h) {
                let after = loads.after(ent.vms[v], from, Some(h));
                if best.is_none_or(|(a, _)| after < a) {
                    best = Some((after, h));
                }
            }
        }
        match best {
            Some((_, h)) => {
                for &p in &group {
                    let gain_now = loads.imbalance();
                    let after = loads.after(ent.vms[p], state.host_of[p], Some(h));
                    recs.push(rec(
                        c,
                        p,
                        state.host_of[p],
                        h,
                        1,
                        gain_now - after,
                        format!("mandatory: {reason}"),
                        automatic(1),
                    ));
                    do_move(&mut state, &mut loads, &mut on_host, p, h);
                }
            }
            None => unresolved.push(Unresolved {
                vm: c.vms[v].id.clone(),
                reason,
            }),
        }
    }
    for h in 0..c.hosts.len() {
        let mut guard = on_host[h].len();
        while state.overcommitted(h) && guard > 0 && recs.len() < cap {
            guard -= 1;
            let now = loads.imbalance();
            let mut best: Option<(f64, usize, usize)> = None;
            for &v in &on_host[h] {
                if c.groups[c.vms[v].group].vms.len() > 1 {
                    continue;
                }
                for d in 0..c.hosts.len() {
                    if state.check(v, d, &[]).is_ok() {
                        let after = loads.after(ent.vms[v], Some(h), Some(d));
                        if best.is_none_or(|(a, _, _)| after < a) {
                            best = Some((after, v, d));
                        }
                    }
                }
            }
            let Some((after, v, d)) = best else {
                unresolved.push(Unresolved {
                    vm: c.hosts[h].id.clone(),
                    reason: "host overcommitted, no vm can move off".into(),
                });
                break;
            };
            recs.push(rec(
                c,
                v,
                Some(h),
                d,
                1,
                now - after,
                format!("mandatory: host {:?} overcommitted", c.hosts[h].id),
                automatic(1),
            ));
            do_move(&mut state, &mut loads, &mut on_host, v, d);
        }
    }

    let stop = if threshold <= 1 {
        StopReason::MandatoryOnly
    } else {
        let mut stop = StopReason::MoveCap;
        let mut hosts: Vec<usize> = (0..c.hosts.len()).filter(|&h| loads.usable(h)).collect();
        // Every iteration either adds a recommendation or stops: bounded by `cap`.
        while recs.len() < cap {
            let now = loads.imbalance();
            if now <= target {
                stop = StopReason::TargetReached;
                break;
            }
            hosts.sort_by(|&a, &b| loads.rank(b).total_cmp(&loads.rank(a)).then(a.cmp(&b)));
            let k = CANDIDATE_HOSTS.min(hosts.len());
            let sources = &hosts[..k];
            let dests = &hosts[hosts.len() - k..];
            let mut best: Option<(f64, usize, usize)> = None;
            for &s in sources {
                for &v in &on_host[s] {
                    if c.groups[c.vms[v].group].vms.len() > 1 {
                        continue;
                    }
                    let w = ent.vms[v];
                    let min_gain =
                        c.settings.min_gain_per_gib * c.vms[v].demand[MEM] as f64 / 1024.0;
                    for &d in dests {
                        if d == s {
                            continue;
                        }
                        let gain = now - loads.after(w, Some(s), Some(d));
                        if gain <= 1e-12
                            || gain < min_gain
                            || best.is_some_and(|(g, _, _)| gain <= g)
                        {
                            continue;
                        }
                        if state.check(v, d, &[]).is_ok() {
                            best = Some((gain, v, d));
                        }
                    }
                }
            }
            let Some((gain, v, d)) = best else {
                stop = StopReason::NoImprovingMove;
                break;
            };
            let p = priority_for_imbalance(now);
            let from = state.host_of[v];
            let reason = format!(
                "balance: imbalance {now:.4} above target {target:.2}, {:?} is among the most loaded hosts",
                from.map_or("-", |f| c.hosts[f].id.as_str())
            );
            recs.push(rec(c, v, from, d, p, gain, reason, automatic(p)));
            do_move(&mut state, &mut loads, &mut on_host, v, d);
            loads.resum();
        }
        stop
    };
    let plan = BalancePlan {
        imbalance_before: before,
        imbalance_after: loads.imbalance(),
        target,
        recommendations: recs,
        unresolved,
        stop,
    };
    tracing::debug!(
        before = plan.imbalance_before,
        after = plan.imbalance_after,
        moves = plan.recommendations.len(),
        stop = ?plan.stop,
        "balance pass"
    );
    plan
}

fn group_fits(state: &State<'_>, group: &[usize], h: usize) -> bool {
    let c = state.c;
    let free = state.free(h);
    let mut need = [0u64; 2];
    for &p in group {
        let f = c.vms[p].footprint();
        need[0] += f[0];
        need[1] += f[1];
    }
    need[0] <= free[0] && need[1] <= free[1]
}

#[allow(clippy::too_many_arguments)] // a plain record constructor
fn rec(
    c: &Cluster,
    v: usize,
    from: Option<usize>,
    to: usize,
    priority: u8,
    gain: f64,
    reason: String,
    automatic: bool,
) -> Recommendation {
    Recommendation {
        vm: c.vms[v].id.clone(),
        from: from.map_or_else(|| "-".to_owned(), |f| c.hosts[f].id.clone()),
        to: c.hosts[to].id.clone(),
        priority,
        gain,
        cost_mem_mb: c.vms[v].demand[MEM],
        reason,
        automatic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn skewed() -> ClusterSpec {
        let mut vms = Vec::new();
        for i in 0..8 {
            vms.push(VmSpec::new(format!("v{i}"), 1000, 1000).on("a"));
        }
        ClusterSpec::new(
            vec![
                HostSpec::new("a", 10_000, 10_000),
                HostSpec::new("b", 10_000, 10_000),
            ],
            vms,
        )
    }

    #[test]
    fn balances_a_skewed_pair_to_the_optimum() {
        let mut s = skewed();
        s.settings.migration_threshold = 5;
        let c = Cluster::new(s).unwrap();
        let p = balance(&c);
        assert_eq!(p.recommendations.len(), 4);
        assert!(p.imbalance_after < 1e-9);
        assert_eq!(p.stop, StopReason::TargetReached);
        assert!(p
            .recommendations
            .iter()
            .all(|r| r.from == "a" && r.to == "b" && r.automatic));
    }

    #[test]
    fn threshold_one_and_manual_only_recommend_mandatory() {
        let mut s = skewed();
        s.settings.migration_threshold = 1;
        s.settings.automation = AutomationLevel::Manual;
        s.vms.push(VmSpec::new("dc1", 100, 100).on("b"));
        s.vms.push(VmSpec::new("dc2", 100, 100).on("b"));
        s.rules.push(RuleSpec::VmAntiAffinity {
            id: "dcs".into(),
            vms: vec!["dc1".into(), "dc2".into()],
        });
        let c = Cluster::new(s).unwrap();
        let p = balance(&c);
        assert_eq!(p.stop, StopReason::MandatoryOnly);
        assert_eq!(p.recommendations.len(), 1);
        assert_eq!(p.recommendations[0].priority, 1);
        assert!(!p.recommendations[0].automatic);
    }

    #[test]
    fn automation_levels_decide_what_is_applied() {
        for (level, applied) in [
            (AutomationLevel::Manual, false),
            (AutomationLevel::PartiallyAutomated, false),
            (AutomationLevel::FullyAutomated, true),
        ] {
            let mut s = skewed();
            s.settings.automation = level;
            s.settings.migration_threshold = 5;
            s.vms.push(VmSpec::new("new", 100, 100));
            s.vms.last_mut().unwrap().powered_on = false;
            let c = Cluster::new(s).unwrap();
            let p = balance(&c);
            assert!(!p.recommendations.is_empty());
            assert!(
                p.recommendations.iter().all(|r| r.automatic == applied),
                "{level:?}"
            );
            // Placement is automatic from partially automated up.
            let placed = crate::place(&c, &["new"]).unwrap();
            assert_eq!(
                placed.placements[0].automatic,
                level != AutomationLevel::Manual
            );
        }
    }

    #[test]
    fn the_move_cap_stops_a_pass() {
        let mut s = skewed();
        s.settings.migration_threshold = 5;
        s.settings.max_moves_per_pass = 2;
        let c = Cluster::new(s).unwrap();
        let p = balance(&c);
        assert_eq!(p.recommendations.len(), 2);
        assert_eq!(p.stop, StopReason::MoveCap);
    }

    #[test]
    fn cost_benefit_blocks_expensive_small_gains() {
        let mut s = skewed();
        s.settings.migration_threshold = 5;
        s.settings.min_gain_per_gib = 10.0;
        let c = Cluster::new(s).unwrap();
        let p = balance(&c);
        assert!(p.recommendations.is_empty());
        assert_eq!(p.stop, StopReason::NoImprovingMove);
    }

    #[test]
    fn maintenance_host_is_emptied_first() {
        let mut s = skewed();
        s.hosts[0].maintenance = true;
        s.vms.truncate(3);
        let c = Cluster::new(s).unwrap();
        let p = balance(&c);
        assert_eq!(
            p.recommendations.iter().filter(|r| r.priority == 1).count(),
            3
        );
    }
}
