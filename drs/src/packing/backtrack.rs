//! Complete search: when the heuristics leave VMs unplaced, a depth-first search over
//! item → host looks for any placement that keeps every rule, within a step budget.

use super::{size_and_anti, Item};
use crate::state::State;
use crate::validate::{Cluster, CPU, MEM};

/// Largest instance (affinity groups of running VMs) the complete search takes on.
pub const BACKTRACK_MAX_ITEMS: usize = 1_000;
/// Steps the complete search may add to the heuristics' steps.
pub const BACKTRACK_STEPS: u64 = 5_000_000;

/// Complete depth-first search over item → host, most constrained item first.
pub(super) struct Backtrack<'a> {
    pub(super) c: &'a Cluster,
    pub(super) items: &'a [Item],
    pub(super) hosts: &'a [usize],
    pub(super) used: Vec<[u64; 2]>,
    pub(super) anti: Vec<Vec<usize>>,
    pub(super) host_of: Vec<Option<usize>>,
    pub(super) steps: u64,
    pub(super) budget: u64,
}

impl Backtrack<'_> {
    /// Search with the most constrained item first, then the largest.
    pub(super) fn run(&mut self) -> bool {
        let (items, hosts) = (self.items, self.hosts);
        let choices = |i: usize| {
            items[i]
                .allowed
                .as_ref()
                .map_or(hosts.len(), |a| a.iter().filter(|&&x| x).count())
        };
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| {
            choices(a)
                .cmp(&choices(b))
                .then(
                    (items[b].size[CPU] + items[b].size[MEM])
                        .cmp(&(items[a].size[CPU] + items[a].size[MEM])),
                )
                .then(a.cmp(&b))
        });
        self.solve(&order, 0)
    }

    fn solve(&mut self, order: &[usize], k: usize) -> bool {
        let Some(&i) = order.get(k) else { return true };
        let item = &self.items[i];
        // Used hosts first keeps the count low; of the empty hosts with the same capacity
        // that every item treats alike, trying one is enough.
        let mut tried_empty: Vec<[u64; 2]> = Vec::new();
        let uniform = self.items.iter().all(|it| it.allowed.is_none());
        let mut cands: Vec<usize> = self
            .hosts
            .iter()
            .copied()
            .filter(|&h| self.used[h] != [0, 0])
            .collect();
        cands.extend(
            self.hosts
                .iter()
                .copied()
                .filter(|&h| self.used[h] == [0, 0]),
        );
        for h in cands {
            self.steps += 1;
            if self.steps >= self.budget {
                return false;
            }
            let cap = self.c.hosts[h].capacity;
            if uniform && self.used[h] == [0, 0] {
                if tried_empty.contains(&cap) {
                    continue;
                }
                tried_empty.push(cap);
            }
            let u = self.used[h];
            if u[CPU] + item.size[CPU] > cap[CPU]
                || u[MEM] + item.size[MEM] > cap[MEM]
                || item.allowed.as_ref().is_some_and(|a| !a[h])
                || item.anti.iter().any(|r| self.anti[h].contains(r))
            {
                continue;
            }
            self.used[h] = [u[CPU] + item.size[CPU], u[MEM] + item.size[MEM]];
            self.anti[h].extend_from_slice(&item.anti);
            self.host_of[i] = Some(h);
            if self.solve(order, k + 1) {
                return true;
            }
            self.host_of[i] = None;
            self.used[h] = u;
            let keep = self.anti[h].len() - item.anti.len();
            self.anti[h].truncate(keep);
            if self.steps >= self.budget {
                return false;
            }
        }
        false
    }
}

/// Complete search for hosts for `groups` (VMs that must land together) given what
/// `state` already holds; host per group, or `None` when none exists within the budget.
pub(crate) fn place_groups_complete(
    state: &State<'_>,
    groups: &[Vec<usize>],
    budget: u64,
) -> Option<Vec<usize>> {
    let c = state.c;
    if groups.len() > BACKTRACK_MAX_ITEMS {
        return None;
    }
    let hosts: Vec<usize> = c.usable_hosts().collect();
    let mut anti = vec![Vec::new(); c.hosts.len()];
    for (v, h) in state.host_of.iter().enumerate() {
        if let Some(h) = *h {
            anti[h].extend_from_slice(&c.vms[v].anti);
        }
    }
    let items: Vec<Item> = groups
        .iter()
        .map(|g| {
            let (_, rules) = size_and_anti(c, g);
            // Sizes as the state counts them (the capacity model it checks).
            let size = state.need_of(g);
            // Partners that stay put pin the group to their host.
            let pinned: Option<usize> = g.first().and_then(|&v| {
                c.groups[c.vms[v].group]
                    .vms
                    .iter()
                    .filter(|p| !g.contains(p))
                    .find_map(|&p| state.host_of[p])
            });
            let allowed = (0..c.hosts.len())
                .map(|h| {
                    c.hosts[h].usable()
                        && g.iter().all(|&v| c.vms[v].allows(h))
                        && pinned.is_none_or(|p| p == h)
                })
                .collect();
            Item {
                vms: g.clone(),
                size,
                anti: rules,
                allowed: Some(allowed),
            }
        })
        .collect();
    let mut search = Backtrack {
        c,
        items: &items,
        hosts: &hosts,
        used: state.used.clone(),
        anti,
        host_of: vec![None; items.len()],
        steps: 0,
        budget,
    };
    if search.run() {
        search.host_of.into_iter().collect()
    } else {
        None
    }
}
