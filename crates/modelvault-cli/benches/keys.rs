//! Key operation costs (not timed tests), each against a baseline measured
//! in the same run: KEK rotation (rewrapping N versions' DEKs) vs writing N
//! small records to the same store (goal: ratio ≤ 1.5), at two sizes to
//! show it is linear in the count; DEK rotation of a 64 MiB version vs
//! pushing it; and the PKCS#11 provider's wrap and MAC vs the local
//! keyring's (when a test token is configured, as `scripts/test.sh` does).
//!
//! Run: `cargo bench -p modelvault-cli --bench keys`
//! (`MV_BENCH_VERSIONS`, default 10000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use modelvault_storage::{Store, VersionRef};

async fn store(dir: &std::path::Path) -> Store {
    let keys = Arc::new(modelvault_keys::LocalKeyring::create(&dir.join("keyring.json")).unwrap());
    let s = Store::open(&format!("file://{}", dir.join("store").display()), keys).unwrap();
    s.initialize().await.unwrap();
    s.create_model(
        "bench",
        "m",
        Default::default(),
        Default::default(),
        "bench",
    )
    .await
    .unwrap();
    s
}

/// (rotation, baseline) for `n` versions.
async fn measure(n: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    for i in 0..n {
        let v = format!("v{i}");
        s.version_key(
            &VersionRef {
                namespace: "bench",
                model: "m",
                version: &v,
            },
            modelvault_storage::KeyWant::NewestOrCreate,
        )
        .await
        .unwrap();
    }
    // Rotation: a new KEK version, then every key folder rewrapped (what
    // the rotate-kek job does).
    let t = Instant::now();
    let target = s.keys().create_kek_version().await.unwrap();
    let dirs = s.key_dirs().await.unwrap();
    for k in &dirs {
        s.rewrap(k, target).await.unwrap();
    }
    let rotation = t.elapsed();
    // Baseline: the same number of small authenticated records written.
    #[derive(serde::Serialize)]
    struct Small {
        i: usize,
        pad: String,
    }
    let t = Instant::now();
    for i in 0..n {
        // One create-if-absent authenticated record each (a job's first).
        s.job(&format!("bench-baseline-{i:08}"))
            .create_at(
                0,
                &Small {
                    i,
                    pad: "x".repeat(96),
                },
            )
            .await
            .unwrap();
    }
    (rotation, t.elapsed())
}

/// DEK rotation of one version of `mib` MiB vs pushing it (upload and
/// commit) to the same store: (rotation, baseline).
async fn dek_rotation(mib: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let data = bytes::Bytes::from(modelvault_test_utils::pseudo_random(mib << 20, 3));
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &data));
    let v = VersionRef {
        namespace: "bench",
        model: "m",
        version: "big",
    };
    let t = Instant::now();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(1 << 20)
        .map(|c| Ok(data.slice_ref(c)))
        .collect();
    s.upload_file(&v, "w.bin", futures::stream::iter(chunks), "bench")
        .await
        .unwrap();
    s.commit(
        &v,
        &[modelvault_storage::CommitFile {
            path: "w.bin".into(),
            size: data.len() as u64,
            sha256: sha,
        }],
        "bench",
    )
    .await
    .unwrap();
    let push = t.elapsed();
    let t = Instant::now();
    s.prepare_dek_rotation(&v, 2).await.unwrap();
    s.reencrypt_and_switch(&v, 2, |_, _| {}).await.unwrap();
    (t.elapsed(), push)
}

/// Per-operation cost of a provider: (wrap+unwrap, mac+verify) averaged
/// over `n` operations.
async fn provider_ops(p: &dyn modelvault_keys::KeyProvider, n: u32) -> (Duration, Duration) {
    let dek = modelvault_format::Dek::generate().unwrap();
    let b = modelvault_keys::DekBinding {
        namespace: "bench",
        model: "m",
        version: "1",
        dek_generation: 1,
    };
    let t = Instant::now();
    for _ in 0..n {
        let w = p.wrap_dek(&dek, &b).await.unwrap();
        p.unwrap_dek(&w, &b).await.unwrap();
    }
    let wrap = t.elapsed() / n;
    let msg = [7u8; 512];
    let t = Instant::now();
    for _ in 0..n {
        let m = p.mac(&msg).await.unwrap();
        p.verify_mac(&msg, &m).await.unwrap();
    }
    (wrap, t.elapsed() / n)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("keys bench: run with `cargo bench -p modelvault-cli --bench keys`");
        return;
    }
    let n: usize = std::env::var("MV_BENCH_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (r_small, b_small) = measure(n / 4).await;
        let (r, b) = measure(n).await;
        println!(
            "KEK rotation of {n} versions: {:.1} s vs writing {n} small records {:.1} s -> ratio {:.2} (goal <= 1.5)",
            r.as_secs_f64(),
            b.as_secs_f64(),
            r.as_secs_f64() / b.as_secs_f64()
        );
        println!(
            "linearity: {} versions {:.2} s, {n} versions {:.2} s -> x{:.2} for x4 the versions (ratio to its baseline {:.2})",
            n / 4,
            r_small.as_secs_f64(),
            r.as_secs_f64(),
            r.as_secs_f64() / r_small.as_secs_f64(),
            r_small.as_secs_f64() / b_small.as_secs_f64()
        );
        let (rot, push) = dek_rotation(64).await;
        println!(
            "DEK rotation of a 64 MiB version: {:.2} s vs pushing it {:.2} s -> ratio {:.2}",
            rot.as_secs_f64(),
            push.as_secs_f64(),
            rot.as_secs_f64() / push.as_secs_f64()
        );
        let dir = tempfile::tempdir().unwrap();
        let local = modelvault_keys::LocalKeyring::create(&dir.path().join("k.json")).unwrap();
        let (lw, lm) = provider_ops(&local, 2000).await;
        println!(
            "local keyring: wrap+unwrap {:.1} us, mac+verify {:.1} us",
            lw.as_secs_f64() * 1e6,
            lm.as_secs_f64() * 1e6
        );
        // The PKCS#11 token scripts/test.sh sets up (or any token named by
        // MODELVAULT_TEST_PKCS11_MODULE/_TOKEN/_PIN).
        match modelvault_test_utils::pkcs11_token() {
            Some(t) => {
                let p = modelvault_keys::Pkcs11Provider::connect(&modelvault_keys::Pkcs11Settings {
                    module: t.module.clone(),
                    token_label: t.token_label.clone(),
                    pin: t.pin.clone().into(),
                    key_prefix: t.prefix.clone(),
                })
                .unwrap();
                p.create_keys().unwrap();
                let (pw, pm) = provider_ops(&p, 2000).await;
                println!(
                    "pkcs11 ({}): wrap+unwrap {:.1} us (x{:.1} the keyring), mac+verify {:.1} us (x{:.1})",
                    t.token_label,
                    pw.as_secs_f64() * 1e6,
                    pw.as_secs_f64() / lw.as_secs_f64(),
                    pm.as_secs_f64() * 1e6,
                    pm.as_secs_f64() / lm.as_secs_f64()
                );
            }
            None => println!("pkcs11: no test token configured; skipped"),
        }
    });
}
