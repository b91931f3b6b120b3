//! The HTTP server: axum on a tokio runtime of its own threads, so the host loop stays
//! synchronous. Every route is under [`PREFIX`]; every answer that is not a success is
//! the JSON error body, also for what axum itself would refuse in plain text (a body
//! over the limit, a bad path or query, an unknown route or method).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::OpenApi;

use super::auth::ApiToken;
use super::error::{ApiError, Result};
use super::events::HostEvent;
use super::openapi::BearerToken;
use super::service::HostService;
use super::tasks::{TaskHandle, TaskInfo, TaskTable};
use super::types::{
    validate_name, BackupRequest, CloneRequest, HostInfo, IncomingReady, IncomingRequest,
    MaintenanceRequest, MigrateRequest, OpKind, RestoreDiskRequest, RestoreRequest, RevertRequest,
    ShutdownRequest, SnapshotRequest, TaskStarted, VmInfo, VmOp, VmPatch, VmSpec,
};

/// Where every route lives.
pub const PREFIX: &str = "/api/v1";
/// Largest request body (bytes); larger ones are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Most events one `GET /events` returns.
pub const EVENTS_LIMIT_MAX: usize = 1000;
/// Chunks queued each way on a console.
pub const CONSOLE_QUEUE: usize = 256;
/// How long `stop` lets open requests finish before it closes them.
const STOP_GRACE: Duration = Duration::from_secs(2);

mod backup_routes;
mod console_ws;

use backup_routes::{backup_file, backup_files, backups, forget_backups};
use console_ws::console;

#[derive(Clone)]
pub(super) struct AppState {
    service: Arc<dyn HostService>,
    tasks: Arc<TaskTable>,
    token: Arc<ApiToken>,
    /// Becomes true when the server stops: open consoles close.
    stopping: watch::Receiver<bool>,
    /// Open consoles: the server waits for them to have sent their close frame before
    /// its runtime ends (upgraded connections are not axum's graceful shutdown's).
    consoles: Arc<AtomicUsize>,
}

/// Runs a call of the service on the blocking pool: the host may block on its loop.
async fn call<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&dyn HostService) -> Result<T> + Send + 'static,
) -> Result<T> {
    let service = Arc::clone(&st.service);
    tokio::task::spawn_blocking(move || f(service.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(format!("the host's handler failed: {e}")))?
}

/// A JSON body read with our limit and our errors (axum's `Json` answers in text).
pub(super) struct Body<T>(T);

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit: BODY_LIMIT }
        } else {
            ApiError::Malformed(r.body_text())
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Malformed(format!("request body: {e}")))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = body_bytes(req, state).await?;
        parse(&bytes).map(Body)
    }
}

/// An operation's body that may be left out (empty means `{}`).
pub(super) struct OptionalBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse(&bytes).map(OptionalBody)
    }
}

/// The body of start, stop, reset and shutdown: nothing, or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoArguments {}

/// A VM name from the path, checked before the host sees it.
pub(super) struct VmName(String);

impl<S: Send + Sync> FromRequestParts<S> for VmName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Malformed(e.body_text()))?;
        validate_name(&name).map_err(|why| ApiError::InvalidName {
            name: name.clone(),
            why,
        })?;
        Ok(Self(name))
    }
}

async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if st.token.authorizes(presented) {
        next.run(req).await
    } else {
        let mut response = ApiError::Unauthorized.into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_string())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// `GET /host`
#[utoipa::path(get, path = "/api/v1/host", tag = "host",
    responses((status = 200, body = HostInfo), (status = 401, body = super::ErrorBody)))]
pub(super) async fn host(State(st): State<AppState>) -> Result<Json<HostInfo>> {
    call(&st, |s| s.host_info()).await.map(Json)
}

/// `GET /vms`
#[utoipa::path(get, path = "/api/v1/vms", tag = "vms",
    responses((status = 200, body = Vec<VmInfo>), (status = 401, body = super::ErrorBody)))]
pub(super) async fn list_vms(State(st): State<AppState>) -> Result<Json<Vec<VmInfo>>> {
    call(&st, |s| s.list_vms()).await.map(Json)
}

/// `POST /vms`: define a VM (shut off).
#[utoipa::path(post, path = "/api/v1/vms", tag = "vms", request_body = VmSpec,
    responses((status = 201, body = VmInfo), (status = 400, body = super::ErrorBody),
        (status = 409, description = "exists already", body = super::ErrorBody),
        (status = 422, description = "impossible value", body = super::ErrorBody)))]
