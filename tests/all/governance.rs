//! Governance end to end: policy replay against the recorded audit trail
//! (through the server and offline from an export).

use crate::common::*;

fn plugin(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
        .to_string_lossy()
        .into_owned()
}

fn json(o: std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap()
}

/// An internal model downloaded (allowed) and a confidential one refused
/// in dev, so the trail holds decisions both ways.
fn decisions_both_ways(app: &TestApp) -> String {
    let alice = app.token_in(
        "alice",
        &["data-scientist", "ml-engineer"],
        &["nlp"],
        "dev",
        "alice",
    );
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w.bin"), b"weights").unwrap();
    for (model, sensitivity) in [("open", "internal"), ("secret", "confidential")] {
        ok(app.cli(
            Some(&alice),
            &[
                "model",
                "create",
                &format!("nlp/{model}"),
                "--sensitivity",
                sensitivity,
            ],
        ));
        ok(app.cli(
            Some(&alice),
            &[
                "push",
                &format!("nlp/{model}@1"),
                src.path().to_str().unwrap(),
            ],
        ));
    }
    let open = app.get(Some(&alice), "/v1/models/nlp/open/versions/1/files/w.bin");
    assert_eq!(open.status(), 200);
    let (s, code, _) =
        error_code(app.get(Some(&alice), "/v1/models/nlp/secret/versions/1/files/w.bin"));
    assert_eq!((s, code.as_str()), (403, "policy_denied"));
    alice
}

