//! A bucket writer who also holds a released DEK (role ml-engineer) re-
//! encrypts other content under a file's committed header and swaps the
//! blob in the store. Nothing of it is served: not by a plain `GET`, not by
//! a `Range` request, not by `pull`.

use base64::Engine as _;
use serde_json::Value;

use crate::common::*;

#[test]
fn a_released_dek_and_bucket_write_access_forge_nothing() {
    let app = TestApp::start();
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let workload = app.token_in("serving", &["ml-engineer"], &["nlp"], "dev", "serving");
    ok(app.cli(Some(&ds), &["model", "create", "nlp/edge"]));
    let src = tempfile::tempdir().unwrap();
    // Several segments at the default 1 MiB segment size.
    let data = modelvault_test_utils::pseudo_random((3 << 20) + 7, 11);
    std::fs::write(src.path().join("w.bin"), &data).unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/edge@1", src.path().to_str().unwrap()],
    ));

    // The key release, as the workload receives it.
    let key = modelvault_release::ClientKey::generate();
    let b64 = base64::engine::general_purpose::STANDARD;
    let rel: Value = app
        .http()
        .post(format!(
            "{}/v1/models/nlp/edge/versions/1/key-release",
            app.url
        ))
        .bearer_auth(&workload)
        .json(&serde_json::json!({ "public_key": b64.encode(key.public_bytes()) }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let sealed = modelvault_release::SealedDek {
        enc: b64.decode(rel["enc"].as_str().unwrap()).unwrap(),
        ciphertext: b64.decode(rel["sealed_dek"].as_str().unwrap()).unwrap(),
    };
    let generation = rel["dek_generation"].as_u64().unwrap() as u32;
    let ctx = modelvault_release::ReleaseContext {
        request_id: rel["request_id"].as_str().unwrap(),
        namespace: "nlp",
        model: "edge",
        version: "1",
        dek_generation: generation,
    };
    let dek = key.open(&sealed, &ctx).unwrap();

    // The bucket writer's forgery: same header (salt, generation), same
    // length, other plaintext, sealed under the real file key.
    let blobs: Vec<_> = walk(&app.store_dir().join("blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mvf"))
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let blob = &blobs[0];
    let orig = std::fs::read(blob).unwrap();
    let header = modelvault_format::Header::parse(&orig).unwrap();
    let identity = modelvault_format::FileIdentity {
        namespace: "nlp",
        model: "edge",
        version: "1",
        path: "w.bin",
        dek_generation: generation,
    };
    let file_key = modelvault_format::FileKey::derive(&dek, &header, &identity).unwrap();
    let mut enc = modelvault_format::Encryptor::new(&file_key, header);
    let mut forged = enc.header_bytes().to_vec();
    enc.update(&vec![b'F'; data.len()], &mut forged).unwrap();
    enc.finish(&mut forged).unwrap();
    assert_eq!(forged.len(), orig.len());
    std::fs::write(blob, &forged).unwrap();

    let url = format!("{}/v1/models/nlp/edge/versions/1/files/w.bin", app.url);
    // A plain GET: the first segment fails before the status is sent.
    let resp = app.http().get(&url).bearer_auth(&ds).send().unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    assert_ne!(status, 200, "forged blob served with 200");
    assert!(
        !contains(&body, b"FFFFFFFF"),
        "forged bytes reached the client"
    );
    // A Range inside a later segment.
    let resp = app
        .http()
        .get(&url)
        .bearer_auth(&ds)
        .header("Range", "bytes=2097200-2097300")
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    assert_ne!(status, 206, "forged range served");
    assert!(!contains(&body, b"FFFFFFFF"));
    // pull refuses it too.
    let out = tempfile::tempdir().unwrap();
    let o = app.cli(
        Some(&ds),
        &["pull", "nlp/edge@1", "-o", out.path().to_str().unwrap()],
    );
    assert!(!o.status.success());

    // Only the first segment forged: the status is sent, the stream breaks
    // off before any forged byte.
    let mut mixed = orig.clone();
    let seg = modelvault_format::HEADER_LEN + (1 << 20) + 16;
    mixed[seg..].copy_from_slice(&forged[seg..]);
    std::fs::write(blob, &mixed).unwrap();
    let resp = app.http().get(&url).bearer_auth(&ds).send().unwrap();
    let got = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    assert!(got.len() < data.len(), "the whole forged file was served");
    assert!(
        !contains(&got, b"FFFFFFFF"),
        "forged bytes reached the client"
    );

    // Put back, it serves again.
    std::fs::write(blob, &orig).unwrap();
    let resp = app.http().get(&url).bearer_auth(&ds).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().unwrap().to_vec(), data);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
