//! The gate of the model routes, in one place: names checked, the role
//! gate ([`admit`]); then for a version, `latest`/`deployed-ENV` resolved,
//! the verified facts loaded in one storage call and the policy chain run
//! ([`Admitted::decide`]). Also the request id, extracted once
//! ([`RequestId`]).
//!
//! Order a reader must keep: names (400) and the role gate (404 outside
//! the principal's scope, 403 without the permission) run on the version
//! *as named*, before anything is read; a route's own checks (the
//! transport of a key release, an approval's environment) sit between
//! [`admit`] and [`Admitted::decide`]; nothing is resolved or loaded for a
//! caller the role gate refuses.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use modelvault_auth::Principal;
use modelvault_policy::{ApprovalInfo, DeploymentInfo, PolicyAction};
use modelvault_storage::{Manifest, ModelRecord, Sensitivity, VersionInForce, VersionRef};

use crate::authn::{Action, Resource, VersionFacts, authorize, enforce_policy, policy_request};
use crate::routes::approvals::{ApprovalRecord, DeploymentRecord};
use crate::{ApiError, AppState};

/// The header the outermost middleware puts on every request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id (`x-request-id`, set by the outermost middleware;
/// `-` if absent), extracted once per handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id in `headers`, if any: the one place the header is read.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|s| Self(s.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers).unwrap_or_else(|| Self("-".into())))
    }
}

/// Checks names before anything else, so a bad name is a 400 whatever the
/// caller's scope.
pub fn check_names(ns: &str, name: &str) -> Result<(), ApiError> {
    modelvault_storage::names::validate_name("namespace", ns)?;
    modelvault_storage::names::validate_name("model", name)?;
    Ok(())
}

/// The gate of a model route: the names the resource carries, then the
/// role gate for `action` on it.
pub fn admit(p: &Principal, action: Action, resource: &Resource<'_>) -> Result<(), ApiError> {
    if let (Some(ns), Some(name)) = (resource.namespace, resource.model) {
        check_names(ns, name)?;
    }
    authorize(p, action, resource)
}

/// [`admit`] for a version (and a file of it) as the caller named it; the
/// answer is what resolving and deciding on it needs.
pub fn version<'a>(
    p: &'a Principal,
    action: Action,
    ns: &'a str,
    name: &'a str,
    version: &'a str,
    path: Option<&str>,
) -> Result<Admitted<'a>, ApiError> {
    let mut resource = Resource::model(ns, name).version(version);
    resource.path = path;
    admit(p, action, &resource)?;
    Ok(Admitted {
        principal: p,
        ns,
        name,
        version,
    })
}

/// A version the role gate let the principal at, not yet resolved.
#[derive(Debug, Clone, Copy)]
pub struct Admitted<'a> {
    principal: &'a Principal,
    ns: &'a str,
    name: &'a str,
    version: &'a str,
}

/// What the policy chain is asked about a version.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// The action.
    pub action: PolicyAction,
    /// The file, for a download or a ciphertext read.
    pub file: Option<&'a str>,
    /// The environment an approve or deploy is for.
    pub environment: Option<&'a str>,
    /// The kind an approve asks to record.
    pub approval_kind: Option<modelvault_policy::ApprovalKindInfo>,
}

impl Decision<'_> {
    /// `action` on the whole version.
    pub fn on_version(action: PolicyAction) -> Self {
        Self {
            action,
            file: None,
            environment: None,
            approval_kind: None,
        }
    }
}

/// What the policy chain allowed: the resolved version, and the model
/// record and manifest it decided on.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The version's name (`latest`/`deployed-ENV` resolved).
    pub version: String,
    /// The model record the decision saw.
    pub model: ModelRecord,
    /// The manifest the decision saw.
    pub manifest: Manifest,
}

impl Admitted<'_> {
    /// Resolves `deployed-ENV` (from the model's deployment records) and
    /// `latest` (the newest committed version); another name passes
    /// through, checked.
    pub async fn resolve(&self, state: &AppState) -> Result<String, ApiError> {
        crate::routes::approvals::resolve_version(state, self.ns, self.name, self.version).await
    }

    /// Resolves the version, loads its verified facts (the model record,
    /// the manifest in force, approvals and deployments: one storage call
    /// for a plain name or `latest`) and runs the policy chain for `d`; a
    /// deny is a 403. A download of a restricted model without an approval
    /// for the principal's environment raises the restricted-access alert
    /// whatever the chain decides.
    pub async fn decide(
        &self,
        state: &AppState,
        d: Decision<'_>,
        request_id: &RequestId,
    ) -> Result<Allowed, ApiError> {
        let named = match self.version.strip_prefix("deployed-") {
            Some(_) => self.resolve(state).await?,
            None => self.version.to_string(),
        };
        let loaded: VersionInForce<ApprovalRecord, DeploymentRecord> = state
            .store
            .version_in_force(self.ns, self.name, &named)
            .await?;
        let VersionInForce {
            version,
            model,
            manifest,
            approvals,
            deployments,
        } = loaded;
        let mut facts = facts(state, &version, &manifest, approvals, deployments).await?;
        facts.approval_kind = d.approval_kind;
        let p = self.principal;
        if d.action == PolicyAction::Download
            && model.sensitivity == Sensitivity::Restricted
            && !facts.approvals.iter().any(|a| {
                a.environment == p.environment
                    && a.kind == modelvault_policy::ApprovalKindInfo::Review
            })
        {
            state.alerts.restricted_access(
                &crate::audit::principal_ref(p),
                modelvault_audit::ResourceRef {
                    namespace: Some(self.ns.to_string()),
                    model: Some(self.name.to_string()),
                    version: Some(version.clone()),
                    file: d.file.map(str::to_string),
                    ..Default::default()
                },
            );
        }
        let req = policy_request(
            p,
            d.action,
            &model,
            facts,
            d.file,
            d.environment,
            request_id.as_str(),
        );
        enforce_policy(state, req).await?;
        Ok(Allowed {
            version,
            model,
            manifest,
        })
    }
}

