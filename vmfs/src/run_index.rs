//! A direct way into a sorted list of run starts: the block-map cache's lookup in O(1).
//!
//! Why: a random 4 KiB read from the page cache costs about 1 µs, and vmfs's own share of
//! it has to stay within 5 %. A binary search over the runs of a file written at 1 MiB
//! blocks (a run per 32 MiB cluster, 33 for 1 GiB) took 11 ns of that: six dependent
//! loads. This index answers with one load and a step or two.

/// Over sorted, distinct run starts `s[0] < s[1] < … < s[n-1]` (file blocks), `slot[k]` is
/// the index of the last run starting at or before block `k << shift` (0 if none): a
/// lookup of block `f` starts at `slot[f >> shift]` and steps over the runs that start
/// inside its granule. Granules are sized so the table has at most `4 n` entries (4 B
/// each, against a run's 24 B), so that few granules hold the start of a run.
///
/// The index is built lazily: after the runs change it is stale, and lookups binary
/// search until as many have been made as there are runs; then it is rebuilt (about
/// `3 n` steps), so a lookup costs O(1) amortised even when changes and lookups alternate,
/// and writes that change the runs pay nothing for it.
#[derive(Debug, Default)]
pub(crate) struct RunIndex {
    slot: Vec<u32>,
    shift: u32,
    /// Whether `slot` describes the current runs.
    fresh: bool,
    /// Lookups made by binary search since the runs last changed.
    searched: usize,
}

/// Past this many steps inside one granule (runs bunched where the table is coarse, as
/// when a huge hole stretches it) a lookup binary searches the rest.
const MAX_STEPS: usize = 4;

/// Table entries per run, at most.
const TABLE_PER_RUN: u64 = 4;

impl RunIndex {
    /// The runs changed.
    pub fn stale(&mut self) {
        self.fresh = false;
        self.searched = 0;
    }

    /// The index of the last of the `n` starts (`start(i)`, sorted and distinct) that is
    /// at or before `f`; `None` when `f` is before all of them.
    #[inline(always)]
    pub fn last_at_or_before(
        &mut self,
        n: usize,
        start: impl Fn(usize) -> u64,
        f: u64,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        if !self.fresh {
            return self.stale_lookup(n, &start, f);
        }
        self.fresh_lookup(n, &start, f)
    }

    /// [`Self::last_at_or_before`] with the table fresh and `n > 0`.
    #[inline(always)]
    fn fresh_lookup(&self, n: usize, start: &impl Fn(usize) -> u64, f: u64) -> Option<usize> {
        if f >= start(n - 1) {
            return Some(n - 1);
        }
        if f < start(0) {
            return None;
        }
        // `start(0) <= f < start(n - 1)`: `f >> shift` is inside the table, and no step
        // below goes past `n - 1`.
        let Some(&i) = self.slot.get((f >> self.shift) as usize) else {
            return search(0, n, start, f);
        };
        let mut i = i as usize;
        // Most granules hold no run start, a few one: one step without a branch to
        // mispredict, then rarely more.
        i += usize::from(start(i + 1) <= f);
        for _ in 0..MAX_STEPS {
            if start(i + 1) > f {
                return (start(i) <= f).then_some(i);
            }
            i += 1;
        }
        search(i, n, start, f)
    }

    /// A lookup while the table is stale: binary search, and build the table once there
    /// have been as many such lookups as there are runs.
    #[cold]
    #[inline(never)]
    fn stale_lookup(&mut self, n: usize, start: &impl Fn(usize) -> u64, f: u64) -> Option<usize> {
        self.searched += 1;
        if self.searched >= n && self.build(n, start) {
            return self.fresh_lookup(n, start, f);
        }
        search(0, n, start, f)
    }

    /// Builds the table for the current runs; false if they are too many to index.
    fn build(&mut self, n: usize, start: &impl Fn(usize) -> u64) -> bool {
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        let last = start(n - 1);
        let mut shift = 0;
        while (last >> shift) >= TABLE_PER_RUN * n as u64 {
            shift += 1;
        }
        let len = (last >> shift) as usize + 1;
        self.slot.clear();
        self.slot.reserve(len);
        let mut i = 0u32;
        for k in 0..len as u64 {
            let b = k << shift;
            while i + 1 < n32 && start(i as usize + 1) <= b {
                i += 1;
            }
            self.slot.push(i);
        }
        self.shift = shift;
        self.fresh = true;
        true
    }
}

/// Binary search of starts `lo..n` for the last at or before `f`, knowing that every
/// start before `lo` is at or before `f` too (or `lo == 0`).
fn search(lo: usize, n: usize, start: &impl Fn(usize) -> u64, f: u64) -> Option<usize> {
    let (mut a, mut b) = (lo, n);
    while a < b {
        let m = a + (b - a) / 2;
        if start(m) <= f {
            a = m + 1;
        } else {
            b = m;
        }
    }
    a.checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model(s: &[u64], f: u64) -> Option<usize> {
        s.partition_point(|&x| x <= f).checked_sub(1)
    }

    proptest! {
        /// Fresh or stale, the index answers as a binary search would, for runs bunched
        /// together, spread out, and behind huge gaps (holes under missing indirect blocks).
        #[test]
        fn answers_as_a_binary_search(
            gaps in prop::collection::vec(
                prop_oneof![1u64..4, 1u64..100, 1u64..(1 << 40)], 0..200),
            first in 0u64..1000,
            queries in prop::collection::vec(any::<u64>(), 1..300),
        ) {
            let mut s = Vec::new();
            let mut at = first;
            for g in gaps {
                s.push(at);
                at = at.saturating_add(g);
                if at == u64::MAX { break; }
            }
            let end = s.last().copied().unwrap_or(0).saturating_add(10);
            let mut ix = RunIndex::default();
            for (k, q) in queries.into_iter().enumerate() {
                // Most queries near the runs, some anywhere.
                let f = if k % 4 == 3 { q } else { q % end };
                prop_assert_eq!(ix.last_at_or_before(s.len(), |i| s[i], f), model(&s, f));
                if k == 150 {
                    ix.stale();
                }
            }
        }
    }

    #[test]
    fn builds_after_as_many_lookups_as_runs_and_goes_stale() {
        let s: Vec<u64> = (0..33).map(|i| i * 31).collect();
        let mut ix = RunIndex::default();
        for f in 0..32 {
            assert_eq!(
                ix.last_at_or_before(s.len(), |i| s[i], f),
                Some(f as usize / 31)
            );
        }
        assert!(!ix.fresh);
        assert_eq!(ix.last_at_or_before(s.len(), |i| s[i], 1000), Some(32));
        assert!(ix.fresh);
        assert!(ix.slot.len() <= TABLE_PER_RUN as usize * s.len());
        for f in 0..1100 {
            assert_eq!(ix.last_at_or_before(s.len(), |i| s[i], f), model(&s, f));
        }
        ix.stale();
        assert!(!ix.fresh);
        // One run, fresh at once: before, at and after its start.
        for (f, want) in [(4, None), (5, Some(0)), (6, Some(0))] {
            assert_eq!(ix.last_at_or_before(1, |_| 5, f), want);
        }
        ix.stale();
        assert_eq!(ix.last_at_or_before(2, |i| [5, 9][i], 4), None);
        assert_eq!(ix.last_at_or_before(0, |_| 0, 4), None);
    }
}
