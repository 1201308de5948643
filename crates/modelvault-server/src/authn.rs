//! Authentication (API tokens and OIDC access tokens) and the
//! authorization seam.
//!
//! Every route takes an [`Authenticated`] principal and calls
//! [`authorize`] before touching data: namespace scope (outside → 404, no
//! enumeration) and role permissions (missing → 403). Routes that release
//! data or change governance state (download, approve, deploy) then run
//! the policy chain through [`enforce_policy`] with a request built only
//! from verified sources ([`policy_request`]); a route that releases data
//! then stores a durable audit intent before the first byte or key leaves
//! (`crate::audit::intent`). Anything that fails here denies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use modelvault_auth::{
    Grant, NamespaceScope, Permission, Principal, PrincipalKind, TokenRecord, parse_bearer,
};

use crate::{ApiError, AppState};

/// A request whose credential verified.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The one answer every failed authentication gets: it never says whether
/// a token exists, nor why a JWT was refused (the reason goes to the
/// failure log and the audit trail).
pub(crate) fn unauthenticated() -> ApiError {
    ApiError::unauthenticated("invalid or expired credentials")
}

/// The peer address of the connection, when the transport gives one.
pub fn source_addr(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let source = source_addr(parts);
        let rid = crate::gate::RequestId::from_headers(&parts.headers).map(|r| r.0);
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            // A web console session (a cookie) stands in for the bearer
            // token; state-changing requests must carry its CSRF token.
            if let Some(cookie) = crate::console::session::cookie_value(&parts.headers, state) {
                return crate::console::session::authenticate(state, parts, &cookie, source, rid)
                    .await
                    .map(Self);
            }
            record_failure(state, source, rid, "none", "missing_credentials");
            return Err(ApiError::unauthenticated(
                "missing bearer token (set MODELVAULT_TOKEN or run modelvault login)",
            ));
        };
        let Some(bearer) = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            record_failure(state, source, rid, "none", "not_bearer");
            return Err(ApiError::unauthenticated(
                "authorization header is not a bearer token",
            ));
        };
        verify_bearer(state, bearer, source, rid).await.map(Self)
    }
}

/// Counts, logs, audits and alerts one failed authentication (the audit
/// record never waits on the store).
pub(crate) fn record_failure(
    state: &AppState,
    source: Option<IpAddr>,
    rid: Option<String>,
    credential: &'static str,
    reason: &str,
) {
    let first = state.auth_failures.record(source, credential, reason);
    state
        .metrics
        .auth_failures
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: reason.to_string(),
        })
        .inc();
    crate::audit::auth_failure(state, first, source, reason, rid);
    state.alerts.failed_auth(source);
}

/// Verifies a bearer credential (an API token or an OIDC access token) and
/// notes the principal for the audit record; a failure is recorded and
/// answered with the one `unauthenticated` error.
pub(crate) async fn verify_bearer(
    state: &AppState,
    bearer: &str,
    source: Option<IpAddr>,
    rid: Option<String>,
) -> Result<Principal, ApiError> {
    let result = if bearer.starts_with(modelvault_auth::TOKEN_PREFIX) {
        authenticate_token(state, bearer)
            .await
            .map_err(|reason| ("api-token", reason))
    } else if modelvault_oidc::Verifier::looks_like_jwt(bearer) {
        authenticate_jwt(state, bearer)
            .await
            .map_err(|reason| ("jwt", reason))
    } else {
        Err(("unknown", "malformed".to_string()))
    };
    match result {
        Ok(p) => {
            crate::audit::note_principal(&p);
            Ok(p)
        }
        Err((credential, reason)) => {
            record_failure(state, source, rid, credential, &reason);
            Err(unauthenticated())
        }
    }
}

/// Grants from the store's role bindings for `id` and `groups`. A store
/// error denies.
pub(crate) async fn binding_grants(
    state: &AppState,
    id: &str,
    groups: &[String],
) -> Result<Vec<Grant>, String> {
    let set = state.bindings.current(&state.store).await.map_err(|e| {
        tracing::warn!(error = %e, "role bindings unreadable; denying");
        "bindings_unavailable".to_string()
    })?;
    Ok(set.grants_for(id, groups, &state.config.roles))
}

