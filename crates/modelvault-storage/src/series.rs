//! Authenticated records and sequence-numbered series: every control
//! record is written create-if-absent with a MAC over its path and body
//! ([`crate::records`]), and read back only if the MAC verifies for the
//! path it was found at. Mutable state is a series whose highest number
//! wins; nothing is ever overwritten. These primitives are the crate's
//! own: other crates reach records through the typed functions and
//! repositories ([`crate::repos`]).

use super::*;

impl Store {
    /// Writes an authenticated record, create-if-absent.
    pub(crate) async fn create_record<T: Serialize>(
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
    pub(crate) async fn put_content_addressed(
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
    pub(crate) async fn get_bytes(
        &self,
        path: &Path,
    ) -> Result<Option<bytes::Bytes>, StorageError> {
        match self.objects.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends a record to a sequence-numbered series: the next number after
    /// the latest, create-if-absent, retried when another writer wins.
    /// `make` builds the body for a sequence number.
    pub(crate) async fn append_record<T: Serialize>(
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
    pub(crate) async fn read_series<T: DeserializeOwned>(
        &self,
        kind: &str,
        dir: &Path,
    ) -> Result<Vec<(u64, T)>, StorageError> {
        let entries = self.list_flat(dir).await?;
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
    pub(crate) async fn list_children(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        let listing = self.objects.list_with_delimiter(Some(dir)).await?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Deletes one object (undoing a half-finished create); absent is fine.
    pub(crate) async fn delete_object(&self, path: &Path) -> Result<(), StorageError> {
        match self.objects.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads and verifies a record; `None` if absent.
    pub(crate) async fn read_record<T: DeserializeOwned>(
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

    /// The objects directly in `dir` (a series is flat: what lies in a
    /// sub-folder is no record of it). One listing request; on the local
    /// store one trip to the blocking pool, where a recursive listing
    /// takes two.
    pub(crate) async fn list_flat(&self, dir: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
        Ok(self.objects.list_with_delimiter(Some(dir)).await?.objects)
    }

    /// The highest sequence number in `dir`, if any.
    pub(crate) async fn latest_seq(&self, dir: &Path) -> Result<Option<(u64, Path)>, StorageError> {
        let entries = self.list_flat(dir).await?;
        Ok(entries
            .into_iter()
            .filter_map(|m| layout::parse_seq(&m.location).map(|s| (s, m.location)))
            .max_by_key(|(s, _)| *s))
    }

    /// The latest sequence-numbered record in `dir`.
    pub(crate) async fn read_latest<T: DeserializeOwned>(
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
}
