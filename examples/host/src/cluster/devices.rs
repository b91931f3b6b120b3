//! A VM's devices on the volume: its virtual disks (`/vms/NAME/diskI.vmdk`, thin vmfs
//! disks) and its NICs (port group and MAC), recorded with its snapshots and, for a
//! linked clone, the source layers it reads, in `/vms/NAME/cluster.json` beside the
//! plain vmm-core `vm.json`. A VM without that file (one `vinfra-lab` defined) has no
//! disk, no NIC and no snapshot.
//!
//! Every disk of a VM has the same number of layers (they are made, snapshotted,
//! reverted and cloned together), so one count, [`Devices::layers`], describes them all.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vinfra_ha::datastore::{read_json, vm_dir, write_json, VMS_DIR};
use vinfra_vmfs::disk::VirtualDisk;
use vinfra_vmfs::Volume;

use crate::api::{ApiError, DiskSpec, NicSpec, ResourceSpec};
use crate::vm_process::VmSpec;

/// One virtual disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRecord {
    /// Its descriptor on the volume.
    pub path: String,
    /// Its capacity.
    pub size_mib: u64,
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRecord {
    /// The port group of the host's switch it plugs into.
    pub portgroup: String,
    /// Its MAC address (given, or derived from the VM's name: [`derived_mac`]).
    pub mac: String,
}

/// A named snapshot: every disk's layers below `layers` are frozen at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRecord {
    /// Its name.
    pub name: String,
    /// How many layers each disk had when it was taken (the frozen ones).
    pub layers: usize,
    /// When it was taken, ms since the Unix epoch (absent in records made before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_ms: Option<u64>,
}

/// What a linked clone reads of its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkedBase {
    /// The source VM.
    pub vm: String,
    /// The source's snapshot the clone was made on.
    pub snapshot: String,
    /// How many of the source's layers each of its disks reads (frozen).
    pub layers: usize,
}

/// `/vms/NAME/cluster.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// The disks, in the order the guest sees them.
    #[serde(default)]
    pub disks: Vec<DiskRecord>,
    /// The NICs, in order.
    #[serde(default)]
    pub nics: Vec<NicRecord>,
    /// Layers of each disk (1: no snapshot; a linked clone counts its source's).
    #[serde(default)]
    pub layers: usize,
    /// Snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<SnapshotRecord>,
    /// For a linked clone: its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<LinkedBase>,
    /// What DRS and HA admission give it (reservation, shares, limit), as created:
    /// `ha.json` keeps only what the HA agents place by. Absent in records made before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceSpec>,
}

impl Devices {
    /// The API's view of the disks.
    pub fn disk_specs(&self) -> Vec<DiskSpec> {
        self.disks
            .iter()
            .map(|d| DiskSpec {
                size_mib: d.size_mib,
            })
            .collect()
    }

    /// The API's view of the NICs.
    pub fn nic_specs(&self) -> Vec<NicSpec> {
        self.nics
            .iter()
            .map(|n| NicSpec {
                portgroup: n.portgroup.clone(),
                mac: Some(n.mac.clone()),
            })
            .collect()
    }
}

/// `/vms/NAME/cluster.json`.
pub fn devices_path(name: &str) -> String {
    format!("{VMS_DIR}/{name}/cluster.json")
}

