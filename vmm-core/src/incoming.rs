//! A VM built before its state arrives: the destination side of live migration.
//!
//! Restoring a VM has an expensive part that needs nothing from the saved VM (guest
//! memory, the KVM VM with its memory slots, IRQ chip, PIT and vCPUs with their CPUID)
//! and a cheap part that does (VM-wide and vCPU state, devices, vCPU threads). The
//! migration destination does the first with [`IncomingVm::new`] as soon as it knows the
//! configuration, writes the pages it receives into [`IncomingVm::memory`] while the
//! source still runs, and does only the second, [`IncomingVm::restore`], during the
//! switchover, when the guest is stopped on both hosts.
//!
//! ```no_run
//! use vinfra_vmm_core::{IncomingVm, Vm, VmConfig};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (config, state) = (VmConfig::new("guest.elf"), None.unwrap());
//! let incoming = IncomingVm::new(config)?;        // before the migration starts
//! // ... for every page received (`gpa`, `bytes`):
//! # let (gpa, bytes) = (0u64, [0u8; 4096]);
//! incoming.memory().write_slice(&bytes, GuestAddress(gpa))?;
//! // ... at the switchover, with the source's `Vm::capture_state()`:
//! let mut vm: Vm = incoming.restore(state)?;      // paused, vCPU threads started
//! vm.resume()?;
//! # Ok(())
//! # }
//! ```

use vm_memory::GuestAddress;

use crate::config::{ValidConfig, VmConfig};
use crate::cpuid::{self, CpuidLeaf};
use crate::error::{Error, Result, SnapshotMismatch};
use crate::memory::{self, GuestMemoryMmap};
use crate::state::{self, MemoryLayout, MemoryRegionSpec, VmState};
use crate::vcpu;
use crate::vm::Vm;
use crate::wiring::{build_devices, create_base, Base};

/// A VM waiting for its state: guest memory and the KVM objects, no devices, no
/// threads. See the [module documentation](self).
///
/// Its memory slots are registered without dirty logging, so a guest restored into it
/// runs without write-protection faults until someone calls [`Vm::enable_dirty_log`].
pub struct IncomingVm {
    config: ValidConfig,
    base: Base,
    memory: GuestMemoryMmap,
}

impl std::fmt::Debug for IncomingVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingVm")
            .field("config", &self.config)
            .field("memory", &MemoryLayout::of(&self.memory))
            .finish_non_exhaustive()
    }
}

impl IncomingVm {
    /// Validates `config`, allocates zeroed guest memory for its layout, and creates the
    /// KVM VM (TSS, IRQ chip, PIT, memory slots) and its vCPUs with their CPUID: all of
    /// a restore that does not need the saved state.
    pub fn new(config: VmConfig) -> Result<IncomingVm> {
        let config = config.validate()?;
        let memory = memory::create(config.memory_bytes)?;
        IncomingVm::with_memory(config, memory)
    }

    /// Like [`IncomingVm::new`] with guest memory from elsewhere (a snapshot's memory
    /// file), which must have the configuration's layout.
    pub(crate) fn with_memory(config: ValidConfig, memory: GuestMemoryMmap) -> Result<IncomingVm> {
        vcpu::install_kick_handler().map_err(Error::io("install vcpu kick signal handler"))?;
        if MemoryLayout::of(&memory) != layout_of(&config) {
            return Err(SnapshotMismatch::MemoryLayout.into());
        }
        let base = create_base(&config, &memory)?;
        if config.page_sharing {
            memory::set_mergeable(&memory)?;
        }
        Ok(IncomingVm {
            config,
            base,
            memory,
        })
    }

    /// Guest memory, for the received pages (nothing runs yet; clones share the
    /// mapping).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The validated configuration.
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// Applies `saved` (from [`Vm::capture_state`] on the source) and returns the VM
    /// paused, its vCPU threads started: call [`Vm::resume`]. The saved vCPU count and
    /// memory layout must be the configuration's, and the saved guest must not have
    /// been shown CPUID bits the configuration hides ([`Error::SnapshotMismatch`]).
    pub fn restore(self, saved: VmState) -> Result<Vm> {
        let IncomingVm {
            config,
            base,
            memory,
        } = self;
        check_saved(&config, &saved)?;
        state::restore_vm(&base.vm_fd, &saved.vm).map_err(Error::state("restore vm"))?;
        for (fd, st) in base.vcpus.iter().zip(&saved.vcpus) {
            state::restore_vcpu(fd, st).map_err(Error::state("restore vcpu"))?;
        }
        let dev = build_devices(&config, &base, &memory, Some(&saved.devices))?;
        let mut vm = Vm::assemble(config, base, memory, dev, None)?;
        vm.spawn_vcpus(true)?;
        vm.wait_parked()?;
        vm.connect_serial_input()?;
        Ok(vm)
    }
}

impl Vm {
    /// [`IncomingVm::new`]: a VM for `config` waiting for its state.
    pub fn incoming(config: VmConfig) -> Result<IncomingVm> {
        IncomingVm::new(config)
    }
}

/// The memory layout of `config`.
fn layout_of(config: &ValidConfig) -> MemoryLayout {
    MemoryLayout {
        regions: memory::ram_ranges(config.memory_bytes)
            .into_iter()
            .map(|(GuestAddress(guest_addr), size)| MemoryRegionSpec { guest_addr, size })
            .collect(),
    }
}

/// The saved vCPU count and memory layout must be those of `config`, and the saved
/// guest must not have been shown CPUID bits that `config` hides.
pub(crate) fn check_saved(config: &ValidConfig, saved: &VmState) -> Result<()> {
    if saved.vcpus.len() != config.vcpus as usize {
        return Err(SnapshotMismatch::Vcpus {
            saved: saved.vcpus.len(),
            configured: config.vcpus,
        }
        .into());
    }
    if saved.memory != layout_of(config) {
        return Err(SnapshotMismatch::MemorySize {
            saved: saved.memory.clone(),
            mib: config.memory_bytes >> 20,
        }
        .into());
    }
    for v in &saved.vcpus {
        let leaves: Vec<CpuidLeaf> = v.cpuid.iter().map(CpuidLeaf::from_kvm).collect();
        if let Some(mask) = cpuid::still_shown(&leaves, &config.cpuid_hidden) {
            return Err(SnapshotMismatch::CpuidHidden { mask }.into());
        }
    }
    Ok(())
}
