//! Models, versions, files and commits.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ApprovalView, DeploymentView};

wire_enum! {
    /// How sensitive a model is; the default policy maps it to the
    /// environments that may download it.
    Sensitivity {
        /// Anyone with access may use it.
        Public = "public",
        /// The default.
        Internal = "internal",
        /// Staging and production only (default matrix).
        Confidential = "confidential",
        /// Production only (default matrix).
        Restricted = "restricted",
    }
}

/// `POST /v1/models`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    /// Namespace.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub namespace: String,
    /// Model name.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub name: String,
    /// Sensitivity (default `internal`).
    #[serde(default)]
    pub sensitivity: Option<Sensitivity>,
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchModelRequest {
    /// New sensitivity (raising needs `edit-metadata`, lowering `approve`).
    #[serde(default)]
    pub sensitivity: Option<Sensitivity>,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelRevision {
    /// Revision number (0 at creation).
    pub revision: u64,
    /// Who wrote it.
    pub changed_by: String,
    /// When.
    pub changed_at: Option<DateTime<Utc>>,
    /// Sensitivity after the change.
    pub sensitivity: Sensitivity,
    /// Tags after the change.
    pub tags: BTreeMap<String, String>,
    /// Metadata after the change (sensitive values redacted unless the
    /// caller holds `read-sensitive`).
    pub metadata: BTreeMap<String, String>,
    /// Keys marked sensitive.
    pub sensitive_fields: Vec<String>,
}

/// `GET /v1/models/{ns}/{name}/history`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelHistory {
    /// Every revision.
    pub revisions: Vec<ModelRevision>,
}

/// A model as shown by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelView {
    /// Namespace.
    pub namespace: String,
    /// Model name.
    pub name: String,
    /// Sensitivity.
    pub sensitivity: Sensitivity,
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
    /// Committed versions, oldest first (on show only): the newest
    /// `?versions=` of them (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionSummary>>,
    /// On show: older committed versions exist than those in `versions`
    /// (`GET .../versions` lists them all).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub older_versions: bool,
}

/// `GET /v1/models`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelList {
    /// Models visible to the caller.
    pub models: Vec<ModelView>,
}

/// One line of a version list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionList {
    /// Committed versions, oldest first.
    pub versions: Vec<VersionSummary>,
}

/// `GET .../versions/{version}` and the commit response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionDetail {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// The model's current sensitivity.
    pub sensitivity: Sensitivity,
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
    pub files: Vec<FileEntry>,
    /// Effective approvals.
    #[serde(default)]
    pub approvals: Vec<ApprovalView>,
    /// Lifecycle stage (`candidate` until one is set).
    #[serde(default = "default_stage")]
    pub stage: crate::Stage,
    /// The model signature pushed with the version, as verified (absent
    /// when none was pushed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureView>,
    /// Deployments of this version, oldest first.
    #[serde(default)]
    pub deployments: Vec<DeploymentView>,
}

/// `PUT .../files/{path}` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// `GET .../versions/{version}/uploads`: what a draft holds so far (a
/// push that resumes uploads only the rest).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadList {
    /// The newest whole upload of each path, with size and SHA-256.
    pub files: Vec<FileEntry>,
}

/// `POST .../commit`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Every file of the version (at least one).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub files: Vec<CommitFile>,
    /// Version metadata (metrics, lineage, training-data references).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Version metadata keys to seal and redact.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
}

/// One file of a version, with its size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileEntry {
    /// File path inside the version.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// What a commit lists for each file (unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitFile {
    /// File path inside the version.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024))]
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: String,
}

fn default_stage() -> crate::Stage {
    crate::Stage::Candidate
}

/// A version's model signature as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignatureView {
    /// The signature file in the version.
    pub file: String,
    /// `key` or `certificate`.
    pub method: String,
    /// The trusted key that verified it (empty if none).
    pub signer: String,
    /// Trusted now: verified at commit by a key still trusted for the
    /// namespace.
    pub trusted: bool,
    /// The signed digests are exactly the version's files.
    pub files_match: bool,
    /// Why not, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}
