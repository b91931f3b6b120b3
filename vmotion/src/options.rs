//! What a caller chooses ([`MigrationOptions`], [`Security`]) and what it gets back
//! ([`MigrationStats`], [`Progress`]).

use crate::seal::ClusterKey;

/// How the stream is protected. There is no default: plaintext must be chosen explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// AES-256-GCM under per-migration keys derived from the cluster key.
    Aead(ClusterKey),
    /// A crc32 per frame; no authentication, no secrecy.
    Plaintext,
}

impl Security {
    /// The hello's security byte for this mode.
    #[must_use]
    pub fn mode(&self) -> crate::wire::SecurityMode {
        match self {
            Security::Aead(_) => crate::wire::SecurityMode::Aead,
            Security::Plaintext => crate::wire::SecurityMode::Plaintext,
        }
    }
}

/// The source's choices. `MigrationOptions::new(security)` gives the defaults below.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationOptions {
    /// Stream protection.
    pub security: Security,
    /// Stop the VM for the last round when what is left would take at most this long to
    /// send at the measured bandwidth (default 30 ms).
    pub downtime_ms_max: u64,
    /// Cap on the bytes per second written (default none).
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Abort (the VM keeps running here) when the migration has not committed by then
    /// (default 120 000 ms).
    pub time_limit_ms: u64,
    /// Switch over after this many rounds even if the downtime target is not met
    /// (default 30).
    pub rounds_max: u32,
    /// Throttle the vCPUs when the guest dirties memory faster than it can be sent
    /// (default on).
    pub auto_converge: bool,
    /// How long the source waits for `Done` after `Commit` (informational; default 5 s).
    pub done_wait_ms: u64,
}

impl MigrationOptions {
    /// The defaults, with `security`.
    #[must_use]
    pub fn new(security: Security) -> Self {
        Self {
            security,
            downtime_ms_max: 30,
            bandwidth_bytes_per_s: None,
            time_limit_ms: 120_000,
            rounds_max: 30,
            auto_converge: true,
            done_wait_ms: 5_000,
        }
    }
}

/// The destination's choices.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiveOptions {
    /// Stream protection; must be the source's.
    pub security: Security,
    /// Give up when the source sends nothing for this long (default 30 000 ms).
    pub idle_timeout_ms: u64,
}

impl ReceiveOptions {
    /// The defaults, with `security`.
    #[must_use]
    pub fn new(security: Security) -> Self {
        Self {
            security,
            idle_timeout_ms: 30_000,
        }
    }
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Hellos, authentication, CPU and memory checks.
    Handshake,
    /// Copying memory while the VM runs.
    PreCopy,
    /// The VM is paused: last pages, state, disk handover.
    Switchover,
    /// The destination runs the VM.
    Committed,
    /// Undoing a failed migration (the source resumes the VM).
    RollingBack,
}

/// A snapshot of the source's progress, given to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Where the migration is.
    pub stage: Stage,
    /// The pre-copy round in progress.
    pub round: u32,
    /// Pages still to send in this round.
    pub pages_left: u64,
    /// Pages in the guest.
    pub pages_total: u64,
    /// Bytes written so far.
    pub bytes_sent: u64,
    /// Milliseconds since the start.
    pub elapsed_ms: u64,
    /// Measured bandwidth, bytes per second.
    pub bandwidth_bytes_per_s: f64,
    /// Measured dirty rate, pages per second.
    pub dirty_pages_per_s: f64,
    /// Current vCPU throttle, percent.
    pub throttle_pct: u8,
}

/// What a migration did, as the source saw it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MigrationStats {
    /// From the first byte to the end (ms).
    pub total_ms: u64,
    /// From the first byte to `Commit` written (ms).
    pub committed_ms: u64,
    /// From pausing the VM to sending `Commit` (ms); the destination resumes on receipt.
    pub downtime_ms: f64,
    /// Bytes written to the stream.
    pub bytes_sent: u64,
    /// Bytes read from it.
    pub bytes_received: u64,
    /// Pre-copy rounds, the final one included.
    pub rounds: u32,
    /// Pages sent per round.
    pub pages_per_round: Vec<u64>,
    /// Pages sent as a zero bit.
    pub zero_pages: u64,
    /// Pages sent with their data.
    pub data_pages: u64,
    /// Pages sent in the final round, with the VM paused.
    pub final_round_pages: u64,
    /// Highest vCPU throttle used, percent.
    pub throttle_pct_max: u8,
    /// Whether the destination confirmed that it resumed (`Done`).
    pub destination_confirmed: bool,
    /// Whether the stream was encrypted.
    pub encrypted: bool,
}

/// Milliseconds as a whole number for the stats (negative and NaN give 0).
#[must_use]
pub(crate) fn whole_ms(ms: f64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to 0 first; a float past u64::MAX ms saturates, which is fine for stats"
    )]
    let whole = ms.max(0.0) as u64;
    whole
}
