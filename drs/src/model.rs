//! The serde model of a cluster: what comes in and goes out as JSON.
//!
//! These are plain input types; [`crate::Cluster::new`] validates them into typed,
//! indexed values. The schema is documented in the crate README.

use serde::{Deserialize, Serialize};

/// A whole cluster as given by its administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterSpec {
    /// The hosts.
    pub hosts: Vec<HostSpec>,
    /// The virtual machines.
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// The resource pools (a tree; `parent: null` hangs under the cluster root).
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    /// Affinity, anti-affinity and VM-host rules.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Automation and threshold.
    #[serde(default)]
    pub settings: Settings,
}

impl ClusterSpec {
    /// A cluster of the given hosts and VMs, no pools, no rules, default settings.
    pub fn new(hosts: Vec<HostSpec>, vms: Vec<VmSpec>) -> Self {
        Self {
            hosts,
            vms,
            pools: Vec::new(),
            rules: Vec::new(),
            settings: Settings::default(),
        }
    }
}

/// Power state of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPower {
    /// Running.
    #[default]
    On,
    /// Standby (DPM): takes no VMs.
    Standby,
    /// Off: takes no VMs.
    Off,
}

/// A host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HostSpec {
    /// Unique id.
    pub id: String,
    /// CPU capacity in MHz (> 0).
    pub cpu_mhz: i64,
    /// Memory capacity in MB (> 0).
    pub mem_mb: i64,
    /// CPU compatibility group.
    #[serde(default)]
    pub compat_group: Option<String>,
    /// In maintenance mode: takes no VMs and should be emptied.
    #[serde(default)]
    pub maintenance: bool,
    /// Power state.
    #[serde(default)]
    pub power: HostPower,
}

impl HostSpec {
    /// A powered-on host with no compatibility group.
    pub fn new(id: impl Into<String>, cpu_mhz: i64, mem_mb: i64) -> Self {
        Self {
            id: id.into(),
            cpu_mhz,
            mem_mb,
            compat_group: None,
            maintenance: false,
            power: HostPower::On,
        }
    }
}

/// Shares: a level or a custom value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shares {
    /// 500.
    Low,
    /// 1000.
    #[default]
    Normal,
    /// 2000.
    High,
    /// A custom value.
    Custom(u32),
}

impl Shares {
    /// The numeric share value.
    pub fn value(self) -> u64 {
        match self {
            Shares::Low => 500,
            Shares::Normal => 1000,
            Shares::High => 2000,
            Shares::Custom(v) => u64::from(v),
        }
    }
}

/// Reservation, limit and shares of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Allocation {
    /// Guaranteed minimum (MHz or MB, ≥ 0).
    #[serde(default)]
    pub reservation: i64,
    /// Maximum (≥ reservation), none = unlimited.
    #[serde(default)]
    pub limit: Option<i64>,
    /// Relative weight under contention.
    #[serde(default)]
    pub shares: Shares,
    /// Pools only: may borrow unreserved capacity from the parent.
    #[serde(default = "yes")]
    pub expandable: bool,
}

fn yes() -> bool {
    true
}

impl Default for Allocation {
    fn default() -> Self {
        Self {
            reservation: 0,
            limit: None,
            shares: Shares::Normal,
            expandable: true,
        }
    }
}

impl Allocation {
    /// A reservation with no limit and normal shares.
    pub fn reserved(reservation: i64) -> Self {
        Self {
            reservation,
            ..Self::default()
        }
    }
}

/// HA restart priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPriority {
    /// Never restarted by HA.
    Disabled,
    /// Restarted last.
    Low,
    /// Default.
    #[default]
    Medium,
    /// Restarted first.
    High,
}

/// A virtual machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VmSpec {
    /// Unique id.
    pub id: String,
    /// Configured CPU size in MHz (> 0).
    pub cpu_mhz: i64,
    /// Configured memory in MB (> 0).
    pub mem_mb: i64,
    /// Current CPU demand; default the configured size.
    #[serde(default)]
    pub cpu_demand_mhz: Option<i64>,
    /// Current memory demand; default the configured size.
    #[serde(default)]
    pub mem_demand_mb: Option<i64>,
    /// CPU reservation, limit, shares.
    #[serde(default)]
    pub cpu: Allocation,
    /// Memory reservation, limit, shares.
    #[serde(default)]
    pub mem: Allocation,
    /// Resource pool; none = the cluster root.
    #[serde(default)]
    pub pool: Option<String>,
    /// Current host; none = not placed.
    #[serde(default)]
    pub host: Option<String>,
    /// Whether it runs (only running VMs use capacity).
    #[serde(default = "yes")]
    pub powered_on: bool,
    /// HA restart priority.
    #[serde(default)]
    pub restart_priority: RestartPriority,
    /// "Same image" tag for memory page sharing.
    #[serde(default)]
    pub image: Option<String>,
    /// Required CPU compatibility group.
    #[serde(default)]
    pub compat_group: Option<String>,
}

