//! The access review (`GET /v1/access/review`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{BindingView, Sensitivity};

/// One principal's access to one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Access {
    /// Principal id.
    pub principal: String,
    /// `person` or `service`.
    pub kind: String,
    /// Environment the identity is bound to.
    pub environment: String,
    /// Where the access comes from (`token:NAME`, `binding:group:G`, ...).
    pub via: Vec<String>,
    /// May read metadata.
    pub can_read: bool,
    /// Holds `download` here.
    pub download_permission: bool,
    /// The policy chain's answer to a download by this principal today.
    pub policy: String,
    /// The policy's reason code.
    pub reason_code: String,
    /// Downloads in the period.
    pub downloads: u64,
    /// Last download in the period.
    pub last_download: Option<DateTime<Utc>>,
}

/// One version's review.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionReview {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Current sensitivity.
    pub sensitivity: Sensitivity,
    /// Every principal that can read or download it.
    pub access: Vec<Access>,
    /// Principals that downloaded it in the period without access today.
    pub downloaded_without_access_today: Vec<String>,
}

/// A token that expires soon or has expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpiringToken {
    /// Token name.
    pub name: String,
    /// Principal.
    pub principal: String,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Already expired.
    pub expired: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessReview {
    /// When made.
    pub generated_at: DateTime<Utc>,
    /// Start of the period.
    pub since: DateTime<Utc>,
    /// Per version.
    pub versions: Vec<VersionReview>,
    /// Principals able to download something who downloaded nothing in
    /// the period: candidates for revocation.
    pub unused_access: Vec<String>,
    /// Tokens expiring within 30 days, or expired.
    pub expiring_tokens: Vec<ExpiringToken>,
    /// Group bindings: OIDC principals the server has never seen get
    /// access through these only, and appear here rather than by name.
    pub group_bindings: Vec<BindingView>,
    /// Caveats.
    pub notes: Vec<String>,
}

/// `POST /v1/access/review/candidate?name=NAME`: the query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct CandidateReviewQuery {
    /// The installed policy the candidate would replace (added to the
    /// chain under this name if none is installed).
    #[cfg_attr(feature = "openapi", param(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub name: String,
    /// Only versions in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub namespace: Option<String>,
    /// Only versions of models with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub model: Option<String>,
    /// Only this version name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The candidate's detached signature, as for an install (required
    /// under `policy.require_signed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// One access the candidate would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessChange {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// The environment the access is evaluated from.
    pub environment: String,
    /// `principal` or `group`.
    pub subject_type: String,
    /// The principal id or group name.
    pub subject: String,
    /// `download` or `key-release`.
    pub action: String,
    /// `gains` or `loses`.
    pub change: String,
    /// The deciding reason code today.
    pub old_reason_code: String,
    /// The deciding reason code with the candidate.
    pub new_reason_code: String,
    /// The deciding reason with the candidate.
    pub new_reason: String,
}

/// Who would gain or lose download and key-release access if a candidate
/// policy replaced an installed one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CandidateReview {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// The policy name the candidate takes.
    pub name: String,
    /// The candidate's SHA-256.
    pub sha256: String,
    /// Whether a policy of that name is installed (else the candidate is
    /// added).
    pub replaces: bool,
    /// Decisions compared (subject × version × environment × action).
    pub evaluated: u64,
    /// Accesses gained.
    pub gains: u64,
    /// Accesses lost.
    pub losses: u64,
    /// Every change, by version, then environment, subject and action.
    pub changes: Vec<AccessChange>,
    /// How to read it.
    pub notes: Vec<String>,
}
