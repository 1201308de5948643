//! Bundled policy `sensitivity-environment`: may this environment touch a
//! model of this sensitivity?
//!
//! - download, key-release: allow if the matrix allows the caller's
//!   environment for the model's sensitivity, else deny;
//! - approve: allow;
//! - deploy: allow if the matrix allows the target environment, else deny;
//! - other actions: allow.
//!
//! - download, key-release, deploy of a model whose sensitivity and
//!   environment `require_signature` names: deny unless the version carries
//!   an OpenSSF model signature by a signer its namespace trusts whose
//!   digests match the version's files (`sensitivity-environment.unsigned`).
//!
//! Config: `matrix.<sensitivity>` = comma-separated environments, or `*`.
//! Defaults: public and internal → `*`; confidential → staging,production;
//! restricted → production. `require_signature` = comma-separated
//! `<sensitivity>:<environment>` pairs (default none), e.g.
//! `restricted:production`.

// A lean component: no std, nothing imported (the SDK supplies the
// runtime), about half the cost of a std one per fresh-instance decision.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};
use modelvault_policy_sdk::*;

struct SensitivityEnvironment;

fn allowed_envs(config: &[(String, String)], s: Sensitivity) -> Vec<String> {
    let key = format!("matrix.{}", s.as_str());
    if let Some(list) = config_list(config, &key) {
        return list;
    }
    match s {
        Sensitivity::Public | Sensitivity::Internal => vec!["*".into()],
        Sensitivity::Confidential => vec!["staging".into(), "production".into()],
        Sensitivity::Restricted => vec!["production".into()],
    }
}

impl Guest for SensitivityEnvironment {
    fn evaluate(req: Request, config: Config) -> Decision {
        let check = match req.action {
            Action::Download | Action::KeyRelease | Action::Deploy => true,
            _ => false,
        };
        if !check {
            return allow("sensitivity-environment.not-gated", "action not gated by sensitivity");
        }
        let env = effective_environment(&req);
        let s = req.resource.sensitivity;
        let envs = allowed_envs(&config, s);
        if !envs.iter().any(|e| e == "*" || e == env) {
            return deny(
                "sensitivity-environment.denied",
                format!("{} models may not be used in {env} (allowed: {})", s.as_str(), envs.join(", ")),
            );
        }
        let pair = format!("{}:{env}", s.as_str());
        let wants_signature = config_list(&config, "require_signature")
            .is_some_and(|l| l.iter().any(|p| *p == pair));
        if wants_signature {
            let signature = req.resource.facts.as_ref().and_then(|f| f.signature.as_ref());
            match signature {
                Some(sig) if sig.trusted && sig.files_match => {}
                Some(sig) if !sig.trusted => {
                    return deny(
                        "sensitivity-environment.unsigned",
                        format!("{} models in {env} need a model signature by a trusted signer; this one's signer is not trusted", s.as_str()),
                    );
                }
                Some(_) => {
                    return deny(
                        "sensitivity-environment.unsigned",
                        format!("{} models in {env} need a model signature whose digests match the files; this one's do not", s.as_str()),
                    );
                }
                None => {
                    return deny(
                        "sensitivity-environment.unsigned",
                        format!("{} models in {env} need a model signature by a trusted signer; the version has none", s.as_str()),
                    );
                }
            }
        }
        allow(
            "sensitivity-environment.allowed",
            format!("{} models may be used in {env}", s.as_str()),
        )
    }
}

export_policy!(SensitivityEnvironment with_types_in modelvault_policy_sdk::bindings);

// Name, version, authors and description from Cargo.toml, for `policy list`.
policy_metadata!();
