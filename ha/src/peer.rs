//! What one agent knows about one peer, and its verdict (README "Verdicts").

use serde::{Deserialize, Serialize};

use crate::inventory::SlotReading;

/// What an agent believes about a host (a peer, or itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Heard on the network.
    Alive,
    /// Silent on the network, its datastore heartbeat moves: its VMs keep running there.
    Partitioned,
    /// Silent on both channels past the timeout: its VMs are restarted elsewhere.
    Failed,
    /// Silent on the network and we cannot read the datastore: nothing is done.
    Unknown,
    /// (Ourselves) we hear no peer and reach no isolation address.
    Isolated,
    /// (Ourselves) our datastore lease lapsed: our VMs are stopped.
    Fenced,
}

/// Observe-and-wait on a heartbeat slot: when it was last seen to change, on our clock.
#[derive(Debug, Clone, Copy)]
struct SlotSeen {
    generation: u32,
    counter: u64,
    live: bool,
    since_ms: u64,
}

/// One peer.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) id: u32,
    /// When its last accepted heartbeat arrived (the agent's start at first: a grace).
    pub(crate) heard_ms: u64,
    /// The last (incarnation, sequence) accepted from it.
    pub(crate) accepted: Option<(u64, u64)>,
    /// What its last heartbeat said.
    pub(crate) lease_valid: bool,
    pub(crate) isolated: bool,
    slot: Option<SlotSeen>,
    pub(crate) verdict: Verdict,
}

impl Peer {
    pub(crate) fn new(id: u32, now_ms: u64) -> Self {
        Self {
            id,
            heard_ms: now_ms,
            accepted: None,
            lease_valid: true,
            isolated: false,
            slot: None,
            verdict: Verdict::Alive,
        }
    }

    /// Whether a packet numbered (incarnation, seq) is newer than all accepted so far.
    pub(crate) fn fresh(&self, incarnation: u64, seq: u64) -> bool {
        self.accepted.is_none_or(|a| (incarnation, seq) > a)
    }

    pub(crate) fn observe_slot(&mut self, s: &SlotReading, now_ms: u64) {
        let changed = self.slot.is_none_or(|o| {
            o.generation != s.generation || o.counter != s.counter || o.live != s.live
        });
        if changed {
            self.slot = Some(SlotSeen {
                generation: s.generation,
                counter: s.counter,
                live: s.live,
                since_ms: now_ms,
            });
        }
    }

    pub(crate) fn heard_within(&self, now_ms: u64, timeout_ms: u64) -> bool {
        now_ms.saturating_sub(self.heard_ms) < timeout_ms
    }

    /// The verdict at `now_ms`. `datastore_fresh`: our own reads of the datastore are
    /// recent, so an unchanged slot means the peer did not write.
    pub(crate) fn judge(&self, now_ms: u64, timeout_ms: u64, datastore_fresh: bool) -> Verdict {
        if self.heard_within(now_ms, timeout_ms) {
            return Verdict::Alive;
        }
        if !datastore_fresh {
            return Verdict::Unknown;
        }
        match self.slot {
            None => Verdict::Unknown,
            // Unmounted: the host left the volume.
            Some(s) if !s.live => Verdict::Failed,
            Some(s) if now_ms.saturating_sub(s.since_ms) >= timeout_ms => Verdict::Failed,
            Some(_) => Verdict::Partitioned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(counter: u64) -> SlotReading {
        SlotReading {
            host: 2,
            generation: 1,
            counter,
            live: true,
        }
    }

    #[test]
    fn the_verdict_table() {
        let t = 2500;
        let mut p = Peer::new(2, 0);
        p.observe_slot(&slot(1), 0);
        assert_eq!(
            p.judge(1000, t, true),
            Verdict::Alive,
            "within the start grace"
        );
        // Silent on the network, the datastore heartbeat moves: partitioned.
        p.observe_slot(&slot(2), 2000);
        assert_eq!(p.judge(3000, t, true), Verdict::Partitioned);
        // Unreadable datastore: no judgement.
        assert_eq!(p.judge(3000, t, false), Verdict::Unknown);
        // Still for a whole timeout: failed.
        p.observe_slot(&slot(2), 4400);
        assert_eq!(p.judge(4400, t, true), Verdict::Partitioned);
        assert_eq!(p.judge(4500, t, true), Verdict::Failed);
        // Heard again: alive, whatever the datastore says.
        p.heard_ms = 4600;
        assert_eq!(p.judge(4700, t, true), Verdict::Alive);
    }

    #[test]
    fn replays_and_old_incarnations_are_not_fresh() {
        let mut p = Peer::new(2, 0);
        assert!(p.fresh(5, 1));
        p.accepted = Some((5, 10));
        assert!(!p.fresh(5, 10));
        assert!(!p.fresh(5, 3));
        assert!(!p.fresh(4, 99));
        assert!(p.fresh(5, 11));
        assert!(p.fresh(6, 1));
    }
}
