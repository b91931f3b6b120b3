//! Guest memory as the protocol sees it: regions of 4 KiB pages ([`Layout`]) and sets of
//! their pages ([`PageSet`], one bitmap per region: dirty logs, what a round sends).

use crate::error::{Error, Result};
use crate::wire::{MemoryRegion, PAGE_SIZE};

const PAGE: u64 = PAGE_SIZE as u64;

/// The guest's RAM regions: page-aligned, non-empty, ascending and disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    regions: Vec<MemoryRegion>,
    /// Page frame number of each region's first page.
    first_pfn: Vec<u64>,
}

impl Layout {
    /// Checks `regions`; an unaligned, empty, overlapping or unordered region is
    /// [`Error::InvalidValue`].
    pub fn new(regions: Vec<MemoryRegion>) -> Result<Self> {
        let mut end = 0u64;
        for r in &regions {
            let bad = |what| Error::InvalidValue {
                what,
                value: r.base,
            };
            if r.base % PAGE != 0 || r.bytes % PAGE != 0 || r.bytes == 0 {
                return Err(bad("memory region alignment"));
            }
            if r.base < end {
                return Err(bad("memory region order"));
            }
            end = r
                .base
                .checked_add(r.bytes)
                .ok_or(bad("memory region end"))?;
        }
        let first_pfn = regions.iter().map(|r| r.base / PAGE).collect();
        Ok(Self { regions, first_pfn })
    }

    /// The regions.
    #[must_use]
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions
    }

    /// Pages in region `region`.
    #[must_use]
    pub fn region_pages(&self, region: usize) -> u64 {
        self.regions.get(region).map_or(0, |r| r.bytes / PAGE)
    }

    /// Pages in all regions.
    #[must_use]
    pub fn pages(&self) -> u64 {
        self.regions.iter().map(|r| r.bytes / PAGE).sum()
    }

    /// Bytes in all regions.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.bytes).sum()
    }

    /// The page frame number of page `page` of region `region`.
    #[must_use]
    pub fn pfn(&self, region: usize, page: u64) -> u64 {
        self.first_pfn[region] + page
    }

    /// The region and page index holding `pfn`, or `None` outside every region.
    #[must_use]
    pub fn locate(&self, pfn: u64) -> Option<(usize, u64)> {
        let i = self.first_pfn.partition_point(|first| *first <= pfn);
        let region = i.checked_sub(1)?;
        let page = pfn - self.first_pfn[region];
        (page < self.region_pages(region)).then_some((region, page))
    }
}

/// A set of guest pages: one bitmap per region of a [`Layout`] (bit `i` of word `i / 64`
/// is page `i` of the region), the shape of KVM's dirty log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSet {
    bits: Vec<Vec<u64>>,
    pages: Vec<u64>,
}

impl PageSet {
    /// No pages of `layout`.
    #[must_use]
    pub fn empty(layout: &Layout) -> Self {
        let pages: Vec<u64> = (0..layout.regions.len())
            .map(|r| layout.region_pages(r))
            .collect();
        let bits = pages
            .iter()
            .map(|p| vec![0u64; usize::try_from(p.div_ceil(64)).unwrap_or(0)])
            .collect();
        Self { bits, pages }
    }

    /// Every page of `layout`.
    #[must_use]
    pub fn full(layout: &Layout) -> Self {
        let mut set = Self::empty(layout);
        for (region, words) in set.bits.iter_mut().enumerate() {
            words.fill(u64::MAX);
            let tail = set.pages[region] % 64;
            if let (Some(last), 1..) = (words.last_mut(), tail) {
                *last = (1u64 << tail) - 1;
            }
        }
        set
    }

    /// Adds page `page` of region `region` (ignored outside the layout).
    pub fn insert(&mut self, region: usize, page: u64) {
        if page < self.pages.get(region).copied().unwrap_or(0) {
            if let Some(word) = self.word_mut(region, page) {
                *word |= 1 << (page % 64);
            }
        }
    }

