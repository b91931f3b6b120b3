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