/// Verifies an API token; the error is an audit-ready reason code.
pub(crate) async fn authenticate_token(
    state: &AppState,
    bearer: &str,
) -> Result<Principal, String> {
    let (id, secret) = parse_bearer(bearer).map_err(|_| "malformed".to_string())?;
    // A revocation marker wins even over a token record put back into the
    // bucket (a replayed record verifies: it is authentic, just withdrawn).
    let tokens = state.store.tokens();
    let (record, revoked) = tokio::join!(tokens.get::<TokenRecord>(id), tokens.is_revoked(id));
    match revoked {
        Ok(false) => {}
        Ok(true) => return Err("revoked_token".into()),
        Err(e) => {
            tracing::warn!(token_id = id, error = %e, "revocation marker unreadable; denying");
            return Err("token_unreadable".into());
        }
    }
    // Fail closed: a record that does not verify is as good as none.
    let record: TokenRecord = match record {
        Ok(Some(r)) => r,
        Ok(None) => return Err("invalid_token".into()),
        Err(e) => {
            tracing::warn!(token_id = id, error = %e, "token record unreadable; denying");
            return Err("token_unreadable".into());
        }
    };
    if record.id != id {
        return Err("invalid_token".into());
    }
    record
        .verify(secret, Utc::now())
        .map_err(|_| "invalid_or_expired_token".to_string())?;
    token_principal(state, record).await
}

/// The principal a verified token record stands for: its roles within its
/// namespaces plus the bindings of its principal.
pub(crate) async fn token_principal(
    state: &AppState,
    record: TokenRecord,
) -> Result<Principal, String> {
    let scope = NamespaceScope::from_list(&record.namespaces);
    let mut grants = Vec::with_capacity(record.roles.len());
    for role in &record.roles {
        let Some(permissions) = state.config.roles.0.get(role) else {
            tracing::warn!(token_id = %record.id, role = %role, "token names a role the config lacks; denying");
            return Err("unknown_role".into());
        };
        grants.push(Grant {
            role: role.clone(),
            namespaces: scope.clone(),
            permissions: permissions.clone(),
            source: "token".into(),
        });
    }
    // A token's groups are facts for policies; group role bindings grant
    // nothing through them (only an identity provider's groups do).
    grants.extend(binding_grants(state, &record.principal, &[]).await?);
    let mut attributes: std::collections::BTreeMap<String, String> =
        [("auth".to_string(), "api-token".to_string())].into();
    if let Some(purpose) = record.purpose {
        attributes.insert("purpose".into(), purpose);
    }
    Ok(Principal {
        id: record.principal,
        kind: record.kind,
        groups: record.groups,
        grants,
        environment: record.environment,
        token_id: Some(record.id),
        issuer: None,
        expires_at: record.expires_at,
        attributes,
    })
}

/// Verifies an OIDC access token; the error is an audit-ready reason code.
pub(crate) async fn authenticate_jwt(state: &AppState, bearer: &str) -> Result<Principal, String> {
    let Some(verifier) = &state.oidc else {
        return Err("no_issuer_configured".into());
    };
    let identity = verifier
        .verify(bearer, &state.config.environments.names)
        .await
        .map_err(|e| {
            tracing::debug!(reason = %e, "JWT refused");
            e.code().to_string()
        })?;
    let grants = binding_grants(state, &identity.principal, &identity.groups).await?;
    Ok(Principal {
        id: identity.principal,
        kind: if identity.service {
            PrincipalKind::Service
        } else {
            PrincipalKind::Person
        },
        groups: identity.groups,
        grants,
        environment: identity
            .environment
            .unwrap_or_else(|| state.config.environments.default.clone()),
        token_id: None,
        attributes: {
            // Built-ins last: a claim cannot pose as them.
            let mut a = identity.attributes;
            a.insert("auth".into(), "oidc".into());
            a.insert("issuer".into(), identity.issuer.clone());
            a
        },
        issuer: Some(identity.issuer),
        expires_at: chrono::DateTime::from_timestamp(identity.expires_at, 0),
    })
}

/// What a request wants to do, in policy terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read metadata.
    Read,
    /// Create a model, upload, commit.
    Write,
    /// Change tags, metadata, raise sensitivity.
    EditMetadata,
    /// Receive a version's DEK sealed to a workload key.
    KeyRelease,
    /// Crypto-shred a version.
    Delete,
    /// Rotate and retire keys.
    ManageKeys,
    /// Download plaintext.
    Download,
    /// Create API tokens.
    ManageAccess,
    /// Approve a version for an environment.
    Approve,
    /// Deploy a version to an environment.
    Deploy,
    /// Install and remove policies.
    ManagePolicies,
}

