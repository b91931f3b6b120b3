//! vCPU threads: the run loop, exit dispatch, and the pause/stop handshake.
//!
//! A vCPU thread owns its `VcpuFd` through a mutex it holds only while inside
//! `KVM_RUN`; when parked it releases it, so the host can read or write vCPU state of
//! a paused VM. The host gets a thread out of `KVM_RUN` by sending it a real-time
//! signal whose handler does nothing (the ioctl returns `EINTR`). A signal can arrive
//! just before the thread enters `KVM_RUN` and be lost, so whoever waits for vCPUs to
//! park or exit re-sends it every millisecond until they have: bounded, and never a
//! missed wake-up.
//!
//! Throttling (auto-converge) uses the same kick: a throttle thread starts a period every
//! [`THROTTLE_PERIOD`] and kicks the vCPUs, re-sending until each has acknowledged it
//! (or its sleep would be over anyway); a vCPU that sees a new period sleeps in its
//! checkpoint until `percent` % of the period has passed. The sleep is a wait on the same
//! condition variable as parking, so a pause, resume or stop ends it at once, and it
//! never changes the request: a paused VM stays paused.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::bus::{MmioBus, PioBus};
use crate::power::{ExitReason, PowerState};

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KICK_INTERVAL: Duration = Duration::from_millis(1);

/// The throttling period: in each, a throttled vCPU stays out of `KVM_RUN` for its
/// percentage of it (as QEMU's `cpu-throttle` does with its 10 ms time slice).
pub const THROTTLE_PERIOD: Duration = Duration::from_millis(10);
/// The highest throttle, in percent: a vCPU always runs for some of each period.
pub const THROTTLE_MAX_PERCENT: u8 = 99;

/// The part of a period a vCPU throttled at `percent` spends asleep.
fn throttle_sleep(percent: u8) -> Duration {
    THROTTLE_PERIOD * u32::from(percent.min(THROTTLE_MAX_PERCENT)) / 100
}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op kick handler once per process.
pub(crate) fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Run,
    Pause,
    Stop,
}

#[derive(Debug)]
struct Inner {
    request: Request,
    started: bool,
    running: usize,
    parked: usize,
    exit: Option<ExitReason>,
    threads: Vec<Option<libc::pthread_t>>,
    throttle: Throttle,
}

/// Throttling state, under the same lock as the requests.
#[derive(Debug, Default)]
struct Throttle {
    percent: u8,
    /// Counts the periods; each vCPU sleeps once per period.
    period: u64,
    /// When the current period began.
    period_start: Option<Instant>,
    /// vCPUs that have taken the current period's sleep.
    acks: usize,
    /// A throttle thread is in its loop; it clears this under the lock as it leaves.
    thread: bool,
}

