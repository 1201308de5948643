//! The JSON bodies of the HTTP API are defined in `modelvault_api` (the
//! wire format is defined there and only there); re-exported here for the
//! handlers, with the OpenAPI document built from them.

pub use modelvault_api::*;

/// The OpenAPI 3.1 document of the `/v1` API, as `GET /v1/openapi.json`
/// serves it (generated from the handlers and the `modelvault_api` types).
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::routes::openapi::document()
}

/// Conversions between stored records and wire types (the two are kept
/// apart on purpose: a stored format and an API evolve separately).
pub mod convert {
    use modelvault_api as wire;
    use modelvault_auth::{BindingSubject, RoleBinding};
    use modelvault_storage::Sensitivity;

    /// A stored sensitivity as the API spells it.
    pub fn sensitivity(s: Sensitivity) -> wire::Sensitivity {
        match s {
            Sensitivity::Public => wire::Sensitivity::Public,
            Sensitivity::Internal => wire::Sensitivity::Internal,
            Sensitivity::Confidential => wire::Sensitivity::Confidential,
            Sensitivity::Restricted => wire::Sensitivity::Restricted,
        }
    }

    /// A requested sensitivity as the store keeps it.
    pub fn stored_sensitivity(s: wire::Sensitivity) -> Sensitivity {
        match s {
            wire::Sensitivity::Public => Sensitivity::Public,
            wire::Sensitivity::Internal => Sensitivity::Internal,
            wire::Sensitivity::Confidential => Sensitivity::Confidential,
            wire::Sensitivity::Restricted => Sensitivity::Restricted,
        }
    }

    /// An approval kind as policies see it.
    pub fn approval_kind(k: wire::ApprovalKind) -> modelvault_policy::ApprovalKindInfo {
        match k {
            wire::ApprovalKind::Review => modelvault_policy::ApprovalKindInfo::Review,
            wire::ApprovalKind::Compliance => modelvault_policy::ApprovalKindInfo::Compliance,
            wire::ApprovalKind::Training => modelvault_policy::ApprovalKindInfo::Training,
        }
    }

    /// A stored stage as the API spells it.
    pub fn stage(s: modelvault_storage::Stage) -> wire::Stage {
        match s {
            modelvault_storage::Stage::Candidate => wire::Stage::Candidate,
            modelvault_storage::Stage::ProductionReady => wire::Stage::ProductionReady,
            modelvault_storage::Stage::Deprecated => wire::Stage::Deprecated,
            modelvault_storage::Stage::Archived => wire::Stage::Archived,
        }
    }

    /// A requested stage as the store keeps it.
    pub fn stored_stage(s: wire::Stage) -> modelvault_storage::Stage {
        match s {
            wire::Stage::Candidate => modelvault_storage::Stage::Candidate,
            wire::Stage::ProductionReady => modelvault_storage::Stage::ProductionReady,
            wire::Stage::Deprecated => modelvault_storage::Stage::Deprecated,
            wire::Stage::Archived => modelvault_storage::Stage::Archived,
        }
    }

    /// A stored stage as policies see it.
    pub fn policy_stage(s: modelvault_storage::Stage) -> modelvault_policy::StageInfo {
        match s {
            modelvault_storage::Stage::Candidate => modelvault_policy::StageInfo::Candidate,
            modelvault_storage::Stage::ProductionReady => {
                modelvault_policy::StageInfo::ProductionReady
            }
            modelvault_storage::Stage::Deprecated => modelvault_policy::StageInfo::Deprecated,
            modelvault_storage::Stage::Archived => modelvault_policy::StageInfo::Archived,
        }
    }

    /// A requested binding subject as the binding set keeps it.
    pub fn binding_subject(s: &wire::BindingSubject) -> BindingSubject {
        match s {
            wire::BindingSubject::Principal(p) => BindingSubject::Principal(p.clone()),
            wire::BindingSubject::Group(g) => BindingSubject::Group(g.clone()),
        }
    }

    /// A stored role binding as the API shows it.
    pub fn binding_view(b: &RoleBinding) -> wire::BindingView {
        let (subject_type, subject) = match &b.subject {
            BindingSubject::Principal(p) => (wire::SubjectType::Principal, p.clone()),
            BindingSubject::Group(g) => (wire::SubjectType::Group, g.clone()),
        };
        wire::BindingView {
            subject_type,
            subject,
            role: b.role.clone(),
            namespaces: b.namespaces.clone(),
            updated_by: b.updated_by.clone(),
            updated_at: b.updated_at,
        }
    }
}
