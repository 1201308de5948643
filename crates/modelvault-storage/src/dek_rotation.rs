//! DEK rotation of one committed version: a new DEK generation, every blob
//! re-encrypted under it into new object keys, the switch made by writing
//! the next manifest revision create-if-absent, and the old blobs deleted
//! after a grace period the caller enforces.
//!
//! Invariants a reader must keep:
//! - readers decrypt with the key record of the *manifest's* generation
//!   ([`Store::version_key`] with [`crate::KeyWant::Generation`]), never simply the newest record: the
//!   new generation's record exists before the switch, the old one after;
//! - the switch is the only commit point: before it the old manifest, key
//!   record and blobs serve everything; after it the new ones; a reader
//!   that opened a file before the switch keeps reading the old blob, which
//!   stays until [`Store::finish_dek_rotation`] runs (no sooner than the
//!   grace period after the switch);
//! - every step is idempotent: prepare reuses a key record of the target
//!   generation; re-encryption writes fresh blob keys (a crashed attempt's
//!   blobs are orphans that the finish step deletes); a lost race on the
//!   switch adopts the winner's manifest;
//! - a re-encrypted file must hash to the digest sealed in the old
//!   manifest, or nothing is switched;
//! - a switch record (`switches/{generation}`) is written after the switch
//!   and, required, before the cleanup deletes anything; a read of an older
//!   generation while a newer key record exists checks it, so a manifest
//!   rolled back below it (old manifest and blobs put back from a copy) is
//!   an integrity error, never a silent downgrade;
//! - old generations' key records stay (their blobs are gone), so the KEK
//!   versions that ever wrapped a DEK of the version stay known to delete;
//!   everything else sealed under an old DEK (blobs, older manifest
//!   revisions, upload records) goes at cleanup, so a leaked old DEK opens
//!   nothing the store still holds.

use futures::TryStreamExt as _;
use modelvault_format::Dek;
use modelvault_keys::DekBinding;
use object_store::ObjectStoreExt as _;

use crate::blob::NewBlob;

/// A switch record: `v` switched to DEK generation `dek_generation` with
/// manifest revision `manifest_revision`. Its sequence number is the
/// generation.
#[derive(serde::Serialize, serde::Deserialize)]
struct DekSwitch {
    namespace: String,
    model: String,
    version: String,
    dek_generation: u32,
    manifest_revision: u64,
    switched_at: chrono::DateTime<chrono::Utc>,
}
use crate::{
    KeyRecord, Manifest, ManifestFile, StorageError, Store, VersionRef, b64_decode, b64_encode,
    layout, seal_digests, unseal_digests, version_metadata_key,
};

impl Store {
    /// The newest key record of generation `generation` in `dir`.
    pub(crate) async fn generation_record(
        &self,
        dir: &object_store::path::Path,
        v: &VersionRef<'_>,
        generation: u32,
    ) -> Result<KeyRecord, StorageError> {
        self.read_series::<KeyRecord>("key", dir)
            .await?
            .into_iter()
            .rev()
            .find(|(_, r)| r.dek_generation == generation)
            .map(|(seq, r)| r.checked(dir, v, seq))
            .transpose()?
            .ok_or_else(|| {
                StorageError::Integrity(format!(
                    "no key record of DEK generation {generation} for {v}"
                ))
            })
    }

    /// Called when generation `generation` of `v` is read while a newer
    /// generation's key record exists. That is normal before a DEK
    /// rotation's switch (the new key record is written first) and, after
    /// it, for readers of the old generation during the grace period. It
    /// is a rollback when a switch record names a newer generation than
    /// the manifest in force: the manifest a rotation wrote was deleted and
    /// an older one put back (with its blobs, from a copy of the bucket).
    /// That is an integrity error, never a silent downgrade to a DEK the
    /// rotation revoked.
    pub(crate) async fn check_not_rolled_back(
        &self,
        v: &VersionRef<'_>,
        generation: u32,
    ) -> Result<(), StorageError> {
        let Some(switched) = self.latest_switch(v).await? else {
            return Ok(());
        };
        if switched <= generation {
            return Ok(());
        }
        let current = self.committed(v).await?;
        if current.dek_generation < switched {
            return Err(StorageError::Integrity(format!(
                "{v}: its manifest uses DEK generation {} but the version was switched to generation {switched}; the manifest was rolled back, refusing to serve a revoked generation",
                current.dek_generation
            )));
        }
        Ok(())
    }

