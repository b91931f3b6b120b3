//! VMs: list, summary, create, delete, power, relocate (live migration), snapshot,
//! revert, clone, backup and restore. Operations start a task on the host concerned
//! and answer `202 {"task": ID}` with the center task that follows it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vinfra_host::api::client::Client;
use vinfra_host::api::{
    BackupRequest, CloneRequest, MigrateRequest, PowerState, RestoreDiskRequest, RestoreRequest,
    RevertRequest, SnapshotRequest, TaskStarted, VmInfo, VmSpec,
};

use super::inventory::{find_host, TaskAccepted};
use super::{blocking, ApiError, ApiResult, AppState, JsonBody, QueryArgs};
use crate::auth::Principal;
use crate::hosts::{names_by_id, usable, vm_record};
use crate::model::{Host, Role, Vm};
use crate::tasks::TaskStart;

/// A VM as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmView {
    /// The inventory's record.
    #[serde(flatten)]
    pub vm: Vm,
    /// No host has answered for 3 polls (every host is down or unreachable): its state
    /// is the last known one.
    pub stale: bool,
}

impl VmView {
    /// `fresh_ms`: the last time any host answered (see [`fresh_ms`]).
    pub(super) fn of(state: &AppState, vm: Vm, fresh_ms: u64) -> Self {
        let stale = state.now_ms().saturating_sub(fresh_ms)
            > u64::from(crate::hosts::MISSED_POLLS_MAX) * state.poll_ms;
        Self { vm, stale }
    }
}

/// The last time any host answered a poll: every host reports every VM of the cluster,
/// so the VMs are as fresh as the freshest host.
pub(super) fn fresh_ms(state: &AppState) -> ApiResult<u64> {
    Ok(state
        .store
        .hosts()?
        .iter()
        .map(|h| h.seen_ms)
        .max()
        .unwrap_or(0))
}

/// The filters of `GET /api/vcenter/vm`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmFilter {
    /// Only the VMs this host runs.
    pub host: Option<String>,
    /// Only VMs in this power state (`running`, `shut_off`…).
    pub power_state: Option<String>,
}

