//! Push then pull through the real binary; Range reads; the push race; bad
//! input answered with clear 4xx errors.

use modelvault_test_utils::{contains, pseudo_random};

use crate::common::*;

const MARKER: &[u8] = b"MODELVAULT-PLAINTEXT-MARKER-e2e-5d1c";

fn write_model(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut big = pseudo_random((64 << 20) + 12_345, 42);
    for off in [0usize, 1 << 20, 40 << 20, big.len() - MARKER.len()] {
        big[off..off + MARKER.len()].copy_from_slice(MARKER);
    }
    let files = vec![
        ("weights/model.safetensors".to_string(), big),
        (
            "config.json".to_string(),
            [MARKER, b" {\"layers\": 12}"].concat(),
        ),
        ("empty.txt".to_string(), Vec::new()),
        (
            "tokenizer/vocab.txt".to_string(),
            b"hello\nworld\n".to_vec(),
        ),
    ];
    for (p, data) in &files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    files
}

#[test]
fn push_then_pull_a_multi_file_version() {
    let app = TestApp::start();
    // Confidential models are for staging and production (bundled policy).
    let ds = app.token_in("alice", &["data-scientist"], &["nlp"], "staging", "alice");
    let src = tempfile::tempdir().unwrap();
    let files = write_model(src.path());
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "create",
            "nlp/bert",
            "--sensitivity",
            "confidential",
            "--tag",
            "team=nlp",
        ],
    ));
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/bert@1.0", src.path().to_str().unwrap()],
    ));

    // show, in text and JSON.
    let shown = ok(app.cli(
        Some(&ds),
        &["model", "show", "nlp/bert@1.0", "--output", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["sensitivity"], "confidential");
    assert_eq!(v["uploader"], "alice");
    assert_eq!(v["tags"]["team"], "nlp");
    assert_eq!(v["files"].as_array().unwrap().len(), 4);
    let big = &files[0].1;
    let entry = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "weights/model.safetensors")
        .unwrap();
    assert_eq!(entry["size"], big.len() as u64);
    assert_eq!(
        entry["sha256"],
        hex::encode(ring::digest::digest(&ring::digest::SHA256, big))
    );
    let list = ok(app.cli(Some(&ds), &["model", "list", "--output", "json"]));
    assert!(list.contains("\"bert\""));

    // pull `latest` into a fresh directory: identical bytes.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("pulled");
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/bert@latest", "-o", dest.to_str().unwrap()],
    ));
    for (p, data) in &files {
        assert_eq!(&std::fs::read(dest.join(p)).unwrap(), data, "{p}");
    }
    // No temporary files left behind, only the pull's receipts (one per
    // file); a second pull refuses to overwrite.
    let receipts = std::fs::read_to_string(dest.join(".modelvault-receipts")).unwrap();
    assert_eq!(receipts.lines().count(), files.len());
    assert_eq!(walk(&dest).len(), files.len() + 1);
    fails(
        app.cli(
            Some(&ds),
            &["pull", "nlp/bert@1.0", "-o", dest.to_str().unwrap()],
        ),
        "--force",
    );
    ok(app.cli(
        Some(&ds),
        &[
            "pull",
            "nlp/bert@1.0",
            "-o",
            dest.to_str().unwrap(),
            "--force",
        ],
    ));

    // Nothing under the data directory holds plaintext: not the marker, not
    // a plaintext digest.
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &files[1].1));
    let stored = stored_files(&app.data_dir());
    assert!(stored.len() > 10);
    for (f, bytes) in stored {
        assert!(
            !contains(&bytes, MARKER),
            "plaintext marker in {}",
            f.display()
        );
        assert!(
            !contains(&bytes, digest.as_bytes()),
            "plaintext digest in {}",
            f.display()
        );
    }

    // Versions are immutable and never reused.
    let again = tempfile::tempdir().unwrap();
    std::fs::write(again.path().join("x"), b"x").unwrap();
    fails(
        app.cli(
            Some(&ds),
            &["push", "nlp/bert@1.0", again.path().to_str().unwrap()],
        ),
        "committed",
    );
}

