//! The destination's state machine, free of I/O: fed received bytes (pages go straight
//! into guest memory), VM replies and clock readings, it says which VM operation to run
//! next and which bytes to send. [`crate::receive`] drives it over a stream.
//!
//! The rule it keeps: the VM is resumed here only after `Commit`, with one exception
//! that the disk locks make safe (README, "Failure model"): when the stream dies after
//! `Ready` and this side holds the VM's exclusive disk locks, the source cannot take
//! them back and so can never resume, and this side resumes the VM.

use std::collections::VecDeque;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::error::{Error, Result, Side};
use crate::layout::{Layout, PageSet};
use crate::link::{Link, Received};
use crate::options::{whole_ms, ReceiveOptions};
use crate::vm::{VmError, VmOp};
use crate::wire::{
    CpuVerdict, CpuidLeaf, CpuidRegister, MemoryRegion, Message, MessageType, MissingFeature,
    PageRef, PagesView, Role, PAGE_SIZE,
};

/// A VM operation the destination asks its driver to run; answer with
/// [`Destination::reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationRequest {
    /// `IncomingVm::restore` with this state blob.
    Restore(Vec<u8>),
    /// `IncomingVm::acquire_disks`.
    AcquireDisks,
    /// `IncomingVm::resume`.
    Resume,
    /// `IncomingVm::discard`.
    Discard,
}

/// What the destination knows about its VM when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationVm {
    /// RAM regions of the VM configured here.
    pub layout: Vec<MemoryRegion>,
    /// The CPUID leaves this host can show a guest.
    pub supported_cpuid: Vec<CpuidLeaf>,
}

/// What the destination reports when it is done.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReceiveStats {
    /// From the first byte to the resume (ms).
    pub total_ms: u64,
    /// Bytes read from the stream.
    pub bytes_received: u64,
    /// Pages written into guest memory (zero pages included).
    pub pages_received: u64,
    /// Pre-copy rounds seen.
    pub rounds: u32,
    /// From `Handover` to the resume (ms): restore, disk locks, commit round trip.
    pub switchover_ms: f64,
    /// Whether the VM was resumed without `Commit`, on the strength of its disk locks.
    pub resumed_in_doubt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hello,
    Auth,
    Cpu,
    Layout,
    Receiving,
    /// Restoring and taking the disks (requests out).
    Restoring,
    /// `Ready` sent; waiting for `Commit`.
    Ready,
    /// Committed (or resumed in doubt): resuming.
    Resuming,
    /// Failed: discarding.
    Discarding,
    Finished,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Hello => "exchanging hellos",
            Phase::Auth => "authenticating",
            Phase::Cpu => "checking CPU features",
            Phase::Layout => "checking the memory layout",
            Phase::Receiving => "receiving memory",
            Phase::Restoring => "restoring the VM",
            Phase::Ready => "waiting for commit",
            Phase::Resuming => "resuming",
            Phase::Discarding => "discarding",
            Phase::Finished => "finished",
        }
    }
}

/// The feature registers compared for CPU compatibility: a guest shown a bit here may use
/// the feature, so the destination must be able to show it too. The same list as
/// vmm-core's `cpuid::FEATURE_REGISTERS` (this crate knows no VMM, so it keeps its own).
const FEATURE_REGISTERS: [(u32, u32, CpuidRegister); 11] = [
    (0x1, 0, CpuidRegister::Ecx),
    (0x1, 0, CpuidRegister::Edx),
    (0x7, 0, CpuidRegister::Ebx),
    (0x7, 0, CpuidRegister::Ecx),
    (0x7, 0, CpuidRegister::Edx),
    (0x7, 1, CpuidRegister::Eax),
    (0xd, 1, CpuidRegister::Eax),
    (0x8000_0001, 0, CpuidRegister::Ecx),
    (0x8000_0001, 0, CpuidRegister::Edx),
    (0x8000_0007, 0, CpuidRegister::Edx),
    (0x8000_0008, 0, CpuidRegister::Ebx),
];

fn register(leaf: &CpuidLeaf, r: CpuidRegister) -> u32 {
    match r {
        CpuidRegister::Eax => leaf.eax,
        CpuidRegister::Ebx => leaf.ebx,
        CpuidRegister::Ecx => leaf.ecx,
        CpuidRegister::Edx => leaf.edx,
    }
}

