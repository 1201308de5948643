//! Smaller hardening findings, end to end: a retried push, a full disk,
//! one spelling per file name, and the modes of a local store's files.

use std::os::unix::fs::PermissionsExt as _;

use crate::common::*;

fn write(dir: &std::path::Path, files: &[(&str, &[u8])]) {
    for (p, data) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

/// A push whose commit landed but whose answer was lost (the client or the
/// server crashed right after) is simply run again: the retry succeeds when
/// the content is the same, and other content is still refused.
#[test]
fn a_retried_push_of_the_same_content_succeeds() {
    let app = TestApp::start();
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/bert"]));
    let src = tempfile::tempdir().unwrap();
    write(
        src.path(),
        &[("weights.bin", &[7u8; 100_000]), ("cfg/config.json", b"{}")],
    );
    let dir = src.path().to_str().unwrap();
    ok(app.cli(Some(&ds), &["push", "nlp/bert@1", dir]));
    // The retry after the crash: same files, same result.
    let out = app.cli(Some(&ds), &["push", "nlp/bert@1", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already pushed with this content"),
        "{}",
        stderr(&out)
    );
    // A raw commit retry (the client lost the commit's answer) is 201 too.
    let http = app.http();
    let base = format!("{}/v1/models/nlp/bert/versions/1", app.url);
    let sha = |d: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, d));
    let commit = |files: serde_json::Value| {
        http.post(format!("{base}/commit"))
            .bearer_auth(&ds)
            .json(&serde_json::json!({ "files": files }))
            .send()
            .unwrap()
    };
    let same = serde_json::json!([
        {"path": "weights.bin", "size": 100_000, "sha256": sha(&[7u8; 100_000])},
        {"path": "cfg/config.json", "size": 2, "sha256": sha(b"{}")},
    ]);
    assert_eq!(commit(same).status().as_u16(), 201);
    let other = serde_json::json!([
        {"path": "weights.bin", "size": 100_000, "sha256": sha(&[8u8; 100_000])},
        {"path": "cfg/config.json", "size": 2, "sha256": sha(b"{}")},
    ]);
    let (status, code, _) = error_code(commit(other));
    assert_eq!((status, code.as_str()), (409, "version_committed"));
    // Other content under the committed name is refused, in one line.
    std::fs::write(src.path().join("weights.bin"), [8u8; 100_000]).unwrap();
    fails(
        app.cli(Some(&ds), &["push", "nlp/bert@1", dir]),
        "committed with other content",
    );
    // An extra file is other content as well.
    std::fs::write(src.path().join("weights.bin"), [7u8; 100_000]).unwrap();
    std::fs::write(src.path().join("extra.txt"), b"x").unwrap();
    fails(
        app.cli(Some(&ds), &["push", "nlp/bert@1", dir]),
        "version_committed",
    );
}

/// A store on a full disk answers 507 `insufficient_storage`, the CLI says
/// so, and nothing of the failed upload stays in the store.
#[test]
fn a_full_disk_is_507_insufficient_storage() {
    let Some(disk) = modelvault_test_utils::Tmpfs::mount("2m") else {
        return;
    };
    let store = disk.path.join("store");
    let app = TestApp::start_with_store(Some(&format!("file://{}", store.display())));
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/bert"]));
    let before = walk(&store);
    let src = tempfile::tempdir().unwrap();
    write(src.path(), &[("big.bin", &vec![1u8; 6 << 20])]);
    let err = fails(
        app.cli(
            Some(&ds),
            &["push", "nlp/bert@1", src.path().to_str().unwrap()],
        ),
        "out of space",
    );
    assert!(err.contains("insufficient_storage, HTTP 507"), "{err}");
    // Nothing half-written: no blob, staging file or upload record (the
    // version's key record, complete, may stay; the audit trail, also in
    // the store, records the failed request).
    let mut left = Vec::new();
    for _ in 0..50 {
        left = walk(&store)
            .into_iter()
            .filter(|p| {
                let p = p.to_string_lossy();
                !before.iter().any(|b| b.to_string_lossy() == p)
                    && (p.contains("/blobs/") || p.contains("/uploads/"))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    // Over raw HTTP: the status and code, and a message that says why.
    let resp = app
        .http()
        .put(format!(
            "{}/v1/models/nlp/bert/versions/1/files/big.bin",
            app.url
        ))
        .bearer_auth(&ds)
        .body(vec![1u8; 6 << 20])
        .send()
        .unwrap();
    let (status, code, body) = error_code(resp);
    assert_eq!((status, code.as_str()), (507, "insufficient_storage"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("out of space"),
        "{body}"
    );
    // The server is fine and a small file fits.
    write(src.path(), &[("big.bin", b"small")]);
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/bert@1", src.path().to_str().unwrap()],
    ));
}

/// Two spellings of one name (NFC and NFD) are one file; names that hide
/// what they are or that other systems cannot hold are refused.
#[test]
fn file_names_have_one_spelling() {
    let app = TestApp::start();
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/bert"]));
    let http = app.http();
    let url = |p: &str| {
        format!(
            "{}/v1/models/nlp/bert/versions/1/files/{}",
            app.url,
            p.split('/')
                .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20"))
                .collect::<Vec<_>>()
                .join("/")
        )
    };
    let nfd = "mode\u{301}le.bin";
    let nfc = "mod\u{e9}le.bin";
    let put =
        |p: &str, body: &'static [u8]| http.put(url(p)).bearer_auth(&ds).body(body).send().unwrap();
    let r = put(nfd, b"first");
    assert_eq!(r.status().as_u16(), 201);
    let receipt: serde_json::Value = r.json().unwrap();
    assert_eq!(receipt["path"], nfc, "stored under the NFC spelling");
    assert_eq!(put(nfc, b"second").status().as_u16(), 201);
    for bad in [
        "evil\u{202e}txt.exe",
        "a\u{200b}b",
        "CON",
        "dir/aux.json",
        "trailing.",
        "trailing ",
        "a:b",
    ] {
        let (status, code, _) = error_code(put(bad, b"x"));
        assert_eq!((status, code.as_str()), (400, "invalid_request"), "{bad:?}");
    }
    // Committing both spellings lists one file twice.
    let sha = |d: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, d));
    let commit = |files: serde_json::Value| {
        http.post(format!("{}/v1/models/nlp/bert/versions/1/commit", app.url))
            .bearer_auth(&ds)
            .json(&serde_json::json!({ "files": files }))
            .send()
            .unwrap()
    };
    let (status, _, _) = error_code(commit(serde_json::json!([
        {"path": nfd, "size": 5, "sha256": sha(b"first")},
        {"path": nfc, "size": 6, "sha256": sha(b"second")},
    ])));
    assert_eq!(status, 400);
    let r = commit(serde_json::json!([
        {"path": nfd, "size": 6, "sha256": sha(b"second")},
    ]));
    assert_eq!(r.status().as_u16(), 201);
    let detail: serde_json::Value = r.json().unwrap();
    assert_eq!(detail["files"].as_array().unwrap().len(), 1);
    assert_eq!(detail["files"][0]["path"], nfc);
    // Either spelling downloads it.
    for spelling in [nfd, nfc] {
        let r = http.get(url(spelling)).bearer_auth(&ds).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{spelling:?}");
        assert_eq!(r.bytes().unwrap().as_ref(), b"second");
    }
}

