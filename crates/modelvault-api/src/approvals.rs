//! Approvals and deployments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

wire_enum! {
    /// What an approval vouches for.
    #[derive(Default)]
    ApprovalKind {
        /// The model was reviewed (the default).
        #[default]
        Review = "review",
        /// Compliance signed it off.
        Compliance = "compliance",
        /// It may be used to train other models.
        Training = "training",
    }
}

/// `{"environment": ENV}`, and for an approval optionally `"kind"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRequest {
    /// Target environment.
    pub environment: String,
    /// Approvals only: the kind (default `review`). A deployment with a
    /// kind is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ApprovalKind>,
}

wire_enum! {
    /// A version's lifecycle stage.
    Stage {
        /// New and unreviewed (the default).
        Candidate = "candidate",
        /// Fit for production.
        ProductionReady = "production-ready",
        /// Still served, on its way out.
        Deprecated = "deprecated",
        /// Not served; `latest` skips it.
        Archived = "archived",
    }
}

/// `POST .../versions/{version}/stage`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StageRequest {
    /// The new stage.
    pub stage: Stage,
}

/// A version's stage as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageView {
    /// The stage in force.
    pub stage: Stage,
    /// Who set it (absent for the default `candidate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
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
    /// Its kind.
    #[serde(default)]
    pub kind: ApprovalKind,
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
