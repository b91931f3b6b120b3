//! The REST API (vSphere Automation style; README.md lists the routes): axum handlers,
//! one file per resource family, errors as JSON ([`error`]), the OpenAPI document
//! ([`openapi`]). Every handler that changes something checks the caller's role and
//! records an event with the caller's name.

mod activity;
pub mod backup;
pub mod backup_files;
pub mod backup_runs;
mod console;
pub mod drs;
pub mod error;
pub mod ha;
mod inventory;
mod metrics;
pub mod openapi;
mod pools;
mod rules;
mod session;
mod users;
mod vm;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::routing::{any, get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::auth::{Auth, AuthError, Principal};
use crate::clock::Clock;
use crate::events::Events;
use crate::hosts::HostPool;
use crate::store::Store;
use crate::tasks::Tasks;
pub use error::{ApiError, ApiResult, ErrorBody, ErrorInfo};

/// The header that carries a session token (as in the vSphere Automation API).
pub const SESSION_HEADER: &str = "vinfra-api-session-id";
/// The cookie that carries it for the browser (accepted for GET only).
pub const SESSION_COOKIE: &str = "vinfra_session";

/// What every handler reaches.
#[derive(Clone)]
pub struct AppState {
    /// The inventory.
    pub store: Arc<dyn Store>,
    /// Users and sessions.
    pub auth: Auth,
    /// The event log.
    pub events: Events,
    /// Center tasks.
    pub tasks: Tasks,
    /// The hosts' clients.
    pub hosts: HostPool,
    /// Time.
    pub clock: Clock,
    /// Whether the session cookie is marked `Secure` (served over HTTPS).
    pub secure_cookies: bool,
    /// The hosts' poll interval (a VM no host reported for 3 polls is stale).
    pub poll_ms: u64,
    /// The backup jobs whose run is in progress.
    pub backup_runs: backup_runs::BackupRuns,
    /// Held by each change of resource pools and DRS rules from its checks to its write:
    /// two changes checked against the same inventory could together break what each
    /// alone keeps (a parent's reservation, two rules that contradict).
    pub pool_rule_writes: Arc<tokio::sync::Mutex<()>>,
    /// Per cluster, the last DRS pass's recommendations (VM, destination): the next pass
    /// keeps them while they stay about as good (`vinfra_drs::balance_keeping`), so the
    /// DRS card does not flip between two about equally loaded hosts.
    pub drs_last: Arc<std::sync::Mutex<LastRecommendations>>,
}

/// Per cluster name, its last DRS pass's (VM, destination) pairs.
pub type LastRecommendations = std::collections::HashMap<String, Vec<(String, String)>>;

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }
}