impl Action {
    fn permission(self) -> Permission {
        match self {
            Self::Read => Permission::Read,
            Self::Write => Permission::Write,
            Self::EditMetadata => Permission::EditMetadata,
            Self::KeyRelease => Permission::KeyRelease,
            Self::Delete => Permission::Delete,
            Self::ManageKeys => Permission::ManageKeys,
            Self::Download => Permission::Download,
            Self::ManageAccess => Permission::ManageAccess,
            Self::Approve => Permission::Approve,
            Self::Deploy => Permission::Deploy,
            Self::ManagePolicies => Permission::ManagePolicies,
        }
    }

    /// Name used in messages (and later in policy requests and audit).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::EditMetadata => "edit-metadata",
            Self::KeyRelease => "key-release",
            Self::Delete => "delete",
            Self::ManageKeys => "manage-keys",
            Self::Download => "download",
            Self::ManageAccess => "manage-access",
            Self::Approve => "approve",
            Self::Deploy => "deploy",
            Self::ManagePolicies => "manage-policies",
        }
    }
}

/// What the action is on.
#[derive(Debug, Clone, Default)]
pub struct Resource<'a> {
    /// Namespace, when the action is inside one.
    pub namespace: Option<&'a str>,
    /// Model name.
    pub model: Option<&'a str>,
    /// Version.
    pub version: Option<&'a str>,
    /// File path.
    pub path: Option<&'a str>,
}

impl<'a> Resource<'a> {
    /// A model in a namespace.
    pub fn model(namespace: &'a str, model: &'a str) -> Self {
        Self {
            namespace: Some(namespace),
            model: Some(model),
            ..Self::default()
        }
    }

    /// The same, narrowed to a version.
    pub fn version(mut self, version: &'a str) -> Self {
        self.version = Some(version);
        self
    }

    /// The same, narrowed to a file.
    pub fn path(mut self, path: &'a str) -> Self {
        self.path = Some(path);
        self
    }
}

/// The namespace-scope part of [`authorize`] alone, for steps (such as
/// resolving `latest`) that must not run for a namespace out of reach.
pub fn check_scope(principal: &Principal, namespace: &str, model: &str) -> Result<(), ApiError> {
    if principal.reaches(namespace) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "model {namespace}/{model} not found"
        )))
    }
}

/// The authorization step every route goes through. Namespace scope is
/// checked first and answers 404 so a token cannot probe other namespaces.
pub fn authorize(
    principal: &Principal,
    action: Action,
    resource: &Resource<'_>,
) -> Result<(), ApiError> {
    let permission = action.permission();
    let allowed = match resource.namespace {
        Some(ns) => {
            if !principal.reaches(ns) {
                let what = match resource.model {
                    Some(m) => format!("model {ns}/{m} not found"),
                    None => format!("namespace {ns} not found"),
                };
                return Err(ApiError::not_found(what));
            }
            principal.can_in(permission, ns)
        }
        None => principal.can(permission),
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "principal {} lacks the {} permission",
            principal.id,
            action.permission()
        )));
    }
    Ok(())
}

/// Facts about the version a policy request concerns.
#[derive(Debug, Clone, Default)]
pub struct VersionFacts {
    /// Version name.
    pub version: Option<String>,
    /// Uploader of the version.
    pub uploader: Option<String>,
    /// Effective approvals.
    pub approvals: Vec<modelvault_policy::ApprovalInfo>,
    /// Deployments.
    pub deployments: Vec<modelvault_policy::DeploymentInfo>,
    /// The kind an approve asks to record.
    pub approval_kind: Option<modelvault_policy::ApprovalKindInfo>,
    /// The committed version's facts (interface 0.2.0).
    pub facts: Option<modelvault_policy::VersionFactsInfo>,
}