#[test]
fn policy_replay_reports_the_decisions_a_candidate_would_flip() {
    let app = TestApp::start();
    decisions_both_ways(&app);
    let admin = Some(app.admin.as_str());
    let se = plugin("sensitivity_environment");

    // The installed component with its installed (default) config replays
    // every recorded decision unchanged: the recorded input is complete.
    let same = json(app.cli(
        admin,
        &[
            "policy",
            "replay",
            &se,
            "--replaces",
            "sensitivity-environment",
            "--output",
            "json",
        ],
    ));
    assert!(same["evaluated"].as_u64().unwrap() >= 2, "{same}");
    assert_eq!(same["allow_to_deny"], 0, "{same}");
    assert_eq!(same["deny_to_allow"], 0, "{same}");
    assert_eq!(same["unchanged"], same["evaluated"]);
    assert_eq!(same["replaces"], "sensitivity-environment");

    // Internal models kept out of dev: the one dev download flips to deny.
    let stricter = json(app.cli(
        admin,
        &[
            "policy",
            "replay",
            &se,
            "--replaces",
            "sensitivity-environment",
            "--config",
            "matrix.internal=staging,production",
            "--since",
            "1h",
            "--output",
            "json",
        ],
    ));
    assert_eq!(stricter["allow_to_deny"], 1, "{stricter}");
    assert_eq!(stricter["deny_to_allow"], 0, "{stricter}");
    let ex = &stricter["examples"][0];
    assert_eq!(ex["principal"], "alice");
    assert_eq!(ex["action"], "download");
    assert_eq!(ex["resource"], "nlp/open@1/w.bin");
    assert_eq!(ex["environment"], "dev");
    assert_eq!(ex["old"]["outcome"], "allow");
    assert_eq!(ex["old"]["reason_code"], "sensitivity-environment.allowed");
    assert_eq!(ex["new"]["outcome"], "deny");
    assert_eq!(ex["new"]["plugin"], "sensitivity-environment");
    assert_eq!(ex["new"]["reason_code"], "sensitivity-environment.denied");
    assert!(ex["request_id"].as_str().unwrap().len() > 8);

    // Confidential models let into dev: the refused download flips to allow.
    let looser = json(app.cli(
        admin,
        &[
            "policy",
            "replay",
            &se,
            "--replaces",
            "sensitivity-environment",
            "--config",
            "matrix.confidential=*",
            "--output",
            "json",
        ],
    ));
    assert_eq!(looser["deny_to_allow"], 1, "{looser}");
    assert_eq!(looser["allow_to_deny"], 0, "{looser}");
    assert_eq!(looser["examples"][0]["resource"], "nlp/secret@1/w.bin");

    // The gate: more flips than allowed is exit 10 with one line on stderr;
    // within the bound it passes and prints the report.
    let gated = app.cli(
        admin,
        &[
            "policy",
            "replay",
            &se,
            "--replaces",
            "sensitivity-environment",
            "--config",
            "matrix.internal=production",
            "--max-flips",
            "0",
        ],
    );
    assert_eq!(gated.status.code(), Some(10), "{}", stderr(&gated));
    assert!(stderr(&gated).contains("1 decision(s) would flip, more than --max-flips 0"));
    assert!(stdout(&gated).contains("allow->deny"), "{}", stdout(&gated));
    assert!(stdout(&gated).contains("nlp/open@1/w.bin"));
    ok(app.cli(
        admin,
        &[
            "policy",
            "replay",
            &se,
            "--replaces",
            "sensitivity-environment",
            "--config",
            "matrix.internal=production",
            "--max-flips",
            "1",
        ],
    ));

    // A candidate added to the chain (replacing nothing): an approval gate
    // on dev refuses the unapproved dev download.
    let added = json(app.cli(
        admin,
        &[
            "policy",
            "replay",
            &plugin("approval_gate"),
            "--config",
            "gated=dev",
            "--output",
            "json",
        ],
    ));
    assert_eq!(added["candidate"], "candidate");
    assert!(added["replaces"].is_null());
    assert_eq!(added["evaluated"], same["evaluated"]);
    assert_eq!(added["allow_to_deny"], 1, "{added}");
    assert_eq!(added["examples"][0]["new"]["plugin"], "candidate");
    assert_eq!(
        added["examples"][0]["new"]["reason_code"],
        "approval-gate.unapproved"
    );

    // Replaying needs audit-read: a data scientist is refused.
    let alice = app.token_in("bob", &["data-scientist"], &["nlp"], "dev", "bob");
    let refused = app.cli(Some(&alice), &["policy", "replay", &se]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));

    // Offline, from an export: the same answer, and records written before
    // inputs were recorded are counted, not replayed.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    ok(app.cli(admin, &["audit", "export", "-o", export.to_str().unwrap()]));
    let offline = |file: &std::path::Path| {
        json(cli(
            "http://127.0.0.1:9",
            None,
            &[
                "policy",
                "replay",
                &se,
                "--replaces",
                "sensitivity-environment",
                "--config",
                "matrix.internal=staging,production",
                "--audit-file",
                file.to_str().unwrap(),
                "--output",
                "json",
            ],
        ))
    };
    let off = offline(&export);
    assert_eq!(off["evaluated"], stricter["evaluated"], "{off}");
    assert_eq!(off["allow_to_deny"], 1);
    assert_eq!(off["examples"][0]["request_id"], ex["request_id"]);
    let text = std::fs::read_to_string(&export).unwrap();
    let mut stripped = 0;
    let old_style: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if stripped == 0 && v.get("input").is_some() {
                v.as_object_mut().unwrap().remove("input");
                stripped += 1;
            }
            v.to_string()
        })
        .collect();
    let older = dir.path().join("older.jsonl");
    std::fs::write(&older, old_style.join("\n")).unwrap();
    let off = offline(&older);
    assert_eq!(off["skipped_without_input"], 1, "{off}");
    assert_eq!(
        off["evaluated"].as_u64().unwrap() + 1,
        stricter["evaluated"].as_u64().unwrap()
    );

    // Bad input: a file that is not an export, a component that is not one.
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "{\"not\": \"a record\"}\n").unwrap();
    let o = cli(
        "http://127.0.0.1:9",
        None,
        &[
            "policy",
            "replay",
            &se,
            "--audit-file",
            junk.to_str().unwrap(),
        ],
    );
    fails(o, "line 1 is not an audit record");
    let o = cli(
        "http://127.0.0.1:9",
        None,
        &[
            "policy",
            "replay",
            export.to_str().unwrap(),
            "--audit-file",
            export.to_str().unwrap(),
        ],
    );
    fails(o, "not a policy component");
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