/// The API's routes (the web console's files are added below them by the server).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/session",
            post(session::login)
                .get(session::whoami)
                .delete(session::logout),
        )
        .route("/api/vinfra/users", get(users::list).post(users::add))
        .route("/api/vcenter/datacenter", get(inventory::datacenters))
        .route("/api/vcenter/cluster", get(inventory::clusters))
        .route(
            "/api/vcenter/cluster/{cluster}",
            get(inventory::cluster).patch(inventory::patch_cluster),
        )
        .route(
            "/api/vcenter/cluster/{cluster}/drs/recommendations",
            get(drs::recommendations_of).post(drs::apply),
        )
        .route("/api/vcenter/cluster/{cluster}/drs", post(drs::run))
        .route("/api/vcenter/cluster/{cluster}/ha", get(ha::status))
        .route(
            "/api/vcenter/cluster/{cluster}/rules",
            get(rules::list).post(rules::create),
        )
        .route(
            "/api/vcenter/cluster/{cluster}/rules/{rule}",
            get(rules::get).patch(rules::patch).delete(rules::delete),
        )
        .route(
            "/api/vcenter/resource-pool",
            get(pools::list).post(pools::create),
        )
        .route(
            "/api/vcenter/resource-pool/{pool}",
            get(pools::get)
                .patch(pools::patch)
                .delete(pools::delete)
                .post(pools::action),
        )
        .route(
            "/api/vcenter/host",
            get(inventory::hosts).post(inventory::add_host),
        )
        .route(
            "/api/vcenter/host/{host}",
            get(inventory::host)
                .delete(inventory::delete_host)
                .post(inventory::host_action),
        )
        .route("/api/vcenter/vm", get(vm::list).post(vm::create))
        .route(
            "/api/vcenter/vm/{vm}",
            get(vm::get)
                .delete(vm::delete)
                .post(vm::action)
                .patch(ha::patch_vm),
        )
        .route("/api/vcenter/vm/{vm}/power", post(vm::power))
        .route("/api/vcenter/vm/{vm}/console", get(console::console))
        .route("/api/cis/tasks", get(activity::tasks))
        .route("/api/cis/tasks/{task}", get(activity::task))
        .route("/api/vinfra/events", get(activity::events))
        .route("/api/vinfra/events/stream", get(activity::event_stream))
        .route("/api/vinfra/stats/{kind}/{name}", get(activity::stats))
        .route(
            "/api/vinfra/backup/job",
            get(backup::list).post(backup::create),
        )
        .route(
            "/api/vinfra/backup/job/{job}",
            get(backup::get)
                .patch(backup::patch)
                .delete(backup::delete)
                .post(backup::action),
        )
        .route("/api/vinfra/backup/backups", get(backup::backups))
        .route("/api/vinfra/backup/files", get(backup_files::files))
        .route("/api/vinfra/backup/file", get(backup_files::file))
        .route("/api/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics::metrics))
        // Unknown API paths are JSON errors; other paths are the web console's.
        .route("/api/{*rest}", any(not_found))
        .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

/// Runs a blocking call (a host's API, argon2) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("blocking call: {e}")))
}

/// The session token of a request: the header, a bearer token, or (GET only) the cookie.
fn session_token(parts: &Parts) -> Option<String> {
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(token) = header(SESSION_HEADER) {
        return Some(token.to_string());
    }
    if let Some(token) =
        header(header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(token.trim().to_string());
    }
    // A cookie is sent by the browser on its own: accepted only where nothing changes
    // (GET), so that another site cannot make a user's browser act (CSRF).
    if parts.method == Method::GET {
        return cookie(parts, SESSION_COOKIE);
    }
    None
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = session_token(parts).ok_or(AuthError::NoSession)?;
        Ok(state.auth.authenticate(&token, state.now_ms())?)
    }
}

/// A JSON body whose errors are the API's (400 naming the field where serde says it).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::malformed(e.body_text(), None))?;
        let bytes = if bytes.is_empty() {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
            let message = e.to_string();
            ApiError::malformed(format!("request body: {message}"), named_field(&message))
        })
    }
}

/// A query string whose errors are the API's.
#[derive(Debug)]
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_like(query).map(QueryArgs)
    }
}

fn serde_urlencoded_like<T: DeserializeOwned>(query: &str) -> ApiResult<T> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::malformed("bad query string", None))?,
    )
    .map(|q| q.0)
    .map_err(|e| {
        let message = e.body_text();
        ApiError::malformed(message.clone(), named_field(&message))
    })
}

/// The field serde names in its message (``unknown field `x` `` and the like).
fn named_field(message: &str) -> Option<String> {
    // Only these messages name a field; others (``unknown variant `x` ``) name a value.
    if !["unknown field", "missing field", "duplicate field"]
        .iter()
        .any(|p| message.contains(p))
    {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use super::named_field;

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            named_field("unknown field `colour`, expected one of `a`").as_deref(),
            Some("colour")
        );
        assert_eq!(
            named_field("missing field `host` at line 1").as_deref(),
            Some("host")
        );
        assert_eq!(named_field("expected value at line 1"), None);
        assert_eq!(named_field("unknown variant `root`, expected `a`"), None);
    }
}
