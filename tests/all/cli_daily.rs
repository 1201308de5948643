//! The CLI in daily use: exit codes scripts act on, pulled files readable
//! as the umask says, and a pull interrupted by a server restart continued
//! with Range from its partial file.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Runs the CLI under `sh` with a umask, against `url`.
fn cli_umask(url: &str, token: &str, umask: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .env("MODELVAULT_URL", url)
        .env("MODELVAULT_TOKEN", token);
    cmd.output().expect("cli")
}

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A loopback proxy that passes answers on at most `rate` bytes/s.
fn throttling_proxy(upstream: &str, rate: usize) -> String {
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_r, &mut s_w);
            });
            let (mut s_r, mut c_w) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s_r.read(&mut buf) {
                    if n == 0 || c_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
                }
                let _ = c_w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    url
}

fn wait_ready(url: &str) {
    let client = reqwest::blocking::Client::new();
    for _ in 0..600 {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} not ready");
}

#[test]
fn exit_codes_scripts_can_act_on() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w.bin"), vec![7u8; 200_000]).unwrap();
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/m@v1", src.path().to_str().unwrap()],
    ));
    ok(app.cli(
        Some(&ds),
        &["model", "create", "nlp/c", "--sensitivity", "confidential"],
    ));
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/c@v1", src.path().to_str().unwrap()],
    ));
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();

    // 2: usage.
    assert_eq!(code(&app.cli(Some(&ds), &["pull", "--no-such-flag"])), 2);
    // 3: not authenticated.
    let bad = app.cli(Some("mv_nope"), &["model", "show", "nlp/m"]);
    assert_eq!(code(&bad), 3, "{}", stderr(&bad));
    // 4: forbidden (the admin has no download permission) ...
    let f = app.cli(Some(&app.admin), &["pull", "nlp/m@v1", "-o", o]);
    assert_eq!(code(&f), 4, "{}", stderr(&f));
    // ... and a policy denial, with the plugin, the reason code and a hint.
    let d = app.cli(Some(&ds), &["pull", "nlp/c@v1", "-o", o]);
    assert_eq!(code(&d), 4, "{}", stderr(&d));
    let e = stderr(&d);
    assert!(
        e.contains("policy denied by sensitivity-environment")
            && e.contains("reason code sensitivity-environment.denied")
            && e.contains("hint:"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    // 5: not found.
    assert_eq!(code(&app.cli(Some(&ds), &["model", "show", "nlp/nope"])), 5);
    // 6: conflict (the version is committed, with other content).
    std::fs::write(src.path().join("other.bin"), b"other").unwrap();
    let c = app.cli(
        Some(&ds),
        &["push", "nlp/m@v1", src.path().to_str().unwrap()],
    );
    assert_eq!(code(&c), 6, "{}", stderr(&c));
    std::fs::remove_file(src.path().join("other.bin")).unwrap();
    // 7: gone (crypto-shredded).
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/m@doomed", src.path().to_str().unwrap()],
    ));
    ok(app.cli(Some(&app.admin), &["delete", "nlp/m@doomed", "--yes"]));
    let g = app.cli(Some(&ds), &["model", "show", "nlp/m@doomed"]);
    assert_eq!(code(&g), 7, "{}", stderr(&g));
    // 8: integrity (a stored blob edited in the bucket).
    let blob = walk(&app.store_dir().join("blobs/nlp/m/v1"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "mvf"))
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let i = app.cli(Some(&ds), &["pull", "nlp/m@v1", "-o", o, "--force"]);
    assert_eq!(code(&i), 8, "{}", stderr(&i));
    // 9: no server.
    let dead = cli("http://127.0.0.1:9", Some(&ds), &["model", "list"]);
    assert_eq!(code(&dead), 9, "{}", stderr(&dead));
    assert_eq!(stderr(&dead).trim_end().lines().count(), 1);
    // 0: fine.
    assert_eq!(code(&app.cli(Some(&ds), &["model", "list"])), 0);
}