/// `GET /api/vcenter/vm[?host=&power_state=]`.
#[utoipa::path(get, path = "/api/vcenter/vm", tag = "vm",
    params(("host" = Option<String>, Query), ("power_state" = Option<String>, Query)),
    responses((status = 200, body = [VmView]), (status = 400, body = super::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _who: Principal,
    QueryArgs(f): QueryArgs<VmFilter>,
) -> ApiResult<Json<Vec<VmView>>> {
    let power: Option<PowerState> = f
        .power_state
        .as_deref()
        .map(|p| {
            serde_json::from_value(serde_json::Value::String(p.to_string())).map_err(|_| {
                ApiError::malformed(
                    format!("power_state: {p:?} is not running, paused, shutting_down, shut_off or crashed"),
                    Some("power_state".into()),
                )
            })
        })
        .transpose()?;
    let fresh = fresh_ms(&state)?;
    let vms = state
        .store
        .vms()?
        .into_iter()
        .filter(|v| f.host.as_ref().is_none_or(|h| v.host.as_ref() == Some(h)))
        .filter(|v| power.is_none_or(|p| v.info.state == p))
        .map(|v| VmView::of(&state, v, fresh))
        .collect();
    Ok(Json(vms))
}

pub(super) fn find_vm(state: &AppState, name: &str) -> ApiResult<Vm> {
    state
        .store
        .vm(name)?
        .ok_or_else(|| ApiError::not_found(format!("no VM named {name}")))
}

/// `GET /api/vcenter/vm/{vm}`: its definition, power state, host and statistics.
#[utoipa::path(get, path = "/api/vcenter/vm/{vm}", tag = "vm", params(("vm" = String, Path)),
    responses((status = 200, body = VmView), (status = 404, body = super::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<VmView>> {
    let vm = find_vm(&state, &name)?;
    Ok(Json(VmView::of(&state, vm, fresh_ms(&state)?)))
}

/// `POST /api/vcenter/vm`: a VM to define (shut off).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// The definition, as the host API's `POST /api/v1/vms`.
    pub spec: VmSpec,
    /// The host whose API defines it (any connected host by default; the volume is shared).
    #[serde(default)]
    pub host: Option<String>,
}

/// A usable host named by the request (field `field`), or the one with the most free memory.
pub(super) fn pick_host(
    state: &AppState,
    named: Option<&str>,
    field: &str,
) -> ApiResult<(Host, Arc<Client>)> {
    let host = match named {
        Some(name) => {
            let host = state
                .store
                .host(name)?
                .ok_or_else(|| ApiError::field(field, format!("{field}: no host {name}")))?;
            if !usable(&host) {
                return Err(ApiError::field(
                    field,
                    format!("{field}: host {name} is {}", host.state.as_str()),
                ));
            }
            host
        }
        None => {
            let free = |h: &Host| {
                h.report.as_ref().map_or(0, |r| {
                    r.capacity.memory_mib.saturating_sub(r.load.memory_used_mib)
                })
            };
            state
                .store
                .hosts()?
                .into_iter()
                .filter(usable)
                .max_by_key(free)
                .ok_or_else(|| ApiError::conflict("no connected host"))?
        }
    };
    let client = state
        .hosts
        .client(&host.name)
        .ok_or_else(|| ApiError::conflict(format!("host {} is not polled", host.name)))?;
    Ok((host, client))
}

/// `POST /api/vcenter/vm` (operator): defines the VM through a host.
#[utoipa::path(post, path = "/api/vcenter/vm", tag = "vm", request_body = CreateVm,
    responses((status = 201, body = VmView), (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(req): JsonBody<CreateVm>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    req.spec.validate()?;
    if state.store.vm(&req.spec.name)?.is_some() {
        return Err(ApiError::conflict(format!(
            "a VM named {} exists already",
            req.spec.name
        )));
    }
    let (host, client) = pick_host(&state, req.host.as_deref(), "host")?;
    let spec = req.spec.clone();
    let info: VmInfo = blocking(move || client.post("/vms", &spec)).await??;
    let names = names_by_id(state.store.as_ref())?;
    let vm = vm_record(info, &names, state.now_ms());
    state.store.put_vm(&vm)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "vm.created",
        &vm.name,
        format!("{} created VM {} through {}", who.name, vm.name, host.name),
        serde_json::json!({ "host": host.name, "memory_mib": req.spec.memory_mib }),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(VmView::of(&state, vm, fresh_ms(&state)?)),
    )
        .into_response())
}

/// `DELETE /api/vcenter/vm/{vm}` (operator): deletes a shut-off VM and its disks.
#[utoipa::path(delete, path = "/api/vcenter/vm/{vm}", tag = "vm", params(("vm" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Operator)?;
    find_vm(&state, &name)?;
    let (_, client) = pick_host(&state, None, "host")?;
    let path = format!("/vms/{name}");
    blocking(move || client.delete(&path)).await??;
    state.store.delete_vm(&name)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "vm.deleted",
        &name,
        format!("{} deleted VM {name}", who.name),
        serde_json::Value::Null,
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `POST /api/vcenter/vm/{vm}/power`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerQuery {
    /// `start`, `stop` (hard), `reset` or `shutdown` (graceful).
    pub action: String,
    /// For `start`: the host to run it (placed on the host with the most free memory
    /// otherwise).
    pub host: Option<String>,
}

/// The host that runs `vm` (its client), or any usable host when it runs nowhere.
pub(super) fn running_host(state: &AppState, vm: &Vm) -> ApiResult<(Host, Arc<Client>)> {
    match &vm.host {
        Some(h) => pick_host(state, Some(h), "host").map_err(|_| {
            ApiError::conflict(format!(
                "VM {} runs on host {h}, which does not answer",
                vm.name
            ))
        }),
        None => pick_host(state, None, "host"),
    }
}

/// Starts `op` on `host` and a center task following it.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per route, all named"
)]
async fn start_task(
    state: &AppState,
    who: &Principal,
    vm: &str,
    kind: &str,
    (host, client): (Host, Arc<Client>),
    op: &str,
    body: serde_json::Value,
    message: String,
) -> ApiResult<Response> {
    let task = start_host_task(state, who, vm, kind, (host, client), op, body, message).await?;
    Ok((StatusCode::ACCEPTED, Json(TaskAccepted { task })).into_response())
}

/// As [`start_task`]; the center task's id.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per route, all named"
)]
async fn start_host_task(
    state: &AppState,
    who: &Principal,
    vm: &str,
    kind: &str,
    (host, client): (Host, Arc<Client>),
    op: &str,
    body: serde_json::Value,
    message: String,
) -> ApiResult<u64> {
    let path = format!("/vms/{vm}/{op}");
    let (tasks, kind_, vm_, user, host_name) = (
        state.tasks.clone(),
        kind.to_string(),
        vm.to_string(),
        who.name.clone(),
        host.name.clone(),
    );
    let task = blocking(move || {
        let start = TaskStart {
            kind: &kind_,
            target: &vm_,
            user: &user,
            host: &host_name,
        };
        tasks.start(&start, client, Some(vm_.clone()), |c| {
            c.post::<_, TaskStarted>(&path, &body).map(|s| s.task)
        })
    })
    .await???;
    state.events.action(
        state.now_ms(),
        &who.name,
        kind,
        vm,
        message,
        serde_json::json!({ "task": task.id, "host": host.name }),
    )?;
    Ok(task.id)
}

