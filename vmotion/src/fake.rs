//! Fakes for tests (feature `test-utils`): a source VM whose guest is a script of memory
//! writes, a destination VM, and a disk lock both sides contend for, so that property
//! tests can check "never twice" and "the destination gets every page" over thousands of
//! schedules without KVM.

use std::sync::{Arc, Mutex, PoisonError};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::Side;
use crate::vm::{IncomingVm, MigratableVm, VmError, VmOp};
use crate::wire::{CpuidLeaf, MemoryRegion, PAGE_SIZE};
use crate::{Layout, PageSet};

/// The exclusive lock on a VM's disks, shared by the fake source and destination: the
/// one who holds it may run the VM.
#[derive(Debug, Clone, Default)]
pub struct FakeDiskLock(Arc<Mutex<Option<Side>>>);

impl FakeDiskLock {
    /// A lock held by the source (the VM runs there).
    #[must_use]
    pub fn held_by_source() -> Self {
        Self(Arc::new(Mutex::new(Some(Side::Source))))
    }

    /// Who holds it.
    #[must_use]
    pub fn holder(&self) -> Option<Side> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, side: Side, op: VmOp) -> Result<(), VmError> {
        let mut holder = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match *holder {
            Some(h) if h != side => Err(VmError::lock_refused(op, format!("held by the {h}"))),
            _ => {
                *holder = Some(side);
                Ok(())
            }
        }
    }

    fn release(&self, side: Side) {
        let mut holder = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *holder == Some(side) {
            *holder = None;
        }
    }
}

/// Failure injection and the log of the operations asked for, as both fakes keep them.
#[derive(Debug, Default)]
pub struct Ops {
    /// Fail this operation when it is next asked for.
    pub fail_next: Option<VmOp>,
    /// Every operation asked for, in order.
    pub log: Vec<VmOp>,
}

impl Ops {
    fn step(&mut self, op: VmOp) -> Result<(), VmError> {
        self.log.push(op);
        if self.fail_next == Some(op) {
            self.fail_next = None;
            return Err(VmError::failed(op, "injected failure"));
        }
        Ok(())
    }
}

/// Fresh anonymous guest memory for `layout` (zeroed).
///
/// # Panics
/// If the layout cannot be mapped (tests only).
#[must_use]
pub fn guest_memory(layout: &[MemoryRegion]) -> GuestMemoryMmap {
    let ranges: Vec<(GuestAddress, usize)> = layout
        .iter()
        .map(|r| (GuestAddress(r.base), usize::try_from(r.bytes).unwrap_or(0)))
        .collect();
    #[allow(
        clippy::expect_used,
        reason = "test support: a layout that cannot be mapped is a bug in the test"
    )]
    GuestMemoryMmap::from_ranges(&ranges).expect("map fake guest memory")
}

/// A source VM: memory, a dirty log, and a "guest" that is whoever calls
/// [`FakeVm::guest_write`] (only while running).
#[derive(Debug)]
pub struct FakeVm {
    memory: GuestMemoryMmap,
    layout: Layout,
    cpuid: Vec<CpuidLeaf>,
    dirty: Option<PageSet>,
    /// Whether the vCPUs run.
    pub running: bool,
    /// The throttle in force.
    pub throttle: u8,
    /// Whether it was discarded (the destination has it).
    pub discarded: bool,
    /// The disk lock, if the VM has disks.
    pub disks: Option<FakeDiskLock>,
    /// The vCPU state: counts guest writes.
    pub writes: u64,
    /// Failure injection and the operations asked for.
    pub ops: Ops,
}

impl FakeVm {
    /// A running VM with `layout`, showing `cpuid`.
    ///
    /// # Panics
    /// If the layout is invalid (tests only).
    #[must_use]
    pub fn new(layout: Vec<MemoryRegion>, cpuid: Vec<CpuidLeaf>) -> Self {
        #[allow(clippy::expect_used, reason = "test support")]
        let checked = Layout::new(layout.clone()).expect("valid fake layout");
        Self {
            memory: guest_memory(&layout),
            layout: checked,
            cpuid,
            dirty: None,
            running: true,
            throttle: 0,
            discarded: false,
            disks: None,
            writes: 0,
            ops: Ops::default(),
        }
    }

    /// The guest writes `value` at the start of page `page` of region `region` (and
    /// nothing happens when the VM is not running). Returns whether it wrote.
    pub fn guest_write(&mut self, region: usize, page: u64, value: u64) -> bool {
        if !self.running || page >= self.layout.region_pages(region) {
            return false;
        }
        let gpa = self.layout.pfn(region, page) * PAGE_SIZE as u64;
        let offset = (value % 512) * 8;
        if self
            .memory
            .write_slice(&value.to_le_bytes(), GuestAddress(gpa + offset))
            .is_err()
        {
            return false;
        }
        if let Some(d) = &mut self.dirty {
            d.insert(region, page);
        }
        self.writes += 1;
        true
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// All of guest memory, region after region.
    #[must_use]
    pub fn memory_bytes(&self) -> Vec<u8> {
        memory_bytes(&self.memory, self.layout.regions())
    }

    fn step(&mut self, op: VmOp) -> Result<(), VmError> {
        self.ops.step(op)
    }
}

/// All of `memory` over `regions`, in order.
#[must_use]
pub fn memory_bytes(memory: &GuestMemoryMmap, regions: &[MemoryRegion]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in regions {
        let mut buf = vec![0u8; usize::try_from(r.bytes).unwrap_or(0)];
        let _ = memory.read_slice(&mut buf, GuestAddress(r.base));
        out.extend_from_slice(&buf);
    }
    out
}

impl MigratableVm for FakeVm {
    type Memory = GuestMemoryMmap;

    fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn memory_layout(&self) -> Vec<MemoryRegion> {
        self.layout.regions().to_vec()
    }

    fn guest_cpuid(&self) -> Result<Vec<CpuidLeaf>, VmError> {
        Ok(self.cpuid.clone())
    }

    fn disk_locks(&self) -> u16 {
        u16::from(self.disks.is_some())
    }

    fn enable_dirty_log(&mut self) -> Result<(), VmError> {
        self.step(VmOp::EnableDirtyLog)?;
        self.dirty = Some(PageSet::empty(&self.layout));
        Ok(())
    }

    fn fetch_and_clear_dirty(&mut self, into: &mut PageSet) -> Result<(), VmError> {
        self.step(VmOp::FetchDirty)?;
        let dirty = self
            .dirty
            .as_mut()
            .ok_or(VmError::failed(VmOp::FetchDirty, "dirty log off"))?;
        into.union_with(dirty);
        dirty.clear();
        Ok(())
    }

    fn disable_dirty_log(&mut self) -> Result<(), VmError> {
        self.step(VmOp::DisableDirtyLog)?;
        self.dirty = None;
        Ok(())
    }

    fn throttle(&mut self, percent: u8) -> Result<(), VmError> {
        self.step(VmOp::Throttle)?;
        self.throttle = percent;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), VmError> {
        self.step(VmOp::Pause)?;
        self.running = false;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.step(VmOp::Resume)?;
        if let Some(lock) = &self.disks {
            if lock.holder() != Some(Side::Source) {
                return Err(VmError::failed(VmOp::Resume, "resumed without its disks"));
            }
        }
        self.running = true;
        Ok(())
    }

    fn capture_state(&mut self) -> Result<Vec<u8>, VmError> {
        self.step(VmOp::CaptureState)?;
        if self.running {
            return Err(VmError::failed(VmOp::CaptureState, "not paused"));
        }
        Ok(self.writes.to_le_bytes().to_vec())
    }

    fn release_disks(&mut self) -> Result<(), VmError> {
        self.step(VmOp::ReleaseDisks)?;
        if let Some(lock) = &self.disks {
            lock.release(Side::Source);
        }
        Ok(())
    }

    fn reacquire_disks(&mut self) -> Result<(), VmError> {
        self.step(VmOp::AcquireDisks)?;
        match &self.disks {
            Some(lock) => lock.take(Side::Source, VmOp::AcquireDisks),
            None => Ok(()),
        }
    }

    fn discard(&mut self) -> Result<(), VmError> {
        self.step(VmOp::Discard)?;
        self.running = false;
        self.discarded = true;
        Ok(())
    }
}

/// A destination VM: zeroed memory, the state it was restored from, whether it runs.
#[derive(Debug)]
pub struct FakeIncoming {
    memory: GuestMemoryMmap,
    layout: Vec<MemoryRegion>,
    supported: Vec<CpuidLeaf>,
    /// The state blob it was restored from.
    pub restored: Option<Vec<u8>>,
    /// Whether it runs.
    pub running: bool,
    /// Whether it was discarded.
    pub discarded: bool,
    /// The disk lock, if the VM has disks.
    pub disks: Option<FakeDiskLock>,
    /// Failure injection and the operations asked for.
    pub ops: Ops,
}

impl FakeIncoming {
    /// An empty VM with `layout`, on a host that can show `supported`.
    #[must_use]
    pub fn new(layout: Vec<MemoryRegion>, supported: Vec<CpuidLeaf>) -> Self {
        Self {
            memory: guest_memory(&layout),
            layout,
            supported,
            restored: None,
            running: false,
            discarded: false,
            disks: None,
            ops: Ops::default(),
        }
    }

    /// All of guest memory, region after region.
    #[must_use]
    pub fn memory_bytes(&self) -> Vec<u8> {
        memory_bytes(&self.memory, &self.layout)
    }

    fn step(&mut self, op: VmOp) -> Result<(), VmError> {
        self.ops.step(op)
    }
}

impl IncomingVm for FakeIncoming {
    type Memory = GuestMemoryMmap;

    fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn memory_layout(&self) -> Vec<MemoryRegion> {
        self.layout.clone()
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidLeaf>, VmError> {
        Ok(self.supported.clone())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), VmError> {
        self.step(VmOp::Restore)?;
        self.restored = Some(state.to_vec());
        Ok(())
    }

    fn acquire_disks(&mut self) -> Result<(), VmError> {
        self.step(VmOp::AcquireDisks)?;
        match &self.disks {
            Some(lock) => lock.take(Side::Destination, VmOp::AcquireDisks),
            None => Ok(()),
        }
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.step(VmOp::Resume)?;
        if self.restored.is_none() {
            return Err(VmError::failed(VmOp::Resume, "nothing restored"));
        }
        if let Some(lock) = &self.disks {
            if lock.holder() != Some(Side::Destination) {
                return Err(VmError::failed(VmOp::Resume, "resumed without its disks"));
            }
        }
        self.running = true;
        Ok(())
    }

    fn discard(&mut self) -> Result<(), VmError> {
        self.step(VmOp::Discard)?;
        self.running = false;
        self.discarded = true;
        if let Some(lock) = &self.disks {
            lock.release(Side::Destination);
        }
        Ok(())
    }
}
