//! Prometheus metrics (`GET /metrics`, text format). No label ever names a
//! principal, token, model or source address: cardinality stays bounded and
//! the endpoint leaks nothing about who does what.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `route`, `method`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/v1/models/{ns}/{name}`), never the concrete path.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status.
    pub status: u16,
}

/// `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Stable reason code.
    pub reason: String,
}

/// `plugin`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Plugin name.
    pub plugin: String,
    /// allow, deny, abstain.
    pub outcome: String,
}

/// `plugin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// Plugin name.
    pub plugin: String,
}

/// `plugin`, `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    /// Plugin name.
    pub plugin: String,
    /// The state entered: closed, half-open, open.
    pub state: String,
}

/// `plugin`, `mode`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginModeLabels {
    /// Plugin name.
    pub plugin: String,
    /// enforce or shadow.
    pub mode: String,
}

/// `rule`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// Alert rule.
    pub rule: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Failed authentications by reason.
    pub auth_failures: Family<ReasonLabels, Counter>,
    /// Policy decisions by plugin and outcome.
    pub policy_decisions: Family<PolicyLabels, Counter>,
    /// Seconds the whole policy chain took per decision.
    pub policy_latency: Histogram,
    /// Compiled policy components held in memory.
    pub policy_components_compiled: Gauge,
    /// Policy components being compiled in the background.
    pub policy_components_compiling: Gauge,
    /// Plaintext bytes served by downloads.
    pub bytes_served: Counter,
    /// Data keys released to workloads.
    pub key_releases: Counter,
    /// Seconds per audit segment write.
    pub audit_write_latency: Histogram,
    /// Audit records waiting to be written.
    pub audit_backlog: Gauge,
    /// Alerts fired, by rule.
    pub alerts: Family<RuleLabels, Counter>,
    /// Seconds a decision waited for an evaluation thread.
    pub policy_evaluation_wait: Histogram,
    /// Decisions waiting for an evaluation thread.
    pub policy_evaluations_waiting: Gauge,
    /// Each plugin's circuit: 0 closed, 1 half-open, 2 open.
    pub policy_circuit_state: Family<PluginLabels, Gauge>,
    /// Circuit state changes by plugin and state entered.
    pub policy_circuit_transitions: Family<CircuitLabels, Counter>,
    /// Evaluations a plugin's open circuit short-circuited, by plugin and
    /// mode (an enforcing plugin denied, a shadow one skipped).
    pub policy_short_circuits: Family<PluginModeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("modelvault");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Failed authentications by reason",
            auth_failures.clone(),
        );
        let policy_decisions = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_decisions",
            "Policy plugin decisions by plugin and outcome",
            policy_decisions.clone(),
        );
        let policy_latency = Histogram::new(exponential_buckets(0.000_005, 2.0, 18));
        registry.register(
            "policy_chain_seconds",
            "Time the policy chain took per decision",
            policy_latency.clone(),
        );
        let policy_components_compiled = Gauge::default();
        registry.register(
            "policy_components_compiled",
            "Compiled policy components held in memory",
            policy_components_compiled.clone(),
        );
        let policy_components_compiling = Gauge::default();
        registry.register(
            "policy_components_compiling",
            "Policy components being compiled in the background",
            policy_components_compiling.clone(),
        );
        let bytes_served = Counter::default();
        registry.register(
            "bytes_served",
            "Plaintext bytes served by downloads",
            bytes_served.clone(),
        );
        let key_releases = Counter::default();
        registry.register(
            "key_releases",
            "Data keys released to workloads",
            key_releases.clone(),
        );
        let audit_write_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register(
            "audit_write_seconds",
            "Time per audit segment write (group commit)",
            audit_write_latency.clone(),
        );
        let audit_backlog = Gauge::default();
        registry.register(
            "audit_backlog",
            "Audit records waiting to be written",
            audit_backlog.clone(),
        );
        let alerts = Family::<RuleLabels, Counter>::default();
        registry.register("alerts", "Alerts fired by rule", alerts.clone());
        let policy_evaluation_wait = Histogram::new(exponential_buckets(0.000_005, 2.0, 20));
        registry.register(
            "policy_evaluation_wait_seconds",
            "Time a policy decision waited for an evaluation thread",
            policy_evaluation_wait.clone(),
        );
        let policy_evaluations_waiting = Gauge::default();
        registry.register(
            "policy_evaluations_waiting",
            "Policy decisions waiting for an evaluation thread",
            policy_evaluations_waiting.clone(),
        );
        let policy_circuit_state = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "policy_circuit_state",
            "Circuit of each policy plugin: 0 closed, 1 half-open, 2 open",
            policy_circuit_state.clone(),
        );
        let policy_circuit_transitions = Family::<CircuitLabels, Counter>::default();
        registry.register(
            "policy_circuit_transitions",
            "Policy plugin circuit state changes by plugin and state entered",
            policy_circuit_transitions.clone(),
        );
        let policy_short_circuits = Family::<PluginModeLabels, Counter>::default();
        registry.register(
            "policy_short_circuits",
            "Evaluations skipped by an open circuit, by plugin and mode (enforce: denied, shadow: skipped)",
            policy_short_circuits.clone(),
        );
        Self {
            registry,
            requests,
            auth_failures,
            policy_decisions,
            policy_latency,
            policy_components_compiled,
            policy_components_compiling,
            bytes_served,
            key_releases,
            audit_write_latency,
            audit_backlog,
            alerts,
            policy_evaluation_wait,
            policy_evaluations_waiting,
            policy_circuit_state,
            policy_circuit_transitions,
            policy_short_circuits,
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
