//! KEK rotation cost (not a timed test): rewrapping N versions' DEKs vs
//! writing N small records to the same store, in the same run (goal: ratio
//! ≤ 1.5), at two sizes to show it is linear in the count.
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
        s.version_dek(
            &VersionRef {
                namespace: "bench",
                model: "m",
                version: &v,
            },
            true,
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
        let path = object_store::path::Path::from(format!("bench-baseline/{i:08}.json"));
        s.create_record(
            "bench",
            &path,
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
    });
}
