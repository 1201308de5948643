//! API token creation (`manage-access`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use modelvault_auth::{NamespaceScope, PrincipalKind, TokenRecord};

use crate::api::{CreateTokenRequest, CreateTokenResponse};
use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub async fn create(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreateTokenResponse>), ApiError> {
    authorize(&p, Action::ManageAccess, &Resource::default())?;
    let namespaces = if req.namespaces.is_empty() {
        p.namespaces.to_list()
    } else {
        req.namespaces.clone()
    };
    // A token can never reach further than its creator.
    let scope = NamespaceScope::from_list(&namespaces);
    if !p.namespaces.covers(&scope) {
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
    let now = Utc::now();
    let expires_at = match req.ttl_seconds {
        Some(0) => return Err(ApiError::bad_request("ttl must be positive")),
        Some(s) => Some(
            i64::try_from(s)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| ApiError::bad_request("ttl too large"))?,
        ),
        None => None,
    };
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
    };
    // The record first, then the unique-name claim; if the name is taken
    // the record is removed again, so no nameless token stays usable.
    let token_path = modelvault_storage::layout::token(&id);
    state
        .store
        .create_record("token", &token_path, &record)
        .await?;
    #[derive(serde::Serialize)]
    struct NameClaim<'a> {
        token_id: &'a str,
    }
    let claim = state
        .store
        .create_record(
            "token-name",
            &modelvault_storage::layout::token_name(&name),
            &NameClaim { token_id: &id },
        )
        .await;
    if let Err(e) = claim {
        if let Err(undo) = state.store.delete_object(&token_path).await {
            tracing::error!(token_id = %id, error = %undo, "could not remove a token whose name claim failed");
        }
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
