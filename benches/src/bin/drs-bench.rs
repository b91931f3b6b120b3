//! Runs vinfra-drs and its First-Fit-Decreasing baseline on generated instances and
//! prints one JSON line per run; the peer scripts in `benches/peers/` drive it.
//!
//! ```text
//! drs-bench packing <family> <vms> <seed> [spec-out.json]
//!   family: triplets, rule_heavy, shrunk, scaled, quintuplets, heterogeneous,
//!           random_<lo%>_<hi%> (e.g. random_10_60)
//! drs-bench balance <hosts> <vms> <moves> <seed> <threshold> [one-group|two-groups]
//! drs-bench balance-naive <hosts> <vms> <moves> <seed> <threshold> <max-moves>
//! ```
//!
//! `balance-naive` is the straightforward greedy the issue compares with: every step
//! tries every VM on every host and recomputes the imbalance from scratch; it stops after
//! `max-moves` steps and reports the time per step.

use std::process::ExitCode;
use std::time::Instant;

use vinfra_drs::{balance, first_fit_decreasing, generate, pack, Cluster, PackOptions};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}"))
}

fn packing(args: &[String]) -> Result<(), String> {
    let family = args.get(2).ok_or("missing family")?.as_str();
    let vms: usize = arg(args, 3, "vms")?;
    let seed: u64 = arg(args, 4, "seed")?;
    let spare = vms / 12 + 2;
    let inst = match family {
        "triplets" => generate::triplets(seed, vms, spare),
        "rule_heavy" => generate::rule_heavy(seed, vms),
        "shrunk" => generate::shrunk_triplets(seed, vms, spare),
        "scaled" => generate::scaled_triplets(seed, vms, spare),
        "quintuplets" => generate::quintuplets(seed, vms, vms / 20 + 2),
        "heterogeneous" => generate::heterogeneous(seed, vms, spare),
        _ => match family
            .strip_prefix("random_")
            .and_then(|r| r.split_once('_'))
            .and_then(|(lo, hi)| Some((lo.parse().ok()?, hi.parse().ok()?)))
        {
            Some((lo, hi)) => generate::random_2d(seed, vms, lo, hi),
            None => return Err(format!("unknown family {family}")),
        },
    };
    if let Some(path) = args.get(5) {
        let json = serde_json::to_string(&inst.spec).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("write {path}: {e}"))?;
    }
    let c = Cluster::new(inst.spec).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let ours = pack(&c, &PackOptions::default());
    let ours_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let ffd = first_fit_decreasing(&c);
    let ffd_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "family": family, "vms": c.vms.len(), "seed": seed,
            "optimum": inst.optimum_hosts, "lower_bound": ours.lower_bound,
            "ours_hosts": ours.hosts_used, "ours_unplaced": ours.unplaced.len(), "ours_ms": ours_ms,
            "ours_steps": ours.steps,
            "ffd_hosts": ffd.hosts_used, "ffd_unplaced": ffd.unplaced.len(), "ffd_ms": ffd_ms,
        })
    );
    Ok(())
}

/// `<hosts> <vms> <moves> <seed> <threshold>`, as both balance runs take them, and the
/// perturbed instance they describe.
struct Perturbed {
    hosts: usize,
    vms: usize,
    seed: u64,
    threshold: u8,
    inst: generate::Instance,
}

fn perturbed(args: &[String], family: Option<&str>) -> Result<Perturbed, String> {
    let hosts: usize = arg(args, 2, "hosts")?;
    let vms: usize = arg(args, 3, "vms")?;
    let moves: usize = arg(args, 4, "moves")?;
    let seed: u64 = arg(args, 5, "seed")?;
    let threshold: u8 = arg(args, 6, "threshold")?;
    let inst = match family {
        None | Some("one-group") => generate::perturbed(seed, hosts, vms, moves),
        Some("two-groups") => generate::perturbed_groups(seed, hosts, vms, moves),
        Some(other) => return Err(format!("unknown balance family {other}")),
    };
    Ok(Perturbed {
        hosts,
        vms,
        seed,
        threshold,
        inst,
    })
}

