//! Bin packing: place every running VM on as few hosts as possible, under the rules.
//!
//! Exact bin completion first (a bin whose items fill it to capacity in both
//! dimensions cannot be improved), then minimum-bin-slack search for what is left,
//! then a local search that tries to empty the least-filled bins. Affinity groups are
//! single items; anti-affinity partners never share a bin; bins are matched to hosts
//! their items allow. Everything is bounded by [`PackOptions::step_budget`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

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
        let mut size = [0u64; 2];
        let mut anti = Vec::new();
        for &v in &vms {
            let f = c.vms[v].footprint();
            size[CPU] += f[CPU];
            size[MEM] += f[MEM];
            anti.extend_from_slice(&c.vms[v].anti);
        }
        anti.sort_unstable();
        anti.dedup();
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

struct Packer<'a> {
    items: Vec<Item>,
    hosts: usize,
    steps: u64,
    budget: u64,
    alive: Vec<bool>,
    /// Alive items, largest first (compacted after each bin).
    order: Vec<usize>,
    /// Alive items by CPU size, to scan only partners whose CPU can still be completed.
    by_cpu: Vec<usize>,
    /// Smallest and largest item CPU sizes.
    cpu_range: (u64, u64),
    /// Smallest and largest item memory sizes.
    mem_range: (u64, u64),
    buckets: FxMap<(u64, u64), Vec<usize>>,
    /// Each item's allowed-host mask, interned (`None` = every host).
    mask_of: Vec<Option<usize>>,
    masks: Vec<Vec<bool>>,
    /// Sorted mask ids → whether some host is in all of them.
    meets: RefCell<FxMap<Vec<usize>, bool>>,
    _c: &'a Cluster,
}

