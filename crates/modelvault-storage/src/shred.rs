//! Crypto-shred delete of a version: a tombstone (create-if-absent, never
//! removed, so the name is never reused and later requests get 410), then
//! the key records are destroyed at once, then manifests, uploads and blobs
//! are deleted best-effort. Every step is idempotent: an interrupted delete
//! is run again to finish.
//!
//! Copies of the bucket made before still hold wrapped DEKs; they become
//! unreadable once every KEK version listed in [`ShredReport::kek_versions`]
//! is retired in the provider.

use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};

use crate::{StorageError, Store, VersionRef, failpoint, layout};

/// What a delete destroyed and what still stands between the version and
/// a complete shred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShredReport {
    /// `ns/model@version`.
    pub version: String,
    /// Blob keys deleted.
    pub blobs: Vec<String>,
    /// Ciphertext SHA-256 of each blob, as deleted (hex), by blob key.
    pub blob_sha256: Vec<(String, String)>,
    /// Every KEK version that ever wrapped the version's DEK.
    pub kek_versions: Vec<u32>,
    /// Every (KEK version, DEK generation) pair a key record held.
    pub wraps: Vec<(u32, u32)>,
}

#[derive(Serialize, Deserialize)]
struct Tombstone {
    version: String,
    deleted_by: String,
    deleted_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// Whether `v` was deleted (its tombstone exists: one HEAD). The
    /// tombstone is never removed by the server, and a version that has one
    /// is gone whatever else the bucket holds for it.
    pub async fn is_deleted(&self, v: &VersionRef<'_>) -> Result<bool, StorageError> {
        use object_store::ObjectStoreExt as _;
        match self
            .objects
            .head(&layout::tombstone(v.namespace, v.model, v.version))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// What a shred of `v` would report (call before [`Store::shred`]).
    pub async fn shred_plan(&self, v: &VersionRef<'_>) -> Result<ShredReport, StorageError> {
        let mut wraps: Vec<(u32, u32)> = self
            .read_series::<crate::KeyRecord>(
                "key",
                &layout::keys_dir(v.namespace, v.model, v.version),
            )
            .await?
            .into_iter()
            .map(|(_, r)| (r.wrapped.kek_version.0, r.dek_generation))
            .collect();
        wraps.sort_unstable();
        wraps.dedup();
        let mut kek_versions: Vec<u32> = wraps.iter().map(|(k, _)| *k).collect();
        kek_versions.dedup();
        let mut blobs = Vec::new();
        let mut blob_sha256 = Vec::new();
        let prefix = object_store::path::Path::from(format!(
            "blobs/{}/{}/{}",
            v.namespace, v.model, v.version
        ));
        let metas: Vec<_> = self.objects.list(Some(&prefix)).try_collect().await?;
        for m in metas {
            // Segment tables go with their blobs (deleted with the prefix).
            if m.location.as_ref().ends_with(layout::SEGMENT_TABLE_SUFFIX) {
                continue;
            }
            if let Some(bytes) = self.get_bytes(&m.location).await? {
                blob_sha256.push((
                    m.location.to_string(),
                    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)),
                ));
            }
            blobs.push(m.location.to_string());
        }
        Ok(ShredReport {
            version: v.to_string(),
            blobs,
            blob_sha256,
            kek_versions,
            wraps,
        })
    }

    /// Deletes `v`: an entry in the model's commit log, the tombstone, key
    /// records, then manifests, uploads and blobs. Idempotent (an existing tombstone continues the delete).
    pub async fn shred(&self, v: &VersionRef<'_>, by: &str) -> Result<(), StorageError> {
        // The model's log first (listings read deletions from it).
        self.log_deletion(v).await?;
        let tomb = Tombstone {
            version: v.to_string(),
            deleted_by: by.into(),
            deleted_at: crate::now(),
        };
        match self
            .create_record(
                "tombstone",
                &layout::tombstone(v.namespace, v.model, v.version),
                &tomb,
            )
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.delete_all(&layout::keys_dir(v.namespace, v.model, v.version))
            .await?;
        failpoint("delete-after-keys");
        self.delete_all(&layout::manifest_dir(v.namespace, v.model, v.version))
            .await?;
        self.delete_all(&layout::uploads_dir(v.namespace, v.model, v.version))
            .await?;
        let blobs = object_store::path::Path::from(format!(
            "blobs/{}/{}/{}",
            v.namespace, v.model, v.version
        ));
        if let Err(e) = self.delete_all(&blobs).await {
            tracing::warn!(version = %v, error = %e, "deleting blobs failed; the garbage collector will retry");
        }
        Ok(())
    }

    async fn delete_all(&self, dir: &object_store::path::Path) -> Result<(), StorageError> {
        let metas: Vec<_> = self.objects.list(Some(dir)).try_collect().await?;
        for m in metas {
            self.delete_object(&m.location).await?;
        }
        Ok(())
    }
}
