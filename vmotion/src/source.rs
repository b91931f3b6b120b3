//! The source's state machine, free of I/O: fed received bytes, VM replies and clock
//! readings, it says which VM operation to run next ([`Source::poll_request`]) and which
//! bytes to send ([`Source::poll_transmit`]). [`crate::migrate`] drives it over a stream.
//!
//! The one rule it exists to keep: the VM runs here until `Commit` has been written to
//! the stream, and never again after. Any failure before that (the peer's `Abort`, a bad
//! frame, a closed stream, the time limit, a VM error) undoes what was done (throttle,
//! dirty log, released disks, pause) and leaves the VM running here.

use std::collections::VecDeque;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::error::{Error, Result, Side};
use crate::layout::{Layout, PageSet};
use crate::link::{Link, Received};
use crate::options::{whole_ms, MigrationOptions, MigrationStats, Progress, Stage};
use crate::precopy::{Convergence, Next, RoundFigures, TokenBucket};
use crate::vm::{VmError, VmOp};
use crate::wire::{
    encode_pages_with, CpuidLeaf, MemoryRegion, Message, MessageType, Role, RoundEnd,
    MAX_PAGES_PER_BATCH, PAGE_SIZE,
};

/// A VM operation the source asks its driver to run; answer with [`Source::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRequest {
    /// `MigratableVm::enable_dirty_log`.
    EnableDirtyLog,
    /// `MigratableVm::fetch_and_clear_dirty`: reply [`VmReply::Dirty`].
    FetchDirty,
    /// `MigratableVm::disable_dirty_log`.
    DisableDirtyLog,
    /// `MigratableVm::throttle`.
    Throttle(u8),
    /// `MigratableVm::pause`.
    Pause,
    /// `MigratableVm::resume`.
    Resume,
    /// `MigratableVm::capture_state`: reply [`VmReply::State`].
    CaptureState,
    /// `MigratableVm::release_disks`.
    ReleaseDisks,
    /// `MigratableVm::reacquire_disks`.
    ReacquireDisks,
    /// `MigratableVm::discard`.
    Discard,
}

/// The driver's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmReply {
    /// The operation succeeded.
    Done,
    /// The dirty pages fetched.
    Dirty(PageSet),
    /// The captured state.
    State(Vec<u8>),
    /// The operation failed.
    Failed(VmError),
}

/// What the source knows about its VM when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceVm {
    /// RAM regions.
    pub layout: Vec<MemoryRegion>,
    /// The CPUID the guest was shown.
    pub cpuid: Vec<CpuidLeaf>,
    /// Disk locks that move with the VM.
    pub disks: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hello,
    Auth,
    Cpu,
    Layout,
    PreCopy,
    AwaitReady,
    /// `Commit` is queued; committed once the driver says it was written.
    Committing,
    /// Committed: the VM is being discarded, then `Done` is awaited.
    Committed,
    RollingBack,
    Finished,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Hello => "exchanging hellos",
            Phase::Auth => "authenticating",
            Phase::Cpu => "checking CPU features",
            Phase::Layout => "checking the memory layout",
            Phase::PreCopy => "copying memory",
            Phase::AwaitReady => "waiting for the destination to be ready",
            Phase::Committing => "committing",
            Phase::Committed => "waiting for the destination's confirmation",
            Phase::RollingBack => "rolling back",
            Phase::Finished => "finished",
        }
    }
}

/// Where a round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Not copying.
    Idle,
    /// Sending the round's pages from the cursor on.
    Sending,
    /// Sent; the dirty log fetch is out.
    Fetching,
}

