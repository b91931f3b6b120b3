//! The planner's view turned into a `vinfra-drs` cluster, and drs's restart plan back.

use std::collections::BTreeMap;

use vinfra_drs::{ha, CapacityModel, Cluster, ClusterSpec, HostSpec, VmSpec};

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
    let mut spec = ClusterSpec::new(spec_hosts, spec_vms);
    // A restarted VM takes its whole size on its new host (vmm-core maps all its RAM),
    // so restarts must fit by size, not only by reservation.
    spec.settings.capacity_model = CapacityModel::Footprint;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{IsolationResponse, RestartPriority};

    fn vm(name: &str, owner: u32, mem_mb: i64, priority: RestartPriority) -> VmRecord {
        VmRecord {
            name: name.into(),
            owner: Some(owner),
            desired_on: true,
            priority,
            isolation_response: IsolationResponse::LeaveOn,
            cpu_mhz: 100,
            mem_mb,
        }
    }

    #[test]
    fn restarts_fit_by_size_high_priority_first() {
        let hosts: Vec<HostConfig> = (1..=2)
            .map(|id| HostConfig {
                id,
                addr: format!("127.0.0.1:{id}"),
                cpu_mhz: 10_000,
                mem_mb: 4096,
            })
            .collect();
        // Host 1 failed; host 2 has 4096 MB of which 1024 are used: room for one of the
        // two 2048 MB VMs only, the high-priority one.
        let vms = vec![
            vm("low", 1, 2048, RestartPriority::Low),
            vm("high", 1, 2048, RestartPriority::High),
            vm("there", 2, 1024, RestartPriority::Medium),
        ];
        let round = restart(&hosts, &[2], &vms, &["low", "high"]).unwrap();
        assert_eq!(
            round.assignments,
            vec![Assignment {
                vm: "high".into(),
                host: 2
            }]
        );
        assert_eq!(round.unplaced.len(), 1);
        assert_eq!(round.unplaced[0].vm, "low");
    }
}