/// `/vms/NAME/diskI.vmdk`.
pub fn disk_path(name: &str, index: usize) -> String {
    format!("{VMS_DIR}/{name}/disk{index}.vmdk")
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Reads a VM's devices (none when it has no `cluster.json`).
pub fn read(volume: &Volume, name: &str) -> Result<Devices, ApiError> {
    let path = devices_path(name);
    if !volume.exists(&path).map_err(internal)? {
        return Ok(Devices::default());
    }
    read_json(volume, &path, 1 << 20).map_err(internal)
}

/// Writes a VM's devices (its directory exists).
pub fn write(volume: &Volume, name: &str, devices: &Devices) -> Result<(), ApiError> {
    write_json(volume, &devices_path(name), devices).map_err(internal)
}

/// A locally administered unicast MAC derived from the VM's name and the NIC's index
/// (FNV-1a): the same VM keeps its addresses on every host and across restarts.
pub fn derived_mac(vm: &str, index: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vm.bytes().chain(index.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_le_bytes();
    // 0x02: locally administered, unicast.
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// The NICs' records of a new definition (the server validated names and MACs), MACs
/// filled in where absent.
pub fn nic_records(name: &str, nics: &[NicSpec]) -> Vec<NicRecord> {
    nics.iter()
        .enumerate()
        .map(|(i, n)| NicRecord {
            portgroup: n.portgroup.clone(),
            mac: n
                .mac
                .as_ref()
                .map_or_else(|| derived_mac(name, i), |m| m.to_ascii_lowercase()),
        })
        .collect()
}

/// Makes the VM's thin disks (its directory exists) and records them with its NICs. A
/// disk made before a failure is removed with the VM's directory by the caller.
pub fn create(
    volume: &Volume,
    name: &str,
    disks: &[DiskSpec],
    nics: Vec<NicRecord>,
    resources: &ResourceSpec,
) -> Result<Devices, ApiError> {
    let mut devices = Devices {
        nics,
        layers: 1,
        resources: Some(resources.clone()),
        ..Devices::default()
    };
    for (i, d) in disks.iter().enumerate() {
        let path = disk_path(name, i);
        // Dropped at once: the lock is the child's to take when the VM starts.
        VirtualDisk::create(volume, &path, d.size_mib << 20)
            .map_err(|e| ApiError::Internal(format!("create {path}: {e}")))?;
        devices.disks.push(DiskRecord {
            path,
            size_mib: d.size_mib,
        });
    }
    write(volume, name, &devices)?;
    Ok(devices)
}

/// The VMs whose disks read layers of `name` (its linked clones).
pub fn linked_clones(volume: &Volume, name: &str) -> Result<Vec<(String, LinkedBase)>, ApiError> {
    let mut out = Vec::new();
    if !volume.exists(VMS_DIR).map_err(internal)? {
        return Ok(out);
    }
    for e in volume.list(VMS_DIR).map_err(internal)? {
        if e.name == "." || e.name == ".." || e.name == name {
            continue;
        }
        if !volume.exists(&vm_dir(&e.name)).map_err(internal)? {
            continue;
        }
        if let Some(base) = read(volume, &e.name)?.base {
            if base.vm == name {
                out.push((e.name, base));
            }
        }
    }
    Ok(out)
}

/// Where a child finds the volume and the host's switch.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    /// The shared volume's image (the child mounts it for its disks).
    pub volume: PathBuf,
    /// The host's switch configuration (`--switch`), if it has one.
    pub switch: Option<PathBuf>,
}

/// Gives a VM's child its disks and NICs.
pub fn prepare_child(
    volume: &Volume,
    name: &str,
    env: &ChildEnv,
    spec: &mut VmSpec,
) -> Result<(), String> {
    let devices = read(volume, name).map_err(|e| e.to_string())?;
    if !devices.disks.is_empty() {
        spec.volume = Some(env.volume.clone());
        spec.vmfs_disks = devices.disks.iter().map(|d| d.path.clone()).collect();
    }
    if !devices.nics.is_empty() {
        let switch = env
            .switch
            .as_ref()
            .ok_or_else(|| format!("{name} has NICs and this host has no switch (--switch)"))?;
        for n in &devices.nics {
            spec.extra_args.push("--net".into());
            spec.extra_args
                .push(format!("portgroup={},mac={}", n.portgroup, n.mac).into());
        }
        spec.extra_args.push("--switch".into());
        spec.extra_args.push(switch.clone().into_os_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_local_unicast_and_distinct() {
        let a = derived_mac("web", 0);
        assert_eq!(a, derived_mac("web", 0));
        assert_ne!(a, derived_mac("web", 1));
        assert_ne!(a, derived_mac("db", 0));
        assert!(a.starts_with("02:") && a.len() == 17, "{a}");
    }

    #[test]
    fn given_macs_are_kept_lowercase_and_absent_ones_derived() {
        let nic = |mac: Option<&str>| NicSpec {
            portgroup: "pg".into(),
            mac: mac.map(Into::into),
        };
        let r = nic_records("v", &[nic(Some("02:AA:00:00:00:01")), nic(None)]);
        assert_eq!(r[0].mac, "02:aa:00:00:00:01");
        assert_eq!(r[1].mac, derived_mac("v", 1));
    }
}
