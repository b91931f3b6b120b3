//! The API's errors: `{"error": {"kind": "...", "message": "...", "field": "..."}}` with
//! a 4xx or 5xx status. Nothing has changed when the status is 4xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vinfra_host::api::client::ClientError;

use crate::auth::AuthError;
use crate::store::StoreError;

/// The error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    /// A stable word to branch on (`invalid_field`, `not_found`, `forbidden`…).
    pub kind: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, as a JSON path or query parameter name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub info: ErrorInfo,
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with this status and kind.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            info: ErrorInfo {
                kind: kind.to_string(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// 400/422: `field` is wrong.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        e.info.field = Some(field.to_string());
        e
    }

    /// 400: the request cannot be read.
    pub fn malformed(message: impl Into<String>, field: Option<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "malformed", message);
        e.info.field = field;
        e
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The same error, naming the request field at fault (a 409 about one field).
    #[must_use]
    pub fn naming(mut self, field: &str) -> Self {
        self.info.field = Some(field.to_string());
        self
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.info })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(what) => Self::conflict(format!("{what} exists already")),
            e => Self::internal(e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials | AuthError::NoSession => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
            }
            AuthError::Forbidden { .. } => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            AuthError::BadPassword(why) => Self::field("password", why),
            AuthError::Store(e) => e.into(),
            e => Self::internal(e.to_string()),
        }
    }
}

impl From<ClientError> for ApiError {
    /// A host's error keeps its status (a 4xx of the host is the request's fault; the
    /// host changed nothing); a host that cannot be reached is 502.
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { status, detail } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let status = if status == StatusCode::UNAUTHORIZED {
                    // The center's own token was refused: not the user's fault.
                    StatusCode::BAD_GATEWAY
                } else {
                    status
                };
                let mut e = Self::new(status, &detail.code, detail.message.clone());
                if detail.code == "invalid_value" {
                    e.info.field = detail
                        .message
                        .split(':')
                        .next()
                        .map(|f| format!("spec.{f}"));
                }
                e
            }
            e => Self::new(StatusCode::BAD_GATEWAY, "host_unreachable", e.to_string()),
        }
    }
}

impl From<vinfra_host::api::ApiError> for ApiError {
    /// A host-side validation run here (a VM spec) before anything is sent.
    fn from(e: vinfra_host::api::ApiError) -> Self {
        use vinfra_host::api::ApiError as H;
        match &e {
            H::InvalidValue { field, why } => {
                Self::field(&format!("spec.{field}"), format!("spec.{field}: {why}"))
            }
            H::InvalidName { .. } => Self::field("spec.name", e.to_string()),
            _ => {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                Self::new(status, e.code(), e.to_string())
            }
        }
    }
}
