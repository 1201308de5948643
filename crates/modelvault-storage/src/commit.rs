//! Committing a draft: the listed files must match the upload records
//! exactly (size, digest, blob, salt, segment table); the version is
//! entered in the model's commit log, then the manifest is written
//! create-if-absent as revision 0, so of two racing commits one wins. A retried commit of the same content returns the committed
//! manifest.

use super::*;

impl Store {
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
        let key = match self.version_key(v, KeyWant::Newest).await {
            Err(StorageError::NotFound(_)) => {
                return Err(StorageError::CommitMismatch(format!(
                    "nothing was uploaded to {v}"
                )));
            }
            other => other?,
        };
        let (dek, generation) = (key.dek(), key.generation());
        // The newest matching upload of each path wins.
        let uploads = self.list_uploads(v).await?;
        let seal = digest_seal_key(dek, v, generation)?;
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
        let sealed = seal_digests(dek, v, generation, &digests)?;
        let (secret, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
            metadata.into_iter().partition(|(k, _)| marks.contains(k));
        let sealed_metadata = if secret.is_empty() {
            None
        } else {
            let json = zeroize::Zeroizing::new(
                serde_json::to_vec(&secret)
                    .map_err(|e| StorageError::InvalidInput(e.to_string()))?,
            );
            let key = version_metadata_key(dek, v, generation)?;
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
        // The commit log first: a committed version always has an entry
        // (`latest` reads the log); an entry without a manifest is skipped.
        self.log_commit(v).await?;
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
    pub(crate) async fn recommit(
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

    /// What a draft version holds so far, for a push that resumes: the
    /// newest upload of each path under the version's current DEK
    /// generation whose blob is still whole, with its size and SHA-256.
    /// Empty when nothing was uploaded; [`StorageError::VersionCommitted`]
    /// once the version is committed, [`StorageError::Gone`] once deleted.
    pub async fn draft_uploads(&self, v: &VersionRef<'_>) -> Result<Vec<FileEntry>, StorageError> {
        names::validate_version(v.version)?;
        self.require_model(v.namespace, v.model).await?;
        if self.get_manifest(v).await?.is_some() {
            return Err(StorageError::VersionCommitted(v.to_string()));
        }
        if self.is_deleted(v).await? {
            return Err(StorageError::Gone(v.to_string()));
        }
        let key = match self.version_key(v, KeyWant::Newest).await {
            Err(StorageError::NotFound(_)) => return Ok(Vec::new()),
            other => other?,
        };
        let generation = key.generation();
        let seal = digest_seal_key(key.dek(), v, generation)?;
        let uploads = self.list_uploads(v).await?;
        let mut newest: BTreeMap<&str, &UploadRecord> = BTreeMap::new();
        for u in uploads.iter().filter(|u| u.dek_generation == generation) {
            if newest
                .get(u.path.as_str())
                .is_none_or(|c| c.created_at < u.created_at)
            {
                newest.insert(&u.path, u);
            }
        }
        let mut out = Vec::with_capacity(newest.len());
        for (path, u) in newest {
            let Ok(blob) = Path::parse(&u.blob) else {
                continue;
            };
            match self.objects.head(&blob).await {
                Ok(meta) if meta.size == u.ciphertext_size => {}
                Ok(_) | Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            let digest =
                hex::encode(&*seal.open(u.blob.as_bytes(), &b64_decode(&u.sealed_sha256)?)?);
            out.push(FileEntry {
                path: path.to_owned(),
                size: u.size,
                sha256: digest,
            });
        }
        Ok(out)
    }

    pub(crate) async fn list_uploads(
        &self,
        v: &VersionRef<'_>,
    ) -> Result<Vec<UploadRecord>, StorageError> {
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
}
