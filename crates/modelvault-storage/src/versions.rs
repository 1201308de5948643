//! Committed versions: the manifest in force (checked against its
//! tombstone and its own path), listings, name resolution (`latest` is
//! the commit log's, `commit_log`) and the unsealed view of a version.

use super::*;

impl Store {
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

    /// The names of a model's versions (committed, draft or deleted) from
    /// one listing, without reading a manifest; in name order.
    pub async fn version_names(
        &self,
        namespace: &str,
        model: &str,
    ) -> Result<Vec<String>, StorageError> {
        self.require_model(namespace, model).await?;
        let listing = self
            .objects
            .list_with_delimiter(Some(&layout::versions_dir(namespace, model)))
            .await?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|v| names::validate_version(v).is_ok())
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Committed versions of a model, oldest commit first.
    pub async fn list_versions(
        &self,
        namespace: &str,
        model: &str,
    ) -> Result<Vec<Manifest>, StorageError> {
        let mut out = Vec::new();
        for version in self.version_names(namespace, model).await? {
            let v = VersionRef {
                namespace,
                model,
                version: &version,
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

    /// Resolves `latest` to the newest committed version that is not
    /// archived or deleted (newest by the model's commit log); other names
    /// pass through after validation.
    pub async fn resolve_version(
        &self,
        namespace: &str,
        model: &str,
        version: &str,
    ) -> Result<String, StorageError> {
        if version == "latest" {
            self.require_model(namespace, model).await?;
            return self.latest_version(namespace, model).await;
        }
        names::validate_version(version)?;
        Ok(version.to_string())
    }

    /// Everything a gate decides on for one committed version, in one
    /// call: `latest` resolved, then (concurrently) the model record, the
    /// manifest in force (tombstone checked), and the version's approval
    /// and deployment series (`A` and `D` are the caller's record types).
    /// A missing model or version is [`StorageError::NotFound`], a deleted
    /// one [`StorageError::Gone`]; errors are reported in that order.
    pub async fn version_in_force<A: DeserializeOwned, D: DeserializeOwned>(
        &self,
        namespace: &str,
        model: &str,
        version: &str,
    ) -> Result<VersionInForce<A, D>, StorageError> {
        let version = self.resolve_version(namespace, model, version).await?;
        let v = VersionRef {
            namespace,
            model,
            version: &version,
        };
        let (approvals, deployments) = (self.approvals(&v), self.deployments(&v));
        let (record, manifest, approvals, deployments) = futures::join!(
            self.get_model(namespace, model),
            self.get_manifest(&v),
            approvals.all::<A>(),
            deployments.all::<D>(),
        );
        let record =
            record?.ok_or_else(|| StorageError::NotFound(format!("model {namespace}/{model}")))?;
        let manifest = manifest?.ok_or_else(|| StorageError::NotFound(format!("version {v}")))?;
        let (approvals, deployments) = (approvals?, deployments?);
        Ok(VersionInForce {
            version,
            model: record,
            manifest,
            approvals,
            deployments,
        })
    }

    /// A committed version with its digests unsealed.
    pub async fn show_version(&self, v: &VersionRef<'_>) -> Result<VersionView, StorageError> {
        self.require_model(v.namespace, v.model).await?;
        let manifest = match self.get_manifest(v).await? {
            Some(m) => m,
            None if self.is_deleted(v).await? => return Err(StorageError::Gone(v.to_string())),
            None => return Err(StorageError::NotFound(format!("version {v}"))),
        };
        Ok(self.version_view_of(v, manifest).await?.0)
    }

    /// The view of `manifest` (already read and verified by the caller),
    /// with the version key of its generation: one unwrap serves both the
    /// view and whatever the caller does with the key next (a key release).
    pub async fn version_view_of(
        &self,
        v: &VersionRef<'_>,
        manifest: Manifest,
    ) -> Result<(VersionView, VersionKey), StorageError> {
        if manifest.namespace != v.namespace
            || manifest.model != v.model
            || manifest.version != v.version
        {
            return Err(StorageError::Integrity(format!(
                "manifest passed for {v} names another version"
            )));
        }
        let key = self
            .version_key(v, KeyWant::Generation(manifest.dek_generation))
            .await?;
        let (dek, generation) = (key.dek(), key.generation());
        let digests = unseal_digests(dek, v, generation, &manifest)?;
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
            let key = version_metadata_key(dek, v, generation)?;
            let json = key.open(b"metadata", &b64_decode(sealed)?)?;
            let secret: BTreeMap<String, String> = serde_json::from_slice(&json)
                .map_err(|_| StorageError::Integrity(format!("metadata of {v} is malformed")))?;
            metadata.extend(secret);
        }
        let view = VersionView {
            manifest,
            files,
            metadata,
        };
        Ok((view, key))
    }
}

/// What [`Store::version_in_force`] returns: a committed version and the
/// verified records a policy decision sees.
#[derive(Debug, Clone)]
pub struct VersionInForce<A, D> {
    /// The version's name (`latest` resolved).
    pub version: String,
    /// The model's latest record.
    pub model: ModelRecord,
    /// The manifest in force.
    pub manifest: Manifest,
    /// The version's approval records, in order, with their numbers.
    pub approvals: Vec<(u64, A)>,
    /// The version's deployment records, in order, with their numbers.
    pub deployments: Vec<(u64, D)>,
}

impl Manifest {
    /// The manifest, if it names `v` and its own revision `seq` in `dir`.
    pub(crate) fn checked(
        self,
        dir: &Path,
        v: &VersionRef<'_>,
        seq: u64,
    ) -> Result<Self, StorageError> {
        let place = (
            &*self.namespace,
            &*self.model,
            &*self.version,
            self.revision,
        );
        crate::deks::check_place(place, v, seq, || format!("manifest {dir}"))?;
        Ok(self)
    }
}
