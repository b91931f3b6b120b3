//! Resource pools: list, create, read, change, delete, and moving VMs in and out. A pool
//! divides its cluster's CPU (MHz, 1000 per logical CPU) and memory (MiB) by
//! reservation, limit and shares; DRS honours the tree (`crate::drs::policy`).
//!
//! Every change keeps the tree whole: the parent exists, is of the same cluster and is
//! not the pool or one of its descendants; a reservation is within its limit; the
//! reservations fit their parents and the cluster's connected hosts
//! ([`crate::drs::check_pool_tree`]). Deleting a pool moves its VMs and child pools to
//! its parent (as vSphere does), unless the parent could not then hold their
//! reservations.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::inventory::find_cluster;
use super::{ApiError, ApiResult, AppState, JsonBody, QueryArgs};
use crate::auth::Principal;
use crate::drs::{check_pool_tree, cluster_capacity};
use crate::model::{PoolAllocation, ResourcePool, Role, DEFAULT_CLUSTER};

/// A pool as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    /// The pool.
    #[serde(flatten)]
    pub pool: ResourcePool,
    /// The VMs in it (not those of its child pools), by name.
    pub vms: Vec<String>,
    /// Its child pools, by name.
    pub children: Vec<String>,
}

fn view(state: &AppState, pool: ResourcePool) -> ApiResult<PoolView> {
    let vms = state
        .store
        .vms()?
        .into_iter()
        .filter(|v| v.resource_pool.as_deref() == Some(&pool.name))
        .map(|v| v.name)
        .collect();
    let children = state
        .store
        .resource_pools()?
        .into_iter()
        .filter(|p| p.parent.as_deref() == Some(&pool.name))
        .map(|p| p.name)
        .collect();
    Ok(PoolView {
        pool,
        vms,
        children,
    })
}

pub(super) fn find_pool(state: &AppState, name: &str) -> ApiResult<ResourcePool> {
    state
        .store
        .resource_pool(name)?
        .ok_or_else(|| ApiError::not_found(format!("no resource pool {name}")))
}

/// The filter of `GET /api/vcenter/resource-pool`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolFilter {
    /// Only this cluster's pools.
    pub cluster: Option<String>,
}

/// `GET /api/vcenter/resource-pool[?cluster=]`.
#[utoipa::path(get, path = "/api/vcenter/resource-pool", tag = "resource-pool",
    params(("cluster" = Option<String>, Query)),
    responses((status = 200, body = [PoolView])))]
pub async fn list(
    State(state): State<AppState>,
    _who: Principal,
    QueryArgs(f): QueryArgs<PoolFilter>,
) -> ApiResult<Json<Vec<PoolView>>> {
    let pools = state.store.resource_pools()?;
    let vms = state.store.vms()?;
    Ok(Json(
        pools
            .iter()
            .filter(|p| f.cluster.as_ref().is_none_or(|c| &p.cluster == c))
            .map(|p| PoolView {
                pool: p.clone(),
                vms: vms
                    .iter()
                    .filter(|v| v.resource_pool.as_deref() == Some(&p.name))
                    .map(|v| v.name.clone())
                    .collect(),
                children: pools
                    .iter()
                    .filter(|c| c.parent.as_deref() == Some(&p.name))
                    .map(|c| c.name.clone())
                    .collect(),
            })
            .collect(),
    ))
}