pub(super) async fn create_vm(
    State(st): State<AppState>,
    Body(spec): Body<VmSpec>,
) -> Result<(StatusCode, Json<VmInfo>)> {
    spec.validate()?;
    let info = call(&st, move |s| s.create_vm(spec)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /vms/NAME`
#[utoipa::path(get, path = "/api/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path, description = "the VM")),
    responses((status = 200, body = VmInfo), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get_vm(
    State(st): State<AppState>,
    VmName(name): VmName,
) -> Result<Json<VmInfo>> {
    call(&st, move |s| s.vm(&name)).await.map(Json)
}

/// `DELETE /vms/NAME`: only when off.
#[utoipa::path(delete, path = "/api/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path, description = "the VM")),
    responses((status = 204), (status = 404, body = super::ErrorBody),
        (status = 409, description = "not off", body = super::ErrorBody)))]
pub(super) async fn delete_vm(
    State(st): State<AppState>,
    VmName(name): VmName,
) -> Result<StatusCode> {
    call(&st, move |s| s.delete_vm(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /vms/NAME`: changes the VM's HA settings (restart priority, isolation
/// response) on the volume, whether it runs or not.
#[utoipa::path(patch, path = "/api/v1/vms/{name}", tag = "vms", request_body = VmPatch,
    params(("name" = String, Path, description = "the VM")),
    responses((status = 200, body = VmInfo), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 422, description = "nothing to change", body = super::ErrorBody)))]
pub(super) async fn patch_vm(
    State(st): State<AppState>,
    VmName(name): VmName,
    Body(patch): Body<VmPatch>,
) -> Result<Json<VmInfo>> {
    if patch.is_empty() {
        return Err(ApiError::InvalidValue {
            field: "ha".into(),
            why: "nothing to change: give ha.priority or ha.isolation_response".into(),
        });
    }
    call(&st, move |s| s.patch_vm(&name, patch)).await.map(Json)
}

/// Starts an operation as a task: listed only if the host accepts it.
async fn start_op(
    st: &AppState,
    name: String,
    op: VmOp,
) -> Result<(StatusCode, Json<TaskStarted>)> {
    op.validate()?;
    let kind = op.kind();
    let vm = name.clone();
    start_task(st, kind, &vm, move |s, task| s.start_op(&name, op, task)).await
}

/// Makes a task, hands it to the host through `start`, and publishes it if the host took
/// it (`202` with its id) or forgets it if the host refused (the refusal).
///
/// Published from the blocking call itself, not after it: a client that goes away while
/// the host starts the operation drops this handler, and the operation it started must
/// still be listed (a management server that died meanwhile looks for it there).
async fn start_task(
    st: &AppState,
    kind: OpKind,
    vm: &str,
    start: impl FnOnce(&dyn HostService, TaskHandle) -> Result<()> + Send + 'static,
) -> Result<(StatusCode, Json<TaskStarted>)> {
    let task = st.tasks.create(kind, vm);
    let id = task.id();
    let tasks = Arc::clone(&st.tasks);
    call(st, move |s| {
        let started = start(s, task);
        match &started {
            Ok(()) => tasks.publish(id),
            Err(_) => tasks.discard(id),
        }
        started
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(TaskStarted { task: id })))
}

/// Handlers of the operations: one route each, so the OpenAPI document lists each body.
macro_rules! op_route {
    ($fn:ident, $path:literal, $doc:literal, no_body, $op:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "operations",
            params(("name" = String, Path, description = "the VM")),
            responses((status = 202, body = TaskStarted), (status = 404, body = super::ErrorBody),
                (status = 409, description = "wrong state", body = super::ErrorBody),
                (status = 422, description = "impossible", body = super::ErrorBody)))]
        pub(super) async fn $fn(
            State(st): State<AppState>,
            VmName(name): VmName,
            OptionalBody(NoArguments {}): OptionalBody<NoArguments>,
        ) -> Result<(StatusCode, Json<TaskStarted>)> {
            start_op(&st, name, $op).await
        }
    };
    ($fn:ident, $path:literal, $doc:literal, $body:ty, $wrap:path, $extract:ident) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "operations", request_body = $body,
            params(("name" = String, Path, description = "the VM")),
            responses((status = 202, body = TaskStarted), (status = 404, body = super::ErrorBody),
                (status = 409, description = "wrong state", body = super::ErrorBody),
                (status = 422, description = "impossible", body = super::ErrorBody)))]
        pub(super) async fn $fn(
            State(st): State<AppState>,
            VmName(name): VmName,
            $extract(request): $extract<$body>,
        ) -> Result<(StatusCode, Json<TaskStarted>)> {
            start_op(&st, name, $wrap(request)).await
        }
    };
}

