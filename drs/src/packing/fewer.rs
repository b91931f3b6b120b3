//! For small instances: a bounded depth-first search for a packing into fewer hosts
//! than the heuristics found (identical hosts, no rules). Random sizes leave the
//! heuristics a host or two above what an exact search finds in milliseconds at that
//! size.

use super::{fits, largest_first, sub, Item};
use crate::validate::{CPU, MEM};

/// Largest instance (items) the search is tried on.
pub(super) const FEWER_MAX_ITEMS: usize = 150;
/// Search nodes for all attempts together.
pub(super) const FEWER_STEPS: u64 = 1_000_000;

/// Depth-first search over items, largest first, into `k` bins of `cap`.
struct Search<'a> {
    items: &'a [Item],
    order: Vec<usize>,
    /// Per position in `order`: the remaining items' summed size.
    rest: Vec<[u64; 2]>,
    /// Per position in `order`: the smallest remaining item per resource.
    smallest: Vec<[u64; 2]>,
    free: Vec<[u64; 2]>,
    bin_of: Vec<usize>,
    budget: u64,
}

impl Search<'_> {
    fn solve(&mut self, pos: usize) -> bool {
        let Some(&i) = self.order.get(pos) else {
            return true;
        };
        // Room in bins too full for any remaining item is lost: what is left must
        // still hold the remaining items' sum.
        let (need, min) = (self.rest[pos], self.smallest[pos]);
        let mut room = [0u64; 2];
        for f in &self.free {
            if f[CPU] >= min[CPU] && f[MEM] >= min[MEM] {
                room[CPU] += f[CPU];
                room[MEM] += f[MEM];
            }
        }
        if room[CPU] < need[CPU] || room[MEM] < need[MEM] {
            return false;
        }
        let s = self.items[i].size;
        // Bins with equal free room are interchangeable: try one of them.
        let mut tried: Vec<[u64; 2]> = Vec::new();
        for b in 0..self.free.len() {
            let f = self.free[b];
            if !fits(s, f) || tried.contains(&f) {
                continue;
            }
            tried.push(f);
            if self.budget == 0 {
                return false;
            }
            self.budget -= 1;
            self.free[b] = sub(f, s);
            self.bin_of[i] = b;
            if self.solve(pos + 1) {
                return true;
            }
            self.free[b] = f;
        }
        false
    }
}

/// Bins for every item in `k` bins of `cap`, or `None` when the search (at most
/// `*budget` nodes, which it uses up) finds none.
pub(super) fn pack_into(
    items: &[Item],
    cap: [u64; 2],
    k: usize,
    budget: &mut u64,
) -> Option<Vec<Vec<usize>>> {
    let order = largest_first(items, cap);
    let n = order.len();
    let mut rest = vec![[0u64; 2]; n + 1];
    let mut smallest = vec![[u64::MAX; 2]; n + 1];
    for p in (0..n).rev() {
        let s = items[order[p]].size;
        rest[p] = [rest[p + 1][CPU] + s[CPU], rest[p + 1][MEM] + s[MEM]];
        smallest[p] = [
            smallest[p + 1][CPU].min(s[CPU]),
            smallest[p + 1][MEM].min(s[MEM]),
        ];
    }
    let mut search = Search {
        items,
        order,
        rest,
        smallest,
        free: vec![cap; k],
        bin_of: vec![0; items.len()],
        budget: *budget,
    };
    let found = search.solve(0);
    *budget = search.budget;
    if !found {
        return None;
    }
    let mut bins = vec![Vec::new(); k];
    for (i, &b) in search.bin_of.iter().enumerate() {
        bins[b].push(i);
    }
    bins.retain(|b| !b.is_empty());
    Some(bins)
}

/// Bin completion (Korf): bins are filled one at a time, each started by the largest item
/// left and closed by a *maximal* set of other items (no item left fits its room), most
/// full first. `k` bins leave `k · cap − Σ sizes` of room in all; a bin whose room exceeds
/// what is left of that, in either resource, cannot be part of a packing into `k` bins,
/// so near-full instances branch very little where the item-by-item search above drowns.
struct Completion<'a> {
    items: &'a [Item],
    cap: [u64; 2],
    order: Vec<usize>,
    alive: Vec<bool>,
    bins: Vec<Vec<usize>>,
    budget: u64,
}

