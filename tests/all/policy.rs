//! Policy plugins end to end: the bundled chain deciding real downloads,
//! approvals and separation of duties, deployments, installing and removing
//! plugins without a restart, shadow mode, and offline eval/test.

use crate::common::*;

fn plugin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
}

fn cases(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .join(name)
        .join("cases.json")
}

#[test]
fn restricted_model_reaches_production_after_two_distinct_approvals() {
    let app = TestApp::start();
    // A fresh server carries the three bundled policies.
    let listed = ok(app.cli(Some(&app.admin), &["policy", "list", "--output", "json"]));
    let list: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "approval-gate",
            "sensitivity-environment",
            "separation-of-duties"
        ]
    );
    for p in list.as_array().unwrap() {
        for field in [
            "name",
            "sha256",
            "size",
            "mode",
            "installed_by",
            "installed_at",
        ] {
            assert!(!p[field].is_null(), "{field} missing in {p}");
        }
        assert_eq!(p["mode"], "enforce");
    }

    let alice = app.token_in("alice", &["data-scientist"], &["nlp"], "dev", "alice");
    ok(app.cli(
        Some(&alice),
        &[
            "model",
            "create",
            "nlp/fraud",
            "--sensitivity",
            "restricted",
        ],
    ));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w.bin"), b"weights of a restricted model").unwrap();
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/fraud@1", src.path().to_str().unwrap()],
    ));
    let file = "/v1/models/nlp/fraud/versions/1/files/w.bin";

    // The uploader in dev: restricted models never reach dev.
    let (s, c, body) = error_code(app.get(Some(&alice), file));
    assert_eq!((s, c.as_str()), (403, "policy_denied"));
    assert_eq!(body["error"]["plugin"], "sensitivity-environment");
    assert_eq!(
        body["error"]["reason_code"],
        "sensitivity-environment.denied"
    );

    // An ml-engineer bound to production: not approved yet.
    let erin = app.token_in("erin", &["ml-engineer"], &["nlp"], "production", "erin");
    let (s, _, body) = error_code(app.get(Some(&erin), file));
    assert_eq!(s, 403);
    assert_eq!(body["error"]["plugin"], "approval-gate", "{body}");

    // A data scientist cannot approve (no permission).
    fails(
        app.cli(Some(&alice), &["approve", "nlp/fraud@1", "--env", "dev"]),
        "forbidden",
    );
    // A manager must act in the environment it approves for.
    let mia_dev = app.token_in("mia-dev", &["model-manager"], &["nlp"], "dev", "mia");
    fails(
        app.cli(
            Some(&mia_dev),
            &["approve", "nlp/fraud@1", "--env", "production"],
        ),
        "bound to production",
    );
    // The uploader holding model-manager cannot approve her own version.
    let alice_mgr = app.token_in(
        "alice-mgr",
        &["model-manager"],
        &["nlp"],
        "production",
        "alice",
    );
    let err = fails(
        app.cli(
            Some(&alice_mgr),
            &["approve", "nlp/fraud@1", "--env", "production"],
        ),
        "policy_denied",
    );
    assert!(err.contains("uploader"), "{err}");

    // One manager approves (twice: counts once): still one short.
    let mia = app.token_in("mia", &["model-manager"], &["nlp"], "production", "mia");
    ok(app.cli(
        Some(&mia),
        &["approve", "nlp/fraud@1", "--env", "production"],
    ));
    ok(app.cli(
        Some(&mia),
        &["approve", "nlp/fraud@1", "--env", "production"],
    ));
    let (_, _, body) = error_code(app.get(Some(&erin), file));
    assert_eq!(body["error"]["plugin"], "separation-of-duties", "{body}");

    // A second, distinct manager: the engineer in production may download.
    let noah = app.token_in("noah", &["model-manager"], &["nlp"], "production", "noah");
    ok(app.cli(
        Some(&noah),
        &["approve", "nlp/fraud@1", "--env", "production"],
    ));
    let r = app.get(Some(&erin), file);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().unwrap().as_ref(),
        b"weights of a restricted model"
    );
    let shown = ok(app.cli(
        Some(&erin),
        &["model", "show", "nlp/fraud@1", "--output", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["approvals"].as_array().unwrap().len(), 2, "{v}");

    // Revoking one approval closes the door again (recorded, not erased).
    let r = app
        .http()
        .delete(format!(
            "{}/v1/models/nlp/fraud/versions/1/approvals/production",
            app.url
        ))
        .bearer_auth(&noah)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(error_code(app.get(Some(&erin), file)).0, 403);
    ok(app.cli(
        Some(&noah),
        &["approve", "nlp/fraud@1", "--env", "production"],
    ));

    // Deploy to production, then the deployed-production alias resolves.
    ok(app.cli(
        Some(&erin),
        &["deploy", "nlp/fraud@1", "--env", "production"],
    ));
    let d: serde_json::Value = app
        .get(Some(&erin), "/v1/models/nlp/fraud/deployments")
        .json()
        .unwrap();
    assert_eq!(d["deployments"][0]["version"], "1");
    assert_eq!(d["deployments"][0]["environment"], "production");
    let r = app.get(
        Some(&erin),
        "/v1/models/nlp/fraud/versions/deployed-production/files/w.bin",
    );
    assert_eq!(r.status(), 200);
    // Deploying to another environment than one's own is refused.
    fails(
        app.cli(Some(&erin), &["deploy", "nlp/fraud@1", "--env", "staging"]),
        "bound to staging",
    );
}

#[test]
fn installing_and_removing_policies_without_restart() {
    let app = TestApp::start();
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&alice), &["model", "create", "nlp/m"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/m@1", src.path().to_str().unwrap()],
    ));
    let file = "/v1/models/nlp/m/versions/1/files/w";
    assert_eq!(
        app.get(Some(&alice), file).status(),
        200,
        "internal model in dev: allowed"
    );

    // Only admins manage policies.
    fails(app.cli(Some(&alice), &["policy", "list"]), "forbidden");
    // Garbage and wrong components are refused with a clear error.
    let junk = src.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    fails(
        app.cli(
            Some(&app.admin),
            &["policy", "install", "junk", junk.to_str().unwrap()],
        ),
        "invalid_policy",
    );

    // Remove every policy: everything is denied.
    for name in [
        "approval-gate",
        "sensitivity-environment",
        "separation-of-duties",
    ] {
        ok(app.cli(Some(&app.admin), &["policy", "remove", name]));
    }
    let (s, _, body) = error_code(app.get(Some(&alice), file));
    assert_eq!(s, 403);
    assert_eq!(body["error"]["reason_code"], "policy.none-installed");
    fails(
        app.cli(Some(&app.admin), &["policy", "remove", "approval-gate"]),
        "not found",
    );

    // Install one back: allowed again, no restart.
    let se = plugin("sensitivity_environment");
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "sensitivity-environment",
            se.to_str().unwrap(),
        ],
    ));
    assert_eq!(app.get(Some(&alice), file).status(), 200);

    // A shadow plugin that would deny (approval-gate configured to gate dev
    // is not possible per install, so use separation-of-duties on a request
    // it denies: none here) is recorded but never decides; install the
    // sensitivity policy under a second name in shadow mode on a
    // confidential model in dev, which it denies.
    ok(app.cli(
        Some(&alice),
        &["model", "create", "nlp/c", "--sensitivity", "confidential"],
    ));
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/c@1", src.path().to_str().unwrap()],
    ));
    ok(app.cli(
        Some(&app.admin),
        &["policy", "remove", "sensitivity-environment"],
    ));
    let ag = plugin("approval_gate");
    ok(app.cli(
        Some(&app.admin),
        &["policy", "install", "gate", ag.to_str().unwrap()],
    ));
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "watch",
            se.to_str().unwrap(),
            "--shadow",
        ],
    ));
    let listed = ok(app.cli(Some(&app.admin), &["policy", "list", "--output", "json"]));
    assert!(listed.contains("\"shadow\""), "{listed}");
    // gate abstains in dev, watch (shadow) denies: no enforcing allow → deny
    // with "no-allow", not watch's deny.
    let (_, _, body) = error_code(app.get(Some(&alice), "/v1/models/nlp/c/versions/1/files/w"));
    assert_eq!(body["error"]["reason_code"], "policy.no-allow", "{body}");
    let log = app.log.lock().unwrap().clone();
    assert!(
        log.contains("sensitivity-environment.denied"),
        "the shadow decision is recorded"
    );
}

