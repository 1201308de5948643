//! WIT `modelvault:policy@0.1.0` (wit/since_v0.1.0): the generated bindings
//! and the conversions to and from the internal types. Frozen with the WIT.

use super::types::*;

wasmtime::component::bindgen!({
    path: "../../wit/since_v0.1.0",
    world: "policy",
});

use exports::modelvault::policy::evaluator as wit;

/// The export name a component must have for this version.
pub const EXPORT: &str = "modelvault:policy/evaluator@0.1.0";

fn pairs(m: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl From<&PolicyRequest> for wit::Request {
    fn from(r: &PolicyRequest) -> Self {
        wit::Request {
            principal: wit::Principal {
                id: r.principal.id.clone(),
                kind: match r.principal.kind {
                    PrincipalKindInfo::Person => wit::PrincipalKind::Person,
                    PrincipalKindInfo::Service => wit::PrincipalKind::Service,
                },
                roles: r.principal.roles.clone(),
                groups: r.principal.groups.clone(),
                namespaces: r.principal.namespaces.clone(),
                attributes: pairs(&r.principal.attributes),
            },
            action: match r.action {
                PolicyAction::Read => wit::Action::Read,
                PolicyAction::Write => wit::Action::Write,
                PolicyAction::Download => wit::Action::Download,
                PolicyAction::KeyRelease => wit::Action::KeyRelease,
                PolicyAction::Approve => wit::Action::Approve,
                PolicyAction::Deploy => wit::Action::Deploy,
                PolicyAction::Delete => wit::Action::Delete,
                PolicyAction::EditMetadata => wit::Action::EditMetadata,
            },
            resource: wit::Resource {
                namespace: r.resource.namespace.clone(),
                model: r.resource.model.clone(),
                version: r.resource.version.clone(),
                sensitivity: match r.resource.sensitivity {
                    SensitivityInfo::Public => wit::Sensitivity::Public,
                    SensitivityInfo::Internal => wit::Sensitivity::Internal,
                    SensitivityInfo::Confidential => wit::Sensitivity::Confidential,
                    SensitivityInfo::Restricted => wit::Sensitivity::Restricted,
                },
                tags: pairs(&r.resource.tags),
                owner: r.resource.owner.clone(),
                uploader: r.resource.uploader.clone(),
                // 0.1.0 knew only review approvals: a compliance or training
                // approval is not one it could tell apart.
                approvals: r
                    .resource
                    .approvals
                    .iter()
                    .filter(|a| a.kind == ApprovalKindInfo::Review)
                    .map(|a| wit::Approval {
                        approver: a.approver.clone(),
                        environment: a.environment.clone(),
                        time: a.time.clone(),
                    })
                    .collect(),
                deployments: r
                    .resource
                    .deployments
                    .iter()
                    .map(|d| wit::Deployment {
                        environment: d.environment.clone(),
                        deployer: d.deployer.clone(),
                        time: d.time.clone(),
                    })
                    .collect(),
                file_path: r.resource.file_path.clone(),
                target_environment: r.resource.target_environment.clone(),
            },
            context: wit::Context {
                environment: r.context.environment.clone(),
                time: r.context.time.clone(),
                request_id: r.context.request_id.clone(),
            },
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
