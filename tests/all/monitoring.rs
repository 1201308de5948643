//! Metrics and alerts: `/metrics` in Prometheus text, no per-principal
//! labels; alert rules firing as audit records, metrics and HMAC-signed
//! webhook posts seen by a local receiver; checkpoints shipped there too.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::sync::mpsc;

use serde_json::Value;

use crate::common::*;

/// One received POST: lower-cased headers and the body.
type Post = (Vec<(String, String)>, Vec<u8>);

/// A one-thread HTTP receiver: every POST's headers and body.
fn receiver() -> (String, mpsc::Receiver<Post>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send((headers, body));
        }
    });
    (url, rx)
}

#[test]
fn alerts_reach_the_webhook_signed_and_metrics_are_exported() {
    let (url, posts) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.key");
    std::fs::write(&secret, b"hook-secret-123").unwrap();
    let app = TestApp::start_configured(None, |t| {
        t.push_str(&format!(
            "\n[alerts]\nwebhook_url = \"{url}\"\nwebhook_secret_file = \"{}\"\nfailed_auth_threshold = 3\ndenial_threshold = 2\nwindow_secs = 60\n",
            secret.display()
        ))
    });
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let auditor = app.token("audrey", &["auditor"], &["*"]);
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "create",
            "nlp/secret",
            "--sensitivity",
            "restricted",
        ],
    ));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/secret@1", src.path().to_str().unwrap()],
    ));
    let file = "/v1/models/nlp/secret/versions/1/files/w";
    // Restricted model from dev, unapproved: an alert (and a policy denial).
    assert_eq!(app.get(Some(&ds), file).status(), 403);
    // Denials of one principal: more than 2.
    for _ in 0..3 {
        assert_eq!(app.get(Some(&auditor), file).status(), 403);
    }
    // Failed authentications from one source: more than 3.
    for _ in 0..4 {
        assert_eq!(
            app.get(
                Some("mv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                "/v1/whoami"
            )
            .status(),
            401
        );
    }
    // A policy removal.
    ok(app.cli(Some(&app.admin), &["policy", "remove", "approval-gate"]));
    // A checkpoint (signed by verify) is shipped too.
    ok(app.cli(Some(&auditor), &["audit", "verify"]));

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"hook-secret-123");
    let mut rules = std::collections::BTreeSet::new();
    let mut checkpoint = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while (rules.len() < 4 || !checkpoint) && std::time::Instant::now() < deadline {
        let Ok((headers, body)) = posts.recv_timeout(std::time::Duration::from_secs(1)) else {
            continue;
        };
        let sig = headers
            .iter()
            .find(|(k, _)| k == "x-modelvault-signature")
            .map(|(_, v)| v.clone())
            .expect("signed");
        let mac = hex::decode(sig.strip_prefix("sha256=").unwrap()).unwrap();
        ring::hmac::verify(&key, &body, &mac).expect("signature verifies");
        let v: Value = serde_json::from_slice(&body).unwrap();
        match v["type"].as_str() {
            Some("alert") => {
                rules.insert(v["rule"].as_str().unwrap().to_string());
            }
            _ if v["signature"].is_string() && v["head"].is_string() => checkpoint = true,
            _ => {}
        }
    }
    let want: std::collections::BTreeSet<String> = [
        "denials",
        "failed-authentications",
        "policy-change",
        "restricted-outside-approved",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(rules, want);
    assert!(checkpoint, "no checkpoint shipped");

    // Each alert is an audit record.
    let records: Vec<Value> =
        ok(app.cli(Some(&auditor), &["audit", "export", "--outcome", "fired"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let recorded: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| r["type"] == "alert")
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded, want);

    // Metrics: loopback needs no token; the families are there; no
    // principal or token appears in any label.
    let r = app.get(None, "/metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    for needle in [
        "modelvault_http_requests_total{",
        "modelvault_auth_failures_total{reason=\"invalid_token\"} 4",
        "modelvault_policy_decisions_total{plugin=\"sensitivity-environment\",outcome=\"deny\"}",
        "modelvault_policy_chain_seconds_bucket",
        "modelvault_bytes_served_total",
        "modelvault_key_releases_total",
        "modelvault_audit_write_seconds_bucket",
        "modelvault_audit_backlog",
        "modelvault_alerts_total{rule=\"policy-change\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    for who in ["dana", "audrey", "127.0.0.1", "nlp/secret", "\"admin\""] {
        assert!(!text.contains(who), "{who} in metrics");
    }
}

#[test]
fn metrics_behind_a_bearer_token_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("metrics.token");
    std::fs::write(&token, "scrape-me\n").unwrap();
    let app = TestApp::start_configured(None, |t| {
        t.push_str(&format!(
            "\n[metrics]\nbearer_token_file = \"{}\"\n",
            token.display()
        ))
    });
    assert_eq!(app.get(None, "/metrics").status(), 401);
    assert_eq!(app.get(Some("wrong"), "/metrics").status(), 401);
    let r = app.get(Some("scrape-me"), "/metrics");
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("modelvault_audit_backlog"));
}

/// `/readyz` checks what a load balancer needs to know: the policies are
/// loaded, the store answers and the key provider verifies the store's
/// marker. Each failure is named; the server recovers when the cause goes.
#[test]
fn readiness_checks_the_store_and_the_key_provider() {
    let app = TestApp::start();
    let ready = |url: &str| {
        let r = reqwest::blocking::get(format!("{url}/readyz")).unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap())
    };
    let (s, body) = ready(&app.url);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["checks"]["store"], "ok", "{body}");
    assert_eq!(body["checks"]["keys"], "ok", "{body}");
    assert_eq!(body["checks"]["policies"], "ready", "{body}");

    // The store's marker is gone (wrong bucket, lost data): not ready.
    let marker = app.data_dir().join("store").join("modelvault.json");
    let kept = std::fs::read(&marker).unwrap();
    std::fs::remove_file(&marker).unwrap();
    let (s, body) = ready(&app.url);
    assert_eq!(
        (s, body["status"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    assert_eq!(body["checks"]["store"], "not_initialized", "{body}");

    // A marker that does not verify (another key provider's store, or a
    // forged one): the key provider is named.
    let mut forged = kept.clone();
    let at = forged.iter().position(|&b| b == b'2').unwrap();
    forged[at] = b'3';
    std::fs::write(&marker, &forged).unwrap();
    let (s, body) = ready(&app.url);
    assert_eq!(
        (s, body["status"].as_str()),
        (503, Some("key_provider_unavailable")),
        "{body}"
    );
    assert_eq!(body["checks"]["keys"], "mismatch", "{body}");

    // Put back: ready again, without a restart.
    std::fs::write(&marker, &kept).unwrap();
    let (s, body) = ready(&app.url);
    assert_eq!(s, 200, "{body}");
}

/// Logs are JSON lines when stderr is not a terminal (a container, the
/// journal, a pipe), each with a time, a level and a message; a bad
/// MODELVAULT_LOG_FORMAT is refused at start.
#[test]
fn logs_are_json_lines_off_a_terminal() {
    use std::io::BufRead as _;
    let app = TestApp::start();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(app.data_dir())
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("MODELVAULT_LOG_FORMAT")
        .env("MODELVAULT_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let done = line.contains("listening on ");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        assert!(v["message"].is_string(), "{l}");
    }
    assert!(
        lines
            .last()
            .unwrap()
            .contains("\"message\":\"modelvault listening on http://127.0.0.1:")
    );
    let bad = std::process::Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(app.data_dir())
        .args(["--listen", "127.0.0.1:0"])
        .env("MODELVAULT_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("MODELVAULT_LOG_FORMAT"));
}
