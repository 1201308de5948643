//! A policy as written before interface 0.2.0: built against the frozen
//! `modelvault:policy@0.1.0` WIT. Allows a download when the version has an
//! approval for the caller's environment, denies it otherwise; abstains on
//! everything else.

wit_bindgen::generate!({ path: "../../../wit/since_v0.1.0", world: "policy" });

use exports::modelvault::policy::evaluator::*;

struct LegacyReviewGate;

impl Guest for LegacyReviewGate {
    fn evaluate(req: Request, _config: Vec<(String, String)>) -> Decision {
        if req.action != Action::Download {
            return Decision { outcome: Outcome::Abstain, reason_code: "legacy.not-gated".into(), reason: "not a download".into() };
        }
        let env = req.context.environment.clone();
        if req.resource.approvals.iter().any(|a| a.environment == env) {
            Decision { outcome: Outcome::Allow, reason_code: "legacy.approved".into(), reason: format!("approved for {env}") }
        } else {
            Decision { outcome: Outcome::Deny, reason_code: "legacy.unapproved".into(), reason: format!("no approval for {env} in the 0.1.0 view") }
        }
    }
}

export!(LegacyReviewGate);
