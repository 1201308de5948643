//! Bundled policy `separation-of-duties`: two people, neither the uploader.
//!
//! - download, key-release: in a gated environment deny unless two distinct
//!   approvals for it exist, neither by the uploader, else abstain;
//! - approve: deny if the approver is the version's uploader, else abstain;
//! - deploy: as download, for the target environment;
//! - other actions: abstain.
//!
//! Config: `gated` = comma-separated environments (default `production`),
//! `required_approvals` (default 2).

// A lean component: no std, nothing imported (the SDK supplies the
// runtime), about half the cost of a std one per fresh-instance decision.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};
use modelvault_policy_sdk::*;

struct SeparationOfDuties;

impl Guest for SeparationOfDuties {
    fn evaluate(req: Request, config: Config) -> Decision {
        let uploader = req.resource.uploader.clone().unwrap_or_default();
        match req.action {
            Action::Approve => {
                if !uploader.is_empty() && req.principal.id == uploader {
                    return deny(
                        "separation-of-duties.self-approval",
                        "the uploader of a version cannot approve it",
                    );
                }
                return abstain("separation-of-duties.ok", "approver is not the uploader");
            }
            Action::Download | Action::KeyRelease | Action::Deploy => {}
            _ => return abstain("separation-of-duties.not-gated", "action not gated"),
        }
        let gated = config_list(&config, "gated").unwrap_or_else(|| vec!["production".into()]);
        let env = effective_environment(&req);
        if !gated.iter().any(|g| g == env) {
            return abstain("separation-of-duties.not-gated", format!("{env} is not a gated environment"));
        }
        let required: usize = match config_value(&config, "required_approvals") {
            None => 2,
            Some(v) => match v.trim().parse() {
                Ok(n) if n >= 1 => n,
                // Fail closed on a configuration error rather than guess.
                _ => {
                    return deny(
                        "separation-of-duties.misconfigured",
                        format!("required_approvals {v:?} is not a positive number"),
                    );
                }
            },
        };
        let distinct: Vec<String> = approvers_for(&req, env).into_iter().filter(|a| *a != uploader).collect();
        if distinct.len() >= required {
            abstain(
                "separation-of-duties.satisfied",
                format!("{} distinct approvals for {env}, none by the uploader", distinct.len()),
            )
        } else {
            deny(
                "separation-of-duties.insufficient-approvals",
                format!(
                    "{env} needs {required} distinct approvals not by the uploader; found {}",
                    distinct.len()
                ),
            )
        }
    }
}

export_policy!(SeparationOfDuties with_types_in modelvault_policy_sdk::bindings);

// Name, version, authors and description from Cargo.toml, for `policy list`.
policy_metadata!();