/// Builds the policy request from verified sources only: the principal from
/// its verified token, the model from its authenticated record, the version
/// facts from authenticated manifests and approval records, the environment
/// from the identity.
pub fn policy_request(
    principal: &Principal,
    action: modelvault_policy::PolicyAction,
    model: &modelvault_storage::ModelRecord,
    facts: VersionFacts,
    file_path: Option<&str>,
    target_environment: Option<&str>,
    request_id: &str,
) -> modelvault_policy::PolicyRequest {
    use modelvault_policy::*;
    use modelvault_storage::Sensitivity;
    PolicyRequest {
        principal: PrincipalInfo {
            id: principal.id.clone(),
            kind: match principal.kind {
                modelvault_auth::PrincipalKind::Person => PrincipalKindInfo::Person,
                modelvault_auth::PrincipalKind::Service => PrincipalKindInfo::Service,
            },
            roles: principal.roles(),
            groups: principal.groups.clone(),
            namespaces: principal.namespaces().to_list(),
            attributes: principal.attributes.clone(),
            purpose: principal.attributes.get("purpose").cloned(),
        },
        action,
        resource: ResourceInfo {
            namespace: model.namespace.clone(),
            model: model.name.clone(),
            version: facts.version,
            sensitivity: match model.sensitivity {
                Sensitivity::Public => SensitivityInfo::Public,
                Sensitivity::Internal => SensitivityInfo::Internal,
                Sensitivity::Confidential => SensitivityInfo::Confidential,
                Sensitivity::Restricted => SensitivityInfo::Restricted,
            },
            tags: model.tags.clone(),
            owner: model.owner.clone(),
            uploader: facts.uploader,
            approvals: facts.approvals,
            deployments: facts.deployments,
            file_path: file_path.map(str::to_string),
            target_environment: target_environment.map(str::to_string),
            approval_kind: facts.approval_kind,
            facts: facts.facts,
        },
        context: ContextInfo {
            environment: principal.environment.clone(),
            time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            request_id: request_id.to_string(),
        },
    }
}

/// The policy input as the audit trail keeps it: complete, except the
/// files' plaintext SHA-256s, which the store never holds in the clear
/// (manifests seal them); `policy replay` sees them empty.
fn recorded_input(request: &modelvault_policy::PolicyRequest) -> Option<serde_json::Value> {
    let mut input = serde_json::to_value(request).ok()?;
    if let Some(files) = input
        .pointer_mut("/resource/facts/files")
        .and_then(|f| f.as_array_mut())
    {
        for f in files {
            if let Some(d) = f.get_mut("sha256") {
                *d = serde_json::Value::String(String::new());
            }
        }
    }
    Some(input)
}

/// Runs the policy chain; a deny is a 403 whose error names the deciding
/// plugin and its reason code. The per-plugin results go to the log (the
/// audit trail will keep them).
pub async fn enforce_policy(
    state: &AppState,
    request: modelvault_policy::PolicyRequest,
) -> Result<(), ApiError> {
    if !state.policy_chain_enabled() {
        return Ok(());
    }
    // Right after a start the enforcing policies may still be compiling:
    // wait briefly, else a 503 (never a decision without them).
    state.policies.wait_ready().await?;
    let action = request.action;
    let request_id = request.context.request_id.clone();
    let principal = request.principal.id.clone();
    let input = state.audit.as_ref().and_then(|_| recorded_input(&request));
    let started = std::time::Instant::now();
    let decision = state.policies.decide(request).await;
    state
        .metrics
        .policy_latency
        .observe(started.elapsed().as_secs_f64());
    for r in &decision.results {
        state
            .metrics
            .policy_decisions
            .get_or_create(&crate::metrics::PolicyLabels {
                plugin: r.plugin.clone(),
                outcome: match r.decision.outcome {
                    modelvault_policy::Outcome::Allow => "allow",
                    modelvault_policy::Outcome::Deny => "deny",
                    modelvault_policy::Outcome::Abstain => "abstain",
                }
                .into(),
            })
            .inc();
    }
    crate::audit::note_decisions(&decision.results, input);
    if tracing::enabled!(tracing::Level::INFO) {
        let results = serde_json::to_string(&decision.results).unwrap_or_default();
        tracing::info!(
            request_id = %request_id,
            principal = %principal,
            action = action.as_str(),
            outcome = ?decision.outcome,
            plugin = decision.plugin.as_deref().unwrap_or("-"),
            reason_code = %decision.reason_code,
            results = %results,
            "policy decision"
        );
    }
    if decision.outcome == modelvault_policy::Outcome::Allow {
        return Ok(());
    }
    let mut err = ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "policy_denied",
        decision.reason,
    );
    let mut extra = serde_json::Map::new();
    extra.insert(
        "plugin".into(),
        decision
            .plugin
            .map_or(serde_json::Value::Null, serde_json::Value::from),
    );
    extra.insert("reason_code".into(), decision.reason_code.into());
    err.extra = Some(extra);
    Err(err)
}
