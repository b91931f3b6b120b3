//! The request and response bodies of the API (serde, with OpenAPI schemas), and their
//! validation. Request bodies refuse unknown fields (a typo is an error, not a setting
//! silently ignored); answers accept them, so a client keeps working against a newer
//! host. A [`VmSpec`] or an operation's request reaches the
//! [`HostService`](super::HostService) only after [`VmSpec::validate`] or
//! [`VmOp::validate`] accepted it, so the host never sees a name that is not a safe path component.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
pub use super::power::PowerState;

/// Longest VM, snapshot or port group name.
pub const NAME_LEN_MAX: usize = 63;
/// Most disks one VM may have.
pub const DISKS_MAX: usize = 16;
/// Most NICs one VM may have.
pub const NICS_MAX: usize = 8;
/// Largest guest memory (1 TiB).
pub const MEMORY_MIB_MAX: u32 = 1 << 20;
/// Most vCPUs.
pub const VCPUS_MAX: u32 = 64;
/// Largest virtual disk (16 TiB).
pub const DISK_MIB_MAX: u64 = 16 << 20;
/// Longest kernel command line.
pub const CMDLINE_LEN_MAX: usize = 4096;

/// Checks a name that becomes a path component on the volume (`/vms/<name>/`): 1 to 63
/// characters of `A-Z a-z 0-9 - _ .`, starting with a letter or digit.
///
/// ```
/// use vinfra_host::api::validate_name;
/// assert!(validate_name("web-1").is_ok());
/// assert!(validate_name("../etc").is_err());
/// assert!(validate_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        Err("a name has 1 to 63 characters")
    } else if !first_ok {
        Err("a name starts with a letter or a digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Err("a name holds only letters, digits, '-', '_' and '.'")
    } else {
        Ok(())
    }
}

pub(super) fn field(field: impl Into<String>, why: impl Into<String>) -> ApiError {
    ApiError::InvalidValue {
        field: field.into(),
        why: why.into(),
    }
}

pub(super) fn check_name(path: &str, name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|why| field(path, why))
}

/// What `POST /vms` creates: the VM's definition, kept on the volume in `/vms/<name>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VmSpec {
    /// The VM's name, unique in the cluster (a path component: see [`validate_name`]).
    pub name: String,
    /// The guest kernel (bzImage or ELF vmlinux), a path on the hosts.
    pub kernel: String,
    /// An initramfs, a path on the hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Virtual disks, created blank on the volume.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Network cards, each on a port group of the virtual switch.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// What HA does with it.
    #[serde(default)]
    pub ha: HaSpec,
    /// What DRS gives it.
    #[serde(default)]
    pub resources: ResourceSpec,
}

fn one() -> u32 {
    1
}

impl VmSpec {
    /// A spec with the given name, kernel and memory, and defaults for the rest.
    #[must_use]
    pub fn new(name: impl Into<String>, kernel: impl Into<String>, memory_mib: u32) -> Self {
        Self {
            name: name.into(),
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            memory_mib,
            vcpus: 1,
            disks: Vec::new(),
            nics: Vec::new(),
            ha: HaSpec::default(),
            resources: ResourceSpec::default(),
        }
    }

    /// Checks every value (422 `invalid_value` naming the field otherwise).
    pub fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        if self.kernel.trim().is_empty() {
            return Err(field("kernel", "a kernel path is needed"));
        }
        if self.initrd.as_ref().is_some_and(|p| p.trim().is_empty()) {
            return Err(field("initrd", "an empty path"));
        }
        if self.cmdline.len() > CMDLINE_LEN_MAX {
            return Err(field("cmdline", format!("over {CMDLINE_LEN_MAX} bytes")));
        }
        if !(1..=MEMORY_MIB_MAX).contains(&self.memory_mib) {
            return Err(field("memory_mib", format!("1 to {MEMORY_MIB_MAX}")));
        }
        if !(1..=VCPUS_MAX).contains(&self.vcpus) {
            return Err(field("vcpus", format!("1 to {VCPUS_MAX}")));
        }
        if self.disks.len() > DISKS_MAX {
            return Err(field("disks", format!("at most {DISKS_MAX}")));
        }
        for (i, d) in self.disks.iter().enumerate() {
            if !(1..=DISK_MIB_MAX).contains(&d.size_mib) {
                return Err(field(
                    format!("disks[{i}].size_mib"),
                    format!("1 to {DISK_MIB_MAX}"),
                ));
            }
        }
        if self.nics.len() > NICS_MAX {
            return Err(field("nics", format!("at most {NICS_MAX}")));
        }
        for (i, n) in self.nics.iter().enumerate() {
            check_name(&format!("nics[{i}].portgroup"), &n.portgroup)?;
            if let Some(mac) = &n.mac {
                validate_mac(mac).map_err(|why| field(format!("nics[{i}].mac"), why))?;
            }
        }
        let r = &self.resources;
        if r.shares == 0 || r.shares > 1_000_000 {
            return Err(field("resources.shares", "1 to 1000000"));
        }
        if r.reservation_mib > u64::from(self.memory_mib) {
            return Err(field(
                "resources.reservation_mib",
                "more than the VM's memory",
            ));
        }
        if r.limit_mib.is_some_and(|l| l < r.reservation_mib) {
            return Err(field("resources.limit_mib", "below the reservation"));
        }
        Ok(())
    }
}