/// The source side of one migration. See the module documentation.
#[derive(Debug)]
pub struct Source {
    opts: MigrationOptions,
    layout: Layout,
    vm: SourceVm,
    link: Link,
    phase: Phase,
    requests: VecDeque<SourceRequest>,
    in_flight: Option<SourceRequest>,
    // Pre-copy.
    round: u32,
    round_state: Round,
    final_round: bool,
    to_send: PageSet,
    cursor: (usize, u64),
    round_pages: u64,
    /// Pages the round in progress has to send, counted once when it starts.
    round_total: u64,
    round_bytes_at_start: u64,
    round_started_ms: f64,
    pending_dirty: Option<PageSet>,
    convergence: Convergence,
    bucket: Option<TokenBucket>,
    // What to undo.
    dirty_log_on: bool,
    throttle: u8,
    paused: bool,
    disks_released: bool,
    commit_handed_out: bool,
    /// `Commit` was written: the source never resumes the VM again.
    committed: bool,
    /// Committed and the VM discarded here.
    discarded: bool,
    /// Committed, and `Done` will not come (the stream closed): finish once discarded.
    done_wait_over: bool,
    // Clock and results.
    start_ms: f64,
    now_ms: f64,
    paused_at_ms: f64,
    done_deadline_ms: f64,
    stats: MigrationStats,
    error: Option<Error>,
    outcome: Option<Result<MigrationStats>>,
}

impl Source {
    /// A migration of `vm` with `opts`, starting at `now_ms` (any monotonic clock in ms,
    /// the same for every later call). `nonce` must be fresh random bytes
    /// ([`crate::seal::fresh_nonce`]). Our hello is the first thing to transmit.
    pub fn new(opts: MigrationOptions, vm: SourceVm, nonce: [u8; 32], now_ms: f64) -> Result<Self> {
        let layout = Layout::new(vm.layout.clone())?;
        let bucket = opts
            .bandwidth_bytes_per_s
            .map(|bps| TokenBucket::new(bps, now_ms));
        let convergence =
            Convergence::new(opts.downtime_ms_max, opts.rounds_max, opts.auto_converge);
        let stats = MigrationStats {
            encrypted: matches!(opts.security, crate::options::Security::Aead(_)),
            ..MigrationStats::default()
        };
        Ok(Self {
            link: Link::new(Role::Source, &opts.security, nonce),
            to_send: PageSet::empty(&layout),
            layout,
            vm,
            phase: Phase::Hello,
            requests: VecDeque::new(),
            in_flight: None,
            round: 0,
            round_state: Round::Idle,
            final_round: false,
            cursor: (0, 0),
            round_pages: 0,
            round_total: 0,
            round_bytes_at_start: 0,
            round_started_ms: now_ms,
            pending_dirty: None,
            convergence,
            bucket,
            dirty_log_on: false,
            throttle: 0,
            paused: false,
            disks_released: false,
            commit_handed_out: false,
            committed: false,
            discarded: false,
            done_wait_over: false,
            start_ms: now_ms,
            now_ms,
            paused_at_ms: now_ms,
            done_deadline_ms: f64::INFINITY,
            stats,
            error: None,
            outcome: None,
            opts,
        })
    }

    /// The result, once the migration is over: `Ok` when the destination has the VM
    /// (this side discarded it), `Err` when it is running here (or, for
    /// [`Error::InDoubt`], paused here because its disks could not be taken back).
    #[must_use]
    pub fn outcome(&self) -> Option<&Result<MigrationStats>> {
        self.outcome.as_ref()
    }

    /// Takes the result.
    pub fn take_outcome(&mut self) -> Option<Result<MigrationStats>> {
        self.outcome.take()
    }

    /// Whether the VM has been committed to the destination (this side never resumes it).
    #[must_use]
    pub fn committed(&self) -> bool {
        self.committed
    }

    /// The next VM operation to run, if one is due and none is outstanding.
    pub fn poll_request(&mut self) -> Option<SourceRequest> {
        if self.in_flight.is_some() {
            return None;
        }
        if self.phase == Phase::RollingBack && self.requests.is_empty() {
            self.plan_undo();
        }
        let next = self.requests.pop_front()?;
        self.in_flight = Some(next);
        Some(next)
    }

