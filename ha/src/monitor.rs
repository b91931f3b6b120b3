//! VM monitoring: reset a guest whose heartbeat stopped, a bounded number of times.

use std::collections::VecDeque;

use crate::config::VmMonitoring;

/// The monitoring state of one running VM.
#[derive(Debug, Clone)]
pub(crate) struct GuestWatch {
    /// Last guest heartbeat, or the (re)start: a guest gets `missed_ms` to boot.
    last_ms: u64,
    /// When it was reset, oldest first, within the window.
    resets: VecDeque<u64>,
}

impl GuestWatch {
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            last_ms: now_ms,
            resets: VecDeque::new(),
        }
    }

    pub(crate) fn heartbeat(&mut self, now_ms: u64) {
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Whether to reset the guest now; if so, the reset is counted.
    pub(crate) fn due(&mut self, now_ms: u64, m: &VmMonitoring) -> bool {
        if !m.enabled || now_ms.saturating_sub(self.last_ms) < m.missed_ms {
            return false;
        }
        while self
            .resets
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= m.window_ms)
        {
            self.resets.pop_front();
        }
        if self.resets.len() >= m.max_resets as usize {
            return false;
        }
        self.resets.push_back(now_ms);
        self.last_ms = now_ms;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_resets_in_a_window() {
        let m = VmMonitoring {
            enabled: true,
            missed_ms: 1000,
            max_resets: 2,
            window_ms: 10_000,
        };
        let mut w = GuestWatch::new(0);
        assert!(!w.due(999, &m));
        w.heartbeat(500);
        assert!(!w.due(1400, &m));
        assert!(w.due(1500, &m));
        assert!(!w.due(2000, &m), "the reset gives a new grace");
        assert!(w.due(2500, &m));
        assert!(!w.due(5000, &m), "two in the window already");
        assert!(w.due(11_500, &m), "the first left the window");
    }
}
