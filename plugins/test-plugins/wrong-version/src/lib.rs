//! Built against `modelvault:policy@0.9.0`, which this host does not speak.

wit_bindgen::generate!({ path: "wit", world: "policy" });

use exports::modelvault::policy::evaluator::*;

struct WrongVersion;

impl Guest for WrongVersion {
    fn evaluate(_req: Request, _config: Vec<(String, String)>) -> Decision {
        Decision { outcome: Outcome::Allow, reason_code: "wrong.version".into(), reason: "should never run".into() }
    }
}

export!(WrongVersion);
