//! Key providers: where KEKs live, how a version's DEK is wrapped, and the
//! MAC that authenticates every control record in the store.
//!
//! Invariants a reader must keep:
//! - a KEK never leaves its provider; only wrapped DEKs and MAC tags do;
//! - a wrap's associated data binds the DEK to its version's identity
//!   ([`DekBinding`]) and to the KEK version, so a wrapped DEK moved to
//!   another version, or relabelled with another KEK version, fails;
//! - every failure is an error the caller must treat as deny.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod aws_kms;
pub mod conformance;
mod error;
mod local;
mod pkcs11;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use modelvault_format::Dek;
use serde::{Deserialize, Serialize};

pub use aws_kms::{AwsKmsProvider, AwsKmsSettings};
pub use error::KeyError;
pub use local::LocalKeyring;
pub use pkcs11::{Pkcs11Provider, Pkcs11Settings};

/// A KEK version number inside one provider (starts at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KekVersion(pub u32);

impl std::fmt::Display for KekVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Lifecycle of a KEK version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KekState {
    /// Usable for wrap (if current) and unwrap.
    Active,
    /// Key material destroyed; anything it wrapped is unreadable.
    Destroyed,
}

/// What a provider tells about one KEK version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekVersionInfo {
    /// The version.
    pub version: KekVersion,
    /// Its state.
    pub state: KekState,
    /// Whether new wraps use it.
    pub current: bool,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// A DEK wrapped by a KEK: the KEK version and the provider's opaque
/// ciphertext (for the local keyring: nonce, ciphertext and tag).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedDek {
    /// Which KEK version wrapped it.
    pub kek_version: KekVersion,
    /// Provider-specific wrapped bytes, base64 in JSON.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedDek")
            .field("kek_version", &self.kek_version)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

/// A MAC over a control record, with the id of the MAC key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMac {
    /// Provider-scoped MAC key id.
    pub key_id: String,
    /// The tag, base64 in JSON.
    #[serde(with = "b64")]
    pub tag: Vec<u8>,
}

/// The identity a version's DEK is bound to when wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DekBinding<'a> {
    /// Namespace of the model.
    pub namespace: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Version name.
    pub version: &'a str,
    /// DEK generation (1 for the first DEK, +1 per rotation).
    pub dek_generation: u32,
}

impl DekBinding<'_> {
    /// The wrap's associated data: a label and each field length-prefixed
    /// (u32 BE), then the generation (u32 BE). The provider appends the KEK
    /// version.
    pub fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        for field in [
            &b"modelvault/v1/dek-wrap"[..],
            self.namespace.as_bytes(),
            self.model.as_bytes(),
            self.version.as_bytes(),
        ] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&self.dek_generation.to_be_bytes());
        out
    }
}

/// Where KEKs live. Implemented by the local keyring; shaped so a PKCS#11
/// token (keys generated in the token, AES-GCM and HMAC done inside it) and
/// a cloud KMS (remote encrypt/decrypt/generate-mac calls) fit the same
/// calls. Every implementation must pass [`conformance::run_all`].
#[async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// A short name for logs and `keys status` (`local-keyring`, `pkcs11`).
    fn kind(&self) -> &'static str;
    /// The KEK version new wraps use.
    async fn current_kek_version(&self) -> Result<KekVersion, KeyError>;
    /// Every KEK version the provider knows, destroyed ones included.
    async fn list_kek_versions(&self) -> Result<Vec<KekVersionInfo>, KeyError>;
    /// Creates a new KEK version and makes it current.
    async fn create_kek_version(&self) -> Result<KekVersion, KeyError>;
    /// Destroys a KEK version's key material. Refuses the current version.
    async fn destroy_kek_version(&self, version: KekVersion) -> Result<(), KeyError>;
    /// Wraps `dek` under the current KEK, binding `binding`.
    async fn wrap_dek(&self, dek: &Dek, binding: &DekBinding<'_>) -> Result<WrappedDek, KeyError>;
    /// Unwraps; fails if the binding, KEK version or bytes differ.
    async fn unwrap_dek(
        &self,
        wrapped: &WrappedDek,
        binding: &DekBinding<'_>,
    ) -> Result<Dek, KeyError>;
    /// Authenticates a control record's canonical bytes.
    async fn mac(&self, message: &[u8]) -> Result<RecordMac, KeyError>;
    /// Checks a record MAC; any mismatch is [`KeyError::MacMismatch`].
    async fn verify_mac(&self, message: &[u8], mac: &RecordMac) -> Result<(), KeyError>;
}

mod b64 {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub(crate) fn b64_decode(s: &str) -> Result<Vec<u8>, KeyError> {
    B64.decode(s.as_bytes())
        .map_err(|_| KeyError::Corrupt("invalid base64".into()))
}
