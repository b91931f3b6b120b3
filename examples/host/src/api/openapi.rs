//! What the OpenAPI 3 description adds to the handlers' annotations and the types'
//! schemas: the bearer token scheme. The document itself (`ApiDoc`) is derived in
//! `server.rs`, beside the handlers it lists, and served without a token at
//! `GET /api/v1/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::Modify;

/// Adds the bearer token scheme that `security` names.
pub(super) struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
