//! HA's datastore channel on a real vmfs volume: a VM that no host holds has its settings
//! read afresh, so that a user's power-off (`desired_on: false`, written by another host
//! before it releases the lock) is never answered by a restart from a stale cache.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use vinfra_ha::datastore::{Datastore, VmfsDatastore};
use vinfra_ha::{HaSettings, IsolationResponse, RestartPriority};
use vinfra_vmfs::{FileDevice, MkfsOptions, MonotonicClock, MountOptions, Volume};

fn mount(path: &std::path::Path, host: u32) -> Volume {
    let dev = Arc::new(FileDevice::open(path, false).unwrap());
    Volume::mount(
        dev,
        host,
        &MountOptions::default(),
        Arc::new(MonotonicClock::new()),
    )
    .unwrap()
}

fn settings(on: bool) -> HaSettings {
    HaSettings {
        desired_on: on,
        priority: RestartPriority::Medium,
        isolation_response: IsolationResponse::LeaveOn,
        cpu_mhz: 500,
        mem_mb: 16,
    }
}

#[test]
fn an_unowned_vm_powered_off_elsewhere_is_seen_off_at_the_next_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.vmfs");
    Volume::mkfs(
        &FileDevice::create(&path, 32 << 20).unwrap(),
        &MkfsOptions::default(),
    )
    .unwrap();
    let planner = mount(&path, 1);
    let user = mount(&path, 2);
    VmfsDatastore::write_settings(&user, "web", &settings(true)).unwrap();
    let mut ds = VmfsDatastore::new(planner.clone());
    let r = ds.read().unwrap();
    assert!(r.vms[0].desired_on && r.vms[0].owner.is_none());
    VmfsDatastore::write_settings(&user, "web", &settings(false)).unwrap();
    let r = ds.read().unwrap();
    assert!(!r.vms[0].desired_on, "a stale desired_on: {:?}", r.vms[0]);
    user.unmount().unwrap();
    planner.unmount().unwrap();
}