impl<'a> Packer<'a> {
    fn new(c: &'a Cluster, items: Vec<Item>, cap: [u64; 2], budget: u64) -> Self {
        let weight =
            |s: [u64; 2]| s[CPU] as f64 / cap[CPU] as f64 + s[MEM] as f64 / cap[MEM] as f64;
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| {
            weight(items[b].size)
                .total_cmp(&weight(items[a].size))
                .then(a.cmp(&b))
        });
        let mut buckets: FxMap<(u64, u64), Vec<usize>> = FxMap::default();
        for &i in &order {
            buckets.entry(key(items[i].size)).or_default().push(i);
        }
        let alive = vec![true; items.len()];
        // Rules give few distinct host sets: intern them and cache their intersections.
        let mut masks: Vec<Vec<bool>> = Vec::new();
        let mut mask_ids: FxMap<Vec<bool>, usize> = FxMap::default();
        let mask_of = items
            .iter()
            .map(|it| {
                it.allowed.as_ref().map(|a| {
                    *mask_ids.entry(a.clone()).or_insert_with(|| {
                        masks.push(a.clone());
                        masks.len() - 1
                    })
                })
            })
            .collect();
        let mut by_cpu: Vec<usize> = (0..items.len()).collect();
        by_cpu.sort_by_key(|&i| (items[i].size[CPU], i));
        let cpu_range = (
            by_cpu.first().map_or(0, |&i| items[i].size[CPU]),
            by_cpu.last().map_or(0, |&i| items[i].size[CPU]),
        );
        let mem_range = items.iter().fold((u64::MAX, 0), |(lo, hi), it| {
            (lo.min(it.size[MEM]), hi.max(it.size[MEM]))
        });
        Self {
            items,
            hosts: c.hosts.len(),
            steps: 0,
            budget,
            alive,
            order,
            by_cpu,
            cpu_range,
            mem_range,
            buckets,
            mask_of,
            masks,
            meets: RefCell::new(FxMap::default()),
            _c: c,
        }
    }

    fn out_of_budget(&self) -> bool {
        self.steps >= self.budget
    }

    /// May `j` join the items in `set`?
    fn compatible(&self, set: &[usize], j: usize) -> bool {
        let it = &self.items[j];
        if !it.anti.is_empty()
            && set
                .iter()
                .any(|&i| !disjoint(&self.items[i].anti, &it.anti))
        {
            return false;
        }
        let mut ids: Vec<usize> = set
            .iter()
            .chain(std::iter::once(&j))
            .filter_map(|&i| self.mask_of[i])
            .collect();
        if ids.is_empty() {
            return true;
        }
        ids.sort_unstable();
        ids.dedup();
        if let Some(&m) = self.meets.borrow().get(&ids) {
            return m;
        }
        let m = (0..self.hosts).any(|h| ids.iter().all(|&k| self.masks[k][h]));
        self.meets.borrow_mut().insert(ids, m);
        m
    }

    fn exact_partner(
        &mut self,
        set: &[usize],
        rem: [u64; 2],
        above: Option<usize>,
    ) -> Option<usize> {
        let bucket = self.buckets.get(&key(rem))?;
        self.steps += 1;
        bucket.iter().copied().find(|&k| {
            self.alive[k]
                && !set.contains(&k)
                && above.is_none_or(|a| k > a)
                && self.compatible(set, k)
        })
    }

    fn kill(&mut self, i: usize) {
        self.alive[i] = false;
        if let Some(b) = self.buckets.get_mut(&key(self.items[i].size)) {
            b.retain(|&x| x != i);
        }
    }

    fn commit(&mut self, bin: &[usize]) {
        for &i in bin {
            self.kill(i);
        }
    }

    fn compact(&mut self) {
        let alive = &self.alive;
        self.order.retain(|&i| alive[i]);
        self.by_cpu.retain(|&i| alive[i]);
    }

    /// Up to `limit` exact completions (1 to 3 items) of a bin that starts with `i`.
    fn completions(&mut self, i: usize, cap: [u64; 2], limit: usize) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        let si = self.items[i].size;
        if !fits(si, cap) {
            return out;
        }
        let rem = sub(cap, si);
        if rem == [0, 0] {
            out.push(vec![i]);
            return out;
        }
        if let Some(k) = self.exact_partner(&[i], rem, None) {
            out.push(vec![i, k]);
            if out.len() >= limit {
                return out;
            }
        }
        // The third item's CPU lies in the items' range, so the second's does too.
        let lo = rem[CPU].saturating_sub(self.cpu_range.1);
        let hi = rem[CPU].saturating_sub(self.cpu_range.0);
        let items = &self.items;
        let start = self.by_cpu.partition_point(|&j| items[j].size[CPU] < lo);
        let end = self.by_cpu.partition_point(|&j| items[j].size[CPU] <= hi);
        for n in start..end {
            let j = self.by_cpu[n];
            self.steps += 1;
            if j == i || !self.alive[j] {
                continue;
            }
            let sj = self.items[j].size;
            if !fits(sj, rem) || sub(rem, sj) == [0, 0] {
                continue;
            }
            let need_mem = rem[MEM] - sj[MEM];
            if need_mem < self.mem_range.0
                || need_mem > self.mem_range.1
                || !self.compatible(&[i], j)
            {
                continue;
            }
            if let Some(k) = self.exact_partner(&[i, j], sub(rem, sj), Some(j)) {
                out.push(vec![i, j, k]);
                if out.len() >= limit {
                    break;
                }
            }
            if self.out_of_budget() {
                break;
            }
        }
        out
    }

    /// Exact completion phase: commit bins whose completion is unique first, so an
    /// ambiguous choice is made as late as possible.
    fn exact_phase(&mut self, cap: [u64; 2]) -> Vec<Vec<usize>> {
        let mut bins = Vec::new();
        // Largest CPU first: a large first item leaves a narrow CPU window for the others.
        let mut pending: Vec<usize> = self.by_cpu.iter().rev().copied().collect();
        for sweep in 0..16 {
            let greedy = sweep == 15;
            let mut deferred = Vec::new();
            let mut progress = false;
            for &i in &pending {
                if !self.alive[i] || self.out_of_budget() {
                    continue;
                }
                let comps = self.completions(i, cap, if greedy { 1 } else { 2 });
                match comps.len() {
                    0 => {}
                    1 => {
                        self.commit(&comps[0]);
                        bins.push(comps[0].clone());
                        progress = true;
                        // Dead items cost a step each in later scans: sweep them out now and then.
                        if bins.len() % 128 == 0 {
                            self.compact();
                        }
                    }
                    _ => deferred.push(i),
                }
            }
            self.compact();
            if deferred.is_empty() || self.out_of_budget() {
                break;
            }
            if !progress {
                // Nothing unique left: take the first ambiguous bin and go on.
                let i = deferred[0];
                let comps = self.completions(i, cap, 1);
                if let Some(b) = comps.first() {
                    self.commit(b);
                    bins.push(b.clone());
                }
                self.compact();
            }
            pending = deferred;
        }
        bins
    }

    /// Minimum-bin-slack fill of one bin that starts with `first`.
    fn best_fill(
        &mut self,
        first: usize,
        cap: [u64; 2],
        fits_host: &dyn Fn(&Item) -> bool,
        nodes: u64,
    ) -> Vec<usize> {
        let rem = sub(cap, self.items[first].size);
        let mut best = (slack(rem, cap), vec![first]);
        let mut chosen = vec![first];
        let mut budget = nodes;
        self.dfs(&mut chosen, rem, 0, cap, fits_host, &mut budget, &mut best);
        best.1
    }

    #[allow(clippy::too_many_arguments)] // recursion state
    fn dfs(
        &mut self,
        chosen: &mut Vec<usize>,
        rem: [u64; 2],
        start: usize,
        cap: [u64; 2],
        fits_host: &dyn Fn(&Item) -> bool,
        budget: &mut u64,
        best: &mut (f64, Vec<usize>),
    ) {
        if best.0 <= 0.0 || *budget == 0 || self.out_of_budget() {
            return;
        }
        if let Some(k) = self.exact_partner(chosen, rem, None) {
            if fits_host(&self.items[k]) {
                let mut b = chosen.clone();
                b.push(k);
                *best = (0.0, b);
                return;
            }
        }
        for n in start..self.order.len() {
            let j = self.order[n];
            self.steps += 1;
            *budget = budget.saturating_sub(1);
            if *budget == 0 || best.0 <= 0.0 {
                return;
            }
            if !self.alive[j] || chosen.contains(&j) {
                continue;
            }
            let sj = self.items[j].size;
            if !fits(sj, rem) || !fits_host(&self.items[j]) || !self.compatible(chosen, j) {
                continue;
            }
            let r2 = sub(rem, sj);
            chosen.push(j);
            let s = slack(r2, cap);
            if s < best.0 {
                *best = (s, chosen.clone());
            }
            self.dfs(chosen, r2, n + 1, cap, fits_host, budget, best);
            chosen.pop();
        }
    }
}

