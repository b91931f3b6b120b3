//! HA policy for the center: admission control over the inventory and the cluster's
//! failover capacity, measured by drs's `ha` module on the cluster as [`crate::drs`]
//! builds it (the same hosts, VMs and reservations DRS sees).
//!
//! As in VI3, the hosts' HA agents restart VMs on their own (the center may be down);
//! the center holds the policy: with admission control on, a power-on that would leave
//! the cluster unable to restart its running VMs after `failures_tolerated` host failures
//! (slot policy), or with less than the reserved percentages free (percentage policy),
//! is refused with the reason. Restarts by HA are never refused (they do not pass here).
//!
//! Slots: a slot is the largest CPU and memory reservation (memory with its overhead) of
//! the running VMs, at least drs's [`MIN_SLOT`](vinfra_drs::ha::MIN_SLOT); every running
//! VM takes one; the hosts with the most slots are the ones assumed to fail.
//!
//! ```
//! use vinfra_center::ha::{admit, AdmissionError};
//! use vinfra_center::model::{ClusterSettings, Host, HostState, Vm};
//! use vinfra_host::api::{HostCapacity, HostInfo, PowerState, VmInfo, VmSpec};
//!
//! let host = |id, name: &str| Host {
//!     name: name.into(),
//!     address: String::new(),
//!     state: HostState::Connected,
//!     report: Some(HostInfo::new(id, name, HostCapacity { cpus: 4, memory_mib: 1024 })),
//!     event_cursor: 0,
//!     seen_ms: 0,
//! };
//! let vm = |name: &str, on: Option<&str>| {
//!     let mut spec = VmSpec::new(name, "/g.elf", 512);
//!     spec.resources.reservation_mib = 512;
//!     let state = if on.is_some() { PowerState::Running } else { PowerState::ShutOff };
//!     Vm { name: name.into(), info: VmInfo::new(spec, state), host: on.map(Into::into),
//!          resource_pool: None, seen_ms: 0 }
//! };
//! let hosts = [host(1, "esx-1"), host(2, "esx-2"), host(3, "esx-3")];
//! // One slot of 512 MiB (+ overhead) per host: 3 slots, 2 after one host failure.
//! let vms = [vm("web-1", Some("esx-1")), vm("web-2", Some("esx-2")), vm("web-3", None)];
//! let settings = ClusterSettings::default(); // admission control on, 1 failure
//! match admit(&hosts, &vms, &settings, "web-3") {
//!     Err(AdmissionError::Refused(why)) => assert!(why.starts_with(
//!         "powering on web-3 (512 MiB reserved) would leave 0 host failures tolerated, \
//!          the cluster's HA policy asks 1"), "{why}"),
//!     other => panic!("{other:?}"),
//! }
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vinfra_drs::ha::{percentage_admission, slot_admission, PercentReport};
use vinfra_drs::Cluster;
use vinfra_host::api::{HaVerdict, PowerState};

use crate::drs::cluster_spec;
use crate::model::{self, ClusterSettings, HaPolicy, Host, HostState, Vm};

/// The API's error kind for a power-on that admission control refuses.
pub const ADMISSION_REFUSED: &str = "ha_admission_refused";

/// Why a power-on is not admitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// It would break the cluster's HA policy; the sentence says how.
    #[error("{0}")]
    Refused(String),
    /// The inventory is not a cluster drs accepts.
    #[error("drs: {0}")]
    Drs(#[from] vinfra_drs::Error),
}

/// The cluster's failover capacity now (`GET /api/vcenter/cluster/{cluster}/ha`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HaStatus {
    /// The cluster.
    pub cluster: String,
    /// Whether power-ons that would break the policy are refused.
    pub admission_control: bool,
    /// How the failover capacity is measured.
    pub policy: HaPolicy,
    /// Host failures the policy asks the cluster to tolerate (slot policy).
    pub failures_asked: u32,
    /// Host failures after which every running VM still finds a slot, now.
    pub failures_tolerated: u32,
    /// Whether the policy (slots or percentage, as set) is met now.
    pub satisfied: bool,
    /// The slot measure.
    pub slots: SlotCapacity,
    /// The percentage measure.
    pub percentage: PercentCapacity,
    /// Every host with the HA agents' verdicts about it.
    pub hosts: Vec<HostHa>,
}

/// Slots of the cluster (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlotCapacity {
    /// A slot's CPU, MHz (1,000 per logical CPU).
    pub slot_cpu_mhz: u64,
    /// A slot's memory, MiB (the largest reservation with its overhead).
    pub slot_memory_mib: u64,
    /// Slots on the usable hosts.
    pub total: u64,
    /// Slots the running VMs take (one each).
    pub used: u64,
    /// Slots left after the asked number of host failures (the largest hosts).
    pub failover: u64,
    /// Slots per usable host.
    pub per_host: Vec<HostSlots>,
}

