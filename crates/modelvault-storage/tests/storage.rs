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
    let (dek, _) = s.version_dek(&vref("1"), false).await.unwrap();
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
    assert!(matches!(
        s.commit(&vref("1"), &[ok], "alice").await,
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
    o.put(&meta, PutPayload::from(rec)).await.unwrap();
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
    garbage_collection
);

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
