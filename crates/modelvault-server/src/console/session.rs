//! Console sessions: what the `mv_session` cookie stands for.
//!
//! Invariants a reader must keep:
//! - the cookie holds `<session id>.<secret>`; the store holds only the
//!   secret's SHA-256 (an authenticated record), never the secret, the API
//!   token or the OIDC token the session was opened with;
//! - a session lives at most `console.session_ttl_secs` and never longer
//!   than the credential it was opened with; a session opened with an API
//!   token re-checks that token (revocation, expiry) on every request;
//! - a signed-out session has a revocation marker that wins over a record
//!   put back into the bucket; a store error denies;
//! - every state-changing request made with a session carries its CSRF
//!   token (`X-CSRF-Token`, derived from the secret, so only a page that
//!   could read the session answer knows it), and a cross-site `Origin` or
//!   `Sec-Fetch-Site` is refused: the cookie is also `SameSite=Strict`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use modelvault_auth::{Principal, PrincipalKind, TokenRecord};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::authn::Authenticated;
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

/// The cookie's name over plain HTTP (loopback only).
pub const COOKIE_NAME: &str = "mv_session";
/// The cookie's name over TLS: the `__Host-` prefix pins it to this host,
/// path `/` and `Secure`.
pub const COOKIE_NAME_TLS: &str = "__Host-mv_session";
/// The CSRF token's request header.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a session was opened with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum SessionOrigin {
    /// An API token, re-checked on every request.
    ApiToken {
        /// The token's id.
        token_id: String,
    },
    /// An OIDC access token verified at sign-in; the identity it vouched
    /// for (the role bindings are read afresh on every request).
    Oidc {
        /// Principal id.
        principal: String,
        /// Person or service.
        kind: PrincipalKind,
        /// Verified groups.
        groups: Vec<String>,
        /// The environment the identity is bound to.
        environment: String,
        /// The issuer.
        issuer: String,
        /// Verified attributes.
        attributes: std::collections::BTreeMap<String, String>,
    },
}

/// One stored session (`console-sessions/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id (public: it names the record).
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Ends at.
    pub expires_at: DateTime<Utc>,
    /// What it was opened with.
    pub origin: SessionOrigin,
}

/// The revocation marker written at sign-out.
#[derive(Debug, Serialize)]
struct SignedOut<'a> {
    id: &'a str,
    at: DateTime<Utc>,
    by: &'a str,
}

/// `GET /ui/api/session` and the sign-in answer.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// Send as `X-CSRF-Token` on every state-changing request.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
    /// Who is signed in.
    pub whoami: crate::api::WhoAmI,
}

/// `POST /ui/api/session`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An API token (`mv_...`).
    pub token: Zeroizing<String>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Whether the browser reaches the console over HTTPS: this server speaks
/// TLS, or `console.public_url` says a TLS-terminating proxy is in front.
pub(crate) fn secure(state: &AppState) -> bool {
    state.tls
        || state
            .config
            .console
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}

fn cookie_name(state: &AppState) -> &'static str {
    if secure(state) {
        COOKIE_NAME_TLS
    } else {
        COOKIE_NAME
    }
}

/// The session cookie's value, if the request carries one (and the console
/// is on).
pub fn cookie_value(headers: &HeaderMap, state: &AppState) -> Option<Zeroizing<String>> {
    if !state.config.console.enabled {
        return None;
    }
    super::cookies_named(headers, cookie_name(state))
        .into_iter()
        .next()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// The CSRF token of a session secret.
fn csrf_of(secret: &str) -> String {
    sha256_hex(format!("modelvault-console-csrf-v1:{secret}").as_bytes())
}

/// Splits `<id>.<secret>`; ids are 22 base64url characters.
fn split_cookie(value: &str) -> Option<(&str, &str)> {
    let (id, secret) = value.split_once('.')?;
    let ok = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (ok(id, 22..=22) && ok(secret, 43..=43)).then_some((id, secret))
}

/// Whether the request is same-origin as far as the browser says: no
/// cross-site `Sec-Fetch-Site`, and an `Origin`, when sent, naming this
/// host.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get("origin") else {
        return true;
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .map(|u| match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
            None => u.host_str().unwrap_or_default().to_string(),
        });
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(&o))
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "a state-changing request from the console must carry the session's X-CSRF-Token and come from this origin",
    )
}

