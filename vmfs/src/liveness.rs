//! Liveness of other hosts by observe-and-wait: a host is dead once its heartbeat has been
//! seen unchanged for a whole lease of *our* clock (sans-IO: the caller reads the slots).

use crate::format::HeartbeatSlot;
use crate::lease::Verdict;

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
                lease_ms: self.lease_ms,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