/// Starts a backup of VM `name` on the host that runs it (any connected host when it
/// is off): a `vm.backup` center task, its id. The VM action and the backup jobs both
/// come here.
pub(super) async fn start_backup(
    state: &AppState,
    who: &Principal,
    name: &str,
    req: &BackupRequest,
) -> ApiResult<u64> {
    let vm = find_vm(state, name)?;
    let source = running_host(state, &vm)?;
    let body = serde_json::to_value(req).map_err(|e| ApiError::internal(e.to_string()))?;
    let message = format!(
        "{} asked to back up VM {name} to {}",
        who.name, req.repository
    );
    start_host_task(
        state,
        who,
        name,
        "vm.backup",
        source,
        "backup",
        body,
        message,
    )
    .await
}

/// `POST /api/vcenter/vm/{vm}/power?action=start|stop|reset|shutdown` (operator).
#[utoipa::path(post, path = "/api/vcenter/vm/{vm}/power", tag = "vm",
    params(("vm" = String, Path), ("action" = String, Query), ("host" = Option<String>, Query)),
    responses((status = 202, body = TaskAccepted), (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn power(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    QueryArgs(q): QueryArgs<PowerQuery>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let op = match q.action.as_str() {
        a @ ("start" | "stop" | "reset" | "shutdown") => a,
        other => {
            return Err(ApiError::field(
                "action",
                format!("action: {other:?} is not start, stop, reset or shutdown"),
            ))
        }
    };
    if q.host.is_some() && op != "start" {
        return Err(ApiError::field(
            "host",
            "host: only a start chooses its host",
        ));
    }
    let vm = find_vm(&state, &name)?;
    let target = if op == "start" {
        // HA admission control first: a refused power-on is placed nowhere.
        admit_power_on(&state, &who, &name)?;
        // No host named: DRS's initial placement (the host with the most free memory
        // when drs finds none).
        let placed = match q.host {
            Some(_) => None,
            None => initial_placement(&state, &name)?,
        };
        pick_host(&state, q.host.as_deref().or(placed.as_deref()), "host")?
    } else {
        running_host(&state, &vm)?
    };
    let message = format!("{} asked to {op} VM {name} on {}", who.name, target.0.name);
    start_task(
        &state,
        &who,
        &name,
        &format!("vm.{op}"),
        target,
        op,
        serde_json::json!({}),
        message,
    )
    .await
}

/// The query of `POST /api/vcenter/vm/{vm}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmActionQuery {
    /// `relocate`, `snapshot`, `revert`, `clone`, `backup` or `restore`.
    pub action: String,
}

/// The body of `?action=relocate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Relocate {
    /// The destination host's inventory name.
    pub host: String,
}

fn body<T: DeserializeOwned + Serialize>(bytes: &Bytes) -> ApiResult<serde_json::Value> {
    let JsonBody(v) = parse::<T>(bytes)?;
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

fn parse<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<JsonBody<T>> {
    let bytes = if bytes.is_empty() {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
        let message = e.to_string();
        ApiError::malformed(
            format!("request body: {message}"),
            super::named_field(&message),
        )
    })
}