op_route!(
    op_start,
    "/api/v1/vms/{name}/start",
    "Power on (here).",
    no_body,
    VmOp::Start
);
op_route!(
    op_stop,
    "/api/v1/vms/{name}/stop",
    "Hard power off.",
    no_body,
    VmOp::Stop
);
op_route!(
    op_reset,
    "/api/v1/vms/{name}/reset",
    "Reboot in place.",
    no_body,
    VmOp::Reset
);
op_route!(
    op_shutdown,
    "/api/v1/vms/{name}/shutdown",
    "Graceful shutdown: the guest's ACPI power button, then a wait for it to power off.",
    ShutdownRequest,
    VmOp::Shutdown,
    OptionalBody
);
op_route!(
    op_migrate,
    "/api/v1/vms/{name}/migrate",
    "Live migration.",
    MigrateRequest,
    VmOp::Migrate,
    Body
);
op_route!(
    op_snapshot,
    "/api/v1/vms/{name}/snapshot",
    "Disk snapshot.",
    SnapshotRequest,
    VmOp::Snapshot,
    OptionalBody
);
op_route!(
    op_revert,
    "/api/v1/vms/{name}/revert",
    "Back to a snapshot.",
    RevertRequest,
    VmOp::Revert,
    OptionalBody
);
op_route!(
    op_clone,
    "/api/v1/vms/{name}/clone",
    "A new VM from this one.",
    CloneRequest,
    VmOp::Clone,
    Body
);
op_route!(
    op_backup,
    "/api/v1/vms/{name}/backup",
    "Back up the disks.",
    BackupRequest,
    VmOp::Backup,
    Body
);
op_route!(
    op_restore,
    "/api/v1/vms/{name}/restore",
    "A new VM from a backup of NAME.",
    RestoreRequest,
    VmOp::Restore,
    Body
);
op_route!(
    op_restore_disk,
    "/api/v1/vms/{name}/restore-disk",
    "One disk of a backup of NAME written back into NAME's disk of that index (VM off).",
    RestoreDiskRequest,
    VmOp::RestoreDisk,
    Body
);

/// `GET /tasks`
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    responses((status = 200, body = Vec<TaskInfo>), (status = 401, body = super::ErrorBody)))]
pub(super) async fn list_tasks(State(st): State<AppState>) -> Json<Vec<TaskInfo>> {
    Json(st.tasks.list())
}

/// `GET /tasks/ID`
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = u64, Path, description = "the task")),
    responses((status = 200, body = TaskInfo), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get_task(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>> {
    id.parse::<u64>()
        .ok()
        .and_then(|n| st.tasks.get(n))
        .map(Json)
        .ok_or(ApiError::TaskNotFound(id))
}

/// The query of `GET /events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Only events numbered above this.
    after: Option<u64>,
    /// At most this many (up to 1000).
    limit: Option<usize>,
}

/// `GET /events?after=SEQ`
#[utoipa::path(get, path = "/api/v1/events", tag = "host", params(EventsQuery),
    responses((status = 200, body = Vec<HostEvent>), (status = 400, body = super::ErrorBody)))]
pub(super) async fn events(
    State(st): State<AppState>,
    query: std::result::Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Vec<HostEvent>>> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(EVENTS_LIMIT_MAX).min(EVENTS_LIMIT_MAX);
    call(&st, move |s| s.events(after, limit)).await.map(Json)
}

/// `POST /host/maintenance`
#[utoipa::path(post, path = "/api/v1/host/maintenance", tag = "host",
    request_body = MaintenanceRequest,
    responses((status = 202, body = TaskStarted),
        (status = 409, description = "wrong state", body = super::ErrorBody),
        (status = 422, description = "impossible", body = super::ErrorBody)))]
pub(super) async fn maintenance(
    State(st): State<AppState>,
    Body(request): Body<MaintenanceRequest>,
) -> Result<(StatusCode, Json<TaskStarted>)> {
    start_task(&st, OpKind::Maintenance, "", move |s, task| {
        s.maintenance(request.enter, task)
    })
    .await
}

/// `POST /incoming` (host to host)
#[utoipa::path(post, path = "/api/v1/incoming", tag = "host", request_body = IncomingRequest,
    responses((status = 200, body = IncomingReady), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody),
        (status = 422, description = "CPU features missing", body = super::ErrorBody)))]