/// One host's slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostSlots {
    /// The host.
    pub host: String,
    /// Its slots.
    pub slots: u64,
}

/// Reserved and free capacity (the percentage policy's measure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PercentCapacity {
    /// CPU of the usable hosts, MHz.
    pub cpu_capacity_mhz: u64,
    /// Memory of the usable hosts, MiB.
    pub memory_capacity_mib: u64,
    /// CPU the running VMs reserve (at least a minimum slot each), MHz.
    pub cpu_reserved_mhz: u64,
    /// Memory they reserve (with overhead, at least a minimum slot each), MiB.
    pub memory_reserved_mib: u64,
    /// CPU left unreserved, percent.
    pub cpu_free_percent: f64,
    /// Memory left unreserved, percent.
    pub memory_free_percent: f64,
    /// CPU the policy keeps free for failover, percent.
    pub cpu_asked_percent: u8,
    /// Memory the policy keeps free for failover, percent.
    pub memory_asked_percent: u8,
}

/// One host as HA sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostHa {
    /// The host.
    pub name: String,
    /// Whether the center reaches it.
    pub state: HostState,
    /// The gravest verdict an answering host's agent has about it (`failed` before
    /// `fenced`, `isolated`, `partitioned`, `unknown`, `alive`); none before any verdict.
    pub verdict: Option<HaVerdict>,
    /// Each answering host's verdict about it (itself included).
    pub views: Vec<HaView>,
    /// Time since an answering peer's agent last heard its network heartbeat, ms, as
    /// of that peer's last report (the freshest of the views; none when no peer says).
    pub heard_ms_ago: Option<u64>,
    /// Time since it last answered the center's poll, ms (none if it never did).
    pub seen_ms_ago: Option<u64>,
}

/// One agent's verdict about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HaView {
    /// The host whose agent judges.
    pub by: String,
    /// Its verdict.
    pub verdict: HaVerdict,
    /// Time since that agent last heard the host's heartbeat, ms (none about itself).
    pub heard_ms_ago: Option<u64>,
}

/// Whether `vm` (shut off) may power on under the cluster's HA policy. A VM that runs
/// already, or that the inventory does not know, is the host's to refuse.
pub fn admit(
    hosts: &[Host],
    vms: &[Vm],
    settings: &ClusterSettings,
    vm: &str,
) -> Result<(), AdmissionError> {
    let ha = &settings.ha;
    if !ha.admission_control {
        return Ok(());
    }
    let Some(record) = vms.iter().find(|v| v.name == vm) else {
        return Ok(());
    };
    if matches!(record.info.state, PowerState::Running | PowerState::Paused) {
        return Ok(());
    }
    let mut spec = cluster_spec(hosts, vms, &settings.drs);
    if let Some(d) = spec.vms.iter_mut().find(|v| v.id == vm) {
        // Counted as running; where does not matter to either measure.
        d.powered_on = true;
    }
    let c = Cluster::new(spec)?;
    let reserved = record.info.spec.resources.reservation_mib;
    let what = format!("powering on {vm} ({reserved} MiB reserved)");
    match ha.policy {
        HaPolicy::Slots => {
            let r = slot_admission(&c, ha.failures_tolerated);
            if r.admitted {
                return Ok(());
            }
            let asked = ha.failures_tolerated;
            Err(AdmissionError::Refused(format!(
                "{what} would leave {} tolerated, the cluster's HA policy asks {asked}: \
                 {} running VMs would need a slot of {} MHz and {} MiB each, {} slots \
                 remain after {}",
                failures(tolerated(&c)),
                r.needed_slots,
                r.slot[0],
                r.slot[1],
                r.failover_slots,
                failures(asked),
            )))
        }
        HaPolicy::Percentage => {
            let r = percent(&c, ha)?;
            if r.admitted {
                return Ok(());
            }
            Err(AdmissionError::Refused(format!(
                "{what} would leave {:.0} % of CPU and {:.0} % of memory unreserved, the \
                 cluster's HA policy keeps {} % and {} % free for failover",
                r.free_percent[0],
                r.free_percent[1],
                ha.cpu_failover_percent,
                ha.memory_failover_percent,
            )))
        }
    }
}

