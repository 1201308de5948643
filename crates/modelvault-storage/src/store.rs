//! Opening a store: the object store behind a URL (a local directory,
//! fsynced, or an S3-compatible bucket, built once), the key provider, and
//! the marker that says a store was initialized. Nothing else in the crate
//! builds an object store.

use super::*;

/// Opens the object store behind a URL: `file:///abs/path` or
/// `s3://bucket[/prefix]` (S3 settings from the standard `AWS_*`
/// variables: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`). Outside this
/// crate only with the `test-hooks` feature (tests that inspect a bucket).
#[cfg(any(test, feature = "test-hooks"))]
pub fn open_object_store(
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), StorageError> {
    open_objects(url)
}

/// The object store behind a URL (see [`Store::open`]).
pub(crate) fn open_objects(
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
            Ok((
                Arc::new(crate::local_objects::LocalObjects::new(fs, true)),
                Some(path),
            ))
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
            audit_summaries: Default::default(),
            log_cache: Default::default(),
        }
    }

    /// Opens the store at `url`: `file:///abs/path` or
    /// `s3://bucket[/prefix]` (S3 settings from the standard `AWS_*`
    /// variables: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
    pub fn open(url: &str, keys: Arc<dyn KeyProvider>) -> Result<Self, StorageError> {
        let (objects, local_root) = open_objects(url)?;
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

    /// The underlying object store, for tests that inspect and tamper
    /// with it; only with the `test-hooks` feature, which only
    /// dev-dependencies enable.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }
}

impl Store {
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

    /// Whether the store and the key provider can serve now: one read of
    /// the store's marker and one check of its MAC (`/readyz`).
    pub async fn readiness(&self) -> Readiness {
        match self
            .read_record::<serde_json::Value>("store", &layout::marker())
            .await
        {
            Ok(Some(_)) => Readiness::Ready,
            Ok(None) => Readiness::MarkerMissing,
            Err(StorageError::Integrity(_)) => Readiness::KeysMismatch,
            Err(StorageError::Keys(e)) => Readiness::KeysFailing(e.to_string()),
            Err(e) => Readiness::StoreFailing(e.to_string()),
        }
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
}

/// What [`Store::readiness`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The marker was read and its MAC verified.
    Ready,
    /// The store answered but holds no marker (wrong bucket or prefix, or
    /// the data is gone).
    MarkerMissing,
    /// The marker does not verify: another key provider's store.
    KeysMismatch,
    /// The key provider failed (why).
    KeysFailing(String),
    /// The store failed (why).
    StoreFailing(String),
}
