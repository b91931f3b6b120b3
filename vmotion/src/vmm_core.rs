//! vmm-core's VMs as the two ends of a migration (feature `vmm-core`): [`LocalVm`] lends a
//! running [`Vm`] to [`crate::migrate`], [`ArrivingVm`] builds one for [`crate::receive`]
//! ahead of the switchover (memory, KVM VM and vCPUs made before the state arrives, so the
//! switchover only applies the state).

use std::sync::Arc;

use vinfra_vmm_core::memory::GuestMemoryMmap;
use vinfra_vmm_core::{kvm, state, CpuidRegister as VmmRegister, Vm, VmConfig};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::layout::PageSet;
use crate::vm::{DiskHandover, IncomingVm, MigratableVm, VmError, VmOp};
use crate::wire::{CpuidLeaf, MemoryRegion};

fn layout_of(memory: &GuestMemoryMmap) -> Vec<MemoryRegion> {
    memory
        .iter()
        .map(|r| MemoryRegion {
            base: r.start_addr().0,
            bytes: r.len(),
        })
        .collect()
}

fn leaves(from: Vec<vinfra_vmm_core::CpuidLeaf>) -> Vec<CpuidLeaf> {
    from.into_iter()
        .map(|l| CpuidLeaf {
            function: l.function,
            index: l.index,
            eax: l.register(VmmRegister::Eax),
            ebx: l.register(VmmRegister::Ebx),
            ecx: l.register(VmmRegister::Ecx),
            edx: l.register(VmmRegister::Edx),
        })
        .collect()
}

fn each_disk(
    disks: &[Arc<dyn DiskHandover>],
    f: impl Fn(&dyn DiskHandover) -> Result<(), VmError>,
) -> Result<(), VmError> {
    disks.iter().try_for_each(|d| f(d.as_ref()))
}

/// A running vmm-core VM lent to [`crate::migrate`], with the disks whose locks move with
/// it. After a committed migration the VM is stopped; after a failed one it runs as before.
///
/// A VM whose dirty log is already on when it is lent (its owner turned it on early, see
/// [`LocalVm::new`]) keeps it on afterwards: the migration starts by fetching and clearing
/// the log instead of turning it on, and a failed migration leaves it on.
pub struct LocalVm<'a> {
    vm: &'a mut Vm,
    disks: Vec<Arc<dyn DiskHandover>>,
    /// The log was on before the migration began: don't switch it, only fetch and clear.
    log_kept_on: bool,
}

impl std::fmt::Debug for LocalVm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalVm")
            .field("vm", &self.vm)
            .field("disks", &self.disks.len())
            .field("log_kept_on", &self.log_kept_on)
            .finish()
    }
}

impl<'a> LocalVm<'a> {
    /// `vm`, with no disk lock to hand over.
    ///
    /// Turning the dirty log on changes every memory slot's flags, and on a nested,
    /// shadow-paged KVM the guest then stalls for several milliseconds while its mappings
    /// are rebuilt: on an idle VM, the longest pause the guest sees during the migration.
    /// A host that expects to migrate a VM may turn the log on when it starts the VM
    /// ([`Vm::enable_dirty_log`]) so that the stall happens then; a migration then only
    /// fetches and clears it.
    pub fn new(vm: &'a mut Vm) -> Self {
        let log_kept_on = vm.dirty_log_enabled();
        Self {
            vm,
            disks: Vec::new(),
            log_kept_on,
        }
    }

    /// The disks whose exclusive locks go to the destination at the switchover.
    #[must_use]
    pub fn with_disks(mut self, disks: Vec<Arc<dyn DiskHandover>>) -> Self {
        self.disks = disks;
        self
    }
}

