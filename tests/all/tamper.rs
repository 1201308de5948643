//! Tampering with the stored objects under a running server: flipped bits,
//! an edited model record, moved blobs and wrapped keys. Each is detected;
//! no byte that did not authenticate is ever sent.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use modelvault_test_utils::pseudo_random;

use crate::common::*;

fn find(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(needle))
        .collect();
    v.sort();
    v
}

/// The blob of the only file of `version` (local store layout).
fn blob_of(app: &TestApp, model: &str, version: &str) -> PathBuf {
    let dir = app.store_dir().join(format!("blobs/nlp/{model}/{version}"));
    let blobs: Vec<_> = find(&dir, ".mvf")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mvf"))
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    blobs[0].clone()
}

/// Reads a response body until it ends or errors; returns what arrived and
/// whether it ended cleanly.
fn drain(mut resp: reqwest::blocking::Response) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match resp.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[test]
fn tampered_store_is_detected_and_nothing_unauthenticated_is_sent() {
    let app = TestApp::start();
    let ds = app.token_in("alice", &["data-scientist"], &["nlp"], "staging", "alice");
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "create",
            "nlp/bert",
            "--sensitivity",
            "confidential",
        ],
    ));
    let data = pseudo_random(5 * (1 << 20) + 99, 3);
    for v in ["1", "2"] {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("w.bin"), &data).unwrap();
        ok(app.cli(
            Some(&ds),
            &[
                "push",
                &format!("nlp/bert@{v}"),
                src.path().to_str().unwrap(),
            ],
        ));
    }
    let file = "/v1/models/nlp/bert/versions/1/files/w.bin";
    let blob = blob_of(&app, "bert", "1");
    let original = std::fs::read(&blob).unwrap();

    // 1. A flipped bit in segment 2: the stream stops before segment 2; the
    //    bytes that did arrive are exactly segments 0 and 1 (or fewer).
    let mut bad = original.clone();
    let seg_ct = (1 << 20) + 16;
    bad[48 + 2 * seg_ct + 1000] ^= 0x20;
    std::fs::write(&blob, &bad).unwrap();
    let (got, clean) = drain(app.get(Some(&ds), file));
    assert!(
        !clean || got.len() < data.len(),
        "a tampered download must not complete"
    );
    assert!(
        got.len() <= 2 << 20,
        "bytes of the tampered segment were sent ({})",
        got.len()
    );
    assert_eq!(
        &got[..],
        &data[..got.len()],
        "only authenticated plaintext is sent"
    );
    // pull fails and writes no file under its name; what it keeps to
    // continue later is a hidden partial file of authenticated plaintext
    // only (the server never sent more).
    let dest = tempfile::tempdir().unwrap();
    let o = app.cli(
        Some(&ds),
        &[
            "--retries",
            "1",
            "pull",
            "nlp/bert@1",
            "-o",
            dest.path().to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        !dest.path().join("w.bin").exists(),
        "no file under its name"
    );
    for kept in walk(dest.path()) {
        // The receipts of what was released are kept too.
        if kept.ends_with(".modelvault-receipts") {
            continue;
        }
        assert!(
            kept.to_string_lossy().ends_with(".modelvault-part"),
            "only a partial file is kept: {kept:?}"
        );
        let bytes = std::fs::read(&kept).unwrap();
        assert!(bytes.len() <= 2 << 20, "{}", bytes.len());
        assert_eq!(
            &bytes[..],
            &data[..bytes.len()],
            "authenticated plaintext only"
        );
    }
    // A range inside the intact segments still works.
    let r = app
        .http()
        .get(format!("{}{file}", app.url))
        .bearer_auth(&ds)
        .header("range", "bytes=10-20")
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), &data[10..21]);
    std::fs::write(&blob, &original).unwrap();

    // 2. Truncated and extended blobs: refused before any byte is sent.
    std::fs::write(&blob, &original[..original.len() - seg_ct]).unwrap();
    let (s, c, body) = error_code(app.get(Some(&ds), file));
    assert_eq!((s, c.as_str()), (500, "integrity_error"));
    // The 5xx body hides internals but carries the request id of the log.
    let rid = body["error"]["request_id"].as_str().unwrap().to_string();
    assert!(!body.to_string().contains("bytes"), "{body}");
    wait_for_log(&app.log, 0, &rid);
    std::fs::write(&blob, [&original[..], &original[48..48 + seg_ct]].concat()).unwrap();
    assert_eq!(error_code(app.get(Some(&ds), file)).1, "integrity_error");
    std::fs::write(&blob, &original).unwrap();

    // 3. A blob moved from version 2 over version 1's.
    let blob2 = blob_of(&app, "bert", "2");
    std::fs::write(&blob, std::fs::read(&blob2).unwrap()).unwrap();
    // The manifest pins the blob's salt: refused before any byte is sent.
    assert_eq!(error_code(app.get(Some(&ds), file)).1, "integrity_error");
    std::fs::write(&blob, &original).unwrap();

    // 4. The model record edited to lower the sensitivity.
    let meta = find(&app.store_dir().join("models/nlp/bert/meta"), ".json");
    let rec = std::fs::read_to_string(&meta[0]).unwrap();
    std::fs::write(&meta[0], rec.replace("\"confidential\"", "\"public\"")).unwrap();
    assert_eq!(
        error_code(app.get(Some(&ds), "/v1/models/nlp/bert")).1,
        "integrity_error"
    );
    assert_eq!(error_code(app.get(Some(&ds), file)).1, "integrity_error");
    std::fs::write(&meta[0], &rec).unwrap();

    // 5. Version 2's key record (its wrapped DEK) moved over version 1's.
    let k1 = find(
        &app.store_dir().join("models/nlp/bert/versions/1/keys"),
        ".json",
    );
    let k2 = find(
        &app.store_dir().join("models/nlp/bert/versions/2/keys"),
        ".json",
    );
    let k1_orig = std::fs::read(&k1[0]).unwrap();
    std::fs::write(&k1[0], std::fs::read(&k2[0]).unwrap()).unwrap();
    assert_eq!(error_code(app.get(Some(&ds), file)).1, "integrity_error");
    // ... or only the wrapped bytes spliced into version 1's record.
    let mut v1: serde_json::Value = serde_json::from_slice(&k1_orig).unwrap();
    let v2: serde_json::Value = serde_json::from_slice(&std::fs::read(&k2[0]).unwrap()).unwrap();
    v1["body"]["wrapped"] = v2["body"]["wrapped"].clone();
    std::fs::write(&k1[0], serde_json::to_vec(&v1).unwrap()).unwrap();
    assert_eq!(error_code(app.get(Some(&ds), file)).1, "integrity_error");
    std::fs::write(&k1[0], &k1_orig).unwrap();

    // 6. An edited manifest (uploader changed).
    let m1 = find(
        &app.store_dir().join("models/nlp/bert/versions/1/manifest"),
        ".json",
    );
    let m = std::fs::read_to_string(&m1[0]).unwrap();
    std::fs::write(&m1[0], m.replace("\"alice\"", "\"mallory\"")).unwrap();
    assert_eq!(
        error_code(app.get(Some(&ds), "/v1/models/nlp/bert/versions/1")).1,
        "integrity_error"
    );
    std::fs::write(&m1[0], &m).unwrap();

    // 7. A forged token record (roles raised) is rejected.
    let auditor = app.token("audrey", &["auditor"], &["nlp"]);
    let id = auditor.split('_').nth(1).unwrap();
    let trec = app.store_dir().join(format!("tokens/{id}.json"));
    let t = std::fs::read_to_string(&trec).unwrap();
    std::fs::write(&trec, t.replace("\"auditor\"", "\"data-scientist\"")).unwrap();
    assert_eq!(error_code(app.get(Some(&auditor), file)).0, 401);

    // 8. A tampered empty file is caught over HTTP too (its one segment is
    //    checked before the empty answer).
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("empty"), b"").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/bert@e", src.path().to_str().unwrap()],
    ));
    let eblob = blob_of(&app, "bert", "e");
    let eorig = std::fs::read(&eblob).unwrap();
    let mut ebad = eorig.clone();
    *ebad.last_mut().unwrap() ^= 1;
    std::fs::write(&eblob, &ebad).unwrap();
    let efile = "/v1/models/nlp/bert/versions/e/files/empty";
    assert_eq!(error_code(app.get(Some(&ds), efile)).1, "integrity_error");
    std::fs::write(&eblob, &eorig).unwrap();
    assert_eq!(app.get(Some(&ds), efile).status(), 200);

    // Everything restored: the original bytes come back.
    let (got, clean) = drain(app.get(Some(&ds), file));
    assert!(clean);
    assert_eq!(got, data);
}