/// The feature bits the guest was shown that `supported` lacks.
#[must_use]
pub fn missing_features(guest: &[CpuidLeaf], supported: &[CpuidLeaf]) -> Vec<MissingFeature> {
    let find = |leaves: &[CpuidLeaf], f: u32, i: u32| {
        leaves
            .iter()
            .find(|l| l.function == f && l.index == i)
            .copied()
    };
    FEATURE_REGISTERS
        .iter()
        .filter_map(|&(function, index, reg)| {
            let shown = find(guest, function, index).map_or(0, |l| register(&l, reg));
            let can = find(supported, function, index).map_or(0, |l| register(&l, reg));
            let mask = shown & !can;
            (mask != 0).then_some(MissingFeature {
                function,
                index,
                register: reg,
                mask,
            })
        })
        .collect()
}

/// The destination side of one migration. See the module documentation.
#[derive(Debug)]
pub struct Destination {
    opts: ReceiveOptions,
    vm: DestinationVm,
    layout: Layout,
    link: Link,
    phase: Phase,
    requests: VecDeque<DestinationRequest>,
    in_flight: Option<DestinationRequest>,
    round: u32,
    written: PageSet,
    state: Option<Vec<u8>>,
    restored: bool,
    /// Disk locks the source said it released (`Handover`).
    disks_handed_over: u16,
    /// Whether this side took them: then the lock decides an in-doubt switchover.
    disks_held: bool,
    start_ms: f64,
    now_ms: f64,
    last_rx_ms: f64,
    handover_ms: f64,
    stats: ReceiveStats,
    error: Option<Error>,
    outcome: Option<Result<ReceiveStats>>,
}

impl Destination {
    /// Waits for a migration into `vm` (its memory must start zeroed), at `now_ms`.
    pub fn new(
        opts: ReceiveOptions,
        vm: DestinationVm,
        nonce: [u8; 32],
        now_ms: f64,
    ) -> Result<Self> {
        let layout = Layout::new(vm.layout.clone())?;
        Ok(Self {
            link: Link::new(Role::Destination, &opts.security, nonce),
            written: PageSet::empty(&layout),
            layout,
            vm,
            phase: Phase::Hello,
            requests: VecDeque::new(),
            in_flight: None,
            round: 0,
            state: None,
            restored: false,
            disks_handed_over: 0,
            disks_held: false,
            start_ms: now_ms,
            now_ms,
            last_rx_ms: now_ms,
            handover_ms: now_ms,
            stats: ReceiveStats::default(),
            error: None,
            outcome: None,
            opts,
        })
    }

    /// The result, once over: `Ok` when the VM runs here; `Err` when it does not (it was
    /// discarded, or for [`Error::InDoubt`] the outcome is unknown and it was not resumed).
    #[must_use]
    pub fn outcome(&self) -> Option<&Result<ReceiveStats>> {
        self.outcome.as_ref()
    }

    /// Takes the result.
    pub fn take_outcome(&mut self) -> Option<Result<ReceiveStats>> {
        self.outcome.take()
    }

    /// The next VM operation to run, if one is due and none is outstanding.
    pub fn poll_request(&mut self) -> Option<DestinationRequest> {
        if self.in_flight.is_some() {
            return None;
        }
        let next = self.requests.pop_front()?;
        self.in_flight = Some(next.clone());
        Some(next)
    }

    /// Bytes sent by the source; pages are written into `memory` as they arrive.
    pub fn receive<M: GuestMemoryBackend>(&mut self, bytes: &[u8], memory: &M) {
        self.link.push(bytes);
        self.take_in(bytes.len(), memory);
    }

    /// Free space to read the source's next bytes into, without a copy: read into it, then
    /// call [`Destination::received`] with the count.
    pub fn receive_buffer(&mut self, n: usize) -> &mut [u8] {
        self.link.spare(n)
    }

    /// `n` bytes were read into [`Destination::receive_buffer`]; pages among them are
    /// written into `memory`.
    pub fn received<M: GuestMemoryBackend>(&mut self, n: usize, memory: &M) {
        self.link.filled(n);
        self.take_in(n, memory);
    }

    /// `n` new bytes are in the inbox: count them and act on what they complete.
    fn take_in<M: GuestMemoryBackend>(&mut self, n: usize, memory: &M) {
        self.stats.bytes_received += n as u64;
        self.last_rx_ms = self.now_ms;
        if let Err(e) = self.process_inbox(memory) {
            self.fail(e);
        }
    }

    /// The stream failed or the source closed it.
    pub fn transport_failed(&mut self, e: Error) {
        let e = e.closed_while(self.phase.name());
        if self.phase == Phase::Ready {
            self.in_doubt();
        } else {
            self.fail(e);
        }
    }

