//! Installed policies: authenticated, sequence-numbered records in the
//! store (`policies/<name>/<seq>.json`, the highest wins; removal is a
//! record too) and content-addressed components
//! (`policy-components/<sha256>.wasm`). Every server reloads them every
//! `policy.refresh_secs`, so a second server over the same bucket sees an
//! install or removal within that interval.
//!
//! Fail closed: if the installed set cannot be loaded (a record fails its
//! MAC, a component its hash, a compile fails), the chain is marked broken
//! and every decision is a deny until a reload succeeds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use modelvault_policy::{
    ChainDecision, ChainEntry, CompiledPolicy, Outcome, PolicyHost, PolicyRequest,
};
use modelvault_storage::Store;
use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::config::PolicyConfig;

mod loading;
pub use loading::Phase;
mod reconfigure;
pub use reconfigure::spawn_config_reloader;

/// Each plugin's `[policy.config.NAME]`, by installed name.
/// (plugin name, component SHA-256) → (decisions, would-be flips).
type ShadowStats = std::collections::HashMap<(String, String), (u64, u64)>;

type PluginConfigs = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

pub mod signing;
pub use modelvault_api::{EmbeddedMetadata, PolicyInfo, PolicyMode};

/// One installed (or removed) policy, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Name.
    pub name: String,
    /// Sequence number of this record.
    pub seq: u64,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// Component size.
    pub size: u64,
    /// Mode.
    pub mode: PolicyMode,
    /// Principal that installed (or removed) it.
    pub installed_by: String,
    /// When.
    pub installed_at: DateTime<Utc>,
    /// Set when this record removes the policy.
    #[serde(default)]
    pub removed: bool,
    /// Who vouched for the component: the id of the trusted key whose
    /// signature verified, `bundled`, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// The verified signature (hex), checked again at every load under
    /// `policy.require_signed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The component's embedded metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<EmbeddedMetadata>,
}

impl From<&PolicyRecord> for PolicyInfo {
    fn from(r: &PolicyRecord) -> Self {
        Self {
            name: r.name.clone(),
            sha256: r.sha256.clone(),
            size: r.size,
            mode: r.mode,
            installed_by: r.installed_by.clone(),
            installed_at: r.installed_at,
            signed_by: r.signed_by.clone(),
            metadata: r.metadata.clone(),
            shadow_decisions: None,
            shadow_flips: None,
        }
    }
}

struct Loaded {
    chain: Arc<Vec<ChainEntry>>,
    records: Vec<PolicyRecord>,
}

/// What a reload found.
enum Load {
    /// The chain to run.
    Ready(Loaded),
    /// Enforcing policies (named) that compile in the background and that
    /// the chain cannot run without.
    Waiting(Vec<String>),
    /// Deny everything, for this reason (the operator log's).
    Failed(String),
}

/// The 503 of a request that needs the chain while it is still loading.
fn policies_loading() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "policies_loading",
        "the server is still compiling its policies; retry shortly",
    )
}

/// The server's view of the installed policies.
pub struct PolicyRegistry {
    host: Arc<PolicyHost>,
    config: PolicyConfig,
    /// Signatures and metadata of components.
    supply: Arc<signing::SupplyChain>,
    /// `Err` holds why the installed set could not be loaded (deny all).
    state: RwLock<Result<Loaded, String>>,
    /// `[policy.config.*]`: from the config at start, replaced by
    /// [`Self::reconfigure`] (SIGHUP) without a restart.
    plugin_configs: RwLock<PluginConfigs>,
    /// Compiled components by `name:sha256`: those the installed set
    /// names, and nothing else ([`loading`]).
    compiled: loading::Compiled,
    /// Loading, ready or broken; requests waiting for the load watch it.
    phase: tokio::sync::watch::Sender<Phase>,
    /// This registry, for the compile tasks it starts.
    me: std::sync::Weak<PolicyRegistry>,
    /// Serializes reloads.
    reload: tokio::sync::Mutex<()>,
    /// Bounds concurrent evaluations to what the instance pool holds, so
    /// load queues instead of failing instantiation.
    slots: tokio::sync::Semaphore,
    /// The threads chain evaluations run on (`Err`: they could not start;
    /// every decision denies).
    pool: Result<modelvault_policy::EvaluationPool, String>,
    /// One permit per evaluation thread: decisions beyond that wait here,
    /// asynchronously, and never hold a thread that serves requests.
    evaluation_slots: Arc<tokio::sync::Semaphore>,
    /// Each plugin's circuit.
    breakers: Arc<modelvault_policy::Breakers>,
    /// Shadow policies' live record since this server started, by (name,
    /// component SHA-256): (decisions, decisions it would have flipped).
    shadow_stats: Arc<std::sync::Mutex<ShadowStats>>,
    /// Where circuit changes go (set by [`Self::attach_monitoring`]).
    monitoring: std::sync::OnceLock<Monitoring>,
}

