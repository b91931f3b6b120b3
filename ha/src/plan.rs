//! The planner's view turned into a `vinfra-drs` cluster, and drs's restart plan back.

use std::collections::BTreeMap;

use vinfra_drs::{ha, CapacityModel, Cluster, ClusterSpec, HostSpec, VmSpec};

use crate::config::Admission;

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

/// Whether powering `candidate` on keeps the failover capacity that `admission` asks for,
/// with the VMs that run on `targets` now. `Err` says why not.
pub fn admit(
    hosts: &[HostConfig],
    targets: &[u32],
    vms: &[VmRecord],
    candidate: &str,
    admission: Admission,
) -> Result<(), String> {
    let Some(&first) = targets.first() else {
        return Err("no host can run it".into());
    };
    let spec_hosts: Vec<HostSpec> = hosts
        .iter()
        .filter(|h| targets.contains(&h.id))
        .map(|h| HostSpec::new(host_name(h.id), h.cpu_mhz, h.mem_mb))
        .collect();
    let mut spec_vms = Vec::new();
    for v in vms {
        let on = if v.name == candidate {
            Some(first)
        } else {
            v.owner.filter(|o| targets.contains(o))
        };
        if let Some(h) = on {
            let mut s = VmSpec::new(v.name.clone(), v.cpu_mhz, v.mem_mb);
            // Our VMs take their whole size: it is what a restart must find.
            s.cpu.reservation = v.cpu_mhz;
            s.mem.reservation = v.mem_mb;
            spec_vms.push(s.on(host_name(h)));
        }
    }
    let mut spec = ClusterSpec::new(spec_hosts, spec_vms);
    spec.settings.capacity_model = CapacityModel::Footprint;
    let cluster = Cluster::new(spec).map_err(|e| format!("admission control: {e}"))?;
    match admission {
        Admission::Off => Ok(()),
        Admission::Slots { tolerate } => {
            let r = ha::slot_admission(&cluster, tolerate);
            if r.admitted {
                Ok(())
            } else {
                Err(format!(
                    "admission control: {} running VMs need a slot each, {} slots remain after {tolerate} host failure(s)",
                    r.needed_slots, r.failover_slots
                ))
            }
        }
        Admission::Percentage { cpu, mem } => {
            let r = ha::percentage_admission(&cluster, cpu, mem)
                .map_err(|e| format!("admission control: {e}"))?;
            if r.admitted {
                Ok(())
            } else {
                Err(format!(
                    "admission control: {:.0} % CPU and {:.0} % memory would stay free, {cpu} % and {mem} % are reserved for failover",
                    r.free_percent[0], r.free_percent[1]
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{IsolationResponse, RestartPriority};

    /// Two hosts of 10,000 MHz and 4,096 MB.
    fn two_hosts() -> Vec<HostConfig> {
        (1..=2)
            .map(|id| HostConfig {
                id,
                addr: format!("127.0.0.1:{id}"),
                cpu_mhz: 10_000,
                mem_mb: 4096,
            })
            .collect()
    }

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
    fn a_power_on_that_breaks_the_failover_reserve_is_refused() {
        let hosts = two_hosts();
        // Two hosts of 4096 MB, slots of 1900 MB and its overhead: two slots a host, and
        // after one host fails the other's two must hold them all.
        let mut vms = vec![
            vm("a", 1, 1900, RestartPriority::Medium),
            vm("b", 2, 1900, RestartPriority::Medium),
        ];
        vms.push(VmRecord {
            owner: None,
            ..vm("c", 0, 1900, RestartPriority::Medium)
        });
        let slots = Admission::Slots { tolerate: 1 };
        let e = admit(&hosts, &[1, 2], &vms, "c", slots).unwrap_err();
        assert!(e.contains("admission control"), "{e}");
        admit(&hosts, &[1, 2], &vms, "c", Admission::Off).unwrap();
        vms.remove(1);
        admit(&hosts, &[1, 2], &vms, "c", slots).unwrap();
    }

    #[test]
    fn restarts_fit_by_size_high_priority_first() {
        let hosts = two_hosts();
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