#[test]
fn range_reads_across_segment_boundaries() {
    let app = TestApp::start();
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/r"]));
    let data = pseudo_random(3 * (1 << 20) + 777, 7);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w.bin"), &data).unwrap();
    std::fs::write(src.path().join("empty"), b"").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/r@1", src.path().to_str().unwrap()],
    ));
    let path = "/v1/models/nlp/r/versions/1/files/w.bin";
    let seg = 1u64 << 20;
    let len = data.len() as u64;
    let http = app.http();
    let get = |range: Option<&str>| {
        let mut rb = http.get(format!("{}{path}", app.url)).bearer_auth(&ds);
        if let Some(r) = range {
            rb = rb.header("range", r);
        }
        rb.send().unwrap()
    };
    let full = get(None);
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-length"], len.to_string().as_str());
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        etag,
        format!(
            "\"{}\"",
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &data))
        )
    );
    assert_eq!(full.bytes().unwrap().as_ref(), &data[..]);
    for (a, b) in [
        (seg - 5, seg + 5),
        (0, 0),
        (2 * seg - 1, 2 * seg),
        (seg, 3 * seg + 10),
        (len - 1, len - 1),
    ] {
        let r = get(Some(&format!("bytes={a}-{b}")));
        assert_eq!(r.status(), 206);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {a}-{b}/{len}").as_str()
        );
        assert_eq!(
            r.headers()["content-length"],
            (b - a + 1).to_string().as_str()
        );
        assert_eq!(
            r.bytes().unwrap().as_ref(),
            &data[a as usize..=b as usize],
            "{a}-{b}"
        );
    }
    let suffix = get(Some("bytes=-100"));
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.bytes().unwrap().as_ref(), &data[data.len() - 100..]);
    let open = get(Some(&format!("bytes={}-", 2 * seg + 3)));
    assert_eq!(
        open.bytes().unwrap().as_ref(),
        &data[2 * seg as usize + 3..]
    );
    let unsat = get(Some(&format!("bytes={len}-")));
    assert_eq!(unsat.status(), 416);
    assert_eq!(
        unsat.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    assert_eq!(error_code(unsat).1, "range_not_satisfiable");
    // The empty file: 200 with no body, any range unsatisfiable.
    let e = app.get(Some(&ds), "/v1/models/nlp/r/versions/1/files/empty");
    assert_eq!(e.status(), 200);
    assert!(e.bytes().unwrap().is_empty());
}

#[test]
fn concurrent_pushes_of_one_version_one_wins() {
    let app = TestApp::start();
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/race"]));
    let dirs: Vec<_> = (0..2u8)
        .map(|i| {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(
                d.path().join("w.bin"),
                pseudo_random(3 << 20, i as u64 + 100),
            )
            .unwrap();
            d
        })
        .collect();
    let handles: Vec<_> = dirs
        .iter()
        .map(|d| {
            let url = app.url.clone();
            let ds = ds.clone();
            let p = d.path().to_str().unwrap().to_string();
            std::thread::spawn(move || cli(&url, Some(&ds), &["push", "nlp/race@1", &p]))
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<_> = outs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.status.success())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    let loser = outs.iter().find(|o| !o.status.success()).unwrap();
    assert!(stderr(loser).contains("committed"), "{}", stderr(loser));
    let dest = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/race@1", "-o", dest.path().to_str().unwrap()],
    ));
    assert_eq!(
        std::fs::read(dest.path().join("w.bin")).unwrap(),
        std::fs::read(dirs[winners[0]].path().join("w.bin")).unwrap()
    );
}