/// The failover capacity of `cluster` now, and every host's HA verdicts. `now_ms` dates
/// the hosts' last answers.
pub fn status(
    cluster: &model::Cluster,
    hosts: &[Host],
    vms: &[Vm],
    now_ms: u64,
) -> Result<HaStatus, vinfra_drs::Error> {
    let ha = &cluster.settings.ha;
    let c = Cluster::new(cluster_spec(hosts, vms, &cluster.settings.drs))?;
    let slots = slot_admission(&c, ha.failures_tolerated);
    let pct = percent(&c, ha)?;
    let satisfied = match ha.policy {
        HaPolicy::Slots => slots.admitted,
        HaPolicy::Percentage => pct.admitted,
    };
    Ok(HaStatus {
        cluster: cluster.name.clone(),
        admission_control: ha.admission_control,
        policy: ha.policy,
        failures_asked: ha.failures_tolerated,
        failures_tolerated: tolerated(&c),
        satisfied,
        slots: SlotCapacity {
            slot_cpu_mhz: slots.slot[0],
            slot_memory_mib: slots.slot[1],
            total: slots.total_slots,
            used: slots.needed_slots,
            failover: slots.failover_slots,
            per_host: slots
                .slots_per_host
                .iter()
                .map(|(host, slots)| HostSlots {
                    host: host.clone(),
                    slots: *slots,
                })
                .collect(),
        },
        percentage: PercentCapacity {
            cpu_capacity_mhz: pct.capacity[0],
            memory_capacity_mib: pct.capacity[1],
            cpu_reserved_mhz: pct.reserved[0],
            memory_reserved_mib: pct.reserved[1],
            cpu_free_percent: pct.free_percent[0],
            memory_free_percent: pct.free_percent[1],
            cpu_asked_percent: ha.cpu_failover_percent,
            memory_asked_percent: ha.memory_failover_percent,
        },
        hosts: hosts.iter().map(|h| host_ha(h, hosts, now_ms)).collect(),
    })
}

fn percent(c: &Cluster, ha: &model::HaSettings) -> Result<PercentReport, vinfra_drs::Error> {
    percentage_admission(c, ha.cpu_failover_percent, ha.memory_failover_percent)
}

/// The most host failures after which the running VMs still all find a slot (0 also
/// when they do not fit even now: then `satisfied` is false).
fn tolerated(c: &Cluster) -> u32 {
    let hosts = u32::try_from(c.usable_hosts().count()).unwrap_or(u32::MAX);
    // Admission only gets harder with more failures: the first refusal ends the count.
    let fits = (0..hosts)
        .take_while(|&t| slot_admission(c, t).admitted)
        .count();
    u32::try_from(fits.saturating_sub(1)).unwrap_or(u32::MAX)
}

fn failures(n: u32) -> String {
    if n == 1 {
        "1 host failure".into()
    } else {
        format!("{n} host failures")
    }
}

/// How grave a verdict is, to show the gravest of several agents' views.
fn gravity(v: HaVerdict) -> u8 {
    match v {
        HaVerdict::Alive => 0,
        HaVerdict::Unknown => 1,
        HaVerdict::Partitioned => 2,
        HaVerdict::Isolated => 3,
        HaVerdict::Fenced => 4,
        HaVerdict::Failed => 5,
        // A verdict newer than this center: shown, as grave as unknown.
        _ => 1,
    }
}

