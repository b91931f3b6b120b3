//! `/api/session`: log in with HTTP Basic, who am I, log out.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, SESSION_COOKIE, SESSION_HEADER};
use crate::auth::{AuthError, Principal};
use crate::model::Role;

/// A new session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionCreated {
    /// The token: send it as `vinfra-api-session-id: TOKEN` or `Authorization: Bearer TOKEN`.
    pub token: String,
    /// Who logged in.
    pub user: String,
    /// Their role.
    pub role: Role,
    /// When the session ends (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// The session's user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// Who.
    pub user: String,
    /// Their role.
    pub role: Role,
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `POST /api/session`: HTTP Basic in, a session token out (also as an HttpOnly cookie).
#[utoipa::path(post, path = "/api/session", tag = "session",
    responses((status = 201, body = SessionCreated), (status = 401, body = super::ErrorBody)))]
pub async fn login(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (user, password) = basic(&headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in with HTTP Basic (Authorization: Basic base64(user:password))",
        )
    })?;
    let now_ms = state.now_ms();
    let auth = state.auth.clone();
    let who = user.clone();
    // argon2 takes tens of milliseconds on purpose: off the async threads.
    let outcome = tokio::task::spawn_blocking(move || auth.login(&who, &password, now_ms))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (token, principal) = match outcome {
        Ok(ok) => ok,
        Err(e @ AuthError::BadCredentials) => {
            state.events.record(&crate::model::NewEvent {
                time_ms: now_ms,
                severity: crate::model::Severity::Warning,
                kind: "session.login_failed".into(),
                target: user.clone(),
                user: None,
                host: None,
                message: format!("failed login as {user}"),
                data: serde_json::Value::Null,
            })?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    state.events.action(
        now_ms,
        &principal.name,
        "session.login",
        &principal.name,
        format!("{} logged in", principal.name),
        serde_json::Value::Null,
    )?;
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let body = SessionCreated {
        token: token.clone(),
        user: principal.name,
        role: principal.role,
        expires_ms: now_ms + crate::auth::SESSION_TTL_MS,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `GET /api/session`: who the session belongs to.
#[utoipa::path(get, path = "/api/session", tag = "session",
    responses((status = 200, body = SessionInfo), (status = 401, body = super::ErrorBody)))]
pub async fn whoami(who: Principal) -> Json<SessionInfo> {
    Json(SessionInfo {
        user: who.name,
        role: who.role,
    })
}

/// `DELETE /api/session`: ends the session (header or bearer token).
#[utoipa::path(delete, path = "/api/session", tag = "session",
    responses((status = 204), (status = 401, body = super::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = headers
        .get(SESSION_HEADER)
        .or_else(|| headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").trim().to_string())
        .unwrap_or_default();
    state.auth.logout(&token)?;
    state.events.action(
        state.now_ms(),
        &who.name,
        "session.logout",
        &who.name,
        format!("{} logged out", who.name),
        serde_json::Value::Null,
    )?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("vinfra_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}
