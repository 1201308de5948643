//! The records the store keeps, as the rest of the system sees them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use modelvault_keys::WrappedDek;
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// How sensitive a model is; policies see the current value.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Anyone with access may use it.
    Public,
    /// The default.
    #[default]
    Internal,
    /// Staging and production only (default matrix).
    Confidential,
    /// Production only (default matrix).
    Restricted,
}

impl std::str::FromStr for Sensitivity {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Self::Public),
            "internal" => Ok(Self::Internal),
            "confidential" => Ok(Self::Confidential),
            "restricted" => Ok(Self::Restricted),
            other => Err(StorageError::InvalidInput(format!(
                "unknown sensitivity {other:?}: use public, internal, confidential or restricted"
            ))),
        }
    }
}

impl std::fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Confidential => "confidential",
            Self::Restricted => "restricted",
        })
    }
}

/// A model's metadata (one revision of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Namespace.
    pub namespace: String,
    /// Model name.
    pub name: String,
    /// Current sensitivity.
    pub sensitivity: Sensitivity,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
    /// Principal that created the model.
    pub owner: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revision number of this record (0 at creation).
    pub revision: u64,
    /// Metadata values that are not sensitive (description, metrics, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Metadata keys marked sensitive on this model; their values live only
    /// in `sealed_metadata`.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
    /// The sensitive values as a JSON map sealed under the model's metadata
    /// key (base64); absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_metadata: Option<String>,
    /// Who wrote this revision (the owner at creation).
    #[serde(default)]
    pub changed_by: String,
    /// When this revision was written.
    #[serde(default)]
    pub changed_at: Option<DateTime<Utc>>,
}

/// A change to a model's metadata: each `Some` / map entry is applied;
/// a `None` value in `tags` or `metadata` removes the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelChange {
    /// New sensitivity.
    pub sensitivity: Option<Sensitivity>,
    /// Tags to set (`Some`) or remove (`None`).
    pub tags: BTreeMap<String, Option<String>>,
    /// Metadata to set (`Some`) or remove (`None`).
    pub metadata: BTreeMap<String, Option<String>>,
    /// Keys to mark sensitive (values move into the sealed part).
    pub mark_sensitive: Vec<String>,
}

/// A version's wrapped DEK (one record per wrap; the highest seq wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Sequence number of this record.
    pub seq: u64,
    /// DEK generation (1, then +1 per DEK rotation).
    pub dek_generation: u32,
    /// The DEK wrapped by a KEK, bound to (ns, model, version, generation).
    pub wrapped: WrappedDek,
    /// When written.
    pub created_at: DateTime<Utc>,
}

/// One file uploaded into a draft version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Unique id of the upload.
    pub upload_id: String,
    /// File path inside the version.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Blob key.
    pub blob: String,
    /// Blob size.
    pub ciphertext_size: u64,
    /// Hex of the blob header's salt.
    pub salt: String,
    /// Hex BLAKE3 of the blob's segment table: binds every sealed segment
    /// to this record, so a holder of the DEK cannot substitute content.
    pub segments_blake3: String,
    /// DEK generation used.
    pub dek_generation: u32,
    /// SHA-256 of the plaintext, sealed under the version DEK (base64).
    pub sealed_sha256: String,
    /// Principal that uploaded.
    pub uploaded_by: String,
    /// When uploaded.
    pub created_at: DateTime<Utc>,
}

/// One file of a committed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File path inside the version.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Blob key.
    pub blob: String,
    /// Blob size.
    pub ciphertext_size: u64,
    /// Hex of the blob header's random salt: pins this exact blob, so no
    /// other upload of the same path can be swapped in.
    pub salt: String,
    /// Hex BLAKE3 of the blob's segment table (the BLAKE3 of each sealed
    /// segment): every served segment is checked against it before it is
    /// sent, so a holder of the released DEK who can write the bucket
    /// cannot substitute content.
    pub segments_blake3: String,
}

/// What a listing shows of a committed version: facts no later manifest
/// revision changes (a DEK rotation rewrites blobs, not these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionBrief {
    /// Version.
    pub version: String,
    /// Principal that committed.
    pub uploader: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// Number of files.
    pub file_count: usize,
    /// Plaintext bytes in all files.
    pub total_size: u64,
}

impl From<&Manifest> for VersionBrief {
    fn from(m: &Manifest) -> Self {
        Self {
            version: m.version.clone(),
            uploader: m.uploader.clone(),
            created_at: m.created_at,
            file_count: m.files.len(),
            total_size: m.files.iter().map(|f| f.size).sum(),
        }
    }
}

/// A committed version (one revision of its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Revision (0 at commit).
    pub revision: u64,
    /// DEK generation the blobs are under.
    pub dek_generation: u32,
    /// Files, sorted by path.
    pub files: Vec<ManifestFile>,
    /// Principal that committed.
    pub uploader: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// File digests, sealed under the version DEK (base64).
    pub sealed_digests: String,
    /// Version metadata that is not sensitive.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Version metadata keys marked sensitive.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
    /// The sensitive values as a JSON map sealed under the version DEK
    /// (base64); absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_metadata: Option<String>,
}

/// A version's model signature (OpenSSF `model-signing`) as the server
/// verified it at commit: one record per version, written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSignature {
    /// The version it is about (`NS/NAME@VERSION`): checked on read.
    pub version: String,
    /// The signature file's path in the version.
    pub file: String,
    /// `key` or `certificate`.
    pub method: String,
    /// The trusted key's name; empty when no trusted key verified it.
    pub signer: String,
    /// Hex SHA-256 of that key's canonical PEM; empty when none.
    #[serde(default)]
    pub signer_key: String,
    /// It verifies with a signer the namespace trusts.
    pub trusted: bool,
    /// The signed digests are exactly the version's other files.
    pub files_match: bool,
    /// Why it is not trusted or does not match, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A version's lifecycle stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// New and unreviewed (the default).
    #[default]
    Candidate,
    /// Fit for production.
    ProductionReady,
    /// Still served, on its way out.
    Deprecated,
    /// Not served; `latest` skips it.
    Archived,
}

impl Stage {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::ProductionReady => "production-ready",
            Self::Deprecated => "deprecated",
            Self::Archived => "archived",
        }
    }
}

/// One change of a version's lifecycle stage (a series per version, the
/// newest in force).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Sequence number.
    pub seq: u64,
    /// The stage set.
    pub stage: Stage,
    /// Who set it.
    pub by: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// A file as shown to an authorized reader (digest unsealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File path inside the version.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// What the client lists in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitFile {
    /// File path inside the version.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// A committed version with its digests unsealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView {
    /// The authenticated manifest.
    pub manifest: Manifest,
    /// Files with their digests.
    pub files: Vec<FileEntry>,
    /// Every version metadata value, sensitive ones unsealed.
    pub metadata: BTreeMap<String, String>,
}

/// Identifies a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRef<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Model.
    pub model: &'a str,
    /// Version.
    pub version: &'a str,
}

impl std::fmt::Display for VersionRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.namespace, self.model, self.version)
    }
}

/// The digest of a version's files that decision receipts carry: hex
/// SHA-256 of one line `<hex sha256>  <path>\n` per file (what
/// `sha256sum` prints), sorted by path bytewise.
pub fn manifest_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut files: Vec<(&str, &str)> = files.into_iter().collect();
    files.sort_unstable();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (path, sha) in files {
        ctx.update(sha.as_bytes());
        ctx.update(b"  ");
        ctx.update(path.as_bytes());
        ctx.update(b"\n");
    }
    hex::encode(ctx.finish())
}
