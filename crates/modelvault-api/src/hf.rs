//! The Hugging Face Hub-compatible read API under `/hf`
//! (`docs/HUGGINGFACE.md`): the JSON the `huggingface_hub` client reads
//! from `GET /hf/api/models/{ns}/{name}/revision/{rev}` and
//! `GET /hf/api/models/{ns}/{name}/tree/{rev}`, and its error body. Field
//! names are the Hub's (camelCase), not ours.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `lfs` object of a file: every Modelvault file is served as the Hub
/// serves a large (LFS) file, identified by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HfLfs {
    /// The plaintext SHA-256 (hex).
    pub sha256: String,
    /// The plaintext size.
    pub size: u64,
    /// The size of the Git LFS pointer file the Hub would store (fixed).
    pub pointer_size: u64,
}

/// One file of a model info's `siblings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HfSibling {
    /// The path inside the version.
    pub rfilename: String,
    /// The plaintext size.
    pub size: u64,
    /// A 40-hex blob id (the first 40 hex digits of the SHA-256).
    pub blob_id: String,
    /// Size and SHA-256.
    pub lfs: HfLfs,
}

/// `GET /hf/api/models/{ns}/{name}[/revision/{rev}]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HfModelInfo {
    /// `ns/name`.
    pub id: String,
    /// `ns/name` (the Hub's older name for `id`).
    pub model_id: String,
    /// The revision's commit id: 40 hex digits naming one version.
    pub sha: String,
    /// Always true: nothing in Modelvault is public.
    pub private: bool,
    /// Always false.
    pub gated: bool,
    /// Always false.
    pub disabled: bool,
    /// The model's tags as `key:value`, and `modelvault`.
    pub tags: Vec<String>,
    /// When the version was committed.
    pub last_modified: DateTime<Utc>,
    /// When the model was created.
    pub created_at: DateTime<Utc>,
    /// The version's files.
    pub siblings: Vec<HfSibling>,
}

/// The `lfs` object of a tree entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HfTreeLfs {
    /// The plaintext SHA-256 (hex).
    pub oid: String,
    /// The plaintext size.
    pub size: u64,
    /// As in [`HfLfs`].
    pub pointer_size: u64,
}

/// One entry of `GET /hf/api/models/{ns}/{name}/tree/{rev}[/{path}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HfTreeEntry {
    /// A file.
    File {
        /// Blob id (as in [`HfSibling::blob_id`]).
        oid: String,
        /// Plaintext size.
        size: u64,
        /// Path inside the version.
        path: String,
        /// Size and SHA-256.
        lfs: HfTreeLfs,
    },
    /// A folder.
    Directory {
        /// A 40-hex id of the folder's path.
        oid: String,
        /// Always 0.
        size: u64,
        /// Path inside the version.
        path: String,
    },
}

/// An error under `/hf`, as the Hub spells it: `{"error": "message"}`,
/// with the `X-Error-Code` and `X-Error-Message` headers beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HfErrorBody {
    /// The message (for a policy denial it names the plugin and its
    /// reason code).
    pub error: String,
}
