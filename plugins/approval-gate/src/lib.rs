//! Bundled policy `approval-gate`: nothing reaches a gated environment
//! without an approval for it.
//!
//! - download, key-release: in a gated environment deny unless the version
//!   is approved for it, else abstain;
//! - deploy: deny unless approved for the target environment when it is
//!   gated, else abstain;
//! - other actions: abstain.
//!
//! Config: `gated` = comma-separated environments (default `production`).

use modelvault_policy_sdk::*;

struct ApprovalGate;

impl Guest for ApprovalGate {
    fn evaluate(req: Request, config: Config) -> Decision {
        if !matches!(req.action, Action::Download | Action::KeyRelease | Action::Deploy) {
            return abstain("approval-gate.not-gated", "action not gated by approvals");
        }
        let gated = config_list(&config, "gated").unwrap_or_else(|| vec!["production".into()]);
        let env = effective_environment(&req);
        if !gated.iter().any(|g| g == env) {
            return abstain("approval-gate.not-gated", format!("{env} is not a gated environment"));
        }
        if approvers_for(&req, env).is_empty() {
            deny("approval-gate.unapproved", format!("version is not approved for {env}"))
        } else {
            abstain("approval-gate.approved", format!("version is approved for {env}"))
        }
    }
}

export_policy!(ApprovalGate with_types_in modelvault_policy_sdk::bindings);

// Name, version, authors and description from Cargo.toml, for `policy list`.
policy_metadata!();
