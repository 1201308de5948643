//! Model metadata: plain values, sensitive values sealed under the model's
//! metadata key, and append-only revisions.
//!
//! Invariants a reader must keep:
//! - a sensitive value is never written in clear: it lives only in
//!   `sealed_metadata`, sealed (AES-256-GCM) under a subkey of the model's
//!   metadata DEK, which is wrapped by the KEK and bound to
//!   (namespace, model, `.model-metadata`) like a version's DEK;
//! - every change is a new revision, written create-if-absent at the next
//!   sequence number, so history is append-only and two writers never
//!   overwrite each other (the loser retries on the newer revision);
//! - a key once marked sensitive stays sensitive.

use std::collections::{BTreeMap, BTreeSet};

use modelvault_format::Dek;

use crate::{ModelChange, ModelRecord, StorageError, Store, VersionRef, layout};

/// The version label the model's metadata key is bound to (no version name
/// can start with a dot).
pub const MODEL_KEY_LABEL: &str = ".model-metadata";
const METADATA_SEAL: &str = "model-metadata";

/// Checks one tag or metadata entry.
pub(crate) fn check_entry(kind: &str, k: &str, v: &str) -> Result<(), StorageError> {
    if k.is_empty()
        || k.len() > 128
        || v.len() > 4096
        || k.chars().chain(v.chars()).any(char::is_control)
    {
        return Err(StorageError::InvalidInput(format!("invalid {kind} {k:?}")));
    }
    Ok(())
}

fn seal_key(dek: &Dek, ns: &str, model: &str) -> Result<modelvault_format::SealKey, StorageError> {
    Ok(dek.seal_key(METADATA_SEAL, &[ns, model])?)
}

impl Store {
    async fn model_key(&self, ns: &str, model: &str, create: bool) -> Result<Dek, StorageError> {
        let v = VersionRef {
            namespace: ns,
            model,
            version: MODEL_KEY_LABEL,
        };
        let key = self
            .dek_at(&layout::model_keys_dir(ns, model), &v, create)
            .await?;
        Ok(key.into_dek())
    }

    /// Every metadata value of `m`, sensitive ones unsealed. Call only for
    /// a caller allowed to read them.
    pub async fn model_metadata(
        &self,
        m: &ModelRecord,
    ) -> Result<BTreeMap<String, String>, StorageError> {
        let mut out = m.metadata.clone();
        if let Some(sealed) = &m.sealed_metadata {
            let dek = self.model_key(&m.namespace, &m.name, false).await?;
            let bytes = crate::b64_decode(sealed)?;
            let json = seal_key(&dek, &m.namespace, &m.name)?.open(b"metadata", &bytes)?;
            let secret: BTreeMap<String, String> = serde_json::from_slice(&json).map_err(|_| {
                StorageError::Integrity(format!(
                    "sealed metadata of {}/{} is malformed",
                    m.namespace, m.name
                ))
            })?;
            out.extend(secret);
        }
        Ok(out)
    }

    /// Replaces `m`'s metadata with `all`, sealing every key in `sensitive`
    /// (plus those `m` already marks).
    pub(crate) async fn set_metadata(
        &self,
        m: &mut ModelRecord,
        all: BTreeMap<String, String>,
        sensitive: &[String],
    ) -> Result<(), StorageError> {
        for (k, v) in &all {
            check_entry("metadata", k, v)?;
        }
        let mut marks: BTreeSet<String> = m.sensitive_fields.iter().cloned().collect();
        for k in sensitive {
            check_entry("metadata", k, "")?;
            marks.insert(k.clone());
        }
        let (secret, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
            all.into_iter().partition(|(k, _)| marks.contains(k));
        m.metadata = plain;
        m.sensitive_fields = marks.into_iter().collect();
        m.sealed_metadata = if secret.is_empty() {
            None
        } else {
            let dek = self.model_key(&m.namespace, &m.name, true).await?;
            let json = zeroize::Zeroizing::new(
                serde_json::to_vec(&secret)
                    .map_err(|e| StorageError::InvalidInput(e.to_string()))?,
            );
            let sealed = seal_key(&dek, &m.namespace, &m.name)?.seal(b"metadata", &json)?;
            Some(crate::b64_encode(&sealed))
        };
        Ok(())
    }

    /// Applies `change` as the next revision of the model's metadata
    /// (create-if-absent; retried on a concurrent writer). Returns the new
    /// revision and the one it replaced.
    pub async fn update_model(
        &self,
        namespace: &str,
        name: &str,
        change: &ModelChange,
        by: &str,
    ) -> Result<(ModelRecord, ModelRecord), StorageError> {
        for (k, v) in &change.tags {
            check_entry("tag", k, v.as_deref().unwrap_or(""))?;
        }
        for _ in 0..16 {
            let before = self
                .get_model(namespace, name)
                .await?
                .ok_or_else(|| StorageError::NotFound(format!("model {namespace}/{name}")))?;
            let mut next = before.clone();
            if let Some(s) = change.sensitivity {
                next.sensitivity = s;
            }
            for (k, v) in &change.tags {
                match v {
                    Some(v) => next.tags.insert(k.clone(), v.clone()),
                    None => next.tags.remove(k),
                };
            }
            let mut all = if before.sealed_metadata.is_some() || !change.metadata.is_empty() {
                self.model_metadata(&before).await?
            } else {
                before.metadata.clone()
            };
            for (k, v) in &change.metadata {
                match v {
                    Some(v) => all.insert(k.clone(), v.clone()),
                    None => all.remove(k),
                };
            }
            self.set_metadata(&mut next, all, &change.mark_sensitive)
                .await?;
            next.revision = before.revision + 1;
            next.changed_by = by.into();
            next.changed_at = Some(crate::now());
            let path = layout::seq_record(&layout::model_meta_dir(namespace, name), next.revision);
            match self.create_record("model", &path, &next).await {
                Ok(()) => return Ok((next, before)),
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(format!(
            "model {namespace}/{name}: too many concurrent writers"
        )))
    }

    /// Every revision of a model's metadata, oldest first, each verified.
    pub async fn model_history(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<ModelRecord>, StorageError> {
        crate::names::validate_name("namespace", namespace)?;
        crate::names::validate_name("model", name)?;
        let dir = layout::model_meta_dir(namespace, name);
        let series = self.read_series::<ModelRecord>("model", &dir).await?;
        let mut out = Vec::with_capacity(series.len());
        for (seq, r) in series {
            if r.namespace != namespace || r.name != name || r.revision != seq {
                return Err(StorageError::Integrity(format!(
                    "model record {dir}/{seq} names another model"
                )));
            }
            out.push(r);
        }
        Ok(out)
    }
}
