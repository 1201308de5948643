//! A bucket writer rolling state back on the local store: a deleted
//! version's records and blobs put back from a copy, a DEK rotation undone,
//! the audit signing key deleted; and a key release to a low-order client
//! key. Each is refused or recorded; none serves a revoked state silently.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use crate::common::*;

fn push(app: &TestApp, token: &str, target: &str, data: &[u8]) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), data).unwrap();
    ok(app.cli(Some(token), &["push", target, src.path().to_str().unwrap()]));
}

/// Copies every file under `src` to the same relative path under `dst`.
fn copy_tree(src: &Path, dst: &Path) {
    for f in walk(src) {
        let to = dst.join(f.strip_prefix(src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
}

fn remove(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// Sets `[keys]` presign_secs and dek_rotation_grace_secs.
fn set_lifetimes(cfg: &mut String, presign: u64, grace: u64) {
    for (key, value) in [
        ("presign_secs", presign),
        ("dek_rotation_grace_secs", grace),
    ] {
        let start = cfg.find(&format!("\n{key} = ")).expect(key) + 1;
        let end = start + cfg[start..].find('\n').unwrap();
        cfg.replace_range(start..end, &format!("{key} = {value}"));
    }
}

fn release(app: &TestApp, token: &str, target: &str, public_key: &[u8]) -> (u16, Value) {
    let resp = app
        .http()
        .post(format!("{}/v1/models/{target}/key-release", app.url))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "public_key": base64::engine::general_purpose::STANDARD.encode(public_key)
        }))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn keys_status(app: &TestApp) -> Value {
    serde_json::from_str(&ok(
        app.cli(Some(&app.admin), &["keys", "status", "--output", "json"])
    ))
    .unwrap()
}

fn wait_rotation_done(app: &TestApp, version: &str) -> Value {
    for _ in 0..300 {
        let s = keys_status(app);
        let job = s["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "rotate-dek" && j["version"] == version)
            .cloned()
            .expect("rotation job");
        if job["state"] != "running" {
            assert_eq!(job["state"], "done", "{job}");
            return job;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the rotation of {version} did not end");
}

#[test]
fn a_deleted_version_put_back_from_a_copy_stays_gone() {
    let app = TestApp::start();
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    let one = modelvault_test_utils::pseudo_random(50_000, 1);
    let two = modelvault_test_utils::pseudo_random(60_000, 2);
    push(&app, &ds, "nlp/m@1", &one);
    push(&app, &ds, "nlp/m@2", &two);

    // A copy of version 2's records and blobs, made before the delete.
    let store = app.store_dir();
    let records = store.join("models/nlp/m/versions/2");
    let blobs = store.join("blobs/nlp/m/2");
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&records, &copy.path().join("records"));
    copy_tree(&blobs, &copy.path().join("blobs"));
    ok(app.cli(Some(&app.admin), &["delete", "nlp/m@2", "--yes"]));
    assert!(records.join("deleted.json").exists());

    // The bucket writer puts key records, manifest, uploads and blobs back;
    // the tombstone stays.
    copy_tree(&copy.path().join("records"), &records);
    copy_tree(&copy.path().join("blobs"), &blobs);
    assert!(!walk(&records.join("keys")).is_empty());

    for path in [
        "/v1/models/nlp/m/versions/2",
        "/v1/models/nlp/m/versions/2/files/w",
    ] {
        let (status, code, _) = error_code(app.get(Some(&ds), path));
        assert_eq!((status, code.as_str()), (410, "gone"), "{path}");
    }
    let (status, _) = release(
        &app,
        &workload,
        "nlp/m/versions/2",
        &modelvault_release::ClientKey::generate().public_bytes(),
    );
    assert_eq!(status, 410, "a deleted version's DEK is released again");
    let out = tempfile::tempdir().unwrap();
    let o = app.cli(
        Some(&ds),
        &["pull", "nlp/m@2", "-o", out.path().to_str().unwrap()],
    );
    assert!(!o.status.success(), "pulled a deleted version");

    // `latest` is version 1: a deleted version is never listed.
    let listed: Value = app
        .get(Some(&ds), "/v1/models/nlp/m/versions")
        .json()
        .unwrap();
    let names: Vec<&str> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1"], "{listed}");
    let latest: Value = app
        .get(Some(&ds), "/v1/models/nlp/m/versions/latest")
        .json()
        .unwrap();
    assert_eq!(latest["version"], "1", "{latest}");
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/m@latest", "-o", out.path().to_str().unwrap()],
    ));
    assert!(std::fs::read(out.path().join("w")).unwrap() == one);
    // Nor can it be rotated, pushed again or rewrapped into use.
    fails(
        app.cli(Some(&app.admin), &["keys", "rotate", "nlp/m@2"]),
        "deleted",
    );
    ok(app.cli(Some(&app.admin), &["keys", "rotate-kek"]));
    let restored_key = walk(&records.join("keys"));
    assert_eq!(restored_key.len(), 1, "{restored_key:?}");
}

#[test]
fn a_dek_rotation_undone_from_a_copy_is_refused_and_complete_retires_the_old_keks() {
    let app = TestApp::start_configured(None, |c| set_lifetimes(c, 1, 2));
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    ok(app.cli(Some(&ds), &["model", "create", "nlp/r"]));
    let one = modelvault_test_utils::pseudo_random(70_000, 3);
    let two = modelvault_test_utils::pseudo_random(80_000, 4);
    push(&app, &ds, "nlp/r@1", &one);
    push(&app, &ds, "nlp/r@2", &two);
    let store = app.store_dir();
    let before = tempfile::tempdir().unwrap();
    for v in ["1", "2"] {
        copy_tree(
            &store.join(format!("models/nlp/r/versions/{v}")),
            &before.path().join(format!("records/{v}")),
        );
        copy_tree(
            &store.join(format!("blobs/nlp/r/{v}")),
            &before.path().join(format!("blobs/{v}")),
        );
    }

    // 1. A plain rotation of version 1, then the bucket writer undoes it:
    //    the new manifest deleted, the old one and the old blobs put back.
    ok(app.cli(Some(&app.admin), &["keys", "rotate", "nlp/r@1"]));
    let job = wait_rotation_done(&app, "nlp/r@1");
    assert_eq!(job["phase"], "done", "{job}");
    let manifests = store.join("models/nlp/r/versions/1/manifest");
    let rotated = tempfile::tempdir().unwrap();
    copy_tree(&manifests, rotated.path());
    remove(&manifests);
    copy_tree(&before.path().join("records/1/manifest"), &manifests);
    copy_tree(&before.path().join("blobs/1"), &store.join("blobs/nlp/r/1"));

    // Generation 1 is never served again: an integrity error, not a
    // silent downgrade.
    let (status, code, _) = error_code(app.get(Some(&ds), "/v1/models/nlp/r/versions/1/files/w"));
    assert_eq!((status, code.as_str()), (500, "integrity_error"));
    let (status, code, _) = error_code(app.get(Some(&ds), "/v1/models/nlp/r/versions/1"));
    assert_eq!((status, code.as_str()), (500, "integrity_error"));
    let (status, answer) = release(
        &app,
        &workload,
        "nlp/r/versions/1",
        &modelvault_release::ClientKey::generate().public_bytes(),
    );
    assert_eq!(status, 500, "the revoked DEK was released again: {answer}");
    let out = tempfile::tempdir().unwrap();
    let o = app.cli(
        Some(&ds),
        &["pull", "nlp/r@1", "-o", out.path().to_str().unwrap()],
    );
    assert!(!o.status.success(), "pulled a rolled-back version");
    // Put right again (the rotated manifest back, the old blobs gone), it
    // serves generation 2.
    remove(&manifests);
    copy_tree(rotated.path(), &manifests);
    for f in walk(&before.path().join("blobs/1")) {
        let name = f.strip_prefix(before.path().join("blobs/1")).unwrap();
        std::fs::remove_file(store.join("blobs/nlp/r/1").join(name)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/r@1", "-o", dir.path().to_str().unwrap()],
    ));
    assert!(std::fs::read(dir.path().join("w")).unwrap() == one);

    // 2. A complete rotation of version 2: the DEK rotation, then a KEK
    //    rotation and the retirement of every older KEK version.
    let out = app.cli(
        Some(&app.admin),
        &["keys", "rotate", "nlp/r@2", "--complete"],
    );
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("retired KEK version(s) [1]"), "{said}");
    let s = keys_status(&app);
    assert_eq!(s["current_kek_version"], 2, "{s}");
    let kek1 = s["kek_versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == 1)
        .cloned()
        .unwrap();
    assert_eq!(kek1["state"], "destroyed", "{s}");
    let job = wait_rotation_done(&app, "nlp/r@2");
    assert_eq!(job["retired_keks"], serde_json::json!([1]), "{job}");
    let dir = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/r@2", "-o", dir.path().to_str().unwrap()],
    ));
    assert!(std::fs::read(dir.path().join("w")).unwrap() == two);

    // Even a rollback that removes every trace of the rotation (the switch
    // record and the new generation's key records deleted, the old
    // manifest and blobs put back) fails closed: the old generation's
    // wrapped DEK no longer unwraps.
    let v2 = store.join("models/nlp/r/versions/2");
    remove(&v2.join("manifest"));
    remove(&v2.join("switches"));
    for f in walk(&v2.join("keys")) {
        let record: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        if record["body"]["dek_generation"] != 1 {
            std::fs::remove_file(&f).unwrap();
        }
    }
    copy_tree(
        &before.path().join("records/2/manifest"),
        &v2.join("manifest"),
    );
    remove(&store.join("blobs/nlp/r/2"));
    copy_tree(&before.path().join("blobs/2"), &store.join("blobs/nlp/r/2"));
    let resp = app.get(Some(&ds), "/v1/models/nlp/r/versions/2/files/w");
    assert_eq!(resp.status(), 500);
    let (status, _) = release(
        &app,
        &workload,
        "nlp/r/versions/2",
        &modelvault_release::ClientKey::generate().public_bytes(),
    );
    assert_eq!(status, 500);
    // Nothing the provider holds unwraps the copied generation-1 records.
    let keyring =
        modelvault_keys::LocalKeyring::open(&app.data_dir().join("keyring.json")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let copied = walk(&before.path().join("records/2/keys"));
    assert!(!copied.is_empty());
    for f in copied {
        let env: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let record: modelvault_storage::KeyRecord =
            serde_json::from_value(env["body"].clone()).unwrap();
        let binding = modelvault_keys::DekBinding {
            namespace: "nlp",
            model: "r",
            version: "2",
            dek_generation: record.dek_generation,
        };
        use modelvault_keys::KeyProvider as _;
        assert!(
            rt.block_on(keyring.unwrap_dek(&record.wrapped, &binding))
                .is_err()
        );
    }
}

/// A server process started by a test; killed on drop.
struct Server {
    child: Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `modelvault serve` over `data` with `args`: the running server,
/// or everything it wrote to stderr if it exited instead.
fn try_serve(data: &Path, args: &[&str]) -> Result<Server, String> {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("MODELVAULT_LOG", "info")
        .env("MODELVAULT_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(url) => Ok(Server { child, url, log }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(log.lock().unwrap().clone())
        }
    }
}

fn set_pin(data: &Path, pin: Option<&str>) {
    let path = data.join("modelvault.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut text: String = text
        .lines()
        .filter(|l| !l.starts_with("public_key = "))
        .map(|l| format!("{l}\n"))
        .collect();
    if let Some(pin) = pin {
        text = text.replace("[audit]\n", &format!("[audit]\npublic_key = \"{pin}\"\n"));
    }
    std::fs::write(&path, text).unwrap();
}

#[test]
fn a_lost_audit_signing_key_is_not_reminted_silently() {
    let app = TestApp::start();
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    let original = ok(app.cli(Some(&auditor), &["audit", "public-key"]))
        .trim()
        .to_string();
    assert_eq!(original.len(), 64);
    // A signed checkpoint exists.
    ok(app.cli(Some(&auditor), &["audit", "verify"]));
    let store = app.store_dir();
    let keys = store.join("audit/signing-keys");
    assert!(!walk(&keys).is_empty());
    assert!(!walk(&store.join("audit/checkpoints")).is_empty());
    let saved = tempfile::tempdir().unwrap();
    copy_tree(&keys, saved.path());

    // The bucket writer deletes the signing key and the checkpoints.
    remove(&keys);
    remove(&store.join("audit/checkpoints"));
    let data = app.data_dir();
    let log = try_serve(&data, &[])
        .err()
        .expect("started without its signing key");
    assert!(log.contains("--allow-new-audit-signing-key"), "{log}");
    assert!(walk(&keys).is_empty(), "a key was created anyway");

    // With the public key pinned, not even the override mints a new one.
    set_pin(&data, Some(&original));
    let log = try_serve(&data, &["--allow-new-audit-signing-key"])
        .err()
        .expect("started with a key other than the pinned one");
    assert!(log.contains("audit.public_key"), "{log}");
    assert!(walk(&keys).is_empty(), "a key was created anyway");

    // The key restored from a backup: the pinned server starts, and
    // verification through it uses the pinned key.
    copy_tree(saved.path(), &keys);
    let server = try_serve(&data, &[]).expect("the restored key matches the pin");
    let report: Value = serde_json::from_str(&ok(cli(
        &server.url,
        Some(&auditor),
        &["audit", "verify", "--output", "json"],
    )))
    .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    drop(server);

    // A pin that is not a key is refused at start.
    set_pin(&data, Some("not-a-key"));
    let log = try_serve(&data, &[]).err().expect("started with a bad pin");
    assert!(log.contains("audit.public_key"), "{log}");

    // Without a pin, the operator may accept a new key explicitly; the
    // server says so.
    set_pin(&data, None);
    remove(&keys);
    let server = try_serve(&data, &["--allow-new-audit-signing-key"])
        .expect("the override starts the server");
    let minted = ok(cli(&server.url, Some(&auditor), &["audit", "public-key"]))
        .trim()
        .to_string();
    assert_ne!(minted, original);
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .contains("a new key was created as allowed"),
        "{}",
        server.log.lock().unwrap()
    );
}

#[test]
fn a_low_order_client_key_leaves_no_open_intent() {
    let app = TestApp::start();
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/edge"]));
    push(&app, &ds, "nlp/edge@1", b"weights");
    let mut one = [0u8; 32];
    one[0] = 1;
    // A point of order 8 on Curve25519.
    let order_8: Vec<u8> = (0..32)
        .map(|i| {
            u8::from_str_radix(
                &"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
                    [2 * i..2 * i + 2],
                16,
            )
            .unwrap()
        })
        .collect();
    for point in [[0u8; 32].to_vec(), one.to_vec(), order_8] {
        let (status, body) = release(&app, &workload, "nlp/edge/versions/1", &point);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    // Every key-release intent in the trail has its completion.
    let mut report = Value::Null;
    for _ in 0..50 {
        report = serde_json::from_str(&ok(
            app.cli(Some(&auditor), &["audit", "verify", "--output", "json"])
        ))
        .unwrap();
        let open: usize = report["chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["open_intents"].as_array().map_or(0, Vec::len))
            .sum();
        if open == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("key-release intents without a completion: {report}");
}
