//! The JSON bodies of the HTTP API are defined in `modelvault_api` (the
//! wire format is defined there and only there); re-exported here for the
//! handlers, with the OpenAPI document built from them.

pub use modelvault_api::*;

/// The OpenAPI 3.1 document of the `/v1` API, as `GET /v1/openapi.json`
/// serves it (generated from the handlers and the `modelvault_api` types).
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::routes::openapi::document()
}
