//! `vinfra-drs`: read a cluster JSON (schema in drs/README.md) and print DRS decisions:
//! placement, balancing recommendations, maintenance evacuation, entitlements, HA
//! admission control and restart placement, packing; human-readable or `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use vinfra_drs::{generate, ha, Cluster, PackOptions, Rejected};

#[derive(Parser, Debug)]
#[command(
    name = "vinfra-drs",
    version,
    about = "DRS decisions for a cluster described in JSON"
)]
struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Place VMs that are not running yet (as at power-on).
    Place {
        /// Cluster JSON file.
        cluster: PathBuf,
        /// VM ids.
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// One load-balancing pass: migration recommendations.
    Balance {
        /// Cluster JSON file.
        cluster: PathBuf,
    },
    /// Plan emptying a host for maintenance mode.
    Evacuate {
        /// Cluster JSON file.
        cluster: PathBuf,
        /// Host id.
        host: String,
    },
    /// Entitlements of every running VM and pool.
    Entitlements {
        /// Cluster JSON file.
        cluster: PathBuf,
    },
    /// Admission control for powering on a VM.
    Admit {
        /// Cluster JSON file.
        cluster: PathBuf,
        /// VM id.
        vm: String,
    },
    /// HA admission control: slot-based for N host failures, and percentage-based.
    HaAdmission {
        /// Cluster JSON file.
        cluster: PathBuf,
        /// Host failures to tolerate.
        #[arg(long, default_value_t = 1)]
        tolerate: u32,
        /// Failover capacity to keep free, percent of CPU and of memory.
        #[arg(long, default_value_t = 25)]
        percent: u8,
    },
    /// HA restart placement after host failures.
    HaRestart {
        /// Cluster JSON file.
        cluster: PathBuf,
        /// Failed host ids.
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Pack every running VM onto as few hosts as possible.
    Pack {
        /// Cluster JSON file.
        cluster: PathBuf,
        /// Search step budget.
        #[arg(long, default_value_t = 400_000_000)]
        budget: u64,
        /// Also run first-fit-decreasing and print its count beside ours.
        #[arg(long)]
        compare_ffd: bool,
    },
    /// Write a generated instance as JSON to stdout.
    Generate {
        /// triplets | rule-heavy | perturbed | shrunk | scaled | quintuplets |
        /// heterogeneous | random (10–60 % of a host)
        family: String,
        /// VMs.
        #[arg(long, default_value_t = 60)]
        vms: usize,
        /// Hosts (perturbed only).
        #[arg(long, default_value_t = 16)]
        hosts: usize,
        /// Migrations made (perturbed only).
        #[arg(long, default_value_t = 40)]
        moves: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn load(path: &PathBuf) -> Result<Cluster, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Cluster::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
        );
    } else {
        text(value);
    }
    Ok(())
}

