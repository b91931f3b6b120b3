//! `backup` and `restore` through the host API, with the vcb crate: a VM's disks are
//! frozen (by its child through the control socket while it runs here, by this host
//! when it is off), read from the frozen layers through this host's own mount, stored in
//! a vcb repository (a folder on the host, made on first use), then consolidated. The
//! backup carries the VM's definition and devices, so that `restore` brings it back as
//! a new VM, shut off, with its disks at `/vms/NEW/diskI.vmdk`.
//!
//! The repository's password is derived from the cluster key (HKDF-SHA256, info
//! `"vinfra vcb repository v1"`): every host of the cluster opens the repositories the
//! others write. A backup's repository work runs on a thread of its own (its task ends
//! back on the loop); a restore's and a forget's run off the loop while the loop waits
//! and feeds its VMs' leases (`Host::off_loop`).
//!
//! A host that stops with backups under way cancels them (their reads fail from then
//! on), waits a few seconds for their threads and folds their disks back, so that no
//! redo log of a backup outlives its host's run.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vinfra_ha::datastore::{vm_dir, VmfsDatastore};
use vinfra_vcb::vmfs::{prepare, restore_vm, SnapshotInfo, VmfsSnapshot};
use vinfra_vcb::{
    BackupOptions, DiskSource, Id, InitOptions, LocalDir, Parent, Repository, Snapshot,
};
use vinfra_vmfs::disk::VirtualDisk;
use vinfra_vmm_core::VmConfig;

use super::devices::{self, Devices, DiskRecord};
use super::vms::{read_definition, write_definition};
use super::Host;
use crate::api::{
    ApiError, BackupInfo, BackupRequest, BackupsQuery, ForgetRequest, ForgetResult, PowerState,
    RestoreRequest, TaskHandle,
};

const INFO: &[u8] = b"vinfra vcb repository v1";

/// The repository password of a cluster: HKDF-SHA256 of its key, hex.
pub fn repository_password(key: &[u8; 32]) -> Vec<u8> {
    let mut okm = [0u8; 32];
    // 32 bytes is far under HKDF-SHA256's limit (255 × 32): expand cannot fail.
    if Hkdf::<Sha256>::new(None, key)
        .expand(INFO, &mut okm)
        .is_err()
    {
        unreachable!("HKDF-SHA256 expands to 32 bytes");
    }
    okm.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes()
}

/// [`repository_password`] of the key in a cluster key file (64 hex digits).
pub fn password_from_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hex = text.trim();
    let mut key = [0u8; 32];
    // ASCII first: the byte slicing below must not split a character.
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(format!("{}: not 64 hex digits", path.display()));
    }
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{}: not 64 hex digits", path.display()))?;
    }
    Ok(repository_password(&key))
}

/// What a backup carries besides the disks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackedUpVm {
    config: VmConfig,
    devices: Devices,
    settings: vinfra_ha::HaSettings,
}

pub(super) fn vcb_err(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{what}: {e}"))
}

pub(super) fn open_repository(
    dir: &str,
    password: &[u8],
    create: bool,
) -> Result<Repository, ApiError> {
    let path = Path::new(dir);
    let has_config = path.join("config").exists();
    if !has_config && !create {
        return Err(ApiError::InvalidValue {
            field: "repository".into(),
            why: format!("no backup repository at {dir}"),
        });
    }
    std::fs::create_dir_all(path).map_err(|e| vcb_err(dir, e))?;
    let storage = LocalDir::open(path).map_err(|e| vcb_err(dir, e))?;
    if has_config {
        Repository::open(storage, password).map_err(|e| vcb_err(&format!("open {dir}"), e))
    } else {
        Repository::init(storage, password, &InitOptions::default())
            .map_err(|e| vcb_err(&format!("create {dir}"), e))
    }
}

