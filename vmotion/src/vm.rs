//! What the crate needs from a VM: [`MigratableVm`] on the source, [`IncomingVm`] on the
//! destination. vmm-core's `Vm` implements them behind the `vmm-core` feature; the
//! `test-utils` feature has a fake VM (memory and scripted dirtying).

use vm_memory::GuestMemoryBackend;

pub use crate::error::{VmError, VmErrorKind, VmOp};
use crate::layout::PageSet;
use crate::wire::{CpuidLeaf, MemoryRegion};

/// The source side: a running VM that can be copied while it runs.
pub trait MigratableVm {
    /// Guest memory (vm-memory).
    type Memory: GuestMemoryBackend;
    /// Guest memory; pages are read from it while the VM runs.
    fn memory(&self) -> &Self::Memory;
    /// The RAM regions, ascending (guest physical base, bytes).
    fn memory_layout(&self) -> Vec<MemoryRegion>;
    /// The CPUID leaves the guest was shown.
    fn guest_cpuid(&self) -> Result<Vec<CpuidLeaf>, VmError>;
    /// How many disks hold an exclusive lock that moves with the VM.
    fn disk_locks(&self) -> u16;
    /// Starts logging written pages (guest writes and the VMM's device writes).
    fn enable_dirty_log(&mut self) -> Result<(), VmError>;
    /// Adds the pages written since the last fetch to `into` (regions in layout order),
    /// and clears the log.
    fn fetch_and_clear_dirty(&mut self, into: &mut PageSet) -> Result<(), VmError>;
    /// Stops logging.
    fn disable_dirty_log(&mut self) -> Result<(), VmError>;
    /// Keeps the vCPUs out of the guest for `percent` % of the time (0: not at all).
    fn throttle(&mut self, percent: u8) -> Result<(), VmError>;
    /// Parks the vCPUs.
    fn pause(&mut self) -> Result<(), VmError>;
    /// Lets them run again.
    fn resume(&mut self) -> Result<(), VmError>;
    /// The vCPU and device state of the paused VM, as an opaque blob (≤ 16 MiB).
    fn capture_state(&mut self) -> Result<Vec<u8>, VmError>;
    /// Flushes the disks and releases their exclusive locks.
    fn release_disks(&mut self) -> Result<(), VmError>;
    /// Takes the released locks back.
    fn reacquire_disks(&mut self) -> Result<(), VmError>;
    /// Stops the VM for good: the destination runs it now.
    fn discard(&mut self) -> Result<(), VmError>;
}

/// The destination side: a VM being built from the stream. It never runs before `Commit`.
pub trait IncomingVm {
    /// Guest memory (vm-memory).
    type Memory: GuestMemoryBackend;
    /// Guest memory, where received pages are written; it starts zeroed.
    fn memory(&self) -> &Self::Memory;
    /// The RAM regions this VM was configured with; the source's must be the same.
    fn memory_layout(&self) -> Vec<MemoryRegion>;
    /// The CPUID leaves this host can show a guest.
    fn supported_cpuid(&self) -> Result<Vec<CpuidLeaf>, VmError>;
    /// Builds the VM, paused, from the state blob.
    fn restore(&mut self, state: &[u8]) -> Result<(), VmError>;
    /// Takes the disks' exclusive locks (released by the source).
    fn acquire_disks(&mut self) -> Result<(), VmError>;
    /// Runs the restored VM.
    fn resume(&mut self) -> Result<(), VmError>;
    /// Drops what was received and releases any disk lock taken.
    fn discard(&mut self) -> Result<(), VmError>;
}

/// A disk whose exclusive lock moves with the VM (a vmfs virtual disk in practice). The
/// source releases it at the switchover and takes it back if the migration fails; the
/// destination acquires it before it may run the VM. Implemented where the disk and the
/// VMM meet (the host package for vmfs).
pub trait DiskHandover: Send + Sync {
    /// Flushes the disk and releases its lock; I/O fails until [`DiskHandover::acquire`].
    fn release(&self) -> Result<(), VmError>;
    /// Takes the lock (back). A lock held by another live host is
    /// [`VmError::lock_refused`].
    fn acquire(&self) -> Result<(), VmError>;
}
