//! WIT `modelvault:policy@0.2.0` (wit/since_v0.2.0): the generated bindings
//! and the conversions to and from the internal types. Frozen with the WIT.
//!
//! The request goes into a guest as [`view::Request`], which borrows every
//! string and list from the [`PolicyRequest`] (the generated `Request` owns
//! copies of them), so that the only copy made is the guest's. The view's
//! record and field names and order must stay exactly the WIT's: wasmtime
//! typechecks the view against the component's export before it is ever
//! called with it (`Func::typed`), so a mismatch is an error, never a
//! misread request.

use super::types::*;

wasmtime::component::bindgen!({
    path: "../../wit/since_v0.2.0",
    world: "policy",
});

use exports::modelvault::policy::evaluator as wit;

/// The export name a component must have for this version.
pub const EXPORT: &str = "modelvault:policy/evaluator@0.2.0";

fn kind(k: ApprovalKindInfo) -> wit::ApprovalKind {
    match k {
        ApprovalKindInfo::Review => wit::ApprovalKind::Review,
        ApprovalKindInfo::Compliance => wit::ApprovalKind::Compliance,
        ApprovalKindInfo::Training => wit::ApprovalKind::Training,
    }
}

fn stage(s: StageInfo) -> wit::Stage {
    match s {
        StageInfo::Candidate => wit::Stage::Candidate,
        StageInfo::ProductionReady => wit::Stage::ProductionReady,
        StageInfo::Deprecated => wit::Stage::Deprecated,
        StageInfo::Archived => wit::Stage::Archived,
    }
}

fn principal_kind(k: PrincipalKindInfo) -> wit::PrincipalKind {
    match k {
        PrincipalKindInfo::Person => wit::PrincipalKind::Person,
        PrincipalKindInfo::Service => wit::PrincipalKind::Service,
    }
}

fn action(a: PolicyAction) -> wit::Action {
    match a {
        PolicyAction::Read => wit::Action::Read,
        PolicyAction::Write => wit::Action::Write,
        PolicyAction::Download => wit::Action::Download,
        PolicyAction::KeyRelease => wit::Action::KeyRelease,
        PolicyAction::Approve => wit::Action::Approve,
        PolicyAction::Deploy => wit::Action::Deploy,
        PolicyAction::Delete => wit::Action::Delete,
        PolicyAction::EditMetadata => wit::Action::EditMetadata,
    }
}

fn sensitivity(s: SensitivityInfo) -> wit::Sensitivity {
    match s {
        SensitivityInfo::Public => wit::Sensitivity::Public,
        SensitivityInfo::Internal => wit::Sensitivity::Internal,
        SensitivityInfo::Confidential => wit::Sensitivity::Confidential,
        SensitivityInfo::Restricted => wit::Sensitivity::Restricted,
    }
}

/// The 0.2.0 request borrowed from a [`PolicyRequest`] (see the module
/// docs): the same records, fields and order as the WIT, with `&str` and
/// slices where the generated types own `String`s and `Vec`s.
pub mod view {
    use wasmtime::component::{ComponentType, Lower};

    use super::wit;
    use crate::types::*;