/// Checks a unicast MAC address written `52:54:00:12:34:56`.
fn validate_mac(mac: &str) -> Result<(), &'static str> {
    let octets: Vec<&str> = mac.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err("six hex octets separated by ':'");
    }
    match u8::from_str_radix(octets[0], 16) {
        Ok(first) if first & 1 == 0 => Ok(()),
        _ => Err("a multicast address cannot be a NIC's"),
    }
}

/// A virtual disk to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Its size in MiB (thin: blocks are allocated when written).
    pub size_mib: u64,
}

/// A network card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// The port group of the host's virtual switch it plugs into.
    pub portgroup: String,
    /// Its MAC address; the host picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// HA settings of a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaSpec {
    /// Order of restarts after a host failure.
    #[serde(default)]
    pub priority: RestartPriority,
    /// What its host does with it when the host finds itself isolated.
    #[serde(default)]
    pub isolation_response: IsolationResponse,
}

/// `PATCH /vms/NAME`: the settings to change; what is absent stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmPatch {
    /// New HA settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaPatch>,
}

/// The HA settings a [`VmPatch`] changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaPatch {
    /// New restart priority (`restart_priority` is accepted too, vSphere's word).
    #[serde(
        default,
        alias = "restart_priority",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<RestartPriority>,
    /// New isolation response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_response: Option<IsolationResponse>,
}

impl VmPatch {
    /// Whether it changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ha
            .as_ref()
            .is_none_or(|h| h.priority.is_none() && h.isolation_response.is_none())
    }
}

/// HA restart priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartPriority {
    /// Never restarted by HA.
    Disabled,
    /// Restarted last.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Restarted first.
    High,
}

/// What an isolated host does with the VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IsolationResponse {
    /// Keep it running while the host's volume lease holds.
    #[default]
    LeaveOn,
    /// Power it off.
    PowerOff,
    /// Ask the guest to shut down, power off after the grace period.
    ShutDown,
}

/// DRS resource settings of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// CPU reservation in MHz (0: none).
    #[serde(default)]
    pub cpu_mhz: u32,
    /// Shares (500 low, 1000 normal, 2000 high).
    #[serde(default = "normal_shares")]
    pub shares: u32,
    /// Memory reservation in MiB.
    #[serde(default)]
    pub reservation_mib: u64,
    /// Memory limit in MiB (none: the VM's memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_mib: Option<u64>,
}

fn normal_shares() -> u32 {
    1000
}

impl Default for ResourceSpec {
    fn default() -> Self {
        Self {
            cpu_mhz: 0,
            shares: normal_shares(),
            reservation_mib: 0,
            limit_mib: None,
        }
    }
}

/// A VM as `GET /vms/NAME` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct VmInfo {
    /// Its definition.
    pub spec: VmSpec,
    /// Its power state.
    pub state: PowerState,
    /// The id of the host that runs it (none when off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<u32>,
    /// Measured statistics (only from the host that runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<VmStats>,
    /// Its snapshots, oldest first (what `revert` may go back to).
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
}

impl VmInfo {
    /// A VM in `state`, with no host, no statistics and no snapshot.
    #[must_use]
    pub fn new(spec: VmSpec, state: PowerState) -> Self {
        Self {
            spec,
            state,
            host: None,
            stats: None,
            snapshots: Vec::new(),
        }
    }
}

/// One snapshot of a VM's disks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// When it was taken, ms since the Unix epoch (unknown for snapshots recorded before
    /// the time was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_ms: Option<u64>,
}

