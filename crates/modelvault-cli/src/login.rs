//! `modelvault login` / `logout`: an OIDC access token from the identity
//! provider by the device authorization flow (RFC 8628), stored with mode
//! 0600 in the user's config dir (`$MODELVAULT_CONFIG_DIR` or
//! `~/.config/modelvault`). `MODELVAULT_TOKEN` always wins over it.
//!
//! Where the issuer offers no device flow, `login --token-stdin` stores a
//! token obtained some other way (documented in docs/API.md).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::client::{self, Client};

/// `modelvault login` arguments.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// Issuer to use (default: the first one the server offers for login).
    #[arg(long)]
    issuer: Option<String>,
    /// Client id (default: the one the server names for the issuer).
    #[arg(long)]
    client_id: Option<String>,
    /// Scopes to ask for (default: the server's `cli_scope`).
    #[arg(long)]
    scope: Option<String>,
    /// Read an access token from stdin and store it, instead of signing in.
    #[arg(long, conflicts_with = "browser")]
    token_stdin: bool,
    /// Sign in with the authorization code flow and PKCE through a browser
    /// and a one-shot listener on 127.0.0.1, instead of the device flow.
    #[arg(long)]
    browser: bool,
}

/// What `login` stores.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The server URL the token was stored for: it is sent nowhere else.
    #[serde(default)]
    server: Option<String>,
    issuer: Option<String>,
    access_token: String,
    /// Seconds since the epoch, when known.
    expires_at: Option<i64>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.access_token.zeroize();
    }
}

pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("MODELVAULT_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    dirs::config_dir()
        .map(|d| d.join("modelvault"))
        .ok_or_else(|| anyhow::anyhow!("no config directory; set MODELVAULT_CONFIG_DIR"))
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("credentials.json"))
}

