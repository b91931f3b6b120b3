//! Snapshot and restore: a paused VM to a directory of two files and back, possibly in
//! another process.
//!
//! The directory holds `vm.state` (vCPUs, VM-wide KVM state, device blobs: the envelope
//! of [`crate::state`], see `STATE-FORMAT.md`) and `vm.mem` (guest RAM, sparse). The VM
//! configuration is not saved: restore takes the same [`VmConfig`] (the kernel is not
//! loaded again; disks are reopened by path and must hold what the guest wrote).
//! The state module writes each file under a temporary name and renames it, so a crash
//! mid-snapshot leaves the previous file whole, and a VM restored from a directory can
//! snapshot into the same directory (its RAM stays mapped from the old `vm.mem` inode).

use std::path::Path;

use crate::config::VmConfig;
use crate::devices::serial::SerialSnapshot;
use crate::error::{Error, Result};
use crate::incoming::{check_saved, IncomingVm};
use crate::memory::GuestMemoryMmap;
use crate::power::PowerState;
use crate::state::{self, DeviceBlob, MemoryLayout, MemorySaveStats, VmState};
use crate::vm::Vm;
use crate::wiring::{SERIAL_ID, SERIAL_KIND, VIRTIO_BLK_KIND, VIRTIO_NET_KIND};

/// Name of the state blob inside a snapshot directory.
pub const STATE_FILE: &str = "vm.state";
/// Name of the memory file inside a snapshot directory.
pub const MEMORY_FILE: &str = "vm.mem";

/// What [`Vm::snapshot`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotStats {
    /// Size of `vm.state`.
    pub state_bytes: u64,
    /// What the memory file holds.
    pub memory: MemorySaveStats,
}

impl Vm {
    /// Saves a paused VM into `dir` (created if missing). The VM stays paused.
    pub fn snapshot(&self, dir: &Path) -> Result<SnapshotStats> {
        let saved = self.capture_state()?;
        std::fs::create_dir_all(dir).map_err(|source| Error::File {
            what: "snapshot directory",
            path: dir.to_owned(),
            source,
        })?;
        let state_bytes = state::save_state(&saved, &dir.join(STATE_FILE))
            .map_err(Error::state("save vm state"))?;
        let memory = state::save_memory(self.memory(), &dir.join(MEMORY_FILE))
            .map_err(Error::state("save memory"))?;
        tracing::info!(dir = %dir.display(), state_bytes, "vm snapshot written");
        Ok(SnapshotStats {
            state_bytes,
            memory,
        })
    }

    /// Everything but guest RAM of a paused VM, in memory (for live migration, which
    /// sends RAM itself): vCPUs, VM-wide KVM state, device blobs, memory layout.
    pub fn capture_state(&self) -> Result<VmState> {
        let power = self.power_state();
        if power != PowerState::Paused {
            return Err(Error::InvalidState {
                op: "capture the state of",
                state: power,
            });
        }
        let parts = self.parts();
        let mut vcpus = Vec::with_capacity(parts.vcpus.len());
        for fd in parts.vcpus {
            let fd = fd.lock().unwrap_or_else(|e| e.into_inner());
            vcpus.push(state::capture_vcpu(self.kvm(), &fd).map_err(Error::state("capture vcpu"))?);
        }
        let vm = state::capture_vm(self.vm_fd()).map_err(Error::state("capture vm"))?;
        let serial: SerialSnapshot = parts
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
            .into();
        let mut devices = vec![DeviceBlob::new(SERIAL_KIND, SERIAL_ID, &serial)
            .map_err(Error::state("encode serial"))?];
        for d in parts.disks {
            let st = d.lock().unwrap_or_else(|e| e.into_inner()).state();
            devices.push(
                DeviceBlob::new(VIRTIO_BLK_KIND, &st.config.id, &st)
                    .map_err(Error::state("encode disk"))?,
            );
        }
        for n in parts.nets {
            let st = n.lock().unwrap_or_else(|e| e.into_inner()).state();
            devices.push(
                DeviceBlob::new(VIRTIO_NET_KIND, &st.config.id, &st)
                    .map_err(Error::state("encode nic"))?,
            );
        }
        Ok(VmState {
            vcpus,
            vm,
            devices,
            memory: MemoryLayout::of(self.memory()),
        })
    }

    /// Creates a VM from a snapshot in `dir`, with the configuration it was created
    /// with. The VM comes back paused, its vCPU threads started: call [`Vm::resume`].
    pub fn restore(config: VmConfig, dir: &Path) -> Result<Vm> {
        let config = config.validate()?;
        let saved =
            state::load_state(&dir.join(STATE_FILE)).map_err(Error::state("load vm state"))?;
        check_saved(&config, &saved)?;
        let mem =
            state::load_memory(&dir.join(MEMORY_FILE)).map_err(Error::state("load memory"))?;
        let vm = IncomingVm::with_memory(config, mem)?.restore(saved)?;
        tracing::info!(dir = %dir.display(), "vm restored (paused)");
        Ok(vm)
    }

    /// Creates a VM, paused, from a captured state and guest memory that holds the
    /// saved RAM (e.g. received by live migration). See [`Vm::capture_state`].
    ///
    /// This creates the KVM VM and its vCPUs too; a migration destination that wants
    /// them made before the state arrives uses [`IncomingVm`] (what this calls).
    pub fn restore_from_state(
        config: VmConfig,
        saved: VmState,
        memory: GuestMemoryMmap,
    ) -> Result<Vm> {
        let config = config.validate()?;
        // Checked before KVM is touched (restore checks again, cheaply).
        check_saved(&config, &saved)?;
        IncomingVm::with_memory(config, memory)?.restore(saved)
    }
}
