//! Models and versions: create, list, show.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use modelvault_storage::{Manifest, ModelRecord, Sensitivity, VersionRef};
use serde::Deserialize;

use crate::api::{
    CreateModelRequest, ModelList, ModelView, VersionDetail, VersionList, VersionSummary,
};
use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::{ApiError, AppState};

pub(crate) fn model_view(m: ModelRecord, versions: Option<Vec<VersionSummary>>) -> ModelView {
    ModelView {
        namespace: m.namespace,
        name: m.name,
        sensitivity: m.sensitivity.to_string(),
        tags: m.tags,
        owner: m.owner,
        created_at: m.created_at,
        versions,
    }
}

fn summary(m: &Manifest) -> VersionSummary {
    VersionSummary {
        version: m.version.clone(),
        created_at: m.created_at,
        uploader: m.uploader.clone(),
        file_count: m.files.len(),
        total_size: m.files.iter().map(|f| f.size).sum(),
    }
}

/// Checks names before anything else, so a bad name is a 400 whatever the
/// caller's scope.
pub(crate) fn check_names(ns: &str, name: &str) -> Result<(), ApiError> {
    modelvault_storage::names::validate_name("namespace", ns)?;
    modelvault_storage::names::validate_name("model", name)?;
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiJson(req): ApiJson<CreateModelRequest>,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    check_names(&req.namespace, &req.name)?;
    authorize(
        &p,
        Action::Write,
        &Resource::model(&req.namespace, &req.name),
    )?;
    let sensitivity = match &req.sensitivity {
        Some(s) => s.parse::<Sensitivity>()?,
        None => Sensitivity::default(),
    };
    let m = state
        .store
        .create_model(&req.namespace, &req.name, sensitivity, req.tags, &p.id)
        .await?;
    Ok((StatusCode::CREATED, Json(model_view(m, None))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    namespace: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiQuery(q): ApiQuery<ListQuery>,
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
    let mut models = Vec::new();
    for ns in namespaces {
        for m in state.store.list_models(&ns).await? {
            models.push(model_view(m, None));
        }
    }
    Ok(Json(ModelList { models }))
}

pub async fn show(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> Result<Json<ModelView>, ApiError> {
    check_names(&ns, &name)?;
    authorize(&p, Action::Read, &Resource::model(&ns, &name))?;
    let m = state
        .store
        .get_model(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {ns}/{name} not found")))?;
    let versions = state.store.list_versions(&ns, &name).await?;
    Ok(Json(model_view(
        m,
        Some(versions.iter().map(summary).collect()),
    )))
}

pub async fn versions(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> Result<Json<VersionList>, ApiError> {
    check_names(&ns, &name)?;
    authorize(&p, Action::Read, &Resource::model(&ns, &name))?;
    let versions = state.store.list_versions(&ns, &name).await?;
    Ok(Json(VersionList {
        versions: versions.iter().map(summary).collect(),
    }))
}

pub async fn show_version(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
) -> Result<Json<VersionDetail>, ApiError> {
    check_names(&ns, &name)?;
    authorize(
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
    Ok(Json(version_detail(&state, &v).await?))
}

pub(crate) async fn version_detail(
    state: &AppState,
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
    let approvals = super::approvals::approvals(state, v)
        .await?
        .into_iter()
        .map(|a| super::ApprovalView {
            approver: a.approver,
            environment: a.environment,
            time: a.time,
        })
        .collect();
    let deployments = super::approvals::deployments(state, v)
        .await?
        .into_iter()
        .map(|d| super::DeploymentView {
            version: None,
            environment: d.environment,
            deployer: d.deployer,
            time: d.time,
        })
        .collect();
    Ok(VersionDetail {
        approvals,
        deployments,
        namespace: view.manifest.namespace,
        model: view.manifest.model,
        version: view.manifest.version,
        sensitivity: model.sensitivity.to_string(),
        tags: model.tags,
        uploader: view.manifest.uploader,
        created_at: view.manifest.created_at,
        dek_generation: view.manifest.dek_generation,
        files: view.files,
    })
}
