//! A cluster's DRS rules: affinity (VMs together), anti-affinity (VMs apart) and VM-host
//! (VMs on, or away from, a group of hosts; must or should). DRS honours the enabled
//! ones in its recommendations, its automation and the placement of power-ons.
//!
//! A rule is checked when it is stored: its VMs and hosts exist (a VM it already named
//! may have left the inventory since), affinity and anti-affinity name at least two
//! VMs, no VM twice, and it contradicts no other enabled rule of the cluster (409, with
//! drs's reason).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::inventory::find_cluster;
use super::{ApiError, ApiResult, AppState, JsonBody};
use crate::auth::Principal;
use crate::drs::cluster_spec_with_policy;
use crate::model::{Cluster, Role, Rule, RuleDefinition, RuleKind, VmHostMode};

fn cluster_rules(state: &AppState, cluster: &str) -> ApiResult<Vec<Rule>> {
    Ok(state
        .store
        .rules()?
        .into_iter()
        .filter(|r| r.cluster == cluster)
        .collect())
}

fn find_rule(state: &AppState, cluster: &str, name: &str) -> ApiResult<Rule> {
    state
        .store
        .rule(name)?
        .filter(|r| r.cluster == cluster)
        .ok_or_else(|| ApiError::not_found(format!("no rule {name} in cluster {cluster}")))
}

/// `GET /api/vcenter/cluster/{cluster}/rules`.
#[utoipa::path(get, path = "/api/vcenter/cluster/{cluster}/rules", tag = "rules",
    params(("cluster" = String, Path)),
    responses((status = 200, body = [Rule]), (status = 404, body = super::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _who: Principal,
    Path(cluster): Path<String>,
) -> ApiResult<Json<Vec<Rule>>> {
    find_cluster(&state, &cluster)?;
    Ok(Json(cluster_rules(&state, &cluster)?))
}

/// `GET /api/vcenter/cluster/{cluster}/rules/{rule}`.
#[utoipa::path(get, path = "/api/vcenter/cluster/{cluster}/rules/{rule}", tag = "rules",
    params(("cluster" = String, Path), ("rule" = String, Path)),
    responses((status = 200, body = Rule), (status = 404, body = super::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _who: Principal,
    Path((cluster, name)): Path<(String, String)>,
) -> ApiResult<Json<Rule>> {
    find_cluster(&state, &cluster)?;
    Ok(Json(find_rule(&state, &cluster, &name)?))
}

/// The body of `POST /api/vcenter/cluster/{cluster}/rules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCreate {
    /// Its name (unique in the inventory).
    pub name: String,
    /// What it asks.
    pub kind: RuleKind,
    /// Whether DRS honours it now.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The VMs it binds (at least two for affinity and anti-affinity).
    pub vms: Vec<String>,
    /// VM-host rules: the host group.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// VM-host rules: how it binds.
    #[serde(default)]
    pub mode: Option<VmHostMode>,
}

fn yes() -> bool {
    true
}

/// `POST /api/vcenter/cluster/{cluster}/rules` (operator): a new rule.
#[utoipa::path(post, path = "/api/vcenter/cluster/{cluster}/rules", tag = "rules",
    params(("cluster" = String, Path)), request_body = RuleCreate,
    responses((status = 201, body = Rule), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Path(cluster): Path<String>,
    JsonBody(req): JsonBody<RuleCreate>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let _serial = state.pool_rule_writes.lock().await;
    let c = find_cluster(&state, &cluster)?;
    vinfra_host::api::validate_name(&req.name)
        .map_err(|why| ApiError::field("name", format!("name: {why}")))?;
    if state.store.rule(&req.name)?.is_some() {
        return Err(ApiError::conflict(format!("rule {} exists already", req.name)).naming("name"));
    }
    let rule = Rule {
        name: req.name,
        cluster,
        definition: RuleDefinition {
            kind: req.kind,
            enabled: req.enabled,
            vms: req.vms,
            hosts: req.hosts,
            mode: req.mode,
        },
    };
    check(&state, &c, None, &rule)?;
    state.store.add_rule(&rule)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "rule.created",
        &rule.name,
        format!(
            "{} created rule {} in {}: {}",
            who.name,
            rule.name,
            c.name,
            describe(&rule)
        ),
        serde_json::to_value(&rule).unwrap_or_default(),
    )?;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

/// The body of `PATCH /api/vcenter/cluster/{cluster}/rules/{rule}`: what is given
/// replaces what is stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    /// New kind.
    #[serde(default)]
    pub kind: Option<RuleKind>,
    /// Enabled or not.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// New VMs.
    #[serde(default)]
    pub vms: Option<Vec<String>>,
    /// New hosts (VM-host rules).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// New mode (VM-host rules).
    #[serde(default)]
    pub mode: Option<VmHostMode>,
}