/// Authenticates a request by its session cookie; state-changing methods
/// also need the CSRF token and a same-origin request. Notes the principal
/// and the `ui` channel for the audit record.
pub(crate) async fn authenticate(
    state: &AppState,
    parts: &Parts,
    cookie: &str,
    source: Option<IpAddr>,
    rid: Option<String>,
) -> Result<Principal, ApiError> {
    crate::audit::note_channel("ui");
    let principal = match session_principal(state, cookie).await {
        Ok(p) => p,
        Err(reason) => {
            crate::authn::record_failure(state, source, rid, "console-session", &reason);
            return Err(crate::authn::unauthenticated());
        }
    };
    crate::audit::note_principal(&principal);
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let Some((_, secret)) = split_cookie(cookie) else {
            return Err(csrf_refused());
        };
        let want = csrf_of(secret);
        let got = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let ok: bool = want.as_bytes().ct_eq(got.as_bytes()).into();
        if !ok || !same_origin(&parts.headers) {
            tracing::warn!(principal = %principal.id, "console request without a valid CSRF token refused");
            return Err(csrf_refused());
        }
    }
    Ok(principal)
}

/// The session's record, verified against the cookie; the error is an
/// audit-ready reason code.
async fn session_record(state: &AppState, cookie: &str) -> Result<SessionRecord, String> {
    let (id, secret) = split_cookie(cookie).ok_or("malformed_session")?;
    let sessions = state.store.console_sessions();
    let (record, revoked) =
        tokio::join!(sessions.get::<SessionRecord>(id), sessions.is_revoked(id));
    match revoked {
        Ok(false) => {}
        Ok(true) => return Err("signed_out_session".into()),
        Err(e) => {
            tracing::warn!(error = %e, "session revocation marker unreadable; denying");
            return Err("session_unreadable".into());
        }
    }
    let record = match record {
        Ok(Some(r)) => r,
        Ok(None) => return Err("unknown_session".into()),
        Err(e) => {
            tracing::warn!(error = %e, "session record unreadable; denying");
            return Err("session_unreadable".into());
        }
    };
    let got = sha256_hex(secret.as_bytes());
    let same: bool = got.as_bytes().ct_eq(record.secret_sha256.as_bytes()).into();
    if record.id != id || !same {
        return Err("invalid_session".into());
    }
    if record.expires_at <= Utc::now() {
        return Err("expired_session".into());
    }
    Ok(record)
}

/// The principal a session stands for now.
async fn session_principal(state: &AppState, cookie: &str) -> Result<Principal, String> {
    let record = session_record(state, cookie).await?;
    let mut p = match record.origin {
        SessionOrigin::ApiToken { token_id } => {
            let tokens = state.store.tokens();
            let (token, revoked) = tokio::join!(
                tokens.get::<TokenRecord>(&token_id),
                tokens.is_revoked(&token_id)
            );
            match revoked {
                Ok(false) => {}
                Ok(true) => return Err("revoked_token".into()),
                Err(_) => return Err("token_unreadable".into()),
            }
            let token = match token {
                Ok(Some(t)) if t.id == token_id => t,
                Ok(_) => return Err("invalid_token".into()),
                Err(_) => return Err("token_unreadable".into()),
            };
            if token.expires_at.is_some_and(|e| e <= Utc::now()) {
                return Err("invalid_or_expired_token".into());
            }
            crate::authn::token_principal(state, token).await?
        }
        SessionOrigin::Oidc {
            principal,
            kind,
            groups,
            environment,
            issuer,
            attributes,
        } => {
            let grants = crate::authn::binding_grants(state, &principal, &groups).await?;
            Principal {
                id: principal,
                kind,
                groups,
                grants,
                environment,
                token_id: None,
                issuer: Some(issuer),
                expires_at: None,
                attributes,
            }
        }
    };
    p.expires_at = Some(
        p.expires_at
            .map_or(record.expires_at, |e| e.min(record.expires_at)),
    );
    Ok(p)
}