    /// The newest DEK generation a rotation switched `v` to, from its
    /// switch records (checked to name `v` and their own generation).
    async fn latest_switch(&self, v: &VersionRef<'_>) -> Result<Option<u32>, StorageError> {
        let dir = layout::switches_dir(v.namespace, v.model, v.version);
        let Some((seq, s)) = self.read_latest::<DekSwitch>("dek-switch", &dir).await? else {
            return Ok(None);
        };
        if s.namespace != v.namespace
            || s.model != v.model
            || s.version != v.version
            || u64::from(s.dek_generation) != seq
        {
            return Err(StorageError::Integrity(format!(
                "switch record in {dir} names another version"
            )));
        }
        Ok(Some(s.dek_generation))
    }

    /// Records that `v` switched to the generation of `manifest`
    /// (create-if-absent, idempotent). Written right after the switch and
    /// again, required, before a cleanup deletes anything, so a rolled-back
    /// manifest is recognized once the old blobs could only come from a
    /// copy.
    async fn record_switch(
        &self,
        v: &VersionRef<'_>,
        manifest: &Manifest,
    ) -> Result<(), StorageError> {
        let dir = layout::switches_dir(v.namespace, v.model, v.version);
        let record = DekSwitch {
            namespace: v.namespace.into(),
            model: v.model.into(),
            version: v.version.into(),
            dek_generation: manifest.dek_generation,
            manifest_revision: manifest.revision,
            switched_at: crate::now(),
        };
        match self
            .create_record(
                "dek-switch",
                &layout::seq_record(&dir, u64::from(manifest.dek_generation)),
                &record,
            )
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Store::record_switch`] right after a switch: a failure is logged,
    /// not fatal (the cleanup writes the record before deleting anything).
    async fn note_switch(&self, v: &VersionRef<'_>, manifest: &Manifest) {
        if manifest.revision == 0 {
            return;
        }
        if let Err(e) = self.record_switch(v, manifest).await {
            tracing::warn!(version = %v, error = %e, "could not record the DEK switch yet; the cleanup will");
        }
    }

    /// The newest manifest revision of `v` that uses DEK generation
    /// `generation` (an older revision while a rotation's grace period
    /// keeps its blobs), checked to name `v`.
    pub async fn manifest_of_generation(
        &self,
        v: &VersionRef<'_>,
        generation: u32,
    ) -> Result<Option<Manifest>, StorageError> {
        if self.is_deleted(v).await? {
            return Err(StorageError::Gone(v.to_string()));
        }
        let dir = layout::manifest_dir(v.namespace, v.model, v.version);
        let found = self
            .read_series::<Manifest>("manifest", &dir)
            .await?
            .into_iter()
            .rev()
            .find(|(_, m)| m.dek_generation == generation);
        found.map(|(seq, m)| m.checked(&dir, v, seq)).transpose()
    }

    /// The committed manifest of `v`, or NotFound / Gone.
    async fn committed(&self, v: &VersionRef<'_>) -> Result<Manifest, StorageError> {
        match self.get_manifest(v).await? {
            Some(m) => Ok(m),
            None if self.is_deleted(v).await? => Err(StorageError::Gone(v.to_string())),
            None => Err(StorageError::NotFound(format!("version {v}"))),
        }
    }

    /// The generation a rotation of `v` started now would create.
    pub async fn next_dek_generation(&self, v: &VersionRef<'_>) -> Result<u32, StorageError> {
        let m = self.committed(v).await?;
        m.dek_generation
            .checked_add(1)
            .ok_or_else(|| StorageError::InvalidInput(format!("{v}: too many DEK generations")))
    }

    /// Step 1: makes sure a key record of generation `target` exists (a
    /// fresh DEK, wrapped under the current KEK). Idempotent.
    pub async fn prepare_dek_rotation(
        &self,
        v: &VersionRef<'_>,
        target: u32,
    ) -> Result<(), StorageError> {
        let m = self.committed(v).await?;
        if m.dek_generation >= target {
            return Ok(());
        }
        if m.dek_generation + 1 != target {
            return Err(StorageError::InvalidInput(format!(
                "{v} is at DEK generation {}; cannot rotate to {target}",
                m.dek_generation
            )));
        }
        let dir = layout::keys_dir(v.namespace, v.model, v.version);
        let series = self.read_series::<KeyRecord>("key", &dir).await?;
        if series.iter().any(|(_, r)| r.dek_generation == target) {
            return Ok(());
        }
        for _ in 0..8 {
            let latest = self
                .checked_latest_key(&dir, v)
                .await?
                .ok_or_else(|| StorageError::NotFound(format!("key for {v}")))?;
            if latest.dek_generation == target {
                return Ok(());
            }
            let dek = Dek::generate()?;
            let binding = DekBinding {
                namespace: v.namespace,
                model: v.model,
                version: v.version,
                dek_generation: target,
            };
            let record = KeyRecord {
                namespace: v.namespace.into(),
                model: v.model.into(),
                version: v.version.into(),
                seq: latest.seq + 1,
                dek_generation: target,
                wrapped: self.keys.wrap_dek(&dek, &binding).await?,
                created_at: crate::now(),
            };
            match self
                .create_record("key", &layout::seq_record(&dir, record.seq), &record)
                .await
            {
                Ok(()) => return self.settle_wrap(&dir, v, &dek, target).await,
                // A rewrap or another rotation got that number: look again.
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(format!(
            "{dir}: too many concurrent writers"
        )))
    }

    /// Step 2: re-encrypts every file of `v` under generation `target` into
    /// new blobs, checks each against its sealed digest, and switches by
    /// writing the next manifest revision create-if-absent. `progress` is
    /// called with (files done, files in all). Returns the manifest now in
    /// force. Idempotent: a version already at `target` returns at once.
    pub async fn reencrypt_and_switch(
        &self,
        v: &VersionRef<'_>,
        target: u32,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<Manifest, StorageError> {
        let old = self.committed(v).await?;
        if old.dek_generation >= target {
            self.note_switch(v, &old).await;
            return Ok(old);
        }
        let old_key = self
            .version_key(v, crate::KeyWant::Generation(old.dek_generation))
            .await?;
        let new_key = self
            .version_key(v, crate::KeyWant::Generation(target))
            .await?;
        let (old_dek, new_dek) = (old_key.dek(), new_key.dek());
        let digests = unseal_digests(old_dek, v, old.dek_generation, &old)?;
        let total = old.files.len() as u64;
        progress(0, total);
        let mut files = Vec::with_capacity(old.files.len());
        for (i, f) in old.files.iter().enumerate() {
            let reader = self.open_file_in(v, &old, &f.path).await?;
            let mut body = reader.read_range(0..f.size);
            let NewBlob {
                blob,
                size,
                ciphertext_size,
                sha256,
                segments_blake3,
                header,
            } = self
                .write_encrypted_blob(v, &f.path, new_dek, target, &mut body)
                .await?;
            let expected = digests.get(&f.path).ok_or_else(|| {
                StorageError::Integrity(format!("no digest for {} in {v}", f.path))
            })?;
            if size != f.size || !hex::encode(&sha256).eq_ignore_ascii_case(expected) {
                self.delete_blob(&blob).await;
                return Err(StorageError::Integrity(format!(
                    "{} in {v} did not re-encrypt to its committed digest; nothing switched",
                    f.path
                )));
            }
            files.push(ManifestFile {
                path: f.path.clone(),
                size,
                blob: blob.to_string(),
                ciphertext_size,
                salt: hex::encode(header.salt),
                segments_blake3,
            });
            progress(i as u64 + 1, total);
        }
        // The new blobs are unreferenced until the switch: a garbage
        // collector with a grace shorter than this re-encryption may have
        // taken one. Never switch to a manifest that lists a missing blob.
        for f in &files {
            let blob = object_store::path::Path::parse(&f.blob)
                .map_err(|_| StorageError::Integrity(format!("bad blob key for {}", f.path)))?;
            match self.objects.head(&blob).await {
                Ok(meta) if meta.size == f.ciphertext_size => {}
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                    return Err(StorageError::Integrity(format!(
                        "re-encrypted blob of {} in {v} vanished before the switch (is store.gc_grace_secs shorter than the rotation?); nothing switched, run the rotation again",
                        f.path
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        crate::failpoint("rotate-dek-before-switch");
        let sealed_metadata = match &old.sealed_metadata {
            None => None,
            Some(sealed) => {
                let open = version_metadata_key(old_dek, v, old.dek_generation)?;
                let json = open.open(b"metadata", &b64_decode(sealed)?)?;
                let seal = version_metadata_key(new_dek, v, target)?;
                Some(b64_encode(&seal.seal(b"metadata", &json)?))
            }
        };
        let next = Manifest {
            revision: old.revision + 1,
            dek_generation: target,
            sealed_digests: seal_digests(new_dek, v, target, &digests)?,
            sealed_metadata,
            files,
            ..old.clone()
        };
        let path = layout::seq_record(
            &layout::manifest_dir(v.namespace, v.model, v.version),
            next.revision,
        );
        match self.create_record("manifest", &path, &next).await {
            Ok(()) => {
                self.note_switch(v, &next).await;
                Ok(next)
            }
            Err(StorageError::AlreadyExists(_)) => {
                // Another server switched first; ours are orphans now.
                let now = self.committed(v).await?;
                if now.dek_generation >= target {
                    self.note_switch(v, &now).await;
                    Ok(now)
                } else {
                    Err(StorageError::Integrity(format!(
                        "manifest of {v} changed during DEK rotation"
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Step 3 (after the grace period): deletes every blob of `v` the
    /// manifest in force does not list (the previous generation's blobs and
    /// a crashed attempt's orphans), older manifest revisions and upload
    /// records (sealed under old DEKs). Returns how many blobs it deleted.
    pub async fn finish_dek_rotation(
        &self,
        v: &VersionRef<'_>,
        target: u32,
    ) -> Result<u64, StorageError> {
        let m = self.committed(v).await?;
        if m.dek_generation < target {
            return Err(StorageError::InvalidInput(format!(
                "{v} has not switched to DEK generation {target}"
            )));
        }
        // Before anything of the old generation goes: from here on only a
        // copy of the bucket can bring it back, and the switch record is
        // what tells such a rollback from a rotation that never switched.
        self.record_switch(v, &m).await?;
        let tables: Vec<String> = m
            .files
            .iter()
            .map(|f| layout::segment_table(&f.blob).to_string())
            .collect();
        let keep: std::collections::HashSet<&str> = m
            .files
            .iter()
            .map(|f| f.blob.as_str())
            .chain(tables.iter().map(String::as_str))
            .collect();
        let prefix = object_store::path::Path::from(format!(
            "blobs/{}/{}/{}",
            v.namespace, v.model, v.version
        ));
        let blobs: Vec<_> = self.objects.list(Some(&prefix)).try_collect().await?;
        let mut deleted = 0;
        for b in blobs {
            if keep.contains(b.location.as_ref()) {
                continue;
            }
            self.delete_object(&b.location).await?;
            deleted += 1;
        }
        // Older manifest revisions and the upload records hold file digests
        // and sensitive metadata sealed under the old DEK: a leaked old DEK
        // must not open them either. The revision in force stays.
        let manifests = layout::manifest_dir(v.namespace, v.model, v.version);
        let revisions: Vec<_> = self.objects.list(Some(&manifests)).try_collect().await?;
        for r in revisions {
            if layout::parse_seq(&r.location).is_some_and(|seq| seq < m.revision) {
                self.delete_object(&r.location).await?;
            }
        }
        let uploads: Vec<_> = self
            .objects
            .list(Some(&layout::uploads_dir(v.namespace, v.model, v.version)))
            .try_collect()
            .await?;
        for u in uploads {
            self.delete_object(&u.location).await?;
        }
        Ok(deleted)
    }
}
