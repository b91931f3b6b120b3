//! Entitlements (the "divvy" through the pool tree) and admission control.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::state::State;
use crate::validate::{Alloc, Cluster, CPU, MEM};

/// What each running VM and each pool is entitled to, per resource `[cpu MHz, mem MB]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Entitlements {
    /// Cluster capacity that was divided (usable hosts).
    pub capacity: [u64; 2],
    /// Per VM (index as in the cluster); 0 for VMs that do not run.
    pub vms: Vec<[u64; 2]>,
    /// Per pool (index as in the cluster).
    pub pools: Vec<[u64; 2]>,
}

#[derive(Clone, Copy)]
enum Node {
    Vm(usize),
    Pool(usize),
}

/// One child at a divvy step.
#[derive(Clone, Copy)]
struct Claim {
    reservation: u64,
    /// `max(reservation, min(demand, limit))`: more than this is never given.
    target: u64,
    shares: u64,
}

/// Split `capacity` among claims: reservations first, then shares, capped at targets.
fn divvy(capacity: u64, claims: &[Claim]) -> Vec<u64> {
    let total_res: u128 = claims.iter().map(|c| u128::from(c.reservation)).sum();
    if total_res > u128::from(capacity) {
        // Reservations overcommitted (admission was bypassed): scale them down.
        return claims
            .iter()
            .map(|c| {
                let x = u128::from(c.reservation) * u128::from(capacity) / total_res.max(1);
                u64::try_from(x).unwrap_or(u64::MAX)
            })
            .collect();
    }
    let mut e: Vec<u64> = claims.iter().map(|c| c.reservation).collect();
    let mut rest = capacity - u64::try_from(total_res).unwrap_or(capacity);
    let mut active: Vec<usize> = (0..claims.len())
        .filter(|&i| e[i] < claims[i].target)
        .collect();
    // Each round satisfies at least one claim or hands out everything: n + 1 rounds suffice.
    for _ in 0..=claims.len() {
        let shares: u128 = active.iter().map(|&i| u128::from(claims[i].shares)).sum();
        if active.is_empty() || rest == 0 || shares == 0 {
            break;
        }
        let mut given = 0u64;
        for &i in &active {
            let fair = u128::from(rest) * u128::from(claims[i].shares) / shares;
            let add = u64::try_from(fair)
                .unwrap_or(u64::MAX)
                .min(claims[i].target - e[i]);
            e[i] += add;
            given += add;
        }
        rest -= given;
        active.retain(|&i| e[i] < claims[i].target);
        if given == 0 {
            // Less than one unit per claim left: hand it out one by one.
            for &i in &active {
                if rest == 0 {
                    break;
                }
                e[i] += 1;
                rest -= 1;
            }
            break;
        }
    }
    e
}

fn pool_depth(c: &Cluster, p: usize) -> usize {
    let mut d = 0;
    let mut at = c.pools[p].parent;
    while let Some(q) = at {
        d += 1;
        at = c.pools[q].parent;
    }
    d
}