/// Opens a session for a verified principal: stores its record and returns
/// the `Set-Cookie` value and the CSRF token.
pub(crate) async fn open(
    state: &AppState,
    principal: &Principal,
) -> Result<(HeaderValue, String, DateTime<Utc>), ApiError> {
    let ttl =
        Duration::seconds(i64::try_from(state.config.console.session_ttl_secs).unwrap_or(3600));
    let now = Utc::now();
    let mut expires_at = now + ttl;
    if let Some(e) = principal.expires_at {
        expires_at = expires_at.min(e);
    }
    let origin = match (&principal.token_id, &principal.issuer) {
        (Some(token_id), _) => SessionOrigin::ApiToken {
            token_id: token_id.clone(),
        },
        (None, Some(issuer)) => SessionOrigin::Oidc {
            principal: principal.id.clone(),
            kind: principal.kind,
            groups: principal.groups.clone(),
            environment: principal.environment.clone(),
            issuer: issuer.clone(),
            attributes: principal.attributes.clone(),
        },
        (None, None) => return Err(ApiError::internal("a principal with no credential")),
    };
    let id = super::random_b64(16)?;
    let secret = Zeroizing::new(super::random_b64(32)?);
    let record = SessionRecord {
        id: id.clone(),
        secret_sha256: sha256_hex(secret.as_bytes()),
        created_at: now,
        expires_at,
        origin,
    };
    state.store.console_sessions().create(&id, &record).await?;
    let max_age = (expires_at - now).num_seconds().max(0);
    let cookie = Zeroizing::new(format!(
        "{}={id}.{}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        cookie_name(state),
        secret.as_str(),
        if secure(state) { "; Secure" } else { "" },
    ));
    let value = HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::internal("session cookie is not a header value"))?;
    Ok((value, csrf_of(&secret), expires_at))
}

fn clear_cookie(state: &AppState) -> HeaderValue {
    let v = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(state),
        if secure(state) { "; Secure" } else { "" },
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("mv_session=; Max-Age=0"))
}

async fn view(
    state: &AppState,
    principal: Principal,
    csrf_token: String,
    expires_at: DateTime<Utc>,
) -> Result<SessionView, ApiError> {
    Ok(SessionView {
        csrf_token,
        expires_at,
        whoami: crate::routes::whoami_of(state, principal).await?,
    })
}

/// `POST /ui/api/session`: signs in with an API token.
pub async fn sign_in(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    crate::audit::note_channel("ui");
    if !same_origin(&parts.headers) {
        return Err(csrf_refused());
    }
    let source = crate::authn::source_addr(&parts);
    let rid = crate::gate::RequestId::from_headers(&parts.headers).map(|r| r.0);
    let token = body.token.trim();
    if !token.starts_with(modelvault_auth::TOKEN_PREFIX) {
        crate::authn::record_failure(&state, source, rid, "api-token", "malformed");
        return Err(crate::authn::unauthenticated());
    }
    let principal = crate::authn::verify_bearer(&state, token, source, rid).await?;
    let (cookie, csrf, expires_at) = open(&state, &principal).await?;
    tracing::info!(principal = %principal.id, "console session opened");
    let v = view(&state, principal, csrf, expires_at).await?;
    Ok(([(SET_COOKIE, cookie)], Json(v)).into_response())
}

/// `GET /ui/api/session`: who is signed in, and the CSRF token.
pub async fn current(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(p): Authenticated,
) -> Result<Json<SessionView>, ApiError> {
    let cookie = cookie_value(&headers, &state)
        .ok_or_else(|| ApiError::unauthenticated("no console session (sign in at /ui/)"))?;
    let (_, secret) = split_cookie(&cookie).ok_or_else(crate::authn::unauthenticated)?;
    let record = session_record(&state, &cookie)
        .await
        .map_err(|_| crate::authn::unauthenticated())?;
    Ok(Json(
        view(&state, p, csrf_of(secret), record.expires_at).await?,
    ))
}

/// `DELETE /ui/api/session`: signs out (the session is revoked in the
/// store, for every server).
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(p): Authenticated,
) -> Result<Response, ApiError> {
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(ApiError::bad_request(
            "sign-out ends the cookie's session: send the session cookie, not a bearer token",
        ));
    }
    let cookie = cookie_value(&headers, &state)
        .ok_or_else(|| ApiError::unauthenticated("no console session to sign out of"))?;
    let (id, _) = split_cookie(&cookie).ok_or_else(crate::authn::unauthenticated)?;
    // The cookie's own session (id and secret), not just any id.
    session_record(&state, &cookie)
        .await
        .map_err(|_| crate::authn::unauthenticated())?;
    state
        .store
        .console_sessions()
        .revoke(
            id,
            &SignedOut {
                id,
                at: Utc::now(),
                by: &p.id,
            },
        )
        .await?;
    tracing::info!(principal = %p.id, "console session closed");
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, clear_cookie(&state))]).into_response())
}