/// What a running VM uses, measured by its host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmStats {
    /// CPU used by its vCPU threads, percent of one core, over the last interval.
    pub cpu_percent: f64,
    /// Resident memory of its process in bytes.
    pub rss_bytes: u64,
    /// Bytes read from its disks (all of them; since its process started the VM, as
    /// every I/O count here: a VM that arrived by live migration counts from then).
    pub disk_read_bytes: u64,
    /// Bytes written to its disks.
    pub disk_written_bytes: u64,
    /// Bytes of console output (what the guest wrote).
    pub console_bytes: u64,
    /// Disk read requests completed.
    #[serde(default)]
    pub disk_reads: u64,
    /// Disk write requests completed.
    #[serde(default)]
    pub disk_writes: u64,
    /// Disk flushes completed.
    #[serde(default)]
    pub disk_flushes: u64,
    /// Bytes of console input (sent to the guest).
    #[serde(default)]
    pub console_in_bytes: u64,
}

/// `GET /host`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct HostInfo {
    /// The host's id (its HA id and vmfs slot).
    pub id: u32,
    /// Its name.
    pub name: String,
    /// The software version.
    pub version: String,
    /// Time since the host process started.
    pub uptime_ms: u64,
    /// What it has.
    pub capacity: HostCapacity,
    /// What it uses.
    pub load: HostLoad,
    /// Memory that page sharing saves.
    pub ksm: KsmSavings,
    /// How this host's HA agent sees every host of the cluster, itself included.
    pub ha: Vec<HaPeer>,
    /// VM counts.
    pub vms: VmCounts,
    /// In maintenance mode: it takes no new VMs and HA places nothing on it.
    #[serde(default)]
    pub maintenance: bool,
}

impl HostInfo {
    /// A host with the given identity, zero load and no peers.
    #[must_use]
    pub fn new(id: u32, name: impl Into<String>, capacity: HostCapacity) -> Self {
        Self {
            id,
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: 0,
            capacity,
            load: HostLoad::default(),
            ksm: KsmSavings::default(),
            ha: Vec::new(),
            vms: VmCounts::default(),
            maintenance: false,
        }
    }
}

/// A host's capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostCapacity {
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// A host's load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostLoad {
    /// CPU used by the host and its VMs, percent of all its CPUs.
    pub cpu_percent: f64,
    /// Memory used by its VMs' processes (RSS) in MiB.
    pub memory_used_mib: u64,
}

/// Page sharing (KSM) savings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KsmSavings {
    /// Pages that share another page's frame.
    pub pages_sharing: u64,
    /// Bytes saved.
    pub saved_bytes: u64,
}

/// One host as an HA agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HaPeer {
    /// The host's id.
    pub id: u32,
    /// The verdict.
    pub verdict: HaVerdict,
    /// Time since this host's agent last heard the host's network heartbeat, ms (since
    /// the agent started when it has heard none yet); absent for the host itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_ms_ago: Option<u64>,
}

/// An HA verdict about a host (vinfra-ha's `Verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HaVerdict {
    /// Heard on the network.
    Alive,
    /// Silent on the network; its datastore heartbeat moves.
    Partitioned,
    /// Silent on both channels: its VMs are restarted elsewhere.
    Failed,
    /// Silent, and the datastore cannot be read: nothing is done.
    Unknown,
    /// (This host) it hears no peer and reaches no isolation address.
    Isolated,
    /// (This host) its volume lease lapsed.
    Fenced,
}

/// How many VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmCounts {
    /// Defined on the volume.
    pub defined: u32,
    /// Running anywhere in the cluster.
    pub running: u32,
    /// Running on this host.
    pub running_here: u32,
}

/// `POST /vms/NAME/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination host, by id or name.
    pub to: String,
}

/// `POST /vms/NAME/snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The snapshot's name (the host names it when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /vms/NAME/revert`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertRequest {
    /// The snapshot to go back to (the latest when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// `POST /vms/NAME/clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    /// The new VM's name.
    pub name: String,
    /// A full copy of the disks; otherwise a linked clone on a snapshot of the source.
    #[serde(default)]
    pub full: bool,
}

/// `POST /vms/NAME/backup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The backup repository (a path on the host).
    pub repository: String,
    /// Only the blocks changed since the VM's last backup to this repository.
    #[serde(default)]
    pub incremental: bool,
    /// Which of the VM's disks, by index (all when absent). A backup of some disks is
    /// restored as a VM with those disks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<u32>>,
}

/// `POST /vms/NAME/restore`: NAME is the backed-up VM's name in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The backup repository (a path on the host).
    pub repository: String,
    /// The backup to restore (the latest of the VM when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The new VM's name (a new VM: it must not exist).
    pub name: String,
}

