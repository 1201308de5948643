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

/// A version's DEK as one read of its key records gives it: the key, its
/// generation, and the KEK version that wraps it in the store. Obtained
/// once per request and passed along, never unwrapped again.
pub struct VersionKey {
    dek: Dek,
    generation: u32,
    kek_version: KekVersion,
}

impl VersionKey {
    /// The DEK.
    pub fn dek(&self) -> &Dek {
        &self.dek
    }

    /// Its generation (1, then +1 per DEK rotation).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The KEK version of the key record it came from.
    pub fn kek_version(&self) -> KekVersion {
        self.kek_version
    }

    /// The DEK alone.
    pub(crate) fn into_dek(self) -> Dek {
        self.dek
    }
}

impl std::fmt::Debug for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionKey")
            .field("generation", &self.generation)
            .field("kek_version", &self.kek_version)
            .finish_non_exhaustive()
    }
}

/// Which DEK of a version a caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWant {
    /// The newest generation; a version without key records is
    /// [`StorageError::NotFound`], a deleted one [`StorageError::Gone`].
    Newest,
    /// The newest generation, creating generation 1 if the version has no
    /// key yet (the first upload). Racing creators agree: the key record is
    /// create-if-absent, the loser reads the winner.
    NewestOrCreate,
    /// Exactly this generation (what a manifest names): the newest key
    /// record serves the common case, otherwise the series is searched
    /// newest first; an older generation is refused once the version's
    /// switch records say the manifest in force was rolled back.
    Generation(u32),
}

impl Store {
    /// The one way to a version's DEK.
    pub async fn version_key(
        &self,
        v: &VersionRef<'_>,
        want: KeyWant,
    ) -> Result<VersionKey, StorageError> {
        let dir = layout::keys_dir(v.namespace, v.model, v.version);
        match want {
            KeyWant::NewestOrCreate => self.dek_at(&dir, v, true).await,
            KeyWant::Newest => match self.dek_at(&dir, v, false).await {
                Err(StorageError::NotFound(_)) if self.is_deleted(v).await? => {
                    Err(StorageError::Gone(v.to_string()))
                }
                other => other,
            },
            KeyWant::Generation(generation) => {
                let record = match self.checked_latest_key(&dir, v).await? {
                    None if self.is_deleted(v).await? => {
                        return Err(StorageError::Gone(v.to_string()));
                    }
                    None => return Err(StorageError::NotFound(format!("key for {v}"))),
                    Some(r) if r.dek_generation == generation => r,
                    Some(newest) => {
                        if newest.dek_generation > generation {
                            self.check_not_rolled_back(v, generation).await?;
                        }
                        self.generation_record(&dir, v, generation).await?
                    }
                };
                Ok(VersionKey {
                    dek: self.unwrap_record(v, &record).await?,
                    generation,
                    kek_version: record.wrapped.kek_version,
                })
            }
        }
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

    /// The newest DEK whose key records live in `dir`, bound to `v` (a
    /// version, or a model's metadata label), created if `create` and none
    /// exists; see [`KeyWant`].
    pub(crate) async fn dek_at(
        &self,
        dir: &Path,
        v: &VersionRef<'_>,
        create: bool,
    ) -> Result<VersionKey, StorageError> {
        let dir = dir.clone();
        for _ in 0..3 {
            if let Some(record) = self.checked_latest_key(&dir, v).await? {
                return Ok(VersionKey {
                    dek: self.unwrap_record(v, &record).await?,
                    generation: record.dek_generation,
                    kek_version: record.wrapped.kek_version,
                });
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
                    return Ok(VersionKey {
                        dek,
                        generation: 1,
                        kek_version: record.wrapped.kek_version,
                    });
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
        let place = (&*self.namespace, &*self.model, &*self.version, self.seq);
        check_place(place, v, seq, || format!("key record in {dir}"))?;
        Ok(self)
    }
}

/// Refuses a record whose (namespace, model, version, number) is not `v`
/// and `seq`: the check every version-scoped record gets on reading, so a
/// record copied to another place in the bucket is never accepted there.
pub(crate) fn check_place(
    (namespace, model, version, number): (&str, &str, &str, u64),
    v: &VersionRef<'_>,
    seq: u64,
    what: impl FnOnce() -> String,
) -> Result<(), StorageError> {
    if namespace != v.namespace || model != v.model || version != v.version || number != seq {
        return Err(StorageError::Integrity(format!(
            "{} names another version",
            what()
        )));
    }
    Ok(())
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
