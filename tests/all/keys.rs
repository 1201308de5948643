//! Keys end to end: sealed key release to a workload and `pull
//! --client-side` (local store through the ciphertext route, S3 through
//! presigned URLs).

use serde_json::Value;

use crate::common::*;

fn release(app: &TestApp, token: &str, target: &str) -> reqwest::blocking::Response {
    let key = modelvault_release::ClientKey::generate();
    use base64::Engine as _;
    app.http()
        .post(format!("{}/v1/models/{target}/key-release", app.url))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "public_key": base64::engine::general_purpose::STANDARD.encode(key.public_bytes())
        }))
        .send()
        .unwrap()
}

fn client_side_round_trip(store: Option<&str>) {
    let app = TestApp::start_with_store(store);
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/edge"]));
    let src = tempfile::tempdir().unwrap();
    let big = modelvault_test_utils::pseudo_random((3 << 20) + 11, 5);
    std::fs::create_dir_all(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/w.bin"), &big).unwrap();
    std::fs::write(src.path().join("empty"), b"").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/edge@1", src.path().to_str().unwrap()],
    ));

    // The workload decrypts at the edge.
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    ok(app.cli(
        Some(&workload),
        &["pull", "nlp/edge@1", "--client-side", "-o", o],
    ));
    assert_eq!(std::fs::read(out.path().join("sub/w.bin")).unwrap(), big);
    assert!(std::fs::read(out.path().join("empty")).unwrap().is_empty());
    fails(
        app.cli(
            Some(&workload),
            &["pull", "nlp/edge@1", "--client-side", "-o", o],
        ),
        "exists",
    );
    // Without key-release: refused; a data scientist may download but not
    // receive keys.
    fails(
        app.cli(
            Some(&ds),
            &["pull", "nlp/edge@1", "--client-side", "-o", o, "--force"],
        ),
        "key-release",
    );
    assert_eq!(release(&app, &auditor, "nlp/edge/versions/1").status(), 403);
    let bad = app
        .http()
        .post(format!(
            "{}/v1/models/nlp/edge/versions/1/key-release",
            app.url
        ))
        .bearer_auth(&workload)
        .json(&serde_json::json!({"public_key": "AAAA"}))
        .send()
        .unwrap();
    assert_eq!(error_code(bad).0, 400);

    // The response: sealed key and where the ciphertext is.
    let r: Value = release(&app, &workload, "nlp/edge/versions/1")
        .json()
        .unwrap();
    assert_eq!(r["dek_generation"], 1);
    assert_eq!(
        r["suite"],
        "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"
    );
    let f = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "sub/w.bin")
        .unwrap()
        .clone();
    if store.is_some() {
        // S3: presigned, no token needed, and it is ciphertext.
        assert_eq!(f["presigned"], true, "{f}");
        let bytes = reqwest::blocking::get(f["url"].as_str().unwrap())
            .unwrap()
            .bytes()
            .unwrap();
        assert_eq!(bytes.len() as u64, f["ciphertext_size"].as_u64().unwrap());
        assert!(!modelvault_test_utils::contains(&bytes, &big[..64]));
    } else {
        assert_eq!(f["presigned"], false);
        let resp = app.get(Some(&workload), f["url"].as_str().unwrap());
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().unwrap();
        assert_eq!(bytes.len() as u64, f["ciphertext_size"].as_u64().unwrap());
        assert!(!modelvault_test_utils::contains(&bytes, &big[..64]));
        assert_eq!(
            app.get(Some(&auditor), f["url"].as_str().unwrap()).status(),
            403
        );
    }
    // Every release is audited (durable intent with the key versions).
    let records: Vec<Value> = ok(app.cli(
        Some(&auditor),
        &["audit", "export", "--action", "key-release"],
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let intent = records
        .iter()
        .find(|r| r["type"] == "intent")
        .expect("intent");
    assert_eq!(intent["principal"]["id"], "serving");
    assert_eq!(intent["keys"][0]["kek_version"], 1);
    let metrics = app.get(None, "/metrics").text().unwrap();
    assert!(
        metrics.contains("modelvault_key_releases_total 2"),
        "{metrics}"
    );
}

#[test]
fn key_release_and_client_side_pull_on_the_local_store() {
    client_side_round_trip(None);
}

#[test]
fn key_release_and_client_side_pull_on_s3_with_presigned_urls() {
    let Some(loc) = modelvault_test_utils::s3_location() else {
        return;
    };
    client_side_round_trip(Some(&loc.url));
}

fn status(app: &TestApp) -> Value {
    serde_json::from_str(&ok(
        app.cli(Some(&app.admin), &["keys", "status", "--output", "json"])
    ))
    .unwrap()
}

fn kek(s: &Value, version: u64) -> Value {
    s["kek_versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == version)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Three versions over two models (one with a sealed metadata key).
fn populate(app: &TestApp) -> (String, Vec<(String, Vec<u8>)>) {
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "create",
            "nlp/a",
            "--metadata",
            "lineage=x",
            "--sensitive-field",
            "lineage",
        ],
    ));
    ok(app.cli(Some(&ds), &["model", "create", "nlp/b"]));
    let mut pushed = Vec::new();
    for (i, target) in ["nlp/a@1", "nlp/a@2", "nlp/b@1"].into_iter().enumerate() {
        let src = tempfile::tempdir().unwrap();
        let data = modelvault_test_utils::pseudo_random(100_000 + i, i as u64);
        std::fs::write(src.path().join("w"), &data).unwrap();
        ok(app.cli(Some(&ds), &["push", target, src.path().to_str().unwrap()]));
        pushed.push((target.to_string(), data));
    }
    (ds, pushed)
}

