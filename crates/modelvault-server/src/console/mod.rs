//! The web console at `/ui/`: a single page (plain JavaScript, no build
//! step, no third-party code) embedded in the binary, over the same `/v1`
//! API every client uses. See docs/CONSOLE.md.
//!
//! Invariants a reader must keep:
//! - the console adds no way around the gate: its pages call the `/v1`
//!   routes, which authorize, run the policy chain and audit exactly as for
//!   any client; the console's own routes only open, show and close a
//!   session ([`session`], [`oidc`]);
//! - a browser holds a session cookie (HttpOnly, SameSite=Strict, Secure
//!   and `__Host-` over TLS), never an API token or an OIDC token; every
//!   request a session makes is audited with channel `ui`;
//! - every console response carries a Content-Security-Policy without
//!   `unsafe-inline` or `unsafe-eval`, `frame-ancestors 'none'`,
//!   `X-Frame-Options: DENY`, `nosniff` and `no-referrer`; the page builds
//!   every node with `textContent` (stored strings are never markup).

pub mod oidc;
pub mod session;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler as _;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::audit::Declare;
use crate::{ApiError, AppState};

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// Every value of the cookies named `name` the request carries, in order
/// (each zeroized on drop: they hold secrets).
pub(crate) fn cookies_named(
    headers: &axum::http::HeaderMap,
    name: &str,
) -> Vec<zeroize::Zeroizing<String>> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| zeroize::Zeroizing::new(v.trim().to_string()))
        .collect()
}

/// `n` random bytes from the system's source, base64url without padding.
pub(crate) fn random_b64(n: usize) -> Result<String, ApiError> {
    use base64::Engine as _;
    let mut buf = zeroize::Zeroizing::new(vec![0u8; n]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| ApiError::internal("the system's random source failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*buf))
}

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Routes whose requests are audited (sign-in, session, sign-out).
pub fn audited_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/ui/api/session",
            get(session::current.layer(Declare("console-session")))
                .post(session::sign_in.layer(Declare("console-sign-in")))
                .delete(session::sign_out.layer(Declare("console-sign-out"))),
        )
        .route(
            "/ui/oidc/login",
            get(oidc::login.layer(Declare("console-sign-in"))),
        )
        .route(
            "/ui/oidc/callback",
            get(oidc::callback.layer(Declare("console-sign-in"))),
        )
        .route_layer(axum::middleware::from_fn(no_store))
}

/// The page and its assets (not audited: static, the same for everyone).
pub fn asset_routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { redirect_to_console() }))
        .route("/ui/", get(index))
        .route("/ui/assets/app.js", get(app_js))
        .route("/ui/assets/app.css", get(app_css))
        .route("/ui/api/login-options", get(login_options))
}

/// Adds the console's security headers to every `/ui` answer.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let console = req.uri().path() == "/ui" || req.uri().path().starts_with("/ui/");
    if console && !state.config.console.enabled {
        return ApiError::not_found("the console is off ([console] enabled = false)")
            .into_response();
    }
    // A browser's cookie-authenticated answer (any route) must not be kept
    // by a shared cache or the browser's disk cache: unlike a request with
    // an Authorization header, a cookie does not keep it out of caches.
    let by_cookie = !req
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION)
        && session::cookie_value(req.headers(), &state).is_some();
    let mut resp = next.run(req).await;
    if by_cookie {
        let h = resp.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.append(axum::http::header::VARY, HeaderValue::from_static("Cookie"));
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
    if console {
        let h = resp.headers_mut();
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        h.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("same-origin"),
        );
        if session::secure(&state) {
            h.insert(
                "strict-transport-security",
                HeaderValue::from_static("max-age=31536000"),
            );
        }
        h.entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-cache"));
    }
    resp
}

async fn no_store(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn redirect_to_console() -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(LOCATION, HeaderValue::from_static("/ui/"))],
    )
        .into_response()
}

async fn index() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        APP_CSS,
    )
        .into_response()
}

/// One OIDC issuer the console can sign in with.
#[derive(Debug, Serialize)]
struct LoginIssuerLink {
    issuer: String,
    login_url: String,
}

#[derive(Debug, Serialize)]
struct LoginOptions {
    issuers: Vec<LoginIssuerLink>,
}

/// `GET /ui/api/login-options`: the issuers the console offers.
async fn login_options(State(state): State<AppState>) -> Response {
    let issuers = state
        .config
        .console
        .oidc_clients
        .keys()
        .map(|issuer| LoginIssuerLink {
            login_url: format!(
                "/ui/oidc/login?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("issuer", issuer)
                    .finish()
            ),
            issuer: issuer.clone(),
        })
        .collect();
    axum::Json(LoginOptions { issuers }).into_response()
}
