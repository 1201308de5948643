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
