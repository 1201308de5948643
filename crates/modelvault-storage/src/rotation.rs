//! KEK rotation support: find every key record (version DEKs, model
//! metadata keys), rewrap the newest one of each under the current KEK as
//! a new record (create-if-absent; manifests and blobs untouched), and
//! count which KEK versions live records still use.
//!
//! Invariants: a rewrap never changes a DEK, only how it is wrapped; the old
//! record stays (a reader that already holds it still decrypts) until the
//! KEK version is retired; a rewrap is idempotent, so an interrupted pass is
//! simply run again.

use std::collections::BTreeMap;

use modelvault_keys::{DekBinding, KekVersion};
use object_store::path::Path;

use crate::metadata::MODEL_KEY_LABEL;
use crate::{KeyRecord, StorageError, Store, layout, names};

/// One place key records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDir {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Version, or `.model-metadata` for the model's metadata key.
    pub label: String,
    /// The folder.
    pub dir: Path,
}

/// What a rewrap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrap {
    /// A new record under the current KEK was written.
    Rewrapped,
    /// The newest record already uses a KEK version at least `target`.
    AlreadyCurrent,
    /// No key record (a deleted version).
    Empty,
}

impl Store {
    /// Every key folder in the store, in a stable order.
    pub async fn key_dirs(&self) -> Result<Vec<KeyDir>, StorageError> {
        let mut out = Vec::new();
        for ns in self.list_children(&layout::models_root()).await? {
            if names::validate_name("namespace", &ns).is_err() {
                continue;
            }
            for model in self.list_children(&layout::namespace_root(&ns)).await? {
                if names::validate_name("model", &model).is_err() {
                    continue;
                }
                out.push(KeyDir {
                    namespace: ns.clone(),
                    model: model.clone(),
                    label: MODEL_KEY_LABEL.into(),
                    dir: layout::model_keys_dir(&ns, &model),
                });
                for v in self
                    .list_children(&layout::versions_dir(&ns, &model))
                    .await?
                {
                    // A deleted version's keys are destroyed: records put
                    // back from a copy are neither rewrapped nor counted.
                    let deleted = crate::VersionRef {
                        namespace: &ns,
                        model: &model,
                        version: &v,
                    };
                    if self.is_deleted(&deleted).await? {
                        continue;
                    }
                    out.push(KeyDir {
                        namespace: ns.clone(),
                        model: model.clone(),
                        dir: layout::keys_dir(&ns, &model, &v),
                        label: v,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The newest key record in `k`, checked against its folder.
    pub async fn latest_key(&self, k: &KeyDir) -> Result<Option<KeyRecord>, StorageError> {
        let v = crate::VersionRef {
            namespace: &k.namespace,
            model: &k.model,
            version: &k.label,
        };
        self.checked_latest_key(&k.dir, &v).await
    }

    /// Rewraps the newest key record of `k` under the provider's current
    /// KEK if it uses a version below `target`.
    pub async fn rewrap(&self, k: &KeyDir, target: KekVersion) -> Result<Rewrap, StorageError> {
        for _ in 0..8 {
            let Some(r) = self.latest_key(k).await? else {
                return Ok(Rewrap::Empty);
            };
            if r.wrapped.kek_version.0 >= target.0 {
                return Ok(Rewrap::AlreadyCurrent);
            }
            let binding = DekBinding {
                namespace: &k.namespace,
                model: &k.model,
                version: &k.label,
                dek_generation: r.dek_generation,
            };
            let dek = self.keys.unwrap_dek(&r.wrapped, &binding).await?;
            let wrapped = self.keys.wrap_dek(&dek, &binding).await?;
            let next = KeyRecord {
                seq: r.seq + 1,
                wrapped,
                created_at: crate::now(),
                ..r
            };
            match self
                .create_record("key", &layout::seq_record(&k.dir, next.seq), &next)
                .await
            {
                Ok(()) => return Ok(Rewrap::Rewrapped),
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(format!(
            "{}: too many concurrent writers",
            k.dir
        )))
    }

    /// KEK version → how many live (newest) key records it wraps.
    pub async fn kek_usage(&self) -> Result<BTreeMap<u32, u64>, StorageError> {
        let mut out = BTreeMap::new();
        for k in self.key_dirs().await? {
            if let Some(r) = self.latest_key(&k).await? {
                *out.entry(r.wrapped.kek_version.0).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Every KEK version that ever wrapped one of a version's key records.
    pub async fn kek_versions_of(
        &self,
        v: &crate::VersionRef<'_>,
    ) -> Result<Vec<u32>, StorageError> {
        self.kek_versions_in(&layout::keys_dir(v.namespace, v.model, v.version))
            .await
    }

    /// Every KEK version that ever wrapped a key record in `dir`.
    pub(crate) async fn kek_versions_in(&self, dir: &Path) -> Result<Vec<u32>, StorageError> {
        let mut v: Vec<u32> = self
            .read_series::<KeyRecord>("key", dir)
            .await?
            .into_iter()
            .map(|(_, r)| r.wrapped.kek_version.0)
            .collect();
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }
}
