//! The HTTP client side: base URL and token from the environment, JSON
//! helpers, and API errors turned into one readable line.

use anyhow::Context as _;
use modelvault_api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answer of the API, kept typed so a caller can branch on its
/// code; it prints as the one line the CLI shows.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// The stable error code (`version_committed`, ...).
    pub code: String,
    /// The server's message.
    pub message: String,
    /// On `policy_denied`: the deciding plugin.
    pub plugin: Option<String>,
    /// On `policy_denied`: its reason code.
    pub reason_code: Option<String>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The server's text, never its control characters (a deny reason is
        // a policy plugin's).
        let clean = crate::term::clean_line;
        if self.code == "policy_denied" {
            return write!(
                f,
                "policy denied by {} (reason code {}): {} ({}, HTTP {}); hint: `modelvault model show NS/NAME@VERSION` lists the approvals and deployments the policies decide on, and docs/POLICY-AUTHORING.md what each bundled policy needs",
                clean(self.plugin.as_deref().unwrap_or("no plugin")),
                clean(self.reason_code.as_deref().unwrap_or("none")),
                clean(&self.message),
                clean(&self.code),
                self.status
            );
        }
        write!(
            f,
            "{} ({}, HTTP {})",
            clean(&self.message),
            clean(&self.code),
            self.status
        )?;
        if self.code == "not_found" && self.message.starts_with("version ") {
            f.write_str(
                "; hint: `modelvault model show NS/NAME` lists the versions, and NS/NAME@latest names the newest",
            )?;
        }
        Ok(())
    }
}

/// A command line the CLI refuses (exit code 2), found after parsing.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A failure of this side that the exit code names.
#[derive(Debug)]
pub enum Failure {
    /// Bytes that do not match their SHA-256, or that fail to open.
    Integrity(String),
    /// The server could not be reached, or the connection broke.
    Network(String),
    /// A gate the caller set was not passed (`policy replay --max-flips`).
    Gate(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Integrity(m) | Self::Network(m) | Self::Gate(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Failure {}

/// The process exit code for an error (README, "Exit codes"): 2 usage or
/// a request the server calls invalid, 3 not authenticated, 4 forbidden
/// (a policy denial included), 5 not found, 6 conflict, 7 gone, 8
/// integrity failure, 9 server or network failure, 10 a gate the caller
/// set not passed (`policy replay --max-flips`), 1 anything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<ApiFailure>() {
            return match (f.status, f.code.as_str()) {
                (_, "integrity_error") => 8,
                (400 | 413 | 416 | 422, _) => 2,
                (401, _) => 3,
                (403, _) => 4,
                (404, _) => 5,
                (409, _) => 6,
                (410, _) => 7,
                (500..=599, _) => 9,
                _ => 1,
            };
        }
        match cause.downcast_ref::<Failure>() {
            Some(Failure::Integrity(_)) => return 8,
            Some(Failure::Network(_)) => return 9,
            Some(Failure::Gate(_)) => return 10,
            None => {}
        }
        if cause.downcast_ref::<reqwest::Error>().is_some() {
            return 9;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
    }
    1
}

impl std::error::Error for ApiFailure {}

/// Whether `e` (or what it wraps) is an API answer with error code `code`.
pub fn is_api_error(e: &anyhow::Error, code: &str) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.code == code)
}

/// Default server URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8780";

/// The server: `MODELVAULT_URL`, else the profile's URL, else
/// [`DEFAULT_URL`]; checked to be http(s).
pub fn server_url() -> anyhow::Result<String> {
    let base = match std::env::var("MODELVAULT_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(u) => u,
        None => crate::profile::selected()?
            .map(|(_, p)| p.url)
            .unwrap_or_else(|| DEFAULT_URL.into()),
    };
    let parsed =
        url::Url::parse(&base).with_context(|| format!("MODELVAULT_URL {base:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("MODELVAULT_URL must be http:// or https://");
    }
    Ok(base.trim_end_matches('/').to_string())
}

/// A configured client.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    token: Option<zeroize::Zeroizing<String>>,
}

/// The CA certificate file from `--ca-cert` / `MODELVAULT_CA_CERT`.
pub static CA_CERT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Connect and read timeouts and the retry budget of client commands
/// (`--connect-timeout`, `--read-timeout`, `--retries` and their
/// `MODELVAULT_*` variables).
#[derive(Debug, Clone, Copy)]
pub struct NetSettings {
    /// Time to open a connection (TCP and TLS).
    pub connect_timeout: std::time::Duration,
    /// Longest wait for the next bytes of an answer.
    pub read_timeout: std::time::Duration,
    /// Further attempts of an idempotent request after a connection error,
    /// a timeout, or a 429/502/503/504 answer.
    pub retries: u32,
}

impl Default for NetSettings {
    fn default() -> Self {
        Self {
            connect_timeout: std::time::Duration::from_secs(10),
            read_timeout: std::time::Duration::from_secs(60),
            retries: 4,
        }
    }
}

/// Set once from the command line.
pub static NET: std::sync::OnceLock<NetSettings> = std::sync::OnceLock::new();

