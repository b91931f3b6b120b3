//! vinfra-drs: the DRS resource model, entitlements, admission control, initial
//! placement, load balancing, maintenance-mode evacuation, HA admission control and
//! restart placement, and a bin-packing solver.
//!
//! A pure library: no I/O, no clock, no unseeded randomness; the same input gives the
//! same output. Searches are bounded by step budgets passed in by the caller.
//!
//! ```
//! use vinfra_drs::{balance, place, Cluster};
//!
//! let json = r#"{
//!   "hosts": [{"id": "esx-1", "cpu_mhz": 10000, "mem_mb": 16384},
//!             {"id": "esx-2", "cpu_mhz": 10000, "mem_mb": 16384}],
//!   "vms": [{"id": "dc-1", "cpu_mhz": 2000, "mem_mb": 2048, "host": "esx-1"},
//!           {"id": "dc-2", "cpu_mhz": 2000, "mem_mb": 2048, "host": "esx-1"},
//!           {"id": "web", "cpu_mhz": 1000, "mem_mb": 1024, "powered_on": false}],
//!   "rules": [{"kind": "vm_anti_affinity", "id": "dcs", "vms": ["dc-1", "dc-2"]}]
//! }"#;
//! let cluster = Cluster::from_json(json)?;
//! let plan = balance(&cluster);
//! assert_eq!(plan.recommendations[0].priority, 1); // the broken rule is fixed first
//! let placed = place(&cluster, &["web"])?;
//! assert!(placed.unplaced.is_empty());
//! # Ok::<(), vinfra_drs::Error>(())
//! ```
#![forbid(unsafe_code)]

mod balance;
mod entitlement;
mod error;
#[cfg(any(test, feature = "test-utils"))]
pub mod generate;
pub mod ha;
mod load;
mod maintenance;
mod model;
mod packing;
mod placement;
mod state;
mod validate;

pub use balance::{
    balance, balance_keeping, BalancePlan, Recommendation, StopReason, Unresolved, KEEP_TOLERANCE,
};
pub use entitlement::{admit_power_on, entitlements, Entitlements};
pub use error::{Error, Result};
pub use load::{priority_for_imbalance, target_for_threshold, IMBALANCE_STEP};
pub use maintenance::{evacuate, Blocker, EvacuationMove, EvacuationPlan};
pub use model::{
    Allocation, AutomationLevel, CapacityModel, ClusterSpec, HostPower, HostSpec, PoolSpec,
    RestartPriority, RuleSpec, Settings, Shares, VmHostMode, VmSpec,
};
pub use packing::{
    first_fit_decreasing, pack, PackOptions, PackPlan, BACKTRACK_MAX_ITEMS, BACKTRACK_STEPS,
};
pub use placement::{
    place, Placement, PlacementPlan, PrerequisiteMove, Rejected, MAX_PREREQUISITES, SHARING_BONUS,
};
pub use state::Reject;
pub use validate::{
    Alloc, AntiRule, Cluster, Group, Host, HostRule, Pool, Vm, CPU, MAX_VALUE, MEM,
    OVERHEAD_MEM_BASE_MB, OVERHEAD_MEM_MB_PER_GIB,
};
