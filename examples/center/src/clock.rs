//! Time as the center reads it: a function handed in, so that tests can move it (session
//! expiry) and library logic never reads the wall clock itself.

use std::sync::Arc;

/// Milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(vinfra_host::api::system_now_ms)
}
