//! Reading the audit trail: `GET /v1/audit` (filtered, paged, `audit-read`),
//! the checkpoint public key (public), and verification through the server.

use axum::Json;
use axum::extract::State;
use modelvault_auth::{NamespaceScope, Permission};

use crate::api::{AuditPage, AuditPublicKey};
use crate::authn::Authenticated;
use crate::extract::ApiQuery;
use crate::{ApiError, AppState};

fn scope(p: &modelvault_auth::Principal) -> Result<NamespaceScope, ApiError> {
    let s = p.scope_of(Permission::AuditRead);
    if s == NamespaceScope::Only(Default::default()) {
        return Err(ApiError::forbidden(format!(
            "principal {} lacks the audit-read permission",
            p.id
        )));
    }
    Ok(s)
}

/// Audit records, oldest first, filtered and paged
///
/// Needs `audit-read`; records outside the caller's namespaces are left
/// out.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(crate::api::AuditQuery),
    responses(
        (status = 200, description = "One page of records", body = AuditPage),
        (status = 403, description = "`forbidden`: no `audit-read`", body = crate::api::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiQuery(q): ApiQuery<crate::api::AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let scope = scope(&p)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let offset: usize = match &q.cursor {
        Some(c) => c
            .parse()
            .map_err(|_| ApiError::bad_request("invalid cursor"))?,
        None => 0,
    };
    let (model_ns, model_name) = match q.model.as_deref().map(|m| m.split_once('/')) {
        Some(Some((ns, n))) => (Some(ns.to_string()), Some(n.to_string())),
        Some(None) => (None, q.model.clone()),
        None => (None, None),
    };
    // The index answers the filter; only the segments holding the page's
    // records are read.
    let reader = modelvault_audit::AuditReader::new(state.store.audit_objects());
    let mut rows: Vec<modelvault_audit::Entry> = reader
        .entries()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .filter(|r| {
            let ns = r.namespace.as_deref();
            let visible = match (&scope, ns) {
                (NamespaceScope::All, _) => true,
                (NamespaceScope::Only(set), Some(ns)) => set.contains(ns),
                (NamespaceScope::Only(_), None) => false,
            };
            visible
                && q.since.is_none_or(|t| r.time >= t)
                && q.until.is_none_or(|t| r.time < t)
                && q.principal
                    .as_ref()
                    .is_none_or(|id| r.principal.as_ref() == Some(id))
                && q.namespace.as_deref().is_none_or(|n| ns == Some(n))
                && model_ns.as_deref().is_none_or(|n| ns == Some(n))
                && model_name
                    .as_deref()
                    .is_none_or(|m| r.model.as_deref() == Some(m))
                && q.action.as_ref().is_none_or(|a| &r.action == a)
                && q.outcome.as_ref().is_none_or(|o| &r.outcome == o)
                && q.kind.as_ref().is_none_or(|k| &r.kind == k)
        })
        .collect();
    rows.sort_by(|a, b| (a.time, &a.chain, a.seq).cmp(&(b.time, &b.chain, b.seq)));
    let total = rows.len();
    let page: Vec<modelvault_audit::Entry> = rows.into_iter().skip(offset).take(limit).collect();
    let records = reader
        .lines_of(&page)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .map(|line| {
            std::str::from_utf8(&line)
                .ok()
                .and_then(|l| serde_json::value::RawValue::from_string(l.to_string()).ok())
                .ok_or_else(|| ApiError::internal("an audit line changed since it was indexed"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let next = offset + records.len();
    Ok(Json(AuditPage {
        records,
        next_cursor: (next < total).then(|| next.to_string()),
    }))
}

/// `GET /v1/audit/public-key`: needs no token (it is public).
#[utoipa::path(
    get,
    path = "/v1/audit/public-key",
    tag = "audit",
    security(()),
    responses((status = 200, description = "The checkpoint signing key", body = AuditPublicKey)),
)]
pub async fn public_key(State(state): State<AppState>) -> Result<Json<AuditPublicKey>, ApiError> {
    let key = match &state.audit {
        Some(a) => hex::encode(a.public_key()),
        None => {
            use ring::signature::KeyPair as _;
            let k = modelvault_audit::read_signing_key(&state.store)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .ok_or_else(|| ApiError::not_found("no audit signing key yet"))?;
            hex::encode(k.public_key().as_ref())
        }
    };
    Ok(Json(AuditPublicKey {
        algorithm: "Ed25519".into(),
        public_key: key,
    }))
}

/// `GET /v1/audit/verify`: verifies every chain in the store (global
/// `audit-read`).
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    responses(
        (status = 200, description = "The verdict on every chain", body = crate::api::VerifyReport),
        (status = 403, description = "`forbidden`: no global `audit-read`", body = crate::api::ErrorBody),
    ),
)]
pub async fn verify(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<modelvault_audit::VerifyReport>, ApiError> {
    if !p.can(Permission::AuditRead) {
        return Err(ApiError::forbidden(format!(
            "principal {} lacks the audit-read permission for all namespaces",
            p.id
        )));
    }
    let Some(audit) = &state.audit else {
        return Err(ApiError::internal("audit trail not running"));
    };
    // Checkpoint first, so the report covers everything recorded so far.
    let _ = audit.checkpoint().await;
    // Against the pinned key when the config has one (the server refuses
    // to start with another signing key), else the running one.
    let key = state
        .config
        .audit
        .pinned_public_key()
        .unwrap_or_else(|| audit.public_key().to_vec());
    let report = modelvault_audit::verify_store(&state.store.audit_objects(), &key)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(report))
}