fn balancing(args: &[String]) -> Result<(), String> {
    let Perturbed {
        hosts,
        vms,
        seed,
        threshold,
        inst,
    } = perturbed(args, args.get(7).map(String::as_str))?;
    let mut spec = inst.spec;
    spec.settings.migration_threshold = threshold;
    let c = Cluster::new(spec).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let plan = balance(&c);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "hosts": hosts, "vms": vms, "seed": seed, "threshold": threshold,
            "perturbation_moves": inst.perturbation_moves,
            "witness_imbalance": inst.witness_imbalance,
            "family": args.get(7).map_or("one-group", String::as_str),
            "imbalance_before": plan.imbalance_before, "imbalance_after": plan.imbalance_after,
            "target": plan.target, "migrations": plan.recommendations.len(),
            "stop": plan.stop, "pass_ms": ms,
        })
    );
    Ok(())
}

/// Imbalance from scratch: sqrt((var_cpu + var_mem) / 2) over hosts.
fn imbalance(load: &[[f64; 2]], cap: &[[f64; 2]]) -> f64 {
    let n = load.len() as f64;
    let mut v = 0.0;
    for r in 0..2 {
        let (mut s1, mut s2) = (0.0, 0.0);
        for (l, c) in load.iter().zip(cap) {
            let x = l[r] / c[r];
            s1 += x;
            s2 += x * x;
        }
        v += (s2 / n - (s1 / n) * (s1 / n)).max(0.0);
    }
    (v / 2.0).sqrt()
}

fn balancing_naive(args: &[String]) -> Result<(), String> {
    let Perturbed {
        hosts,
        vms,
        seed,
        threshold,
        inst,
    } = perturbed(args, None)?;
    let max_moves: usize = arg(args, 7, "max-moves")?;
    let c = Cluster::new(inst.spec).map_err(|e| e.to_string())?;
    let target = vinfra_drs::target_for_threshold(threshold, c.usable_hosts().count());
    let t = Instant::now();
    let ent = vinfra_drs::entitlements(&c);
    let cap: Vec<[f64; 2]> = c
        .hosts
        .iter()
        .map(|h| [h.capacity[0] as f64, h.capacity[1] as f64])
        .collect();
    let mut load = vec![[0.0f64; 2]; c.hosts.len()];
    let mut used = vec![[0u64; 2]; c.hosts.len()];
    let mut host_of: Vec<Option<usize>> = c.vms.iter().map(|v| v.host).collect();
    for (v, h) in host_of.iter().enumerate() {
        if let Some(h) = *h {
            load[h][0] += ent.vms[v][0] as f64;
            load[h][1] += ent.vms[v][1] as f64;
            let f = c.vms[v].footprint();
            used[h][0] += f[0];
            used[h][1] += f[1];
        }
    }
    let mut made = 0;
    while made < max_moves {
        let now = imbalance(&load, &cap);
        if now <= target {
            break;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for (v, at) in host_of.iter().enumerate() {
            let Some(from) = *at else { continue };
            let (w, f) = (ent.vms[v], c.vms[v].footprint());
            for to in 0..c.hosts.len() {
                let cap_to = c.hosts[to].capacity;
                if to == from || used[to][0] + f[0] > cap_to[0] || used[to][1] + f[1] > cap_to[1] {
                    continue;
                }
                for r in 0..2 {
                    load[from][r] -= w[r] as f64;
                    load[to][r] += w[r] as f64;
                }
                let after = imbalance(&load, &cap);
                for r in 0..2 {
                    load[from][r] += w[r] as f64;
                    load[to][r] -= w[r] as f64;
                }
                if after < now && best.is_none_or(|(b, _, _)| after < b) {
                    best = Some((after, v, to));
                }
            }
        }
        let Some((_, v, to)) = best else { break };
        let from = host_of[v].unwrap_or(to);
        let (w, f) = (ent.vms[v], c.vms[v].footprint());
        for r in 0..2 {
            load[from][r] -= w[r] as f64;
            load[to][r] += w[r] as f64;
            used[from][r] -= f[r];
            used[to][r] += f[r];
        }
        host_of[v] = Some(to);
        made += 1;
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "hosts": hosts, "vms": vms, "seed": seed, "threshold": threshold,
            "naive_moves": made, "naive_ms": ms, "naive_ms_per_move": ms / made.max(1) as f64,
            "imbalance_after": imbalance(&load, &cap),
        })
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("packing") => packing(&args),
        Some("balance") => balancing(&args),
        Some("balance-naive") => balancing_naive(&args),
        _ => Err("usage: drs-bench packing <family> <vms> <seed> [spec.json] | balance <hosts> <vms> <moves> <seed> <threshold> [one-group|two-groups] | balance-naive <hosts> <vms> <moves> <seed> <threshold> <max-moves>".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drs-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