/// Shared between the `Vm` handle, its vCPU threads and the exit devices.
#[derive(Debug)]
pub(crate) struct Control {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Control {
    pub(crate) fn new(vcpus: usize) -> Self {
        Control {
            inner: Mutex::new(Inner {
                request: Request::Run,
                started: false,
                running: 0,
                parked: 0,
                exit: None,
                threads: vec![None; vcpus],
                throttle: Throttle::default(),
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kick(g: &Inner) {
        for tid in g.threads.iter().flatten() {
            // SAFETY: a tid is in the table only while its thread has not returned (it
            // removes itself under this lock before returning), so it names a live thread.
            unsafe { libc::pthread_kill(*tid, kick_signal()) };
        }
    }

    /// Marks `n` vCPU threads as about to start.
    pub(crate) fn start(&self, n: usize) {
        let mut g = self.lock();
        g.started = true;
        g.running = n;
    }

    pub(crate) fn power_state(&self) -> PowerState {
        let g = self.lock();
        if !g.started {
            return PowerState::ShutOff;
        }
        if g.running == 0 {
            return match g.exit {
                Some(ExitReason::Crashed { .. }) => PowerState::Crashed,
                _ => PowerState::ShutOff,
            };
        }
        match g.request {
            Request::Pause if g.parked == g.running => PowerState::Paused,
            _ => PowerState::Running,
        }
    }

    /// Asks every vCPU to stop; the first reason recorded wins.
    pub(crate) fn request_stop(&self, reason: ExitReason) {
        let mut g = self.lock();
        if g.exit.is_none() {
            tracing::info!(?reason, "vm stopping");
            g.exit = Some(reason);
        }
        g.request = Request::Stop;
        Self::kick(&g);
        self.cv.notify_all();
    }

    /// Asks every vCPU to park and waits until they have (or have exited).
    pub(crate) fn pause(&self, timeout: Duration) -> Result<(), ()> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        if g.request == Request::Run {
            g.request = Request::Pause;
            // Throttled vCPUs sleep on the condition variable, not in KVM_RUN.
            self.cv.notify_all();
        }
        while g.parked < g.running && g.request == Request::Pause {
            Self::kick(&g);
            if Instant::now() >= deadline {
                return Err(());
            }
            g = self
                .cv
                .wait_timeout(g, KICK_INTERVAL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    pub(crate) fn resume(&self) {
        let mut g = self.lock();
        if g.request == Request::Pause {
            g.request = Request::Run;
        }
        self.cv.notify_all();
    }

    /// Waits until every vCPU thread has left its loop; `None` waits for ever.
    pub(crate) fn wait_stopped(&self, timeout: Option<Duration>) -> Option<ExitReason> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock();
        while g.running > 0 {
            if g.request == Request::Stop {
                Self::kick(&g);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            let step = if g.request == Request::Stop {
                KICK_INTERVAL
            } else {
                Duration::from_millis(50)
            };
            // Never past the caller's deadline: a 10 ms wait must not take 50.
            let step = deadline.map_or(step, |d| {
                step.min(d.saturating_duration_since(Instant::now()))
            });
            g = self
                .cv
                .wait_timeout(g, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Some(g.exit.clone().unwrap_or(ExitReason::Stopped))
    }

    /// Starts threads parked: they wait for [`Control::resume`].
    pub(crate) fn start_paused(&self, n: usize) {
        let mut g = self.lock();
        g.request = Request::Pause;
        g.started = true;
        g.running = n;
    }

    /// Blocks while paused, and for the throttled share of each throttling period;
    /// false when the thread should leave its loop.
    ///
    /// Before parking, and with the lock released, it calls `complete_io` if
    /// `io_pending` says the last `KVM_RUN` may have left an access for the next one
    /// to finish; the request is then read again, so a pause that arrives at any
    /// moment finds the vCPU state whole. `period_seen` is the last throttling period
    /// this vCPU slept in.
    fn checkpoint(
        &self,
        io_pending: &mut bool,
        period_seen: &mut u64,
        complete_io: impl Fn(),
    ) -> bool {
        let mut g = self.lock();
        loop {
            match g.request {
                Request::Run if g.throttle.percent > 0 && g.throttle.period != *period_seen => {
                    *period_seen = g.throttle.period;
                    g.throttle.acks += 1;
                    self.cv.notify_all();
                    g = self.throttle_sleep(g);
                }
                Request::Run => return true,
                Request::Stop => return false,
                Request::Pause if *io_pending => {
                    drop(g);
                    complete_io();
                    *io_pending = false;
                    g = self.lock();
                }
                Request::Pause => {
                    g.parked += 1;
                    self.cv.notify_all();
                    while g.request == Request::Pause {
                        g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    g.parked -= 1;
                }
            }
        }
    }

    /// Sleeps until the throttled share of the current period is over, or the request
    /// or the throttle changes.
    fn throttle_sleep<'a>(&'a self, mut g: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        loop {
            let Some(start) = g.throttle.period_start else {
                return g;
            };
            let until = start + throttle_sleep(g.throttle.percent);
            let now = Instant::now();
            if now >= until || g.request != Request::Run {
                return g;
            }
            g = self
                .cv
                .wait_timeout(g, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sets the throttle; true when the caller must start a throttle thread (running
    /// [`Control::throttle_loop`]): throttling is on and no thread is in its loop.
    pub(crate) fn set_throttle(&self, percent: u8) -> bool {
        let mut g = self.lock();
        g.throttle.percent = percent.min(THROTTLE_MAX_PERCENT);
        self.cv.notify_all();
        let spawn = percent > 0 && !g.throttle.thread && g.request != Request::Stop;
        if spawn {
            g.throttle.thread = true;
        }
        spawn
    }

    /// The throttle in percent.
    pub(crate) fn throttle(&self) -> u8 {
        self.lock().throttle.percent
    }

    /// Records that the throttle thread [`Control::set_throttle`] asked for could not
    /// be started.
    pub(crate) fn throttle_thread_failed(&self) {
        let mut g = self.lock();
        g.throttle.thread = false;
        g.throttle.percent = 0;
    }

    /// The body of the throttle thread: a period every [`THROTTLE_PERIOD`] while the
    /// vCPUs run, each started with kicks until every vCPU has acknowledged it or its
    /// sleep would be over. Returns when throttling is turned off or the VM stops.
    pub(crate) fn throttle_loop(&self) {
        let mut g = self.lock();
        loop {
            if g.throttle.percent == 0 || g.request == Request::Stop {
                g.throttle.thread = false;
                g.throttle.period_start = None;
                return;
            }
            let start = Instant::now();
            if g.started && g.request == Request::Run {
                g.throttle.period += 1;
                g.throttle.period_start = Some(start);
                g.throttle.acks = 0;
                // A kick can arrive just before a vCPU enters KVM_RUN and be lost: re-send
                // it every millisecond, as pause does, while a sleep is still worth it.
                while g.throttle.acks < g.running.saturating_sub(g.parked)
                    && g.request == Request::Run
                    && g.throttle.percent > 0
                    && Instant::now() < start + throttle_sleep(g.throttle.percent)
                {
                    Self::kick(&g);
                    g = self
                        .cv
                        .wait_timeout(g, KICK_INTERVAL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            // Wait out the period; set_throttle and request_stop wake us early.
            let end = start + THROTTLE_PERIOD;
            loop {
                let now = Instant::now();
                if now >= end || g.throttle.percent == 0 || g.request == Request::Stop {
                    break;
                }
                g = self
                    .cv
                    .wait_timeout(g, end - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    fn register(&self, index: usize) {
        let mut g = self.lock();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        if let Some(slot) = g.threads.get_mut(index) {
            *slot = Some(me);
        }
    }

    fn exited(&self, index: usize) {
        let mut g = self.lock();
        if let Some(slot) = g.threads.get_mut(index) {
            *slot = None;
        }
        g.running -= 1;
        if g.running == 0 && g.exit.is_none() {
            g.exit = Some(ExitReason::Stopped);
        }
        // Other vCPUs may sit in KVM_RUN (an AP waiting for SIPI): get them out too.
        Self::kick(&g);
        self.cv.notify_all();
    }
}

/// What a vCPU thread needs besides its fd.
#[derive(Debug, Clone)]
pub(crate) struct VcpuContext {
    pub(crate) pio: Arc<PioBus>,
    pub(crate) mmio: Arc<MmioBus>,
    pub(crate) ctl: Arc<Control>,
}

enum Outcome {
    Continue,
    Stop(ExitReason),
    InternalError,
}

/// The body of vCPU thread `index`.
pub(crate) fn run(index: usize, vcpu: Arc<Mutex<VcpuFd>>, ctx: VcpuContext) {
    ctx.ctl.register(index);
    // An `in` or MMIO load completes on the next KVM_RUN: before the thread parks, it
    // enters once with immediate_exit so the vCPU state is whole (a snapshot taken
    // while paused must not lose the value the guest is reading).
    let complete_io = || {
        let mut fd = vcpu.lock().unwrap_or_else(|e| e.into_inner());
        fd.set_kvm_immediate_exit(1);
        let _ = fd.run();
        fd.set_kvm_immediate_exit(0);
    };
    let mut io_pending = false;
    let mut period_seen = 0;
    while ctx
        .ctl
        .checkpoint(&mut io_pending, &mut period_seen, complete_io)
    {
        let mut fd = vcpu.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match fd.run() {
            Ok(exit) => handle_exit(exit, &ctx),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Outcome::Continue,
            Err(e) => Outcome::Stop(ExitReason::Crashed {
                reason: format!("vcpu {index}: KVM_RUN: {e}"),
            }),
        };
        let outcome = match outcome {
            Outcome::InternalError => {
                let run = fd.get_kvm_run();
                // SAFETY: KVM reported KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active member of the exit union.
                let sub = unsafe { run.__bindgen_anon_1.internal.suberror };
                Outcome::Stop(ExitReason::Crashed {
                    reason: format!(
                        "vcpu {index}: kvm internal error, suberror {sub} (1 = emulation failure)"
                    ),
                })
            }
            o => o,
        };
        drop(fd);
        match outcome {
            Outcome::Stop(reason) => ctx.ctl.request_stop(reason),
            _ => io_pending = true,
        }
    }
    ctx.ctl.exited(index);
}

fn handle_exit(exit: VcpuExit<'_>, ctx: &VcpuContext) -> Outcome {
    match exit {
        VcpuExit::IoOut(port, data) => ctx.pio.write(port, data),
        VcpuExit::IoIn(port, data) => ctx.pio.read(port, data),
        VcpuExit::MmioRead(addr, data) => ctx.mmio.read(addr, data),
        VcpuExit::MmioWrite(addr, data) => ctx.mmio.write(addr, data),
        // With the in-kernel irqchip these do not normally reach us; when they do there
        // is nothing to emulate.
        VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen => {}
        VcpuExit::Shutdown => {
            return Outcome::Stop(ExitReason::Crashed {
                reason: "triple fault (shutdown exit)".into(),
            })
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Outcome::Stop(ExitReason::Crashed {
                reason: format!("vm entry failed on cpu {cpu}: hardware reason {reason:#x}"),
            })
        }
        VcpuExit::InternalError => return Outcome::InternalError,
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => {
            return Outcome::Stop(ExitReason::Poweroff { code: 0 })
        }
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => {
            return Outcome::Stop(ExitReason::Reboot)
        }
        other => {
            return Outcome::Stop(ExitReason::Crashed {
                reason: format!("unhandled vcpu exit {other:?}"),
            })
        }
    }
    Outcome::Continue
}
