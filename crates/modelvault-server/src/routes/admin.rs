//! `/v1/admin/policies`: install, list, remove policy plugins without a
//! restart (permission `manage-policies`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::{ApiPath, ApiQuery};
use crate::policies::{PolicyInfo, PolicyMode};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallQuery {
    #[serde(default)]
    mode: Option<PolicyMode>,
}

pub async fn install(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<InstallQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<PolicyInfo>), ApiError> {
    authorize(&p, Action::ManagePolicies, &Resource::default())?;
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
    let info = state
        .policies
        .install(
            &state.store,
            &name,
            body.to_vec(),
            q.mode.unwrap_or(PolicyMode::Enforce),
            &p.id,
        )
        .await?;
    state
        .alerts
        .policy_change("installed", &name, &crate::audit::principal_ref(&p));
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<Vec<PolicyInfo>>, ApiError> {
    authorize(&p, Action::ManagePolicies, &Resource::default())?;
    Ok(Json(state.policies.list()?))
}

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
