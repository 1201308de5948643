//! Models and versions: create, list (and search), show, metadata edits.
//!
//! Sensitive metadata (keys marked on the model or listed in
//! `[metadata] sensitive_fields`) is unsealed only for a caller holding
//! `read-sensitive` in the model's namespace; everyone else sees
//! `"[redacted]"`, in show, list, search, history and version detail alike,
//! and a search never matches on a value the caller cannot see.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use modelvault_storage::{ModelRecord, VersionBrief, VersionRef};

use crate::api::{
    CreateModelRequest, ModelList, ModelView, VersionDetail, VersionList, VersionSummary,
};
use std::collections::BTreeMap;

use modelvault_auth::{Permission, Principal};

use crate::api::convert;
use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate;
use crate::{ApiError, AppState};

/// `keys` plus the config's sensitive keys: those are sealed too.
fn with_config_keys(state: &AppState, mut keys: Vec<String>) -> Vec<String> {
    keys.extend(state.config.metadata.sensitive_fields.iter().cloned());
    keys.sort();
    keys.dedup();
    keys
}

/// What redacted values read as.
pub const REDACTED: &str = "[redacted]";

/// The sensitive keys of `m`: marked on the model or listed in config.
fn sensitive_keys(state: &AppState, m: &ModelRecord) -> Vec<String> {
    let mut keys: std::collections::BTreeSet<String> = m.sensitive_fields.iter().cloned().collect();
    keys.extend(state.config.metadata.sensitive_fields.iter().cloned());
    keys.into_iter().collect()
}

/// `m`'s metadata as `p` may see it: sensitive values unsealed for a
/// holder of `read-sensitive` in the namespace, `[redacted]` otherwise.
pub(crate) async fn visible_metadata(
    state: &AppState,
    p: &Principal,
    m: &ModelRecord,
) -> Result<(BTreeMap<String, String>, Vec<String>), ApiError> {
    let sensitive = sensitive_keys(state, m);
    // The server unseals to know which keys hold a value; only a holder of
    // read-sensitive sees the values.
    let mut out = state.store.model_metadata(m).await?;
    if !p.can_in(Permission::ReadSensitive, &m.namespace) {
        for k in &sensitive {
            if let Some(v) = out.get_mut(k) {
                *v = REDACTED.into();
            }
        }
    }
    Ok((out, sensitive))
}

pub(crate) async fn model_view(
    state: &AppState,
    p: &Principal,
    m: ModelRecord,
    versions: Option<Vec<VersionSummary>>,
) -> Result<ModelView, ApiError> {
    let (metadata, sensitive_fields) = visible_metadata(state, p, &m).await?;
    Ok(ModelView {
        namespace: m.namespace,
        name: m.name,
        sensitivity: convert::sensitivity(m.sensitivity),
        tags: m.tags,
        owner: m.owner,
        created_at: m.created_at,
        metadata,
        sensitive_fields,
        revision: m.revision,
        versions,
        older_versions: false,
    })
}

fn summary(b: VersionBrief) -> VersionSummary {
    VersionSummary {
        version: b.version,
        created_at: b.created_at,
        uploader: b.uploader,
        file_count: b.file_count,
        total_size: b.total_size,
    }
}

/// Create a model
///
/// Needs `write` in the namespace.
#[utoipa::path(
    post,
    path = "/v1/models",
    tag = "models",
    request_body = CreateModelRequest,
    responses(
        (status = 201, description = "The new model", body = ModelView),
        (status = 403, description = "`forbidden`: the caller lacks `write` here", body = crate::api::ErrorBody),
        (status = 404, description = "`not_found`: the namespace is outside the caller's", body = crate::api::ErrorBody),
        (status = 409, description = "`already_exists`: the model exists", body = crate::api::ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiJson(req): ApiJson<CreateModelRequest>,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    gate::admit(
        &p,
        Action::Write,
        &Resource::model(&req.namespace, &req.name),
    )?;
    let sensitivity = req
        .sensitivity
        .map(convert::stored_sensitivity)
        .unwrap_or_default();
    let m = state
        .store
        .create_model_with(
            &req.namespace,
            &req.name,
            sensitivity,
            req.tags,
            &p.id,
            req.metadata,
            &with_config_keys(&state, req.sensitive_fields),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(model_view(&state, &p, m, None).await?),
    ))
}

