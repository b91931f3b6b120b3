//! HA policy routes: the cluster's failover capacity with the hosts' verdicts, a VM's
//! restart priority and isolation response (pushed to the hosts, which keep them on the
//! shared volume). The admission check of power-ons is `vm::admit_power_on`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;
use vinfra_host::api::{IsolationResponse, RestartPriority, VmInfo, VmPatch};

use super::inventory::find_cluster;
use super::vm::{find_vm, fresh_ms, running_host, VmView};
use super::{blocking, ApiError, ApiResult, AppState};
use crate::auth::Principal;
use crate::ha::HaStatus;
use crate::model::Role;

/// `GET /api/vcenter/cluster/{cluster}/ha`: failover capacity now (failures tolerated,
/// slots, reserved percentages), admission control, each host's HA verdicts.
#[utoipa::path(get, path = "/api/vcenter/cluster/{cluster}/ha", tag = "ha",
    params(("cluster" = String, Path)),
    responses((status = 200, body = HaStatus), (status = 404, body = super::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<HaStatus>> {
    let cluster = find_cluster(&state, &name)?;
    let hosts = state.store.hosts()?;
    let vms = state.store.vms()?;
    crate::ha::status(&cluster, &hosts, &vms, state.now_ms())
        .map(Json)
        .map_err(|e| ApiError::conflict(format!("drs: {e}")))
}

/// `PATCH /api/vcenter/vm/{vm}` (operator): `{"ha": {"priority": "high",
/// "isolation_response": "shut_down"}}` (either; `restart_priority` is accepted for
/// `priority`). The hosts rewrite the VM's settings on the volume; their HA agents use
/// them at the next failover.
#[utoipa::path(patch, path = "/api/vcenter/vm/{vm}", tag = "ha",
    params(("vm" = String, Path)), request_body = VmPatch,
    responses((status = 200, body = VmView), (status = 400, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn patch_vm(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<VmView>> {
    who.require(Role::Operator)?;
    let patch = parse_patch(&bytes)?;
    let mut vm = find_vm(&state, &name)?;
    // The host that runs it, or any: the settings live on the shared volume.
    let (host, client) = running_host(&state, &vm)?;
    let path = format!("/vms/{name}");
    let body = patch.clone();
    let info: VmInfo = blocking(move || client.patch(&path, &body)).await??;
    // Shown at once, before the next poll brings it.
    vm.info.spec.ha = info.spec.ha.clone();
    state.store.put_vm(&vm)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "vm.reconfigured",
        &name,
        format!(
            "{} set the HA restart priority of VM {name} to {}, its isolation response to {}",
            who.name,
            word(&info.spec.ha.priority),
            word(&info.spec.ha.isolation_response),
        ),
        serde_json::json!({ "host": host.name, "ha": info.spec.ha }),
    )?;
    Ok(Json(VmView::of(&state, vm, fresh_ms(&state)?)))
}

fn word(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Reads a VM patch, naming the field at fault (serde names no field for a wrong enum
/// value, and says nothing of the path).
fn parse_patch(bytes: &Bytes) -> ApiResult<VmPatch> {
    let bad = |field: &str, why: String| ApiError::malformed(why, Some(field.to_string()));
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::malformed(format!("request body: {e}"), None))?;
    let top = v
        .as_object()
        .ok_or_else(|| ApiError::malformed("request body: a JSON object is expected", None))?;
    if let Some(k) = top.keys().find(|k| *k != "ha") {
        return Err(bad(k, format!("{k}: unknown field, only ha can change")));
    }
    let nothing = || {
        bad(
            "ha",
            "ha: nothing to change: give ha.priority or ha.isolation_response".into(),
        )
    };
    let ha = top
        .get("ha")
        .ok_or_else(nothing)?
        .as_object()
        .ok_or_else(|| bad("ha", "ha: an object is expected".into()))?;
    for (k, value) in ha {
        let field = format!("ha.{k}");
        let fits = match k.as_str() {
            "priority" | "restart_priority" => {
                serde_json::from_value::<RestartPriority>(value.clone()).is_ok()
            }
            "isolation_response" => {
                serde_json::from_value::<IsolationResponse>(value.clone()).is_ok()
            }
            _ => {
                return Err(bad(
                    &field,
                    format!("{field}: unknown field, expected priority or isolation_response"),
                ))
            }
        };
        if !fits {
            let expected = if k == "isolation_response" {
                "leave_on, power_off or shut_down"
            } else {
                "high, medium, low or disabled"
            };
            return Err(bad(&field, format!("{field}: {value} is not {expected}")));
        }
    }
    let patch: VmPatch = serde_json::from_value(v).map_err(|e| {
        // Both names of the priority at once.
        bad("ha.priority", format!("ha.priority: {e}"))
    })?;
    if patch.is_empty() {
        return Err(nothing());
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn field(body: &str) -> Option<String> {
        parse_patch(&Bytes::from(body.to_string()))
            .unwrap_err()
            .info
            .field
    }

    #[test]
    fn bad_patches_name_their_field() {
        assert_eq!(
            field(r#"{"ha": {"priority": "urgent"}}"#).unwrap(),
            "ha.priority"
        );
        assert_eq!(
            field(r#"{"ha": {"restart_priority": 3}}"#).unwrap(),
            "ha.restart_priority"
        );
        assert_eq!(
            field(r#"{"ha": {"isolation_response": "panic"}}"#).unwrap(),
            "ha.isolation_response"
        );
        assert_eq!(field(r#"{"ha": {"colour": 1}}"#).unwrap(), "ha.colour");
        assert_eq!(field(r#"{"memory_mib": 1}"#).unwrap(), "memory_mib");
        assert_eq!(field(r#"{"ha": {}}"#).unwrap(), "ha");
        assert_eq!(field("{}").unwrap(), "ha");
        assert_eq!(field("[]"), None);
    }

    #[test]
    fn either_name_of_the_priority_is_read() {
        let p = parse_patch(&Bytes::from(r#"{"ha": {"restart_priority": "high"}}"#)).unwrap();
        assert_eq!(p.ha.unwrap().priority, Some(RestartPriority::High));
    }
}
