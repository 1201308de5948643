//! The Rust SDK for Modelvault policies (WIT `modelvault:policy@0.1.0`).
//!
//! ```ignore
//! use modelvault_policy_sdk::*;
//! struct MyPolicy;
//! impl Guest for MyPolicy {
//!     fn evaluate(req: Request, config: Config) -> Decision {
//!         if req.action == Action::Download { allow("my.ok", "fine") } else { abstain("my.na", "not mine") }
//!     }
//! }
//! export_policy!(MyPolicy with_types_in modelvault_policy_sdk::bindings);
//! ```

/// The generated bindings (re-exported at the crate root).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.1.0",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "modelvault_policy_sdk::bindings",
    });
}

pub use bindings::exports::modelvault::policy::evaluator::*;
pub use bindings::export_policy;

/// The plugin's configuration pairs.
pub type Config = Vec<(String, String)>;

/// Looks `key` up in the configuration.
pub fn config_value<'a>(config: &'a [(String, String)], key: &str) -> Option<&'a str> {
    config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A comma-separated configuration list, trimmed, empty items dropped.
pub fn config_list(config: &[(String, String)], key: &str) -> Option<Vec<String>> {
    config_value(config, key).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// An allow decision.
pub fn allow(code: &str, reason: impl Into<String>) -> Decision {
    Decision { outcome: Outcome::Allow, reason_code: code.into(), reason: reason.into() }
}

/// A deny decision.
pub fn deny(code: &str, reason: impl Into<String>) -> Decision {
    Decision { outcome: Outcome::Deny, reason_code: code.into(), reason: reason.into() }
}

/// An abstain decision.
pub fn abstain(code: &str, reason: impl Into<String>) -> Decision {
    Decision { outcome: Outcome::Abstain, reason_code: code.into(), reason: reason.into() }
}

impl Sensitivity {
    /// The lowercase name used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Confidential => "confidential",
            Sensitivity::Restricted => "restricted",
        }
    }
}

/// The environment an action is about: the target environment of approve
/// and deploy, the caller's own environment otherwise.
pub fn effective_environment(req: &Request) -> &str {
    match req.action {
        Action::Approve | Action::Deploy => req
            .resource
            .target_environment
            .as_deref()
            .unwrap_or(req.context.environment.as_str()),
        _ => req.context.environment.as_str(),
    }
}

/// Distinct approvers of the resource for `environment`.
pub fn approvers_for(req: &Request, environment: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &req.resource.approvals {
        if a.environment == environment && !out.contains(&a.approver) {
            out.push(a.approver.clone());
        }
    }
    out
}
