//! Verifies OIDC access tokens (JWTs) from the issuers named in config and
//! maps their claims to an identity.
//!
//! Invariants a reader must keep:
//! - nothing from a token is trusted before its signature verifies, except
//!   the `iss` claim used to *choose* the issuer config (then verified);
//! - the algorithm comes from the issuer's allow-list (RS256, ES256, EdDSA)
//!   and must fit the key's `kty`/`crv`/`alg`: an HMAC or `none` token can
//!   never verify, whatever its header says;
//! - `iss`, `aud`, `exp` are required and `nbf` checked, with a small leeway;
//!   where the issuer follows RFC 9068, `typ` must be `at+jwt` so an ID
//!   token is never taken for an access token;
//! - the JWKS is fetched over https (http only with the explicit test flag)
//!   and refetched on an unknown `kid` at most once per `jwks_min_refresh_secs`;
//! - the caller's kind, groups and environment come from claims the issuer
//!   signed, through rules in config: a client never picks them.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// Why a token was refused. The code is stable (audit records and metrics
/// use it); the 401 a client sees never carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// Not a JWT at all.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm the issuer's allow-list lacks (this
    /// covers `none` and HS256 with a public key).
    #[error("algorithm {0} not allowed")]
    AlgorithmNotAllowed(String),
    /// The `iss` claim names no configured issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// `typ` is not `at+jwt` where the issuer requires it (ID tokens).
    #[error("not an access token (typ {0:?})")]
    WrongTokenType(Option<String>),
    /// No key with the token's `kid`, even after a refresh.
    #[error("unknown key id")]
    UnknownKid,
    /// The key's type or algorithm does not fit the header's algorithm.
    #[error("key does not fit algorithm {0}")]
    KeyMismatch(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` does not match.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not match.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is missing or malformed.
    #[error("missing or invalid claim {0}")]
    Claim(String),
    /// The issuer's discovery document or keys cannot be fetched.
    #[error("issuer keys unavailable: {0}")]
    KeysUnavailable(String),
    /// A mapping rule gave an environment the server does not declare.
    #[error("environment {0:?} is not declared")]
    UndeclaredEnvironment(String),
    /// The issuer config is invalid.
    #[error("invalid issuer config: {0}")]
    Config(String),
}

impl OidcError {
    /// A stable, audit-ready reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Self::UnknownIssuer => "unknown_issuer",
            Self::WrongTokenType(_) => "wrong_token_type",
            Self::UnknownKid => "unknown_kid",
            Self::KeyMismatch(_) => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Claim(_) => "invalid_claims",
            Self::KeysUnavailable(_) => "issuer_unavailable",
            Self::UndeclaredEnvironment(_) => "undeclared_environment",
            Self::Config(_) => "config",
        }
    }
}

/// One `[[oidc.issuers]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer URL, exactly as in its tokens' `iss`.
    pub issuer: String,
    /// The audience Modelvault's access tokens carry (`aud`).
    pub audience: String,
    /// The claim that holds the caller's groups (a list of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claims copied, verified, into the principal's attributes that
    /// policies see (`principal.attributes`), e.g. `["department",
    /// "clearance"]`. Strings, numbers and booleans are copied as text, a
    /// list of strings joined with `,`; anything else is left out.
    #[serde(default)]
    pub attribute_claims: Vec<String>,
    /// Accept an `http://` issuer (tests on loopback only; never in
    /// production).
    #[serde(default)]
    pub allow_http_issuer: bool,
    /// Signature algorithms accepted: any of RS256, ES256, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Require `typ: at+jwt` (RFC 9068). Turn off only for an issuer that
    /// does not follow RFC 9068.
    #[serde(default = "yes")]
    pub require_at_jwt: bool,
    /// Clock leeway in seconds for `exp` and `nbf` (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Least seconds between two JWKS fetches triggered by unknown `kid`s.
    #[serde(default = "default_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// Seconds after which the cached JWKS is fetched again even for a known
    /// `kid`, so keys the issuer withdrew stop verifying (if the issuer is
    /// unreachable then, the cached keys keep working and a warning is logged).
    #[serde(default = "default_max_age")]
    pub jwks_max_age_secs: u64,
    /// A PEM CA certificate to trust for this issuer's https endpoints,
    /// besides the system's (a private corporate CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Prefix put before the subject to make the principal id (e.g.
    /// `corp:`), so two issuers' subjects never collide.
    #[serde(default)]
    pub principal_prefix: String,
    /// The public client `modelvault login` uses at this issuer (device
    /// authorization flow); absent = `login` does not offer this issuer.
    #[serde(default)]
    pub cli_client_id: Option<String>,
    /// Scopes `modelvault login` asks for.
    #[serde(default = "default_cli_scope")]
    pub cli_scope: String,
    /// How the principal's kind is decided.
    #[serde(default)]
    pub kind: KindRules,
    /// How the principal's environment is decided.
    #[serde(default)]
    pub environment: EnvironmentRules,
}

/// `[oidc.issuers.kind]`: person or service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRules {
    /// A claim whose value is `person` or `service`, if the issuer sets one.
    #[serde(default)]
    pub claim: Option<String>,
    /// Client ids (`client_id` or `azp`) whose tokens are workloads.
    #[serde(default)]
    pub service_clients: Vec<String>,
}

