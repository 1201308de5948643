//! Reading the trail: every stored record as an index entry (the fields
//! readers filter on, and where its line lies), and the records themselves
//! streamed segment by segment. A segment is summarized once (its entries
//! are kept with the store, [`AuditObjects::keep_summary`]) and is never
//! rewritten, so a later page lists the segments and reads only those not
//! summarized yet and those holding the records it returns.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt as _};
use modelvault_storage::{AuditObjects, SegmentRef};

use crate::{AuditError, AuditRecord};

/// One stored record as the index knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The chain.
    pub chain: Arc<str>,
    /// The record's sequence number.
    pub seq: u64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The principal's id.
    pub principal: Option<String>,
    /// The resource's namespace.
    pub namespace: Option<String>,
    /// The resource's model.
    pub model: Option<String>,
    /// The action.
    pub action: String,
    /// The outcome.
    pub outcome: String,
    /// The record type (`request`, `intent`, ...).
    pub kind: String,
    segment: u64,
    line: Range<usize>,
}

/// The entries of one segment.
struct Summary {
    entries: Vec<Entry>,
}

/// Reads a store's audit trail.
#[derive(Debug, Clone)]
pub struct AuditReader {
    objects: AuditObjects,
}

/// A record and its line exactly as stored (no newline).
pub type StoredRecord = (AuditRecord, Bytes);

fn lines(bytes: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    bytes
        .split(|b| *b == b'\n')
        .map(move |l| {
            let r = start..start + l.len();
            start = r.end + 1;
            r
        })
        .filter(|r| !r.is_empty())
}

fn summarize(seg: &SegmentRef, bytes: &[u8]) -> Summary {
    let chain: Arc<str> = Arc::from(seg.chain.as_str());
    let entries = lines(bytes)
        .filter_map(|range| {
            let line = &bytes[range.clone()];
            // As a page shows it: lines that are not valid JSON text are left out.
            std::str::from_utf8(line).ok()?;
            let r: AuditRecord = serde_json::from_slice(line).ok()?;
            let resource = r.resource;
            Some(Entry {
                chain: chain.clone(),
                seq: r.seq,
                time: r.time,
                principal: r.principal.map(|p| p.id),
                namespace: resource.as_ref().and_then(|x| x.namespace.clone()),
                model: resource.and_then(|x| x.model),
                action: r.action,
                outcome: r.outcome,
                kind: r.kind,
                segment: seg.first_seq,
                line: range,
            })
        })
        .collect();
    Summary { entries }
}

impl AuditReader {
    /// A reader of these audit objects.
    pub fn new(objects: AuditObjects) -> Self {
        Self { objects }
    }

    /// Every chain's segments, chains in id order, segments in sequence order.
    async fn segments(&self) -> Result<Vec<SegmentRef>, AuditError> {
        let mut out = Vec::new();
        for chain in self.objects.chains().await? {
            out.extend(self.objects.segments(&chain).await?);
        }
        Ok(out)
    }

    async fn summary(
        &self,
        seg: &SegmentRef,
        read: Option<&Bytes>,
    ) -> Result<Arc<Summary>, AuditError> {
        if let Some(s) = self.objects.summary(seg)
            && let Ok(s) = s.downcast::<Summary>()
        {
            return Ok(s);
        }
        let bytes = match read {
            Some(b) => b.clone(),
            None => self.objects.read(seg).await?,
        };
        let s = Arc::new(summarize(seg, &bytes));
        // Only a summary of the bytes at the listed size is kept.
        if bytes.len() as u64 == seg.size {
            self.objects.keep_summary(seg, s.clone());
        }
        Ok(s)
    }