/// `PATCH /api/vcenter/cluster/{cluster}/rules/{rule}` (operator).
#[utoipa::path(patch, path = "/api/vcenter/cluster/{cluster}/rules/{rule}", tag = "rules",
    params(("cluster" = String, Path), ("rule" = String, Path)), request_body = RulePatch,
    responses((status = 200, body = Rule), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    Path((cluster, name)): Path<(String, String)>,
    JsonBody(req): JsonBody<RulePatch>,
) -> ApiResult<Json<Rule>> {
    who.require(Role::Operator)?;
    let _serial = state.pool_rule_writes.lock().await;
    let c = find_cluster(&state, &cluster)?;
    let old = find_rule(&state, &cluster, &name)?;
    let mut rule = old.clone();
    let d = &mut rule.definition;
    if let Some(kind) = req.kind {
        d.kind = kind;
        if kind != RuleKind::VmHost {
            // What only a VM-host rule has goes with the change, unless given.
            d.hosts.clear();
            d.mode = None;
        }
    }
    if let Some(enabled) = req.enabled {
        d.enabled = enabled;
    }
    if let Some(vms) = req.vms {
        d.vms = vms;
    }
    if let Some(hosts) = req.hosts {
        d.hosts = hosts;
    }
    if let Some(mode) = req.mode {
        d.mode = Some(mode);
    }
    check(&state, &c, Some(&old), &rule)?;
    state.store.update_rule(&rule)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "rule.reconfigured",
        &name,
        format!(
            "{} changed rule {name} in {}: {}",
            who.name,
            c.name,
            describe(&rule)
        ),
        serde_json::to_value(&rule).unwrap_or_default(),
    )?;
    Ok(Json(rule))
}

/// `DELETE /api/vcenter/cluster/{cluster}/rules/{rule}` (operator).
#[utoipa::path(delete, path = "/api/vcenter/cluster/{cluster}/rules/{rule}", tag = "rules",
    params(("cluster" = String, Path), ("rule" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path((cluster, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require(Role::Operator)?;
    let _serial = state.pool_rule_writes.lock().await;
    find_cluster(&state, &cluster)?;
    let rule = find_rule(&state, &cluster, &name)?;
    state.store.delete_rule(&name)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "rule.deleted",
        &name,
        format!("{} deleted rule {name} of {cluster}", who.name),
        serde_json::to_value(&rule).unwrap_or_default(),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// A rule in words, for the event log.
fn describe(rule: &Rule) -> String {
    let d = &rule.definition;
    let vms = d.vms.join(", ");
    let what = match d.kind {
        RuleKind::Affinity => format!("keep {vms} together"),
        RuleKind::AntiAffinity => format!("keep {vms} apart"),
        RuleKind::VmHost => format!(
            "{vms} {} {}",
            serde_json::to_value(d.mode)
                .ok()
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_default(),
            d.hosts.join(", ")
        ),
    };
    if d.enabled {
        what
    } else {
        format!("{what} (disabled)")
    }
}

/// Checks a rule to store (`old`: what it replaces).
fn check(state: &AppState, c: &Cluster, old: Option<&Rule>, rule: &Rule) -> ApiResult<()> {
    let d = &rule.definition;
    let vms = state.store.vms()?;
    let hosts = state.store.hosts()?;
    let known_before = |v: &String| old.is_some_and(|o| o.definition.vms.contains(v));
    for (i, v) in d.vms.iter().enumerate() {
        if d.vms[..i].contains(v) {
            return Err(ApiError::field(
                &format!("vms[{i}]"),
                format!("vms[{i}]: VM {v} is named twice"),
            ));
        }
        // A VM the rule named before may have left the inventory: the rule stays.
        if !vms.iter().any(|r| &r.name == v) && !known_before(v) {
            return Err(ApiError::field(
                &format!("vms[{i}]"),
                format!("vms[{i}]: no VM named {v}"),
            ));
        }
    }
    match d.kind {
        RuleKind::Affinity | RuleKind::AntiAffinity => {
            if d.vms.len() < 2 {
                return Err(ApiError::field(
                    "vms",
                    format!(
                        "vms: an affinity or anti-affinity rule names at least 2 VMs, not {}",
                        d.vms.len()
                    ),
                ));
            }
            if !d.hosts.is_empty() {
                return Err(ApiError::field("hosts", "hosts: only for vm_host rules"));
            }
            if d.mode.is_some() {
                return Err(ApiError::field("mode", "mode: only for vm_host rules"));
            }
        }
        RuleKind::VmHost => {
            if d.vms.is_empty() {
                return Err(ApiError::field("vms", "vms: name at least one VM"));
            }
            if d.hosts.is_empty() {
                return Err(ApiError::field("hosts", "hosts: name at least one host"));
            }
            for (i, h) in d.hosts.iter().enumerate() {
                if d.hosts[..i].contains(h) {
                    return Err(ApiError::field(
                        &format!("hosts[{i}]"),
                        format!("hosts[{i}]: host {h} is named twice"),
                    ));
                }
                if !hosts.iter().any(|k| &k.name == h) {
                    return Err(ApiError::field(
                        &format!("hosts[{i}]"),
                        format!("hosts[{i}]: no host {h}"),
                    ));
                }
            }
            if d.mode.is_none() {
                return Err(ApiError::field(
                    "mode",
                    "mode: must_run_on, should_run_on, must_not_run_on or should_not_run_on",
                ));
            }
        }
    }
    if !d.enabled {
        return Ok(());
    }
    // It must hold together with the cluster's other enabled rules, as drs reads them.
    let mut rules = cluster_rules(state, &c.name)?;
    rules.retain(|r| r.name != rule.name);
    let pools = Vec::new();
    let before = cluster_spec_with_policy(&hosts, &vms, &c.settings.drs, &pools, &rules).ignored;
    rules.push(rule.clone());
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    let after = cluster_spec_with_policy(&hosts, &vms, &c.settings.drs, &pools, &rules).ignored;
    match after.into_iter().find(|why| !before.contains(why)) {
        Some(why) if !why.contains("in the inventory") => Err(ApiError::conflict(format!(
            "rule {}: {}",
            rule.name,
            why.split_once(": ").map_or(why.as_str(), |(_, w)| w)
        ))
        .naming("vms")),
        _ => Ok(()),
    }
}
