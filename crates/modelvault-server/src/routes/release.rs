//! Sealed key release to a workload (`key-release`) and the raw ciphertext
//! route it points at on stores that cannot presign.
//!
//! Invariants: the release runs the RBAC gate, the policy chain (action
//! `key-release`) and writes its intent record durably before the sealed
//! DEK leaves; off loopback it is refused without TLS; the DEK is sealed to
//! the client's key with the release context as HPKE info and never leaves
//! in any other form.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt as _;
use modelvault_storage::VersionRef;

use crate::api::{KeyReleaseRequest, KeyReleaseResponse, ReleasedFile};
use crate::authn::{Action, Authenticated};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate::{self, Decision, RequestId};
use crate::{ApiError, AppState};

/// Key release off loopback needs TLS.
fn check_transport(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<(), ApiError> {
    let _ = headers;
    let loopback = peer.is_some_and(|ip| ip.is_loopback());
    if state.tls || loopback {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tls_required",
            "key release off loopback requires TLS",
        ))
    }
}

/// Release a version's DEK sealed to the client's key (HPKE)
///
/// Needs `key-release`, an allow from the policy chain, and TLS off
/// loopback.
#[utoipa::path(
    post,
    path = "/v1/models/{ns}/{name}/versions/{version}/key-release",
    tag = "release",
    params(super::openapi::VersionPath),
    request_body = KeyReleaseRequest,
    responses(
        (status = 200, description = "The sealed DEK and where each file's ciphertext is", body = KeyReleaseResponse),
        (status = 403, description = "`forbidden`, `policy_denied` or `tls_required`", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn release(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    request_id: RequestId,
    ApiJson(req): ApiJson<KeyReleaseRequest>,
) -> Result<(HeaderMap, Json<KeyReleaseResponse>), ApiError> {
    let admitted = gate::version(&p, Action::KeyRelease, &ns, &name, &version, None)?;
    check_transport(&state, &headers, Some(peer.ip()))?;
    let public_key = B64
        .decode(req.public_key.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| ApiError::bad_request("public_key must be 32 bytes of X25519, base64"))?;
    // Resolved, loaded and decided on (policy action `key-release`).
    let gate::Allowed {
        version, manifest, ..
    } = admitted
        .decide(
            &state,
            Decision::on_version(modelvault_policy::PolicyAction::KeyRelease),
            &request_id,
        )
        .await?;
    let RequestId(rid) = request_id;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    crate::audit::note_version(&version);
    // One manifest for the whole answer, the one the gate decided on, and
    // one unwrap of the DEK of exactly its generation (a DEK rotation that
    // switched meanwhile keeps the old generation's blobs through its
    // grace period).
    let (view, key) = state.store.version_view_of(&v, manifest).await?;
    let generation = key.generation();
    let kek = key.kek_version();
    let dek = key.dek();
    let ctx = modelvault_release::ReleaseContext {
        request_id: &rid,
        namespace: &ns,
        model: &name,
        version: &version,
        dek_generation: generation,
    };
    // Seal (encapsulate to the client's key) before the intent: a key HPKE
    // refuses (a low-order X25519 point) is a 400 that leaves no intent
    // behind. Nothing leaves before the intent is stored.
    let sealed = modelvault_release::seal(&public_key, dek, &ctx).map_err(|e| {
        ApiError::bad_request(format!(
            "public_key is not a usable X25519 public key ({e})"
        ))
    })?;
    drop(key); // The DEK is wiped here.
    // Durable intent before the sealed key leaves.
    let intent = crate::audit::Intent {
        principal: &p,
        action: "key-release",
        resource: modelvault_audit::ResourceRef {
            namespace: Some(ns.clone()),
            model: Some(name.clone()),
            version: Some(version.clone()),
            ..Default::default()
        },
        keys: vec![modelvault_audit::KeyRef {
            kek_version: Some(kek.0),
            dek_generation: Some(generation),
        }],
        request_id: &rid,
    };
    let intent_seq = crate::audit::intent(&state, &intent).await?;
    // From here on every outcome completes the intent: an error after it is
    // an aborted completion, never an open intent.
    let files = match released_files(&state, &view, &v, generation).await {
        Ok(f) => f,
        Err(e) => {
            crate::audit::completion(&state, intent_seq, rid.clone(), "key-release", 0, false);
            return Err(e);
        }
    };
    let manifest_sha256 = modelvault_audit::manifest_digest(
        view.files
            .iter()
            .map(|f| (f.path.as_str(), f.sha256.as_str())),
    );
    let receipt = crate::audit::receipt(
        &state,
        &intent,
        intent_seq,
        crate::audit::ReceiptFacts {
            manifest_sha256,
            file_sha256: None,
        },
    );
    state.metrics.key_releases.inc();
    crate::audit::completion(&state, intent_seq, rid.clone(), "key-release", 0, true);
    let mut headers = HeaderMap::new();
    if let Some(r) = &receipt {
        headers.insert(modelvault_audit::RECEIPT_HEADER, r.clone());
    }
    let receipt = receipt.and_then(|r| r.to_str().ok().map(str::to_string));
    Ok((
        headers,
        Json(KeyReleaseResponse {
            request_id: rid,
            suite: modelvault_release::SUITE.into(),
            namespace: ns.clone(),
            model: name.clone(),
            version: version.clone(),
            dek_generation: generation,
            kek_version: kek.0,
            enc: B64.encode(&sealed.enc),
            sealed_dek: B64.encode(&sealed.ciphertext),
            files,
            receipt,
        }),
    ))
}

/// Where each file of the released manifest is read (presigned on S3, the
/// ciphertext route otherwise).
async fn released_files(
    state: &AppState,
    view: &modelvault_storage::VersionView,
    v: &VersionRef<'_>,
    generation: u32,
) -> Result<Vec<ReleasedFile>, ApiError> {
    let (ns, name, version) = (v.namespace, v.model, v.version);
    let manifest = &view.manifest;
    let presign = std::time::Duration::from_secs(state.config.keys.presign_secs);
    let mut files = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let sha256 = view
            .files
            .iter()
            .find(|e| e.path == f.path)
            .map(|e| e.sha256.clone())
            .unwrap_or_default();
        let blob = object_store::path::Path::parse(&f.blob)
            .map_err(|_| ApiError::internal("bad blob key"))?;
        let (url, presigned, expires_at) = match state.store.presigned_get(&blob, presign).await? {
            Some(u) => (
                u.to_string(),
                true,
                Some(chrono::Utc::now() + chrono::Duration::seconds(presign.as_secs() as i64)),
            ),
            None => (
                format!(
                    "{}?generation={generation}",
                    modelvault_api::paths::version_ciphertext(ns, name, version, &f.path)
                ),
                false,
                None,
            ),
        };
        files.push(ReleasedFile {
            path: f.path.clone(),
            size: f.size,
            sha256,
            ciphertext_size: f.ciphertext_size,
            salt: f.salt.clone(),
            url,
            presigned,
            expires_at,
        });
    }
    Ok(files)
}

/// `GET .../ciphertext/{path}`: the stored ciphertext of one file, as is
/// (local stores; S3 stores hand out presigned URLs instead). Same gate as
/// key release; worthless without a released DEK.
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}/versions/{version}/ciphertext/{path}",
    tag = "release",
    params(super::openapi::FilePath, crate::api::CiphertextQuery),
    responses(
        (status = 200, description = "The stored ciphertext, as is", content_type = "application/octet-stream", body = inline(super::openapi::RawBytes)),
        (status = 403, description = "`forbidden`, `policy_denied` or `tls_required`", body = crate::api::ErrorBody),
        (status = 410, description = "`gone` (version deleted) or `rotated` (that DEK generation's blobs are gone)", body = crate::api::ErrorBody),
    ),
)]
pub async fn ciphertext(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version, path)): ApiPath<(String, String, String, String)>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    request_id: RequestId,
    ApiQuery(q): ApiQuery<crate::api::CiphertextQuery>,
) -> Result<Response, ApiError> {
    let admitted = gate::version(&p, Action::KeyRelease, &ns, &name, &version, Some(&path))?;
    check_transport(&state, &headers, Some(peer.ip()))?;
    // Any spelling of a name finds the file stored under its NFC form.
    let path = modelvault_storage::names::lookup_file_path(&path)?;
    let decision = Decision {
        action: modelvault_policy::PolicyAction::KeyRelease,
        file: Some(&path),
        environment: None,
        approval_kind: None,
    };
    let gate::Allowed {
        version, manifest, ..
    } = admitted.decide(&state, decision, &request_id).await?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    // A release names its DEK generation: while a DEK rotation's grace
    // period lasts, a release from before the switch still reads the blobs
    // its DEK opens; afterwards they are gone (410).
    let rotated_out = |g: u32| {
        ApiError::new(
            StatusCode::GONE,
            "rotated",
            format!("DEK generation {g} of {v} was rotated out; request a new key release"),
        )
    };
    let current = manifest.dek_generation;
    let manifest = match q.generation {
        Some(g) if g != manifest.dek_generation => {
            if g > manifest.dek_generation {
                return Err(ApiError::not_found(format!(
                    "{v} has no DEK generation {g}"
                )));
            }
            state
                .store
                .manifest_of_generation(&v, g)
                .await?
                .ok_or_else(|| rotated_out(g))?
        }
        _ => manifest,
    };
    let entry = manifest
        .files
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| ApiError::not_found(format!("file {path} not found")))?;
    let stream = match state.store.ciphertext(&entry.blob).await? {
        Some(s) => s,
        None if manifest.dek_generation != current => {
            return Err(rotated_out(manifest.dek_generation));
        }
        None => {
            return Err(ApiError::internal(format!(
                "blob {} is missing",
                entry.blob
            )));
        }
    };
    let stream = stream.map(|r| r.map_err(std::io::Error::other));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut().insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(entry.ciphertext_size),
    );
    Ok(resp)
}