/// List (and search) models
///
/// Every model in the namespaces where the caller holds `read`.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    params(crate::api::ModelListQuery),
    responses(
        (status = 200, description = "Models visible to the caller", body = ModelList),
        (status = 403, description = "`forbidden`: no `read` in the namespace", body = crate::api::ErrorBody),
        (status = 404, description = "`not_found`: the namespace is outside the caller's", body = crate::api::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiQuery(q): ApiQuery<crate::api::ModelListQuery>,
) -> Result<Json<ModelList>, ApiError> {
    let namespaces = match q.namespace {
        Some(ns) => {
            modelvault_storage::names::validate_name("namespace", &ns)?;
            authorize(
                &p,
                Action::Read,
                &Resource {
                    namespace: Some(&ns),
                    ..Default::default()
                },
            )?;
            vec![ns]
        }
        None => state
            .store
            .list_namespaces()
            .await?
            .into_iter()
            .filter(|ns| p.can_in(modelvault_auth::Permission::Read, ns))
            .collect(),
    };
    let needle = q.q.as_deref().map(str::to_lowercase);
    let mut models = Vec::new();
    for ns in namespaces {
        for m in state.store.list_models(&ns).await? {
            let view = model_view(&state, &p, m, None).await?;
            // Matching runs on the redacted view, so a search can never
            // reveal a value the caller may not read.
            if let Some(n) = &needle {
                let hit = view.name.to_lowercase().contains(n.as_str())
                    || view
                        .tags
                        .iter()
                        .chain(view.metadata.iter().filter(|(_, v)| v.as_str() != REDACTED))
                        .any(|(k, v)| {
                            k.to_lowercase().contains(n.as_str())
                                || v.to_lowercase().contains(n.as_str())
                        });
                if !hit {
                    continue;
                }
            }
            models.push(view);
        }
    }
    Ok(Json(ModelList { models }))
}

/// Show a model with its versions
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}",
    tag = "models",
    params(super::openapi::ModelPath, crate::api::ModelShowQuery),
    responses(
        (status = 200, description = "The model with its newest versions", body = ModelView),
        (status = 400, description = "`invalid_request`: `versions` above 1000", body = crate::api::ErrorBody),
        (status = 403, description = "`forbidden`: no `read` here", body = crate::api::ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<crate::api::ModelShowQuery>,
) -> Result<Json<ModelView>, ApiError> {
    gate::admit(&p, Action::Read, &Resource::model(&ns, &name))?;
    let limit = q.versions.unwrap_or(100);
    if limit > 1000 {
        return Err(ApiError::bad_request(
            "versions: at most 1000 (GET .../versions lists them all)",
        ));
    }
    let m = state
        .store
        .get_model(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {ns}/{name} not found")))?;
    // The newest versions from the model's commit log: the cost does not
    // grow with the number of versions.
    let (versions, older) = state
        .store
        .recent_versions(&ns, &name, limit as usize)
        .await?;
    let mut view = model_view(
        &state,
        &p,
        m,
        Some(versions.into_iter().map(summary).collect()),
    )
    .await?;
    view.older_versions = older;
    Ok(Json(view))
}

/// `PATCH /v1/models/{ns}/{name}`: tags and metadata need `edit-metadata`;
/// raising sensitivity needs `edit-metadata`, lowering it needs `approve`.
/// Each change is a new revision (who, when, before/after in the history).
#[utoipa::path(
    patch,
    path = "/v1/models/{ns}/{name}",
    tag = "models",
    params(super::openapi::ModelPath),
    request_body = crate::api::PatchModelRequest,
    responses(
        (status = 200, description = "The model after the change", body = ModelView),
        (status = 403, description = "`forbidden`: lacks `edit-metadata` (or `approve` to lower sensitivity)", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: a concurrent edit won; retry", body = crate::api::ErrorBody),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<crate::api::PatchModelRequest>,
) -> Result<Json<ModelView>, ApiError> {
    gate::admit(&p, Action::Read, &Resource::model(&ns, &name))?;
    let current = state
        .store
        .get_model(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {ns}/{name} not found")))?;
    let sensitivity = req.sensitivity.map(convert::stored_sensitivity);
    let edits_fields =
        !req.tags.is_empty() || !req.metadata.is_empty() || !req.sensitive_fields.is_empty();
    if !edits_fields && sensitivity.is_none_or(|s| s == current.sensitivity) {
        return Err(ApiError::bad_request("nothing to change"));
    }
    if edits_fields || sensitivity.is_some_and(|s| s > current.sensitivity) {
        authorize(&p, Action::EditMetadata, &Resource::model(&ns, &name))?;
    }
    if sensitivity.is_some_and(|s| s < current.sensitivity) && !p.can_in(Permission::Approve, &ns) {
        return Err(ApiError::forbidden(format!(
            "principal {} lacks the approve permission needed to lower sensitivity",
            p.id
        )));
    }
    let change = modelvault_storage::ModelChange {
        sensitivity,
        tags: req.tags,
        metadata: req.metadata,
        mark_sensitive: with_config_keys(&state, req.sensitive_fields),
    };
    let (after, before) = state.store.update_model(&ns, &name, &change, &p.id).await?;
    tracing::info!(
        principal = %p.id, model = %format!("{ns}/{name}"),
        revision = after.revision,
        sensitivity_before = %before.sensitivity, sensitivity_after = %after.sensitivity,
        "model metadata changed"
    );
    Ok(Json(model_view(&state, &p, after, None).await?))
}

/// `GET /v1/models/{ns}/{name}/history`: every revision, oldest first.
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}/history",
    tag = "models",
    params(super::openapi::ModelPath),
    responses(
        (status = 200, description = "Every metadata revision, oldest first", body = crate::api::ModelHistory),
        (status = 403, description = "`forbidden`: no `read` here", body = crate::api::ErrorBody),
    ),
)]
pub async fn history(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> Result<Json<crate::api::ModelHistory>, ApiError> {
    gate::admit(&p, Action::Read, &Resource::model(&ns, &name))?;
    let revisions = state.store.model_history(&ns, &name).await?;
    if revisions.is_empty() {
        return Err(ApiError::not_found(format!("model {ns}/{name} not found")));
    }
    // A key marked sensitive later is redacted in earlier revisions too.
    let current_marks = revisions
        .last()
        .map(|r| r.sensitive_fields.clone())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(revisions.len());
    for mut r in revisions {
        r.sensitive_fields.extend(current_marks.iter().cloned());
        r.sensitive_fields.sort();
        r.sensitive_fields.dedup();
        let (metadata, sensitive_fields) = visible_metadata(&state, &p, &r).await?;
        out.push(crate::api::ModelRevision {
            revision: r.revision,
            changed_by: r.changed_by,
            changed_at: r.changed_at,
            sensitivity: convert::sensitivity(r.sensitivity),
            tags: r.tags,
            metadata,
            sensitive_fields,
        });
    }
    Ok(Json(crate::api::ModelHistory { revisions: out }))
}

/// List a model's committed versions
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}/versions",
    tag = "models",
    params(super::openapi::ModelPath),
    responses(
        (status = 200, description = "Committed versions, oldest first", body = VersionList),
        (status = 403, description = "`forbidden`: no `read` here", body = crate::api::ErrorBody),
    ),
)]
pub async fn versions(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> Result<Json<VersionList>, ApiError> {
    gate::admit(&p, Action::Read, &Resource::model(&ns, &name))?;
    let versions = state.store.list_versions(&ns, &name).await?;
    Ok(Json(VersionList {
        versions: versions
            .iter()
            .map(|m| summary(VersionBrief::from(m)))
            .collect(),
    }))
}

/// Show a version: files with size and SHA-256, metadata, approvals,
/// deployments
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}/versions/{version}",
    tag = "models",
    params(super::openapi::VersionPath),
    responses(
        (status = 200, description = "The version", body = VersionDetail),
        (status = 403, description = "`forbidden`: no `read` here", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn show_version(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
) -> Result<Json<VersionDetail>, ApiError> {
    gate::admit(
        &p,
        Action::Read,
        &Resource::model(&ns, &name).version(&version),
    )?;
    let version = super::approvals::resolve_version(&state, &ns, &name, &version).await?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    Ok(Json(version_detail(&state, &p, &v).await?))
}

pub(crate) async fn version_detail(
    state: &AppState,
    p: &Principal,
    v: &VersionRef<'_>,
) -> Result<VersionDetail, ApiError> {
    let model = state
        .store
        .get_model(v.namespace, v.model)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("model {}/{} not found", v.namespace, v.model))
        })?;
    let view = state.store.show_version(v).await?;
    let (metadata, _) = visible_metadata(state, p, &model).await?;
    let mut version_sensitive_fields = view.manifest.sensitive_fields.clone();
    version_sensitive_fields.extend(state.config.metadata.sensitive_fields.iter().cloned());
    version_sensitive_fields.sort();
    version_sensitive_fields.dedup();
    let mut version_metadata = view.metadata.clone();
    if !p.can_in(Permission::ReadSensitive, v.namespace) {
        for k in &version_sensitive_fields {
            if let Some(val) = version_metadata.get_mut(k) {
                *val = REDACTED.into();
            }
        }
    }
    let approvals = super::approvals::approval_views(super::approvals::approvals(state, v).await?);
    let stage = convert::stage(state.store.stage_of(v).await?);
    let signature = state
        .store
        .version_signature(v)
        .await?
        .map(|s| crate::api::SignatureView {
            trusted: crate::gate::signature_trusted(state, v.namespace, &s),
            file: s.file,
            method: s.method,
            signer: s.signer,
            files_match: s.files_match,
            detail: s.detail,
        });
    let deployments = super::approvals::deployments(state, v)
        .await?
        .into_iter()
        .map(|d| crate::api::DeploymentView {
            version: None,
            environment: d.environment,
            deployer: d.deployer,
            time: d.time,
        })
        .collect();
    Ok(VersionDetail {
        approvals,
        deployments,
        stage,
        signature,
        namespace: view.manifest.namespace,
        model: view.manifest.model,
        version: view.manifest.version,
        sensitivity: convert::sensitivity(model.sensitivity),
        tags: model.tags,
        metadata,
        version_metadata,
        version_sensitive_fields,
        uploader: view.manifest.uploader,
        created_at: view.manifest.created_at,
        dek_generation: view.manifest.dek_generation,
        files: view
            .files
            .into_iter()
            .map(|f| crate::api::FileEntry {
                path: f.path,
                size: f.size,
                sha256: f.sha256,
            })
            .collect(),
    })
}
