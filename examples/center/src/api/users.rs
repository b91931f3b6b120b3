//! `/api/vinfra/users`: the center's users (administrators only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{blocking, ApiError, ApiResult, AppState, JsonBody};
use crate::auth::Principal;
use crate::model::Role;

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// `POST /api/vinfra/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name.
    pub name: String,
    /// `administrator`, `operator` or `read_only`.
    pub role: Role,
    /// At least 8 characters.
    pub password: String,
}

/// `GET /api/vinfra/users` (administrator).
#[utoipa::path(get, path = "/api/vinfra/users", tag = "session",
    responses((status = 200, body = [UserInfo]), (status = 403, body = super::ErrorBody)))]
pub async fn list(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<UserInfo>>> {
    who.require(Role::Administrator)?;
    Ok(Json(
        state
            .store
            .users()?
            .into_iter()
            .map(|u| UserInfo {
                name: u.name,
                role: u.role,
            })
            .collect(),
    ))
}

/// `POST /api/vinfra/users` (administrator): adds a user.
#[utoipa::path(post, path = "/api/vinfra/users", tag = "session", request_body = NewUser,
    responses((status = 201, body = UserInfo), (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(user): JsonBody<NewUser>,
) -> ApiResult<Response> {
    who.require(Role::Administrator)?;
    vinfra_host::api::validate_name(&user.name)
        .map_err(|why| ApiError::field("name", format!("name: {why}")))?;
    let auth = state.auth.clone();
    let (name, role, password) = (user.name.clone(), user.role, user.password);
    // argon2: off the async threads.
    blocking(move || auth.add_user(&name, role, &password)).await??;
    state.events.action(
        state.now_ms(),
        &who.name,
        "user.added",
        &user.name,
        format!(
            "{} added user {} ({})",
            who.name,
            user.name,
            user.role.as_str()
        ),
        serde_json::Value::Null,
    )?;
    Ok((
        StatusCode::CREATED,
        Json(UserInfo {
            name: user.name,
            role: user.role,
        }),
    )
        .into_response())
}
