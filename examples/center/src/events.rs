//! The event log: every action with its user, and the hosts' events copied in; stored,
//! then fanned out live to the event streams (SSE).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::{Event, NewEvent, Severity};
use crate::store::{Result, Store};

/// How many events a slow stream may fall behind before it misses some (it is told to
/// reload from the store).
pub const LIVE_QUEUE: usize = 1024;

/// The event log.
#[derive(Clone)]
pub struct Events {
    store: Arc<dyn Store>,
    live: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("listeners", &self.live.receiver_count())
            .finish()
    }
}

impl Events {
    /// A log over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            live: broadcast::channel(LIVE_QUEUE).0,
        }
    }

    /// Records an event and tells the listeners.
    pub fn record(&self, event: &NewEvent) -> Result<Event> {
        let event = self.store.add_event(event)?;
        tracing::info!(kind = %event.event.kind, target = %event.event.target, user = ?event.event.user, "{}", event.event.message);
        // No listener is fine.
        let _ = self.live.send(event.clone());
        Ok(event)
    }

    /// Records what a user did.
    pub fn action(
        &self,
        now_ms: u64,
        user: &str,
        kind: &str,
        target: &str,
        message: String,
        data: serde_json::Value,
    ) -> Result<Event> {
        self.record(&NewEvent {
            time_ms: now_ms,
            severity: Severity::Info,
            kind: kind.to_string(),
            target: target.to_string(),
            user: Some(user.to_string()),
            host: None,
            message,
            data,
        })
    }

    /// Tells the listeners of events already stored (the hosts' events, stored in the
    /// transaction that moves their cursor).
    pub fn announce(&self, events: Vec<Event>) {
        for event in events {
            let _ = self.live.send(event);
        }
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// The store (for reading back).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
