//! The VMs this host runs, each in a child process of its own (`vinfra-vm run`, through
//! [`VmProcess`]): power on behind the VM's exclusive lock on the volume (taken here, in
//! the host's slot, before the child starts, and released after it is gone), power off
//! and reset through the child's control socket, the guest's console lines handed to the
//! host loop, the lease fed to every child each tick, and children that ended reaped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use vinfra_ha::datastore::{lock_path, read_json, vm_dir, write_json, VMS_DIR};
use vinfra_ha::PowerOnOutcome;
use vinfra_vmfs::{LockMode, Volume};
use vinfra_vmm_core::VmConfig;

use super::devices::ChildEnv;
use super::Inbound;
use crate::vm_process::{ControlWait, Exit, ProcessStats, Start, VmProcess, VmSpec};

/// How long a powered-off child has to exit before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// `/vms/<name>/vm.json`: the VM's vmm-core configuration.
pub fn definition_path(name: &str) -> String {
    format!("{VMS_DIR}/{name}/vm.json")
}

/// Writes a VM's definition (its directory must exist: [`vinfra_ha::datastore`] makes it
/// with the HA settings).
pub fn write_definition(volume: &Volume, name: &str, config: &VmConfig) -> Result<(), String> {
    let dir = vm_dir(name);
    if !volume.exists(&dir).map_err(|e| format!("{dir}: {e}"))? {
        return Err(format!("{dir}: no such VM directory"));
    }
    write_json(volume, &definition_path(name), config).map_err(|e| e.to_string())
}

/// Reads a VM's definition.
pub fn read_definition(volume: &Volume, name: &str) -> Result<VmConfig, String> {
    read_json(volume, &definition_path(name), 1 << 20).map_err(|e| e.to_string())
}

struct RunningVm {
    process: VmProcess,
    /// The VM's exclusive lock: held as long as the VM's process lives.
    lock: vinfra_vmfs::File,
}

/// A VM arriving by live migration: its `vinfra-vm incoming` child, not yet holding the
/// VM's lock (the source releases it once the VM runs here).
struct ArrivingVm {
    process: VmProcess,
    /// Given up (the child killed) past this.
    deadline: std::time::Instant,
}

/// What became of an arriving VM.
#[derive(Debug)]
pub enum Arrival {
    /// It runs here and this host holds its lock.
    Arrived,
    /// The migration failed or never came: the child is gone.
    Failed(String),
}

/// The VMs running on this host.
pub struct Vms {
    volume: Volume,
    running: BTreeMap<String, RunningVm>,
    /// VMs being sent away: their children end by themselves when the VM has moved,
    /// which [`Vms::reap`] must not take for a crash.
    leaving: std::collections::BTreeSet<String>,
    arriving: BTreeMap<String, ArrivingVm>,
    tx: Sender<Inbound>,
    run_dir: PathBuf,
    /// What children with disks or NICs are given (cluster/devices.rs).
    env: ChildEnv,
    /// Where the last power-on's time went, for `vm_started`.
    last_start: StartTimes,
}

/// Where a power-on's time went (ms): the VM's lock, reading its definition, and
/// starting the child (its devices read, its files written, fork, exec, its console
/// thread).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StartTimes {
    /// Taking the VM's lock on the volume.
    pub lock_ms: f64,
    /// Reading its definition.
    pub read_ms: f64,
    /// Starting its process.
    pub exec_ms: f64,
}

impl std::fmt::Debug for Vms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vms")
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .field("run_dir", &self.run_dir)
            .finish()
    }
}

impl Vms {
    /// No VM yet; console lines go to `tx`; each VM's configuration file and control
    /// socket go to `run_dir`; `env` says where children find the volume and switch.
    pub fn new(volume: Volume, tx: Sender<Inbound>, run_dir: PathBuf, env: ChildEnv) -> Self {
        Self {
            volume,
            running: BTreeMap::new(),
            leaving: std::collections::BTreeSet::new(),
            arriving: BTreeMap::new(),
            tx,
            run_dir,
            env,
            last_start: StartTimes::default(),
        }
    }

    /// Where the last [`Vms::power_on`]'s time went.
    pub fn last_start(&self) -> StartTimes {
        self.last_start
    }