#[test]
fn pulled_files_get_the_mode_the_umask_gives_or_mode() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/a.txt"), b"a").unwrap();
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/m@v1", src.path().to_str().unwrap()],
    ));
    for (umask, flag, want) in [
        ("022", None, 0o644),
        ("027", None, 0o640),
        ("022", Some("600"), 0o600),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec!["pull", "nlp/m@v1", "-o", out.path().to_str().unwrap()];
        if let Some(m) = flag {
            args.extend(["--mode", m]);
        }
        let o = cli_umask(&app.url, &ds, umask, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            mode(&out.path().join("sub/a.txt")),
            want,
            "umask {umask} flag {flag:?}"
        );
    }
    // The client-side pull too.
    let eng = app.token("eng", &["ml-engineer"], &["nlp"]);
    let out = tempfile::tempdir().unwrap();
    let o = cli_umask(
        &app.url,
        &eng,
        "022",
        &[
            "pull",
            "nlp/m@v1",
            "--client-side",
            "-o",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&out.path().join("sub/a.txt")), 0o644);
    let bad = app.cli(Some(&ds), &["pull", "nlp/m@v1", "--mode", "999"]);
    assert_eq!(code(&bad), 2);
}

#[test]
fn an_interrupted_pull_continues_after_a_server_restart() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..40u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(src.path().join("big.bin"), &data).unwrap();
    ok(app.cli(Some(&ds), &["model", "create", "nlp/big"]));
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/big@v1", src.path().to_str().unwrap()],
    ));
    let out = tempfile::tempdir().unwrap();
    // Slowed down, so the server is surely killed mid-file.
    let proxy = throttling_proxy(&app.url, 8 * 1024 * 1024);
    let mut pull = Command::new(BIN)
        .args(["pull", "nlp/big@v1", "-o", out.path().to_str().unwrap()])
        .env("MODELVAULT_URL", &proxy)
        .env("MODELVAULT_TOKEN", &ds)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let part = || {
        walk(out.path())
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".modelvault-part"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && part().is_none_or(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) < 4 << 20)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server dies mid-file.
    let killed = Command::new("kill")
        .args(["-9", &app.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = pull.wait().unwrap();
    let mut err = String::new();
    pull.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(9), "{err}");
    assert!(err.contains("run the same pull again"), "{err}");
    let kept = std::fs::metadata(part().expect("partial kept"))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < data.len() as u64, "{kept}");
    assert!(!out.path().join("big.bin").exists());

    // A new server over the same store; the same pull continues.
    let peer = app.start_peer();
    wait_ready(&peer.url);
    let again = cli(
        &peer.url,
        Some(&ds),
        &["pull", "nlp/big@v1", "-o", out.path().to_str().unwrap()],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("1 continued from a partial file"),
        "{}",
        stderr(&again)
    );
    assert!(std::fs::read(out.path().join("big.bin")).unwrap() == data);
    assert!(part().is_none(), "the partial file is gone");
    // The server saw a Range from where the first pull stopped.
    let audit = ok(cli(
        &peer.url,
        Some(&app.admin),
        &["audit", "export", "--action", "download"],
    ));
    let ranges: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "intent" && r["resource"]["model"] == "big")
        .map(|r| r["resource"]["range"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        ranges.iter().any(|r| r.starts_with(&format!("{kept}-"))),
        "{ranges:?} (kept {kept})"
    );
    // --force starts over and leaves no partial file.
    let forced = cli(
        &peer.url,
        Some(&ds),
        &[
            "pull",
            "nlp/big@v1",
            "-o",
            out.path().to_str().unwrap(),
            "--force",
        ],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(part().is_none());
}

#[test]
fn push_selects_files_and_follows_symlinks_only_when_asked() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    for (p, body) in [
        ("a.json", "{}"),
        ("notes.md", "n"),
        ("weights/w.bin", "w"),
        (".git/HEAD", "ref"),
        ("sub/__pycache__/x.pyc", "x"),
        ("sub/.DS_Store", "junk"),
    ] {
        std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
        std::fs::write(d.join(p), body).unwrap();
    }
    let dir = d.to_str().unwrap();
    let listed = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["push", "nlp/m@v1", dir, "--dry-run"];
        args.extend(extra);
        ok(app.cli(Some(&ds), &args))
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&[]), ["a.json", "notes.md", "weights/w.bin"]);
    assert_eq!(
        listed(&["--include", "*.json", "--include", "weights/**"]),
        ["a.json", "weights/w.bin"]
    );
    assert_eq!(listed(&["--exclude", "*.md"]), ["a.json", "weights/w.bin"]);
    assert_eq!(listed(&["--no-default-excludes"]).len(), 6);
    // A dry run uploads nothing.
    assert_eq!(code(&app.cli(Some(&ds), &["model", "show", "nlp/m@v1"])), 5);

    // A Hugging Face cache snapshot: its files are links into blobs/.
    let cache = tempfile::tempdir().unwrap();
    let blobs = cache.path().join("blobs");
    let snap = cache.path().join("snapshots/abc");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(snap.join("sub")).unwrap();
    std::fs::write(blobs.join("1111"), b"config").unwrap();
    std::fs::write(blobs.join("2222"), b"weights").unwrap();
    std::os::unix::fs::symlink("../../blobs/1111", snap.join("config.json")).unwrap();
    std::os::unix::fs::symlink("../../../blobs/2222", snap.join("sub/model.bin")).unwrap();
    let snap_s = snap.to_str().unwrap();
    let refused = app.cli(Some(&ds), &["push", "nlp/m@hf", snap_s]);
    assert_eq!(code(&refused), 1);
    assert!(
        stderr(&refused).contains("--follow-symlinks"),
        "{}",
        stderr(&refused)
    );
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/m@hf", snap_s, "--follow-symlinks"],
    ));
    let out = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/m@hf", "-o", out.path().to_str().unwrap()],
    ));
    assert_eq!(
        std::fs::read(out.path().join("config.json")).unwrap(),
        b"config"
    );
    assert_eq!(
        std::fs::read(out.path().join("sub/model.bin")).unwrap(),
        b"weights"
    );
}

