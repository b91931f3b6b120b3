//! The VMs this host runs, in this process (a later step moves each into a child process
//! of its own): power on behind the VM's exclusive lock on the volume, power off, reset,
//! and the guest's console lines handed to the host loop.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc::Sender;

use vinfra_ha::datastore::{lock_path, read_json, vm_dir, write_json, VMS_DIR};
use vinfra_ha::PowerOnOutcome;
use vinfra_vmfs::{LockMode, Volume};
use vinfra_vmm_core::{PowerState, SerialInputSource, SerialOutput, SharedWriter, Vm, VmConfig};

use super::Inbound;

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

/// The guest's console, cut into lines for the host loop.
struct LineSink {
    vm: String,
    buf: Vec<u8>,
    tx: Sender<Inbound>,
}

impl Write for LineSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.buf).trim_end().to_string();
                self.buf.clear();
                // The loop is gone when the host shuts down: the line has nowhere to go.
                let _ = self.tx.send(Inbound::Console {
                    vm: self.vm.clone(),
                    line,
                });
            } else if self.buf.len() < 4096 {
                self.buf.push(b);
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct RunningVm {
    vm: Vm,
    /// The VM's exclusive lock: held as long as the VM runs here.
    lock: vinfra_vmfs::File,
    config: VmConfig,
}

/// The VMs running on this host.
pub struct Vms {
    volume: Volume,
    running: BTreeMap<String, RunningVm>,
    tx: Sender<Inbound>,
}

impl std::fmt::Debug for Vms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vms")
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Vms {
    /// No VM yet; console lines go to `tx`.
    pub fn new(volume: Volume, tx: Sender<Inbound>) -> Self {
        Self {
            volume,
            running: BTreeMap::new(),
            tx,
        }
    }

    /// Names of the running VMs.
    pub fn names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    fn boot(&self, name: &str, mut config: VmConfig) -> Result<Vm, String> {
        config.serial_output = SerialOutput::Writer(SharedWriter::new(LineSink {
            vm: name.to_string(),
            buf: Vec::new(),
            tx: self.tx.clone(),
        }));
        config.serial_input = SerialInputSource::None;
        let mut vm = Vm::create(config).map_err(|e| format!("create: {e}"))?;
        vm.start().map_err(|e| format!("start: {e}"))?;
        Ok(vm)
    }

    /// Takes the VM's lock, then boots it.
    pub fn power_on(&mut self, name: &str) -> PowerOnOutcome {
        if self.running.contains_key(name) {
            return PowerOnOutcome::Started;
        }
        // Whom the lock is taken from, for the record (a dead host's, after its lease).
        let before = self.volume.lock_info(&lock_path(name)).ok();
        let lock = match self.volume.open(&lock_path(name), LockMode::Exclusive) {
            Ok(f) => f,
            Err(vinfra_vmfs::Error::Locked { holder, .. }) => {
                return PowerOnOutcome::LockHeld { owner: holder }
            }
            Err(e) => return PowerOnOutcome::Failed(format!("lock {}: {e}", lock_path(name))),
        };
        let started = read_definition(&self.volume, name)
            .and_then(|config| Ok((self.boot(name, config.clone())?, config)));
        match started {
            Ok((vm, config)) => {
                self.running
                    .insert(name.to_string(), RunningVm { vm, lock, config });
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

    /// Stops the VM and releases its lock (a fenced host cannot: its lock then waits
    /// for whoever breaks it after the lease).
    pub fn power_off(&mut self, name: &str) {
        let Some(mut r) = self.running.remove(name) else {
            return;
        };
        if let Err(e) = r.vm.stop() {
            tracing::warn!(vm = name, "stop: {e}");
        }
        drop(r.vm);
        if let Err(e) = r.lock.close() {
            tracing::info!(vm = name, "lock not released: {e}");
        }
    }

    /// Stops the guest and boots it again, keeping the lock.
    pub fn reset(&mut self, name: &str) -> Result<(), String> {
        let Some(r) = self.running.get_mut(name) else {
            return Err(format!("{name} does not run here"));
        };
        r.vm.stop().map_err(|e| format!("stop: {e}"))?;
        let config = r.config.clone();
        let vm = self.boot(name, config)?;
        if let Some(r) = self.running.get_mut(name) {
            r.vm = vm;
        }
        Ok(())
    }

    /// The VMs whose guest stopped by itself (halted, crashed) since the last call; their
    /// locks are released.
    pub fn reap(&mut self) -> Vec<String> {
        let ended: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.vm.power_state(),
                    PowerState::ShutOff | PowerState::Crashed
                )
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in &ended {
            self.power_off(n);
        }
        ended
    }

    /// Stops every VM.
    pub fn stop_all(&mut self) {
        for n in self.names() {
            self.power_off(&n);
        }
    }
}
