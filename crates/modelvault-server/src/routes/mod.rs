//! Routes under `/v1` (see `docs/API.md`) plus `/healthz`, `/readyz` and
//! `/metrics`.

mod access;
mod admin;
pub(crate) mod approvals;
mod audit;
mod files;
pub(crate) mod hf;
mod keys;
mod models;
pub(crate) mod openapi;
mod release;
mod review;
mod tokens;

pub(crate) use access::whoami_of;
pub(crate) use keys::retire_checked;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler as _;
use axum::http::StatusCode;
use axum::routing::{get, post, put};

use crate::audit::Declare;
use crate::{ApiError, AppState};

pub fn router(state: AppState) -> Router {
    let json_limit = state.config.server.max_json_bytes;
    let api = Router::new()
        .route(
            "/v1/models",
            post(models::create.layer(Declare("create-model")))
                .get(models::list.layer(Declare("read"))),
        )
        .route(
            "/v1/models/{ns}/{name}",
            get(models::show.layer(Declare("read")))
                .patch(models::patch.layer(Declare("edit-metadata"))),
        )
        .route(
            "/v1/models/{ns}/{name}/history",
            get(models::history.layer(Declare("read"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions",
            get(models::versions.layer(Declare("read"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}",
            get(models::show_version.layer(Declare("read")))
                .delete(keys::delete_version.layer(Declare("delete"))),
        )
        .route(
            "/v1/keys/status",
            get(keys::status.layer(Declare("keys-read"))),
        )
        .route(
            "/v1/keys/rotate-kek",
            post(keys::rotate_kek.layer(Declare("rotate-kek"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/rotate-dek",
            post(keys::rotate_dek.layer(Declare("rotate-dek"))),
        )
        .route(
            "/v1/keys/retire-kek",
            post(keys::retire_kek.layer(Declare("retire-kek"))),
        )
        .route(
            "/v1/keys/jobs/{id}",
            get(keys::job.layer(Declare("keys-read"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/commit",
            post(files::commit.layer(Declare("commit"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/uploads",
            get(files::uploads.layer(Declare("read"))),
        )
        .route(
            "/v1/models/{ns}/{name}/deployments",
            get(approvals::list_deployments.layer(Declare("read"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/approvals",
            post(approvals::approve.layer(Declare("approve"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/stage",
            post(approvals::set_stage.layer(Declare("set-stage"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/approvals/{environment}",
            axum::routing::delete(approvals::revoke.layer(Declare("revoke-approval"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/deployments",
            post(approvals::deploy.layer(Declare("deploy"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/key-release",
            post(release::release.layer(Declare("key-release"))),
        )
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/ciphertext/{*path}",
            get(release::ciphertext.layer(Declare("fetch-ciphertext"))),
        )
        .route(
            "/v1/admin/policies",
            get(admin::list.layer(Declare("admin-read"))),
        )
        .route(
            "/v1/tokens",
            post(tokens::create.layer(Declare("create-token")))
                .get(tokens::list.layer(Declare("list-tokens"))),
        )
        .route(
            "/v1/tokens/{name}",
            axum::routing::delete(tokens::revoke.layer(Declare("revoke-token"))),
        )
        .route(
            "/v1/approvals/inbox",
            get(approvals::inbox.layer(Declare("read"))),
        )
        .route("/v1/whoami", get(access::whoami.layer(Declare("whoami"))))
        .route(
            "/v1/auth/config",
            get(access::auth_config.layer(Declare("auth-config"))),
        )
        .route(
            "/v1/access/bindings",
            get(access::list.layer(Declare("list-access"))),
        )
        .route(
            "/v1/access/review",
            get(review::review.layer(Declare("read"))),
        )
        .route(
            "/v1/access/grant",
            post(access::grant.layer(Declare("grant-access"))),
        )
        .route(
            "/v1/access/revoke",
            post(access::revoke.layer(Declare("revoke-access"))),
        )
        .route(
            "/v1/admin/auth-failures",
            get(access::auth_failures.layer(Declare("admin-read"))),
        )
        .route("/v1/audit", get(audit::list.layer(Declare("audit-read"))))
        .route(
            "/v1/audit/public-key",
            get(audit::public_key.layer(Declare("audit-read"))),
        )
        .route(
            "/v1/audit/verify",
            get(audit::verify.layer(Declare("audit-read"))),
        )
        .route(
            "/v1/openapi.json",
            get(openapi::serve.layer(Declare("read"))),
        )
        .layer(DefaultBodyLimit::max(json_limit));
    // Uploads stream and enforce `max_file_bytes` themselves.
    let uploads = Router::new()
        .route(
            "/v1/models/{ns}/{name}/versions/{version}/files/{*path}",
            put(files::upload.layer(Declare("upload")))
                .get(files::download.layer(Declare("download"))),
        )
        .layer(DefaultBodyLimit::disable());
    // Policy components can be tens of MiB (a Python policy is ~20 MB).
    let component_limit = state.config.policy.limits.max_component_bytes;
    let admin = Router::new()
        .route(
            "/v1/admin/policies/{name}",
            put(admin::install.layer(Declare("install-policy")))
                .delete(admin::remove.layer(Declare("remove-policy"))),
        )
        .route(
            "/v1/access/review/candidate",
            post(review::candidate.layer(Declare("review-candidate"))),
        )
        .layer(DefaultBodyLimit::max(component_limit));
    // The Hugging Face Hub-compatible read API (read-only; its errors in
    // the Hub's shape).
    let hf = Router::new()
        .route(
            "/hf/api/models/{ns}/{name}",
            get(hf::model_info_main.layer(Declare("read"))),
        )
        .route(
            "/hf/api/models/{ns}/{name}/revision/{revision}",
            get(hf::model_info.layer(Declare("read"))),
        )
        .route(
            "/hf/api/models/{ns}/{name}/tree/{revision}",
            get(hf::tree_root.layer(Declare("read"))),
        )
        .route(
            "/hf/api/models/{ns}/{name}/tree/{revision}/{*path}",
            get(hf::tree.layer(Declare("read"))),
        )
        .route(
            "/hf/{ns}/{name}/resolve/{revision}/{*path}",
            get(hf::resolve_file.layer(Declare("download")))
                .head(hf::head_file.layer(Declare("read"))),
        )
        .layer(axum::middleware::map_response(hf::hf_error_body));
    let audited = Router::new()
        .merge(api)
        .merge(hf)
        .merge(uploads)
        .merge(admin)
        .merge(crate::console::audited_routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::middleware,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::count_requests,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(audited)
        .merge(crate::console::asset_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::console::security_headers,
        ))
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

/// `GET /metrics`: open to loopback peers unless a bearer token is
/// configured; from elsewhere only with that token (else 404: off).
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    let connect = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .copied();
    let headers = request.headers();
    use axum::response::IntoResponse as _;
    let cfg = &state.config.metrics;
    if !cfg.enabled {
        return Err(ApiError::not_found("metrics are off"));
    }
    match &cfg.bearer_token_file {
        Some(file) => {
            let want = std::fs::read_to_string(file)
                .map_err(|e| ApiError::internal(format!("metrics token file: {e}")))?;
            let got = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            use subtle::ConstantTimeEq as _;
            let h = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.trim().as_bytes());
            let ok: bool = h(got).as_ref().ct_eq(h(&want).as_ref()).into();
            if !ok || got.is_empty() {
                return Err(ApiError::unauthenticated("invalid or expired credentials"));
            }
        }
        None => {
            let loopback = connect.is_some_and(|c| c.0.ip().is_loopback());
            if !loopback {
                return Err(ApiError::not_found("no such route"));
            }
        }
    }
    if let Some(a) = &state.audit {
        state
            .metrics
            .audit_backlog
            .set(i64::try_from(a.backlog()).unwrap_or(i64::MAX));
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when this server can serve: the enforcing policies are loaded, the
/// store answers and the key provider verifies the store's marker (one
/// read and one MAC check, at most two seconds). 503 otherwise, with the
/// failing check: policies still compiling after a start (`loading`) or
/// unloadable (`broken`), the store unreachable, the key provider failing
/// (or not the one the store was initialized with).
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let phase = state.policies.phase();
    use modelvault_storage::Readiness;
    let probe =
        tokio::time::timeout(std::time::Duration::from_secs(2), state.store.readiness()).await;
    let (store, keys) = match probe {
        Ok(Readiness::Ready) => ("ok", "ok"),
        Ok(Readiness::MarkerMissing) => {
            tracing::warn!("readiness: the store holds no Modelvault marker");
            ("not_initialized", "unknown")
        }
        Ok(Readiness::KeysMismatch) => {
            tracing::warn!("readiness: the store's marker does not verify with this key provider");
            ("ok", "mismatch")
        }
        Ok(Readiness::KeysFailing(e)) => {
            tracing::warn!(error = %e, "readiness: key provider failing");
            ("ok", "unavailable")
        }
        Ok(Readiness::StoreFailing(e)) => {
            tracing::warn!(error = %e, "readiness: store failing");
            ("unavailable", "unknown")
        }
        Err(_) => {
            tracing::warn!("readiness: store or key provider did not answer within 2 s");
            ("timeout", "unknown")
        }
    };
    let ready = phase == crate::policies::Phase::Ready && store == "ok" && keys == "ok";
    let status_word = if phase != crate::policies::Phase::Ready {
        phase.as_str()
    } else if store != "ok" {
        "store_unavailable"
    } else if keys != "ok" {
        "key_provider_unavailable"
    } else {
        phase.as_str()
    };
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        axum::Json(serde_json::json!({
            "status": status_word,
            "checks": { "policies": phase.as_str(), "store": store, "keys": keys },
        })),
    )
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
