//! The signed envelope of decision receipts: a JWS in compact
//! serialization (RFC 7515) with EdDSA over Ed25519 (RFC 8037), header
//! `{"alg":"EdDSA","typ":TYP,"kid":"<hex public key>"}`. The claims are
//! the audit crate's business (`modelvault_audit::Receipt`); this module
//! only signs and checks, so the CLI, the server and the Python SDK verify
//! with the same code.
//!
//! Verification accepts exactly `alg` `EdDSA` and the expected `typ`, over
//! the exact transmitted `header.payload` bytes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};

use crate::ReleaseError;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Signs `payload` (JSON bytes) as a compact JWS of type `typ`.
pub fn sign(key: &ring::signature::Ed25519KeyPair, typ: &str, payload: &[u8]) -> String {
    use ring::signature::KeyPair as _;
    let header = Header {
        alg: "EdDSA".into(),
        typ: typ.into(),
        kid: hex::encode(key.public_key().as_ref()),
    };
    // A struct of three strings always serializes.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let input = format!("{}.{}", B64URL.encode(header), B64URL.encode(payload));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64URL.encode(sig.as_ref()))
}

/// Checks a compact JWS of type `typ` against `public_key` (raw 32 bytes of
/// Ed25519) and returns its payload bytes.
pub fn verify(jws: &str, typ: &str, public_key: &[u8]) -> Result<Vec<u8>, ReleaseError> {
    let bad = ReleaseError::Receipt;
    let mut parts = jws.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a compact JWS (three dot-separated parts)"));
    };
    let header: Header = B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(bad("the header is not a receipt header"))?;
    if header.alg != "EdDSA" || header.typ != typ {
        return Err(bad("the header names another algorithm or type"));
    }
    let sig = B64URL
        .decode(s)
        .map_err(|_| bad("the signature is not base64url"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| bad("the signature does not verify with this public key"))?;
    B64URL
        .decode(p)
        .map_err(|_| bad("the payload is not base64url"))
}

/// The signer's public key (hex) a JWS names, unverified: to pick the key
/// to verify with.
pub fn key_id(jws: &str) -> Option<String> {
    let h = jws.trim().split('.').next()?;
    let header: Header = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
    Some(header.kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifies_and_refuses_forgeries() {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let pk = key.public_key().as_ref().to_vec();
        let jws = sign(&key, "t", br#"{"a":1}"#);
        assert_eq!(verify(&jws, "t", &pk).unwrap(), br#"{"a":1}"#);
        assert_eq!(key_id(&jws).unwrap(), hex::encode(&pk));
        assert!(verify(&jws, "other", &pk).is_err());
        let parts: Vec<&str> = jws.split('.').collect();
        let swapped = format!("{}.{}.{}", parts[0], B64URL.encode(br#"{"a":2}"#), parts[2]);
        assert!(verify(&swapped, "t", &pk).is_err());
        let none = format!(
            "{}.{}.",
            B64URL.encode(br#"{"alg":"none","typ":"t","kid":""}"#),
            parts[1]
        );
        assert!(verify(&none, "t", &pk).is_err());
        let doc2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key2 = ring::signature::Ed25519KeyPair::from_pkcs8(doc2.as_ref()).unwrap();
        assert!(verify(&jws, "t", key2.public_key().as_ref()).is_err());
        assert!(verify("a.b", "t", &pk).is_err());
    }
}
