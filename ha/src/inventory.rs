//! What the shared datastore says: every host's heartbeat slot, every VM's record and
//! the owner of its lock. The adapter reads it (from vmfs) and hands it to the agent.

use serde::{Deserialize, Serialize};
pub use vinfra_drs::RestartPriority;

/// What a host does with a VM when it is cut from the storage (README "Isolation response").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationResponse {
    /// Keep it running while the host's lease holds (powered off once it lapses).
    #[default]
    LeaveOn,
    /// Power it off.
    PowerOff,
    /// Ask the guest to shut down; power off after the grace period.
    ShutDown,
}

/// One VM as the datastore records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Its name (`/vms/<name>` on the volume).
    pub name: String,
    /// The host holding its exclusive lock, if any.
    pub owner: Option<u32>,
    /// Whether it should run (the user powered it on and not off).
    pub desired_on: bool,
    /// HA restart priority.
    pub priority: RestartPriority,
    /// Its isolation response.
    #[serde(default)]
    pub isolation_response: IsolationResponse,
    /// CPU size, MHz.
    pub cpu_mhz: i64,
    /// Memory size, MB.
    pub mem_mb: i64,
}

/// One host's datastore heartbeat slot as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReading {
    /// Host id (slot index).
    pub host: u32,
    /// Mount generation.
    pub generation: u32,
    /// Renewal counter.
    pub counter: u64,
    /// Mounted.
    pub live: bool,
}

/// One read of the datastore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The heartbeat slots.
    pub slots: Vec<SlotReading>,
    /// The VMs.
    pub vms: Vec<VmRecord>,
    /// Hosts in maintenance mode: they keep what they run (until it is moved off) but
    /// are no target of restarts or placements.
    #[serde(default)]
    pub maintenance: Vec<u32>,
}
