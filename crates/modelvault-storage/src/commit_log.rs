//! A model's commit log: one authenticated entry per commit, numbered from
//! 0 in the order commits reached it, so `latest` is answered from the
//! newest few entries instead of every version's manifest.
//!
//! Invariants a reader must keep:
//! - A commit appends its entry *before* it writes its manifest, so every
//!   committed version has an entry. A crash (or a commit refused by a
//!   racing one) in between leaves an entry whose version has no manifest;
//!   readers skip it. A delete appends an entry *before* its tombstone, so
//!   a listing needs no per-version tombstone check (a crash in between
//!   hides a version that is still there, never shows a deleted one).
//! - Entries are create-if-absent at the next number (two racing commits
//!   get two numbers; nothing is overwritten), so numbers are contiguous
//!   and the head is found by probing (`HEAD` of n+1, galloping, then a
//!   bisection), never by listing: O(1) once a process has seen a model's
//!   head, O(log n) the first time. A process never goes backwards: it
//!   probes from the highest number it has verified. An append first
//!   verifies the entry it follows.
//! - Entry 0 of a model created with the log is a genesis entry naming no
//!   version. A log that does not start with one belongs to a model
//!   created before the log existed; when the walk reaches its start
//!   without a servable version, `latest` falls back to reading every
//!   manifest (the only answer that is right for such a model).
//! - Entries are MAC'd over their path and name their own number: a
//!   bucket writer cannot forge one, move one to another model or number,
//!   or point `latest` at a version no commit of this model named.

use std::collections::HashMap;

use serde::Deserialize;

use super::*;

/// What a process learnt of the commit logs. Only facts that never change
/// once true are kept: the highest entry number verified (numbers only
/// grow), what an entry says (entries are create-if-absent, never
/// rewritten), and the brief of a committed version (a later manifest
/// revision does not change it; its deletion is an entry of its own).
#[derive(Debug, Default)]
pub(crate) struct LogCache {
    heads: std::sync::Mutex<HashMap<String, u64>>,
    entries: std::sync::Mutex<HashMap<(String, u64), Logged>>,
    briefs: std::sync::Mutex<HashMap<String, VersionBrief>>,
}

/// Entries and briefs kept at most (then forgotten and re-read).
const CACHE_CAP: usize = 200_000;

fn capped<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.len() >= CACHE_CAP {
        m.clear();
    }
}

impl LogCache {
    fn head(&self, dir: &Path) -> Option<u64> {
        self.heads
            .lock()
            .ok()
            .and_then(|m| m.get(dir.as_ref()).copied())
    }

    fn raise(&self, dir: &Path, seq: u64) {
        if let Ok(mut m) = self.heads.lock() {
            let e = m.entry(dir.to_string()).or_insert(seq);
            *e = (*e).max(seq);
        }
    }

    fn entry(&self, dir: &Path, seq: u64) -> Option<Logged> {
        self.entries
            .lock()
            .ok()
            .and_then(|m| m.get(&(dir.to_string(), seq)).cloned())
    }

    fn keep_entry(&self, dir: &Path, seq: u64, version: Logged) {
        if let Ok(mut m) = self.entries.lock() {
            capped(&mut m);
            m.insert((dir.to_string(), seq), version);
        }
    }

    fn brief(&self, key: &str) -> Option<VersionBrief> {
        self.briefs.lock().ok().and_then(|m| m.get(key).cloned())
    }

    fn keep_brief(&self, key: String, brief: VersionBrief) {
        if let Ok(mut m) = self.briefs.lock() {
            capped(&mut m);
            m.insert(key, brief);
        }
    }
}

/// One entry of a model's commit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CommitEntry {
    /// This entry's own number (checked against its path).
    pub seq: u64,
    /// The version committed (or deleted); `None` for the genesis entry.
    pub version: Option<String>,
    /// A deletion of `version` (appended before its tombstone is written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// When the commit (or deletion) reached the log.
    pub time: chrono::DateTime<Utc>,
}

/// What an entry says: a version committed or deleted; `None` for genesis.
type Logged = Option<(String, bool)>;

/// A walk of a model's commit log, newest entry first, yielding each
/// committed, not deleted version once with its manifest.
struct LogCursor<'a> {
    store: &'a Store,
    ns: &'a str,
    model: &'a str,
    dir: Path,
    /// The next entry number to read; `None` once the start was passed.
    next: Option<u64>,
    seen: std::collections::HashSet<String>,
    /// Set when the walk passed entry 0: whether it was a genesis entry
    /// (the log reaches back to the model's creation).
    complete: bool,
}

impl<'a> LogCursor<'a> {
    async fn open(store: &'a Store, ns: &'a str, model: &'a str) -> Result<Self, StorageError> {
        let dir = layout::commit_log_dir(ns, model);
        let next = store.log_head(&dir, None).await?;
        Ok(Self {
            store,
            ns,
            model,
            dir,
            next,
            seen: Default::default(),
            complete: false,
        })
    }