pub fn net() -> NetSettings {
    NET.get().copied().unwrap_or_default()
}

/// The wait before retry `attempt` (0-based): exponential from 250 ms,
/// at most 8 s, with up to half of it taken off at random (jitter), or the
/// server's `Retry-After` (at most 60 s) when it gave one.
pub fn backoff(attempt: u32, retry_after: Option<std::time::Duration>) -> std::time::Duration {
    if let Some(d) = retry_after {
        return d.min(std::time::Duration::from_secs(60));
    }
    let base = std::time::Duration::from_millis(250u64 << attempt.min(5))
        .min(std::time::Duration::from_secs(8));
    // Jitter from the clock's low bits: enough to spread clients apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base.mul_f64(1.0 - f64::from(nanos % 500) / 1000.0)
}

fn retry_after(resp: &reqwest::Response) -> Option<std::time::Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}

/// An HTTP client that trusts the system roots plus `--ca-cert`, if given.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("modelvault/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(net().connect_timeout)
        .read_timeout(net().read_timeout)
        .tls_backend_rustls()
        .tls_version_min(reqwest::tls::Version::TLS_1_2);
    if let Some(path) = CA_CERT.get() {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading CA certificate {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", path.display());
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("building the HTTP client")
}

impl Client {
    /// From `MODELVAULT_URL` and `MODELVAULT_TOKEN` (else the stored login).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::build(true)
    }

    /// From `MODELVAULT_URL`, sending no token.
    pub fn anonymous() -> anyhow::Result<Self> {
        Self::build(false)
    }

    fn build(with_token: bool) -> anyhow::Result<Self> {
        let base = server_url()?;
        let profile = crate::profile::selected()?;
        // MODELVAULT_TOKEN wins over a profile's token and a stored login;
        // those are sent only to the server they were stored for.
        let token = match std::env::var("MODELVAULT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
        {
            _ if !with_token => None,
            Some(t) => Some(zeroize::Zeroizing::new(t)),
            None => match profile {
                Some((name, p)) if p.token.is_some() => {
                    if !crate::profile::same_server(&p.url, &base) {
                        anyhow::bail!(
                            "profile {name}'s token is for {}, not {base}: it is not sent there (set MODELVAULT_TOKEN for that server)",
                            p.url
                        );
                    }
                    p.token.map(zeroize::Zeroizing::new)
                }
                _ => crate::login::stored_token(&base)?,
            },
        };
        let http = http_client()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// A request builder with the bearer token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t.as_str()),
            None => rb,
        }
    }

    /// Sends, and turns a non-2xx answer into an error line. An idempotent
    /// request (GET or HEAD, a pull's ranges included) is tried again with
    /// exponential backoff and jitter after a connection error, a timeout,
    /// or a 429/502/503/504 answer (honouring `Retry-After`); nothing is
    /// retried after another answer, and a request with a streamed body
    /// (an upload: the next push resumes it) is sent once.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let idempotent = rb
            .try_clone()
            .and_then(|c| c.build().ok())
            .is_some_and(|r| matches!(*r.method(), reqwest::Method::GET | reqwest::Method::HEAD));
        let retries = if idempotent { net().retries } else { 0 };
        let mut attempt = 0u32;
        let resp = loop {
            let this = if attempt < retries {
                rb.try_clone()
            } else {
                None
            };
            let (result, last) = match this {
                Some(c) => (c.send().await, false),
                None => break self.send_last(rb).await?,
            };
            match result {
                Err(e) if !last && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    tokio::time::sleep(backoff(attempt, None)).await;
                }
                Err(e) => {
                    return Err(Failure::Network(format!(
                        "cannot reach {}: {}",
                        self.base,
                        root_cause(&e)
                    ))
                    .into());
                }
                Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                    tokio::time::sleep(backoff(attempt, retry_after(&r))).await;
                }
                Ok(r) => break r,
            }
            attempt += 1;
        };
        self.check(resp).await
    }

    /// The one attempt left: its answer or a network failure.
    async fn send_last(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        rb.send().await.map_err(|e| {
            Failure::Network(format!("cannot reach {}: {}", self.base, root_cause(&e))).into()
        })
    }

    /// A 2xx answer, or the error its body names.
    async fn check(&self, resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => Err(ApiFailure {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
                plugin: b.error.plugin,
                reason_code: b.error.reason_code,
            }
            .into()),
            Err(_) if status.is_server_error() => {
                Err(Failure::Network(format!("server answered HTTP {}", status.as_u16())).into())
            }
            Err(_) => anyhow::bail!("server answered HTTP {}", status.as_u16()),
        }
    }

    /// GET a JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        resp.json().await.context("reading the server's answer")
    }

    /// DELETE; the answer body is ignored.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(reqwest::Method::DELETE, path))
            .await
            .map(|_| ())
    }

    /// PATCH JSON, read JSON.
    pub async fn patch_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .send(self.request(reqwest::Method::PATCH, path).json(body))
            .await?;
        resp.json().await.context("reading the server's answer")
    }

    /// POST JSON, read JSON.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .send(self.request(reqwest::Method::POST, path).json(body))
            .await?;
        resp.json().await.context("reading the server's answer")
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
