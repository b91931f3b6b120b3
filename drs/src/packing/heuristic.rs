//! The packing heuristics: exact bin completion, minimum-bin-slack fill and a local
//! search that empties the least-filled bins.

use super::fewer::{complete_into, pack_into, FEWER_MAX_ITEMS, FEWER_STEPS};
use super::matching::match_bins;
use super::near::{tolerance, Grid, LEVELS_PERMILLE};
use super::packer::Packer;
use super::{bin_size, finish, fits, items_of, key, lower_bound, sub, Item, PackOptions, PackPlan};
use crate::validate::{Cluster, CPU, MEM};

/// Items the exact phase tries before it judges whether exact bins exist.
const EXACT_PROBE: usize = 64;
/// Minimum-slack search nodes for all the bins left after the completion phases.
const DFS_NODES_TOTAL: u64 = 10_000_000;
/// Fewest minimum-slack search nodes a bin gets.
const DFS_NODES_MIN: u64 = 1_000;
/// Instances up to this many items also get the classic pipeline (exact completion,
/// minimum-slack search, local search) and keep the better packing: cheap at that size.
const PORTFOLIO_MAX_ITEMS: usize = 1_000;

impl Packer {
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

    pub(super) fn kill(&mut self, i: usize) {
        self.alive[i] = false;
        if let Some(b) = self.buckets.get_mut(&key(self.items[i].size)) {
            b.retain(|&x| x != i);
        }
    }

    pub(super) fn commit(&mut self, bin: &[usize]) {
        for &i in bin {
            self.kill(i);
        }
    }

