//! Routes under `/v1` (see `docs/API.md`) plus `/healthz`.

mod files;
mod models;
mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};

use crate::{ApiError, AppState};

pub fn router(state: AppState) -> Router {
    let json_limit = state.config.server.max_json_bytes;
    let api = Router::new()
        .route("/v1/models", post(models::create).get(models::list))
        .route("/v1/models/{ns}/{name}", get(models::show))
        .route("/v1/models/{ns}/{name}/versions", get(models::versions))
        .route(
            "/v1/models/{ns}/{name}/versions/{version}",
            get(models::show_version),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/commit",
            post(files::commit),
        )
        .route("/v1/tokens", post(tokens::create))
        .layer(DefaultBodyLimit::max(json_limit));
    // Uploads stream and enforce `max_file_bytes` themselves.
    let uploads = Router::new()
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/files/{*path}",
            put(files::upload).get(files::download),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .merge(uploads)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Issues the bootstrap admin token (all namespaces) during `init`.
pub(crate) async fn issue_admin_token(
    state: &AppState,
    req: crate::api::CreateTokenRequest,
) -> Result<
    (
        crate::api::CreateTokenResponse,
        modelvault_auth::TokenRecord,
    ),
    ApiError,
> {
    tokens::issue_token(state, req, vec!["*".into()], "init").await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