fn slack(rem: [u64; 2], cap: [u64; 2]) -> f64 {
    rem[CPU] as f64 / cap[CPU] as f64 + rem[MEM] as f64 / cap[MEM] as f64
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

/// Match bins to hosts (augmenting paths for bins restricted by rules, then the rest).
fn match_bins(
    c: &Cluster,
    items: &[Item],
    bins: &[Vec<usize>],
    hosts: &[usize],
) -> Vec<Option<usize>> {
    let allowed = |b: &Vec<usize>, h: usize| {
        b.iter()
            .all(|&i| items[i].allowed.as_ref().is_none_or(|a| a[h]))
    };
    let restricted: Vec<usize> = (0..bins.len())
        .filter(|&b| bins[b].iter().any(|&i| items[i].allowed.is_some()))
        .collect();
    let mut host_bin: Vec<Option<usize>> = vec![None; c.hosts.len()];
    let mut bin_host: Vec<Option<usize>> = vec![None; bins.len()];
    let fits_cap = |b: &Vec<usize>, h: usize| {
        let mut s = [0u64; 2];
        for &i in b {
            s[CPU] += items[i].size[CPU];
            s[MEM] += items[i].size[MEM];
        }
        fits(s, c.hosts[h].capacity)
    };
    // Greedy first: most restricted bins rarely compete, and each direct hit saves a search.
    let mut unmatched = Vec::new();
    for &b in &restricted {
        match hosts
            .iter()
            .copied()
            .find(|&h| host_bin[h].is_none() && allowed(&bins[b], h) && fits_cap(&bins[b], h))
        {
            Some(h) => {
                host_bin[h] = Some(b);
                bin_host[b] = Some(h);
            }
            None => unmatched.push(b),
        }
    }
    for &b in &unmatched {
        // Kuhn's augmenting path, iterative with an explicit stack; bounded by hosts visited.
        let mut seen = vec![false; c.hosts.len()];
        let mut stack: Vec<(usize, usize)> = vec![(b, 0)];
        let mut parent: Vec<(usize, usize)> = Vec::new(); // (bin, host) edges on the path
        let mut found = None;
        while let Some((bin, pos)) = stack.pop() {
            let mut next = None;
            for (k, &h) in hosts.iter().enumerate().skip(pos) {
                if !seen[h] && allowed(&bins[bin], h) && fits_cap(&bins[bin], h) {
                    next = Some((k, h));
                    break;
                }
            }
            let Some((k, h)) = next else {
                parent.pop();
                continue;
            };
            seen[h] = true;
            stack.push((bin, k + 1));
            parent.push((bin, h));
            match host_bin[h] {
                None => {
                    found = Some(());
                    break;
                }
                Some(other) => stack.push((other, 0)),
            }
        }
        if found.is_some() {
            // The path's last pair of each bin is its new host.
            let mut last: FxMap<usize, usize> = FxMap::default();
            for &(bin, h) in &parent {
                last.insert(bin, h);
            }
            for (&bin, &h) in &last {
                if let Some(old) = bin_host[bin] {
                    if host_bin[old] == Some(bin) {
                        host_bin[old] = None;
                    }
                }
                bin_host[bin] = Some(h);
            }
            for (&bin, &h) in &last {
                host_bin[h] = Some(bin);
            }
        }
    }
    let mut is_restricted = vec![false; bins.len()];
    for &b in &restricted {
        is_restricted[b] = true;
    }
    let mut free = hosts.iter().copied().filter(|&h| host_bin[h].is_none());
    for (b, slot) in bin_host.iter_mut().enumerate() {
        if slot.is_none() && !is_restricted[b] {
            *slot = free.next();
        }
    }
    bin_host
}

/// Pack every running VM onto as few usable hosts as possible under the rules.
///
/// When the heuristics leave VMs unplaced, a complete backtracking search (bounded by
/// what is left of the step budget) looks for any placement that keeps every rule.
pub fn pack(c: &Cluster, opts: &PackOptions) -> PackPlan {
    let plan = pack_heuristic(c, opts);
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
    let mut order: Vec<usize> = (0..items.len()).collect();
    let choices = |i: usize| {
        items[i]
            .allowed
            .as_ref()
            .map_or(hosts.len(), |a| a.iter().filter(|&&x| x).count())
    };
    order.sort_by(|&a, &b| {
        choices(a)
            .cmp(&choices(b))
            .then(
                (items[b].size[CPU] + items[b].size[MEM])
                    .cmp(&(items[a].size[CPU] + items[a].size[MEM])),
            )
            .then(a.cmp(&b))
    });
    if !search.solve(&order, 0) {
        return PackPlan {
            steps: search.steps,
            ..plan
        };
    }
    let mut state = State::empty(c);
    for (i, h) in search.host_of.iter().enumerate() {
        if let Some(h) = *h {
            for &v in &items[i].vms {
                state.put(v, h);
            }
        }
    }
    plan_from_state(&state, plan.lower_bound, search.steps)
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
            let mut size = [0u64; 2];
            let mut rules = Vec::new();
            for &v in g {
                let f = c.vms[v].footprint();
                size[CPU] += f[CPU];
                size[MEM] += f[MEM];
                rules.extend_from_slice(&c.vms[v].anti);
            }
            rules.sort_unstable();
            rules.dedup();
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
    if search.solve(&order, 0) {
        search.host_of.into_iter().collect()
    } else {
        None
    }
}

/// Largest instance (affinity groups of running VMs) the complete search takes on.
pub const BACKTRACK_MAX_ITEMS: usize = 1_000;
/// Steps the complete search may add to the heuristics' steps.
pub const BACKTRACK_STEPS: u64 = 5_000_000;

/// Complete depth-first search over item → host, most constrained item first.
struct Backtrack<'a> {
    c: &'a Cluster,
    items: &'a [Item],
    hosts: &'a [usize],
    used: Vec<[u64; 2]>,
    anti: Vec<Vec<usize>>,
    host_of: Vec<Option<usize>>,
    steps: u64,
    budget: u64,
}