/// Compute entitlements: top-down per resource from the usable hosts' capacity.
///
/// ```
/// use vinfra_drs::{entitlements, Cluster, ClusterSpec, HostSpec, VmSpec};
///
/// let mut vm = VmSpec::new("a", 1000, 2000).on("h");
/// vm.cpu_demand_mhz = Some(500);
/// let spec = ClusterSpec::new(vec![HostSpec::new("h", 10_000, 10_000)], vec![vm]);
/// // Uncontended: every VM is entitled to its demand.
/// assert_eq!(entitlements(&Cluster::new(spec)?).vms, vec![[500, 2000]]);
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn entitlements(c: &Cluster) -> Entitlements {
    let mut capacity = [0u64; 2];
    for h in c.usable_hosts() {
        capacity[CPU] += c.hosts[h].capacity[CPU];
        capacity[MEM] += c.hosts[h].capacity[MEM];
    }
    // children[0] = root, children[p + 1] = pool p.
    let mut children: Vec<Vec<Node>> = vec![Vec::new(); c.pools.len() + 1];
    for (p, pool) in c.pools.iter().enumerate() {
        children[pool.parent.map_or(0, |q| q + 1)].push(Node::Pool(p));
    }
    for (v, vm) in c.vms.iter().enumerate() {
        if vm.powered_on {
            children[vm.pool.map_or(0, |q| q + 1)].push(Node::Vm(v));
        }
    }
    let mut order: Vec<usize> = (0..c.pools.len()).collect();
    order.sort_by_key(|&p| std::cmp::Reverse(pool_depth(c, p)));
    let mut ent = Entitlements {
        capacity,
        vms: vec![[0, 0]; c.vms.len()],
        pools: vec![[0, 0]; c.pools.len()],
    };
    for r in [CPU, MEM] {
        // Bottom-up: a pool's target is its children's targets, clamped by its own allocation.
        let mut pool_target = vec![0u64; c.pools.len()];
        let claim_of = |n: Node, pool_target: &[u64]| -> Claim {
            match n {
                Node::Vm(v) => {
                    let vm = &c.vms[v];
                    let a = vm.alloc[r];
                    Claim {
                        reservation: a.reservation,
                        target: vm.demand[r].max(a.reservation),
                        shares: a.shares,
                    }
                }
                Node::Pool(p) => {
                    let a = c.pools[p].alloc[r];
                    Claim {
                        reservation: a.reservation,
                        target: pool_target[p],
                        shares: a.shares,
                    }
                }
            }
        };
        for &p in &order {
            let sum: u64 = children[p + 1]
                .iter()
                .map(|&n| claim_of(n, &pool_target).target)
                .sum();
            let a = c.pools[p].alloc[r];
            pool_target[p] = sum.min(a.limit).max(a.reservation);
        }
        // Top-down.
        let mut stack: Vec<(usize, u64)> = vec![(0, capacity[r])];
        let mut steps = 0usize;
        while let Some((node, cap)) = stack.pop() {
            steps += 1;
            if steps > c.pools.len() + 1 {
                break;
            }
            let kids = &children[node];
            let claims: Vec<Claim> = kids.iter().map(|&n| claim_of(n, &pool_target)).collect();
            let split = divvy(cap, &claims);
            for (&n, &e) in kids.iter().zip(split.iter()) {
                match n {
                    Node::Vm(v) => ent.vms[v][r] = e,
                    Node::Pool(p) => {
                        ent.pools[p][r] = e;
                        stack.push((p + 1, e));
                    }
                }
            }
        }
    }
    ent
}

/// Reservation already committed under a pool (index `p + 1`; 0 = root), per resource.
fn committed(c: &Cluster, r: usize) -> Vec<u64> {
    let mut used = vec![0u64; c.pools.len() + 1];
    for vm in c.vms.iter().filter(|v| v.powered_on) {
        used[vm.pool.map_or(0, |q| q + 1)] += vm.alloc[r].reservation;
    }
    let mut order: Vec<usize> = (0..c.pools.len()).collect();
    order.sort_by_key(|&p| std::cmp::Reverse(pool_depth(c, p)));
    for p in order {
        let eff = effective(&c.pools[p].alloc[r], used[p + 1]);
        used[c.pools[p].parent.map_or(0, |q| q + 1)] += eff;
    }
    used
}

/// What a pool holds from its parent given what its children reserved.
fn effective(a: &Alloc, used: u64) -> u64 {
    if a.expandable {
        a.reservation.max(used)
    } else {
        a.reservation
    }
}

