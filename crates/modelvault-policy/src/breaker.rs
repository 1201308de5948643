//! A circuit breaker per plugin: a plugin that keeps timing out or trapping
//! is short-circuited instead of being run, so one hostile or broken plugin
//! cannot keep the evaluation threads busy.
//!
//! States, per installed plugin revision (name + component hash):
//! - **closed**: every request runs the plugin; each timeout, trap or memory
//!   overrun is counted, and `failures` of them within `window_secs` open
//!   the circuit;
//! - **open**: the plugin is not run. An enforcing plugin denies
//!   (`plugin.circuit-open`, so the chain fails closed); a shadow plugin is
//!   skipped (recorded as an abstain with that reason code);
//! - **half-open**: once `cooldown_secs` have passed, the next request runs
//!   the plugin as a probe (one probe at a time; the others stay
//!   short-circuited). A probe that completes without a timeout or trap
//!   closes the circuit; one that fails opens it for another cool-down.
//!
//! A plugin's own deny is not a failure: only what the host imposes on it
//! (the time limit, the memory limit, a trap) counts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{
    ChainDecision, ChainEntry, Outcome, PluginResult, PolicyDecision, PolicyHost, PolicyRequest,
    combine,
};

/// Reason code of a plugin short-circuited by its open circuit.
pub const CIRCUIT_OPEN: &str = "plugin.circuit-open";

/// Default failures within the window that open a circuit.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default window in which failures are counted, in seconds.
pub const DEFAULT_BREAKER_WINDOW_SECS: u64 = 60;
/// Default time an open circuit waits before a probe, in seconds.
pub const DEFAULT_BREAKER_COOLDOWN_SECS: u64 = 30;

/// `[policy.circuit_breaker]`: when a plugin is short-circuited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Timeouts, traps and memory overruns within the window that open a
    /// plugin's circuit (0 turns the breaker off).
    pub failures: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Seconds an open circuit waits before it lets one probe through.
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: DEFAULT_BREAKER_FAILURES,
            window_secs: DEFAULT_BREAKER_WINDOW_SECS,
            cooldown_secs: DEFAULT_BREAKER_COOLDOWN_SECS,
        }
    }
}

impl BreakerConfig {
    fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs.max(1))
    }
    fn cooldown(&self) -> Duration {
        Duration::from_secs(self.cooldown_secs.max(1))
    }
}

/// A circuit's state, as metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// The plugin runs.
    Closed,
    /// One probe may run.
    HalfOpen,
    /// The plugin is short-circuited.
    Open,
}

impl CircuitState {
    /// `closed`, `half-open`, `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
        }
    }

    /// 0 closed, 1 half-open, 2 open (the `policy_circuit_state` gauge).
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// What the breaker lets a request do with its plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run it (closed).
    Evaluate,
    /// Run it as the half-open probe.
    Probe,
    /// Do not run it.
    ShortCircuit,
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open: `failures` failures within the window.
    Opened {
        /// Failures counted in the window.
        failures: u32,
    },
    /// Open → half-open: the cool-down passed; a probe runs.
    HalfOpened,
    /// Half-open → open: the probe failed.
    Reopened,
    /// Half-open → closed: the probe succeeded.
    Closed,
}

