//! The inventory's tree: datacentres, clusters (with their DRS and HA settings) and hosts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vinfra_host::api::client::ClientError;
use vinfra_host::api::{MaintenanceRequest, PowerState, TaskStarted};

use super::{blocking, ApiError, ApiResult, AppState, JsonBody, QueryArgs};
use crate::auth::Principal;
use crate::model::{
    Cluster, ClusterSettings, Datacenter, DrsSettings, HaSettings, Host, HostState, Role,
};
use crate::tasks::TaskStart;

/// `GET /api/vcenter/datacenter`.
#[utoipa::path(get, path = "/api/vcenter/datacenter", tag = "inventory",
    responses((status = 200, body = [Datacenter])))]
pub async fn datacenters(
    State(state): State<AppState>,
    _who: Principal,
) -> ApiResult<Json<Vec<Datacenter>>> {
    Ok(Json(state.store.datacenters()?))
}

/// A cluster with its settings and a summary of its hosts and VMs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterSummary {
    /// The cluster.
    #[serde(flatten)]
    pub cluster: Cluster,
    /// Hosts in the inventory.
    pub hosts: u32,
    /// Of which connected (or in maintenance, answering).
    pub hosts_connected: u32,
    /// VMs defined.
    pub vms: u32,
    /// Of which running.
    pub vms_running: u32,
    /// CPUs of the answering hosts.
    pub cpus: u32,
    /// Memory of the answering hosts, MiB.
    pub memory_mib: u64,
}

fn summary(state: &AppState, cluster: Cluster) -> ApiResult<ClusterSummary> {
    let hosts = state.store.hosts()?;
    let vms = state.store.vms()?;
    let answering: Vec<&Host> = hosts
        .iter()
        .filter(|h| h.state != HostState::NotResponding)
        .collect();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(ClusterSummary {
        cluster,
        hosts: count(hosts.len()),
        hosts_connected: count(answering.len()),
        vms: count(vms.len()),
        vms_running: count(
            vms.iter()
                .filter(|v| v.info.state == PowerState::Running)
                .count(),
        ),
        cpus: answering
            .iter()
            .filter_map(|h| h.report.as_ref())
            .map(|r| r.capacity.cpus)
            .sum(),
        memory_mib: answering
            .iter()
            .filter_map(|h| h.report.as_ref())
            .map(|r| r.capacity.memory_mib)
            .sum(),
    })
}

/// `GET /api/vcenter/cluster`.
#[utoipa::path(get, path = "/api/vcenter/cluster", tag = "inventory",
    responses((status = 200, body = [ClusterSummary])))]
pub async fn clusters(
    State(state): State<AppState>,
    _who: Principal,
) -> ApiResult<Json<Vec<ClusterSummary>>> {
    let clusters = state.store.clusters()?;
    Ok(Json(
        clusters
            .into_iter()
            .map(|c| summary(&state, c))
            .collect::<ApiResult<_>>()?,
    ))
}

pub(super) fn find_cluster(state: &AppState, name: &str) -> ApiResult<Cluster> {
    state
        .store
        .clusters()?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no cluster {name}")))
}

/// `GET /api/vcenter/cluster/{cluster}`.
#[utoipa::path(get, path = "/api/vcenter/cluster/{cluster}", tag = "inventory",
    params(("cluster" = String, Path)),
    responses((status = 200, body = ClusterSummary), (status = 404, body = super::ErrorBody)))]
pub async fn cluster(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterSummary>> {
    let cluster = find_cluster(&state, &name)?;
    Ok(Json(summary(&state, cluster)?))
}

/// `PATCH /api/vcenter/cluster/{cluster}`: what is given replaces what is stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterPatch {
    /// New DRS settings.
    #[serde(default)]
    pub drs: Option<DrsSettings>,
    /// New HA settings.
    #[serde(default)]
    pub ha: Option<HaSettings>,
}

/// `PATCH /api/vcenter/cluster/{cluster}` (administrator).
#[utoipa::path(patch, path = "/api/vcenter/cluster/{cluster}", tag = "inventory",
    params(("cluster" = String, Path)), request_body = ClusterPatch,
    responses((status = 200, body = Cluster), (status = 422, body = super::ErrorBody)))]
pub async fn patch_cluster(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<ClusterPatch>,
) -> ApiResult<Json<Cluster>> {
    who.require(Role::Administrator)?;
    let cluster = find_cluster(&state, &name)?;
    let mut settings: ClusterSettings = cluster.settings.clone();
    if let Some(drs) = patch.drs {
        if !(1..=5).contains(&drs.threshold) {
            return Err(ApiError::field(
                "drs.threshold",
                "drs.threshold: 1 (conservative) to 5 (aggressive)",
            ));
        }
        settings.drs = drs;
    }
    if let Some(ha) = patch.ha {
        let hosts = u32::try_from(state.store.hosts()?.len()).unwrap_or(u32::MAX);
        if ha.failures_tolerated > hosts.saturating_sub(1).max(1) {
            return Err(ApiError::field(
                "ha.failures_tolerated",
                format!(
                    "ha.failures_tolerated: at most {} with {hosts} hosts",
                    hosts.saturating_sub(1).max(1)
                ),
            ));
        }
        for (field, percent) in [
            ("ha.cpu_failover_percent", ha.cpu_failover_percent),
            ("ha.memory_failover_percent", ha.memory_failover_percent),
        ] {
            if percent > 100 {
                return Err(ApiError::field(
                    field,
                    format!("{field}: a percentage, 0 to 100 (not {percent})"),
                ));
            }
        }
        settings.ha = ha;
    }
    state.store.set_cluster_settings(&name, &settings)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "cluster.reconfigured",
        &name,
        format!("{} changed the settings of {name}", who.name),
        serde_json::to_value(&settings).unwrap_or_default(),
    )?;
    Ok(Json(Cluster {
        settings,
        ..cluster
    }))
}

