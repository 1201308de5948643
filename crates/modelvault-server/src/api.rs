//! The JSON bodies of the HTTP API (documented in `docs/API.md`), shared by
//! the server and the CLI so both sides agree by construction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use modelvault_storage::{CommitFile, FileEntry};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::jobs::JobRecord;
pub use crate::policies::{EmbeddedMetadata, PolicyInfo, PolicyMode};
pub use crate::routes::openapi::AuditPublicKey;
pub use crate::routes::{
    AccessReview, ApprovalView, DeleteResponse, DeploymentList, DeploymentView, EnvironmentRequest,
    KekStatus, KeyReleaseRequest, KeyReleaseResponse, KeysStatus, ReleasedFile, RetireRequest,
};

/// `POST /v1/models`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    /// Namespace.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub namespace: String,
    /// Model name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub name: String,
    /// `public`, `internal` (default), `confidential` or `restricted`.
    #[serde(default)]
    #[schema(pattern = "^(public|internal|confidential|restricted)$")]
    pub sensitivity: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Metadata (description, metrics, lineage, training-data references).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Metadata keys to mark sensitive (sealed at rest, redacted for
    /// principals without `read-sensitive`).
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
}

/// `PATCH /v1/models/{ns}/{name}`: every field optional; a `null` tag or
/// metadata value removes the key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchModelRequest {
    /// New sensitivity (raising needs `edit-metadata`, lowering `approve`).
    #[serde(default)]
    #[schema(pattern = "^(public|internal|confidential|restricted)$")]
    pub sensitivity: Option<String>,
    /// Tags to set or (with `null`) remove.
    #[serde(default)]
    pub tags: BTreeMap<String, Option<String>>,
    /// Metadata to set or (with `null`) remove.
    #[serde(default)]
    pub metadata: BTreeMap<String, Option<String>>,
    /// Metadata keys to mark sensitive.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
}

/// One revision of a model's metadata (`GET .../history`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelRevision {
    /// Revision number (0 at creation).
    pub revision: u64,
    /// Who wrote it.
    pub changed_by: String,
    /// When.
    pub changed_at: Option<DateTime<Utc>>,
    /// Sensitivity after the change.
    pub sensitivity: String,
    /// Tags after the change.
    pub tags: BTreeMap<String, String>,
    /// Metadata after the change (sensitive values redacted unless the
    /// caller holds `read-sensitive`).
    pub metadata: BTreeMap<String, String>,
    /// Keys marked sensitive.
    pub sensitive_fields: Vec<String>,
}

/// `GET /v1/models/{ns}/{name}/history`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelHistory {
    /// Every revision.
    pub revisions: Vec<ModelRevision>,
}

/// A model as shown by the API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    /// Namespace.
    pub namespace: String,
    /// Model name.
    pub name: String,
    /// Sensitivity.
    pub sensitivity: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Creating principal.
    pub owner: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Metadata; sensitive values read `"[redacted]"` for principals
    /// without `read-sensitive`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Keys that are sensitive (marked on the model or in config).
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
    /// Metadata revision.
    #[serde(default)]
    pub revision: u64,
    /// Committed versions, oldest first (on show only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionSummary>>,
}

/// `GET /v1/models`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Models visible to the caller.
    pub models: Vec<ModelView>,
}

/// One line of a version list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionSummary {
    /// Version name.
    pub version: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// Committing principal.
    pub uploader: String,
    /// Number of files.
    pub file_count: usize,
    /// Total plaintext bytes.
    pub total_size: u64,
}

/// `GET .../versions`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    /// Committed versions, oldest first.
    pub versions: Vec<VersionSummary>,
}

/// `GET .../versions/{version}` and the commit response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionDetail {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// The model's current sensitivity.
    pub sensitivity: String,
    /// The model's tags.
    pub tags: BTreeMap<String, String>,
    /// The model's metadata (redacted as in [`ModelView`]).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// This version's metadata, set at commit (redacted likewise).
    #[serde(default)]
    pub version_metadata: BTreeMap<String, String>,
    /// This version's sensitive keys (marked at commit or in config).
    #[serde(default)]
    pub version_sensitive_fields: Vec<String>,
    /// Committing principal.
    pub uploader: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// DEK generation of the blobs.
    pub dek_generation: u32,
    /// Files with size and SHA-256.
    #[schema(value_type = Vec<crate::routes::openapi::FileEntry>)]
    pub files: Vec<FileEntry>,
    /// Effective approvals.
    #[serde(default)]
    pub approvals: Vec<ApprovalView>,
    /// Deployments of this version, oldest first.
    #[serde(default)]
    pub deployments: Vec<DeploymentView>,
}

