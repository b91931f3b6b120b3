//! DRS through the API: a cluster's recommendations (a balancing pass over what the
//! hosts report now), applying one, running a pass on demand, the automation that
//! applies a fully automated cluster's recommendations every few minutes. (The initial
//! placement of power-ons is in `vm`.)
//!
//! A recommendation is named by what it does (`{vm, to}`), not by a number: applying it
//! again, or after the cluster changed, is checked against the inventory as it is then
//! (the VM still runs elsewhere and no task of its is running), so a recommendation is
//! never carried out twice, also across a restart of the center.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::inventory::find_cluster;
use super::vm::{find_vm, relocate_vm, running_host};
use super::{ApiError, ApiResult, AppState, JsonBody, QueryArgs};
use crate::auth::Principal;
use crate::drs::{inventory_spec, recommendations_keeping};
use crate::model::{Cluster, DrsAutomation, Role, TaskState, Vm};

/// How often a fully automated cluster is balanced (vCenter's default: 5 minutes).
pub const AUTOMATION_INTERVAL: Duration = Duration::from_secs(300);
/// The user DRS acts as in the event log and on its tasks.
const DRS_USER: &str = "drs";

/// A migration DRS recommends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrsRecommendation {
    /// The VM.
    pub vm: String,
    /// Where it runs.
    pub from: String,
    /// Where it should run.
    pub to: String,
    /// 1 (mandatory: a broken rule, a host over capacity) … 5 (slight improvement).
    pub priority: u8,
    /// How much the cluster's imbalance falls.
    pub gain: f64,
    /// Why.
    pub reason: String,
    /// Whether a fully automated cluster applies it on its own (its priority is within
    /// the threshold).
    pub automatic: bool,
}

/// A balancing pass over the cluster as the hosts report it now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrsPass {
    /// The cluster.
    pub cluster: String,
    /// Its automation level and threshold.
    pub automation: DrsAutomation,
    /// The threshold (1–5).
    pub threshold: u8,
    /// Imbalance now (the standard deviation of the hosts' normalised load).
    pub imbalance: f64,
    /// Imbalance after every recommendation.
    pub imbalance_after: f64,
    /// The imbalance the threshold aims at.
    pub target: f64,
    /// The migrations, in order.
    pub recommendations: Vec<DrsRecommendation>,
    /// Rules no migration can repair, and why; rules left out of the pass (a member
    /// gone, a contradiction), and why.
    pub unresolved: Vec<String>,
    /// Migrations this pass started (a run of a fully automated cluster).
    #[serde(default)]
    pub applied: Vec<DrsRecommendation>,
    /// VMs left out because a task of theirs is still running.
    #[serde(default)]
    pub busy: Vec<String>,
}

/// Locks `AppState::drs_last` even after a panic elsewhere while it was held: nothing in
/// it can be half-written (each access is one `get` or one `insert`).
fn lock_ignoring_poison<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a task of `vm` is still running (a migration in flight is never asked for
/// twice).
fn busy(state: &AppState, vm: &str) -> ApiResult<bool> {
    Ok(state
        .store
        .tasks_of(vm, 8)?
        .iter()
        .any(|t| t.state == TaskState::Running))
}

/// The pass over the inventory as it is now.
fn pass(state: &AppState, c: &Cluster) -> ApiResult<DrsPass> {
    let settings = &c.settings.drs;
    let input = inventory_spec(state.store.as_ref(), c)?;
    let previous = lock_ignoring_poison(&state.drs_last)
        .get(&c.name)
        .cloned()
        .unwrap_or_default();
    let plan = recommendations_keeping(input.spec, &previous)
        .map_err(|e| ApiError::conflict(format!("drs: {e}")))?;
    lock_ignoring_poison(&state.drs_last).insert(
        c.name.clone(),
        plan.recommendations
            .iter()
            .map(|r| (r.vm.clone(), r.to.clone()))
            .collect(),
    );
    let mut busy_vms = Vec::new();
    let mut recs = Vec::new();
    for r in plan.recommendations {
        if busy(state, &r.vm)? {
            busy_vms.push(r.vm);
            continue;
        }
        recs.push(DrsRecommendation {
            vm: r.vm,
            from: r.from,
            to: r.to,
            priority: r.priority,
            gain: r.gain,
            reason: r.reason,
            automatic: r.automatic,
        });
    }
    Ok(DrsPass {
        cluster: c.name.clone(),
        automation: settings.automation,
        threshold: settings.threshold,
        imbalance: plan.imbalance_before,
        imbalance_after: plan.imbalance_after,
        target: plan.target,
        recommendations: recs,
        unresolved: plan
            .unresolved
            .into_iter()
            .map(|u| format!("{}: {}", u.vm, u.reason))
            .chain(input.ignored)
            .collect(),
        applied: Vec::new(),
        busy: busy_vms,
    })
}

/// `GET /api/vcenter/cluster/{cluster}/drs/recommendations`: a pass over the cluster as
/// the hosts report it now.
#[utoipa::path(get, path = "/api/vcenter/cluster/{cluster}/drs/recommendations", tag = "drs",
    params(("cluster" = String, Path)),
    responses((status = 200, body = DrsPass), (status = 404, body = super::ErrorBody)))]
