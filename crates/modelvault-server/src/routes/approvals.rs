//! Approvals and deployments: append-only authenticated records per version
//! (`.../approvals/<seq>.json`, `.../deployments/<seq>.json`). An approval
//! counts once per (approver, environment, kind); a revocation is a record too,
//! never an erasure. Approve and deploy name an environment that must be the
//! caller's own, and both go through the policy chain.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use modelvault_policy::PolicyAction;
use modelvault_storage::VersionRef;
use serde::{Deserialize, Serialize};

use crate::api::{ApprovalView, DeploymentList, DeploymentView, EnvironmentRequest};
use crate::authn::{Action, Authenticated, Resource};
use crate::extract::{ApiJson, ApiPath};
use crate::gate::{self, Decision, RequestId};
use crate::{ApiError, AppState};

/// One approval record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Sequence number.
    pub seq: u64,
    /// Approving principal.
    pub approver: String,
    /// Environment.
    pub environment: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Set when this record revokes the approver's approval.
    #[serde(default)]
    pub revoked: bool,
    /// Its kind (`review` in records written before kinds existed).
    #[serde(default)]
    pub kind: modelvault_api::ApprovalKind,
    /// The roles the approver held in the namespace.
    #[serde(default)]
    pub approver_roles: Vec<String>,
}

/// One deployment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Sequence number.
    pub seq: u64,
    /// Environment.
    pub environment: String,
    /// Deploying principal.
    pub deployer: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// Effective approvals: the latest record per (approver, environment,
/// kind), if not a revocation.
pub async fn approvals(
    state: &AppState,
    v: &VersionRef<'_>,
) -> Result<Vec<ApprovalRecord>, ApiError> {
    let series = state.store.approvals(v).all::<ApprovalRecord>().await?;
    effective(v, series)
}

