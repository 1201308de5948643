//! One storage suite, run against the local file system and a real S3
//! server (moto, started by scripts/test.sh).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use modelvault_keys::LocalKeyring;
use modelvault_storage::*;
use modelvault_test_utils::{TestLocation, contains, local_location, pseudo_random, s3_location};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a9c";

struct Fixture {
    store: Store,
    _loc: TestLocation,
    _keys: tempfile::TempDir,
}

async fn fixture(loc: TestLocation) -> Fixture {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(LocalKeyring::create(&keys_dir.path().join("keyring.json")).unwrap());
    let store = Store::open(&loc.url, keys)
        .unwrap()
        .with_segment_size(modelvault_format::SegmentSize::K64);
    store.initialize().await.unwrap();
    Fixture {
        store,
        _loc: loc,
        _keys: keys_dir,
    }
}

fn body(
    data: Vec<u8>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send {
    // Odd-sized chunks, as a network would deliver them.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(50_001)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

fn sha(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn vref<'a>(version: &'a str) -> VersionRef<'a> {
    VersionRef {
        namespace: "nlp",
        model: "bert",
        version,
    }
}

async fn push(
    store: &Store,
    version: &str,
    files: &[(&str, Vec<u8>)],
) -> Result<Manifest, StorageError> {
    let mut commit = Vec::new();
    for (path, data) in files {
        store
            .upload_file(&vref(version), path, body(data.clone()), "alice")
            .await?;
        commit.push(CommitFile {
            path: path.to_string(),
            size: data.len() as u64,
            sha256: sha(data),
        });
    }
    store.commit(&vref(version), &commit, "alice").await
}

async fn read_all(
    store: &Store,
    version: &str,
    path: &str,
    range: std::ops::Range<u64>,
) -> Result<Vec<u8>, StorageError> {
    let r = store.open_file(&vref(version), path).await?;
    let chunks: Vec<Bytes> = r.read_range(range).try_collect().await?;
    Ok(chunks.concat())
}

async fn all_objects(store: &Store) -> Vec<(Path, Vec<u8>)> {
    let metas: Vec<_> = store.objects().list(None).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas {
        let b = store
            .objects()
            .get(&m.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((m.location, b.to_vec()));
    }
    out
}

// ------------------------------------------------------------------ suite

async fn round_trip_and_ranges(f: Fixture) {
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Confidential,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let mut big = pseudo_random(12 << 20 | 12345, 1); // > one multipart part
    big[1000..1000 + MARKER.len()].copy_from_slice(MARKER);
    let small = [MARKER, b" config"].concat();
    let m = push(
        s,
        "1",
        &[
            ("weights/model.bin", big.clone()),
            ("config.json", small.clone()),
            ("empty", vec![]),
        ],
    )
    .await
    .unwrap();
    assert_eq!(m.files.len(), 3);
    let view = s.show_version(&vref("1")).await.unwrap();
    let w = view
        .files
        .iter()
        .find(|f| f.path == "weights/model.bin")
        .unwrap();
    assert_eq!(w.sha256, sha(&big));
    assert_eq!(
        read_all(s, "1", "weights/model.bin", 0..u64::MAX)
            .await
            .unwrap(),
        big
    );
    assert_eq!(
        read_all(s, "1", "config.json", 0..u64::MAX).await.unwrap(),
        small
    );
    assert!(
        read_all(s, "1", "empty", 0..u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    let seg = 64 << 10;
    for (a, b) in [
        (seg - 3, seg + 3),
        (0, 1),
        (5 * seg + 7, 9 * seg + 1),
        (big.len() as u64 - 10, big.len() as u64),
    ] {
        assert_eq!(
            read_all(s, "1", "weights/model.bin", a..b).await.unwrap(),
            &big[a as usize..b as usize]
        );
    }
    assert_eq!(
        s.resolve_version("nlp", "bert", "latest").await.unwrap(),
        "1"
    );
    push(s, "2", &[("a", b"two".to_vec())]).await.unwrap();
    assert_eq!(
        s.resolve_version("nlp", "bert", "latest").await.unwrap(),
        "2"
    );
    assert_eq!(s.list_versions("nlp", "bert").await.unwrap().len(), 2);

    // The bucket never holds the plaintext marker, a plaintext digest or
    // the DEK.
    let digest = ring::digest::digest(&ring::digest::SHA256, &small);
    for (path, bytes) in all_objects(s).await {
        assert!(!contains(&bytes, MARKER), "plaintext in {path}");
        assert!(!contains(&bytes, digest.as_ref()), "raw digest in {path}");
        assert!(
            !contains(&bytes, sha(&small).as_bytes()),
            "hex digest in {path}"
        );
    }
    let vk = s.version_key(&vref("1"), KeyWant::Newest).await.unwrap();
    let dek = vk.dek();
    for (path, bytes) in all_objects(s).await {
        assert!(!contains(&bytes, dek.expose_secret()), "DEK in {path}");
    }
}

async fn conflicts_and_mismatches(f: Fixture) {
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    assert!(matches!(
        s.create_model("nlp", "bert", Sensitivity::Internal, BTreeMap::new(), "bob")
            .await,
        Err(StorageError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.upload_file(
            &VersionRef {
                namespace: "nlp",
                model: "nope",
                version: "1"
            },
            "a",
            body(vec![1]),
            "a"
        )
        .await,
        Err(StorageError::NotFound(_))
    ));
    s.upload_file(&vref("1"), "a", body(b"hello".to_vec()), "alice")
        .await
        .unwrap();
    let wrong_sha = CommitFile {
        path: "a".into(),
        size: 5,
        sha256: sha(b"hellO"),
    };
    assert!(matches!(
        s.commit(&vref("1"), &[wrong_sha], "alice").await,
        Err(StorageError::CommitMismatch(_))
    ));
    let wrong_size = CommitFile {
        path: "a".into(),
        size: 6,
        sha256: sha(b"hello"),
    };
    assert!(matches!(
        s.commit(&vref("1"), &[wrong_size], "alice").await,
        Err(StorageError::CommitMismatch(_))
    ));
    let missing = CommitFile {
        path: "b".into(),
        size: 5,
        sha256: sha(b"hello"),
    };
    let ok = CommitFile {
        path: "a".into(),
        size: 5,
        sha256: sha(b"hello"),
    };
    assert!(matches!(
        s.commit(&vref("1"), &[ok.clone(), missing], "alice").await,
        Err(StorageError::CommitMismatch(_))
    ));
    s.commit(&vref("1"), std::slice::from_ref(&ok), "alice")
        .await
        .unwrap();
    // Committing other content to a committed version is refused.
    let other = CommitFile {
        sha256: sha(b"hellO"),
        ..ok.clone()
    };
    assert!(matches!(
        s.commit(&vref("1"), &[other], "alice").await,
        Err(StorageError::VersionCommitted(_))
    ));
    assert!(matches!(
        s.upload_file(&vref("1"), "c", body(vec![1]), "alice").await,
        Err(StorageError::VersionCommitted(_))
    ));
    assert!(matches!(
        s.upload_file(&vref("1"), "../x", body(vec![1]), "alice")
            .await,
        Err(StorageError::InvalidInput(_))
    ));
}

async fn concurrent_commit_race(f: Fixture) {
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    // Two pushes of the same version race; exactly one commit wins.
    let mut tasks = Vec::new();
    for i in 0..2u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let data = vec![i; 100_000];
            push(&s, "7", &[("w.bin", data.clone())])
                .await
                .map(|_| data)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(data) => won.push(data),
            Err(StorageError::VersionCommitted(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one commit wins");
    assert_eq!(
        read_all(s, "7", "w.bin", 0..u64::MAX).await.unwrap(),
        won[0]
    );
}

async fn tampering_is_detected(f: Fixture) {
    let s = &f.store;
    let o = s.objects().clone();
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Restricted,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let data = pseudo_random(300_000, 9);
    push(s, "1", &[("w.bin", data.clone()), ("x.bin", data.clone())])
        .await
        .unwrap();
    push(s, "2", &[("w.bin", data.clone())]).await.unwrap();
    let m1 = s.get_manifest(&vref("1")).await.unwrap().unwrap();
    let m2 = s.get_manifest(&vref("2")).await.unwrap().unwrap();
    let blob = |m: &Manifest, p: &str| {
        Path::from(m.files.iter().find(|f| f.path == p).unwrap().blob.as_str())
    };

    // Flipped bit in a blob: the stream errors at that segment.
    let b = blob(&m1, "w.bin");
    let orig = o.get(&b).await.unwrap().bytes().await.unwrap();
    let mut bad = orig.to_vec();
    bad[100_000] ^= 1;
    o.put(&b, PutPayload::from(bad)).await.unwrap();
    let r = s.open_file(&vref("1"), "w.bin").await.unwrap();
    let mut stream = r.read_range(0..u64::MAX);
    let first = stream.next().await.unwrap().unwrap(); // segment 0 is intact
    assert_eq!(&first[..], &data[..first.len()]);
    assert!(matches!(
        stream.next().await.unwrap(),
        Err(StorageError::Integrity(_))
    ));
    o.put(&b, PutPayload::from(orig.clone())).await.unwrap();
    assert_eq!(read_all(s, "1", "w.bin", 0..u64::MAX).await.unwrap(), data);

    // A blob from another file of the same version, and from another version.
    let x = o
        .get(&blob(&m1, "x.bin"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    o.put(&b, PutPayload::from(x)).await.unwrap();
    assert!(matches!(
        read_all(s, "1", "w.bin", 0..u64::MAX).await,
        Err(StorageError::Integrity(_))
    ));
    let other = o
        .get(&blob(&m2, "w.bin"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    o.put(&b, PutPayload::from(other)).await.unwrap();
    assert!(matches!(
        read_all(s, "1", "w.bin", 0..u64::MAX).await,
        Err(StorageError::Integrity(_))
    ));
    // Truncated blob.
    o.put(&b, PutPayload::from(orig.slice(..orig.len() - 20)))
        .await
        .unwrap();
    assert!(matches!(
        s.open_file(&vref("1"), "w.bin").await,
        Err(StorageError::Integrity(_))
    ));
    o.put(&b, PutPayload::from(orig)).await.unwrap();

    // Edited manifest and model record (sensitivity lowered).
    let meta = layout::seq_record(&layout::model_meta_dir("nlp", "bert"), 0);
    let rec = o.get(&meta).await.unwrap().bytes().await.unwrap();
    let edited = String::from_utf8(rec.to_vec())
        .unwrap()
        .replace("restricted", "public");
    o.put(&meta, PutPayload::from(edited.into_bytes()))
        .await
        .unwrap();
    assert!(matches!(
        s.get_model("nlp", "bert").await,
        Err(StorageError::Integrity(_))
    ));
    o.put(&meta, PutPayload::from(rec.clone())).await.unwrap();
    // A genuine record planted in a sub-folder of the series, numbered past
    // its head, is no record of it: a series is read flat, and the record
    // in force stays the genuine newest one.
    let planted = layout::seq_record(
        &Path::from(format!("{}/sub", layout::model_meta_dir("nlp", "bert"))),
        99,
    );
    o.put(&planted, PutPayload::from(rec)).await.unwrap();
    let model = s.get_model("nlp", "bert").await.unwrap().unwrap();
    assert_eq!(model.sensitivity, Sensitivity::Restricted);
    o.delete(&planted).await.unwrap();
    let mpath = layout::seq_record(&layout::manifest_dir("nlp", "bert", "1"), 0);
    let mrec = o.get(&mpath).await.unwrap().bytes().await.unwrap();
    let edited = String::from_utf8(mrec.to_vec())
        .unwrap()
        .replace("\"uploader\":\"alice\"", "\"uploader\":\"mallory\"");
    o.put(&mpath, PutPayload::from(edited.into_bytes()))
        .await
        .unwrap();
    assert!(matches!(
        s.show_version(&vref("1")).await,
        Err(StorageError::Integrity(_))
    ));
    // A manifest of version 2 copied over version 1's (record bound to path).
    let m2path = layout::seq_record(&layout::manifest_dir("nlp", "bert", "2"), 0);
    let m2rec = o.get(&m2path).await.unwrap().bytes().await.unwrap();
    o.put(&mpath, PutPayload::from(m2rec)).await.unwrap();
    assert!(matches!(
        s.show_version(&vref("1")).await,
        Err(StorageError::Integrity(_))
    ));
    o.put(&mpath, PutPayload::from(mrec)).await.unwrap();

    // Version 2's wrapped DEK moved into version 1's key record, re-MACed
    // records are impossible without the provider, so the attacker can only
    // copy whole records or splice the wrapped bytes: both fail.
    let k1 = layout::seq_record(&layout::keys_dir("nlp", "bert", "1"), 0);
    let k2 = layout::seq_record(&layout::keys_dir("nlp", "bert", "2"), 0);
    let k1rec = o.get(&k1).await.unwrap().bytes().await.unwrap();
    let k2rec = o.get(&k2).await.unwrap().bytes().await.unwrap();
    o.put(&k1, PutPayload::from(k2rec.clone())).await.unwrap();
    assert!(matches!(
        read_all(s, "1", "w.bin", 0..10).await,
        Err(StorageError::Integrity(_))
    ));
    let v1: serde_json::Value = serde_json::from_slice(&k1rec).unwrap();
    let v2: serde_json::Value = serde_json::from_slice(&k2rec).unwrap();
    let mut spliced = v1.clone();
    spliced["body"]["wrapped"] = v2["body"]["wrapped"].clone();
    o.put(&k1, PutPayload::from(serde_json::to_vec(&spliced).unwrap()))
        .await
        .unwrap();
    assert!(matches!(
        read_all(s, "1", "w.bin", 0..10).await,
        Err(StorageError::Integrity(_))
    ));
    o.put(&k1, PutPayload::from(k1rec)).await.unwrap();
    assert_eq!(read_all(s, "1", "w.bin", 0..u64::MAX).await.unwrap(), data);

    // Another upload of the same path and version, never committed, swapped
    // in for the committed blob: same key, same size, but not the blob the
    // manifest pinned.
    let first = pseudo_random(50_000, 1);
    let second = pseudo_random(50_000, 2);
    s.upload_file(&vref("9"), "w.bin", body(first), "alice")
        .await
        .unwrap();
    push(s, "9", &[("w.bin", second.clone())]).await.unwrap();
    let m9 = s.get_manifest(&vref("9")).await.unwrap().unwrap();
    let committed = blob(&m9, "w.bin");
    let blobs: Vec<_> = o
        .list(Some(&Path::from("blobs/nlp/bert/9")))
        .try_collect()
        .await
        .unwrap();
    let stale = blobs
        .iter()
        .find(|b| b.location != committed)
        .unwrap()
        .location
        .clone();
    let kept = o.get(&committed).await.unwrap().bytes().await.unwrap();
    o.put(
        &committed,
        PutPayload::from(o.get(&stale).await.unwrap().bytes().await.unwrap()),
    )
    .await
    .unwrap();
    assert!(matches!(
        read_all(s, "9", "w.bin", 0..u64::MAX).await,
        Err(StorageError::Integrity(_))
    ));
    o.put(&committed, PutPayload::from(kept)).await.unwrap();
    assert_eq!(
        read_all(s, "9", "w.bin", 0..u64::MAX).await.unwrap(),
        second
    );

    // An empty file is authenticated too: a flipped tag bit is caught.
    push(s, "e", &[("empty", Vec::new())]).await.unwrap();
    let me = s.get_manifest(&vref("e")).await.unwrap().unwrap();
    let eb = blob(&me, "empty");
    let orig = o.get(&eb).await.unwrap().bytes().await.unwrap();
    let mut bad = orig.to_vec();
    *bad.last_mut().unwrap() ^= 1;
    o.put(&eb, PutPayload::from(bad)).await.unwrap();
    assert!(matches!(
        read_all(s, "e", "empty", 0..u64::MAX).await,
        Err(StorageError::Integrity(_))
    ));
    o.put(&eb, PutPayload::from(orig)).await.unwrap();
    assert!(
        read_all(s, "e", "empty", 0..u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn garbage_collection(f: Fixture) {
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    push(s, "1", &[("a", b"kept".to_vec())]).await.unwrap();
    s.upload_file(&vref("2"), "a", body(b"abandoned".to_vec()), "alice")
        .await
        .unwrap();
    let report = s
        .collect_garbage(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 0, "young drafts are kept");
    let report = s.collect_garbage(std::time::Duration::ZERO).await.unwrap();
    assert_eq!(
        (
            report.blobs_seen,
            report.blobs_deleted,
            report.upload_records_deleted
        ),
        (2, 1, 1)
    );
    assert_eq!(read_all(s, "1", "a", 0..u64::MAX).await.unwrap(), b"kept");
}

async fn retried_commit_is_idempotent(f: Fixture) {
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let files = [("a.bin", b"alpha".to_vec()), ("b/c.json", b"{}".to_vec())];
    let listed: Vec<CommitFile> = files
        .iter()
        .map(|(p, d)| CommitFile {
            path: p.to_string(),
            size: d.len() as u64,
            sha256: sha(d),
        })
        .collect();
    let meta = BTreeMap::from([
        ("framework".to_string(), "torch".to_string()),
        ("dataset".to_string(), "secret-set".to_string()),
    ]);
    let sensitive = ["dataset".to_string()];
    for (p, d) in &files {
        s.upload_file(&vref("1"), p, body(d.clone()), "alice")
            .await
            .unwrap();
    }
    let first = s
        .commit_with(&vref("1"), &listed, "alice", meta.clone(), &sensitive)
        .await
        .unwrap();
    // The client lost the answer (a crash after the commit landed) and
    // commits the same content again, digests in upper case, files in
    // another order: the committed manifest is the answer.
    let mut again = listed.clone();
    again.reverse();
    again[0].sha256 = again[0].sha256.to_uppercase();
    let second = s
        .commit_with(&vref("1"), &again, "bob", meta.clone(), &sensitive)
        .await
        .unwrap();
    assert_eq!(second.revision, first.revision);
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.uploader, "alice");
    assert_eq!(second.files, first.files);
    // Anything else is still 409 version_committed.
    let committed = |r: Result<Manifest, StorageError>| {
        assert!(matches!(r, Err(StorageError::VersionCommitted(_))), "{r:?}")
    };
    let mut changed = listed.clone();
    changed[0].sha256 = sha(b"alphA");
    committed(
        s.commit_with(&vref("1"), &changed, "alice", meta.clone(), &sensitive)
            .await,
    );
    committed(
        s.commit_with(&vref("1"), &listed[..1], "alice", meta.clone(), &sensitive)
            .await,
    );
    let mut bigger = listed.clone();
    bigger[1].size += 1;
    committed(
        s.commit_with(&vref("1"), &bigger, "alice", meta.clone(), &sensitive)
            .await,
    );
    let mut other_meta = meta.clone();
    other_meta.insert("framework".into(), "jax".into());
    committed(
        s.commit_with(&vref("1"), &listed, "alice", other_meta, &sensitive)
            .await,
    );
    committed(
        s.commit_with(&vref("1"), &listed, "alice", meta.clone(), &[])
            .await,
    );
    // Two identical commits racing both succeed with one manifest.
    for (p, d) in &files {
        s.upload_file(&vref("2"), p, body(d.clone()), "alice")
            .await
            .unwrap();
    }
    let v2 = vref("2");
    let (a, b) = tokio::join!(
        s.commit(&v2, &listed, "alice"),
        s.commit(&v2, &listed, "alice")
    );
    assert_eq!(a.unwrap().created_at, b.unwrap().created_at);
}

async fn two_spellings_are_one_file(f: Fixture) {
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let nfd = "mode\u{301}le.bin";
    let nfc = "mod\u{e9}le.bin";
    let rec = s
        .upload_file(&vref("1"), nfd, body(b"one".to_vec()), "alice")
        .await
        .unwrap();
    assert_eq!(rec.record.path, nfc, "stored under the NFC form");
    s.upload_file(&vref("1"), nfc, body(b"two".to_vec()), "alice")
        .await
        .unwrap();
    // Both spellings in one commit name the same file twice.
    let listed = |p: &str, d: &[u8]| CommitFile {
        path: p.into(),
        size: d.len() as u64,
        sha256: sha(d),
    };
    assert!(matches!(
        s.commit(
            &vref("1"),
            &[listed(nfd, b"one"), listed(nfc, b"two")],
            "alice"
        )
        .await,
        Err(StorageError::InvalidInput(_))
    ));
    let m = s
        .commit(&vref("1"), &[listed(nfd, b"two")], "alice")
        .await
        .unwrap();
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].path, nfc);
    for spelling in [nfd, nfc] {
        assert_eq!(
            read_all(s, "1", spelling, 0..u64::MAX).await.unwrap(),
            b"two"
        );
    }
    for bad in ["CON", "a\u{202e}b", "x/nul.txt", "trailing.", "a:b"] {
        assert!(
            matches!(
                s.upload_file(&vref("2"), bad, body(b"x".to_vec()), "alice")
                    .await,
                Err(StorageError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
}

/// A holder of the released DEK who can write the bucket re-encrypts other
/// content under the committed header (same salt, generation, identity) and
/// swaps it in, with or without a matching segment table: no byte of it is
/// ever yielded, for a whole read or a range.
async fn dek_holder_cannot_forge_blobs(f: Fixture) {
    let s = &f.store;
    let o = s.objects().clone();
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let data = pseudo_random(200_000, 3);
    let m = push(s, "1", &[("w.bin", data.clone())]).await.unwrap();
    let entry = &m.files[0];
    let blob = Path::from(entry.blob.as_str());
    let orig = o.get(&blob).await.unwrap().bytes().await.unwrap();
    let header = modelvault_format::Header::parse(&orig).unwrap();
    let vk = s.version_key(&vref("1"), KeyWant::Newest).await.unwrap();
    let (dek, generation) = (vk.dek(), vk.generation());
    let identity = modelvault_format::FileIdentity {
        namespace: "nlp",
        model: "bert",
        version: "1",
        path: "w.bin",
        dek_generation: generation,
    };
    let key = modelvault_format::FileKey::derive(dek, &header, &identity).unwrap();
    let forged_plain = vec![b'F'; data.len()];
    let mut enc = modelvault_format::Encryptor::new(&key, header);
    let mut forged = enc.header_bytes().to_vec();
    enc.update(&forged_plain, &mut forged).unwrap();
    enc.finish(&mut forged).unwrap();
    assert_eq!(forged.len(), orig.len());
    o.put(&blob, PutPayload::from(forged.clone()))
        .await
        .unwrap();
    for range in [0..u64::MAX, 70_000..70_010, 0..1] {
        let r = s.open_file(&vref("1"), "w.bin").await.unwrap();
        let mut stream = r.read_range(range.clone());
        match stream.next().await {
            Some(Err(StorageError::Integrity(_))) => {}
            other => panic!("forged blob served for {range:?}: {other:?}"),
        }
    }
    // A segment table made for the forged blob is refused before any read.
    let table = Path::from(format!("{}.segments", entry.blob));
    let mut forged_table = Vec::new();
    for seg in forged[modelvault_format::HEADER_LEN..].chunks(64 * 1024 + 16) {
        forged_table.extend_from_slice(blake3::hash(seg).as_bytes());
    }
    let orig_table = o.get(&table).await.unwrap().bytes().await.unwrap();
    assert_eq!(forged_table.len(), orig_table.len());
    o.put(&table, PutPayload::from(forged_table)).await.unwrap();
    assert!(matches!(
        s.open_file(&vref("1"), "w.bin").await,
        Err(StorageError::Integrity(_))
    ));
    // A deleted table also refuses the file.
    o.delete(&table).await.unwrap();
    assert!(matches!(
        s.open_file(&vref("1"), "w.bin").await,
        Err(StorageError::Integrity(_))
    ));
    // Put back, the original serves again.
    o.put(&table, PutPayload::from(orig_table)).await.unwrap();
    o.put(&blob, PutPayload::from(orig.to_vec())).await.unwrap();
    assert_eq!(read_all(s, "1", "w.bin", 0..u64::MAX).await.unwrap(), data);
}

/// `version_in_force`: one call with what a gate decides on (`latest`
/// resolved, model, manifest, approval and deployment series), the same
/// not-found and gone answers as the reads it replaces.
async fn version_in_force_reads_what_a_gate_needs(f: Fixture) {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        seq: u64,
        who: String,
    }
    let s = &f.store;
    let missing = s
        .version_in_force::<Rec, Rec>("nlp", "bert", "1")
        .await
        .unwrap_err();
    assert!(matches!(missing, StorageError::NotFound(_)), "{missing:?}");
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let missing = s
        .version_in_force::<Rec, Rec>("nlp", "bert", "1")
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, StorageError::NotFound(m) if m == "version nlp/bert@1"),
        "{missing:?}"
    );
    push(s, "1", &[("a", b"one".to_vec())]).await.unwrap();
    push(s, "2", &[("a", b"two".to_vec())]).await.unwrap();
    s.approvals(&vref("2"))
        .append(|seq| Rec {
            seq,
            who: "bob".into(),
        })
        .await
        .unwrap();
    s.deployments(&vref("2"))
        .append(|seq| Rec {
            seq,
            who: "carol".into(),
        })
        .await
        .unwrap();
    let got = s
        .version_in_force::<Rec, Rec>("nlp", "bert", "latest")
        .await
        .unwrap();
    assert_eq!(got.version, "2");
    assert_eq!(got.model.name, "bert");
    assert_eq!(got.manifest.version, "2");
    assert_eq!(got.approvals.len(), 1);
    assert_eq!(got.approvals[0].1.who, "bob");
    assert_eq!(got.deployments.len(), 1);
    assert_eq!(got.deployments[0].1.who, "carol");
    let one = s
        .version_in_force::<Rec, Rec>("nlp", "bert", "1")
        .await
        .unwrap();
    assert!(one.approvals.is_empty() && one.deployments.is_empty());
    s.shred(&vref("1"), "alice").await.unwrap();
    let gone = s
        .version_in_force::<Rec, Rec>("nlp", "bert", "1")
        .await
        .unwrap_err();
    assert!(matches!(gone, StorageError::Gone(_)), "{gone:?}");
}

/// Sixteen commits to one model at once: each gets its own entry in the
/// commit log (retried with backoff), none fails, `latest` is one of them.
async fn many_writers_commit_to_one_model(f: Fixture) {
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let names: Vec<String> = (0..16).map(|i| format!("w{i}")).collect();
    let pushes = names.iter().map(|v| {
        let s = s.clone();
        let v = v.clone();
        async move { push(&s, &v, &[("w.bin", v.as_bytes().to_vec())]).await }
    });
    for r in futures::future::join_all(pushes).await {
        r.unwrap();
    }
    let log: Vec<_> = s
        .objects()
        .list(Some(&Path::from("models/nlp/bert/commits")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(log.len(), 1 + 16);
    let (listed, more) = s.recent_versions("nlp", "bert", 100).await.unwrap();
    assert!(!more);
    assert_eq!(listed.len(), 16);
    let latest = s.resolve_version("nlp", "bert", "latest").await.unwrap();
    assert!(names.contains(&latest), "{latest}");
}

/// Sets a version of nlp/bert to `archived`.
async fn archive(store: &Store, version: &str) {
    store
        .stages(&vref(version))
        .append(|seq| StageRecord {
            seq,
            stage: Stage::Archived,
            by: "alice".into(),
            time: chrono::Utc::now(),
        })
        .await
        .unwrap();
}

/// The commit log answers `latest`: commit order, archived and deleted
/// versions skipped, a second server (no cache) and a racing one agree, a
/// model created before the log falls back to the manifests, and a bucket
/// writer cannot point `latest` elsewhere.
async fn latest_follows_the_commit_log(f: Fixture) {
    let s = &f.store;
    for model in ["bert", "other"] {
        s.create_model(
            "nlp",
            model,
            Sensitivity::Internal,
            BTreeMap::new(),
            "alice",
        )
        .await
        .unwrap();
    }
    let latest = |s: Store| async move { s.resolve_version("nlp", "bert", "latest").await };
    // Version names that sort against commit order: the log decides.
    for v in ["9", "10", "11", "12", "13", "14", "15"] {
        push(s, v, &[("w.bin", v.as_bytes().to_vec())])
            .await
            .unwrap();
    }
    assert_eq!(latest(s.clone()).await.unwrap(), "15");
    // Archived, then deleted: an older entry answers.
    archive(s, "15").await;
    assert_eq!(latest(s.clone()).await.unwrap(), "14");
    s.shred(&vref("14"), "alice").await.unwrap();
    assert_eq!(latest(s.clone()).await.unwrap(), "13");

    // A second server over the same bucket (nothing cached: it finds the
    // head by probing) agrees, and commits that the first then sees.
    let keys = Arc::new(LocalKeyring::open(&f._keys.path().join("keyring.json")).unwrap());
    let b = Store::open(&f._loc.url, keys).unwrap();
    assert_eq!(latest(b.clone()).await.unwrap(), "13");
    push(&b, "16", &[("w.bin", vec![16])]).await.unwrap();
    assert_eq!(latest(s.clone()).await.unwrap(), "16");
    // Two servers commit at once: each gets its own entry, both agree.
    let (f17, f18) = ([("w.bin", vec![17])], [("w.bin", vec![18])]);
    let (x, y) = tokio::join!(push(s, "17", &f17), push(&b, "18", &f18));
    x.unwrap();
    y.unwrap();
    let (la, lb) = (
        latest(s.clone()).await.unwrap(),
        latest(b.clone()).await.unwrap(),
    );
    assert_eq!(la, lb);
    assert!(la == "17" || la == "18", "{la}");
    let log: Vec<_> = s
        .objects()
        .list(Some(&Path::from("models/nlp/bert/commits")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        log.len(),
        1 + 10 + 1,
        "genesis, one entry per commit and one per deletion: {log:?}"
    );

    // A bucket writer: an entry moved from another model's log, or edited
    // in place, fails its MAC; `latest` refuses rather than answering.
    let o = s.objects().clone();
    let get = |p: &'static str| {
        let o = o.clone();
        async move { o.get(&Path::from(p)).await.unwrap().bytes().await.unwrap() }
    };
    let theirs = get("models/nlp/other/commits/000000000000.json").await;
    let next = Path::from("models/nlp/bert/commits/000000000012.json");
    o.put(&next, PutPayload::from(theirs)).await.unwrap();
    let err = latest(b.clone()).await.unwrap_err();
    assert!(matches!(err, StorageError::Integrity(_)), "{err:?}");
    // …and no server commits after it (the log would go on past a forgery,
    // and past a gap once it is removed).
    let keys = Arc::new(LocalKeyring::open(&f._keys.path().join("keyring.json")).unwrap());
    let refused = push(
        &Store::open(&f._loc.url, keys).unwrap(),
        "20",
        &[("w.bin", vec![20])],
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, StorageError::Integrity(_)), "{refused:?}");
    o.delete(&next).await.unwrap();
    // Once it is gone, the server that probed it answers again.
    assert_eq!(latest(b.clone()).await.unwrap(), la);
    let head = Path::from("models/nlp/bert/commits/000000000011.json");
    let fresh = || {
        let keys = Arc::new(LocalKeyring::open(&f._keys.path().join("keyring.json")).unwrap());
        Store::open(&f._loc.url, keys).unwrap()
    };
    let mine = get("models/nlp/bert/commits/000000000011.json").await;
    let text = String::from_utf8(mine.to_vec()).unwrap();
    let edited = text.replace("\"18\"", "\"13\"").replace("\"17\"", "\"13\"");
    assert_ne!(edited, text);
    o.put(&head, PutPayload::from(edited.into_bytes()))
        .await
        .unwrap();
    let err = latest(fresh()).await.unwrap_err();
    assert!(matches!(err, StorageError::Integrity(_)), "{err:?}");
    // A server that verified the entry before the edit keeps what it
    // verified (entries never change).
    assert_eq!(latest(s.clone()).await.unwrap(), la);
    o.put(&head, PutPayload::from(mine)).await.unwrap();
    assert_eq!(latest(fresh()).await.unwrap(), la);
    // Deleting the newest entry: a server that has seen it is not fooled;
    // one that has not answers from the older entries, a version this
    // model's commits named (rollback is the limit docs/STORAGE.md states).
    let kept = get("models/nlp/bert/commits/000000000011.json").await;
    o.delete(&head).await.unwrap();
    assert_eq!(latest(s.clone()).await.unwrap(), la);
    let other = latest(fresh()).await.unwrap();
    assert!(other == "17" || other == "18", "{other}");
    o.put(&head, PutPayload::from(kept)).await.unwrap();

    // A deletion by one server hides the version from another's listing
    // even when that one has listed (and cached) it before.
    let before = b.recent_versions("nlp", "bert", 100).await.unwrap().0;
    assert!(before.iter().any(|x| x.version == "13"));
    s.shred(&vref("13"), "alice").await.unwrap();
    let after = b.recent_versions("nlp", "bert", 100).await.unwrap().0;
    assert!(!after.iter().any(|x| x.version == "13"), "{after:?}");

    // Listing the newest versions: commit order, deleted ones left out.
    let (recent, more) = s.recent_versions("nlp", "bert", 3).await.unwrap();
    let names: Vec<_> = recent.iter().map(|b| b.version.as_str()).collect();
    assert!(more);
    assert_eq!(names.len(), 3);
    assert_eq!(names[0], "16", "{names:?}");
    let (all, more) = fresh().recent_versions("nlp", "bert", 100).await.unwrap();
    let names: Vec<_> = all.iter().map(|b| b.version.as_str()).collect();
    assert!(!more);
    assert_eq!(
        &names[..6],
        ["9", "10", "11", "12", "15", "16"],
        "{names:?}"
    );
    assert_eq!(names.len(), 8, "13 and 14 were deleted: {names:?}");

    // An entry whose version has no manifest (a commit that never landed)
    // is skipped: a fresh server answers from the older entries.
    let c = Store::open(
        &f._loc.url,
        Arc::new(LocalKeyring::open(&f._keys.path().join("keyring.json")).unwrap()),
    )
    .unwrap();
    let newest = latest(c.clone()).await.unwrap();
    let older = if newest == "17" { "18" } else { "17" };
    let manifests: Vec<_> = o
        .list(Some(&Path::from(format!(
            "models/nlp/bert/versions/{newest}/manifest"
        ))))
        .try_collect()
        .await
        .unwrap();
    for m in manifests {
        o.delete(&m.location).await.unwrap();
    }
    assert_eq!(latest(c.clone()).await.unwrap(), older);

    // A model created before the log existed (no log at all): the
    // manifests answer.
    let log: Vec<_> = o
        .list(Some(&Path::from("models/nlp/bert/commits")))
        .try_collect()
        .await
        .unwrap();
    for e in log {
        o.delete(&e.location).await.unwrap();
    }
    let d = Store::open(
        &f._loc.url,
        Arc::new(LocalKeyring::open(&f._keys.path().join("keyring.json")).unwrap()),
    )
    .unwrap();
    assert_eq!(latest(d.clone()).await.unwrap(), older);
    // …and a commit after the upgrade starts its log; archiving that one
    // walks off the log's start into the manifests again.
    push(&d, "19", &[("w.bin", vec![19])]).await.unwrap();
    assert_eq!(latest(d.clone()).await.unwrap(), "19");
    archive(&d, "19").await;
    assert_eq!(latest(d).await.unwrap(), older);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::fixture(super::local_location()).await).await;
            })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(loc) = super::s3_location() else { return };
                super::$name(super::fixture(loc).await).await;
            })*
        }
    };
}

suite!(
    round_trip_and_ranges,
    conflicts_and_mismatches,
    concurrent_commit_race,
    tampering_is_detected,
    dek_holder_cannot_forge_blobs,
    garbage_collection,
    retried_commit_is_idempotent,
    two_spellings_are_one_file,
    version_in_force_reads_what_a_gate_needs,
    latest_follows_the_commit_log,
    many_writers_commit_to_one_model
);

/// Backdates a file's modification time by `secs`.
fn age(path: &std::path::Path, secs: u64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A staging file as a process killed mid-upload leaves it: the multipart
/// upload wrote a part and was never completed, aborted or dropped.
async fn leave_staging_file(store: &Store, blob: &str) -> std::path::PathBuf {
    use object_store::MultipartUpload as _;
    let mut upload = store
        .objects()
        .put_multipart(&Path::from(blob))
        .await
        .unwrap();
    upload
        .put_part(PutPayload::from(vec![7u8; 4096]))
        .await
        .unwrap();
    std::mem::forget(upload); // no Drop: the process "died"
    let file = store.local_root().unwrap().join(format!("{blob}#1"));
    assert!(file.exists(), "{} was not left", file.display());
    file
}

#[tokio::test]
async fn gc_removes_staging_leftovers() {
    let f = fixture(local_location()).await;
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    push(s, "1", &[("a", b"kept".to_vec())]).await.unwrap();
    // A push killed mid-upload (a draft), a DEK rotation of the committed
    // version killed mid-re-encryption, and a record write cut short.
    let push_leftover = leave_staging_file(s, "blobs/nlp/bert/2/0001.mvf").await;
    let rotation_leftover = leave_staging_file(s, "blobs/nlp/bert/1/0002.mvf").await;
    let record_leftover = leave_staging_file(s, "models/nlp/bert/versions/2/uploads/x.json").await;
    // One still being written (young) must stay.
    let in_flight = leave_staging_file(s, "blobs/nlp/bert/3/0003.mvf").await;
    for f in [&push_leftover, &rotation_leftover, &record_leftover] {
        age(f, 7200);
    }
    let report = s
        .collect_garbage(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.staging_files_deleted, 3, "{report:?}");
    for f in [&push_leftover, &rotation_leftover, &record_leftover] {
        assert!(!f.exists(), "{} survived", f.display());
    }
    assert!(in_flight.exists(), "a write in progress was removed");
    assert_eq!(read_all(s, "1", "a", 0..u64::MAX).await.unwrap(), b"kept");
}

#[tokio::test]
async fn full_disk_is_insufficient_storage_and_leaves_nothing() {
    let Some(disk) = modelvault_test_utils::Tmpfs::mount("1m") else {
        return;
    };
    let root = disk.path.join("store");
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(LocalKeyring::create(&keys_dir.path().join("keyring.json")).unwrap());
    let s = Store::open(&format!("file://{}", root.display()), keys)
        .unwrap()
        .with_segment_size(modelvault_format::SegmentSize::K64);
    s.initialize().await.unwrap();
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    let before: Vec<_> = walk_files(&root);
    let r = s
        .upload_file(&vref("1"), "big.bin", body(vec![1u8; 3 << 20]), "alice")
        .await;
    assert!(
        matches!(r, Err(StorageError::InsufficientStorage(_))),
        "{r:?}"
    );
    // Nothing half-written: no blob, no staging file, no upload record
    // (the version's first key record may stay; it is complete).
    // (A dropped upload removes its staging file on a blocking thread:
    // give it a moment.)
    let mut after = Vec::new();
    for _ in 0..50 {
        after = walk_files(&root)
            .into_iter()
            .filter(|p| !before.contains(p) && !p.to_string_lossy().contains("/keys/"))
            .collect();
        if after.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(after.is_empty(), "left behind: {after:?}");
    // The space came back: a small push goes through.
    push(&s, "1", &[("small.bin", b"fits".to_vec())])
        .await
        .unwrap();
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn local_store_is_initialized_once() {
    let f = fixture(local_location()).await;
    assert!(matches!(
        f.store.initialize().await,
        Err(StorageError::AlreadyExists(_))
    ));
    f.store.check_initialized().await.unwrap();
    // Another keyring cannot read this store's records.
    let dir = tempfile::tempdir().unwrap();
    let other = Arc::new(LocalKeyring::create(&dir.path().join("k.json")).unwrap());
    let s2 = Store::open(f.store.url(), other).unwrap();
    assert!(matches!(
        s2.check_initialized().await,
        Err(StorageError::NotInitialized(_))
    ));
}

/// docs/FORMAT.md ("DEK wrap", "The local keyring file") is enough to
/// unwrap a DEK without this code: follow it with plain JSON and AES-GCM.
#[tokio::test]
async fn a_dek_unwraps_as_format_md_documents() {
    use base64::Engine as _;
    let f = fixture(local_location()).await;
    let s = &f.store;
    s.create_model(
        "nlp",
        "bert",
        Sensitivity::Internal,
        BTreeMap::new(),
        "alice",
    )
    .await
    .unwrap();
    push(s, "1", &[("a", b"x".to_vec())]).await.unwrap();
    let vk = s.version_key(&vref("1"), KeyWant::Newest).await.unwrap();
    let (dek, generation) = (vk.dek(), vk.generation());

    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            s.local_root()
                .unwrap()
                .join("models/nlp/bert/versions/1/keys/000000000000.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["record"], "key");
    let body = &record["body"];
    let keyring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f._keys.path().join("keyring.json")).unwrap())
            .unwrap();
    assert_eq!(keyring["format"], "modelvault-keyring-v1");
    assert_eq!(record["mac"]["key_id"], keyring["mac_key"]["id"]);
    let kek_version = body["wrapped"]["kek_version"].as_u64().unwrap() as u32;
    let entry = keyring["keks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"].as_u64() == Some(u64::from(kek_version)))
        .unwrap();
    assert_eq!(entry["state"], "active");
    let kek = b64(&entry["key"]);
    let wrapped = b64(&body["wrapped"]["ciphertext"]);
    assert_eq!((kek.len(), wrapped.len()), (32, 60));
    let mut aad = Vec::new();
    for field in ["modelvault/v1/dek-wrap", "nlp", "bert", "1"] {
        aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    let dek_generation = body["dek_generation"].as_u64().unwrap() as u32;
    assert_eq!(dek_generation, generation);
    aad.extend_from_slice(&dek_generation.to_be_bytes());
    aad.extend_from_slice(&kek_version.to_be_bytes());
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &kek).unwrap(),
    );
    let mut buf = wrapped[12..].to_vec();
    let plain = key
        .open_in_place(
            ring::aead::Nonce::try_assume_unique_for_key(&wrapped[..12]).unwrap(),
            ring::aead::Aad::from(aad),
            &mut buf,
        )
        .unwrap();
    assert_eq!(plain, &dek.expose_secret()[..]);
}

#[tokio::test]
async fn console_sessions_are_revoked_and_pruned() {
    let f = fixture(local_location()).await;
    let sessions = f.store.console_sessions();
    let record = serde_json::json!({"id": "s1", "expires_at": "2026-01-01T00:00:00Z"});
    sessions.create("s1", &record).await.unwrap();
    // Never reused.
    assert!(matches!(
        sessions.create("s1", &record).await,
        Err(StorageError::AlreadyExists(_))
    ));
    let got: serde_json::Value = sessions.get("s1").await.unwrap().unwrap();
    assert_eq!(got, record);
    assert!(!sessions.is_revoked("s1").await.unwrap());
    sessions
        .revoke("s1", &serde_json::json!({"by": "alice"}))
        .await
        .unwrap();
    assert!(sessions.is_revoked("s1").await.unwrap());
    assert!(
        sessions
            .get::<serde_json::Value>("s1")
            .await
            .unwrap()
            .is_none()
    );
    sessions.create("s2", &record).await.unwrap();
    // Nothing is older than an hour yet;
    assert_eq!(
        sessions
            .prune(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    // everything is older than a cutoff of now.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(sessions.prune(std::time::Duration::ZERO).await.unwrap(), 2);
    assert!(
        sessions
            .get::<serde_json::Value>("s2")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!sessions.is_revoked("s1").await.unwrap());
}