/// `POST /vms/NAME/restore-disk`: one disk of a backup of NAME written back into NAME's
/// disk of the same index, with the VM off. The disk's other snapshots stay: a revert to
/// the latest one undoes the restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreDiskRequest {
    /// The backup repository (a path on the host).
    pub repository: String,
    /// The backup to restore from (the VM's latest that holds the disk when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The disk, by index in the VM's definition (the backup's `diskI`).
    pub disk: u32,
}

/// How long a graceful shutdown waits for the guest when the request does not say.
pub const SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The longest wait a shutdown may ask for (an hour).
pub const SHUTDOWN_TIMEOUT_MS_MAX: u64 = 3_600_000;

/// `POST /vms/NAME/shutdown` (the body may be empty): the guest's ACPI power button is
/// pressed and the task waits for the guest to power off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    /// How long to wait for the guest to power off (default 30 000, at most 3 600 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When the guest has not powered off in time, stop it hard (as `stop`) instead of
    /// failing the task.
    #[serde(default)]
    pub force_after: bool,
}

impl ShutdownRequest {
    /// The wait, with the default filled in.
    #[must_use]
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(SHUTDOWN_TIMEOUT_MS_DEFAULT)
    }
}

/// A long operation on a VM: what `POST /vms/NAME/<op>` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmOp {
    /// Power on.
    Start,
    /// Hard power off.
    Stop,
    /// Reboot in place.
    Reset,
    /// Graceful shutdown through the guest (its ACPI power button).
    Shutdown(ShutdownRequest),
    /// Live migration to another host.
    Migrate(MigrateRequest),
    /// Snapshot the disks.
    Snapshot(SnapshotRequest),
    /// Go back to a snapshot.
    Revert(RevertRequest),
    /// A new VM from this one.
    Clone(CloneRequest),
    /// Back up the disks (also while it runs).
    Backup(BackupRequest),
    /// A new VM from a backup.
    Restore(RestoreRequest),
    /// One disk of a backup written back into the VM.
    RestoreDisk(RestoreDiskRequest),
}

impl VmOp {
    /// Which operation, without its arguments.
    #[must_use]
    pub fn kind(&self) -> OpKind {
        match self {
            Self::Start => OpKind::Start,
            Self::Stop => OpKind::Stop,
            Self::Reset => OpKind::Reset,
            Self::Shutdown(_) => OpKind::Shutdown,
            Self::Migrate(_) => OpKind::Migrate,
            Self::Snapshot(_) => OpKind::Snapshot,
            Self::Revert(_) => OpKind::Revert,
            Self::Clone(_) => OpKind::Clone,
            Self::Backup(_) => OpKind::Backup,
            Self::Restore(_) => OpKind::Restore,
            Self::RestoreDisk(_) => OpKind::RestoreDisk,
        }
    }

    /// Checks the arguments (422 `invalid_value` naming the field otherwise).
    pub fn validate(&self) -> Result<(), ApiError> {
        match self {
            Self::Start | Self::Stop | Self::Reset => Ok(()),
            Self::Shutdown(r)
                if r.timeout_ms() == 0 || r.timeout_ms() > SHUTDOWN_TIMEOUT_MS_MAX =>
            {
                Err(field(
                    "timeout_ms",
                    format!("from 1 to {SHUTDOWN_TIMEOUT_MS_MAX}"),
                ))
            }
            Self::Shutdown(_) => Ok(()),
            Self::Migrate(m) if m.to.trim().is_empty() => Err(field("to", "a host is needed")),
            Self::Migrate(_) => Ok(()),
            Self::Snapshot(s) => s.name.as_deref().map_or(Ok(()), |n| check_name("name", n)),
            Self::Revert(r) => r
                .snapshot
                .as_deref()
                .map_or(Ok(()), |n| check_name("snapshot", n)),
            Self::Clone(c) => check_name("name", &c.name),
            Self::Backup(b) if b.repository.trim().is_empty() => {
                Err(field("repository", "a repository path is needed"))
            }
            Self::Backup(b) if b.disks.as_ref().is_some_and(Vec::is_empty) => {
                Err(field("disks", "at least one disk, or none named for all"))
            }
            Self::Backup(_) => Ok(()),
            Self::Restore(r) if r.repository.trim().is_empty() => {
                Err(field("repository", "a repository path is needed"))
            }
            Self::Restore(r) => check_name("name", &r.name),
            Self::RestoreDisk(r) if r.repository.trim().is_empty() => {
                Err(field("repository", "a repository path is needed"))
            }
            Self::RestoreDisk(_) => Ok(()),
        }
    }
}

