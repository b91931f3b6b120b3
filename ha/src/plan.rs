//! The planner's view turned into a `vinfra-drs` cluster, and drs's restart plan back.

use std::collections::BTreeMap;

use vinfra_drs::{ha, Cluster, ClusterSpec, HostSpec, VmSpec};

use crate::config::HostConfig;
use crate::inventory::VmRecord;

/// The host id drs knows a host by.
fn host_name(id: u32) -> String {
    format!("h{id}")
}

/// Where a VM is to be powered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The VM.
    pub vm: String,
    /// The host that powers it on.
    pub host: u32,
}

/// Why the planner could not place a VM this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The VM.
    pub vm: String,
    /// drs's reason.
    pub reason: String,
}

/// The restarts of one planning round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundPlan {
    /// Power-ons, high priority first.
    pub assignments: Vec<Assignment>,
    /// VMs left down this round.
    pub unplaced: Vec<Unplaced>,
}

/// Plans the restart of `victims` (names in `vms`) onto `targets`.
///
/// `running` are the VMs that run on a target now (they use its capacity); VMs of hosts
/// that are neither targets nor failed (partitioned, unknown) are left out, and so are
/// those hosts.
pub fn restart(
    hosts: &[HostConfig],
    targets: &[u32],
    vms: &[VmRecord],
    victims: &[&str],
) -> Result<RoundPlan, vinfra_drs::Error> {
    if victims.is_empty() {
        return Ok(RoundPlan::default());
    }
    // The victims stand on one host that is down: drs restarts what ran on failed hosts.
    const DOWN: &str = "down";
    let mut spec_hosts: Vec<HostSpec> = hosts
        .iter()
        .filter(|h| targets.contains(&h.id))
        .map(|h| HostSpec::new(host_name(h.id), h.cpu_mhz, h.mem_mb))
        .collect();
    let (cpu, mem) = vms
        .iter()
        .fold((1, 1), |(c, m), v| (c + v.cpu_mhz, m + v.mem_mb));
    spec_hosts.push(HostSpec::new(DOWN, cpu, mem));
    let mut spec_vms = Vec::new();
    for v in vms {
        let mut s = VmSpec::new(v.name.clone(), v.cpu_mhz, v.mem_mb);
        s.restart_priority = v.priority;
        if victims.contains(&v.name.as_str()) {
            spec_vms.push(s.on(DOWN));
        } else if let Some(owner) = v.owner.filter(|o| targets.contains(o)) {
            spec_vms.push(s.on(host_name(owner)));
        }
    }
    let spec = ClusterSpec::new(spec_hosts, spec_vms);
    let cluster = Cluster::new(spec)?;
    let plan = ha::restart_plan(&cluster, &[DOWN])?;
    let by_name: BTreeMap<String, u32> = hosts.iter().map(|h| (host_name(h.id), h.id)).collect();
    Ok(RoundPlan {
        assignments: plan
            .restarts
            .iter()
            .filter_map(|r| {
                by_name.get(&r.host).map(|&host| Assignment {
                    vm: r.vm.clone(),
                    host,
                })
            })
            .collect(),
        unplaced: plan
            .not_restarted
            .iter()
            .map(|n| Unplaced {
                vm: n.vm.clone(),
                reason: n.reason.clone(),
            })
            .collect(),
    })
}
