//! The installed policy plugins (`/v1/admin/policies`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Enforcing or shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Decides.
    Enforce,
    /// Evaluated and recorded on every request, never decides.
    Shadow,
}

/// What `GET /v1/admin/policies` and `policy list --output json` show.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyInfo {
    /// Name.
    pub name: String,
    /// Hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// `enforce` or `shadow`.
    pub mode: PolicyMode,
    /// Installing principal.
    pub installed_by: String,
    /// Install time.
    pub installed_at: DateTime<Utc>,
    /// The id of the trusted policy-signing key whose signature verified
    /// at install, `bundled` for a component bundled in a Modelvault
    /// build, null when unsigned.
    #[serde(default)]
    pub signed_by: Option<String>,
    /// What the component says about itself (its `modelvault:metadata`
    /// section), null when it carries none.
    #[serde(default)]
    pub metadata: Option<EmbeddedMetadata>,
    /// Shadow policies only: live decisions this server ran it in since it
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_decisions: Option<u64>,
    /// Shadow policies only: of those, how many it would have flipped (a
    /// deny where the chain allowed, or an allow where it denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_flips: Option<u64>,
}

/// What a component says about itself: its `modelvault:metadata` section
/// (docs/POLICY-AUTHORING.md). Informative only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmbeddedMetadata {
    /// The policy's own name (not necessarily its installed name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
