//! Wide exact completion: bins filled to capacity exactly by four or five items, for
//! instances small enough to index every pair of items by its summed size.
//!
//! Exact completion (`heuristic`) finds bins of one to three items: it fixes the first
//! and second items and looks the third up by size. Bins of five VMs (fives of small VMs
//! filling a host) defeat it, and near-exact completion then leaves one host too many in
//! fifty. Here the item pairs are indexed by summed size once; a bin starting with `i`
//! is closed by one item and a pair (four items) or by two pairs (five items), each found
//! by a lookup, so a bin costs O(pairs) rather than O(items⁴).
//!
//! A completion is committed as soon as it is found. Exact sums of unrelated items are
//! rare when sizes are integers over wide ranges (MHz and MB), so the first completion
//! found is, in practice, a bin of some optimal packing; the later phases place whatever
//! a wrong guess leaves.

use super::packer::Packer;
use super::{fits, key, sub, FxMap};
use crate::validate::{CPU, MEM};

/// Largest instance (items) the pair index is built for: the index holds up to n²/2
/// pairs and a bin scans up to half of them.
pub(super) const WIDE_MAX_ITEMS: usize = 300;
/// Items tried before judging whether four- and five-item exact bins exist at all.
const WIDE_PROBE: usize = 24;
/// Search steps (pairs and items looked at) the phase may spend.
const WIDE_STEPS: u64 = 4_000_000;

/// Every pair of items whose summed size fits a bin, by summed size, and the pairs in
/// order of summed CPU.
struct Pairs {
    by_size: FxMap<(u64, u64), Vec<(u32, u32)>>,
    by_cpu: Vec<(u64, u32, u32)>,
}

impl Pairs {
    fn new(p: &Packer, cap: [u64; 2]) -> Self {
        let alive: Vec<usize> = p.order.clone();
        let mut by_size: FxMap<(u64, u64), Vec<(u32, u32)>> = FxMap::default();
        let mut by_cpu = Vec::new();
        for (n, &a) in alive.iter().enumerate() {
            for &b in &alive[n + 1..] {
                let s = [
                    p.items[a].size[CPU] + p.items[b].size[CPU],
                    p.items[a].size[MEM] + p.items[b].size[MEM],
                ];
                if !fits(s, cap) {
                    continue;
                }
                // Item indexes fit u32: instances here are at most WIDE_MAX_ITEMS.
                let (Ok(a32), Ok(b32)) = (u32::try_from(a), u32::try_from(b)) else {
                    continue;
                };
                by_size.entry(key(s)).or_default().push((a32, b32));
                by_cpu.push((s[CPU], a32, b32));
            }
        }
        by_cpu.sort_unstable();
        Self { by_size, by_cpu }
    }
}

impl Packer {
    /// May every item of `extra` join `set` (and the ones of `extra` before it)?
    fn compatible_with(&self, set: &[usize], extra: &[usize]) -> bool {
        let mut all = [0usize; 5];
        let n = set.len() + extra.len();
        if n > all.len() {
            return false;
        }
        all[..set.len()].copy_from_slice(set);
        all[set.len()..n].copy_from_slice(extra);
        (set.len()..n).all(|k| self.compatible(&all[..k], all[k]))
    }

    /// Adds to `out` the alive pairs summing to `rem` exactly, disjoint from `set` and
    /// compatible with it, as bins `set + pair`, until `out` holds `limit`.
    fn exact_pairs(
        &mut self,
        pairs: &Pairs,
        set: &[usize],
        rem: [u64; 2],
        limit: usize,
        out: &mut Vec<Vec<usize>>,
    ) {
        let Some(list) = pairs.by_size.get(&key(rem)) else {
            return;
        };
        self.steps += 1;
        for &(a, b) in list {
            let (a, b) = (a as usize, b as usize);
            if self.alive[a]
                && self.alive[b]
                && !set.contains(&a)
                && !set.contains(&b)
                && self.compatible_with(set, &[a, b])
                && !out.iter().any(|o| same_bin(o, set, a, b))
            {
                let mut bin = set.to_vec();
                bin.extend([a, b]);
                out.push(bin);
                if out.len() >= limit {
                    return;
                }
            }
        }
    }

