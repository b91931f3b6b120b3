//! Hosts over their capacity: by the hard rule (mandatory moves) or by demand
//! (contention, relieved before balancing and never created by it).

use serde::Serialize;

use super::{rec, Pass, Unresolved};
use crate::model::CapacityModel;
use crate::validate::{CPU, MEM};

/// A host whose running VMs demand more than its capacity in some resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Contention {
    /// Host id.
    pub host: String,
    /// Σ CPU demand (footprints) of its running VMs, MHz.
    pub cpu_demand_mhz: u64,
    /// Σ memory demand (footprints) of its running VMs, MB.
    pub mem_demand_mb: u64,
    /// CPU capacity, MHz.
    pub cpu_mhz: u64,
    /// Memory capacity, MB.
    pub mem_mb: u64,
}

/// How a relief step chooses and labels its moves.
struct Relief {
    priority: u8,
    /// Destinations must stay free of contention.
    keep_dest_uncontended: bool,
    what: &'static str,
}

impl Pass<'_> {
    /// The hosts in contention now.
    pub(super) fn contention(&self) -> Vec<Contention> {
        let c = self.c;
        (0..c.hosts.len())
            .filter(|&h| self.loads.usable(h) && self.state.contended(h))
            .map(|h| Contention {
                host: c.hosts[h].id.clone(),
                cpu_demand_mhz: self.state.demand[h][CPU],
                mem_demand_mb: self.state.demand[h][MEM],
                cpu_mhz: c.hosts[h].capacity[CPU],
                mem_mb: c.hosts[h].capacity[MEM],
            })
            .collect()
    }

    /// Mandatory moves off hosts whose running VMs break the hard capacity rule (only
    /// possible where admission control was bypassed, or under the footprint model when
    /// demand grew). A host no VM can leave is reported.
    pub(super) fn relieve_overcommitted_hosts(&mut self) {
        let relief = Relief {
            priority: 1,
            keep_dest_uncontended: false,
            what: "mandatory: host {host} over capacity",
        };
        for h in 0..self.c.hosts.len() {
            if !self.relieve(h, |p, h| p.state.overcommitted(h), &relief) {
                // Each VM left there is reported: none of them could leave.
                let (used, cap) = (self.state.used[h], self.c.hosts[h].capacity);
                for &v in &self.on_host[h] {
                    self.unresolved.push(Unresolved {
                        vm: self.c.vms[v].id.clone(),
                        reason: format!(
                            "host {:?} over capacity ({} MHz / {} MB needed, {} MHz / {} MB there), no vm can move off",
                            self.c.hosts[h].id, used[CPU], used[MEM], cap[CPU], cap[MEM]
                        ),
                    });
                }
            }
        }
    }

    /// Priority-2 moves off hosts in contention (demand above capacity, allowed by the
    /// reservations model) to hosts that stay free of it. What cannot be relieved stays
    /// in [`super::BalancePlan::contention_after`].
    pub(super) fn relieve_contention(&mut self) {
        if self.c.settings.capacity_model != CapacityModel::Reservations {
            // Under the footprint model contention is overcommitment: already handled.
            return;
        }
        let relief = Relief {
            priority: 2,
            keep_dest_uncontended: true,
            what: "contention: demand on {host} above its capacity",
        };
        for h in 0..self.c.hosts.len() {
            if self.loads.usable(h) {
                self.relieve(h, |p, h| p.state.contended(h), &relief);
            }
        }
    }

    /// Move single VMs off `h` while `bad` holds, each time the move that leaves the
    /// cluster best balanced; false when `bad` still holds and no VM could move.
    fn relieve(&mut self, h: usize, bad: fn(&Self, usize) -> bool, relief: &Relief) -> bool {
        let c = self.c;
        // Each round moves one VM off `h` or stops: bounded by the VMs there.
        let mut guard = self.on_host[h].len();
        while bad(self, h) && guard > 0 && self.recs.len() < self.cap {
            guard -= 1;
            let now = self.loads.imbalance();
            // (creates contention, imbalance after, vm, destination)
            let mut best: Option<(bool, f64, usize, usize)> = None;
            for &v in &self.on_host[h] {
                if c.groups[c.vms[v].group].vms.len() > 1 {
                    continue;
                }
                for d in 0..c.hosts.len() {
                    let contends = !self.state.demand_fits(&[v], d);
                    if (relief.keep_dest_uncontended && contends)
                        || self.state.check(v, d, &[]).is_err()
                    {
                        continue;
                    }
                    let after = self.loads.after(self.ent.vms[v], Some(h), Some(d));
                    let key = (contends, after);
                    if best.is_none_or(|(bc, ba, _, _)| key < (bc, ba)) {
                        best = Some((contends, after, v, d));
                    }
                }
            }
            let Some((_, after, v, d)) = best else {
                return false;
            };
            let reason = relief
                .what
                .replace("{host}", &format!("{:?}", c.hosts[h].id));
            let p = relief.priority;
            let r = rec(c, v, Some(h), d, p, now - after, reason, self.automatic(p));
            self.recs.push(r);
            self.do_move(v, d);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::{balance, Cluster};

    /// Reservations above a host's capacity (admission bypassed) and nowhere to go: every
    /// VM there is reported, by name.
    #[test]
    fn an_overcommitted_host_no_vm_can_leave_is_reported_per_vm() {
        let mut s = ClusterSpec::new(
            vec![HostSpec::new("a", 10_000, 10_000)],
            vec![
                VmSpec::new("x", 1000, 6000).on("a"),
                VmSpec::new("y", 1000, 6000).on("a"),
            ],
        );
        for vm in &mut s.vms {
            vm.mem.reservation = 6000;
        }
        let p = balance(&Cluster::new(s).unwrap());
        let named: Vec<&str> = p.unresolved.iter().map(|u| u.vm.as_str()).collect();
        assert_eq!(named, ["x", "y"], "{p:?}");
        assert!(p.unresolved[0].reason.contains("over capacity"));
    }
}
