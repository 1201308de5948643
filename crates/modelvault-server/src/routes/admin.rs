//! `/v1/admin/policies`: install, list, remove policy plugins without a
//! restart (permission `manage-policies`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use crate::api::{PolicyInfo, PolicyMode};
use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::{ApiPath, ApiQuery};
use crate::{ApiError, AppState};

/// Install (or replace) a policy plugin
///
/// The body is the WebAssembly component. Needs `manage-policies`.
#[utoipa::path(
    put,
    path = "/v1/admin/policies/{name}",
    tag = "admin",
    params(
        ("name" = String, Path, description = "Policy name", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"),
        crate::api::PolicyInstallQuery,
    ),
    request_body(content = inline(super::openapi::RawBytes), content_type = "application/octet-stream", description = "The component (`wasm32-wasip2`, world `modelvault:policy/policy@0.1.0`)"),
    responses(
        (status = 201, description = "Installed", body = PolicyInfo),
        (status = 403, description = "`forbidden`: no `manage-policies`", body = crate::api::ErrorBody),
        (status = 409, description = "`policy_required` (the config requires it to enforce) or `conflict`", body = crate::api::ErrorBody),
        (status = 422, description = "`invalid_policy`: not a policy component, it fails validation, or its `modelvault:metadata` section is invalid; `signature_required`: `policy.require_signed` is set and no signature was given; `invalid_signature`: the signature does not verify against any trusted key", body = crate::api::ErrorBody),
    ),
)]
pub async fn install(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<crate::api::PolicyInstallQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<PolicyInfo>), ApiError> {
    authorize(&p, Action::ManagePolicies, &Resource::default())?;
    let (body, signature) = component_upload(body, q.signature.as_deref())?;
    let info = state
        .policies
        .install(
            &state.store,
            &name,
            body,
            q.mode.unwrap_or(PolicyMode::Enforce),
            &p.id,
            signature,
        )
        .await?;
    state
        .alerts
        .policy_change("installed", &name, &crate::audit::principal_ref(&p));
    Ok((StatusCode::CREATED, Json(info)))
}

/// A component upload's body and its detached signature (hex or base64),
/// checked: an empty or oversized body, or a signature that does not
/// decode, is refused.
pub(crate) fn component_upload(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    signature: Option<&str>,
) -> Result<
    (
        Vec<u8>,
        Option<[u8; modelvault_policy::signing::SIGNATURE_BYTES]>,
    ),
    ApiError,
> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                r.status(),
                "payload_too_large",
                "component exceeds policy.limits.max_component_bytes",
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty body: send the component bytes",
        ));
    }
    let signature = signature
        .map(modelvault_policy::signing::decode_signature)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("signature: {e}")))?;
    Ok((body.to_vec(), signature))
}

/// Installed policy plugins, in chain order
#[utoipa::path(
    get,
    path = "/v1/admin/policies",
    tag = "admin",
    responses(
        (status = 200, description = "Installed policies", body = Vec<PolicyInfo>),
        (status = 403, description = "`forbidden`: no `manage-policies`", body = crate::api::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<Vec<PolicyInfo>>, ApiError> {
    authorize(&p, Action::ManagePolicies, &Resource::default())?;
    // Right after a start the set may still be compiling: wait as a
    // decision would (policy.load_wait_ms), then 503 policies_loading.
    state.policies.wait_ready().await?;
    Ok(Json(state.policies.list()?))
}

/// Remove a policy plugin
#[utoipa::path(
    delete,
    path = "/v1/admin/policies/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "Policy name", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "`forbidden`: no `manage-policies`", body = crate::api::ErrorBody),
        (status = 409, description = "`policy_required` (the config requires it) or `conflict`", body = crate::api::ErrorBody),
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&p, Action::ManagePolicies, &Resource::default())?;
    state.policies.remove(&state.store, &name, &p.id).await?;
    state
        .alerts
        .policy_change("removed", &name, &crate::audit::principal_ref(&p));
    Ok(StatusCode::NO_CONTENT)
}