/// Metrics and alerts, for the evaluation threads.
#[derive(Clone)]
struct Monitoring {
    metrics: Arc<crate::metrics::Metrics>,
    alerts: Arc<crate::alerts::Alerts>,
}

impl std::fmt::Debug for PolicyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRegistry").finish_non_exhaustive()
    }
}

fn lock_err() -> ApiError {
    ApiError::internal("policy registry lock poisoned")
}

/// Policy names follow model-name rules.
pub fn validate_policy_name(name: &str) -> Result<(), ApiError> {
    modelvault_storage::names::validate_name("policy", name).map_err(ApiError::from)
}

impl PolicyRegistry {
    /// A registry with nothing loaded yet (deny all until [`Self::reload`]).
    pub fn new(host: Arc<PolicyHost>, config: PolicyConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            host,
            supply: Arc::new(signing::SupplyChain::new(&config)),
            state: RwLock::new(Err("policies not loaded yet".into())),
            plugin_configs: RwLock::new(config.config.clone()),
            compiled: loading::Compiled::default(),
            phase: tokio::sync::watch::Sender::new(Phase::Loading),
            me: me.clone(),
            reload: tokio::sync::Mutex::new(()),
            slots: tokio::sync::Semaphore::new(config.limits.pool_instances.max(1) as usize),
            pool: evaluation_pool(&config),
            evaluation_slots: Arc::new(tokio::sync::Semaphore::new(
                evaluation_threads(&config).max(1),
            )),
            breakers: Arc::new(modelvault_policy::Breakers::new(
                config.circuit_breaker.clone(),
            )),
            monitoring: std::sync::OnceLock::new(),
            shadow_stats: Arc::default(),
            config,
        })
    }

    /// Sends circuit changes to `metrics` and `alerts` (once, at start).
    pub fn attach_monitoring(
        &self,
        metrics: Arc<crate::metrics::Metrics>,
        alerts: Arc<crate::alerts::Alerts>,
    ) {
        let _ = self.monitoring.set(Monitoring { metrics, alerts });
    }

    /// The state of a plugin revision's circuit.
    pub fn circuit_state(
        &self,
        plugin: &str,
        sha256: &str,
    ) -> modelvault_policy::breaker::CircuitState {
        self.breakers.state(plugin, sha256)
    }

    /// The policy host.
    pub fn host(&self) -> &Arc<PolicyHost> {
        &self.host
    }

    pub(crate) fn plugin_config(&self, name: &str) -> Vec<(String, String)> {
        match self.plugin_configs.read() {
            Ok(c) => pairs(c.get(name)),
            // Poisoned (a panic while replacing it): the start-up config.
            Err(p) => pairs(p.get_ref().get(name)),
        }
    }

    /// A compiled revision of `record`, or why there is none yet: one not
    /// compiled is compiled in the background ([`loading`]).
    fn compiled_for(&self, store: &Store, record: &PolicyRecord) -> loading::Lookup {
        let key = loading::key(&record.name, &record.sha256);
        let (lookup, start) = self.compiled.lookup_or_start(&key);
        if start {
            self.spawn_compile(store.clone(), record.clone(), key);
        }
        lookup
    }

    /// Compiles `record`'s component on a task of its own, then reloads.
    fn spawn_compile(&self, store: Store, record: PolicyRecord, key: String) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = me.compile_record(&store, &record).await;
            match &result {
                Ok(_) => tracing::info!(
                    policy = %record.name,
                    sha256 = %record.sha256,
                    millis = started.elapsed().as_millis() as u64,
                    "policy compiled"
                ),
                // A compile error can quote the component: one line.
                Err(f) => tracing::error!(
                    policy = %record.name,
                    sha256 = %record.sha256,
                    mode = ?record.mode,
                    error = %modelvault_policy::text::escape_unsafe(&f.error),
                    "cannot compile an installed policy"
                ),
            }
            me.compiled.finish(&key, result);
            me.reload(&store).await;
        });
    }

    async fn compile_record(
        &self,
        store: &Store,
        record: &PolicyRecord,
    ) -> Result<Arc<CompiledPolicy>, loading::Failure> {
        let unavailable = |error: String| loading::Failure {
            error,
            retry_after: Some(loading::RETRY_UNAVAILABLE),
        };
        let bytes = store
            .policy_component(&record.sha256)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or_else(|| {
                unavailable(format!("component of policy {} is missing", record.name))
            })?;
        let actual = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        if actual != record.sha256 {
            return Err(loading::Failure {
                error: format!(
                    "component of policy {} does not match its recorded hash",
                    record.name
                ),
                retry_after: None,
            });
        }
        let host = self.host.clone();
        let name = record.name.clone();
        let compiled = tokio::task::spawn_blocking(move || host.compile(&name, &bytes))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        compiled.map(Arc::new).map_err(|e| loading::Failure {
            retry_after: matches!(
                e,
                modelvault_policy::PolicyError::CompileTimeout { .. }
                    | modelvault_policy::PolicyError::CompileBusy { .. }
            )
            .then_some(loading::RETRY_SLOW),
            error: format!("policy {}: {e}", record.name),
        })
    }

    /// Where this server stands with its installed set.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// For a request that needs the chain: while the server is still
    /// compiling its enforcing policies after a start, waits up to
    /// `policy.load_wait_ms`, then a 503 `policies_loading`. Ready or
    /// broken: at once (a broken set denies in [`Self::decide`]).
    pub async fn wait_ready(&self) -> Result<(), ApiError> {
        if self.phase() != Phase::Loading {
            return Ok(());
        }
        let mut phase = self.phase.subscribe();
        let wait = std::time::Duration::from_millis(self.config.load_wait_ms);
        match tokio::time::timeout(wait, phase.wait_for(|p| *p != Phase::Loading)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(policies_loading()),
        }
    }

    /// Reloads the installed set from the store. Never waits for a compile
    /// (components not compiled yet compile in the background, then reload
    /// again), and drops the compiled components the set no longer names.
    pub async fn reload(&self, store: &Store) {
        let _guard = self.reload.lock().await;
        let phase = self.phase();
        let (load, live) = self.load(store, phase).await;
        let next = match load {
            Load::Ready(l) => {
                if let Ok(mut s) = self.state.write() {
                    *s = Ok(l);
                }
                Phase::Ready
            }
            Load::Waiting(names) => {
                tracing::info!(policies = %names.join(", "), "waiting for enforcing policies to compile");
                // A ready server keeps deciding as it did.
                if phase != Phase::Ready
                    && let Ok(mut s) = self.state.write()
                {
                    *s = Err(format!("waiting for {} to compile", names.join(", ")));
                }
                phase
            }
            Load::Failed(e) => {
                // A compile error can quote the component: one line in the log.
                tracing::error!(error = %modelvault_policy::text::escape_unsafe(&e), "cannot load installed policies; denying every request until this is fixed");
                if let Ok(mut s) = self.state.write() {
                    *s = Err(e);
                }
                Phase::Broken
            }
        };
        self.phase.send_if_modified(|p| {
            let changed = *p != next;
            *p = next;
            changed
        });
        if let Some(mut keep) = live {
            // What the chain runs stays too (a previous revision deciding
            // while its successor compiles).
            if let Ok(s) = self.state.read()
                && let Ok(l) = &*s
            {
                keep.extend(
                    l.chain
                        .iter()
                        .map(|e| loading::key(&e.policy.name, &e.policy.sha256)),
                );
            }
            if self.compiled.retain(&keep) > 0 {
                modelvault_policy::release_freed_memory();
            }
        }
        if let Some(m) = self.monitoring.get() {
            let (held, compiling) = self.compiled.counts();
            m.metrics
                .policy_components_compiled
                .set(i64::try_from(held).unwrap_or(i64::MAX));
            m.metrics
                .policy_components_compiling
                .set(i64::try_from(compiling).unwrap_or(i64::MAX));
        }
    }

    /// The installed set as it can be run now, and the keys of every
    /// installed component (`None` when the records could not be read).
    async fn load(&self, store: &Store, phase: Phase) -> (Load, Option<HashSet<String>>) {
        let records = match self.read_records(store).await {
            Ok(r) => r,
            Err(e) => return (Load::Failed(e), None),
        };
        let live = records
            .iter()
            .map(|r| loading::key(&r.name, &r.sha256))
            .collect();
        (self.assemble(store, records, phase), Some(live))
    }

    /// Refuses to install a new policy beyond `policy.max_policies` (a new
    /// revision of an installed one is fine).
    async fn check_room_for(&self, store: &Store, name: &str) -> Result<(), ApiError> {
        let mut installed = 0usize;
        for other in store.policy_names().await? {
            if other == name {
                continue;
            }
            let live = store
                .policy(&other)
                .latest::<PolicyRecord>()
                .await?
                .is_some_and(|(_, r)| !r.removed);
            installed += usize::from(live);
        }
        if installed >= self.config.max_policies {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "too_many_policies",
                format!(
                    "{installed} policies are installed, the most policy.max_policies allows; remove one first"
                ),
            ));
        }
        Ok(())
    }

    /// The installed (not removed) policies' records, checked.
    async fn read_records(&self, store: &Store) -> Result<Vec<PolicyRecord>, String> {
        let mut names = store.policy_names().await.map_err(|e| e.to_string())?;
        names.sort();
        let mut records = Vec::new();
        for name in names {
            let (seq, record) = store
                .policy(&name)
                .latest::<PolicyRecord>()
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("policy {name} has no records"))?;
            if record.name != name || record.seq != seq {
                return Err(format!("policy record of {name} names another policy"));
            }
            if record.removed {
                continue;
            }
            self.supply.check_installed(&record)?;
            records.push(record);
        }
        if records.len() > self.config.max_policies {
            return Err(format!(
                "{} policies are installed, more than policy.max_policies ({})",
                records.len(),
                self.config.max_policies
            ));
        }
        Ok(records)
    }

    /// The chain of `records` with what is compiled ([`loading`] says what
    /// stands in for what is not yet).
    fn assemble(&self, store: &Store, records: Vec<PolicyRecord>, phase: Phase) -> Load {
        let previous: HashMap<String, ChainEntry> = match self.state.read() {
            Ok(s) => match &*s {
                Ok(l) => l
                    .chain
                    .iter()
                    .map(|e| (e.policy.name.clone(), e.clone()))
                    .collect(),
                Err(_) => HashMap::new(),
            },
            Err(_) => HashMap::new(),
        };
        let mut chain = Vec::new();
        let mut waiting = Vec::new();
        for record in &records {
            let shadow = record.mode == PolicyMode::Shadow;
            let policy = match self.compiled_for(store, record) {
                loading::Lookup::Ready(c) => c,
                // Logged when it failed; a shadow policy never decides.
                loading::Lookup::Failed(_) if shadow => continue,
                loading::Lookup::Failed(e) => return Load::Failed(e),
                loading::Lookup::Compiling => match previous.get(&record.name) {
                    Some(old) => old.policy.clone(),
                    None if shadow => continue,
                    None => {
                        if phase != Phase::Ready || self.config.required.contains(&record.name) {
                            waiting.push(record.name.clone());
                        }
                        continue;
                    }
                },
            };
            chain.push(ChainEntry {
                policy,
                shadow,
                config: self.plugin_config(&record.name),
            });
        }
        if !waiting.is_empty() {
            return Load::Waiting(waiting);
        }
        // A required policy that is missing or only shadowing breaks the
        // chain: fail closed rather than run without it.
        for required in &self.config.required {
            let enforced = records
                .iter()
                .any(|r| &r.name == required && r.mode == PolicyMode::Enforce);
            if !enforced {
                return Load::Failed(format!(
                    "required policy {required} is not installed in enforce mode"
                ));
            }
        }
        Load::Ready(Loaded {
            chain: Arc::new(chain),
            records,
        })
    }

    /// Installed policies (an error if the set could not be loaded).
    pub fn list(&self) -> Result<Vec<PolicyInfo>, ApiError> {
        if self.phase() == Phase::Loading {
            return Err(policies_loading());
        }
        let s = self.state.read().map_err(|_| lock_err())?;
        match &*s {
            Ok(l) => {
                let stats = self.shadow_stats.lock().map_err(|_| lock_err())?;
                Ok(l.records
                    .iter()
                    .map(|r| {
                        let mut info = PolicyInfo::from(r);
                        if info.mode == PolicyMode::Shadow {
                            let (seen, flips) = stats
                                .get(&(info.name.clone(), info.sha256.clone()))
                                .copied()
                                .unwrap_or_default();
                            info.shadow_decisions = Some(seen);
                            info.shadow_flips = Some(flips);
                        }
                        info
                    })
                    .collect())
            }
            Err(e) => Err(ApiError::internal(format!(
                "installed policies unavailable: {e}"
            ))),
        }
    }

    /// Validates (compile, interface version, capabilities, smoke
    /// evaluation), stores and activates a component.
    pub async fn install(
        &self,
        store: &Store,
        name: &str,
        bytes: Vec<u8>,
        mode: PolicyMode,
        by: &str,
        signature: Option<[u8; modelvault_policy::signing::SIGNATURE_BYTES]>,
    ) -> Result<PolicyInfo, ApiError> {
        validate_policy_name(name)?;
        if mode == PolicyMode::Shadow && self.config.required.iter().any(|r| r == name) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "policy_required",
                format!("policy {name} is required by the server config and must enforce"),
            ));
        }
        // Signature and metadata first: under policy.require_signed an
        // unsigned component is never compiled.
        let (bytes, provenance) = signing::inspect(&self.supply, bytes, signature).await?;
        self.check_room_for(store, name).await?;
        let (bytes, compiled) = self.validated(name, bytes).await?;
        let sha256 = compiled.sha256.clone();
        let size = bytes.len() as u64;
        store.put_policy_component(&sha256, bytes).await?;
        // Held (not dropped by a concurrent reload) until this install's
        // reload has put it in the chain.
        let _pin = self
            .compiled
            .insert_pinned(&loading::key(name, &sha256), Arc::new(compiled));
        let now = Utc::now();
        let (_, record) = store
            .policy(name)
            .append(|seq| PolicyRecord {
                name: name.into(),
                seq,
                sha256: sha256.clone(),
                size,
                mode,
                installed_by: by.into(),
                installed_at: now,
                removed: false,
                signed_by: provenance.signed_by.clone(),
                signature: provenance.signature.clone(),
                metadata: provenance.metadata.clone(),
            })
            .await?;
        tracing::info!(policy = name, sha256 = %sha256, mode = ?mode, by, signed_by = provenance.signed_by.as_deref().unwrap_or("-"), "policy installed");
        self.reload(store).await;
        Ok(PolicyInfo::from(&record))
    }

    /// Compiles and smoke-evaluates a component as it would run as `name`
    /// (with `name`'s configuration).
    async fn validated(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(Vec<u8>, modelvault_policy::CompiledPolicy), ApiError> {
        let host = self.host.clone();
        let n = name.to_string();
        // Smoke-evaluated with the configuration it will run with.
        let config = self.plugin_config(name);
        // The smoke evaluation takes an instance from the pool too.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ApiError::internal("evaluation slots closed"))?;
        let (bytes, validated) = tokio::task::spawn_blocking(move || {
            let r = host.validate_with_config(&n, &bytes, &config);
            (bytes, r)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let compiled = validated.map_err(|e| match e {
            // Not the component's fault: the compile slots are taken.
            modelvault_policy::PolicyError::CompileBusy { .. } => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "policy_compile_busy",
                e.to_string(),
            ),
            _ => ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                e.to_string(),
            ),
        })?;
        Ok((bytes, compiled))
    }

    /// A candidate for `name`, validated as an install would validate it
    /// (signature under `policy.require_signed`, compile, smoke evaluation
    /// with `name`'s configuration) but neither stored nor put in the chain.
    pub async fn candidate(
        &self,
        name: &str,
        bytes: Vec<u8>,
        signature: Option<[u8; modelvault_policy::signing::SIGNATURE_BYTES]>,
    ) -> Result<ChainEntry, ApiError> {
        validate_policy_name(name)?;
        let (bytes, _) = signing::inspect(&self.supply, bytes, signature).await?;
        let (_, compiled) = self.validated(name, bytes).await?;
        Ok(ChainEntry {
            policy: Arc::new(compiled),
            shadow: false,
            config: self.plugin_config(name),
        })
    }

    /// The chain's decision on `request`, and what it would be with
    /// `candidate` in place of the plugin of its name (added if none).
    pub async fn decide_with(
        &self,
        request: PolicyRequest,
        candidate: &ChainEntry,
    ) -> (ChainDecision, ChainDecision) {
        let now = self.decide(request.clone()).await;
        let host = self.host.clone();
        let entry = candidate.clone();
        let Ok(_slot) = self.slots.acquire().await else {
            let b = broken("evaluation slots closed".into());
            return (now, b);
        };
        let fresh = tokio::task::spawn_blocking(move || {
            host.evaluate(&entry.policy, &request, &entry.config)
        })
        .await;
        let then = match fresh {
            Ok(r) => modelvault_policy::replay::substitute(&now.results, r).0,
            Err(e) => broken(e.to_string()),
        };
        (now, then)
    }

    /// Removes a policy (a removal record; the history stays).
    pub async fn remove(&self, store: &Store, name: &str, by: &str) -> Result<(), ApiError> {
        validate_policy_name(name)?;
        if self.config.required.iter().any(|r| r == name) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "policy_required",
                format!("policy {name} is required by the server config and cannot be removed"),
            ));
        }
        let Some((_, current)) = store
            .policy(name)
            .latest::<PolicyRecord>()
            .await?
            .filter(|(_, r)| !r.removed)
        else {
            return Err(ApiError::not_found(format!("policy {name} not found")));
        };
        let now = Utc::now();
        store
            .policy(name)
            .append(|seq| PolicyRecord {
                seq,
                installed_by: by.into(),
                installed_at: now,
                removed: true,
                ..current.clone()
            })
            .await?;
        tracing::info!(policy = name, by, "policy removed");
        self.reload(store).await;
        Ok(())
    }

    /// Runs the chain on a blocking thread. A broken registry denies.
    pub async fn decide(&self, request: PolicyRequest) -> ChainDecision {
        let chain = match self.state.read() {
            Ok(s) => match &*s {
                Ok(l) => Ok(l.chain.clone()),
                Err(e) => Err(e.clone()),
            },
            Err(_) => Err("policy registry lock poisoned".into()),
        };
        let chain = match chain {
            Ok(c) => c,
            Err(e) => return broken(e),
        };
        let pool = match &self.pool {
            Ok(p) => p,
            Err(e) => return broken(e.clone()),
        };
        let monitoring = self.monitoring.get().cloned();
        // At most one evaluation per evaluation thread: the rest wait here,
        // without a thread, so a plugin that burns its whole time limit on
        // every call holds those threads only, never the ones serving
        // requests that need no policy (metadata reads, health checks).
        let waited = std::time::Instant::now();
        let permit = {
            let _waiting = monitoring
                .as_ref()
                .map(|m| Waiting::new(&m.metrics.policy_evaluations_waiting));
            self.evaluation_slots.clone().acquire_owned().await
        };
        if let Some(m) = &monitoring {
            m.metrics
                .policy_evaluation_wait
                .observe(waited.elapsed().as_secs_f64());
        }
        let Ok(permit) = permit else {
            return broken("evaluation slots closed".into());
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return broken("evaluation slots closed".into());
        };
        // Evaluation is synchronous wasm, on the evaluation threads. The
        // permit goes with the job: a caller that goes away does not free
        // its thread before the evaluation ends.
        let host = self.host.clone();
        let breakers = self.breakers.clone();
        let shadow_stats = self.shadow_stats.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _permit = permit;
            let run = host.evaluate_chain_guarded(&chain, &request, &breakers);
            if let Some(m) = &monitoring {
                report_circuits(m, breakers.config(), &run);
            }
            count_shadow(&shadow_stats, &run.decision);
            let _ = tx.send(run.decision);
        });
        if let Err(e) = pool.submit(job) {
            return broken(e.to_string());
        }
        match rx.await {
            Ok(d) => d,
            Err(_) => broken("a policy evaluation ended without a decision".into()),
        }
    }
}

