//! The host's event log as `GET /events?after=SEQ` serves it: the events `vinfra-host run`
//! prints on stdout, numbered, the last [`EventLog`]'s capacity of them kept.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostEvent {
    /// Its number: 1 for the host's first event, one more for each next.
    pub seq: u64,
    /// When, ms since the host started.
    pub ms: u64,
    /// What (`vm_started`, `verdict`, `vm_exited`, …).
    pub event: String,
    /// Its fields (`vm`, `why`, …), as the stdout line has them.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A bounded, numbered log of events (for a [`HostService`](super::HostService) to keep).
///
/// ```
/// use vinfra_host::api::EventLog;
/// let log = EventLog::new(2);
/// log.push(5, "mounted", serde_json::json!({}));
/// log.push(9, "vm_started", serde_json::json!({"vm": "web1"}));
/// log.push(12, "vm_exited", serde_json::json!({"vm": "web1"}));
/// let after1: Vec<u64> = log.after(1, 100).iter().map(|e| e.seq).collect();
/// assert_eq!(after1, [2, 3]);
/// assert_eq!(log.after(0, 100).len(), 2); // the first fell out
/// ```
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<HostEvent>)>,
    capacity: usize,
}

impl EventLog {
    /// An empty log that keeps the last `capacity` events (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new((0, VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// Appends an event; returns its number.
    pub fn push(&self, ms: u64, event: &str, data: serde_json::Value) -> u64 {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.0 += 1;
        let seq = inner.0;
        inner.1.push_back(HostEvent {
            seq,
            ms,
            event: event.to_string(),
            data,
        });
        while inner.1.len() > self.capacity {
            inner.1.pop_front();
        }
        seq
    }

    /// The events numbered above `after`, oldest first, at most `limit`.
    #[must_use]
    pub fn after(&self, after: u64, limit: usize) -> Vec<HostEvent> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner
            .1
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }
}