/// The server's files are its user's only: every file of the local store
/// (and the data directory) is 0600, every directory 0700.
#[test]
fn local_store_files_are_private() {
    let app = TestApp::start();
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/bert"]));
    let src = tempfile::tempdir().unwrap();
    write(src.path(), &[("w/weights.bin", &[3u8; 50_000])]);
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/bert@1", src.path().to_str().unwrap()],
    ));
    let data = app.data_dir();
    let mut seen = 0;
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
                seen += 1;
            }
        }
    }
    assert!(
        walk(&app.store_dir())
            .iter()
            .any(|p| p.to_string_lossy().contains("/blobs/")),
        "the push wrote no blob"
    );
    assert!(seen > 5, "only {seen} files under {}", data.display());
}

/// Runs `modelvault` with a backup passphrase; kills it after `secs`
/// (`None` then): a KDF run with a hostile file's parameters never ends.
fn run_keys(args: &[&str], pass: &str, secs: u64) -> Option<std::process::Output> {
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .env("MODELVAULT_BACKUP_PASSPHRASE", pass)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The passphrase minimum counts characters, not bytes; a backup file's
/// argon2 parameters are bounded before the KDF runs on them.
#[test]
fn keyring_backup_counts_characters_and_bounds_the_kdf() {
    let app = TestApp::start();
    let d = app.data_dir();
    let d = d.to_str().unwrap();
    let backup = app.dir.path().join("keyring.backup");
    let b = backup.to_str().unwrap();
    // Seven characters in fourteen bytes: too short.
    let out = run_keys(&["keys", "backup", "--data-dir", d, "-o", b], "ééééééé", 60).unwrap();
    fails(out, "at least 12 characters");
    assert!(!backup.exists());
    let pass = "éééééééééééé"; // twelve characters
    ok(run_keys(&["keys", "backup", "--data-dir", d, "-o", b], pass, 120).unwrap());
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&backup).unwrap()).unwrap();
    let hostile = app.dir.path().join("hostile.backup");
    let h = hostile.to_str().unwrap();
    let keyring = std::fs::read(app.data_dir().join("keyring.json")).unwrap();
    for (field, value) in [
        ("m_cost_kib", serde_json::json!(u32::MAX)),
        ("t_cost", serde_json::json!(1_000_000)),
        ("p_cost", serde_json::json!(255)),
    ] {
        let mut b = original.clone();
        b[field] = value;
        std::fs::write(&hostile, serde_json::to_vec(&b).unwrap()).unwrap();
        let out = run_keys(
            &["keys", "restore", "--data-dir", d, "-i", h, "--force"],
            pass,
            30,
        )
        .unwrap_or_else(|| panic!("restore ran the KDF with {field} = {}", b[field]));
        fails(out, "maxima");
    }
    assert_eq!(
        std::fs::read(app.data_dir().join("keyring.json")).unwrap(),
        keyring,
        "a refused restore left the keyring alone"
    );
    // The honest backup still restores.
    ok(run_keys(
        &["keys", "restore", "--data-dir", d, "-i", b, "--force"],
        pass,
        120,
    )
    .unwrap());
}

/// `audit verify --public-key` takes a file (of hex or of the JSON of
/// GET /v1/audit/public-key), and its help says so.
#[test]
fn audit_verify_public_key_help_names_a_file() {
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--help"])
        .output()
        .unwrap();
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("--public-key <PUBLIC_KEY> A file holding the checkpoint public key"),
        "{help}"
    );
}