/// Which operation a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OpKind {
    /// Power on.
    Start,
    /// Hard power off.
    Stop,
    /// Reboot in place.
    Reset,
    /// Graceful shutdown.
    Shutdown,
    /// Live migration.
    Migrate,
    /// Disk snapshot.
    Snapshot,
    /// Back to a snapshot.
    Revert,
    /// Clone.
    Clone,
    /// Backup.
    Backup,
    /// Restore from a backup.
    Restore,
    /// One disk restored from a backup into its VM.
    #[serde(rename = "restore-disk")]
    RestoreDisk,
    /// The host enters or leaves maintenance mode.
    Maintenance,
}

impl OpKind {
    /// The operation's name, as in its route.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Reset => "reset",
            Self::Shutdown => "shutdown",
            Self::Migrate => "migrate",
            Self::Snapshot => "snapshot",
            Self::Revert => "revert",
            Self::Clone => "clone",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::RestoreDisk => "restore-disk",
            Self::Maintenance => "maintenance",
        }
    }
}

/// `202` answer of an operation: the task that does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskStarted {
    /// The task's id (`GET /tasks/ID`).
    pub task: u64,
}

/// `POST /host/maintenance`: enter maintenance mode (the host's VMs are moved off by live
/// migration, it takes no new ones and HA places nothing on it) or leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// `true` to enter, `false` to leave.
    pub enter: bool,
}

/// `POST /incoming` (host to host): get ready to receive a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    /// The VM that will come.
    pub vm: String,
}

/// The answer to `POST /incoming`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncomingReady {
    /// Where the source sends the VM (`IP:PORT` on this host's VMotion interface).
    pub address: String,
}

/// The query of `GET /backups`: the backups in a repository, of one VM or of all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BackupsQuery {
    /// The backup repository (a path on the host).
    pub repository: String,
    /// Only this VM's backups (its name when it was backed up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
}

impl BackupsQuery {
    /// Checks the arguments (422 `invalid_value` naming the field otherwise).
    pub fn validate(&self) -> Result<(), ApiError> {
        check_repository(&self.repository)?;
        self.vm.as_deref().map_or(Ok(()), |n| check_name("vm", n))
    }
}

/// One backup in a repository, as `GET /backups` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupInfo {
    /// The backup's id (hex): what `POST /vms/NAME/restore` takes as `backup`.
    pub id: String,
    /// The VM backed up.
    pub vm: String,
    /// When, in seconds since the epoch.
    pub time_unix_s: u64,
    /// The host that made it (`hostN`).
    pub host: String,
    /// The backup it was incremental from (none: a full read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Its disks' names.
    pub disks: Vec<String>,
    /// The disks' capacity, in bytes.
    pub bytes: u64,
    /// Bytes read from the disks when it was made.
    pub bytes_read: u64,
    /// Bytes it added to the repository (after deduplication, compression and sealing).
    pub bytes_new: u64,
}

/// `POST /backups/forget`: keep a VM's newest `keep_last` backups in a repository,
/// forget the older ones and prune their data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// The backup repository (a path on the host).
    pub repository: String,
    /// The VM whose backups are thinned (the others' are left alone).
    pub vm: String,
    /// How many of its newest backups stay (at least 1).
    pub keep_last: u32,
}

impl ForgetRequest {
    /// Checks the arguments (422 `invalid_value` naming the field otherwise).
    pub fn validate(&self) -> Result<(), ApiError> {
        check_repository(&self.repository)?;
        check_name("vm", &self.vm)?;
        if self.keep_last == 0 {
            return Err(field(
                "keep_last",
                "at least 1: forgetting every backup is not retention",
            ));
        }
        Ok(())
    }
}

/// The answer to `POST /backups/forget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ForgetResult {
    /// The VM's backups kept (ids, newest first).
    pub kept: Vec<String>,
    /// The ones forgotten.
    pub forgotten: Vec<String>,
    /// Bytes the prune deleted from the repository.
    pub bytes_deleted: u64,
}

pub(super) fn check_repository(repository: &str) -> Result<(), ApiError> {
    if repository.trim().is_empty() {
        return Err(field("repository", "a repository path is needed"));
    }
    if !repository.starts_with('/') || repository.contains('\0') {
        return Err(field("repository", "an absolute path on the host"));
    }
    Ok(())
}
