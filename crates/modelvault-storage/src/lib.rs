//! Modelvault's persistence, all through `object_store`: a local directory
//! (the embedded default) or any S3-compatible bucket.
//!
//! Invariants a reader must keep:
//! - no plaintext model byte, plaintext digest or DEK is ever written; blobs
//!   are in the format of `modelvault-format`, digests are sealed under the
//!   version DEK, DEKs are wrapped by the key provider;
//! - every control record is authenticated ([`records`]) and bound to its
//!   path; a record that fails is an [`StorageError::Integrity`] error;
//! - nothing is overwritten: blobs get fresh keys, records are
//!   create-if-absent (mutable state is sequence-numbered records), so
//!   racing writers never tear state;
//! - on the local store, every write is fsynced (file and directory) before
//!   it returns (`LocalFileSystem::with_fsync`), so an acknowledged commit
//!   survives a crash.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod blob;
mod dek_rotation;
mod error;
pub mod layout;
mod metadata;
pub mod names;
pub mod records;
mod rotation;
mod shred;
mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use futures::TryStreamExt as _;
use modelvault_format::{Dek, SegmentSize};
use modelvault_keys::{DekBinding, KeyProvider};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use blob::{FileReader, PlaintextStream};
pub use error::StorageError;
pub use rotation::{KeyDir, Rewrap};
pub use shred::{ShredReport, failpoint};
pub use types::*;

/// Purpose label of the seal key for file digests.
const DIGEST_SEAL: &str = "file-digests";
const VERSION_METADATA_SEAL: &str = "version-metadata";

/// An open store: the object store, and the key provider that
/// authenticates its records and wraps its DEKs.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Root directory when the store is the local file system.
    local_root: Option<PathBuf>,
    keys: Arc<dyn KeyProvider>,
    url: String,
    segment_size: SegmentSize,
    /// Presigns GET URLs on S3 stores: the client and the key prefix.
    signer: Option<(Arc<object_store::aws::AmazonS3>, String)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What [`Store::collect_garbage`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs examined.
    pub blobs_seen: usize,
    /// Unreferenced blobs deleted.
    pub blobs_deleted: usize,
    /// Upload records deleted with them.
    pub upload_records_deleted: usize,
    /// Staging files of writes that never completed (a server killed
    /// mid-upload or mid-re-encryption) deleted from a local store.
    pub staging_files_deleted: usize,
}

/// Opens the object store behind a URL: `file:///abs/path` or
/// `s3://bucket[/prefix]` (S3 settings from the standard `AWS_*`
/// variables: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
pub fn open_object_store(
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), StorageError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| StorageError::InvalidInput(format!("store url {url:?}: {e}")))?;
    match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|_| {
                StorageError::InvalidInput(format!(
                    "store url {url:?} is not an absolute file path"
                ))
            })?;
            std::fs::create_dir_all(&path)?;
            // Only the owner may enter the store, whatever the modes of
            // what lies below (a store written before the server narrowed
            // its umask to 0o077 holds 0644 files in 0755 directories).
            {
                use std::os::unix::fs::PermissionsExt as _;
                if let Err(e) =
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot make the store directory 0700");
                }
            }
            // fsync every written file and its directory before a write
            // returns: commits and blobs are durable once acknowledged.
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&path)?.with_fsync(true);
            Ok((Arc::new(fs), Some(path)))
        }
        "s3" => {
            let bucket = parsed.host_str().ok_or_else(|| {
                StorageError::InvalidInput(format!("store url {url:?} names no bucket"))
            })?;
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            let prefix = parsed.path().trim_matches('/');
            if prefix.is_empty() {
                Ok((Arc::new(s3), None))
            } else {
                Ok((
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)),
                    None,
                ))
            }
        }
        other => Err(StorageError::InvalidInput(format!(
            "unsupported store scheme {other:?}: use file:///path or s3://bucket"
        ))),
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

