//! Time as the library sees it: a monotonic millisecond clock that comes in from outside.

#[cfg(any(test, feature = "test-utils"))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::time::ClockId;

/// A monotonic clock. The library never reads the wall clock itself.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since an arbitrary origin; never goes backwards.
    fn now_ms(&self) -> u64;
    /// A cheaper reading for the I/O hot path (the lease check before every read and
    /// write): `(ms, slack_ms)` such that [`Clock::now_ms`], read at this instant, would
    /// answer no more than `ms + slack_ms`. A caller may conclude "still before deadline
    /// `d`" from `ms + slack_ms < d` alone and asks `now_ms` otherwise.
    ///
    /// This body is exact (slack 0), so a clock without a cheaper source is correct
    /// without overriding it, only not faster; [`MonotonicClock`] answers from the
    /// kernel's coarse clock.
    fn now_ms_coarse(&self) -> (u64, u64) {
        (self.now_ms(), 0)
    }
    /// Waits `ms` milliseconds of this clock.
    fn sleep_ms(&self, ms: u64);
}

/// A coarse reading may trail the precise clock by this many of the coarse clock's ticks
/// (its resolution, 4 ms at 250 Hz) ...
const COARSE_SLACK_TICKS: u64 = 10;
/// ... and by at least this much (ms).
const COARSE_SLACK_MIN_MS: u64 = 100;

/// The real monotonic clock (`std::time::Instant`, `CLOCK_MONOTONIC`), with
/// `CLOCK_MONOTONIC_COARSE` as its coarse reading.
///
/// Why the coarse clock, and its slack: reading `CLOCK_MONOTONIC` costs about 30 ns on
/// the development machine (a KVM guest: the vDSO reads the TSC and the paravirtual clock
/// page), a tenth of vmfs's share of a 4 KiB read from the page cache; the coarse clock
/// is a copy the kernel keeps of the monotonic time as of its last timer tick, a few ns
/// to read. It never runs ahead of `CLOCK_MONOTONIC` and trails it by less than a tick
/// (`clock_getres`), longer only while the CPU that keeps time is held up (a vCPU the
/// hypervisor does not run), which the kernel ends after a few ticks by letting another
/// CPU update the time. The slack, ten ticks and at least 100 ms, covers that with room;
/// it costs nothing while the lease is healthy (then the deadline is seconds away) and
/// beyond it a caller asks the precise clock. Even a reading later than the slack only
/// acts like a precise check made that much earlier, followed by a wait before the I/O:
/// the half-lease margin between fencing and another host breaking the locks is there
/// for such delays (README, "Failure model", self-fencing).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
    /// `origin` in ns of the kernel's monotonic clock, read just after it (so not
    /// earlier): coarse readings are measured from here, and so never exceed `now_ms`.
    origin_ns: u64,
    coarse_slack_ms: u64,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let origin = Instant::now();
        let origin_ns = nanos(rustix::time::clock_gettime(ClockId::Monotonic));
        let tick_ms = nanos(rustix::time::clock_getres(ClockId::MonotonicCoarse))
            .div_ceil(1_000_000)
            .max(1);
        MonotonicClock {
            origin,
            origin_ns,
            coarse_slack_ms: (COARSE_SLACK_TICKS * tick_ms).max(COARSE_SLACK_MIN_MS),
        }
    }
}

fn nanos(t: rustix::time::Timespec) -> u64 {
    let s = u64::try_from(t.tv_sec).unwrap_or(0);
    let ns = u64::try_from(t.tv_nsec).unwrap_or(0);
    s.saturating_mul(1_000_000_000).saturating_add(ns)
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn now_ms_coarse(&self) -> (u64, u64) {
        let t = nanos(rustix::time::clock_gettime(ClockId::MonotonicCoarse));
        (
            t.saturating_sub(self.origin_ns) / 1_000_000,
            self.coarse_slack_ms,
        )
    }
    fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// A clock moved by hand (tests); `sleep_ms` advances it. Test support: built for this
/// crate's tests and with the `test-utils` feature.
#[cfg(any(test, feature = "test-utils"))]
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

#[cfg(any(test, feature = "test-utils"))]
impl ManualClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(start_ms),
        }
    }
    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "test-utils"))]
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
    fn sleep_ms(&self, ms: u64) {
        self.advance(ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_reading_brackets_the_precise_clock() {
        let c = MonotonicClock::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut n = 0u64;
        while Instant::now() < deadline {
            let before = c.now_ms();
            let (coarse, slack) = c.now_ms_coarse();
            let after = c.now_ms();
            assert!(slack >= COARSE_SLACK_MIN_MS);
            assert!(
                coarse <= after,
                "coarse {coarse} ran ahead of precise {after}"
            );
            assert!(
                before <= coarse + slack,
                "coarse {coarse} + {slack} trails {before}"
            );
            n += 1;
            if n % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
