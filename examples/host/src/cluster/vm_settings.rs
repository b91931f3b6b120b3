//! The host API's `PATCH /vms/NAME`, answered on the host loop: a VM's HA settings
//! (restart priority, isolation response) rewritten in its `ha.json` on the shared
//! volume. Every agent reads them from there: the VM's own host at its next reading (this
//! host forgets its cached copy at once), a peer's planner when it plans a failover.

use vinfra_ha::datastore::{vm_dir, VmfsDatastore};
use vinfra_ha::HaSettings;
use vinfra_vmfs::Volume;

use super::api_calls::{priority_to_ha, response_to_ha};
use super::Host;
use crate::api::{ApiError, VmInfo, VmPatch};

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Applies `patch` to the settings of `name` on `volume` and writes them back; answers
/// the settings as written. Only the fields the patch names change (`desired_on`, the
/// sizes stay: a running VM keeps running).
pub(super) fn rewrite(
    volume: &Volume,
    name: &str,
    patch: &VmPatch,
) -> Result<HaSettings, ApiError> {
    if !volume.exists(&vm_dir(name)).map_err(internal)? {
        return Err(ApiError::VmNotFound(name.to_string()));
    }
    let mut s = VmfsDatastore::read_settings(volume, name).map_err(internal)?;
    if let Some(ha) = &patch.ha {
        if let Some(p) = ha.priority {
            s.priority = priority_to_ha(p);
        }
        if let Some(r) = ha.isolation_response {
            s.isolation_response = response_to_ha(r);
        }
    }
    VmfsDatastore::write_settings(volume, name, &s).map_err(internal)?;
    Ok(s)
}

impl Host {
    /// `PATCH /vms/NAME`: rewrites the settings, then feeds the agent a fresh reading so
    /// that this host's planner plans with them from now on.
    pub(super) fn patch_vm(&mut self, name: &str, patch: &VmPatch) -> Result<VmInfo, ApiError> {
        let s = rewrite(&self.volume, name, patch)?;
        self.datastore.forget(name);
        self.refresh();
        self.report.event(
            "vm_reconfigured",
            serde_json::json!({"vm": name, "priority": s.priority,
                               "isolation_response": s.isolation_response}),
        );
        self.vm_info(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use vinfra_vmfs::{ManualClock, MemDevice, MkfsOptions, MountOptions};

    use super::*;
    use crate::api::{HaPatch, IsolationResponse, RestartPriority};

    fn volume() -> Volume {
        let dev = Arc::new(MemDevice::new(32 << 20));
        let mut opts = MkfsOptions::default();
        opts.max_inodes = 64;
        Volume::mkfs(dev.as_ref(), &opts).unwrap();
        Volume::mount(
            dev,
            1,
            &MountOptions::default(),
            Arc::new(ManualClock::new(0)),
        )
        .unwrap()
    }

    fn settings() -> HaSettings {
        HaSettings {
            desired_on: true,
            priority: vinfra_ha::RestartPriority::Medium,
            isolation_response: vinfra_ha::IsolationResponse::LeaveOn,
            cpu_mhz: 1000,
            mem_mb: 64,
        }
    }

    #[test]
    fn a_patch_rewrites_only_what_it_names() {
        let vol = volume();
        VmfsDatastore::write_settings(&vol, "web", &settings()).unwrap();
        let patch = |priority, isolation_response| VmPatch {
            ha: Some(HaPatch {
                priority,
                isolation_response,
            }),
        };
        rewrite(&vol, "web", &patch(Some(RestartPriority::High), None)).unwrap();
        let s = VmfsDatastore::read_settings(&vol, "web").unwrap();
        assert_eq!(
            (s.priority, s.isolation_response),
            (
                vinfra_ha::RestartPriority::High,
                vinfra_ha::IsolationResponse::LeaveOn
            )
        );
        rewrite(&vol, "web", &patch(None, Some(IsolationResponse::ShutDown))).unwrap();
        let s = VmfsDatastore::read_settings(&vol, "web").unwrap();
        assert_eq!(s.priority, vinfra_ha::RestartPriority::High);
        assert_eq!(s.isolation_response, vinfra_ha::IsolationResponse::ShutDown);
        // What the patch does not name is kept: it should still run, at its size.
        assert!(s.desired_on);
        assert_eq!((s.cpu_mhz, s.mem_mb), (1000, 64));
    }

    #[test]
    fn an_unknown_vm_is_404_and_nothing_is_written() {
        let vol = volume();
        let e = rewrite(&vol, "ghost", &VmPatch::default()).unwrap_err();
        assert_eq!(e, ApiError::VmNotFound("ghost".into()));
        assert!(!vol.exists(&vm_dir("ghost")).unwrap());
    }
}
