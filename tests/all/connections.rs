//! Hostile clients at the connection level: more idle connections than the
//! server may hold (or than it has file descriptors for), slow readers of
//! a download, and a request framed both by length and by chunks. Timing
//! bounds are generous (seconds); the failures they catch are unbounded
//! waits.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// Sets `key = value` in the `[server]` table of a config file's text.
fn set_server_key(config: &mut String, key: &str, value: &str) {
    let prefix = format!("{key} = ");
    let lines: Vec<String> = config
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut text = lines.join("\n") + "\n";
    if !text.contains(&format!("{prefix}{value}\n")) {
        text = text.replacen("[server]\n", &format!("[server]\n{prefix}{value}\n"), 1);
    }
    *config = text;
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Sends `request` on a new connection and reads until the server closes
/// it (or `within` passes); the raw answer and how long it took.
fn exchange(addr: &str, request: &[u8], within: Duration) -> (String, Duration) {
    let start = Instant::now();
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let mut s = match TcpStream::connect_timeout(&sock, within) {
        Ok(s) => s,
        Err(e) => return (format!("connect: {e}"), start.elapsed()),
    };
    s.set_read_timeout(Some(within)).unwrap();
    s.set_write_timeout(Some(within)).unwrap();
    if let Err(e) = s.write_all(request) {
        return (format!("write: {e}"), start.elapsed());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

/// `GET /healthz` on a new connection: whether it answered 200, and when.
fn healthz(addr: &str) -> (bool, Duration, String) {
    let (answer, took) = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    (answer.starts_with("HTTP/1.1 200"), took, answer)
}

/// Whether the server has closed `s` (EOF or reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut b = [0u8; 4096];
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Open sockets of a process (its listener and connections).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn idle_connections_beyond_the_limit_leave_healthz_answering_and_are_closed() {
    let app = TestApp::start_configured(None, |c| {
        set_server_key(c, "max_connections", "64");
        set_server_key(c, "header_read_timeout_secs", "2");
    });
    let addr = addr(&app.url);

    // Under the limit: a connection that sends nothing, one that sends half
    // a head, and one kept alive after a request are all closed after the
    // header read timeout (2 s), not before and not never.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut partial = TcpStream::connect(&addr).unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost:")
        .unwrap();
    let mut kept = TcpStream::connect(&addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    let mut reader = BufReader::new(kept.try_clone().unwrap());
    reader.read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let opened = Instant::now();
    for (name, s) in [
        ("silent", &mut silent),
        ("partial head", &mut partial),
        ("kept alive", &mut kept),
    ] {
        assert!(
            !closed_within(
                s,
                Duration::from_millis(800).saturating_sub(opened.elapsed())
            ),
            "{name} connection closed before the header read timeout"
        );
        assert!(
            closed_within(s, Duration::from_secs(8)),
            "{name} connection still open 8 s after the 2 s header read timeout"
        );
    }

    // Far more idle connections than the limit of 64.
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    for round in 0..5 {
        let (ok, took, answer) = healthz(&addr);
        assert!(ok, "round {round}: /healthz did not answer: {answer:?}");
        assert!(
            took < Duration::from_secs(2),
            "round {round}: /healthz took {took:?} with 200 idle connections open"
        );
    }
    let log = wait_for_log(&app.log, 0, "connection limit reached: 64 connections open");
    assert_eq!(
        log.matches("connection limit reached").count(),
        1,
        "the limit is reported once, not per connection:\n{log}"
    );
    // None of them outlives the header read timeout by much.
    let deadline = Instant::now() + Duration::from_secs(8);
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, deadline.saturating_duration_since(Instant::now())),
            "idle connection {i} still open 8 s later"
        );
    }
}

/// `modelvault serve` on a fresh data directory under a soft open-file
/// limit of `soft` and a hard one of `hard`.
struct Limited {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_with_open_files(data: &std::path::Path, soft: u32, hard: u32) -> Limited {
    let out = Command::new(BIN)
        .args(["init", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "init: {}", stderr(&out));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
        ))
        .arg(BIN)
        .args(["serve", "--data-dir", data.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("MODELVAULT_LOG", "info")
        .env("MODELVAULT_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("server did not start: {}", log.lock().unwrap()));
    Limited { child, url, log }
}

/// The case: 1,100 idle connections against a process whose soft
/// open-file limit is 256 (hard 1,024). The server raises the soft limit
/// to the hard one and keeps its connections below it, so `/healthz`
/// answers while they stay open.
#[test]
fn idle_connections_beyond_the_open_file_limit_leave_healthz_answering() {
    // This process holds the client side of every connection.
    let own = modelvault_server::conn::raise_open_file_limit().unwrap();
    assert!(
        own.hard >= 1024,
        "this test needs a hard open-file limit of at least 1024, not {}",
        own.hard
    );
    let clients = 1100.min(own.soft.saturating_sub(100));
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_open_files(&dir.path().join("data"), 256, 1024);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(
        files,
        ["1024", "1024"],
        "soft open-file limit not raised:\n{limits}"
    );
    let addr = addr(&server.url);
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..clients {
        if let Ok(s) = TcpStream::connect_timeout(&sock, Duration::from_millis(500)) {
            idle.push(s);
        }
    }
    for round in 0..5 {
        let (ok, took, answer) = healthz(&addr);
        assert!(
            ok,
            "round {round}: /healthz did not answer with {} idle connections: {answer:?}\n{}",
            idle.len(),
            server.log.lock().unwrap()
        );
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
    }
    wait_for_log(
        &server.log,
        0,
        "connection limit reached: 480 connections open",
    );
    drop(idle);
}

/// Twenty clients read a 32 MiB download at about 1 KB/s (nine hours
/// each). Other requests stay fast meanwhile, and the server lets go of the
/// readers instead of holding a connection, a blob file and a reader task
/// for each: at 1 KB/s a client frees too little of the socket buffers for
/// the server's next write to go through within the send timeout (3 s
/// here), and a write that makes no progress for that long ends the
/// connection.
#[test]
fn slow_readers_of_a_download_do_not_hold_the_server() {
    let app = TestApp::start_configured(None, |c| {
        set_server_key(c, "send_timeout_secs", "3");
    });
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&alice), &["model", "create", "nlp/big"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), vec![7u8; 32 << 20]).unwrap();
    std::fs::write(src.path().join("small"), b"small").unwrap();
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/big@1", src.path().to_str().unwrap()],
    ));
    let addr = addr(&app.url);
    let pid = app.pid();
    let baseline = open_sockets(pid);

    let request = format!(
        "GET /v1/models/nlp/big/versions/1/files/w HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alice}\r\n\r\n"
    );
    let start = Instant::now();
    let read_for = Duration::from_secs(6);
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            let request = request.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.write_all(request.as_bytes()).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut got = 0usize;
                let mut b = [0u8; 1024];
                while start.elapsed() < read_for {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                (s, got)
            })
        })
        .collect();

    let small = format!(
        "GET /v1/models/nlp/big/versions/1/files/small HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n"
    );
    let (mut peak, mut slowest) = (0, Duration::ZERO);
    while start.elapsed() < read_for {
        let (ok, took, answer) = healthz(&addr);
        assert!(ok, "/healthz: {answer:?}");
        assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
        slowest = slowest.max(took);
        let (answer, took) = exchange(&addr, small.as_bytes(), Duration::from_secs(10));
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("small"),
            "{answer:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "a small download took {took:?}"
        );
        slowest = slowest.max(took);
        peak = peak.max(open_sockets(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let readers: Vec<(TcpStream, usize)> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        readers.iter().all(|(_, got)| *got >= 1024),
        "a reader got nothing"
    );
    assert!(
        peak >= baseline + 20,
        "the readers never held the server ({baseline} sockets before, {peak} at most)"
    );
    // The clients still hold their sockets; the server must not.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now_open = open_sockets(pid);
    while now_open > baseline + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now_open = open_sockets(pid);
    }
    eprintln!(
        "slow readers: {baseline} sockets before, {peak} at most, {now_open} at {:?}; slowest other request {slowest:?}",
        start.elapsed()
    );
    assert!(
        now_open <= baseline + 2,
        "slow readers still held: {now_open} sockets open, {baseline} before them"
    );
    drop(readers);
}

