//! Policy signing: detached Ed25519 signatures over a component's SHA-256.
//!
//! The signed message is the ASCII string
//!
//! ```text
//! modelvault-policy-v1:sha256:<64 lowercase hex digits>
//! ```
//!
//! with no trailing newline ([`signed_message`]): a domain-separated string
//! naming the digest of the component's bytes, so a signature made for
//! anything else (another protocol, another component) never verifies here.
//! The component's name is not signed: one signed component may be
//! installed under any name.
//!
//! A trusted key is an Ed25519 public key ([`TrustedKey`]); its key id is
//! the first 16 hex digits of the SHA-256 of the 32 raw key bytes.

use base64::Engine as _;
use ring::signature::{ED25519, UnparsedPublicKey};

/// The domain-separation prefix of every signed message.
pub const SIGNATURE_DOMAIN: &str = "modelvault-policy-v1";
/// Length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410); the 32
/// key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Errors reading keys and signatures, and verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// A key that is not an Ed25519 public key in a form we read.
    #[error("not an Ed25519 public key: {0}")]
    BadKey(String),
    /// A signature that is not 64 bytes of hex, base64 or raw bytes.
    #[error("not an Ed25519 signature: {0}")]
    BadSignature(String),
    /// No trusted key verifies the signature.
    #[error("the signature does not verify against any trusted policy-signing key")]
    Unverified,
    /// Nothing to verify against.
    #[error("no trusted policy-signing keys are configured ([policy] trusted_keys)")]
    NoTrustedKeys,
}

/// The hex SHA-256 of a component.
pub fn component_digest(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The exact bytes a signer signs for a component of digest `sha256_hex`.
pub fn signed_message(sha256_hex: &str) -> String {
    format!("{SIGNATURE_DOMAIN}:sha256:{sha256_hex}")
}

/// A trusted policy-signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    id: String,
    public_key: [u8; 32],
}

impl TrustedKey {
    /// A key from its 32 raw bytes.
    pub fn from_raw(public_key: [u8; 32]) -> Self {
        let digest = component_digest(&public_key);
        Self {
            id: digest[..16].to_string(),
            public_key,
        }
    }

    /// Reads a key from text: a PEM `PUBLIC KEY` (what `openssl pkey
    /// -pubout` writes) or 64 hex digits of the raw key.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return Self::from_pem(text);
        }
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let raw = hex::decode(text).map_err(|e| SigningError::BadKey(e.to_string()))?;
            let key: [u8; 32] = raw
                .try_into()
                .map_err(|_| SigningError::BadKey("not 32 bytes".into()))?;
            return Ok(Self::from_raw(key));
        }
        Err(SigningError::BadKey(
            "expected a PEM public key (-----BEGIN PUBLIC KEY-----) or 64 hex digits".into(),
        ))
    }

    fn from_pem(text: &str) -> Result<Self, SigningError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        match lines.next() {
            Some("-----BEGIN PUBLIC KEY-----") => {}
            Some(l) if l.contains("PRIVATE KEY") => {
                return Err(SigningError::BadKey(
                    "this is a private key; trust its public key instead (openssl pkey -in KEY -pubout)"
                        .into(),
                ));
            }
            _ => {
                return Err(SigningError::BadKey(
                    "expected -----BEGIN PUBLIC KEY-----".into(),
                ));
            }
        }
        let mut body = String::new();
        let mut ended = false;
        for line in lines.by_ref() {
            if line == "-----END PUBLIC KEY-----" {
                ended = true;
                break;
            }
            body.push_str(line);
        }
        if !ended || lines.next().is_some() {
            return Err(SigningError::BadKey(
                "expected exactly one PEM block ending in -----END PUBLIC KEY-----".into(),
            ));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| SigningError::BadKey(format!("PEM body: {e}")))?;
        let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) else {
            return Err(SigningError::BadKey(
                "the PEM key is not an Ed25519 key (RFC 8410 SubjectPublicKeyInfo)".into(),
            ));
        };
        let key: [u8; 32] = raw
            .try_into()
            .map_err(|_| SigningError::BadKey("the PEM key is not 32 bytes".into()))?;
        Ok(Self::from_raw(key))
    }

    /// The key id: 16 hex digits of the SHA-256 of the raw key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The 32 raw key bytes.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Whether `signature` is this key's signature of the message for
    /// `sha256_hex`.
    pub fn verifies(&self, sha256_hex: &str, signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(signed_message(sha256_hex).as_bytes(), signature)
            .is_ok()
    }
}

