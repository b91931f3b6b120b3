//! The OpenAPI 3 description of the API, generated from the handlers' annotations and
//! the types' schemas (utoipa), served without a token at `GET /api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::server;

/// The document's generator.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "vinfra host API",
        description = "One vinfra host: its VMs, their long operations as tasks, their \
            consoles, and its event log. Every route but this document needs \
            `Authorization: Bearer TOKEN`, TOKEN being the hex of HKDF-SHA256 of the \
            cluster key with info \"vinfra host api v1\". Errors are \
            {\"error\":{\"code\":…,\"message\":…}}."
    ),
    paths(
        server::host, server::list_vms, server::create_vm, server::get_vm, server::delete_vm,
        server::op_start, server::op_stop, server::op_reset, server::op_shutdown,
        server::op_migrate, server::op_snapshot, server::op_revert, server::op_clone,
        server::op_backup, server::op_restore, server::console, server::list_tasks,
        server::get_task, server::events, server::incoming, server::maintenance, openapi_json,
    ),
    modifiers(&BearerToken),
    security(("token" = [])),
)]
pub struct ApiDoc;

/// Adds the bearer token scheme that `security` names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /openapi.json`: this document (no token needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "host", security(()),
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
