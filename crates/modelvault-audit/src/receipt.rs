//! Signed decision receipts: what a server hands a workload with every
//! released download and key, as proof of why it got it.
//!
//! A receipt is a JWS in compact serialization (RFC 7515) signed with
//! EdDSA (Ed25519, RFC 8037) by the audit signing key, the key that signs
//! checkpoints. Invariants a reader must keep:
//! - a receipt is made only after its intent record is durable, and names
//!   that record (`audit.chain`, `audit.seq`): `audit verify --receipts`
//!   reports a receipt whose record the trail lacks;
//! - verification accepts exactly `alg` `EdDSA` and `typ`
//!   [`RECEIPT_TYPE`], the signature over the exact transmitted
//!   `header.payload` bytes, and nothing unsigned;
//! - a receipt holds no secret: the principal's verified facts, the
//!   version, digests of plaintext files the holder was allowed, decisions.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AuditError, DecisionRef, PrincipalRef};

/// The response header that carries a receipt.
pub const RECEIPT_HEADER: &str = "Modelvault-Receipt";
/// The JWS `typ` of a receipt.
pub const RECEIPT_TYPE: &str = "modelvault-receipt+jws";

/// Where the decision is in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPointer {
    /// The chain of the intent record.
    pub chain: String,
    /// Its sequence number.
    pub seq: u64,
}

/// A receipt's claims (its JWS payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Format version: 1.
    pub v: u32,
    /// The request id.
    pub request_id: String,
    /// The verified principal.
    pub principal: PrincipalRef,
    /// `download` or `key-release`.
    pub action: String,
    /// The caller's environment.
    pub environment: String,
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version (resolved).
    pub version: String,
    /// [`manifest_digest`] of the version's files.
    pub manifest_sha256: String,
    /// The file, for a download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Its SHA-256 (hex), for a download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
    /// Byte range `START-END` (end exclusive) served, for a download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Every plugin's decision, with its component's SHA-256.
    pub decisions: Vec<DecisionRef>,
    /// When the intent was recorded.
    pub time: DateTime<Utc>,
    /// The intent record.
    pub audit: AuditPointer,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    typ: String,
    /// Hex Ed25519 public key of the signer.
    kid: String,
}

pub use modelvault_storage::manifest_digest;

/// Signs `r` as a compact JWS.
pub fn sign_receipt(
    key: &ring::signature::Ed25519KeyPair,
    r: &Receipt,
) -> Result<String, AuditError> {
    use ring::signature::KeyPair as _;
    let header = Header {
        alg: "EdDSA".into(),
        typ: RECEIPT_TYPE.into(),
        kid: hex::encode(key.public_key().as_ref()),
    };
    let h =
        B64URL.encode(serde_json::to_vec(&header).map_err(|e| AuditError::Invalid(e.to_string()))?);
    let p = B64URL.encode(serde_json::to_vec(r).map_err(|e| AuditError::Invalid(e.to_string()))?);
    let signing_input = format!("{h}.{p}");
    let sig = key.sign(signing_input.as_bytes());
    Ok(format!("{signing_input}.{}", B64URL.encode(sig.as_ref())))
}

/// Checks a compact JWS receipt against `public_key` (raw 32 bytes) and
/// returns its claims.
pub fn verify_receipt(jws: &str, public_key: &[u8]) -> Result<Receipt, AuditError> {
    let bad = |why: &str| AuditError::Invalid(format!("receipt: {why}"));
    let jws = jws.trim();
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a compact JWS (three dot-separated parts)"));
    };
    let header: Header = B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("header is not a receipt header"))?;
    if header.alg != "EdDSA" || header.typ != RECEIPT_TYPE {
        return Err(bad("header names another algorithm or type"));
    }
    let sig = B64URL
        .decode(s)
        .map_err(|_| bad("signature is not base64url"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| bad("signature does not verify with this public key"))?;
    let claims = B64URL
        .decode(p)
        .map_err(|_| bad("payload is not base64url"))?;
    serde_json::from_slice(&claims).map_err(|e| bad(&format!("payload: {e}")))
}

/// The signer's public key (hex) a receipt names, unverified: to pick the
/// key to verify with.
pub fn receipt_key_id(jws: &str) -> Option<String> {
    let h = jws.trim().split('.').next()?;
    let header: Header = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
    Some(header.kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Receipt {
        Receipt {
            v: 1,
            request_id: "r1".into(),
            principal: PrincipalRef {
                id: "alice".into(),
                kind: "person".into(),
                environment: "dev".into(),
                ..Default::default()
            },
            action: "download".into(),
            environment: "dev".into(),
            namespace: "nlp".into(),
            model: "m".into(),
            version: "1".into(),
            manifest_sha256: manifest_digest([("a", "00"), ("b", "11")]),
            file: Some("a".into()),
            file_sha256: Some("00".into()),
            range: Some("0-2".into()),
            decisions: vec![],
            time: Utc::now(),
            audit: AuditPointer {
                chain: "c".into(),
                seq: 3,
            },
        }
    }

    #[test]
    fn signs_and_verifies_and_refuses_tampering() {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        use ring::signature::KeyPair as _;
        let pk = key.public_key().as_ref().to_vec();
        let r = sample();
        let jws = sign_receipt(&key, &r).unwrap();
        assert_eq!(verify_receipt(&jws, &pk).unwrap(), r);
        assert_eq!(receipt_key_id(&jws).unwrap(), hex::encode(&pk));
        // Another payload under the same signature.
        let parts: Vec<&str> = jws.split('.').collect();
        let mut other = r.clone();
        other.principal.id = "mallory".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(serde_json::to_vec(&other).unwrap()),
            parts[2]
        );
        assert!(verify_receipt(&forged, &pk).is_err());
        // alg none.
        let none = format!(
            "{}.{}.",
            B64URL.encode(br#"{"alg":"none","typ":"modelvault-receipt+jws","kid":""}"#),
            parts[1]
        );
        assert!(verify_receipt(&none, &pk).is_err());
        // Another key.
        let doc2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key2 = ring::signature::Ed25519KeyPair::from_pkcs8(doc2.as_ref()).unwrap();
        assert!(verify_receipt(&jws, key2.public_key().as_ref()).is_err());
    }

    #[test]
    fn manifest_digest_is_sha256sum_of_sorted_lines() {
        // printf '11  b\n00  a\n' | sort -k2 | sha256sum
        let d = manifest_digest([("b", "11"), ("a", "00")]);
        let expect = hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            b"00  a\n11  b\n",
        ));
        assert_eq!(d, expect);
    }
}