    /// The next older committed version and its manifest; `None` at the
    /// start of the log (then [`Self::complete`] says which start).
    async fn next(&mut self) -> Result<Option<Manifest>, StorageError> {
        while let Some(seq) = self.next {
            self.next = seq.checked_sub(1);
            let Some((version, deleted)) = self.store.log_entry(&self.dir, seq).await? else {
                self.complete = true;
                return Ok(None);
            };
            // A deleted version's older commit entries are passed over.
            if !self.seen.insert(version.clone()) || deleted {
                continue;
            }
            let v = VersionRef {
                namespace: self.ns,
                model: self.model,
                version: &version,
            };
            match self.store.get_manifest(&v).await {
                Ok(Some(m)) => return Ok(Some(m)),
                // Not (yet) committed, or deleted: an older entry answers.
                Ok(None) | Err(StorageError::Gone(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

impl Store {
    /// Writes a new model's genesis entry (entry 0). A commit that raced
    /// ahead and took number 0 makes the model look created before the log
    /// existed, which is always answered correctly (by a full scan).
    pub(crate) async fn start_commit_log(&self, ns: &str, model: &str) -> Result<(), StorageError> {
        let dir = layout::commit_log_dir(ns, model);
        let genesis = CommitEntry {
            seq: 0,
            version: None,
            deleted: false,
            time: now(),
        };
        match self
            .create_record("commit-log", &layout::seq_record(&dir, 0), &genesis)
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => {
                self.log_cache.raise(&dir, 0);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Appends the commit of `v` to its model's log (before its manifest is
    /// written).
    pub(crate) async fn log_commit(&self, v: &VersionRef<'_>) -> Result<u64, StorageError> {
        self.append_log(v, false).await
    }

    /// Appends the deletion of `v` to its model's log (before its tombstone
    /// is written: a crash in between hides a version that is still there
    /// from listings, never lists a deleted one).
    pub(crate) async fn log_deletion(&self, v: &VersionRef<'_>) -> Result<u64, StorageError> {
        self.append_log(v, true).await
    }

    /// Appends an entry at the next number, retried when another writer
    /// takes it.
    async fn append_log(&self, v: &VersionRef<'_>, deleted: bool) -> Result<u64, StorageError> {
        let dir = layout::commit_log_dir(v.namespace, v.model);
        let mut floor = None;
        for attempt in 0..256u64 {
            if attempt >= 4 {
                // Many writers on one model: back off a random 0..=N ms
                // (the low bits of a UUIDv7 are random).
                let jitter = uuid::Uuid::now_v7().as_u128() as u64 % (attempt.min(20) + 1);
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            let head = self.log_head(&dir, floor).await?;
            // Never append after an entry that does not verify: the log
            // would continue past a forgery (and past a gap once it is
            // removed). A tampered log refuses commits (fail closed).
            if let Some(h) = head {
                self.log_entry(&dir, h).await?;
            }
            let next = head.map_or(0, |s| s + 1);
            let entry = CommitEntry {
                seq: next,
                version: Some(v.version.to_string()),
                deleted,
                time: now(),
            };
            match self
                .create_record("commit-log", &layout::seq_record(&dir, next), &entry)
                .await
            {
                Ok(()) => {
                    self.log_cache.raise(&dir, next);
                    return Ok(next);
                }
                // The number exists now: the next probe starts from it.
                Err(StorageError::AlreadyExists(_)) => floor = Some(next),
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(format!(
            "{dir}: too many concurrent commits"
        )))
    }

    /// The newest committed, not deleted, not archived version of a model,
    /// from its commit log; a full scan of the manifests only for a model
    /// whose log does not reach back to its creation.
    pub(crate) async fn latest_version(
        &self,
        ns: &str,
        model: &str,
    ) -> Result<String, StorageError> {
        let mut log = LogCursor::open(self, ns, model).await?;
        while let Some(m) = log.next().await? {
            if !self.is_archived(ns, model, &m.version).await? {
                return Ok(m.version);
            }
        }
        if !log.complete {
            for m in self.list_versions(ns, model).await?.into_iter().rev() {
                if !self.is_archived(ns, model, &m.version).await? {
                    return Ok(m.version);
                }
            }
        }
        Err(StorageError::NotFound(format!(
            "committed version of {ns}/{model} that is not archived"
        )))
    }

    async fn is_archived(
        &self,
        ns: &str,
        model: &str,
        version: &str,
    ) -> Result<bool, StorageError> {
        let v = VersionRef {
            namespace: ns,
            model,
            version,
        };
        Ok(self.stage_of(&v).await? == Stage::Archived)
    }

    /// The newest `limit` committed versions of a model (oldest first, as
    /// [`Store::list_versions`]) and whether older ones exist: from the
    /// commit log's newest entries, 32 at a time, concurrently (a model
    /// whose log does not reach back to its creation is listed in full,
    /// then cut). Deletions are entries too, so a version this process has
    /// listed before costs no store read at all.
    pub async fn recent_versions(
        &self,
        ns: &str,
        model: &str,
        limit: usize,
    ) -> Result<(Vec<VersionBrief>, bool), StorageError> {
        self.require_model(ns, model).await?;
        let dir = layout::commit_log_dir(ns, model);
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = self.log_head(&dir, None).await?;
        let mut complete = false;
        while let Some(top) = next {
            let low = top.saturating_sub(31);
            next = low.checked_sub(1);
            let entries = futures::future::try_join_all(
                (low..=top).rev().map(|seq| self.log_entry(&dir, seq)),
            )
            .await?;
            let mut names = Vec::new();
            for entry in entries {
                match entry {
                    // A deletion hides the version's older commit entries.
                    Some((v, true)) => {
                        seen.insert(v);
                    }
                    Some((v, false)) if seen.insert(v.clone()) => names.push(v),
                    Some(_) => {}
                    // The genesis entry (only ever entry 0).
                    None => complete = true,
                }
            }
            let briefs = futures::future::try_join_all(
                names.iter().map(|v| self.version_brief(ns, model, v)),
            )
            .await?;
            for b in briefs.into_iter().flatten() {
                if out.len() == limit {
                    out.reverse();
                    return Ok((out, true));
                }
                out.push(b);
            }
        }
        if complete {
            out.reverse();
            return Ok((out, false));
        }
        let all = self.list_versions(ns, model).await?;
        let more = all.len() > limit;
        let keep = all.len().saturating_sub(limit);
        Ok((all[keep..].iter().map(VersionBrief::from).collect(), more))
    }

    /// A version's brief if it is committed and not deleted (a cached one
    /// was committed; a deletion since is an entry the caller has seen).
    async fn version_brief(
        &self,
        ns: &str,
        model: &str,
        version: &str,
    ) -> Result<Option<VersionBrief>, StorageError> {
        let v = VersionRef {
            namespace: ns,
            model,
            version,
        };
        let key = v.to_string();
        if let Some(b) = self.log_cache.brief(&key) {
            return Ok(Some(b));
        }
        match self.get_manifest(&v).await {
            Ok(Some(m)) => {
                let b = VersionBrief::from(&m);
                self.log_cache.keep_brief(key, b.clone());
                Ok(Some(b))
            }
            Ok(None) | Err(StorageError::Gone(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What entry `seq` of the log in `dir` says: a version committed or
    /// deleted, or `None` for the genesis entry (entry 0 only); verified
    /// once, then cached.
    async fn log_entry(&self, dir: &Path, seq: u64) -> Result<Logged, StorageError> {
        if let Some(v) = self.log_cache.entry(dir, seq) {
            return Ok(v);
        }
        let path = layout::seq_record(dir, seq);
        let entry: CommitEntry = self
            .read_record("commit-log", &path)
            .await?
            .ok_or_else(|| {
                StorageError::Integrity(format!("commit log entry {path} is missing"))
            })?;
        if entry.seq != seq {
            return Err(StorageError::Integrity(format!(
                "commit log entry {path} names number {}",
                entry.seq
            )));
        }
        if entry.version.is_none() && seq != 0 {
            return Err(StorageError::Integrity(format!(
                "commit log entry {path} is a genesis entry past the start"
            )));
        }
        let logged = entry.version.map(|v| (v, entry.deleted));
        self.log_cache.keep_entry(dir, seq, logged.clone());
        self.log_cache.raise(dir, seq);
        Ok(logged)
    }

    /// The highest entry number in a commit log, or `None` when it has no
    /// entries: probed from the highest number this process has verified
    /// (or `floor`, a number known to exist). Only verified entries raise
    /// where later probes start, so an object planted past the head and
    /// removed again leaves no trace.
    async fn log_head(&self, dir: &Path, floor: Option<u64>) -> Result<Option<u64>, StorageError> {
        let mut lo = match self.log_cache.head(dir).max(floor) {
            Some(s) => s,
            None if self.entry_exists(dir, 0).await? => 0,
            None => return Ok(None),
        };
        // Gallop forward from a number known to exist…
        let mut step = 1u64;
        let mut hi = loop {
            let probe = lo.saturating_add(step);
            if !self.entry_exists(dir, probe).await? {
                break probe;
            }
            lo = probe;
            step = step.saturating_mul(2);
        };
        // …then bisect: `lo` exists, `hi` does not.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.entry_exists(dir, mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(Some(lo))
    }

    async fn entry_exists(&self, dir: &Path, seq: u64) -> Result<bool, StorageError> {
        match self.objects.head(&layout::seq_record(dir, seq)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
