//! Backup jobs through the API: list, create, change, delete, run now, and the backups
//! of a VM in a repository (to choose one to restore). Runs and the scheduler are in
//! `backup_runs`.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vinfra_host::api::{validate_name, BackupInfo};

use super::backup_runs::{next_slot, start_run, RunStarted};
use super::vm::{pick_host, running_host};
use super::{blocking, ApiError, ApiResult, AppState, JsonBody, QueryArgs};
use crate::auth::Principal;
use crate::model::{BackupJob, Role};
use crate::schedule::Schedule;

/// The most VMs one job backs up.
pub const JOB_VMS_MAX: usize = 256;
/// The most backups of a VM a job keeps.
pub const KEEP_LAST_MAX: u32 = 10_000;
/// A disk index a job may name is below this (a VM's devices hold far fewer).
pub const DISK_INDEX_MAX: u32 = 64;

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupJobView {
    /// The stored job.
    #[serde(flatten)]
    pub job: BackupJob,
    /// Whether a run of it is in progress now.
    pub running: bool,
}

fn view(state: &AppState, job: BackupJob) -> BackupJobView {
    let running = state.backup_runs.running(&job.name);
    BackupJobView { job, running }
}

/// `POST /api/vinfra/backup/job`: a new job.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupJobSpec {
    /// Its name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The VMs to back up (1 to 256, each in the inventory).
    pub vms: Vec<String>,
    /// The vcb repository: an absolute path on the hosts.
    pub repository: String,
    /// `every N(s|m|h|d)` or `daily HH:MM` (UTC).
    pub schedule: String,
    /// Backups of each VM kept after a run (0, the default: all).
    #[serde(default)]
    pub keep_last: u32,
    /// Only the blocks changed since each VM's last backup.
    #[serde(default)]
    pub incremental: bool,
    /// Which disks of each VM, by index (empty, the default: all). A VM without one of
    /// them fails its backup in the run, with the reason.
    #[serde(default)]
    pub disks: Vec<u32>,
    /// Whether the scheduler runs it (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /api/vinfra/backup/job/{name}`: what changes (the rest stays).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupJobPatch {
    /// The VMs to back up.
    pub vms: Option<Vec<String>>,
    /// The repository.
    pub repository: Option<String>,
    /// The schedule.
    pub schedule: Option<String>,
    /// Backups of each VM kept.
    pub keep_last: Option<u32>,
    /// Incremental backups.
    pub incremental: Option<bool>,
    /// Which disks (empty: all).
    pub disks: Option<Vec<u32>>,
    /// Whether the scheduler runs it.
    pub enabled: Option<bool>,
}