/// Evaluation threads for `config` (never more than the instance pool).
fn evaluation_threads(config: &PolicyConfig) -> usize {
    modelvault_policy::pool::evaluation_threads(config.evaluation_threads)
        .min(config.limits.pool_instances.max(1) as usize)
}

fn evaluation_pool(config: &PolicyConfig) -> Result<modelvault_policy::EvaluationPool, String> {
    let threads = evaluation_threads(config);
    match modelvault_policy::EvaluationPool::new(threads, config.evaluation_nice) {
        Ok(p) => {
            tracing::debug!(
                threads,
                nice = config.evaluation_nice,
                "policy evaluation threads"
            );
            Ok(p)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the policy evaluation threads; denying every policy-checked request");
            Err(e.to_string())
        }
    }
}

/// Counts, for each shadow policy in a decision, whether its answer would
/// have flipped the chain's (a deny where the chain allowed, an allow where
/// it denied; an abstention flips nothing).
fn count_shadow(stats: &std::sync::Mutex<ShadowStats>, d: &ChainDecision) {
    use modelvault_policy::Outcome;
    let shadows = d.results.iter().filter(|r| r.shadow);
    let Ok(mut stats) = stats.lock() else {
        return;
    };
    for r in shadows {
        let flipped = matches!(
            (r.decision.outcome, d.outcome),
            (Outcome::Deny, Outcome::Allow) | (Outcome::Allow, Outcome::Deny)
        );
        let e = stats
            .entry((r.plugin.clone(), r.sha256.clone()))
            .or_default();
        e.0 += 1;
        e.1 += u64::from(flipped);
    }
}

