//! Key management (`manage-keys`): status, KEK rotation (a resumable job),
//! KEK retirement; and the crypto-shred delete of a version (`delete`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use modelvault_keys::{KekState, KekVersion};
use modelvault_storage::VersionRef;

use crate::api::{
    DeleteResponse, JobKind, JobPhase, JobState, KekStatus, KeysStatus, RetireRequest,
    RotateDekRequest,
};
use crate::authn::{Action, Authenticated, Resource, authorize};
use crate::extract::{ApiJson, ApiOptionalJson, ApiPath};
use crate::gate::{self, Decision, RequestId};
use crate::jobs::{self, JobRecord};
use crate::{ApiError, AppState};

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// KEK versions, what each wraps, and key jobs
///
/// Needs `manage-keys`.
#[utoipa::path(
    get,
    path = "/v1/keys/status",
    tag = "keys",
    responses(
        (status = 200, description = "The key status", body = KeysStatus),
        (status = 403, description = "`forbidden`: no `manage-keys`", body = crate::api::ErrorBody),
    ),
)]
pub async fn status(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<Json<KeysStatus>, ApiError> {
    authorize(&p, Action::ManageKeys, &Resource::default())?;
    let keys = state.store.keys();
    let current = keys.current_kek_version().await.map_err(internal)?;
    let mut usage = state.store.kek_usage().await?;
    if let Some(v) = modelvault_audit::signing_key_kek(&state.store)
        .await
        .map_err(internal)?
    {
        *usage.entry(v).or_insert(0) += 1;
    }
    let kek_versions = keys
        .list_kek_versions()
        .await
        .map_err(internal)?
        .into_iter()
        .map(|k| KekStatus {
            version: k.version.0,
            dek_count: usage.get(&k.version.0).copied().unwrap_or(0),
            state: match k.state {
                KekState::Active => crate::api::KekState::Active,
                KekState::Destroyed => crate::api::KekState::Destroyed,
            },
        })
        .collect();
    Ok(Json(KeysStatus {
        provider: keys
            .kind()
            .parse()
            .map_err(|e| ApiError::internal(format!("key provider: {e}")))?,
        current_kek_version: current.0,
        kek_versions,
        jobs: jobs::list(&state).await?,
    }))
}

/// `POST /v1/keys/rotate-kek`: a new KEK version becomes current; a job
/// rewraps every live key record under it. 202 with the job.
#[utoipa::path(
    post,
    path = "/v1/keys/rotate-kek",
    tag = "keys",
    responses(
        (status = 202, description = "The rotation job", body = JobRecord),
        (status = 403, description = "`forbidden`: no `manage-keys`", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: another server is creating a KEK version", body = crate::api::ErrorBody),
    ),
)]
pub async fn rotate_kek(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    authorize(&p, Action::ManageKeys, &Resource::default())?;
    let target = match state.store.keys().create_kek_version().await {
        Ok(t) => t,
        Err(e @ modelvault_keys::KeyError::Conflict(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                e.to_string(),
            ));
        }
        Err(e) => return Err(internal(e)),
    };
    let mut job = jobs::new_job(JobKind::RotateKek, &p.id);
    job.target_kek = Some(target.0);
    jobs::save(&state, &job).await?;
    tracing::info!(job = %job.id, kek_version = target.0, by = %p.id, "KEK rotation started");
    jobs::spawn(state.clone(), job.clone());
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// `POST /v1/models/{ns}/{name}/versions/{version}/rotate-dek`: a job
/// gives the version a new DEK generation, re-encrypts its blobs under new
/// object keys, switches with a conditional manifest write and deletes the
/// old blobs after `keys.dek_rotation_grace_secs`. 202 with the job; 409
/// `job_running` while another rotation of the version runs.
#[utoipa::path(
    post,
    path = "/v1/models/{ns}/{name}/versions/{version}/rotate-dek",
    tag = "keys",
    params(super::openapi::VersionPath),
    request_body(content = Option<RotateDekRequest>, content_type = "application/json", description = "Optional; none or `{}` is a plain rotation"),
    responses(
        (status = 202, description = "The rotation job", body = JobRecord),
        (status = 403, description = "`forbidden`: no `manage-keys` here", body = crate::api::ErrorBody),
        (status = 409, description = "`job_running`: a DEK rotation of the version is running", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn rotate_dek(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
    ApiOptionalJson(req): ApiOptionalJson<RotateDekRequest>,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    gate::admit(
        &p,
        Action::ManageKeys,
        &Resource::model(&ns, &name).version(&version),
    )?;
    let version = super::approvals::resolve_version(&state, &ns, &name, &version).await?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    let label = v.to_string();
    if let Some(j) = jobs::list(&state).await?.into_iter().find(|j| {
        j.kind == JobKind::RotateDek
            && j.state == JobState::Running
            && j.version.as_deref() == Some(&label)
    }) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_running",
            format!("a DEK rotation of {label} is running (job {})", j.id),
        ));
    }
    let target = state.store.next_dek_generation(&v).await?;
    crate::audit::note_version(&version);
    let mut job = jobs::new_job(JobKind::RotateDek, &p.id);
    job.version = Some(label);
    job.target_generation = Some(target);
    job.phase = Some(JobPhase::ReEncrypting);
    job.complete = req.complete;
    jobs::save(&state, &job).await?;
    tracing::info!(job = %job.id, version = %v, generation = target, complete = req.complete, by = %p.id, "DEK rotation started");
    jobs::spawn(state.clone(), job.clone());
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// One key job
#[utoipa::path(
    get,
    path = "/v1/keys/jobs/{id}",
    tag = "keys",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 403, description = "`forbidden`: no `manage-keys` for the job's scope", body = crate::api::ErrorBody),
    ),
)]
pub async fn job(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobRecord>, ApiError> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::bad_request("invalid job id"));
    }
    // A job about one version is visible to whoever may manage keys in its
    // namespace (who may start it); other jobs need manage-keys globally.
    let job = jobs::load(&state, &id).await?;
    let about = job
        .as_ref()
        .and_then(|j| j.version.as_deref())
        .and_then(jobs::parse_version);
    let scope = match &about {
        Some((ns, model, version)) => Resource::model(ns, model).version(version),
        None => Resource::default(),
    };
    authorize(&p, Action::ManageKeys, &scope)?;
    job.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))
}