/// Admission control for powering on `vm`: its reservations must be covered through
/// its pool chain, and some host must take its hard need under the cluster's capacity
/// model (VMware's: the reservations plus the VM's memory overhead, whatever its demand;
/// under [`crate::CapacityModel::Footprint`]: its footprint), possibly after the
/// prerequisite migrations [`crate::place`] would return. Errors say why.
///
/// ```
/// use vinfra_drs::{admit_power_on, Cluster, ClusterSpec, Error, HostSpec, VmSpec};
///
/// let mut big = VmSpec::new("big", 1000, 30_000);
/// big.powered_on = false;
/// big.mem.reservation = 20_000;
/// let mut small = VmSpec::new("small", 1000, 1000);
/// small.powered_on = false;
/// let spec = ClusterSpec::new(vec![HostSpec::new("h", 10_000, 16_384)], vec![big, small]);
/// let c = Cluster::new(spec)?;
/// assert!(admit_power_on(&c, "small").is_ok());
/// assert!(matches!(admit_power_on(&c, "big"), Err(Error::AdmissionRefused { .. })));
/// # Ok::<(), vinfra_drs::Error>(())
/// ```
pub fn admit_power_on(c: &Cluster, vm: &str) -> Result<()> {
    let v = c.vm_index(vm)?;
    let spec = &c.vms[v];
    if spec.powered_on {
        return Err(Error::InvalidRequest {
            reason: format!("vm {vm:?} already runs"),
        });
    }
    let ent_cap = entitlements(c).capacity;
    for (r, name, unit) in [(CPU, "cpu", "MHz"), (MEM, "memory", "MB")] {
        let used = committed(c, r);
        let mut need = spec.alloc[r].reservation;
        let mut at = spec.pool;
        let mut hops = 0;
        while need > 0 {
            hops += 1;
            if hops > c.pools.len() + 1 {
                break;
            }
            let Some(p) = at else {
                let free = ent_cap[r].saturating_sub(used[0]);
                if need > free {
                    return Err(Error::AdmissionRefused {
                        vm: vm.to_owned(),
                        reason: format!(
                            "cluster: {name} reservation needs {need} {unit}, {free} {unit} unreserved"
                        ),
                    });
                }
                break;
            };
            let pool = &c.pools[p];
            let a = pool.alloc[r];
            let now = used[p + 1];
            let before = effective(&a, now);
            if now + need > a.limit {
                return Err(Error::AdmissionRefused {
                    vm: vm.to_owned(),
                    reason: format!(
                        "pool {:?}: {name} reservations would be {} {unit}, above its limit {}",
                        pool.id,
                        now + need,
                        a.limit
                    ),
                });
            }
            if !a.expandable {
                if now + need > a.reservation {
                    return Err(Error::AdmissionRefused {
                        vm: vm.to_owned(),
                        reason: format!(
                            "pool {:?}: {name} reservation needs {need} {unit}, {} {unit} unreserved and the reservation is not expandable",
                            pool.id,
                            a.reservation.saturating_sub(now)
                        ),
                    });
                }
                break;
            }
            need = effective(&a, now + need) - before;
            at = pool.parent;
        }
    }
    // Some host must take the hard need under the rules.
    let state = State::current(c);
    let mut reasons = Vec::new();
    for h in 0..c.hosts.len() {
        match state.check(v, h, &[]) {
            Ok(()) => return Ok(()),
            Err(r) => reasons.push(format!("{}: {r}", c.hosts[h].id)),
        }
    }
    // As DRS does, a power-on that a few migrations make room for is admitted (`place`
    // returns those migrations).
    let mut state = state;
    if crate::placement::Chooser::new(&mut state)
        .make_room(v)
        .is_some()
    {
        return Ok(());
    }
    Err(Error::AdmissionRefused {
        vm: vm.to_owned(),
        reason: format!(
            "no host can take it, and no {} migrations make room ({})",
            crate::placement::MAX_PREREQUISITES,
            reasons.join("; ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn claim(reservation: u64, target: u64, shares: u64) -> Claim {
        Claim {
            reservation,
            target,
            shares,
        }
    }

    #[test]
    fn divvy_gives_reservations_then_shares_capped_by_target() {
        let e = divvy(1000, &[claim(100, 1000, 1000), claim(0, 1000, 3000)]);
        assert_eq!(e.iter().sum::<u64>(), 1000);
        assert!(e[0] >= 100);
        assert!(e[1] > e[0]);
        let e = divvy(1000, &[claim(0, 100, 1000), claim(0, 2000, 1000)]);
        assert_eq!(e, vec![100, 900]);
    }

    #[test]
    fn uncontended_vms_get_their_demand() {
        let mut spec = ClusterSpec::new(
            vec![HostSpec::new("h", 10_000, 10_000)],
            vec![
                VmSpec::new("a", 1000, 2000).on("h"),
                VmSpec::new("b", 3000, 1000).on("h"),
            ],
        );
        spec.vms[1].cpu_demand_mhz = Some(500);
        let c = Cluster::new(spec).unwrap();
        let e = entitlements(&c);
        assert_eq!(e.vms, vec![[1000, 2000], [500, 1000]]);
    }

    #[test]
    fn pool_limit_caps_children_and_shares_split_contention() {
        let mut spec = ClusterSpec::new(
            vec![HostSpec::new("h", 4000, 4000)],
            vec![
                VmSpec::new("a", 4000, 100).on("h"),
                VmSpec::new("b", 4000, 100).on("h"),
                VmSpec::new("c", 4000, 100).on("h"),
            ],
        );
        let mut dev = PoolSpec::new("dev", None);
        dev.cpu.limit = Some(1000);
        spec.pools.push(dev);
        spec.vms[0].pool = Some("dev".into());
        spec.vms[1].cpu.shares = Shares::High;
        let c = Cluster::new(spec).unwrap();
        let e = entitlements(&c);
        assert_eq!(e.pools[0][CPU], 1000);
        assert_eq!(e.vms[0][CPU], 1000);
        // b has twice c's shares of the 3000 left.
        assert_eq!(e.vms[1][CPU], 2000);
        assert_eq!(e.vms[2][CPU], 1000);
    }

    #[test]
    fn admission_refuses_non_expandable_pool_and_says_why() {
        let mut spec = ClusterSpec::new(
            vec![HostSpec::new("h", 10_000, 10_000)],
            vec![VmSpec::new("a", 1000, 1000), VmSpec::new("b", 1000, 1000)],
        );
        let mut p = PoolSpec::new("prod", None);
        p.cpu = Allocation {
            reservation: 1500,
            limit: None,
            shares: Shares::Normal,
            expandable: false,
        };
        spec.pools.push(p);
        for v in &mut spec.vms {
            v.pool = Some("prod".into());
            v.cpu.reservation = 1000;
        }
        spec.vms[0].host = Some("h".into());
        spec.vms[1].powered_on = false;
        let c = Cluster::new(spec.clone()).unwrap();
        let err = admit_power_on(&c, "b").unwrap_err().to_string();
        assert!(
            err.contains("prod") && err.contains("not expandable"),
            "{err}"
        );
        spec.pools[0].cpu.expandable = true;
        let c = Cluster::new(spec).unwrap();
        admit_power_on(&c, "b").unwrap();
    }

    /// vSphere admits a power-on when the host's unreserved capacity covers the VM's
    /// reservation and overhead, however much the running VMs demand (memory is
    /// overcommitted); the footprint model keeps the old no-overcommit refusal.
    #[test]
    fn reservation_only_admission_admits_what_vsphere_would() {
        let mut spec = ClusterSpec::new(
            vec![HostSpec::new("h", 10_000, 16_384)],
            vec![
                VmSpec::new("busy", 8000, 16_000).on("h"),
                VmSpec::new("new", 2000, 4096),
                VmSpec::new("greedy", 2000, 4096),
            ],
        );
        spec.vms[0].mem.reservation = 8192;
        spec.vms[1].powered_on = false;
        spec.vms[1].mem.reservation = 1024;
        spec.vms[2].powered_on = false;
        // busy reserves 8,192 + 145 MB overhead (20 + 8 per GiB of its 16,000 MB);
        // greedy's 8,100 + 52 MB do not fit in the 8,047 MB left.
        spec.vms[2].mem.reservation = 8100;
        let c = Cluster::new(spec.clone()).unwrap();
        // Demand 16,000 + 4,096 MB is far above 16,384 MB: vSphere still admits "new".
        admit_power_on(&c, "new").unwrap();
        let err = admit_power_on(&c, "greedy").unwrap_err().to_string();
        assert!(err.contains("memory: need 8152 MB, 8047 MB free"), "{err}");
        spec.settings.capacity_model = CapacityModel::Footprint;
        let c = Cluster::new(spec).unwrap();
        let err = admit_power_on(&c, "new").unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn admission_refuses_reservation_above_cluster() {
        let mut spec = ClusterSpec::new(
            vec![HostSpec::new("h", 1000, 1000)],
            vec![VmSpec::new("a", 500, 500)],
        );
        spec.vms[0].powered_on = false;
        spec.vms[0].mem.reservation = 2000;
        let c = Cluster::new(spec).unwrap();
        let err = admit_power_on(&c, "a").unwrap_err().to_string();
        assert!(err.contains("cluster"), "{err}");
    }
}