    /// `principal`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Principal<'a> {
        id: &'a str,
        kind: wit::PrincipalKind,
        roles: &'a [String],
        groups: &'a [String],
        namespaces: &'a [String],
        attributes: Vec<(&'a str, &'a str)>,
        purpose: Option<&'a str>,
    }

    /// `approval`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Approval<'a> {
        approver: &'a str,
        environment: &'a str,
        time: &'a str,
        kind: wit::ApprovalKind,
        #[component(name = "approver-roles")]
        approver_roles: &'a [String],
    }

    /// `deployment`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Deployment<'a> {
        environment: &'a str,
        deployer: &'a str,
        time: &'a str,
    }

    /// `file`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct File<'a> {
        path: &'a str,
        size: u64,
        sha256: &'a str,
    }

    /// `model-signature`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct ModelSignature<'a> {
        method: &'a str,
        signer: &'a str,
        trusted: bool,
        #[component(name = "files-match")]
        files_match: bool,
    }

    /// `version-facts`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct VersionFacts<'a> {
        created: &'a str,
        uploader: &'a str,
        stage: wit::Stage,
        files: Vec<File<'a>>,
        signature: Option<ModelSignature<'a>>,
    }

    /// `resource`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Resource<'a> {
        namespace: &'a str,
        model: &'a str,
        version: Option<&'a str>,
        sensitivity: wit::Sensitivity,
        tags: Vec<(&'a str, &'a str)>,
        owner: &'a str,
        uploader: Option<&'a str>,
        approvals: Vec<Approval<'a>>,
        deployments: Vec<Deployment<'a>>,
        #[component(name = "file-path")]
        file_path: Option<&'a str>,
        #[component(name = "target-environment")]
        target_environment: Option<&'a str>,
        #[component(name = "approval-kind")]
        approval_kind: Option<wit::ApprovalKind>,
        facts: Option<VersionFacts<'a>>,
    }

    /// `context`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Context<'a> {
        environment: &'a str,
        time: &'a str,
        #[component(name = "request-id")]
        request_id: &'a str,
    }

    /// `request`.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Request<'a> {
        principal: Principal<'a>,
        action: wit::Action,
        #[component(name = "resource")]
        resource: Resource<'a>,
        context: Context<'a>,
    }

    fn pairs(m: &std::collections::BTreeMap<String, String>) -> Vec<(&str, &str)> {
        m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    impl<'a> Request<'a> {
        /// The view of `r`: nothing copied but the lists of records.
        pub fn of(r: &'a PolicyRequest) -> Self {
            let p = &r.principal;
            let res = &r.resource;
            Request {
                principal: Principal {
                    id: &p.id,
                    kind: super::principal_kind(p.kind),
                    roles: &p.roles,
                    groups: &p.groups,
                    namespaces: &p.namespaces,
                    attributes: pairs(&p.attributes),
                    purpose: p.purpose.as_deref(),
                },
                action: super::action(r.action),
                resource: Resource {
                    namespace: &res.namespace,
                    model: &res.model,
                    version: res.version.as_deref(),
                    sensitivity: super::sensitivity(res.sensitivity),
                    tags: pairs(&res.tags),
                    owner: &res.owner,
                    uploader: res.uploader.as_deref(),
                    approvals: res
                        .approvals
                        .iter()
                        .map(|a| Approval {
                            approver: &a.approver,
                            environment: &a.environment,
                            time: &a.time,
                            kind: super::kind(a.kind),
                            approver_roles: &a.approver_roles,
                        })
                        .collect(),
                    deployments: res
                        .deployments
                        .iter()
                        .map(|d| Deployment {
                            environment: &d.environment,
                            deployer: &d.deployer,
                            time: &d.time,
                        })
                        .collect(),
                    file_path: res.file_path.as_deref(),
                    target_environment: res.target_environment.as_deref(),
                    approval_kind: res.approval_kind.map(super::kind),
                    facts: res.facts.as_ref().map(|f| VersionFacts {
                        created: &f.created,
                        uploader: &f.uploader,
                        stage: super::stage(f.stage),
                        files: f
                            .files
                            .iter()
                            .map(|x| File {
                                path: &x.path,
                                size: x.size,
                                sha256: &x.sha256,
                            })
                            .collect(),
                        signature: f.signature.as_ref().map(|s| ModelSignature {
                            method: &s.method,
                            signer: &s.signer,
                            trusted: s.trusted,
                            files_match: s.files_match,
                        }),
                    }),
                },
                context: Context {
                    environment: &r.context.environment,
                    time: &r.context.time,
                    request_id: &r.context.request_id,
                },
            }
        }
    }
}

impl From<wit::Decision> for PolicyDecision {
    fn from(d: wit::Decision) -> Self {
        PolicyDecision {
            outcome: match d.outcome {
                wit::Outcome::Allow => Outcome::Allow,
                wit::Outcome::Deny => Outcome::Deny,
                wit::Outcome::Abstain => Outcome::Abstain,
            },
            reason_code: d.reason_code,
            reason: d.reason,
        }
    }
}