/// `GET /api/vcenter/resource-pool/{pool}`.
#[utoipa::path(get, path = "/api/vcenter/resource-pool/{pool}", tag = "resource-pool",
    params(("pool" = String, Path)),
    responses((status = 200, body = PoolView), (status = 404, body = super::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<PoolView>> {
    let pool = find_pool(&state, &name)?;
    Ok(Json(view(&state, pool)?))
}

/// The body of `POST /api/vcenter/resource-pool`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    /// Its name (unique in the inventory).
    pub name: String,
    /// Its cluster; default the parent's, or `cluster-1`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Its parent pool; none = the cluster's root.
    #[serde(default)]
    pub parent: Option<String>,
    /// CPU (MHz); default no reservation, no limit, normal shares, expandable.
    #[serde(default)]
    pub cpu_allocation: PoolAllocation,
    /// Memory (MiB); the same defaults.
    #[serde(default)]
    pub memory_allocation: PoolAllocation,
}

/// `POST /api/vcenter/resource-pool` (operator): a new pool.
#[utoipa::path(post, path = "/api/vcenter/resource-pool", tag = "resource-pool",
    request_body = PoolCreate,
    responses((status = 201, body = PoolView), (status = 409, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(req): JsonBody<PoolCreate>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let _serial = state.pool_rule_writes.lock().await;
    vinfra_host::api::validate_name(&req.name)
        .map_err(|why| ApiError::field("name", format!("name: {why}")))?;
    let pools = state.store.resource_pools()?;
    if pools.iter().any(|p| p.name == req.name) {
        return Err(
            ApiError::conflict(format!("resource pool {} exists already", req.name)).naming("name"),
        );
    }
    let parent_cluster = match &req.parent {
        Some(parent) => Some(
            pools
                .iter()
                .find(|p| &p.name == parent)
                .map(|p| p.cluster.clone())
                .ok_or_else(|| {
                    ApiError::field("parent", format!("parent: no resource pool {parent}"))
                })?,
        ),
        None => None,
    };
    let cluster = req
        .cluster
        .clone()
        .or_else(|| parent_cluster.clone())
        .unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
    find_cluster(&state, &cluster)
        .map_err(|_| ApiError::field("cluster", format!("cluster: no cluster {cluster}")))?;
    let pool = ResourcePool {
        name: req.name,
        cluster,
        parent: req.parent,
        cpu_allocation: req.cpu_allocation,
        memory_allocation: req.memory_allocation,
    };
    check(&state, &pools, None, Some(&pool))?;
    state.store.add_resource_pool(&pool)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "resource_pool.created",
        &pool.name,
        format!(
            "{} created resource pool {} in {}",
            who.name,
            pool.name,
            pool.parent.as_deref().unwrap_or(&pool.cluster)
        ),
        serde_json::to_value(&pool).unwrap_or_default(),
    )?;
    Ok((StatusCode::CREATED, Json(view(&state, pool)?)).into_response())
}

/// Some(value) when the field is present, even as `null` (a patch that clears it).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// What `PATCH` changes in one resource; what is left out stays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocationPatch {
    /// New reservation.
    #[serde(default)]
    pub reservation: Option<u64>,
    /// New limit (`null`: unlimited).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub limit: Option<Option<u64>>,
    /// New shares.
    #[serde(default)]
    pub shares: Option<u32>,
    /// New expandable reservation.
    #[serde(default)]
    pub expandable_reservation: Option<bool>,
}

impl AllocationPatch {
    fn apply(&self, a: &mut PoolAllocation) {
        if let Some(r) = self.reservation {
            a.reservation = r;
        }
        if let Some(l) = self.limit {
            a.limit = l;
        }
        if let Some(s) = self.shares {
            a.shares = s;
        }
        if let Some(e) = self.expandable_reservation {
            a.expandable_reservation = e;
        }
    }
}

/// The body of `PATCH /api/vcenter/resource-pool/{pool}`: what is given changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolPatch {
    /// New parent pool (`null`: the cluster's root).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub parent: Option<Option<String>>,
    /// CPU changes.
    #[serde(default)]
    pub cpu_allocation: Option<AllocationPatch>,
    /// Memory changes.
    #[serde(default)]
    pub memory_allocation: Option<AllocationPatch>,
}

