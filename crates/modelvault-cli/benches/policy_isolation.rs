//! Metadata latency next to a plugin that loops (not a timed test): 8
//! clients (`MV_BENCH_CONCURRENCY`) download, over and over, a model on
//! which a shadow plugin loops until its time limit (the hostile test
//! plugin, `hostile=loop`), while 2 more (`MV_BENCH_METADATA_CLIENTS`) read
//! unrelated metadata (model show, version list, version show, model list,
//! whoami, healthz, in turn). Reported: the metadata p50/p99 and rate, the
//! download rate, and the metadata p50 ratio against the same load without
//! the looping plugin (goal: ≤ 1.5 with the default settings).
//!
//! Servers run in this process on a runtime of their own, over one data
//! directory, each with its own policy host:
//! - baseline: the three bundled policies only;
//! - default: the looping shadow plugin installed, default settings (one
//!   evaluation thread per core, circuit breaker on; its cool-down is
//!   lowered to 2 s so probes run during the measurement);
//! - breaker off: the same, `circuit_breaker.failures = 0` (only the bound
//!   on concurrent evaluations acts);
//! - breaker off, nice 10: the same with the evaluation threads niced;
//! - unbounded, breaker off: 64 evaluations at once, as before the bound
//!   (what the issue measured).
//!
//! Run: `cargo bench -p modelvault-cli --bench policy_isolation`
//! (`MV_BENCH_SECS` per measurement, default 5). The hostile component is
//! built from `plugins/` into `target/plugins/` if missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelvault_server::{AppState, Config};

fn hostile_component() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/plugins");
    let wasm = target.join("wasm32-wasip2/release/hostile.wasm");
    if !wasm.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(root.join("plugins"))
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                "wasm32-wasip2",
                "-p",
                "hostile",
                "--target-dir",
            ])
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .status()
            .expect("run cargo for plugins/");
        assert!(status.success(), "building the hostile plugin failed");
    }
    wasm
}

struct Run {
    p50: Duration,
    p99: Duration,
    metadata_per_sec: f64,
    downloads_per_sec: f64,
}

async fn load(url: &str, token: &str, secs: u64, concurrency: usize, readers: usize) -> Run {
    let client = reqwest::Client::new();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let downloads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let metadata = [
        "/v1/models/bench/loop",
        "/v1/models/bench/loop/versions",
        "/v1/models/bench/loop/versions/1",
        "/v1/models?namespace=bench",
        "/v1/whoami",
        "/healthz",
    ];
    let mut tasks = Vec::new();
    for c in 0..concurrency + readers {
        let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
        let (latencies, downloads) = (latencies.clone(), downloads.clone());
        let downloader = c < concurrency;
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            let mut mine = Vec::new();
            while Instant::now() < stop {
                let path = if downloader {
                    "/v1/models/bench/loop/versions/1/files/w"
                } else {
                    i += 1;
                    metadata[i % metadata.len()]
                };
                let t = Instant::now();
                let r = client
                    .get(format!("{url}{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{path}");
                let _ = r.bytes().await.unwrap();
                if downloader {
                    downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    mine.push(t.elapsed());
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    let t = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let at = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)];
    Run {
        p50: at(0.5),
        p99: at(0.99),
        metadata_per_sec: l.len() as f64 / elapsed,
        downloads_per_sec: downloads.load(std::sync::atomic::Ordering::Relaxed) as f64 / elapsed,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "policy isolation bench: run with `cargo bench -p modelvault-cli --bench policy_isolation`"
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
    let readers: usize = std::env::var("MV_BENCH_METADATA_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let hostile = std::fs::read(hostile_component()).unwrap();
    // The servers' runtime, apart from the clients' (as in a separate
    // process, they share the machine's cores).
    let servers = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("client")
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = data.join("modelvault.toml");
    let start = |edit: &dyn Fn(&mut Config)| -> String {
        let mut config = Config::load(&config_path).unwrap();
        edit(&mut config);
        servers.block_on(async move {
            let state = AppState::open(config).await.unwrap();
            let listener = modelvault_server::bind("127.0.0.1:0", false).await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(modelvault_server::serve(
                listener,
                state,
                std::future::pending(),
            ));
            format!("http://{addr}")
        })
    };
    let admin = servers.block_on(async {
        modelvault_server::init::initialize(&data, None)
            .await
            .unwrap()
            .1
    });
    let baseline_url = start(&|_| {});
    // A data scientist, a model the hostile plugin loops on, one 1-byte file.
    let token = clients.block_on(async {
        let http = reqwest::Client::new();
        let url = &baseline_url;
        let tok: serde_json::Value = http
            .post(format!("{url}/v1/tokens"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"name": "bench", "roles": ["data-scientist"], "namespaces": ["bench"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = tok["token"].as_str().unwrap().to_string();
        let r = http
            .post(format!("{url}/v1/models"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"namespace": "bench", "name": "loop", "tags": {"hostile": "loop"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let up: serde_json::Value = http
            .put(format!("{url}/v1/models/bench/loop/versions/1/files/w"))
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
            .post(format!("{url}/v1/models/bench/loop/versions/1/commit"))
            .bearer_auth(&token)
            .json(&commit)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        token
    });
    let measure = |url: &str| clients.block_on(load(url, &token, secs, concurrency, readers));
    // Warm up, then the baseline.
    clients.block_on(load(&baseline_url, &token, 1, concurrency, readers));
    let baseline = measure(&baseline_url);

    // The looping plugin, in shadow mode, through the baseline server (the
    // others load it from the store at start).
    clients.block_on(async {
        let r = reqwest::Client::new()
            .put(format!(
                "{baseline_url}/v1/admin/policies/hostile?mode=shadow"
            ))
            .bearer_auth(&admin)
            .body(hostile)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    });
    type Edit<'a> = &'a dyn Fn(&mut Config);
    let scenarios: [(&str, Edit); 4] = [
        (
            "default settings (1 evaluation thread per core, breaker on, 2 s cool-down)",
            &|c| c.policy.circuit_breaker.cooldown_secs = 2,
        ),
        ("breaker off", &|c| c.policy.circuit_breaker.failures = 0),
        ("breaker off, evaluation threads at nice 10", &|c| {
            c.policy.circuit_breaker.failures = 0;
            c.policy.evaluation_nice = 10;
        }),
        (
            "breaker off, 64 evaluations at once (as before the bound)",
            &|c| {
                c.policy.circuit_breaker.failures = 0;
                c.policy.evaluation_threads = 64;
            },
        ),
    ];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "metadata reads next to a looping shadow plugin ({concurrency} clients downloading the model it loops on, {readers} reading metadata; {secs} s each):"
    );
    println!(
        "without the looping plugin: metadata p50 {:.2} ms, p99 {:.2} ms, {:.0} metadata reads/s, {:.0} downloads/s",
        ms(baseline.p50),
        ms(baseline.p99),
        baseline.metadata_per_sec,
        baseline.downloads_per_sec
    );
    for (name, edit) in scenarios {
        let url = start(edit);
        let r = measure(&url);
        println!(
            "looping shadow plugin, {name}: metadata p50 {:.2} ms, p99 {:.2} ms, {:.0} metadata reads/s, {:.0} downloads/s -> p50 ratio {:.2}{}",
            ms(r.p50),
            ms(r.p99),
            r.metadata_per_sec,
            r.downloads_per_sec,
            r.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
            if name.starts_with("default") {
                " (goal <= 1.5)"
            } else {
                ""
            }
        );
    }
}
