//! The policy request and decision as the rest of Modelvault sees them, and
//! their one JSON mapping (used by `policy eval`/`policy test` files, 403
//! bodies and audit records; documented in docs/POLICY-AUTHORING.md).
//! Version modules (`v0_1_0`) convert these to and from each WIT version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalInfo {
    /// Stable principal id.
    pub id: String,
    /// `person` or `service`.
    pub kind: PrincipalKindInfo,
    /// Roles held.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Groups (from the identity provider).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Namespaces in reach (`*` = all).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Further verified attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// What the identity may use models for (`training`, ...), from a token
    /// or binding attribute (interface 0.2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// Person or service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKindInfo {
    /// A human.
    Person,
    /// A workload.
    Service,
}

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyAction {
    /// Read metadata.
    Read,
    /// Create, upload, commit.
    Write,
    /// Download plaintext.
    Download,
    /// Receive a DEK.
    KeyRelease,
    /// Approve a version for an environment.
    Approve,
    /// Deploy a version to an environment.
    Deploy,
    /// Delete.
    Delete,
    /// Change metadata.
    EditMetadata,
}

impl PolicyAction {
    /// Every action, in WIT order.
    pub const ALL: [PolicyAction; 8] = [
        Self::Read,
        Self::Write,
        Self::Download,
        Self::KeyRelease,
        Self::Approve,
        Self::Deploy,
        Self::Delete,
        Self::EditMetadata,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Download => "download",
            Self::KeyRelease => "key-release",
            Self::Approve => "approve",
            Self::Deploy => "deploy",
            Self::Delete => "delete",
            Self::EditMetadata => "edit-metadata",
        }
    }
}

/// Sensitivity levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensitivityInfo {
    /// public
    Public,
    /// internal
    Internal,
    /// confidential
    Confidential,
    /// restricted
    Restricted,
}

/// What an approval vouches for (interface 0.2.0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalKindInfo {
    /// Reviewed (the default).
    #[default]
    Review,
    /// Compliance signed it off.
    Compliance,
    /// May be used for training.
    Training,
}

impl ApprovalKindInfo {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Review => "review",
            Self::Compliance => "compliance",
            Self::Training => "training",
        }
    }
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalInfo {
    /// Approving principal.
    pub approver: String,
    /// Environment approved for.
    pub environment: String,
    /// RFC 3339.
    pub time: String,
    /// Its kind (interface 0.2.0; `review` when absent).
    #[serde(default)]
    pub kind: ApprovalKindInfo,
    /// The approver's roles in the namespace when approving (0.2.0).
    #[serde(default)]
    pub approver_roles: Vec<String>,
}

/// A version's lifecycle stage (interface 0.2.0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageInfo {
    /// New and unreviewed (the default).
    #[default]
    Candidate,
    /// Fit for production.
    ProductionReady,
    /// Still served, on its way out.
    Deprecated,
    /// Not served.
    Archived,
}

impl StageInfo {
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

/// One file of a version (interface 0.2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFactInfo {
    /// Path inside the version.
    pub path: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// A version's OpenSSF model signature as verified at commit (0.2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSignatureInfo {
    /// `key` or `certificate`.
    pub method: String,
    /// The trusted key's name or the certificate subject; empty if none
    /// matched.
    pub signer: String,
    /// Verified with a signer the namespace trusts.
    pub trusted: bool,
    /// The signed digests are exactly the version's files.
    pub files_match: bool,
}

/// Facts of a committed version (interface 0.2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionFactsInfo {
    /// RFC 3339 commit time.
    pub created: String,
    /// Who committed it.
    pub uploader: String,
    /// Lifecycle stage.
    #[serde(default)]
    pub stage: StageInfo,
    /// Files.
    #[serde(default)]
    pub files: Vec<FileFactInfo>,
    /// The model signature, if one was pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ModelSignatureInfo>,
}

