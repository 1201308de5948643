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
