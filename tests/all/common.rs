//! `TestApp`: a data directory, `modelvault init`, and `modelvault serve`
//! on an ephemeral port, with helpers to run CLI commands against it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

pub const BIN: &str = env!("CARGO_BIN_EXE_modelvault");

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin: String,
    pub log: Arc<Mutex<String>>,
    child: Child,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `modelvault` with `args`, the app's URL and `token`.
pub fn cli(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("MODELVAULT_URL", url)
        .env_remove("MODELVAULT_TOKEN")
        .env_remove("MODELVAULT_CA_CERT")
        // Never a stored login from the machine running the tests.
        .env(
            "MODELVAULT_CONFIG_DIR",
            "/nonexistent/modelvault-test-config",
        );
    if let Some(t) = token {
        cmd.env("MODELVAULT_TOKEN", t);
    }
    output_within(cmd, CLI_TIMEOUT, &format!("modelvault {}", args.join(" ")))
}

/// How long one CLI command may run in a test before it is killed and the
/// test fails (a hung command would otherwise hang the whole suite).
pub const CLI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `cmd`'s output, or a panic naming `what` if it runs longer than
/// `limit` (the process is killed first).
pub fn output_within(mut cmd: Command, limit: std::time::Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run modelvault");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for modelvault"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} still running after {limit:?}: killed");
        }
    }
}

/// Sets its flag when dropped: a scope whose workers loop until a stop
/// flag holds one, so that a failed check in the scope's own body fails the
/// test instead of leaving the workers running (the scope waits for them).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The server log from byte `from` on, once it holds a line with
/// `needle`: log lines reach the test through a reader thread, after the
/// response that caused them. Panics after 20 s.
#[track_caller]
pub fn wait_for_log(log: &Mutex<String>, from: usize, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = log.lock().unwrap()[from..].to_string();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with {needle:?}: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\nstdout: {}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Asserts failure with one line on stderr containing `needle`.
#[track_caller]
pub fn fails(o: Output, needle: &str) -> String {
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "command unexpectedly succeeded: {}",
        stdout(&o)
    );
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "stderr is not one line: {err:?}"
    );
    err
}

/// Starts `modelvault serve` over `data` on an ephemeral port; returns the
/// child, its URL and its captured log.
fn spawn_serve(data: &Path, extra: &[String]) -> (Child, String, Arc<Mutex<String>>) {
    spawn_serve_env(data, extra, &[])
}

