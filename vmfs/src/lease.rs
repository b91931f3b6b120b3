//! Sans-IO heartbeat lease and liveness of other hosts.
//!
//! [`Lease`] decides, from the time it is given, when this host must renew its heartbeat and
//! when it must fence itself. [`Liveness`] judges other hosts by observe-and-wait: a host is
//! dead once its heartbeat has been seen unchanged for a whole lease of *our* clock.

use crate::format::HeartbeatSlot;

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
    },
    /// Its heartbeat has not moved for a whole lease.
    Dead {
        /// Milliseconds since the heartbeat was last seen to change.
        ms_since_change: u64,
    },
}

impl Verdict {
    /// Words for refusals: "alive, heartbeat 2 s ago".
    pub fn describe(&self, lease_ms: u64) -> String {
        match *self {
            Verdict::Free => "not mounted".to_string(),
            Verdict::Alive { ms_since_change } => {
                let left = lease_ms.saturating_sub(ms_since_change);
                format!(
                    "alive, heartbeat {} s ago (lease expires in {:.1} s without renewal)",
                    ms_since_change / 1000,
                    left as f64 / 1000.0
                )
            }
            Verdict::Dead { ms_since_change } => {
                format!("dead, heartbeat {} s ago", ms_since_change / 1000)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    generation: u32,
    counter: u64,
    live: bool,
    since_ms: u64,
}

/// Observe-and-wait liveness of up to 64 hosts.
#[derive(Debug, Clone)]
pub struct Liveness {
    lease_ms: u64,
    seen: Vec<Option<Seen>>,
}

impl Liveness {
    /// A tracker for `hosts` slots.
    pub fn new(lease_ms: u64, hosts: usize) -> Self {
        Liveness {
            lease_ms,
            seen: vec![None; hosts],
        }
    }

    /// The lease used for verdicts.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Records what slot `host` holds at `now_ms` and returns the verdict.
    pub fn observe(&mut self, host: u32, slot: &HeartbeatSlot, now_ms: u64) -> Verdict {
        let Some(entry) = self.seen.get_mut(host as usize) else {
            return Verdict::Free;
        };
        let changed = match entry {
            Some(s) => {
                s.generation != slot.generation || s.counter != slot.counter || s.live != slot.live
            }
            None => true,
        };
        if changed {
            *entry = Some(Seen {
                generation: slot.generation,
                counter: slot.counter,
                live: slot.live,
                since_ms: now_ms,
            });
        }
        if !slot.live {
            return Verdict::Free;
        }
        let since = entry.map_or(now_ms, |s| s.since_ms);
        let ms = now_ms.saturating_sub(since);
        if ms >= self.lease_ms {
            Verdict::Dead {
                ms_since_change: ms,
            }
        } else {
            Verdict::Alive {
                ms_since_change: ms,
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
    fn liveness_needs_a_whole_lease_of_silence() {
        let mut lv = Liveness::new(1000, 64);
        let mut s = HeartbeatSlot {
            live: true,
            host: 2,
            generation: 1,
            counter: 5,
            ..HeartbeatSlot::default()
        };
        assert!(matches!(lv.observe(2, &s, 100), Verdict::Alive { .. }));
        assert!(matches!(lv.observe(2, &s, 1099), Verdict::Alive { .. }));
        s.counter = 6;
        assert!(matches!(lv.observe(2, &s, 1100), Verdict::Alive { .. }));
        assert!(matches!(lv.observe(2, &s, 2100), Verdict::Dead { .. }));
        s.live = false;
        assert_eq!(lv.observe(2, &s, 2200), Verdict::Free);
    }
}
