//! The host API's operations on a VM's disks, answered on the host loop: `snapshot`
//! (of every disk; through the child's control socket while the VM runs here),
//! `revert` (VM off) and `clone` (source off: a linked clone on a new snapshot of the
//! source, or a full copy). Each is quick on thin disks and ends its task before the
//! loop goes on; a full clone feeds the children's leases between chunks.
//!
//! vmfs snapshots are a stack of redo logs: reverting to a snapshot discards the
//! snapshots taken after it, then starts a fresh redo log on it (the snapshot stays).
//! A linked clone reads its source's frozen layers: the source cannot be deleted, nor
//! reverted below them, while the clone exists.

use vinfra_ha::datastore::{vm_dir, VmfsDatastore};
use vinfra_vmfs::disk::{decode_descriptor, encode_descriptor, VirtualDisk};
use vinfra_vmfs::LockMode;

use super::devices::{self, Devices, DiskRecord, LinkedBase, SnapshotRecord};
use super::vms::{read_definition, write_definition};
use super::Host;
use crate::api::{ApiError, CloneRequest, PowerState, RevertRequest, SnapshotRequest, TaskHandle};

/// Bytes a full clone copies between two lease feeds.
const COPY_CHUNK: usize = 1 << 20;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn disk_err(path: &str, what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{what} {path}: {e}"))
}