/// A backup between its freeze (on the loop) and its end (on the loop again, when
/// [`Inbound::BackupStored`](super::Inbound::BackupStored) arrives): meanwhile its
/// repository work runs on a thread of its own, and the loop goes on.
pub(super) struct Pending {
    /// The disks frozen: index, path and frozen layers.
    frozen: Vec<(usize, String, SnapshotInfo)>,
    /// The disks of a VM that was off, opened and frozen here.
    open_disks: Vec<VirtualDisk>,
    /// The VM ran here: its process froze its disks and folds them back.
    running: bool,
    repository: String,
    task: TaskHandle,
    /// Set when the host stops: the backup's reads fail from then on.
    cancel: Arc<AtomicBool>,
}

/// What a backup's thread does: opens the repository (an argon2id of its password:
/// seconds with costly parameters) and stores the frozen layers (as long as reading the
/// disks takes).
struct Store {
    volume: vinfra_vmfs::Volume,
    password: Vec<u8>,
    repository: String,
    frozen: Vec<(usize, SnapshotInfo)>,
    vm: String,
    host: String,
    config: Vec<u8>,
    incremental: bool,
    cancel: Arc<AtomicBool>,
}

const CANCELLED: &str = "the host stopped during the backup";

/// A frozen disk whose reads fail once its backup is cancelled: a backup of many
/// gigabytes ends at its next read, not when it has read them all.
struct Cancellable<'a> {
    inner: &'a dyn DiskSource,
    cancel: &'a AtomicBool,
}

impl DiskSource for Cancellable<'_> {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other(CANCELLED));
        }
        self.inner.read_at(buf, offset)
    }
    fn allocated(&self) -> Vec<(u64, u64)> {
        self.inner.allocated()
    }
    fn change_id(&self) -> Option<u64> {
        self.inner.change_id()
    }
    fn changed_since(&self, change_id: u64) -> Option<Vec<(u64, u64)>> {
        self.inner.changed_since(change_id)
    }
}

impl Store {
    fn run(self) -> Result<Snapshot, ApiError> {
        let repo = open_repository(&self.repository, &self.password, true)?;
        let mut sources = Vec::new();
        for (i, info) in &self.frozen {
            let s = VmfsSnapshot::open(&self.volume, info.clone())
                .map_err(|e| vcb_err(&format!("open the frozen layers of disk {i}"), e))?;
            sources.push((format!("disk{i}"), s));
        }
        let cancellable: Vec<(&str, Cancellable<'_>)> = sources
            .iter()
            .map(|(n, s)| {
                let c = Cancellable {
                    inner: s,
                    cancel: &self.cancel,
                };
                (n.as_str(), c)
            })
            .collect();
        let refs: Vec<(&str, &dyn DiskSource)> = cancellable
            .iter()
            .map(|(n, s)| (*n, s as &dyn DiskSource))
            .collect();
        let time = crate::api::system_now_ms() / 1000;
        let mut opts = BackupOptions::new(&self.vm, time)
            .host(&self.host)
            .config(self.config);
        if !self.incremental {
            // A full read (still storing only what the repository lacks).
            opts = opts.parent(Parent::None);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ApiError::Internal(CANCELLED.into()));
        }
        repo.backup(&opts, &refs).map_err(|e| vcb_err("backup", e))
    }
}