    /// Bytes received from the destination.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.stats.bytes_received += bytes.len() as u64;
        self.link.push(bytes);
        if let Err(e) = self.process_inbox() {
            self.fail(e);
        }
    }

    /// The stream failed or was closed by the peer.
    pub fn transport_failed(&mut self, e: Error) {
        self.fail(e.closed_while(self.phase.name()));
    }

    /// The caller gives up (the VM keeps running here if not yet committed).
    pub fn cancel(&mut self) {
        self.fail(Error::Cancelled);
    }

    /// A clock reading (ms): enforces the time limit and refills the bandwidth cap.
    pub fn clock(&mut self, now_ms: f64) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(b) = &mut self.bucket {
            b.refill(self.now_ms);
        }
        let before_commit = !matches!(
            self.phase,
            Phase::Committed | Phase::RollingBack | Phase::Finished
        );
        if before_commit && self.now_ms - self.start_ms >= self.opts.time_limit_ms as f64 {
            self.fail(Error::TimeLimit {
                limit_ms: self.opts.time_limit_ms,
            });
        }
        if self.phase == Phase::Committed && self.discarded && self.now_ms >= self.done_deadline_ms
        {
            self.finish_committed(false);
        }
    }

    /// When the machine next needs a clock reading even if nothing else happens.
    #[must_use]
    pub fn next_deadline(&self) -> Option<f64> {
        if self.phase == Phase::Finished {
            return None;
        }
        let limit = self.start_ms + self.opts.time_limit_ms as f64;
        let bucket = self.bucket.as_ref().and_then(TokenBucket::ready_at);
        let done = (self.phase == Phase::Committed).then_some(self.done_deadline_ms);
        [Some(limit), bucket, done]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
    }

    /// Everything the driver has written since the last call reached the stream. Once
    /// the `Commit` frame has, the migration is committed.
    pub fn flushed(&mut self) {
        if self.phase == Phase::Committing && self.commit_handed_out {
            self.phase = Phase::Committed;
            self.committed = true;
            self.stats.downtime_ms = self.now_ms - self.paused_at_ms;
            self.stats.committed_ms = whole_ms(self.now_ms - self.start_ms);
            self.requests.clear();
            self.requests.push_back(SourceRequest::Discard);
        }
    }

    /// A finished VM operation's result.
    pub fn reply(&mut self, reply: VmReply) {
        let Some(request) = self.in_flight.take() else {
            return;
        };
        if let VmReply::Failed(e) = reply {
            self.request_failed(request, e);
            return;
        }
        self.request_done(request, reply);
    }

    /// Appends what is due to be sent to `out`: queued messages, then at most one batch of
    /// pages read from `memory` (so the driver can interleave its other work).
    pub fn poll_transmit<M: GuestMemoryBackend>(&mut self, memory: &M, out: &mut Vec<u8>) {
        let before = out.len();
        if self.phase == Phase::Committing && !self.commit_handed_out {
            // Sealed only now, as it is handed out: a failure noticed before this point
            // (the time limit, the peer's abort) must find no `Commit` waiting to go.
            match self.queue(&Message::Commit) {
                Ok(()) => self.commit_handed_out = true,
                Err(e) => self.fail(e),
            }
        }
        self.link.take_tx(out);
        if self.phase == Phase::PreCopy
            && self.round_state == Round::Sending
            && self.in_flight.is_none()
            && self.requests.is_empty()
            && self.bucket.as_ref().is_none_or(TokenBucket::ready)
        {
            if let Err(e) = self.send_batch(memory, out) {
                self.fail(e);
                self.link.take_tx(out);
            }
        }
        let written = (out.len() - before) as u64;
        self.stats.bytes_sent += written;
        if let Some(b) = &mut self.bucket {
            b.take(written);
        }
    }

    /// Whether the machine has work it can do now without new input or time passing: a VM
    /// operation to hand out, or bytes or pages to send. A driver may block only when not.
    #[must_use]
    pub fn busy(&self) -> bool {
        let request_due = self.in_flight.is_none()
            && (!self.requests.is_empty() || self.phase == Phase::RollingBack);
        let pages_due = self.phase == Phase::PreCopy
            && self.round_state == Round::Sending
            && self.in_flight.is_none()
            && self.bucket.as_ref().is_none_or(TokenBucket::ready);
        let commit_due = self.phase == Phase::Committing && !self.commit_handed_out;
        request_due || pages_due || commit_due || self.link.tx_pending()
    }

    /// Where the migration is, for progress reports.
    #[must_use]
    pub fn progress(&self) -> Progress {
        let stage = match self.phase {
            Phase::Hello | Phase::Auth | Phase::Cpu | Phase::Layout => {
                crate::options::Stage::Handshake
            }
            Phase::PreCopy if self.paused => Stage::Switchover,
            Phase::PreCopy => Stage::PreCopy,
            Phase::AwaitReady | Phase::Committing => Stage::Switchover,
            Phase::Committed => Stage::Committed,
            Phase::RollingBack => Stage::RollingBack,
            Phase::Finished if self.committed() => Stage::Committed,
            Phase::Finished => Stage::RollingBack,
        };
        // Counted, not walked: this runs once per batch the driver sends.
        let pages_left = match self.round_state {
            Round::Sending => self.round_total.saturating_sub(self.round_pages),
            Round::Idle | Round::Fetching => 0,
        };
        Progress {
            stage,
            round: self.round,
            pages_left,
            pages_total: self.layout.pages(),
            bytes_sent: self.stats.bytes_sent,
            elapsed_ms: whole_ms(self.now_ms - self.start_ms),
            bandwidth_bytes_per_s: self.convergence.bandwidth_bytes_per_ms().unwrap_or(0.0)
                * 1000.0,
            dirty_pages_per_s: self.convergence.dirty_pages_per_ms() * 1000.0,
            throttle_pct: self.throttle,
        }
    }

    fn queue(&mut self, message: &Message) -> Result<()> {
        self.link.queue(message)
    }

    fn process_inbox(&mut self) -> Result<()> {
        while self.phase != Phase::Finished {
            let (header, payload) = match self.link.next()? {
                None => return Ok(()),
                Some(Received::Opened) => {
                    self.phase = Phase::Auth;
                    continue;
                }
                Some(Received::Frame(header, payload)) => (header, payload),
            };
            let message = Message::decode_payload(header.message_type, payload)?;
            self.on_message(message)?;
        }
        Ok(())
    }

    fn on_message(&mut self, message: Message) -> Result<()> {
        let message = self.link.screen(message, Side::Destination)?;
        match (self.phase, message) {
            (Phase::Auth, Message::Auth(_)) => {
                self.queue(&Message::CpuFeatures(self.vm.cpuid.clone()))?;
                self.phase = Phase::Cpu;
            }
            (Phase::Cpu, Message::CpuVerdict(verdict)) => {
                if !verdict.ok {
                    return Err(Error::CpuIncompatible {
                        missing: verdict.missing,
                    });
                }
                self.queue(&Message::MemoryLayout(self.vm.layout.clone()))?;
                self.phase = Phase::Layout;
            }
            (Phase::Layout, Message::LayoutAccepted) => {
                self.phase = Phase::PreCopy;
                self.requests.push_back(SourceRequest::EnableDirtyLog);
            }
            (Phase::AwaitReady, Message::Ready) => self.phase = Phase::Committing,
            (Phase::Committed, Message::Done { .. }) => {
                self.stats.destination_confirmed = true;
                if self.discarded {
                    self.finish_committed(true);
                }
            }
            // After a failure, whatever was in flight from the peer no longer matters.
            (Phase::RollingBack, _) => {}
            (phase, message) => {
                return Err(Error::UnexpectedMessage {
                    phase: phase.name(),
                    got: message.message_type(),
                })
            }
        }
        Ok(())
    }

    fn start_round(&mut self, pages: PageSet) {
        self.to_send = pages;
        self.cursor = (0, 0);
        self.round_pages = 0;
        self.round_total = self.to_send.count();
        self.round_bytes_at_start = self.stats.bytes_sent;
        self.round_started_ms = self.now_ms;
        self.round_state = Round::Sending;
    }

    fn send_batch<M: GuestMemoryBackend>(&mut self, memory: &M, out: &mut Vec<u8>) -> Result<()> {
        let Some((region, first)) = self.to_send.next_from(self.cursor.0, self.cursor.1) else {
            return self.round_sent();
        };
        let span = (self.layout.region_pages(region) - first).min(u64::from(MAX_PAGES_PER_BATCH));
        // At most 512.
        let span_pages = usize::try_from(span).unwrap_or(usize::from(MAX_PAGES_PER_BATCH));
        let first_pfn = self.layout.pfn(region, first);
        let sealer = self.link.sealer().ok_or(Error::Closed {
            phase: "copying memory",
        })?;
        let to_send = &self.to_send;
        let count = sealer.seal_with(MessageType::Pages, out, |buf| {
            encode_pages_with(self.round, first_pfn, span_pages, buf, |i, page| {
                let index = first + i as u64;
                if !to_send.contains(region, index) {
                    return Ok::<bool, Error>(false);
                }
                let gpa = (first_pfn + i as u64) * PAGE_SIZE as u64;
                memory.read_slice(page, GuestAddress(gpa)).map_err(|e| {
                    Error::Vm(VmError::failed(VmOp::ReadMemory, format!("{gpa:#x}: {e}")))
                })?;
                Ok(true)
            })
        })?;
        let sent = u64::from(count.zero + count.data);
        self.round_pages += sent;
        self.stats.zero_pages += u64::from(count.zero);
        self.stats.data_pages += u64::from(count.data);
        self.cursor = (region, first + span);
        Ok(())
    }

    /// Every page of the round went out.
    fn round_sent(&mut self) -> Result<()> {
        self.stats.pages_per_round.push(self.round_pages);
        self.stats.rounds = self.round + 1;
        if self.final_round {
            self.stats.final_round_pages = self.round_pages;
            self.queue(&Message::RoundEnd(RoundEnd {
                round: self.round,
                pages_sent: self.round_pages,
                pages_left: 0,
            }))?;
            self.round_state = Round::Idle;
            self.requests.push_back(SourceRequest::CaptureState);
        } else {
            self.round_state = Round::Fetching;
            self.requests.push_back(SourceRequest::FetchDirty);
        }
        Ok(())
    }

    fn request_done(&mut self, request: SourceRequest, reply: VmReply) {
        let result = match (request, reply) {
            (SourceRequest::EnableDirtyLog, _) => {
                self.dirty_log_on = true;
                if self.phase == Phase::PreCopy {
                    self.start_round(PageSet::full(&self.layout));
                }
                Ok(())
            }
            (SourceRequest::DisableDirtyLog, _) => {
                self.dirty_log_on = false;
                Ok(())
            }
            (SourceRequest::Throttle(percent), _) => {
                self.throttle = percent;
                self.stats.throttle_pct_max = self.stats.throttle_pct_max.max(percent);
                Ok(())
            }
            (SourceRequest::Pause, _) => {
                self.paused = true;
                self.paused_at_ms = self.now_ms;
                if self.phase == Phase::PreCopy {
                    self.requests.push_back(SourceRequest::FetchDirty);
                }
                Ok(())
            }
            (SourceRequest::Resume, _) => {
                self.paused = false;
                Ok(())
            }
            (SourceRequest::ReleaseDisks, _) => {
                self.disks_released = true;
                if self.phase == Phase::PreCopy {
                    self.hand_over()
                } else {
                    Ok(())
                }
            }
            (SourceRequest::ReacquireDisks, _) => {
                self.disks_released = false;
                Ok(())
            }
            (SourceRequest::Discard, _) => {
                self.paused = false;
                self.discarded = true;
                if self.stats.destination_confirmed || self.done_wait_over {
                    self.finish_committed(self.stats.destination_confirmed);
                } else {
                    self.done_deadline_ms = self.now_ms + self.opts.done_wait_ms as f64;
                }
                Ok(())
            }
            (SourceRequest::FetchDirty, VmReply::Dirty(dirty)) if self.phase == Phase::PreCopy => {
                self.dirty_fetched(dirty)
            }
            (SourceRequest::CaptureState, VmReply::State(blob)) if self.phase == Phase::PreCopy => {
                self.queue(&Message::State(blob)).and_then(|()| {
                    if self.vm.disks > 0 {
                        self.requests.push_back(SourceRequest::ReleaseDisks);
                        Ok(())
                    } else {
                        self.hand_over()
                    }
                })
            }
            // Replies that arrive after a failure change nothing more.
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e);
        }
        self.finish_rollback_if_done();
    }

    fn dirty_fetched(&mut self, mut dirty: PageSet) -> Result<()> {
        if self.paused {
            // The final fetch, with the VM paused: what was dirtied since the last one.
            if let Some(pending) = self.pending_dirty.take() {
                dirty.union_with(&pending);
            }
            self.round += 1;
            self.final_round = true;
            self.start_round(dirty);
            return Ok(());
        }
        let dirtied = dirty.count();
        let figures = RoundFigures {
            round: self.round,
            bytes: self.stats.bytes_sent - self.round_bytes_at_start,
            ms: self.now_ms - self.round_started_ms,
            dirtied,
        };
        self.queue(&Message::RoundEnd(RoundEnd {
            round: self.round,
            pages_sent: self.round_pages,
            pages_left: dirtied,
        }))?;
        match self.convergence.after_round(figures) {
            Next::Switchover => {
                self.pending_dirty = Some(dirty);
                self.round_state = Round::Idle;
                self.requests.push_back(SourceRequest::Pause);
            }
            Next::Round { throttle } => {
                if throttle != self.throttle {
                    self.requests.push_back(SourceRequest::Throttle(throttle));
                }
                self.round += 1;
                self.start_round(dirty);
            }
        }
        Ok(())
    }

    fn hand_over(&mut self) -> Result<()> {
        let disks = if self.disks_released {
            self.vm.disks
        } else {
            0
        };
        self.queue(&Message::Handover { disks })?;
        self.phase = Phase::AwaitReady;
        Ok(())
    }

    fn request_failed(&mut self, request: SourceRequest, e: VmError) {
        match (self.phase, request) {
            (Phase::RollingBack, SourceRequest::ReacquireDisks) => {
                // Never resume without the disks: whoever holds them runs the VM.
                let _ = e;
                self.finish(Err(Error::InDoubt(
                    "the source could not take its disks back; the VM stays paused here",
                )));
            }
            (Phase::RollingBack, SourceRequest::Resume) => {
                self.paused = false;
                self.error = Some(Error::Vm(e));
            }
            (Phase::RollingBack, SourceRequest::Throttle(_)) => self.throttle = 0,
            (Phase::RollingBack, SourceRequest::DisableDirtyLog) => self.dirty_log_on = false,
            (Phase::Committed, _) => {
                // Discarding failed: the VM stays paused here for good; the destination
                // runs it all the same.
                self.discarded = true;
                self.finish_committed(self.stats.destination_confirmed);
                return;
            }
            _ => self.fail(Error::Vm(e)),
        }
        self.finish_rollback_if_done();
    }

    /// Gives up: tells the peer why (when a channel exists and the peer did not abort
    /// itself) and plans the undo. After `Commit` there is nothing to undo.
    fn fail(&mut self, e: Error) {
        match self.phase {
            Phase::Finished | Phase::RollingBack => return,
            Phase::Committed => {
                // Nothing to undo after `Commit`; stop waiting for `Done` once discarded.
                self.done_wait_over = true;
                if self.discarded {
                    self.finish_committed(self.stats.destination_confirmed);
                }
                return;
            }
            _ => {}
        }
        let tell_peer = !matches!(
            e,
            Error::Aborted { .. } | Error::Closed { .. } | Error::Io { .. }
        );
        if tell_peer {
            self.link.abort(&e);
        }
        self.error = Some(e);
        self.phase = Phase::RollingBack;
        self.round_state = Round::Idle;
        self.requests.clear();
        self.finish_rollback_if_done();
    }

    /// The next undo step, from what is still in effect.
    fn plan_undo(&mut self) {
        let next = if self.throttle > 0 {
            Some(SourceRequest::Throttle(0))
        } else if self.dirty_log_on {
            Some(SourceRequest::DisableDirtyLog)
        } else if self.disks_released {
            Some(SourceRequest::ReacquireDisks)
        } else if self.paused {
            Some(SourceRequest::Resume)
        } else {
            None
        };
        self.requests.extend(next);
    }

    fn finish_rollback_if_done(&mut self) {
        if self.phase != Phase::RollingBack || self.in_flight.is_some() {
            return;
        }
        self.plan_undo();
        if self.requests.is_empty() {
            let e = self.error.take().unwrap_or(Error::Cancelled);
            self.finish(Err(e));
        }
    }

    fn finish_committed(&mut self, confirmed: bool) {
        self.stats.destination_confirmed = confirmed;
        self.stats.total_ms = whole_ms(self.now_ms - self.start_ms);
        self.finish(Ok(self.stats.clone()));
    }

    fn finish(&mut self, outcome: Result<MigrationStats>) {
        self.phase = Phase::Finished;
        self.requests.clear();
        self.outcome = Some(outcome);
    }
}
