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

pub use modelvault_storage::manifest_digest;

/// Signs `r` as a compact JWS ([`modelvault_release::jws`]).
pub fn sign_receipt(
    key: &ring::signature::Ed25519KeyPair,
    r: &Receipt,
) -> Result<String, AuditError> {
    let payload = serde_json::to_vec(r).map_err(|e| AuditError::Invalid(e.to_string()))?;
    Ok(modelvault_release::jws::sign(key, RECEIPT_TYPE, &payload))
}

/// Checks a compact JWS receipt against `public_key` (raw 32 bytes) and
/// returns its claims.
pub fn verify_receipt(jws: &str, public_key: &[u8]) -> Result<Receipt, AuditError> {
    let payload = modelvault_release::jws::verify(jws, RECEIPT_TYPE, public_key)
        .map_err(|e| AuditError::Invalid(e.to_string()))?;
    serde_json::from_slice(&payload)
        .map_err(|e| AuditError::Invalid(format!("receipt: the payload is not a receipt ({e})")))
}

/// The signer's public key (hex) a receipt names, unverified.
pub fn receipt_key_id(jws: &str) -> Option<String> {
    modelvault_release::jws::key_id(jws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

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
