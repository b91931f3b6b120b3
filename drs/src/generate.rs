//! Seeded instance generators for tests and benchmarks (same seed, same instance).
//!
//! Test support, behind the `test-utils` feature (always on in this crate's own tests):
//! a library user does not ship them.
//!
//! - [`triplets`]: 2-D bin packing whose optimum host count is known by construction:
//!   every host is filled exactly, in CPU and in memory, by three VMs whose sizes lie
//!   strictly between a quarter and a half of the host (so no host can take four).
//! - [`perturbed`]: a perfectly balanced placement (every host carries the same load,
//!   imbalance 0) from which a number of random migrations onto a few hot hosts were
//!   made; undoing them is an upper bound on the migrations needed.
//! - [`rule_heavy`]: a triplet instance with exactly the optimum number of hosts and
//!   affinity, anti-affinity and must-run-on rules that the planted packing satisfies.
//! - [`scale`]: [`perturbed`] at cluster maxima (64 hosts / 8,000 VMs, 96 hosts / 10,000 VMs).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{ClusterSpec, HostSpec, RuleSpec, Settings, VmHostMode, VmSpec};

/// Host CPU capacity used by the generators (2 sockets × 16 cores × 2 GHz).
pub const HOST_CPU_MHZ: i64 = 64_000;
/// Host memory capacity used by the generators (256 GiB).
pub const HOST_MEM_MB: i64 = 262_144;

/// A generated instance and what is known about its optimum.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Instance {
    /// The cluster.
    pub spec: ClusterSpec,
    /// Optimal number of hosts (packing families).
    pub optimum_hosts: Option<usize>,
    /// Migrations that made the imbalance (perturbed families).
    pub perturbation_moves: Option<usize>,
}

/// Three values in (cap/4, cap/2) that sum exactly to `cap`.
fn triple(rng: &mut ChaCha8Rng, cap: i64) -> [i64; 3] {
    let (lo, hi) = (cap / 4 + 1, cap / 2 - 1);
    loop {
        let a = rng.random_range(lo..=hi);
        let b_lo = lo.max(cap - a - hi);
        let b_hi = hi.min(cap - a - lo);
        if b_lo > b_hi {
            continue;
        }
        let b = rng.random_range(b_lo..=b_hi);
        return [a, b, cap - a - b];
    }
}

fn host(i: usize) -> HostSpec {
    HostSpec::new(format!("esx-{i:04}"), HOST_CPU_MHZ, HOST_MEM_MB)
}

/// VMs of `bins` exactly-filled hosts, shuffled, and the planted bin of each.
fn triplet_vms(rng: &mut ChaCha8Rng, bins: usize) -> Vec<(VmSpec, usize)> {
    let mut vms = Vec::with_capacity(bins * 3);
    for b in 0..bins {
        let cpu = triple(rng, HOST_CPU_MHZ);
        let mem = triple(rng, HOST_MEM_MB);
        for k in 0..3 {
            vms.push((cpu[k], mem[k], b));
        }
    }
    vms.shuffle(rng);
    vms.into_iter()
        .enumerate()
        .map(|(i, (c, m, b))| (VmSpec::new(format!("vm-{i:05}"), c, m), b))
        .collect()
}

/// Triplet bin packing with `vms / 3` hosts in the optimum and `spare` more hosts.
///
/// ```
/// let inst = vinfra_drs::generate::triplets(7, 60, 2);
/// assert_eq!(inst.spec.vms.len(), 60);
/// assert_eq!(inst.optimum_hosts, Some(20));
/// ```
pub fn triplets(seed: u64, vms: usize, spare: usize) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bins = vms / 3;
    let list = triplet_vms(&mut rng, bins);
    let hosts = (0..bins + spare).map(host).collect();
    Instance {
        spec: ClusterSpec::new(hosts, list.into_iter().map(|(v, _)| v).collect()),
        optimum_hosts: Some(bins),
        perturbation_moves: None,
    }
}

/// Rule-heavy triplet instance: exactly the optimum number of hosts, and rules that
/// only the planted packing (or one like it) satisfies.
pub fn rule_heavy(seed: u64, vms: usize) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bins = vms / 3;
    let list = triplet_vms(&mut rng, bins);
    let mut by_bin: Vec<Vec<String>> = vec![Vec::new(); bins];
    for (v, b) in &list {
        by_bin[*b].push(v.id.clone());
    }
    let mut rules = Vec::new();
    // Affinity: two VMs of one planted host, for a third of the hosts.
    for (b, members) in by_bin.iter().enumerate() {
        if b % 3 == 0 {
            rules.push(RuleSpec::VmAffinity {
                id: format!("aff-{b}"),
                vms: members[..2].to_vec(),
            });
        }
    }
    // Anti-affinity: one VM from each of several planted hosts.
    let anti_rules = bins.max(2) / 2;
    for r in 0..anti_rules {
        let k = rng.random_range(2..=4usize).min(bins);
        let mut chosen: Vec<usize> = (0..bins).collect();
        chosen.shuffle(&mut rng);
        let members = chosen[..k]
            .iter()
            .map(|&b| by_bin[b][rng.random_range(0..3usize)].clone())
            .collect::<Vec<_>>();
        if members.len() >= 2 {
            rules.push(RuleSpec::VmAntiAffinity {
                id: format!("anti-{r}"),
                vms: members,
            });
        }
    }
    // Must-run-on: hosts in four groups; half of the planted hosts' VMs pinned to their group.
    let groups = 4.min(bins.max(1));
    for g in 0..groups {
        let hosts: Vec<String> = (0..bins)
            .filter(|h| h % groups == g)
            .map(|h| host(h).id)
            .collect();
        let vms: Vec<String> = (0..bins)
            .filter(|h| h % groups == g && h % 2 == 0)
            .flat_map(|h| by_bin[h].clone())
            .collect();
        if !vms.is_empty() && !hosts.is_empty() {
            rules.push(RuleSpec::VmHost {
                id: format!("pin-{g}"),
                vms,
                hosts,
                mode: VmHostMode::MustRunOn,
            });
        }
    }
    let hosts = (0..bins).map(host).collect();
    let mut spec = ClusterSpec::new(hosts, list.into_iter().map(|(v, _)| v).collect());
    spec.rules = rules;
    Instance {
        spec,
        optimum_hosts: Some(bins),
        perturbation_moves: None,
    }
}