/// The effective approvals of a version's approval series.
pub(crate) fn effective(
    v: &VersionRef<'_>,
    series: Vec<(u64, ApprovalRecord)>,
) -> Result<Vec<ApprovalRecord>, ApiError> {
    let mut latest: BTreeMap<(String, String, &'static str), ApprovalRecord> = BTreeMap::new();
    for (seq, r) in series {
        if r.seq != seq {
            return Err(ApiError::internal(format!(
                "approval record {seq} of {v} is misnumbered"
            )));
        }
        latest.insert(
            (r.approver.clone(), r.environment.clone(), r.kind.as_str()),
            r,
        );
    }
    let mut out: Vec<_> = latest.into_values().filter(|r| !r.revoked).collect();
    out.sort_by_key(|r| r.seq);
    Ok(out)
}

/// Every deployment of a version, oldest first.
pub async fn deployments(
    state: &AppState,
    v: &VersionRef<'_>,
) -> Result<Vec<DeploymentRecord>, ApiError> {
    let series = state.store.deployments(v).all::<DeploymentRecord>().await?;
    Ok(series.into_iter().map(|(_, r)| r).collect())
}

/// Resolves `latest`, `deployed-ENV` or a plain version name.
pub async fn resolve_version(
    state: &AppState,
    ns: &str,
    name: &str,
    version: &str,
) -> Result<String, ApiError> {
    if let Some(env) = version.strip_prefix("deployed-") {
        let list = model_deployments(state, ns, name).await?;
        return list
            .into_iter()
            .find(|d| d.environment == env)
            .and_then(|d| d.version)
            .ok_or_else(|| {
                ApiError::not_found(format!("no version of {ns}/{name} is deployed to {env}"))
            });
    }
    Ok(state.store.resolve_version(ns, name, version).await?)
}

async fn model_deployments(
    state: &AppState,
    ns: &str,
    name: &str,
) -> Result<Vec<DeploymentView>, ApiError> {
    let mut latest: BTreeMap<String, DeploymentView> = BTreeMap::new();
    for m in state.store.list_versions(ns, name).await? {
        let v = VersionRef {
            namespace: ns,
            model: name,
            version: &m.version,
        };
        for d in deployments(state, &v).await? {
            let newer = latest
                .get(&d.environment)
                .is_none_or(|cur| cur.time <= d.time);
            if newer {
                latest.insert(
                    d.environment.clone(),
                    DeploymentView {
                        version: Some(m.version.clone()),
                        environment: d.environment,
                        deployer: d.deployer,
                        time: d.time,
                    },
                );
            }
        }
    }
    Ok(latest.into_values().collect())
}

/// Approve or deploy: the permission and the policy action of each.
pub trait EnvironmentAction {
    /// The permission the role gate checks.
    const ACTION: Action;
    /// The action the policy chain is asked about.
    const POLICY: PolicyAction;
}

/// [`approve`]'s action.
pub struct Approving;
impl EnvironmentAction for Approving {
    const ACTION: Action = Action::Approve;
    const POLICY: PolicyAction = PolicyAction::Approve;
}

/// [`deploy`]'s action.
pub struct Deploying;
impl EnvironmentAction for Deploying {
    const ACTION: Action = Action::Deploy;
    const POLICY: PolicyAction = PolicyAction::Deploy;
}

/// An approve or deploy that passed the checks both share: names and the
/// role gate, the environment declared and the caller's own, then the
/// policy chain on the version (with the environment as its target).
/// Extracts, in order: the principal, the path, the request id, the body.
pub struct EnvironmentGate<A> {
    p: modelvault_auth::Principal,
    ns: String,
    name: String,
    /// The resolved version.
    version: String,
    environment: String,
    /// The approval kind (`review` for a deployment).
    kind: modelvault_api::ApprovalKind,
    action: std::marker::PhantomData<A>,
}

impl<A: EnvironmentAction> axum::extract::FromRequest<AppState> for EnvironmentGate<A> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        use axum::extract::FromRequestParts as _;
        let (mut parts, body) = req.into_parts();
        let Authenticated(p) = Authenticated::from_request_parts(&mut parts, state).await?;
        let ApiPath((ns, name, version)) =
            ApiPath::<(String, String, String)>::from_request_parts(&mut parts, state).await?;
        let Ok(request_id) = RequestId::from_request_parts(&mut parts, state).await;
        let req = axum::extract::Request::from_parts(parts, body);
        let ApiJson(EnvironmentRequest { environment, kind }) =
            ApiJson::<EnvironmentRequest>::from_request(req, state).await?;
        let admitted = gate::version(&p, A::ACTION, &ns, &name, &version, None)?;
        if kind.is_some() && A::POLICY != modelvault_policy::PolicyAction::Approve {
            return Err(ApiError::bad_request("kind applies to approvals only"));
        }
        let kind = kind.unwrap_or_default();
        if !state.config.environments.names.contains(&environment) {
            return Err(ApiError::bad_request(format!(
                "environment {environment:?} is not declared"
            )));
        }
        if p.environment != environment {
            return Err(ApiError::forbidden(format!(
                "to {} for {environment}, act as a principal bound to {environment} (yours: {})",
                A::ACTION.as_str(),
                p.environment
            )));
        }
        let decision = Decision {
            action: A::POLICY,
            file: None,
            environment: Some(&environment),
            approval_kind: (A::POLICY == modelvault_policy::PolicyAction::Approve)
                .then_some(crate::api::convert::approval_kind(kind)),
        };
        let version = admitted.decide(state, decision, &request_id).await?.version;
        Ok(Self {
            ns,
            name,
            version,
            environment,
            kind,
            p,
            action: std::marker::PhantomData,
        })
    }
}

