//! Near-exact bin completion: bins filled to within a tolerance of capacity, the
//! tolerance growing from 0.1 % to 4 % of a host per resource, so the fullest bins are
//! committed first whatever the sizes (exact completion alone needs sizes that sum to
//! capacity exactly; a VM one MHz smaller defeats it).
//!
//! A bin starts with the largest item left. While its room is more than two items'
//! worth, the item that keeps the room's shape closest to the items' (CPU share ≈
//! memory share) joins it. Then a pair (or a single item) that closes the room to
//! within the tolerance is looked for: the second item from a CPU window scanned outward
//! from half the room, the third from a grid of cells one tolerance wide (a lookup
//! touches four cells). A bin that cannot be closed is left for a larger tolerance and,
//! in the end, for the minimum-slack search.

use super::packer::Packer;
use super::{fits, sub, FxMap};
use crate::validate::{CPU, MEM};

/// Tolerances, in thousandths of a host per resource, tried in order.
pub(super) const LEVELS_PERMILLE: [u64; 7] = [1, 2, 5, 10, 20, 30, 40];
/// Second items tried per bin and level.
const PAIR_SCAN: usize = 256;
/// Items looked at when choosing one that keeps the room's shape.
const SHAPE_SCAN: usize = 64;

/// Items bucketed by size into cells one tolerance wide.
pub(super) struct Grid {
    cell: [u64; 2],
    cells: FxMap<(u64, u64), Vec<usize>>,
}

impl Grid {
    /// A grid of the alive items with cells `tol` wide.
    pub(super) fn new(p: &Packer, tol: [u64; 2]) -> Self {
        let cell = [tol[CPU].max(1), tol[MEM].max(1)];
        let mut cells: FxMap<(u64, u64), Vec<usize>> = FxMap::default();
        for &i in &p.order {
            let s = p.items[i].size;
            cells
                .entry((s[CPU] / cell[CPU], s[MEM] / cell[MEM]))
                .or_default()
                .push(i);
        }
        Self { cell, cells }
    }
}

/// Tolerance of a level for capacity `cap`.
pub(super) fn tolerance(cap: [u64; 2], permille: u64) -> [u64; 2] {
    [
        (cap[CPU] * permille / 1000).max(1),
        (cap[MEM] * permille / 1000).max(1),
    ]
}

impl Packer {
    /// The alive item that closes `rem` to within `tol` in both resources with the
    /// least slack, compatible with `set` and accepted by `ok`.
    fn close_with_one(
        &mut self,
        grid: &Grid,
        set: &[usize],
        rem: [u64; 2],
        tol: [u64; 2],
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let lo = [
            rem[CPU].saturating_sub(tol[CPU]),
            rem[MEM].saturating_sub(tol[MEM]),
        ];
        let mut best: Option<(u128, usize)> = None;
        for cx in lo[CPU] / grid.cell[CPU]..=rem[CPU] / grid.cell[CPU] {
            for cy in lo[MEM] / grid.cell[MEM]..=rem[MEM] / grid.cell[MEM] {
                let Some(cell) = grid.cells.get(&(cx, cy)) else {
                    continue;
                };
                for &k in cell {
                    self.steps += 1;
                    let s = self.items[k].size;
                    if !self.alive[k]
                        || set.contains(&k)
                        || !fits(s, rem)
                        || s[CPU] < lo[CPU]
                        || s[MEM] < lo[MEM]
                    {
                        continue;
                    }
                    // Each resource's slack in units of its tolerance (u128: sizes go to 2^40).
                    let slack = u128::from(rem[CPU] - s[CPU]) * u128::from(tol[MEM])
                        + u128::from(rem[MEM] - s[MEM]) * u128::from(tol[CPU]);
                    if best.is_none_or(|(b, _)| slack < b) && ok(k) && self.compatible(set, k) {
                        best = Some((slack, k));
                    }
                }
            }
        }
        best.map(|(_, k)| k)
    }