#[test]
fn releases_carry_signed_receipts_that_the_trail_must_hold() {
    let app = TestApp::start();
    let alice = decisions_both_ways(&app);
    let key = ok(app.cli(None, &["audit", "public-key"]));
    let key_file = app.dir.path().join("audit.pub");
    std::fs::write(&key_file, key.trim()).unwrap();
    let key_arg = key_file.to_str().unwrap();
    let verify = |file: &std::path::Path| {
        app.cli(
            None,
            &[
                "receipt",
                "verify",
                file.to_str().unwrap(),
                "--public-key",
                key_arg,
                "--output",
                "json",
            ],
        )
    };

    // A plain download carries one in its header.
    let resp = app.get(Some(&alice), "/v1/models/nlp/open/versions/1/files/w.bin");
    assert_eq!(resp.status(), 200);
    let header = resp.headers()["modelvault-receipt"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(header.split('.').count(), 3);
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.jws");
    std::fs::write(&one, &header).unwrap();
    let v = json(verify(&one));
    let r = &v["valid"][0];
    assert_eq!(r["action"], "download");
    assert_eq!(r["principal"]["id"], "alice");
    assert_eq!(r["environment"], "dev");
    assert_eq!(
        (
            r["namespace"].as_str(),
            r["model"].as_str(),
            r["version"].as_str()
        ),
        (Some("nlp"), Some("open"), Some("1"))
    );
    assert_eq!(r["file"], "w.bin");
    assert_eq!(r["file_sha256"], sha256_hex(b"weights"));
    // The manifest digest is `sha256sum` of the files, sorted by path.
    let listing = format!("{}  w.bin\n", sha256_hex(b"weights"));
    assert_eq!(r["manifest_sha256"], sha256_hex(listing.as_bytes()));
    let decisions = r["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    for d in decisions {
        assert_eq!(d["sha256"].as_str().unwrap().len(), 64, "{d}");
    }
    assert!(
        decisions
            .iter()
            .any(|d| d["plugin"] == "sensitivity-environment" && d["outcome"] == "allow")
    );
    // It names the durable intent record of this request.
    let chain = r["audit"]["chain"].as_str().unwrap().to_string();
    let seq = r["audit"]["seq"].as_u64().unwrap();
    let export = ok(app.cli(Some(&app.admin), &["audit", "export"]));
    let intent: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|x| x["chain"] == chain.as_str() && x["seq"] == seq)
        .expect("the receipt's record");
    assert_eq!(intent["type"], "intent");
    assert_eq!(intent["request_id"], r["request_id"]);

    // Forged: another principal under the same signature, or alg none.
    let parts: Vec<&str> = header.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["principal"]["id"] = "mallory".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    let bad = dir.path().join("forged.jws");
    std::fs::write(&bad, format!("{header}\n{forged}\n")).unwrap();
    let o = verify(&bad);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 of 2 receipt(s) do not verify"),
        "{}",
        stderr(&o)
    );
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"modelvault-receipt+jws","kid":""}"#),
        parts[1]
    );
    std::fs::write(&bad, none).unwrap();
    assert_eq!(verify(&bad).status.code(), Some(8));

    // `pull` keeps one receipt per file in the output directory, and the
    // client-side pull the key release's.
    let out = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&alice),
        &["pull", "nlp/open@1", "-o", out.path().to_str().unwrap()],
    ));
    ok(app.cli(
        Some(&alice),
        &[
            "pull",
            "nlp/open@1",
            "-o",
            out.path().join("cs").to_str().unwrap(),
            "--client-side",
        ],
    ));
    let kept = out.path().join(".modelvault-receipts");
    let v = json(verify(&kept));
    assert_eq!(v["valid"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["valid"][0]["file"], "w.bin");
    let kept_cs = out.path().join("cs/.modelvault-receipts");
    let v = json(verify(&kept_cs));
    assert_eq!(v["valid"][0]["action"], "key-release");
    assert!(v["valid"][0]["file"].is_null());
    assert_eq!(
        v["valid"][0]["manifest_sha256"],
        sha256_hex(listing.as_bytes())
    );
    let text = ok(app.cli(
        None,
        &[
            "receipt",
            "verify",
            kept.to_str().unwrap(),
            "--public-key",
            key_arg,
        ],
    ));
    assert!(
        text.contains("valid  download nlp/open@1/w.bin by alice in dev"),
        "{text}"
    );
    // A later push of the pulled folder leaves the receipts behind.
    ok(app.cli(
        Some(&alice),
        &[
            "push",
            "nlp/open@2",
            out.path().to_str().unwrap(),
            "--exclude",
            "cs",
        ],
    ));
    let listed = json(app.cli(
        Some(&alice),
        &["model", "show", "nlp/open@2", "--output", "json"],
    ));
    let files: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["w.bin"]);

    // `audit verify --receipts`: through the server and offline, every
    // receipt has its record.
    let all = dir.path().join("all");
    std::fs::write(
        &all,
        format!(
            "{header}\n{}{}",
            std::fs::read_to_string(&kept).unwrap(),
            std::fs::read_to_string(&kept_cs).unwrap()
        ),
    )
    .unwrap();
    let auditor = app.token("auditor", &["auditor"], &["*"]);
    let online = json(app.cli(
        Some(&auditor),
        &[
            "audit",
            "verify",
            "--receipts",
            all.to_str().unwrap(),
            "--output",
            "json",
        ],
    ));
    assert_eq!(online["receipts"].as_array().unwrap().len(), 3, "{online}");
    assert!(
        online["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "recorded"),
        "{online}"
    );
    let store = format!("file://{}", app.store_dir().display());
    let offline = json(app.cli(
        None,
        &[
            "audit",
            "verify",
            "--store",
            &store,
            "--public-key",
            key_arg,
            "--receipts",
            all.to_str().unwrap(),
            "--output",
            "json",
        ],
    ));
    assert!(
        offline["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "recorded"),
        "{offline}"
    );

    // A bucket writer removes this server's whole chain (its segments and
    // checkpoints): the other chains still verify, but the receipts
    // prove records are missing.
    let copy = tempfile::tempdir().unwrap();
    crate::audit::copy_dir(&app.store_dir().join("audit"), &copy.path().join("audit"));
    let _ = std::fs::remove_dir_all(copy.path().join("audit/chains").join(&chain));
    let _ = std::fs::remove_dir_all(copy.path().join("audit/checkpoints").join(&chain));
    let store = format!("file://{}", copy.path().display());
    let o = app.cli(
        None,
        &[
            "audit",
            "verify",
            "--store",
            &store,
            "--public-key",
            key_arg,
            "--receipts",
            all.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(": missing: no record"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("audit verification failed: receipt of request"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn access_review_candidate_shows_who_would_gain_and_lose_access() {
    let app = TestApp::start();
    let alice = decisions_both_ways(&app);
    let admin = Some(app.admin.as_str());
    app.token_in("carol", &["ml-engineer"], &["nlp"], "production", "carol");
    ok(app.cli(
        admin,
        &[
            "access",
            "grant",
            "--group",
            "ml-team",
            "--role",
            "ml-engineer",
            "--namespace",
            "nlp",
        ],
    ));
    // One production approval: the approval gate is satisfied, separation
    // of duties (two approvals) is not, so production is refused today.
    let mia = app.token_in("mia", &["model-manager"], &["nlp"], "production", "mia");
    ok(app.cli(
        Some(&mia),
        &["approve", "nlp/open@1", "--env", "production"],
    ));
    let review = |candidate: &str| {
        json(app.cli(
            admin,
            &[
                "access",
                "review",
                "--candidate",
                candidate,
                "--output",
                "json",
            ],
        ))
    };

    // Separation of duties replaced by a one-approval gate: carol and the
    // ml-team group gain both accesses to nlp/open@1 from production.
    let r = review(&format!("separation-of-duties={}", plugin("approval_gate")));
    assert_eq!(r["replaces"], true);
    assert_eq!(r["losses"], 0, "{r}");
    let changes = r["changes"].as_array().unwrap();
    let got: std::collections::BTreeSet<(String, String, String, String, String)> = changes
        .iter()
        .map(|c| {
            (
                c["subject_type"].as_str().unwrap().to_string(),
                c["subject"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}@{}",
                    c["namespace"].as_str().unwrap(),
                    c["model"].as_str().unwrap(),
                    c["version"].as_str().unwrap()
                ),
                c["environment"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: std::collections::BTreeSet<_> = [
        ("principal", "carol", "download"),
        ("principal", "carol", "key-release"),
        ("group", "ml-team", "download"),
        ("group", "ml-team", "key-release"),
    ]
    .into_iter()
    .map(|(t, s, a)| {
        (
            t.to_string(),
            s.to_string(),
            "nlp/open@1".to_string(),
            "production".to_string(),
            a.to_string(),
        )
    })
    .collect();
    assert_eq!(got, want, "{r}");
    assert!(
        changes.iter().all(|c| c["change"] == "gains"
            && c["old_reason_code"] == "separation-of-duties.insufficient-approvals"),
        "{r}"
    );
    assert_eq!(r["gains"], 4);

    // Sensitivity-environment replaced by a plugin that abstains in dev:
    // alice (and the group, from dev) lose nlp/open@1 there.
    let r = review(&format!(
        "sensitivity-environment={}",
        plugin("separation_of_duties")
    ));
    assert_eq!(r["gains"], 0, "{r}");
    let lost: Vec<_> = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["subject"] == "alice")
        .collect();
    assert_eq!(lost.len(), 2, "{r}");
    assert!(lost.iter().all(|c| c["change"] == "loses"
        && c["version"] == "1"
        && c["model"] == "open"
        && c["environment"] == "dev"
        && c["old_reason_code"] == "sensitivity-environment.allowed"
        && c["new_reason_code"] == "policy.no-allow"));
    // Markdown for people.
    let md = ok(app.cli(
        admin,
        &[
            "access",
            "review",
            "--candidate",
            &format!("sensitivity-environment={}", plugin("separation_of_duties")),
        ],
    ));
    assert!(
        md.contains("| nlp/open@1 | dev | principal alice | download | **loses** |"),
        "{md}"
    );

    // Nothing was installed.
    let list = json(app.cli(admin, &["policy", "list", "--output", "json"]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "candidate")
    );

    // Refused: without audit-read and manage-policies, a file that is not
    // a component, an empty body, a bad NAME=FILE.
    let o = app.cli(
        Some(&alice),
        &[
            "access",
            "review",
            "--candidate",
            &format!("x={}", plugin("approval_gate")),
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let junk = app.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let o = app.cli(
        admin,
        &[
            "access",
            "review",
            "--candidate",
            &format!("x={}", junk.display()),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid_policy"), "{}", stderr(&o));
    let resp = app
        .http()
        .post(format!("{}/v1/access/review/candidate?name=x", app.url))
        .bearer_auth(&app.admin)
        .send()
        .unwrap();
    let (s, code, _) = error_code(resp);
    assert_eq!((s, code.as_str()), (400, "invalid_request"));
    fails(
        app.cli(
            admin,
            &["access", "review", "--candidate", "no-equals-sign"],
        ),
        "is not NAME=FILE",
    );
}

/// The audit record of the newest request whose `action` is `action`.
fn last_input(app: &TestApp, action: &str) -> serde_json::Value {
    let export = ok(app.cli(Some(&app.admin), &["audit", "export", "--action", action]));
    let rec: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|r| r.get("input").is_some())
        .expect("a record with an input");
    rec["input"].clone()
}

#[test]
fn lifecycle_approval_kinds_training_and_token_groups_reach_policies() {
    let app = TestApp::start_configured(None, |t| {
        *t = t.replace(
            "[policy.config.approval-gate]\n",
            "[policy.config.approval-gate]\n\"require.restricted.production\" = \"review:1,compliance:1:compliance-officer\"\norder = \"review,compliance\"\n",
        );
    });
    let alice = app.token_in("alice", &["data-scientist"], &["nlp"], "dev", "alice");
    let mia = app.token_in("mia", &["model-manager"], &["nlp"], "production", "mia");
    let max = app.token_in("max", &["model-manager"], &["nlp"], "production", "max");
    let cora = app.token_in(
        "cora",
        &["compliance-officer"],
        &["nlp"],
        "production",
        "cora",
    );
    let carol = app.token_in("carol", &["ml-engineer"], &["nlp"], "production", "carol");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w.bin"), b"restricted weights").unwrap();
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
    for v in ["nlp/fraud@1", "nlp/fraud@2"] {
        ok(app.cli(Some(&alice), &["push", v, src.path().to_str().unwrap()]));
    }
    let file = |v: &str| format!("/v1/models/nlp/fraud/versions/{v}/files/w.bin");
    let denied = |token: &str, v: &str| {
        let (s, code, body) = error_code(app.get(Some(token), &file(v)));
        assert_eq!((s, code.as_str()), (403, "policy_denied"), "{body}");
        body["error"]["reason_code"].as_str().unwrap().to_string()
    };

    // Version facts: what the policy saw on the refused download.
    assert_eq!(denied(&carol, "1"), "approval-gate.unapproved");
    let input = last_input(&app, "download");
    let facts = &input["resource"]["facts"];
    assert_eq!(facts["uploader"], "alice");
    assert_eq!(facts["stage"], "candidate");
    assert!(facts["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(facts["files"][0]["path"], "w.bin");
    assert_eq!(facts["files"][0]["size"], 18);
    // The plaintext digest reached the policy but is never stored in the
    // clear: the recorded input leaves it empty.
    assert_eq!(facts["files"][0]["sha256"], "");
    let digest = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        b"restricted weights",
    ));
    for (path, bytes) in stored_files(&app.store_dir()) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&digest),
            "plaintext digest in {}",
            path.display()
        );
    }

    // Approval kinds and their order: compliance only after a review.
    let o = app.cli(
        Some(&cora),
        &[
            "approve",
            "nlp/fraud@1",
            "--env",
            "production",
            "--kind",
            "compliance",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("approval-gate.out-of-order"),
        "{}",
        stderr(&o)
    );
    ok(app.cli(
        Some(&mia),
        &["approve", "nlp/fraud@1", "--env", "production"],
    ));
    ok(app.cli(
        Some(&max),
        &["approve", "nlp/fraud@1", "--env", "production"],
    ));
    let (_, _, body) = error_code(app.get(Some(&carol), &file("1")));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 more compliance approval(s) by a compliance-officer"),
        "{body}"
    );
    // A model manager's compliance approval is not a compliance officer's.
    ok(app.cli(
        Some(&mia),
        &[
            "approve",
            "nlp/fraud@1",
            "--env",
            "production",
            "--kind",
            "compliance",
        ],
    ));
    assert_eq!(denied(&carol, "1"), "approval-gate.unapproved");
    let listed = json(app.cli(
        Some(&cora),
        &[
            "approve",
            "nlp/fraud@1",
            "--env",
            "production",
            "--kind",
            "compliance",
            "--output",
            "json",
        ],
    ));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["approver"] == "cora" && a["kind"] == "compliance")
    );
    assert_eq!(app.get(Some(&carol), &file("1")).status(), 200);

    // Training use needs a training approval.
    let trainer = ok(app.cli(
        Some(&app.admin),
        &[
            "token",
            "create",
            "--name",
            "trainer",
            "--principal",
            "trainer",
            "--role",
            "ml-engineer",
            "--namespace",
            "nlp",
            "--env",
            "production",
            "--purpose",
            "training",
            "--group",
            "team-fraud",
        ],
    ))
    .trim()
    .to_string();
    assert_eq!(denied(&trainer, "1"), "approval-gate.training-unapproved");
    let input = last_input(&app, "download");
    assert_eq!(input["principal"]["purpose"], "training");
    assert_eq!(
        input["principal"]["groups"],
        serde_json::json!(["team-fraud"])
    );
    ok(app.cli(
        Some(&mia),
        &[
            "approve",
            "nlp/fraud@1",
            "--env",
            "production",
            "--kind",
            "training",
        ],
    ));
    assert_eq!(app.get(Some(&trainer), &file("1")).status(), 200);
    let tokens = json(app.cli(Some(&app.admin), &["token", "list", "--output", "json"]));
    let t = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "trainer")
        .unwrap()
        .clone();
    assert_eq!(
        (t["purpose"].as_str(), t["groups"][0].as_str()),
        (Some("training"), Some("team-fraud"))
    );

    // Lifecycle: archived versions are refused and `latest` skips them;
    // deprecated ones are served with a warning in the trail.
    let show = |r: &str| json(app.cli(Some(&alice), &["model", "show", r, "--output", "json"]));
    assert_eq!(show("nlp/fraud@latest")["version"], "2");
    let o = app.cli(Some(&alice), &["model", "stage", "nlp/fraud@2", "archived"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    ok(app.cli(Some(&mia), &["model", "stage", "nlp/fraud@2", "archived"]));
    assert_eq!(show("nlp/fraud@2")["stage"], "archived");
    assert_eq!(show("nlp/fraud@latest")["version"], "1");
    assert_eq!(show("nlp/fraud@1")["stage"], "candidate");
    ok(app.cli(
        Some(&mia),
        &["approve", "nlp/fraud@2", "--env", "production"],
    ));
    assert_eq!(denied(&carol, "2"), "approval-gate.archived");
    ok(app.cli(Some(&mia), &["model", "stage", "nlp/fraud@1", "deprecated"]));
    assert_eq!(app.get(Some(&carol), &file("1")).status(), 200);
    let export = ok(app.cli(
        Some(&app.admin),
        &["audit", "export", "--action", "download"],
    ));
    let last: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|r| r["type"] == "intent")
        .unwrap();
    assert!(
        last["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["plugin"] == "approval-gate"
                && d["reason_code"] == "approval-gate.deprecated"),
        "{last}"
    );
    let staged = ok(app.cli(
        Some(&app.admin),
        &["audit", "export", "--action", "set-stage"],
    ));
    assert_eq!(staged.lines().count(), 3, "{staged}");
    let o = app.cli(Some(&mia), &["model", "stage", "nlp/fraud@1", "retired"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // A 0.1.0 component beside the 0.2.0 ones sees only review approvals,
    // as it always did.
    ok(app.cli(
        Some(&app.admin),
        &["policy", "install", "legacy", &plugin("legacy_review_gate")],
    ));
    ok(app.cli(
        Some(&alice),
        &["model", "create", "nlp/open", "--sensitivity", "internal"],
    ));
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/open@1", src.path().to_str().unwrap()],
    ));
    let open = "/v1/models/nlp/open/versions/1/files/w.bin";
    let (_, code, body) = error_code(app.get(Some(&alice), open));
    assert_eq!(code, "policy_denied");
    assert_eq!(body["error"]["reason_code"], "legacy.unapproved");
    let mia_dev = app.token_in("mia-dev", &["model-manager"], &["nlp"], "dev", "mia");
    ok(app.cli(
        Some(&mia_dev),
        &[
            "approve",
            "nlp/open@1",
            "--env",
            "dev",
            "--kind",
            "training",
        ],
    ));
    let (_, _, body) = error_code(app.get(Some(&alice), open));
    assert_eq!(body["error"]["reason_code"], "legacy.unapproved");
    ok(app.cli(Some(&mia_dev), &["approve", "nlp/open@1", "--env", "dev"]));
    assert_eq!(app.get(Some(&alice), open).status(), 200);
}
