//! The API's errors: one enum whose variants are the answers a client branches on, each
//! with its HTTP status and a stable `code`; on the wire
//! `{"error":{"code":"vm_not_found","message":"no VM named web1"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::power::PowerState;

/// `Result` with the API's error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Why a request was refused or failed.
///
/// A [`HostService`](super::HostService) returns these; the server turns each into its
/// status code and the JSON error body.
///
/// ```
/// use vinfra_host::api::ApiError;
/// let e = ApiError::VmNotFound("web1".into());
/// assert_eq!((e.status(), e.code()), (404, "vm_not_found"));
/// assert_eq!(e.to_string(), "no VM named web1");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request could not be read (malformed JSON, unknown field, wrong type,
    /// bad query string).
    #[error("{0}")]
    Malformed(String),
    /// 400: a VM name that can never name a VM (it becomes a path on the volume).
    #[error("invalid VM name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// 401: no `Authorization: Bearer` header, or the wrong token.
    #[error(
        "missing or wrong API token (Authorization: Bearer <token derived from the cluster key>)"
    )]
    Unauthorized,
    /// 404: no VM of that name in the cluster.
    #[error("no VM named {0}")]
    VmNotFound(String),
    /// 404: no task of that id (or it is too old to be remembered).
    #[error("no task {0}")]
    TaskNotFound(String),
    /// 404: no such route.
    #[error("no route {0}")]
    RouteNotFound(String),
    /// 405: the route exists, not with this method.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// 409: a VM of that name exists already.
    #[error("a VM named {0} exists already")]
    VmExists(String),
    /// 409: the VM is not in a state that allows the operation.
    #[error("VM {vm} is {state}: {needed}")]
    WrongState {
        /// The VM.
        vm: String,
        /// Its power state.
        state: PowerState,
        /// What the operation needs, e.g. "it must be shut off".
        needed: String,
    },
    /// 409: the VM runs on another host; ask that host.
    #[error("VM {vm} runs on host {host}")]
    RunningElsewhere {
        /// The VM.
        vm: String,
        /// The host that runs it.
        host: String,
    },
    /// 413: the request body is over the server's limit.
    #[error("request body over {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 422: a value that parses but is impossible (zero memory, a bad MAC address).
    #[error("{field}: {why}")]
    InvalidValue {
        /// The field, as a JSON path (`disks[1].size_mib`).
        field: String,
        /// Why it cannot be.
        why: String,
    },
    /// 422: a migration or placement to a host that is not in the cluster.
    #[error("no host {0} in the cluster")]
    UnknownHost(String),
    /// 422: this host's CPU lacks features the VM was started with.
    #[error("VM {vm} needs CPU features this host lacks: {}", missing.join(", "))]
    CpuIncompatible {
        /// The VM.
        vm: String,
        /// The features that are missing here.
        missing: Vec<String>,
    },
    /// 422: the host cannot do this for this VM (e.g. a graceful shutdown of a guest
    /// without a shutdown path).
    #[error("{0}")]
    Unsupported(String),
    /// 504 (a failed task's error): the guest did not power off within the graceful
    /// shutdown's wait after its ACPI power button was pressed.
    #[error("VM {vm}: the guest did not power off within {timeout_ms} ms of its ACPI power button being pressed (a guest without ACPI power-button support ignores it); it still runs: stop it to power it off hard, or ask for force_after")]
    GuestTimeout {
        /// The VM.
        vm: String,
        /// How long the host waited.
        timeout_ms: u64,
    },
    /// 503: the host is shutting down or its loop does not answer.
    #[error("host unavailable: {0}")]
    Unavailable(String),
    /// 500: the host failed doing it.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::InvalidName { .. } => 400,
            Self::Unauthorized => 401,
            Self::VmNotFound(_) | Self::TaskNotFound(_) | Self::RouteNotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::VmExists(_) | Self::WrongState { .. } | Self::RunningElsewhere { .. } => 409,
            Self::TooLarge { .. } => 413,
            Self::InvalidValue { .. }
            | Self::UnknownHost(_)
            | Self::CpuIncompatible { .. }
            | Self::Unsupported(_) => 422,
            Self::Unavailable(_) => 503,
            Self::GuestTimeout { .. } => 504,
            Self::Internal(_) => 500,
        }
    }

    /// The stable machine-readable code of the JSON body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_request",
            Self::InvalidName { .. } => "invalid_name",
            Self::Unauthorized => "unauthorized",
            Self::VmNotFound(_) => "vm_not_found",
            Self::TaskNotFound(_) => "task_not_found",
            Self::RouteNotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::VmExists(_) => "vm_exists",
            Self::WrongState { .. } => "wrong_state",
            Self::RunningElsewhere { .. } => "running_elsewhere",
            Self::TooLarge { .. } => "body_too_large",
            Self::InvalidValue { .. } => "invalid_value",
            Self::UnknownHost(_) => "unknown_host",
            Self::CpuIncompatible { .. } => "cpu_incompatible",
            Self::Unsupported(_) => "unsupported",
            Self::Unavailable(_) => "unavailable",
            Self::GuestTimeout { .. } => "guest_timeout",
            Self::Internal(_) => "internal",
        }
    }

    /// The wire form.
    #[must_use]
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error as the API reports it (in error bodies and in failed tasks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`vm_not_found`, `wrong_state`, …).
    pub code: String,
    /// For people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: self.detail(),
        };
        (status, axum::Json(body)).into_response()
    }
}
