//! The datastore channel: what the agent needs from shared storage ([`Datastore`]), and
//! how HA lays out its per-VM records on it.
//!
//! On the volume every VM has a directory `/vms/<name>/` holding `ha.json` (its
//! [`HaSettings`]) and `lock`, an empty file that the host running the VM keeps open in
//! exclusive mode: the lock's holder is the VM's owner.

use serde::{Deserialize, Serialize};

use crate::inventory::{IsolationResponse, Reading, RestartPriority, VmRecord};

/// Where the VM directories are.
pub const VMS_DIR: &str = "/vms";

/// `/maintenance`: one empty file per host in maintenance mode, named by its id.
pub const MAINTENANCE_DIR: &str = "/maintenance";

/// `/vms/<name>`.
pub fn vm_dir(name: &str) -> String {
    format!("{VMS_DIR}/{name}")
}

/// `/vms/<name>/ha.json`.
pub fn settings_path(name: &str) -> String {
    format!("{VMS_DIR}/{name}/ha.json")
}

/// `/vms/<name>/lock`: held exclusively by the host that runs the VM.
pub fn lock_path(name: &str) -> String {
    format!("{VMS_DIR}/{name}/lock")
}

/// A VM's HA settings, as stored in `ha.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSettings {
    /// Whether it should run.
    #[serde(default = "yes")]
    pub desired_on: bool,
    /// Restart priority.
    #[serde(default)]
    pub priority: RestartPriority,
    /// What a host cut from the storage does with it.
    #[serde(default)]
    pub isolation_response: IsolationResponse,
    /// CPU size for placement, MHz.
    pub cpu_mhz: i64,
    /// Memory size for placement, MB.
    pub mem_mb: i64,
}

fn yes() -> bool {
    true
}

impl HaSettings {
    /// The record the agent sees, with the lock's `owner`.
    pub fn record(&self, name: &str, owner: Option<u32>) -> VmRecord {
        VmRecord {
            name: name.to_string(),
            owner,
            desired_on: self.desired_on,
            priority: self.priority,
            isolation_response: self.isolation_response,
            cpu_mhz: self.cpu_mhz,
            mem_mb: self.mem_mb,
        }
    }
}

/// A failed read of the datastore.
#[derive(Debug, thiserror::Error)]
#[error("datastore: {what}: {source}")]
pub struct DatastoreError {
    /// What was being read.
    pub what: String,
    /// Why it failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What the agent's adapter reads from shared storage.
pub trait Datastore {
    /// Every host's heartbeat slot and every VM's record with its lock owner
    /// (the answer to `Action::ReadDatastore`).
    fn read(&mut self) -> Result<Reading, DatastoreError>;
}

#[cfg(feature = "vmfs")]
pub use self::vmfs_impl::{read_json, write_json, VmfsDatastore};

#[cfg(feature = "vmfs")]
mod vmfs_impl {
    use std::collections::BTreeMap;

    use vinfra_vmfs::{Kind, LockMode, Volume};

    use super::{
        lock_path, settings_path, Datastore, DatastoreError, HaSettings, MAINTENANCE_DIR, VMS_DIR,
    };
    use crate::inventory::{Reading, SlotReading};

    /// How long a VM's `ha.json` is trusted before it is read again: opening a file
    /// takes a lock on the volume, too much traffic at every heartbeat interval.
    const SETTINGS_TTL_MS: u64 = 5000;

    fn err(what: impl Into<String>) -> impl FnOnce(vinfra_vmfs::Error) -> DatastoreError {
        let what = what.into();
        move |e| DatastoreError {
            what,
            source: Box::new(e),
        }
    }

    /// How long a read or write of a JSON file waits for another host's hold on it (a
    /// read or write of a few hundred bytes: milliseconds), rather than failing.
    const LOCK_WAIT_MS: u64 = 2000;

    /// Writes `value` as JSON to the file `path` of the volume (created, or replaced
    /// under its exclusive lock), durably.
    pub fn write_json<T: serde::Serialize>(
        volume: &Volume,
        path: &str,
        value: &T,
    ) -> Result<(), DatastoreError> {
        let f = if volume.exists(path).map_err(err(path))? {
            volume
                .open_wait(path, LockMode::Exclusive, LOCK_WAIT_MS)
                .map_err(err(path))?
        } else {
            volume.create(path).map_err(err(path))?
        };
        let text = serde_json::to_vec_pretty(value).map_err(|e| DatastoreError {
            what: path.to_string(),
            source: Box::new(e),
        })?;
        f.set_len(0).map_err(err(path))?;
        f.write_at(&text, 0).map_err(err(path))?;
        f.sync().map_err(err(path))?;
        f.close().map_err(err(path))
    }

    /// Reads the JSON file `path` of the volume (at most `limit` bytes of it) under a
    /// shared lock.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        volume: &Volume,
        path: &str,
        limit: usize,
    ) -> Result<T, DatastoreError> {
        let f = volume
            .open_wait(path, LockMode::SharedRead, LOCK_WAIT_MS)
            .map_err(err(path))?;
        let len = usize::try_from(f.len()).unwrap_or(usize::MAX).min(limit);
        let mut buf = vec![0; len];
        let n = f.read_at(&mut buf, 0).map_err(err(path))?;
        f.close().map_err(err(path))?;
        serde_json::from_slice(&buf[..n]).map_err(|e| DatastoreError {
            what: path.to_string(),
            source: Box::new(e),
        })
    }

