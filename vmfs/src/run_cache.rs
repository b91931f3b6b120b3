//! The block map of one open file as runs of contiguous blocks: the read path's
//! extent cache (see the README, "The read path and the per-handle block-map cache").
//!
//! Filled from the inode and the indirect blocks through [`crate::bmap`]; updated in
//! place by the handle's own allocating writes.

use crate::bmap::{place, IndBlocks, IndCache, Place};
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::format::{ptrs_per_block, Inode, NDIRECT};
use crate::run_index::RunIndex;

/// At most this many runs per open file (24 B each), so that a badly fragmented file
/// does not grow a handle without bound: past it the cache starts over.
const MAX_RUNS: usize = 1 << 16;

/// File blocks `f..f + n` live at physical blocks `p..p + n` (`p == 0`: a hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    f: u64,
    n: u64,
    p: u64,
}

impl Run {
    fn joins(&self, next: &Run) -> bool {
        self.f + self.n == next.f
            && ((self.p == 0 && next.p == 0) || (self.p != 0 && self.p + self.n == next.p))
    }
}

/// The block map of one open file as sorted, disjoint runs of contiguous blocks (an
/// extent cache, like ext4's extent status tree), so that the read path finds a block by
/// one binary search over a few runs instead of walking (and hashing) indirect blocks.
///
/// It is filled a whole leaf at a time: the pointers of the lowest indirect block that
/// covers the block asked for (or the 12 direct pointers, or the range a missing indirect
/// block leaves a hole). Those units partition the file's blocks for a given map, so
/// fills never overlap. The owner must [`RunCache::clear`] it whenever the map changes.
#[derive(Debug, Default)]
pub(crate) struct RunCache {
    runs: Vec<Run>,
    /// The way into `runs` by file block; every change of `runs` makes it stale.
    index: RunIndex,
}

impl RunCache {
    /// How many runs are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Forgets every run (the map changed).
    pub fn clear(&mut self) {
        self.runs.clear();
        self.index.stale();
    }

    #[inline(always)]
    fn find(&mut self, f: u64) -> Option<(u64, u64)> {
        let runs = &self.runs;
        let i = self.index.last_at_or_before(runs.len(), |i| runs[i].f, f)?;
        let r = runs.get(i)?;
        let d = f - r.f;
        if d >= r.n {
            return None;
        }
        let p = if r.p == 0 { 0 } else { r.p + d };
        Some((p, r.n - d))
    }

    /// `(physical block, blocks left in its run)` of file block `f`; a hole is block 0.
    /// Indirect blocks come from `over` (deferred changes) or else from `dev` (block size
    /// `bs`) through `ind` on a miss.
    #[inline(always)]
    pub fn lookup(
        &mut self,
        ind: &mut IndCache,
        over: Option<&IndBlocks>,
        dev: &dyn BlockDevice,
        bs: usize,
        ino: &Inode,
        f: u64,
    ) -> Result<(u64, u64)> {
        if let Some(hit) = self.find(f) {
            return Ok(hit);
        }
        self.fill_and_find(ind, over, dev, bs, ino, f)
    }

    /// A miss: fills the unit holding `f`, then finds it.
    #[inline(never)]
    fn fill_and_find(
        &mut self,
        ind: &mut IndCache,
        over: Option<&IndBlocks>,
        dev: &dyn BlockDevice,
        bs: usize,
        ino: &Inode,
        f: u64,
    ) -> Result<(u64, u64)> {
        self.fill(ind, over, dev, bs, ino, f)?;
        self.find(f)
            .ok_or_else(|| Error::corrupt("block map", format!("block {f} not mapped")))
    }

    fn fill(
        &mut self,
        ind: &mut IndCache,
        over: Option<&IndBlocks>,
        dev: &dyn BlockDevice,
        bs: usize,
        ino: &Inode,
        f: u64,
    ) -> Result<()> {
        self.index.stale();
        let ppb = ptrs_per_block(bs) as u64;
        let mut new = Vec::new();
        match place(f, bs)? {
            Place::Direct(_) => push_ptrs(&mut new, 0, &ino.direct),
            Place::Indirect(root, idx) => {
                let mut root_start = NDIRECT as u64;
                let mut size = ppb;
                for _ in 0..root {
                    root_start += size;
                    size = size.saturating_mul(ppb);
                }
                // `size`: file blocks under `blk`, which hangs at `level`.
                let r = f - root_start;
                let mut blk = ino.indirect[root];
                for (k, &i) in idx.iter().enumerate() {
                    let level = (root + 1 - k) as u8;
                    let start = root_start + r / size * size;
                    if blk == 0 {
                        new.push(Run {
                            f: start,
                            n: size,
                            p: 0,
                        });
                        break;
                    }
                    if level == 1 {
                        let ptrs = ind.block(over, dev, bs, blk, ino.ino, 1)?;
                        push_ptrs(&mut new, start, ptrs);
                        let got = ptrs.len() as u64;
                        if got < size {
                            new.push(Run {
                                f: start + got,
                                n: size - got,
                                p: 0,
                            });
                        }
                        // Its runs replace it: keep only the upper levels cached.
                        ind.map.remove(&blk);
                        break;
                    }
                    blk = ind
                        .block(over, dev, bs, blk, ino.ino, level)?
                        .get(i)
                        .copied()
                        .unwrap_or(0);
                    size /= ppb;
                }
            }
        }
        if self.runs.len() + new.len() > MAX_RUNS {
            self.runs.clear();
        }
        let at = self.runs.partition_point(|r| r.f < f);
        let k = new.len();
        self.runs.splice(at..at, new);
        self.join_edges(at, at + k);
        Ok(())
    }