impl Host {
    /// `POST /vms/NAME/backup`: every disk, frozen, stored in the repository. The disks
    /// are frozen here; the repository work runs on a thread of its own (the task ends
    /// in [`Host::backup_stored`]), so that the loop goes on meanwhile: its VMs hear the
    /// lease (they stop after half of one without word), the agent its peers, the API
    /// its clients. Until the task ends, the VM's other operations are refused.
    pub(super) fn backup_vm(
        &mut self,
        name: &str,
        req: &BackupRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        self.vm_not_elsewhere(name)?;
        let dev = devices::read(&self.volume, name)?;
        if dev.disks.is_empty() {
            return Err(ApiError::Unsupported(format!(
                "VM {name} has no disk to back up"
            )));
        }
        let chosen = chosen_disks(dev.disks.len(), req.disks.as_deref(), name)?;
        let carried = BackedUpVm {
            config: read_definition(&self.volume, name).map_err(ApiError::Internal)?,
            devices: dev.clone(),
            settings: VmfsDatastore::read_settings(&self.volume, name)
                .map_err(|e| vcb_err("settings", e))?,
        };
        let config = serde_json::to_vec(&carried).map_err(|e| vcb_err("encode", e))?;
        let running = self.vms.pid(name).is_some();
        // Frozen: by the child, or here on the disks opened for it.
        let mut frozen = Vec::new();
        let mut open_disks = Vec::new();
        let mut failed = None;
        for &i in &chosen {
            let d = &dev.disks[i];
            let info = if running {
                match self.vms.process_mut(name) {
                    Some(p) => p
                        .snapshot(i, None)
                        .map_err(|e| vcb_err(&format!("snapshot disk {i}"), e)),
                    None => Err(ApiError::Internal(format!(
                        "{name} stopped during its backup"
                    ))),
                }
            } else {
                VirtualDisk::open(&self.volume, &d.path)
                    .and_then(|mut disk| {
                        let info = prepare(&mut disk, None)?;
                        open_disks.push(disk);
                        Ok(info)
                    })
                    .map_err(|e| vcb_err(&format!("snapshot {}", d.path), e))
            };
            match info {
                Ok(info) => frozen.push((i, d.path.clone(), info)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            let _ = self.fold_back(name, running, &frozen, &mut open_disks);
            return Err(e);
        }
        task.progress(0.1, "disks frozen");
        let store = Store {
            volume: self.volume.clone(),
            password: self.vcb_password.clone(),
            repository: req.repository.clone(),
            frozen: frozen.iter().map(|(i, _, f)| (*i, f.clone())).collect(),
            vm: name.to_string(),
            host: format!("host{}", self.agent.host()),
            config,
            incremental: req.incremental,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        let cancel = store.cancel.clone();
        let tx = self.tx.clone();
        let vm = name.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("backup-{name}"))
            .spawn(move || {
                let stored = store.run();
                // A loop that ended meanwhile (the host stops) has no use for it.
                let _ = tx.send(super::Inbound::BackupStored { vm, stored });
            });
        if let Err(e) = spawned {
            let _ = self.fold_back(name, running, &frozen, &mut open_disks);
            return Err(ApiError::Internal(format!(
                "spawn the backup's thread: {e}"
            )));
        }
        self.backups.insert(
            name.to_string(),
            Pending {
                frozen,
                open_disks,
                running,
                repository: req.repository.clone(),
                task,
                cancel,
            },
        );
        Ok(())
    }

    /// The host stops: its backups under way are cancelled and, once their threads are
    /// done (at most `within`; a thread deriving a repository's key finishes that
    /// first), their disks folded back and their tasks failed. A backup whose thread is
    /// still busy after that keeps its redo logs: folding back under its reads would
    /// store a torn image, and the frozen layers are held open by its reads.
    pub(super) fn end_backups(&mut self, within: Duration) {
        if self.backups.is_empty() {
            return;
        }
        for p in self.backups.values() {
            p.cancel.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + within;
        while !self.backups.is_empty() && Instant::now() < deadline {
            self.vms.keep_alive();
            let next = match self.held.pop_front() {
                Some(held) => Some(held),
                None => self.inbox.recv_timeout(Duration::from_millis(10)).ok(),
            };
            // Nothing else is for a host that stops.
            if let Some(super::Inbound::BackupStored { vm, stored }) = next {
                self.backup_stored(&vm, stored);
            }
        }
        for (vm, p) in std::mem::take(&mut self.backups) {
            tracing::warn!(
                vm,
                "the host stops with the VM's backup still reading its disks: their redo logs stay"
            );
            self.report.event(
                "backup_abandoned",
                serde_json::json!({"vm": vm, "task": p.task.id()}),
            );
            p.task.fail(&ApiError::Internal(CANCELLED.into()));
        }
    }

    /// A backup's thread is done: the frozen disks fold back (also after a failed
    /// backup; the frozen layers were closed with the thread), and its task ends.
    pub(super) fn backup_stored(&mut self, vm: &str, stored: Result<Snapshot, ApiError>) {
        let Some(Pending {
            frozen,
            mut open_disks,
            running,
            repository,
            task,
            cancel: _,
        }) = self.backups.remove(vm)
        else {
            return;
        };
        let folded = self.fold_back(vm, running, &frozen, &mut open_disks);
        drop(open_disks);
        match stored.and_then(|snap| folded.map(|()| snap)) {
            Ok(snap) => {
                self.report.event(
                    "vm_backed_up",
                    serde_json::json!({"vm": vm, "backup": snap.id.to_hex(), "running": running}),
                );
                task.succeed(
                    serde_json::json!({"backup": snap.id.to_hex(), "repository": repository}),
                );
            }
            Err(e) => {
                tracing::warn!(vm, "backup: {e}");
                task.fail(&e);
            }
        }
    }

    /// The VM's operations wait for its backup: its disks are frozen meanwhile.
    pub(super) fn refuse_during_backup(&self, name: &str) -> Result<(), ApiError> {
        match self.backups.get(name) {
            Some(p) => Err(ApiError::WrongState {
                vm: name.to_string(),
                state: if p.running {
                    PowerState::Running
                } else {
                    PowerState::ShutOff
                },
                needed: format!("its backup (task {}) must end first", p.task.id()),
            }),
            None => Ok(()),
        }
    }

    /// Folds the redo logs of a backup's frozen disks back: through the VM's process
    /// while it runs here, else on the disks (those opened for it, or, when its process
    /// ended during the backup, opened now). The first error, after trying every disk.
    fn fold_back(
        &mut self,
        vm: &str,
        running: bool,
        frozen: &[(usize, String, SnapshotInfo)],
        open_disks: &mut [VirtualDisk],
    ) -> Result<(), ApiError> {
        let mut folded = Ok(());
        for (k, (i, path, _)) in frozen.iter().enumerate() {
            let consolidate = |e| vcb_err(&format!("consolidate disk {i}"), e);
            let r = if !running {
                match open_disks.get_mut(k) {
                    Some(d) => d.consolidate().map_err(consolidate),
                    None => Ok(()),
                }
            } else if let Some(p) = self.vms.process_mut(vm) {
                p.consolidate(*i)
                    .map_err(|e| vcb_err(&format!("consolidate disk {i}"), e))
            } else {
                VirtualDisk::open(&self.volume, path)
                    .and_then(|mut d| d.consolidate())
                    .map_err(consolidate)
            };
            if r.is_err() && folded.is_ok() {
                folded = r;
            }
        }
        folded
    }

    /// `POST /vms/NAME/restore`: backup of NAME (the latest, or the one named) brought
    /// back as the new VM `req.name`, shut off.
    pub(super) fn restore_vm(
        &mut self,
        name: &str,
        req: &RestoreRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        let new = req.name.as_str();
        if self
            .volume
            .exists(&vm_dir(new))
            .map_err(|e| vcb_err("volume", e))?
        {
            return Err(ApiError::VmExists(new.to_string()));
        }
        // Off the loop: the key derivation and the restore take seconds.
        let password = self.vcb_password.clone();
        let (repo, snap) = self.off_loop(|| {
            let repo = open_repository(&req.repository, &password, false)?;
            let snap = find_backup(&repo, name, req.backup.as_deref(), None, &req.repository)?;
            Ok::<_, ApiError>((repo, snap))
        })?;
        let carried: BackedUpVm = serde_json::from_slice(&snap.manifest.config)
            .map_err(|e| vcb_err("the backup's VM definition", e))?;
        let mut settings = carried.settings.clone();
        settings.desired_on = false;
        VmfsDatastore::write_settings(&self.volume, new, &settings)
            .map_err(|e| vcb_err("settings", e))?;
        let volume = self.volume.clone();
        let restored = write_definition(&self.volume, new, &carried.config)
            .map_err(ApiError::Internal)
            .and_then(|()| {
                self.off_loop(|| {
                    restore_vm(&repo, &snap.id, &volume, &vm_dir(new))
                        .map_err(|e| vcb_err("restore", e))
                })
            })
            .and_then(|vm| {
                // The disks the backup holds (all, or those its request named), in order,
                // each where restore_vm put it and with its size from the definition.
                let disks = vm
                    .disks
                    .iter()
                    .map(|(disk, _)| {
                        let size_mib = disk
                            .strip_prefix("disk")
                            .and_then(|i| i.parse::<usize>().ok())
                            .and_then(|i| carried.devices.disks.get(i))
                            .map(|d| d.size_mib)
                            .ok_or_else(|| vcb_err("restore", format!("unknown disk {disk}")))?;
                        Ok(DiskRecord {
                            path: format!("{}/{disk}.vmdk", vm_dir(new)),
                            size_mib,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?;
                drop(vm.disks);
                let specs = carried.devices.nic_specs();
                let nics = devices::nic_records(
                    new,
                    &specs
                        .into_iter()
                        .map(|mut n| {
                            n.mac = None;
                            n
                        })
                        .collect::<Vec<_>>(),
                );
                let dev = Devices {
                    disks,
                    nics,
                    layers: 1,
                    resources: carried.devices.resources.clone(),
                    ..Devices::default()
                };
                devices::write(&self.volume, new, &dev)
            });
        if let Err(e) = restored {
            self.remove_dir(new);
            return Err(e);
        }
        self.report.event(
            "vm_restored",
            serde_json::json!({"vm": new, "from": name, "backup": snap.id.to_hex()}),
        );
        self.refresh();
        task.succeed(serde_json::json!({"vm": new, "backup": snap.id.to_hex(), "state": PowerState::ShutOff}));
        Ok(())
    }
}

/// The indexes of the disks a backup takes: `wanted` (checked against the VM's `count`
/// disks, duplicates dropped) or all.
fn chosen_disks(count: usize, wanted: Option<&[u32]>, vm: &str) -> Result<Vec<usize>, ApiError> {
    let Some(wanted) = wanted else {
        return Ok((0..count).collect());
    };
    let mut chosen = Vec::new();
    for &w in wanted {
        let i = usize::try_from(w).unwrap_or(usize::MAX);
        if i >= count {
            return Err(ApiError::InvalidValue {
                field: "disks".into(),
                why: format!("VM {vm} has {count} disk(s): no disk {w}"),
            });
        }
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// Backup `backup` (hex id) of VM `vm` in `repo`, or when none is named the latest of the
/// VM (holding disk `disk` when one is named); 422 naming `backup` otherwise.
pub(super) fn find_backup(
    repo: &Repository,
    vm: &str,
    backup: Option<&str>,
    disk: Option<&str>,
    repository: &str,
) -> Result<Snapshot, ApiError> {
    let snaps = repo.snapshots().map_err(|e| vcb_err("list backups", e))?;
    let snap = match backup {
        Some(b) => {
            let id = Id::from_hex(b).ok_or_else(|| ApiError::InvalidValue {
                field: "backup".into(),
                why: "not a backup id (hex)".into(),
            })?;
            snaps
                .into_iter()
                .find(|s| s.id == id && s.manifest.vm == vm)
        }
        None => snaps
            .into_iter()
            .rfind(|s| s.manifest.vm == vm && disk.is_none_or(|d| s.manifest.disk(d).is_some())),
    };
    snap.ok_or_else(|| ApiError::InvalidValue {
        field: "backup".into(),
        why: match (backup, disk) {
            (None, Some(d)) => format!("no backup of VM {vm}'s {d} in {repository}"),
            _ => format!("no backup of VM {vm} in {repository}"),
        },
    })
}

/// `GET /backups`: the backups in the repository (of one VM, or all), oldest first.
/// Opening the repository costs an argon2id of the password: the host answers this from
/// a thread of its own (cluster/backup_files.rs), not from its loop.
pub(super) fn list_backups(password: &[u8], q: &BackupsQuery) -> Result<Vec<BackupInfo>, ApiError> {
    let repo = open_repository(&q.repository, password, false)?;
    let mut snaps = repo.snapshots().map_err(|e| vcb_err("list backups", e))?;
    snaps.sort_by_key(|s| (s.manifest.time_unix_s, s.id));
    Ok(snaps
        .iter()
        .filter(|s| q.vm.as_ref().is_none_or(|vm| &s.manifest.vm == vm))
        .map(backup_info)
        .collect())
}

/// The API's view of a backup.
fn backup_info(s: &Snapshot) -> BackupInfo {
    let m = &s.manifest;
    BackupInfo {
        id: s.id.to_hex(),
        vm: m.vm.clone(),
        time_unix_s: m.time_unix_s,
        host: m.host.clone(),
        parent: m.parent.map(|p| p.to_hex()),
        disks: m.disks.iter().map(|d| d.name.clone()).collect(),
        bytes: m.disks.iter().map(|d| d.capacity).sum(),
        bytes_read: m.disks.iter().map(|d| d.stats.bytes_read).sum(),
        bytes_new: m.disks.iter().map(|d| d.stats.bytes_new).sum(),
    }
}

/// `vm`'s backups of `snaps`, newest first.
fn newest_first<'a>(snaps: &'a [Snapshot], vm: &str) -> Vec<&'a Snapshot> {
    let mut mine: Vec<&Snapshot> = snaps.iter().filter(|s| s.manifest.vm == vm).collect();
    mine.sort_by_key(|s| std::cmp::Reverse((s.manifest.time_unix_s, s.id)));
    mine
}

impl Host {
    /// `POST /backups/forget`: keeps the VM's newest `keep_last` backups, forgets the
    /// rest (vcb's `forget`) and prunes what no backup uses any more (vcb's `prune`),
    /// each under the repository's exclusive lock (refused while a backup, of this host
    /// or another, holds it shared). Off the loop while the loop waits: a prune reads
    /// and rewrites packs.
    pub(super) fn forget_backups(&mut self, r: &ForgetRequest) -> Result<ForgetResult, ApiError> {
        let password = self.vcb_password.clone();
        let (kept, forget, bytes_deleted) = self.off_loop(|| {
            let repo = open_repository(&r.repository, &password, false)?;
            let snaps = repo.snapshots().map_err(|e| vcb_err("list backups", e))?;
            let mine = newest_first(&snaps, &r.vm);
            let (kept, old) = mine.split_at(mine.len().min(r.keep_last as usize));
            let kept: Vec<String> = kept.iter().map(|s| s.id.to_hex()).collect();
            let forget: Vec<Id> = old.iter().map(|s| s.id).collect();
            let mut bytes_deleted = 0;
            if !forget.is_empty() {
                repo.forget(&forget).map_err(|e| vcb_err("forget", e))?;
                bytes_deleted = repo.prune().map_err(|e| vcb_err("prune", e))?.bytes_deleted;
            }
            Ok::<_, ApiError>((kept, forget, bytes_deleted))
        })?;
        if !forget.is_empty() {
            self.report.event(
                "backups_forgotten",
                serde_json::json!({"vm": r.vm, "repository": r.repository,
                    "forgotten": forget.len(), "kept": kept.len()}),
            );
        }
        Ok(ForgetResult {
            kept,
            forgotten: forget.iter().map(Id::to_hex).collect(),
            bytes_deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_hkdf_of_the_key_apart_from_the_api_token() {
        let key = [7u8; 32];
        let p = repository_password(&key);
        assert_eq!(p, repository_password(&key));
        assert_eq!(p.len(), 64);
        assert_ne!(p, repository_password(&[8u8; 32]));
        // Another info than the API token's: a token seen on the wire opens no backup.
        let token = crate::api::ApiToken::derive(&key);
        assert_ne!(p, token.as_str().as_bytes());
    }

    #[test]
    fn key_files_are_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, format!("{}\n", "07".repeat(32))).unwrap();
        assert_eq!(
            password_from_key_file(&f).unwrap(),
            repository_password(&[7u8; 32])
        );
        std::fs::write(&f, "07").unwrap();
        assert!(password_from_key_file(&f).is_err());
        std::fs::write(&f, "zz".repeat(32)).unwrap();
        assert!(password_from_key_file(&f).is_err());
        std::fs::write(&f, "é".repeat(32)).unwrap();
        assert!(password_from_key_file(&f).is_err());
    }
}
