//! Key-management jobs (`manage-keys`): KEK rotation, DEK rotation of a
//! version and version delete,
//! run in the server, recorded in the store so any server can show them and
//! a job interrupted by a crash resumes when a server starts again.
//!
//! Invariants a reader must keep:
//! - a job's state is a series of authenticated records under
//!   `jobs/<id>/`; the newest wins; progress is appended as it goes;
//! - every step a job takes is idempotent (rewrap skips records already
//!   under the target KEK; a DEK rotation resumes from what the store holds;
//!   delete continues from its tombstone), so running
//!   a job twice, or from two servers at once, is safe;
//! - named failpoints (`MODELVAULT_FAILPOINTS`, only in builds with the
//!   storage crate's `test-hooks` feature) let tests kill the server mid-job.

use chrono::Utc;
use modelvault_api::{JobKind, JobPhase, JobState};
use modelvault_storage::{StorageError, VersionRef, failpoint};

use crate::AppState;

/// One job, as stored and shown: the API's job view (the stored record
/// is the JSON the API shows).
pub use modelvault_api::JobView as JobRecord;

/// Appends the job's next record.
pub async fn save(state: &AppState, job: &JobRecord) -> Result<(), StorageError> {
    let mut j = job.clone();
    j.updated_at = Utc::now();
    state.store.job(&job.id).append(|_| j.clone()).await?;
    Ok(())
}

/// The newest record of a job.
pub async fn load(state: &AppState, id: &str) -> Result<Option<JobRecord>, StorageError> {
    Ok(state
        .store
        .job(id)
        .latest::<JobRecord>()
        .await?
        .map(|(_, j)| j))
}

/// Every job, newest first.
pub async fn list(state: &AppState) -> Result<Vec<JobRecord>, StorageError> {
    let mut out = Vec::new();
    for id in state.store.job_ids().await? {
        if let Some(j) = load(state, &id).await? {
            out.push(j);
        }
    }
    out.sort_by_key(|j| std::cmp::Reverse(j.started_at));
    Ok(out)
}

/// A new job record (not yet saved).
pub fn new_job(kind: JobKind, by: &str) -> JobRecord {
    let now = Utc::now();
    JobRecord {
        id: uuid::Uuid::now_v7().to_string(),
        kind,
        state: JobState::Running,
        target_kek: None,
        version: None,
        target_generation: None,
        phase: None,
        switched_at: None,
        cleanup_after: None,
        done: 0,
        total: 0,
        started_by: by.into(),
        started_at: now,
        updated_at: now,
        error: None,
        complete: false,
        retired_keks: Vec::new(),
    }
}

/// Runs a job to its end in the background, recording the outcome.
pub fn spawn(state: AppState, job: JobRecord) {
    tokio::spawn(async move {
        let mut job = job;
        let result = match job.kind {
            JobKind::RotateKek => rotate_kek(&state, &mut job).await,
            JobKind::Delete => delete(&state, &mut job).await,
            JobKind::RotateDek => rotate_dek(&state, &mut job).await,
        };
        match result {
            Ok(()) => job.state = JobState::Done,
            Err(e) => {
                tracing::error!(job = %job.id, kind = %job.kind, error = %e, "key job failed");
                job.state = JobState::Failed;
                job.error = Some(e);
            }
        }
        if let Err(e) = save(&state, &job).await {
            tracing::error!(job = %job.id, error = %e, "could not record the job's end");
        }
        tracing::info!(job = %job.id, kind = %job.kind, state = %job.state, "key job ended");
    });
}

/// Resumes every job still marked running (after a crash).
pub async fn resume_all(state: &AppState) {
    match list(state).await {
        Ok(jobs) => {
            for j in jobs.into_iter().filter(|j| j.state == JobState::Running) {
                tracing::info!(job = %j.id, kind = %j.kind, "resuming key job");
                spawn(state.clone(), j);
            }
        }
        Err(e) => tracing::error!(error = %e, "could not list key jobs to resume"),
    }
}