impl Transition {
    /// The state it leads to.
    pub fn to(self) -> CircuitState {
        match self {
            Self::Opened { .. } | Self::Reopened => CircuitState::Open,
            Self::HalfOpened => CircuitState::HalfOpen,
            Self::Closed => CircuitState::Closed,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: VecDeque<Instant> },
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

/// One plugin's circuit.
#[derive(Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Inner,
}

impl CircuitBreaker {
    /// A closed circuit.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            inner: Inner::Closed {
                failures: VecDeque::new(),
            },
        }
    }

    /// Its state.
    pub fn state(&self) -> CircuitState {
        match self.inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a request arriving at `now` runs the plugin, and the change
    /// of state that decision made (open → half-open when the cool-down has
    /// passed).
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        if self.cfg.failures == 0 {
            return (Admission::Evaluate, None);
        }
        match self.inner {
            Inner::Closed { .. } => (Admission::Evaluate, None),
            Inner::Open { until } if now >= until => {
                self.inner = Inner::HalfOpen { probe_since: now };
                (Admission::Probe, Some(Transition::HalfOpened))
            }
            Inner::Open { .. } => (Admission::ShortCircuit, None),
            // A probe always reports back (it runs under the time limit);
            // should one ever be lost, another is let through after a
            // further cool-down rather than leaving the circuit stuck.
            Inner::HalfOpen { probe_since }
                if now.saturating_duration_since(probe_since) >= self.cfg.cooldown() =>
            {
                self.inner = Inner::HalfOpen { probe_since: now };
                (Admission::Probe, None)
            }
            Inner::HalfOpen { .. } => (Admission::ShortCircuit, None),
        }
    }

    /// Records how an evaluation admitted as `admission` ended (`failed`:
    /// a timeout, trap or memory overrun); the change of state, if any.
    pub fn record(
        &mut self,
        now: Instant,
        admission: Admission,
        failed: bool,
    ) -> Option<Transition> {
        if self.cfg.failures == 0 {
            return None;
        }
        let window = self.cfg.window();
        let cooldown = self.cfg.cooldown();
        match (&mut self.inner, admission) {
            (_, Admission::ShortCircuit) => None,
            (Inner::Closed { failures }, Admission::Evaluate) => {
                if !failed {
                    return None;
                }
                failures.push_back(now);
                while failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= window)
                {
                    failures.pop_front();
                }
                let n = failures.len() as u32;
                if n >= self.cfg.failures {
                    self.inner = Inner::Open {
                        until: now + cooldown,
                    };
                    Some(Transition::Opened { failures: n })
                } else {
                    None
                }
            }
            (Inner::HalfOpen { .. }, Admission::Probe) => {
                if failed {
                    self.inner = Inner::Open {
                        until: now + cooldown,
                    };
                    Some(Transition::Reopened)
                } else {
                    self.inner = Inner::Closed {
                        failures: VecDeque::new(),
                    };
                    Some(Transition::Closed)
                }
            }
            // An evaluation admitted before the circuit opened (or a probe
            // of an earlier half-open spell) ending late changes nothing.
            _ => None,
        }
    }
}

/// Whether a result counts against its plugin's circuit: a timeout, a trap
/// or a memory overrun imposed by the host (a plugin cannot claim these
/// codes for itself: they count only with the host's error set).
pub fn counts_as_failure(r: &PluginResult) -> bool {
    r.error.is_some()
        && matches!(
            r.decision.reason_code.as_str(),
            "plugin.timeout" | "plugin.trap" | "plugin.memory"
        )
}

/// A change of a plugin's circuit, for the operator (alert, metric, log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerEvent {
    /// Plugin name.
    pub plugin: String,
    /// Hex SHA-256 of its component.
    pub sha256: String,
    /// Whether it runs in shadow mode.
    pub shadow: bool,
    /// The change.
    pub transition: Transition,
}

/// A chain evaluation under the breakers.
#[derive(Debug, Clone)]
pub struct GuardedChain {
    /// The verdict.
    pub decision: ChainDecision,
    /// Circuits that changed state.
    pub events: Vec<BreakerEvent>,
    /// Plugins short-circuited in this evaluation: (name, shadow).
    pub short_circuited: Vec<(String, bool)>,
    /// Plugins whose circuit this evaluation created, closed: the first
    /// evaluation of a revision since the server started.
    pub new_circuits: Vec<String>,
}

/// The circuits of every plugin a server runs, by name and component hash
/// (a new revision of a plugin starts closed).
#[derive(Debug)]
pub struct Breakers {
    cfg: BreakerConfig,
    circuits: Mutex<HashMap<(String, String), CircuitBreaker>>,
}

impl Breakers {
    /// Circuits under `cfg`, all closed.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The state of a plugin's circuit (closed if never seen).
    pub fn state(&self, plugin: &str, sha256: &str) -> CircuitState {
        self.circuits
            .lock()
            .ok()
            .and_then(|m| {
                m.get(&(plugin.to_string(), sha256.to_string()))
                    .map(CircuitBreaker::state)
            })
            .unwrap_or(CircuitState::Closed)
    }

