//! The OpenAPI 3 document, derived from the handlers' annotations and the types'
//! schemas; served without a session at `GET /api/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The session header and the bearer form of the same token.
struct SessionAuth;

impl Modify for SessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(super::SESSION_HEADER))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The center's API.
#[derive(OpenApi)]
#[openapi(
    info(title = "vinfra-center", description = "The vinfra management server's REST API (vSphere Automation style)"),
    paths(
        super::session::login,
        super::session::whoami,
        super::session::logout,
        super::users::list,
        super::users::add,
        super::inventory::datacenters,
        super::inventory::clusters,
        super::inventory::cluster,
        super::inventory::patch_cluster,
        super::inventory::hosts,
        super::inventory::host,
        super::inventory::add_host,
        super::inventory::delete_host,
        super::inventory::host_action,
        super::vm::list,
        super::vm::get,
        super::vm::create,
        super::vm::delete,
        super::vm::power,
        super::vm::action,
        super::drs::recommendations_of,
        super::drs::apply,
        super::drs::run,
        super::rules::list,
        super::rules::create,
        super::rules::get,
        super::rules::patch,
        super::rules::delete,
        super::pools::list,
        super::pools::create,
        super::pools::get,
        super::pools::patch,
        super::pools::delete,
        super::pools::action,
        super::ha::status,
        super::ha::patch_vm,
        super::console::console,
        super::activity::tasks,
        super::activity::task,
        super::activity::events,
        super::activity::event_stream,
        super::activity::stats,
        super::metrics::metrics,
        super::backup::list,
        super::backup::get,
        super::backup::create,
        super::backup::patch,
        super::backup::delete,
        super::backup::action,
        super::backup::backups,
        super::backup_files::files,
        super::backup_files::file,
        document,
    ),
    modifiers(&SessionAuth),
    security(("session" = []), ("bearer" = [])),
)]
#[derive(Debug)]
pub struct ApiDoc;

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