    /// A bin that starts with `first` and fills `cap` to within `tol`, or `None`.
    pub(super) fn near_bin(
        &mut self,
        grid: &Grid,
        first: usize,
        cap: [u64; 2],
        tol: [u64; 2],
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<Vec<usize>> {
        let mut set = vec![first];
        let mut rem = sub(cap, self.items[first].size);
        let closed = |r: [u64; 2]| r[CPU] <= tol[CPU] && r[MEM] <= tol[MEM];
        // Grow while the room is more than two of the largest items' worth.
        let (max_c, max_m) = (self.cpu_range.1, self.mem_range.1);
        let mut guard = self.order.len();
        while (rem[CPU] > 2 * max_c || rem[MEM] > 2 * max_m) && guard > 0 {
            guard -= 1;
            let j = self.shape_keeper(&set, rem, cap, ok)?;
            set.push(j);
            rem = sub(rem, self.items[j].size);
        }
        if closed(rem) {
            return Some(set);
        }
        if let Some(k) = self.close_with_one(grid, &set, rem, tol, ok) {
            set.push(k);
            return Some(set);
        }
        // A pair: second items from the CPU window around half the room.
        let lo = rem[CPU].saturating_sub(max_c);
        let hi = rem[CPU].saturating_sub(self.cpu_range.0);
        let items = &self.items;
        let start = self.by_cpu.partition_point(|&j| items[j].size[CPU] < lo);
        let end = self.by_cpu.partition_point(|&j| items[j].size[CPU] <= hi);
        if start >= end {
            return None;
        }
        let mid =
            start + self.by_cpu[start..end].partition_point(|&j| items[j].size[CPU] < rem[CPU] / 2);
        let mut scanned = 0;
        for step in 0..(end - start) {
            // mid, mid-1, mid+1, mid-2, …, clipped to the window.
            let off = step.div_ceil(2);
            let n = if step % 2 == 1 {
                match mid.checked_sub(off) {
                    Some(n) if n >= start => n,
                    _ => continue,
                }
            } else {
                mid + off
            };
            if n >= end {
                continue;
            }
            let j = self.by_cpu[n];
            self.steps += 1;
            if !self.alive[j] || set.contains(&j) {
                continue;
            }
            let sj = self.items[j].size;
            if !fits(sj, rem) || !ok(j) || !self.compatible(&set, j) {
                continue;
            }
            scanned += 1;
            if scanned > PAIR_SCAN {
                break;
            }
            let r2 = sub(rem, sj);
            set.push(j);
            if closed(r2) {
                return Some(set);
            }
            // A third item exists only between the smallest and the largest sizes (plus
            // the tolerance): no lookup otherwise.
            let possible = r2[CPU] >= self.cpu_range.0
                && r2[MEM] >= self.mem_range.0
                && r2[CPU] <= max_c + tol[CPU]
                && r2[MEM] <= max_m + tol[MEM];
            if possible {
                if let Some(k) = self.close_with_one(grid, &set, r2, tol, ok) {
                    set.push(k);
                    return Some(set);
                }
            }
            set.pop();
        }
        None
    }

    /// Among the first items that fit, the one leaving the room's CPU and memory shares
    /// closest to each other (the shape of a typical pair of items), larger on ties.
    fn shape_keeper(
        &mut self,
        set: &[usize],
        rem: [u64; 2],
        cap: [u64; 2],
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let share = |r: [u64; 2]| {
            (
                r[CPU] as f64 / cap[CPU] as f64,
                r[MEM] as f64 / cap[MEM] as f64,
            )
        };
        let mut best: Option<(f64, usize)> = None;
        let mut looked = 0;
        for n in 0..self.order.len() {
            let j = self.order[n];
            self.steps += 1;
            if !self.alive[j] || set.contains(&j) {
                continue;
            }
            let sj = self.items[j].size;
            if !fits(sj, rem) || !ok(j) || !self.compatible(set, j) {
                continue;
            }
            let (c, m) = share(sub(rem, sj));
            let skew = (c - m).abs();
            if best.is_none_or(|(b, _)| skew < b) {
                best = Some((skew, j));
            }
            looked += 1;
            if looked >= SHAPE_SCAN {
                break;
            }
        }
        best.map(|(_, j)| j)
    }
}