fn host_ha(h: &Host, hosts: &[Host], now_ms: u64) -> HostHa {
    let id = h.report.as_ref().map(|r| r.id);
    // Only answering hosts' reports: a silent host's last report is old news.
    let views: Vec<HaView> = hosts
        .iter()
        .filter(|by| by.state != HostState::NotResponding)
        .filter_map(|by| {
            let peer = by.report.as_ref()?.ha.iter().find(|p| Some(p.id) == id)?;
            Some(HaView {
                by: by.name.clone(),
                verdict: peer.verdict,
                heard_ms_ago: peer.heard_ms_ago,
            })
        })
        .collect();
    HostHa {
        name: h.name.clone(),
        state: h.state,
        verdict: views.iter().map(|v| v.verdict).max_by_key(|&v| gravity(v)),
        heard_ms_ago: views.iter().filter_map(|v| v.heard_ms_ago).min(),
        views,
        seen_ms_ago: (h.seen_ms > 0).then(|| now_ms.saturating_sub(h.seen_ms)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use vinfra_host::api::{HaPeer, HostCapacity, HostInfo, VmInfo, VmSpec};

    fn host(id: u32, name: &str, memory_mib: u64) -> Host {
        Host {
            name: name.into(),
            address: String::new(),
            state: HostState::Connected,
            report: Some(HostInfo::new(
                id,
                name,
                HostCapacity {
                    cpus: 8,
                    memory_mib,
                },
            )),
            event_cursor: 0,
            seen_ms: 1000,
        }
    }

    fn vm(name: &str, on: Option<&str>, reserved_mib: u64) -> Vm {
        let size = u32::try_from(reserved_mib.max(512)).unwrap();
        let mut spec = VmSpec::new(name, "/g.elf", size);
        spec.resources.reservation_mib = reserved_mib;
        let state = if on.is_some() {
            PowerState::Running
        } else {
            PowerState::ShutOff
        };
        Vm {
            name: name.into(),
            info: VmInfo::new(spec, state),
            host: on.map(Into::into),
            resource_pool: None,
            seen_ms: 0,
        }
    }

    fn cluster(ha: impl FnOnce(&mut model::HaSettings)) -> model::Cluster {
        let mut settings = ClusterSettings::default();
        ha(&mut settings.ha);
        model::Cluster {
            name: "c".into(),
            datacenter: "dc".into(),
            settings,
        }
    }

    /// Three hosts of 2 GiB; slots of 512 + 24 MiB overhead: 3 per host.
    fn hosts() -> Vec<Host> {
        (1..=3)
            .map(|i| host(i, &format!("esx-{i}"), 2048))
            .collect()
    }

    #[test]
    fn slots_refuse_the_power_on_that_eats_the_failover_reserve() {
        let hosts = hosts();
        let mut vms: Vec<Vm> = (0..5)
            .map(|i| vm(&format!("v{i}"), Some(&format!("esx-{}", i % 3 + 1)), 512))
            .collect();
        vms.push(vm("new", None, 512));
        let settings = cluster(|_| ()).settings;
        // 9 slots, 6 after one failure: the sixth VM fits.
        admit(&hosts, &vms, &settings, "new").unwrap();
        let c = cluster(|ha| ha.failures_tolerated = 2);
        let why = admit(&hosts, &vms, &c.settings, "new")
            .unwrap_err()
            .to_string();
        assert!(
            why.starts_with(
                "powering on new (512 MiB reserved) would leave 1 host failure tolerated, \
                 the cluster's HA policy asks 2"
            ),
            "{why}"
        );
        let off = cluster(|ha| {
            ha.failures_tolerated = 2;
            ha.admission_control = false;
        });
        admit(&hosts, &vms, &off.settings, "new").unwrap();
        let s = status(&c, &hosts, &vms, 1500).unwrap();
        assert_eq!((s.failures_tolerated, s.failures_asked), (1, 2));
        assert_eq!((s.slots.total, s.slots.used, s.slots.failover), (9, 5, 3));
        assert!(!s.satisfied, "5 running VMs in 3 slots: {s:?}");
    }

    #[test]
    fn the_percentage_policy_counts_reservations() {
        let hosts = hosts();
        let vms = vec![vm("a", Some("esx-1"), 1024), vm("b", None, 4096)];
        let c = cluster(|ha| ha.policy = HaPolicy::Percentage);
        let why = admit(&hosts, &vms, &c.settings, "b")
            .unwrap_err()
            .to_string();
        assert!(why.contains("% of memory unreserved"), "{why}");
        assert!(why.contains("keeps 25 % and 25 % free"), "{why}");
        let s = status(&c, &hosts, &vms, 0).unwrap();
        assert_eq!(s.percentage.memory_capacity_mib, 3 * 2048);
        assert!(s.satisfied);
    }

    #[test]
    fn verdicts_are_the_gravest_of_the_answering_hosts() {
        let mut hosts = hosts();
        let peers = |v3| {
            vec![
                HaPeer {
                    id: 1,
                    verdict: HaVerdict::Alive,
                    heard_ms_ago: None,
                },
                HaPeer {
                    id: 3,
                    verdict: v3,
                    heard_ms_ago: Some(if v3 == HaVerdict::Failed { 9000 } else { 300 }),
                },
            ]
        };
        hosts[0].report.as_mut().unwrap().ha = peers(HaVerdict::Failed);
        hosts[1].report.as_mut().unwrap().ha = peers(HaVerdict::Partitioned);
        hosts[2].report.as_mut().unwrap().ha = peers(HaVerdict::Alive);
        hosts[2].state = HostState::NotResponding;
        let s = status(&cluster(|_| ()), &hosts, &[], 3000).unwrap();
        let h3 = &s.hosts[2];
        assert_eq!(h3.verdict, Some(HaVerdict::Failed));
        assert_eq!(h3.views.len(), 2, "not its own stale view: {h3:?}");
        assert_eq!(h3.seen_ms_ago, Some(2000));
        assert_eq!(h3.heard_ms_ago, Some(300), "the freshest answering view");
        assert_eq!(s.hosts[1].verdict, None);
    }
}
