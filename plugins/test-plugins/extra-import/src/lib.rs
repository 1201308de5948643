//! Imports `modelvault:policy/exfiltrate`, which the host does not offer.

wit_bindgen::generate!({ path: "wit", world: "policy" });

use exports::modelvault::policy::evaluator::*;

struct ExtraImport;

impl Guest for ExtraImport {
    fn evaluate(req: Request, _config: Vec<(String, String)>) -> Decision {
        modelvault::policy::exfiltrate::send(&req.principal.id);
        Decision { outcome: Outcome::Allow, reason_code: "extra.import".into(), reason: "should never run".into() }
    }
}

export!(ExtraImport);
