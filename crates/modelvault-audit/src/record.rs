//! The audit record: the export format, one JSON object per line. Field
//! names are stable (documented in docs/AUDIT.md); absent optional fields
//! are omitted. A record never holds a token, key or other secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The principal as the server verified it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRef {
    /// Principal id.
    pub id: String,
    /// `person` or `service`.
    pub kind: String,
    /// Roles held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Verified groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Bound environment.
    pub environment: String,
}

/// What the request touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Version (resolved when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// File path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Byte range `start-end` (end exclusive) of a download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Other named resource (a policy, a token name, a binding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One plugin's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRef {
    /// Plugin name.
    pub plugin: String,
    /// SHA-256 of the plugin component.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// `allow`, `deny` or `abstain`.
    pub outcome: String,
    /// Reason code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason_code: String,
    /// Reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// `enforce` or `shadow`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// A key touched by the request (never its material).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    /// KEK version that wraps the DEK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_version: Option<u32>,
    /// DEK generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dek_generation: Option<u32>,
}

/// One audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The chain (one per server process run).
    pub chain: String,
    /// Sequence number in the chain, from 0.
    pub seq: u64,
    /// Hex SHA-256 of the previous record's stored line (64 zeros first).
    pub prev: String,
    /// When the server made the record.
    pub time: DateTime<Utc>,
    /// `request`, `intent`, `completion`, `authentication`, `alert`,
    /// `chain-start`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request id (`x-request-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The verified principal, when authentication succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalRef>,
    /// Source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How the request came: `ui` for the web console (a console session);
    /// absent for API clients (a bearer token or OIDC access token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Action (`download`, `read`, `write`, `authentication`, ...).
    pub action: String,
    /// Resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// `allowed`, `denied`, `unauthenticated`, `not_found`, `rejected`
    /// (other 4xx), `error`, `complete`, `aborted`, `fired`.
    pub outcome: String,
    /// HTTP status, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Per-plugin decisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<DecisionRef>,
    /// The complete policy input the decisions were made on (the policy
    /// request in its one JSON mapping, docs/POLICY-AUTHORING.md), on every
    /// record with decisions: what `policy replay` evaluates a candidate
    /// against. It holds verified facts only, never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Keys touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyRef>,
    /// Bytes served (completion records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The intent a completion closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_seq: Option<u64>,
    /// Aggregated count (failed authentications in a window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Window start of an aggregated count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<DateTime<Utc>>,
    /// Reason code or free detail (an alert's rule, a failure reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditRecord {
    /// A record of `kind` for `action` with `outcome`, stamped now; the
    /// writer fills chain, seq and prev.
    pub fn new(kind: &str, action: &str, outcome: &str) -> Self {
        Self {
            time: Utc::now(),
            kind: kind.into(),
            action: action.into(),
            outcome: outcome.into(),
            ..Self::default()
        }
    }
}

/// The `prev` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hex SHA-256 of one stored line (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, line))
}