    /// Admits a request to the plugin `key`; also whether its circuit was
    /// created by this call.
    fn admit(&self, key: &(String, String), now: Instant) -> (Admission, Option<Transition>, bool) {
        let Ok(mut m) = self.circuits.lock() else {
            // A poisoned map cannot tell: run the plugin (its own limits
            // still hold; the chain stays fail-closed).
            return (Admission::Evaluate, None, false);
        };
        let mut created = false;
        let (admission, t) = m
            .entry(key.clone())
            .or_insert_with(|| {
                created = true;
                CircuitBreaker::new(self.cfg.clone())
            })
            .admit(now);
        (admission, t, created)
    }

    fn record(
        &self,
        key: &(String, String),
        now: Instant,
        admission: Admission,
        failed: bool,
    ) -> Option<Transition> {
        let mut m = self.circuits.lock().ok()?;
        m.get_mut(key)?.record(now, admission, failed)
    }

    /// Forgets the circuits of plugins no longer in `chain`.
    fn prune(&self, chain: &[ChainEntry]) {
        if let Ok(mut m) = self.circuits.lock()
            && m.len() > chain.len()
        {
            m.retain(|(name, sha), _| {
                chain
                    .iter()
                    .any(|e| &e.policy.name == name && &e.policy.sha256 == sha)
            });
        }
    }
}

fn short_circuit(entry: &ChainEntry, cfg: &BreakerConfig) -> PluginResult {
    let name = &entry.policy.name;
    let why = format!(
        "circuit open: {} timeouts or traps within {} s; retried after a cool-down of {} s",
        cfg.failures, cfg.window_secs, cfg.cooldown_secs
    );
    let (outcome, reason, error) = if entry.shadow {
        (
            Outcome::Abstain,
            format!("plugin {name}: skipped, {why}"),
            format!("skipped, {why}"),
        )
    } else {
        (Outcome::Deny, format!("plugin {name}: {why}"), why)
    };
    PluginResult {
        plugin: name.clone(),
        sha256: entry.policy.sha256.clone(),
        shadow: entry.shadow,
        decision: PolicyDecision {
            outcome,
            reason_code: CIRCUIT_OPEN.into(),
            reason,
        },
        error: Some(error),
        micros: 0,
    }
}