/// Destroys a KEK version in the provider, refused while it is current or
/// any live key record still uses it.
#[utoipa::path(
    post,
    path = "/v1/keys/retire-kek",
    tag = "keys",
    request_body = RetireRequest,
    responses(
        (status = 200, description = "The key status after the retirement", body = KeysStatus),
        (status = 403, description = "`forbidden`: no `manage-keys`", body = crate::api::ErrorBody),
        (status = 404, description = "`not_found`: no such KEK version", body = crate::api::ErrorBody),
        (status = 409, description = "`kek_in_use`: the version is current or still wraps live keys", body = crate::api::ErrorBody),
    ),
)]
pub async fn retire_kek(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiJson(req): ApiJson<RetireRequest>,
) -> Result<Json<KeysStatus>, ApiError> {
    authorize(&p, Action::ManageKeys, &Resource::default())?;
    retire_checked(&state, req.version, None).await?;
    tracing::info!(kek_version = req.version, by = %p.id, "KEK version retired");
    status(State(state), Authenticated(p)).await
}

/// Destroys KEK version `version` in the provider unless it is current,
/// unknown, used by a live (newest) key record or the audit signing key,
/// or wraps a key record of a version whose DEK rotation is running (other
/// than `own_job`, a complete DEK rotation retiring the versions that
/// wrapped its own old generations).
pub(crate) async fn retire_checked(
    state: &AppState,
    version: u32,
    own_job: Option<&str>,
) -> Result<(), ApiError> {
    let keys = state.store.keys();
    let current = keys.current_kek_version().await.map_err(internal)?;
    if current.0 == version {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "kek_in_use",
            format!("KEK version {version} is current; run rotate-kek first"),
        ));
    }
    let known = keys.list_kek_versions().await.map_err(internal)?;
    if !known.iter().any(|k| k.version.0 == version) {
        return Err(ApiError::not_found(format!(
            "KEK version {version} not found"
        )));
    }
    let mut usage = state.store.kek_usage().await?;
    if let Some(v) = modelvault_audit::signing_key_kek(&state.store)
        .await
        .map_err(internal)?
    {
        *usage.entry(v).or_insert(0) += 1;
    }
    // A DEK rotation in its grace period still serves the old generation,
    // whose key record the newest-record count above does not see.
    for j in jobs::list(state).await? {
        if j.kind != JobKind::RotateDek
            || j.state != JobState::Running
            || Some(j.id.as_str()) == own_job
        {
            continue;
        }
        let Some((ns, model, label)) = j.version.as_deref().and_then(jobs::parse_version) else {
            continue;
        };
        let used = state
            .store
            .kek_versions_of(&modelvault_storage::VersionRef {
                namespace: &ns,
                model: &model,
                version: &label,
            })
            .await?;
        if used.contains(&version) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "kek_in_use",
                format!(
                    "the DEK rotation of {ns}/{model}@{label} (job {}) still serves keys wrapped by KEK version {}; retry after it ends",
                    j.id, version
                ),
            ));
        }
    }
    if let Some(n) = usage.get(&version).filter(|n| **n > 0) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "kek_in_use",
            format!(
                "{n} live key record(s) still use KEK version {}; run rotate-kek first",
                version
            ),
        ));
    }
    keys.destroy_kek_version(KekVersion(version))
        .await
        .map_err(internal)?;
    Ok(())
}

