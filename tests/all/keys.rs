//! Keys end to end: sealed key release to a workload and `pull
//! --client-side` (local store through the ciphertext route, S3 through
//! presigned URLs).

use serde_json::Value;

use crate::common::*;

fn release(app: &TestApp, token: &str, target: &str) -> reqwest::blocking::Response {
    let key = modelvault_release::ClientKey::generate();
    use base64::Engine as _;
    app.http()
        .post(format!("{}/v1/models/{target}/key-release", app.url))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "public_key": base64::engine::general_purpose::STANDARD.encode(key.public_bytes())
        }))
        .send()
        .unwrap()
}

fn client_side_round_trip(store: Option<&str>) {
    let app = TestApp::start_with_store(store);
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/edge"]));
    let src = tempfile::tempdir().unwrap();
    let big = modelvault_test_utils::pseudo_random((3 << 20) + 11, 5);
    std::fs::create_dir_all(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/w.bin"), &big).unwrap();
    std::fs::write(src.path().join("empty"), b"").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/edge@1", src.path().to_str().unwrap()],
    ));

    // The workload decrypts at the edge.
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    ok(app.cli(
        Some(&workload),
        &["pull", "nlp/edge@1", "--client-side", "-o", o],
    ));
    assert_eq!(std::fs::read(out.path().join("sub/w.bin")).unwrap(), big);
    assert!(std::fs::read(out.path().join("empty")).unwrap().is_empty());
    fails(
        app.cli(
            Some(&workload),
            &["pull", "nlp/edge@1", "--client-side", "-o", o],
        ),
        "exists",
    );
    // Without key-release: refused; a data scientist may download but not
    // receive keys.
    fails(
        app.cli(
            Some(&ds),
            &["pull", "nlp/edge@1", "--client-side", "-o", o, "--force"],
        ),
        "key-release",
    );
    assert_eq!(release(&app, &auditor, "nlp/edge/versions/1").status(), 403);
    let bad = app
        .http()
        .post(format!(
            "{}/v1/models/nlp/edge/versions/1/key-release",
            app.url
        ))
        .bearer_auth(&workload)
        .json(&serde_json::json!({"public_key": "AAAA"}))
        .send()
        .unwrap();
    assert_eq!(error_code(bad).0, 400);

    // The response: sealed key and where the ciphertext is.
    let r: Value = release(&app, &workload, "nlp/edge/versions/1")
        .json()
        .unwrap();
    assert_eq!(r["dek_generation"], 1);
    assert_eq!(
        r["suite"],
        "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"
    );
    let f = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "sub/w.bin")
        .unwrap()
        .clone();
    if store.is_some() {
        // S3: presigned, no token needed, and it is ciphertext.
        assert_eq!(f["presigned"], true, "{f}");
        let bytes = reqwest::blocking::get(f["url"].as_str().unwrap())
            .unwrap()
            .bytes()
            .unwrap();
        assert_eq!(bytes.len() as u64, f["ciphertext_size"].as_u64().unwrap());
        assert!(!modelvault_test_utils::contains(&bytes, &big[..64]));
    } else {
        assert_eq!(f["presigned"], false);
        let resp = app.get(Some(&workload), f["url"].as_str().unwrap());
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().unwrap();
        assert_eq!(bytes.len() as u64, f["ciphertext_size"].as_u64().unwrap());
        assert!(!modelvault_test_utils::contains(&bytes, &big[..64]));
        assert_eq!(
            app.get(Some(&auditor), f["url"].as_str().unwrap()).status(),
            403
        );
    }
    // Every release is audited (durable intent with the key versions).
    let records: Vec<Value> = ok(app.cli(
        Some(&auditor),
        &["audit", "export", "--action", "key-release"],
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let intent = records
        .iter()
        .find(|r| r["type"] == "intent")
        .expect("intent");
    assert_eq!(intent["principal"]["id"], "serving");
    assert_eq!(intent["keys"][0]["kek_version"], 1);
    let metrics = app.get(None, "/metrics").text().unwrap();
    assert!(
        metrics.contains("modelvault_key_releases_total 2"),
        "{metrics}"
    );
}

#[test]
fn key_release_and_client_side_pull_on_the_local_store() {
    client_side_round_trip(None);
}

#[test]
fn key_release_and_client_side_pull_on_s3_with_presigned_urls() {
    let Some(loc) = modelvault_test_utils::s3_location() else {
        return;
    };
    client_side_round_trip(Some(&loc.url));
}
