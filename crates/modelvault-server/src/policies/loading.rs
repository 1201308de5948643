//! The compiled components a server holds, and where it stands with its
//! installed set.
//!
//! A reload never waits for a compile: a component not compiled yet is
//! compiled by a task of its own (under the code bounds and time budget of
//! `policy.limits`), which reloads again when it ends. Until then:
//! - a new revision of a policy this server already runs: the previous
//!   revision keeps deciding (as it does until a reload sees the install);
//! - a shadow policy with no previous revision: left out of the chain;
//! - an enforcing policy with no previous revision: left out while the
//!   server is ready (as during the refresh interval, a change another
//!   server made applies here once compiled), unless it is required; right
//!   after a start, the server stays [`Phase::Loading`] until every
//!   enforcing policy has compiled, and policy-checked requests wait
//!   `policy.load_wait_ms` for it, then get a 503 `policies_loading`.
//!
//! A compile that fails (invalid, over a bound, over the time budget) is
//! remembered, so reloads do not compile it again and again: an enforcing
//! policy that failed breaks the chain (deny all), a shadow one is left
//! out. Over its budget or for want of a store read, it is retried after a
//! while; an invalid component never is (until a new revision).
//!
//! Nothing is held for a component the installed set no longer names:
//! every reload drops the compiled components of removed and replaced
//! revisions (at most `policy.max_policies` are installed).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use modelvault_policy::CompiledPolicy;

/// A compiled component's key: `name:sha256`.
pub(super) fn key(name: &str, sha256: &str) -> String {
    format!("{name}:{sha256}")
}

/// A compile that failed for want of a store read is retried after this.
pub(super) const RETRY_UNAVAILABLE: Duration = Duration::from_secs(5);
/// A compile that ran out of time (or of compile slots) is retried after
/// this: the machine may have been busy.
pub(super) const RETRY_SLOW: Duration = Duration::from_secs(300);

/// Where a server stands with its installed set (`GET /readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Started, and not every enforcing policy has compiled yet.
    Loading,
    /// Deciding with the installed set.
    Ready,
    /// The installed set cannot be loaded: every decision is a deny.
    Broken,
}

impl Phase {
    /// `loading`, `ready`, `broken`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Broken => "broken",
        }
    }
}

/// What is known of one component.
pub(super) enum Lookup {
    /// Compiled.
    Ready(Arc<CompiledPolicy>),
    /// Its compile failed (why).
    Failed(String),
    /// Being compiled.
    Compiling,
}

/// Why a compile failed, and whether to try again.
pub(super) struct Failure {
    /// For the log and the broken chain.
    pub(super) error: String,
    /// Try again after this long; never when `None`.
    pub(super) retry_after: Option<Duration>,
}

struct Failed {
    error: String,
    retry_at: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    ready: HashMap<String, Arc<CompiledPolicy>>,
    failed: HashMap<String, Failed>,
    compiling: HashSet<String>,
    /// Installs in progress: their components stay until the install's
    /// reload has taken them.
    pinned: HashMap<String, usize>,
}

/// The compiled components held, by `name:sha256`.
#[derive(Default)]
pub(super) struct Compiled {
    inner: Mutex<Inner>,
}

/// Keeps a component through [`Compiled::retain`] while it lives.
pub(super) struct Pin<'a> {
    compiled: &'a Compiled,
    key: String,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut inner = self.compiled.lock();
        if let Some(n) = inner.pinned.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                inner.pinned.remove(&self.key);
            }
        }
    }
}