pub async fn recommendations_of(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<DrsPass>> {
    let c = find_cluster(&state, &name)?;
    Ok(Json(pass(&state, &c)?))
}

/// The body of `POST .../drs/recommendations?action=apply`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRecommendation {
    /// The VM to move.
    pub vm: String,
    /// Where to.
    pub to: String,
}

/// The query of the DRS actions.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrsAction {
    /// `apply` (a recommendation) or `run` (a pass).
    pub action: String,
}

/// `POST /api/vcenter/cluster/{cluster}/drs/recommendations?action=apply` (operator):
/// carries out one recommendation (`{"vm": ..., "to": ...}`) as a live migration.
#[utoipa::path(post, path = "/api/vcenter/cluster/{cluster}/drs/recommendations", tag = "drs",
    params(("cluster" = String, Path), ("action" = String, Query)), request_body = ApplyRecommendation,
    responses((status = 202, body = super::inventory::TaskAccepted), (status = 409, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub async fn apply(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    QueryArgs(q): QueryArgs<DrsAction>,
    JsonBody(req): JsonBody<ApplyRecommendation>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    if q.action != "apply" {
        return Err(ApiError::field(
            "action",
            format!("action: {:?} is not apply", q.action),
        ));
    }
    find_cluster(&state, &name)?;
    let vm = find_vm(&state, &req.vm)?;
    if busy(&state, &vm.name)? {
        return Err(ApiError::conflict(format!(
            "VM {} has a task running: the recommendation waits for it",
            vm.name
        )));
    }
    move_vm(&state, &who, &vm, &req.to).await
}

async fn move_vm(state: &AppState, who: &Principal, vm: &Vm, to: &str) -> ApiResult<Response> {
    let source = running_host(state, vm)?;
    relocate_vm(state, who, vm, source, to).await
}

/// `POST /api/vcenter/cluster/{cluster}/drs?action=run` (operator): a pass now; a fully
/// automated cluster's automatic recommendations are applied (each a task).
#[utoipa::path(post, path = "/api/vcenter/cluster/{cluster}/drs", tag = "drs",
    params(("cluster" = String, Path), ("action" = String, Query)),
    responses((status = 200, body = DrsPass), (status = 404, body = super::ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    QueryArgs(q): QueryArgs<DrsAction>,
) -> ApiResult<Json<DrsPass>> {
    who.require(Role::Operator)?;
    if q.action != "run" {
        return Err(ApiError::field(
            "action",
            format!("action: {:?} is not run", q.action),
        ));
    }
    let c = find_cluster(&state, &name)?;
    Ok(Json(run_pass(&state, &c, &who.name).await?))
}

/// One pass; in a fully automated cluster its automatic recommendations are started.
async fn run_pass(state: &AppState, c: &Cluster, user: &str) -> ApiResult<DrsPass> {
    let mut p = pass(state, c)?;
    if p.automation != DrsAutomation::FullyAutomated {
        return Ok(p);
    }
    let drs = Principal {
        name: DRS_USER.into(),
        role: Role::Administrator,
    };
    for r in p.recommendations.iter().filter(|r| r.automatic) {
        let Ok(vm) = find_vm(state, &r.vm) else {
            continue;
        };
        // One VM moves once per pass; a later recommendation of it waits for the next.
        if p.applied.iter().any(|a| a.vm == r.vm) {
            continue;
        }
        match move_vm(state, &drs, &vm, &r.to).await {
            Ok(_) => p.applied.push(r.clone()),
            Err(e) => {
                tracing::warn!(vm = %r.vm, to = %r.to, "drs could not apply: {}", e.info.message);
            }
        }
    }
    if !p.applied.is_empty() {
        state.events.action(
            state.now_ms(),
            user,
            "drs.applied",
            &c.name,
            format!(
                "DRS started {} migration(s) in {} (imbalance {:.3}, target {:.3})",
                p.applied.len(),
                c.name,
                p.imbalance,
                p.target
            ),
            serde_json::to_value(&p.applied).unwrap_or_default(),
        )?;
    }
    Ok(p)
}

/// Balances every fully automated cluster every [`AUTOMATION_INTERVAL`] until the
/// runtime ends.
pub async fn automation(state: AppState) {
    let mut tick = tokio::time::interval(AUTOMATION_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: let the hosts report first.
    tick.tick().await;
    loop {
        tick.tick().await;
        let clusters = match state.store.clusters() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("drs automation: {e}");
                continue;
            }
        };
        for c in clusters
            .iter()
            .filter(|c| c.settings.drs.automation == DrsAutomation::FullyAutomated)
        {
            if let Err(e) = run_pass(&state, c, DRS_USER).await {
                tracing::warn!(cluster = %c.name, "drs automation: {}", e.info.message);
            }
        }
    }
}