impl Host {
    /// Refuses unless the VM is off everywhere.
    pub(super) fn must_be_off(&mut self, name: &str) -> Result<(), ApiError> {
        let vm = self.vm_info(name)?;
        match vm.host {
            Some(h) if h != self.agent.host() => Err(ApiError::RunningElsewhere {
                vm: name.to_string(),
                host: h.to_string(),
            }),
            _ if vm.state != PowerState::ShutOff => Err(ApiError::WrongState {
                vm: name.to_string(),
                state: vm.state,
                needed: "it must be shut off".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses to delete a VM whose disks linked clones read, or one of whose files is
    /// still locked (the slot of a VM process that ended holds its locks until a mount
    /// has watched it for a lease): nothing is deleted then.
    pub(super) fn check_deletable(&self, name: &str) -> Result<(), ApiError> {
        let refuse = |needed: String| ApiError::WrongState {
            vm: name.to_string(),
            state: PowerState::ShutOff,
            needed,
        };
        let clones = devices::linked_clones(&self.volume, name)?;
        if let Some((clone, _)) = clones.first() {
            return Err(refuse(format!(
                "linked clone {clone} reads its disks (delete it first)"
            )));
        }
        let dir = vm_dir(name);
        for e in self.volume.list(&dir).map_err(internal)? {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let path = format!("{dir}/{}", e.name);
            let info = self.volume.lock_info(&path).map_err(internal)?;
            // A dead or stale holder's lock is broken by the delete itself.
            let live = info
                .holders
                .iter()
                .find(|h| !h.stale && matches!(h.verdict, vinfra_vmfs::Verdict::Alive { .. }));
            if let Some(h) = live {
                return Err(refuse(format!(
                    "{path} is still locked by vmfs slot {} (a VM process that ended less                      than a lease ago; try again)",
                    h.host
                )));
            }
        }
        Ok(())
    }

    /// `POST /vms/NAME/snapshot`.
    pub(super) fn snapshot_vm(
        &mut self,
        name: &str,
        req: &SnapshotRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        let vm = self.vm_not_elsewhere(name)?;
        let mut dev = devices::read(&self.volume, name)?;
        if dev.disks.is_empty() {
            return Err(ApiError::Unsupported(format!(
                "VM {name} has no disk to snapshot"
            )));
        }
        let snap = req
            .name
            .clone()
            .unwrap_or_else(|| format!("snapshot-{}", dev.snapshots.len() + 1));
        if dev.snapshots.iter().any(|s| s.name == snap) {
            return Err(ApiError::InvalidValue {
                field: "name".into(),
                why: format!("VM {name} has a snapshot {snap} already"),
            });
        }
        let frozen = if let Some(process) = self.vms.process_mut(name) {
            // The child holds the disks: it takes the snapshot (the backup handshake's
            // first half, never consolidated).
            let mut frozen = dev.layers;
            for i in 0..dev.disks.len() {
                let info = process.snapshot(i, None).map_err(|e| {
                    ApiError::Internal(format!(
                        "snapshot of disk {i} of running VM {name} (disks before it are \
                         snapshotted): {e}"
                    ))
                })?;
                frozen = info.frozen.len();
            }
            frozen
        } else if vm.state == PowerState::ShutOff {
            for d in &dev.disks {
                let mut disk = VirtualDisk::open(&self.volume, &d.path)
                    .map_err(|e| disk_err(&d.path, "open", e))?;
                disk.snapshot()
                    .map_err(|e| disk_err(&d.path, "snapshot", e))?;
            }
            dev.layers
        } else {
            return Err(ApiError::WrongState {
                vm: name.to_string(),
                state: vm.state,
                needed: "it must be shut off or run on this host".into(),
            });
        };
        dev.snapshots.push(SnapshotRecord {
            name: snap.clone(),
            layers: frozen,
            taken_ms: Some(crate::api::system_now_ms()),
        });
        dev.layers = frozen + 1;
        devices::write(&self.volume, name, &dev)?;
        self.report.event(
            "vm_snapshot",
            serde_json::json!({"vm": name, "snapshot": snap, "running": vm.state == PowerState::Running}),
        );
        task.succeed(serde_json::json!({"snapshot": snap, "layers": dev.layers}));
        Ok(())
    }

    /// `POST /vms/NAME/revert`.
    pub(super) fn revert_vm(
        &mut self,
        name: &str,
        req: &RevertRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        self.must_be_off(name)?;
        let mut dev = devices::read(&self.volume, name)?;
        let target = match &req.snapshot {
            Some(s) => dev.snapshots.iter().find(|r| &r.name == s),
            None => dev.snapshots.last(),
        }
        .cloned()
        .ok_or_else(|| ApiError::InvalidValue {
            field: "snapshot".into(),
            why: match &req.snapshot {
                Some(s) => format!("VM {name} has no snapshot {s}"),
                None => format!("VM {name} has no snapshot"),
            },
        })?;
        for (clone, base) in devices::linked_clones(&self.volume, name)? {
            if base.layers > target.layers {
                return Err(ApiError::WrongState {
                    vm: name.to_string(),
                    state: PowerState::ShutOff,
                    needed: format!(
                        "linked clone {clone} reads snapshot {} that reverting to {} would \
                         discard",
                        base.snapshot, target.name
                    ),
                });
            }
        }
        for d in &dev.disks {
            let mut disk = VirtualDisk::open(&self.volume, &d.path)
                .map_err(|e| disk_err(&d.path, "open", e))?;
            while disk.chain().len() > target.layers {
                disk.revert().map_err(|e| disk_err(&d.path, "revert", e))?;
            }
            // A fresh redo log on the snapshot: it stays, to revert to again.
            disk.snapshot()
                .map_err(|e| disk_err(&d.path, "snapshot", e))?;
        }
        dev.snapshots.retain(|s| s.layers <= target.layers);
        dev.layers = target.layers + 1;
        devices::write(&self.volume, name, &dev)?;
        self.report.event(
            "vm_reverted",
            serde_json::json!({"vm": name, "snapshot": target.name}),
        );
        task.succeed(serde_json::json!({"snapshot": target.name}));
        Ok(())
    }

    /// `POST /vms/NAME/clone`: a new VM, shut off, with the source's definition and HA
    /// settings, NICs on the same port groups (MACs of its own), and disks that are a
    /// linked clone on a new snapshot of the source's, or full copies.
    pub(super) fn clone_vm(
        &mut self,
        name: &str,
        req: &CloneRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        self.must_be_off(name)?;
        let new = req.name.as_str();
        if self.volume.exists(&vm_dir(new)).map_err(internal)? {
            return Err(ApiError::VmExists(new.to_string()));
        }
        let config = read_definition(&self.volume, name).map_err(internal)?;
        let mut settings = VmfsDatastore::read_settings(&self.volume, name).map_err(internal)?;
        settings.desired_on = false;
        let source = devices::read(&self.volume, name)?;
        VmfsDatastore::write_settings(&self.volume, new, &settings).map_err(internal)?;
        let made = write_definition(&self.volume, new, &config)
            .map_err(internal)
            .and_then(|()| {
                if req.full {
                    self.full_copy(new, &source, &task)
                } else {
                    self.linked_copy(name, new, &source)
                }
            });
        let dev = match made {
            Ok(d) => d,
            Err(e) => {
                self.remove_dir(new);
                return Err(e);
            }
        };
        devices::write(&self.volume, new, &dev)?;
        self.report.event(
            "vm_cloned",
            serde_json::json!({"vm": new, "from": name, "full": req.full}),
        );
        self.refresh();
        task.succeed(serde_json::json!({"vm": new, "full": req.full,
                                         "base": dev.base.map(|b| b.snapshot)}));
        Ok(())
    }

    /// The clone's NICs: the source's port groups, MACs of its own.
    fn cloned_nics(new: &str, source: &Devices) -> Vec<devices::NicRecord> {
        devices::nic_records(
            new,
            &source
                .nic_specs()
                .into_iter()
                .map(|mut n| {
                    n.mac = None;
                    n
                })
                .collect::<Vec<_>>(),
        )
    }

    /// Snapshots the source's disks (`clone-NEW`), then gives the clone disks whose chain
    /// is the source's frozen layers under a redo log of its own, with the source's
    /// changed-block stamps (a backup of the clone must see the source's data).
    fn linked_copy(
        &mut self,
        name: &str,
        new: &str,
        source: &Devices,
    ) -> Result<Devices, ApiError> {
        let mut dev = Devices {
            nics: Self::cloned_nics(new, source),
            layers: 1,
            resources: source.resources.clone(),
            ..Devices::default()
        };
        if source.disks.is_empty() {
            return Ok(dev);
        }
        let snap = format!("clone-{new}");
        let mut src = source.clone();
        let frozen = src.layers;
        let mut chains = Vec::new();
        for d in &src.disks {
            let mut disk = VirtualDisk::open(&self.volume, &d.path)
                .map_err(|e| disk_err(&d.path, "open", e))?;
            disk.snapshot()
                .map_err(|e| disk_err(&d.path, "snapshot", e))?;
            chains.push(disk.chain()[..frozen].to_vec());
        }
        src.snapshots.push(SnapshotRecord {
            name: snap.clone(),
            layers: frozen,
            taken_ms: Some(crate::api::system_now_ms()),
        });
        src.layers = frozen + 1;
        devices::write(&self.volume, name, &src)?;
        for (i, (d, chain)) in src.disks.iter().zip(chains).enumerate() {
            let path = devices::disk_path(new, i);
            let capacity = d.size_mib << 20;
            // A disk of its own, snapshotted once: its redo log and change tracking are
            // the clone's; its flat extent is then swapped for the source's layers.
            let mut disk = VirtualDisk::create(&self.volume, &path, capacity)
                .map_err(|e| disk_err(&path, "create", e))?;
            disk.snapshot()
                .map_err(|e| disk_err(&path, "snapshot", e))?;
            let own = disk.chain().to_vec();
            drop(disk);
            let f = self
                .volume
                .open(&path, LockMode::Exclusive)
                .map_err(|e| disk_err(&path, "open", e))?;
            let mut buf = vec![0u8; usize::try_from(f.len()).unwrap_or(0).min(1 << 20)];
            let n = f
                .read_at(&mut buf, 0)
                .map_err(|e| disk_err(&path, "read", e))?;
            let mut desc =
                decode_descriptor(&buf[..n]).map_err(|e| disk_err(&path, "decode", e))?;
            desc.chain = chain.into_iter().chain(own.last().cloned()).collect();
            let bytes = encode_descriptor(&desc).map_err(|e| disk_err(&path, "encode", e))?;
            f.set_len(0).map_err(|e| disk_err(&path, "write", e))?;
            f.write_at(&bytes, 0)
                .map_err(|e| disk_err(&path, "write", e))?;
            f.sync().map_err(|e| disk_err(&path, "sync", e))?;
            drop(f);
            self.copy_file(
                &format!("{}-ctk", d.path.trim_end_matches(".vmdk")),
                &desc.ctk,
            )?;
            if let Some(flat) = own.first() {
                self.volume
                    .delete(flat)
                    .map_err(|e| disk_err(flat, "delete", e))?;
            }
            dev.disks.push(DiskRecord {
                path,
                size_mib: d.size_mib,
            });
        }
        dev.layers = frozen + 1;
        dev.base = Some(LinkedBase {
            vm: name.to_string(),
            snapshot: snap,
            layers: frozen,
        });
        Ok(dev)
    }

    /// Copies a small file of the volume over another (both unlocked).
    fn copy_file(&self, from: &str, to: &str) -> Result<(), ApiError> {
        let src = self
            .volume
            .open(from, LockMode::SharedRead)
            .map_err(|e| disk_err(from, "open", e))?;
        let mut buf = vec![0u8; usize::try_from(src.len()).unwrap_or(0)];
        let n = src
            .read_at(&mut buf, 0)
            .map_err(|e| disk_err(from, "read", e))?;
        drop(src);
        let dst = self
            .volume
            .open(to, LockMode::Exclusive)
            .map_err(|e| disk_err(to, "open", e))?;
        dst.set_len(0).map_err(|e| disk_err(to, "write", e))?;
        dst.write_at(&buf[..n], 0)
            .map_err(|e| disk_err(to, "write", e))?;
        dst.sync().map_err(|e| disk_err(to, "sync", e))
    }

    /// Full copies of the source's disks as their chains read now (zero chunks left
    /// unwritten: the copies are thin).
    fn full_copy(
        &mut self,
        new: &str,
        source: &Devices,
        task: &TaskHandle,
    ) -> Result<Devices, ApiError> {
        let mut dev = Devices {
            nics: Self::cloned_nics(new, source),
            layers: 1,
            resources: source.resources.clone(),
            ..Devices::default()
        };
        let total: u64 = source.disks.iter().map(|d| d.size_mib << 20).sum();
        let mut done = 0u64;
        let mut buf = vec![0u8; COPY_CHUNK];
        for (i, d) in source.disks.iter().enumerate() {
            let path = devices::disk_path(new, i);
            let from = VirtualDisk::open(&self.volume, &d.path)
                .map_err(|e| disk_err(&d.path, "open", e))?;
            let capacity = from.capacity();
            let mut to = VirtualDisk::create(&self.volume, &path, capacity)
                .map_err(|e| disk_err(&path, "create", e))?;
            let mut off = 0u64;
            while off < capacity {
                let n =
                    usize::try_from((capacity - off).min(COPY_CHUNK as u64)).unwrap_or(COPY_CHUNK);
                from.read_at(&mut buf[..n], off)
                    .map_err(|e| disk_err(&d.path, "read", e))?;
                if buf[..n].iter().any(|&b| b != 0) {
                    to.write_at(&buf[..n], off)
                        .map_err(|e| disk_err(&path, "write", e))?;
                }
                off += n as u64;
                done += n as u64;
                // The loop is busy here: the children must still hear the lease.
                self.vms.keep_alive();
                #[allow(clippy::cast_precision_loss, reason = "a fraction")]
                task.progress(
                    done as f64 / total.max(1) as f64,
                    format!("copying disk {i}"),
                );
            }
            to.sync().map_err(|e| disk_err(&path, "sync", e))?;
            dev.disks.push(DiskRecord {
                path,
                size_mib: d.size_mib,
            });
        }
        Ok(dev)
    }

    /// Removes a VM directory made by a failed operation (best effort: it is reported).
    pub(super) fn remove_dir(&mut self, name: &str) {
        let dir = vm_dir(name);
        let entries = match self.volume.list(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(vm = name, "clean up {dir}: {e}");
                return;
            }
        };
        for e in entries {
            if e.name != "." && e.name != ".." {
                if let Err(x) = self.volume.delete(&format!("{dir}/{}", e.name)) {
                    tracing::warn!(vm = name, "clean up {dir}/{}: {x}", e.name);
                }
            }
        }
        if let Err(e) = self.volume.delete(&dir) {
            tracing::warn!(vm = name, "clean up {dir}: {e}");
        }
    }
}

impl Host {
    /// `POST /vms`'s disks and NICs (the VM's directory exists): its thin disks made,
    /// both recorded; on failure the new VM is removed again.
    pub(super) fn create_devices(&mut self, spec: &crate::api::VmSpec) -> Result<(), ApiError> {
        let nics = devices::nic_records(&spec.name, &spec.nics);
        if let Err(e) =
            devices::create(&self.volume, &spec.name, &spec.disks, nics, &spec.resources)
        {
            self.remove_dir(&spec.name);
            return Err(e);
        }
        Ok(())
    }
}