impl Compiled {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent across a panic (each change is one
        // insert or remove): keep using them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is known of `key`. When nothing is (or a failure is due for a
    /// retry), it is marked compiling and the second value is `true`: the
    /// caller starts the compile and reports it with [`Self::finish`].
    pub(super) fn lookup_or_start(&self, key: &str) -> (Lookup, bool) {
        let mut inner = self.lock();
        if let Some(c) = inner.ready.get(key) {
            return (Lookup::Ready(c.clone()), false);
        }
        if let Some(f) = inner.failed.get(key) {
            if f.retry_at.is_none_or(|t| Instant::now() < t) {
                return (Lookup::Failed(f.error.clone()), false);
            }
            inner.failed.remove(key);
        }
        let start = inner.compiling.insert(key.to_string());
        (Lookup::Compiling, start)
    }

    /// Records the end of a compile started by [`Self::lookup_or_start`].
    pub(super) fn finish(&self, key: &str, result: Result<Arc<CompiledPolicy>, Failure>) {
        let mut inner = self.lock();
        inner.compiling.remove(key);
        match result {
            Ok(c) => {
                inner.ready.insert(key.to_string(), c);
            }
            Err(f) => {
                inner.failed.insert(
                    key.to_string(),
                    Failed {
                        error: f.error,
                        retry_at: f.retry_after.map(|d| Instant::now() + d),
                    },
                );
            }
        }
    }

    /// Adds a component compiled elsewhere (by an install), pinned until
    /// the returned guard drops.
    pub(super) fn insert_pinned(&self, key: &str, c: Arc<CompiledPolicy>) -> Pin<'_> {
        let mut inner = self.lock();
        inner.failed.remove(key);
        inner.ready.insert(key.to_string(), c);
        *inner.pinned.entry(key.to_string()).or_insert(0) += 1;
        Pin {
            compiled: self,
            key: key.to_string(),
        }
    }

    /// Drops every compiled component and remembered failure whose key is
    /// not in `keep` and not pinned; how many compiled ones were dropped.
    pub(super) fn retain(&self, keep: &HashSet<String>) -> usize {
        let mut inner = self.lock();
        let Inner {
            ready,
            failed,
            pinned,
            ..
        } = &mut *inner;
        let before = ready.len();
        ready.retain(|k, _| keep.contains(k) || pinned.contains_key(k));
        failed.retain(|k, _| keep.contains(k));
        before - ready.len()
    }

    /// Compiled components held, and compiles in progress.
    pub(super) fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.ready.len(), inner.compiling.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled() -> Arc<CompiledPolicy> {
        let host = modelvault_policy::PolicyHost::new(modelvault_policy::Limits::default(), None)
            .expect("host");
        let b = &modelvault_bundled_policies::BUNDLED[0];
        Arc::new(host.compile(b.name, b.component).expect("compile"))
    }

    #[test]
    fn only_what_is_kept_or_pinned_stays() {
        let c = compiled();
        let held = Compiled::default();
        // Nothing known: the caller starts the compile, once.
        assert!(matches!(
            held.lookup_or_start("a:1"),
            (Lookup::Compiling, true)
        ));
        assert!(matches!(
            held.lookup_or_start("a:1"),
            (Lookup::Compiling, false)
        ));
        assert_eq!(held.counts(), (0, 1));
        held.finish("a:1", Ok(c.clone()));
        assert!(matches!(
            held.lookup_or_start("a:1"),
            (Lookup::Ready(_), false)
        ));
        let pin = held.insert_pinned("b:2", c.clone());
        held.finish(
            "c:3",
            Err(Failure {
                error: "invalid".into(),
                retry_after: None,
            }),
        );
        assert_eq!(held.counts(), (2, 0));
        // A reload that names none of them drops all but the pinned one.
        assert_eq!(held.retain(&HashSet::new()), 1);
        assert_eq!(held.counts(), (1, 0));
        drop(pin);
        assert_eq!(held.retain(&HashSet::from(["a:1".to_string()])), 1);
        assert_eq!(held.counts(), (0, 0));
        // The failure went with it: a new lookup starts a compile again.
        assert!(matches!(
            held.lookup_or_start("c:3"),
            (Lookup::Compiling, true)
        ));
    }

    #[test]
    fn failures_are_remembered_until_due() {
        let held = Compiled::default();
        let _ = held.lookup_or_start("a:1");
        held.finish(
            "a:1",
            Err(Failure {
                error: "never".into(),
                retry_after: None,
            }),
        );
        assert!(matches!(held.lookup_or_start("a:1"), (Lookup::Failed(e), false) if e == "never"));
        let _ = held.lookup_or_start("b:2");
        held.finish(
            "b:2",
            Err(Failure {
                error: "slow".into(),
                retry_after: Some(Duration::ZERO),
            }),
        );
        // Due at once: compiled again.
        assert!(matches!(
            held.lookup_or_start("b:2"),
            (Lookup::Compiling, true)
        ));
    }
}
