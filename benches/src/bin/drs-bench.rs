//! Runs vinfra-drs and its First-Fit-Decreasing baseline on generated instances and
//! prints one JSON line per run; the peer scripts in `benches/peers/` drive it.
//!
//! ```text
//! drs-bench packing <triplets|rule_heavy> <vms> <seed> [spec-out.json]
//! drs-bench balance <hosts> <vms> <moves> <seed> <threshold>
//! ```

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
    let inst = match family {
        "triplets" => generate::triplets(seed, vms, vms / 12 + 2),
        "rule_heavy" => generate::rule_heavy(seed, vms),
        _ => return Err(format!("unknown family {family}")),
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

fn balancing(args: &[String]) -> Result<(), String> {
    let hosts: usize = arg(args, 2, "hosts")?;
    let vms: usize = arg(args, 3, "vms")?;
    let moves: usize = arg(args, 4, "moves")?;
    let seed: u64 = arg(args, 5, "seed")?;
    let threshold: u8 = arg(args, 6, "threshold")?;
    let inst = generate::perturbed(seed, hosts, vms, moves);
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
            "imbalance_before": plan.imbalance_before, "imbalance_after": plan.imbalance_after,
            "target": plan.target, "migrations": plan.recommendations.len(),
            "stop": plan.stop, "pass_ms": ms,
        })
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("packing") => packing(&args),
        Some("balance") => balancing(&args),
        _ => Err("usage: drs-bench packing <triplets|rule_heavy> <vms> <seed> [spec.json] | balance <hosts> <vms> <moves> <seed> <threshold>".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drs-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