/// `GET /api/vcenter/host`.
#[utoipa::path(get, path = "/api/vcenter/host", tag = "inventory",
    responses((status = 200, body = [Host])))]
pub async fn hosts(State(state): State<AppState>, _who: Principal) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(state.store.hosts()?))
}

pub(super) fn find_host(state: &AppState, name: &str) -> ApiResult<Host> {
    state
        .store
        .host(name)?
        .ok_or_else(|| ApiError::not_found(format!("no host {name}")))
}

/// `GET /api/vcenter/host/{host}`.
#[utoipa::path(get, path = "/api/vcenter/host/{host}", tag = "inventory",
    params(("host" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = super::ErrorBody)))]
pub async fn host(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Host>> {
    Ok(Json(find_host(&state, &name)?))
}

/// `POST /api/vcenter/host`: a host to manage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddHost {
    /// Its inventory name (`esx-4`).
    pub name: String,
    /// Its API (`http://IP:PORT` or `IP:PORT`).
    pub address: String,
}

/// `POST /api/vcenter/host` (administrator): adds a host and starts polling it.
#[utoipa::path(post, path = "/api/vcenter/host", tag = "inventory", request_body = AddHost,
    responses((status = 201, body = Host), (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn add_host(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(add): JsonBody<AddHost>,
) -> ApiResult<Response> {
    who.require(Role::Administrator)?;
    vinfra_host::api::validate_name(&add.name)
        .map_err(|why| ApiError::field("name", format!("name: {why}")))?;
    crate::hosts::check_address(&add.address)
        .map_err(|why| ApiError::field("address", format!("address: {why}")))?;
    state.store.add_host(&add.name, &add.address)?;
    if let Err(e) = state.hosts.start(&add.name, &add.address) {
        state.store.delete_host(&add.name)?;
        return Err(match e {
            ClientError::Url(why) => ApiError::field("address", why),
            e => ApiError::internal(e.to_string()),
        });
    }
    state.events.action(
        state.now_ms(),
        &who.name,
        "host.added",
        &add.name,
        format!("{} added host {} at {}", who.name, add.name, add.address),
        serde_json::json!({ "address": add.address }),
    )?;
    Ok((StatusCode::CREATED, Json(find_host(&state, &add.name)?)).into_response())
}

/// `DELETE /api/vcenter/host/{host}` (administrator): removes it from the inventory (it
/// keeps running its VMs).
#[utoipa::path(delete, path = "/api/vcenter/host/{host}", tag = "inventory",
    params(("host" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
pub async fn delete_host(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Administrator)?;
    find_host(&state, &name)?;
    let hosts = state.hosts.clone();
    let stopping = name.clone();
    blocking(move || hosts.stop(&stopping)).await?;
    state.store.delete_host(&name)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "host.removed",
        &name,
        format!("{} removed host {name} from the inventory", who.name),
        serde_json::Value::Null,
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `POST /api/vcenter/host/{host}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostActionQuery {
    /// `enter-maintenance` or `exit-maintenance`.
    pub action: String,
}

/// A started task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskAccepted {
    /// The center task's id (`GET /api/cis/tasks/{task}`).
    pub task: u64,
}

/// `POST /api/vcenter/host/{host}?action=enter-maintenance|exit-maintenance` (operator).
#[utoipa::path(post, path = "/api/vcenter/host/{host}", tag = "inventory",
    params(("host" = String, Path), ("action" = String, Query)),
    responses((status = 202, body = TaskAccepted), (status = 400, body = super::ErrorBody)))]
pub async fn host_action(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    QueryArgs(q): QueryArgs<HostActionQuery>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let enter = match q.action.as_str() {
        "enter-maintenance" => true,
        "exit-maintenance" => false,
        other => {
            return Err(ApiError::field(
                "action",
                format!("action: {other:?} is not enter-maintenance or exit-maintenance"),
            ))
        }
    };
    find_host(&state, &name)?;
    let client = state
        .hosts
        .client(&name)
        .ok_or_else(|| ApiError::conflict(format!("host {name} is not polled")))?;
    let kind = if enter {
        "host.enter_maintenance"
    } else {
        "host.exit_maintenance"
    };
    let (tasks, host, user) = (state.tasks.clone(), name.clone(), who.name.clone());
    let task = blocking(move || {
        let start = TaskStart {
            kind,
            target: &host,
            user: &user,
            host: &host,
        };
        tasks.start(&start, client, None, |c| {
            c.post::<_, TaskStarted>("/host/maintenance", &MaintenanceRequest { enter })
                .map(|s| s.task)
        })
    })
    .await???;
    state.events.action(
        state.now_ms(),
        &who.name,
        kind,
        &name,
        format!(
            "{} asked host {name} to {}",
            who.name,
            q.action.replace('-', " ")
        ),
        serde_json::json!({ "task": task.id }),
    )?;
    Ok((StatusCode::ACCEPTED, Json(TaskAccepted { task: task.id })).into_response())
}
