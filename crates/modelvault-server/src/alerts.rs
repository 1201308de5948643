//! Alert rules: too many failed authentications from one source or denials
//! of one principal within a window, any access to a `restricted` model
//! from an environment it is not approved for, every policy install or
//! removal. An alert is an audit record, a metric, and a signed JSON POST
//! to the configured webhook (retried in the background; a request never
//! waits for it). Audit checkpoints are shipped to the same webhook, so a
//! bucket writer cannot quietly drop the newest records.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use modelvault_audit::{AuditLog, AuditRecord, PrincipalRef, ResourceRef};
use tokio::sync::mpsc;

use crate::config::AlertsConfig;
use crate::metrics::{Metrics, RuleLabels};

/// Recent events of one key, and when it last fired.
type Window = (VecDeque<Instant>, Option<Instant>);

/// The alert engine.
pub struct Alerts {
    cfg: AlertsConfig,
    metrics: Arc<Metrics>,
    audit: OnceLock<AuditLog>,
    windows: Mutex<HashMap<String, Window>>,
    webhook: Option<mpsc::Sender<(String, serde_json::Value)>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex::encode(ring::hmac::sign(&k, body).as_ref())
}

impl Alerts {
    /// The engine; starts the webhook sender when a webhook is configured
    /// (inside a Tokio runtime).
    pub fn new(cfg: AlertsConfig, metrics: Arc<Metrics>) -> Self {
        let webhook = match (&cfg.webhook_url, tokio::runtime::Handle::try_current()) {
            (Some(url), Ok(rt)) => {
                let secret = cfg
                    .webhook_secret_file
                    .as_ref()
                    .and_then(|f| match std::fs::read(f) {
                        // A trailing newline is not part of the key.
                        Ok(mut k) => {
                            while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                                k.pop();
                            }
                            Some(zeroize::Zeroizing::new(k))
                        }
                        Err(e) => {
                            tracing::error!(file = %f.display(), error = %e, "webhook secret unreadable; posts go unsigned");
                            None
                        }
                    });
                let (tx, rx) = mpsc::channel(10_000);
                rt.spawn(send_loop(url.clone(), secret, rx));
                Some(tx)
            }
            _ => None,
        };
        Self {
            cfg,
            metrics,
            audit: OnceLock::new(),
            windows: Mutex::new(HashMap::new()),
            webhook,
        }
    }

    /// Connects the audit trail (alerts become records; checkpoints are
    /// shipped to the webhook).
    pub fn attach_audit(&self, audit: &AuditLog) {
        let _ = self.audit.set(audit.clone());
        if let Some(tx) = self.webhook.clone() {
            let mut rx = audit.subscribe_checkpoints();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(cp) => {
                            if let Ok(v) = serde_json::to_value(&cp) {
                                let _ = tx.try_send(("checkpoint".into(), v));
                            }
                        }
                        // Missed some: the next one still proves them.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
    }

    /// Counts an event under `key`; true when it crosses `threshold` within
    /// the window (once per window).
    fn crossed(&self, key: String, threshold: u64) -> bool {
        if threshold == 0 {
            return false;
        }
        let window = Duration::from_secs(self.cfg.window_secs.max(1));
        let now = Instant::now();
        let Ok(mut w) = self.windows.lock() else {
            return false;
        };
        if w.len() > 100_000 {
            w.retain(|_, (q, _)| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let (q, fired) = w.entry(key).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() as u64 > threshold && fired.is_none_or(|f| now.duration_since(f) >= window) {
            *fired = Some(now);
            return true;
        }
        false
    }

    fn fire(
        &self,
        rule: &str,
        message: String,
        principal: Option<PrincipalRef>,
        source: Option<String>,
        resource: Option<ResourceRef>,
    ) {
        self.metrics
            .alerts
            .get_or_create(&RuleLabels { rule: rule.into() })
            .inc();
        tracing::warn!(rule, %message, "alert");
        let mut rec = AuditRecord::new("alert", rule, "fired");
        rec.detail = Some(message.clone());
        rec.principal = principal.clone();
        rec.source = source.clone();
        rec.resource = resource.clone();
        if let Some(a) = self.audit.get()
            && !a.try_record(rec)
        {
            tracing::error!(rule, "audit queue full; alert not recorded");
        }
        if let Some(tx) = &self.webhook {
            let body = serde_json::json!({
                "type": "alert",
                "rule": rule,
                "time": chrono::Utc::now(),
                "message": message,
                "principal": principal,
                "source": source,
                "resource": resource,
            });
            if tx.try_send(("alert".into(), body)).is_err() {
                tracing::error!(rule, "webhook queue full; alert not posted");
            }
        }
    }

    /// A failed authentication from `source`.
    pub fn failed_auth(&self, source: Option<std::net::IpAddr>) {
        let s = source.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        if self.crossed(format!("auth:{s}"), self.cfg.failed_auth_threshold) {
            self.fire(
                "failed-authentications",
                format!(
                    "more than {} failed authentications from {s} within {} s",
                    self.cfg.failed_auth_threshold, self.cfg.window_secs
                ),
                None,
                Some(s),
                None,
            );
        }
    }

    /// A request of `principal` was denied.
    pub fn denial(&self, principal: &PrincipalRef, source: Option<String>) {
        if self.crossed(format!("deny:{}", principal.id), self.cfg.denial_threshold) {
            self.fire(
                "denials",
                format!(
                    "more than {} denials of {} within {} s",
                    self.cfg.denial_threshold, principal.id, self.cfg.window_secs
                ),
                Some(principal.clone()),
                source,
                None,
            );
        }
    }

    /// Access to a restricted model from an environment it is not approved
    /// for.
    pub fn restricted_access(&self, principal: &PrincipalRef, resource: ResourceRef) {
        if self.cfg.restricted_outside_approved {
            self.fire(
                "restricted-outside-approved",
                format!(
                    "{} in {} accessed restricted {}/{}, not approved for {}",
                    principal.id,
                    principal.environment,
                    resource.namespace.as_deref().unwrap_or("?"),
                    resource.model.as_deref().unwrap_or("?"),
                    principal.environment
                ),
                Some(principal.clone()),
                None,
                Some(resource),
            );
        }
    }

    /// A policy was installed or removed.
    pub fn policy_change(&self, what: &str, name: &str, principal: &PrincipalRef) {
        if self.cfg.policy_changes {
            self.fire(
                "policy-change",
                format!("policy {name} {what} by {}", principal.id),
                Some(principal.clone()),
                None,
                Some(ResourceRef {
                    name: Some(name.into()),
                    ..Default::default()
                }),
            );
        }
    }
}

impl Alerts {
    /// A policy plugin's circuit opened: it timed out or trapped `failures`
    /// times within `window_secs` and is short-circuited (an enforcing one
    /// denies, a shadow one is skipped) until a probe after the cool-down
    /// succeeds.
    pub fn policy_circuit_open(
        &self,
        name: &str,
        shadow: bool,
        failures: u32,
        breaker: &modelvault_policy::BreakerConfig,
    ) {
        if self.cfg.policy_circuit_open {
            let effect = if shadow {
                "shadow plugin skipped"
            } else {
                "enforcing plugin denies (plugin.circuit-open)"
            };
            self.fire(
                "policy-circuit-open",
                format!(
                    "policy {name} short-circuited after {failures} timeouts or traps within {} s: {effect}; probed again after {} s",
                    breaker.window_secs, breaker.cooldown_secs
                ),
                None,
                None,
                Some(ResourceRef {
                    name: Some(name.into()),
                    ..Default::default()
                }),
            );
        }
    }
}

async fn send_loop(
    url: String,
    secret: Option<zeroize::Zeroizing<Vec<u8>>>,
    mut rx: mpsc::Receiver<(String, serde_json::Value)>,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "webhook client");
            return;
        }
    };
    while let Some((event, body)) = rx.recv().await {
        let Ok(bytes) = serde_json::to_vec(&body) else {
            continue;
        };
        let signature = secret
            .as_ref()
            .map(|k| format!("sha256={}", hmac_hex(k, &bytes)));
        let mut delay = Duration::from_millis(250);
        for attempt in 1..=5 {
            let mut rb = http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-modelvault-event", event.as_str())
                .body(bytes.clone());
            if let Some(s) = &signature {
                rb = rb.header("x-modelvault-signature", s.as_str());
            }
            match rb.send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => tracing::warn!(status = r.status().as_u16(), attempt, "webhook refused"),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook unreachable"),
            }
            if attempt == 5 {
                tracing::error!(event, "webhook post dropped after 5 attempts");
            } else {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