#[test]
fn an_interrupted_push_uploads_only_what_is_missing() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    let src = tempfile::tempdir().unwrap();
    let files = [
        ("a.bin", vec![1u8; 300_000]),
        ("b.bin", vec![2u8; 1000]),
        ("c/d.bin", vec![3u8; 5000]),
    ];
    for (p, body) in &files {
        std::fs::create_dir_all(src.path().join(p).parent().unwrap()).unwrap();
        std::fs::write(src.path().join(p), body).unwrap();
    }
    // What an interrupted push left: two of the three files uploaded.
    let http = app.http();
    for (p, body) in &files[..2] {
        let r = http
            .put(format!("{}/v1/models/nlp/m/versions/v1/files/{p}", app.url))
            .bearer_auth(&ds)
            .body(body.clone())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let listed: serde_json::Value = http
        .get(format!("{}/v1/models/nlp/m/versions/v1/uploads", app.url))
        .bearer_auth(&ds)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["files"].as_array().unwrap().len(), 2, "{listed}");
    let o = app.cli(
        Some(&ds),
        &["push", "nlp/m@v1", src.path().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(3 files, 2 already uploaded by an earlier push)"),
        "{}",
        stderr(&o)
    );
    let audit = ok(app.cli(Some(&app.admin), &["audit", "export", "--action", "upload"]));
    let uploads = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["resource"]["model"] == "m")
        .count();
    assert_eq!(uploads, 3, "{audit}");
    let out = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/m@v1", "-o", out.path().to_str().unwrap()],
    ));
    for (p, body) in &files {
        assert_eq!(&std::fs::read(out.path().join(p)).unwrap(), body);
    }
    // A committed version has no draft to list.
    let r = http
        .get(format!("{}/v1/models/nlp/m/versions/v1/uploads", app.url))
        .bearer_auth(&ds)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
}