impl VmSpec {
    /// A powered-on VM of the given size, demand = size, no pool, not placed.
    pub fn new(id: impl Into<String>, cpu_mhz: i64, mem_mb: i64) -> Self {
        Self {
            id: id.into(),
            cpu_mhz,
            mem_mb,
            cpu_demand_mhz: None,
            mem_demand_mb: None,
            cpu: Allocation::default(),
            mem: Allocation::default(),
            pool: None,
            host: None,
            powered_on: true,
            restart_priority: RestartPriority::Medium,
            image: None,
            compat_group: None,
        }
    }

    /// The same VM on a host.
    pub fn on(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }
}

/// A resource pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolSpec {
    /// Unique id.
    pub id: String,
    /// Parent pool; none = the cluster root.
    #[serde(default)]
    pub parent: Option<String>,
    /// CPU allocation.
    #[serde(default)]
    pub cpu: Allocation,
    /// Memory allocation.
    #[serde(default)]
    pub mem: Allocation,
}

impl PoolSpec {
    /// A pool with default allocations.
    pub fn new(id: impl Into<String>, parent: Option<&str>) -> Self {
        Self {
            id: id.into(),
            parent: parent.map(str::to_owned),
            cpu: Allocation::default(),
            mem: Allocation::default(),
        }
    }
}

/// How a VM-host rule binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmHostMode {
    /// Hard: only on these hosts.
    MustRunOn,
    /// Soft: prefer these hosts.
    ShouldRunOn,
    /// Hard: never on these hosts.
    MustNotRunOn,
    /// Soft: avoid these hosts.
    ShouldNotRunOn,
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RuleSpec {
    /// All these VMs on one host.
    VmAffinity {
        /// Rule id.
        id: String,
        /// At least two VMs.
        vms: Vec<String>,
    },
    /// All these VMs on different hosts.
    VmAntiAffinity {
        /// Rule id.
        id: String,
        /// At least two VMs.
        vms: Vec<String>,
    },
    /// These VMs and this group of hosts.
    VmHost {
        /// Rule id.
        id: String,
        /// The VM group.
        vms: Vec<String>,
        /// The host group.
        hosts: Vec<String>,
        /// Must/should run on / not on.
        mode: VmHostMode,
    },
}

impl RuleSpec {
    /// The rule's id.
    pub fn id(&self) -> &str {
        match self {
            RuleSpec::VmAffinity { id, .. }
            | RuleSpec::VmAntiAffinity { id, .. }
            | RuleSpec::VmHost { id, .. } => id,
        }
    }
}

/// DRS automation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutomationLevel {
    /// Placement and migrations are recommendations.
    Manual,
    /// Placement automatic, migrations recommended.
    PartiallyAutomated,
    /// Both automatic, migrations up to the threshold's priority.
    #[default]
    FullyAutomated,
}

/// What a host's capacity must cover: the hard constraint of admission control,
/// placement, evacuation and HA restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CapacityModel {
    /// VMware's: per resource, Σ (reservation + per-VM overhead) ≤ capacity. Demand may
    /// exceed a host's capacity (memory overcommitment, CPU time-sharing); that is
    /// contention, which balancing relieves first and never creates.
    #[default]
    Reservations,
    /// No overcommitment: per resource, Σ `max(reservation, min(demand, limit))` ≤
    /// capacity (consolidation without contention; this crate's first rule).
    Footprint,
}

/// Cluster settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// Automation level.
    #[serde(default)]
    pub automation: AutomationLevel,
    /// 1 (conservative: mandatory moves only) … 5 (aggressive).
    #[serde(default = "three")]
    pub migration_threshold: u8,
    /// Cap on recommendations per balancing pass.
    #[serde(default = "thousand")]
    pub max_moves_per_pass: u32,
    /// Cost–benefit: a move must gain at least this imbalance per GiB of memory copied.
    #[serde(default)]
    pub min_gain_per_gib: f64,
    /// What a host's capacity must cover.
    #[serde(default)]
    pub capacity_model: CapacityModel,
}

fn three() -> u8 {
    3
}
fn thousand() -> u32 {
    1000
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            automation: AutomationLevel::FullyAutomated,
            migration_threshold: 3,
            max_moves_per_pass: 1000,
            min_gain_per_gib: 0.0,
            capacity_model: CapacityModel::Reservations,
        }
    }
}

/// Test fixture: hosts "a", "b" and "c" of 10,000 MHz and 10,000 MB.
#[cfg(test)]
pub(crate) fn three_hosts() -> Vec<HostSpec> {
    ["a", "b", "c"]
        .map(|h| HostSpec::new(h, 10_000, 10_000))
        .to_vec()
}