fn spawn_serve_env(
    data: &Path,
    extra: &[String],
    env: &[(&str, &str)],
) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = Command::new(BIN)
        .envs(env.iter().copied())
        .args([
            "serve",
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("MODELVAULT_LOG", "info")
        .env("MODELVAULT_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let url = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("server did not start: {}", log.lock().unwrap()));
    (child, url, log)
}

/// Waits until the server's policies are no longer loading (`/readyz`
/// answers 200, or says the set is broken): the server listens before its
/// policies compile, and most tests exercise a loaded server. Tests of the
/// loading phase itself use peers, which do not wait.
fn wait_until_loaded(url: &str) {
    if !url.starts_with("http://") {
        return; // TLS servers: their tests do not depend on the chain.
    }
    let client = reqwest::blocking::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{url}/readyz")).send() {
            let ok = r.status().is_success();
            let body = r.text().unwrap_or_default();
            if ok || !body.contains("loading") {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{url}: policies still loading after 60 s");
}

/// A second server over the same data directory (same store and keyring).
pub struct Peer {
    pub url: String,
    child: Child,
}

impl Peer {
    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to end; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..200 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestApp {
    /// Another server over this data directory with extra environment
    /// (e.g. `MODELVAULT_FAILPOINTS`).
    pub fn start_peer_env(&self, env: &[(&str, &str)]) -> Peer {
        let (child, url, _) = spawn_serve_env(&self.data_dir(), &[], env);
        Peer { url, child }
    }

    /// Another server process over this one's data directory.
    pub fn start_peer(&self) -> Peer {
        let (child, url, _) = spawn_serve(&self.data_dir(), &[]);
        Peer { url, child }
    }

    /// A server over a local store in a temp data dir.
    pub fn start() -> Self {
        Self::start_with_store(None)
    }

    /// A server over `store` (or the default local store).
    pub fn start_with_store(store: Option<&str>) -> Self {
        Self::start_configured(store, |_| {})
    }

    /// A server whose config file `edit` may change before it starts.
    pub fn start_configured(store: Option<&str>, edit: impl FnOnce(&mut String)) -> Self {
        Self::start_full(store, edit, &[])
    }

    /// The same, with extra `serve` arguments (e.g. `--tls-cert`).
    pub fn start_full(
        store: Option<&str>,
        edit: impl FnOnce(&mut String),
        serve_args: &[String],
    ) -> Self {
        Self::start_init(store, edit, serve_args, &[], &[])
    }

    /// A server whose keys live in the PKCS#11 test token (SoftHSM2) under
    /// a prefix of its own; the PIN reaches init and serve only through
    /// the environment.
    pub fn start_pkcs11(token: &modelvault_test_utils::TestToken) -> Self {
        let init = [
            "--key-provider".to_string(),
            "pkcs11".into(),
            "--pkcs11-module".into(),
            token.module.display().to_string(),
            "--pkcs11-token".into(),
            token.token_label.clone(),
            "--pkcs11-key-prefix".into(),
            token.prefix.clone(),
        ];
        Self::start_init(
            None,
            |_| {},
            &[],
            &init,
            &[("MODELVAULT_PKCS11_PIN", token.pin.as_str())],
        )
    }

    /// A server whose keys are AWS KMS keys (moto's KMS, from the AWS_*
    /// variables) under an alias prefix of its own, over `store`.
    pub fn start_aws_kms(store: Option<&str>, prefix: &str) -> Self {
        let init = [
            "--key-provider".to_string(),
            "aws-kms".into(),
            "--kms-alias-prefix".into(),
            prefix.to_string(),
        ];
        Self::start_init(store, |_| {}, &[], &init, &[])
    }

    fn start_init(
        store: Option<&str>,
        edit: impl FnOnce(&mut String),
        serve_args: &[String],
        init_args: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut args = vec![
            "init".to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        if let Some(s) = store {
            args.push("--store".into());
            args.push(s.into());
        }
        args.extend(init_args.iter().cloned());
        let out = Command::new(BIN)
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .expect("init");
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        let admin = stdout(&out);
        assert_eq!(admin.lines().count(), 1, "init prints exactly the token");
        let admin = admin.trim().to_string();
        assert!(admin.starts_with("mv_"));
        let cfg = data.join("modelvault.toml");
        let mut text = std::fs::read_to_string(&cfg).expect("config");
        edit(&mut text);
        std::fs::write(&cfg, text).expect("config");

        let (child, url, log) = spawn_serve_env(&data, serve_args, env);
        wait_until_loaded(&url);
        Self {
            dir,
            url,
            admin,
            log,
            child,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The store URL from the server's config.
    pub fn store_url(&self) -> String {
        let cfg = std::fs::read_to_string(self.data_dir().join("modelvault.toml")).unwrap();
        let line = cfg
            .lines()
            .find(|l| l.starts_with("url = "))
            .expect("store url");
        line["url = ".len()..].trim().trim_matches('"').to_string()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir().join("store")
    }

    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> Output {
        cli(&self.url, token, args)
    }

    /// Creates a token with the admin token; returns it.
    pub fn token(&self, name: &str, roles: &[&str], namespaces: &[&str]) -> String {
        self.token_in(name, roles, namespaces, "dev", name)
    }

    /// Creates a token bound to `env` acting as `principal`.
    pub fn token_in(
        &self,
        name: &str,
        roles: &[&str],
        namespaces: &[&str],
        env: &str,
        principal: &str,
    ) -> String {
        let mut args = vec![
            "token",
            "create",
            "--name",
            name,
            "--env",
            env,
            "--principal",
            principal,
        ];
        for r in roles {
            args.extend(["--role", r]);
        }
        for n in namespaces {
            args.extend(["--namespace", n]);
        }
        let out = ok(self.cli(Some(&self.admin), &args));
        assert_eq!(out.lines().count(), 1, "token create prints only the token");
        out.trim().to_string()
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            // No pooled connections: a server that answers 413 before reading
            // a body closes the connection, and a reused one would fail.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    pub fn get(&self, token: Option<&str>, path: &str) -> reqwest::blocking::Response {
        let mut rb = self.http().get(format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send().unwrap()
    }
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The JSON error code of a response.
pub fn error_code(resp: reqwest::blocking::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().unwrap_or(serde_json::Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, body)
}

/// The secret part of an API token `mv_<id>_<secret>`: everything after
/// the second `_` (base64url, which may itself contain `_`).
pub fn token_secret(token: &str) -> &str {
    let secret = token.splitn(3, '_').nth(2).expect("mv_<id>_<secret>");
    assert!(secret.len() >= 40, "not a whole token secret: {token}");
    secret
}

/// Every file under `dir` with its bytes. A file that vanishes between the
/// listing and the read (a temporary file of a write in flight) is skipped:
/// it is not data at rest.
pub fn stored_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .filter_map(|f| match std::fs::read(&f) {
            Ok(bytes) => Some((f, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{}: {e}", f.display()),
        })
        .collect()
}