impl Store {
    /// A store over an already-built object store (tests, embedding).
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        local_root: Option<PathBuf>,
        keys: Arc<dyn KeyProvider>,
        url: impl Into<String>,
    ) -> Self {
        Self {
            objects,
            local_root,
            keys,
            url: url.into(),
            segment_size: SegmentSize::default(),
            signer: None,
        }
    }

    /// Opens the store at `url` (see [`open_object_store`]).
    pub fn open(url: &str, keys: Arc<dyn KeyProvider>) -> Result<Self, StorageError> {
        let (objects, local_root) = open_object_store(url)?;
        let mut store = Self::new(objects, local_root, keys, url);
        if let Ok(parsed) = url::Url::parse(url)
            && parsed.scheme() == "s3"
            && let Some(bucket) = parsed.host_str()
        {
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            store.signer = Some((Arc::new(s3), parsed.path().trim_matches('/').to_string()));
        }
        Ok(store)
    }

    /// A presigned GET URL for `path`, valid for `expires`, on S3 stores;
    /// `None` on stores that cannot presign (the local file system).
    pub async fn presigned_get(
        &self,
        path: &Path,
        expires: std::time::Duration,
    ) -> Result<Option<url::Url>, StorageError> {
        use object_store::signer::Signer as _;
        let Some((s3, prefix)) = &self.signer else {
            return Ok(None);
        };
        let full = if prefix.is_empty() {
            path.clone()
        } else {
            Path::from(format!("{prefix}/{path}"))
        };
        Ok(Some(
            s3.signed_url(object_store::signer::Method::GET, &full, expires)
                .await?,
        ))
    }

    /// Sets the segment size used for new files.
    pub fn with_segment_size(mut self, size: SegmentSize) -> Self {
        self.segment_size = size;
        self
    }

    /// The store's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key provider.
    pub fn keys(&self) -> &Arc<dyn KeyProvider> {
        &self.keys
    }

    /// The local root directory, for the local file system store.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// The underlying object store (tests inspect and tamper with it).
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    // ------------------------------------------------------------ records

    /// Writes an authenticated record, create-if-absent.
    pub async fn create_record<T: Serialize>(
        &self,
        kind: &str,
        path: &Path,
        body: &T,
    ) -> Result<(), StorageError> {
        let bytes = records::seal(self.keys.as_ref(), kind, path.as_ref(), body).await?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .objects
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(StorageError::AlreadyExists(path.to_string()))
            }
            // Some S3 servers answer a lost conditional put with 412.
            Err(object_store::Error::Precondition { .. }) => {
                Err(StorageError::AlreadyExists(path.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes content-addressed bytes create-if-absent: an existing object
    /// at the same path is accepted (same hash, same content).
    pub async fn put_content_addressed(
        &self,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .objects
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an object's bytes; `None` if absent.
    pub async fn get_bytes(&self, path: &Path) -> Result<Option<bytes::Bytes>, StorageError> {
        match self.objects.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends a record to a sequence-numbered series: the next number after
    /// the latest, create-if-absent, retried when another writer wins.
    /// `make` builds the body for a sequence number.
    pub async fn append_record<T: Serialize>(
        &self,
        kind: &str,
        dir: &Path,
        mut make: impl FnMut(u64) -> T,
    ) -> Result<(u64, T), StorageError> {
        for _ in 0..16 {
            let next = self.latest_seq(dir).await?.map_or(0, |(s, _)| s + 1);
            let body = make(next);
            match self
                .create_record(kind, &layout::seq_record(dir, next), &body)
                .await
            {
                Ok(()) => return Ok((next, body)),
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(format!(
            "{dir}: too many concurrent writers"
        )))
    }

    /// Every record of a sequence-numbered series, in order, verified.
    pub async fn read_series<T: DeserializeOwned>(
        &self,
        kind: &str,
        dir: &Path,
    ) -> Result<Vec<(u64, T)>, StorageError> {
        let entries: Vec<_> = self.objects.list(Some(dir)).try_collect().await?;
        let mut seqs: Vec<(u64, Path)> = entries
            .into_iter()
            .filter_map(|m| layout::parse_seq(&m.location).map(|s| (s, m.location)))
            .collect();
        seqs.sort_by_key(|(s, _)| *s);
        let mut out = Vec::with_capacity(seqs.len());
        for (seq, path) in seqs {
            match self.read_record(kind, &path).await? {
                Some(r) => out.push((seq, r)),
                None => return Err(StorageError::Integrity(format!("record {path} vanished"))),
            }
        }
        Ok(out)
    }

    /// Names of the direct sub-folders of `dir`.
    pub async fn list_children(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        let listing = self.objects.list_with_delimiter(Some(dir)).await?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Deletes one object (undoing a half-finished create); absent is fine.
    pub async fn delete_object(&self, path: &Path) -> Result<(), StorageError> {
        match self.objects.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads and verifies a record; `None` if absent.
    pub async fn read_record<T: DeserializeOwned>(
        &self,
        kind: &str,
        path: &Path,
    ) -> Result<Option<T>, StorageError> {
        match self.objects.get(path).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                records::open(self.keys.as_ref(), kind, path.as_ref(), &bytes)
                    .await
                    .map(Some)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The highest sequence number in `dir`, if any.
    async fn latest_seq(&self, dir: &Path) -> Result<Option<(u64, Path)>, StorageError> {
        let entries: Vec<_> = self.objects.list(Some(dir)).try_collect().await?;
        Ok(entries
            .into_iter()
            .filter_map(|m| layout::parse_seq(&m.location).map(|s| (s, m.location)))
            .max_by_key(|(s, _)| *s))
    }

    /// The latest sequence-numbered record in `dir`.
    pub async fn read_latest<T: DeserializeOwned>(
        &self,
        kind: &str,
        dir: &Path,
    ) -> Result<Option<(u64, T)>, StorageError> {
        match self.latest_seq(dir).await? {
            None => Ok(None),
            Some((seq, path)) => match self.read_record(kind, &path).await? {
                Some(r) => Ok(Some((seq, r))),
                None => Err(StorageError::Integrity(format!("record {path} vanished"))),
            },
        }
    }

    // --------------------------------------------------------------- init

    /// Marks the store as initialized (create-if-absent). Fails with
    /// [`StorageError::AlreadyExists`] if it already is.
    pub async fn initialize(&self) -> Result<(), StorageError> {
        #[derive(Serialize)]
        struct Marker<'a> {
            format: &'a str,
            created_at: chrono::DateTime<Utc>,
        }
        self.create_record(
            "store",
            &layout::marker(),
            &Marker {
                format: "modelvault-store-v1",
                created_at: now(),
            },
        )
        .await
    }

    /// Checks the store was initialized with this key provider.
    pub async fn check_initialized(&self) -> Result<(), StorageError> {
        match self
            .read_record::<serde_json::Value>("store", &layout::marker())
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(StorageError::NotInitialized(format!(
                "{} is not initialized",
                self.url
            ))),
            Err(StorageError::Integrity(_)) => Err(StorageError::NotInitialized(format!(
                "{} was initialized with another key provider (its marker does not verify)",
                self.url
            ))),
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------------- models

    /// Creates a model (create-if-absent on its first metadata record).
    pub async fn create_model(
        &self,
        namespace: &str,
        name: &str,
        sensitivity: Sensitivity,
        tags: BTreeMap<String, String>,
        owner: &str,
    ) -> Result<ModelRecord, StorageError> {
        self.create_model_with(
            namespace,
            name,
            sensitivity,
            tags,
            owner,
            BTreeMap::new(),
            &[],
        )
        .await
    }

    /// Creates a model with metadata; keys in `sensitive` are sealed.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_model_with(
        &self,
        namespace: &str,
        name: &str,
        sensitivity: Sensitivity,
        tags: BTreeMap<String, String>,
        owner: &str,
        metadata: BTreeMap<String, String>,
        sensitive: &[String],
    ) -> Result<ModelRecord, StorageError> {
        names::validate_name("namespace", namespace)?;
        names::validate_name("model", name)?;
        for (k, v) in &tags {
            metadata::check_entry("tag", k, v)?;
        }
        let at = now();
        let mut record = ModelRecord {
            namespace: namespace.into(),
            name: name.into(),
            sensitivity,
            tags,
            owner: owner.into(),
            created_at: at,
            revision: 0,
            metadata: BTreeMap::new(),
            sensitive_fields: Vec::new(),
            sealed_metadata: None,
            changed_by: owner.into(),
            changed_at: Some(at),
        };
        self.set_metadata(&mut record, metadata, sensitive).await?;
        let path = layout::seq_record(&layout::model_meta_dir(namespace, name), 0);
        match self.create_record("model", &path, &record).await {
            Err(StorageError::AlreadyExists(_)) => Err(StorageError::AlreadyExists(format!(
                "model {namespace}/{name}"
            ))),
            other => other.map(|()| record),
        }
    }

    /// A model's latest metadata; `None` if it does not exist.
    pub async fn get_model(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ModelRecord>, StorageError> {
        names::validate_name("namespace", namespace)?;
        names::validate_name("model", name)?;
        let dir = layout::model_meta_dir(namespace, name);
        let Some((seq, record)) = self.read_latest::<ModelRecord>("model", &dir).await? else {
            return Ok(None);
        };
        if record.namespace != namespace || record.name != name || record.revision != seq {
            return Err(StorageError::Integrity(format!(
                "model record {dir} names another model"
            )));
        }
        Ok(Some(record))
    }

    async fn require_model(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ModelRecord, StorageError> {
        self.get_model(namespace, name)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("model {namespace}/{name}")))
    }

    /// Namespaces that hold at least one model.
    pub async fn list_namespaces(&self) -> Result<Vec<String>, StorageError> {
        let listing = self
            .objects
            .list_with_delimiter(Some(&layout::models_root()))
            .await?;
        // Skip anything that is not a valid name (a stray object must not
        // break listing for everyone).
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|ns| names::validate_name("namespace", ns).is_ok())
            .collect())
    }

    /// Models in a namespace, sorted by name.
    pub async fn list_models(&self, namespace: &str) -> Result<Vec<ModelRecord>, StorageError> {
        names::validate_name("namespace", namespace)?;
        let listing = self
            .objects
            .list_with_delimiter(Some(&layout::namespace_root(namespace)))
            .await?;
        let mut out = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.filename() else {
                continue;
            };
            if names::validate_name("model", name).is_err() {
                continue;
            }
            if let Some(m) = self.get_model(namespace, name).await? {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    // --------------------------------------------------------------- keys

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
    async fn unwrap_record(
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

    // ----------------------------------------------------------- versions

    /// The latest manifest of a committed version, or `None`. A version
    /// with a tombstone is [`StorageError::Gone`] whatever else the bucket
    /// holds for it (key records, manifests and blobs put back from a copy
    /// do not bring a deleted version back). The tombstone check (one HEAD)
    /// runs alongside the manifest read.
    pub async fn get_manifest(&self, v: &VersionRef<'_>) -> Result<Option<Manifest>, StorageError> {
        names::validate_version(v.version)?;
        let dir = layout::manifest_dir(v.namespace, v.model, v.version);
        let (deleted, latest) = futures::future::join(
            self.is_deleted(v),
            self.read_latest::<Manifest>("manifest", &dir),
        )
        .await;
        if deleted? {
            return Err(StorageError::Gone(v.to_string()));
        }
        let Some((seq, m)) = latest? else {
            return Ok(None);
        };
        m.checked(&dir, v, seq).map(Some)
    }

    /// Committed versions of a model, oldest commit first.
    pub async fn list_versions(
        &self,
        namespace: &str,
        model: &str,
    ) -> Result<Vec<Manifest>, StorageError> {
        self.require_model(namespace, model).await?;
        let listing = self
            .objects
            .list_with_delimiter(Some(&layout::versions_dir(namespace, model)))
            .await?;
        let mut out = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(version) = prefix.filename() else {
                continue;
            };
            if names::validate_version(version).is_err() {
                continue;
            }
            let v = VersionRef {
                namespace,
                model,
                version,
            };
            match self.get_manifest(&v).await {
                Ok(Some(m)) => out.push(m),
                // Deleted (tombstoned) versions are not listed, so never
                // `latest`, even if their records were put back.
                Ok(None) | Err(StorageError::Gone(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.version.cmp(&b.version))
        });
        Ok(out)
    }

    /// Resolves `latest` to the newest committed version; other names pass
    /// through after validation.
    pub async fn resolve_version(
        &self,
        namespace: &str,
        model: &str,
        version: &str,
    ) -> Result<String, StorageError> {
        if version == "latest" {
            let versions = self.list_versions(namespace, model).await?;
            return versions.last().map(|m| m.version.clone()).ok_or_else(|| {
                StorageError::NotFound(format!("committed version of {namespace}/{model}"))
            });
        }
        names::validate_version(version)?;
        Ok(version.to_string())
    }

    /// A committed version with its digests unsealed.
    pub async fn show_version(&self, v: &VersionRef<'_>) -> Result<VersionView, StorageError> {
        self.require_model(v.namespace, v.model).await?;
        let manifest = match self.get_manifest(v).await? {
            Some(m) => m,
            None if self.is_deleted(v).await? => return Err(StorageError::Gone(v.to_string())),
            None => return Err(StorageError::NotFound(format!("version {v}"))),
        };
        let generation = manifest.dek_generation;
        let (dek, _) = self.dek_for_generation(v, generation).await?;
        let digests = unseal_digests(&dek, v, generation, &manifest)?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            let sha256 = digests.get(&f.path).ok_or_else(|| {
                StorageError::Integrity(format!("no digest for {} in {v}", f.path))
            })?;
            files.push(FileEntry {
                path: f.path.clone(),
                size: f.size,
                sha256: sha256.clone(),
            });
        }
        let mut metadata = manifest.metadata.clone();
        if let Some(sealed) = &manifest.sealed_metadata {
            let key = version_metadata_key(&dek, v, generation)?;
            let json = key.open(b"metadata", &b64_decode(sealed)?)?;
            let secret: BTreeMap<String, String> = serde_json::from_slice(&json)
                .map_err(|_| StorageError::Integrity(format!("metadata of {v} is malformed")))?;
            metadata.extend(secret);
        }
        Ok(VersionView {
            manifest,
            files,
            metadata,
        })
    }

    /// Commits a draft: every listed file must match an upload of the same
    /// path, size and SHA-256. The manifest write is create-if-absent, so of
    /// two racing commits exactly one wins and the other gets
    /// [`StorageError::VersionCommitted`].
    pub async fn commit(
        &self,
        v: &VersionRef<'_>,
        files: &[CommitFile],
        uploader: &str,
    ) -> Result<Manifest, StorageError> {
        self.commit_with(v, files, uploader, BTreeMap::new(), &[])
            .await
    }

    /// [`Store::commit`] with version metadata; keys in `sensitive` are
    /// sealed under the version DEK.
    pub async fn commit_with(
        &self,
        v: &VersionRef<'_>,
        files: &[CommitFile],
        uploader: &str,
        metadata: BTreeMap<String, String>,
        sensitive: &[String],
    ) -> Result<Manifest, StorageError> {
        names::validate_version(v.version)?;
        for (k, val) in &metadata {
            metadata::check_entry("metadata", k, val)?;
        }
        self.require_model(v.namespace, v.model).await?;
        if files.is_empty() {
            return Err(StorageError::InvalidInput(
                "a commit must list at least one file".into(),
            ));
        }
        // Paths in their stored (NFC) form, as the uploads recorded them.
        let files = files
            .iter()
            .map(|f| {
                Ok(CommitFile {
                    path: names::normalize_file_path(&f.path)?,
                    ..f.clone()
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let mut wanted: BTreeMap<&str, &CommitFile> = BTreeMap::new();
        for f in &files {
            if f.sha256.len() != 64 || hex::decode(&f.sha256).is_err() {
                return Err(StorageError::InvalidInput(format!(
                    "sha256 of {:?} is not 64 hex digits",
                    f.path
                )));
            }
            if wanted.insert(&f.path, f).is_some() {
                return Err(StorageError::InvalidInput(format!(
                    "file {:?} listed twice",
                    f.path
                )));
            }
        }
        let marks: std::collections::BTreeSet<String> = sensitive.iter().cloned().collect();
        if self.get_manifest(v).await?.is_some() {
            return self.recommit(v, &wanted, &metadata, &marks).await;
        }
        if self.is_deleted(v).await? {
            return Err(StorageError::Gone(v.to_string()));
        }
        let requested_metadata = metadata.clone();
        let (dek, generation) = match self.version_dek(v, false).await {
            Err(StorageError::NotFound(_)) => {
                return Err(StorageError::CommitMismatch(format!(
                    "nothing was uploaded to {v}"
                )));
            }
            other => other?,
        };
        // The newest matching upload of each path wins.
        let uploads = self.list_uploads(v).await?;
        let seal = digest_seal_key(&dek, v, generation)?;
        let mut chosen: BTreeMap<&str, (&UploadRecord, String)> = BTreeMap::new();
        for u in &uploads {
            let Some(want) = wanted.get(u.path.as_str()) else {
                continue;
            };
            if u.dek_generation != generation {
                continue;
            }
            let digest =
                hex::encode(&*seal.open(u.blob.as_bytes(), &b64_decode(&u.sealed_sha256)?)?);
            if u.size == want.size && digest.eq_ignore_ascii_case(&want.sha256) {
                let newer = chosen
                    .get(u.path.as_str())
                    .is_none_or(|(c, _)| c.created_at < u.created_at);
                if newer {
                    chosen.insert(&u.path, (u, digest));
                }
            }
        }
        for (path, want) in &wanted {
            if !chosen.contains_key(path) {
                let any = uploads.iter().any(|u| u.path == *path);
                return Err(StorageError::CommitMismatch(if any {
                    format!(
                        "{path}: size or sha256 differs from what the server received (size {})",
                        want.size
                    )
                } else {
                    format!("{path}: never uploaded")
                }));
            }
        }
        // Every chosen blob must still be there, whole (an upload left as a
        // draft longer than the GC grace period may have been collected).
        for (path, (u, _)) in &chosen {
            let blob = Path::parse(&u.blob)
                .map_err(|_| StorageError::Integrity(format!("bad blob key for {path}")))?;
            match self.objects.head(&blob).await {
                Ok(meta) if meta.size == u.ciphertext_size => {}
                Ok(_) => {
                    return Err(StorageError::Integrity(format!(
                        "blob of {path} has the wrong size"
                    )));
                }
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(StorageError::CommitMismatch(format!(
                        "{path}: the upload expired and was collected; upload it again"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut digests = BTreeMap::new();
        let mut manifest_files = Vec::with_capacity(chosen.len());
        for (path, (u, digest)) in &chosen {
            digests.insert(path.to_string(), digest.clone());
            manifest_files.push(ManifestFile {
                path: u.path.clone(),
                size: u.size,
                blob: u.blob.clone(),
                ciphertext_size: u.ciphertext_size,
                salt: u.salt.clone(),
                segments_blake3: u.segments_blake3.clone(),
            });
        }
        let sealed = seal_digests(&dek, v, generation, &digests)?;
        let (secret, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
            metadata.into_iter().partition(|(k, _)| marks.contains(k));
        let sealed_metadata = if secret.is_empty() {
            None
        } else {
            let json = zeroize::Zeroizing::new(
                serde_json::to_vec(&secret)
                    .map_err(|e| StorageError::InvalidInput(e.to_string()))?,
            );
            let key = version_metadata_key(&dek, v, generation)?;
            Some(b64_encode(&key.seal(b"metadata", &json)?))
        };
        let manifest = Manifest {
            metadata: plain,
            sensitive_fields: marks.iter().cloned().collect(),
            sealed_metadata,
            namespace: v.namespace.into(),
            model: v.model.into(),
            version: v.version.into(),
            revision: 0,
            dek_generation: generation,
            files: manifest_files,
            uploader: uploader.into(),
            created_at: now(),
            sealed_digests: sealed,
        };
        let path = layout::seq_record(&layout::manifest_dir(v.namespace, v.model, v.version), 0);
        match self.create_record("manifest", &path, &manifest).await {
            Ok(()) => Ok(manifest),
            Err(StorageError::AlreadyExists(_)) => {
                self.recommit(v, &wanted, &requested_metadata, &marks).await
            }
            Err(e) => Err(e),
        }
    }

    /// A commit of a version that is committed already: a client retrying
    /// a commit whose answer it lost (a crash after the commit landed, a
    /// dropped connection) gets the committed manifest when it asks for
    /// exactly what was committed (the same paths, sizes and SHA-256s, the
    /// same metadata and sensitive fields); anything else is
    /// [`StorageError::VersionCommitted`].
    async fn recommit(
        &self,
        v: &VersionRef<'_>,
        wanted: &BTreeMap<&str, &CommitFile>,
        metadata: &BTreeMap<String, String>,
        sensitive: &std::collections::BTreeSet<String>,
    ) -> Result<Manifest, StorageError> {
        let view = self.show_version(v).await?;
        let same_files = view.files.len() == wanted.len()
            && view.files.iter().all(|f| {
                wanted
                    .get(f.path.as_str())
                    .is_some_and(|w| w.size == f.size && w.sha256.eq_ignore_ascii_case(&f.sha256))
            });
        let same_sensitive = view.manifest.sensitive_fields.len() == sensitive.len()
            && view
                .manifest
                .sensitive_fields
                .iter()
                .all(|k| sensitive.contains(k));
        if same_files && view.metadata == *metadata && same_sensitive {
            Ok(view.manifest)
        } else {
            Err(StorageError::VersionCommitted(v.to_string()))
        }
    }

    async fn list_uploads(&self, v: &VersionRef<'_>) -> Result<Vec<UploadRecord>, StorageError> {
        let dir = layout::uploads_dir(v.namespace, v.model, v.version);
        let entries: Vec<_> = self.objects.list(Some(&dir)).try_collect().await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some(r) = self
                .read_record::<UploadRecord>("upload", &e.location)
                .await?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    // ----------------------------------------------------------------- gc

    /// Deletes blobs no manifest lists that are older than `grace` (a
    /// failed or abandoned upload), with their upload records.
    pub async fn collect_garbage(
        &self,
        grace: std::time::Duration,
    ) -> Result<GcReport, StorageError> {
        let cutoff = now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut report = GcReport::default();
        // Every manifest under models/, whatever its names: a blob is kept
        // if any manifest revision lists it. A manifest that fails to verify
        // aborts the run (nothing is deleted on doubt).
        let mut referenced = std::collections::HashSet::new();
        let everything: Vec<_> = self
            .objects
            .list(Some(&layout::models_root()))
            .try_collect()
            .await?;
        for o in &everything {
            if o.location.as_ref().contains("/manifest/") {
                match self
                    .read_record::<Manifest>("manifest", &o.location)
                    .await?
                {
                    Some(m) => {
                        for f in m.files {
                            // A blob's segment table lives and dies with it.
                            referenced.insert(layout::segment_table(&f.blob).to_string());
                            referenced.insert(f.blob);
                        }
                    }
                    None => {
                        return Err(StorageError::Integrity(format!(
                            "manifest {} vanished during GC",
                            o.location
                        )));
                    }
                }
            }
        }
        let blobs: Vec<_> = self
            .objects
            .list(Some(&layout::blobs_root()))
            .try_collect()
            .await?;
        let mut deleted = std::collections::HashSet::new();
        for b in blobs {
            // Segment tables go with their blob and are not counted apart.
            let is_table = b.location.as_ref().ends_with(layout::SEGMENT_TABLE_SUFFIX);
            if !is_table {
                report.blobs_seen += 1;
            }
            if referenced.contains(b.location.as_ref()) || b.last_modified > cutoff {
                continue;
            }
            match self.objects.delete(&b.location).await {
                // Another server's collector got there first.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if !is_table {
                deleted.insert(b.location.to_string());
                report.blobs_deleted += 1;
            }
        }
        if !deleted.is_empty() {
            let records: Vec<_> = self
                .objects
                .list(Some(&layout::models_root()))
                .try_collect()
                .await?;
            for r in records {
                if !r.location.as_ref().contains("/uploads/") {
                    continue;
                }
                let record = self
                    .read_record::<UploadRecord>("upload", &r.location)
                    .await;
                if let Ok(Some(u)) = record
                    && deleted.contains(&u.blob)
                {
                    match self.objects.delete(&r.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    report.upload_records_deleted += 1;
                }
            }
        }
        if let Some(root) = self.local_root.clone() {
            let cutoff = std::time::SystemTime::now()
                .checked_sub(grace)
                .unwrap_or(std::time::UNIX_EPOCH);
            report.staging_files_deleted =
                tokio::task::spawn_blocking(move || remove_staging_files(&root, cutoff))
                    .await
                    .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        }
        Ok(report)
    }
}

/// A staging file of `object_store`'s local store: `{final name}#{digits}`,
/// written before a blob or record is renamed into place and left behind
/// when the process dies mid-write. Listings never show such names and no
/// object may have one, so nothing else can match.
fn is_staging_file(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(base, n)| {
            !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Deletes the staging files under `root` last modified before `cutoff`
/// (a write in progress touches its file with every part); returns how
/// many. Entries that vanish meanwhile (another collector) are skipped.
fn remove_staging_files(
    root: &std::path::Path,
    cutoff: std::time::SystemTime,
) -> Result<usize, StorageError> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            if !kind.is_file() || !is_staging_file(&entry.file_name()) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if !old {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(removed)
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

impl Manifest {
    /// The manifest, if it names `v` and its own revision `seq` in `dir`.
    pub(crate) fn checked(
        self,
        dir: &Path,
        v: &VersionRef<'_>,
        seq: u64,
    ) -> Result<Self, StorageError> {
        if self.namespace != v.namespace
            || self.model != v.model
            || self.version != v.version
            || self.revision != seq
        {
            return Err(StorageError::Integrity(format!(
                "manifest {dir} names another version"
            )));
        }
        Ok(self)
    }
}

/// The key that seals a version's sensitive metadata under generation
/// `generation` of its DEK.
fn version_metadata_key(
    dek: &Dek,
    v: &VersionRef<'_>,
    generation: u32,
) -> Result<modelvault_format::SealKey, StorageError> {
    Ok(dek.seal_key(
        VERSION_METADATA_SEAL,
        &[v.namespace, v.model, v.version, &generation.to_string()],
    )?)
}

fn digest_seal_key(
    dek: &Dek,
    v: &VersionRef<'_>,
    generation: u32,
) -> Result<modelvault_format::SealKey, StorageError> {
    Ok(dek.seal_key(
        DIGEST_SEAL,
        &[v.namespace, v.model, v.version, &generation.to_string()],
    )?)
}

fn seal_digests(
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

fn unseal_digests(
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

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn b64_decode(s: &str) -> Result<Vec<u8>, StorageError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| StorageError::Integrity("invalid base64 in a record".into()))
}
