//! Bundled policy `sensitivity-environment`: may this environment touch a
//! model of this sensitivity?
//!
//! - download, key-release: allow if the matrix allows the caller's
//!   environment for the model's sensitivity, else deny;
//! - approve: allow;
//! - deploy: allow if the matrix allows the target environment, else deny;
//! - other actions: allow.
//!
//! Config: `matrix.<sensitivity>` = comma-separated environments, or `*`.
//! Defaults: public and internal → `*`; confidential → staging,production;
//! restricted → production.

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
        if envs.iter().any(|e| e == "*" || e == env) {
            allow(
                "sensitivity-environment.allowed",
                format!("{} models may be used in {env}", s.as_str()),
            )
        } else {
            deny(
                "sensitivity-environment.denied",
                format!("{} models may not be used in {env} (allowed: {})", s.as_str(), envs.join(", ")),
            )
        }
    }
}

export_policy!(SensitivityEnvironment with_types_in modelvault_policy_sdk::bindings);

// Name, version, authors and description from Cargo.toml, for `policy list`.
policy_metadata!();
