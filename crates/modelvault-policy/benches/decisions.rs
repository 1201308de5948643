//! Decision latency (not a timed test): median and p99 of a fresh-instance
//! decision for each bundled policy and for the chain of three, beside a
//! call on a reused instance of the same policy (the floor) in the same run.
//! Goal: fresh ≤ 3× floor per plugin.
//!
//! Run: `cargo bench -p modelvault-policy --bench decisions`
//! (`MV_BENCH_ITERS`, default 20000; `MV_BENCH_PY_POLICY` = a built Python
//! example component to include it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use modelvault_policy::*;

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn request() -> PolicyRequest {
    let mut r = PolicyRequest::sample();
    r.action = PolicyAction::Download;
    r.context.environment = "production".into();
    r.resource.sensitivity = SensitivityInfo::Restricted;
    r.resource.approvals = ["mia", "noah"]
        .iter()
        .map(|a| ApprovalInfo {
            approver: a.to_string(),
            environment: "production".into(),
            time: "2026-11-23T00:00:00Z".into(),
            kind: Default::default(),
            approver_roles: vec![],
        })
        .collect();
    r
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("decision bench: run with `cargo bench -p modelvault-policy --bench decisions`");
        return;
    }
    let iters: usize = std::env::var("MV_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let host = PolicyHost::new(Limits::default(), None).unwrap();
    let req = request();
    let mut chain = Vec::new();
    println!("policy decision latency, {iters} calls each (µs)");
    // The bundled policies, then the Python example when built
    // (MV_BENCH_PY_POLICY=path/to/component.wasm, as scripts/test.sh builds it).
    let python = std::env::var("MV_BENCH_PY_POLICY").ok().map(|p| {
        let bytes: &'static [u8] = Box::leak(std::fs::read(p).unwrap().into_boxed_slice());
        modelvault_bundled_policies::BundledPolicy {
            name: "python-allow-listed-owners",
            component: bytes,
            cases: "",
        }
    });
    for b in modelvault_bundled_policies::BUNDLED
        .into_iter()
        .chain(python)
    {
        let is_bundled = !b.cases.is_empty();
        let compiled = Arc::new(host.compile(b.name, b.component).unwrap());
        for _ in 0..1000 {
            host.evaluate(&compiled, &req, &[]);
        }
        let fresh: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                let r = host.evaluate(&compiled, &req, &[]);
                std::hint::black_box(r);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let mut reused = host.instantiate_reused(&compiled).unwrap();
        let floor: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                let r = reused.evaluate(&req, &[]).unwrap();
                std::hint::black_box(r);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let (fm, fp) = percentiles(fresh);
        let (rm, rp) = percentiles(floor);
        println!(
            "{:<26} fresh median {fm:6.1} p99 {fp:6.1} | reused median {rm:6.1} p99 {rp:6.1} | fresh/floor {:.2} (goal <= 3)",
            b.name,
            fm / rm
        );
        if is_bundled {
            chain.push(ChainEntry {
                policy: compiled,
                shadow: false,
                config: vec![],
            });
        }
    }
    let times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            let d = host.evaluate_chain(&chain, &req);
            std::hint::black_box(d);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (m, p) = percentiles(times);
    println!("{:<26} fresh median {m:6.1} p99 {p:6.1}", "chain of three");
}