pub(super) async fn incoming(
    State(st): State<AppState>,
    Body(request): Body<IncomingRequest>,
) -> Result<Json<IncomingReady>> {
    validate_name(&request.vm).map_err(|why| ApiError::InvalidName {
        name: request.vm.clone(),
        why,
    })?;
    call(&st, move |s| s.prepare_incoming(request))
        .await
        .map(Json)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/host", get(host))
        .route("/api/v1/host/maintenance", post(maintenance))
        .route("/api/v1/vms", get(list_vms).post(create_vm))
        .route(
            "/api/v1/vms/{name}",
            get(get_vm).delete(delete_vm).patch(patch_vm),
        )
        .route("/api/v1/vms/{name}/start", post(op_start))
        .route("/api/v1/vms/{name}/stop", post(op_stop))
        .route("/api/v1/vms/{name}/reset", post(op_reset))
        .route("/api/v1/vms/{name}/shutdown", post(op_shutdown))
        .route("/api/v1/vms/{name}/migrate", post(op_migrate))
        .route("/api/v1/vms/{name}/snapshot", post(op_snapshot))
        .route("/api/v1/vms/{name}/revert", post(op_revert))
        .route("/api/v1/vms/{name}/clone", post(op_clone))
        .route("/api/v1/vms/{name}/backup", post(op_backup))
        .route("/api/v1/vms/{name}/restore", post(op_restore))
        .route("/api/v1/vms/{name}/restore-disk", post(op_restore_disk))
        .route("/api/v1/vms/{name}/console", get(console))
        .route("/api/v1/tasks", get(list_tasks))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/events", get(events))
        .route("/api/v1/incoming", post(incoming))
        .route("/api/v1/backups", get(backups))
        .route("/api/v1/backups/forget", post(forget_backups))
        .route("/api/v1/backups/files", get(backup_files))
        .route("/api/v1/backups/file", get(backup_file))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        // The one route without a token: how to talk to the rest.
        .route("/api/v1/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("bind the host API to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or its thread could not be made.
    #[error("start the host API's threads: {0}")]
    Threads(#[source] std::io::Error),
}

/// A running API server; stops when dropped or [`stop`](Self::stop)ped.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    tasks: Arc<TaskTable>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (the real port when bound to port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The task table the server answers `GET /tasks` from.
    #[must_use]
    pub fn tasks(&self) -> &Arc<TaskTable> {
        &self.tasks
    }

    /// Stops accepting, closes open consoles, waits up to two seconds for requests in
    /// flight, and joins the server's threads.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        // No receiver left only if the server thread has already ended.
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the host API's thread panicked");
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Serves the host API for `service` on `addr` (port 0: any free port), on threads of
/// its own; requests carry `Authorization: Bearer <token>`.
pub fn serve(
    addr: SocketAddr,
    token: ApiToken,
    service: Arc<dyn HostService>,
) -> std::result::Result<ServerHandle, ServeError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    // Two workers answer a management server and a few consoles; the blocking pool, where
    // calls into the host wait on its loop, is bounded too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("vinfra-api")
        .enable_io()
        .enable_time()
        .build()
        .map_err(ServeError::Threads)?;
    let tasks = TaskTable::new();
    let (stop, stopping) = watch::channel(false);
    let consoles = Arc::new(AtomicUsize::new(0));
    let state = AppState {
        service,
        tasks: Arc::clone(&tasks),
        token: Arc::new(token),
        stopping: stopping.clone(),
        consoles: Arc::clone(&consoles),
    };
    let thread = std::thread::Builder::new()
        .name("vinfra-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                run(listener, router(state), stopping).await;
                // The consoles got the stop too: let them send their close frames.
                let deadline = tokio::time::Instant::now() + STOP_GRACE;
                while consoles.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(ServeError::Threads)?;
    tracing::info!(%local, "host API listening");
    Ok(ServerHandle {
        addr: local,
        tasks,
        stop,
        thread: Some(thread),
    })
}

async fn run(listener: std::net::TcpListener, app: Router, stopping: watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("host API listener: {e}");
            return;
        }
    };
    let mut graceful = stopping.clone();
    let mut hard = stopping;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|s| *s).await;
    });
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!("host API: {e}");
            }
        }
        () = async move {
            let _ = hard.wait_for(|s| *s).await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            tracing::warn!("host API stopped with requests still open");
        }
    }
}

/// The document's generator.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "vinfra host API",
        description = "One vinfra host: its VMs, their long operations as tasks, their \
            consoles, and its event log. Every route but this document needs \
            `Authorization: Bearer TOKEN`, TOKEN being the hex of HKDF-SHA256 of the \
            cluster key with info \"vinfra host api v1\". Errors are \
            {\"error\":{\"code\":…,\"message\":…}}."
    ),
    paths(
        host, list_vms, create_vm, get_vm, delete_vm, patch_vm,
        op_start, op_stop, op_reset, op_shutdown,
        op_migrate, op_snapshot, op_revert, op_clone,
        op_backup, op_restore, op_restore_disk, console_ws::console, list_tasks,
        get_task, events, incoming, maintenance, backup_routes::backups,
        backup_routes::forget_backups, backup_routes::backup_files, backup_routes::backup_file,
        openapi_json,
    ),
    modifiers(&BearerToken),
    security(("token" = [])),
)]
pub struct ApiDoc;

/// `GET /openapi.json`: this document (no token needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "host", security(()),
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