/// The trusted key that verifies `signature` for the component of digest
/// `sha256_hex`.
pub fn verify<'a>(
    keys: &'a [TrustedKey],
    sha256_hex: &str,
    signature: &[u8],
) -> Result<&'a TrustedKey, SigningError> {
    if keys.is_empty() {
        return Err(SigningError::NoTrustedKeys);
    }
    keys.iter()
        .find(|k| k.verifies(sha256_hex, signature))
        .ok_or(SigningError::Unverified)
}

/// Reads a signature from text: 128 hex digits, or base64 (standard or
/// URL-safe, padded or not) of 64 bytes.
pub fn decode_signature(text: &str) -> Result<[u8; SIGNATURE_BYTES], SigningError> {
    let text = text.trim();
    let bytes = if text.len() == 2 * SIGNATURE_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        hex::decode(text).map_err(|e| SigningError::BadSignature(e.to_string()))?
    } else {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(text.as_bytes()).ok())
            .ok_or_else(|| {
                SigningError::BadSignature("expected 64 bytes as 128 hex digits or base64".into())
            })?
    };
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        SigningError::BadSignature(format!("{len} bytes, an Ed25519 signature has 64"))
    })
}

/// Reads a signature file: the 64 raw bytes (what `openssl pkeyutl -sign`
/// writes), or their hex or base64 text.
pub fn decode_signature_file(bytes: &[u8]) -> Result<[u8; SIGNATURE_BYTES], SigningError> {
    if let Ok(raw) = <[u8; SIGNATURE_BYTES]>::try_from(bytes) {
        // 64 bytes that are all text could also be base64 of 48 bytes,
        // which is no signature: raw it is.
        return Ok(raw);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        SigningError::BadSignature(format!(
            "{} bytes of binary; an Ed25519 signature has 64",
            bytes.len()
        ))
    })?;
    decode_signature(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    fn keypair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn trusted(kp: &Ed25519KeyPair) -> TrustedKey {
        TrustedKey::from_raw(kp.public_key().as_ref().try_into().unwrap())
    }

    #[test]
    fn signs_the_domain_separated_digest() {
        let digest = component_digest(b"component");
        assert_eq!(
            signed_message(&digest),
            format!("modelvault-policy-v1:sha256:{digest}")
        );
        let kp = keypair(1);
        let other = keypair(2);
        let sig = kp.sign(signed_message(&digest).as_bytes());
        let keys = [trusted(&other), trusted(&kp)];
        assert_eq!(
            verify(&keys, &digest, sig.as_ref()).unwrap().id(),
            keys[1].id()
        );
        // Another component, the bare digest, an untrusted key: refused.
        let d2 = component_digest(b"other");
        assert_eq!(
            verify(&keys, &d2, sig.as_ref()),
            Err(SigningError::Unverified)
        );
        let bare = kp.sign(digest.as_bytes());
        assert_eq!(
            verify(&keys, &digest, bare.as_ref()),
            Err(SigningError::Unverified)
        );
        assert_eq!(
            verify(&keys[..1], &digest, sig.as_ref()),
            Err(SigningError::Unverified)
        );
        assert_eq!(
            verify(&[], &digest, sig.as_ref()),
            Err(SigningError::NoTrustedKeys)
        );
    }

    #[test]
    fn reads_keys_in_pem_and_hex() {
        let kp = keypair(3);
        let raw = kp.public_key().as_ref().to_vec();
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let a = TrustedKey::parse(&pem).unwrap();
        let b = TrustedKey::parse(&hex::encode(&raw)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.id().len(), 16);
        assert_eq!(a.id(), &component_digest(&raw)[..16]);
        assert!(
            TrustedKey::parse("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----")
                .unwrap_err()
                .to_string()
                .contains("private key")
        );
        // A P-256 key's SPKI is refused.
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----";
        assert!(TrustedKey::parse(p256).is_err());
        assert!(TrustedKey::parse("nonsense").is_err());
        assert!(TrustedKey::parse(&format!("{pem}{pem}")).is_err());
    }

    #[test]
    fn reads_signatures_raw_hex_and_base64() {
        let sig = [7u8; 64];
        assert_eq!(decode_signature_file(&sig).unwrap(), sig);
        assert_eq!(decode_signature(&hex::encode(sig)).unwrap(), sig);
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig);
        assert_eq!(
            decode_signature_file(format!("{b64}\n").as_bytes()).unwrap(),
            sig
        );
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
        assert_eq!(decode_signature(&url).unwrap(), sig);
        assert!(decode_signature("abcd").is_err());
        assert!(decode_signature_file(&[0xff; 63]).is_err());
        assert!(decode_signature("").is_err());
    }
}
