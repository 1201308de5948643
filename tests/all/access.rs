//! 401 / 403 / 404 on every kind of route, with the JSON error body.

use crate::common::*;

#[test]
fn tokens_roles_and_namespaces() {
    let app = TestApp::start();
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    let cv = app.token("carol", &["data-scientist"], &["cv"]);
    let auditor = app.token("audrey", &["auditor"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/bert"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"weights").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/bert@1", src.path().to_str().unwrap()],
    ));
    let file = "/v1/models/nlp/bert/versions/1/files/w";

    // 401: no token, garbage, unknown id, wrong secret, expired.
    for t in [
        None,
        Some("garbage"),
        Some("mv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let (s, c, _) = error_code(app.get(t, file));
        assert_eq!((s, c.as_str()), (401, "unauthenticated"), "{t:?}");
    }
    let mut wrong = ds.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(error_code(app.get(Some(&wrong), file)).0, 401);
    let short = ok(app.cli(
        Some(&app.admin),
        &[
            "token",
            "create",
            "--name",
            "brief",
            "--role",
            "data-scientist",
            "--namespace",
            "nlp",
            "--ttl",
            "1s",
        ],
    ));
    let short = short.trim();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(error_code(app.get(Some(short), file)).0, 401);
    let r = app.get(None, "/v1/models");
    assert_eq!(r.status(), 401);
    fails(app.cli(None, &["model", "list"]), "unauthenticated");
    // healthz needs no token.
    assert_eq!(app.get(None, "/healthz").status(), 200);

    // 403: the permission is missing.
    let (s, c, body) = error_code(app.get(Some(&auditor), file));
    assert_eq!((s, c.as_str()), (403, "forbidden"), "{body}");
    assert_eq!(
        error_code(app.get(Some(&app.admin), file)).0,
        403,
        "admins do not download by default"
    );
    fails(
        app.cli(Some(&auditor), &["model", "create", "nlp/other"]),
        "forbidden",
    );
    fails(
        app.cli(Some(&ds), &["token", "create", "--role", "admin"]),
        "forbidden",
    );
    assert_eq!(
        error_code(app.get(Some(&auditor), "/v1/models/nlp/bert")).0,
        200
    );

    // Without `download`, a missing model answers 403 too: existence does
    // not leak through the download route.
    let (s, c, _) = error_code(app.get(
        Some(&auditor),
        "/v1/models/nlp/ghost/versions/latest/files/w",
    ));
    assert_eq!((s, c.as_str()), (403, "forbidden"));
    // Query errors are JSON too.
    let (s, c, _) = error_code(app.get(Some(&auditor), "/v1/models?bogus=1"));
    assert_eq!((s, c.as_str()), (400, "invalid_request"));

    // 404: a namespace outside the token's looks exactly like a missing one.
    let outside = error_code(app.get(Some(&cv), "/v1/models/nlp/bert"));
    let missing = error_code(app.get(Some(&cv), "/v1/models/cv/bert"));
    assert_eq!((outside.0, outside.1.as_str()), (404, "not_found"));
    assert_eq!((missing.0, missing.1.as_str()), (404, "not_found"));
    assert_eq!(error_code(app.get(Some(&cv), file)).0, 404);
    assert_eq!(
        error_code(app.get(Some(&cv), "/v1/models/nlp/bert/versions")).0,
        404
    );
    assert_eq!(
        error_code(app.get(Some(&cv), "/v1/models?namespace=nlp")).0,
        404
    );
    fails(
        app.cli(Some(&cv), &["model", "create", "nlp/sneaky"]),
        "not found",
    );
    let listed = ok(app.cli(Some(&cv), &["model", "list", "--output", "json"]));
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        v["models"].as_array().unwrap().len(),
        0,
        "other namespaces are not listed"
    );

    // A token cannot be minted beyond its creator's namespaces, and names
    // are unique.
    let manager = app.token("nlp-admin", &["admin"], &["nlp"]);
    fails(
        app.cli(
            Some(&manager),
            &["token", "create", "--role", "auditor", "--namespace", "cv"],
        ),
        "forbidden",
    );
    fails(
        app.cli(
            Some(&manager),
            &["token", "create", "--role", "auditor", "--namespace", "*"],
        ),
        "forbidden",
    );
    ok(app.cli(
        Some(&manager),
        &[
            "token",
            "create",
            "--role",
            "auditor",
            "--name",
            "nlp-auditor",
        ],
    ));
    fails(
        app.cli(
            Some(&app.admin),
            &[
                "token",
                "create",
                "--role",
                "auditor",
                "--name",
                "nlp-auditor",
            ],
        ),
        "already exists",
    );

    // The token secret never appears in the server log or the store.
    let log = app.log.lock().unwrap().clone();
    let secret = token_secret(&ds);
    assert!(!log.contains(secret));
    for (f, bytes) in stored_files(&app.data_dir()) {
        assert!(
            !modelvault_test_utils::contains(&bytes, secret.as_bytes()),
            "{}",
            f.display()
        );
    }
}
