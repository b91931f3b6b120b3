//! HA for vinfra: detect failed hosts and restart their VMs elsewhere, never running a VM
//! twice and never stopping a healthy VM because of a network outage.
//!
//! The [`Agent`] is sans-IO: an adapter feeds it [`Event`]s (datagrams, datastore reads,
//! probe results, the host's own lease, power-on outcomes, a clock) and carries out the
//! [`Action`]s it returns. Packets are authenticated with the cluster key ([`wire`]).
//! Restart placement comes from `vinfra_drs::ha::restart_plan`; the VM's exclusive lock
//! on the shared volume is what makes a second copy impossible. See the README for the
//! verdicts, the roles, the packet format byte by byte and the failure model.
#![forbid(unsafe_code)]

mod agent;
mod config;
pub mod datastore;
mod error;
pub mod inventory;
mod monitor;
mod peer;
pub mod plan;
pub mod wire;

pub use agent::{Action, Agent, Counters, Event, PowerOnOutcome};
pub use config::{Admission, Config, HostConfig, IsolationAddress, VmMonitoring, MAX_HOSTS};
pub use datastore::{Datastore, DatastoreError, HaSettings};
pub use error::{ConfigError, PacketError};
pub use inventory::{IsolationResponse, Reading, RestartPriority, SlotReading, VmRecord};
pub use peer::Verdict;
pub use wire::ClusterKey;