    /// The datastore on a mounted vmfs volume.
    #[derive(Debug)]
    pub struct VmfsDatastore {
        volume: Volume,
        settings: BTreeMap<String, (std::time::Instant, HaSettings)>,
    }

    impl VmfsDatastore {
        /// Reads from `volume` (mounted by this host).
        pub fn new(volume: Volume) -> Self {
            Self {
                volume,
                settings: BTreeMap::new(),
            }
        }

        /// Writes a VM's settings, creating its directory and lock file when new.
        pub fn write_settings(
            volume: &Volume,
            name: &str,
            s: &HaSettings,
        ) -> Result<(), DatastoreError> {
            if !volume.exists(VMS_DIR).map_err(err(VMS_DIR))? {
                volume.mkdir(VMS_DIR).map_err(err(VMS_DIR))?;
            }
            let dir = super::vm_dir(name);
            if !volume.exists(&dir).map_err(err(&dir))? {
                volume.mkdir(&dir).map_err(err(&dir))?;
            }
            let lock = lock_path(name);
            if !volume.exists(&lock).map_err(err(&lock))? {
                volume
                    .create(&lock)
                    .map_err(err(&lock))?
                    .close()
                    .map_err(err(&lock))?;
            }
            write_json(volume, &settings_path(name), s)
        }

        /// Puts `host` in maintenance mode or takes it out (`/maintenance/<host>`): a host
        /// in maintenance is no target of HA's restarts and placements.
        pub fn set_maintenance(volume: &Volume, host: u32, on: bool) -> Result<(), DatastoreError> {
            if !volume
                .exists(MAINTENANCE_DIR)
                .map_err(err(MAINTENANCE_DIR))?
            {
                volume
                    .mkdir(MAINTENANCE_DIR)
                    .map_err(err(MAINTENANCE_DIR))?;
            }
            let path = format!("{MAINTENANCE_DIR}/{host}");
            let there = volume.exists(&path).map_err(err(&path))?;
            if on && !there {
                volume
                    .create(&path)
                    .map_err(err(&path))?
                    .close()
                    .map_err(err(&path))?;
            } else if !on && there {
                volume.delete(&path).map_err(err(&path))?;
            }
            Ok(())
        }

        /// The hosts in maintenance mode.
        pub fn maintenance(volume: &Volume) -> Result<Vec<u32>, DatastoreError> {
            if !volume
                .exists(MAINTENANCE_DIR)
                .map_err(err(MAINTENANCE_DIR))?
            {
                return Ok(Vec::new());
            }
            Ok(volume
                .list(MAINTENANCE_DIR)
                .map_err(err(MAINTENANCE_DIR))?
                .into_iter()
                .filter_map(|e| e.name.parse().ok())
                .collect())
        }

        /// Forgets what was read of a VM's settings, so that the next reading reads them
        /// again (after this host wrote them).
        pub fn forget(&mut self, name: &str) {
            self.settings.remove(name);
        }

        /// Reads one VM's settings.
        pub fn read_settings(volume: &Volume, name: &str) -> Result<HaSettings, DatastoreError> {
            read_json(volume, &settings_path(name), 64 * 1024)
        }

        fn settings_of(&mut self, name: &str) -> Result<HaSettings, DatastoreError> {
            if let Some((at, s)) = self.settings.get(name) {
                if at.elapsed().as_millis() < u128::from(SETTINGS_TTL_MS) {
                    return Ok(s.clone());
                }
            }
            let s = Self::read_settings(&self.volume, name)?;
            self.settings
                .insert(name.to_string(), (std::time::Instant::now(), s.clone()));
            Ok(s)
        }
    }

    impl Datastore for VmfsDatastore {
        fn read(&mut self) -> Result<Reading, DatastoreError> {
            let slots = self
                .volume
                .hosts()
                .map_err(err("heartbeat region"))?
                .into_iter()
                .map(|h| SlotReading {
                    host: h.slot.host,
                    generation: h.slot.generation,
                    counter: h.slot.counter,
                    live: h.slot.live,
                })
                .collect();
            let mut vms = Vec::new();
            let names: Vec<String> = if self.volume.exists(VMS_DIR).map_err(err(VMS_DIR))? {
                self.volume
                    .list(VMS_DIR)
                    .map_err(err(VMS_DIR))?
                    .into_iter()
                    .filter(|e| e.kind == Kind::Dir && e.name != "." && e.name != "..")
                    .map(|e| e.name)
                    .collect()
            } else {
                Vec::new()
            };
            self.settings.retain(|n, _| names.contains(n));
            for name in names {
                let lock = lock_path(&name);
                let info = self.volume.lock_info(&lock).map_err(err(&lock))?;
                let owner = match info.mode {
                    Some(LockMode::Exclusive) => info.holders.first().map(|h| h.host),
                    _ => None,
                };
                // A VM nobody holds is one a planner may start: its settings are read
                // afresh, since a user who powers a VM off writes `desired_on: false`
                // before releasing the lock, and a cached `true` would restart it.
                if owner.is_none() {
                    self.settings.remove(&name);
                }
                let settings = self.settings_of(&name)?;
                vms.push(settings.record(&name, owner));
            }
            let maintenance = Self::maintenance(&self.volume)?;
            Ok(Reading {
                slots,
                vms,
                maintenance,
            })
        }
    }
}