/// Counts a decision waiting for an evaluation thread while it lives.
struct Waiting<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Waiting<'a> {
    fn new(g: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Metrics, log lines and the alert for circuits that changed or
/// short-circuited in one evaluation.
fn report_circuits(
    m: &Monitoring,
    cfg: &modelvault_policy::BreakerConfig,
    run: &modelvault_policy::GuardedChain,
) {
    use crate::metrics::{CircuitLabels, PluginLabels, PluginModeLabels};
    use modelvault_policy::breaker::{CircuitState, Transition};
    let mode = |shadow: bool| if shadow { "shadow" } else { "enforce" };
    for plugin in &run.new_circuits {
        m.metrics
            .policy_circuit_state
            .get_or_create(&PluginLabels {
                plugin: plugin.clone(),
            })
            .set(CircuitState::Closed.as_gauge());
    }
    for (plugin, shadow) in &run.short_circuited {
        m.metrics
            .policy_short_circuits
            .get_or_create(&PluginModeLabels {
                plugin: plugin.clone(),
                mode: mode(*shadow).into(),
            })
            .inc();
    }
    for e in &run.events {
        let to = e.transition.to();
        m.metrics
            .policy_circuit_state
            .get_or_create(&PluginLabels {
                plugin: e.plugin.clone(),
            })
            .set(to.as_gauge());
        m.metrics
            .policy_circuit_transitions
            .get_or_create(&CircuitLabels {
                plugin: e.plugin.clone(),
                state: to.as_str().into(),
            })
            .inc();
        match e.transition {
            Transition::Opened { failures } => {
                tracing::warn!(plugin = %e.plugin, sha256 = %e.sha256, mode = mode(e.shadow), failures, window_secs = cfg.window_secs, cooldown_secs = cfg.cooldown_secs, "policy plugin circuit open: short-circuited");
                m.alerts
                    .policy_circuit_open(&e.plugin, e.shadow, failures, cfg);
            }
            Transition::HalfOpened => {
                tracing::info!(plugin = %e.plugin, mode = mode(e.shadow), "policy plugin circuit half-open: probing");
            }
            Transition::Reopened => {
                tracing::warn!(plugin = %e.plugin, mode = mode(e.shadow), cooldown_secs = cfg.cooldown_secs, "policy plugin probe failed: circuit open again");
            }
            Transition::Closed => {
                tracing::info!(plugin = %e.plugin, mode = mode(e.shadow), "policy plugin probe succeeded: circuit closed");
            }
        }
    }
}

/// A plugin's config as the pairs the WIT takes.
fn pairs(config: Option<&std::collections::BTreeMap<String, String>>) -> Vec<(String, String)> {
    config
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn broken(why: String) -> ChainDecision {
    // The cause is for the operator log, not for the caller.
    tracing::error!(error = %why, "policy chain unavailable; denying");
    ChainDecision {
        outcome: Outcome::Deny,
        plugin: None,
        reason_code: "policy.unavailable".into(),
        reason: "installed policies are unavailable; denying (see the server log)".into(),
        results: Vec::new(),
    }
}

/// Spawns the periodic reload.
pub fn spawn_reloader(registry: Arc<PolicyRegistry>, store: Store, every: std::time::Duration) {
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            registry.reload(&store).await;
        }
    });
}

/// Installs the bundled policies into a fresh store (at `init`).
pub async fn install_bundled(registry: &PolicyRegistry, store: &Store) -> Result<(), ApiError> {
    for b in modelvault_bundled_policies::BUNDLED {
        registry
            .install(
                store,
                b.name,
                b.component.to_vec(),
                PolicyMode::Enforce,
                "init",
                None,
            )
            .await?;
    }
    Ok(())
}
