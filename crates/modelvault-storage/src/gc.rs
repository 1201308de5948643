//! Garbage collection: blobs (with their segment tables) that no manifest
//! revision lists and that are older than the grace period, their upload
//! records, and the local store's staging leftovers. A manifest that fails
//! to verify aborts a run: nothing is deleted on doubt.

use super::*;

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

impl Store {
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
pub(crate) fn is_staging_file(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(base, n)| {
            !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Deletes the staging files under `root` last modified before `cutoff`
/// (a write in progress touches its file with every part); returns how
/// many. Entries that vanish meanwhile (another collector) are skipped.
pub(crate) fn remove_staging_files(
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
