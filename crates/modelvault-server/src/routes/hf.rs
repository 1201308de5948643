//! The Hugging Face Hub-compatible read API under `/hf`
//! (`docs/HUGGINGFACE.md`): with `HF_ENDPOINT=<server>/hf` and a
//! Modelvault token as the HF token, the unmodified `huggingface_hub`
//! client lists, snapshots and downloads model versions.
//!
//! Invariants a reader must keep:
//! - read-only: every route is a GET (or HEAD); nothing under `/hf` writes;
//! - a file's bytes leave only through [`files::governed_download`], the
//!   native download: the same role gate, policy chain on verified facts,
//!   durable audit intent and completion record;
//! - a model outside the caller's namespaces answers exactly as a model
//!   that does not exist (`X-Error-Code: RepoNotFound`), so nothing leaks;
//! - a revision is `main` (meaning `latest`), a version name, `latest`,
//!   `deployed-ENV`, or a commit id this API handed out: 40 hex digits of
//!   SHA-256 over the version's full name, so every server over one bucket
//!   computes the same id and resolves it back by listing the version names;
//! - errors carry the Hub's `X-Error-Code`/`X-Error-Message` headers and
//!   an `{"error": "message"}` body ([`hf_error_body`]); a policy denial's
//!   message names the plugin and its reason code.

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use modelvault_storage::VersionRef;

use super::files;
use crate::api::{ErrorBody, HfErrorBody, HfLfs, HfModelInfo, HfSibling, HfTreeEntry, HfTreeLfs};
use crate::authn::{Action, Authenticated, Resource};
use crate::extract::ApiPath;
use crate::gate::{self, RequestId};
use crate::{ApiError, AppState};

/// The size of the Git LFS pointer file the Hub would keep for a file
/// (the client only checks that the field is there).
const LFS_POINTER_SIZE: u64 = 134;

const X_REPO_COMMIT: HeaderName = HeaderName::from_static("x-repo-commit");
const X_LINKED_ETAG: HeaderName = HeaderName::from_static("x-linked-etag");
const X_LINKED_SIZE: HeaderName = HeaderName::from_static("x-linked-size");
const X_ERROR_CODE: HeaderName = HeaderName::from_static("x-error-code");
const X_ERROR_MESSAGE: HeaderName = HeaderName::from_static("x-error-message");

/// The commit id of a version under `/hf`: the first 40 hex digits of
/// SHA-256 over `modelvault-hf-commit\0NS/NAME@VERSION`. Versions are
/// immutable and their names never reused, so the id names one content.
pub fn commit_id(ns: &str, name: &str, version: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("modelvault-hf-commit\0{ns}/{name}@{version}").as_bytes(),
    );
    let mut hex = hex::encode(d.as_ref());
    hex.truncate(40);
    hex
}

fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Which "not found" the Hub client should see.
#[derive(Debug, Clone, Copy)]
enum Missing {
    Repo,
    Revision,
    Entry,
}

/// An [`ApiError`] answered the Hub's way; a 404 carries the kind of
/// thing that was not found.
pub struct HfError {
    inner: ApiError,
    missing: Option<Missing>,
}

impl From<ApiError> for HfError {
    fn from(inner: ApiError) -> Self {
        Self {
            inner,
            missing: None,
        }
    }
}

impl HfError {
    /// `e`, and if it is a 404, a 404 for a missing `m`.
    fn missing(e: impl Into<ApiError>, m: Missing) -> Self {
        let inner = e.into();
        let missing = (inner.status == StatusCode::NOT_FOUND).then_some(m);
        Self { inner, missing }
    }
}

impl IntoResponse for HfError {
    fn into_response(self) -> Response {
        let mut resp = self.inner.into_response();
        if let Some(m) = self.missing {
            let code = match m {
                Missing::Repo => "RepoNotFound",
                Missing::Revision => "RevisionNotFound",
                Missing::Entry => "EntryNotFound",
            };
            resp.headers_mut()
                .insert(X_ERROR_CODE, HeaderValue::from_static(code));
        }
        resp
    }
}