/// `[oidc.issuers.environment]`: which environment the identity is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRules {
    /// A claim naming the environment, if the issuer sets one.
    #[serde(default)]
    pub claim: Option<String>,
    /// Client id → environment (workload identities).
    #[serde(default)]
    pub clients: BTreeMap<String, String>,
    /// The environment when no rule applies (default: the server's default).
    #[serde(default)]
    pub default: Option<String>,
}

fn default_cli_scope() -> String {
    "openid".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn yes() -> bool {
    true
}
fn default_leeway() -> u64 {
    30
}
fn default_min_refresh() -> u64 {
    10
}
fn default_max_age() -> u64 {
    3600
}

impl IssuerConfig {
    /// Checks the table on its own.
    pub fn validate(&self) -> Result<(), OidcError> {
        let url = url::Url::parse(&self.issuer)
            .map_err(|e| OidcError::Config(format!("issuer {:?}: {e}", self.issuer)))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http_issuer => {}
            "http" => {
                return Err(OidcError::Config(format!(
                    "issuer {} is http://: set allow_http_issuer = true (tests only)",
                    self.issuer
                )));
            }
            other => {
                return Err(OidcError::Config(format!(
                    "issuer scheme {other} is not https"
                )));
            }
        }
        if self.audience.is_empty() {
            return Err(OidcError::Config("audience is empty".into()));
        }
        if self.algorithms.is_empty() {
            return Err(OidcError::Config("algorithms is empty".into()));
        }
        for a in &self.algorithms {
            parse_allowed_alg(a)?;
        }
        if self.leeway_secs > 300 {
            return Err(OidcError::Config("leeway_secs is at most 300".into()));
        }
        Ok(())
    }
}

fn parse_allowed_alg(name: &str) -> Result<Algorithm, OidcError> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(OidcError::Config(format!(
            "algorithm {other:?} is not supported (use RS256, ES256 or EdDSA)"
        ))),
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Principal id (prefix + subject).
    pub principal: String,
    /// True for a workload.
    pub service: bool,
    /// Groups from the configured claim.
    pub groups: Vec<String>,
    /// Environment from the rules, or `None` for the server default.
    pub environment: Option<String>,
    /// The verified issuer.
    pub issuer: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// The client the token was issued to (`client_id` or `azp`).
    pub client_id: Option<String>,
    /// The configured `attribute_claims` present in the token, as text.
    pub attributes: std::collections::BTreeMap<String, String>,
}

struct KeyCache {
    jwks_uri: Option<String>,
    keys: HashMap<String, Jwk>,
    fetched: Option<Instant>,
}

struct Issuer {
    config: IssuerConfig,
    allowed: Vec<Algorithm>,
    cache: Mutex<KeyCache>,
}

