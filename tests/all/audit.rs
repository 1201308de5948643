//! The audit trail end to end: every request recorded, downloads durable
//! before release with a completion, failed authentications aggregated,
//! export for a SIEM, verification online and offline, tampering of each
//! kind detected, and fail-closed when the audit store cannot be written.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

fn export(app: &TestApp, token: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "export"];
    args.extend_from_slice(extra);
    ok(app.cli(Some(token), &args))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn setup(app: &TestApp) -> (String, String, Vec<u8>) {
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/bert"]));
    let src = tempfile::tempdir().unwrap();
    let payload = modelvault_test_utils::pseudo_random(300_000, 3);
    std::fs::write(src.path().join("w.bin"), &payload).unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/bert@1", src.path().to_str().unwrap()],
    ));
    (ds, auditor, payload)
}

fn chain_dirs(app: &TestApp) -> Vec<PathBuf> {
    let root = app.store_dir().join("audit/chains");
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn every_request_is_recorded_and_the_chain_verifies() {
    let app = TestApp::start_configured(None, |t| {
        *t = t.replace("failure_window_secs = 60", "failure_window_secs = 2");
    });
    let (ds, auditor, payload) = setup(&app);
    let out = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/bert@1", "-o", out.path().to_str().unwrap()],
    ));
    // A denied request and failed authentications.
    assert_eq!(
        app.get(Some(&auditor), "/v1/models/nlp/bert/versions/1/files/w.bin")
            .status(),
        403
    );
    // The five failures fall into one 2-second window: start just after a
    // window begins (windows are aligned to whole multiples of their
    // length), so a busy machine cannot split them across two.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into_window = now.as_millis() % 2000;
    std::thread::sleep(std::time::Duration::from_millis(
        (2000 - into_window) as u64 + 50,
    ));
    for _ in 0..5 {
        assert_eq!(
            app.get(
                Some("mv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                "/v1/whoami"
            )
            .status(),
            401
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(5));

    let all = export(&app, &auditor, &[]);
    // The download: a durable intent with principal, resource, decisions
    // and key, then a completion with the bytes served.
    let intent = all
        .iter()
        .find(|r| r["type"] == "intent" && r["action"] == "download")
        .expect("intent record");
    assert_eq!(intent["principal"]["id"], "dana");
    assert_eq!(intent["principal"]["environment"], "dev");
    assert_eq!(intent["resource"]["model"], "bert");
    assert_eq!(intent["resource"]["version"], "1");
    assert_eq!(intent["resource"]["file"], "w.bin");
    assert_eq!(intent["resource"]["range"], format!("0-{}", payload.len()));
    assert_eq!(intent["keys"][0]["dek_generation"], 1);
    let decisions = intent["decisions"].as_array().unwrap();
    assert!(decisions.len() >= 3, "{intent}");
    assert!(
        decisions
            .iter()
            .all(|d| d["sha256"].as_str().unwrap().len() == 64)
    );
    let completion = all
        .iter()
        .find(|r| {
            r["type"] == "completion"
                && r["intent_seq"] == intent["seq"]
                && r["chain"] == intent["chain"]
        })
        .expect("completion record");
    assert_eq!(completion["bytes"], payload.len() as u64);
    assert_eq!(completion["outcome"], "complete");
    // Other requests: allowed, denied, with principal and source.
    let create = all.iter().find(|r| r["action"] == "create-model").unwrap();
    assert_eq!(create["outcome"], "allowed");
    assert_eq!(create["source"], "127.0.0.1");
    let denied = all
        .iter()
        .find(|r| r["action"] == "download" && r["outcome"] == "denied")
        .unwrap();
    assert_eq!(denied["principal"]["id"], "audrey");
    // Failed authentications: the first at once, the rest as one count.
    let auth: Vec<&Value> = all
        .iter()
        .filter(|r| r["action"] == "authentication")
        .collect();
    let total: u64 = auth.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 5, "{auth:?}");
    assert!(auth.len() <= 3, "aggregated, not one per failure: {auth:?}");
    assert!(auth.iter().all(|r| r["outcome"] == "unauthenticated"));
    // Filters.
    let only = export(
        &app,
        &auditor,
        &["--principal", "dana", "--action", "download"],
    );
    assert!(
        !only.is_empty()
            && only
                .iter()
                .all(|r| r["principal"]["id"] == "dana" && r["action"] == "download")
    );
    // Exported lines are the stored bytes: each hashes to the next
    // record's `prev`, so a SIEM can check the chain too.
    let text = ok(app.cli(Some(&auditor), &["audit", "export"]));
    let mut by_seq: std::collections::BTreeMap<(String, u64), (String, String)> =
        Default::default();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let h = hex::encode(ring::digest::digest(&ring::digest::SHA256, line.as_bytes()));
        by_seq.insert(
            (
                v["chain"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            ),
            (h, v["prev"].as_str().unwrap().to_string()),
        );
    }
    let mut linked = 0;
    for ((chain, seq), (hash, _)) in &by_seq {
        if let Some((_, prev)) = by_seq.get(&(chain.clone(), seq + 1)) {
            assert_eq!(prev, hash, "seq {seq}");
            linked += 1;
        }
    }
    assert!(linked > 10, "{linked}");
    // Never a secret.
    for t in [&ds, &auditor, &app.admin] {
        assert!(!text.contains(token_secret(t)));
    }
    // Only audit-read may read it.
    fails(app.cli(Some(&ds), &["audit", "export"]), "audit-read");

    // Verify through the server, then offline with the public key only.
    let v = ok(app.cli(Some(&auditor), &["audit", "verify"]));
    assert!(v.contains("verified to checkpoint"), "{v}");
    let key = ok(app.cli(None, &["audit", "public-key"]));
    let key_file = app.dir.path().join("audit.pub");
    std::fs::write(&key_file, key.trim()).unwrap();
    let store = format!("file://{}", app.store_dir().display());
    let off = ok(app.cli(
        None,
        &[
            "audit",
            "verify",
            "--store",
            &store,
            "--public-key",
            key_file.to_str().unwrap(),
        ],
    ));
    assert!(off.contains("verified to checkpoint"), "{off}");
}