    /// A clock reading (ms): a source silent for longer than the idle timeout is lost.
    pub fn clock(&mut self, now_ms: f64) {
        self.now_ms = self.now_ms.max(now_ms);
        let idle = self.now_ms - self.last_rx_ms >= self.opts.idle_timeout_ms as f64;
        if idle && self.in_flight.is_none() {
            match self.phase {
                Phase::Ready => self.in_doubt(),
                Phase::Resuming | Phase::Discarding | Phase::Finished => {}
                _ => self.fail(Error::Io {
                    op: "wait for the source",
                    kind: std::io::ErrorKind::TimedOut,
                    message: format!("nothing received for {} ms", self.opts.idle_timeout_ms),
                }),
            }
        }
    }

    /// When the machine next needs a clock reading even if nothing else happens.
    #[must_use]
    pub fn next_deadline(&self) -> Option<f64> {
        (self.phase != Phase::Finished)
            .then_some(self.last_rx_ms + self.opts.idle_timeout_ms as f64)
    }

    /// Appends the bytes due to be sent to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        self.link.take_tx(out);
    }

    /// A finished VM operation's result.
    pub fn reply(&mut self, result: std::result::Result<(), VmError>) {
        let Some(request) = self.in_flight.take() else {
            return;
        };
        match (request, result) {
            (DestinationRequest::AcquireDisks, Ok(())) => {
                self.disks_held = self.disks_handed_over > 0;
                if let Some(state) = self.state.take() {
                    self.requests.push_back(DestinationRequest::Restore(state));
                }
            }
            (DestinationRequest::Restore(_), Ok(())) => {
                self.restored = true;
                if self.phase == Phase::Restoring {
                    match self.queue(&Message::Ready) {
                        Ok(()) => self.phase = Phase::Ready,
                        Err(e) => self.fail(e),
                    }
                }
            }
            (DestinationRequest::Resume, Ok(())) => {
                self.stats.switchover_ms = self.now_ms - self.handover_ms;
                self.stats.total_ms = whole_ms(self.now_ms - self.start_ms);
                let done = Message::Done {
                    resumed_at_ms: whole_ms(self.now_ms),
                };
                let _ = self.queue(&done);
                self.finish(Ok(self.stats.clone()));
            }
            (DestinationRequest::Discard, _) => {
                let e = self.error.take().unwrap_or(Error::Cancelled);
                self.finish(Err(e));
            }
            (DestinationRequest::Resume, Err(e)) => {
                // Committed but it will not run: the VM is down (never twice).
                self.finish(Err(Error::Vm(e)));
            }
            (_, Err(e)) => self.fail(Error::Vm(e)),
        }
    }

    fn queue(&mut self, message: &Message) -> Result<()> {
        self.link.queue(message)
    }

    fn process_inbox<M: GuestMemoryBackend>(&mut self, memory: &M) -> Result<()> {
        while !matches!(self.phase, Phase::Finished | Phase::Discarding) {
            let (header, payload) = match self.link.next()? {
                None => return Ok(()),
                Some(Received::Opened) => {
                    self.phase = Phase::Auth;
                    continue;
                }
                Some(Received::Frame(header, payload)) => (header, payload),
            };
            if header.message_type == MessageType::Pages && self.phase == Phase::Receiving {
                let view = PagesView::parse(payload)?;
                write_pages(
                    &self.layout,
                    &mut self.written,
                    &mut self.round,
                    &mut self.stats,
                    &view,
                    memory,
                )?;
                continue;
            }
            let message = Message::decode_payload(header.message_type, payload)?;
            self.on_message(message)?;
        }
        Ok(())
    }

    fn on_message(&mut self, message: Message) -> Result<()> {
        let message = self.link.screen(message, Side::Source)?;
        match (self.phase, message) {
            (Phase::Auth, Message::Auth(_)) => {
                self.phase = Phase::Cpu;
            }
            (Phase::Cpu, Message::CpuFeatures(leaves)) => {
                let missing = missing_features(&leaves, &self.vm.supported_cpuid);
                let ok = missing.is_empty();
                self.queue(&Message::CpuVerdict(CpuVerdict {
                    ok,
                    missing: missing.clone(),
                }))?;
                if !ok {
                    return Err(Error::CpuIncompatible { missing });
                }
                self.phase = Phase::Layout;
            }
            (Phase::Layout, Message::MemoryLayout(regions)) => {
                if regions != self.vm.layout {
                    return Err(Error::LayoutMismatch {
                        source_layout: regions,
                        destination_layout: self.vm.layout.clone(),
                    });
                }
                self.queue(&Message::LayoutAccepted)?;
                self.phase = Phase::Receiving;
            }
            (Phase::Receiving, Message::RoundEnd(end)) => {
                if end.round != self.round {
                    return Err(Error::RoundBackwards {
                        current: self.round,
                        got: end.round,
                    });
                }
                self.stats.rounds = end.round + 1;
                self.round += 1;
            }
            (Phase::Receiving, Message::State(blob)) if self.state.is_none() => {
                self.state = Some(blob);
            }
            (Phase::Receiving, Message::Handover { disks }) => {
                self.disks_handed_over = disks;
                if self.state.is_none() {
                    return Err(Error::UnexpectedMessage {
                        phase: "receiving memory (no state before the handover)",
                        got: MessageType::Handover,
                    });
                }
                self.handover_ms = self.now_ms;
                self.phase = Phase::Restoring;
                // The disks first: a disk backend learns its size when it takes the lock,
                // and the devices are built from both at the restore.
                self.requests.push_back(DestinationRequest::AcquireDisks);
            }
            (Phase::Ready, Message::Commit) => {
                self.phase = Phase::Resuming;
                self.requests.push_back(DestinationRequest::Resume);
            }
            (phase, message) => {
                return Err(Error::UnexpectedMessage {
                    phase: phase.name(),
                    got: message.message_type(),
                })
            }
        }
        Ok(())
    }

    /// The stream died after `Ready`, without `Commit`.
    fn in_doubt(&mut self) {
        if self.disks_held {
            // The source released the disks and cannot take them back while we hold
            // them, so it cannot resume: resuming here runs the VM exactly once.
            self.stats.resumed_in_doubt = true;
            self.phase = Phase::Resuming;
            self.requests.push_back(DestinationRequest::Resume);
        } else {
            self.fail(Error::InDoubt(
                "the stream died after Ready without Commit and no disk lock decides; \
                 the VM was not resumed here",
            ));
        }
    }

    fn fail(&mut self, e: Error) {
        if matches!(
            self.phase,
            Phase::Finished | Phase::Discarding | Phase::Resuming
        ) {
            return;
        }
        let tell_peer = !matches!(
            e,
            Error::Aborted { .. } | Error::Closed { .. } | Error::Io { .. } | Error::InDoubt(_)
        );
        if tell_peer {
            self.link.abort(&e);
        }
        self.error = Some(e);
        self.phase = Phase::Discarding;
        self.requests.clear();
        // After the outstanding request's reply, if one is out.
        self.requests.push_back(DestinationRequest::Discard);
    }

    fn finish(&mut self, outcome: Result<ReceiveStats>) {
        self.phase = Phase::Finished;
        self.requests.clear();
        self.outcome = Some(outcome);
    }
}