fn pull_all(url: &str, token: &str, pushed: &[(String, Vec<u8>)]) {
    for (target, data) in pushed {
        let out = tempfile::tempdir().unwrap();
        ok(cli(
            url,
            Some(token),
            &["pull", target, "-o", out.path().to_str().unwrap()],
        ));
        assert_eq!(
            &std::fs::read(out.path().join("w")).unwrap(),
            data,
            "{target}"
        );
    }
}

#[test]
fn kek_rotation_retirement_and_a_backup_restore_drill() {
    let app = TestApp::start();
    let (ds, pushed) = populate(&app);
    let s = status(&app);
    assert_eq!(s["current_kek_version"], 1);
    // 3 version DEKs + 2 model metadata keys? Only nlp/a has sealed
    // metadata: 3 + 1, plus the audit signing key.
    assert_eq!(kek(&s, 1)["dek_count"], 5, "{s}");
    fails(
        app.cli(Some(&app.admin), &["keys", "retire-kek", "1"]),
        "current",
    );
    fails(app.cli(Some(&ds), &["keys", "status"]), "manage-keys");

    ok(app.cli(Some(&app.admin), &["keys", "rotate-kek"]));
    let s = status(&app);
    assert_eq!(s["current_kek_version"], 2);
    assert_eq!(kek(&s, 1)["dek_count"], 0, "{s}");
    assert_eq!(kek(&s, 2)["dek_count"], 5, "{s}");
    assert_eq!(s["jobs"][0]["kind"], "rotate-kek");
    assert_eq!(s["jobs"][0]["state"], "done");
    pull_all(&app.url, &ds, &pushed);
    // New versions are wrapped under the new KEK; the old one retires.
    ok(app.cli(Some(&app.admin), &["keys", "retire-kek", "1"]));
    assert_eq!(kek(&status(&app), 1)["state"], "destroyed");
    pull_all(&app.url, &ds, &pushed);
    fails(
        app.cli(Some(&app.admin), &["keys", "retire-kek", "9"]),
        "not found",
    );

    // Restore drill: back up, lose the keyring, restore, serve again.
    let backup = app.dir.path().join("keyring.backup");
    let data = app.data_dir();
    let run = |args: &[&str], pass: &str| {
        std::process::Command::new(BIN)
            .args(args)
            .env("MODELVAULT_BACKUP_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    let d = data.to_str().unwrap();
    ok(run(
        &[
            "keys",
            "backup",
            "--data-dir",
            d,
            "-o",
            backup.to_str().unwrap(),
        ],
        "correct horse battery",
    ));
    let keyring = data.join("keyring.json");
    let original = std::fs::read(&keyring).unwrap();
    assert!(!modelvault_test_utils::contains(
        &std::fs::read(&backup).unwrap(),
        &original[20..60]
    ));
    std::fs::remove_file(&keyring).unwrap();
    fails(
        run(
            &[
                "keys",
                "restore",
                "--data-dir",
                d,
                "-i",
                backup.to_str().unwrap(),
            ],
            "wrong passphrase!!",
        ),
        "wrong passphrase",
    );
    ok(run(
        &[
            "keys",
            "restore",
            "--data-dir",
            d,
            "-i",
            backup.to_str().unwrap(),
        ],
        "correct horse battery",
    ));
    assert_eq!(std::fs::read(&keyring).unwrap(), original);
    let peer = app.start_peer();
    pull_all(&peer.url, &ds, &pushed);
}

#[test]
fn a_rotation_killed_midway_resumes_after_restart() {
    let app = TestApp::start();
    let (ds, pushed) = populate(&app);
    let mut doomed = app.start_peer_env(&[("MODELVAULT_FAILPOINTS", "rotate-kek-after-rewrap")]);
    let job = ok(cli(
        &doomed.url,
        Some(&app.admin),
        &["keys", "rotate-kek", "--no-wait"],
    ));
    assert_eq!(
        doomed.wait_exit(),
        Some(86),
        "the failpoint killed the server"
    );
    let s = status(&app);
    assert_eq!(s["jobs"][0]["id"], job.trim());
    assert_eq!(s["jobs"][0]["state"], "running");
    // Everything still decrypts in between.
    pull_all(&app.url, &ds, &pushed);
    // A server starting again finishes the job.
    let _again = app.start_peer();
    let mut done = false;
    for _ in 0..100 {
        let s = status(&app);
        if s["jobs"][0]["state"] == "done" {
            assert_eq!(kek(&s, 1)["dek_count"], 0, "{s}");
            done = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(done, "the rotation did not resume");
    pull_all(&app.url, &ds, &pushed);
}

#[test]
fn delete_crypto_shreds_even_earlier_copies_of_the_bucket() {
    let app = TestApp::start();
    let (ds, pushed) = populate(&app);
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    // A copy of the blobs and key records, made before the delete.
    let store = app.store_dir();
    let keys_dir = store.join("models/nlp/a/versions/1/keys");
    let copied_keys: Vec<Vec<u8>> = walk(&keys_dir)
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let blob_dir = store.join("blobs/nlp/a/1");
    assert!(!walk(&blob_dir).is_empty());
    fails(app.cli(Some(&ds), &["delete", "nlp/a@1"]), "delete");
    let out = app.cli(Some(&app.admin), &["delete", "nlp/a@1", "--complete"]);
    let err = ok(out.clone());
    let _ = err;
    let log = stderr(&out);
    assert!(log.contains("shred complete"), "{log}");
    // Gone: 410, the name is never reused, blobs and keys are gone.
    let (s, c, _) = error_code(app.get(Some(&ds), "/v1/models/nlp/a/versions/1"));
    assert_eq!((s, c.as_str()), (410, "gone"));
    assert_eq!(
        app.get(Some(&ds), "/v1/models/nlp/a/versions/1/files/w")
            .status(),
        410
    );
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"again").unwrap();
    fails(
        app.cli(
            Some(&ds),
            &["push", "nlp/a@1", src.path().to_str().unwrap()],
        ),
        "deleted",
    );
    assert!(walk(&keys_dir).is_empty());
    assert!(walk(&blob_dir).is_empty());
    // The others are untouched.
    pull_all(&app.url, &ds, &pushed[1..]);
    // The shred record is in the audit trail.
    let shred = ok(app.cli(Some(&auditor), &["audit", "export", "--action", "delete"]));
    assert!(shred.contains("\"type\":\"shred\""), "{shred}");
    // Nothing the provider holds unwraps the copied key records.
    let keyring =
        modelvault_keys::LocalKeyring::open(&app.data_dir().join("keyring.json")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(!copied_keys.is_empty());
    for bytes in copied_keys {
        let env: Value = serde_json::from_slice(&bytes).unwrap();
        let record: modelvault_storage::KeyRecord =
            serde_json::from_value(env["body"].clone()).unwrap();
        let binding = modelvault_keys::DekBinding {
            namespace: "nlp",
            model: "a",
            version: "1",
            dek_generation: record.dek_generation,
        };
        use modelvault_keys::KeyProvider as _;
        assert!(
            rt.block_on(keyring.unwrap_dek(&record.wrapped, &binding))
                .is_err()
        );
    }
}

#[test]
fn a_delete_killed_midway_finishes_after_restart() {
    let app = TestApp::start();
    let (ds, pushed) = populate(&app);
    let mut doomed = app.start_peer_env(&[("MODELVAULT_FAILPOINTS", "delete-after-keys")]);
    let out = cli(
        &doomed.url,
        Some(&app.admin),
        &["delete", "nlp/b@1", "--yes"],
    );
    assert!(!out.status.success());
    assert_eq!(doomed.wait_exit(), Some(86));
    // Keys are gone at once: the version is unreadable and answers 410.
    assert_eq!(
        app.get(Some(&ds), "/v1/models/nlp/b/versions/1/files/w")
            .status(),
        410
    );
    let blobs = app.store_dir().join("blobs/nlp/b/1");
    assert!(!walk(&blobs).is_empty(), "the crash left the blobs");
    let _again = app.start_peer();
    let mut finished = false;
    for _ in 0..100 {
        if walk(&blobs).is_empty() {
            finished = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(finished, "the delete did not finish after restart");
    pull_all(&app.url, &ds, &pushed[..2]);
}

#[test]
fn one_server_rotates_while_another_serves_and_accepts_versions_on_s3() {
    let Some(loc) = modelvault_test_utils::s3_location() else {
        return;
    };
    let app = TestApp::start_with_store(Some(&loc.url));
    let (ds, mut pushed) = populate(&app);
    let other = app.start_peer();
    std::thread::scope(|s| {
        let rot = s.spawn(|| ok(app.cli(Some(&app.admin), &["keys", "rotate-kek"])));
        // Meanwhile the other server serves downloads and takes new versions.
        for i in 0..4 {
            pull_all(&other.url, &ds, &pushed);
            let src = tempfile::tempdir().unwrap();
            let data = modelvault_test_utils::pseudo_random(50_000, 100 + i);
            std::fs::write(src.path().join("w"), &data).unwrap();
            let target = format!("nlp/b@n{i}");
            ok(cli(
                &other.url,
                Some(&ds),
                &["push", &target, src.path().to_str().unwrap()],
            ));
            pushed.push((target, data));
        }
        rot.join().unwrap();
    });
    // Nothing lost; everything decrypts from both servers after rotation.
    pull_all(&app.url, &ds, &pushed);
    pull_all(&other.url, &ds, &pushed);
    let s = status(&app);
    assert_eq!(s["current_kek_version"], 2);
    // Versions pushed during the rotation may still be under KEK 1 if they
    // were wrapped before the switch was seen; a second pass catches them.
    ok(app.cli(Some(&app.admin), &["keys", "rotate-kek"]));
    let s = status(&app);
    assert_eq!(kek(&s, 1)["dek_count"], 0, "{s}");
    assert_eq!(kek(&s, 2)["dek_count"], 0, "{s}");
    pull_all(&other.url, &ds, &pushed);
}

#[test]
fn the_pkcs11_provider_serves_rotates_and_retires_on_softhsm() {
    let Some(token) = modelvault_test_utils::pkcs11_token() else {
        return;
    };
    let app = TestApp::start_pkcs11(&token);
    let data = app.data_dir();
    // No keyring file, no PIN anywhere in the data directory.
    assert!(!data.join("keyring.json").exists());
    let config = std::fs::read_to_string(data.join("modelvault.toml")).unwrap();
    assert!(config.contains("provider = \"pkcs11\""), "{config}");
    assert!(config.contains(&token.prefix), "{config}");
    assert!(
        config.contains("pin_env = \"MODELVAULT_PKCS11_PIN\""),
        "{config}"
    );
    assert!(token.pin.len() >= 12, "use a distinctive test PIN");
    for (f, bytes) in stored_files(&data) {
        assert!(
            !modelvault_test_utils::contains(&bytes, token.pin.as_bytes()),
            "the PIN is stored in {}",
            f.display()
        );
    }

    let (ds, pushed) = populate(&app);
    pull_all(&app.url, &ds, &pushed);
    let s = status(&app);
    assert_eq!(s["provider"], "pkcs11", "{s}");
    assert_eq!(s["current_kek_version"], 1);
    assert_eq!(kek(&s, 1)["dek_count"], 5, "{s}");

    ok(app.cli(Some(&app.admin), &["keys", "rotate-kek"]));
    let s = status(&app);
    assert_eq!(s["current_kek_version"], 2);
    assert_eq!(kek(&s, 1)["dek_count"], 0, "{s}");
    assert_eq!(kek(&s, 2)["dek_count"], 5, "{s}");
    ok(app.cli(Some(&app.admin), &["keys", "retire-kek", "1"]));
    assert_eq!(kek(&status(&app), 1)["state"], "destroyed");
    pull_all(&app.url, &ds, &pushed);

    // A second server over the same token and store serves the same data.
    let peer = app.start_peer_env(&[("MODELVAULT_PKCS11_PIN", token.pin.as_str())]);
    pull_all(&peer.url, &ds, &pushed);
    drop(peer);

    // The keys never leave the token: there is nothing to back up here.
    let out = std::process::Command::new(BIN)
        .args(["keys", "backup", "--data-dir", data.to_str().unwrap(), "-o"])
        .arg(app.dir.path().join("b"))
        .env("MODELVAULT_BACKUP_PASSPHRASE", "correct horse battery")
        .output()
        .unwrap();
    fails(out, "vendor");

    // Without the PIN, or with a wrong one, the server refuses to start.
    for (pin, needle) in [("", "MODELVAULT_PKCS11_PIN"), ("0000", "incorrect PIN")] {
        let out = std::process::Command::new(BIN)
            .args([
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .env("MODELVAULT_PKCS11_PIN", pin)
            .output()
            .unwrap();
        let err = fails(out, needle);
        assert!(pin.is_empty() || !err.contains(pin), "{err}");
    }
}

/// Releases `ns/model@version`'s DEK to a fresh key and opens it, as a
/// workload would; returns the DEK and the release answer.
fn released_dek(
    app: &TestApp,
    token: &str,
    ns: &str,
    model: &str,
    version: &str,
) -> (modelvault_format::Dek, Value) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = modelvault_release::ClientKey::generate();
    let r: Value = app
        .http()
        .post(format!(
            "{}/v1/models/{ns}/{model}/versions/{version}/key-release",
            app.url
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"public_key": b64.encode(key.public_bytes())}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let generation = r["dek_generation"].as_u64().unwrap() as u32;
    let ctx = modelvault_release::ReleaseContext {
        request_id: r["request_id"].as_str().unwrap(),
        namespace: ns,
        model,
        version,
        dek_generation: generation,
    };
    let sealed = modelvault_release::SealedDek {
        enc: b64.decode(r["enc"].as_str().unwrap()).unwrap(),
        ciphertext: b64.decode(r["sealed_dek"].as_str().unwrap()).unwrap(),
    };
    (key.open(&sealed, &ctx).unwrap(), r)
}

/// Whether `dek` opens the first segment of the stored blob `bytes` of
/// `path` in `ns/model@version`, under the generation its header names.
fn dek_opens(
    dek: &modelvault_format::Dek,
    bytes: &[u8],
    v: (&str, &str, &str),
    path: &str,
) -> bool {
    use modelvault_format::{Decryptor, FileIdentity, FileKey, HEADER_LEN, Header};
    let header = Header::parse(&bytes[..HEADER_LEN]).unwrap();
    let identity = FileIdentity {
        namespace: v.0,
        model: v.1,
        version: v.2,
        path,
        dek_generation: header.dek_generation,
    };
    let key = FileKey::derive(dek, &header, &identity).unwrap();
    let d = Decryptor::new(&key, header, bytes.len() as u64).unwrap();
    let r = d.segment_ciphertext_range(0);
    let mut seg = bytes[r.start as usize..r.end as usize].to_vec();
    d.open_segment(0, &mut seg).is_ok()
}

/// The stored blobs of a version (not their segment tables), on whatever
/// store `url` names.
fn version_blobs(url: &str, ns: &str, model: &str, version: &str) -> Vec<Vec<u8>> {
    use futures::TryStreamExt as _;
    use object_store::ObjectStoreExt as _;
    let (store, _) = modelvault_storage::open_object_store(url).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let prefix = object_store::path::Path::from(format!("blobs/{ns}/{model}/{version}"));
        let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        let mut out = Vec::new();
        for m in metas {
            if m.location.as_ref().ends_with(".segments") {
                continue;
            }
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            out.push(bytes.to_vec());
        }
        out
    })
}

fn wait_job_done(app: &TestApp, id: &str) -> Value {
    for _ in 0..300 {
        let j: Value = app
            .get(Some(&app.admin), &format!("/v1/keys/jobs/{id}"))
            .json()
            .unwrap();
        if j["state"] != "running" {
            assert_eq!(j["state"], "done", "{j}");
            return j;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("job {id} did not end");
}

/// Sets `[keys]` lifetimes: presigned URLs and the DEK rotation grace.
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

fn short_grace(cfg: &mut String) {
    set_lifetimes(cfg, 1, 4);
}

#[test]
fn dek_rotation_switches_a_version_under_a_download_and_revokes_a_released_key() {
    dek_rotation_round(None);
}

#[test]
fn dek_rotation_on_s3_keeps_presigned_urls_working_through_the_grace_period() {
    let Some(loc) = modelvault_test_utils::s3_location() else {
        return;
    };
    dek_rotation_round(Some(&loc.url));
}

fn dek_rotation_round(s3: Option<&str>) {
    use std::io::Read as _;
    // Presigned URLs must still be valid when fetched after the switch.
    let app = TestApp::start_configured(s3, |c| match s3 {
        None => set_lifetimes(c, 1, 4),
        Some(_) => set_lifetimes(c, 20, 22),
    });
    let store = app.store_url();
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    ok(app.cli(Some(&ds), &["model", "create", "nlp/r"]));
    let src = tempfile::tempdir().unwrap();
    let big = modelvault_test_utils::pseudo_random(16 << 20, 9);
    std::fs::write(src.path().join("w.bin"), &big).unwrap();
    std::fs::write(src.path().join("cfg.json"), b"{\"layers\": 12}").unwrap();
    ok(app.cli(
        Some(&ds),
        &[
            "push",
            "nlp/r@1",
            src.path().to_str().unwrap(),
            "--metadata",
            "dataset=s3://corp/secret-set",
            "--sensitive-field",
            "dataset",
        ],
    ));
    let v = ("nlp", "r", "1");
    // A workload got the generation-1 DEK; pretend it leaked.
    let (leaked, r) = released_dek(&app, &workload, "nlp", "r", "1");
    assert_eq!(r["dek_generation"], 1);
    let old_blobs = version_blobs(&store, "nlp", "r", "1");
    assert_eq!(old_blobs.len(), 2);

    // A download starts before the rotation and is left half read.
    let mut download = app
        .http()
        .get(format!(
            "{}/v1/models/nlp/r/versions/1/files/w.bin",
            app.url
        ))
        .bearer_auth(&ds)
        .send()
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut head = vec![0u8; 1 << 20];
    download.read_exact(&mut head).unwrap();

    fails(
        app.cli(Some(&ds), &["keys", "rotate", "nlp/r@1"]),
        "manage-keys",
    );
    let out = app.cli(Some(&app.admin), &["keys", "rotate", "nlp/r@1"]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("DEK generation 2"), "{said}");

    // Within the grace period the release from before the switch still
    // reads the ciphertext its DEK opens.
    let old_url = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "w.bin")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let fetch_old = || match s3 {
        // Presigned: no token, straight from the bucket.
        Some(_) => reqwest::blocking::get(&old_url).unwrap(),
        None => {
            assert!(old_url.ends_with("?generation=1"), "{old_url}");
            app.get(Some(&workload), &old_url)
        }
    };
    let resp = fetch_old();
    assert_eq!(resp.status(), 200);
    assert!(dek_opens(&leaked, &resp.bytes().unwrap(), v, "w.bin"));

    // The download in flight finishes, whole, on the old blobs.
    let mut rest = Vec::new();
    download.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert!(head == big, "the download in flight was cut or changed");

    // New readers get generation 2 at once; metadata and digests survive.
    let shown: Value = serde_json::from_str(&ok(
        app.cli(Some(&ds), &["model", "show", "nlp/r@1", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(shown["dek_generation"], 2, "{shown}");
    let dir = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/r@1", "-o", dir.path().to_str().unwrap()],
    ));
    assert!(std::fs::read(dir.path().join("w.bin")).unwrap() == big);
    let out = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&workload),
        &[
            "pull",
            "nlp/r@1",
            "--client-side",
            "-o",
            out.path().to_str().unwrap(),
        ],
    ));
    assert!(std::fs::read(out.path().join("w.bin")).unwrap() == big);
    // A second rotation while this one runs is refused.
    let (code, _, _) = error_code(
        app.http()
            .post(format!("{}/v1/models/nlp/r/versions/1/rotate-dek", app.url))
            .bearer_auth(&app.admin)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 409);

    // After the grace period only the new blobs remain, and the leaked
    // DEK opens none of them; the newly released one does.
    let s = status(&app);
    let job = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "rotate-dek")
        .unwrap()
        .clone();
    assert_eq!(job["target_generation"], 2);
    let done = wait_job_done(&app, job["id"].as_str().unwrap());
    assert_eq!(
        (done["done"].as_u64(), done["total"].as_u64()),
        (Some(2), Some(2)),
        "{done}"
    );
    let new_blobs = version_blobs(&store, "nlp", "r", "1");
    assert_eq!(new_blobs.len(), 2, "the old blobs are gone");
    if s3.is_none() {
        // Nothing sealed under the old DEK is left: one manifest revision,
        // no upload records.
        let vdir = app.store_dir().join("models/nlp/r/versions/1");
        assert_eq!(walk(&vdir.join("manifest")).len(), 1);
        assert!(walk(&vdir.join("uploads")).is_empty());
    }
    let resp = fetch_old();
    match s3 {
        Some(_) => assert!(!resp.status().is_success(), "{}", resp.status()),
        None => {
            let (code, err, _) = error_code(resp);
            assert_eq!((code, err.as_str()), (410, "rotated"));
        }
    }
    for b in &new_blobs {
        assert!(!old_blobs.contains(b));
    }
    let (fresh, r) = released_dek(&app, &workload, "nlp", "r", "1");
    assert_eq!(r["dek_generation"], 2);
    let big_blob = new_blobs.iter().max_by_key(|b| b.len()).unwrap();
    assert!(dek_opens(&fresh, big_blob, v, "w.bin"), "positive control");
    assert!(
        !dek_opens(&leaked, big_blob, v, "w.bin"),
        "the leaked DEK still opens"
    );
    // The old blobs really were the leaked DEK's (so the check above means
    // something).
    let old_big = old_blobs.iter().max_by_key(|b| b.len()).unwrap();
    assert!(dek_opens(&leaked, old_big, v, "w.bin"));
    // Sealed version metadata was resealed under the new DEK.
    let shown: Value = serde_json::from_str(&ok(
        app.cli(Some(&ds), &["model", "show", "nlp/r@1", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(
        shown["version_metadata"]["dataset"], "s3://corp/secret-set",
        "{shown}"
    );
}

#[test]
fn a_dek_rotation_killed_midway_resumes_after_restart() {
    let app = TestApp::start_configured(None, short_grace);
    let (ds, pushed) = populate(&app);
    for point in [
        "rotate-dek-after-prepare",
        "rotate-dek-before-switch",
        "rotate-dek-after-switch",
    ] {
        let mut doomed = app.start_peer_env(&[("MODELVAULT_FAILPOINTS", point)]);
        let job = ok(cli(
            &doomed.url,
            Some(&app.admin),
            &["keys", "rotate", "nlp/a@1", "--no-wait"],
        ));
        assert_eq!(doomed.wait_exit(), Some(86), "{point} killed the server");
        // Every committed version decrypts in between.
        pull_all(&app.url, &ds, &pushed);
        // A server starting again finishes the job.
        let again = app.start_peer();
        let j = wait_job_done(&app, job.trim());
        drop(again);
        assert_eq!(j["phase"], "done", "{j}");
        pull_all(&app.url, &ds, &pushed);
        // Only the blobs the manifest lists remain (a crashed attempt's
        // orphans are gone too).
        assert_eq!(
            version_blobs(&app.store_url(), "nlp", "a", "1").len(),
            1,
            "{point}"
        );
    }
    let shown: Value = serde_json::from_str(&ok(
        app.cli(Some(&ds), &["model", "show", "nlp/a@1", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(shown["dek_generation"], 4, "{shown}");

    // A version deleted during its rotation's grace period: the job ends
    // cleanly and the version stays gone.
    let job = ok(app.cli(
        Some(&app.admin),
        &["keys", "rotate", "nlp/b@1", "--no-wait"],
    ));
    for _ in 0..100 {
        let j: Value = app
            .get(Some(&app.admin), &format!("/v1/keys/jobs/{}", job.trim()))
            .json()
            .unwrap();
        if j["phase"] == "grace" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ok(app.cli(Some(&app.admin), &["delete", "nlp/b@1", "--yes"]));
    wait_job_done(&app, job.trim());
    let (code, _, _) = error_code(app.get(Some(&ds), "/v1/models/nlp/b/versions/1"));
    assert_eq!(code, 410);
}

/// `[keys] provider = "aws-kms"` end to end against moto's KMS and S3:
/// `init --key-provider aws-kms`, a push and a byte-exact pull, a client-side
/// pull (a key release), a KEK rotation that rewraps every key record under
/// a new KMS key, and a restart that opens the same keys.
#[test]
fn aws_kms_provider_end_to_end() {
    let Some(loc) = modelvault_test_utils::s3_location() else {
        return;
    };
    let prefix = format!("mv-e2e-{}", std::process::id());
    let app = TestApp::start_aws_kms(Some(&loc.url), &prefix);
    let cfg = std::fs::read_to_string(app.data_dir().join("modelvault.toml")).unwrap();
    assert!(
        cfg.contains("provider = \"aws-kms\"") && cfg.contains(&prefix),
        "{cfg}"
    );
    assert!(!app.data_dir().join("keyring.json").exists());
    let ds = app.token("kms-ds", &["data-scientist"], &["nlp"]);
    let eng = app.token("kms-eng", &["ml-engineer"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/kms"]));
    let src = tempfile::tempdir().unwrap();
    let data = modelvault_test_utils::pseudo_random(200_000, 9);
    std::fs::write(src.path().join("w.bin"), &data).unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/kms@1", src.path().to_str().unwrap()],
    ));
    let pull = |token: &str, extra: &[&str]| {
        let dest = tempfile::tempdir().unwrap();
        let mut args = vec!["pull", "nlp/kms@1", "-o", dest.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        ok(app.cli(Some(token), &args));
        assert_eq!(std::fs::read(dest.path().join("w.bin")).unwrap(), data);
    };
    pull(&ds, &[]);
    pull(&eng, &["--client-side"]);
    let status: Value = serde_json::from_str(&ok(
        app.cli(Some(&app.admin), &["keys", "status", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(status["provider"], "aws-kms", "{status}");
    ok(app.cli(Some(&app.admin), &["keys", "rotate-kek"]));
    let status: Value = serde_json::from_str(&ok(
        app.cli(Some(&app.admin), &["keys", "status", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(status["current_kek_version"], 2, "{status}");
    let v1 = status["kek_versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == 1)
        .unwrap();
    assert_eq!(v1["dek_count"], 0, "{status}");
    // Another server over the same store and KMS keys reads it all.
    let peer = app.start_peer();
    let dest = tempfile::tempdir().unwrap();
    ok(cli(
        &peer.url,
        Some(&ds),
        &["pull", "nlp/kms@1", "-o", dest.path().to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(dest.path().join("w.bin")).unwrap(), data);
}