    pub(super) fn compact(&mut self) {
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
            let (mut tried, mut missed) = (0usize, 0usize);
            for &i in &pending {
                if !self.alive[i] || self.out_of_budget() {
                    continue;
                }
                // Sizes that do not sum to capacity give no exact bins: each miss scans
                // a whole window, so the phase gives up when the first sweep's first
                // items mostly miss (exact-fill instances hit on nearly every item).
                if sweep == 0 && tried >= EXACT_PROBE && missed * 2 > tried {
                    return bins;
                }
                tried += 1;
                let comps = self.completions(i, cap, if greedy { 1 } else { 2 });
                match comps.len() {
                    0 => missed += 1,
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

pub(super) fn pack_heuristic(c: &Cluster, opts: &PackOptions) -> PackPlan {
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
    if !homogeneous {
        return heterogeneous(c, items, opts, &hosts, lb);
    }
    let small = items.len() <= PORTFOLIO_MAX_ITEMS;
    let near = homogeneous_pack(c, items.clone(), cap, opts, &hosts, lb, true);
    if !small || (near.unplaced.is_empty() && near.hosts_used <= lb) {
        return near;
    }
    let classic = homogeneous_pack(c, items.clone(), cap, opts, &hosts, lb, false);
    let steps = near.steps + classic.steps;
    let best =
        if (classic.unplaced.len(), classic.hosts_used) < (near.unplaced.len(), near.hosts_used) {
            classic
        } else {
            near
        };
    let left = opts.step_budget.saturating_sub(steps);
    let best = fewer_hosts(c, &items, cap, &hosts, lb, best, left);
    PackPlan {
        steps: steps + best.steps,
        ..best
    }
}

/// Small instances without rules: one host fewer at a time, while a bounded exact
/// search finds a packing and the count is above the bound.
fn fewer_hosts(
    c: &Cluster,
    items: &[Item],
    cap: [u64; 2],
    hosts: &[usize],
    lb: usize,
    best: PackPlan,
    step_budget: u64,
) -> PackPlan {
    let plain = items
        .iter()
        .all(|it| it.allowed.is_none() && it.anti.is_empty());
    if !plain || items.len() > FEWER_MAX_ITEMS || !best.unplaced.is_empty() {
        return PackPlan { steps: 0, ..best };
    }
    let total = FEWER_STEPS.min(step_budget);
    let mut budget = total;
    let mut found: Option<Vec<Vec<usize>>> = None;
    let mut k = best.hosts_used;
    while k > lb && budget > 0 {
        // Bin completion first (half of what is left), then the item-by-item search.
        let mut half = budget / 2;
        let spent_before = half;
        let by_bins = complete_into(items, cap, k - 1, &mut half);
        budget -= spent_before - half;
        let found_now = match by_bins {
            Some(bins) => Some(bins),
            None => pack_into(items, cap, k - 1, &mut budget),
        };
        match found_now {
            Some(bins) => {
                k = bins.len();
                found = Some(bins);
            }
            None => break,
        }
    }
    let steps = total - budget;
    match found {
        Some(bins) => {
            let bin_host = match_bins(c, items, &bins, hosts);
            PackPlan {
                steps,
                ..finish(c, items, &bins, &bin_host, lb, 0, hosts)
            }
        }
        None => PackPlan { steps, ..best },
    }
}

/// Identical hosts: exact completion, then (with `near`) near-exact completion at
/// growing tolerances, then minimum-slack fill and the local search.
fn homogeneous_pack(
    c: &Cluster,
    items: Vec<Item>,
    cap: [u64; 2],
    opts: &PackOptions,
    hosts: &[usize],
    lb: usize,
    near: bool,
) -> PackPlan {
    let mut p = Packer::new(c.hosts.len(), items, cap, opts.step_budget);
    let mut bins = p.exact_phase(cap);
    bins.extend(p.wide_phase(cap));
    if near {
        let any = |_: usize| true;
        for &permille in &LEVELS_PERMILLE {
            let tol = tolerance(cap, permille);
            let grid = Grid::new(&p, tol);
            let pending = p.order.clone();
            for i in pending {
                if p.out_of_budget() {
                    break;
                }
                if !p.alive[i] || !fits(p.items[i].size, cap) {
                    continue;
                }
                if let Some(bin) = p.near_bin(&grid, i, cap, tol, &any) {
                    p.commit(&bin);
                    bins.push(bin);
                    // Scans start at the front of the lists: keep dead items out of it.
                    if bins.len() % 32 == 0 {
                        p.compact();
                    }
                }
            }
            p.compact();
        }
    }
    let any = |_: &Item| true;
    // The minimum-slack search gets fewer nodes per bin when many items are left, so
    // that its total stays bounded (about DFS_NODES_TOTAL).
    let nodes = opts
        .nodes_per_bin
        .min((DFS_NODES_TOTAL / p.order.len().max(1) as u64).max(DFS_NODES_MIN));
    let mut guard = p.items.len();
    while guard > 0 && !p.order.is_empty() {
        guard -= 1;
        let first = p.order[0];
        if !fits(p.items[first].size, cap) {
            p.kill(first);
            p.compact();
            continue;
        }
        let bin = p.best_fill(first, cap, &any, nodes);
        p.commit(&bin);
        p.compact();
        bins.push(bin);
    }
    improve(&mut p, &mut bins, cap, lb);
    let bin_host = match_bins(c, &p.items, &bins, hosts);
    finish(c, &p.items, &bins, &bin_host, lb, p.steps, hosts)
}

/// Hosts differ: fill each host in turn, largest first, with what it allows: to within
/// the smallest tolerance that closes it, else by minimum-slack search.
fn heterogeneous(
    c: &Cluster,
    items: Vec<Item>,
    opts: &PackOptions,
    hosts: &[usize],
    lb: usize,
) -> PackPlan {
    let smallest = hosts
        .iter()
        .map(|&h| c.hosts[h].capacity)
        .fold([u64::MAX; 2], |m, x| {
            [m[CPU].min(x[CPU]), m[MEM].min(x[MEM])]
        });
    let cap0 = c.hosts[hosts[0]].capacity;
    let mut p = Packer::new(c.hosts.len(), items, cap0, opts.step_budget);
    // One grid per level over every item; committed items are skipped when looked up.
    let grids: Vec<Grid> = LEVELS_PERMILLE
        .iter()
        .map(|&pm| Grid::new(&p, tolerance(smallest, pm)))
        .collect();
    let (mask_of, masks) = (p.mask_of.clone(), p.masks.clone());
    let mut bins = Vec::new();
    let mut bin_host = Vec::new();
    for &h in hosts {
        let hcap = c.hosts[h].capacity;
        let ok_item = |it: &Item| it.allowed.as_ref().is_none_or(|a| a[h]);
        let ok = |k: usize| mask_of[k].is_none_or(|m| masks[m][h]);
        let Some(first) = p
            .order
            .iter()
            .copied()
            .find(|&i| p.alive[i] && fits(p.items[i].size, hcap) && ok(i))
        else {
            continue;
        };
        let mut bin = None;
        for (grid, &permille) in grids.iter().zip(&LEVELS_PERMILLE) {
            if p.out_of_budget() {
                break;
            }
            bin = p.near_bin(grid, first, hcap, tolerance(hcap, permille), &ok);
            if bin.is_some() {
                break;
            }
        }
        let bin = match bin {
            Some(b) => b,
            None => p.best_fill(first, hcap, &ok_item, opts.nodes_per_bin),
        };
        p.commit(&bin);
        p.compact();
        bins.push(bin);
        bin_host.push(Some(h));
    }
    finish(c, &p.items, &bins, &bin_host, lb, p.steps, hosts)
}

/// Local search: empty the least-filled bins into the slack of the others.
fn improve(p: &mut Packer, bins: &mut Vec<Vec<usize>>, cap: [u64; 2], lb: usize) {
    let used = |p: &Packer, b: &Vec<usize>| bin_size(&p.items, b);
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