/// The stored login token, if any; an expired one is an error that says
/// what to do.
pub fn stored_token(server: &str) -> anyhow::Result<Option<Zeroizing<String>>> {
    let path = credentials_path()?;
    let text = match std::fs::read(&path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let stored: Stored = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a modelvault login", path.display()))?;
    match &stored.server {
        Some(s) if crate::profile::same_server(s, server) => {}
        // Stored for another server (or by a version that did not record
        // one): not sent.
        _ => return Ok(None),
    }
    if let Some(exp) = stored.expires_at
        && exp <= chrono::Utc::now().timestamp()
    {
        anyhow::bail!("your login has expired; run `modelvault login` again");
    }
    Ok(Some(Zeroizing::new(stored.access_token.clone())))
}

fn store(stored: &Stored) -> anyhow::Result<PathBuf> {
    let path = config_dir()?.join("credentials.json");
    let body = Zeroizing::new(serde_json::to_vec(stored)?);
    write_private(&path, &body)?;
    Ok(path)
}

/// Writes a file only its owner can read (0600, in a 0700 directory made
/// if missing), whole or not at all: a temporary file beside it, synced,
/// then renamed over it.
pub fn write_private(path: &std::path::Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", path.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `modelvault logout`: removes the stored token.
pub fn logout() -> anyhow::Result<()> {
    let path = credentials_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!("logged out (removed {})", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("not logged in"),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(())
}

#[derive(Deserialize)]
struct Discovery {
    device_authorization_endpoint: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct DeviceAuth {
    device_code: Zeroizing<String>,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<Zeroizing<String>>,
    expires_in: Option<i64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// An issuer URL the CLI will talk to: https, or http on loopback only.
fn check_issuer_url(u: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(u).with_context(|| format!("issuer {u:?} is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => anyhow::bail!("refusing issuer {u}: use https (plain http only on loopback)"),
    }
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    if args.token_stdin {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the token from stdin")?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!("no token on stdin");
        }
        let path = store(&Stored {
            server: Some(client::server_url()?),
            issuer: None,
            access_token: token.to_string(),
            expires_at: None,
        })?;
        eprintln!("stored the token in {}", path.display());
        return Ok(());
    }
    let http = client::http_client()?;
    let (issuer, client_id, scope) = match (&args.issuer, &args.client_id) {
        (Some(i), Some(c)) => (
            i.clone(),
            c.clone(),
            args.scope.clone().unwrap_or_else(|| "openid".into()),
        ),
        _ => {
            // Ask the server which issuer and client to use.
            let server = Client::anonymous()?;
            let cfg: modelvault_api::AuthConfig = server.get_json("/v1/auth/config").await?;
            let chosen = cfg
                .issuers
                .into_iter()
                .find(|i| args.issuer.as_ref().is_none_or(|want| &i.issuer == want))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the server at {} offers no issuer for login (set cli_client_id in [[oidc.issuers]])",
                        server.base
                    )
                })?;
            (
                chosen.issuer,
                args.client_id.clone().unwrap_or(chosen.client_id),
                args.scope.clone().unwrap_or(chosen.scope),
            )
        }
    };
    check_issuer_url(&issuer)?;
    let discovery: Discovery = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("fetching {issuer}'s discovery document"))?
        .json()
        .await
        .with_context(|| format!("reading {issuer}'s discovery document"))?;
    check_issuer_url(&discovery.token_endpoint)?;
    if args.browser {
        let Some(auth_endpoint) = &discovery.authorization_endpoint else {
            anyhow::bail!("{issuer} names no authorization endpoint");
        };
        check_issuer_url(auth_endpoint)?;
        let answer = browser_flow(
            &http,
            auth_endpoint,
            &discovery.token_endpoint,
            &client_id,
            &scope,
        )
        .await?;
        return save_answer(&issuer, answer);
    }
    let Some(device_endpoint) = discovery.device_authorization_endpoint else {
        anyhow::bail!(
            "{issuer} does not offer the device authorization flow; run `modelvault login --browser`, or obtain a token another way and run `modelvault login --token-stdin`"
        );
    };
    check_issuer_url(&device_endpoint)?;
    let auth: DeviceAuth = http
        .post(&device_endpoint)
        .form(&[("client_id", client_id.as_str()), ("scope", scope.as_str())])
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("starting the device authorization")?
        .json()
        .await
        .context("reading the device authorization")?;
    match &auth.verification_uri_complete {
        Some(u) => eprintln!(
            "To sign in, open {u} (code {}) in a browser.",
            auth.user_code
        ),
        None => eprintln!(
            "To sign in, open {} in a browser and enter the code {}.",
            auth.verification_uri, auth.user_code
        ),
    }
    let mut interval = Duration::from_secs(auth.interval.unwrap_or(5).max(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(auth.expires_in);
    loop {
        tokio::time::sleep(interval).await;
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the sign-in code expired; run `modelvault login` again");
        }
        let answer: TokenAnswer = http
            .post(&discovery.token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", auth.device_code.as_str()),
                ("client_id", client_id.as_str()),
            ])
            .send()
            .await
            .context("polling the token endpoint")?
            .json()
            .await
            .context("reading the token endpoint's answer")?;
        if answer.access_token.is_some() {
            return save_answer(&issuer, answer);
        }
        match answer.error.as_deref() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            Some(e) => anyhow::bail!(
                "sign-in failed: {e}{}",
                answer
                    .error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            None => anyhow::bail!("the token endpoint answered neither a token nor an error"),
        }
    }
}

fn save_answer(issuer: &str, answer: TokenAnswer) -> anyhow::Result<()> {
    let Some(token) = answer.access_token else {
        anyhow::bail!(
            "sign-in failed: {}",
            answer.error.unwrap_or_else(|| "no access token".into())
        );
    };
    let expires_at = answer
        .expires_in
        .map(|s| chrono::Utc::now().timestamp() + s);
    let path = store(&Stored {
        server: Some(client::server_url()?),
        issuer: Some(issuer.to_string()),
        access_token: token.to_string(),
        expires_at,
    })?;
    eprintln!("logged in at {issuer}; token stored in {}", path.display());
    Ok(())
}

fn random_b64(n: usize) -> anyhow::Result<String> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("random source failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*bytes))
}

/// The authorization code flow with PKCE (RFC 7636) and a loopback
/// redirect (RFC 8252): one request to `127.0.0.1:<port>/callback` is
/// awaited for ten minutes, its `state` checked, its code exchanged.
async fn browser_flow(
    http: &reqwest::Client,
    auth_endpoint: &str,
    token_endpoint: &str,
    client_id: &str,
    scope: &str,
) -> anyhow::Result<TokenAnswer> {
    use base64::Engine as _;
    let verifier = Zeroizing::new(random_b64(32)?);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let state = random_b64(16)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("opening the loopback listener")?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let mut url = url::Url::parse(auth_endpoint)?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    eprintln!("To sign in, open {url} in a browser.");

    type Params = std::collections::HashMap<String, String>;
    let (tx, rx) = tokio::sync::oneshot::channel::<Params>();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<Params>| async move {
                if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(q);
                }
                "Signed in to Modelvault; you can close this window.\n"
            },
        ),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let params = tokio::time::timeout(Duration::from_secs(600), rx).await;
    server.abort();
    let params = params
        .map_err(|_| anyhow::anyhow!("no sign-in within ten minutes"))?
        .map_err(|_| anyhow::anyhow!("the sign-in listener stopped"))?;
    if let Some(e) = params.get("error") {
        anyhow::bail!(
            "sign-in failed: {e}{}",
            params
                .get("error_description")
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    if params.get("state") != Some(&state) {
        anyhow::bail!("sign-in failed: the answer's state does not match this login");
    }
    let code = Zeroizing::new(
        params
            .get("code")
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("sign-in failed: no code in the answer"))?,
    );
    http.post(token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", client_id),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .context("exchanging the code")?
        .json()
        .await
        .context("reading the token endpoint's answer")
}
