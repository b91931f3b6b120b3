//! The device's one virtqueue: the driver's raw setup registers and the live
//! virtio-queue `Queue` built from them once the driver sets QueueReady.
//!
//! The driver's values are kept raw until QueueReady because virtio-queue's
//! setters silently ignore invalid values; validating them all at once lets
//! the transport refuse the queue (and report why) instead of running a queue
//! the driver did not describe.

use std::sync::atomic::Ordering;

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::state::VirtioQueueState;
use super::{VirtioError, QUEUE_SIZE_MAX};

/// Guest memory as the devices see it.
pub(crate) type GuestMem = GuestMemoryMmap<AtomicBitmap>;

/// One virtqueue: setup registers plus the running queue.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    /// The running queue; `ready()` is false until the driver's setup passed
    /// validation.
    pub(crate) queue: Queue,
    /// QueueNum as the driver wrote it.
    pub(crate) num: u16,
    /// Descriptor table address as written (QueueDescLow/High).
    pub(crate) desc: u64,
    /// Driver (available) ring address as written.
    pub(crate) avail: u64,
    /// Device (used) ring address as written.
    pub(crate) used: u64,
}

impl QueueSlot {
    pub(crate) fn new() -> Result<QueueSlot, VirtioError> {
        let queue = Queue::new(QUEUE_SIZE_MAX).map_err(|source| VirtioError::Queue { source })?;
        Ok(QueueSlot {
            queue,
            num: QUEUE_SIZE_MAX,
            desc: 0,
            avail: 0,
            used: 0,
        })
    }

    /// Back to the state after device reset.
    pub(crate) fn reset(&mut self) {
        self.queue.reset();
        self.num = QUEUE_SIZE_MAX;
        self.desc = 0;
        self.avail = 0;
        self.used = 0;
    }

    /// Validates the driver's setup against guest memory and starts the queue.
    ///
    /// On error the queue stays not ready and the reason is returned.
    pub(crate) fn activate(&mut self, mem: &GuestMem, event_idx: bool) -> Result<(), String> {
        let queue = build_queue(
            QueueState {
                max_size: QUEUE_SIZE_MAX,
                next_avail: 0,
                next_used: 0,
                event_idx_enabled: event_idx,
                size: self.num,
                ready: true,
                desc_table: self.desc,
                avail_ring: self.avail,
                used_ring: self.used,
            },
            mem,
        )?;
        self.queue = queue;
        Ok(())
    }

    /// The state to save.
    pub(crate) fn state(&self) -> VirtioQueueState {
        VirtioQueueState {
            size: self.num,
            ready: self.queue.ready(),
            desc_table: self.desc,
            avail_ring: self.avail,
            used_ring: self.used,
            next_avail: self.queue.next_avail(),
            next_used: self.queue.next_used(),
            event_idx: self.queue.event_idx_enabled(),
        }
    }

    /// Rebuilds a slot from saved state, checking a ready queue against `mem`.
    pub(crate) fn from_state(
        state: &VirtioQueueState,
        mem: &GuestMem,
    ) -> Result<QueueSlot, VirtioError> {
        let mut slot = QueueSlot::new()?;
        slot.num = state.size;
        slot.desc = state.desc_table;
        slot.avail = state.avail_ring;
        slot.used = state.used_ring;
        if state.ready {
            slot.queue = build_queue(
                QueueState {
                    max_size: QUEUE_SIZE_MAX,
                    next_avail: state.next_avail,
                    next_used: state.next_used,
                    event_idx_enabled: state.event_idx,
                    size: state.size,
                    ready: true,
                    desc_table: state.desc_table,
                    avail_ring: state.avail_ring,
                    used_ring: state.used_ring,
                },
                mem,
            )
            .map_err(|reason| VirtioError::InvalidState { reason })?;
        }
        Ok(slot)
    }
}

/// Whether the driver wants an interrupt for the used entries just added to `queue`.
///
/// With `VIRTIO_RING_F_EVENT_IDX` virtio-queue decides from `used_event`. Without it
/// the driver says so in the available ring's flags: `VIRTQ_AVAIL_F_NO_INTERRUPT`
/// (virtio 1.2, 2.7.7), which virtio-queue 0.18 does not read ("not supported yet": its
/// `needs_notification` then always answers yes), so it is read here. Polling drivers
/// set it; honouring it saves an irqfd write per notify, and behind it a kworker
/// wake-up and a vCPU kick for an interrupt the guest will not take. A flags word that
/// cannot be read counts as "wants one": a lost interrupt can hang a driver, a spurious
/// one cannot.
pub(crate) fn wants_interrupt(queue: &mut Queue, mem: &GuestMem) -> bool {
    // Also the fence between the used-ring writes and the read of the driver's flags
    // (virtio-queue puts a SeqCst fence first), and the reset of its EVENT_IDX count.
    let needs = queue.needs_notification(mem).unwrap_or(true);
    if queue.event_idx_enabled() || !needs {
        return needs;
    }
    let flags: Result<u16, _> = mem.load(GuestAddress(queue.avail_ring()), Ordering::Acquire);
    flags.map_or(true, |f| {
        u32::from(u16::from_le(f)) & VRING_AVAIL_F_NO_INTERRUPT == 0
    })
}

/// Builds a ready queue from `state`, refusing sizes, alignments and ring
/// placements that virtio-queue or guest memory would not accept.
fn build_queue(state: QueueState, mem: &GuestMem) -> Result<Queue, String> {
    let size = state.size;
    let queue = Queue::try_from(state).map_err(|e| format!("queue size {size}: {e}"))?;
    // virtio-queue treats an available ring at address 0 as "not configured"
    // and would refuse every later access; refuse it here, visibly.
    if state.avail_ring == 0 {
        return Err("available ring at guest address 0".to_string());
    }
    if !queue.is_valid(mem) {
        return Err(format!(
            "rings outside guest memory (desc {:#x}, avail {:#x}, used {:#x}, size {size})",
            state.desc_table, state.avail_ring, state.used_ring
        ));
    }
    Ok(queue)
}