/// `PATCH /api/vcenter/resource-pool/{pool}` (operator).
#[utoipa::path(patch, path = "/api/vcenter/resource-pool/{pool}", tag = "resource-pool",
    params(("pool" = String, Path)), request_body = PoolPatch,
    responses((status = 200, body = PoolView), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<PoolPatch>,
) -> ApiResult<Json<PoolView>> {
    who.require(Role::Operator)?;
    let _serial = state.pool_rule_writes.lock().await;
    let old = find_pool(&state, &name)?;
    let mut pool = old.clone();
    if let Some(parent) = req.parent {
        pool.parent = parent;
    }
    if let Some(p) = &req.cpu_allocation {
        p.apply(&mut pool.cpu_allocation);
    }
    if let Some(p) = &req.memory_allocation {
        p.apply(&mut pool.memory_allocation);
    }
    let pools = state.store.resource_pools()?;
    check(&state, &pools, Some(&old), Some(&pool))?;
    state.store.update_resource_pool(&pool)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "resource_pool.reconfigured",
        &name,
        format!("{} changed resource pool {name}", who.name),
        serde_json::to_value(&pool).unwrap_or_default(),
    )?;
    Ok(Json(view(&state, pool)?))
}

/// `DELETE /api/vcenter/resource-pool/{pool}` (operator): its VMs and child pools move
/// to its parent (409 if the parent could not hold their reservations).
#[utoipa::path(delete, path = "/api/vcenter/resource-pool/{pool}", tag = "resource-pool",
    params(("pool" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Operator)?;
    let _serial = state.pool_rule_writes.lock().await;
    let old = find_pool(&state, &name)?;
    let pools = state.store.resource_pools()?;
    check(&state, &pools, Some(&old), None)?;
    let view = view(&state, old.clone())?;
    state.store.delete_resource_pool(&name)?;
    let to = old.parent.as_deref().unwrap_or(&old.cluster);
    state.events.action(
        state.now_ms(),
        &who.name,
        "resource_pool.deleted",
        &name,
        format!(
            "{} deleted resource pool {name}; its {} VM(s) and {} child pool(s) moved to {to}",
            who.name,
            view.vms.len(),
            view.children.len()
        ),
        serde_json::json!({ "moved_to": old.parent, "vms": view.vms, "children": view.children }),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `POST /api/vcenter/resource-pool/{pool}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolAction {
    /// `add_vms` (into this pool) or `remove_vms` (back to the cluster's root).
    pub action: String,
}

/// The body of the VM actions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolVms {
    /// The VMs, by name.
    pub vms: Vec<String>,
}

/// `POST /api/vcenter/resource-pool/{pool}?action=add_vms|remove_vms` (operator):
/// `{"vms": [...]}` move into the pool (from wherever they were), or out of it to the
/// cluster's root. All or none.
#[utoipa::path(post, path = "/api/vcenter/resource-pool/{pool}", tag = "resource-pool",
    params(("pool" = String, Path), ("action" = String, Query)), request_body = PoolVms,
    responses((status = 200, body = PoolView), (status = 404, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub async fn action(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    QueryArgs(q): QueryArgs<PoolAction>,
    JsonBody(req): JsonBody<PoolVms>,
) -> ApiResult<Json<PoolView>> {
    who.require(Role::Operator)?;
    let _serial = state.pool_rule_writes.lock().await;
    let add = match q.action.as_str() {
        "add_vms" => true,
        "remove_vms" => false,
        other => {
            return Err(ApiError::field(
                "action",
                format!("action: {other:?} is not add_vms or remove_vms"),
            ))
        }
    };
    let pool = find_pool(&state, &name)?;
    if req.vms.is_empty() {
        return Err(ApiError::field("vms", "vms: name at least one VM"));
    }
    let vms = state.store.vms()?;
    for (i, v) in req.vms.iter().enumerate() {
        let Some(vm) = vms.iter().find(|r| &r.name == v) else {
            return Err(ApiError::field(
                &format!("vms[{i}]"),
                format!("vms[{i}]: no VM named {v}"),
            ));
        };
        if !add && vm.resource_pool.as_deref() != Some(&name) {
            return Err(ApiError::field(
                &format!("vms[{i}]"),
                format!("vms[{i}]: VM {v} is not in resource pool {name}"),
            ));
        }
    }
    let target = add.then_some(name.as_str());
    if !state.store.set_vm_pool(&req.vms, target)? {
        // A VM went away between the check and the write: nothing changed.
        return Err(ApiError::conflict(
            "a VM left the inventory meanwhile: try again",
        ));
    }
    let (kind, message) = if add {
        (
            "resource_pool.vms_added",
            format!(
                "{} moved {} into resource pool {name}",
                who.name,
                req.vms.join(", ")
            ),
        )
    } else {
        (
            "resource_pool.vms_removed",
            format!(
                "{} moved {} out of resource pool {name} to {}",
                who.name,
                req.vms.join(", "),
                pool.cluster
            ),
        )
    };
    state.events.action(
        state.now_ms(),
        &who.name,
        kind,
        &name,
        message,
        serde_json::json!({ "vms": req.vms }),
    )?;
    Ok(Json(view(&state, pool)?))
}

/// Checks a change of the tree: `old` replaced by `new` (a create: no `old`; a delete:
/// no `new`, its children moving to its parent).
fn check(
    state: &AppState,
    pools: &[ResourcePool],
    old: Option<&ResourcePool>,
    new: Option<&ResourcePool>,
) -> ApiResult<()> {
    if let Some(p) = new {
        for (field, a) in [
            ("cpu_allocation", &p.cpu_allocation),
            ("memory_allocation", &p.memory_allocation),
        ] {
            if a.shares == 0 {
                return Err(ApiError::field(
                    &format!("{field}.shares"),
                    format!("{field}.shares: at least 1 (500 low, 1000 normal, 2000 high)"),
                ));
            }
            if let Some(limit) = a.limit.filter(|l| a.reservation > *l) {
                return Err(ApiError::field(
                    &format!("{field}.reservation"),
                    format!(
                        "{field}.reservation: {} is above the limit {limit}",
                        a.reservation
                    ),
                ));
            }
        }
        if let Some(parent) = &p.parent {
            let Some(pp) = pools.iter().find(|q| &q.name == parent) else {
                return Err(ApiError::field(
                    "parent",
                    format!("parent: no resource pool {parent}"),
                ));
            };
            if pp.cluster != p.cluster {
                return Err(ApiError::field(
                    "parent",
                    format!("parent: pool {parent} is in cluster {}", pp.cluster),
                ));
            }
            // The parent must not be the pool or below it.
            let mut at = Some(parent.as_str());
            let mut steps = 0;
            while let Some(a) = at {
                if a == p.name {
                    return Err(ApiError::field(
                        "parent",
                        format!("parent: {parent} is {} or one of its child pools", p.name),
                    ));
                }
                steps += 1;
                if steps > pools.len() {
                    break;
                }
                at = pools
                    .iter()
                    .find(|q| q.name == a)
                    .and_then(|q| q.parent.as_deref());
            }
        }
    }
    let cluster = new.or(old).map(|p| p.cluster.as_str()).unwrap_or_default();
    let tree = |with_change: bool| -> Vec<ResourcePool> {
        let mut tree: Vec<ResourcePool> = pools
            .iter()
            .filter(|p| p.cluster == cluster)
            .filter(|p| !with_change || Some(&p.name) != old.map(|o| &o.name))
            .cloned()
            .collect();
        if with_change {
            if let (Some(o), None) = (old, new) {
                for child in tree
                    .iter_mut()
                    .filter(|c| c.parent.as_ref() == Some(&o.name))
                {
                    child.parent.clone_from(&o.parent);
                }
            }
            tree.extend(new.cloned());
        }
        tree
    };
    let capacity = cluster_capacity(&state.store.hosts()?);
    let Err(e) = check_pool_tree(&tree(true), capacity) else {
        return Ok(());
    };
    // A cluster that lost hosts may hold its pools no more: changes that ask no more
    // than before (a delete, lower reservations) are still let through.
    let asks_no_more = match (old, new) {
        (_, None) => true,
        (Some(o), Some(n)) => {
            n.cpu_allocation.reservation <= o.cpu_allocation.reservation
                && n.memory_allocation.reservation <= o.memory_allocation.reservation
                && n.parent == o.parent
        }
        (None, Some(_)) => false,
    };
    if asks_no_more && check_pool_tree(&tree(false), capacity).is_err() {
        return Ok(());
    }
    Err(ApiError::conflict(e.message).naming(e.field))
}
