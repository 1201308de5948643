//! Signed checkpoints: Ed25519 over the chain id, sequence number, head
//! hash and time, so a verifier holding only the public key can prove that
//! nothing up to the checkpoint was altered or dropped.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AuditError;

/// One checkpoint, as stored under `audit/checkpoints/<chain>/` and shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Chain id.
    pub chain: String,
    /// Sequence number of the last record covered.
    pub seq: u64,
    /// Hex SHA-256 of that record's stored line.
    pub head: String,
    /// When signed.
    pub time: DateTime<Utc>,
    /// Hex Ed25519 public key that signed.
    pub public_key: String,
    /// Base64 Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes signed.
    pub fn signed_bytes(chain: &str, seq: u64, head: &str, time: &DateTime<Utc>) -> Vec<u8> {
        format!(
            "modelvault-audit-checkpoint-v1\n{chain}\n{seq}\n{head}\n{}",
            time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
        .into_bytes()
    }

    /// Signs a checkpoint.
    pub fn sign(key: &ring::signature::Ed25519KeyPair, chain: &str, seq: u64, head: &str) -> Self {
        use ring::signature::KeyPair as _;
        let time = Utc::now();
        let sig = key.sign(&Self::signed_bytes(chain, seq, head, &time));
        Self {
            chain: chain.into(),
            seq,
            head: head.into(),
            time,
            public_key: hex::encode(key.public_key().as_ref()),
            signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        }
    }

    /// Checks the signature against `public_key` (raw 32 bytes).
    pub fn verify(&self, public_key: &[u8]) -> Result<(), AuditError> {
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| AuditError::BadCheckpoint(self.seq))?;
        let msg = Self::signed_bytes(&self.chain, self.seq, &self.head, &self.time);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
            .verify(&msg, &sig)
            .map_err(|_| AuditError::BadCheckpoint(self.seq))
    }
}
