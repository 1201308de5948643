//! API tokens: `mv_<id>_<secret>`, id 16 lowercase hex digits (lookup key),
//! secret 32 random bytes in unpadded base64url. Only SHA-256(secret) is
//! stored; verification compares in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::{AuthError, PrincipalKind};

/// Prefix of every Modelvault API token (lets secret scanners find them).
pub const TOKEN_PREFIX: &str = "mv_";

/// A token's public id.
pub type TokenId = String;

/// A token's full text. Zeroized on drop; `Debug` prints `[redacted]`.
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// The full `mv_<id>_<secret>` text, to hand to the user once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret([redacted])")
    }
}

/// The stored form of a token (an authenticated record in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id.
    pub id: TokenId,
    /// Unique name.
    pub name: String,
    /// Principal the token acts as.
    pub principal: String,
    /// Person or service.
    #[serde(default)]
    pub kind: PrincipalKind,
    /// Roles.
    pub roles: Vec<String>,
    /// Namespaces (`*` = all).
    pub namespaces: Vec<String>,
    /// Declared environment.
    pub environment: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Principal that created it.
    pub created_by: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    /// Groups its principal is in (as policies see them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// What it may use models for (`training`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

impl TokenRecord {
    /// Checks `secret` against the stored hash (constant time) and expiry.
    pub fn verify(&self, secret: &str, now: DateTime<Utc>) -> Result<(), AuthError> {
        let got = hash_secret(secret);
        let ok: bool = got.as_bytes().ct_eq(self.secret_sha256.as_bytes()).into();
        if !ok {
            return Err(AuthError::InvalidToken);
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::InvalidToken);
        }
        Ok(())
    }
}

fn hash_secret(secret: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        secret.as_bytes(),
    ))
}

/// A fresh token: its id, full text, and the secret's hash to store.
pub fn generate_token() -> Result<(TokenId, TokenSecret, String), AuthError> {
    let rng = SystemRandom::new();
    let mut id = [0u8; 8];
    rng.fill(&mut id).map_err(|_| AuthError::Random)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill(secret.as_mut()).map_err(|_| AuthError::Random)?;
    let id = hex::encode(id);
    let secret_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
    let hash = hash_secret(&secret_text);
    let full = Zeroizing::new(format!("{TOKEN_PREFIX}{id}_{}", secret_text.as_str()));
    Ok((id, TokenSecret(full), hash))
}

/// Splits a bearer value into (id, secret) without allocating the secret.
pub fn parse_bearer(token: &str) -> Result<(&str, &str), AuthError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(AuthError::MalformedToken)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::MalformedToken)?;
    let id_ok = id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if id_ok && secret_ok {
        Ok((id, secret))
    } else {
        Err(AuthError::MalformedToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_verify() {
        let (id, full, hash) = generate_token().unwrap();
        let (pid, secret) = parse_bearer(full.expose()).unwrap();
        assert_eq!(pid, id);
        let now = Utc::now();
        let mut rec = TokenRecord {
            id: id.clone(),
            name: "n".into(),
            principal: "p".into(),
            kind: PrincipalKind::Person,
            roles: vec![],
            namespaces: vec![],
            environment: "dev".into(),
            created_at: now,
            created_by: "x".into(),
            expires_at: None,
            secret_sha256: hash,
            groups: vec![],
            purpose: None,
        };
        rec.verify(secret, now).unwrap();
        let mut wrong = secret.to_string();
        wrong.replace_range(0..1, if wrong.starts_with('A') { "B" } else { "A" });
        assert_eq!(rec.verify(&wrong, now), Err(AuthError::InvalidToken));
        rec.expires_at = Some(now);
        assert_eq!(rec.verify(secret, now), Err(AuthError::InvalidToken));
        assert_eq!(format!("{full:?}"), "TokenSecret([redacted])");
        for bad in [
            "",
            "mv_",
            "mv_abc_def",
            "xx_0123456789abcdef_",
            &full.expose().replace("mv_", "mw_"),
        ] {
            assert!(parse_bearer(bad).is_err(), "{bad}");
        }
    }
}