/// The hosts a VM could not go to, and why.
fn print_rejected(rejected: &[Rejected]) {
    for r in rejected {
        println!("    not {}: {}", r.host, r.why);
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let json = cli.json;
    match cli.command {
        Command::Place { cluster, vms } => {
            let c = load(&cluster)?;
            let ids: Vec<&str> = vms.iter().map(String::as_str).collect();
            let plan = vinfra_drs::place(&c, &ids).map_err(|e| e.to_string())?;
            emit(json, &plan, |p| {
                for pl in &p.placements {
                    let how = if pl.automatic { "place" } else { "recommend" };
                    for m in &pl.prerequisites {
                        println!("first migrate {} {} -> {} (makes room)", m.vm, m.from, m.to);
                    }
                    match &pl.host {
                        Some(h) => println!(
                            "{how} {} on {h} (imbalance after {:.4}{})",
                            pl.vm,
                            pl.imbalance_after,
                            if pl.shares_image {
                                ", shares its image's pages"
                            } else {
                                ""
                            }
                        ),
                        None => println!("cannot place {}", pl.vm),
                    }
                    print_rejected(&pl.rejected);
                }
            })
        }
        Command::Balance { cluster } => {
            let c = load(&cluster)?;
            let plan = vinfra_drs::balance(&c);
            emit(json, &plan, |p| {
                println!(
                    "imbalance {:.4} -> {:.4} (target {:.4}, automation {:?}, threshold {}), stop: {:?}",
                    p.imbalance_before,
                    p.imbalance_after,
                    p.target,
                    c.settings.automation,
                    c.settings.migration_threshold,
                    p.stop
                );
                for r in &p.recommendations {
                    println!(
                        "  [{}] priority {} {} {} -> {} gain {:.5} copy {} MB: {}",
                        if r.automatic { "apply" } else { "recommend" },
                        r.priority,
                        r.vm,
                        r.from,
                        r.to,
                        r.gain,
                        r.cost_mem_mb,
                        r.reason
                    );
                }
                for u in &p.unresolved {
                    println!("  unresolved {}: {}", u.vm, u.reason);
                }
                for (when, list) in [
                    ("before", &p.contention_before),
                    ("after", &p.contention_after),
                ] {
                    for x in list.iter() {
                        println!(
                            "  contention {when} on {}: demand {} MHz / {} MB, capacity {} MHz / {} MB",
                            x.host, x.cpu_demand_mhz, x.mem_demand_mb, x.cpu_mhz, x.mem_mb
                        );
                    }
                }
            })
        }
        Command::Evacuate { cluster, host } => {
            let c = load(&cluster)?;
            let plan = vinfra_drs::evacuate(&c, &host).map_err(|e| e.to_string())?;
            emit(json, &plan, |p| {
                println!(
                    "{} can {}enter maintenance mode",
                    p.host,
                    if p.complete() { "" } else { "not " }
                );
                for m in &p.moves {
                    println!(
                        "  move {} -> {}{}",
                        m.vm,
                        m.to,
                        if m.powered_on { "" } else { " (powered off)" }
                    );
                }
                for b in &p.blocked {
                    println!("  blocked by {}:", b.vm);
                    print_rejected(&b.rejected);
                }
            })
        }
        Command::Entitlements { cluster } => {
            let c = load(&cluster)?;
            let e = vinfra_drs::entitlements(&c);
            emit(json, &e, |e| {
                println!("capacity: {} MHz, {} MB", e.capacity[0], e.capacity[1]);
                for (p, x) in c.pools.iter().zip(&e.pools) {
                    println!("  pool {}: {} MHz, {} MB", p.id, x[0], x[1]);
                }
                for (v, x) in c.vms.iter().zip(&e.vms) {
                    if v.powered_on {
                        println!("  vm {}: {} MHz, {} MB", v.id, x[0], x[1]);
                    }
                }
            })
        }
        Command::Admit { cluster, vm } => {
            let c = load(&cluster)?;
            let r = vinfra_drs::admit_power_on(&c, &vm);
            let out = serde_json::json!({"vm": vm, "admitted": r.is_ok(), "reason": r.as_ref().err().map(ToString::to_string)});
            emit(json, &out, |_| match &r {
                Ok(()) => println!("{vm}: admitted"),
                Err(e) => println!("{e}"),
            })
        }
        Command::HaAdmission {
            cluster,
            tolerate,
            percent,
        } => {
            let c = load(&cluster)?;
            let slots = ha::slot_admission(&c, tolerate);
            let pct = ha::percentage_admission(&c, percent, percent).map_err(|e| e.to_string())?;
            let out = serde_json::json!({"slots": slots, "percentage": pct});
            emit(json, &out, |_| {
                println!(
                    "slots: slot {} MHz / {} MB, {} slots, {} after {} host failure(s), {} needed: {}",
                    slots.slot[0],
                    slots.slot[1],
                    slots.total_slots,
                    slots.failover_slots,
                    tolerate,
                    slots.needed_slots,
                    if slots.admitted { "ok" } else { "NOT tolerated" }
                );
                println!(
                    "percentage: {:.1}% cpu and {:.1}% memory free, {percent}% required: {}",
                    pct.free_percent[0],
                    pct.free_percent[1],
                    if pct.admitted { "ok" } else { "NOT met" }
                );
            })
        }
        Command::HaRestart { cluster, hosts } => {
            let c = load(&cluster)?;
            let ids: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let plan = ha::restart_plan(&c, &ids).map_err(|e| e.to_string())?;
            emit(json, &plan, |p| {
                for r in &p.restarts {
                    println!("restart {} on {} ({:?})", r.vm, r.host, r.priority);
                }
                for n in &p.not_restarted {
                    println!("leave {} down: {}", n.vm, n.reason);
                    print_rejected(&n.rejected);
                }
            })
        }
        Command::Pack {
            cluster,
            budget,
            compare_ffd,
        } => {
            let c = load(&cluster)?;
            let plan = vinfra_drs::pack(&c, &PackOptions::with_budget(budget));
            // A second packing only when asked: at 10,000 VMs it is not free.
            let ffd = compare_ffd.then(|| vinfra_drs::first_fit_decreasing(&c));
            emit(json, &plan, |p| {
                let baseline = ffd.as_ref().map_or(String::new(), |f| {
                    format!(
                        "; first-fit-decreasing: {} hosts, {} unplaced",
                        f.hosts_used,
                        f.unplaced.len()
                    )
                });
                println!(
                    "{} hosts used (lower bound {}{baseline}), {} unplaced, {} steps",
                    p.hosts_used,
                    p.lower_bound,
                    p.unplaced.len(),
                    p.steps
                );
                for (vm, h) in &p.assignment {
                    println!("  {vm} -> {h}");
                }
                for vm in &p.unplaced {
                    println!("  {vm} unplaced");
                }
            })
        }
        Command::Generate {
            family,
            vms,
            hosts,
            moves,
            seed,
        } => {
            let inst = match family.as_str() {
                "triplets" => generate::triplets(seed, vms, vms / 12 + 2),
                "rule-heavy" => generate::rule_heavy(seed, vms),
                "perturbed" => generate::perturbed(seed, hosts, vms, moves),
                "shrunk" => generate::shrunk_triplets(seed, vms, vms / 12 + 2),
                "scaled" => generate::scaled_triplets(seed, vms, vms / 12 + 2),
                "quintuplets" => generate::quintuplets(seed, vms, vms / 20 + 2),
                "heterogeneous" => generate::heterogeneous(seed, vms, vms / 12 + 2),
                "random" => generate::random_2d(seed, vms, 10, 60),
                other => {
                    return Err(format!(
                        "unknown family {other:?} (triplets, rule-heavy, perturbed, shrunk, scaled, quintuplets, heterogeneous, random)"
                    ))
                }
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&inst.spec).map_err(|e| e.to_string())?
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vinfra-drs: {e}");
            ExitCode::FAILURE
        }
    }
}
