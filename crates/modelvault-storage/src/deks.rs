//! Version DEKs: the one place that reads, creates and unwraps a
//! version's key records, and the seal keys derived from a DEK. A key
//! record is checked to name its version and sequence before it is
//! unwrapped; a DEK never leaves this crate except to a caller that is
//! about to seal or open with it.

use super::*;

/// Purpose label of the seal key for file digests.
const DIGEST_SEAL: &str = "file-digests";
/// Purpose label of the seal key for sensitive version metadata.
const VERSION_METADATA_SEAL: &str = "version-metadata";

impl Store {
    /// The version's current DEK and its generation, creating the first one
    /// (generation 1) when `create` is set and none exists. Racing creators
    /// agree: the key record is create-if-absent, the loser reads the winner.
    pub async fn version_dek(
        &self,
        v: &VersionRef<'_>,
        create: bool,
    ) -> Result<(Dek, u32), StorageError> {
        let dir = layout::keys_dir(v.namespace, v.model, v.version);
        self.dek_at(&dir, v, create).await
    }

    /// The newest key record in `dir`, checked to name `v` and its own
    /// sequence number.
    pub(crate) async fn checked_latest_key(
        &self,
        dir: &Path,
        v: &VersionRef<'_>,
    ) -> Result<Option<KeyRecord>, StorageError> {
        let Some((seq, record)) = self.read_latest::<KeyRecord>("key", dir).await? else {
            return Ok(None);
        };
        record.checked(dir, v, seq).map(Some)
    }

    /// Unwraps a key record's DEK, bound to `v` and the record's generation.
    pub(crate) async fn unwrap_record(
        &self,
        v: &VersionRef<'_>,
        record: &KeyRecord,
    ) -> Result<Dek, StorageError> {
        let binding = DekBinding {
            namespace: v.namespace,
            model: v.model,
            version: v.version,
            dek_generation: record.dek_generation,
        };
        Ok(self.keys.unwrap_dek(&record.wrapped, &binding).await?)
    }

    /// The DEK whose key records live in `dir`, bound to `v` (a version, or
    /// a model's metadata label); see [`Store::version_dek`].
    pub(crate) async fn dek_at(
        &self,
        dir: &Path,
        v: &VersionRef<'_>,
        create: bool,
    ) -> Result<(Dek, u32), StorageError> {
        let dir = dir.clone();
        for _ in 0..3 {
            if let Some(record) = self.checked_latest_key(&dir, v).await? {
                let dek = self.unwrap_record(v, &record).await?;
                return Ok((dek, record.dek_generation));
            }
            if !create {
                return Err(StorageError::NotFound(format!("key for {v}")));
            }
            let dek = Dek::generate()?;
            let binding = DekBinding {
                namespace: v.namespace,
                model: v.model,
                version: v.version,
                dek_generation: 1,
            };
            let record = KeyRecord {
                namespace: v.namespace.into(),
                model: v.model.into(),
                version: v.version.into(),
                seq: 0,
                dek_generation: 1,
                wrapped: self.keys.wrap_dek(&dek, &binding).await?,
                created_at: now(),
            };
            match self
                .create_record("key", &layout::seq_record(&dir, 0), &record)
                .await
            {
                Ok(()) => {
                    self.settle_wrap(&dir, v, &dek, 1).await?;
                    return Ok((dek, 1));
                }
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Integrity(format!(
            "key record for {v} could not be read back"
        )))
    }

    /// Called after writing a key record for `dek` (generation
    /// `generation`) into `dir`. A KEK rotation may have raced the write:
    /// the wrap used the KEK that was current before it, and the record
    /// landed after the rotation job listed the records to rewrap. A later
    /// retirement of that KEK checks only the newest records, so it could
    /// strand the DEK. If the newest record's KEK is no longer current,
    /// wrap the DEK (still in memory) again under the current KEK in a newer
    /// record. Retirement only ever destroys a KEK that is not current, so
    /// once this returns the DEK survives any retirement.
    pub(crate) async fn settle_wrap(
        &self,
        dir: &Path,
        v: &VersionRef<'_>,
        dek: &Dek,
        generation: u32,
    ) -> Result<(), StorageError> {
        for _ in 0..8 {
            let current = self.keys.current_kek_version().await?;
            let latest = self
                .checked_latest_key(dir, v)
                .await?
                .ok_or_else(|| StorageError::NotFound(format!("key for {v}")))?;
            if latest.wrapped.kek_version.0 >= current.0 || latest.dek_generation != generation {
                // Current, or superseded by a DEK rotation (not ours).
                return Ok(());
            }
            let binding = DekBinding {
                namespace: v.namespace,
                model: v.model,
                version: v.version,
                dek_generation: generation,
            };
            let next = KeyRecord {
                seq: latest.seq + 1,
                wrapped: self.keys.wrap_dek(dek, &binding).await?,
                created_at: now(),
                ..latest
            };
            match self
                .create_record("key", &layout::seq_record(dir, next.seq), &next)
                .await
            {
                // Look again: the KEK may have rotated once more.
                Ok(()) | Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(format!(
            "{dir}: too many concurrent key writers"
        )))
    }
}

impl KeyRecord {
    /// The record, if it names `v` and its own sequence number `seq` in
    /// `dir` (a record copied elsewhere in the bucket is refused).
    pub(crate) fn checked(
        self,
        dir: &Path,
        v: &VersionRef<'_>,
        seq: u64,
    ) -> Result<Self, StorageError> {
        if self.namespace != v.namespace
            || self.model != v.model
            || self.version != v.version
            || self.seq != seq
        {
            return Err(StorageError::Integrity(format!(
                "key record in {dir} names another version"
            )));
        }
        Ok(self)
    }
}

/// The key that seals a version's sensitive metadata under generation
/// `generation` of its DEK.
pub(crate) fn version_metadata_key(
    dek: &Dek,
    v: &VersionRef<'_>,
    generation: u32,
) -> Result<modelvault_format::SealKey, StorageError> {
    Ok(dek.seal_key(
        VERSION_METADATA_SEAL,
        &[v.namespace, v.model, v.version, &generation.to_string()],
    )?)
}

pub(crate) fn digest_seal_key(
    dek: &Dek,
    v: &VersionRef<'_>,
    generation: u32,
) -> Result<modelvault_format::SealKey, StorageError> {
    Ok(dek.seal_key(
        DIGEST_SEAL,
        &[v.namespace, v.model, v.version, &generation.to_string()],
    )?)
}

pub(crate) fn seal_digests(
    dek: &Dek,
    v: &VersionRef<'_>,
    generation: u32,
    digests: &BTreeMap<String, String>,
) -> Result<String, StorageError> {
    let json =
        serde_json::to_vec(digests).map_err(|e| StorageError::InvalidInput(e.to_string()))?;
    let sealed = digest_seal_key(dek, v, generation)?.seal(b"manifest", &json)?;
    Ok(b64_encode(&sealed))
}

pub(crate) fn unseal_digests(
    dek: &Dek,
    v: &VersionRef<'_>,
    generation: u32,
    manifest: &Manifest,
) -> Result<BTreeMap<String, String>, StorageError> {
    let sealed = b64_decode(&manifest.sealed_digests)?;
    let json = digest_seal_key(dek, v, generation)?.open(b"manifest", &sealed)?;
    serde_json::from_slice(&json)
        .map_err(|_| StorageError::Integrity(format!("digests of {v} are malformed")))
}