/// Approve a version for the caller's environment
///
/// Needs `approve`; the environment must be the caller's own. 201 when a
/// new approval was recorded, 200 when the caller had already approved.
#[utoipa::path(
    post,
    path = "/v1/models/{ns}/{name}/versions/{version}/approvals",
    tag = "approvals",
    params(super::openapi::VersionPath),
    request_body = EnvironmentRequest,
    responses(
        (status = 200, description = "Already approved; the effective approvals", body = Vec<ApprovalView>),
        (status = 201, description = "Approved; the effective approvals", body = Vec<ApprovalView>),
        (status = 403, description = "`forbidden` (no `approve`, or another environment) or `policy_denied`", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: a concurrent approval won; retry", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn approve(
    State(state): State<AppState>,
    g: EnvironmentGate<Approving>,
) -> Result<(StatusCode, Json<Vec<ApprovalView>>), ApiError> {
    let EnvironmentGate {
        p,
        ns,
        name,
        version,
        environment,
        kind,
        ..
    } = g;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    let current = approvals(&state, &v).await?;
    let already = current
        .iter()
        .any(|a| a.approver == p.id && a.environment == environment && a.kind == kind);
    let status = if already {
        StatusCode::OK
    } else {
        let roles: Vec<String> = p
            .grants
            .iter()
            .filter(|g| g.namespaces.contains(&ns))
            .map(|g| g.role.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        record_approval(&state, &v, &p.id, &environment, kind, roles, false).await?;
        StatusCode::CREATED
    };
    Ok((status, Json(approval_views(approvals(&state, &v).await?))))
}

/// Appends an approval (or, with `revoked`, its revocation) by `approver`
/// for `environment` to the version's approval series.
#[allow(clippy::too_many_arguments)]
async fn record_approval(
    state: &AppState,
    v: &VersionRef<'_>,
    approver: &str,
    environment: &str,
    kind: modelvault_api::ApprovalKind,
    approver_roles: Vec<String>,
    revoked: bool,
) -> Result<(), ApiError> {
    let now = Utc::now();
    state
        .store
        .approvals(v)
        .append(|seq| ApprovalRecord {
            seq,
            approver: approver.to_owned(),
            environment: environment.to_owned(),
            time: now,
            revoked,
            kind,
            approver_roles: approver_roles.clone(),
        })
        .await?;
    let what = if revoked {
        "approval revoked"
    } else {
        "approved"
    };
    tracing::info!(principal = %approver, version = %v, environment = %environment, kind = kind.as_str(), "{what}");
    Ok(())
}

/// Approval records as the API shows them.
pub(crate) fn approval_views(list: Vec<ApprovalRecord>) -> Vec<ApprovalView> {
    list.into_iter()
        .map(|a| ApprovalView {
            approver: a.approver,
            environment: a.environment,
            time: a.time,
            kind: a.kind,
        })
        .collect()
}

/// Revoke the caller's approval for an environment
#[utoipa::path(
    delete,
    path = "/v1/models/{ns}/{name}/versions/{version}/approvals/{environment}",
    tag = "approvals",
    params(
        super::openapi::VersionPath,
        ("environment" = String, Path, description = "The environment of the approval"),
    ),
    responses(
        (status = 200, description = "The effective approvals", body = Vec<ApprovalView>),
        (status = 403, description = "`forbidden`: no `approve` here", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: a concurrent change won; retry", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version, environment)): ApiPath<(String, String, String, String)>,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    let version = gate::version(&p, Action::Approve, &ns, &name, &version, None)?
        .resolve(&state)
        .await?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    // Every kind of the caller's approval for the environment.
    let kinds: Vec<modelvault_api::ApprovalKind> = approvals(&state, &v)
        .await?
        .iter()
        .filter(|a| a.approver == p.id && a.environment == environment)
        .map(|a| a.kind)
        .collect();
    if kinds.is_empty() {
        return Err(ApiError::not_found(format!(
            "no approval of {v} for {environment} by {}",
            p.id
        )));
    }
    for kind in kinds {
        record_approval(&state, &v, &p.id, &environment, kind, Vec::new(), true).await?;
    }
    Ok(Json(approval_views(approvals(&state, &v).await?)))
}

/// Set a version's lifecycle stage
///
/// Needs `approve` in the namespace. The stage is a fact policies read
/// (`latest` skips archived versions; the bundled approval gate refuses
/// archived ones and warns on deprecated ones); setting it is recorded in
/// the version's stage series and the audit trail, and runs no policy.
#[utoipa::path(
    post,
    path = "/v1/models/{ns}/{name}/versions/{version}/stage",
    tag = "approvals",
    params(super::openapi::VersionPath),
    request_body = crate::api::StageRequest,
    responses(
        (status = 200, description = "The stage in force", body = crate::api::StageView),
        (status = 403, description = "`forbidden`: no `approve` here", body = crate::api::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: a concurrent change won; retry", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn set_stage(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<crate::api::StageRequest>,
) -> Result<Json<crate::api::StageView>, ApiError> {
    let admitted = gate::version(&p, Action::Approve, &ns, &name, &version, None)?;
    if version == "latest" {
        return Err(ApiError::bad_request(
            "name the version: `latest` moves when a stage changes",
        ));
    }
    let version = admitted.resolve(&state).await?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    // The version must be committed and not deleted.
    state
        .store
        .version_in_force::<serde::de::IgnoredAny, serde::de::IgnoredAny>(&ns, &name, &version)
        .await?;
    crate::audit::note_version(&version);
    let stage = crate::api::convert::stored_stage(req.stage);
    let now = Utc::now();
    let (_, record) = state
        .store
        .stages(&v)
        .append(|seq| modelvault_storage::StageRecord {
            seq,
            stage,
            by: p.id.clone(),
            time: now,
        })
        .await?;
    tracing::info!(principal = %p.id, version = %v, stage = stage.as_str(), "stage set");
    Ok(Json(crate::api::StageView {
        stage: req.stage,
        by: Some(record.by),
        time: Some(record.time),
    }))
}

/// Record a deployment of a version to the caller's environment
#[utoipa::path(
    post,
    path = "/v1/models/{ns}/{name}/versions/{version}/deployments",
    tag = "approvals",
    params(super::openapi::VersionPath),
    request_body = EnvironmentRequest,
    responses(
        (status = 201, description = "The deployment", body = DeploymentView),
        (status = 403, description = "`forbidden` (no `deploy`, or another environment) or `policy_denied`", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: a concurrent deployment won; retry", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn deploy(
    State(state): State<AppState>,
    g: EnvironmentGate<Deploying>,
) -> Result<(StatusCode, Json<DeploymentView>), ApiError> {
    let EnvironmentGate {
        p,
        ns,
        name,
        version,
        environment,
        ..
    } = g;
    let now = Utc::now();
    let (_, record) = state
        .store
        .deployments(&VersionRef {
            namespace: &ns,
            model: &name,
            version: &version,
        })
        .append(|seq| DeploymentRecord {
            seq,
            environment: environment.clone(),
            deployer: p.id.clone(),
            time: now,
        })
        .await?;
    tracing::info!(principal = %p.id, model = %format!("{ns}/{name}@{version}"), environment = %environment, "deployed");
    Ok((
        StatusCode::CREATED,
        Json(DeploymentView {
            version: Some(version),
            environment: record.environment,
            deployer: record.deployer,
            time: record.time,
        }),
    ))
}

/// The latest deployment of the model per environment
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}/deployments",
    tag = "approvals",
    params(super::openapi::ModelPath),
    responses(
        (status = 200, description = "Latest deployment per environment", body = DeploymentList),
        (status = 403, description = "`forbidden`: no `read` here", body = crate::api::ErrorBody),
    ),
)]
pub async fn list_deployments(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> Result<Json<DeploymentList>, ApiError> {
    gate::admit(&p, Action::Read, &Resource::model(&ns, &name))?;
    Ok(Json(DeploymentList {
        deployments: model_deployments(&state, &ns, &name).await?,
    }))
}

/// The approval rules of the enforcing bundled policies for `env`: (plugin,
/// approvals required, the rule in words), read from their
/// `[policy.config]` the same way the plugins read it.
fn approval_rules(state: &AppState, env: &str) -> Result<Vec<(String, u32, String)>, ApiError> {
    let installed = state.policies.list()?;
    let enforcing = |name: &str| {
        installed
            .iter()
            .any(|p| p.name == name && p.mode == crate::api::PolicyMode::Enforce)
    };
    let mut cfg = std::collections::BTreeMap::new();
    for plugin in ["separation-of-duties", "approval-gate"] {
        cfg.insert(
            plugin,
            state
                .policies
                .plugin_config(plugin)
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        );
    }
    let gated = |plugin: &str| {
        cfg.get(plugin)
            .and_then(|c| c.get("gated"))
            .map_or("production", String::as_str)
            .split(',')
            .any(|g| g.trim() == env)
    };
    let mut rules = Vec::new();
    if enforcing("separation-of-duties") && gated("separation-of-duties") {
        let required = cfg
            .get("separation-of-duties")
            .and_then(|c| c.get("required_approvals"))
            .map_or(Ok(2), |v| v.trim().parse::<u32>())
            .unwrap_or(2)
            .max(1);
        rules.push((
            "separation-of-duties".to_string(),
            required,
            format!("{required} approvals for {env} by people other than the uploader"),
        ));
    }
    if enforcing("approval-gate") && gated("approval-gate") {
        rules.push((
            "approval-gate".to_string(),
            1,
            format!("an approval for {env} before any release there"),
        ));
    }
    Ok(rules)
}

/// Versions waiting for an approval the caller may give
///
/// Versions in namespaces where the caller holds `approve`, short of the
/// approvals that the enforcing bundled policies (`separation-of-duties`,
/// `approval-gate`) require in the caller's environment. Approving is
/// still decided by the server: the list only says what is waiting.
#[utoipa::path(
    get,
    path = "/v1/approvals/inbox",
    tag = "approvals",
    responses(
        (status = 200, description = "What waits for the caller's approval", body = crate::api::Inbox),
    ),
)]
pub async fn inbox(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<crate::api::Inbox>, ApiError> {
    use modelvault_auth::Permission;
    let env = p.environment.clone();
    let rules = approval_rules(&state, &env)?;
    let mut items = Vec::new();
    let Some((plugin, required, rule)) = rules.into_iter().max_by_key(|r| r.1) else {
        return Ok(Json(crate::api::Inbox { items }));
    };
    for ns in state.store.list_namespaces().await? {
        if !p.can_in(Permission::Approve, &ns) || !p.can_in(Permission::Read, &ns) {
            continue;
        }
        for m in state.store.list_models(&ns).await? {
            for manifest in state.store.list_versions(&ns, &m.name).await? {
                let v = VersionRef {
                    namespace: &ns,
                    model: &m.name,
                    version: &manifest.version,
                };
                let effective: Vec<ApprovalRecord> = approvals(&state, &v)
                    .await?
                    .into_iter()
                    .filter(|a| a.environment == env)
                    .collect();
                // The rules counted here count review approvals.
                let counted = effective
                    .iter()
                    .filter(|a| {
                        a.approver != manifest.uploader
                            && a.kind == modelvault_api::ApprovalKind::Review
                    })
                    .count();
                if counted >= required as usize {
                    continue;
                }
                items.push(crate::api::InboxItem {
                    namespace: ns.clone(),
                    model: m.name.clone(),
                    version: manifest.version.clone(),
                    uploader: manifest.uploader.clone(),
                    created_at: manifest.created_at,
                    environment: env.clone(),
                    plugin: plugin.clone(),
                    rule: rule.clone(),
                    required,
                    you_approved: effective.iter().any(|a| a.approver == p.id),
                    approvals: approval_views(effective),
                });
            }
        }
    }
    items.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    Ok(Json(crate::api::Inbox { items }))
}
