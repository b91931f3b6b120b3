//! Inventory records: what the store keeps and the API shows (serde + utoipa schemas).
//! A leaf: every other module may use it, it uses only the host API's types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vinfra_host::api::{ErrorDetail, HostInfo, VmInfo};

/// The datacentre every inventory starts with.
pub const DEFAULT_DATACENTER: &str = "dc-1";
/// The cluster every inventory starts with (the hosts' cluster).
pub const DEFAULT_CLUSTER: &str = "cluster-1";

/// A user's role; each one may do what the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, changes nothing.
    ReadOnly,
    /// Runs VMs and hosts: power, migrate, snapshot, maintenance.
    Operator,
    /// Also changes the inventory, the cluster's settings and the users.
    Administrator,
}

impl Role {
    /// The role's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::Operator => "operator",
            Self::Administrator => "administrator",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::ReadOnly, Self::Operator, Self::Administrator]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A user of the center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A datacentre: the inventory's top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Datacenter {
    /// Its name.
    pub name: String,
}

/// DRS automation level (VI3's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrsAutomation {
    /// Recommendations only.
    Manual,
    /// Initial placement automatic, migrations recommended.
    PartiallyAutomated,
    /// Placement and migrations automatic.
    FullyAutomated,
}

/// A cluster's DRS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrsSettings {
    /// Automation level.
    pub automation: DrsAutomation,
    /// Migration threshold, 1 (only mandatory moves) to 5 (any improvement).
    pub threshold: u8,
}

/// How HA admission control measures the failover capacity (VI3's two policies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HaPolicy {
    /// The running VMs must each find a slot (the largest reservation) on the hosts left
    /// after `failures_tolerated` hosts fail (the ones with the most slots).
    #[default]
    Slots,
    /// The running VMs' reservations must leave `cpu_failover_percent` and
    /// `memory_failover_percent` of the cluster's capacity free.
    Percentage,
}

/// A cluster's HA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaSettings {
    /// Whether power-ons that would break the failover capacity are refused.
    pub admission_control: bool,
    /// Host failures the cluster must tolerate (admission control).
    pub failures_tolerated: u32,
    /// How the failover capacity is measured (`slots` when absent: settings stored
    /// before the policy existed read as they behaved).
    #[serde(default)]
    pub policy: HaPolicy,
    /// The percentage policy's CPU kept free for failover, 0 to 100.
    #[serde(default = "failover_percent")]
    pub cpu_failover_percent: u8,
    /// The percentage policy's memory kept free for failover, 0 to 100.
    #[serde(default = "failover_percent")]
    pub memory_failover_percent: u8,
}

/// VMware's default for the percentage policy.
fn failover_percent() -> u8 {
    25
}

/// A cluster's settings (stored as JSON in its row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// DRS.
    pub drs: DrsSettings,
    /// HA.
    pub ha: HaSettings,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            drs: DrsSettings {
                automation: DrsAutomation::Manual,
                threshold: 3,
            },
            ha: HaSettings {
                admission_control: true,
                failures_tolerated: 1,
                policy: HaPolicy::Slots,
                cpu_failover_percent: failover_percent(),
                memory_failover_percent: failover_percent(),
            },
        }
    }
}

/// A cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// The datacentre it belongs to.
    pub datacenter: String,
    /// DRS and HA settings.
    pub settings: ClusterSettings,
}

/// Whether the center reaches a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Answers its polls.
    Connected,
    /// Missed its last polls (or never answered yet).
    NotResponding,
    /// Answers, and is in maintenance mode (runs no VM).
    Maintenance,
}

impl HostState {
    /// The state's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::NotResponding => "not_responding",
            Self::Maintenance => "maintenance",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Connected, Self::NotResponding, Self::Maintenance]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A host of the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    /// Its inventory name (`esx-1`).
    pub name: String,
    /// Its API (`http://IP:PORT`).
    pub address: String,
    /// Connection state.
    pub state: HostState,
    /// Its last report (`GET /api/v1/host`), if it ever answered.
    pub report: Option<HostInfo>,
    /// The host's last event copied into the center's log.
    pub event_cursor: u64,
    /// When it last answered (ms since the Unix epoch), 0 if never.
    pub seen_ms: u64,
}