/// A CA and a certificate for 127.0.0.1 it signed, as files in `dir`:
/// (CA PEM, certificate path, key path).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        ca.pem(),
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

/// The same bounds over TLS: a client that never starts the handshake is
/// dropped after the header read timeout, an idle HTTP/2 connection after
/// the idle timeout, and `/healthz` answers with more idle connections
/// open than the limit.
#[test]
fn tls_connections_have_the_same_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let app = TestApp::start_full(
        None,
        |c| {
            set_server_key(c, "max_connections", "64");
            set_server_key(c, "header_read_timeout_secs", "2");
            set_server_key(c, "idle_timeout_secs", "3");
        },
        &["--tls-cert".into(), cert, "--tls-key".into(), key],
    );
    let addr = app.url.trim_start_matches("https://").to_string();
    let client = || {
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let pid = app.pid();
    let baseline = open_sockets(pid);

    // HTTP/2 by ALPN; the client keeps the connection, the server closes
    // it once it has been idle for 3 s.
    let kept = client();
    let resp = kept.get(format!("{}/healthz", app.url)).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let served = Instant::now();
    assert!(
        open_sockets(pid) > baseline,
        "no connection held after a request"
    );
    while open_sockets(pid) > baseline && served.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let idle_for = served.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(10)).contains(&idle_for),
        "the idle HTTP/2 connection was closed after {idle_for:?} (idle timeout 3 s)"
    );

    // A client that never says hello.
    let mut silent = TcpStream::connect(&addr).unwrap();
    assert!(!closed_within(&mut silent, Duration::from_millis(800)));
    assert!(
        closed_within(&mut silent, Duration::from_secs(8)),
        "a connection with no TLS handshake still open 8 s after the 2 s timeout"
    );

    let _idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    for round in 0..3 {
        let started = Instant::now();
        let resp = client().get(format!("{}/healthz", app.url)).send();
        let took = started.elapsed();
        assert!(
            resp.is_ok_and(|r| r.status() == 200),
            "round {round}: /healthz over TLS failed"
        );
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
    }
    drop(kept);
}

