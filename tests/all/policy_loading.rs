//! Loading policy components without stalling the server: it listens at
//! once and reports readiness while its policies compile, holds compiled
//! components only while they are installed, and refuses components that
//! would compile for too long, quickly, while serving everything else.
//!
//! Slow components are made here: a real policy (a bundled component) with
//! one more core module appended, defined and never instantiated (wasmtime
//! compiles it all the same), whose functions have many locals and many
//! `if`s that write them, the shape that makes cranelift slow.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;

fn leb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A core module of `funcs` functions, each with `locals` i64 locals and
/// `ifs` `if` blocks that each write a local.
fn heavy_module(funcs: u32, locals: u32, ifs: u32) -> Vec<u8> {
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut out);
    let mut f = Vec::new();
    leb(u64::from(funcs), &mut f);
    f.extend(std::iter::repeat_n(0, funcs as usize));
    section(3, &f, &mut out);
    let mut code = Vec::new();
    leb(u64::from(funcs), &mut code);
    let l = u64::from(locals.max(1));
    for _ in 0..funcs {
        let mut body = vec![1];
        leb(u64::from(locals), &mut body);
        body.push(0x7e); // i64
        for i in 0..u64::from(ifs) {
            // local.get a; i32.wrap_i64; if; local.get b; local.get c;
            // i64.add; local.set d; end
            body.push(0x20);
            leb((i * 5 + 2) % l, &mut body);
            body.extend([0xa7, 0x04, 0x40, 0x20]);
            leb((i * 7) % l, &mut body);
            body.push(0x20);
            leb((i * 13 + 1) % l, &mut body);
            body.extend([0x7c, 0x21]);
            leb((i * 31 + 3) % l, &mut body);
            body.push(0x0b);
        }
        body.push(0x0b);
        leb(body.len() as u64, &mut code);
        code.extend(body);
    }
    section(10, &code, &mut out);
    out
}

/// `component` with `module` appended as one more core module and a custom
/// section carrying `salt` (a new revision: another hash).
fn with_module(component: &[u8], module: &[u8], salt: &str) -> Vec<u8> {
    let mut out = component.to_vec();
    section(1, module, &mut out);
    let mut custom = Vec::new();
    leb(4, &mut custom);
    custom.extend_from_slice(b"salt");
    custom.extend_from_slice(salt.as_bytes());
    section(0, &custom, &mut out);
    out
}

