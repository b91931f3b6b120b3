//! The block map of an inode: 12 direct pointers, then single, double and triple
//! indirect blocks (sparse: a 0 pointer is a hole).

use crate::error::{Error, Result};
use crate::format::{ptrs_per_block, Inode, NDIRECT};
use crate::op::IndCache;
use crate::volume::Shared;

/// Indices from the top indirect block down (1 to 3 of them), without a heap allocation
/// on the I/O path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Idx {
    a: [usize; 3],
    n: usize,
}

impl std::ops::Deref for Idx {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.a[..self.n]
    }
}

/// Where file block `f` hangs: a direct slot, or an indirect root and the index path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    Direct(usize),
    /// (root 0..3, indices from the top block down)
    Indirect(usize, Idx),
}

/// Maps file block `f` to its place, for block size `bs`.
pub(crate) fn place(f: u64, bs: usize) -> Result<Place> {
    if f < NDIRECT as u64 {
        return Ok(Place::Direct(f as usize));
    }
    let p = ptrs_per_block(bs) as u64;
    let mut r = f - NDIRECT as u64;
    let mut span = p;
    for root in 0..3 {
        if r < span {
            let mut idx = Idx {
                a: [0; 3],
                n: root + 1,
            };
            let mut s = span;
            for k in 0..=root {
                s /= p;
                idx.a[k] = (r / s) as usize;
                r %= s;
            }
            return Ok(Place::Indirect(root, idx));
        }
        r -= span;
        span = span.saturating_mul(p);
    }
    Err(Error::TooLarge(f.saturating_mul(bs as u64)))
}

/// Largest file size in bytes for block size `bs`.
pub fn max_file_size(bs: usize) -> u64 {
    let p = ptrs_per_block(bs) as u64;
    (NDIRECT as u64 + p + p * p + p * p * p).saturating_mul(bs as u64)
}

/// Reads indirect blocks (through a cache).
pub(crate) trait IndRead {
    /// Pointer `i` of indirect block `blk` of inode `ino` at `level`.
    fn ptr(&mut self, blk: u32, ino: u32, level: u8, i: usize) -> Result<u32>;
}

/// Physical block of file block `f` (0 = hole).
pub(crate) fn lookup(r: &mut dyn IndRead, ino: &Inode, f: u64, bs: usize) -> Result<u32> {
    match place(f, bs)? {
        Place::Direct(i) => Ok(ino.direct[i]),
        Place::Indirect(root, idx) => {
            let mut blk = ino.indirect[root];
            let mut level = (root + 1) as u8;
            for &i in idx.iter() {
                if blk == 0 {
                    return Ok(0);
                }
                blk = r.ptr(blk, ino.ino, level, i)?;
                level = level.saturating_sub(1);
            }
            Ok(blk)
        }
    }
}

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
}

impl RunCache {
    /// Forgets every run (the map changed).
    pub fn clear(&mut self) {
        self.runs.clear();
    }

    fn find(&self, f: u64) -> Option<(u64, u64)> {
        let i = self.runs.partition_point(|r| r.f <= f);
        let r = self.runs.get(i.checked_sub(1)?)?;
        let d = f - r.f;
        if d >= r.n {
            return None;
        }
        let p = if r.p == 0 { 0 } else { r.p + d };
        Some((p, r.n - d))
    }

    /// `(physical block, blocks left in its run)` of file block `f`; a hole is block 0.
    /// Indirect blocks come through `ind` on a miss.
    pub fn lookup(
        &mut self,
        ind: &mut IndCache,
        sh: &Shared,
        ino: &Inode,
        f: u64,
    ) -> Result<(u64, u64)> {
        if let Some(hit) = self.find(f) {
            return Ok(hit);
        }
        self.fill(ind, sh, ino, f)?;
        self.find(f)
            .ok_or_else(|| Error::corrupt("block map", format!("block {f} not mapped")))
    }

    fn fill(&mut self, ind: &mut IndCache, sh: &Shared, ino: &Inode, f: u64) -> Result<()> {
        let bs = sh.bs();
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
                        let ptrs = ind.block(sh, blk, ino.ino, 1)?;
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
                        .block(sh, blk, ino.ino, level)?
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

    /// File block `f` now lives at physical block `p` (the owner just mapped it): a
    /// cached run covering `f` is split around it; a block not cached stays so.
    pub fn set(&mut self, f: u64, p: u64) {
        let Some(i) = self.runs.partition_point(|r| r.f <= f).checked_sub(1) else {
            return;
        };
        let r = self.runs[i];
        let d = f - r.f;
        if d >= r.n || (r.p != 0 && r.p + d == p) {
            return;
        }
        let at = |k: u64| if r.p == 0 { 0 } else { r.p + k };
        let parts = [
            Run {
                f: r.f,
                n: d,
                p: r.p,
            },
            Run { f, n: 1, p },
            Run {
                f: f + 1,
                n: r.n - d - 1,
                p: at(d + 1),
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

    #[test]
    fn places_cover_two_tib_and_more() {
        let bs = 4096;
        let ind = |f: u64| match place(f, bs).unwrap() {
            Place::Indirect(r, i) => (r, i.to_vec()),
            Place::Direct(d) => (9, vec![d]),
        };
        assert_eq!(place(0, bs).unwrap(), Place::Direct(0));
        assert_eq!(ind(12), (0, vec![0]));
        assert_eq!(ind(12 + 1020 + 5), (1, vec![0, 5]));
        assert_eq!(ind(12 + 1020 + 1020 * 1020), (2, vec![0, 0, 0]));
        let two_tib_block = (2u64 << 40) / bs as u64;
        assert!(matches!(
            place(two_tib_block, bs).unwrap(),
            Place::Indirect(2, _)
        ));
        assert!(max_file_size(bs) > 2u64 << 40);
        assert!(place(max_file_size(bs) / bs as u64, bs).is_err());
    }
}