    /// Whether page `page` of region `region` is in the set.
    #[must_use]
    pub fn contains(&self, region: usize, page: u64) -> bool {
        let word = usize::try_from(page / 64).unwrap_or(usize::MAX);
        self.bits
            .get(region)
            .and_then(|w| w.get(word))
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// ORs a region's bitmap in the dirty-log shape (extra bits past the region's end are
    /// dropped).
    pub fn merge_region_bits(&mut self, region: usize, bits: &[u64]) {
        let Some(words) = self.bits.get_mut(region) else {
            return;
        };
        for (w, b) in words.iter_mut().zip(bits) {
            *w |= b;
        }
        let tail = self.pages[region] % 64;
        if let (Some(last), 1..) = (words.last_mut(), tail) {
            *last &= (1u64 << tail) - 1;
        }
    }

    /// Adds every page of `other` (same layout).
    pub fn union_with(&mut self, other: &PageSet) {
        for (region, bits) in other.bits.iter().enumerate() {
            self.merge_region_bits(region, bits);
        }
    }

    /// Pages in the set.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.bits
            .iter()
            .flatten()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bits.iter().flatten().all(|w| *w == 0)
    }

    /// Removes every page.
    pub fn clear(&mut self) {
        for words in &mut self.bits {
            words.fill(0);
        }
    }

    /// The first page at or after `(region, page)` in layout order.
    #[must_use]
    pub fn next_from(&self, region: usize, page: u64) -> Option<(usize, u64)> {
        let mut page = page;
        for r in region..self.bits.len() {
            let words = &self.bits[r];
            let mut wi = usize::try_from(page / 64).unwrap_or(usize::MAX);
            let mut mask = u64::MAX
                .checked_shl(u32::try_from(page % 64).unwrap_or(0))
                .unwrap_or(0);
            while let Some(w) = words.get(wi) {
                let hit = w & mask;
                if hit != 0 {
                    return Some((r, wi as u64 * 64 + u64::from(hit.trailing_zeros())));
                }
                wi += 1;
                mask = u64::MAX;
            }
            page = 0;
        }
        None
    }

    /// The pages in layout order, as `(region, page)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut at = Some((0usize, 0u64));
        std::iter::from_fn(move || {
            let (r, p) = at?;
            let found = self.next_from(r, p);
            at = found.map(|(r, p)| (r, p + 1));
            found
        })
    }

    fn word_mut(&mut self, region: usize, page: u64) -> Option<&mut u64> {
        let word = usize::try_from(page / 64).ok()?;
        self.bits.get_mut(region)?.get_mut(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout() -> Layout {
        Layout::new(vec![
            MemoryRegion {
                base: 0,
                bytes: 100 * PAGE,
            },
            MemoryRegion {
                base: 1 << 32,
                bytes: 3 * PAGE,
            },
        ])
        .unwrap()
    }

    #[test]
    fn layout_checks_and_locates() {
        let l = layout();
        assert_eq!(l.pages(), 103);
        assert_eq!(l.locate(99), Some((0, 99)));
        assert_eq!(l.locate(100), None);
        assert_eq!(l.locate((1 << 32) / PAGE + 2), Some((1, 2)));
        assert_eq!(l.locate((1 << 32) / PAGE + 3), None);
        let unaligned = MemoryRegion {
            base: 1,
            bytes: PAGE,
        };
        assert!(Layout::new(vec![unaligned]).is_err());
        let a = MemoryRegion {
            base: 0,
            bytes: 2 * PAGE,
        };
        let b = MemoryRegion {
            base: PAGE,
            bytes: PAGE,
        };
        assert!(Layout::new(vec![a, b]).is_err(), "overlap");
        assert!(Layout::new(vec![MemoryRegion { base: 0, bytes: 0 }]).is_err());
    }

    #[test]
    fn full_set_has_every_page_and_no_more() {
        let l = layout();
        let full = PageSet::full(&l);
        assert_eq!(full.count(), 103);
        assert_eq!(full.iter().count(), 103);
        assert!(!full.contains(0, 100));
    }

    proptest! {
        #[test]
        fn iteration_matches_a_model(pages in proptest::collection::btree_set((0usize..2, 0u64..100), 0..60)) {
            let l = layout();
            let mut set = PageSet::empty(&l);
            let mut model = std::collections::BTreeSet::new();
            for (r, p) in pages {
                set.insert(r, p);
                if p < l.region_pages(r) {
                    model.insert((r, p));
                }
            }
            prop_assert_eq!(set.count(), model.len() as u64);
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            for &(r, p) in &model {
                prop_assert!(set.contains(r, p));
            }
        }
    }
}
