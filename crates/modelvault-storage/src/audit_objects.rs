//! The audit trail's objects: chain segments (JSON lines) and signed
//! checkpoints under `audit/`. Their content is the audit crate's (it
//! chains, signs and verifies); where they live and how they are written
//! (create-if-absent, never rewritten) is storage's. [`AuditObjects`] is
//! the only handle other crates get on them: from an open [`Store`], or
//! from a store URL alone for offline verification (no key provider).

use super::*;

/// One stored segment of a chain (not yet read).
#[derive(Debug, Clone)]
pub struct SegmentRef {
    /// The chain.
    pub chain: String,
    /// The first sequence number, from the object's name (`u64::MAX` when
    /// the name is not a number, so such an object sorts last).
    pub first_seq: u64,
    /// Stored size in bytes.
    pub size: u64,
    path: Path,
}

/// The audit trail's objects in a store.
#[derive(Clone)]
pub struct AuditObjects {
    objects: Arc<dyn ObjectStore>,
    summaries: Arc<SummaryCache>,
}

/// A summary of one segment, as its reader computed it.
pub type SegmentSummary = Arc<dyn std::any::Any + Send + Sync>;

/// Summaries of stored segments. A segment is written once and never
/// rewritten, so a summary keyed by chain, first sequence number and size
/// stays true; a segment whose size changed (tampering) is summarized
/// again.
#[derive(Default)]
pub(crate) struct SummaryCache(
    std::sync::Mutex<std::collections::HashMap<(String, u64), (u64, SegmentSummary)>>,
);

impl std::fmt::Debug for AuditObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditObjects").finish_non_exhaustive()
    }
}

impl Store {
    /// The audit trail's objects in this store.
    pub fn audit_objects(&self) -> AuditObjects {
        AuditObjects {
            objects: self.objects.clone(),
            summaries: self.audit_summaries.clone(),
        }
    }
}

fn parse_seq_named(name: &str, ext: &str) -> Option<u64> {
    name.strip_suffix(ext)?.parse().ok()
}

impl AuditObjects {
    /// The audit objects of the store at `url`, opened without a key
    /// provider (offline verification needs only the public key).
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let (objects, _) = store::open_objects(url)?;
        Ok(Self {
            objects,
            summaries: Default::default(),
        })
    }

    /// Whether any chain or checkpoint is stored.
    pub async fn exists(&self) -> Result<bool, StorageError> {
        for dir in [layout::audit_chains(), layout::audit_checkpoints_root()] {
            let listing = self.objects.list_with_delimiter(Some(&dir)).await?;
            if !listing.common_prefixes.is_empty() || !listing.objects.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every chain id that has segments or checkpoints, sorted.
    pub async fn chains(&self) -> Result<Vec<String>, StorageError> {
        let mut chains = std::collections::BTreeSet::new();
        for dir in [layout::audit_chains(), layout::audit_checkpoints_root()] {
            let listing = self.objects.list_with_delimiter(Some(&dir)).await?;
            chains.extend(
                listing
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_string)),
            );
        }
        Ok(chains.into_iter().collect())
    }

    /// A chain's segments in sequence order (one listing, no reads).
    pub async fn segments(&self, chain: &str) -> Result<Vec<SegmentRef>, StorageError> {
        let metas: Vec<_> = self
            .objects
            .list(Some(&layout::audit_chain(chain)))
            .try_collect()
            .await?;
        let mut out: Vec<SegmentRef> = metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                Some(SegmentRef {
                    chain: chain.to_string(),
                    first_seq: parse_seq_named(name, ".jsonl").unwrap_or(u64::MAX),
                    size: m.size,
                    path: m.location,
                })
            })
            .collect();
        out.sort_by_key(|s| s.first_seq);
        Ok(out)
    }

    /// The summary kept for a listed segment, if one was stored for it at
    /// its current size ([`Self::keep_summary`]).
    pub fn summary(&self, segment: &SegmentRef) -> Option<SegmentSummary> {
        let cache = self.summaries.0.lock().ok()?;
        match cache.get(&(segment.chain.clone(), segment.first_seq)) {
            Some((size, s)) if *size == segment.size => Some(s.clone()),
            _ => None,
        }
    }

    /// Keeps a reader's summary of a segment for every later reader of
    /// this store (in memory, for the life of the process).
    pub fn keep_summary(&self, segment: &SegmentRef, summary: SegmentSummary) {
        if let Ok(mut cache) = self.summaries.0.lock() {
            cache.insert(
                (segment.chain.clone(), segment.first_seq),
                (segment.size, summary),
            );
        }
    }

    /// The bytes of a listed segment.
    pub async fn read(&self, segment: &SegmentRef) -> Result<bytes::Bytes, StorageError> {
        Ok(self.objects.get(&segment.path).await?.bytes().await?)
    }

    /// The segment of `chain` starting at `first_seq`, if stored.
    pub async fn segment_at(
        &self,
        chain: &str,
        first_seq: u64,
    ) -> Result<Option<bytes::Bytes>, StorageError> {
        match self
            .objects
            .get(&layout::audit_segment(chain, first_seq))
            .await
        {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a segment, create-if-absent: [`StorageError::AlreadyExists`]
    /// when one is already stored at `first_seq`. Durable (fsynced on the
    /// local store) once this returns.
    pub async fn create_segment(
        &self,
        chain: &str,
        first_seq: u64,
        body: Vec<u8>,
    ) -> Result<(), StorageError> {
        let path = layout::audit_segment(chain, first_seq);
        self.create(&path, body).await
    }

    /// Stores a checkpoint's bytes, create-if-absent; one already stored
    /// at `seq` is accepted (a checkpoint of a seq signs the same head).
    pub async fn put_checkpoint(
        &self,
        chain: &str,
        seq: u64,
        body: Vec<u8>,
    ) -> Result<(), StorageError> {
        match self
            .create(&layout::audit_checkpoint(chain, seq), body)
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A chain's stored checkpoints: the seq from each object's name (if it
    /// is a number) and its bytes, in listing order.
    pub async fn checkpoints(
        &self,
        chain: &str,
    ) -> Result<Vec<(Option<u64>, bytes::Bytes)>, StorageError> {
        let metas: Vec<_> = self
            .objects
            .list(Some(&layout::audit_checkpoints(chain)))
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let bytes = self.objects.get(&m.location).await?.bytes().await?;
            let seq = m
                .location
                .filename()
                .and_then(|n| parse_seq_named(n, ".json"));
            out.push((seq, bytes));
        }
        Ok(out)
    }

    async fn create(&self, path: &Path, body: Vec<u8>) -> Result<(), StorageError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .objects
            .put_opts(path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                Err(StorageError::AlreadyExists(path.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
