//! The supply chain of installed policies: detached signatures by trusted
//! policy-signing keys (`[policy] trusted_keys`, `require_signed`) and the
//! metadata a component carries (`modelvault:metadata`).
//!
//! Fail closed: with `require_signed`, an install without a signature that
//! verifies is refused before the component is compiled, and a reload
//! refuses the whole installed set (deny all) while any installed policy's
//! recorded signature no longer verifies against a trusted key. The one
//! exception is a component byte-identical to one bundled in this build
//! (or recorded as bundled when installed): it is as trusted as the binary.

use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use modelvault_api::EmbeddedMetadata;
use modelvault_policy::metadata::{self, MetadataError, PolicyMetadata};
use modelvault_policy::signing::{self, SIGNATURE_BYTES, TrustedKey};

use super::PolicyRecord;
use crate::ApiError;
use crate::config::PolicyConfig;

/// `signed_by` of a component bundled in a Modelvault build.
pub const BUNDLED_SIGNER: &str = "bundled";

/// The API's view of a component's `modelvault:metadata` section.
fn embedded(m: PolicyMetadata) -> EmbeddedMetadata {
    EmbeddedMetadata {
        name: m.name,
        version: m.version,
        author: m.author,
        description: m.description,
    }
}

/// Reads `[policy] trusted_keys`: each entry is a PEM public key, 64 hex
/// digits of a raw Ed25519 key, or the path of a file holding either.
pub fn load_trusted_keys(entries: &[String]) -> Result<Vec<TrustedKey>, String> {
    let mut keys: Vec<TrustedKey> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let text = entry.trim();
        let inline = text.starts_with("-----BEGIN")
            || (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()));
        let key = if inline {
            TrustedKey::parse(text).map_err(|e| format!("policy.trusted_keys[{i}]: {e}"))?
        } else {
            let content = std::fs::read_to_string(text)
                .map_err(|e| format!("policy.trusted_keys[{i}]: reading {text}: {e}"))?;
            TrustedKey::parse(&content)
                .map_err(|e| format!("policy.trusted_keys[{i}] ({text}): {e}"))?
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Digests of the components bundled in this build.
fn bundled_digests() -> &'static [String] {
    static DIGESTS: OnceLock<Vec<String>> = OnceLock::new();
    DIGESTS.get_or_init(|| {
        modelvault_bundled_policies::BUNDLED
            .iter()
            .map(|b| signing::component_digest(b.component))
            .collect()
    })
}

/// Who vouches for a component about to be installed.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// The verifying key's id, [`BUNDLED_SIGNER`], or none.
    pub signed_by: Option<String>,
    /// The verified signature, hex.
    pub signature: Option<String>,
    /// Its embedded metadata.
    pub metadata: Option<EmbeddedMetadata>,
}

/// The server's signing policy.
#[derive(Debug)]
pub struct SupplyChain {
    require_signed: bool,
    /// `Err`: the configured keys cannot be read (nothing verifies).
    keys: Result<Vec<TrustedKey>, String>,
}

fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// The audit detail of an install: `{"sha256", "signed_by"}`, and
/// `"refused"` with the error code when the signature check refused it.
fn detail(sha256: &str, signed_by: Option<&str>, refused: Option<&str>) -> String {
    let mut detail = serde_json::json!({ "sha256": sha256, "signed_by": signed_by });
    if let Some(code) = refused {
        detail["refused"] = code.into();
    }
    detail.to_string()
}