/// Rewrites every error answer under `/hf` (from a handler, the
/// authentication extractor or the router) into the Hub's shape:
/// `{"error": "message"}` and an `X-Error-Message` header with the same
/// text; a policy denial's text names the plugin and the reason code.
pub async fn hf_error_body(resp: Response) -> Response {
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let mut message = match (error.code.as_str(), &error.plugin, &error.reason_code) {
        ("policy_denied", plugin, reason) => format!(
            "policy denied: plugin {} (reason code {}): {}",
            plugin.as_deref().unwrap_or("none"),
            reason.as_deref().unwrap_or("none"),
            error.message
        ),
        (code, _, _) => format!("{code}: {}", error.message),
    };
    if let Some(id) = &error.request_id {
        message.push_str(&format!(" (request id {id})"));
    }
    // A header value is visible ASCII: anything else becomes `?`.
    let header_text: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&header_text) {
        parts.headers.insert(X_ERROR_MESSAGE, v);
    }
    let body = serde_json::to_vec(&HfErrorBody { error: message }).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Which thing a 404 under `/hf` is about, worked out only once a lookup
/// failed (the success path reads nothing extra): the model, else the
/// version (when one is named), else the entry.
async fn classify(
    state: &AppState,
    e: impl Into<ApiError>,
    ns: &str,
    name: &str,
    version: Option<&str>,
    otherwise: Missing,
) -> HfError {
    let e = e.into();
    if e.status != StatusCode::NOT_FOUND {
        return e.into();
    }
    let missing = match state.store.get_model(ns, name).await {
        Ok(None) => Missing::Repo,
        Ok(Some(_)) => match version {
            Some(v) => {
                let v = VersionRef {
                    namespace: ns,
                    model: name,
                    version: v,
                };
                match state.store.show_version(&v).await {
                    Err(modelvault_storage::StorageError::NotFound(_)) => Missing::Revision,
                    _ => otherwise,
                }
            }
            None => otherwise,
        },
        // The lookup failed too: answer its own error.
        Err(other) => return ApiError::from(other).into(),
    };
    HfError::missing(e, missing)
}

/// The version a Hub revision names, for a principal the role gate let
/// read the model (404 `RepoNotFound` otherwise, the same answer as for a
/// model that does not exist).
async fn resolve(
    state: &AppState,
    p: &modelvault_auth::Principal,
    ns: &str,
    name: &str,
    revision: &str,
) -> Result<String, HfError> {
    gate::admit(p, Action::Read, &Resource::model(ns, name))
        .map_err(|e| HfError::missing(e, Missing::Repo))?;
    let revision = if revision == "main" {
        "latest"
    } else {
        revision
    };
    if is_commit_id(revision) {
        let names = match state.store.version_names(ns, name).await {
            Ok(n) => n,
            Err(e) => return Err(classify(state, e, ns, name, None, Missing::Revision).await),
        };
        return names
            .into_iter()
            .find(|v| v == revision || commit_id(ns, name, v) == revision)
            .ok_or_else(|| {
                HfError::missing(
                    ApiError::not_found(format!("revision {revision} of {ns}/{name} not found")),
                    Missing::Revision,
                )
            });
    }
    match super::approvals::resolve_version(state, ns, name, revision).await {
        Ok(v) => Ok(v),
        Err(e) => Err(classify(state, e, ns, name, None, Missing::Revision).await),
    }
}

/// The files of a resolved version (404 `RepoNotFound` or
/// `RevisionNotFound` as the case is).
async fn files_of(
    state: &AppState,
    ns: &str,
    name: &str,
    version: &str,
) -> Result<modelvault_storage::VersionView, HfError> {
    let v = VersionRef {
        namespace: ns,
        model: name,
        version,
    };
    match state.store.show_version(&v).await {
        Ok(view) => Ok(view),
        Err(e) => Err(classify(state, e, ns, name, None, Missing::Revision).await),
    }
}

