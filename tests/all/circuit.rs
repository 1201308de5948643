//! The circuit breaker and the evaluation threads, with the hostile test
//! plugin looping (`hostile=loop`): a plugin that keeps timing out is
//! short-circuited (enforcing: denied with `plugin.circuit-open`; shadow:
//! skipped), with a metric and an alert, and probed again after its
//! cool-down; evaluations run on a bounded number of threads, and metadata
//! reads never wait for them.

use crate::common::*;
use crate::hostile::plugins_dir;

/// The value of the metric line that starts with `series` (name and
/// labels), if exported.
fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = app.get(None, "/metrics").text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A server whose breaker opens after 3 failures and probes after 2 s.
fn start_with_breaker(extra: &str) -> TestApp {
    let extra = extra.to_string();
    TestApp::start_configured(None, move |cfg| {
        let section =
            "[policy.circuit_breaker]\nfailures = 5\nwindow_secs = 60\ncooldown_secs = 30\n";
        assert!(cfg.contains(section), "{cfg}");
        *cfg = cfg.replace(
            section,
            "[policy.circuit_breaker]\nfailures = 3\nwindow_secs = 60\ncooldown_secs = 2\n",
        );
        cfg.push_str(&extra);
    })
}

/// Models `nlp/h-loop` (makes the hostile plugin loop) and `nlp/benign`,
/// one file `w` each.
fn loop_and_benign_models(app: &TestApp, token: &str) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    for (name, tag) in [("h-loop", Some("hostile=loop")), ("benign", None)] {
        let model = format!("nlp/{name}");
        let mut args = vec!["model", "create", model.as_str()];
        if let Some(t) = tag {
            args.extend(["--tag", t]);
        }
        ok(app.cli(Some(token), &args));
        ok(app.cli(
            Some(token),
            &["push", &format!("{model}@1"), src.path().to_str().unwrap()],
        ));
    }
}

const LOOP_FILE: &str = "/v1/models/nlp/h-loop/versions/1/files/w";
const BENIGN_FILE: &str = "/v1/models/nlp/benign/versions/1/files/w";

#[test]
fn a_looping_enforcing_plugin_trips_its_circuit_and_recovers() {
    let dir = plugins_dir();
    let app = start_with_breaker("");
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    loop_and_benign_models(&app, &alice);
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "hostile",
            dir.join("hostile.wasm").to_str().unwrap(),
        ],
    ));
    let denied = |path: &str| {
        let (s, c, body) = error_code(app.get(Some(&alice), path));
        assert_eq!((s, c.as_str()), (403, "policy_denied"), "{body}");
        assert_eq!(body["error"]["plugin"], "hostile", "{body}");
        (
            body["error"]["reason_code"].as_str().unwrap().to_string(),
            body["error"]["message"].as_str().unwrap().to_string(),
        )
    };
    // Closed at the first evaluation.
    assert_eq!(app.get(Some(&alice), BENIGN_FILE).status(), 200);
    assert_eq!(
        metric(&app, "modelvault_policy_circuit_state{plugin=\"hostile\"}"),
        Some(0.0)
    );
    // Three timeouts open the circuit.
    for _ in 0..3 {
        assert_eq!(denied(LOOP_FILE).0, "plugin.timeout");
    }
    assert_eq!(
        metric(&app, "modelvault_policy_circuit_state{plugin=\"hostile\"}"),
        Some(2.0)
    );
    // Open: the enforcing plugin is not run and denies every request it
    // covers, the benign ones too (fail closed), naming the circuit.
    let (code, message) = denied(LOOP_FILE);
    assert_eq!(code, "plugin.circuit-open");
    assert!(message.contains("plugin hostile"), "{message}");
    assert_eq!(denied(BENIGN_FILE).0, "plugin.circuit-open");
    assert_eq!(
        metric(
            &app,
            "modelvault_policy_short_circuits_total{plugin=\"hostile\",mode=\"enforce\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &app,
            "modelvault_alerts_total{rule=\"policy-circuit-open\"}"
        ),
        Some(1.0)
    );
    wait_for_log(&app.log, 0, "policy-circuit-open");
    // After the cool-down one probe runs; it loops again: open again.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(denied(LOOP_FILE).0, "plugin.timeout");
    assert_eq!(denied(BENIGN_FILE).0, "plugin.circuit-open");
    assert_eq!(
        metric(&app, "modelvault_policy_circuit_state{plugin=\"hostile\"}"),
        Some(2.0)
    );
    // The next probe behaves: closed again, the plugin decides again.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(app.get(Some(&alice), BENIGN_FILE).status(), 200);
    assert_eq!(
        metric(&app, "modelvault_policy_circuit_state{plugin=\"hostile\"}"),
        Some(0.0)
    );
    for (state, n) in [("open", 2.0), ("half-open", 2.0), ("closed", 1.0)] {
        assert_eq!(
            metric(
                &app,
                &format!(
                    "modelvault_policy_circuit_transitions_total{{plugin=\"hostile\",state=\"{state}\"}}"
                )
            ),
            Some(n),
            "{state}"
        );
    }
    assert_eq!(app.get(Some(&alice), BENIGN_FILE).status(), 200);
    assert_eq!(denied(LOOP_FILE).0, "plugin.timeout");
    // One alert per opening from closed, not per failed probe.
    assert_eq!(
        metric(
            &app,
            "modelvault_alerts_total{rule=\"policy-circuit-open\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn a_looping_shadow_plugin_is_skipped_while_its_circuit_is_open() {
    let dir = plugins_dir();
    let app = start_with_breaker("");
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    loop_and_benign_models(&app, &alice);
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "hostile",
            dir.join("hostile.wasm").to_str().unwrap(),
            "--shadow",
        ],
    ));
    // A shadow plugin never decides: allowed while it times out ...
    for _ in 0..3 {
        assert_eq!(app.get(Some(&alice), LOOP_FILE).status(), 200);
    }
    assert_eq!(
        metric(&app, "modelvault_policy_circuit_state{plugin=\"hostile\"}"),
        Some(2.0)
    );
    // ... and while it is skipped.
    for _ in 0..2 {
        assert_eq!(app.get(Some(&alice), LOOP_FILE).status(), 200);
    }
    assert_eq!(
        metric(
            &app,
            "modelvault_policy_short_circuits_total{plugin=\"hostile\",mode=\"shadow\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &app,
            "modelvault_alerts_total{rule=\"policy-circuit-open\"}"
        ),
        Some(1.0)
    );
    wait_for_log(&app.log, 0, "plugin.circuit-open");
    // After the cool-down a behaving probe closes it.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(app.get(Some(&alice), BENIGN_FILE).status(), 200);
    assert_eq!(
        metric(&app, "modelvault_policy_circuit_state{plugin=\"hostile\"}"),
        Some(0.0)
    );
}