/// Checks a job's definition (422 naming the field); the canonical schedule.
fn check(state: &AppState, job: &BackupJob) -> ApiResult<Schedule> {
    validate_name(&job.name).map_err(|why| ApiError::field("name", format!("name: {why}")))?;
    if job.vms.is_empty() || job.vms.len() > JOB_VMS_MAX {
        return Err(ApiError::field(
            "vms",
            format!("vms: from 1 to {JOB_VMS_MAX} VMs"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, vm) in job.vms.iter().enumerate() {
        let field = format!("vms[{i}]");
        if !seen.insert(vm) {
            return Err(ApiError::field(&field, format!("{field}: {vm} twice")));
        }
        if state.store.vm(vm)?.is_none() {
            return Err(ApiError::field(
                &field,
                format!("{field}: no VM named {vm}"),
            ));
        }
    }
    let r = &job.repository;
    if !r.starts_with('/') || r.contains('\0') || r.trim().len() < 2 {
        return Err(ApiError::field(
            "repository",
            "repository: an absolute path on the hosts",
        ));
    }
    let mut disks = BTreeSet::new();
    for (i, d) in job.disks.iter().enumerate() {
        let field = format!("disks[{i}]");
        if *d >= DISK_INDEX_MAX {
            return Err(ApiError::field(
                &field,
                format!("{field}: a disk index below {DISK_INDEX_MAX}"),
            ));
        }
        if !disks.insert(d) {
            return Err(ApiError::field(&field, format!("{field}: disk {d} twice")));
        }
    }
    if job.keep_last > KEEP_LAST_MAX {
        return Err(ApiError::field(
            "keep_last",
            format!("keep_last: at most {KEEP_LAST_MAX}"),
        ));
    }
    job.schedule
        .parse()
        .map_err(|e| ApiError::field("schedule", format!("schedule: {e}")))
}

fn find_job(state: &AppState, name: &str) -> ApiResult<BackupJob> {
    state
        .store
        .backup_job(name)?
        .ok_or_else(|| ApiError::not_found(format!("no backup job {name}")))
}

/// `GET /api/vinfra/backup/job`: every job.
#[utoipa::path(get, path = "/api/vinfra/backup/job", tag = "backup",
    responses((status = 200, body = [BackupJobView])))]
pub async fn list(
    State(state): State<AppState>,
    _who: Principal,
) -> ApiResult<Json<Vec<BackupJobView>>> {
    let jobs = state.store.backup_jobs()?;
    Ok(Json(jobs.into_iter().map(|j| view(&state, j)).collect()))
}

/// `GET /api/vinfra/backup/job/{job}`: one job.
#[utoipa::path(get, path = "/api/vinfra/backup/job/{job}", tag = "backup",
    params(("job" = String, Path)),
    responses((status = 200, body = BackupJobView), (status = 404, body = super::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<BackupJobView>> {
    Ok(Json(view(&state, find_job(&state, &name)?)))
}

/// `POST /api/vinfra/backup/job` (operator): a new job; its first run is its schedule's
/// next slot.
#[utoipa::path(post, path = "/api/vinfra/backup/job", tag = "backup", request_body = BackupJobSpec,
    responses((status = 201, body = BackupJobView), (status = 400, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(spec): JsonBody<BackupJobSpec>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let mut job = BackupJob {
        name: spec.name,
        vms: spec.vms,
        repository: spec.repository,
        schedule: spec.schedule,
        keep_last: spec.keep_last,
        incremental: spec.incremental,
        disks: spec.disks,
        enabled: spec.enabled,
        last_run_ms: None,
        next_run_ms: None,
        last_result: None,
    };
    job.schedule = check(&state, &job)?.to_string();
    job.next_run_ms = next_slot(&job, state.now_ms());
    state.store.add_backup_job(&job)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "backup.job_created",
        &job.name,
        format!(
            "{} created backup job {} ({} VM(s), {}, keep {})",
            who.name,
            job.name,
            job.vms.len(),
            job.schedule,
            job.keep_last
        ),
        serde_json::to_value(&job).unwrap_or_default(),
    )?;
    Ok((StatusCode::CREATED, Json(view(&state, job))).into_response())
}

/// `PATCH /api/vinfra/backup/job/{job}` (operator): changes what the body names; a new
/// schedule or enabling the job sets its next slot from now.
#[utoipa::path(patch, path = "/api/vinfra/backup/job/{job}", tag = "backup",
    params(("job" = String, Path)), request_body = BackupJobPatch,
    responses((status = 200, body = BackupJobView), (status = 400, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    JsonBody(p): JsonBody<BackupJobPatch>,
) -> ApiResult<Json<BackupJobView>> {
    who.require(Role::Operator)?;
    let old = find_job(&state, &name)?;
    let mut job = old.clone();
    if let Some(v) = p.vms {
        job.vms = v;
    }
    if let Some(r) = p.repository {
        job.repository = r;
    }
    if let Some(s) = p.schedule {
        job.schedule = s;
    }
    if let Some(k) = p.keep_last {
        job.keep_last = k;
    }
    if let Some(i) = p.incremental {
        job.incremental = i;
    }
    if let Some(d) = p.disks {
        job.disks = d;
    }
    if let Some(e) = p.enabled {
        job.enabled = e;
    }
    job.schedule = check(&state, &job)?.to_string();
    if job.schedule != old.schedule || job.enabled != old.enabled || job.next_run_ms.is_none() {
        job.next_run_ms = next_slot(&job, state.now_ms());
    }
    if !state.store.update_backup_job(&job)? {
        return Err(ApiError::not_found(format!("no backup job {name}")));
    }
    state.events.action(
        state.now_ms(),
        &who.name,
        "backup.job_changed",
        &job.name,
        format!("{} changed backup job {}", who.name, job.name),
        serde_json::to_value(&job).unwrap_or_default(),
    )?;
    Ok(Json(view(&state, job)))
}

/// `DELETE /api/vinfra/backup/job/{job}` (operator): the job goes, its backups stay.
#[utoipa::path(delete, path = "/api/vinfra/backup/job/{job}", tag = "backup",
    params(("job" = String, Path)),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Operator)?;
    if !state.store.delete_backup_job(&name)? {
        return Err(ApiError::not_found(format!("no backup job {name}")));
    }
    state.events.action(
        state.now_ms(),
        &who.name,
        "backup.job_deleted",
        &name,
        format!("{} deleted backup job {name}", who.name),
        serde_json::Value::Null,
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `POST /api/vinfra/backup/job/{job}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobAction {
    /// `run`.
    pub action: String,
}

/// `POST /api/vinfra/backup/job/{job}?action=run` (operator): a run now (also of a
/// disabled job); its next slot stays. `202` with the `vm.backup` tasks; 409 while a
/// run is in progress.
#[utoipa::path(post, path = "/api/vinfra/backup/job/{job}", tag = "backup",
    params(("job" = String, Path), ("action" = String, Query)),
    responses((status = 202, body = RunStarted), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub async fn action(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    QueryArgs(q): QueryArgs<JobAction>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    if q.action != "run" {
        return Err(ApiError::field(
            "action",
            format!("action: {:?} is not run", q.action),
        ));
    }
    let job = find_job(&state, &name)?;
    let started = start_run(&state, &job, &who.name, job.next_run_ms).await?;
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// The query of `GET /api/vinfra/backup/backups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupsQuery {
    /// The repository (an absolute path on the hosts).
    pub repository: String,
    /// Only this VM's backups.
    pub vm: Option<String>,
}

/// `GET /api/vinfra/backup/backups?repository=PATH[&vm=NAME]`: the backups in a
/// repository, oldest first, as a host reads them (the VM's host, or any connected
/// one): what `POST /api/vcenter/vm/{vm}?action=restore` takes as `backup`.
#[utoipa::path(get, path = "/api/vinfra/backup/backups", tag = "backup",
    params(("repository" = String, Query), ("vm" = Option<String>, Query)),
    responses((status = 200, body = [BackupInfo]), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn backups(
    State(state): State<AppState>,
    _who: Principal,
    QueryArgs(q): QueryArgs<BackupsQuery>,
) -> ApiResult<Json<Vec<BackupInfo>>> {
    if !q.repository.starts_with('/') {
        return Err(ApiError::field(
            "repository",
            "repository: an absolute path on the hosts",
        ));
    }
    if let Some(vm) = &q.vm {
        validate_name(vm).map_err(|why| ApiError::field("vm", format!("vm: {why}")))?;
    }
    let known = match &q.vm {
        Some(vm) => state.store.vm(vm)?,
        None => None,
    };
    // A VM that no longer exists may still have backups: any host reads them.
    let (_, client) = match &known {
        Some(vm) => running_host(&state, vm)?,
        None => pick_host(&state, None, "host")?,
    };
    let list = blocking(move || {
        let mut query = vec![("repository", q.repository.as_str())];
        if let Some(vm) = &q.vm {
            query.push(("vm", vm.as_str()));
        }
        client.get_query::<Vec<BackupInfo>>("/backups", &query)
    })
    .await?
    .map_err(|e| {
        let mut e = ApiError::from(e);
        // The host names its own query's field: the same name here.
        if let Some(f) = e.info.field.take() {
            e.info.field = Some(f.trim_start_matches("spec.").to_string());
        }
        e
    })?;
    Ok(Json(list))
}
