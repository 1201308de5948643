//! OpenSSF model signatures (`model-signing` 1.x, key mode): the signature
//! file a version carries, verified at commit against the signer keys its
//! namespace trusts; the result is what policies see
//! (`resource.facts.signature`, docs/POLICY-AUTHORING.md).
//!
//! The file is a Sigstore bundle (v0.3 JSON) holding a DSSE envelope whose
//! payload is an in-toto statement listing every signed file's SHA-256.
//! Invariants a reader must keep:
//! - the signature is checked over the DSSE pre-authentication encoding of
//!   the exact payload bytes, with ECDSA P-256/SHA-256 or P-384/SHA-384, and
//!   only then is the payload parsed;
//! - `trusted` means a key configured for the version's namespace verified
//!   it; without one the signer is empty (key mode carries no key);
//! - `files_match` means the signed name → digest map equals the version's
//!   files exactly (the signature file itself and the root git files the
//!   signer lists as ignored aside): a file missing, extra or different is
//!   a mismatch, never ignored;
//! - certificate mode and keyless (Sigstore) signatures are recorded as not
//!   trusted.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

/// The bundle media type `model-signing` 1.x writes.
const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The DSSE payload type of an in-toto statement.
const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The statement's predicate type.
const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// Root files a signer may leave out of its signature (the CLI's git
/// defaults); any other ignored path is still compared.
const GIT_NAMES: [&str; 4] = [".git", ".gitignore", ".github", ".gitattributes"];

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1).
const P256_SPKI: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// DER prefix of a P-384 SubjectPublicKeyInfo (id-ecPublicKey, secp384r1).
const P384_SPKI: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// A trusted signer key.
#[derive(Clone)]
pub struct SignerKey {
    /// Its name (what policies see as the signer).
    pub name: String,
    /// Namespaces it is trusted for (`*`: all).
    pub namespaces: Vec<String>,
    alg: &'static ring::signature::EcdsaVerificationAlgorithm,
    point: Vec<u8>,
    /// Hex SHA-256 of its canonical PEM (the bundle's key hint).
    hint: String,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerKey")
            .field("name", &self.name)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

impl SignerKey {
    /// A key from PEM text (`-----BEGIN PUBLIC KEY-----`, EC P-256 or
    /// P-384, as `openssl ec -pubout` writes it).
    pub fn from_pem(name: &str, namespaces: Vec<String>, pem: &str) -> Result<Self, String> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect();
        if !pem.contains("BEGIN PUBLIC KEY") {
            return Err(format!("model signing key {name}: not a PEM public key"));
        }
        let der = B64
            .decode(body.as_bytes())
            .map_err(|_| format!("model signing key {name}: the PEM body is not base64"))?;
        let (alg, point) = if let Some(p) = der.strip_prefix(P256_SPKI).filter(|p| p.len() == 65) {
            (&ring::signature::ECDSA_P256_SHA256_ASN1, p.to_vec())
        } else if let Some(p) = der.strip_prefix(P384_SPKI).filter(|p| p.len() == 97) {
            (&ring::signature::ECDSA_P384_SHA384_ASN1, p.to_vec())
        } else {
            return Err(format!(
                "model signing key {name}: not an EC P-256 or P-384 public key (model-signing signs with EC keys only)"
            ));
        };
        let encoded = B64.encode(&der);
        let mut canonical = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in encoded.as_bytes().chunks(64) {
            canonical.push_str(&String::from_utf8_lossy(chunk));
            canonical.push('\n');
        }
        canonical.push_str("-----END PUBLIC KEY-----\n");
        let hint = hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ));
        Ok(Self {
            name: name.to_string(),
            namespaces,
            alg,
            point,
            hint,
        })
    }

    /// Its fingerprint: hex SHA-256 of its canonical PEM.
    pub fn fingerprint(&self) -> &str {
        &self.hint
    }

    /// Whether it is trusted for namespace `ns`.
    pub fn trusted_in(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == ns)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: VerificationMaterial,
    dsse_envelope: Envelope,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    #[serde(default)]
    public_key: Option<KeyHint>,
    #[serde(default)]
    x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default)]
    certificate: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct KeyHint {
    #[serde(default)]
    hint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Deserialize)]
struct Predicate {
    resources: Vec<Resource>,
    #[serde(default)]
    serialization: Option<Serialization>,
}

#[derive(Deserialize)]
struct Resource {
    name: String,
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
struct Serialization {
    #[serde(default)]
    method: String,
    #[serde(default)]
    ignore_paths: Vec<String>,
}

/// What verification found (stored beside the version, shown to policies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `key` or `certificate`.
    pub method: String,
    /// The trusted key's name; empty when none verified it.
    pub signer: String,
    /// Hex SHA-256 of that key's canonical PEM (what identifies it when
    /// trust is checked again at each decision); empty when none.
    pub signer_key: String,
    /// A key trusted for the namespace verified it.
    pub trusted: bool,
    /// The signed digests are exactly the version's files.
    pub files_match: bool,
    /// Why not, for people.
    pub detail: String,
}

impl Verdict {
    fn refused(method: &str, detail: String) -> Self {
        Self {
            method: method.into(),
            signer: String::new(),
            signer_key: String::new(),
            trusted: false,
            files_match: false,
            detail,
        }
    }
}

