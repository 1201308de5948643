//! The HTTP client side: base URL and token from the environment, JSON
//! helpers, and API errors turned into one readable line.

use anyhow::Context as _;
use modelvault_server::api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default server URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8780";

/// A configured client.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    token: Option<zeroize::Zeroizing<String>>,
}

/// Percent-encodes one path segment.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The API path of a version, each name percent-encoded.
pub fn version_path(namespace: &str, model: &str, version: &str) -> String {
    format!(
        "/v1/models/{}/{}/versions/{}",
        enc(namespace),
        enc(model),
        enc(version)
    )
}

/// Percent-encodes a `/`-separated file path, keeping the slashes.
pub fn enc_path(p: &str) -> String {
    p.split('/').map(enc).collect::<Vec<_>>().join("/")
}

impl Client {
    /// From `MODELVAULT_URL` and `MODELVAULT_TOKEN`.
    pub fn from_env() -> anyhow::Result<Self> {
        let base = std::env::var("MODELVAULT_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let parsed = url::Url::parse(&base)
            .with_context(|| format!("MODELVAULT_URL {base:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("MODELVAULT_URL must be http:// or https://");
        }
        let token = std::env::var("MODELVAULT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(zeroize::Zeroizing::new);
        let http = reqwest::Client::builder()
            .user_agent(concat!("modelvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
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

    /// Sends, and turns a non-2xx answer into an error line.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = rb
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {}", self.base, root_cause(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => anyhow::bail!(
                "{} ({}, HTTP {})",
                b.error.message,
                b.error.code,
                status.as_u16()
            ),
            Err(_) => anyhow::bail!("server answered HTTP {}", status.as_u16()),
        }
    }

    /// GET a JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
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
