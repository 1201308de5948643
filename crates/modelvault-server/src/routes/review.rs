//! `GET /v1/access/review`: the periodic access review. For each model
//! version, who can read and download it today (role bindings, API tokens
//! and the policy chain evaluated per principal) beside who actually
//! downloaded it in the period (the audit trail); principals with access
//! they never used, and tokens about to expire. Needs `audit-read` for all
//! namespaces.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use modelvault_auth::{Permission, Principal, PrincipalKind, TokenRecord};
use modelvault_storage::VersionRef;

use crate::api::{Access, AccessReview, ExpiringToken, VersionReview};
use crate::authn::{Authenticated, binding_grants, policy_request, token_principal};
use crate::extract::ApiQuery;
use crate::{ApiError, AppState};

/// Principal → (downloads, last) of one version in the period.
type Downloads = BTreeMap<String, (u64, DateTime<Utc>)>;

struct Candidate {
    principal: Principal,
    via: Vec<String>,
}

/// The access review: who can download each version vs who did
///
/// Needs `audit-read` for all namespaces.
#[utoipa::path(
    get,
    path = "/v1/access/review",
    tag = "audit",
    params(crate::api::AccessReviewQuery),
    responses(
        (status = 200, description = "The review", body = AccessReview),
        (status = 403, description = "`forbidden`: no global `audit-read`", body = crate::api::ErrorBody),
    ),
)]
pub async fn review(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiQuery(q): ApiQuery<crate::api::AccessReviewQuery>,
) -> Result<Json<AccessReview>, ApiError> {
    if !p.can(Permission::AuditRead) {
        return Err(ApiError::forbidden(format!(
            "principal {} lacks the audit-read permission for all namespaces",
            p.id
        )));
    }
    if let Some(ns) = &q.namespace {
        modelvault_storage::names::validate_name("namespace", ns)?;
    }
    if let Some(m) = &q.model {
        modelvault_storage::names::validate_name("model", m)?;
    }
    if let Some(v) = &q.version {
        modelvault_storage::names::validate_version(v)?;
    }
    let now = Utc::now();
    let since = q.since.unwrap_or(now - chrono::Duration::days(90));

    // Principals: every live API token, and every OIDC principal seen in the
    // audit trail (with the groups and environment it last had).
    let mut candidates: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut expiring = Vec::new();
    for r in state.store.tokens().list::<TokenRecord>().await? {
        let expired = r.expires_at.is_some_and(|t| t <= now);
        if r.expires_at
            .is_some_and(|t| t <= now + chrono::Duration::days(30))
        {
            expiring.push(ExpiringToken {
                name: r.name.clone(),
                principal: r.principal.clone(),
                expires_at: r.expires_at,
                expired,
            });
        }
        if expired {
            continue;
        }
        let name = r.name.clone();
        let Ok(principal) = token_principal(&state, r).await else {
            continue;
        };
        match candidates.get_mut(&principal.id) {
            Some(c) => {
                c.via.push(format!("token:{name}"));
                c.principal.grants.extend(principal.grants);
            }
            None => {
                candidates.insert(
                    principal.id.clone(),
                    Candidate {
                        principal,
                        via: vec![format!("token:{name}")],
                    },
                );
            }
        }
    }
    // (ns, model, version) → principal → (count, last)
    let mut used: BTreeMap<(String, String, String), Downloads> = BTreeMap::new();
    let mut seen_oidc: BTreeMap<String, modelvault_audit::PrincipalRef> = BTreeMap::new();
    let reader = modelvault_audit::AuditReader::new(state.store.audit_objects());
    let mut records =
        std::pin::pin!(reader.records(move |e| e.time >= since && e.principal.is_some()));
    while let Some((r, _)) = futures::TryStreamExt::try_next(&mut records)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        let Some(pr) = &r.principal else { continue };
        if !candidates.contains_key(&pr.id) {
            seen_oidc.insert(pr.id.clone(), pr.clone());
        }
        if r.kind == "intent"
            && r.action == "download"
            && let Some(res) = &r.resource
            && let (Some(ns), Some(m), Some(v)) = (&res.namespace, &res.model, &res.version)
        {
            let e = used
                .entry((ns.clone(), m.clone(), v.clone()))
                .or_default()
                .entry(pr.id.clone())
                .or_insert((0, r.time));
            e.0 += 1;
            e.1 = e.1.max(r.time);
        }
    }
    for (id, pr) in seen_oidc {
        let grants = binding_grants(&state, &id, &pr.groups)
            .await
            .map_err(ApiError::internal)?;
        if grants.is_empty() {
            continue;
        }
        let via = grants
            .iter()
            .map(|g| g.source.clone())
            .collect::<BTreeSet<_>>();
        candidates.insert(
            id.clone(),
            Candidate {
                principal: Principal {
                    id,
                    kind: if pr.kind == "service" {
                        PrincipalKind::Service
                    } else {
                        PrincipalKind::Person
                    },
                    groups: pr.groups.clone(),
                    grants,
                    environment: pr.environment.clone(),
                    token_id: None,
                    issuer: None,
                    expires_at: None,
                    // Not recorded in the audit trail: a policy keyed on
                    // attributes sees none here.
                    attributes: Default::default(),
                },
                via: via.into_iter().collect(),
            },
        );
    }

    // The report runs the chain: not on a set still compiling after a start.
    state.policies.wait_ready().await?;
    // Every version, every candidate.
    let mut versions = Vec::new();
    let mut can_download_any: BTreeSet<String> = BTreeSet::new();
    let mut downloaded_any: BTreeSet<String> = BTreeSet::new();
    for ns in state.store.list_namespaces().await? {
        if q.namespace.as_ref().is_some_and(|want| *want != ns) {
            continue;
        }
        for model in state.store.list_models(&ns).await? {
            if q.model.as_ref().is_some_and(|want| *want != model.name) {
                continue;
            }
            for manifest in state.store.list_versions(&ns, &model.name).await? {
                if q.version
                    .as_ref()
                    .is_some_and(|want| *want != manifest.version)
                {
                    continue;
                }
                let v = VersionRef {
                    namespace: &ns,
                    model: &model.name,
                    version: &manifest.version,
                };
                let facts = crate::gate::version_facts(&state, &v, &manifest).await?;
                let who_used = used
                    .get(&(ns.clone(), model.name.clone(), manifest.version.clone()))
                    .cloned()
                    .unwrap_or_default();
                let mut access = Vec::new();
                for c in candidates.values() {
                    let p = &c.principal;
                    let can_read = p.can_in(Permission::Read, &ns);
                    let download_permission = p.can_in(Permission::Download, &ns);
                    if !can_read && !download_permission {
                        continue;
                    }
                    let (policy, reason_code) = if download_permission {
                        let req = policy_request(
                            p,
                            modelvault_policy::PolicyAction::Download,
                            &model,
                            facts.clone(),
                            None,
                            None,
                            "access-review",
                        );
                        let d = state.policies.decide(req).await;
                        let allow = d.outcome == modelvault_policy::Outcome::Allow;
                        if allow {
                            can_download_any.insert(p.id.clone());
                        }
                        (
                            if allow { "allow" } else { "deny" }.to_string(),
                            d.reason_code,
                        )
                    } else {
                        ("not evaluated".to_string(), String::new())
                    };
                    let (downloads, last_download) = who_used
                        .get(&p.id)
                        .map_or((0, None), |(n, t)| (*n, Some(*t)));
                    if downloads > 0 {
                        downloaded_any.insert(p.id.clone());
                    }
                    access.push(Access {
                        principal: p.id.clone(),
                        kind: match p.kind {
                            PrincipalKind::Person => "person".into(),
                            PrincipalKind::Service => "service".into(),
                        },
                        environment: p.environment.clone(),
                        via: c.via.clone(),
                        can_read,
                        download_permission,
                        policy,
                        reason_code,
                        downloads,
                        last_download,
                    });
                }
                let with_access: BTreeSet<&str> = access
                    .iter()
                    .filter(|a| a.policy == "allow")
                    .map(|a| a.principal.as_str())
                    .collect();
                let downloaded_without_access_today = who_used
                    .keys()
                    .filter(|id| !with_access.contains(id.as_str()))
                    .cloned()
                    .collect();
                for id in who_used.keys() {
                    downloaded_any.insert(id.clone());
                }
                versions.push(VersionReview {
                    namespace: ns.clone(),
                    model: model.name.clone(),
                    version: manifest.version.clone(),
                    sensitivity: crate::api::convert::sensitivity(model.sensitivity),
                    access,
                    downloaded_without_access_today,
                });
            }
        }
    }
    let set = state.bindings.current(&state.store).await?;
    let group_bindings = set
        .bindings
        .iter()
        .filter(|b| matches!(b.subject, modelvault_auth::BindingSubject::Group(_)))
        .map(crate::api::convert::binding_view)
        .collect();
    Ok(Json(AccessReview {
        generated_at: now,
        since,
        versions,
        unused_access: can_download_any.difference(&downloaded_any).cloned().collect(),
        expiring_tokens: expiring,
        group_bindings,
        notes: vec![
            "OIDC principals appear by name only once the audit trail has seen them in the period; anyone else the identity provider puts in a bound group has that group's access too (see group_bindings).".into(),
            "The policy chain is evaluated as of now, for a download from each principal's own environment.".into(),
        ],
    }))
}