#[test]
fn offline_eval_and_test() {
    let app = TestApp::start();
    for (name, file) in [
        ("sensitivity-environment", "sensitivity_environment"),
        ("approval-gate", "approval_gate"),
        ("separation-of-duties", "separation_of_duties"),
    ] {
        let out = ok(app.cli(
            None,
            &[
                "policy",
                "test",
                plugin(file).to_str().unwrap(),
                cases(name).to_str().unwrap(),
            ],
        ));
        assert!(out.contains(" 0 failed"), "{out}");
    }
    // A wrong expectation fails the run.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(cases("approval-gate")).unwrap();
    let broken = text.replacen("\"expect\": \"deny\"", "\"expect\": \"allow\"", 1);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, broken).unwrap();
    let o = app.cli(
        None,
        &[
            "policy",
            "test",
            plugin("approval_gate").to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(stdout(&o).contains("FAIL"));
    // eval prints the decision as JSON.
    let req = dir.path().join("req.json");
    let cases_doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut r = cases_doc["defaults"].clone();
    r["context"]["environment"] = "production".into();
    std::fs::write(&req, serde_json::to_vec(&r).unwrap()).unwrap();
    let out = ok(app.cli(
        None,
        &[
            "policy",
            "eval",
            plugin("approval_gate").to_str().unwrap(),
            "--request",
            req.to_str().unwrap(),
        ],
    ));
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["reason_code"], "approval-gate.unapproved");
}

