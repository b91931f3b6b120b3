//! `GET /metrics`: the inventory's counts in the Prometheus (OpenMetrics) text format.
//! Open to loopback clients (a local Prometheus); others need a session.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, ApiResult, AppState};
use crate::auth::Principal;
use crate::model::HostState;

type Labels = Vec<(String, String)>;

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "activity",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let loopback = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    if !loopback {
        let (mut parts, _) = request.into_parts();
        Principal::from_request_parts(&mut parts, &state).await?;
    }
    let registry = registry(&state)?;
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn registry(state: &AppState) -> ApiResult<Registry> {
    let mut registry = Registry::default();
    let hosts = Family::<Labels, Gauge>::default();
    registry.register(
        "vinfra_center_hosts",
        "Hosts in the inventory by connection state",
        hosts.clone(),
    );
    let vms = Family::<Labels, Gauge>::default();
    registry.register("vinfra_center_vms", "VMs by power state", vms.clone());
    let host_cpu = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    registry.register(
        "vinfra_center_host_cpu_percent",
        "Each host's CPU use, percent of its CPUs",
        host_cpu.clone(),
    );
    let running_tasks = Gauge::<i64>::default();
    registry.register(
        "vinfra_center_tasks_running",
        "Center tasks still running",
        running_tasks.clone(),
    );

    for s in [
        HostState::Connected,
        HostState::NotResponding,
        HostState::Maintenance,
    ] {
        hosts
            .get_or_create(&vec![("state".into(), s.as_str().into())])
            .set(0);
    }
    for h in state.store.hosts()? {
        hosts
            .get_or_create(&vec![("state".into(), h.state.as_str().into())])
            .inc();
        if let Some(r) = &h.report {
            host_cpu
                .get_or_create(&vec![("host".into(), h.name.clone())])
                .set(r.load.cpu_percent);
        }
    }
    for v in state.store.vms()? {
        let power = serde_json::to_value(v.info.state)
            .ok()
            .and_then(|p| p.as_str().map(str::to_string))
            .unwrap_or_default();
        vms.get_or_create(&vec![("power_state".into(), power)])
            .inc();
    }
    let running = state
        .store
        .tasks(super::activity::PAGE_MAX)?
        .iter()
        .filter(|t| t.state == crate::model::TaskState::Running)
        .count();
    running_tasks.set(i64::try_from(running).unwrap_or(i64::MAX));
    Ok(registry)
}