    /// Up to `limit` four- and five-item exact bins starting with `i`.
    fn wide_completions(
        &mut self,
        pairs: &Pairs,
        i: usize,
        cap: [u64; 2],
        limit: usize,
    ) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        let si = self.items[i].size;
        if !fits(si, cap) {
            return out;
        }
        let rem = sub(cap, si);
        let largest = [self.cpu_range.1, self.mem_range.1];
        // k more items of at most `largest` each must be able to fill `rem`.
        let reach = |k: u64| rem[CPU] <= k * largest[CPU] && rem[MEM] <= k * largest[MEM];
        // Four items: i, one more, and a pair.
        if reach(3) {
            for n in 0..self.order.len() {
                let j = self.order[n];
                self.steps += 1;
                if j == i || !self.alive[j] || !fits(self.items[j].size, rem) {
                    continue;
                }
                if !self.compatible(&[i], j) {
                    continue;
                }
                self.exact_pairs(
                    pairs,
                    &[i, j],
                    sub(rem, self.items[j].size),
                    limit,
                    &mut out,
                );
                if out.len() >= limit || self.out_of_budget() {
                    return out;
                }
            }
        }
        if !reach(4) {
            return out;
        }
        // Five items: i and two pairs; the first pair is the one with the smaller CPU sum.
        let half = rem[CPU] / 2;
        let end = pairs.by_cpu.partition_point(|&(c, _, _)| c <= half);
        for n in 0..end {
            let (_, a, b) = pairs.by_cpu[n];
            let (a, b) = (a as usize, b as usize);
            self.steps += 1;
            if a == i || b == i || !self.alive[a] || !self.alive[b] {
                continue;
            }
            let sab = [
                self.items[a].size[CPU] + self.items[b].size[CPU],
                self.items[a].size[MEM] + self.items[b].size[MEM],
            ];
            if !fits(sab, rem) || !self.compatible_with(&[i], &[a, b]) {
                continue;
            }
            self.exact_pairs(pairs, &[i, a, b], sub(rem, sab), limit, &mut out);
            if out.len() >= limit || self.out_of_budget() {
                return out;
            }
        }
        out
    }

    /// Commits four- and five-item exact bins: those whose completion is unique first
    /// (as exact completion does), then, when only ambiguous ones are left, the first
    /// of them. Gives up at once when the first items tried have none (sizes that are
    /// not exact fills), so other instances pay only for building the pair index.
    pub(super) fn wide_phase(&mut self, cap: [u64; 2]) -> Vec<Vec<usize>> {
        let bins = Vec::new();
        if self.order.len() < 4 || self.order.len() > WIDE_MAX_ITEMS {
            return bins;
        }
        // Only items that can fill whole bins exactly are worth the index: their sizes
        // sum to the same whole number of bins in both resources. Anything else (random
        // or perturbed sizes) goes straight to the later phases.
        let total = self.order.iter().fold([0u64; 2], |t, &i| {
            [
                t[CPU] + self.items[i].size[CPU],
                t[MEM] + self.items[i].size[MEM],
            ]
        });
        let whole = |r: usize| total[r] % cap[r].max(1) == 0;
        if !whole(CPU)
            || !whole(MEM)
            || total[CPU] / cap[CPU].max(1) != total[MEM] / cap[MEM].max(1)
        {
            return bins;
        }
        let budget = self.budget;
        self.budget = budget.min(self.steps.saturating_add(WIDE_STEPS));
        let bins = self.wide_bins(cap);
        self.budget = budget;
        bins
    }

    fn wide_bins(&mut self, cap: [u64; 2]) -> Vec<Vec<usize>> {
        let mut bins = Vec::new();
        let pairs = Pairs::new(self, cap);
        let mut pending = self.order.clone();
        let (mut tried, mut found) = (0usize, 0usize);
        while !pending.is_empty() && !self.out_of_budget() {
            let mut ambiguous = Vec::new();
            let mut progress = false;
            for &i in &pending {
                if !self.alive[i] || self.out_of_budget() {
                    continue;
                }
                if tried >= WIDE_PROBE && found * 4 < tried && bins.is_empty() {
                    return bins;
                }
                tried += 1;
                let comps = self.wide_completions(&pairs, i, cap, 2);
                match comps.len() {
                    0 => {}
                    1 => {
                        found += 1;
                        self.commit(&comps[0]);
                        bins.push(comps[0].clone());
                        progress = true;
                    }
                    _ => {
                        found += 1;
                        ambiguous.push(i);
                    }
                }
            }
            if !progress {
                // Nothing unique left: commit the first ambiguous bin and go on.
                let Some(bin) = ambiguous
                    .iter()
                    .find_map(|&i| self.wide_completions(&pairs, i, cap, 1).pop())
                else {
                    break;
                };
                self.commit(&bin);
                bins.push(bin);
            }
            pending = ambiguous;
        }
        self.compact();
        bins
    }
}

/// Whether `bin` is `set + {a, b}` (the same pair found from its other end).
fn same_bin(bin: &[usize], set: &[usize], a: usize, b: usize) -> bool {
    bin.len() == set.len() + 2 && bin.contains(&a) && bin.contains(&b)
}
