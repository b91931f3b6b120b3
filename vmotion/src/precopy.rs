//! Pre-copy policy, free of I/O: the bandwidth and dirty-rate estimates, when to stop the
//! VM for the last round, how hard to throttle it, and the bandwidth cap's token bucket.

use crate::wire::PAGE_SIZE;

/// Figures of one finished pre-copy round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundFigures {
    /// The round's number (0 sends all memory).
    pub round: u32,
    /// Bytes written during the round.
    pub bytes: u64,
    /// How long the round took (ms).
    pub ms: f64,
    /// Pages the guest dirtied meanwhile (the dirty log fetched at its end).
    pub dirtied: u64,
}

/// What to do after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the dirtied pages in another round, with the vCPUs throttled this much.
    Round {
        /// Throttle percent for the next round (0: none).
        throttle: u8,
    },
    /// Pause the VM and send the rest.
    Switchover,
}

/// Rounds smaller than this can only raise the bandwidth estimate (too short to time).
const MIN_TIMED_BYTES: u64 = 1 << 20;
/// First throttle step and each step after it, percent; and the ceiling (QEMU's defaults).
const THROTTLE_INITIAL: u8 = 20;
const THROTTLE_STEP: u8 = 10;
const THROTTLE_MAX: u8 = 99;

/// The source's running estimates and its stop and throttle decisions.
#[derive(Debug, Clone)]
pub struct Convergence {
    downtime_ms_max: u64,
    rounds_max: u32,
    auto_converge: bool,
    bandwidth_bytes_per_ms: Option<f64>,
    dirty_pages_per_ms: f64,
    throttle: u8,
    fast_dirtying_rounds: u32,
}

impl Convergence {
    /// A policy with the source's options.
    #[must_use]
    pub fn new(downtime_ms_max: u64, rounds_max: u32, auto_converge: bool) -> Self {
        Self {
            downtime_ms_max,
            rounds_max: rounds_max.max(1),
            auto_converge,
            bandwidth_bytes_per_ms: None,
            dirty_pages_per_ms: 0.0,
            throttle: 0,
            fast_dirtying_rounds: 0,
        }
    }

    /// Measured bandwidth (bytes per ms), once a round was long enough to time.
    #[must_use]
    pub fn bandwidth_bytes_per_ms(&self) -> Option<f64> {
        self.bandwidth_bytes_per_ms
    }

    /// Measured dirty rate (pages per ms) in the last round.
    #[must_use]
    pub fn dirty_pages_per_ms(&self) -> f64 {
        self.dirty_pages_per_ms
    }

    /// The throttle in force.
    #[must_use]
    pub fn throttle(&self) -> u8 {
        self.throttle
    }

    /// How long sending `pages` would take at the measured bandwidth (ms); unknown
    /// bandwidth is taken as unbounded time unless there is nothing to send.
    #[must_use]
    pub fn expected_ms(&self, pages: u64) -> f64 {
        if pages == 0 {
            return 0.0;
        }
        match self.bandwidth_bytes_per_ms {
            Some(bw) if bw > 0.0 => (pages * PAGE_SIZE as u64) as f64 / bw,
            _ => f64::INFINITY,
        }
    }

    /// Takes a finished round's figures and decides what comes next.
    ///
    /// Stop when the dirtied pages would be sent within the downtime target, or when the
    /// round limit is reached. Otherwise, with auto-converge, a round in which the guest
    /// dirtied at least half as many bytes as were sent counts as fast dirtying; two in
    /// a row raise the throttle (20 %, then +10 % up to 99 %), as QEMU's auto-converge
    /// does.
    pub fn after_round(&mut self, f: RoundFigures) -> Next {
        let ms = f.ms.max(0.001);
        let rate = f.bytes as f64 / ms;
        self.bandwidth_bytes_per_ms = Some(match self.bandwidth_bytes_per_ms {
            // A short round's time is mostly fixed costs (the dirty log, a round 0 that
            // scanned mostly zero pages): its rate is a lower bound on the link's, so it
            // can raise the estimate but not lower it. Otherwise a small guest's slow
            // round 0 left an estimate so low that a dozen dirty pages seemed not to fit
            // the downtime, and the source throttled the guest round after round.
            Some(bw) if f.bytes < MIN_TIMED_BYTES => bw.max(rate),
            _ => rate,
        });
        self.dirty_pages_per_ms = f.dirtied as f64 / ms;
        if self.expected_ms(f.dirtied) <= self.downtime_ms_max as f64
            || f.round + 1 >= self.rounds_max
        {
            return Next::Switchover;
        }
        if self.auto_converge && f.round > 0 {
            let dirtied_bytes = f.dirtied * PAGE_SIZE as u64;
            if dirtied_bytes * 2 >= f.bytes {
                self.fast_dirtying_rounds += 1;
            } else {
                self.fast_dirtying_rounds = 0;
            }
            if self.fast_dirtying_rounds >= 2 {
                self.fast_dirtying_rounds = 0;
                self.throttle = match self.throttle {
                    0 => THROTTLE_INITIAL,
                    t => t.saturating_add(THROTTLE_STEP).min(THROTTLE_MAX),
                };
            }
        }
        Next::Round {
            throttle: self.throttle,
        }
    }
}

