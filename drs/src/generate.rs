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
//!
//! Packing families that do not depend on exact fits (the optimum is known where said):
//!
//! - [`random_2d`]: CPU and memory drawn independently and uniformly from a range of a
//!   host's size; optimum unknown (compare with the lower bound).
//! - [`shrunk_triplets`]: [`triplets`] with every VM 1 MHz and 1 MB smaller (those already
//!   at the smallest triplet size stay): no host is filled exactly any more, the optimum
//!   is the same.
//! - [`scaled_triplets`]: [`triplets`] with every VM scaled down by its own random factor
//!   in [0.97, 1], kept above a quarter of a host: same optimum.
//! - [`quintuplets`]: every host of the optimum filled exactly by five VMs between a
//!   sixth and a quarter of a host (so no host takes six).
//! - [`heterogeneous`]: hosts of three sizes (1×, 1.5×, 2× the generators' host), each
//!   filled exactly by three VMs between a quarter and a half of it; the VMs' sum is the
//!   planted hosts' capacity, so the optimum is the planted host count.

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
    /// Imbalance of the placement before the perturbation (perturbed families): undoing
    /// the perturbation's migrations reaches it.
    pub witness_imbalance: Option<f64>,
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
        witness_imbalance: None,
    }
}

/// A host of the generators' size times `num / den`.
fn host_scaled(i: usize, num: i64, den: i64) -> HostSpec {
    HostSpec::new(
        format!("esx-{i:04}"),
        HOST_CPU_MHZ * num / den,
        HOST_MEM_MB * num / den,
    )
}

/// Hosts enough for any first-fit packing of VMs whose summed normalized sizes are
/// `cpu` and `mem` (a first fit leaves at most one bin per pair of bins under half full
/// in both resources, so twice the sum plus two always suffices), capped at one per VM.
fn hosts_for(cpu: f64, mem: f64, vms: usize) -> usize {
    let need = 2.0 * (cpu + mem) + 2.0;
    #[allow(clippy::cast_possible_truncation)] // a host count, far below usize::MAX
    let n = need.ceil() as usize;
    n.min(vms.max(1))
}

/// Random 2-D packing: `vms` VMs whose CPU and memory are drawn independently and
/// uniformly between `lo_pct` and `hi_pct` percent of a host; the optimum is unknown.
///
/// ```
/// let inst = vinfra_drs::generate::random_2d(1, 100, 10, 60);
/// assert_eq!(inst.spec.vms.len(), 100);
/// assert_eq!(inst.optimum_hosts, None);
/// ```
pub fn random_2d(seed: u64, vms: usize, lo_pct: i64, hi_pct: i64) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (lo, hi) = (lo_pct.clamp(1, 100), hi_pct.clamp(1, 100));
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let draw =
        |rng: &mut ChaCha8Rng, cap: i64| rng.random_range(cap * lo / 100..=cap * hi / 100).max(1);
    let mut list = Vec::with_capacity(vms);
    let (mut cpu, mut mem) = (0.0, 0.0);
    for i in 0..vms {
        let c = draw(&mut rng, HOST_CPU_MHZ);
        let m = draw(&mut rng, HOST_MEM_MB);
        cpu += c as f64 / HOST_CPU_MHZ as f64;
        mem += m as f64 / HOST_MEM_MB as f64;
        list.push(VmSpec::new(format!("vm-{i:05}"), c, m));
    }
    let hosts = (0..hosts_for(cpu, mem, vms)).map(host).collect();
    Instance {
        spec: ClusterSpec::new(hosts, list),
        optimum_hosts: None,
        perturbation_moves: None,
        witness_imbalance: None,
    }
}

/// [`triplets`] with every VM 1 MHz and 1 MB smaller, except those at the smallest
/// triplet size (a quarter of a host plus one), so every VM stays above a quarter of a
/// host: no host takes four, and the optimum stays `vms / 3`, yet no host is filled
/// exactly.
pub fn shrunk_triplets(seed: u64, vms: usize, spare: usize) -> Instance {
    let mut inst = triplets(seed, vms, spare);
    for vm in &mut inst.spec.vms {
        vm.cpu_mhz = (vm.cpu_mhz - 1).max(HOST_CPU_MHZ / 4 + 1);
        vm.mem_mb = (vm.mem_mb - 1).max(HOST_MEM_MB / 4 + 1);
    }
    inst
}

