//! Sans-IO heartbeat lease, and the verdict on another host's liveness.
//!
//! [`Lease`] decides, from the time it is given, when this host must renew its heartbeat and
//! when it must fence itself. A [`Verdict`] is what this host believes about another one;
//! the `liveness` module reaches it by observe-and-wait. This module depends on no
//! other of the crate, so the error type can carry a verdict.

use std::fmt;

/// What the host must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Write the heartbeat now.
    Renew,
    /// Nothing to do before this time (ms).
    WaitUntil(u64),
    /// The last renewal is half a lease old: stop using every lock and tell the caller.
    Fence,
}

/// The lease of this host.
#[derive(Debug, Clone)]
pub struct Lease {
    interval_ms: u64,
    lease_ms: u64,
    last_renew_ms: u64,
    last_attempt_ms: u64,
    fenced: bool,
}

impl Lease {
    /// A lease just renewed at `now_ms`.
    pub fn new(interval_ms: u64, lease_ms: u64, now_ms: u64) -> Self {
        Lease {
            interval_ms,
            lease_ms,
            last_renew_ms: now_ms,
            last_attempt_ms: now_ms,
            fenced: false,
        }
    }

    /// The next action at `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> LeaseAction {
        if self.fenced || now_ms >= self.fence_at() {
            self.fenced = true;
            return LeaseAction::Fence;
        }
        let due = self.last_attempt_ms.saturating_add(self.interval_ms);
        if now_ms >= due {
            LeaseAction::Renew
        } else {
            LeaseAction::WaitUntil(due.min(self.fence_at()))
        }
    }

    /// A renewal written at `now_ms` succeeded.
    pub fn renewed(&mut self, now_ms: u64) {
        if !self.fenced {
            self.last_renew_ms = self.last_renew_ms.max(now_ms);
        }
        self.last_attempt_ms = now_ms;
    }

    /// A renewal at `now_ms` failed.
    pub fn renew_failed(&mut self, now_ms: u64) {
        self.last_attempt_ms = now_ms;
    }

    /// Whether this host may still act under its locks at `now_ms`.
    pub fn valid(&self, now_ms: u64) -> bool {
        !self.fenced && now_ms < self.fence_at()
    }

    /// Fences now (the host knows it cannot act safely any more).
    pub fn fence(&mut self) {
        self.fenced = true;
    }

    /// Whether the host has fenced itself.
    pub fn fenced(&self) -> bool {
        self.fenced
    }

    fn fence_at(&self) -> u64 {
        self.last_renew_ms.saturating_add(self.lease_ms / 2)
    }
}

/// What this host believes about another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The slot is free: the host is not mounted.
    Free,
    /// Its heartbeat moved `ms_since_change` ago (or was first seen then).
    Alive {
        /// Milliseconds since the heartbeat was last seen to change.
        ms_since_change: u64,
        /// The lease it was judged against: it is dead once `ms_since_change` reaches it.
        lease_ms: u64,
    },
    /// Its heartbeat has not moved for a whole lease.
    Dead {
        /// Milliseconds since the heartbeat was last seen to change.
        ms_since_change: u64,
    },
}

impl Verdict {
    /// Words for refusals, judged against `lease_ms` ("alive, heartbeat 2 s ago ..."); the
    /// same as `Display` when `lease_ms` is the verdict's own lease.
    pub fn describe(&self, lease_ms: u64) -> String {
        match *self {
            Verdict::Alive {
                ms_since_change, ..
            } => Verdict::Alive {
                ms_since_change,
                lease_ms,
            }
            .to_string(),
            v => v.to_string(),
        }
    }

    /// Whether the host may still be using its locks (alive, lease not yet run out).
    pub fn is_alive(&self) -> bool {
        matches!(self, Verdict::Alive { .. })
    }
}

impl fmt::Display for Verdict {
    /// Words for refusals: "alive, heartbeat 2 s ago (lease expires in 6.0 s without
    /// renewal)", "dead, heartbeat 9 s ago", "not mounted".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Verdict::Free => f.write_str("not mounted"),
            Verdict::Alive {
                ms_since_change,
                lease_ms,
            } => {
                let left = lease_ms.saturating_sub(ms_since_change);
                write!(
                    f,
                    "alive, heartbeat {} s ago (lease expires in {:.1} s without renewal)",
                    ms_since_change / 1000,
                    left as f64 / 1000.0
                )
            }
            Verdict::Dead { ms_since_change } => {
                write!(f, "dead, heartbeat {} s ago", ms_since_change / 1000)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_renews_then_fences_at_half_lease() {
        let mut l = Lease::new(1000, 8000, 0);
        assert_eq!(l.poll(500), LeaseAction::WaitUntil(1000));
        assert_eq!(l.poll(1000), LeaseAction::Renew);
        l.renew_failed(1000);
        assert!(l.valid(3999));
        assert_eq!(l.poll(2000), LeaseAction::Renew);
        l.renew_failed(2000);
        assert_eq!(l.poll(4000), LeaseAction::Fence);
        assert!(!l.valid(4000));
        l.renewed(4001);
        assert!(l.fenced(), "a fence is final");
    }

    #[test]
    fn verdict_words_stay_what_refusals_said() {
        let v = Verdict::Alive {
            ms_since_change: 2500,
            lease_ms: 8000,
        };
        assert_eq!(
            v.to_string(),
            "alive, heartbeat 2 s ago (lease expires in 5.5 s without renewal)"
        );
        assert_eq!(v.describe(8000), v.to_string());
        assert_eq!(
            Verdict::Dead {
                ms_since_change: 9000
            }
            .to_string(),
            "dead, heartbeat 9 s ago"
        );
        assert_eq!(Verdict::Free.to_string(), "not mounted");
    }
}