fn blob_id(sha256: &str) -> String {
    sha256.chars().take(40).collect()
}

/// `GET /hf/api/models/{ns}/{name}`: the model info at `main` (`latest`).
pub async fn model_info_main(
    state: State<AppState>,
    p: Authenticated,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> Result<Json<HfModelInfo>, HfError> {
    model_info(state, p, ApiPath((ns, name, "main".to_owned()))).await
}

/// `GET /hf/api/models/{ns}/{name}/revision/{rev}`: the model info the
/// client's `model_info`/`repo_info` and `snapshot_download` read.
pub async fn model_info(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, revision)): ApiPath<(String, String, String)>,
) -> Result<Json<HfModelInfo>, HfError> {
    let version = resolve(&state, &p, &ns, &name, &revision).await?;
    let view = files_of(&state, &ns, &name, &version).await?;
    let committed = view.manifest.created_at;
    let model = state
        .store
        .get_model(&ns, &name)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            HfError::missing(
                ApiError::not_found(format!("model {ns}/{name} not found")),
                Missing::Repo,
            )
        })?;
    let mut tags = vec!["modelvault".to_owned()];
    tags.extend(model.tags.iter().map(|(k, v)| format!("{k}:{v}")));
    Ok(Json(HfModelInfo {
        id: format!("{ns}/{name}"),
        model_id: format!("{ns}/{name}"),
        sha: commit_id(&ns, &name, &version),
        private: true,
        gated: false,
        disabled: false,
        tags,
        last_modified: committed,
        created_at: model.created_at,
        siblings: view
            .files
            .into_iter()
            .map(|f| HfSibling {
                blob_id: blob_id(&f.sha256),
                lfs: HfLfs {
                    sha256: f.sha256,
                    size: f.size,
                    pointer_size: LFS_POINTER_SIZE,
                },
                rfilename: f.path,
                size: f.size,
            })
            .collect(),
    }))
}

/// `GET /hf/api/models/{ns}/{name}/tree/{rev}`: the whole tree.
pub async fn tree_root(
    state: State<AppState>,
    p: Authenticated,
    ApiPath((ns, name, revision)): ApiPath<(String, String, String)>,
    query: RawQuery,
) -> Result<Json<Vec<HfTreeEntry>>, HfError> {
    tree(
        state,
        p,
        ApiPath((ns, name, revision, String::new())),
        query,
    )
    .await
}

