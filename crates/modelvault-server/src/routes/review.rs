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
    check_filters(
        q.namespace.as_deref(),
        q.model.as_deref(),
        q.version.as_deref(),
    )?;
    let now = Utc::now();
    let since = q.since.unwrap_or(now - chrono::Duration::days(90));
    let Subjects {
        candidates,
        expiring,
        used,
    } = subjects(&state, now, since).await?;

    // The report runs the chain: not on a set still compiling after a start.
    state.policies.wait_ready().await?;
    // Every version, every candidate.
    let mut versions = Vec::new();
    let mut can_download_any: BTreeSet<String> = BTreeSet::new();
    let mut downloaded_any: BTreeSet<String> = BTreeSet::new();
    for (ns, model, manifest, facts) in versions_in_scope(
        &state,
        q.namespace.as_deref(),
        q.model.as_deref(),
        q.version.as_deref(),
    )
    .await?
    {
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

/// Who the review considers: every live API token's principal, and every
/// OIDC principal the audit trail saw since `since` that holds a binding;
/// the tokens expiring within 30 days; and who downloaded what.
struct Subjects {
    candidates: BTreeMap<String, Candidate>,
    expiring: Vec<ExpiringToken>,
    /// (ns, model, version) → principal → (count, last)
    used: BTreeMap<(String, String, String), Downloads>,
}

async fn subjects(
    state: &AppState,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
) -> Result<Subjects, ApiError> {
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
        let Ok(principal) = token_principal(state, r).await else {
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
        let grants = binding_grants(state, &id, &pr.groups)
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

    Ok(Subjects {
        candidates,
        expiring,
        used,
    })
}

/// The review's version filters, each a plain name.
fn check_filters(
    namespace: Option<&str>,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(ns) = namespace {
        modelvault_storage::names::validate_name("namespace", ns)?;
    }
    if let Some(m) = model {
        modelvault_storage::names::validate_name("model", m)?;
    }
    if let Some(v) = version {
        modelvault_storage::names::validate_version(v)?;
    }
    Ok(())
}

/// A version in scope: namespace, model record, manifest and the facts
/// the policy chain decides on.
type ReviewedVersion = (
    String,
    modelvault_storage::ModelRecord,
    modelvault_storage::Manifest,
    crate::authn::VersionFacts,
);

/// Every committed version the filters select, with its model record and
/// its policy facts.
async fn versions_in_scope(
    state: &AppState,
    namespace: Option<&str>,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Vec<ReviewedVersion>, ApiError> {
    let mut out = Vec::new();
    for ns in state.store.list_namespaces().await? {
        if namespace.is_some_and(|want| want != ns) {
            continue;
        }
        for m in state.store.list_models(&ns).await? {
            if model.is_some_and(|want| want != m.name) {
                continue;
            }
            for manifest in state.store.list_versions(&ns, &m.name).await? {
                if version.is_some_and(|want| want != manifest.version) {
                    continue;
                }
                let v = VersionRef {
                    namespace: &ns,
                    model: &m.name,
                    version: &manifest.version,
                };
                let facts = crate::gate::version_facts(state, &v, &manifest).await?;
                out.push((ns.clone(), m.clone(), manifest, facts));
            }
        }
    }
    Ok(out)
}

/// Who would gain or lose access if a candidate replaced a policy
///
/// Evaluates, for every version in scope, every principal the access
/// review considers (in its own environment) and every group binding (as
/// a member of the group in each declared environment), with download and
/// key-release: the chain as installed against the chain with the
/// candidate in place of the policy `name` (added if none is installed).
/// The candidate is validated as an install would be (signature under
/// `policy.require_signed`, compile, smoke evaluation with `name`'s
/// configuration), then discarded: nothing is stored or installed. Needs
/// `audit-read` for all namespaces and `manage-policies`.
#[utoipa::path(
    post,
    path = "/v1/access/review/candidate",
    tag = "audit",
    params(crate::api::CandidateReviewQuery),
    request_body(content = inline(super::openapi::RawBytes), content_type = "application/octet-stream", description = "The candidate component (`wasm32-wasip2`)"),
    responses(
        (status = 200, description = "The changes", body = crate::api::CandidateReview),
        (status = 400, description = "`invalid_request`: an empty body, a bad signature encoding or filter", body = crate::api::ErrorBody),
        (status = 403, description = "`forbidden`: no global `audit-read` or no `manage-policies`", body = crate::api::ErrorBody),
        (status = 422, description = "`invalid_policy`, `signature_required` or `invalid_signature`, as for an install", body = crate::api::ErrorBody),
    ),
)]
pub async fn candidate(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiQuery(q): ApiQuery<crate::api::CandidateReviewQuery>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<crate::api::CandidateReview>, ApiError> {
    use crate::api::{AccessChange, CandidateReview};
    use modelvault_policy::{Outcome, PolicyAction};
    if !p.can(Permission::AuditRead) || !p.can(Permission::ManagePolicies) {
        return Err(ApiError::forbidden(format!(
            "principal {} needs audit-read for all namespaces and manage-policies",
            p.id
        )));
    }
    crate::policies::validate_policy_name(&q.name)?;
    check_filters(
        q.namespace.as_deref(),
        q.model.as_deref(),
        q.version.as_deref(),
    )?;
    let (bytes, signature) = super::admin::component_upload(body, q.signature.as_deref())?;
    let cand = state.policies.candidate(&q.name, bytes, signature).await?;
    let replaces = state.policies.list()?.iter().any(|i| i.name == q.name);
    let now = Utc::now();
    let Subjects { candidates, .. } =
        subjects(&state, now, now - chrono::Duration::days(90)).await?;
    // Every principal in its own environment; every group binding as a
    // member of the group, in each declared environment.
    let mut who: Vec<(&'static str, String, Principal)> = candidates
        .into_values()
        .map(|c| ("principal", c.principal.id.clone(), c.principal))
        .collect();
    let set = state.bindings.current(&state.store).await?;
    let groups: BTreeSet<String> = set
        .bindings
        .iter()
        .filter_map(|b| match &b.subject {
            modelvault_auth::BindingSubject::Group(g) => Some(g.clone()),
            _ => None,
        })
        .collect();
    for g in groups {
        let grants = binding_grants(&state, "", std::slice::from_ref(&g))
            .await
            .map_err(ApiError::internal)?;
        for env in &state.config.environments.names {
            who.push((
                "group",
                g.clone(),
                Principal {
                    id: format!("group:{g}"),
                    kind: PrincipalKind::Person,
                    groups: vec![g.clone()],
                    grants: grants.clone(),
                    environment: env.clone(),
                    token_id: None,
                    issuer: None,
                    expires_at: None,
                    attributes: Default::default(),
                },
            ));
        }
    }
    state.policies.wait_ready().await?;
    let mut changes = Vec::new();
    let mut evaluated = 0u64;
    for (ns, model, manifest, facts) in versions_in_scope(
        &state,
        q.namespace.as_deref(),
        q.model.as_deref(),
        q.version.as_deref(),
    )
    .await?
    {
        for (subject_type, subject, principal) in &who {
            for (action, permission) in [
                (PolicyAction::Download, Permission::Download),
                (PolicyAction::KeyRelease, Permission::KeyRelease),
            ] {
                if !principal.can_in(permission, &ns) {
                    continue;
                }
                let req = policy_request(
                    principal,
                    action,
                    &model,
                    facts.clone(),
                    None,
                    None,
                    "access-review",
                );
                let (today, with) = state.policies.decide_with(req, &cand).await;
                evaluated += 1;
                let (was, will) = (
                    today.outcome == Outcome::Allow,
                    with.outcome == Outcome::Allow,
                );
                if was == will {
                    continue;
                }
                changes.push(AccessChange {
                    namespace: ns.clone(),
                    model: model.name.clone(),
                    version: manifest.version.clone(),
                    environment: principal.environment.clone(),
                    subject_type: subject_type.to_string(),
                    subject: subject.clone(),
                    action: action.as_str().to_string(),
                    change: if will { "gains" } else { "loses" }.to_string(),
                    old_reason_code: today.reason_code,
                    new_reason_code: with.reason_code,
                    new_reason: with.reason,
                });
            }
        }
    }
    let gains = changes.iter().filter(|c| c.change == "gains").count() as u64;
    Ok(Json(CandidateReview {
        generated_at: now,
        name: q.name.clone(),
        sha256: cand.policy.sha256.clone(),
        replaces,
        evaluated,
        gains,
        losses: changes.len() as u64 - gains,
        changes,
        notes: vec![
            "Principals are every live API token's principal and every OIDC principal the audit trail saw in the last 90 days, each in its own environment; a group is evaluated as a member of it holding only the group's bindings, in each declared environment.".into(),
            "The candidate runs with the configuration of the policy it replaces ([policy.config.NAME]).".into(),
        ],
    }))
}