/// Request-smuggling hygiene: a request carrying both `Content-Length` and
/// `Transfer-Encoding` is refused with 400 and the JSON error body, in
/// either header order, first on a connection or after another request.
#[test]
fn a_request_with_both_content_length_and_transfer_encoding_gets_400() {
    let app = TestApp::start();
    let addr = addr(&app.url);
    let smuggled = [
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for prefix in ["", "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"] {
        for req in smuggled {
            let (answer, _) = exchange(
                &addr,
                format!("{prefix}{req}").as_bytes(),
                Duration::from_secs(10),
            );
            let refused = answer
                .find("HTTP/1.1 400")
                .unwrap_or_else(|| panic!("no 400 for {prefix:?}{req:?}: {answer:?}"));
            if !prefix.is_empty() {
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
            }
            // One 400 with the JSON error body, then the connection closes:
            // nothing after it is read as a request.
            let rest = &answer[refused..];
            assert_eq!(
                answer.matches("HTTP/1.1").count(),
                1 + usize::from(!prefix.is_empty()),
                "{answer:?}"
            );
            let body = &rest[rest.find("\r\n\r\n").unwrap() + 4..];
            let json: serde_json::Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("body {body:?} is not JSON: {e}"));
            assert_eq!(json["error"]["code"], "invalid_request", "{json}");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Content-Length and Transfer-Encoding"),
                "{json}"
            );
        }
    }
    // A chunked request alone, and one framed by its length, still work.
    for req in [
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        let (answer, _) = exchange(&addr, req.as_bytes(), Duration::from_secs(10));
        assert!(answer.starts_with("HTTP/1.1 401"), "{req:?}: {answer:?}");
    }
}