/// A loopback proxy in front of the real server that answers the first
/// `fail_first` connections with `503` and `Retry-After: 1`, breaks the
/// first forwarded answer longer than `cut_after` bytes, and counts the
/// `GET /v1/` requests it forwards.
struct FlakyProxy {
    url: String,
    gets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Whether an upload was cut off.
    put_cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn flaky_proxy(upstream: &str, fail_first: usize, cut_after: Option<usize>) -> FlakyProxy {
    flaky_proxy_full(upstream, fail_first, cut_after, None)
}

/// [`flaky_proxy`], that also breaks the first upload (`PUT`) after
/// `cut_put_after` bytes of it.
fn flaky_proxy_full(
    upstream: &str,
    fail_first: usize,
    cut_after: Option<usize>,
    cut_put_after: Option<usize>,
) -> FlakyProxy {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    let cut_done = Arc::new(AtomicBool::new(false));
    let put_cut = Arc::new(AtomicBool::new(false));
    let put_cut_seen = put_cut.clone();
    std::thread::spawn(move || {
        let mut failed = 0;
        for mut client in listener.incoming().map_while(Result::ok) {
            if failed < fail_first {
                failed += 1;
                let mut head = [0u8; 4096];
                let _ = client.read(&mut head);
                let _ = client.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let counter = counter.clone();
            let put_cut = put_cut.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut put_bytes: Option<usize> = None;
                while let Ok(n) = c_r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    counter.fetch_add(text.matches("GET /v1/").count(), Ordering::SeqCst);
                    if text.contains("PUT /v1/") && !put_cut.load(Ordering::SeqCst) {
                        put_bytes = Some(0);
                    }
                    if let (Some(seen), Some(limit)) = (put_bytes.as_mut(), cut_put_after) {
                        *seen += n;
                        if *seen > limit && !put_cut.swap(true, Ordering::SeqCst) {
                            let _ = s_w.shutdown(std::net::Shutdown::Both);
                            let _ = c_r.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                    if s_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            let (mut s_r, mut c_w) = (server, client);
            let cut_done = cut_done.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut sent = 0usize;
                while let Ok(n) = s_r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Some(limit) = cut_after
                        && sent + n > limit
                        && !cut_done.swap(true, Ordering::SeqCst)
                    {
                        let _ = c_w.write_all(&buf[..limit - sent]);
                        break;
                    }
                    if c_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = c_w.shutdown(std::net::Shutdown::Both);
                let _ = s_r.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    FlakyProxy {
        url,
        gets,
        put_cut: put_cut_seen,
    }
}

#[test]
fn idempotent_requests_are_retried_and_refusals_are_not() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..6u32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.path().join("w.bin"), &data).unwrap();
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/m@v1", src.path().to_str().unwrap()],
    ));

    // Two 503s with Retry-After, then the real server: the command succeeds.
    let p = flaky_proxy(&app.url, 2, None);
    let t = Instant::now();
    let o = cli(&p.url, Some(&ds), &["model", "show", "nlp/m@v1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );

    // A 404 is an answer, not a failure: asked once.
    let p = flaky_proxy(&app.url, 0, None);
    let o = cli(&p.url, Some(&ds), &["model", "show", "nlp/m@v9"]);
    assert_eq!(code(&o), 5);
    assert_eq!(p.gets.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A download that breaks off mid-file is continued in the same run.
    let p = flaky_proxy(&app.url, 0, Some(2 << 20));
    let out = tempfile::tempdir().unwrap();
    let o = cli(
        &p.url,
        Some(&ds),
        &["pull", "nlp/m@v1", "-o", out.path().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("w.bin")).unwrap() == data);
    assert!(
        stderr(&o).contains("1 continued from a partial file"),
        "{}",
        stderr(&o)
    );

    // A dead server: one clear line, exit 9, within the retry budget.
    let t = Instant::now();
    let dead = cli(
        "http://127.0.0.1:9",
        Some(&ds),
        &["--retries", "1", "--connect-timeout", "2", "model", "list"],
    );
    assert_eq!(code(&dead), 9);
    assert_eq!(
        stderr(&dead).trim_end().lines().count(),
        1,
        "{}",
        stderr(&dead)
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let bad = cli(
        &app.url,
        Some(&ds),
        &["--read-timeout", "0", "model", "list"],
    );
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));

    // An upload cut off mid-file is sent again, whole, in the same push.
    let p = flaky_proxy_full(&app.url, 0, None, Some(1 << 20));
    let big = tempfile::tempdir().unwrap();
    std::fs::write(big.path().join("w.bin"), &data).unwrap();
    let o = cli(
        &p.url,
        Some(&ds),
        &["push", "nlp/m@v2", big.path().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        p.put_cut.load(std::sync::atomic::Ordering::SeqCst),
        "the upload was cut"
    );
    let out = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &["pull", "nlp/m@v2", "-o", out.path().to_str().unwrap()],
    ));
    assert!(std::fs::read(out.path().join("w.bin")).unwrap() == data);
}

#[test]
fn reports_have_a_json_shape() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    let mm = app.token("mm", &["model-manager"], &["nlp"]);
    let eng = app.token("eng", &["ml-engineer"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.bin"), b"abc").unwrap();
    let s = src.path().to_str().unwrap();
    let json = |o: std::process::Output| -> serde_json::Value {
        let out = ok(o);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    let dry = json(app.cli(
        Some(&ds),
        &["push", "nlp/m@v1", s, "--dry-run", "--output", "json"],
    ));
    assert_eq!(dry, serde_json::json!([{"path": "a.bin", "size": 3}]));
    let pushed = json(app.cli(Some(&ds), &["push", "nlp/m@v1", s, "--output", "json"]));
    assert_eq!(pushed["version"], "v1");
    assert_eq!(pushed["files"][0]["path"], "a.bin");
    assert_eq!(pushed["files"][0]["size"], 3);
    assert_eq!(pushed["files"][0]["sha256"].as_str().unwrap().len(), 64);

    let out = tempfile::tempdir().unwrap();
    let pulled = json(app.cli(
        Some(&ds),
        &[
            "pull",
            "nlp/m@latest",
            "-o",
            out.path().to_str().unwrap(),
            "--output",
            "json",
        ],
    ));
    assert_eq!(pulled["version"], "v1");
    assert_eq!(pulled["output_dir"], out.path().to_str().unwrap());
    assert_eq!(pulled["files"][0]["continued"], false);
    assert_eq!(pulled["files"][0]["sha256"], pushed["files"][0]["sha256"]);

    // `model show` carries the newest versions (commit order, not name
    // order) and says when older ones exist; `--versions` chooses how many.
    for v in ["v3", "v2"] {
        ok(app.cli(Some(&ds), &["push", &format!("nlp/m@{v}"), s]));
    }
    let shown = json(app.cli(
        Some(&ds),
        &[
            "model",
            "show",
            "nlp/m",
            "--versions",
            "2",
            "--output",
            "json",
        ],
    ));
    let names: Vec<_> = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(names, ["v3", "v2"], "{shown}");
    assert_eq!(shown["older_versions"], true);
    let text = ok(app.cli(Some(&ds), &["model", "show", "nlp/m", "--versions", "2"]));
    assert!(
        text.contains("older versions not shown") && !text.contains("  v1  "),
        "{text}"
    );
    let all = json(app.cli(Some(&ds), &["model", "show", "nlp/m", "--output", "json"]));
    assert_eq!(all["versions"].as_array().unwrap().len(), 3);
    assert!(all.get("older_versions").is_none(), "{all}");
    let latest = json(app.cli(
        Some(&ds),
        &["model", "show", "nlp/m@latest", "--output", "json"],
    ));
    assert_eq!(latest["version"], "v2");
    let (status, code_, _) = error_code(app.get(Some(&ds), "/v1/models/nlp/m?versions=1001"));
    assert_eq!((status, code_.as_str()), (400, "invalid_request"));
    let too_many = app.cli(Some(&ds), &["model", "show", "nlp/m", "--versions", "1001"]);
    assert_eq!(code(&too_many), 2, "{}", stderr(&too_many));

    let approvals = json(app.cli(
        Some(&mm),
        &["approve", "nlp/m@v1", "--env", "dev", "--output", "json"],
    ));
    assert_eq!(approvals[0]["approver"], "mm");
    assert_eq!(approvals[0]["environment"], "dev");
    let deployed = json(app.cli(
        Some(&eng),
        &["deploy", "nlp/m@v1", "--env", "dev", "--output", "json"],
    ));
    assert_eq!(deployed["environment"], "dev");
    assert_eq!(deployed["version"], "v1");

    let token = ok(app.cli(
        Some(&app.admin),
        &[
            "token", "create", "--name", "t1", "--role", "auditor", "--output", "json",
        ],
    ));
    assert_eq!(token.trim_end().lines().count(), 1, "one stdout line");
    let token: serde_json::Value = serde_json::from_str(&token).unwrap();
    assert!(token["token"].as_str().unwrap().starts_with("mv_"));

    let job = json(app.cli(
        Some(&app.admin),
        &["keys", "rotate-kek", "--output", "json"],
    ));
    assert_eq!(job["kind"], "rotate-kek");
    assert_eq!(job["state"], "done");
    let deleted = json(app.cli(
        Some(&app.admin),
        &[
            "delete",
            "nlp/m@v1",
            "--yes",
            "--complete",
            "--output",
            "json",
        ],
    ));
    assert_eq!(deleted["deleted"], "nlp/m@v1");
    assert!(deleted["retired_kek_versions"].is_array(), "{deleted}");
    let status = json(app.cli(Some(&app.admin), &["keys", "status", "--output", "json"]));
    assert_eq!(status["provider"], "local-keyring");
}

#[test]
fn discoverability_hints_and_completions() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    let mm = app.token("mm", &["model-manager"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/ranker"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.bin"), b"a").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/ranker@v1", src.path().to_str().unwrap()],
    ));
    ok(app.cli(Some(&mm), &["approve", "nlp/ranker@v1", "--env", "dev"]));
    // A mistyped model name: the closest one the caller can see.
    let typo = app.cli(Some(&ds), &["model", "show", "nlp/rankr"]);
    assert_eq!(code(&typo), 5);
    assert!(
        stderr(&typo).contains("did you mean nlp/ranker?"),
        "{}",
        stderr(&typo)
    );
    assert_eq!(stderr(&typo).trim_end().lines().count(), 1);
    // A missing version points at @latest.
    let v = app.cli(Some(&ds), &["pull", "nlp/ranker@v9"]);
    assert_eq!(code(&v), 5);
    assert!(stderr(&v).contains("NS/NAME@latest"), "{}", stderr(&v));
    // An unknown role lists the valid ones.
    let r = app.cli(
        Some(&app.admin),
        &["token", "create", "--name", "x", "--role", "bogus"],
    );
    assert_eq!(code(&r), 2);
    assert!(
        stderr(&r).contains(
            "roles: admin, auditor, compliance-officer, data-scientist, ml-engineer, model-manager"
        ),
        "{}",
        stderr(&r)
    );
    // `model show` of a version shows its approvals and deployments.
    let shown = ok(app.cli(Some(&ds), &["model", "show", "nlp/ranker@v1"]));
    assert!(
        shown.contains("approvals:\n  dev  review  by mm"),
        "{shown}"
    );
    assert!(shown.contains("stage:       candidate"), "{shown}");
    assert!(shown.contains("deployments: none"), "{shown}");
    // Shell completions.
    for shell in ["bash", "zsh", "fish"] {
        let c = ok(cli(&app.url, None, &["completions", shell]));
        assert!(c.contains("modelvault") && c.contains("pull"), "{shell}");
    }
}

/// The CLI with a config directory of its own and no MODELVAULT_* set.
fn cli_in(config: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MODELVAULT_URL")
        .env_remove("MODELVAULT_TOKEN")
        .env_remove("MODELVAULT_CA_CERT")
        .env_remove("MODELVAULT_PROFILE")
        .env("MODELVAULT_CONFIG_DIR", config)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn cli_in_stdin(config: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("MODELVAULT_URL")
        .env_remove("MODELVAULT_TOKEN")
        .env("MODELVAULT_CONFIG_DIR", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn profiles_hold_url_and_token_and_a_token_goes_only_to_its_server() {
    let app = TestApp::start();
    let other = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/m"]));
    let config = tempfile::tempdir().unwrap();
    let c = config.path();
    ok(cli_in_stdin(
        c,
        &["profile", "set", "work", "--url", &app.url, "--token-stdin"],
        &ds,
    ));
    let file = c.join("config.toml");
    assert_eq!(mode(&file), 0o600);
    // Selected by flag and by MODELVAULT_PROFILE.
    let listed = ok(cli_in(c, &[], &["--profile", "work", "model", "list"]));
    assert!(listed.contains("nlp/m"), "{listed}");
    let listed = ok(cli_in(
        c,
        &[("MODELVAULT_PROFILE", "work")],
        &["model", "list"],
    ));
    assert!(listed.contains("nlp/m"), "{listed}");
    // The list never shows the token.
    let profiles = ok(cli_in(c, &[], &["profile", "list", "--output", "json"]));
    assert!(!profiles.contains(&ds[6..]), "{profiles}");
    let v: serde_json::Value = serde_json::from_str(&profiles).unwrap();
    assert_eq!(v[0]["name"], "work");
    assert_eq!(v[0]["token"], true);
    // MODELVAULT_URL pointing elsewhere: the profile's token is not sent.
    let elsewhere = cli_in(
        c,
        &[
            ("MODELVAULT_PROFILE", "work"),
            ("MODELVAULT_URL", &other.url),
        ],
        &["model", "list"],
    );
    assert!(!elsewhere.status.success());
    assert!(
        stderr(&elsewhere).contains("is not sent there"),
        "{}",
        stderr(&elsewhere)
    );
    let seen = ok(other.cli(Some(&other.admin), &["audit", "export"]));
    assert!(
        !seen.contains("\"ds\""),
        "the other server never saw the token"
    );
    // MODELVAULT_TOKEN overrides the profile's.
    let o = cli_in(
        c,
        &[
            ("MODELVAULT_PROFILE", "work"),
            ("MODELVAULT_TOKEN", "mv_bogus"),
        ],
        &["model", "list"],
    );
    assert_eq!(code(&o), 3);
    // Changing a profile's URL drops its token (it was bound to the old one).
    ok(cli_in(
        c,
        &[],
        &["profile", "set", "work", "--url", &other.url],
    ));
    let v: serde_json::Value = serde_json::from_str(&ok(cli_in(
        c,
        &[],
        &["profile", "list", "--output", "json"],
    )))
    .unwrap();
    assert_eq!(v[0]["token"], false);
    // An unknown profile is a clear error.
    let o = cli_in(c, &[], &["--profile", "nope", "model", "list"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no profile \"nope\""), "{}", stderr(&o));
    ok(cli_in(c, &[], &["profile", "remove", "work"]));
}

#[test]
fn approvals_list_shows_what_waits_and_who_may_approve() {
    let app = TestApp::start();
    let ds = app.token("ds", &["data-scientist"], &["nlp"]);
    let mm = app.token("mm", &["model-manager"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/a"]));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.bin"), b"a").unwrap();
    for v in ["v1", "v2"] {
        ok(app.cli(
            Some(&ds),
            &["push", &format!("nlp/a@{v}"), src.path().to_str().unwrap()],
        ));
    }
    ok(app.cli(Some(&mm), &["approve", "nlp/a@v1", "--env", "dev"]));
    let list = |token: &str| -> serde_json::Value {
        serde_json::from_str(&ok(
            app.cli(Some(token), &["approvals", "list", "--output", "json"])
        ))
        .unwrap()
    };
    let by_mm = list(&mm);
    assert_eq!(by_mm.as_array().unwrap().len(), 1, "{by_mm}");
    assert_eq!(by_mm[0]["version"], "v2");
    assert_eq!(by_mm[0]["environment"], "dev");
    assert_eq!(by_mm[0]["you_can_approve"], true);
    let by_ds = list(&ds);
    assert_eq!(by_ds[0]["version"], "v2");
    assert_eq!(
        by_ds[0]["you_can_approve"], false,
        "the uploader cannot approve"
    );
    let text = ok(app.cli(Some(&mm), &["approvals", "list"]));
    assert!(
        text.contains("nlp/a@v2  waits for dev") && text.contains("you can approve"),
        "{text}"
    );
}