/// Delete a version (crypto-shred)
///
/// Destroys its key records and blobs; needs `delete` and an allow from
/// the policy chain.
#[utoipa::path(
    delete,
    path = "/v1/models/{ns}/{name}/versions/{version}",
    tag = "keys",
    params(super::openapi::VersionPath),
    responses(
        (status = 200, description = "What was destroyed", body = DeleteResponse),
        (status = 403, description = "`forbidden` or `policy_denied`", body = crate::api::ErrorBody),
        (status = 409, description = "`conflict`: the version is being changed", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: already deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn delete_version(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
    request_id: RequestId,
) -> Result<Json<DeleteResponse>, ApiError> {
    let admitted = gate::version(&p, Action::Delete, &ns, &name, &version, None)?;
    // A concrete name only: `latest` and `deployed-*` are refused here.
    modelvault_storage::names::validate_version(&version)?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    admitted
        .decide(
            &state,
            Decision::on_version(modelvault_policy::PolicyAction::Delete),
            &request_id,
        )
        .await?;
    let plan = state.store.shred_plan(&v).await?;
    // The shred record is durable before anything is destroyed.
    if let Some(audit) = &state.audit {
        let mut rec = modelvault_audit::AuditRecord::new("shred", "delete", "allowed");
        rec.request_id = Some(request_id.0.clone());
        rec.principal = Some(crate::audit::principal_ref(&p));
        rec.resource = Some(modelvault_audit::ResourceRef {
            namespace: Some(ns.clone()),
            model: Some(name.clone()),
            version: Some(version.clone()),
            ..Default::default()
        });
        rec.keys = plan
            .wraps
            .iter()
            .map(|(k, g)| modelvault_audit::KeyRef {
                kek_version: Some(*k),
                dek_generation: Some(*g),
            })
            .collect();
        rec.detail = serde_json::to_string(&plan.blob_sha256).ok();
        audit.durable(rec).await.map_err(|e| {
            tracing::error!(error = %e, "shred record not written; refusing the delete");
            crate::audit::unavailable()
        })?;
    }
    let mut job = jobs::new_job(JobKind::Delete, &p.id);
    job.version = Some(v.to_string());
    job.total = 1;
    jobs::save(&state, &job).await?;
    state.store.shred(&v, &p.id).await?;
    job.done = 1;
    job.state = JobState::Done;
    jobs::save(&state, &job).await?;
    let destroyed: Vec<u32> = state
        .store
        .keys()
        .list_kek_versions()
        .await
        .map_err(internal)?
        .into_iter()
        .filter(|k| k.state == KekState::Destroyed)
        .map(|k| k.version.0)
        .collect();
    tracing::info!(version = %v, by = %p.id, "version crypto-shredded");
    Ok(Json(DeleteResponse {
        deleted: v.to_string(),
        blobs_deleted: plan.blobs.len(),
        kek_versions_outstanding: plan
            .kek_versions
            .into_iter()
            .filter(|k| !destroyed.contains(k))
            .collect(),
    }))
}