/// [`triplets`] with every VM scaled down by its own random factor in [0.97, 1] (kept
/// above a quarter of a host, so the optimum stays `vms / 3`).
pub fn scaled_triplets(seed: u64, vms: usize, spare: usize) -> Instance {
    let mut inst = triplets(seed, vms, spare);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ca1_ed00);
    for vm in &mut inst.spec.vms {
        let f: i64 = rng.random_range(970..=1000);
        vm.cpu_mhz = (vm.cpu_mhz * f / 1000).max(HOST_CPU_MHZ / 4 + 1);
        vm.mem_mb = (vm.mem_mb * f / 1000).max(HOST_MEM_MB / 4 + 1);
    }
    inst
}

/// Five values in (cap/6, cap/4) that sum exactly to `cap`.
fn quintuple(rng: &mut ChaCha8Rng, cap: i64) -> [i64; 5] {
    let (lo, hi) = (cap / 6 + 1, cap / 4 - 1);
    // Four draws around the mean leave a fifth in range often: bounded retries, then
    // the even split (always in range).
    for _ in 0..1000 {
        let mut v = [0i64; 5];
        for x in v.iter_mut().take(4) {
            *x = rng.random_range(lo..=hi);
        }
        v[4] = cap - v[..4].iter().sum::<i64>();
        if (lo..=hi).contains(&v[4]) {
            return v;
        }
    }
    let e = cap / 5;
    [e, e, e, e, cap - 4 * e]
}

/// 5-VM exact fills: `vms / 5` hosts each filled exactly by five VMs between a sixth and
/// a quarter of a host (no host takes six: the optimum is `vms / 5`), and `spare` more hosts.
pub fn quintuplets(seed: u64, vms: usize, spare: usize) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bins = vms / 5;
    let mut sizes = Vec::with_capacity(bins * 5);
    for _ in 0..bins {
        let cpu = quintuple(&mut rng, HOST_CPU_MHZ);
        let mem = quintuple(&mut rng, HOST_MEM_MB);
        sizes.extend(cpu.into_iter().zip(mem));
    }
    sizes.shuffle(&mut rng);
    let list = sizes
        .into_iter()
        .enumerate()
        .map(|(i, (c, m))| VmSpec::new(format!("vm-{i:05}"), c, m))
        .collect();
    Instance {
        spec: ClusterSpec::new((0..bins + spare).map(host).collect(), list),
        optimum_hosts: Some(bins),
        perturbation_moves: None,
        witness_imbalance: None,
    }
}

/// Heterogeneous hosts: `vms / 3` planted hosts cycling through 1×, 1.5× and 2× the
/// generators' host, each filled exactly by three VMs between a quarter and a half of
/// it, and `spare` more hosts of the smallest size. The VMs sum to the planted hosts'
/// capacity, which the largest hosts first only reach with all of them: the optimum is
/// the planted count.
pub fn heterogeneous(seed: u64, vms: usize, spare: usize) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bins = vms / 3;
    const SCALES: [(i64, i64); 3] = [(1, 1), (3, 2), (2, 1)];
    let mut hosts = Vec::with_capacity(bins + spare);
    let mut sizes = Vec::with_capacity(bins * 3);
    for b in 0..bins {
        let (num, den) = SCALES[b % 3];
        let h = host_scaled(b, num, den);
        let cpu = triple(&mut rng, h.cpu_mhz);
        let mem = triple(&mut rng, h.mem_mb);
        sizes.extend(cpu.into_iter().zip(mem));
        hosts.push(h);
    }
    hosts.extend((bins..bins + spare).map(host));
    sizes.shuffle(&mut rng);
    let list = sizes
        .into_iter()
        .enumerate()
        .map(|(i, (c, m))| VmSpec::new(format!("vm-{i:05}"), c, m))
        .collect();
    Instance {
        spec: ClusterSpec::new(hosts, list),
        optimum_hosts: Some(bins),
        perturbation_moves: None,
        witness_imbalance: None,
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
        witness_imbalance: None,
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
    perturbed_with(seed, hosts, vms, moves, false)
}

/// [`perturbed`] across two CPU-compatibility groups: the first half of the hosts
/// (group "a") carries 60 % of its capacity, the second half (group "b") 40 %, and the
/// migrations go from "a" hosts onto the first tenth of the hosts (all in "a"). VMotion
/// stays inside a group, so the best reachable imbalance is the unperturbed one, 0.1,
/// and the least loaded hosts of the cluster are never compatible with the most loaded.
pub fn perturbed_groups(seed: u64, hosts: usize, vms: usize, moves: usize) -> Instance {
    perturbed_with(seed, hosts, vms, moves, true)
}