    /// Names of the running VMs.
    pub fn names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The pid of a VM's process.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.running.get(name).map(|r| r.process.pid())
    }

    /// CPU time and RSS of a VM's process.
    pub fn stats(&self, name: &str) -> Option<ProcessStats> {
        self.running.get(name)?.process.stats().ok()
    }

    /// The VM's process, for the requests this module does not make itself (migrate,
    /// snapshot, console input).
    pub fn process_mut(&mut self, name: &str) -> Option<&mut VmProcess> {
        self.running.get_mut(name).map(|r| &mut r.process)
    }

    /// What waits for the control socket of a VM started here that has not answered
    /// yet (`None`: it has, or it does not run here).
    pub fn until_answering(&self, name: &str) -> Option<ControlWait> {
        self.running.get(name)?.process.until_answering()
    }

    fn spawn(&self, name: &str, config: VmConfig) -> Result<VmProcess, String> {
        self.spawn_as(name, config, Start::Boot)
    }

    fn spawn_as(&self, name: &str, config: VmConfig, start: Start) -> Result<VmProcess, String> {
        self.spawn_with(name, config, start, Vec::new())
    }

    fn spawn_with(
        &self,
        name: &str,
        config: VmConfig,
        start: Start,
        extra_args: Vec<std::ffi::OsString>,
    ) -> Result<VmProcess, String> {
        let tx = self.tx.clone();
        let vm = name.to_string();
        let mut spec = VmSpec::new(name, config, &self.run_dir, self.volume.lease_ms());
        spec.start = start;
        spec.extra_args.extend(extra_args);
        super::devices::prepare_child(&self.volume, name, &self.env, &mut spec)?;
        VmProcess::spawn(&spec, move |line| {
            // The loop is gone when the host shuts down: the line has nowhere to go.
            let _ = tx.send(Inbound::Console {
                vm: vm.clone(),
                line,
            });
        })
        .map_err(|e| e.to_string())
    }

    /// Takes the VM's lock, then starts its process.
    pub fn power_on(&mut self, name: &str) -> PowerOnOutcome {
        if self.running.contains_key(name) {
            return PowerOnOutcome::Started;
        }
        // Whom the lock is taken from, for the record (a dead host's, after its lease).
        let t = Instant::now();
        let before = self.volume.lock_info(&lock_path(name)).ok();
        let lock = match self.volume.open(&lock_path(name), LockMode::Exclusive) {
            Ok(f) => f,
            Err(vinfra_vmfs::Error::Locked { holder, .. }) => {
                return PowerOnOutcome::LockHeld { owner: holder }
            }
            Err(e) => return PowerOnOutcome::Failed(format!("lock {}: {e}", lock_path(name))),
        };
        self.last_start = StartTimes {
            lock_ms: t.elapsed().as_secs_f64() * 1000.0,
            ..StartTimes::default()
        };
        let t = Instant::now();
        let config = read_definition(&self.volume, name);
        self.last_start.read_ms = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let started = config.and_then(|config| self.spawn(name, config));
        self.last_start.exec_ms = t.elapsed().as_secs_f64() * 1000.0;
        match started {
            Ok(process) => {
                self.running
                    .insert(name.to_string(), RunningVm { process, lock });
                if let Some(h) = before.as_ref().and_then(|i| i.holders.first()) {
                    tracing::info!(
                        vm = name,
                        "took the lock over from host {} ({}{})",
                        h.host,
                        h.verdict,
                        if h.stale { ", stale" } else { "" }
                    );
                }
                PowerOnOutcome::Started
            }
            Err(e) => {
                if let Err(x) = lock.close() {
                    tracing::warn!(vm = name, "release the lock after a failed start: {x}");
                }
                PowerOnOutcome::Failed(e)
            }
        }
    }

    fn release(name: &str, r: RunningVm) {
        drop(r.process);
        if let Err(e) = r.lock.close() {
            tracing::info!(vm = name, "lock not released: {e}");
        }
    }

    /// Stops the VM (`power_off` on its control socket, a kill if it does not answer or
    /// exit in time), waits for its process, then releases its lock (a fenced host
    /// cannot: its lock then waits for whoever breaks it after the lease). The other
    /// VMs' leases are fed meanwhile, while this host's is valid.
    pub fn power_off(&mut self, name: &str) -> Option<Exit> {
        let mut r = self.running.remove(name)?;
        let deadline = match r.process.power_off() {
            Ok(()) => Instant::now() + STOP_WAIT,
            Err(e) => {
                tracing::info!(vm = name, "power_off: {e}; killing it");
                Instant::now()
            }
        };
        let exit = loop {
            match r.process.try_wait() {
                Ok(Some(e)) => break Some(e),
                Ok(None) if Instant::now() < deadline => {
                    self.keep_alive();
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    tracing::warn!(vm = name, "did not exit after power_off; killing it");
                    break r.process.kill().ok();
                }
                Err(e) => {
                    tracing::warn!(vm = name, "wait: {e}");
                    break r.process.kill().ok();
                }
            }
        };
        Self::release(name, r);
        exit
    }

    /// Boots the guest again inside its process, keeping the lock.
    pub fn reset(&mut self, name: &str) -> Result<(), String> {
        let Some(r) = self.running.get(name) else {
            return Err(format!("{name} does not run here"));
        };
        r.process.reset().map_err(|e| e.to_string())
    }

    /// Presses the VM's ACPI power button (a graceful shutdown's request).
    pub fn press_power_button(&self, name: &str) -> Result<(), String> {
        let Some(r) = self.running.get(name) else {
            return Err(format!("{name} does not run here"));
        };
        r.process.press_power_button().map_err(|e| e.to_string())
    }

    /// Feeds the children's leases if this host's own is valid: what the loop does every
    /// few milliseconds while one long call keeps it from its tick, so that its VMs do
    /// not take the silence for a lapsed lease (they stop after half of one).
    pub fn keep_alive(&mut self) {
        if self.volume.check_lease().is_ok() {
            self.feed_leases();
        }
    }

    /// Tells every child that this host's lease is valid (each tick it is).
    pub fn feed_leases(&mut self) {
        for r in self.running.values_mut() {
            r.process.feed_lease();
        }
        for a in self.arriving.values_mut() {
            a.process.feed_lease();
        }
    }

    /// The VMs whose process ended since the last call (the guest powered off, it
    /// crashed, it was killed), with how; their locks are released.
    pub fn reap(&mut self) -> Vec<(String, Exit)> {
        let mut ended = Vec::new();
        for (name, r) in &mut self.running {
            if self.leaving.contains(name) {
                continue;
            }
            match r.process.try_wait() {
                Ok(Some(exit)) => ended.push((name.clone(), exit)),
                Ok(None) => {}
                Err(e) => tracing::warn!(vm = name, "wait: {e}"),
            }
        }
        for (name, _) in &ended {
            if let Some(r) = self.running.remove(name) {
                Self::release(name, r);
            }
        }
        ended
    }

    /// Stops every VM (arriving ones too).
    pub fn stop_all(&mut self) {
        for n in self.names() {
            self.power_off(&n);
        }
        for (_, mut a) in std::mem::take(&mut self.arriving) {
            let _ = a.process.kill();
        }
    }

    /// Whether the VM is on its way in or out.
    pub fn migrating(&self, name: &str) -> bool {
        self.leaving.contains(name) || self.arriving.contains_key(name)
    }

    /// Marks a running VM as being sent away; its control socket, for the sender.
    pub fn leave(&mut self, name: &str) -> Option<PathBuf> {
        let path = self.running.get(name)?.process.control_path().to_path_buf();
        self.leaving.insert(name.to_string());
        Some(path)
    }

    /// The sender's verdict on a VM marked by [`Vms::leave`]. Moved (or in doubt: it
    /// must never run here again): its process is waited for (killed if it lingers) and
    /// its lock released. Failed but not in doubt: it runs here on.
    pub fn left(&mut self, name: &str, moved_or_in_doubt: bool) -> Option<Exit> {
        self.leaving.remove(name);
        if !moved_or_in_doubt {
            return None;
        }
        let mut r = self.running.remove(name)?;
        let exit = match r.process.wait_timeout(STOP_WAIT) {
            Ok(Some(e)) => Some(e),
            _ => r.process.kill().ok(),
        };
        Self::release(name, r);
        exit
    }

    /// Starts `vinfra-vm incoming --listen LISTEN` for a VM defined on the volume, which
    /// must run nowhere on this host.
    pub fn arrive(
        &mut self,
        name: &str,
        listen: &str,
        key_file: Option<PathBuf>,
        extra_args: Vec<std::ffi::OsString>,
        patience: Duration,
    ) -> Result<(), String> {
        if self.running.contains_key(name) || self.arriving.contains_key(name) {
            return Err(format!("{name} already runs here"));
        }
        let config = read_definition(&self.volume, name)?;
        let start = Start::Incoming {
            listen: listen.to_string(),
            key_file,
        };
        let process = self.spawn_with(name, config, start, extra_args)?;
        self.arriving.insert(
            name.to_string(),
            ArrivingVm {
                process,
                deadline: std::time::Instant::now() + patience,
            },
        );
        Ok(())
    }

    /// Looks at the arriving VMs (each tick): one that runs here takes its lock as soon
    /// as the source has released it; one whose child ended, or that never came, is
    /// given up.
    pub fn arrivals(&mut self) -> Vec<(String, Arrival)> {
        let mut done = Vec::new();
        let mut locked = Vec::new();
        for (name, a) in &mut self.arriving {
            match a.process.try_wait() {
                Ok(Some(exit)) => {
                    let why = format!("its process ended ({exit:?})");
                    done.push((name.clone(), Arrival::Failed(why)));
                    continue;
                }
                Err(e) => {
                    done.push((name.clone(), Arrival::Failed(e.to_string())));
                    continue;
                }
                Ok(None) => {}
            }
            if std::time::Instant::now() > a.deadline {
                let _ = a.process.kill();
                let why = "it did not arrive in time".to_string();
                done.push((name.clone(), Arrival::Failed(why)));
                continue;
            }
            // The control socket answers once the VM runs here.
            if a.process.status().is_err() {
                continue;
            }
            a.process.answered();
            match self.volume.open(&lock_path(name), LockMode::Exclusive) {
                Ok(lock) => locked.push((name.clone(), lock)),
                // The source has not released it yet: next tick.
                Err(vinfra_vmfs::Error::Locked { .. }) => {}
                Err(e) => tracing::warn!(vm = name, "take the lock of an arrived VM: {e}"),
            }
        }
        for (name, _) in &done {
            self.arriving.remove(name);
        }
        for (name, lock) in locked {
            if let Some(a) = self.arriving.remove(&name) {
                self.running.insert(
                    name.clone(),
                    RunningVm {
                        process: a.process,
                        lock,
                    },
                );
                done.push((name, Arrival::Arrived));
            }
        }
        done
    }
}
