//! What `vinfra --server …` prints for people: the center's hosts, VMs (with the host
//! each runs on by name), tasks, events and DRS passes.

use serde::Deserialize;
use vinfra_host::api::{ErrorDetail, HostInfo, VmInfo};

use crate::show::{json_word, mib, table};

/// A host as the center lists it.
#[derive(Debug, Deserialize)]
pub struct CenterHost {
    pub name: String,
    pub address: String,
    pub state: String,
    pub report: Option<HostInfo>,
}

/// A VM as the center lists it.
#[derive(Debug, Deserialize)]
pub struct CenterVm {
    pub name: String,
    pub info: VmInfo,
    pub host: Option<String>,
    #[serde(default)]
    pub stale: bool,
}

/// A center task.
#[derive(Debug, Deserialize)]
pub struct CenterTask {
    pub id: u64,
    pub kind: String,
    pub target: String,
    pub user: String,
    pub state: String,
    pub progress: f64,
    #[serde(default)]
    pub message: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<ErrorDetail>,
}

/// An event of the center's log.
#[derive(Debug, Deserialize)]
pub struct CenterEvent {
    pub id: u64,
    pub time_ms: u64,
    pub severity: String,
    pub kind: String,
    pub message: String,
}

/// A DRS recommendation.
#[derive(Debug, Deserialize)]
pub struct Recommendation {
    pub vm: String,
    pub from: String,
    pub to: String,
    pub priority: u8,
    pub gain: f64,
    pub reason: String,
}

/// A DRS pass.
#[derive(Debug, Deserialize)]
pub struct DrsPass {
    pub cluster: String,
    pub imbalance: f64,
    pub imbalance_after: f64,
    pub target: f64,
    pub recommendations: Vec<Recommendation>,
    #[serde(default)]
    pub unresolved: Vec<String>,
    #[serde(default)]
    pub applied: Vec<Recommendation>,
    #[serde(default)]
    pub busy: Vec<String>,
}

pub fn hosts(hosts: &[CenterHost]) {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let r = h.report.as_ref();
            vec![
                h.name.clone(),
                h.state.clone(),
                h.address.clone(),
                r.map_or("-".into(), |r| r.capacity.cpus.to_string()),
                r.map_or("-".into(), |r| r.capacity.memory_mib.to_string()),
                r.map_or("-".into(), |r| format!("{:.1}", r.load.cpu_percent)),
                r.map_or("-".into(), |r| r.vms.running_here.to_string()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "ADDRESS",
            "CPUS",
            "MEMORY_MIB",
            "CPU_%",
            "VMS_HERE",
        ],
        &rows,
    );
}

pub fn host(h: &CenterHost) {
    println!("name          {}", h.name);
    println!("state         {}", h.state);
    println!("address       {}", h.address);
    match &h.report {
        Some(report) => crate::show::host(report),
        None => println!("report        (never answered)"),
    }
}

pub fn vms(vms: &[CenterVm]) {
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            let state = json_word(&v.info.state);
            vec![
                v.name.clone(),
                if v.stale {
                    format!("{state} (stale)")
                } else {
                    state
                },
                v.host.clone().unwrap_or_else(|| "-".into()),
                v.info.spec.memory_mib.to_string(),
                v.info.spec.vcpus.to_string(),
                v.info
                    .stats
                    .as_ref()
                    .map_or("-".into(), |s| format!("{:.1}", s.cpu_percent)),
                v.info
                    .stats
                    .as_ref()
                    .map_or("-".into(), |s| mib(s.rss_bytes)),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "HOST",
            "MEMORY_MIB",
            "VCPUS",
            "CPU_%",
            "RSS_MIB",
        ],
        &rows,
    );
}

pub fn vm(v: &CenterVm) {
    crate::show::vm(&v.info);
    println!(
        "runs on     {}{}",
        v.host.as_deref().unwrap_or("-"),
        if v.stale {
            " (stale: no host answers)"
        } else {
            ""
        }
    );
}

pub fn tasks(tasks: &[CenterTask]) {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.kind.clone(),
                t.target.clone(),
                t.user.clone(),
                t.state.clone(),
                format!("{:.0}%", t.progress * 100.0),
                t.error
                    .as_ref()
                    .map_or_else(|| t.message.clone(), |e| e.message.clone()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "KIND", "TARGET", "USER", "STATE", "PROGRESS", "MESSAGE",
        ],
        &rows,
    );
}

pub fn events(events: &[CenterEvent]) {
    for e in events {
        println!(
            "{:>6} {:>14} ms  {:<7} {:<24} {}",
            e.id, e.time_ms, e.severity, e.kind, e.message
        );
    }
}

fn moves(list: &[Recommendation]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.vm.clone(),
                r.from.clone(),
                r.to.clone(),
                r.priority.to_string(),
                format!("{:.3}", r.gain),
                r.reason.clone(),
            ]
        })
        .collect();
    table(&["VM", "FROM", "TO", "PRIORITY", "GAIN", "REASON"], &rows);
}

pub fn drs(p: &DrsPass) {
    println!(
        "cluster {}: imbalance {:.3} (target {:.3}), {:.3} after the moves",
        p.cluster, p.imbalance, p.target, p.imbalance_after
    );
    if p.recommendations.is_empty() {
        println!("no recommendation");
    } else {
        moves(&p.recommendations);
    }
    if !p.applied.is_empty() {
        println!("started:");
        moves(&p.applied);
    }
    for u in &p.unresolved {
        println!("unresolved: {u}");
    }
    if !p.busy.is_empty() {
        println!("left out (a task runs): {}", p.busy.join(", "));
    }
}