/// All configured issuers, with their cached keys.
#[derive(Clone)]
pub struct Verifier {
    issuers: Arc<Vec<Issuer>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| &i.config.issuer)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl Verifier {
    /// Builds the verifier; keys are fetched on first use. `extra_roots`
    /// are PEM CA certificates trusted besides the system's (tests).
    pub fn new(configs: Vec<IssuerConfig>) -> Result<Self, OidcError> {
        let mut issuers = Vec::new();
        for c in configs {
            c.validate()?;
            let allowed = c
                .algorithms
                .iter()
                .map(|a| parse_allowed_alg(a))
                .collect::<Result<_, _>>()?;
            issuers.push(Issuer {
                config: c,
                allowed,
                cache: Mutex::new(KeyCache {
                    jwks_uri: None,
                    keys: HashMap::new(),
                    fetched: None,
                }),
            });
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .redirect(reqwest::redirect::Policy::none());
        for i in issuers.iter() {
            if let Some(path) = &i.config.ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| OidcError::Config(format!("ca_cert {}: {e}", path.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| OidcError::Config(format!("ca_cert {}: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(OidcError::Config(format!(
                        "ca_cert {} holds no certificate",
                        path.display()
                    )));
                }
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
        }
        let http = builder
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(Self {
            issuers: Arc::new(issuers),
            http,
        })
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Whether `bearer` has the shape of a JWT (three dot-separated parts).
    pub fn looks_like_jwt(bearer: &str) -> bool {
        bearer.split('.').count() == 3
    }

    /// Verifies `token` and maps its claims. `declared` lists the server's
    /// environments.
    pub async fn verify(&self, token: &str, declared: &[String]) -> Result<Identity, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                OidcError::AlgorithmNotAllowed("unknown".into())
            }
            _ => unverified_alg(token).map_or(OidcError::Malformed, OidcError::AlgorithmNotAllowed),
        })?;
        // Choose the issuer by the unverified claim; everything is then
        // checked against that issuer's keys.
        let unverified: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| OidcError::Malformed)?;
        let iss = unverified
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or_else(|| OidcError::Claim("iss".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(OidcError::UnknownIssuer)?;
        if !issuer.allowed.contains(&header.alg) {
            return Err(OidcError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        if issuer.config.require_at_jwt {
            let ok = header.typ.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
            });
            if !ok {
                return Err(OidcError::WrongTokenType(header.typ.clone()));
            }
        }
        let kid = header.kid.as_deref().ok_or(OidcError::UnknownKid)?;
        let jwk = self.key(issuer, kid).await?;
        check_key_fits(&jwk, header.alg)?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| OidcError::KeyMismatch(format!("{:?}", header.alg)))?;
        let mut v = Validation::new(header.alg);
        v.leeway = issuer.config.leeway_secs;
        v.validate_nbf = true;
        v.set_issuer(&[&issuer.config.issuer]);
        v.set_audience(&[&issuer.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => OidcError::BadSignature,
                K::ExpiredSignature => OidcError::Expired,
                K::ImmatureSignature => OidcError::NotYetValid,
                K::InvalidIssuer => OidcError::WrongIssuer,
                K::InvalidAudience => OidcError::WrongAudience,
                K::MissingRequiredClaim(c) | K::InvalidClaimFormat(c) => {
                    OidcError::Claim(c.clone())
                }
                K::InvalidAlgorithm => OidcError::KeyMismatch(format!("{:?}", header.alg)),
                _ => OidcError::BadSignature,
            }
        })?;
        map_claims(&issuer.config, &data.claims, declared)
    }

    async fn key(&self, issuer: &Issuer, kid: &str) -> Result<Jwk, OidcError> {
        let mut cache = issuer.cache.lock().await;
        let max_age = Duration::from_secs(issuer.config.jwks_max_age_secs);
        if cache.fetched.is_some_and(|t| t.elapsed() >= max_age)
            && let Err(e) = self.refresh(issuer, &mut cache).await
        {
            tracing::warn!(issuer = %issuer.config.issuer, error = %e, "could not refresh issuer keys; using the cached ones");
        }
        if let Some(k) = cache.keys.get(kid) {
            return Ok(k.clone());
        }
        let min = Duration::from_secs(issuer.config.jwks_min_refresh_secs);
        if cache.fetched.is_some_and(|t| t.elapsed() < min) {
            return Err(OidcError::UnknownKid);
        }
        self.refresh(issuer, &mut cache).await?;
        cache.keys.get(kid).cloned().ok_or(OidcError::UnknownKid)
    }

    async fn refresh(&self, issuer: &Issuer, cache: &mut KeyCache) -> Result<(), OidcError> {
        // Rate limit failures too, so a dead issuer is not hammered.
        cache.fetched = Some(Instant::now());
        let c = &issuer.config;
        let jwks_uri = match &cache.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    c.issuer.trim_end_matches('/')
                );
                let d: Discovery = self.get_json(c, &url).await?;
                if d.issuer != c.issuer {
                    return Err(OidcError::KeysUnavailable(format!(
                        "discovery names issuer {:?}, expected {:?}",
                        d.issuer, c.issuer
                    )));
                }
                cache.jwks_uri = Some(d.jwks_uri.clone());
                d.jwks_uri
            }
        };
        let raw: RawJwks = self.get_json(c, &jwks_uri).await?;
        let mut keys = HashMap::new();
        for k in raw.keys {
            // Skip keys this crate cannot parse (other algorithms) rather
            // than failing the whole set.
            let Ok(jwk) = serde_json::from_value::<Jwk>(k) else {
                continue;
            };
            if let Some(kid) = jwk.common.key_id.clone() {
                keys.insert(kid, jwk);
            }
        }
        tracing::info!(issuer = %c.issuer, keys = keys.len(), "fetched issuer keys");
        cache.keys = keys;
        cache.fetched = Some(Instant::now());
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        c: &IssuerConfig,
        url: &str,
    ) -> Result<T, OidcError> {
        let parsed = url::Url::parse(url).map_err(|e| OidcError::KeysUnavailable(e.to_string()))?;
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && c.allow_http_issuer) {
            return Err(OidcError::KeysUnavailable(format!("{url} is not https")));
        }
        let resp = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| OidcError::KeysUnavailable(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(OidcError::KeysUnavailable(format!(
                "{url}: HTTP {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map_err(|e| OidcError::KeysUnavailable(format!("{url}: {e}")))
    }
}

/// The `alg` of a header that jsonwebtoken refused to parse (e.g. `none`).
fn unverified_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// The key must be of the algorithm's family and curve, and if it names an
/// algorithm, that one.
fn check_key_fits(jwk: &Jwk, alg: Algorithm) -> Result<(), OidcError> {
    let mismatch = || OidcError::KeyMismatch(format!("{alg:?}"));
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if !fits {
        return Err(mismatch());
    }
    if let Some(named) = jwk.common.key_algorithm
        && format!("{named:?}") != format!("{alg:?}")
    {
        return Err(mismatch());
    }
    Ok(())
}

fn map_claims(
    c: &IssuerConfig,
    claims: &serde_json::Value,
    declared: &[String],
) -> Result<Identity, OidcError> {
    let str_claim = |name: &str| claims.get(name).and_then(|v| v.as_str());
    let sub = str_claim("sub")
        .filter(|s| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control))
        .ok_or_else(|| OidcError::Claim("sub".into()))?;
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| OidcError::Claim("exp".into()))?;
    let client_id = str_claim("client_id").or_else(|| str_claim("azp"));
    let groups = match claims.get(&c.groups_claim) {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|g| {
                g.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| OidcError::Claim(c.groups_claim.clone()))
            })
            .collect::<Result<_, _>>()?,
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(_) => return Err(OidcError::Claim(c.groups_claim.clone())),
    };
    let service = match c.kind.claim.as_deref().and_then(str_claim) {
        Some("service") => true,
        Some("person") => false,
        Some(_) => return Err(OidcError::Claim("kind".into())),
        None => client_id.is_some_and(|id| c.kind.service_clients.iter().any(|s| s == id)),
    };
    let environment = if let Some(env) = c.environment.claim.as_deref().and_then(str_claim) {
        Some(env.to_string())
    } else if let Some(env) = client_id.and_then(|id| c.environment.clients.get(id)) {
        Some(env.clone())
    } else {
        c.environment.default.clone()
    };
    if let Some(env) = &environment
        && !declared.contains(env)
    {
        return Err(OidcError::UndeclaredEnvironment(env.clone()));
    }
    let mut attributes = std::collections::BTreeMap::new();
    for name in &c.attribute_claims {
        let text = match claims.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                Some(v.to_string())
            }
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(",")),
            _ => None,
        };
        if let Some(t) = text.filter(|t| t.len() <= 1024 && !t.chars().any(char::is_control)) {
            attributes.insert(name.clone(), t);
        }
    }
    Ok(Identity {
        attributes,
        principal: format!("{}{sub}", c.principal_prefix),
        service,
        groups,
        environment,
        issuer: c.issuer.clone(),
        expires_at: exp,
        client_id: client_id.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IssuerConfig {
        toml::from_str(
            r#"issuer = "http://127.0.0.1:1/"
audience = "urn:modelvault"
allow_http_issuer = true
attribute_claims = ["department", "clearance", "projects", "nested"]
[kind]
service_clients = ["deployer"]
[environment.clients]
deployer = "production"
"#,
        )
        .unwrap()
    }

    #[test]
    fn config_defaults_and_rules() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.groups_claim, "groups");
        assert!(c.require_at_jwt);
        let mut http = c.clone();
        http.allow_http_issuer = false;
        assert!(http.validate().is_err());
        let mut hs = c.clone();
        hs.algorithms = vec!["HS256".into()];
        assert!(hs.validate().is_err());
    }

    #[test]
    fn claims_map_by_rules_only() {
        let c = config();
        let declared = vec!["dev".to_string(), "production".to_string()];
        let id = map_claims(
            &c,
            &serde_json::json!({"sub": "deployer", "client_id": "deployer", "exp": 1,
                "groups": ["a"], "environment": "dev"}),
            &declared,
        )
        .unwrap();
        assert!(id.service);
        assert!(id.attributes.is_empty());
        assert_eq!(id.environment.as_deref(), Some("production"));
        assert_eq!(id.groups, vec!["a"]);
        let person = map_claims(
            &c,
            &serde_json::json!({"sub": "alice", "client_id": "cli", "exp": 1,
                "department": "nlp", "clearance": 3, "projects": ["a", "b"],
                "nested": {"x": 1}, "unlisted": "never copied"}),
            &declared,
        )
        .unwrap();
        assert_eq!(
            person.attributes,
            [
                ("clearance", "3"),
                ("department", "nlp"),
                ("projects", "a,b")
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        );
        assert!(!person.service && person.environment.is_none());
        assert!(
            map_claims(
                &c,
                &serde_json::json!({"sub": "x", "exp": 1, "groups": 7}),
                &declared
            )
            .is_err()
        );
    }
}