/// One deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentInfo {
    /// Environment.
    pub environment: String,
    /// Deploying principal.
    pub deployer: String,
    /// RFC 3339.
    pub time: String,
}

/// What it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceInfo {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version, when there is one.
    #[serde(default)]
    pub version: Option<String>,
    /// Current sensitivity of the model.
    pub sensitivity: SensitivityInfo,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Model owner.
    pub owner: String,
    /// Version uploader.
    #[serde(default)]
    pub uploader: Option<String>,
    /// Approvals of the version.
    #[serde(default)]
    pub approvals: Vec<ApprovalInfo>,
    /// Deployments of the version.
    #[serde(default)]
    pub deployments: Vec<DeploymentInfo>,
    /// File path, for file downloads.
    #[serde(default)]
    pub file_path: Option<String>,
    /// Target environment of approve and deploy.
    #[serde(default)]
    pub target_environment: Option<String>,
    /// The kind an approve asks to record (interface 0.2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_kind: Option<ApprovalKindInfo>,
    /// Facts of the committed version (interface 0.2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<VersionFactsInfo>,
}

/// Where and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextInfo {
    /// The caller's environment (from its verified identity).
    pub environment: String,
    /// RFC 3339 time of the request.
    pub time: String,
    /// Request id.
    pub request_id: String,
}

/// A whole policy request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// Who.
    pub principal: PrincipalInfo,
    /// What.
    pub action: PolicyAction,
    /// On what.
    pub resource: ResourceInfo,
    /// Where and when.
    pub context: ContextInfo,
}

/// allow / deny / abstain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
    /// No opinion.
    Abstain,
}

/// One plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDecision {
    /// The outcome.
    pub outcome: Outcome,
    /// Machine-readable reason.
    pub reason_code: String,
    /// Human reason.
    pub reason: String,
}

impl PolicyRequest {
    /// The sample request of `action`, shaped as the server sends it: a
    /// download carries a file path, an approve or deploy its target
    /// environment (the caller's own).
    pub fn sample_for(action: PolicyAction) -> Self {
        let mut r = Self::sample();
        r.action = action;
        match action {
            PolicyAction::Download => r.resource.file_path = Some("sample.bin".into()),
            PolicyAction::Approve => {
                r.resource.target_environment = Some(r.context.environment.clone());
                r.resource.approval_kind = Some(ApprovalKindInfo::Review);
            }
            PolicyAction::Deploy => {
                r.resource.target_environment = Some(r.context.environment.clone())
            }
            _ => {}
        }
        r
    }

    /// A sample request used to smoke-test a component at install.
    pub fn sample() -> Self {
        Self {
            principal: PrincipalInfo {
                id: "sample".into(),
                kind: PrincipalKindInfo::Person,
                roles: vec!["data-scientist".into()],
                groups: vec![],
                namespaces: vec!["sample".into()],
                attributes: BTreeMap::new(),
                purpose: None,
            },
            action: PolicyAction::Read,
            resource: ResourceInfo {
                namespace: "sample".into(),
                model: "sample".into(),
                version: Some("1".into()),
                sensitivity: SensitivityInfo::Internal,
                tags: BTreeMap::new(),
                owner: "sample".into(),
                uploader: Some("sample".into()),
                approvals: vec![],
                deployments: vec![],
                file_path: None,
                target_environment: None,
                approval_kind: None,
                facts: Some(VersionFactsInfo {
                    created: "2026-01-01T00:00:00Z".into(),
                    uploader: "sample".into(),
                    stage: StageInfo::Candidate,
                    files: vec![FileFactInfo {
                        path: "sample.bin".into(),
                        size: 0,
                        sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                            .into(),
                    }],
                    signature: None,
                }),
            },
            context: ContextInfo {
                environment: "dev".into(),
                time: "2026-01-01T00:00:00Z".into(),
                request_id: "00000000-0000-0000-0000-000000000000".into(),
            },
        }
    }
}
