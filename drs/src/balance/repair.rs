//! Mandatory moves (priority 1): every hard rule the current placement breaks is either
//! repaired or reported in [`Unresolved`] with the reason no host could take the VMs.
//!
//! Hard rules are affinity (a group on one host), anti-affinity, VM-host must rules,
//! CPU compatibility, and hosts that take no VMs (maintenance, standby, off).

use super::{group_fits, rec, Pass, Unresolved};
use crate::state::Reject;

/// How many hosts' refusals an unresolved reason lists before it says "and N more".
const REASONS_LISTED: usize = 8;

impl Pass<'_> {
    /// Bring split affinity groups together. The host that already runs most of the
    /// group is tried first (only the minority moves: fewest migrations), then every other
    /// host that takes the whole group; among equal move counts the best balance wins.
    pub(super) fn repair_affinity(&mut self) {
        let c = self.c;
        for g in 0..c.groups.len() {
            if self.recs.len() >= self.cap {
                break;
            }
            let group = &c.groups[g];
            if group.vms.len() < 2 {
                continue;
            }
            let running: Vec<usize> = group
                .vms
                .iter()
                .copied()
                .filter(|&v| self.state.host_of[v].is_some())
                .collect();
            let mut on: Vec<usize> = running
                .iter()
                .filter_map(|&v| self.state.host_of[v])
                .collect();
            on.sort_unstable();
            on.dedup();
            if on.len() < 2 {
                continue;
            }
            // (moves needed, imbalance after, host, VMs to move)
            let mut best: Option<(usize, f64, usize, Vec<usize>)> = None;
            let mut refusals: Vec<(usize, Reject)> = Vec::new();
            for h in 0..c.hosts.len() {
                let moving: Vec<usize> = running
                    .iter()
                    .copied()
                    .filter(|&v| self.state.host_of[v] != Some(h))
                    .collect();
                if let Some(why) = moving
                    .iter()
                    .find_map(|&p| self.state.check(p, h, &moving).err())
                {
                    refusals.push((h, why));
                    continue;
                }
                if !group_fits(&self.state, &moving, h) {
                    refusals.push((h, self.group_capacity_reject(&moving, h)));
                    continue;
                }
                let after = self.after_moving(&moving, h);
                let key = (moving.len(), after);
                if best
                    .as_ref()
                    .is_none_or(|(n, a, _, _)| key.0 < *n || (key.0 == *n && key.1 < *a))
                {
                    best = Some((key.0, key.1, h, moving));
                }
            }
            let split = on
                .iter()
                .map(|&h| c.hosts[h].id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let what = format!(
                "affinity rule {} broken (members on {split})",
                group.rules.join(",")
            );
            match best {
                Some((_, _, h, moving)) => {
                    let reason = format!("mandatory: {what}, brought together");
                    self.move_all(&moving, h, &reason);
                }
                None => {
                    let why = self.refusal_text(&refusals);
                    // Each member off the host that runs most of the group is reported.
                    let majority = on
                        .iter()
                        .copied()
                        .max_by_key(|&h| {
                            (
                                running
                                    .iter()
                                    .filter(|&&v| self.state.host_of[v] == Some(h))
                                    .count(),
                                std::cmp::Reverse(h),
                            )
                        })
                        .unwrap_or(on[0]);
                    for &v in &running {
                        if self.state.host_of[v] != Some(majority) {
                            self.unresolved.push(Unresolved {
                                vm: c.vms[v].id.clone(),
                                reason: format!("{what}; no host takes the whole group: {why}"),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Move each VM that breaks a hard rule (maintenance or powered-off host, VM-host must
    /// rule, compatibility, anti-affinity), with the affinity partners beside it.
    pub(super) fn fix_violations(&mut self) {
        let c = self.c;
        for v in 0..c.vms.len() {
            if self.recs.len() >= self.cap {
                break;
            }
            let Some(reason) = self.state.violation(v) else {
                continue;
            };
            let from = self.state.host_of[v];
            // Affinity partners on the same host move with it.
            let group: Vec<usize> = c.groups[c.vms[v].group]
                .vms
                .iter()
                .copied()
                .filter(|&p| self.state.host_of[p] == from)
                .collect();
            let mut best: Option<(f64, usize)> = None;
            let mut refusals: Vec<(usize, Reject)> = Vec::new();
            for h in 0..c.hosts.len() {
                if let Some(why) = group
                    .iter()
                    .find_map(|&p| self.state.check(p, h, &group).err())
                {
                    refusals.push((h, why));
                    continue;
                }
                if !group_fits(&self.state, &group, h) {
                    refusals.push((h, self.group_capacity_reject(&group, h)));
                    continue;
                }
                let after = self.after_moving(&group, h);
                if best.is_none_or(|(a, _)| after < a) {
                    best = Some((after, h));
                }
            }
            match best {
                Some((_, h)) => self.move_all(&group, h, &format!("mandatory: {reason}")),
                None => {
                    let why = self.refusal_text(&refusals);
                    self.unresolved.push(Unresolved {
                        vm: c.vms[v].id.clone(),
                        reason: format!("{reason}; no host can take it: {why}"),
                    });
                }
            }
        }
    }

    /// Imbalance after every VM of `vms` moved to `h`, without moving them.
    fn after_moving(&self, vms: &[usize], h: usize) -> f64 {
        let mut loads = self.loads.clone();
        for &p in vms {
            loads.apply(self.ent.vms[p], self.state.host_of[p], Some(h));
        }
        loads.imbalance()
    }

    /// Priority-1 recommendations moving each of `vms` to `h`, applied to the pass.
    fn move_all(&mut self, vms: &[usize], h: usize, reason: &str) {
        for &p in vms {
            let now = self.loads.imbalance();
            let from = self.state.host_of[p];
            let after = self.loads.after(self.ent.vms[p], from, Some(h));
            let r = rec(
                self.c,
                p,
                from,
                h,
                1,
                now - after,
                reason.to_owned(),
                self.automatic(1),
            );
            self.recs.push(r);
            self.do_move(p, h);
        }
    }

    /// Which resource a group overflows on `h` (each member fits alone).
    fn group_capacity_reject(&self, vms: &[usize], h: usize) -> Reject {
        let need = self.state.need_of(vms);
        let free = self.state.free(h);
        if need[0] > free[0] {
            Reject::Cpu {
                need: need[0],
                free: free[0],
            }
        } else {
            Reject::Mem {
                need: need[1],
                free: free[1],
            }
        }
    }

    /// "host: why; host: why; … and N more".
    fn refusal_text(&self, refusals: &[(usize, Reject)]) -> String {
        if refusals.is_empty() {
            return "no usable host".into();
        }
        let mut parts: Vec<String> = refusals
            .iter()
            .take(REASONS_LISTED)
            .map(|(h, why)| format!("{}: {why}", self.c.hosts[*h].id))
            .collect();
        if refusals.len() > REASONS_LISTED {
            parts.push(format!("and {} more", refusals.len() - REASONS_LISTED));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::{balance, Cluster};

    fn pair(cap: i64) -> ClusterSpec {
        let mut s = ClusterSpec::new(
            vec![HostSpec::new("a", cap, cap), HostSpec::new("b", cap, cap)],
            vec![
                VmSpec::new("x", 1000, 1000).on("a"),
                VmSpec::new("y", 1000, 1000).on("b"),
            ],
        );
        s.rules.push(RuleSpec::VmAffinity {
            id: "tog".into(),
            vms: vec!["x".into(), "y".into()],
        });
        s
    }

    /// The smallest case: two hosts, one affinity rule, one member on each.
    #[test]
    fn a_split_affinity_pair_is_brought_together() {
        let c = Cluster::new(pair(10_000)).unwrap();
        let p = balance(&c);
        let mandatory: Vec<_> = p
            .recommendations
            .iter()
            .filter(|r| r.priority == 1)
            .collect();
        assert_eq!(mandatory.len(), 1, "{p:?}");
        assert!(mandatory[0].reason.contains("affinity rule tog"));
        assert!(p.unresolved.is_empty());
        // The pass's later moves never split them again.
        let mut at = std::collections::HashMap::from([("x", "a"), ("y", "b")]);
        for r in &p.recommendations {
            at.insert(if r.vm == "x" { "x" } else { "y" }, r.to.as_str());
        }
        assert_eq!(at["x"], at["y"]);
    }

    #[test]
    fn the_minority_joins_the_majority() {
        let mut s = pair(10_000);
        s.vms.push(VmSpec::new("z", 1000, 1000).on("b"));
        s.rules[0] = RuleSpec::VmAffinity {
            id: "tog".into(),
            vms: vec!["x".into(), "y".into(), "z".into()],
        };
        s.settings.migration_threshold = 1;
        let p = balance(&Cluster::new(s).unwrap());
        assert_eq!(p.recommendations.len(), 1);
        assert_eq!(
            (
                p.recommendations[0].vm.as_str(),
                p.recommendations[0].to.as_str()
            ),
            ("x", "b")
        );
    }

    #[test]
    fn a_split_that_cannot_be_repaired_is_reported_with_the_reason() {
        // Each host is too small for both members' reservations.
        let mut s = pair(1500);
        for vm in &mut s.vms {
            vm.cpu.reservation = 1000;
        }
        let c = Cluster::new(s).unwrap();
        let p = balance(&c);
        assert!(p.recommendations.iter().all(|r| r.priority != 1));
        assert_eq!(p.unresolved.len(), 1, "{p:?}");
        let why = &p.unresolved[0].reason;
        assert!(why.contains("affinity rule tog broken"), "{why}");
        assert!(why.contains("a: ") && why.contains("b: "), "{why}");
    }

    #[test]
    fn anti_affinity_must_rules_and_compatibility_are_repaired_or_reported() {
        let mut s = ClusterSpec::new(
            crate::model::three_hosts(),
            vec![
                VmSpec::new("d1", 1000, 1000).on("a"),
                VmSpec::new("d2", 1000, 1000).on("a"),
                VmSpec::new("db", 1000, 1000).on("a"),
                VmSpec::new("old", 1000, 1000).on("a"),
                VmSpec::new("big", 9500, 1000).on("c"),
            ],
        );
        s.hosts[2].compat_group = Some("amd".into());
        s.vms[4].cpu.reservation = 9500;
        s.vms[3].cpu.reservation = 1000;
        s.vms[3].compat_group = Some("amd".into());
        s.rules.push(RuleSpec::VmAntiAffinity {
            id: "apart".into(),
            vms: vec!["d1".into(), "d2".into()],
        });
        s.rules.push(RuleSpec::VmHost {
            id: "db-on-b".into(),
            vms: vec!["db".into()],
            hosts: vec!["b".into()],
            mode: VmHostMode::MustRunOn,
        });
        s.settings.migration_threshold = 1;
        let p = balance(&Cluster::new(s).unwrap());
        let moved = |vm: &str| p.recommendations.iter().find(|r| r.vm == vm);
        assert!(moved("d1").is_some() || moved("d2").is_some());
        assert_eq!(moved("db").map(|r| r.to.as_str()), Some("b"));
        // "old" must run on the amd host, which has no room: reported, with why.
        assert!(moved("old").is_none());
        let old = p.unresolved.iter().find(|u| u.vm == "old").unwrap();
        assert!(old.reason.contains("c: cpu"), "{}", old.reason);
    }
}
