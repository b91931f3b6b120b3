//! Prerequisite migrations: when no host can take a VM, a bounded search for one or two
//! migrations of other VMs that make room on a host whose other rules allow it (as
//! vSphere DRS recommends migrations before a power-on it could not place otherwise).

use serde::Serialize;

use super::Chooser;
use crate::validate::{CPU, MEM};

/// Most migrations one placement may ask for before it.
pub const MAX_PREREQUISITES: usize = 2;
/// VMs of one host considered as movers (the largest by hard need; pairs are tried
/// among them).
const MOVERS_PER_HOST: usize = 16;
/// Destination checks the search may make for one VM.
const ROOM_STEPS: usize = 200_000;

/// A migration to make before a placement, so that the placed VM fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PrerequisiteMove {
    /// VM id.
    pub vm: String,
    /// Its host now.
    pub from: String,
    /// Where it goes first.
    pub to: String,
}

/// (VM, from, to) of a migration made in the chooser's state.
pub(super) type Move = (usize, usize, usize);

impl Chooser<'_, '_> {
    /// Migrate at most [`MAX_PREREQUISITES`] other VMs so that `v` fits on some host
    /// whose rules allow it: the moves, applied to the state, or `None` (state
    /// unchanged). Single moves are tried before pairs, hosts with the smallest
    /// shortfall first, and each mover goes where it contends least and balances best.
    pub fn make_room(&mut self, v: usize) -> Option<Vec<Move>> {
        let c = self.state.c;
        let need = self.state.need(v);
        let shortfall = |s: &Self, h: usize| {
            let free = s.state.free(h);
            [
                need[CPU].saturating_sub(free[CPU]),
                need[MEM].saturating_sub(free[MEM]),
            ]
        };
        let mut hosts: Vec<(f64, usize)> = (0..c.hosts.len())
            .filter(|&h| self.state.rules_allow(v, h, &[]))
            .map(|h| {
                let s = shortfall(self, h);
                let cap = c.hosts[h].capacity;
                (
                    s[CPU] as f64 / cap[CPU] as f64 + s[MEM] as f64 / cap[MEM] as f64,
                    h,
                )
            })
            .collect();
        hosts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut steps = 0usize;
        for (_, h) in hosts {
            let short = shortfall(self, h);
            let covers = |n: [u64; 2]| n[CPU] >= short[CPU] && n[MEM] >= short[MEM];
            let mut movers: Vec<usize> = (0..c.vms.len())
                .filter(|&u| {
                    self.state.host_of[u] == Some(h) && c.groups[c.vms[u].group].vms.len() == 1
                })
                .collect();
            movers.sort_by_key(|&u| (std::cmp::Reverse(self.state.need(u)), u));
            movers.truncate(MOVERS_PER_HOST);
            // One move: the mover with the least memory to copy that covers the shortfall.
            let mut singles: Vec<usize> = movers
                .iter()
                .copied()
                .filter(|&u| covers(self.state.need(u)))
                .collect();
            singles.sort_by_key(|&u| (c.vms[u].demand[MEM], u));
            for u in singles {
                if steps > ROOM_STEPS {
                    return None;
                }
                steps += c.hosts.len();
                if let Some(d) = self.destination(u, h) {
                    self.apply(u, d);
                    return Some(vec![(u, h, d)]);
                }
            }
            // Two moves.
            for (i, &a) in movers.iter().enumerate() {
                for &b in &movers[i + 1..] {
                    let (na, nb) = (self.state.need(a), self.state.need(b));
                    if !covers([na[CPU] + nb[CPU], na[MEM] + nb[MEM]]) {
                        continue;
                    }
                    if steps > ROOM_STEPS {
                        return None;
                    }
                    steps += 2 * c.hosts.len();
                    let Some(da) = self.destination(a, h) else {
                        continue;
                    };
                    self.apply(a, da);
                    if let Some(db) = self.destination(b, h) {
                        self.apply(b, db);
                        return Some(vec![(a, h, da), (b, h, db)]);
                    }
                    self.apply(a, h);
                }
            }
        }
        None
    }

    /// Where running VM `u` can go off `h`: hosts its demand keeps out of contention
    /// first, then the best balance.
    fn destination(&self, u: usize, h: usize) -> Option<usize> {
        let c = self.state.c;
        let w = c.vms[u].footprint();
        let mut best: Option<((bool, f64), usize)> = None;
        for d in 0..c.hosts.len() {
            if d == h || self.state.check(u, d, &[]).is_err() {
                continue;
            }
            let key = (
                !self.state.demand_fits(&[u], d),
                self.loads.after(w, Some(h), Some(d)),
            );
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, d));
            }
        }
        best.map(|(_, d)| d)
    }
}