    /// [`RunCache::set_contiguous`] one block at a time (a single block not inside a
    /// cached run is not cached, and stays so).
    fn set_each(&mut self, f: u64, n: u64, p: u64) {
        if n > 1 {
            (0..n).for_each(|k| self.set_contiguous(f + k, 1, p + k));
        }
    }

    /// Joins joinable neighbours across the edges `lo..=hi` (edge `e` is between runs
    /// `e - 1` and `e`), last edge first so the lower ones stay valid.
    fn join_edges(&mut self, lo: usize, hi: usize) {
        for e in (lo..=hi).rev() {
            if e > 0 && e < self.runs.len() && self.runs[e - 1].joins(&self.runs[e]) {
                self.runs[e - 1].n += self.runs[e].n;
                self.runs.remove(e);
            }
        }
    }

    /// File blocks `f..f + ps.len()` now live at physical blocks `ps` (the owner just
    /// mapped them): the cached runs covering them are split around them; blocks not
    /// cached stay so. A physically contiguous stretch inside one cached run (what a
    /// sequential write allocates) costs one split, not one per block.
    pub fn set_run(&mut self, f: u64, ps: &[u32]) {
        let mut k = 0;
        while k < ps.len() {
            let p = ps[k] as u64;
            let n = 1 + ps[k + 1..]
                .iter()
                .zip(1..)
                .take_while(|&(&q, d)| p != 0 && q as u64 == p + d)
                .count();
            self.set_contiguous(f + k as u64, n as u64, p);
            k += n;
        }
    }

    /// File blocks `f..f + n` now live at `p..p + n`.
    fn set_contiguous(&mut self, f: u64, n: u64, p: u64) {
        self.index.stale();
        let Some(i) = self.runs.partition_point(|r| r.f <= f).checked_sub(1) else {
            return self.set_each(f, n, p);
        };
        let r = self.runs[i];
        let d = f - r.f;
        if d + n > r.n {
            // Not inside one cached run: block by block (rare; a fill covers a leaf).
            return self.set_each(f, n, p);
        }
        if r.p != 0 && r.p + d == p {
            return;
        }
        let at = |k: u64| if r.p == 0 { 0 } else { r.p + k };
        let parts = [
            Run {
                f: r.f,
                n: d,
                p: r.p,
            },
            Run { f, n, p },
            Run {
                f: f + n,
                n: r.n - d - n,
                p: at(d + n),
            },
        ];
        let parts = parts.into_iter().filter(|r| r.n > 0);
        let before = self.runs.len();
        self.runs.splice(i..=i, parts);
        let k = self.runs.len() + 1 - before;
        self.join_edges(i, i + k);
        if self.runs.len() > MAX_RUNS {
            self.runs.clear();
        }
    }
}

/// Appends `ptrs` (file blocks from `start`) as runs.
fn push_ptrs(out: &mut Vec<Run>, start: u64, ptrs: &[u32]) {
    for (i, &p) in ptrs.iter().enumerate() {
        let r = Run {
            f: start + i as u64,
            n: 1,
            p: p as u64,
        };
        match out.last_mut() {
            Some(last) if last.joins(&r) => last.n += 1,
            _ => out.push(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Every cached block as (file block, physical block or 0).
    fn expand(c: &RunCache) -> BTreeMap<u64, u64> {
        let mut m = BTreeMap::new();
        for r in &c.runs {
            for k in 0..r.n {
                m.insert(r.f + k, if r.p == 0 { 0 } else { r.p + k });
            }
        }
        m
    }

    proptest! {
        /// `set_run` changes exactly the cached blocks it names, as a block-by-block model
        /// does, and leaves the runs sorted and disjoint, whatever mix of holes, mapped
        /// stretches and uncached gaps it meets and however its blocks lie on the device.
        #[test]
        fn set_run_agrees_with_a_block_by_block_model(
            // (length, 0 = uncached gap, 1 = hole, else mapped from that block)
            segs in proptest::collection::vec((1u64..40, prop_oneof![Just(0u64), Just(1), 2u64..5000]), 1..8),
            edits in proptest::collection::vec(
                (0u64..200, proptest::collection::vec(prop_oneof![Just(None), (1u32..9000).prop_map(Some)], 1..60), 1u32..9000),
                1..6,
            ),
        ) {
            let mut c = RunCache::default();
            let mut f = 0;
            for (n, kind) in segs {
                if kind != 0 {
                    let ptrs: Vec<u32> = (0..n).map(|k| if kind == 1 { 0 } else { (kind + k) as u32 }).collect();
                    push_ptrs(&mut c.runs, f, &ptrs);
                }
                f += n;
            }
            let mut model = expand(&c);
            for (f, shape, base) in edits {
                // `None`: the next block of a contiguous stretch from `base`.
                let mut next = base;
                let ps: Vec<u32> = shape.iter().map(|s| {
                    let p = s.unwrap_or(next);
                    next = p + 1;
                    p
                }).collect();
                c.set_run(f, &ps);
                for (k, &p) in ps.iter().enumerate() {
                    if let Some(v) = model.get_mut(&(f + k as u64)) {
                        *v = p as u64;
                    }
                }
                prop_assert_eq!(&expand(&c), &model);
                prop_assert!(c.runs.windows(2).all(|w| w[0].f + w[0].n <= w[1].f));
                for (&b, &p) in &model {
                    prop_assert_eq!(c.find(b).map(|x| x.0), Some(p));
                }
            }
        }
    }
}
