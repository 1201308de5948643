//! API token creation (`manage-access`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use modelvault_auth::{NamespaceScope, PrincipalKind, TokenRecord};

use crate::api::{CreateTokenRequest, CreateTokenResponse, TokenList, TokenView};
use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::{ApiJson, ApiPath};
use crate::{ApiError, AppState};

/// Create an API token; its secret is shown once
///
/// Needs `manage-access`; the token reaches no further than the
/// caller's own `manage-access` scope.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "access",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The token, with its secret", body = CreateTokenResponse),
        (status = 403, description = "`forbidden`: no `manage-access`, or namespaces beyond the caller's", body = crate::api::ErrorBody),
        (status = 409, description = "`already_exists`: a token of that name exists", body = crate::api::ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreateTokenResponse>), ApiError> {
    // A token can never reach further than its creator's manage-access
    // scope (default: all of it).
    let mine = p.scope_of(modelvault_auth::Permission::ManageAccess);
    if mine == NamespaceScope::Only(Default::default()) {
        authorize(&p, Action::ManageAccess, &Resource::default())?;
    }
    let namespaces = if req.namespaces.is_empty() {
        mine.to_list()
    } else {
        req.namespaces.clone()
    };
    let scope = NamespaceScope::from_list(&namespaces);
    if !mine.covers(&scope) {
        return Err(ApiError::forbidden(
            "cannot grant namespaces outside your own",
        ));
    }
    let (resp, _) = issue_token(&state, req, namespaces, &p.id).await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

/// Validates a request and writes the token record; returns the response
/// (with the secret) and the stored record.
pub(crate) async fn issue_token(
    state: &AppState,
    req: CreateTokenRequest,
    namespaces: Vec<String>,
    created_by: &str,
) -> Result<(CreateTokenResponse, TokenRecord), ApiError> {
    if req.roles.is_empty() {
        return Err(ApiError::bad_request("a token needs at least one role"));
    }
    state
        .config
        .roles
        .permissions(&req.roles)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for ns in &namespaces {
        if ns != "*" {
            modelvault_storage::names::validate_name("namespace", ns)?;
        }
    }
    let environment = req
        .environment
        .clone()
        .unwrap_or_else(|| state.config.environments.default.clone());
    if !state.config.environments.names.contains(&environment) {
        return Err(ApiError::bad_request(format!(
            "environment {environment:?} is not declared (declared: {})",
            state.config.environments.names.join(", ")
        )));
    }
    let kind: PrincipalKind = match &req.kind {
        Some(k) => k.parse().map_err(ApiError::bad_request)?,
        None => PrincipalKind::Person,
    };
    let (id, secret, hash) =
        modelvault_auth::generate_token().map_err(|e| ApiError::internal(e.to_string()))?;
    let name = req.name.clone().unwrap_or_else(|| format!("token-{id}"));
    modelvault_storage::names::validate_name("token", &name)?;
    let principal = req.principal.clone().unwrap_or_else(|| name.clone());
    if principal.is_empty() || principal.len() > 256 || principal.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid principal id"));
    }
    let mut groups = req.groups.clone();
    groups.sort();
    groups.dedup();
    for g in &groups {
        if g.is_empty() || g.len() > 256 || g.chars().any(char::is_control) {
            return Err(ApiError::bad_request("invalid group name"));
        }
    }
    if let Some(purpose) = &req.purpose {
        modelvault_storage::names::validate_name("purpose", purpose)?;
    }
    let now = Utc::now();
    let (default_ttl, max_ttl) = state
        .config
        .token_ttls()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let ttl = match req.ttl_seconds {
        Some(0) => return Err(ApiError::bad_request("ttl must be positive")),
        Some(s) if s > max_ttl => {
            return Err(ApiError::bad_request(format!(
                "ttl {s}s is longer than the maximum {max_ttl}s (tokens.max_ttl)"
            )));
        }
        Some(s) => s,
        None => default_ttl,
    };
    let expires_at = Some(
        i64::try_from(ttl)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| ApiError::bad_request("ttl too large"))?,
    );
    let record = TokenRecord {
        id: id.clone(),
        name: name.clone(),
        principal: principal.clone(),
        kind,
        roles: req.roles.clone(),
        namespaces: namespaces.clone(),
        environment: environment.clone(),
        created_at: now,
        created_by: created_by.into(),
        expires_at,
        secret_sha256: hash,
        groups: groups.clone(),
        purpose: req.purpose.clone(),
    };
    // The record first, then the unique-name claim; if the name is taken
    // the record is removed again, so no nameless token stays usable.
    if let Err(e) = state.store.tokens().create(&id, &name, &record).await {
        return Err(match e {
            modelvault_storage::StorageError::AlreadyExists(_) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("a token named {name} already exists"),
            ),
            other => other.into(),
        });
    }
    Ok((
        CreateTokenResponse {
            token: secret.expose().to_string(),
            id,
            name,
            principal,
            roles: record.roles.clone(),
            namespaces,
            environment,
            expires_at,
        },
        record,
    ))
}

/// Why a token was revoked (kept beside the removed token record).
#[derive(serde::Serialize, serde::Deserialize)]
struct Revocation {
    token_id: String,
    name: String,
    principal: String,
    revoked_by: String,
    revoked_at: chrono::DateTime<Utc>,
}

/// List API tokens (never their secrets)
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "access",
    responses(
        (status = 200, description = "Live tokens", body = TokenList),
        (status = 403, description = "`forbidden`: no `manage-access`", body = crate::api::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<TokenList>, ApiError> {
    authorize(&p, Action::ManageAccess, &Resource::default())?;
    let now = Utc::now();
    let mut tokens = Vec::new();
    for r in state.store.tokens().list::<TokenRecord>().await? {
        tokens.push(TokenView {
            expired: r.expires_at.is_some_and(|t| t <= now),
            id: r.id,
            name: r.name,
            principal: r.principal,
            kind: match r.kind {
                PrincipalKind::Person => "person".into(),
                PrincipalKind::Service => "service".into(),
            },
            roles: r.roles,
            namespaces: r.namespaces,
            environment: r.environment,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            groups: r.groups,
            purpose: r.purpose,
        });
    }
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(TokenList { tokens }))
}

/// Revokes a token by name: a revocation record first (who, when), then the
/// token record goes, so the next request with it gets 401 on every server
/// (each request reads the token record from the store; nothing caches it).
/// Names are never reused.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    tag = "access",
    params(("name" = String, Path, description = "Token name", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "`forbidden`: no `manage-access`", body = crate::api::ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&p, Action::ManageAccess, &Resource::default())?;
    modelvault_storage::names::validate_name("token", &name)?;
    let not_found = || ApiError::not_found(format!("token {name} not found"));
    let tokens = state.store.tokens();
    let token_id = tokens.id_by_name(&name).await?.ok_or_else(not_found)?;
    let record: TokenRecord = tokens.get(&token_id).await?.ok_or_else(not_found)?;
    let revocation = Revocation {
        token_id: record.id.clone(),
        name: record.name.clone(),
        principal: record.principal.clone(),
        revoked_by: p.id.clone(),
        revoked_at: Utc::now(),
    };
    tokens.revoke(&token_id, &revocation).await?;
    tracing::info!(by = %p.id, token = %name, token_id = %record.id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
