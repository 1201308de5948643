//! Role bindings (`manage-access`), `whoami`, and the failed-authentication
//! report (`audit-read`).

use axum::Json;
use axum::extract::State;
use modelvault_auth::{BindingSet, BindingSubject, Permission, Principal, PrincipalKind};

use crate::api::convert;
use crate::api::{BindingList, BindingRequest, BindingView, GrantView, WhoAmI};
use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

fn views(set: &BindingSet) -> Vec<BindingView> {
    set.bindings.iter().map(convert::binding_view).collect()
}

/// Validates a request and checks the caller may manage access in every
/// namespace it names (all of them for `*`).
fn check(
    state: &AppState,
    p: &Principal,
    req: &BindingRequest,
) -> Result<(BindingSubject, Vec<String>), ApiError> {
    let subject = convert::binding_subject(&req.subject);
    let name = req.subject.name();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid principal or group name"));
    }
    if !state.config.roles.0.contains_key(&req.role) {
        return Err(ApiError::bad_request(format!(
            "unknown role {:?} (roles: {})",
            req.role,
            state
                .config
                .roles
                .0
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let global = req.namespaces.is_empty() || req.namespaces.iter().any(|n| n == "*");
    if global {
        authorize(p, Action::ManageAccess, &Resource::default())?;
    } else {
        for ns in &req.namespaces {
            modelvault_storage::names::validate_name("namespace", ns)?;
            if !p.can_in(Permission::ManageAccess, ns) {
                return Err(ApiError::forbidden(format!(
                    "principal {} lacks the manage-access permission in namespace {ns}",
                    p.id
                )));
            }
        }
    }
    let namespaces = if global {
        vec!["*".to_string()]
    } else {
        req.namespaces.clone()
    };
    Ok((subject, namespaces))
}

/// Every role binding
#[utoipa::path(
    get,
    path = "/v1/access/bindings",
    tag = "access",
    responses(
        (status = 200, description = "Every binding", body = BindingList),
        (status = 403, description = "`forbidden`: no `manage-access`", body = crate::api::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<BindingList>, ApiError> {
    authorize(&p, Action::ManageAccess, &Resource::default())?;
    let set = state.bindings.current(&state.store).await?;
    Ok(Json(BindingList {
        changed: None,
        bindings: views(&set),
    }))
}

/// Bind a role to a principal or group in namespaces
#[utoipa::path(
    post,
    path = "/v1/access/grant",
    tag = "access",
    request_body = BindingRequest,
    responses(
        (status = 200, description = "Every binding after the change", body = BindingList),
        (status = 403, description = "`forbidden`: no `manage-access` in a named namespace", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: a concurrent change won; retry", body = crate::api::ErrorBody),
    ),
)]
pub async fn grant(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiJson(req): ApiJson<BindingRequest>,
) -> Result<Json<BindingList>, ApiError> {
    let (subject, namespaces) = check(&state, &p, &req)?;
    change(&state, &p.id, &req, "granted", |set, now| {
        set.grant(&subject, &req.role, &namespaces, &p.id, now)
    })
    .await
}

/// Remove a role binding (or some of its namespaces)
#[utoipa::path(
    post,
    path = "/v1/access/revoke",
    tag = "access",
    request_body = BindingRequest,
    responses(
        (status = 200, description = "Every binding after the change", body = BindingList),
        (status = 403, description = "`forbidden`: no `manage-access` in a named namespace", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: a concurrent change won; retry", body = crate::api::ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiJson(req): ApiJson<BindingRequest>,
) -> Result<Json<BindingList>, ApiError> {
    let (subject, _) = check(&state, &p, &req)?;
    change(&state, &p.id, &req, "revoked", |set, now| {
        set.revoke(&subject, &req.role, &req.namespaces, &p.id, now)
    })
    .await
}

/// Applies one change to the binding set (retried by the cache when
/// another server wins) and answers with every binding after it.
async fn change(
    state: &AppState,
    by: &str,
    req: &BindingRequest,
    what: &str,
    apply: impl Fn(&mut BindingSet, chrono::DateTime<chrono::Utc>) -> bool,
) -> Result<Json<BindingList>, ApiError> {
    let now = chrono::Utc::now();
    let (set, changed) = state
        .bindings
        .update(&state.store, |set| apply(set, now))
        .await?;
    tracing::info!(
        by = %by, subject = %req.subject.name(), subject_type = %req.subject.kind(),
        role = %req.role, namespaces = ?req.namespaces, changed, "role binding {what}"
    );
    Ok(Json(BindingList {
        changed: Some(changed),
        bindings: views(&set),
    }))
}

/// Who the caller is and what they hold
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "access",
    responses((status = 200, description = "The caller", body = WhoAmI)),
)]
pub async fn whoami(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<WhoAmI>, ApiError> {
    Ok(Json(whoami_of(&state, p).await?))
}

/// The caller as `GET /v1/whoami` (and the console's session) shows it.
pub(crate) async fn whoami_of(state: &AppState, p: Principal) -> Result<WhoAmI, ApiError> {
    let token_name = match &p.token_id {
        Some(id) => state
            .store
            .tokens()
            .get::<modelvault_auth::TokenRecord>(id)
            .await?
            .map(|r| r.name),
        None => None,
    };
    Ok(WhoAmI {
        attributes: p.attributes.clone(),
        roles: p.roles(),
        grants: p
            .grants
            .iter()
            .map(|g| GrantView {
                role: g.role.clone(),
                namespaces: g.namespaces.to_list(),
                source: g.source.clone(),
                permissions: g.permissions.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
        kind: match p.kind {
            PrincipalKind::Person => "person".into(),
            PrincipalKind::Service => "service".into(),
        },
        authenticated_by: if p.issuer.is_some() {
            "oidc".into()
        } else {
            "api-token".into()
        },
        id: p.id,
        groups: p.groups,
        environment: p.environment,
        token_name,
        issuer: p.issuer,
        expires_at: p.expires_at,
    })
}

/// Failed authentications by source and window
///
/// Needs `audit-read`.
#[utoipa::path(
    get,
    path = "/v1/admin/auth-failures",
    tag = "admin",
    responses(
        (status = 200, description = "The report", body = crate::api::FailureReport),
        (status = 403, description = "`forbidden`: no `audit-read`", body = crate::api::ErrorBody),
    ),
)]
pub async fn auth_failures(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<crate::api::FailureReport>, ApiError> {
    if !p.can(Permission::AuditRead) {
        return Err(ApiError::forbidden(format!(
            "principal {} lacks the audit-read permission",
            p.id
        )));
    }
    Ok(Json(state.auth_failures.report()))
}

/// How to log in; public (it names only issuers and client ids).
#[utoipa::path(
    get,
    path = "/v1/auth/config",
    tag = "access",
    security(()),
    responses((status = 200, description = "Issuers that offer CLI login", body = crate::api::AuthConfig)),
)]
pub async fn auth_config(State(state): State<AppState>) -> Json<crate::api::AuthConfig> {
    Json(crate::api::AuthConfig {
        issuers: state
            .config
            .oidc
            .issuers
            .iter()
            .filter_map(|i| {
                Some(crate::api::LoginIssuer {
                    issuer: i.issuer.clone(),
                    audience: i.audience.clone(),
                    client_id: i.cli_client_id.clone()?,
                    scope: i.cli_scope.clone(),
                })
            })
            .collect(),
    })
}
