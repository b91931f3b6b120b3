//! Typed errors: a refused packet, a bad configuration.

/// Why a datagram was not accepted as a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer bytes than a header and a tag.
    #[error("packet of {0} bytes is too short")]
    Short(usize),
    /// Not "VHA1".
    #[error("not a vinfra-ha packet (magic)")]
    Magic,
    /// The body length does not match the datagram.
    #[error("body length {declared} does not match a datagram of {got} bytes")]
    Length {
        /// Declared body length.
        declared: usize,
        /// Datagram length.
        got: usize,
    },
    /// Wrong key, or changed in transit.
    #[error("tag does not match (another cluster key, or changed in transit)")]
    Tag,
    /// Unknown flags.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    /// Unknown kind.
    #[error("unknown packet kind {0}")]
    Kind(u8),
    /// A malformed body.
    #[error("malformed {0} body")]
    Body(&'static str),
    /// A cluster key that is not one.
    #[error("cluster key: expected {0}")]
    Key(&'static str),
}

/// A configuration that cannot be used, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ha configuration: {field}: {problem}")]
pub struct ConfigError {
    /// The field, as written in the JSON (`hosts[2].id`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