fn bundled(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../modelvault-bundled-policies/bundled")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A real policy whose compile takes seconds (4 to 13 s for two
/// functions on a 2-core machine, idle to busy), within every code bound.
fn slow_policy(file: &str, salt: &str, funcs: u32) -> Vec<u8> {
    with_module(&bundled(file), &heavy_module(funcs, 190, 10_000), salt)
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A gauge of `/metrics` at `url`.
fn gauge(url: &str, name: &str) -> Option<i64> {
    let text = reqwest::blocking::get(format!("{url}/metrics"))
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn status(url: &str, token: Option<&str>, path: &str) -> (u16, String, serde_json::Value) {
    let mut rb = reqwest::blocking::Client::new().get(format!("{url}{path}"));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    error_code(rb.send().unwrap())
}

/// Alice, a model `nlp/m@1` with one file, and the file's path.
fn alice_with_a_model(app: &TestApp) -> (String, &'static str) {
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&alice), &["model", "create", "nlp/m"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/m@1", src.path().to_str().unwrap()],
    ));
    (alice, "/v1/models/nlp/m/versions/1/files/w")
}

fn clear_compile_cache(app: &TestApp) {
    for f in walk(&app.data_dir().join("policy-cache")) {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn the_server_listens_and_reports_loading_while_its_policies_compile() {
    let app = TestApp::start_configured(None, |cfg| {
        assert!(cfg.contains("load_wait_ms = 2000"), "{cfg}");
        *cfg = cfg.replace("load_wait_ms = 2000", "load_wait_ms = 200");
    });
    let (alice, file) = alice_with_a_model(&app);
    assert_eq!(app.get(Some(&alice), file).status(), 200);
    assert_eq!(app.get(None, "/readyz").status(), 200);
    // An enforcing policy that compiles for seconds: a new revision of
    // sensitivity-environment (same logic, same configuration).
    let dir = tempfile::tempdir().unwrap();
    let slow = write(
        &dir,
        "slow.wasm",
        &slow_policy("sensitivity_environment.wasm", "enforcing", 2),
    );
    let started = Instant::now();
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "sensitivity-environment",
            slow.to_str().unwrap(),
        ],
    ));
    let compile = started.elapsed();
    eprintln!("install with its compile took {compile:?}");
    assert_eq!(app.get(Some(&alice), file).status(), 200);

    // A second server over the same store, with nothing compiled on disk.
    clear_compile_cache(&app);
    let started = Instant::now();
    let peer = app.start_peer();
    let listening = started.elapsed();
    eprintln!("the second server listened after {listening:?}");
    // Loading: not ready, policy-checked requests get a 503 after a short
    // wait (never a decision without the enforcing policy), while health,
    // metadata and metrics are served.
    let (s, body) = {
        let r = reqwest::blocking::get(format!("{}/readyz", peer.url)).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("loading"), "{body}");
    let t = Instant::now();
    let (s, code, body) = status(&peer.url, Some(&alice), file);
    assert_eq!((s, code.as_str()), (503, "policies_loading"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(status(&peer.url, None, "/healthz").0, 200);
    let (s, _, body) = status(&peer.url, Some(&alice), "/v1/models/nlp/m");
    assert_eq!(s, 200, "{body}");
    assert!(gauge(&peer.url, "modelvault_policy_components_compiling").unwrap_or(0) >= 1);
    // Then ready, and deciding.
    let deadline = Instant::now() + Duration::from_secs(300);
    while status(&peer.url, None, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("the second server was ready after {:?}", started.elapsed());
    let (s, _, body) = status(&peer.url, Some(&alice), file);
    assert_eq!(s, 200, "{body}");
    assert!(
        listening < compile,
        "listened after {listening:?}, a compile takes {compile:?}"
    );
}

#[test]
fn a_slow_compile_stalls_neither_readiness_nor_other_reloads() {
    let app = TestApp::start_configured(None, |cfg| {
        *cfg = cfg.replace("refresh_secs = 10", "refresh_secs = 1");
    });
    let (alice, file) = alice_with_a_model(&app);
    // A shadow policy that compiles for longer than the server takes to
    // get ready and apply a removal.
    let dir = tempfile::tempdir().unwrap();
    let slow = write(
        &dir,
        "slow.wasm",
        &slow_policy("approval_gate.wasm", "shadow", 4),
    );
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "watch",
            slow.to_str().unwrap(),
            "--shadow",
        ],
    ));
    clear_compile_cache(&app);
    let peer = app.start_peer();
    // Ready as soon as the enforcing policies compiled, the shadow one
    // still compiling.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&peer.url, None, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status(&peer.url, Some(&alice), file).0, 200);
    assert_eq!(
        gauge(&peer.url, "modelvault_policy_components_compiling"),
        Some(1),
        "the shadow policy should still be compiling"
    );
    // Another server removes the only allowing policy: this one applies it
    // within its refresh interval, the shadow compile notwithstanding.
    ok(app.cli(
        Some(&app.admin),
        &["policy", "remove", "sensitivity-environment"],
    ));
    let removed = Instant::now();
    let mut body = serde_json::Value::Null;
    while removed.elapsed() < Duration::from_secs(5) {
        let (s, _, b) = status(&peer.url, Some(&alice), file);
        if s == 403 {
            body = b;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(body["error"]["reason_code"], "policy.no-allow", "{body}");
    assert_eq!(
        gauge(&peer.url, "modelvault_policy_components_compiling"),
        Some(1),
        "the removal applied only after the shadow compile"
    );
}

#[test]
fn a_component_too_costly_to_compile_is_refused_at_once_while_others_are_served() {
    let app = TestApp::start();
    let (alice, file) = alice_with_a_model(&app);
    // Four functions of 1,000 locals and 30,000 ifs: many minutes of
    // cranelift.
    let dir = tempfile::tempdir().unwrap();
    let huge = write(
        &dir,
        "huge.wasm",
        &with_module(
            &bundled("approval_gate.wasm"),
            &heavy_module(4, 1000, 30_000),
            "huge",
        ),
    );
    let url = app.url.clone();
    let admin = app.admin.clone();
    let started = Instant::now();
    let install = std::thread::spawn(move || {
        cli(
            &url,
            Some(&admin),
            &["policy", "install", "huge", huge.to_str().unwrap()],
        )
    });
    // Meanwhile everything else is served.
    let mut served = 0;
    while !install.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the install still runs after a minute"
        );
        assert_eq!(app.get(Some(&alice), file).status(), 200);
        assert_eq!(app.get(Some(&alice), "/v1/models/nlp/m").status(), 200);
        served += 1;
    }
    let took = started.elapsed();
    let err = fails(install.join().unwrap(), "invalid_policy");
    eprintln!("refused after {took:?} ({served} rounds of requests served meanwhile): {err}");
    assert!(err.contains("too costly to compile"), "{err}");
    assert!(err.contains("max_function_complexity"), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Not installed.
    let listed = ok(app.cli(Some(&app.admin), &["policy", "list", "--output", "json"]));
    assert!(!listed.contains("\"huge\""), "{listed}");
}

#[test]
fn a_compile_over_its_time_budget_is_refused_while_others_are_served() {
    let app = TestApp::start_configured(None, |cfg| {
        assert!(cfg.contains("compile_timeout_ms = 60000"), "{cfg}");
        *cfg = cfg.replace("compile_timeout_ms = 60000", "compile_timeout_ms = 1000");
    });
    let (alice, file) = alice_with_a_model(&app);
    let dir = tempfile::tempdir().unwrap();
    let slow = write(
        &dir,
        "slow.wasm",
        &slow_policy("approval_gate.wasm", "budget", 2),
    );
    let url = app.url.clone();
    let admin = app.admin.clone();
    let started = Instant::now();
    let install = std::thread::spawn(move || {
        cli(
            &url,
            Some(&admin),
            &["policy", "install", "slow", slow.to_str().unwrap()],
        )
    });
    while !install.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the install still runs after a minute"
        );
        assert_eq!(app.get(Some(&alice), file).status(), 200);
        assert_eq!(app.get(Some(&alice), "/v1/models/nlp/m").status(), 200);
    }
    let took = started.elapsed();
    let err = fails(install.join().unwrap(), "invalid_policy");
    eprintln!("refused after {took:?}: {err}");
    assert!(err.contains("budget of 1000 ms"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let listed = ok(app.cli(Some(&app.admin), &["policy", "list", "--output", "json"]));
    assert!(!listed.contains("\"slow\""), "{listed}");
}

#[test]
fn compiled_components_are_released_when_removed_or_replaced() {
    let app = TestApp::start();
    let compiled = || gauge(&app.url, "modelvault_policy_components_compiled");
    assert_eq!(compiled(), Some(3), "the bundled policies");
    let dir = tempfile::tempdir().unwrap();
    // Revisions of a small policy: one compiled component at a time.
    for rev in 0..3 {
        let c = with_module(
            &bundled("approval_gate.wasm"),
            &heavy_module(1, 1, 1),
            &format!("rev{rev}"),
        );
        let p = write(&dir, &format!("rev{rev}.wasm"), &c);
        ok(app.cli(
            Some(&app.admin),
            &[
                "policy",
                "install",
                "extra",
                p.to_str().unwrap(),
                "--shadow",
            ],
        ));
        assert_eq!(compiled(), Some(4), "after revision {rev}");
    }
    ok(app.cli(Some(&app.admin), &["policy", "remove", "extra"]));
    assert_eq!(compiled(), Some(3));

    // Memory: revisions of the Python example (a compile of hundreds of
    // MiB, about 30 MiB of code each), then its removal.
    let Some(py) = std::env::var("MODELVAULT_TEST_PY_POLICY")
        .ok()
        .filter(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("MODELVAULT_REQUIRE_EXAMPLES").as_deref() != Ok("1"),
            "MODELVAULT_TEST_PY_POLICY is not set or missing: run scripts/test.sh"
        );
        eprintln!("note: MODELVAULT_TEST_PY_POLICY not set; the memory part is skipped");
        return;
    };
    let py = std::fs::read(py).unwrap();
    // Settle, then the baseline.
    for _ in 0..3 {
        let _ = app.get(None, "/healthz");
    }
    let baseline = app.rss_kib();
    let mut peak = baseline;
    for rev in 0..3 {
        let mut c = py.clone();
        let mut custom = Vec::new();
        leb(4, &mut custom);
        custom.extend_from_slice(b"salt");
        custom.extend_from_slice(format!("py{rev}").as_bytes());
        section(0, &custom, &mut c);
        let p = write(&dir, &format!("py{rev}.wasm"), &c);
        ok(app.cli(
            Some(&app.admin),
            &[
                "policy",
                "install",
                "allow-listed-owners",
                p.to_str().unwrap(),
                "--shadow",
            ],
        ));
        let rss = app.rss_kib();
        peak = peak.max(rss);
        eprintln!("RSS after Python revision {rev}: {} MiB", rss / 1024);
        assert_eq!(compiled(), Some(4), "after Python revision {rev}");
    }
    ok(app.cli(
        Some(&app.admin),
        &["policy", "remove", "allow-listed-owners"],
    ));
    assert_eq!(compiled(), Some(3));
    let after = app.rss_kib();
    eprintln!(
        "RSS: baseline {} MiB, peak {} MiB, after removal {} MiB",
        baseline / 1024,
        peak / 1024,
        after / 1024
    );
    // Measured: baseline 48 MiB, at most 84 MiB meanwhile, 60 MiB after
    // removal. Without releasing, three revisions held about 700 MiB more.
    assert!(
        after < baseline + 64 * 1024,
        "RSS {} MiB after removal, baseline {} MiB",
        after / 1024,
        baseline / 1024
    );
    assert!(
        peak < baseline + 256 * 1024,
        "RSS peaked at {} MiB, baseline {} MiB",
        peak / 1024,
        baseline / 1024
    );
}
