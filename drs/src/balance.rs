//! Load balancing, in the order the moves matter: mandatory moves that repair or report
//! every broken hard rule (`repair`), relief of hosts over capacity and of contention
//! (`relieve`), then greedy one-move-at-a-time balancing down to the threshold's
//! published target, with O(1) evaluation of each candidate move (`greedy`).

use serde::Serialize;

use crate::entitlement::{entitlements, Entitlements};
use crate::load::{target_for_threshold, Loads};
use crate::model::AutomationLevel;
use crate::state::State;
use crate::validate::{Cluster, MEM};

mod greedy;
mod relieve;
mod repair;

pub use relieve::Contention;

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
    /// Imbalance the threshold balances down to (see [`crate::target_for_threshold`]).
    pub target: f64,
    /// The recommendations, in order.
    pub recommendations: Vec<Recommendation>,
    /// Violations no move could fix.
    pub unresolved: Vec<Unresolved>,
    /// Hosts whose running VMs' demand exceeded their capacity before the pass.
    pub contention_before: Vec<Contention>,
    /// Hosts still in contention after all recommendations.
    pub contention_after: Vec<Contention>,
    /// Why it stopped.
    pub stop: StopReason,
}

/// One pass over the cluster's current placement with its settings: broken hard rules
/// repaired (priority 1) or listed in [`BalancePlan::unresolved`] with the reason, hosts
/// over capacity relieved, then (threshold 2 and up) contention relieved (priority 2)
/// and the imbalance brought down to the threshold's target.
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
    balance_keeping(c, &[])
}

/// How much a balancing move that the last pass recommended may gain less than the best
/// other move and still be chosen: 5 %.
pub const KEEP_TOLERANCE: f64 = 0.05;

/// [`balance`] with hysteresis: `previous` are the last pass's recommendations (VM,
/// destination). A balancing move among them is kept while it gains within
/// [`KEEP_TOLERANCE`] of the best other move, so that a recommendation shown to a person
/// does not flip between two about equally loaded destinations from one pass to the
/// next as the measured load moves a little. Names that are no longer in the cluster are
/// ignored; mandatory moves (rules, overcommitted hosts, contention) are unchanged.
///
/// ```
/// use vinfra_drs::{balance, balance_keeping, Cluster, ClusterSpec, HostSpec, VmSpec};
///
/// // b is a hair less loaded than c: a fresh pass sends x to b.
/// let mut spec = ClusterSpec::new(
///     vec![HostSpec::new("a", 10_000, 10_000), HostSpec::new("b", 10_000, 10_000),
///          HostSpec::new("c", 10_000, 10_000)],
///     vec![VmSpec::new("x", 3000, 3000).on("a"), VmSpec::new("y", 3000, 3000).on("a"),
///          VmSpec::new("z", 10, 10).on("c")],
/// );
/// spec.settings.migration_threshold = 5;
/// let c = Cluster::new(spec)?;
/// assert_eq!(balance(&c).recommendations[0].to, "b");
/// // The last pass said c, which is as good within the tolerance: it stays c.
/// let kept = balance_keeping(&c, &[("x", "c")]);
/// assert_eq!((kept.recommendations[0].vm.as_str(), kept.recommendations[0].to.as_str()), ("x", "c"));
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn balance_keeping(c: &Cluster, previous: &[(&str, &str)]) -> BalancePlan {
    let kept = previous
        .iter()
        .filter_map(|(vm, to)| Some((c.vm_index(vm).ok()?, c.host_index(to).ok()?)))
        .collect();
    let ent = entitlements(c);
    let state = State::current(c);
    let loads = Loads::new(c, &state.host_of, |v| ent.vms[v]);
    let mut on_host: Vec<Vec<usize>> = vec![Vec::new(); c.hosts.len()];
    for (v, h) in state.host_of.iter().enumerate() {
        if let Some(h) = *h {
            on_host[h].push(v);
        }
    }
    let threshold = c.settings.migration_threshold;
    let target = target_for_threshold(threshold, c.usable_hosts().count());
    let before = loads.imbalance();
    let mut pass = Pass {
        c,
        ent,
        state,
        loads,
        on_host,
        recs: Vec::new(),
        unresolved: Vec::new(),
        cap: c.settings.max_moves_per_pass as usize,
        kept,
    };
    // Mandatory moves: split affinity groups, other hard-rule violations, then
    // overcommitted hosts.
    pass.repair_affinity();
    pass.fix_violations();
    let contention_before = pass.contention();
    pass.relieve_overcommitted_hosts();
    let stop = if threshold <= 1 {
        StopReason::MandatoryOnly
    } else {
        // Contention hurts the VMs now; an uneven spread only risks it.
        pass.relieve_contention();
        pass.balance_to(target)
    };
    let contention_after = pass.contention();
    let plan = BalancePlan {
        imbalance_before: before,
        imbalance_after: pass.loads.imbalance(),
        target,
        recommendations: pass.recs,
        unresolved: pass.unresolved,
        contention_before,
        contention_after,
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

/// One balancing pass in progress: the placement as the recommendations so far leave it.
struct Pass<'c> {
    c: &'c Cluster,
    ent: Entitlements,
    state: State<'c>,
    loads: Loads,
    /// Running VMs per host.
    on_host: Vec<Vec<usize>>,
    recs: Vec<Recommendation>,
    unresolved: Vec<Unresolved>,
    /// `max_moves_per_pass`.
    cap: usize,
    /// The last pass's recommendations (VM, destination): see [`balance_keeping`].
    kept: std::collections::HashSet<(usize, usize)>,
}

impl Pass<'_> {
    /// Whether a recommendation of priority `p` is applied without asking.
    fn automatic(&self, p: u8) -> bool {
        self.c.settings.automation == AutomationLevel::FullyAutomated
            && p <= self.c.settings.migration_threshold
    }

    fn do_move(&mut self, v: usize, to: usize) {
        let from = self.state.host_of[v];
        self.loads.apply(self.ent.vms[v], from, Some(to));
        if let Some(f) = from {
            self.on_host[f].retain(|&x| x != v);
        }
        self.on_host[to].push(v);
        self.state.put(v, to);
    }
}

/// Whether `h` has room for all of `group` at once (each member may fit alone).
pub(crate) fn group_fits(state: &State<'_>, group: &[usize], h: usize) -> bool {
    let need = state.need_of(group);
    let free = state.free(h);
    need[0] <= free[0] && need[1] <= free[1]
}

#[allow(clippy::too_many_arguments)] // a plain record constructor
pub(crate) fn rec(
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