/// A VM as the hosts report it, with what only the center knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Vm {
    /// Its name.
    pub name: String,
    /// The hosts' view: definition, power state, host id, statistics.
    pub info: VmInfo,
    /// The inventory name of the host that runs it, if it runs.
    pub host: Option<String>,
    /// Its resource pool (center only).
    pub resource_pool: Option<String>,
    /// When the hosts' view of it last changed (ms since the Unix epoch; a report that
    /// changes nothing does not rewrite the row).
    pub seen_ms: u64,
}

/// How a center task ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Still running.
    Running,
    /// Done.
    Succeeded,
    /// Failed; `error` says why.
    Failed,
}

impl TaskState {
    /// The state's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A center task (persisted): one long operation, usually following a host's task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// Its id.
    pub id: u64,
    /// What it does (`vm.start`, `vm.relocate`, `host.enter_maintenance`…).
    pub kind: String,
    /// What it acts on (a VM's or host's name).
    pub target: String,
    /// Who asked.
    pub user: String,
    /// Running, or how it ended.
    pub state: TaskState,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// The last progress message.
    pub message: String,
    /// What it produced.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<ErrorDetail>,
    /// The host whose task it follows.
    pub host: Option<String>,
    /// That host's task id.
    pub host_task: Option<u64>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it ended.
    pub ended_ms: Option<u64>,
}

/// A backup job (VCB's jobs, kept by the center): which VMs, to which repository, when,
/// and how many backups of each VM to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupJob {
    /// Its name (the key).
    pub name: String,
    /// The VMs it backs up, by name.
    pub vms: Vec<String>,
    /// The vcb repository: a path on the hosts (shared by them for restores anywhere).
    pub repository: String,
    /// When it runs, in its canonical form (`every 6h`, `daily 02:00`; see
    /// [`crate::schedule`]).
    pub schedule: String,
    /// How many backups of each VM stay in the repository after a run (0: all).
    pub keep_last: u32,
    /// Only the blocks changed since each VM's last backup (a full read otherwise).
    pub incremental: bool,
    /// Which disks of each VM, by index in its definition (empty: all of them).
    #[serde(default)]
    pub disks: Vec<u32>,
    /// Whether the scheduler runs it (a disabled job still runs when asked).
    pub enabled: bool,
    /// When its last run started (ms since the Unix epoch).
    pub last_run_ms: Option<u64>,
    /// When the scheduler runs it next (none while disabled).
    pub next_run_ms: Option<u64>,
    /// How its last run went.
    pub last_result: Option<BackupJobResult>,
}

/// How a backup job's run went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupJobResult {
    /// `running`, `succeeded` (every VM backed up, retention applied) or `failed`.
    pub state: TaskState,
    /// A sentence for people (which VMs failed, and why).
    pub message: String,
    /// The center tasks of the run, one per VM whose backup started.
    pub tasks: Vec<u64>,
    /// When it ended.
    pub ended_ms: Option<u64>,
}

/// An event's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Something happened.
    Info,
    /// Something needs a look.
    Warning,
    /// Something failed.
    Error,
}

impl Severity {
    /// The severity's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }

    /// The severity named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Info, Self::Warning, Self::Error]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// An event to record (the store gives it its id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewEvent {
    /// When (ms since the Unix epoch).
    pub time_ms: u64,
    /// How bad.
    pub severity: Severity,
    /// What (`vm.power_on`, `host.not_responding`, `session.login`, a host's event name…).
    pub kind: String,
    /// What it is about (a VM, host or user name).
    pub target: String,
    /// Who did it (none for what hosts report on their own).
    pub user: Option<String>,
    /// The host that reported it, for events copied from hosts.
    pub host: Option<String>,
    /// A sentence for people.
    pub message: String,
    /// Details.
    pub data: serde_json::Value,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Its id, increasing.
    pub id: u64,
    /// The event.
    #[serde(flatten)]
    pub event: NewEvent,
}