/// `GET /hf/api/models/{ns}/{name}/tree/{rev}/{path}`: the entries under
/// a folder (`recursive=true`: all of them, folders included).
pub async fn tree(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, revision, path)): ApiPath<(String, String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<HfTreeEntry>>, HfError> {
    let recursive = query.as_deref().is_some_and(|q| {
        q.split('&').any(|kv| {
            matches!(
                kv.split_once('='),
                Some(("recursive", "true" | "True" | "1"))
            )
        })
    });
    let version = resolve(&state, &p, &ns, &name, &revision).await?;
    let view = files_of(&state, &ns, &name, &version).await?;
    let folder = path.trim_matches('/');
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let mut dirs = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for f in view.files {
        let Some(rest) = f.path.strip_prefix(&prefix) else {
            continue;
        };
        // Every folder between the listed one and the file.
        let parts: Vec<&str> = rest.split('/').collect();
        let depth = if recursive { parts.len() - 1 } else { 1 };
        for i in 1..=depth.min(parts.len() - 1) {
            dirs.insert(format!("{prefix}{}", parts[..i].join("/")));
        }
        if recursive || parts.len() == 1 {
            entries.push(HfTreeEntry::File {
                oid: blob_id(&f.sha256),
                size: f.size,
                lfs: HfTreeLfs {
                    oid: f.sha256,
                    size: f.size,
                    pointer_size: LFS_POINTER_SIZE,
                },
                path: f.path,
            });
        }
    }
    if !prefix.is_empty() && entries.is_empty() && dirs.is_empty() {
        return Err(HfError::missing(
            ApiError::not_found(format!("{folder} not found in {ns}/{name}@{version}")),
            Missing::Entry,
        ));
    }
    let mut out: Vec<HfTreeEntry> = dirs
        .into_iter()
        .map(|d| HfTreeEntry::Directory {
            oid: blob_id(&hex::encode(
                ring::digest::digest(&ring::digest::SHA256, d.as_bytes()).as_ref(),
            )),
            size: 0,
            path: d,
        })
        .collect();
    out.extend(entries);
    Ok(Json(out))
}

/// Adds the headers the Hub client reads to a file answer.
fn hub_headers(h: &mut HeaderMap, commit: &str, size: u64) {
    if let Ok(v) = HeaderValue::from_str(commit) {
        h.insert(X_REPO_COMMIT, v);
    }
    if let Some(etag) = h.get(header::ETAG).cloned() {
        h.insert(X_LINKED_ETAG, etag);
    }
    h.insert(X_LINKED_SIZE, HeaderValue::from(size));
}

/// `GET /hf/{ns}/{name}/resolve/{rev}/{path}`: the file's bytes, through
/// the governed download (one `Range` honoured, for resumed downloads).
pub async fn resolve_file(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, revision, path)): ApiPath<(String, String, String, String)>,
    request_id: RequestId,
    headers: HeaderMap,
) -> Result<Response, HfError> {
    let version = resolve(&state, &p, &ns, &name, &revision).await?;
    let served = match files::governed_download(
        &state, &p, &ns, &name, &version, &path, request_id, &headers,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return Err(classify(&state, e, &ns, &name, Some(&version), Missing::Entry).await);
        }
    };
    let mut resp = served.response;
    let commit = commit_id(&ns, &name, &served.version);
    hub_headers(resp.headers_mut(), &commit, served.size);
    Ok(resp)
}

/// `HEAD /hf/{ns}/{name}/resolve/{rev}/{path}`: the file's commit, ETag
/// (its SHA-256) and size, which the client reads before it downloads.
/// Needs `download` in the role gate; the policy chain decides on the GET
/// that follows, so a denial reaches the caller as that GET's 403.
pub async fn head_file(
    State(state): State<AppState>,
    Authenticated(p): Authenticated,
    ApiPath((ns, name, revision, path)): ApiPath<(String, String, String, String)>,
) -> Result<Response, HfError> {
    let version = resolve(&state, &p, &ns, &name, &revision).await?;
    let mut resource = Resource::model(&ns, &name).version(&version);
    resource.path = Some(&path);
    gate::admit(&p, Action::Download, &resource).map_err(|e| HfError::missing(e, Missing::Repo))?;
    let wanted = modelvault_storage::names::lookup_file_path(&path).map_err(ApiError::from)?;
    let view = files_of(&state, &ns, &name, &version).await?;
    let Some(f) = view.files.into_iter().find(|f| f.path == wanted) else {
        let mut e = HfError::missing(
            ApiError::not_found(format!("{wanted} not found in {ns}/{name}@{version}")),
            Missing::Entry,
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&commit_id(&ns, &name, &version)) {
            e.headers_mut().insert(X_REPO_COMMIT, v);
        }
        return Ok(e);
    };
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.size));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", f.sha256)) {
        h.insert(header::ETAG, v);
    }
    hub_headers(h, &commit_id(&ns, &name, &version), f.size);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids_are_40_hex_and_name_one_version() {
        let a = commit_id("nlp", "ranker", "v1");
        assert!(is_commit_id(&a), "{a}");
        assert_ne!(a, commit_id("nlp", "ranker", "v2"));
        assert_ne!(a, commit_id("nlp", "ranke", "rv1"));
        assert!(!is_commit_id("latest"));
        assert!(!is_commit_id(&a.to_uppercase()));
    }
}
