//! Upload into a draft, commit, and the decrypting download with `Range`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use modelvault_auth::Principal;
use modelvault_storage::{StorageError, VersionRef};

use super::models::version_detail;
use crate::api::{CommitRequest, UploadList, UploadResponse, VersionDetail};
use crate::authn::{Action, Authenticated, Resource};
use crate::extract::{ApiJson, ApiPath};
use crate::gate::{self, Decision, RequestId};
use crate::{ApiError, AppState};

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("file exceeds the server's limit of {max} bytes"),
    )
}

/// Upload one file into a draft version
///
/// The body is the file's bytes (streamed, any length up to
/// `server.max_file_bytes`). Needs `write`.
#[utoipa::path(
    put,
    path = "/v1/models/{ns}/{name}/versions/{version}/files/{path}",
    tag = "files",
    params(super::openapi::FilePath),
    request_body(content = inline(super::openapi::RawBytes), content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, description = "Stored, encrypted", body = UploadResponse),
        (status = 403, description = "`forbidden`: no `write` here", body = crate::api::ErrorBody),
        (status = 409, description = "`version_committed`: the version is committed and immutable", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn upload(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version, path)): ApiPath<(String, String, String, String)>,
    req: Request,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    gate::admit(
        &p,
        Action::Write,
        &Resource::model(&ns, &name).version(&version).path(&path),
    )?;
    modelvault_storage::names::validate_version(&version)?;
    // The stored spelling (NFC), checked: two spellings are one file.
    let path = modelvault_storage::names::normalize_file_path(&path)?;
    let max = state.config.server.max_file_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    // Count as we go: a chunked body may not declare its length.
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    // A client that stops sending mid-upload: 408, nothing stored.
    let stalled = Arc::new(AtomicBool::new(false));
    let stall = stalled.clone();
    let mut seen = 0u64;
    let body = req.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| {
            if crate::conn::BodyStalled::find(&e).is_some() {
                stall.store(true, Ordering::Relaxed);
            }
            e.to_string()
        })?;
        seen += chunk.len() as u64;
        if seen > max {
            flag.store(true, Ordering::Relaxed);
            return Err("body exceeds the size limit".to_string());
        }
        Ok(chunk)
    });
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    let modelvault_storage::UploadReceipt { record, sha256 } = match state
        .store
        .upload_file(&v, &path, Box::pin(body), &p.id)
        .await
    {
        Ok(r) => r,
        Err(_) if exceeded.load(Ordering::Relaxed) => return Err(too_large(max)),
        Err(_) if stalled.load(Ordering::Relaxed) => {
            return Err(crate::conn::BodyStalled(Duration::from_secs(
                state.config.server.receive_timeout_secs,
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok((
        StatusCode::CREATED,
        Json(UploadResponse {
            path: record.path,
            size: record.size,
            sha256,
            upload_id: record.upload_id,
        }),
    ))
}

/// What a draft version holds so far
///
/// The newest whole upload of each path with its size and SHA-256, so a
/// push that was interrupted uploads only what is missing. Needs `write`.
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}/versions/{version}/uploads",
    tag = "files",
    params(super::openapi::VersionPath),
    responses(
        (status = 200, description = "The draft's uploads (empty when nothing was uploaded)", body = UploadList),
        (status = 403, description = "`forbidden`: no `write` here", body = crate::api::ErrorBody),
        (status = 404, description = "`not_found`: no such model, or outside the caller's namespaces", body = crate::api::ErrorBody),
        (status = 409, description = "`version_committed`: the version is committed", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn uploads(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
) -> Result<Json<UploadList>, ApiError> {
    gate::admit(
        &p,
        Action::Write,
        &Resource::model(&ns, &name).version(&version),
    )?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    let files = state
        .store
        .draft_uploads(&v)
        .await?
        .into_iter()
        .map(|f| crate::api::FileEntry {
            path: f.path,
            size: f.size,
            sha256: f.sha256,
        })
        .collect();
    Ok(Json(UploadList { files }))
}

/// Commit a draft version
///
/// Lists every file with its size and SHA-256; the version becomes
/// immutable. Needs `write`.
#[utoipa::path(
    post,
    path = "/v1/models/{ns}/{name}/versions/{version}/commit",
    tag = "files",
    params(super::openapi::VersionPath),
    request_body = CommitRequest,
    responses(
        (status = 201, description = "The committed version", body = VersionDetail),
        (status = 403, description = "`forbidden`: no `write` here", body = crate::api::ErrorBody),
        (status = 409, description = "`version_committed`, `commit_mismatch` or `already_exists`", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
    ),
)]
pub async fn commit(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version)): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<(StatusCode, Json<VersionDetail>), ApiError> {
    gate::admit(
        &p,
        Action::Write,
        &Resource::model(&ns, &name).version(&version),
    )?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    let mut sensitive = req.sensitive_fields;
    sensitive.extend(state.config.metadata.sensitive_fields.iter().cloned());
    let files: Vec<modelvault_storage::CommitFile> = req
        .files
        .into_iter()
        .map(|f| modelvault_storage::CommitFile {
            path: f.path,
            size: f.size,
            sha256: f.sha256,
        })
        .collect();
    let manifest = state
        .store
        .commit_with(&v, &files, &p.id, req.metadata, &sensitive)
        .await?;
    record_signature(&state, &v, manifest).await?;
    Ok((
        StatusCode::CREATED,
        Json(version_detail(&state, &p, &v).await?),
    ))
}

/// Largest signature file read (a model-signing bundle is a few KiB).
const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

/// Verifies the model signature a version carries (its
/// `model_signing.signature_file`) and records the verdict beside it, once:
/// a commit retried after it landed finds the record there. A version
/// without the file gets no record; a file that does not verify gets a
/// record saying so (the commit stands, policies decide).
async fn record_signature(
    state: &AppState,
    v: &VersionRef<'_>,
    manifest: modelvault_storage::Manifest,
) -> Result<(), ApiError> {
    // The name as stored paths are spelled (Unicode NFC).
    let name =
        modelvault_storage::names::lookup_file_path(&state.config.model_signing.signature_file)?;
    let Some(entry) = manifest.files.iter().find(|f| f.path == name) else {
        return Ok(());
    };
    if state.store.version_signature(v).await?.is_some() {
        return Ok(());
    }
    let verdict = if entry.size > MAX_SIGNATURE_BYTES {
        crate::model_signing::Verdict {
            method: "key".into(),
            signer: String::new(),
            signer_key: String::new(),
            trusted: false,
            files_match: false,
            detail: format!("{name} is larger than {MAX_SIGNATURE_BYTES} bytes"),
        }
    } else {
        let reader = state.store.open_file_in(v, &manifest, &name).await?;
        let mut bundle = Vec::with_capacity(entry.size as usize);
        let mut chunks = reader.read_range(0..entry.size);
        while let Some(chunk) = chunks.next().await {
            bundle.extend_from_slice(&chunk?);
        }
        let (view, _key) = state.store.version_view_of(v, manifest).await?;
        let digests = view.files.into_iter().map(|f| (f.path, f.sha256)).collect();
        crate::model_signing::verify(&bundle, &name, v.namespace, &digests, &state.signers)
    };
    tracing::info!(version = %v, signer = %verdict.signer, trusted = verdict.trusted, files_match = verdict.files_match, detail = %verdict.detail, "model signature verified at commit");
    let record = modelvault_storage::VersionSignature {
        version: v.to_string(),
        file: name,
        method: verdict.method,
        signer: verdict.signer,
        signer_key: verdict.signer_key,
        trusted: verdict.trusted,
        files_match: verdict.files_match,
        detail: verdict.detail,
    };
    match state.store.put_version_signature(v, &record).await {
        Ok(()) | Err(modelvault_storage::StorageError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a download's completion record when its body is dropped: at the
/// end (complete) or when the client goes away or a segment fails
/// (aborted).
struct CompletionGuard {
    state: AppState,
    intent_seq: Option<u64>,
    request_id: String,
    served: Arc<AtomicU64>,
    expected: u64,
}

impl Drop for CompletionGuard {
    fn drop(&mut self) {
        let bytes = self.served.load(Ordering::Relaxed);
        self.state.metrics.bytes_served.inc_by(bytes);
        crate::audit::completion(
            &self.state,
            self.intent_seq,
            std::mem::take(&mut self.request_id),
            "download",
            bytes,
            bytes == self.expected,
        );
    }
}

/// A parsed `Range` header.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// No usable range: send everything (200).
    Full,
    /// One satisfiable range [start, end).
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range against a length (RFC 9110 §14.1.2).
/// Several ranges or another unit are ignored (answered with 200).
fn parse_range(value: Option<&HeaderValue>, len: u64) -> RangeSpec {
    let Some(spec) = value.and_then(|v| v.to_str().ok()) else {
        return RangeSpec::Full;
    };
    // Range units are case-insensitive (RFC 9110 §14.1).
    let spec = spec.trim();
    let Some(spec) = spec
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case("bytes="))
        .map(|_| &spec[6..])
    else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    // A syntactically invalid range is ignored (RFC 9110 §14.2): 200.
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let valid = |s: &str| s.is_empty() || s.bytes().all(|c| c.is_ascii_digit());
    if !valid(a) || !valid(b) || (a.is_empty() && b.is_empty()) {
        return RangeSpec::Full;
    }
    // All digits by now: a number too large for u64 saturates (it is past
    // the end of any file anyway).
    let parse = |s: &str| Some(s.parse::<u64>().unwrap_or(u64::MAX));
    match (a.is_empty(), b.is_empty()) {
        (true, false) => match parse(b) {
            // Suffix: the last n bytes.
            Some(n) if n > 0 && len > 0 => RangeSpec::Partial(len.saturating_sub(n), len),
            _ => RangeSpec::Unsatisfiable,
        },
        (false, true) => match parse(a) {
            Some(start) if start < len => RangeSpec::Partial(start, len),
            _ => RangeSpec::Unsatisfiable,
        },
        (false, false) => match (parse(a), parse(b)) {
            (Some(start), Some(end)) if start > end => RangeSpec::Full,
            (Some(start), Some(end)) if start < len => {
                RangeSpec::Partial(start, end.saturating_add(1).min(len))
            }
            _ => RangeSpec::Unsatisfiable,
        },
        (true, true) => RangeSpec::Unsatisfiable,
    }
}

/// Download one file, decrypted
///
/// Supports a single `Range: bytes=...`. Needs `download` and an allow
/// from the policy chain.
#[utoipa::path(
    get,
    path = "/v1/models/{ns}/{name}/versions/{version}/files/{path}",
    tag = "files",
    params(
        super::openapi::FilePath,
        ("Range" = Option<String>, Header, description = "One `bytes=` range; anything else is ignored (200)"),
    ),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream", body = inline(super::openapi::RawBytes),
            headers(("ETag" = String, description = "The file's SHA-256, quoted"))),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = inline(super::openapi::RawBytes),
            headers(("Content-Range" = String, description = "`bytes START-END/LENGTH`"))),
        (status = 403, description = "`forbidden` (no `download`) or `policy_denied` (with `plugin` and `reason_code`)", body = crate::api::ErrorBody),
        (status = 410, description = "`gone`: the version was deleted", body = crate::api::ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = crate::api::ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */LENGTH`"))),
    ),
)]
pub async fn download(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, version, path)): ApiPath<(String, String, String, String)>,
    request_id: RequestId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    governed_download(
        &state, &p, &ns, &name, &version, &path, request_id, &headers,
    )
    .await
    .map(|d| d.response)
}

/// A governed download's answer, with what other front ends of it (the
/// Hugging Face route) add to their headers.
pub(crate) struct Served {
    /// The response (200 or 206 with the streaming body, or 416).
    pub response: Response,
    /// The version served (`latest`/`deployed-ENV` resolved).
    pub version: String,
    /// The whole file's size.
    pub size: u64,
}

/// The download every route serves plaintext through: the gate (names,
/// role gate, policy chain on verified facts), the durable audit intent,
/// then the file's bytes (one `Range` honoured), each segment checked
/// before it is sent, with a completion record whatever happens.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn governed_download(
    state: &AppState,
    p: &Principal,
    ns: &str,
    name: &str,
    version: &str,
    path: &str,
    request_id: RequestId,
    headers: &HeaderMap,
) -> Result<Served, ApiError> {
    let (ns, name) = (ns.to_owned(), name.to_owned());
    // Names, scope and permission first (404 outside, 403 without
    // `download`), on the version as named, so nothing about the model
    // leaks.
    let admitted = gate::version(p, Action::Download, &ns, &name, version, Some(path))?;
    // Any spelling of a name finds the file stored under its NFC form.
    let path = modelvault_storage::names::lookup_file_path(path)?;
    // Resolved, and the policy chain run on verified facts only: the model
    // record, the manifest, the approval and deployment records (one
    // storage call).
    let decision = Decision {
        action: modelvault_policy::PolicyAction::Download,
        file: Some(&path),
        environment: None,
        approval_kind: None,
    };
    let gate::Allowed {
        version, manifest, ..
    } = admitted.decide(state, decision, &request_id).await?;
    let v = VersionRef {
        namespace: &ns,
        model: &name,
        version: &version,
    };
    // The size comes from the verified manifest, so the range (and the 416
    // answer) is settled before the blob is opened.
    let len = match manifest.files.iter().find(|f| f.path == path) {
        Some(f) => f.size,
        // Not in the version: the store's own "not found" answer.
        None => {
            return Err(match state.store.open_file_in(&v, &manifest, &path).await {
                Err(e) => e.into(),
                Ok(_) => ApiError::internal("file listing changed"),
            });
        }
    };
    let (status, start, end) = match parse_range(headers.get(header::RANGE), len) {
        RangeSpec::Full => (StatusCode::OK, 0, len),
        RangeSpec::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        RangeSpec::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("range not satisfiable for a file of {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(Served {
                response: resp,
                version,
                size: len,
            });
        }
    };
    let RequestId(request_id) = request_id;
    crate::audit::note_version(&version);
    // Durable intent before the first byte; a failing audit store is a 503.
    // The intent's group commit (an fsync) overlaps with opening the blob
    // (key record, unwrap, header): no byte is read into the response
    // until both are done.
    let intent = crate::audit::Intent {
        principal: p,
        action: "download",
        resource: modelvault_audit::ResourceRef {
            namespace: Some(ns.clone()),
            model: Some(name.clone()),
            version: Some(version.clone()),
            file: Some(path.clone()),
            range: Some(format!("{start}-{end}")),
            name: None,
        },
        keys: vec![modelvault_audit::KeyRef {
            kek_version: None,
            dek_generation: Some(manifest.dek_generation),
        }],
        request_id: &request_id,
    };
    let (intent_seq, reader) = tokio::join!(
        crate::audit::intent(state, &intent),
        state.store.open_file_in(&v, &manifest, &path)
    );
    let intent_seq = intent_seq?;
    let served = Arc::new(AtomicU64::new(0));
    // From here on a completion is recorded whatever happens: a blob that
    // fails to open is an aborted download of 0 bytes.
    let guard = CompletionGuard {
        state: state.clone(),
        intent_seq,
        request_id: request_id.clone(),
        served: served.clone(),
        expected: end - start,
    };
    let reader = reader?;
    if len == 0 {
        // An empty body is never polled: authenticate the empty file's one
        // segment before answering.
        let mut check = reader.read_range(0..0);
        while let Some(chunk) = check.next().await {
            chunk?;
        }
    }
    let etag = format!("\"{}\"", reader.sha256());
    let receipt = crate::audit::receipt(
        state,
        &intent,
        intent_seq,
        crate::audit::ReceiptFacts {
            manifest_sha256: reader.manifest_sha256().to_string(),
            file_sha256: Some(reader.sha256().to_string()),
        },
    );
    // The first segment is checked (segment table, then AEAD) before the
    // status is sent: stored data that fails authentication at the start is
    // a clean error answer, not a 200 that breaks off.
    let mut rest = reader.read_range(start..end);
    let first = if end > start {
        match rest.next().await {
            Some(chunk) => Some(chunk?),
            None => None,
        }
    } else {
        None
    };
    let stream = futures::stream::iter(first.map(Ok)).chain(rest).map(move |r| {
        let _ = &guard;
        if let Ok(chunk) = &r {
            served.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        r.map_err(|e: StorageError| {
            // The response is already under way (its status was logged as
            // sent): log the abort under the same request id.
            tracing::error!(request_id = %request_id, error = %e, "download aborted: stored data failed authentication");
            std::io::Error::other(e.to_string())
        })
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(r) = receipt {
        h.insert(modelvault_audit::RECEIPT_HEADER, r);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(Served {
        response: resp,
        version,
        size: len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, len: u64) -> RangeSpec {
        parse_range(
            Some(&HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))),
            len,
        )
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeSpec::Full);
        assert_eq!(r("bytes=0-0", 10), RangeSpec::Partial(0, 1));
        assert_eq!(r("bytes=2-", 10), RangeSpec::Partial(2, 10));
        assert_eq!(r("bytes=-3", 10), RangeSpec::Partial(7, 10));
        assert_eq!(r("bytes=-30", 10), RangeSpec::Partial(0, 10));
        assert_eq!(r("bytes=5-100", 10), RangeSpec::Partial(5, 10));
        assert_eq!(r("bytes=10-", 10), RangeSpec::Unsatisfiable);
        assert_eq!(r("bytes=5-2", 10), RangeSpec::Full, "invalid: ignored");
        assert_eq!(r("bytes=x-2", 10), RangeSpec::Full, "invalid: ignored");
        assert_eq!(r("bytes=-", 10), RangeSpec::Full, "invalid: ignored");
        assert_eq!(r("bytes=20-30", 10), RangeSpec::Unsatisfiable);
        assert_eq!(r("Bytes=0-1", 10), RangeSpec::Partial(0, 2));
        assert_eq!(
            r("bytes=0-99999999999999999999", 10),
            RangeSpec::Partial(0, 10)
        );
        assert_eq!(
            r("bytes=99999999999999999999-", 10),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(r("bytes=0-1,3-4", 10), RangeSpec::Full);
        assert_eq!(r("items=0-1", 10), RangeSpec::Full);
        assert_eq!(r("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), RangeSpec::Unsatisfiable);
    }
}
