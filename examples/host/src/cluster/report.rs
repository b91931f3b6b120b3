//! What a host reports: one JSON object per line on stdout,
//! `{"ms": <since start>, "host": <id>, "event": "<name>", ...fields}`.
//!
//! Events: `mounted`, `verdict` (`about`, `verdict`), `vm_started` (`vm`, `pid` of its
//! process, `spawn_ms`), `power_on_refused` (`vm`, `outcome`), `vm_powered_off` (`vm`,
//! `why`, `exit`), `vm_shutdown_asked`, `vm_reset`, `vm_exited` (`vm`, its process's exit
//! `code` or `signal`), `console` (`vm`, `line`), `unplaced` (`vm`, `reason`),
//! `unmount_failed`, `ended` (`why`).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use crate::api::EventLog;

/// How many events the API's `GET /events` can go back.
const KEPT: usize = 4096;

/// The stdout reporter of one host; every event also goes to the log the host API serves.
#[derive(Debug, Clone)]
pub struct Report {
    host: u32,
    start: Instant,
    log: Arc<EventLog>,
}

impl Report {
    /// Reports for `host`, timed from `start`.
    pub fn new(host: u32, start: Instant) -> Self {
        Self {
            host,
            start,
            log: Arc::new(EventLog::new(KEPT)),
        }
    }

    /// The numbered log of the events reported so far (the last few thousand).
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Writes one event line (whole, so lines of several threads never interleave).
    pub fn event(&self, name: &str, fields: serde_json::Value) {
        let mut obj = serde_json::json!({
            "ms": self.start.elapsed().as_millis(),
            "host": self.host,
            "event": name,
        });
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.log.push(ms, name, fields.clone());
        if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
            o.extend(f);
        }
        let mut line = obj.to_string();
        line.push('\n');
        let mut out = std::io::stdout().lock();
        // Nobody reading stdout is no reason to stop a host.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}