/// The policy's view of a version whose manifest the caller already holds
/// (the access review, which walks every version).
pub async fn version_facts(
    state: &AppState,
    v: &VersionRef<'_>,
    manifest: &Manifest,
) -> Result<VersionFacts, ApiError> {
    let (approvals, deployments) = (state.store.approvals(v), state.store.deployments(v));
    let (approvals, deployments) = futures::join!(
        approvals.all::<ApprovalRecord>(),
        deployments.all::<DeploymentRecord>()
    );
    facts(state, v.version, manifest, approvals?, deployments?).await
}

/// The policy's view of a version: effective approvals and every
/// deployment, from the verified records; its stage; its files with their
/// digests (unsealed once per manifest, then cached, [`crate::FileFacts`]).
async fn facts(
    state: &AppState,
    version: &str,
    manifest: &Manifest,
    approvals: Vec<(u64, ApprovalRecord)>,
    deployments: Vec<(u64, DeploymentRecord)>,
) -> Result<VersionFacts, ApiError> {
    let rfc3339 =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let v = VersionRef {
        namespace: &manifest.namespace,
        model: &manifest.model,
        version,
    };
    let (stage, files, signature) = futures::join!(
        state.store.stage_of(&v),
        file_facts(state, &v, manifest),
        state.store.version_signature(&v)
    );
    let facts = modelvault_policy::VersionFactsInfo {
        created: rfc3339(manifest.created_at),
        uploader: manifest.uploader.clone(),
        stage: crate::api::convert::policy_stage(stage?),
        files: files?.as_ref().clone(),
        signature: signature?.map(|s| modelvault_policy::ModelSignatureInfo {
            trusted: signature_trusted(state, &manifest.namespace, &s),
            method: s.method,
            signer: s.signer,
            files_match: s.files_match,
        }),
    };
    Ok(VersionFacts {
        approval_kind: None,
        facts: Some(facts),
        version: Some(version.to_string()),
        uploader: Some(manifest.uploader.clone()),
        approvals: crate::routes::approvals::effective(&v, approvals)?
            .into_iter()
            .map(|a| ApprovalInfo {
                approver: a.approver,
                environment: a.environment,
                time: rfc3339(a.time),
                kind: crate::api::convert::approval_kind(a.kind),
                approver_roles: a.approver_roles,
            })
            .collect(),
        deployments: deployments
            .into_iter()
            .map(|(_, d)| DeploymentInfo {
                environment: d.environment,
                deployer: d.deployer,
                time: rfc3339(d.time),
            })
            .collect(),
    })
}

/// Whether a version's recorded signature is trusted now: the commit-time
/// verdict, and the very key that verified it still trusted for the
/// namespace (removing a key from the config withdraws the trust of
/// everything it signed).
pub fn signature_trusted(
    state: &AppState,
    ns: &str,
    s: &modelvault_storage::VersionSignature,
) -> bool {
    s.trusted
        && state
            .signers
            .iter()
            .any(|k| k.fingerprint() == s.signer_key && k.name == s.signer && k.trusted_in(ns))
}

/// Versions' files with their digests, as policies see them: the digests
/// are sealed in the manifest, so the first decision on a manifest unwraps
/// its DEK once; later ones read this cache. Keyed by the manifest's
/// identity (version, revision, DEK generation): a rewrapped or rotated
/// manifest is a new entry. Bounded: emptied when full.
#[derive(Default)]
pub struct FileFactsCache {
    entries: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<Vec<modelvault_policy::FileFactInfo>>>,
    >,
}

/// Most manifests whose file facts are kept.
const FILE_FACTS_ENTRIES: usize = 4096;

async fn file_facts(
    state: &AppState,
    v: &VersionRef<'_>,
    manifest: &Manifest,
) -> Result<std::sync::Arc<Vec<modelvault_policy::FileFactInfo>>, ApiError> {
    let key = format!(
        "{}/{}@{}#{}#{}",
        v.namespace, v.model, v.version, manifest.revision, manifest.dek_generation
    );
    if let Ok(m) = state.file_facts.entries.lock()
        && let Some(f) = m.get(&key)
    {
        return Ok(f.clone());
    }
    let (view, _key) = state.store.version_view_of(v, manifest.clone()).await?;
    let files: std::sync::Arc<Vec<_>> = std::sync::Arc::new(
        view.files
            .into_iter()
            .map(|f| modelvault_policy::FileFactInfo {
                path: f.path,
                size: f.size,
                sha256: f.sha256,
            })
            .collect(),
    );
    if let Ok(mut m) = state.file_facts.entries.lock() {
        if m.len() >= FILE_FACTS_ENTRIES {
            m.clear();
        }
        m.insert(key, files.clone());
    }
    Ok(files)
}
