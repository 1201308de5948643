//! Example policies in other languages, built from source by
//! scripts/test.sh, tested offline and installed into a running server.

use crate::common::*;

/// The built component named by `var`, or `None` (a failure when
/// `MODELVAULT_REQUIRE_EXAMPLES=1`, as scripts/test.sh sets).
fn example(var: &str) -> Option<std::path::PathBuf> {
    match std::env::var(var) {
        Ok(p) if std::path::Path::new(&p).exists() => Some(p.into()),
        _ => {
            assert!(
                std::env::var("MODELVAULT_REQUIRE_EXAMPLES").as_deref() != Ok("1"),
                "{var} is not set or missing: run scripts/test.sh"
            );
            eprintln!("note: {var} not set; run scripts/test.sh to build the example policies");
            None
        }
    }
}

#[test]
fn python_policy_decides_in_a_running_server() {
    let Some(wasm) = example("MODELVAULT_TEST_PY_POLICY") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/examples/python-allow-listed-owners");
    // Offline: its cases pass.
    let out = ok(cli(
        "http://127.0.0.1:9",
        None,
        &[
            "policy",
            "test",
            wasm.to_str().unwrap(),
            dir.join("cases.json").to_str().unwrap(),
        ],
    ));
    assert!(out.contains(" 0 failed"), "{out}");

    let app = TestApp::start_configured(None, |cfg| {
        cfg.push_str("\n[policy.config.allow-listed-owners]\nowners = \"alice\"\n");
    });
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    let bob = app.token("bob", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    for (who, model) in [(&alice, "nlp/a"), (&bob, "nlp/b")] {
        ok(app.cli(Some(who), &["model", "create", model]));
        ok(app.cli(
            Some(who),
            &["push", &format!("{model}@1"), src.path().to_str().unwrap()],
        ));
    }
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "allow-listed-owners",
            wasm.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        app.get(Some(&alice), "/v1/models/nlp/a/versions/1/files/w")
            .status(),
        200
    );
    let (s, _, body) = error_code(app.get(Some(&bob), "/v1/models/nlp/b/versions/1/files/w"));
    assert_eq!(s, 403);
    assert_eq!(body["error"]["plugin"], "allow-listed-owners", "{body}");
    assert_eq!(body["error"]["reason_code"], "owners.not-listed");
}

#[test]
fn javascript_policy_decides_in_a_running_server() {
    let Some(wasm) = example("MODELVAULT_TEST_JS_POLICY") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/examples/javascript-business-hours");
    let out = ok(cli(
        "http://127.0.0.1:9",
        None,
        &[
            "policy",
            "test",
            wasm.to_str().unwrap(),
            dir.join("cases.json").to_str().unwrap(),
        ],
    ));
    assert!(out.contains(" 0 failed"), "{out}");

    // Gate staging with a window that is always closed.
    let app = TestApp::start_configured(None, |cfg| {
        cfg.push_str(
            "\n[policy.config.business-hours]\nhours = \"0-0\"\nenvironments = \"staging\"\n",
        );
    });
    let staging = app.token_in("sam", &["data-scientist"], &["nlp"], "staging", "sam");
    let dev = app.token_in("dana", &["data-scientist"], &["nlp"], "dev", "dana");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(Some(&dev), &["model", "create", "nlp/m"]));
    ok(app.cli(
        Some(&dev),
        &["push", "nlp/m@1", src.path().to_str().unwrap()],
    ));
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "business-hours",
            wasm.to_str().unwrap(),
        ],
    ));
    let file = "/v1/models/nlp/m/versions/1/files/w";
    let (s, _, body) = error_code(app.get(Some(&staging), file));
    assert_eq!(s, 403);
    assert_eq!(body["error"]["plugin"], "business-hours", "{body}");
    assert_eq!(body["error"]["reason_code"], "hours.closed");
    assert_eq!(
        app.get(Some(&dev), file).status(),
        200,
        "dev is not gated: the JS policy abstains"
    );
}
