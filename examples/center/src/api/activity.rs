//! Tasks, events (a page, or live as Server-Sent Events) and statistics history.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, QueryArgs};
use crate::auth::Principal;
use crate::model::{Event, StatSample, Task, STAT_LEVELS};

/// The most items one page holds.
pub const PAGE_MAX: usize = 1000;

/// Paging of tasks.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// How many (newest first), at most 1000; 100 by default.
    pub limit: Option<usize>,
    /// Only the tasks acting on this VM or host.
    pub target: Option<String>,
}

/// `GET /api/cis/tasks`: the latest tasks, newest first.
#[utoipa::path(get, path = "/api/cis/tasks", tag = "activity", params(("limit" = Option<usize>, Query), ("target" = Option<String>, Query)),
    responses((status = 200, body = [Task])))]
pub async fn tasks(
    State(state): State<AppState>,
    _who: Principal,
    QueryArgs(q): QueryArgs<TaskQuery>,
) -> ApiResult<Json<Vec<Task>>> {
    Ok(Json(match &q.target {
        Some(target) => state
            .store
            .tasks_of(target, q.limit.unwrap_or(100).min(PAGE_MAX))?,
        None => state.store.tasks(q.limit.unwrap_or(100).min(PAGE_MAX))?,
    }))
}

/// `GET /api/cis/tasks/{task}`.
#[utoipa::path(get, path = "/api/cis/tasks/{task}", tag = "activity", params(("task" = u64, Path)),
    responses((status = 200, body = Task), (status = 404, body = super::ErrorBody)))]
pub async fn task(
    State(state): State<AppState>,
    _who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::malformed(
            format!("task: {id:?} is not a task id"),
            Some("task".into()),
        )
    })?;
    Ok(Json(state.store.task(id)?.ok_or_else(|| {
        ApiError::not_found(format!("no task {id}"))
    })?))
}

/// Paging of events.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events with a greater id (0 by default).
    pub after: Option<u64>,
    /// How many, at most 1000; 100 by default.
    pub limit: Option<usize>,
    /// Only the events about this VM, host or user.
    pub target: Option<String>,
}

/// `GET /api/vinfra/events?after=ID`: events oldest first.
#[utoipa::path(get, path = "/api/vinfra/events", tag = "activity",
    params(("after" = Option<u64>, Query), ("limit" = Option<usize>, Query), ("target" = Option<String>, Query)),
    responses((status = 200, body = [Event])))]
pub async fn events(
    State(state): State<AppState>,
    _who: Principal,
    QueryArgs(q): QueryArgs<EventQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(100).min(PAGE_MAX));
    Ok(Json(match &q.target {
        Some(target) => state.store.events_of(target, after, limit)?,
        None => state.store.events_after(after, limit)?,
    }))
}

/// The SSE body: what a feeding task sends.
#[derive(Debug)]
pub struct ChannelStream(mpsc::Receiver<Result<SseEvent, Infallible>>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.id.to_string())
        .event("vinfra")
        .json_data(event)
        .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"))
}

/// `GET /api/vinfra/events/stream[?after=ID&target=NAME]`: the events after `after` (or the
/// `Last-Event-ID` a reconnecting browser sends), then live, as Server-Sent Events
/// named `vinfra` whose data is an event's JSON.
#[utoipa::path(get, path = "/api/vinfra/events/stream", tag = "activity",
    params(("after" = Option<u64>, Query), ("target" = Option<String>, Query)),
    responses((status = 200, description = "text/event-stream of events", content_type = "text/event-stream")))]
pub async fn event_stream(
    State(state): State<AppState>,
    _who: Principal,
    QueryArgs(q): QueryArgs<EventQuery>,
    headers: HeaderMap,
) -> Sse<axum::response::sse::KeepAliveStream<ChannelStream>> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after = resume.or(q.after).unwrap_or(0);
    // Subscribed before the backlog is read: nothing falls between the two.
    let live = state.events.subscribe();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(feed(state, after, q.target, live, tx));
    Sse::new(ChannelStream(rx)).keep_alive(KeepAlive::default())
}

/// Sends the stored events after `last`, at most `PAGE_MAX` per page and 10 pages;
/// returns the last id sent, or `None` when the client has gone.
async fn backlog(
    state: &AppState,
    mut last: u64,
    target: Option<&str>,
    tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
) -> Option<u64> {
    for _ in 0..10 {
        let page = match target {
            Some(t) => state.store.events_of(t, last, PAGE_MAX).ok()?,
            None => state.store.events_after(last, PAGE_MAX).ok()?,
        };
        for e in &page {
            tx.send(Ok(sse(e))).await.ok()?;
            last = e.id;
        }
        if page.len() < PAGE_MAX {
            break;
        }
    }
    Some(last)
}

async fn feed(
    state: AppState,
    after: u64,
    target: Option<String>,
    mut live: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let target = target.as_deref();
    let Some(mut last) = backlog(&state, after, target, &tx).await else {
        return;
    };
    loop {
        tokio::select! {
            () = tx.closed() => return,
            received = live.recv() => match received {
                Ok(e) if e.id <= last || target.is_some_and(|t| e.event.target != t) => {}
                Ok(e) => {
                    last = e.id;
                    if tx.send(Ok(sse(&e))).await.is_err() {
                        return;
                    }
                }
                // Fell behind: read what was missed from the store.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match backlog(&state, last, target, &tx).await {
                        Some(l) => last = l,
                        None => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The window of a statistics query.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// `1h` (20 s samples, the default), `1d` (5 min), `1w` (30 min) or `1y` (2 h).
    pub window: Option<String>,
}

/// `GET /api/vinfra/stats/{host|vm}/{name}?window=1h|1d|1w|1y`: history at the roll-up
/// level of the window, oldest first.
#[utoipa::path(get, path = "/api/vinfra/stats/{kind}/{name}", tag = "activity",
    params(("kind" = String, Path, description = "host or vm"), ("name" = String, Path), ("window" = Option<String>, Query)),
    responses((status = 200, body = [StatSample]), (status = 400, body = super::ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    _who: Principal,
    Path((kind, name)): Path<(String, String)>,
    QueryArgs(q): QueryArgs<StatsQuery>,
) -> ApiResult<Json<Vec<StatSample>>> {
    if kind != "host" && kind != "vm" {
        return Err(ApiError::not_found(format!(
            "no statistics of {kind:?}: host or vm"
        )));
    }
    let level = match q.window.as_deref().unwrap_or("1h") {
        "1h" => STAT_LEVELS[0],
        "1d" => STAT_LEVELS[1],
        "1w" => STAT_LEVELS[2],
        "1y" => STAT_LEVELS[3],
        other => {
            return Err(ApiError::malformed(
                format!("window: {other:?} is not 1h, 1d, 1w or 1y"),
                Some("window".into()),
            ))
        }
    };
    let since = state.now_ms().saturating_sub(level.retention_ms);
    Ok(Json(state.store.samples(
        &format!("{kind}/{name}"),
        level.level,
        since,
    )?))
}