/// `POST /api/vcenter/vm/{vm}?action=relocate|snapshot|revert|clone|backup|restore|restore-disk`
/// (operator). Bodies: `{"host": "esx-2"}` for relocate, the host API's otherwise
/// (`restore-disk`: `{"repository", "backup"?, "disk"}`, the VM off).
#[utoipa::path(post, path = "/api/vcenter/vm/{vm}", tag = "vm",
    params(("vm" = String, Path), ("action" = String, Query)), request_body = Relocate,
    responses((status = 202, body = TaskAccepted), (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn action(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    QueryArgs(q): QueryArgs<VmActionQuery>,
    bytes: Bytes,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let op = q.action.as_str();
    if op == "backup" {
        let JsonBody(req) = parse::<BackupRequest>(&bytes)?;
        let task = start_backup(&state, &who, &name, &req).await?;
        return Ok((StatusCode::ACCEPTED, Json(TaskAccepted { task })).into_response());
    }
    let payload = match op {
        "relocate" => None,
        "snapshot" => Some(body::<SnapshotRequest>(&bytes)?),
        "revert" => Some(body::<RevertRequest>(&bytes)?),
        "clone" => Some(body::<CloneRequest>(&bytes)?),
        "restore" => Some(body::<RestoreRequest>(&bytes)?),
        "restore-disk" => Some(body::<RestoreDiskRequest>(&bytes)?),
        other => {
            return Err(ApiError::field(
                "action",
                format!(
                    "action: {other:?} is not relocate, snapshot, revert, clone, backup, \
                     restore or restore-disk"
                ),
            ))
        }
    };
    let vm = find_vm(&state, &name)?;
    let source = running_host(&state, &vm)?;
    if let Some(payload) = payload {
        let message = format!("{} asked to {op} VM {name}", who.name);
        return start_task(
            &state,
            &who,
            &name,
            &format!("vm.{op}"),
            source,
            op,
            payload,
            message,
        )
        .await;
    }
    let JsonBody(relocate) = parse::<Relocate>(&bytes)?;
    relocate_vm(&state, &who, &vm, source, &relocate.host).await
}

/// Live-migrates `vm` (running on `source`) to host `to`: a center task that follows the
/// source host's migration task. DRS applies its recommendations through this too.
pub(super) async fn relocate_vm(
    state: &AppState,
    who: &Principal,
    vm: &Vm,
    source: (Host, Arc<Client>),
    to: &str,
) -> ApiResult<Response> {
    let name = &vm.name;
    if vm.info.state != PowerState::Running || vm.host.is_none() {
        return Err(ApiError::conflict(format!(
            "VM {name} is {}: only a running VM is relocated (live migration)",
            vm.info.state
        )));
    }
    let dest =
        find_host(state, to).map_err(|_| ApiError::field("host", format!("host: no host {to}")))?;
    if Some(&dest.name) == vm.host.as_ref() {
        return Err(ApiError::field(
            "host",
            format!("host: VM {name} already runs on {}", dest.name),
        ));
    }
    if !usable(&dest) {
        return Err(ApiError::field(
            "host",
            format!("host: host {} is {}", dest.name, dest.state.as_str()),
        ));
    }
    let dest_id =
        dest.report.as_ref().map(|r| r.id).ok_or_else(|| {
            ApiError::conflict(format!("host {} has not reported yet", dest.name))
        })?;
    let message = format!(
        "{} asked to relocate VM {name} from {} to {}",
        who.name, source.0.name, dest.name
    );
    let body = serde_json::to_value(MigrateRequest {
        to: dest_id.to_string(),
    })
    .map_err(|e| ApiError::internal(e.to_string()))?;
    start_task(
        state,
        who,
        name,
        "vm.relocate",
        source,
        "migrate",
        body,
        message,
    )
    .await
}

/// HA admission control for a power-on of `vm` (the hosts' cluster is the inventory's
/// first): 409 `ha_admission_refused` with the reason when it would break the policy.
fn admit_power_on(state: &AppState, who: &Principal, vm: &str) -> ApiResult<()> {
    let Some(cluster) = state.store.clusters()?.into_iter().next() else {
        return Ok(());
    };
    let hosts = state.store.hosts()?;
    let vms = state.store.vms()?;
    match crate::ha::admit(&hosts, &vms, &cluster.settings, vm) {
        Ok(()) => Ok(()),
        Err(crate::ha::AdmissionError::Refused(why)) => {
            // In the log too: a refusal is what an administrator looks for later.
            state.events.action(
                state.now_ms(),
                &who.name,
                "vm.power_on_refused",
                vm,
                why.clone(),
                serde_json::json!({ "cluster": cluster.name }),
            )?;
            Err(ApiError::new(
                StatusCode::CONFLICT,
                crate::ha::ADMISSION_REFUSED,
                why,
            ))
        }
        Err(e) => Err(ApiError::conflict(e.to_string())),
    }
}

/// Where DRS starts `vm` when the user names no host (at every automation level: a
/// start with no host named accepts DRS's placement); none when drs finds no host.
fn initial_placement(state: &AppState, vm: &str) -> ApiResult<Option<String>> {
    let Some(c) = state.store.clusters()?.into_iter().next() else {
        return Ok(None);
    };
    // With the cluster's pools and rules: an anti-affinity partner's host is refused.
    let input = crate::drs::inventory_spec(state.store.as_ref(), &c)?;
    let plan = crate::drs::placement(input.spec, vm)
        .map_err(|e| ApiError::conflict(format!("drs: {e}")))?;
    Ok(plan.placements.into_iter().find_map(|p| p.host))
}
