//! Authenticated control records. A record is stored as
//! `{"record": KIND, "body": {...}, "mac": {"key_id", "tag"}}`, where the
//! MAC (made by the key provider) covers the kind, the object path and the
//! exact body bytes. A record edited, or copied to another path, fails.

use modelvault_keys::{KeyProvider, RecordMac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::StorageError;

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    record: &'a str,
    body: &'a RawValue,
    mac: RecordMac,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    record: String,
    #[serde(borrow)]
    body: &'a RawValue,
    mac: RecordMac,
}

fn mac_input(kind: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    for field in [
        &b"modelvault/v1/record"[..],
        kind.as_bytes(),
        path.as_bytes(),
        body,
    ] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// Serializes and authenticates `body` as a record of `kind` at `path`.
pub async fn seal<T: Serialize>(
    keys: &dyn KeyProvider,
    kind: &str,
    path: &str,
    body: &T,
) -> Result<Vec<u8>, StorageError> {
    let body =
        serde_json::to_string(body).map_err(|e| StorageError::InvalidInput(e.to_string()))?;
    let raw = RawValue::from_string(body).map_err(|e| StorageError::InvalidInput(e.to_string()))?;
    let mac = keys
        .mac(&mac_input(kind, path, raw.get().as_bytes()))
        .await?;
    serde_json::to_vec(&EnvelopeOut {
        record: kind,
        body: &raw,
        mac,
    })
    .map_err(|e| StorageError::InvalidInput(e.to_string()))
}

/// Verifies and parses a record of `kind` read from `path`. Any failure is
/// [`StorageError::Integrity`].
pub async fn open<T: DeserializeOwned>(
    keys: &dyn KeyProvider,
    kind: &str,
    path: &str,
    bytes: &[u8],
) -> Result<T, StorageError> {
    let env: EnvelopeIn<'_> = serde_json::from_slice(bytes)
        .map_err(|_| StorageError::Integrity(format!("record {path} is malformed")))?;
    if env.record != kind {
        return Err(StorageError::Integrity(format!(
            "record {path} is not a {kind}"
        )));
    }
    keys.verify_mac(&mac_input(kind, path, env.body.get().as_bytes()), &env.mac)
        .await
        .map_err(|e| StorageError::Integrity(format!("record {path}: {e}")))?;
    serde_json::from_str(env.body.get())
        .map_err(|_| StorageError::Integrity(format!("record {path} has a malformed body")))
}