/// The DSSE v1 pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Verifies `bundle` (the signature file's bytes) for a version of
/// namespace `ns` named `signature_file`, whose files are `files` (path →
/// hex SHA-256, the signature file included), against `keys`.
pub fn verify(
    bundle: &[u8],
    signature_file: &str,
    ns: &str,
    files: &BTreeMap<String, String>,
    keys: &[SignerKey],
) -> Verdict {
    let bundle: Bundle = match serde_json::from_slice(bundle) {
        Ok(b) => b,
        Err(e) => return Verdict::refused("key", format!("not a model-signing bundle: {e}")),
    };
    if bundle.media_type != BUNDLE_TYPE {
        return Verdict::refused(
            "key",
            format!(
                "bundle media type {:?} is not {BUNDLE_TYPE}",
                bundle.media_type
            ),
        );
    }
    let vm = &bundle.verification_material;
    if vm.x509_certificate_chain.is_some() || vm.certificate.is_some() {
        return Verdict::refused(
            "certificate",
            "certificate-mode signatures are not verified by this server; sign with a key".into(),
        );
    }
    let env = &bundle.dsse_envelope;
    if env.payload_type != PAYLOAD_TYPE {
        return Verdict::refused(
            "key",
            format!("payload type {:?} is not {PAYLOAD_TYPE}", env.payload_type),
        );
    }
    let (Ok(payload), Some(Ok(sig))) = (
        B64.decode(env.payload.as_bytes()),
        env.signatures.first().map(|s| B64.decode(s.sig.as_bytes())),
    ) else {
        return Verdict::refused(
            "key",
            "the envelope's payload or signature is not base64".into(),
        );
    };
    let signed = pae(&env.payload_type, &payload);
    let hint = vm
        .public_key
        .as_ref()
        .map(|k| k.hint.as_str())
        .unwrap_or("");
    let signer = keys.iter().filter(|k| k.trusted_in(ns)).find(|k| {
        (hint.is_empty() || hint == k.hint)
            && ring::signature::UnparsedPublicKey::new(k.alg, &k.point)
                .verify(&signed, &sig)
                .is_ok()
    });
    let Some(signer) = signer else {
        return Verdict::refused(
            "key",
            format!("no signer key trusted for namespace {ns} verifies the signature"),
        );
    };
    let mut verdict = Verdict {
        method: "key".into(),
        signer: signer.name.clone(),
        signer_key: signer.hint.clone(),
        trusted: true,
        files_match: false,
        detail: String::new(),
    };
    let statement: Statement = match serde_json::from_slice(&payload) {
        Ok(s) => s,
        Err(e) => {
            verdict.detail = format!("the signed statement does not parse: {e}");
            return verdict;
        }
    };
    if statement.kind != "https://in-toto.io/Statement/v1"
        || statement.predicate_type != PREDICATE_TYPE
    {
        verdict.detail = format!(
            "unsupported statement {} / {}",
            statement.kind, statement.predicate_type
        );
        return verdict;
    }
    let ser = statement.predicate.serialization;
    if ser.as_ref().is_some_and(|s| s.method != "files") {
        verdict.detail = "only whole-file (`files`) signatures are compared".into();
        return verdict;
    }
    // `.git/` and `.git` alike (signers have spelled them both ways).
    let ignored: Vec<String> = ser
        .map(|s| s.ignore_paths)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    let mut signed_files = BTreeMap::new();
    for r in statement.predicate.resources {
        if r.algorithm != "sha256" {
            verdict.detail = format!("{}: digest algorithm {} is not sha256", r.name, r.algorithm);
            return verdict;
        }
        signed_files.insert(r.name, r.digest.to_ascii_lowercase());
    }
    // The version's files as the signer saw them: without the signature
    // file, and without the root git files it listed as ignored.
    let expected: BTreeMap<&str, &str> = files
        .iter()
        .filter(|(p, _)| p.as_str() != signature_file)
        .filter(|(p, _)| {
            !GIT_NAMES.iter().any(|g| {
                ignored.iter().any(|i| i == g)
                    && (p.as_str() == *g || p.starts_with(&format!("{g}/")))
            })
        })
        .map(|(p, d)| (p.as_str(), d.as_str()))
        .collect();
    // A single-file model is signed as ".".
    let single = signed_files.len() == 1 && signed_files.contains_key(".") && expected.len() == 1;
    let mut problems = Vec::new();
    if single {
        let (path, digest) = expected
            .iter()
            .next()
            .map(|(p, d)| (*p, *d))
            .unwrap_or_default();
        if signed_files.get(".").map(String::as_str) != Some(digest) {
            problems.push(format!("{path}: digest differs"));
        }
    } else {
        for (path, digest) in &expected {
            match signed_files.get(*path) {
                None => problems.push(format!("{path}: not signed")),
                Some(d) if d != digest => problems.push(format!("{path}: digest differs")),
                Some(_) => {}
            }
        }
        for path in signed_files.keys() {
            if !expected.contains_key(path.as_str()) {
                problems.push(format!("{path}: signed but not in the version"));
            }
        }
    }
    verdict.files_match = problems.is_empty();
    verdict.detail = problems.join("; ");
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("application/vnd.in-toto+json", b"{}"),
            b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec()
        );
    }

    #[test]
    fn keys_other_than_ec_p256_or_p384_are_refused() {
        let ed = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(SignerKey::from_pem("k", vec!["*".into()], ed).is_err());
        assert!(SignerKey::from_pem("k", vec!["*".into()], "not pem").is_err());
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        let v = verify(b"{}", "model.sig", "nlp", &BTreeMap::new(), &[]);
        assert!(!v.trusted && !v.files_match);
        assert!(v.detail.contains("not a model-signing bundle"));
    }
}