async fn rotate_kek(state: &AppState, job: &mut JobRecord) -> Result<(), String> {
    let target = job.target_kek.ok_or("rotation without a target KEK")?;
    let dirs = state.store.key_dirs().await.map_err(|e| e.to_string())?;
    job.total = dirs.len() as u64 + 1;
    job.done = 0;
    for k in &dirs {
        state
            .store
            .rewrap(k, modelvault_keys::KekVersion(target))
            .await
            .map_err(|e| format!("{}: {e}", k.dir))?;
        job.done += 1;
        failpoint("rotate-kek-after-rewrap");
        if job.done.is_multiple_of(25) {
            save(state, job).await.map_err(|e| e.to_string())?;
        }
    }
    modelvault_audit::rewrap_signing_key(&state.store, target)
        .await
        .map_err(|e| e.to_string())?;
    job.done += 1;
    Ok(())
}

/// DEK rotation of one version: prepare the new generation's key record,
/// re-encrypt and switch, then keep the old blobs for the grace period
/// (downloads and presigned URLs in flight) and delete them. Each step is
/// idempotent; a resumed job skips to where the store says it is.
async fn rotate_dek(state: &AppState, job: &mut JobRecord) -> Result<(), String> {
    match rotate_dek_steps(state, job).await {
        // Deleted meanwhile: its keys and blobs are destroyed, nothing is
        // left to rotate or clean.
        Err(StorageError::Gone(v)) => {
            tracing::info!(version = %v, "version deleted during its DEK rotation");
            job.phase = Some(JobPhase::Done);
            Ok(())
        }
        Ok(()) if job.complete => {
            complete_dek_rotation(state, job).await?;
            job.phase = Some(JobPhase::Done);
            Ok(())
        }
        Ok(()) => {
            job.phase = Some(JobPhase::Done);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The `--complete` part of a DEK rotation, after its cleanup: a new KEK
/// version (recorded in the job before use, so a resumed job reuses it)
/// rewraps every live key record, then every older KEK version that
/// wrapped a key record of the version is retired, as `delete --complete`
/// does for a deleted version. The revoked generations' key records stay
/// in the bucket (and in copies of it) but nothing can unwrap them any
/// more, so a rollback of the version to one of them fails closed.
async fn complete_dek_rotation(state: &AppState, job: &mut JobRecord) -> Result<(), String> {
    let (ns, model, version) = job
        .version
        .as_deref()
        .and_then(parse_version)
        .ok_or("DEK rotation without a version")?;
    let target = match job.target_kek {
        Some(t) => t,
        None => {
            let t = state
                .store
                .keys()
                .create_kek_version()
                .await
                .map_err(|e| format!("rotating the KEK: {e}"))?;
            job.target_kek = Some(t.0);
            t.0
        }
    };
    job.phase = Some(JobPhase::RotatingKek);
    save(state, job).await.map_err(|e| e.to_string())?;
    tracing::info!(job = %job.id, kek_version = target, "complete DEK rotation: rotating the KEK");
    for k in &state.store.key_dirs().await.map_err(|e| e.to_string())? {
        state
            .store
            .rewrap(k, modelvault_keys::KekVersion(target))
            .await
            .map_err(|e| format!("{}: {e}", k.dir))?;
    }
    modelvault_audit::rewrap_signing_key(&state.store, target)
        .await
        .map_err(|e| e.to_string())?;
    failpoint("rotate-dek-complete-after-rewrap");
    job.phase = Some(JobPhase::Retiring);
    save(state, job).await.map_err(|e| e.to_string())?;
    let destroyed: Vec<u32> = state
        .store
        .keys()
        .list_kek_versions()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|k| k.state == modelvault_keys::KekState::Destroyed)
        .map(|k| k.version.0)
        .collect();
    let used = state
        .store
        .kek_versions_of(&VersionRef {
            namespace: &ns,
            model: &model,
            version: &version,
        })
        .await
        .map_err(|e| e.to_string())?;
    for kek in used.into_iter().filter(|k| *k < target) {
        if destroyed.contains(&kek) {
            continue;
        }
        crate::routes::retire_checked(state, kek, Some(&job.id))
            .await
            .map_err(|e| {
                format!(
                    "the DEK rotation switched and cleaned up, but KEK version {kek} could not be retired ({}); retire it with `keys retire-kek {kek}` once that is resolved",
                    e.message
                )
            })?;
        tracing::info!(job = %job.id, kek_version = kek, "KEK version retired by a complete DEK rotation");
        job.retired_keks.push(kek);
    }
    Ok(())
}

async fn rotate_dek_steps(state: &AppState, job: &mut JobRecord) -> Result<(), StorageError> {
    let bad = |m: &str| StorageError::InvalidInput(m.to_string());
    let (ns, model, version) = job
        .version
        .as_deref()
        .and_then(parse_version)
        .ok_or_else(|| bad("DEK rotation without a version"))?;
    let v = VersionRef {
        namespace: &ns,
        model: &model,
        version: &version,
    };
    let target = job
        .target_generation
        .ok_or_else(|| bad("DEK rotation without a target generation"))?;
    if job.switched_at.is_none() {
        job.phase = Some(JobPhase::ReEncrypting);
        state.store.prepare_dek_rotation(&v, target).await?;
        failpoint("rotate-dek-after-prepare");
        // Progress is recorded as files finish (at most twice a second), so
        // `keys status` and a waiting CLI see a long re-encryption move.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        let saver = {
            let mut shown = job.clone();
            async move {
                let mut last: Option<std::time::Instant> = None;
                while let Some((d, t)) = rx.recv().await {
                    shown.done = d;
                    shown.total = t;
                    if last.is_none_or(|l| l.elapsed() >= std::time::Duration::from_millis(500)) {
                        if let Err(e) = save(state, &shown).await {
                            tracing::warn!(job = %shown.id, error = %e, "could not record progress");
                        }
                        last = Some(std::time::Instant::now());
                    }
                }
                (shown.done, shown.total)
            }
        };
        let (manifest, (done, total)) = tokio::join!(
            state.store.reencrypt_and_switch(&v, target, move |d, t| {
                let _ = tx.send((d, t));
            }),
            saver
        );
        let manifest = manifest?;
        let now = Utc::now();
        let grace = chrono::Duration::seconds(
            i64::try_from(state.config.keys.dek_rotation_grace_secs).unwrap_or(i64::MAX / 2),
        );
        job.done = done.max(manifest.files.len() as u64);
        job.total = total.max(manifest.files.len() as u64);
        job.switched_at = Some(now);
        job.cleanup_after = Some(now + grace);
        job.phase = Some(JobPhase::Grace);
        save(state, job).await?;
        tracing::info!(version = %v, generation = target, "DEK rotation switched");
        failpoint("rotate-dek-after-switch");
    }
    if let Some(after) = job.cleanup_after {
        let wait = (after - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
    }
    job.phase = Some(JobPhase::Cleanup);
    save(state, job).await?;
    let deleted = state.store.finish_dek_rotation(&v, target).await?;
    tracing::info!(version = %v, generation = target, blobs_deleted = deleted, "DEK rotation finished");
    Ok(())
}

/// Parses `ns/model@version`.
pub fn parse_version(s: &str) -> Option<(String, String, String)> {
    let (m, v) = s.split_once('@')?;
    let (ns, model) = m.split_once('/')?;
    Some((ns.into(), model.into(), v.into()))
}

async fn delete(state: &AppState, job: &mut JobRecord) -> Result<(), String> {
    let (ns, model, version) = job
        .version
        .as_deref()
        .and_then(parse_version)
        .ok_or("delete without a version")?;
    let v = VersionRef {
        namespace: &ns,
        model: &model,
        version: &version,
    };
    job.total = 1;
    state
        .store
        .shred(&v, &job.started_by)
        .await
        .map_err(|e| e.to_string())?;
    job.done = 1;
    Ok(())
}
