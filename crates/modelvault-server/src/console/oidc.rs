//! Console sign-in with OIDC: authorization code with PKCE (S256).
//!
//! Invariants a reader must keep:
//! - the server is a public client of the issuer (`console.oidc_clients`);
//!   the PKCE verifier and the `state` live only in a short-lived
//!   HttpOnly cookie scoped to `/ui/oidc` (`SameSite=Lax`: the issuer's
//!   redirect back is a cross-site navigation), so any server behind the
//!   load balancer can finish a sign-in another one started;
//! - the callback proceeds only when the `state` in the URL equals the
//!   cookie's (constant time), and the access token it gets is verified
//!   exactly as a bearer JWT is (issuer, audience, signature, expiry);
//! - the OIDC token is then dropped: the browser gets a console session.

use axum::extract::{Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::{ApiError, AppState};

const FLOW_COOKIE: &str = "mv_oidc";
/// Over HTTPS: pinned to this host (no sibling subdomain can plant one).
const FLOW_COOKIE_SECURE: &str = "__Host-mv_oidc";

fn flow_cookie_name(state: &AppState) -> &'static str {
    if super::session::secure(state) {
        FLOW_COOKIE_SECURE
    } else {
        FLOW_COOKIE
    }
}
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `GET /ui/oidc/login?issuer=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginQuery {
    /// The issuer URL (one of `console.oidc_clients`).
    pub issuer: String,
}

/// `GET /ui/oidc/callback?code=&state=` (or `error=`).
#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<Zeroizing<String>>,
    state: Option<String>,
    error: Option<String>,
}

impl std::fmt::Debug for CallbackQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackQuery")
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .field("state", &self.state)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Zeroizing<String>,
}

fn bad_gateway(msg: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "issuer_unavailable", msg)
}

/// The issuer's config and the console's client id for it.
fn issuer_config<'a>(
    state: &'a AppState,
    issuer: &str,
) -> Result<(&'a modelvault_oidc::IssuerConfig, &'a str), ApiError> {
    let client = state
        .config
        .console
        .oidc_clients
        .get(issuer)
        .ok_or_else(|| ApiError::not_found("no console sign-in for that issuer"))?;
    let cfg = state
        .config
        .oidc
        .issuers
        .iter()
        .find(|i| i.issuer == issuer)
        .ok_or_else(|| ApiError::not_found("no console sign-in for that issuer"))?;
    Ok((cfg, client))
}

fn http_client(cfg: &modelvault_oidc::IssuerConfig) -> Result<reqwest::Client, ApiError> {
    let mut b = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if !cfg.allow_http_issuer {
        b = b.https_only(true);
    }
    if let Some(ca) = &cfg.ca_cert {
        let pem = std::fs::read(ca)
            .map_err(|e| ApiError::internal(format!("issuer CA certificate: {e}")))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| ApiError::internal(format!("issuer CA certificate: {e}")))?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| ApiError::internal(format!("HTTP client: {e}")))
}

/// Discovery documents by issuer, kept five minutes: a flood of sign-in
/// starts costs the issuer one fetch per issuer and period.
type DiscoveryCache =
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Discovery)>>;
static DISCOVERY: std::sync::OnceLock<DiscoveryCache> = std::sync::OnceLock::new();

async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Discovery, ApiError> {
    let cache = DISCOVERY.get_or_init(Default::default);
    if let Ok(c) = cache.lock()
        && let Some((at, d)) = c.get(issuer)
        && at.elapsed() < std::time::Duration::from_secs(300)
    {
        return Ok(d.clone());
    }
    let d = fetch_discovery(http, issuer).await?;
    if let Ok(mut c) = cache.lock() {
        c.insert(issuer.to_string(), (std::time::Instant::now(), d.clone()));
    }
    Ok(d)
}

async fn fetch_discovery(http: &reqwest::Client, issuer: &str) -> Result<Discovery, ApiError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    http.get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| bad_gateway(format!("issuer discovery failed: {e}")))?
        .json()
        .await
        .map_err(|e| bad_gateway(format!("issuer discovery unreadable: {e}")))
}

/// The redirect URI of this console: `<public_url>/ui/oidc/callback`, or
/// built from the request's `Host`.
fn redirect_uri(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(base) = &state.config.console.public_url {
        return Ok(format!("{}/ui/oidc/callback", base.trim_end_matches('/')));
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or_else(|| ApiError::bad_request("no usable Host header (set console.public_url)"))?;
    // Without a configured public URL only a loopback Host is trusted: a
    // forged Host must never pick where the issuer sends the code.
    let hostname = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    if !matches!(hostname, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(ApiError::bad_request(
            "OIDC sign-in off loopback needs console.public_url (the redirect URI is never taken from the Host header)",
        ));
    }
    let scheme = if state.tls { "https" } else { "http" };
    Ok(format!("{scheme}://{host}/ui/oidc/callback"))
}

fn flow_cookie(state: &AppState, value: &str, max_age: u32) -> Result<HeaderValue, ApiError> {
    // `__Host-` cookies must have `Path=/`.
    let (name, path, secure) = if super::session::secure(state) {
        (FLOW_COOKIE_SECURE, "/", "; Secure")
    } else {
        (FLOW_COOKIE, "/ui/oidc", "")
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .map_err(|_| ApiError::internal("sign-in cookie is not a header value"))
}

/// `GET /ui/oidc/login?issuer=`: redirects the browser to the issuer.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    crate::audit::note_channel("ui");
    let (cfg, client_id) = issuer_config(&state, &q.issuer)?;
    let http = http_client(cfg)?;
    let d = discover(&http, &cfg.issuer).await?;
    let redirect = redirect_uri(&state, &headers)?;
    let flow_state = super::random_b64(16)?;
    let verifier = Zeroizing::new(super::random_b64(32)?);
    let challenge = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let mut url = url::Url::parse(&d.authorization_endpoint)
        .map_err(|e| bad_gateway(format!("issuer's authorization endpoint: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", &cfg.cli_scope)
        .append_pair("state", &flow_state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    // state.verifier.issuer (the issuer base64url: it may hold any byte).
    let cookie = Zeroizing::new(format!(
        "{flow_state}.{}.{}",
        verifier.as_str(),
        B64.encode(cfg.issuer.as_bytes())
    ));
    let location = HeaderValue::from_str(url.as_str())
        .map_err(|_| bad_gateway("issuer's authorization endpoint is not a header value".into()))?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (LOCATION, location),
            (SET_COOKIE, flow_cookie(&state, &cookie, 600)?),
        ],
    )
        .into_response())
}

/// `GET /ui/oidc/callback`: exchanges the code, verifies the access token,
/// opens a console session and sends the browser to the console. Every
/// answer clears the sign-in cookie: a flow is used once, success or not.
pub async fn callback(
    State(state): State<AppState>,
    parts: Parts,
    Query(q): Query<CallbackQuery>,
) -> Response {
    crate::audit::note_channel("ui");
    let clear = flow_cookie(&state, "", 0).ok();
    let mut resp = match finish(&state, &parts, q).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(c) = clear {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// An issuer's error code, reduced to what is safe to show (no free text
/// from the issuer reaches the page).
fn safe_code(e: &str) -> String {
    e.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

async fn finish(state: &AppState, parts: &Parts, q: CallbackQuery) -> Result<Response, ApiError> {
    let source = crate::authn::source_addr(parts);
    let rid = crate::gate::RequestId::from_headers(&parts.headers).map(|r| r.0);
    if let Some(e) = &q.error {
        crate::authn::record_failure(state, source, rid, "oidc-console", "issuer_refused");
        return Err(ApiError::unauthenticated(format!(
            "the issuer refused the sign-in ({}); start again at /ui/",
            safe_code(e)
        )));
    }
    let flows = super::cookies_named(&parts.headers, flow_cookie_name(state));
    // Two flow cookies: one was planted (by a sibling site); refuse both.
    let [flow] = flows.as_slice() else {
        return Err(ApiError::bad_request(
            "no single sign-in in progress in this browser (start at /ui/)",
        ));
    };
    let mut it = flow.splitn(3, '.');
    let (Some(want_state), Some(verifier), Some(issuer_b64)) = (it.next(), it.next(), it.next())
    else {
        return Err(ApiError::bad_request("sign-in cookie malformed"));
    };
    let got_state = q.state.as_deref().unwrap_or("");
    let same: bool = want_state.as_bytes().ct_eq(got_state.as_bytes()).into();
    if !same || got_state.is_empty() {
        crate::authn::record_failure(state, source, rid, "oidc-console", "state_mismatch");
        return Err(ApiError::unauthenticated(
            "the sign-in answer does not belong to this browser's sign-in; start again at /ui/",
        ));
    }
    let issuer = B64
        .decode(issuer_b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad_request("sign-in cookie malformed"))?;
    let (cfg, client_id) = issuer_config(state, &issuer)?;
    let code = q
        .code
        .ok_or_else(|| ApiError::bad_request("no code in the issuer's answer"))?;
    let http = http_client(cfg)?;
    let d = discover(&http, &cfg.issuer).await?;
    let redirect = redirect_uri(state, &parts.headers)?;
    let answer = http
        .post(&d.token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .map_err(|e| bad_gateway(format!("token endpoint: {}", e.without_url())))?;
    if !answer.status().is_success() {
        crate::authn::record_failure(state, source, rid, "oidc-console", "code_refused");
        return Err(ApiError::unauthenticated(format!(
            "the issuer refused the code ({}); start again at /ui/",
            answer.status()
        )));
    }
    let token: TokenAnswer = answer
        .json()
        .await
        .map_err(|e| bad_gateway(format!("token endpoint answer: {}", e.without_url())))?;
    // Only a JWT from the issuer this flow started with: never an API
    // token, never another trusted issuer's token (mix-up).
    let principal = match crate::authn::authenticate_jwt(state, &token.access_token).await {
        Ok(p) if p.issuer.as_deref() == Some(cfg.issuer.as_str()) => p,
        Ok(_) => {
            crate::authn::record_failure(state, source, rid, "oidc-console", "issuer_mismatch");
            return Err(crate::authn::unauthenticated());
        }
        Err(reason) => {
            crate::authn::record_failure(state, source, rid, "oidc-console", &reason);
            return Err(crate::authn::unauthenticated());
        }
    };
    crate::audit::note_principal(&principal);
    let (cookie, _, _) = super::session::open(state, &principal).await?;
    tracing::info!(principal = %principal.id, issuer = %issuer, "console session opened (OIDC)");
    Ok((
        StatusCode::SEE_OTHER,
        AppendHeaders([
            (LOCATION, HeaderValue::from_static("/ui/#/models")),
            (SET_COOKIE, cookie),
        ]),
    )
        .into_response())
}
