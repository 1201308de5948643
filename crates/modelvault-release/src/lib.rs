//! Sealed key release (docs/FORMAT.md, "Key release"): a version's DEK
//! sealed to a workload's ephemeral X25519 public key with HPKE (RFC 9180)
//! in base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
//! AES-256-GCM.
//!
//! Invariants a reader must keep:
//! - the release context (request id, namespace, model, version, DEK
//!   generation) is the HPKE `info`, so a sealed DEK opens only for the
//!   release it was made for; the AEAD's associated data is the fixed label
//!   [`AAD`];
//! - the client's private key lives only in [`ClientKey`] (zeroized on
//!   drop by the underlying crate, never printed); an opened DEK is a
//!   [`Dek`], which zeroizes on drop.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod jws;

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use modelvault_format::{Dek, KEY_LEN};

/// The suite, as named in responses and docs.
pub const SUITE: &str = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM";
/// Associated data of every sealed DEK.
pub const AAD: &[u8] = b"modelvault/v1/sealed-dek";
/// The label that starts the HPKE `info`.
pub const INFO_LABEL: &[u8] = b"modelvault/v1/key-release";

type Kem = X25519HkdfSha256;

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A public key or encapsulated key that is not 32 bytes of X25519.
    #[error("invalid X25519 public key")]
    BadPublicKey,
    /// HPKE failed (sealing), or the sealed DEK does not open for this
    /// context and key.
    #[error("sealed DEK does not open for this release")]
    Open,
    /// HPKE failed while sealing.
    #[error("sealing failed")]
    Seal,
    /// A signed receipt that does not verify ([`jws`]).
    #[error("receipt: {0}")]
    Receipt(&'static str),
}

/// What a release is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseContext<'a> {
    /// The server's request id for the release.
    pub request_id: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Model.
    pub model: &'a str,
    /// Version.
    pub version: &'a str,
    /// DEK generation released.
    pub dek_generation: u32,
}

impl ReleaseContext<'_> {
    /// The HPKE `info`: the label, each field length-prefixed (u32 BE),
    /// then the generation (u32 BE).
    pub fn info(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        for f in [
            INFO_LABEL,
            self.request_id.as_bytes(),
            self.namespace.as_bytes(),
            self.model.as_bytes(),
            self.version.as_bytes(),
        ] {
            out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(f);
        }
        out.extend_from_slice(&self.dek_generation.to_be_bytes());
        out
    }
}

/// A sealed DEK: the encapsulated key and the AEAD ciphertext (32 + 16
/// bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDek {
    /// HPKE `enc` (the ephemeral public key), 32 bytes.
    pub enc: Vec<u8>,
    /// The sealed DEK.
    pub ciphertext: Vec<u8>,
}

/// Seals `dek` to `recipient` (32 raw bytes of X25519) for `ctx`.
pub fn seal(
    recipient: &[u8],
    dek: &Dek,
    ctx: &ReleaseContext<'_>,
) -> Result<SealedDek, ReleaseError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|_| ReleaseError::BadPublicKey)?;
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        &ctx.info(),
        dek.expose_secret(),
        AAD,
    )
    .map_err(|_| ReleaseError::Seal)?;
    Ok(SealedDek {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// A workload's ephemeral key pair.
pub struct ClientKey {
    sk: <Kem as hpke::Kem>::PrivateKey,
    pk: <Kem as hpke::Kem>::PublicKey,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey([redacted])")
    }
}

impl ClientKey {
    /// A fresh key pair from the system's random source.
    pub fn generate() -> Self {
        let (sk, pk) = Kem::gen_keypair();
        Self { sk, pk }
    }

    /// The key pair RFC 9180's DeriveKeyPair gives for `ikm` (test vectors).
    pub fn derive(ikm: &[u8]) -> Self {
        let (sk, pk) = Kem::derive_keypair(ikm);
        Self { sk, pk }
    }

    /// The key pair of a raw X25519 private key (test vectors; only with
    /// the `test-hooks` feature).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn from_private_bytes_for_tests(sk: &[u8]) -> Result<Self, ReleaseError> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(sk)
            .map_err(|_| ReleaseError::BadPublicKey)?;
        let pk = Kem::sk_to_pk(&sk);
        Ok(Self { sk, pk })
    }

    /// The public key, 32 bytes.
    pub fn public_bytes(&self) -> Vec<u8> {
        self.pk.to_bytes().to_vec()
    }

    /// The private key, 32 bytes (test vectors; only with the `test-hooks`
    /// feature).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn private_bytes_for_tests(&self) -> Vec<u8> {
        self.sk.to_bytes().to_vec()
    }

    /// Opens a sealed DEK made for `ctx`.
    pub fn open(&self, sealed: &SealedDek, ctx: &ReleaseContext<'_>) -> Result<Dek, ReleaseError> {
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| ReleaseError::BadPublicKey)?;
        let plain = zeroize::Zeroizing::new(
            hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
                &OpModeR::Base,
                &self.sk,
                &enc,
                &ctx.info(),
                &sealed.ciphertext,
                AAD,
            )
            .map_err(|_| ReleaseError::Open)?,
        );
        if plain.len() != KEY_LEN {
            return Err(ReleaseError::Open);
        }
        Dek::from_slice(&plain).map_err(|_| ReleaseError::Open)
    }

    /// Opens raw HPKE ciphertext (test vectors).
    #[doc(hidden)]
    pub fn open_raw(
        &self,
        enc: &[u8],
        info: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, ReleaseError> {
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)
            .map_err(|_| ReleaseError::BadPublicKey)?;
        hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.sk,
            &enc,
            info,
            ciphertext,
            aad,
        )
        .map_err(|_| ReleaseError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ReleaseContext<'static> {
        ReleaseContext {
            request_id: "r1",
            namespace: "nlp",
            model: "bert",
            version: "1",
            dek_generation: 1,
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let dek = Dek::generate().unwrap();
        let client = ClientKey::generate();
        let sealed = seal(&client.public_bytes(), &dek, &ctx()).unwrap();
        assert_eq!(sealed.enc.len(), 32);
        assert_eq!(sealed.ciphertext.len(), 48);
        let opened = client.open(&sealed, &ctx()).unwrap();
        assert_eq!(opened.expose_secret(), dek.expose_secret());
        // Another release context, another key, a flipped bit: all refused.
        let mut other = ctx();
        other.dek_generation = 2;
        assert_eq!(
            client.open(&sealed, &other).unwrap_err(),
            ReleaseError::Open
        );
        let mut other = ctx();
        other.request_id = "r2";
        assert!(client.open(&sealed, &other).is_err());
        assert!(ClientKey::generate().open(&sealed, &ctx()).is_err());
        let mut bad = sealed.clone();
        bad.ciphertext[0] ^= 1;
        assert!(client.open(&bad, &ctx()).is_err());
        assert_eq!(
            seal(&[0u8; 31], &dek, &ctx()).unwrap_err(),
            ReleaseError::BadPublicKey
        );
        assert!(format!("{client:?}").contains("redacted"));
    }

    #[test]
    fn low_order_public_keys_are_refused_at_sealing() {
        // The server seals before it records a release's intent, so these
        // must fail here (the DH output would be all zeros).
        let dek = Dek::generate().unwrap();
        let mut order_8 = [0u8; 32];
        hex_to(
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            &mut order_8,
        );
        let mut one = [0u8; 32];
        one[0] = 1;
        for point in [[0u8; 32], one, order_8] {
            assert!(seal(&point, &dek, &ctx()).is_err(), "{point:?}");
        }
    }

    fn hex_to(hex: &str, out: &mut [u8]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
    }
}
