//! Sealed key release.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST .../key-release`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyReleaseRequest {
    /// The client's ephemeral X25519 public key, 32 bytes, base64.
    pub public_key: String,
}

/// Where to read one file's ciphertext.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleasedFile {
    /// File path in the version.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Stored (ciphertext) size.
    pub ciphertext_size: u64,
    /// Hex of the blob header's salt (check it before decrypting).
    pub salt: String,
    /// Absolute presigned URL (S3), or a server path (local store) to GET
    /// with the same bearer token.
    pub url: String,
    /// Whether `url` is presigned (no token needed).
    pub presigned: bool,
    /// When a presigned URL stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The answer: a DEK sealed to the client's key, and where the ciphertext is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyReleaseResponse {
    /// The request id (part of the HPKE info).
    pub request_id: String,
    /// The HPKE suite.
    pub suite: String,
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version (resolved).
    pub version: String,
    /// DEK generation released.
    pub dek_generation: u32,
    /// KEK version that wraps it in the store.
    pub kek_version: u32,
    /// HPKE enc, base64.
    pub enc: String,
    /// The sealed DEK, base64.
    pub sealed_dek: String,
    /// Every file.
    pub files: Vec<ReleasedFile>,
    /// The signed decision receipt (also in the `Modelvault-Receipt`
    /// header): a compact JWS, EdDSA by the audit signing key
    /// (docs/AUDIT.md, "Receipts"). Absent when the server keeps no audit
    /// trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}
