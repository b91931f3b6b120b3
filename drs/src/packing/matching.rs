//! Matching packed bins to hosts under VM-host rules.

use super::{bin_size, fits, FxMap, Item};
use crate::validate::Cluster;

/// Match bins to hosts (augmenting paths for bins restricted by rules, then the rest).
pub(super) fn match_bins(
    c: &Cluster,
    items: &[Item],
    bins: &[Vec<usize>],
    hosts: &[usize],
) -> Vec<Option<usize>> {
    let allowed = |b: &Vec<usize>, h: usize| {
        b.iter()
            .all(|&i| items[i].allowed.as_ref().is_none_or(|a| a[h]))
    };
    let restricted: Vec<usize> = (0..bins.len())
        .filter(|&b| bins[b].iter().any(|&i| items[i].allowed.is_some()))
        .collect();
    let mut host_bin: Vec<Option<usize>> = vec![None; c.hosts.len()];
    let mut bin_host: Vec<Option<usize>> = vec![None; bins.len()];
    let fits_cap = |b: &Vec<usize>, h: usize| fits(bin_size(items, b), c.hosts[h].capacity);
    // Greedy first: most restricted bins rarely compete, and each direct hit saves a search.
    let mut unmatched = Vec::new();
    for &b in &restricted {
        match hosts
            .iter()
            .copied()
            .find(|&h| host_bin[h].is_none() && allowed(&bins[b], h) && fits_cap(&bins[b], h))
        {
            Some(h) => {
                host_bin[h] = Some(b);
                bin_host[b] = Some(h);
            }
            None => unmatched.push(b),
        }
    }
    for &b in &unmatched {
        // Kuhn's augmenting path, iterative with an explicit stack; bounded by hosts visited.
        let mut seen = vec![false; c.hosts.len()];
        let mut stack: Vec<(usize, usize)> = vec![(b, 0)];
        let mut parent: Vec<(usize, usize)> = Vec::new(); // (bin, host) edges on the path
        let mut found = None;
        while let Some((bin, pos)) = stack.pop() {
            let mut next = None;
            for (k, &h) in hosts.iter().enumerate().skip(pos) {
                if !seen[h] && allowed(&bins[bin], h) && fits_cap(&bins[bin], h) {
                    next = Some((k, h));
                    break;
                }
            }
            let Some((k, h)) = next else {
                parent.pop();
                continue;
            };
            seen[h] = true;
            stack.push((bin, k + 1));
            parent.push((bin, h));
            match host_bin[h] {
                None => {
                    found = Some(());
                    break;
                }
                Some(other) => stack.push((other, 0)),
            }
        }
        if found.is_some() {
            // The path's last pair of each bin is its new host.
            let mut last: FxMap<usize, usize> = FxMap::default();
            for &(bin, h) in &parent {
                last.insert(bin, h);
            }
            for (&bin, &h) in &last {
                if let Some(old) = bin_host[bin] {
                    if host_bin[old] == Some(bin) {
                        host_bin[old] = None;
                    }
                }
                bin_host[bin] = Some(h);
            }
            for (&bin, &h) in &last {
                host_bin[h] = Some(bin);
            }
        }
    }
    let mut is_restricted = vec![false; bins.len()];
    for &b in &restricted {
        is_restricted[b] = true;
    }
    let mut free = hosts.iter().copied().filter(|&h| host_bin[h].is_none());
    for (b, slot) in bin_host.iter_mut().enumerate() {
        if slot.is_none() && !is_restricted[b] {
            *slot = free.next();
        }
    }
    bin_host
}