#[test]
fn a_second_server_sees_installs_within_the_refresh_interval() {
    let app = TestApp::start_configured(None, |cfg| {
        *cfg = cfg.replace("refresh_secs = 10", "refresh_secs = 1");
    });
    let peer = app.start_peer();
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&alice), &["model", "create", "nlp/m"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/m@1", src.path().to_str().unwrap()],
    ));
    let file = "/v1/models/nlp/m/versions/1/files/w";
    let peer_get = || {
        app.http()
            .get(format!("{}{file}", peer.url))
            .bearer_auth(&alice)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(peer_get(), 200);
    // Removing the only allowing policy on one server denies on the other
    // within the refresh interval.
    ok(app.cli(
        Some(&app.admin),
        &["policy", "remove", "sensitivity-environment"],
    ));
    let mut seen = false;
    for _ in 0..50 {
        if peer_get() == 403 {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(seen, "the peer never saw the removal");
}

#[test]
fn required_policies_cannot_be_removed_and_fail_closed() {
    let app = TestApp::start_configured(None, |cfg| {
        assert!(cfg.contains("required = []"), "{cfg}");
        *cfg = cfg
            .replace("required = []", "required = [\"sensitivity-environment\"]")
            .replace("refresh_secs = 10", "refresh_secs = 1");
    });
    fails(
        app.cli(
            Some(&app.admin),
            &["policy", "remove", "sensitivity-environment"],
        ),
        "policy_required",
    );
    let se = plugin("sensitivity_environment");
    fails(
        app.cli(
            Some(&app.admin),
            &[
                "policy",
                "install",
                "sensitivity-environment",
                se.to_str().unwrap(),
                "--shadow",
            ],
        ),
        "policy_required",
    );
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&alice), &["model", "create", "nlp/m"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/m@1", src.path().to_str().unwrap()],
    ));
    let file = "/v1/models/nlp/m/versions/1/files/w";
    assert_eq!(app.get(Some(&alice), file).status(), 200);
    // Someone with bucket access deletes the required policy's records: the
    // next reload fails closed and every decision is a deny.
    std::fs::remove_dir_all(app.store_dir().join("policies/sensitivity-environment")).unwrap();
    let mut denied = None;
    for _ in 0..50 {
        let (s, _, body) = error_code(app.get(Some(&alice), file));
        if s == 403 {
            denied = Some(body);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let body = denied.expect("never denied after the required policy vanished");
    assert_eq!(body["error"]["reason_code"], "policy.unavailable", "{body}");
    assert!(
        !body.to_string().contains("sensitivity-environment"),
        "the cause stays in the log: {body}"
    );
}
