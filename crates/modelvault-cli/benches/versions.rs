//! Cost of naming a version in a model with many versions (not a timed
//! test): the requests a `pull NS/NAME@latest`, a `model show` and a
//! download make, against a model with `MV_BENCH_VERSIONS` versions
//! (default 10,000) vs a model with one, on the same server in the same
//! run (goal: ratio ≤ 1.5 each). Each figure is the median of
//! `MV_BENCH_REQUESTS` sequential requests (default 300).
//!
//! Run: `cargo bench -p modelvault-cli --bench versions`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use modelvault_server::AppState;
use modelvault_storage::{CommitFile, VersionRef};

mod common;
use common::{create_token, start};

/// Commits `n` one-file versions `1..=n` of `bench/{model}` straight
/// through the store (what a push does, without HTTP), 16 at a time.
async fn fill(state: &AppState, model: &str, n: usize) {
    use futures::StreamExt as _;
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"x"));
    futures::stream::iter(1..=n)
        .for_each_concurrent(16, |i| {
            let store = state.store.clone();
            let sha = sha.clone();
            async move {
                let version = i.to_string();
                let v = VersionRef {
                    namespace: "bench",
                    model,
                    version: &version,
                };
                let body = futures::stream::iter([Ok::<_, std::io::Error>(
                    bytes::Bytes::from_static(b"x"),
                )]);
                store.upload_file(&v, "w", body, "bench").await.unwrap();
                let file = CommitFile {
                    path: "w".into(),
                    size: 1,
                    sha256: sha,
                };
                store.commit(&v, &[file], "bench").await.unwrap();
            }
        })
        .await;
}

/// Median latency of `n` sequential GETs of `url`.
async fn median(http: &reqwest::Client, url: &str, token: &str, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let _ = r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("versions bench: run with `cargo bench -p modelvault-cli --bench versions`");
        return;
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (many, requests) = (
        env("MV_BENCH_VERSIONS", 10_000),
        env("MV_BENCH_REQUESTS", 300),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (config, admin) = modelvault_server::init::initialize(&data, None).await.unwrap();
        let state = AppState::open(config.clone()).await.unwrap();
        let url = start(state.clone()).await;
        let http = reqwest::Client::new();
        let token = create_token(&http, &url, &admin, "bench", "data-scientist").await;
        for name in ["one", "many"] {
            let r = http
                .post(format!("{url}/v1/models"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"namespace": "bench", "name": name}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        let t = Instant::now();
        fill(&state, "one", 1).await;
        fill(&state, "many", many).await;
        eprintln!("committed {many} versions in {:.1} s", t.elapsed().as_secs_f64());

        // A second server on the same store that has not seen the model:
        // its first `latest` finds the log's head by probing.
        let cold = AppState::open(config.clone()).await.unwrap();
        let cold_url = start(cold).await;
        let t = Instant::now();
        let r = http
            .get(format!("{cold_url}/v1/models/bench/many/versions/latest"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let first = t.elapsed();

        let cases = [
            ("pull @latest: version detail", "versions/latest".to_string()),
            ("pull @latest: the file download", "versions/{v}/files/w".to_string()),
            ("model show", String::new()),
            ("download of a named version", "versions/1/files/w".to_string()),
        ];
        for (label, path) in cases {
            let at = |model: &str, newest: usize| {
                let p = path.replace("{v}", &newest.to_string());
                if p.is_empty() {
                    format!("{url}/v1/models/bench/{model}")
                } else {
                    format!("{url}/v1/models/bench/{model}/{p}")
                }
            };
            let (u1, un) = (at("one", 1), at("many", many));
            median(&http, &u1, &token, 20).await;
            median(&http, &un, &token, 20).await;
            let mut one = Duration::MAX;
            let mut lots = Duration::MAX;
            for _ in 0..2 {
                one = one.min(median(&http, &u1, &token, requests).await);
                lots = lots.min(median(&http, &un, &token, requests).await);
            }
            println!(
                "{label}: {many} versions {:.0} us vs 1 version {:.0} us (median) -> ratio {:.2} (goal <= 1.5)",
                lots.as_secs_f64() * 1e6,
                one.as_secs_f64() * 1e6,
                lots.as_secs_f64() / one.as_secs_f64()
            );
        }
        println!(
            "first `latest` on a server that had not seen the model ({many} versions): {:.1} ms",
            first.as_secs_f64() * 1e3
        );
    });
}