    /// The index entry of every record that parses, chains in id order,
    /// then by sequence. Reads only segments not summarized yet.
    pub async fn entries(&self) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        for seg in self.segments().await? {
            out.extend(self.summary(&seg, None).await?.entries.iter().cloned());
        }
        Ok(out)
    }

    /// The stored lines of `entries`, in their order; reads each segment
    /// that holds one of them once.
    pub async fn lines_of(&self, entries: &[Entry]) -> Result<Vec<Bytes>, AuditError> {
        let mut segments: std::collections::HashMap<(Arc<str>, u64), Bytes> = Default::default();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let key = (e.chain.clone(), e.segment);
            let bytes = match segments.get(&key) {
                Some(b) => b.clone(),
                None => {
                    let b = self
                        .objects
                        .segment_at(&e.chain, e.segment)
                        .await?
                        .ok_or_else(|| {
                            AuditError::Invalid(format!(
                                "audit segment {}/{} vanished",
                                e.chain, e.segment
                            ))
                        })?;
                    segments.insert(key, b.clone());
                    b
                }
            };
            let line = bytes.get(e.line.clone()).ok_or_else(|| {
                AuditError::Invalid(format!("audit segment {}/{} changed", e.chain, e.segment))
            })?;
            out.push(bytes.slice_ref(line));
        }
        Ok(out)
    }

    /// The records whose entry `keep` accepts, with their stored lines,
    /// chains in id order, then by sequence; a segment is read only if it
    /// holds one (or is not summarized yet), one segment at a time.
    pub fn records<F>(&self, keep: F) -> impl Stream<Item = Result<StoredRecord, AuditError>> + '_
    where
        F: Fn(&Entry) -> bool + Clone + 'static,
    {
        futures::stream::once(self.segments())
            .map_ok(|segs| futures::stream::iter(segs.into_iter().map(Ok::<_, AuditError>)))
            .try_flatten()
            .and_then(move |seg| {
                let keep = keep.clone();
                async move {
                    let cached = self.objects.summary(&seg).is_some();
                    let (summary, bytes) = if cached {
                        (self.summary(&seg, None).await?, None)
                    } else {
                        let b = self.objects.read(&seg).await?;
                        (self.summary(&seg, Some(&b)).await?, Some(b))
                    };
                    let wanted: Vec<&Entry> = summary.entries.iter().filter(|e| keep(e)).collect();
                    if wanted.is_empty() {
                        return Ok(Vec::new());
                    }
                    let bytes = match bytes {
                        Some(b) => b,
                        None => self.objects.read(&seg).await?,
                    };
                    let mut out = Vec::with_capacity(wanted.len());
                    for e in wanted {
                        let Some(line) = bytes.get(e.line.clone()) else {
                            continue;
                        };
                        if let Ok(r) = serde_json::from_slice::<AuditRecord>(line) {
                            out.push((r, bytes.slice_ref(line)));
                        }
                    }
                    Ok(out)
                }
            })
            .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok::<_, AuditError>)))
            .try_flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, action: &str) -> Vec<u8> {
        let mut r = AuditRecord::new("request", action, "allowed");
        r.chain = "c".into();
        r.seq = seq;
        let mut l = serde_json::to_vec(&r).unwrap();
        l.push(b'\n');
        l
    }

    #[tokio::test]
    async fn pages_read_only_the_segments_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let objects = AuditObjects::open(&url).unwrap();
        let (l0, l1) = (line(0, "download"), line(1, "list-models"));
        let first = [l0.clone(), l1.clone()].concat();
        objects.create_segment("c", 0, first).await.unwrap();
        objects
            .create_segment(
                "c",
                2,
                [line(2, "download"), b"not json\n".to_vec()].concat(),
            )
            .await
            .unwrap();
        let reader = AuditReader::new(objects.clone());
        let entries = reader.entries().await.unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
        // Every segment is summarized once, for every later reader.
        for seg in objects.segments("c").await.unwrap() {
            assert!(objects.summary(&seg).is_some());
        }
        // The stored lines, exactly.
        let lines = reader.lines_of(&entries[1..2]).await.unwrap();
        assert_eq!(&lines[0][..], &l1[..l1.len() - 1]);
        let downloads: Vec<StoredRecord> = reader
            .records(|e| e.action == "download")
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            downloads.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(),
            [0, 2]
        );
    }
}
