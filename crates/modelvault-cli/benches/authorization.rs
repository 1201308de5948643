//! Authorization cost over HTTP (not a timed test): download requests per
//! second for a 1-byte file from servers in the same process and run:
//! with the policy chain (the three bundled policies) vs only the native
//! role check (goal: the chain costs ≤ 8%; also with the audit trail off on
//! both, without its fsync noise), and audited (durable intent +
//! completion per download, group commit) vs the same server with the
//! audit trail off (goal: ratio ≥ 0.9). Then audit verification speed over
//! `MV_BENCH_VERIFY_RECORDS` records (default 1,000,000) the bench writes.
//!
//! Run: `cargo bench -p modelvault-cli --bench authorization`
//! (`MV_BENCH_SECS` per measurement, default 5; `MV_BENCH_CONCURRENCY`,
//! default 8).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use modelvault_server::{AppState, Config};

mod common;
use common::{create_token, start};

async fn load(url: String, token: String, secs: u64, concurrency: usize) -> f64 {
    load_requests(url, token, None, secs, concurrency).await
}

/// Requests per second from `concurrency` clients for `secs`: a GET of
/// `url`, or with `body` a POST of that JSON.
async fn load_requests(
    url: String,
    token: String,
    body: Option<serde_json::Value>,
    secs: u64,
    concurrency: usize,
) -> f64 {
    let client = reqwest::Client::new();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let token = token.clone();
        let done = done.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let rb = match &body {
                    Some(b) => client.post(&url).json(b),
                    None => client.get(&url),
                };
                let r = rb.bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let t = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "authorization bench: run with `cargo bench -p modelvault-cli --bench authorization`"
        );
        return;
    }
    let secs: u64 = std::env::var("MV_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let concurrency: usize = std::env::var("MV_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (config, admin) = modelvault_server::init::initialize(&data, None).await.unwrap();
        // Set up through a server with the chain: a data scientist, a model,
        // one committed 1-byte file.
        let with_chain = AppState::open(config.clone()).await.unwrap();
        let url = start(with_chain).await;
        let http = reqwest::Client::new();
        let token = create_token(&http, &url, &admin, "bench", "data-scientist").await;
        http.post(format!("{url}/v1/models"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"namespace": "bench", "name": "m"}))
            .send()
            .await
            .unwrap();
        let up: serde_json::Value = http
            .put(format!("{url}/v1/models/bench/m/versions/1/files/w"))
            .bearer_auth(&token)
            .body("x")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let commit = serde_json::json!({"files": [{"path": "w", "size": 1, "sha256": up["sha256"]}]});
        let r = http
            .post(format!("{url}/v1/models/bench/m/versions/1/commit"))
            .bearer_auth(&token)
            .json(&commit)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let native = AppState::open(Config::load(&data.join("modelvault.toml")).unwrap())
            .await
            .unwrap()
            .without_policy_chain_for_benchmarks();
        let native_url = start(native).await;
        let unaudited = AppState::open(Config::load(&data.join("modelvault.toml")).unwrap())
            .await
            .unwrap()
            .without_audit_for_benchmarks();
        let unaudited_url = start(unaudited).await;
        let file = "/v1/models/bench/m/versions/1/files/w";
        // Warm up both, then alternate measurements, best of two each.
        load(format!("{url}{file}"), token.clone(), 1, concurrency).await;
        load(format!("{native_url}{file}"), token.clone(), 1, concurrency).await;
        load(format!("{unaudited_url}{file}"), token.clone(), 1, concurrency).await;
        let mut chain = 0f64;
        let mut base = 0f64;
        let mut quiet = 0f64;
        for _ in 0..2 {
            chain = chain.max(load(format!("{url}{file}"), token.clone(), secs, concurrency).await);
            base = base.max(load(format!("{native_url}{file}"), token.clone(), secs, concurrency).await);
            quiet = quiet.max(load(format!("{unaudited_url}{file}"), token.clone(), secs, concurrency).await);
        }
        println!(
            "download authorization over HTTP ({concurrency} clients): chain of 3 bundled policies {chain:.0} req/s vs native role check only {base:.0} req/s -> chain costs {:.1}% (goal <= 8%)",
            (1.0 - chain / base) * 100.0
        );
        println!(
            "audited downloads (durable intent + completion, group commit, fsync) {chain:.0} req/s vs audit off {quiet:.0} req/s -> ratio {:.2} (goal >= 0.9)",
            chain / quiet
        );

        // The chain's cost without the fsync noise: both servers with the
        // audit trail off (the chain server is the unaudited one above).
        let native_quiet = AppState::open(Config::load(&data.join("modelvault.toml")).unwrap())
            .await
            .unwrap()
            .without_policy_chain_for_benchmarks()
            .without_audit_for_benchmarks();
        let native_quiet_url = start(native_quiet).await;
        load(format!("{native_quiet_url}{file}"), token.clone(), 1, concurrency).await;
        let mut chain_quiet = 0f64;
        let mut base_quiet = 0f64;
        for _ in 0..2 {
            chain_quiet = chain_quiet.max(load(format!("{unaudited_url}{file}"), token.clone(), secs, concurrency).await);
            base_quiet = base_quiet.max(load(format!("{native_quiet_url}{file}"), token.clone(), secs, concurrency).await);
        }
        println!(
            "download authorization over HTTP, audit off on both ({concurrency} clients): chain of 3 bundled policies {chain_quiet:.0} req/s vs native role check only {base_quiet:.0} req/s -> chain costs {:.1}% (goal <= 8%)",
            (1.0 - chain_quiet / base_quiet) * 100.0
        );

        // Audited key releases (role gate, policy chain, HPKE seal, durable
        // intent, signed receipt, completion) vs a trivial handler on the
        // same server (`GET /healthz`).
        let engineer = create_token(&http, &url, &admin, "bench-release", "ml-engineer").await;
        let client_key = modelvault_release::ClientKey::generate();
        use base64::Engine as _;
        let release_body = serde_json::json!({
            "public_key": base64::engine::general_purpose::STANDARD.encode(client_key.public_bytes())
        });
        let release_url = format!("{url}/v1/models/bench/m/versions/1/key-release");
        let health_url = format!("{url}/healthz");
        load_requests(release_url.clone(), engineer.clone(), Some(release_body.clone()), 1, concurrency).await;
        load_requests(health_url.clone(), engineer.clone(), None, 1, concurrency).await;
        let mut releases = 0f64;
        let mut trivial = 0f64;
        for _ in 0..2 {
            releases = releases.max(
                load_requests(release_url.clone(), engineer.clone(), Some(release_body.clone()), secs, concurrency).await,
            );
            trivial = trivial.max(load_requests(health_url.clone(), engineer.clone(), None, secs, concurrency).await);
        }
        println!(
            "audited key releases over HTTP ({concurrency} clients): {releases:.0} req/s vs a trivial handler on the same server (GET /healthz) {trivial:.0} req/s -> ratio {:.2} (goal >= 0.3)",
            releases / trivial
        );

        // Verification speed over many records.
        let n: u64 = std::env::var("MV_BENCH_VERIFY_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let vdir = tempfile::tempdir().unwrap();
        let keys = Arc::new(modelvault_keys::LocalKeyring::create(&vdir.path().join("keyring.json")).unwrap());
        let store = modelvault_storage::Store::open(
            &format!("file://{}", vdir.path().join("store").display()),
            keys,
        )
        .unwrap();
        let log = modelvault_audit::AuditLog::start(store.clone(), Default::default()).await.unwrap();
        let t = Instant::now();
        for i in 0..n {
            let mut r = modelvault_audit::AuditRecord::new("request", "read", "allowed");
            r.request_id = Some(format!("bench-{i}"));
            r.source = Some("127.0.0.1".into());
            r.principal = Some(modelvault_audit::PrincipalRef {
                id: "bench".into(),
                kind: "person".into(),
                roles: vec!["data-scientist".into()],
                groups: Vec::new(),
                environment: "dev".into(),
            });
            r.status = Some(200);
            log.record(r).await;
        }
        log.checkpoint().await.unwrap();
        let write = t.elapsed();
        let t = Instant::now();
        let report = modelvault_audit::verify_store(&store.audit_objects(), log.public_key()).await.unwrap();
        let verify = t.elapsed();
        assert!(report.ok);
        let records: u64 = report.chains.iter().map(|c| c.records).sum();
        println!(
            "audit: wrote {records} records in {:.1} s ({:.0} records/s); verified in {:.1} s -> {:.0} records/s",
            write.as_secs_f64(),
            records as f64 / write.as_secs_f64(),
            verify.as_secs_f64(),
            records as f64 / verify.as_secs_f64()
        );
    });
}