/// A token bucket for the bandwidth cap: bytes may be written while it holds tokens; a
/// write may overdraw it, and the debt is paid back before the next one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    bytes_per_ms: f64,
    burst: f64,
    tokens: f64,
    at_ms: f64,
}

impl TokenBucket {
    /// A bucket that refills at `bytes_per_s`, holding at most 50 ms of it.
    #[must_use]
    pub fn new(bytes_per_s: u64, now_ms: f64) -> Self {
        let bytes_per_ms = bytes_per_s.max(1) as f64 / 1000.0;
        let burst = bytes_per_ms * 50.0;
        Self {
            bytes_per_ms,
            burst,
            tokens: burst,
            at_ms: now_ms,
        }
    }

    /// Refills up to `now_ms`.
    pub fn refill(&mut self, now_ms: f64) {
        if now_ms > self.at_ms {
            self.tokens = (self.tokens + (now_ms - self.at_ms) * self.bytes_per_ms).min(self.burst);
            self.at_ms = now_ms;
        }
    }

    /// Whether a write may go now.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.tokens > 0.0
    }

    /// Takes `bytes` (possibly into debt).
    pub fn take(&mut self, bytes: u64) {
        self.tokens -= bytes as f64;
    }

    /// When the bucket is ready again (ms on the same clock), if it is not now.
    #[must_use]
    pub fn ready_at(&self) -> Option<f64> {
        (!self.ready()).then(|| self.at_ms + (-self.tokens) / self.bytes_per_ms + 0.001)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(round: u32, bytes: u64, ms: f64, dirtied: u64) -> RoundFigures {
        RoundFigures {
            round,
            bytes,
            ms,
            dirtied,
        }
    }

    #[test]
    fn stops_when_the_rest_fits_the_downtime() {
        let mut c = Convergence::new(30, 30, true);
        // 1 GB/s = 1e6 bytes/ms: 30 ms holds about 7300 pages.
        assert_eq!(
            c.after_round(figures(0, 100_000_000, 100.0, 7000)),
            Next::Switchover
        );
        let mut c = Convergence::new(30, 30, true);
        assert_eq!(
            c.after_round(figures(0, 100_000_000, 100.0, 8000)),
            Next::Round { throttle: 0 }
        );
    }

    #[test]
    fn a_slow_small_round_0_does_not_keep_a_few_dirty_pages_from_switching_over() {
        let mut c = Convergence::new(30, 30, true);
        // A small guest: round 0 sent 100 kB in 100 ms (mostly zero pages scanned).
        assert_eq!(
            c.after_round(figures(0, 100_000, 100.0, 200)),
            Next::Round { throttle: 0 }
        );
        // 11 pages in half a millisecond: the link is far faster than round 0 said.
        assert_eq!(
            c.after_round(figures(1, 11 * PAGE_SIZE as u64, 0.5, 11)),
            Next::Switchover
        );
        // A long round still sets the estimate, down as well as up.
        let mut c = Convergence::new(30, 30, true);
        c.after_round(figures(0, 100_000_000, 100.0, 1 << 20));
        c.after_round(figures(1, 10_000_000, 100.0, 1 << 20));
        assert_eq!(c.bandwidth_bytes_per_ms(), Some(100_000.0));
    }

    #[test]
    fn stops_at_the_round_limit() {
        let mut c = Convergence::new(1, 2, false);
        assert!(matches!(
            c.after_round(figures(0, 1 << 30, 1000.0, 1 << 20)),
            Next::Round { .. }
        ));
        assert_eq!(
            c.after_round(figures(1, 1 << 30, 1000.0, 1 << 20)),
            Next::Switchover
        );
    }

    #[test]
    fn throttles_step_by_step_while_dirtying_outpaces_sending() {
        let mut c = Convergence::new(1, 100, true);
        let mut seen = Vec::new();
        for round in 0..12 {
            // Sends 40 MB per round and the guest dirties 40 MB meanwhile.
            if let Next::Round { throttle } =
                c.after_round(figures(round, 40_000_000, 400.0, 10_000))
            {
                seen.push(throttle);
            }
        }
        assert_eq!(seen, [0, 0, 20, 20, 30, 30, 40, 40, 50, 50, 60, 60]);
        let mut off = Convergence::new(1, 100, false);
        for round in 0..6 {
            assert_eq!(
                off.after_round(figures(round, 40_000_000, 400.0, 10_000)),
                Next::Round { throttle: 0 }
            );
        }
    }

    #[test]
    fn the_bucket_paces_writes() {
        let mut b = TokenBucket::new(1_000_000, 0.0); // 1000 bytes per ms, 50 000 burst
        assert!(b.ready());
        b.take(150_000);
        assert!(!b.ready());
        let at = b.ready_at().unwrap();
        assert!((at - 100.0).abs() < 0.01, "{at}");
        b.refill(at);
        assert!(b.ready());
    }
}