impl Backtrack<'_> {
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

fn pack_heuristic(c: &Cluster, opts: &PackOptions) -> PackPlan {
    let items = items_of(c);
    let lb = lower_bound(c, &items);
    let mut hosts: Vec<usize> = c.usable_hosts().collect();
    hosts.sort_by(|&a, &b| {
        let (ca, cb) = (c.hosts[a].capacity, c.hosts[b].capacity);
        (cb[CPU] + cb[MEM])
            .cmp(&(ca[CPU] + ca[MEM]))
            .then(a.cmp(&b))
    });
    let Some(&h0) = hosts.first() else {
        return finish(c, &items, &[], &[], lb, 0, &hosts);
    };
    let cap = c.hosts[h0].capacity;
    let homogeneous = hosts.iter().all(|&h| c.hosts[h].capacity == cap);
    let mut p = Packer::new(c, items, cap, opts.step_budget);
    if homogeneous {
        let mut bins = p.exact_phase(cap);
        let any = |_: &Item| true;
        let mut guard = p.items.len();
        while guard > 0 && !p.order.is_empty() {
            guard -= 1;
            let first = p.order[0];
            if !fits(p.items[first].size, cap) {
                p.kill(first);
                p.compact();
                continue;
            }
            let bin = p.best_fill(first, cap, &any, opts.nodes_per_bin);
            p.commit(&bin);
            p.compact();
            bins.push(bin);
        }
        improve(&mut p, &mut bins, cap, lb);
        let bin_host = match_bins(c, &p.items, &bins, &hosts);
        finish(c, &p.items, &bins, &bin_host, lb, p.steps, &hosts)
    } else {
        // Hosts differ: fill each host in turn, largest first, with what it allows.
        let mut bins = Vec::new();
        let mut bin_host = Vec::new();
        for &h in &hosts {
            let hcap = c.hosts[h].capacity;
            let ok = |it: &Item| it.allowed.as_ref().is_none_or(|a| a[h]);
            let Some(first) = p
                .order
                .iter()
                .copied()
                .find(|&i| p.alive[i] && fits(p.items[i].size, hcap) && ok(&p.items[i]))
            else {
                continue;
            };
            let bin = p.best_fill(first, hcap, &ok, opts.nodes_per_bin);
            p.commit(&bin);
            p.compact();
            bins.push(bin);
            bin_host.push(Some(h));
        }
        finish(c, &p.items, &bins, &bin_host, lb, p.steps, &hosts)
    }
}