/// Copies `dir` recursively.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn tampering_with_the_audit_trail_is_detected() {
    let app = TestApp::start();
    let (ds, auditor, _) = setup(&app);
    // Concurrent requests share segments (group commit). How many records
    // one segment gets depends on timing: burst again (a few times at most)
    // until some segment holds three, which the tampering below needs.
    let has_group = || {
        chain_dirs(&app).iter().any(|c| {
            std::fs::read_dir(c).unwrap().any(|e| {
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .lines()
                    .count()
                    >= 3
            })
        })
    };
    for attempt in 0.. {
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        assert_eq!(app.get(Some(&ds), "/v1/models/nlp/bert").status(), 200);
                    }
                });
            }
        });
        if has_group() {
            break;
        }
        assert!(attempt < 5, "no segment ever held three records");
    }
    // Signs a checkpoint over everything so far.
    ok(app.cli(Some(&auditor), &["audit", "verify"]));
    let key_file = app.dir.path().join("audit.pub");
    std::fs::write(
        &key_file,
        ok(app.cli(None, &["audit", "public-key"])).trim(),
    )
    .unwrap();
    drop(app.start_peer()); // a second chain exists too and stays intact
    let audit_dir = app.store_dir().join("audit");
    let pristine = app.dir.path().join("audit-pristine");
    copy_dir(&audit_dir, &pristine);
    let store = format!("file://{}", app.store_dir().display());
    let verify = || {
        app.cli(
            None,
            &[
                "audit",
                "verify",
                "--store",
                &store,
                "--public-key",
                key_file.to_str().unwrap(),
                "--output",
                "json",
            ],
        )
    };
    let report = |o: std::process::Output| -> Value { serde_json::from_slice(&o.stdout).unwrap() };
    let r = report(verify());
    assert_eq!(r["ok"], true, "{r}");

    // The chain of the first server: its biggest segment.
    let chain = chain_dirs(&app)
        .into_iter()
        .max_by_key(|d| std::fs::read_dir(d).unwrap().count())
        .unwrap();
    let segment = std::fs::read_dir(&chain)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p).unwrap().lines().count() >= 3)
        .min()
        .expect("a segment with three records");
    let lines: Vec<String> = std::fs::read_to_string(&segment)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let seq_of = |l: &str| {
        serde_json::from_str::<Value>(l).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let write = |ls: &[String]| std::fs::write(&segment, ls.join("\n") + "\n").unwrap();
    let restore = || {
        std::fs::remove_dir_all(&audit_dir).unwrap();
        copy_dir(&pristine, &audit_dir);
    };
    type Tamper<'a> = (&'a str, Box<dyn Fn() + 'a>, u64);
    let cases: Vec<Tamper> = vec![
        (
            "edited",
            Box::new(|| {
                let mut ls = lines.clone();
                assert!(ls[1].contains("127.0.0.1"), "{}", ls[1]);
                ls[1] = ls[1].replacen("127.0.0.1", "10.6.6.6", 1);
                write(&ls);
            }),
            seq_of(&lines[1]),
        ),
        (
            "dropped",
            Box::new(|| {
                let mut ls = lines.clone();
                ls.remove(1);
                write(&ls);
            }),
            seq_of(&lines[1]),
        ),
        (
            "reordered",
            Box::new(|| {
                let mut ls = lines.clone();
                ls.swap(1, 2);
                write(&ls);
            }),
            seq_of(&lines[1]),
        ),
        (
            "duplicated",
            Box::new(|| {
                let mut ls = lines.clone();
                ls.insert(2, ls[1].clone());
                write(&ls);
            }),
            seq_of(&lines[1]),
        ),
    ];
    for (kind, tamper, seq) in cases {
        restore();
        tamper();
        let out = verify();
        assert!(!out.status.success(), "{kind} not detected");
        let r = report(out);
        let bad = r["chains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| !c["problem"].is_null())
            .unwrap();
        assert_eq!(bad["problem"]["kind"], kind, "{bad}");
        assert_eq!(bad["problem"]["seq"], seq, "{kind}: {bad}");
        assert_eq!(
            r["chains"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["problem"].is_null())
                .count(),
            r["chains"].as_array().unwrap().len() - 1
        );
    }
    // Truncated: the segment holding the checkpointed record, and every
    // later one, are gone (records after the newest checkpoint cannot be
    // proven: that is what shipping checkpoints out of the bucket is for).
    restore();
    let chain_id = chain.file_name().unwrap().to_str().unwrap().to_string();
    let cp_seq: u64 = std::fs::read_dir(audit_dir.join("checkpoints").join(&chain_id))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .trim_end_matches(".json")
                .parse::<u64>()
                .unwrap()
        })
        .max()
        .unwrap();
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(&chain)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_stem()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
                p,
            )
        })
        .collect();
    segs.sort();
    let holder = segs
        .iter()
        .filter(|(s, _)| *s <= cp_seq)
        .map(|(s, _)| *s)
        .max()
        .unwrap();
    for (s, p) in &segs {
        if *s >= holder {
            std::fs::remove_file(p).unwrap();
        }
    }
    let out = verify();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(text.contains("first bad seq"), "{text}");
    let r = report(out);
    let bad = r["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| !c["problem"].is_null())
        .unwrap();
    assert_eq!(bad["problem"]["kind"], "truncated", "{bad}");
    // Restored, it verifies again.
    restore();
    assert_eq!(report(verify())["ok"], true);
    // An intact chain with no checkpoint yet verifies, and says so.
    restore();
    std::fs::remove_dir_all(audit_dir.join("checkpoints")).unwrap();
    let out = verify();
    assert!(out.status.success());
    let r = report(out);
    assert!(
        r["chains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["verified_to"].is_null())
    );
    let text = ok(app.cli(
        None,
        &[
            "audit",
            "verify",
            "--store",
            &store,
            "--public-key",
            key_file.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("no checkpoint yet"), "{text}");
}

#[test]
fn an_unwritable_audit_store_releases_nothing() {
    let app = TestApp::start();
    let (ds, auditor, payload) = setup(&app);
    let file = "/v1/models/nlp/bert/versions/1/files/w.bin";
    let chain = chain_dirs(&app).pop().unwrap();
    let moved = chain.with_extension("away");
    // Make the chain's folder a file: no segment can be written (root too).
    std::fs::rename(&chain, &moved).unwrap();
    std::fs::write(&chain, b"blocked").unwrap();
    let r = app.get(Some(&ds), file);
    assert_eq!(r.status(), 503);
    let body = r.bytes().unwrap();
    assert!(!modelvault_test_utils::contains(&body, &payload[..64]));
    let (s, c, _) = error_code(app.get(Some(&ds), file));
    assert_eq!((s, c.as_str()), (503, "audit_unavailable"));
    // Metadata reads are refused too by default.
    assert_eq!(app.get(Some(&ds), "/v1/models/nlp/bert").status(), 503);
    // The store comes back: the backlog is written and service resumes.
    std::fs::remove_file(&chain).unwrap();
    std::fs::rename(&moved, &chain).unwrap();
    let mut up = false;
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        if app.get(Some(&ds), "/v1/models/nlp/bert").status() == 200 {
            up = true;
            break;
        }
    }
    assert!(up, "service did not resume");
    let r = app.get(Some(&ds), file);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), payload.as_slice());
    let v = ok(app.cli(Some(&auditor), &["audit", "verify"]));
    assert!(v.contains("verified to checkpoint"), "{v}");
}

