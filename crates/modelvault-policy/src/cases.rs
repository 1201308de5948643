//! Policy test cases (`modelvault policy test`): a JSON file with optional
//! `defaults` (a request) and `cases`, each a partial request merged onto
//! the defaults (RFC 7386 JSON merge patch), an optional `config`, the
//! expected outcome and optionally the expected reason code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{CompiledPolicy, Outcome, PolicyHost, PolicyRequest};

/// A cases file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The request every case starts from.
    #[serde(default)]
    pub defaults: Value,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Name shown in the table.
    pub name: String,
    /// Merge patch onto `defaults`; absent (or `null`), the case is the
    /// defaults as they are.
    #[serde(default)]
    pub request: Value,
    /// Plugin configuration for this case.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Expected outcome.
    pub expect: Outcome,
    /// Expected reason code, if checked.
    #[serde(default)]
    pub reason_code: Option<String>,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Whether it matched.
    pub passed: bool,
    /// Expected outcome.
    pub expected: Outcome,
    /// Expected code, if any.
    pub expected_reason_code: Option<String>,
    /// What the plugin decided.
    pub outcome: Outcome,
    /// Its reason code.
    pub reason_code: String,
    /// Its reason.
    pub reason: String,
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Errors reading cases.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// The file is not valid JSON of the expected shape.
    #[error("cases file: {0}")]
    Parse(String),
    /// A case's merged request is not a valid request.
    #[error("case {name:?}: invalid request: {message}")]
    Request {
        /// The case.
        name: String,
        /// Why.
        message: String,
    },
}

/// Parses a cases file.
pub fn parse(text: &str) -> Result<CasesFile, CasesError> {
    serde_json::from_str(text).map_err(|e| CasesError::Parse(e.to_string()))
}

/// The merged request of one case.
pub fn request_of(file: &CasesFile, case: &Case) -> Result<PolicyRequest, CasesError> {
    let mut req = file.defaults.clone();
    // A case without `request` runs the defaults. (A top-level `null` patch
    // would, by RFC 7386, replace the whole document with null.)
    if !case.request.is_null() {
        merge_patch(&mut req, &case.request);
    }
    serde_json::from_value(req).map_err(|e| CasesError::Request {
        name: case.name.clone(),
        message: e.to_string(),
    })
}

/// Runs every case against one compiled policy.
pub fn run(
    host: &PolicyHost,
    policy: &CompiledPolicy,
    file: &CasesFile,
) -> Result<Vec<CaseResult>, CasesError> {
    let mut out = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let req = request_of(file, case)?;
        let config: Vec<(String, String)> = case
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let r = host.evaluate(policy, &req, &config);
        let passed = r.decision.outcome == case.expect
            && case
                .reason_code
                .as_ref()
                .is_none_or(|c| *c == r.decision.reason_code);
        out.push(CaseResult {
            name: case.name.clone(),
            passed,
            expected: case.expect,
            expected_reason_code: case.reason_code.clone(),
            outcome: r.decision.outcome,
            reason_code: r.decision.reason_code,
            reason: r.decision.reason,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_without_request_runs_the_defaults() {
        let file = parse(
            r#"{"defaults": {
                  "principal": {"id": "erin", "kind": "service"},
                  "action": "download",
                  "resource": {"namespace": "nlp", "model": "bert",
                               "sensitivity": "internal", "owner": "alice"},
                  "context": {"environment": "dev", "time": "2026-11-23T12:00:00Z",
                              "request_id": "case"}},
                "cases": [
                  {"name": "no request", "expect": "deny"},
                  {"name": "null request", "request": null, "expect": "deny"},
                  {"name": "patched", "request": {"action": "read"}, "expect": "abstain"}
                ]}"#,
        )
        .unwrap();
        let defaults: PolicyRequest = serde_json::from_value(file.defaults.clone()).unwrap();
        assert_eq!(request_of(&file, &file.cases[0]).unwrap(), defaults);
        assert_eq!(request_of(&file, &file.cases[1]).unwrap(), defaults);
        let patched = request_of(&file, &file.cases[2]).unwrap();
        assert_eq!(patched.action, crate::PolicyAction::Read);
        assert_eq!(patched.resource, defaults.resource);
    }
}