/// A statistics roll-up level, as vCenter kept them by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatLevel {
    /// 0 (raw samples) to 3.
    pub level: u8,
    /// The length of one sample's period.
    pub period_ms: u64,
    /// How long samples of this level are kept.
    pub retention_ms: u64,
}

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The levels: 20 s for an hour, 5 min for a day, 30 min for a week, 2 h for a year.
pub const STAT_LEVELS: [StatLevel; 4] = [
    StatLevel {
        level: 0,
        period_ms: 20_000,
        retention_ms: HOUR_MS,
    },
    StatLevel {
        level: 1,
        period_ms: 5 * MINUTE_MS,
        retention_ms: DAY_MS,
    },
    StatLevel {
        level: 2,
        period_ms: 30 * MINUTE_MS,
        retention_ms: 7 * DAY_MS,
    },
    StatLevel {
        level: 3,
        period_ms: 2 * HOUR_MS,
        retention_ms: 365 * DAY_MS,
    },
];

/// One statistics sample of a host or VM (level 0: as measured; above: averages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatSample {
    /// `host/NAME` or `vm/NAME`.
    pub entity: String,
    /// Roll-up level (see [`STAT_LEVELS`]).
    pub level: u8,
    /// The start of its period (ms since the Unix epoch).
    pub time_ms: u64,
    /// CPU use, percent of one CPU.
    pub cpu_percent: f64,
    /// Memory in use, MiB.
    pub memory_mib: f64,
    /// Disk bytes read and written (cumulative counter as reported).
    pub disk_bytes: f64,
    /// Network (console) bytes (cumulative counter as reported).
    pub net_bytes: f64,
}

/// One resource of a resource pool: CPU in MHz (one logical CPU counts 1000, as DRS
/// counts it), memory in MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolAllocation {
    /// Guaranteed to the pool's VMs and child pools together.
    #[serde(default)]
    pub reservation: u64,
    /// At most this much, none = unlimited (at least the reservation).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Weight under contention among its siblings: 500 low, 1000 normal, 2000 high, or
    /// any number.
    #[serde(default = "pool_shares_normal")]
    pub shares: u32,
    /// Whether the children may borrow unreserved capacity from the pool's parent when
    /// their reservations outgrow the pool's (vSphere's expandable reservation).
    #[serde(default = "on_by_default")]
    pub expandable_reservation: bool,
}

fn pool_shares_normal() -> u32 {
    1000
}

fn on_by_default() -> bool {
    true
}

impl Default for PoolAllocation {
    fn default() -> Self {
        Self {
            reservation: 0,
            limit: None,
            shares: pool_shares_normal(),
            expandable_reservation: true,
        }
    }
}

/// A resource pool: a node of a cluster's tree of reservations, limits and shares (the
/// cluster itself is the root). Center only: hosts know nothing of pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResourcePool {
    /// Its name (unique in the inventory).
    pub name: String,
    /// The cluster it divides.
    pub cluster: String,
    /// Its parent pool; none = the cluster's root.
    pub parent: Option<String>,
    /// CPU (MHz).
    pub cpu_allocation: PoolAllocation,
    /// Memory (MiB).
    pub memory_allocation: PoolAllocation,
}

/// What a DRS rule asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Keep the VMs together on one host.
    Affinity,
    /// Keep the VMs on different hosts.
    AntiAffinity,
    /// Bind the VMs to (or away from) a group of hosts.
    VmHost,
}

/// How a VM-host rule binds (hard `must`, soft `should`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmHostMode {
    /// Only on these hosts.
    MustRunOn,
    /// Preferably on these hosts.
    ShouldRunOn,
    /// Never on these hosts.
    MustNotRunOn,
    /// Preferably not on these hosts.
    ShouldNotRunOn,
}

/// A DRS rule's definition (stored as JSON in its row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDefinition {
    /// What it asks.
    pub kind: RuleKind,
    /// Whether DRS honours it now.
    #[serde(default = "on_by_default")]
    pub enabled: bool,
    /// The VMs it binds (at least two for affinity and anti-affinity).
    pub vms: Vec<String>,
    /// VM-host rules: the host group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// VM-host rules: how it binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VmHostMode>,
}

/// A DRS rule of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rule {
    /// Its name (unique in the inventory).
    pub name: String,
    /// The cluster whose DRS honours it.
    pub cluster: String,
    /// What it asks.
    #[serde(flatten)]
    pub definition: RuleDefinition,
}