#[test]
fn access_review_compares_who_can_with_who_did() {
    let app = TestApp::start_configured(None, |t| {
        t.push_str("\n[[access.bindings]]\ngroup = \"nlp-writers\"\nrole = \"data-scientist\"\nnamespaces = [\"nlp\"]\n");
    });
    let (ds, auditor, _) = setup(&app);
    let _idle = app.token("idle", &["data-scientist"], &["nlp"]);
    let _erin = app.token_in("erin", &["ml-engineer"], &["nlp"], "production", "erin");
    let _vision = app.token("vic", &["data-scientist"], &["vision"]);
    ok(app.cli(
        Some(&app.admin),
        &[
            "token", "create", "--name", "short", "--role", "auditor", "--ttl", "10d",
        ],
    ));
    let out = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/bert@1", "-o", out.path().to_str().unwrap()],
    ));

    let r: Value = serde_json::from_str(&ok(app.cli(
        Some(&auditor),
        &["access", "review", "--since", "1d", "--output", "json"],
    )))
    .unwrap();
    let v = r["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["model"] == "bert" && v["version"] == "1")
        .unwrap();
    let who = |id: &str| {
        v["access"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["principal"] == id)
            .cloned()
    };
    let dana = who("dana").expect("dana listed");
    assert_eq!(dana["policy"], "allow");
    assert!(dana["downloads"].as_u64().unwrap() >= 1);
    let idle = who("idle").expect("idle listed");
    assert_eq!(idle["policy"], "allow");
    assert_eq!(idle["downloads"], 0);
    let erin = who("erin").expect("erin listed");
    assert_eq!(erin["policy"], "deny", "{erin}");
    assert!(who("vic").is_none(), "other namespaces have no access");
    let audrey = who("audrey").expect("readers are listed");
    assert_eq!(audrey["download_permission"], false);
    let unused: Vec<&str> = r["unused_access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(
        unused.contains(&"idle") && !unused.contains(&"dana"),
        "{unused:?}"
    );
    assert!(
        !unused.contains(&"erin"),
        "the policy denies erin: no usable access"
    );
    assert!(
        r["expiring_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "short")
    );
    assert!(
        r["group_bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["subject"] == "nlp-writers")
    );
    // For people: Markdown.
    let md = ok(app.cli(Some(&auditor), &["access", "review"]));
    assert!(
        md.starts_with("# Access review")
            && md.contains("| idle |")
            && md.contains("candidates for revocation"),
        "{md}"
    );
    // Only audit-read for all namespaces.
    fails(app.cli(Some(&ds), &["access", "review"]), "audit-read");
}

#[test]
fn checkpoints_are_shipped_to_a_file_and_reads_may_continue_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = dir.path().join("checkpoints.jsonl");
    let file = shipped.display().to_string();
    let app = TestApp::start_configured(None, move |t| {
        *t = t.replace(
            "allow_reads_when_unavailable = false",
            &format!("allow_reads_when_unavailable = true\ncheckpoint_file = \"{file}\""),
        );
    });
    let (ds, auditor, _) = setup(&app);
    ok(app.cli(Some(&auditor), &["audit", "verify"]));
    let lines = std::fs::read_to_string(&shipped).unwrap();
    let cp: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert!(cp["signature"].is_string() && cp["head"].as_str().unwrap().len() == 64);
    // The shipped checkpoint verifies with the served public key.
    let key = ok(app.cli(None, &["audit", "public-key"]));
    assert_eq!(cp["public_key"], key.trim());
    // Audit store down: metadata reads go on (configured), releases do not.
    let chain = chain_dirs(&app).pop().unwrap();
    let moved = chain.with_extension("away");
    std::fs::rename(&chain, &moved).unwrap();
    std::fs::write(&chain, b"blocked").unwrap();
    assert_eq!(
        app.get(Some(&ds), "/v1/models/nlp/bert/versions/1/files/w.bin")
            .status(),
        503
    );
    assert_eq!(app.get(Some(&ds), "/v1/models/nlp/bert").status(), 200);
    std::fs::remove_file(&chain).unwrap();
    std::fs::rename(&moved, &chain).unwrap();
}
