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
    let alice = app.token_in("alice", &["data-scientist"], &["nlp"], "dev", "alice");
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
    let (s, code, _) = error_code(app.get(
        Some(&alice),
        "/v1/models/nlp/secret/versions/1/files/w.bin",
    ));
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
    ok(app.cli(
        admin,
        &["audit", "export", "-o", export.to_str().unwrap()],
    ));
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
        &["policy", "replay", &se, "--audit-file", junk.to_str().unwrap()],
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