/// [`SupplyChain::inspect`] on a blocking thread; notes the component's
/// digest and signer (or why it was refused) for the request's audit
/// record. Hands the bytes back.
pub async fn inspect(
    supply: &Arc<SupplyChain>,
    bytes: Vec<u8>,
    signature: Option<[u8; SIGNATURE_BYTES]>,
) -> Result<(Vec<u8>, Provenance), ApiError> {
    let supply = supply.clone();
    let (bytes, audit, result) = tokio::task::spawn_blocking(move || {
        let (audit, result) = supply.inspect(&bytes, signature.as_ref());
        (bytes, audit, result)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    crate::audit::note_detail(audit);
    result.map(|p| (bytes, p))
}

impl SupplyChain {
    /// From `[policy]` (already validated at start; a key that became
    /// unreadable since leaves no key trusted).
    pub fn new(config: &PolicyConfig) -> Self {
        let keys = load_trusted_keys(&config.trusted_keys);
        match &keys {
            Ok(k) => tracing::info!(
                require_signed = config.require_signed,
                trusted_keys = ?k.iter().map(TrustedKey::id).collect::<Vec<_>>(),
                "policy signing"
            ),
            Err(e) => {
                tracing::error!(error = %e, "policy signing keys unusable; no signature verifies")
            }
        }
        Self {
            require_signed: config.require_signed,
            keys,
        }
    }

    fn keys(&self) -> Result<&[TrustedKey], String> {
        self.keys.as_deref().map_err(|e| e.clone())
    }

    /// Checks a component before it is compiled: its signature (required
    /// with `require_signed`, except for bundled components) and its
    /// metadata section. CPU-bound (hashing, parsing): call it off the
    /// async workers.
    /// Also returns the audit detail.
    pub fn inspect(
        &self,
        bytes: &[u8],
        signature: Option<&[u8; SIGNATURE_BYTES]>,
    ) -> (String, Result<Provenance, ApiError>) {
        let sha256 = signing::component_digest(bytes);
        let (signed_by, sig_hex) = match signature {
            Some(sig) => {
                let verified = self
                    .keys()
                    .map_err(|e| format!("trusted keys unusable: {e}"))
                    .and_then(|keys| {
                        signing::verify(keys, &sha256, sig).map_err(|e| e.to_string())
                    });
                match verified {
                    Ok(key) => (Some(key.id().to_string()), Some(hex::encode(sig))),
                    Err(e) => {
                        return (
                            detail(&sha256, None, Some("invalid_signature")),
                            Err(refused(
                                "invalid_signature",
                                format!(
                                    "{e} (the signed message must be {:?})",
                                    signing::signed_message(&sha256)
                                ),
                            )),
                        );
                    }
                }
            }
            None if bundled_digests().contains(&sha256) => (Some(BUNDLED_SIGNER.to_string()), None),
            None if self.require_signed => {
                return (
                    detail(&sha256, None, Some("signature_required")),
                    Err(refused(
                        "signature_required",
                        format!(
                            "this server installs only signed policies (policy.require_signed): sign {:?} with a trusted key and install with --signature",
                            signing::signed_message(&sha256)
                        ),
                    )),
                );
            }
            None => (None, None),
        };
        let audit = detail(&sha256, signed_by.as_deref(), None);
        // A binary wasmparser cannot read is refused by the compile that
        // follows, with the host's own message; only a readable binary
        // with a bad section is refused here.
        let metadata = match metadata::read(bytes) {
            Ok(m) => m.filter(|m| !m.is_empty()).map(embedded),
            Err(MetadataError::NotWasm(_)) => None,
            Err(e) => return (audit, Err(refused("invalid_policy", e.to_string()))),
        };
        let provenance = Provenance {
            sha256,
            signed_by,
            signature: sig_hex,
            metadata,
        };
        (audit, Ok(provenance))
    }

    /// Checks an installed policy at load: with `require_signed`, its
    /// recorded signature must verify against a key trusted now (or it is
    /// a bundled component).
    pub fn check_installed(&self, record: &PolicyRecord) -> Result<(), String> {
        if !self.require_signed
            || record.signed_by.as_deref() == Some(BUNDLED_SIGNER)
            || bundled_digests().contains(&record.sha256)
        {
            return Ok(());
        }
        let name = &record.name;
        let Some(sig) = &record.signature else {
            return Err(format!(
                "policy {name} is not signed and policy.require_signed is set"
            ));
        };
        let sig = hex::decode(sig).map_err(|_| format!("policy {name}: malformed signature"))?;
        let keys = self.keys()?;
        signing::verify(keys, &record.sha256, &sig)
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "policy {name} is signed by {}, which is not a trusted key, and policy.require_signed is set",
                    record.signed_by.as_deref().unwrap_or("an unknown key")
                )
            })
    }
}