impl PolicyHost {
    /// [`PolicyHost::evaluate_chain`] with each plugin behind its circuit:
    /// an open circuit denies for an enforcing plugin (`plugin.circuit-open`)
    /// and skips a shadow one; every timeout, trap or memory overrun is
    /// counted against its plugin.
    pub fn evaluate_chain_guarded(
        &self,
        chain: &[ChainEntry],
        req: &PolicyRequest,
        breakers: &Breakers,
    ) -> GuardedChain {
        let mut results = Vec::with_capacity(chain.len());
        let mut events = Vec::new();
        let mut short_circuited = Vec::new();
        let mut new_circuits = Vec::new();
        let event = |entry: &ChainEntry, transition| BreakerEvent {
            plugin: entry.policy.name.clone(),
            sha256: entry.policy.sha256.clone(),
            shadow: entry.shadow,
            transition,
        };
        for entry in chain {
            let key = (entry.policy.name.clone(), entry.policy.sha256.clone());
            let (admission, t, created) = breakers.admit(&key, Instant::now());
            if created {
                new_circuits.push(entry.policy.name.clone());
            }
            if let Some(t) = t {
                events.push(event(entry, t));
            }
            if admission == Admission::ShortCircuit {
                short_circuited.push((entry.policy.name.clone(), entry.shadow));
                results.push(short_circuit(entry, breakers.config()));
                continue;
            }
            let mut r = self.evaluate(&entry.policy, req, &entry.config);
            r.shadow = entry.shadow;
            if let Some(t) = breakers.record(&key, Instant::now(), admission, counts_as_failure(&r))
            {
                events.push(event(entry, t));
            }
            results.push(r);
        }
        breakers.prune(chain);
        GuardedChain {
            decision: combine(results),
            events,
            short_circuited,
            new_circuits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(failures: u32) -> BreakerConfig {
        BreakerConfig {
            failures,
            window_secs: 10,
            cooldown_secs: 5,
        }
    }

    #[test]
    fn the_breaker_state_machine() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut b = CircuitBreaker::new(cfg(3));
        assert_eq!(b.state(), CircuitState::Closed);

        // Successes and failures spread wider than the window never open it.
        for i in 0..5 {
            assert_eq!(b.admit(s(i * 6)).0, Admission::Evaluate);
            assert_eq!(b.record(s(i * 6), Admission::Evaluate, true), None);
            assert_eq!(b.record(s(i * 6), Admission::Evaluate, false), None);
        }
        assert_eq!(b.state(), CircuitState::Closed);

        // Three failures within the window open it.
        let base = 100;
        assert_eq!(b.record(s(base), Admission::Evaluate, true), None);
        assert_eq!(b.record(s(base + 1), Admission::Evaluate, false), None);
        assert_eq!(b.record(s(base + 2), Admission::Evaluate, true), None);
        assert_eq!(
            b.record(s(base + 3), Admission::Evaluate, true),
            Some(Transition::Opened { failures: 3 })
        );
        assert_eq!(b.state(), CircuitState::Open);

        // Open: short-circuited until the cool-down has passed; evaluations
        // admitted earlier and ending late change nothing.
        assert_eq!(b.admit(s(base + 4)), (Admission::ShortCircuit, None));
        assert_eq!(b.record(s(base + 4), Admission::Evaluate, true), None);
        assert_eq!(b.record(s(base + 4), Admission::Evaluate, false), None);
        assert_eq!(b.admit(s(base + 7)), (Admission::ShortCircuit, None));
        assert_eq!(b.state(), CircuitState::Open);

        // Half-open: one probe; the others stay short-circuited.
        assert_eq!(
            b.admit(s(base + 8)),
            (Admission::Probe, Some(Transition::HalfOpened))
        );
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.admit(s(base + 8)), (Admission::ShortCircuit, None));
        assert_eq!(b.record(s(base + 8), Admission::ShortCircuit, true), None);

        // A failed probe opens it for another cool-down.
        assert_eq!(
            b.record(s(base + 9), Admission::Probe, true),
            Some(Transition::Reopened)
        );
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit(s(base + 13)), (Admission::ShortCircuit, None));
        assert_eq!(
            b.admit(s(base + 14)),
            (Admission::Probe, Some(Transition::HalfOpened))
        );

        // A lost probe does not leave it stuck: another after a cool-down.
        assert_eq!(b.admit(s(base + 18)), (Admission::ShortCircuit, None));
        assert_eq!(b.admit(s(base + 19)), (Admission::Probe, None));

        // A probe that behaves closes it, with a clean slate of failures.
        assert_eq!(
            b.record(s(base + 19), Admission::Probe, false),
            Some(Transition::Closed)
        );
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(s(base + 20)).0, Admission::Evaluate);
        assert_eq!(b.record(s(base + 20), Admission::Evaluate, true), None);
        assert_eq!(b.record(s(base + 20), Admission::Evaluate, true), None);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(
            b.record(s(base + 21), Admission::Evaluate, true),
            Some(Transition::Opened { failures: 3 })
        );
    }

    #[test]
    fn a_breaker_with_zero_failures_is_off() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(cfg(0));
        for _ in 0..100 {
            assert_eq!(b.admit(now), (Admission::Evaluate, None));
            assert_eq!(b.record(now, Admission::Evaluate, true), None);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn only_host_imposed_failures_count() {
        let r = |code: &str, error: Option<&str>| PluginResult {
            plugin: "p".into(),
            sha256: "00".into(),
            shadow: false,
            decision: PolicyDecision {
                outcome: Outcome::Deny,
                reason_code: code.into(),
                reason: "r".into(),
            },
            error: error.map(str::to_string),
            micros: 0,
        };
        assert!(counts_as_failure(&r("plugin.timeout", Some("t"))));
        assert!(counts_as_failure(&r("plugin.trap", Some("t"))));
        assert!(counts_as_failure(&r("plugin.memory", Some("t"))));
        // A plugin claiming the code itself, an ordinary deny, a malformed
        // result: not the breaker's business.
        assert!(!counts_as_failure(&r("plugin.timeout", None)));
        assert!(!counts_as_failure(&r("policy.deny", None)));
        assert!(!counts_as_failure(&r("plugin.malformed-result", Some("m"))));
    }
}