/// Writes one batch into guest memory: every pfn inside the layout, rounds never going
/// backwards. A zero page is written only where an earlier round wrote data (the memory
/// starts zeroed, and untouched pages stay unallocated).
fn write_pages<M: GuestMemoryBackend>(
    layout: &Layout,
    written: &mut PageSet,
    round: &mut u32,
    stats: &mut ReceiveStats,
    view: &PagesView<'_>,
    memory: &M,
) -> Result<()> {
    if view.round < *round {
        return Err(Error::RoundBackwards {
            current: *round,
            got: view.round,
        });
    }
    *round = view.round;
    let last = view.first_pfn + u64::from(view.span()) - 1;
    for pfn in [view.first_pfn, last] {
        if layout.locate(pfn).is_none() {
            return Err(Error::PfnOutOfRange { pfn });
        }
    }
    let (region_first, _) = layout.locate(view.first_pfn).ok_or(Error::PfnOutOfRange {
        pfn: view.first_pfn,
    })?;
    if layout.locate(last).map(|(r, _)| r) != Some(region_first) {
        return Err(Error::PfnOutOfRange { pfn: last });
    }
    const ZERO: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    for (pfn, page) in view.iter() {
        let (region, index) = layout.locate(pfn).ok_or(Error::PfnOutOfRange { pfn })?;
        let gpa = GuestAddress(pfn * PAGE_SIZE as u64);
        let data = match page {
            PageRef::Zero if !written.contains(region, index) => None,
            PageRef::Zero => Some(&ZERO[..]),
            PageRef::Data(d) => Some(d),
        };
        if let Some(data) = data {
            memory
                .write_slice(data, gpa)
                .map_err(|e| VmError::failed(VmOp::WriteMemory, format!("{:#x}: {e}", gpa.0)))?;
            written.insert(region, index);
        }
        stats.pages_received += 1;
    }
    Ok(())
}
