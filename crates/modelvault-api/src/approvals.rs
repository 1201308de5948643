//! Approvals and deployments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `{"environment": ENV}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRequest {
    /// Target environment.
    pub environment: String,
}

/// An approval as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalView {
    /// Approver.
    pub approver: String,
    /// Environment.
    pub environment: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// A deployment as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentView {
    /// Version (in model-wide listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Environment.
    pub environment: String,
    /// Deployer.
    pub deployer: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// `GET /v1/models/{ns}/{name}/deployments`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentList {
    /// Latest deployment per environment.
    pub deployments: Vec<DeploymentView>,
}

/// One version waiting for an approval the caller may give.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboxItem {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Committing principal.
    pub uploader: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// The environment the approval is for (the caller's own).
    pub environment: String,
    /// The enforcing policy whose rule needs the approval.
    pub plugin: String,
    /// The rule, in words.
    pub rule: String,
    /// Approvals the rule needs for this environment.
    pub required: u32,
    /// Effective approvals for this environment so far.
    pub approvals: Vec<ApprovalView>,
    /// Whether the caller has already approved (they may revoke).
    pub you_approved: bool,
}

/// `GET /v1/approvals/inbox`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inbox {
    /// Versions still short of approvals in the caller's environment, in
    /// namespaces where the caller holds `approve`; newest first.
    pub items: Vec<InboxItem>,
}