/// Local search: empty the least-filled bins into the slack of the others.
fn improve(p: &mut Packer<'_>, bins: &mut Vec<Vec<usize>>, cap: [u64; 2], lb: usize) {
    let used = |p: &Packer<'_>, b: &Vec<usize>| -> [u64; 2] {
        let mut s = [0u64; 2];
        for &i in b {
            s[CPU] += p.items[i].size[CPU];
            s[MEM] += p.items[i].size[MEM];
        }
        s
    };
    let mut attempts = bins.len();
    while bins.len() > lb && attempts > 0 && !p.out_of_budget() {
        attempts -= 1;
        let mut fill: Vec<(f64, usize)> = bins
            .iter()
            .enumerate()
            .map(|(b, bin)| (1.0 - slack(sub(cap, used(p, bin)), cap) / 2.0, b))
            .collect();
        fill.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut emptied = false;
        for &(_, victim) in fill.iter().take(4) {
            let mut trial: Vec<Vec<usize>> = bins.clone();
            let moving = std::mem::take(&mut trial[victim]);
            let mut ok = true;
            for &i in &moving {
                p.steps += trial.len() as u64;
                let target = (0..trial.len()).find(|&b| {
                    b != victim
                        && !trial[b].is_empty()
                        && fits(p.items[i].size, sub(cap, used(p, &trial[b])))
                        && p.compatible(&trial[b], i)
                });
                match target {
                    Some(b) => trial[b].push(i),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                trial.remove(victim);
                *bins = trial;
                emptied = true;
                break;
            }
        }
        if !emptied {
            break;
        }
    }
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
    let mut state = State::empty(c);
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
            let mut ok = true;
            let mut placed = Vec::new();
            for &v in vms {
                if state.check(v, h, vms).is_ok() {
                    state.put(v, h);
                    placed.push(v);
                } else {
                    ok = false;
                    break;
                }
            }
            if ok {
                break;
            }
            for v in placed {
                state.take(v);
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

/// First-Fit-Decreasing under the same rules: the baseline the benchmarks compare with.
pub fn first_fit_decreasing(c: &Cluster) -> PackPlan {
    let items = items_of(c);
    let lb = lower_bound(c, &items);
    let hosts: Vec<usize> = c.usable_hosts().collect();
    let cap = hosts.first().map_or([1, 1], |&h| c.hosts[h].capacity);
    let weight = |s: [u64; 2]| s[CPU] as f64 / cap[CPU] as f64 + s[MEM] as f64 / cap[MEM] as f64;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        weight(items[b].size)
            .total_cmp(&weight(items[a].size))
            .then(a.cmp(&b))
    });
    let mut state = State::empty(c);
    let mut steps = 0u64;
    for i in order {
        let vms = &items[i].vms;
        for &h in &hosts {
            steps += 1;
            let mut placed = Vec::new();
            for &v in vms {
                if state.check(v, h, vms).is_ok() {
                    state.put(v, h);
                    placed.push(v);
                } else {
                    break;
                }
            }
            if placed.len() == vms.len() {
                break;
            }
            for v in placed {
                state.take(v);
            }
        }
    }
    plan_from_state(&state, lb, steps)
}

#[cfg(test)]
mod tests {
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
