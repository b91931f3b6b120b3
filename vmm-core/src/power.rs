//! Lifecycle words shared by the facade, the vCPU loop and the error type: why a VM
//! stopped ([`ExitReason`]) and its power state ([`PowerState`], libvirt's words).
//!
//! A leaf: it depends on nothing in the crate, so `error`, `vcpu` and `vm` can all use it
//! without importing each other.

use serde::{Deserialize, Serialize};

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitReason {
    /// The guest wrote `code` to the exit device (or KVM reported a guest shutdown).
    Poweroff {
        /// The byte the guest wrote.
        code: u8,
    },
    /// The guest asked for a reset (i8042 `0xfe`).
    Reboot,
    /// The host stopped the VM.
    Stopped,
    /// The VM cannot continue: KVM internal error, triple fault, failed entry.
    Crashed {
        /// What KVM reported.
        reason: String,
    },
}

/// Power state, in libvirt's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PowerState {
    /// vCPUs are running guest code.
    Running,
    /// Every vCPU is parked outside `KVM_RUN`.
    Paused,
    /// Not started yet, or stopped.
    ShutOff,
    /// Stopped because of a crash.
    Crashed,
}
