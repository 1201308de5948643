//! Key types and derivations. A key's bytes are readable only through
//! `expose_secret`; every type here zeroizes on drop and prints `[redacted]`.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{FormatError, Header};

/// AES-256 key length.
pub const KEY_LEN: usize = 32;

/// Domain label of the per-file key derivation (HKDF info prefix).
const FILE_KEY_LABEL: &[u8] = b"modelvault/v1/file-key";
/// Domain label of sealing subkeys (HKDF info prefix).
const SEAL_KEY_LABEL: &[u8] = b"modelvault/v1/seal-key";

/// A model version's data-encryption key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Dek([u8; KEY_LEN]);

impl Dek {
    /// A fresh random DEK.
    pub fn generate() -> Result<Self, FormatError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| FormatError::Crypto("random dek"))?;
        Ok(Self(bytes))
    }

    /// Wraps existing bytes (after unwrapping by a key provider).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Builds a DEK from a slice, which must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, FormatError> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| FormatError::Crypto("dek length"))?;
        Ok(Self(arr))
    }

    /// The raw key, for wrapping. Never log it.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A subkey for sealing small records (manifest digests, sensitive
    /// metadata), bound to a purpose label and a length-prefixed context.
    pub fn seal_key(&self, purpose: &str, context: &[&str]) -> Result<SealKey, FormatError> {
        let mut info = Vec::new();
        push_lp(&mut info, SEAL_KEY_LABEL);
        push_lp(&mut info, purpose.as_bytes());
        for part in context {
            push_lp(&mut info, part.as_bytes());
        }
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        hkdf_sha256(&self.0, &[], &info, okm.as_mut())?;
        SealKey::from_bytes(&okm)
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek([redacted])")
    }
}

/// What a file key is bound to. Any difference yields another key, so a
/// blob or segment moved to another file, version or model fails to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity<'a> {
    /// Namespace of the model.
    pub namespace: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Version name.
    pub version: &'a str,
    /// File path inside the version.
    pub path: &'a str,
    /// DEK generation the caller holds.
    pub dek_generation: u32,
}

impl FileIdentity<'_> {
    /// HKDF info: label, then each field length-prefixed (u32 BE), then the
    /// generation (u32 BE).
    pub fn info(&self) -> Vec<u8> {
        let mut info = Vec::with_capacity(96);
        push_lp(&mut info, FILE_KEY_LABEL);
        push_lp(&mut info, self.namespace.as_bytes());
        push_lp(&mut info, self.model.as_bytes());
        push_lp(&mut info, self.version.as_bytes());
        push_lp(&mut info, self.path.as_bytes());
        info.extend_from_slice(&self.dek_generation.to_be_bytes());
        info
    }
}

fn push_lp(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are names bounded far below 4 GiB; saturate rather than wrap.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// The per-file AES-256-GCM key.
pub struct FileKey {
    pub(crate) key: LessSafeKey,
}

impl FileKey {
    /// Derives the key for one file: HKDF-SHA256(salt = header salt,
    /// ikm = DEK, info = identity). Fails if the header names another DEK
    /// generation than the identity.
    pub fn derive(
        dek: &Dek,
        header: &Header,
        identity: &FileIdentity<'_>,
    ) -> Result<Self, FormatError> {
        if header.dek_generation != identity.dek_generation {
            return Err(FormatError::GenerationMismatch {
                expected: identity.dek_generation,
                found: header.dek_generation,
            });
        }
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        hkdf_sha256(
            dek.expose_secret(),
            &header.salt,
            &identity.info(),
            okm.as_mut(),
        )?;
        Self::from_bytes(&okm)
    }

    /// A file key from raw bytes (test vectors).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<Self, FormatError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| FormatError::Crypto("aes key"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey([redacted])")
    }
}

/// An AES-256-GCM key for small sealed records: random 96-bit nonce,
/// output `nonce || ciphertext || tag`. Used far below the random-nonce
/// bound (2^32 messages per key).
pub struct SealKey {
    key: LessSafeKey,
}

impl SealKey {
    /// A seal key from raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<Self, FormatError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| FormatError::Crypto("aes key"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Seals `plaintext` with `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, FormatError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| FormatError::Crypto("random nonce"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| FormatError::Crypto("seal"))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`SealKey::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, FormatError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(FormatError::SealedAuthFailed);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| FormatError::SealedAuthFailed)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
            .map_err(|_| FormatError::SealedAuthFailed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (RFC 5869) extract-and-expand into `out`. Fails when `out`
/// is longer than 255 * 32 bytes.
pub fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), FormatError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    prk.expand(&info, OkmLen(out.len()))
        .map_err(|_| FormatError::Crypto("hkdf length"))?
        .fill(out)
        .map_err(|_| FormatError::Crypto("hkdf length"))
}
