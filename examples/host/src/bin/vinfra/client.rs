//! The command's errors; the HTTP client itself is the host library's
//! ([`vinfra_host::api::client`]).

use vinfra_host::api::client::ClientError;
use vinfra_host::api::ErrorDetail;

pub use vinfra_host::api::client::{api_error, Client};

/// Why a command failed (printed as `vinfra: <message>`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The host answered with an error, could not be reached, or its address is wrong.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The management server answered with an error or could not be reached.
    #[error(transparent)]
    Center(#[from] crate::center::client::CenterError),
    /// Something local failed (printing, the console's socket).
    #[error("{0}")]
    Transport(String),
    /// The command line or its files.
    #[error("{0}")]
    Usage(String),
    /// A task ended in error.
    #[error("task {id} ({op} {vm}) failed: {}", .detail.message)]
    TaskFailed {
        /// The task.
        id: u64,
        /// Its operation (`migrate`, or the center's `vm.relocate`).
        op: String,
        /// Its VM.
        vm: String,
        /// Why.
        detail: ErrorDetail,
    },
}