#[test]
fn policy_evaluations_are_bounded_and_metadata_never_waits_for_them() {
    let dir = plugins_dir();
    // One evaluation thread, the breaker off, a 600 ms time limit.
    let app = TestApp::start_configured(None, |cfg| {
        for (from, to) in [
            ("evaluation_threads = 0", "evaluation_threads = 1"),
            ("failures = 5", "failures = 0"),
            ("timeout_ms = 250", "timeout_ms = 600"),
        ] {
            assert!(cfg.contains(from), "{cfg}");
            *cfg = cfg.replace(from, to);
        }
    });
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    loop_and_benign_models(&app, &alice);
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "hostile",
            dir.join("hostile.wasm").to_str().unwrap(),
            "--shadow",
        ],
    ));
    // Four looping decisions at once take one thread in turn: at least
    // four time limits.
    let started = std::time::Instant::now();
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (url, alice) = (app.url.clone(), alice.clone());
            std::thread::spawn(move || {
                reqwest::blocking::Client::new()
                    .get(format!("{url}{LOOP_FILE}"))
                    .bearer_auth(alice)
                    .send()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    // Meanwhile metadata reads and health checks are answered without
    // waiting for any of them.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut slowest = std::time::Duration::ZERO;
    let mut waiting = 0f64;
    for path in [
        "/healthz",
        "/v1/whoami",
        "/v1/models/nlp/h-loop",
        "/v1/models/nlp/h-loop/versions",
        "/v1/models/nlp/h-loop/versions/1",
        "/v1/models?namespace=nlp",
        "/healthz",
    ] {
        let t = std::time::Instant::now();
        let token = (path != "/healthz").then_some(alice.as_str());
        assert_eq!(app.get(token, path).status(), 200, "{path}");
        slowest = slowest.max(t.elapsed());
        waiting =
            waiting.max(metric(&app, "modelvault_policy_evaluations_waiting").unwrap_or_default());
    }
    for l in loops {
        assert_eq!(l.join().unwrap(), 200);
    }
    let all = started.elapsed();
    assert!(
        all >= std::time::Duration::from_millis(4 * 600),
        "four looping evaluations ran at once: {all:?}"
    );
    assert!(waiting >= 1.0, "no decision waited for the one thread");
    assert!(
        slowest < std::time::Duration::from_millis(600),
        "a metadata request took {slowest:?}, as long as a policy evaluation"
    );
}