/// `n` positive values summing exactly to `total`.
fn split(rng: &mut ChaCha8Rng, total: i64, n: usize) -> Vec<i64> {
    let weights: Vec<i64> = (0..n).map(|_| rng.random_range(50..150)).collect();
    let sum: i64 = weights.iter().sum();
    let mut out: Vec<i64> = weights.iter().map(|w| (total * w / sum).max(1)).collect();
    let diff = total - out.iter().sum::<i64>();
    // Rounding leftovers go to the largest value (which stays positive).
    if let Some(max) = out.iter_mut().max() {
        *max += diff;
    }
    out
}

/// A balanced placement of `vms` VMs on `hosts` hosts (60% CPU and memory load on every
/// host), then `moves` random migrations onto a tenth of the hosts.
pub fn perturbed(seed: u64, hosts: usize, vms: usize, moves: usize) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hosts = hosts.max(2);
    let (cpu_load, mem_load) = (HOST_CPU_MHZ * 6 / 10, HOST_MEM_MB * 6 / 10);
    let mut list: Vec<VmSpec> = Vec::with_capacity(vms);
    let mut used = vec![(0i64, 0i64); hosts];
    for (h, load) in used.iter_mut().enumerate() {
        let n = vms / hosts + usize::from(h < vms % hosts);
        if n == 0 {
            continue;
        }
        let cpu = split(&mut rng, cpu_load, n);
        let mem = split(&mut rng, mem_load, n);
        for k in 0..n {
            list.push(VmSpec::new(format!("vm-{:05}", list.len()), cpu[k], mem[k]).on(host(h).id));
        }
        *load = (cpu_load, mem_load);
    }
    let hot = (hosts / 10).max(1);
    let mut made = 0;
    for _ in 0..moves * 4 {
        if made == moves || list.is_empty() {
            break;
        }
        let v = rng.random_range(0..list.len());
        let to = rng.random_range(0..hot);
        let from: usize = list[v]
            .host
            .as_deref()
            .and_then(|h| h.strip_prefix("esx-"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if from < hot {
            continue;
        }
        let (c, m) = (list[v].cpu_mhz, list[v].mem_mb);
        if used[to].0 + c > HOST_CPU_MHZ || used[to].1 + m > HOST_MEM_MB {
            continue;
        }
        used[to].0 += c;
        used[to].1 += m;
        used[from].0 -= c;
        used[from].1 -= m;
        list[v].host = Some(host(to).id);
        made += 1;
    }
    let mut spec = ClusterSpec::new((0..hosts).map(host).collect(), list);
    spec.settings = Settings {
        migration_threshold: 3,
        max_moves_per_pass: u32::MAX,
        ..Settings::default()
    };
    Instance {
        spec,
        optimum_hosts: None,
        perturbation_moves: Some(made),
    }
}

/// Scale instance at cluster maxima: [`perturbed`] with a VM in twenty moved.
pub fn scale(seed: u64, hosts: usize, vms: usize) -> Instance {
    perturbed(seed, hosts, vms, vms / 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Cluster;

    #[test]
    fn triplets_fill_hosts_exactly() {
        let i = triplets(7, 30, 2);
        let c: i64 = i.spec.vms.iter().map(|v| v.cpu_mhz).sum();
        let m: i64 = i.spec.vms.iter().map(|v| v.mem_mb).sum();
        assert_eq!(c, 10 * HOST_CPU_MHZ);
        assert_eq!(m, 10 * HOST_MEM_MB);
        assert!(i
            .spec
            .vms
            .iter()
            .all(|v| v.cpu_mhz > HOST_CPU_MHZ / 4 && v.cpu_mhz < HOST_CPU_MHZ / 2));
        assert_eq!(i.spec.hosts.len(), 12);
        assert_eq!(triplets(7, 30, 2), i);
    }

    #[test]
    fn generated_instances_validate() {
        Cluster::new(rule_heavy(3, 60).spec).unwrap();
        let p = perturbed(3, 8, 200, 20);
        assert!(
            p.perturbation_moves.is_some_and(|m| (10..=20).contains(&m)),
            "{:?}",
            p.perturbation_moves
        );
        Cluster::new(p.spec).unwrap();
    }
}