#[test]
fn bad_input_gets_clear_4xx() {
    let app = TestApp::start();
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    let http = app.http();
    let url = |p: &str| format!("{}{p}", app.url);
    let put =
        |p: &str, body: &'static [u8]| http.put(url(p)).bearer_auth(&ds).body(body).send().unwrap();
    let post = |p: &str, body: &str| {
        http.post(url(p))
            .bearer_auth(&ds)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };

    // Names.
    let (s, c, _) = error_code(post(
        "/v1/models",
        r#"{"namespace":"nlp","name":"Bad Name"}"#,
    ));
    assert_eq!((s, c.as_str()), (400, "invalid_request"));
    let (s, _, _) = error_code(post(
        "/v1/models",
        r#"{"namespace":"nlp","name":"ok","sensitivity":"secret"}"#,
    ));
    assert_eq!(s, 400);
    let (s, c, _) = error_code(post("/v1/models", r#"{"namespace":"nlp","name":"m"}"#));
    assert_eq!((s, c.as_str()), (409, "already_exists"));
    let (s, _, _) = error_code(put("/v1/models/nlp/m/versions/.bad/files/a", b"x"));
    assert_eq!(s, 400);
    let (s, _, _) = error_code(put("/v1/models/nlp/m/versions/latest/files/a", b"x"));
    assert_eq!(s, 400);
    // Path traversal, sent raw so no client library normalizes it away.
    for p in [
        "../etc/passwd",
        "%2e%2e/etc/passwd",
        "a/../b",
        "a/%2E%2E/b",
        "a//b",
        "%2fabs",
        "a/./b",
    ] {
        let (s, body) = raw_put(&app, &ds, &format!("/v1/models/nlp/m/versions/1/files/{p}"));
        assert_eq!(s, 400, "{p}: {body}");
        assert!(body.contains("\"invalid_request\""), "{p}: {body}");
    }
    // Missing, malformed and oversized JSON bodies.
    let (s, _, _) = error_code(post("/v1/models", ""));
    assert_eq!(s, 400);
    let (s, _, _) = error_code(post("/v1/models", "{not json"));
    assert_eq!(s, 400);
    let r = http
        .post(url("/v1/models"))
        .bearer_auth(&ds)
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(error_code(r).0, 415);
    let huge = format!(
        r#"{{"namespace":"nlp","name":"x","tags":{{"a":"{}"}}}}"#,
        "a".repeat(2 << 20)
    );
    let (s, c, _) = error_code(post("/v1/models", &huge));
    assert_eq!((s, c.as_str()), (413, "payload_too_large"));
    // Unknown model, version, file, route.
    let (s, c, _) = error_code(put("/v1/models/nlp/nope/versions/1/files/a", b"x"));
    assert_eq!((s, c.as_str()), (404, "not_found"));
    assert_eq!(
        error_code(app.get(Some(&ds), "/v1/models/nlp/m/versions/9")).0,
        404
    );
    assert_eq!(
        error_code(app.get(Some(&ds), "/v1/models/nlp/m/versions/latest")).0,
        404
    );
    assert_eq!(
        error_code(app.get(Some(&ds), "/v1/nothing-here")).1,
        "not_found"
    );
    // Commit lists that do not match what was uploaded.
    assert_eq!(
        put("/v1/models/nlp/m/versions/1/files/a", b"hello").status(),
        201
    );
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"hello"));
    let wrong = format!(
        r#"{{"files":[{{"path":"a","size":5,"sha256":"{}"}}]}}"#,
        "0".repeat(64)
    );
    let (s, c, _) = error_code(post("/v1/models/nlp/m/versions/1/commit", &wrong));
    assert_eq!((s, c.as_str()), (409, "commit_mismatch"));
    let missing = format!(
        r#"{{"files":[{{"path":"a","size":5,"sha256":"{sha}"}},{{"path":"b","size":1,"sha256":"{sha}"}}]}}"#
    );
    assert_eq!(
        error_code(post("/v1/models/nlp/m/versions/1/commit", &missing)).1,
        "commit_mismatch"
    );
    let (s, _, _) = error_code(post(
        "/v1/models/nlp/m/versions/1/commit",
        r#"{"files":[]}"#,
    ));
    assert_eq!(s, 400);
    let good = format!(r#"{{"files":[{{"path":"a","size":5,"sha256":"{sha}"}}]}}"#);
    assert_eq!(
        post("/v1/models/nlp/m/versions/1/commit", &good).status(),
        201
    );
    // Committed versions are immutable.
    let (s, c, _) = error_code(put("/v1/models/nlp/m/versions/1/files/b", b"x"));
    assert_eq!((s, c.as_str()), (409, "version_committed"));
    // A commit retried with the same content (a lost answer) is answered
    // as the first; other content is refused.
    assert_eq!(
        post("/v1/models/nlp/m/versions/1/commit", &good).status(),
        201
    );
    let other = format!(r#"{{"files":[{{"path":"a","size":6,"sha256":"{sha}"}}]}}"#);
    let (s, c, _) = error_code(post("/v1/models/nlp/m/versions/1/commit", &other));
    assert_eq!((s, c.as_str()), (409, "version_committed"));
    // CLI errors are one line with a non-zero exit.
    fails(app.cli(Some(&ds), &["model", "show", "nlp"]), "NS/NAME");
    fails(
        app.cli(Some(&ds), &["push", "nlp/m", "/tmp"]),
        "NS/NAME@VERSION",
    );
    fails(
        app.cli(Some(&ds), &["pull", "nlp/m@404", "-o", "/tmp/x-never"]),
        "not found",
    );
    fails(
        cli("http://127.0.0.1:9", Some(&ds), &["model", "list"]),
        "cannot reach",
    );
    fails(
        app.cli(Some(&app.admin), &["token", "create", "--role", "root"]),
        "unknown role",
    );
    fails(
        app.cli(
            Some(&app.admin),
            &["token", "create", "--role", "auditor", "--env", "moon"],
        ),
        "not declared",
    );
    fails(
        app.cli(
            Some(&app.admin),
            &["token", "create", "--role", "auditor", "--ttl", "7w"],
        ),
        "invalid duration",
    );
    // The server is healthy after all of it.
    assert_eq!(app.get(None, "/healthz").status(), 200);
}

#[test]
fn init_and_serve_guard_rails() {
    let app = TestApp::start();
    // init refuses an initialized directory.
    let out = std::process::Command::new(BIN)
        .args(["init", "--data-dir", app.data_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("already initialized"));
    // A second data dir over the same store refuses too (store marker).
    let other = tempfile::tempdir().unwrap();
    let store = format!("file://{}", app.store_dir().display());
    let out = std::process::Command::new(BIN)
        .args([
            "init",
            "--data-dir",
            other.path().join("d").to_str().unwrap(),
            "--store",
            &store,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("already initialized"),
        "{}",
        stderr(&out)
    );
    // Keyring and config are private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(app.data_dir().join("keyring.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Plain HTTP off loopback is refused without --insecure-http.
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            app.data_dir().to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--insecure-http"), "{}", stderr(&out));
    // serve initializes a fresh data dir and writes the admin token 0600.
    let fresh = tempfile::tempdir().unwrap();
    let d = fresh.path().join("fresh");
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            d.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let token_file = d.join("admin-token");
    for _ in 0..100 {
        if token_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&token_file)
            .unwrap()
            .starts_with("mv_")
    );
}

/// A PUT sent as raw HTTP/1.1, path untouched; returns status and body.
fn raw_put(app: &TestApp, token: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let addr = app.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