/// SIGTERM drains: a download in flight when the signal arrives finishes
/// byte-exact, a new request meanwhile is answered 503 `shutting_down`
/// with `Connection: close`, and the process exits once the download ends.
#[test]
fn sigterm_lets_a_download_in_flight_finish() {
    use std::io::Read as _;
    let app = TestApp::start();
    let ds = app.token("drain-ds", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/drain"]));
    let src = tempfile::tempdir().unwrap();
    let data = modelvault_test_utils::pseudo_random(24 << 20, 3);
    std::fs::write(src.path().join("big.bin"), &data).unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/drain@1", src.path().to_str().unwrap()],
    ));
    let mut resp = reqwest::blocking::Client::new()
        .get(format!(
            "{}/v1/models/nlp/drain/versions/1/files/big.bin",
            app.url
        ))
        .bearer_auth(&ds)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = vec![0u8; 1 << 20];
    resp.read_exact(&mut got).unwrap();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &app.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A new request while the download goes on: 503 shutting_down, and
    // the connection closes (a client retries elsewhere).
    let refused = reqwest::blocking::Client::new()
        .get(format!("{}/v1/models/nlp/drain", app.url))
        .bearer_auth(&ds)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["connection"], "close");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    resp.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the drained download is not byte-exact");
    // The process ends once the download is done (well within the grace).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::path::Path::new(&format!("/proc/{}/status", app.pid())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/status", app.pid()))
            .unwrap_or_default()
            .contains("State:\tZ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit after draining"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A client that stops sending a request body mid-way (an upload, a JSON
/// body) gets 408 `request_timeout` once nothing arrived for
/// `receive_timeout_secs` (2 s here), its connection is closed and nothing
/// of the upload is stored; a client that keeps sending, slowly, is not cut
/// off however long the whole body takes.
#[test]
fn a_client_that_stops_sending_gets_408_and_nothing_is_stored() {
    let app = TestApp::start_configured(None, |c| {
        set_server_key(c, "receive_timeout_secs", "2");
    });
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&alice), &["model", "create", "nlp/stall"]));
    let addr = addr(&app.url);
    let pid = app.pid();
    let baseline = open_sockets(pid);

    let upload = format!(
        "PUT /v1/models/nlp/stall/versions/1/files/w HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alice}\r\nContent-Length: 100000\r\n\r\n{}",
        "x".repeat(1000)
    );
    let json = format!(
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\": "
    );
    for (what, request) in [("upload", upload), ("JSON body", json)] {
        let start = Instant::now();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let took = start.elapsed();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer:?}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: body {body:?} is not JSON: {e}"));
        assert_eq!(v["error"]["code"], "request_timeout", "{what}: {v}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(15),
            "{what}: answered after {took:?}"
        );
    }
    // Nothing of the stalled upload was stored.
    let (answer, _) = exchange(
        &addr,
        format!("GET /v1/models/nlp/stall/versions/1/uploads HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
    assert_eq!(v["files"], serde_json::json!([]), "{answer:?}");

    // A slow but steady sender: 5 pieces 1 s apart (each gap under the
    // timeout, the whole body over it) is stored.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        format!("PUT /v1/models/nlp/stall/versions/1/files/slow HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alice}\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        s.write_all(&[b'y'; 1000]).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "slow sender: {answer:?}"
    );

    // The stalled connections were not kept.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now_open = open_sockets(pid);
    while now_open > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now_open = open_sockets(pid);
    }
    assert!(
        now_open <= baseline,
        "{now_open} sockets open, {baseline} before"
    );
}
