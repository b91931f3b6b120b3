//! The crate's error type.

/// Result with the crate's [`Error`] as default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in vinfra-drs: bad input or a refused request.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Two objects of one kind share an id.
    #[error("duplicate {kind} id {id:?}")]
    DuplicateId {
        /// "host", "vm", "pool" or "rule".
        kind: &'static str,
        /// The repeated id.
        id: String,
    },
    /// A reference names an object that does not exist.
    #[error("{context}: unknown {kind} {id:?}")]
    UnknownId {
        /// What was looked up.
        kind: &'static str,
        /// The missing id.
        id: String,
        /// Where the reference was.
        context: String,
    },
    /// A capacity or size is zero or negative, or a value is negative.
    #[error("{context}: {field} must be {expected}, got {value}")]
    BadValue {
        /// The object.
        context: String,
        /// The field.
        field: &'static str,
        /// What is required ("> 0", ">= 0").
        expected: &'static str,
        /// The value given.
        value: i64,
    },
    /// A reservation is above its limit.
    #[error("{context}: {resource} reservation {reservation} above limit {limit}")]
    ReservationAboveLimit {
        /// The VM or pool.
        context: String,
        /// "cpu" or "mem".
        resource: &'static str,
        /// The reservation.
        reservation: i64,
        /// The limit.
        limit: i64,
    },
    /// The resource pools' parent links form a cycle.
    #[error("resource pool cycle through {pool:?}")]
    PoolCycle {
        /// A pool on the cycle.
        pool: String,
    },
    /// Two rules (or one rule with itself) cannot both hold.
    #[error("contradictory rules: {reason}")]
    ContradictoryRules {
        /// Which rules and why.
        reason: String,
    },
    /// A rule lists fewer members than it needs.
    #[error("rule {rule:?}: {reason}")]
    BadRule {
        /// The rule id.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// A cluster setting is out of range.
    #[error("setting {field}: {reason}")]
    BadSetting {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Admission control refused a power-on or a request.
    #[error("admission refused for {vm:?}: {reason}")]
    AdmissionRefused {
        /// The VM.
        vm: String,
        /// Why it cannot be admitted.
        reason: String,
    },
    /// A request names something that is not valid in this state.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why.
        reason: String,
    },
}
