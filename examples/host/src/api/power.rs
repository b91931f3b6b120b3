//! A VM's power state, as the API reports it (its own module: the errors name it, and
//! the types that carry it validate themselves into errors).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A VM's power state (libvirt's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PowerState {
    /// Its process runs the guest.
    Running,
    /// Stopped in place (e.g. during a migration's switchover).
    Paused,
    /// Asked to shut down; not yet off.
    ShuttingDown,
    /// Off: no process.
    ShutOff,
    /// Its process died without being asked to.
    Crashed,
}

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::ShuttingDown => "shutting down",
            Self::ShutOff => "shut off",
            Self::Crashed => "crashed",
        })
    }
}