/// `PUT .../files/{path}` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadResponse {
    /// File path.
    pub path: String,
    /// Bytes received.
    pub size: u64,
    /// SHA-256 of the bytes received.
    pub sha256: String,
    /// Upload id.
    pub upload_id: String,
}

/// `POST .../commit`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Every file of the version (at least one).
    #[schema(value_type = Vec<crate::routes::openapi::CommitFile>, min_items = 1)]
    pub files: Vec<CommitFile>,
    /// Version metadata (metrics, lineage, training-data references).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Version metadata keys to seal and redact.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
}

/// `POST /v1/tokens`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Unique token name (default `token-<id>`).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub name: Option<String>,
    /// Principal id (default: the name).
    #[serde(default)]
    pub principal: Option<String>,
    /// `person` (default) or `service`.
    #[serde(default)]
    #[schema(pattern = "^(person|service)$")]
    pub kind: Option<String>,
    /// Roles (at least one).
    #[schema(min_items = 1)]
    pub roles: Vec<String>,
    /// Namespaces (`*` = all; default: the creator's).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Environment (default from config).
    #[serde(default)]
    pub environment: Option<String>,
    /// Lifetime in seconds (default `tokens.default_ttl`, at most
    /// `tokens.max_ttl`).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /v1/tokens` response. `token` is shown once and never stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateTokenResponse {
    /// The secret token text `mv_<id>_<secret>`.
    pub token: String,
    /// Token id.
    pub id: String,
    /// Token name.
    pub name: String,
    /// Principal.
    pub principal: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Environment.
    pub environment: String,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
    /// Request id (on 5xx), also in the server log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// On `policy_denied`: the policy that decided (`null` when none
    /// allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// On `policy_denied`: the deciding policy's reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
}

/// `POST /v1/access/grant` and `POST /v1/access/revoke`: exactly one of
/// `principal`, `group`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingRequest {
    /// A principal id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub principal: Option<String>,
    /// A group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub group: Option<String>,
    /// Role name.
    pub role: String,
    /// Namespaces (`*` or empty = all; for revoke, empty = the whole binding).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// One binding as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BindingView {
    /// `principal` or `group`.
    pub subject_type: String,
    /// The principal id or group name.
    pub subject: String,
    /// Role name.
    pub role: String,
    /// Namespaces (`*` = all).
    pub namespaces: Vec<String>,
    /// Who last changed it.
    pub updated_by: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/access/bindings`, and the answer to grant and revoke.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BindingList {
    /// Whether the request changed anything (grant and revoke only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Every binding.
    pub bindings: Vec<BindingView>,
}

/// One role a principal holds, where, and from what.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    /// Role name.
    pub role: String,
    /// Namespaces (`*` = all).
    pub namespaces: Vec<String>,
    /// `token` or `binding:<principal|group>:<name>`.
    pub source: String,
    /// The role's permissions.
    pub permissions: Vec<String>,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// Principal id.
    pub id: String,
    /// `person` or `service`.
    pub kind: String,
    /// Verified groups.
    pub groups: Vec<String>,
    /// Role names held anywhere.
    pub roles: Vec<String>,
    /// Each role with its namespaces and source.
    pub grants: Vec<GrantView>,
    /// The environment the identity is bound to.
    pub environment: String,
    /// `api-token` or `oidc`.
    pub authenticated_by: String,
    /// API token name, if one was used.
    pub token_name: Option<String>,
    /// OIDC issuer, if one vouched.
    pub issuer: Option<String>,
    /// When the credential expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Verified attributes policies see (`principal.attributes`).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// One API token as `GET /v1/tokens` shows it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Principal it acts as.
    pub principal: String,
    /// `person` or `service`.
    pub kind: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Namespaces (`*` = all).
    pub namespaces: Vec<String>,
    /// Environment.
    pub environment: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it has expired.
    pub expired: bool,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// Live tokens (revoked ones are gone).
    pub tokens: Vec<TokenView>,
}

/// One issuer `modelvault login` may use (from `GET /v1/auth/config`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginIssuer {
    /// Issuer URL.
    pub issuer: String,
    /// The audience tokens must carry.
    pub audience: String,
    /// The public client id for the CLI.
    pub client_id: String,
    /// Scopes to ask for.
    pub scope: String,
}

/// `GET /v1/auth/config` (no token needed): how to log in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthConfig {
    /// Issuers that offer CLI login.
    pub issuers: Vec<LoginIssuer>,
}

/// The OpenAPI 3.1 document of the `/v1` API, as `GET /v1/openapi.json`
/// serves it (generated from the handlers and these types).
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::routes::openapi::document()
}
