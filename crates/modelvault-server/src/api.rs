//! The JSON bodies of the HTTP API (documented in `docs/API.md`), shared by
//! the server and the CLI so both sides agree by construction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use modelvault_storage::{CommitFile, FileEntry};
use serde::{Deserialize, Serialize};

pub use crate::policies::{PolicyInfo, PolicyMode};
pub use crate::routes::{ApprovalView, DeploymentList, DeploymentView, EnvironmentRequest};

/// `POST /v1/models`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    /// Namespace.
    pub namespace: String,
    /// Model name.
    pub name: String,
    /// `public`, `internal` (default), `confidential` or `restricted`.
    #[serde(default)]
    pub sensitivity: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A model as shown by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Committed versions, oldest first (on show only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionSummary>>,
}

/// `GET /v1/models`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    /// Models visible to the caller.
    pub models: Vec<ModelView>,
}

/// One line of a version list.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionList {
    /// Committed versions, oldest first.
    pub versions: Vec<VersionSummary>,
}

/// `GET .../versions/{version}` and the commit response.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Committing principal.
    pub uploader: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// DEK generation of the blobs.
    pub dek_generation: u32,
    /// Files with size and SHA-256.
    pub files: Vec<FileEntry>,
    /// Effective approvals.
    #[serde(default)]
    pub approvals: Vec<ApprovalView>,
    /// Deployments of this version, oldest first.
    #[serde(default)]
    pub deployments: Vec<DeploymentView>,
}

/// `PUT .../files/{path}` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Every file of the version.
    pub files: Vec<CommitFile>,
}

/// `POST /v1/tokens`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Unique token name (default `token-<id>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Principal id (default: the name).
    #[serde(default)]
    pub principal: Option<String>,
    /// `person` (default) or `service`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Roles (at least one).
    pub roles: Vec<String>,
    /// Namespaces (`*` = all; default: the creator's).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Environment (default from config).
    #[serde(default)]
    pub environment: Option<String>,
    /// Lifetime in seconds (default: no expiry).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /v1/tokens` response. `token` is shown once and never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
    /// Request id (on 5xx), also in the server log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
