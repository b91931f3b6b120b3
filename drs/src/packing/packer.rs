//! The packer's state: the items, which are left, the indexes that find partners fast,
//! and the rule checks. The heuristics (`heuristic`, `near`) are methods on it.

use std::cell::RefCell;

use super::{disjoint, key, largest_first, FxMap, Item};
use crate::validate::{CPU, MEM};

/// Items left to pack and the indexes over them.
pub(super) struct Packer {
    pub(super) items: Vec<Item>,
    pub(super) hosts: usize,
    pub(super) steps: u64,
    pub(super) budget: u64,
    pub(super) alive: Vec<bool>,
    /// Alive items, largest first (compacted after each bin).
    pub(super) order: Vec<usize>,
    /// Alive items by CPU size, to scan only partners whose CPU can still be completed.
    pub(super) by_cpu: Vec<usize>,
    /// Smallest and largest item CPU sizes.
    pub(super) cpu_range: (u64, u64),
    /// Smallest and largest item memory sizes.
    pub(super) mem_range: (u64, u64),
    pub(super) buckets: FxMap<(u64, u64), Vec<usize>>,
    /// Each item's allowed-host mask, interned (`None` = every host).
    pub(super) mask_of: Vec<Option<usize>>,
    pub(super) masks: Vec<Vec<bool>>,
    /// Sorted mask ids → whether some host is in all of them.
    pub(super) meets: RefCell<FxMap<Vec<usize>, bool>>,
}

impl Packer {
    pub(super) fn new(hosts: usize, items: Vec<Item>, cap: [u64; 2], budget: u64) -> Self {
        let order = largest_first(&items, cap);
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
            hosts,
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
        }
    }

    pub(super) fn out_of_budget(&self) -> bool {
        self.steps >= self.budget
    }

    /// May `j` join the items in `set`?
    pub(super) fn compatible(&self, set: &[usize], j: usize) -> bool {
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
}