/// Completions gathered per bin before the most full are tried.
const COMPLETIONS_PER_BIN: usize = 64;

impl Completion<'_> {
    fn solve(&mut self, waste_left: [u64; 2], bins_left: usize) -> bool {
        let Some(pos) = self.order.iter().position(|&i| self.alive[i]) else {
            return true;
        };
        if bins_left == 0 {
            return false;
        }
        let first = self.order[pos];
        let room = sub(self.cap, self.items[first].size);
        let mut found = Vec::new();
        let mut set = vec![first];
        self.alive[first] = false;
        self.enumerate(pos + 1, room, waste_left, &mut set, &mut found);
        found.sort_by(|a: &(f64, Vec<usize>), b| a.0.total_cmp(&b.0));
        for (_, bin) in found {
            if self.budget == 0 {
                break;
            }
            let size = super::bin_size(self.items, &bin);
            let waste = sub(self.cap, size);
            for &i in &bin[1..] {
                self.alive[i] = false;
            }
            self.bins.push(bin.clone());
            if self.solve(sub(waste_left, waste), bins_left - 1) {
                return true;
            }
            self.bins.pop();
            for &i in &bin[1..] {
                self.alive[i] = true;
            }
        }
        self.alive[first] = true;
        false
    }

    /// Adds to `found` the maximal completions of `set` from items at `from..` in order
    /// whose room stays within `waste_left`.
    fn enumerate(
        &mut self,
        from: usize,
        room: [u64; 2],
        waste_left: [u64; 2],
        set: &mut Vec<usize>,
        found: &mut Vec<(f64, Vec<usize>)>,
    ) {
        if self.budget == 0 || found.len() >= COMPLETIONS_PER_BIN {
            return;
        }
        self.budget -= 1;
        // Maximal: no alive item outside the set fits the room.
        let fits_more = self
            .order
            .iter()
            .any(|&j| self.alive[j] && !set.contains(&j) && fits(self.items[j].size, room));
        if !fits_more {
            if room[CPU] <= waste_left[CPU] && room[MEM] <= waste_left[MEM] {
                let w = room[CPU] as f64 / self.cap[CPU] as f64
                    + room[MEM] as f64 / self.cap[MEM] as f64;
                found.push((w, set.clone()));
            }
            return;
        }
        let mut skipped: Option<[u64; 2]> = None;
        for p in from..self.order.len() {
            let j = self.order[p];
            let s = self.items[j].size;
            if !self.alive[j] || !fits(s, room) || skipped == Some(s) {
                continue;
            }
            set.push(j);
            self.enumerate(p + 1, sub(room, s), waste_left, set, found);
            set.pop();
            // An item the same size as one left out here would give the same bins.
            skipped = Some(s);
            if self.budget == 0 || found.len() >= COMPLETIONS_PER_BIN {
                return;
            }
        }
    }
}

/// Bins for every item in `k` bins of `cap` by bin completion, or `None` when the search
/// (at most `*budget` steps, which it uses up) finds none.
pub(super) fn complete_into(
    items: &[Item],
    cap: [u64; 2],
    k: usize,
    budget: &mut u64,
) -> Option<Vec<Vec<usize>>> {
    let total = items.iter().fold([0u64; 2], |t, it| {
        [t[CPU] + it.size[CPU], t[MEM] + it.size[MEM]]
    });
    let room = [cap[CPU] * k as u64, cap[MEM] * k as u64];
    if !fits(total, room) || items.iter().any(|it| !fits(it.size, cap)) {
        return None;
    }
    let mut search = Completion {
        items,
        cap,
        order: largest_first(items, cap),
        alive: vec![true; items.len()],
        bins: Vec::new(),
        budget: *budget,
    };
    let found = search.solve(sub(room, total), k);
    *budget = search.budget;
    found.then_some(search.bins)
}