impl MigratableVm for LocalVm<'_> {
    type Memory = GuestMemoryMmap;

    fn memory(&self) -> &GuestMemoryMmap {
        self.vm.memory()
    }

    fn memory_layout(&self) -> Vec<MemoryRegion> {
        layout_of(self.vm.memory())
    }

    fn guest_cpuid(&self) -> Result<Vec<CpuidLeaf>, VmError> {
        self.vm
            .guest_cpuid()
            .map(leaves)
            .map_err(|e| VmError::failed(VmOp::CaptureState, e))
    }

    fn disk_locks(&self) -> u16 {
        u16::try_from(self.disks.len()).unwrap_or(u16::MAX)
    }

    fn enable_dirty_log(&mut self) -> Result<(), VmError> {
        if self.log_kept_on {
            // The first round sends every page anyway: what was logged so far is not
            // needed, only a clean log from now on.
            return self
                .vm
                .fetch_and_clear_dirty()
                .map(drop)
                .map_err(|e| VmError::failed(VmOp::EnableDirtyLog, e));
        }
        self.vm
            .enable_dirty_log()
            .map_err(|e| VmError::failed(VmOp::EnableDirtyLog, e))
    }

    fn fetch_and_clear_dirty(&mut self, into: &mut PageSet) -> Result<(), VmError> {
        let dirty = self
            .vm
            .fetch_and_clear_dirty()
            .map_err(|e| VmError::failed(VmOp::FetchDirty, e))?;
        // One slot per memory region, in guest-physical order: the layout's order.
        for (region, slot) in dirty.slots.iter().enumerate() {
            into.merge_region_bits(region, &slot.bits);
        }
        Ok(())
    }

    fn disable_dirty_log(&mut self) -> Result<(), VmError> {
        if self.log_kept_on {
            return Ok(());
        }
        self.vm
            .disable_dirty_log()
            .map_err(|e| VmError::failed(VmOp::DisableDirtyLog, e))
    }

    fn throttle(&mut self, percent: u8) -> Result<(), VmError> {
        self.vm
            .set_throttle(percent)
            .map_err(|e| VmError::failed(VmOp::Throttle, e))
    }

    fn pause(&mut self) -> Result<(), VmError> {
        self.vm.pause().map_err(|e| VmError::failed(VmOp::Pause, e))
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.vm
            .resume()
            .map_err(|e| VmError::failed(VmOp::Resume, e))
    }

    fn capture_state(&mut self) -> Result<Vec<u8>, VmError> {
        let saved = self
            .vm
            .capture_state()
            .map_err(|e| VmError::failed(VmOp::CaptureState, e))?;
        state::encode(&saved).map_err(|e| VmError::failed(VmOp::CaptureState, e))
    }

    fn release_disks(&mut self) -> Result<(), VmError> {
        each_disk(&self.disks, |d| d.release())
    }

    fn reacquire_disks(&mut self) -> Result<(), VmError> {
        each_disk(&self.disks, |d| d.acquire())
    }

    fn discard(&mut self) -> Result<(), VmError> {
        self.vm
            .stop()
            .map(drop)
            .map_err(|e| VmError::failed(VmOp::Discard, e))
    }
}

/// A vmm-core VM being received: made from the same configuration as the source's (the
/// memory layout must match), filled by [`crate::receive`], restored at the switchover.
pub struct ArrivingVm {
    incoming: Option<vinfra_vmm_core::IncomingVm>,
    /// The incoming VM's memory (a clone shares the mapping).
    memory: GuestMemoryMmap,
    hidden: Vec<vinfra_vmm_core::CpuidMask>,
    vm: Option<Vm>,
    disks: Vec<Arc<dyn DiskHandover>>,
}

impl std::fmt::Debug for ArrivingVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrivingVm")
            .field("restored", &self.vm.is_some())
            .field("disks", &self.disks.len())
            .finish_non_exhaustive()
    }
}

impl ArrivingVm {
    /// Makes the VM for `config` (memory, KVM VM, vCPUs), not running. The CPUID masks in
    /// `config` say what this host offers a guest (EVC-like).
    pub fn new(config: VmConfig) -> Result<Self, vinfra_vmm_core::Error> {
        let hidden = config.cpuid_hidden.clone();
        let incoming = Vm::incoming(config)?;
        Ok(Self {
            memory: incoming.memory().clone(),
            incoming: Some(incoming),
            hidden,
            vm: None,
            disks: Vec::new(),
        })
    }

    /// The disks whose locks this side takes at the switchover (their backends are in the
    /// configuration, detached until then).
    #[must_use]
    pub fn with_disks(mut self, disks: Vec<Arc<dyn DiskHandover>>) -> Self {
        self.disks = disks;
        self
    }

    /// The VM, once restored (running after a successful [`crate::receive`]).
    pub fn into_vm(self) -> Option<Vm> {
        self.vm
    }

    /// The VM, once restored.
    pub fn vm(&self) -> Option<&Vm> {
        self.vm.as_ref()
    }
}

impl IncomingVm for ArrivingVm {
    type Memory = GuestMemoryMmap;

    fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn memory_layout(&self) -> Vec<MemoryRegion> {
        layout_of(&self.memory)
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidLeaf>, VmError> {
        kvm::host_cpuid(&self.hidden)
            .map(leaves)
            .map_err(|e| VmError::failed(VmOp::Restore, e))
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), VmError> {
        let saved = state::decode(blob).map_err(|e| VmError::failed(VmOp::Restore, e))?;
        let incoming = self
            .incoming
            .take()
            .ok_or(VmError::failed(VmOp::Restore, "already restored"))?;
        let vm = incoming
            .restore(saved)
            .map_err(|e| VmError::failed(VmOp::Restore, e))?;
        self.vm = Some(vm);
        Ok(())
    }

    fn acquire_disks(&mut self) -> Result<(), VmError> {
        each_disk(&self.disks, |d| d.acquire())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.vm
            .as_mut()
            .ok_or(VmError::failed(VmOp::Resume, "not restored"))?
            .resume()
            .map_err(|e| VmError::failed(VmOp::Resume, e))
    }

    fn discard(&mut self) -> Result<(), VmError> {
        if let Some(mut vm) = self.vm.take() {
            let _ = vm.stop();
        }
        self.incoming = None;
        each_disk(&self.disks, |d| d.release())
    }
}
