//! A bucket writer rolling state back on the local store: a deleted
//! version's records and blobs put back from a copy, a DEK rotation undone,
//! the audit signing key deleted; and a key release to a low-order client
//! key. Each is refused or recorded; none serves a revoked state silently.

use base64::Engine as _;
use serde_json::Value;

use crate::common::*;

fn push(app: &TestApp, token: &str, target: &str, data: &[u8]) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), data).unwrap();
    ok(app.cli(Some(token), &["push", target, src.path().to_str().unwrap()]));
}

fn release(app: &TestApp, token: &str, target: &str, public_key: &[u8]) -> (u16, Value) {
    let resp = app
        .http()
        .post(format!("{}/v1/models/{target}/key-release", app.url))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "public_key": base64::engine::general_purpose::STANDARD.encode(public_key)
        }))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn a_low_order_client_key_leaves_no_open_intent() {
    let app = TestApp::start();
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/edge"]));
    push(&app, &ds, "nlp/edge@1", b"weights");
    let mut one = [0u8; 32];
    one[0] = 1;
    // A point of order 8 on Curve25519.
    let order_8: Vec<u8> = (0..32)
        .map(|i| {
            u8::from_str_radix(
                &"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
                    [2 * i..2 * i + 2],
                16,
            )
            .unwrap()
        })
        .collect();
    for point in [[0u8; 32].to_vec(), one.to_vec(), order_8] {
        let (status, body) = release(&app, &workload, "nlp/edge/versions/1", &point);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    // Every key-release intent in the trail has its completion.
    let mut report = Value::Null;
    for _ in 0..50 {
        report = serde_json::from_str(&ok(
            app.cli(Some(&auditor), &["audit", "verify", "--output", "json"])
        ))
        .unwrap();
        let open: usize = report["chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["open_intents"].as_array().map_or(0, Vec::len))
            .sum();
        if open == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("key-release intents without a completion: {report}");
}
