//! Bundled policy `approval-gate`: nothing reaches a gated environment
//! without the approvals it needs, archived versions reach nothing, and
//! training use needs a training approval.
//!
//! - download, key-release, deploy:
//!   - deny an `archived` version (`approval-gate.archived`);
//!   - a download or key release by a principal whose purpose is
//!     `training`: deny unless the version has a `training` approval for
//!     the caller's environment (`approval-gate.training-unapproved`);
//!   - in a gated environment: deny unless every requirement for the
//!     model's sensitivity there is met (`approval-gate.unapproved`, naming
//!     what is missing);
//!   - else abstain, with `approval-gate.deprecated` when the version is
//!     `deprecated` (a warning the audit trail keeps);
//! - approve: with `order` set, deny an approval whose kind the order
//!   names after a kind the version lacks for that environment
//!   (`approval-gate.out-of-order`), else abstain (kinds the order does not
//!   name come at any time);
//! - other actions: abstain.
//!
//! Config:
//! - `gated` = comma-separated environments (default `production`);
//! - `require.<sensitivity>.<environment>` (or `require.<environment>`) =
//!   comma-separated `KIND:COUNT[:ROLE]`: COUNT distinct approvers of KIND
//!   for that environment, holding ROLE in the namespace when they approved
//!   (default for a gated environment: `review:1`); an environment with a
//!   requirement is gated whether `gated` names it or not, and an empty or
//!   malformed requirement denies;
//! - `order` = comma-separated kinds (e.g. `review,compliance`): an
//!   approval of a kind needs the earlier kinds first.

// A lean component: no std, nothing imported (the SDK supplies the
// runtime), about half the cost of a std one per fresh-instance decision.
#![no_std]

extern crate alloc;

use alloc::string::{String, ToString as _};
use alloc::vec::Vec;
use alloc::{format, vec};
use modelvault_policy_sdk::*;

struct ApprovalGate;

/// One `KIND:COUNT[:ROLE]` requirement.
struct Requirement {
    kind: ApprovalKind,
    count: usize,
    role: Option<String>,
}

/// The requirement text for a model of `sensitivity` in `env`, if one is
/// configured.
fn requirement_text<'a>(config: &'a Config, sensitivity: &str, env: &str) -> Option<&'a str> {
    config_value(config, &format!("require.{sensitivity}.{env}"))
        .or_else(|| config_value(config, &format!("require.{env}")))
}

fn requirements(config: &Config, sensitivity: &str, env: &str) -> Result<Vec<Requirement>, String> {
    let spec = requirement_text(config, sensitivity, env).unwrap_or("review:1");
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut parts = item.split(':');
        let kind = parts.next().and_then(ApprovalKind::parse);
        let count = parts.next().and_then(|n| n.parse::<usize>().ok());
        let role = parts.next().map(str::to_string);
        match (kind, count, parts.next()) {
            (Some(kind), Some(count), None) => out.push(Requirement { kind, count, role }),
            _ => return Err(format!("bad requirement {item:?} (want KIND:COUNT[:ROLE])")),
        }
    }
    if out.is_empty() {
        return Err(format!("empty requirement for {sensitivity} in {env}"));
    }
    Ok(out)
}

impl Guest for ApprovalGate {
    fn evaluate(req: Request, config: Config) -> Decision {
        match req.action {
            Action::Download | Action::KeyRelease | Action::Deploy => use_gate(&req, &config),
            Action::Approve => order_gate(&req, &config),
            _ => abstain("approval-gate.not-gated", "action not gated by approvals"),
        }
    }
}

fn use_gate(req: &Request, config: &Config) -> Decision {
    let stage = req.resource.facts.as_ref().map(|f| f.stage);
    if stage == Some(Stage::Archived) {
        return deny("approval-gate.archived", "the version is archived");
    }
    let env = effective_environment(req);
    if req.action != Action::Deploy
        && req.principal.purpose.as_deref() == Some("training")
        && approvers_of_kind(req, env, ApprovalKind::Training, None).is_empty()
    {
        return deny(
            "approval-gate.training-unapproved",
            format!("training use needs a training approval for {env}"),
        );
    }
    let gated = config_list(config, "gated").unwrap_or_else(|| vec!["production".into()]);
    // An environment with a requirement of its own is gated too.
    let sensitivity = req.resource.sensitivity.as_str();
    let is_gated =
        gated.iter().any(|g| g == env) || requirement_text(config, sensitivity, env).is_some();
    let (code, why) = if is_gated {
        let wanted = match requirements(config, sensitivity, env) {
            Ok(w) => w,
            Err(e) => return deny("approval-gate.bad-config", e),
        };
        let mut missing = Vec::new();
        for r in &wanted {
            let have = approvers_of_kind(req, env, r.kind, r.role.as_deref()).len();
            if have < r.count {
                missing.push(format!(
                    "{} more {} approval(s){}",
                    r.count - have,
                    r.kind.as_str(),
                    r.role.as_deref().map(|x| format!(" by a {x}")).unwrap_or_default()
                ));
            }
        }
        if !missing.is_empty() {
            return deny(
                "approval-gate.unapproved",
                format!("version is not approved for {env}: needs {}", missing.join(", ")),
            );
        }
        ("approval-gate.approved", format!("version is approved for {env}"))
    } else {
        ("approval-gate.not-gated", format!("{env} is not a gated environment"))
    };
    if stage == Some(Stage::Deprecated) {
        return abstain("approval-gate.deprecated", format!("the version is deprecated; {why}"));
    }
    abstain(code, why)
}

fn order_gate(req: &Request, config: &Config) -> Decision {
    let Some(order) = config_list(config, "order") else {
        return abstain("approval-gate.not-gated", "no approval order configured");
    };
    let kind = req.resource.approval_kind.unwrap_or(ApprovalKind::Review);
    let env = effective_environment(req);
    let Some(order) = order.iter().map(|k| ApprovalKind::parse(k)).collect::<Option<Vec<_>>>()
    else {
        return deny("approval-gate.bad-config", "order names an unknown approval kind");
    };
    // A kind the order does not name may come at any time.
    if !order.contains(&kind) {
        return abstain("approval-gate.in-order", "approval kind not ordered");
    }
    for earlier in order {
        if earlier == kind {
            break;
        }
        if approvers_of_kind(req, env, earlier, None).is_empty() {
            return deny(
                "approval-gate.out-of-order",
                format!("a {} approval for {env} comes after a {} approval", kind.as_str(), earlier.as_str()),
            );
        }
    }
    abstain("approval-gate.in-order", "approval order respected")
}

export_policy!(ApprovalGate with_types_in modelvault_policy_sdk::bindings);

// Name, version, authors and description from Cargo.toml, for `policy list`.
policy_metadata!();
