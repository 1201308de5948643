//! Role bindings as every server over the bucket sees them, and the count of
//! failed authentications.
//!
//! Invariants a reader must keep:
//! - bindings live in the store as a series of authenticated snapshots
//!   (`access/bindings/<seq>.json`); a change writes the next number
//!   create-if-absent and retries on conflict, so concurrent grants from two
//!   servers are never lost;
//! - a server rereads the newest snapshot when its copy is older than
//!   `access.refresh_secs`; a store error while rereading denies (the
//!   request fails), it never falls back to a stale grant set;
//! - failed authentications are counted per source address only (a claimed
//!   but unverified principal is never trusted for counting), in fixed
//!   windows, in bounded memory.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use modelvault_auth::{BindingSet, BindingSubject};
use modelvault_storage::{StorageError, Store};

use crate::api::{AuthFailure, FailureCount, FailureReport};

/// The cached binding set.
pub struct Bindings {
    refresh: Duration,
    cached: tokio::sync::Mutex<Option<(Instant, u64, Arc<BindingSet>)>>,
}

impl Bindings {
    /// A cache that rereads after `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The current set (reread from the store when stale).
    pub async fn current(&self, store: &Store) -> Result<Arc<BindingSet>, StorageError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, _, set)) = cached.as_ref()
            && at.elapsed() < self.refresh
        {
            return Ok(set.clone());
        }
        let (seq, set) = match store.role_bindings().latest::<BindingSet>().await? {
            Some((seq, set)) => (seq, Arc::new(set)),
            None => (0, Arc::new(BindingSet::default())),
        };
        *cached = Some((Instant::now(), seq, set.clone()));
        Ok(set)
    }

    /// Applies `change` to the newest snapshot and writes the next one;
    /// retried when another server wrote first. Returns the new set and
    /// whether anything changed.
    pub async fn update(
        &self,
        store: &Store,
        mut change: impl FnMut(&mut BindingSet) -> bool,
    ) -> Result<(Arc<BindingSet>, bool), StorageError> {
        for _ in 0..16 {
            let latest = store.role_bindings().latest::<BindingSet>().await?;
            let (next, mut set) = match latest {
                Some((seq, set)) => (seq + 1, set),
                None => (0, BindingSet::default()),
            };
            if !change(&mut set) {
                return Ok((Arc::new(set), false));
            }
            match store.role_bindings().create_at(next, &set).await {
                Ok(()) => {
                    let set = Arc::new(set);
                    *self.cached.lock().await = Some((Instant::now(), next, set.clone()));
                    return Ok((set, true));
                }
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(
            "access/bindings: too many concurrent writers".into(),
        ))
    }

    /// Writes the config's seed bindings if the store holds no snapshot yet.
    pub async fn seed(
        &self,
        store: &Store,
        seeds: &[crate::config::SeedBinding],
    ) -> Result<(), StorageError> {
        if seeds.is_empty()
            || store
                .role_bindings()
                .latest::<BindingSet>()
                .await?
                .is_some()
        {
            return Ok(());
        }
        let now = Utc::now();
        let mut set = BindingSet::default();
        for s in seeds {
            let subject = match (&s.principal, &s.group) {
                (Some(p), None) => BindingSubject::Principal(p.clone()),
                (None, Some(g)) => BindingSubject::Group(g.clone()),
                _ => continue, // rejected by config validation
            };
            let ns = if s.namespaces.is_empty() {
                vec!["*".to_string()]
            } else {
                s.namespaces.clone()
            };
            set.grant(&subject, &s.role, &ns, "config", now);
        }
        match store.role_bindings().create_at(0, &set).await {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Counts of failed authentications by source and window.
pub struct AuthFailures {
    window: Duration,
    inner: Mutex<FailureState>,
}

struct FailureState {
    /// (source, window number) → (count, whether written to the audit trail).
    counts: HashMap<(String, u64), (u64, bool)>,
    recent: VecDeque<AuthFailure>,
    total: u64,
}

/// Most recent failures kept in memory.
const RECENT: usize = 1000;
/// Most (source, window) counters kept; the oldest windows go first.
const MAX_COUNTERS: usize = 100_000;

impl AuthFailures {
    /// Counting in windows of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_secs(1)),
            inner: Mutex::new(FailureState {
                counts: HashMap::new(),
                recent: VecDeque::new(),
                total: 0,
            }),
        }
    }

    fn window_of(&self, t: DateTime<Utc>) -> u64 {
        u64::try_from(t.timestamp()).unwrap_or(0) / self.window.as_secs()
    }

    /// Records one failure; never blocks on I/O. Returns whether it is the
    /// first from its source in the current window.
    pub fn record(&self, source: Option<IpAddr>, credential: &'static str, reason: &str) -> bool {
        let time = Utc::now();
        let source = source.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        let window = self.window_of(time);
        let Ok(mut s) = self.inner.lock() else {
            return false;
        };
        s.total += 1;
        let entry = s
            .counts
            .entry((source.clone(), window))
            .or_insert((0, false));
        entry.0 += 1;
        let first = entry.0 == 1;
        if s.counts.len() > MAX_COUNTERS {
            let oldest = s.counts.keys().map(|(_, w)| *w).min().unwrap_or(window);
            s.counts.retain(|(_, w), _| *w != oldest);
        }
        if first {
            tracing::warn!(%source, credential, reason, "authentication failed");
        }
        s.recent.push_back(AuthFailure {
            time,
            source,
            credential: credential.to_string(),
            reason: reason.to_string(),
            first_in_window: first,
        });
        while s.recent.len() > RECENT {
            s.recent.pop_front();
        }
        first
    }

    /// Windows that have ended and not yet been written: (source, window
    /// start, failures beyond the first, which was written at once).
    pub fn drain_closed(&self) -> Vec<(String, DateTime<Utc>, u64)> {
        let current = self.window_of(Utc::now());
        let secs = self.window.as_secs();
        let Ok(mut s) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ((source, w), (count, written)) in s.counts.iter_mut() {
            if *w < current && !*written {
                *written = true;
                if *count > 1 {
                    let start = DateTime::from_timestamp(i64::try_from(*w * secs).unwrap_or(0), 0)
                        .unwrap_or_default();
                    out.push((source.clone(), start, *count - 1));
                }
            }
        }
        out
    }

    /// A snapshot of the counts and recent failures.
    pub fn report(&self) -> FailureReport {
        let secs = self.window.as_secs();
        let Ok(s) = self.inner.lock() else {
            return FailureReport {
                window_secs: secs,
                total: 0,
                windows: Vec::new(),
                recent: Vec::new(),
            };
        };
        let mut windows: Vec<FailureCount> = s
            .counts
            .iter()
            .map(|((source, w), (count, _))| FailureCount {
                source: source.clone(),
                window_start: DateTime::from_timestamp(
                    i64::try_from(w * secs).unwrap_or(i64::MAX),
                    0,
                )
                .unwrap_or_default(),
                count: *count,
            })
            .collect();
        windows.sort_by(|a, b| (a.window_start, &a.source).cmp(&(b.window_start, &b.source)));
        FailureReport {
            window_secs: secs,
            total: s.total,
            windows,
            recent: s.recent.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_per_source_and_window() {
        let f = AuthFailures::new(Duration::from_secs(3600));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        f.record(Some(a), "jwt", "expired");
        f.record(Some(a), "jwt", "bad_signature");
        f.record(Some(b), "api-token", "invalid_token");
        let r = f.report();
        assert_eq!(r.total, 3);
        let a_count: u64 = r
            .windows
            .iter()
            .filter(|w| w.source == "10.0.0.1")
            .map(|w| w.count)
            .sum();
        assert_eq!(a_count, 2);
        assert!(r.recent[0].first_in_window && !r.recent[1].first_in_window);
    }
}