fn perturbed_with(seed: u64, hosts: usize, vms: usize, moves: usize, groups: bool) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hosts = hosts.max(2);
    let group_of = |h: usize| usize::from(groups && h >= hosts / 2);
    // Load in tenths of capacity per group.
    let tenths = [6, 4];
    let mut list: Vec<VmSpec> = Vec::with_capacity(vms);
    let mut used = vec![(0i64, 0i64); hosts];
    let mut load_sum = [0.0f64; 2];
    for (h, load) in used.iter_mut().enumerate() {
        let n = vms / hosts + usize::from(h < vms % hosts);
        if n == 0 {
            continue;
        }
        let t = tenths[group_of(h)];
        let (cpu_load, mem_load) = (HOST_CPU_MHZ * t / 10, HOST_MEM_MB * t / 10);
        let cpu = split(&mut rng, cpu_load, n);
        let mem = split(&mut rng, mem_load, n);
        for k in 0..n {
            list.push(VmSpec::new(format!("vm-{:05}", list.len()), cpu[k], mem[k]).on(host(h).id));
        }
        *load = (cpu_load, mem_load);
        load_sum[0] += t as f64 / 10.0;
        load_sum[1] += (t * t) as f64 / 100.0;
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
        if from < hot || group_of(from) != group_of(to) {
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
    let mut host_list: Vec<HostSpec> = (0..hosts).map(host).collect();
    if groups {
        for (h, spec) in host_list.iter_mut().enumerate() {
            spec.compat_group = Some(["a", "b"][group_of(h)].into());
        }
    }
    let mut spec = ClusterSpec::new(host_list, list);
    spec.settings = Settings {
        migration_threshold: 3,
        max_moves_per_pass: u32::MAX,
        ..Settings::default()
    };
    // Both resources carry the same loads: the imbalance is one standard deviation.
    let n = hosts as f64;
    let mean = load_sum[0] / n;
    let witness = (load_sum[1] / n - mean * mean).max(0.0).sqrt();
    Instance {
        spec,
        optimum_hosts: None,
        perturbation_moves: Some(made),
        witness_imbalance: Some(witness),
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
    fn the_new_packing_families_keep_their_promises() {
        let sum = |i: &Instance| -> (i64, i64) {
            (
                i.spec.vms.iter().map(|v| v.cpu_mhz).sum(),
                i.spec.vms.iter().map(|v| v.mem_mb).sum(),
            )
        };
        let q = quintuplets(3, 50, 1);
        assert_eq!(sum(&q), (10 * HOST_CPU_MHZ, 10 * HOST_MEM_MB));
        assert!(q.spec.vms.iter().all(|v| v.cpu_mhz > HOST_CPU_MHZ / 6
            && v.cpu_mhz < HOST_CPU_MHZ / 4
            && v.mem_mb > HOST_MEM_MB / 6
            && v.mem_mb < HOST_MEM_MB / 4));
        for inst in [shrunk_triplets(3, 30, 1), scaled_triplets(3, 30, 1)] {
            let (c, m) = sum(&inst);
            assert!(c < 10 * HOST_CPU_MHZ && m < 10 * HOST_MEM_MB);
            assert!(inst
                .spec
                .vms
                .iter()
                .all(|v| v.cpu_mhz > HOST_CPU_MHZ / 4 && v.mem_mb > HOST_MEM_MB / 4));
            assert_eq!(inst.optimum_hosts, Some(10));
        }
        let h = heterogeneous(3, 30, 2);
        let cap: (i64, i64) = h.spec.hosts[..10]
            .iter()
            .fold((0, 0), |a, x| (a.0 + x.cpu_mhz, a.1 + x.mem_mb));
        assert_eq!(sum(&h), cap);
        let r = random_2d(3, 200, 10, 60);
        assert!(r
            .spec
            .vms
            .iter()
            .all(|v| v.cpu_mhz >= HOST_CPU_MHZ / 10 && v.cpu_mhz <= HOST_CPU_MHZ * 6 / 10));
        for inst in [q, h, r] {
            Cluster::new(inst.spec).unwrap();
        }
    }

    #[test]
    fn grouped_perturbations_stay_inside_a_group() {
        let p = perturbed_groups(2, 20, 400, 30);
        let w = p.witness_imbalance.unwrap();
        assert!((w - 0.1).abs() < 1e-9, "{w}");
        assert!(p.perturbation_moves.is_some_and(|m| m > 10));
        let c = Cluster::new(p.spec).unwrap();
        for vm in &c.vms {
            let h = vm.host.unwrap();
            assert!(vm.allows(h));
        }
        assert_eq!(perturbed(3, 8, 200, 20).witness_imbalance, Some(0.0));
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
