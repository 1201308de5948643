//! The policy host: sandboxed WebAssembly policy components in wasmtime,
//! and the chain that combines their decisions.
//!
//! Invariants a reader must keep:
//! - a plugin gets no capability: WASI is linked with an empty context (no
//!   preopened directories, environment, arguments or network); its clocks
//!   and randomness are fixed from the request, so decisions reproduce;
//! - every decision runs in a fresh instance (pooling allocator +
//!   `InstancePre`), so nothing survives from one request to the next;
//! - every failure (trap, timeout, memory overrun, malformed result, wrong
//!   interface version) becomes a deny naming the plugin: the chain fails
//!   closed, and with no enforcing plugin installed everything is denied;
//! - all limits live in [`Limits`], with named defaults;
//! - `unsafe` is denied crate-wide and allowed at three marked places only:
//!   the two `Component::deserialize` calls (of bytes authenticated first)
//!   and glibc's `malloc_trim`.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod breaker;
pub mod cases;
mod compile;
pub mod metadata;
pub mod pool;
pub mod replay;
pub mod signing;
pub mod text;
mod trap;
mod types;
mod v0_1_0;
mod v0_2_0;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use serde::Serialize;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

pub use breaker::{BreakerConfig, Breakers, CIRCUIT_OPEN, GuardedChain};
pub use compile::{
    COMPILE_SUBCOMMAND, DEFAULT_COMPILE_TIMEOUT, DEFAULT_MAX_COMPONENT_COMPLEXITY,
    DEFAULT_MAX_FUNCTION_BYTES, DEFAULT_MAX_FUNCTION_COMPLEXITY, DEFAULT_MAX_FUNCTION_LOCALS,
    MAX_CONCURRENT_COMPILES, compile_child_main, compile_out_of_process, release_freed_memory,
};
pub use pool::{EvaluationPool, PoolError};
pub use types::*;

/// Default memory cap per plugin instance (fits a componentize-py policy).
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
/// Default wall-time budget per decision.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest reason a plugin may return.
pub const DEFAULT_MAX_REASON_BYTES: usize = 4096;
/// Longest reason code a plugin may return.
pub const MAX_REASON_CODE_BYTES: usize = 128;
/// Plugin stdout/stderr kept per decision (the rest is dropped).
pub const DEFAULT_MAX_STDIO_BYTES: usize = 16 << 10;
/// Largest component accepted (a Python policy is ~20 MB).
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;
/// WebAssembly stack per instance.
pub const DEFAULT_MAX_WASM_STACK: usize = 1 << 20;
/// Concurrent plugin instances the pool holds.
pub const DEFAULT_POOL_INSTANCES: u32 = 64;
/// The WASI clock interface whose subscriptions are replaced (see
/// [`PolicyHost::new`]); guests importing any 0.2.x version link to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A pollable that is ready at once.
struct Immediate;

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Immediate {
    async fn ready(&mut self) {}
}

fn immediate_pollable(
    state: &mut HostState,
) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
    let r = state.table.push(Immediate)?;
    wasmtime_wasi::p2::subscribe(&mut state.table, r)
}

/// How often the epoch ticks (the timeout's granularity).
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Every bound a plugin runs under, in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall time per decision, in milliseconds.
    pub timeout_ms: u64,
    /// Longest reason, in bytes.
    pub max_reason_bytes: usize,
    /// Captured stdout+stderr per decision, in bytes.
    pub max_stdio_bytes: usize,
    /// Largest component, in bytes.
    pub max_component_bytes: usize,
    /// WebAssembly stack, in bytes.
    pub max_wasm_stack: usize,
    /// Instances the pool can hold at once.
    pub pool_instances: u32,
    /// Wall time a compile may take, in milliseconds (and, again, waiting
    /// for one of the [`MAX_CONCURRENT_COMPILES`] compile slots); a
    /// component that takes longer is refused.
    pub compile_timeout_ms: u64,
    /// Largest function body, in bytes, checked before compiling.
    pub max_function_bytes: usize,
    /// Most locals in one function, checked before compiling.
    pub max_function_locals: u32,
    /// Most locals × control instructions (block, loop, if, else, br,
    /// br_if, br_table, try_table) in one function, checked before
    /// compiling: what makes a compile slow.
    pub max_function_complexity: u64,
    /// The same summed over every function of a component.
    pub max_component_complexity: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
            max_reason_bytes: DEFAULT_MAX_REASON_BYTES,
            max_stdio_bytes: DEFAULT_MAX_STDIO_BYTES,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
            pool_instances: DEFAULT_POOL_INSTANCES,
            compile_timeout_ms: DEFAULT_COMPILE_TIMEOUT.as_millis() as u64,
            max_function_bytes: DEFAULT_MAX_FUNCTION_BYTES,
            max_function_locals: DEFAULT_MAX_FUNCTION_LOCALS,
            max_function_complexity: DEFAULT_MAX_FUNCTION_COMPLEXITY,
            max_component_complexity: DEFAULT_MAX_COMPONENT_COMPLEXITY,
        }
    }
}

/// Errors compiling or loading a component (install-time errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The engine could not be configured.
    #[error("policy engine: {0}")]
    Engine(String),
    /// The component is larger than allowed.
    #[error("component of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// Does not export the interface version this host speaks.
    #[error(
        "component does not export {expected} (exports: {found}); build it against wit/since_v0.2.0 (or wit/since_v0.1.0)"
    )]
    WrongInterface {
        /// What is required.
        expected: &'static str,
        /// What it exports.
        found: String,
    },
    /// Imports something the host does not offer.
    #[error("component imports a capability the host does not offer: {0}")]
    Capability(String),
    /// The smoke evaluation failed.
    #[error("component failed its smoke evaluation: {0}")]
    Smoke(String),
    /// A function exceeds a code bound checked before compiling.
    #[error("component is too costly to compile: {0}")]
    TooComplex(String),
    /// The compile did not finish within its budget.
    #[error(
        "compiling the component took longer than its budget of {limit_ms} ms (policy.limits.compile_timeout_ms); it is refused"
    )]
    CompileTimeout {
        /// The budget.
        limit_ms: u64,
    },
    /// No compile slot came free within the budget.
    #[error(
        "no compile slot came free within {limit_ms} ms: other policy compiles are running; try again"
    )]
    CompileBusy {
        /// The budget.
        limit_ms: u64,
    },
}

struct HostState {
    /// The plugin's WASI context; `None` for a component that imports
    /// nothing (a `no_std` policy), which can never call WASI (building
    /// the context would be a tenth of its decision).
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            // Unreachable for a component without imports; an empty
            // context (no clocks' secrets, no I/O) if it ever were.
            ctx: self
                .wasi
                .get_or_insert_with(|| WasiCtxBuilder::new().build()),
            table: &mut self.table,
        }
    }
}

/// The wall clock a plugin sees: the request's time, frozen.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// The monotonic clock a plugin sees: always zero.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A compiled, linked component, ready to instantiate per decision.
pub struct CompiledPolicy {
    /// Installed name.
    pub name: String,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Component size in bytes.
    pub size: usize,
    pre: Pre,
    /// Whether it imports anything (the host offers only WASI).
    imports_wasi: bool,
    /// Linked in the lean engine ([`PolicyHost`]): it imports nothing.
    lean: bool,
}

/// A linked component of one interface version.
enum Pre {
    V0_1_0(v0_1_0::PolicyPre<HostState>),
    V0_2_0(Pre020),
}

/// A linked 0.2.0 component. Its `evaluate` is called with the request
/// borrowed ([`v0_2_0::view::Request`]), not through the generated bindings
/// (which copy every string of the request on the host first). wasmtime
/// typechecks the view against the export on the component's first
/// instance (`Func::typed`); the type of a linked component's export never
/// changes, so later instances call it by its index without checking again
/// (a fresh decision then skips both the typecheck and the copies).
struct Pre020 {
    pre: v0_2_0::PolicyPre<HostState>,
    /// `modelvault:policy/evaluator@0.2.0#evaluate`, resolved once.
    evaluate: wasmtime::component::ComponentExportIndex,
    /// Set once the export passed the typecheck on an instance.
    checked: Arc<AtomicBool>,
}

impl Pre020 {
    fn new(pre: v0_2_0::PolicyPre<HostState>) -> Result<Self, String> {
        let component = pre.instance_pre().component();
        let evaluate = component
            .get_export_index(None, v0_2_0::EXPORT)
            .and_then(|i| component.get_export_index(Some(&i), "evaluate"))
            .ok_or_else(|| format!("no evaluate function in {}", v0_2_0::EXPORT))?;
        Ok(Self {
            pre,
            evaluate,
            checked: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// An instance of one interface version.
enum Instance {
    V0_1_0(v0_1_0::Policy),
    /// A 0.2.0 instance's `evaluate`, and whether its type was checked
    /// ([`Pre020`]).
    V0_2_0 {
        evaluate: wasmtime::component::Func,
        checked: Arc<AtomicBool>,
    },
}

/// The interface versions this host runs, newest first.
pub const INTERFACES: [&str; 2] = [v0_2_0::EXPORT, v0_1_0::EXPORT];

impl Pre {
    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Self::V0_1_0(p) => Instance::V0_1_0(p.instantiate(store)?),
            Self::V0_2_0(p) => {
                let instance = p.pre.instance_pre().instantiate(&mut *store)?;
                let evaluate = instance
                    .get_func(&mut *store, p.evaluate)
                    .ok_or_else(|| wasmtime::Error::msg("the evaluate export is missing"))?;
                Instance::V0_2_0 {
                    evaluate,
                    checked: p.checked.clone(),
                }
            }
        })
    }
}

/// The parameters and results of a 0.2.0 `evaluate`, as the host lowers
/// and lifts them.
type Evaluate020<'a, 'b, 'c> = wasmtime::component::TypedFunc<
    (&'a v0_2_0::view::Request<'b>, &'c [(String, String)]),
    (v0_2_0::exports::modelvault::policy::evaluator::Decision,),
>;

impl Instance {
    /// One `evaluate` call, the request converted to the instance's version.
    fn evaluate(
        &self,
        store: &mut Store<HostState>,
        req: &PolicyRequest,
        config: &[(String, String)],
    ) -> wasmtime::Result<PolicyDecision> {
        match self {
            Self::V0_1_0(i) => {
                let r = v0_1_0::exports::modelvault::policy::evaluator::Request::from(req);
                i.modelvault_policy_evaluator()
                    .call_evaluate(store, &r, config)
                    .map(PolicyDecision::from)
            }
            Self::V0_2_0 { evaluate, checked } => {
                let view = v0_2_0::view::Request::of(req);
                let typed: Evaluate020<'_, '_, '_> = if checked.load(Ordering::Acquire) {
                    // SAFETY: `evaluate` is the `evaluate` export of an
                    // instance of a linked component whose export passed
                    // `Func::typed` against exactly these Rust types on an
                    // earlier instance (`checked` is set only then, below);
                    // the same export of the same component has the same
                    // type. This is the call `Func::typed` itself returns
                    // after its check.
                    #[allow(unsafe_code)]
                    unsafe {
                        wasmtime::component::TypedFunc::new_unchecked(*evaluate)
                    }
                } else {
                    let typed = evaluate.typed(&*store)?;
                    checked.store(true, Ordering::Release);
                    typed
                };
                typed
                    .call(store, (&view, config))
                    .map(|(d,)| PolicyDecision::from(d))
            }
        }
    }
}

impl CompiledPolicy {
    /// Whether it runs in the lean engine ([`PolicyHost`]): it imports
    /// nothing.
    pub fn runs_lean(&self) -> bool {
        self.lean
    }

    /// The interface export it provides (`modelvault:policy/evaluator@X`).
    pub fn interface(&self) -> &'static str {
        match self.pre {
            Pre::V0_1_0(_) => v0_1_0::EXPORT,
            Pre::V0_2_0(_) => v0_2_0::EXPORT,
        }
    }
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// What one plugin said about one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginResult {
    /// Plugin name.
    pub plugin: String,
    /// Hex SHA-256 of its component.
    pub sha256: String,
    /// Shadow plugins are recorded but do not decide.
    pub shadow: bool,
    /// Its decision (a deny when it failed).
    pub decision: PolicyDecision,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time taken, in microseconds.
    pub micros: u64,
}

/// The chain's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainDecision {
    /// Allow or deny (never abstain).
    pub outcome: Outcome,
    /// The plugin whose decision settled it, if any.
    pub plugin: Option<String>,
    /// The deciding reason code.
    pub reason_code: String,
    /// The deciding reason.
    pub reason: String,
    /// Every plugin's result, in evaluation order.
    pub results: Vec<PluginResult>,
}

/// An installed plugin as the chain uses it.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// The compiled component.
    pub policy: Arc<CompiledPolicy>,
    /// Shadow mode: evaluated and recorded, never deciding.
    pub shadow: bool,
    /// Its configuration pairs.
    pub config: Vec<(String, String)>,
}

/// The wasmtime engines, linkers and limits; one per server.
///
/// Two engines of one configuration but for how a released instance's
/// memory is reset: components that import nothing (the lean SDK's
/// builds, a page or two of memory) run in the lean engine, which resets
/// that memory by copying it back (cheaper than asking the kernel which
/// pages were written: `pagemap_scan` costs about 1.5 µs a decision
/// whatever the memory's size); the rest (std and WASI guests, CPython or
/// JavaScript components with megabytes of memory) run in the main one,
/// where resetting only the written pages is what saves time. Both engines
/// run under the same limits and epoch ticker; the isolation rule (a fresh
/// instance per decision) is the same in both.
pub struct PolicyHost {
    engine: Engine,
    linker: Linker<HostState>,
    lean_engine: Engine,
    lean_linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    /// Authenticates compiled components in `cache_dir` (keyed BLAKE3).
    /// Without it, cached files are never read: a compiled component is
    /// native code, and whoever can write the cache directory must not be
    /// able to choose what the server runs.
    cache_key: Option<zeroize::Zeroizing<[u8; 32]>>,
    stop: Arc<AtomicBool>,
    compile_slots: Arc<compile::CompileSlots>,
}

impl Drop for PolicyHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHost")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

pub(crate) fn engine_config(limits: &Limits) -> Config {
    engine_config_with(limits, Enabled::Auto)
}

/// The lean engine's configuration ([`PolicyHost`]): the same, but a
/// released memory is reset by copying rather than by a `pagemap_scan`.
fn lean_engine_config(limits: &Limits) -> Config {
    engine_config_with(limits, Enabled::No)
}

fn engine_config_with(limits: &Limits, pagemap_scan: Enabled) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let n = limits.pool_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n * 4)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(16)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        .table_elements(100_000)
        .max_memory_size(limits.memory_bytes)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(16 << 10)
        .pagemap_scan(pagemap_scan);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(limits.max_wasm_stack)
        .memory_reservation(limits.memory_bytes as u64)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        // Policies are called synchronously: the component-model async
        // machinery only costs time per call and per instance.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn deny_for(plugin: &str, code: &str, reason: String) -> PolicyDecision {
    PolicyDecision {
        outcome: Outcome::Deny,
        reason_code: code.into(),
        reason: format!("plugin {plugin}: {reason}"),
    }
}

impl PolicyHost {
    /// A host with `limits`; compiled components are cached under
    /// `cache_dir` (by content hash and engine build) when given.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let engine = Engine::new(&engine_config(&limits))
            .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        // A WASI sleep would wait in the host, out of the epoch deadline's
        // reach: replace the clock's subscriptions with ones that are ready
        // at once, so a sleeping plugin spins in wasm and times out.
        linker.allow_shadowing(true);
        {
            let engine_err = |e: wasmtime::Error| PolicyError::Engine(format!("{e:#}"));
            let mut clock = linker.instance(MONOTONIC_CLOCK).map_err(engine_err)?;
            clock
                .func_wrap("subscribe-duration", |mut store, (_d,): (u64,)| {
                    immediate_pollable(store.data_mut()).map(|p| (p,))
                })
                .map_err(engine_err)?;
            clock
                .func_wrap("subscribe-instant", |mut store, (_t,): (u64,)| {
                    immediate_pollable(store.data_mut()).map(|p| (p,))
                })
                .map_err(engine_err)?;
        }
        linker.allow_shadowing(false);
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| PolicyError::Engine(format!("cache dir {}: {e}", dir.display())))?;
        }
        let lean_engine = Engine::new(&lean_engine_config(&limits))
            .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let lean_linker = Linker::new(&lean_engine);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engines = [engine.clone(), lean_engine.clone()];
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &ticker_engines {
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| PolicyError::Engine(format!("epoch thread: {e}")))?;
        Ok(Self {
            engine,
            linker,
            lean_engine,
            lean_linker,
            limits,
            cache_dir,
            cache_key: None,
            stop,
            compile_slots: compile::CompileSlots::new(MAX_CONCURRENT_COMPILES),
        })
    }

    /// Sets the key that authenticates compiled components in the cache
    /// directory. The server derives it from its key provider (a record MAC
    /// over a fixed label), so it is the same on every server sharing the
    /// provider and unknown to anyone who can only write the cache
    /// directory or the bucket. Without a key the cache is write-only:
    /// every start compiles afresh.
    pub fn with_cache_key(mut self, key: [u8; 32]) -> Self {
        self.cache_key = Some(zeroize::Zeroizing::new(key));
        self
    }

    /// The tag of a compiled component stored as `name` in the cache.
    fn cache_tag(&self, name: &str, artifact: &[u8]) -> Option<blake3::Hash> {
        let key = self.cache_key.as_ref()?;
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&(name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update(artifact);
        Some(h.finalize())
    }

    /// A cached compiled component, if its tag verifies. Read whole into
    /// memory and checked there, so the bytes that are deserialized are the
    /// bytes that were authenticated.
    fn cached_component(&self, path: &std::path::Path, name: &str) -> Option<Component> {
        let tag_path = path.with_extension("cwasm.tag");
        let (Ok(artifact), Ok(tag_hex)) = (std::fs::read(path), std::fs::read_to_string(&tag_path))
        else {
            return None;
        };
        let expected = blake3::Hash::from_hex(tag_hex.trim()).ok()?;
        // blake3::Hash compares in constant time.
        if self.cache_tag(name, &artifact)? != expected {
            tracing::warn!(path = %path.display(), "a compiled policy in the cache failed authentication; compiling afresh");
            return None;
        }
        // SAFETY: `artifact` was produced by `Component::serialize` of an
        // engine with this configuration (the name carries the content hash
        // and the engine compatibility hash) and authenticated just above
        // with a key only this server's key provider yields.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize(&self.engine, &artifact) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled policy");
                None
            }
        }
    }

    /// Stores a compiled component and its tag in the cache (best effort).
    fn store_in_cache(&self, path: &std::path::Path, name: &str, artifact: &[u8]) {
        let Some(tag) = self.cache_tag(name, artifact) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let tag_path = path.with_extension("cwasm.tag");
        let stored = std::fs::write(&tmp, artifact)
            .and_then(|()| std::fs::rename(&tmp, path))
            .and_then(|()| std::fs::write(&tag_path, tag.to_hex().as_bytes()));
        if stored.is_err() {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), "could not cache a compiled policy");
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn cache_key(&self, sha256: &str) -> String {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{sha256}-wasmtime48-{:016x}.cwasm", h.finish())
    }

    /// Compiles on a thread of its own under `limits.compile_timeout_ms`.
    fn compile_component(&self, bytes: &[u8]) -> Result<Component, PolicyError> {
        compile::compile_bounded(
            &self.engine,
            bytes,
            &self.compile_slots,
            Duration::from_millis(self.limits.compile_timeout_ms.max(1)),
        )
    }

    fn load_component(&self, bytes: &[u8], sha256: &str) -> Result<Component, PolicyError> {
        let Some(dir) = &self.cache_dir else {
            return self.compile_component(bytes);
        };
        let name = self.cache_key(sha256);
        let path = dir.join(&name);
        if let Some(c) = self.cached_component(&path, &name) {
            return Ok(c);
        }
        if let Some(exe) = compile::compiler_executable() {
            let budget = Duration::from_millis(self.limits.compile_timeout_ms.max(1));
            // The child's output, checked against the digest it reported on
            // its stdout (a pipe no one else writes), in memory.
            let artifact = compile::compile_in_child(
                exe,
                &self.limits,
                bytes,
                &path,
                &self.compile_slots,
                budget,
            )?;
            // SAFETY: produced just now by `Component::serialize` in a child
            // process of this executable, for an engine of this config, and
            // checked against the digest the child reported.
            #[allow(unsafe_code)]
            let component = unsafe { Component::deserialize(&self.engine, &artifact) }
                .map_err(|e| PolicyError::Engine(format!("loading a compiled policy: {e:#}")))?;
            self.store_in_cache(&path, &name, &artifact);
            return Ok(component);
        }
        let component = self.compile_component(bytes)?;
        match component.serialize() {
            Ok(serialized) => self.store_in_cache(&path, &name, &serialized),
            Err(e) => tracing::warn!(error = %e, "could not serialize a compiled policy"),
        }
        Ok(component)
    }

    /// Compiles (or loads from the cache) and links a component, checking
    /// that it exports the interface version this host speaks and imports
    /// nothing the host does not offer. Its code is checked against the
    /// code bounds of [`Limits`] first, and the compile runs under
    /// `compile_timeout_ms` (see [`MAX_CONCURRENT_COMPILES`]).
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<CompiledPolicy, PolicyError> {
        if bytes.len() > self.limits.max_component_bytes {
            return Err(PolicyError::TooLarge {
                size: bytes.len(),
                limit: self.limits.max_component_bytes,
            });
        }
        compile::check_code(bytes, &self.limits)?;
        let sha256 = sha256_hex(bytes);
        let component = self.load_component(bytes, &sha256)?;
        let ty = component.component_type();
        let imports_wasi = ty.imports(&self.engine).next().is_some();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let Some(version) = INTERFACES
            .iter()
            .find(|want| exports.iter().any(|e| e == *want))
            .copied()
        else {
            return Err(PolicyError::WrongInterface {
                expected: "modelvault:policy/evaluator@0.2.0 or @0.1.0",
                found: if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                },
            });
        };
        // A component that imports nothing runs in the lean engine: the
        // same compiled code, loaded there from its serialized form.
        let lean_component = if imports_wasi {
            None
        } else {
            self.in_lean_engine(&component)
        };
        let lean = lean_component.is_some();
        let linked = match &lean_component {
            Some(c) => self.lean_linker.instantiate_pre(c),
            None => self.linker.instantiate_pre(&component),
        }
        .map_err(|e| PolicyError::Capability(format!("{e:#}")))?;
        let mismatched = |e: wasmtime::Error| PolicyError::WrongInterface {
            expected: version,
            found: format!("a mismatched {version}: {e:#}"),
        };
        let pre = if version == v0_2_0::EXPORT {
            let pre = v0_2_0::PolicyPre::new(linked).map_err(mismatched)?;
            Pre::V0_2_0(Pre020::new(pre).map_err(|e| PolicyError::WrongInterface {
                expected: version,
                found: format!("a mismatched {version}: {e}"),
            })?)
        } else {
            Pre::V0_1_0(v0_1_0::PolicyPre::new(linked).map_err(mismatched)?)
        };
        Ok(CompiledPolicy {
            name: name.into(),
            sha256,
            size: bytes.len(),
            pre,
            imports_wasi,
            lean,
        })
    }

    /// `component` loaded in the lean engine; `None` (the main engine
    /// runs it) if that fails.
    fn in_lean_engine(&self, component: &Component) -> Option<Component> {
        let artifact = match component.serialize() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "policy stays in the main engine");
                return None;
            }
        };
        // SAFETY: `artifact` was produced just now, in this process, by
        // `Component::serialize` of the main engine, whose configuration
        // the lean engine shares but for how memory is reset at run time
        // (a setting of the instance allocator, not of compiled code);
        // `deserialize` checks the compatibility of the two and refuses
        // otherwise.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize(&self.lean_engine, &artifact) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "policy stays in the main engine");
                None
            }
        }
    }

    /// The engine `policy` was linked in.
    fn engine_of(&self, policy: &CompiledPolicy) -> &Engine {
        if policy.lean {
            &self.lean_engine
        } else {
            &self.engine
        }
    }

    /// Compiles, then runs the smoke evaluations ([`Self::smoke`]) with an
    /// empty config.
    pub fn validate(&self, name: &str, bytes: &[u8]) -> Result<CompiledPolicy, PolicyError> {
        self.validate_with_config(name, bytes, &[])
    }

    /// Compiles, then runs the smoke evaluations with `config`, the
    /// configuration the plugin will run with: what install validation does.
    pub fn validate_with_config(
        &self,
        name: &str,
        bytes: &[u8],
        config: &[(String, String)],
    ) -> Result<CompiledPolicy, PolicyError> {
        let compiled = self.compile(name, bytes)?;
        self.smoke(&compiled, config)?;
        Ok(compiled)
    }

    /// Evaluates a sample request for every action ([`PolicyRequest::sample_for`])
    /// with `config`; any failure (a trap, a timeout, a result the host
    /// cannot take, e.g. a value of the wrong type from a dynamically typed
    /// guest) refuses the plugin, naming the action. Any outcome is fine.
    pub fn smoke(
        &self,
        policy: &CompiledPolicy,
        config: &[(String, String)],
    ) -> Result<(), PolicyError> {
        for action in PolicyAction::ALL {
            let r = self.evaluate(policy, &PolicyRequest::sample_for(action), config);
            if let Some(e) = r.error {
                return Err(PolicyError::Smoke(format!(
                    "on the sample {} request: {e}",
                    action.as_str()
                )));
            }
        }
        Ok(())
    }

    fn wasi_for(&self, req: &PolicyRequest, stdout: &MemoryOutputPipe) -> WasiCtx {
        let time = chrono::DateTime::parse_from_rfc3339(&req.context.time)
            .map(|t| Duration::from_secs(t.timestamp().max(0) as u64))
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, req.context.request_id.as_bytes());
        let mut seed = [0u8; 32];
        seed.copy_from_slice(digest.as_ref());
        let mut seed128 = [0u8; 16];
        seed128.copy_from_slice(&digest.as_ref()[..16]);
        WasiCtxBuilder::new()
            .wall_clock(FrozenWallClock(time))
            .monotonic_clock(FrozenMonotonicClock)
            .secure_random(rand::rngs::StdRng::from_seed(seed))
            .insecure_random(rand::rngs::StdRng::from_seed(seed))
            .insecure_random_seed(u128::from_le_bytes(seed128))
            .stdout(stdout.clone())
            .stderr(stdout.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build()
    }

    /// Runs one plugin on one request in a fresh instance. Never fails: a
    /// failure is a deny decision naming the plugin, with `error` set.
    pub fn evaluate(
        &self,
        policy: &CompiledPolicy,
        req: &PolicyRequest,
        config: &[(String, String)],
    ) -> PluginResult {
        let started = Instant::now();
        let stdio = policy
            .imports_wasi
            .then(|| MemoryOutputPipe::new(self.limits.max_stdio_bytes));
        let state = HostState {
            wasi: stdio.as_ref().map(|out| self.wasi_for(req, out)),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(64)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(self.engine_of(policy), state);
        store.limiter(|s| &mut s.limits);
        let ticks = (self.limits.timeout_ms / EPOCH_TICK.as_millis() as u64).max(1) + 1;
        store.set_epoch_deadline(ticks);
        let outcome = policy
            .pre
            .instantiate(&mut store)
            .and_then(|inst| inst.evaluate(&mut store, req, config));
        let micros = started.elapsed().as_micros() as u64;
        let output = stdio.map(|s| s.contents()).unwrap_or_default();
        if !output.is_empty() {
            tracing::info!(plugin = %policy.name, output = %text::escape_unsafe(&String::from_utf8_lossy(&output)), "plugin output");
        }
        let (decision, error) = match outcome {
            Ok(mut d) => {
                if d.reason.len() > self.limits.max_reason_bytes
                    || d.reason_code.len() > MAX_REASON_CODE_BYTES
                {
                    let why = format!(
                        "malformed result: reason of {} bytes or code of {} bytes exceeds the limit",
                        d.reason.len(),
                        d.reason_code.len()
                    );
                    (
                        deny_for(&policy.name, "plugin.malformed-result", why.clone()),
                        Some(why),
                    )
                } else if d.reason_code.is_empty() {
                    let why = "malformed result: empty reason code".to_string();
                    (
                        deny_for(&policy.name, "plugin.malformed-result", why.clone()),
                        Some(why),
                    )
                } else if text::has_unsafe_chars(&d.reason_code) {
                    let why = "malformed result: reason code with control characters".to_string();
                    (
                        deny_for(&policy.name, "plugin.malformed-result", why.clone()),
                        Some(why),
                    )
                } else {
                    // Logs and terminals get the reason, never its controls.
                    if let std::borrow::Cow::Owned(escaped) = text::escape_unsafe(&d.reason) {
                        d.reason = escaped;
                    }
                    (d, None)
                }
            }
            Err(e) => {
                let (code, why) = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => (
                        "plugin.timeout",
                        format!("exceeded its time limit of {} ms", self.limits.timeout_ms),
                    ),
                    Some(t) => ("plugin.trap", trap::describe(&e, *t)),
                    None => {
                        // Only the root cause goes to the caller; the full
                        // chain (with the wasm backtrace) goes to the log.
                        let root = e.root_cause().to_string();
                        if root.contains("growing memory")
                            || (root.contains("memory") && root.contains("limit"))
                        {
                            (
                                "plugin.memory",
                                format!(
                                    "exceeded its memory limit of {} bytes",
                                    self.limits.memory_bytes
                                ),
                            )
                        } else {
                            (
                                "plugin.error",
                                format!("failed: {}", text::escape_unsafe(&root)),
                            )
                        }
                    }
                };
                tracing::warn!(plugin = %policy.name, error = %text::escape_unsafe(&format!("{e:#}")), "plugin failed; denying");
                (deny_for(&policy.name, code, why.clone()), Some(why))
            }
        };
        PluginResult {
            plugin: policy.name.clone(),
            sha256: policy.sha256.clone(),
            shadow: false,
            decision,
            error,
            micros,
        }
    }

    /// Evaluates every plugin; any enforcing deny wins, at least one
    /// enforcing allow is needed, abstain is neutral, no enforcing plugin
    /// means deny. Shadow plugins are evaluated and recorded only.
    pub fn evaluate_chain(&self, chain: &[ChainEntry], req: &PolicyRequest) -> ChainDecision {
        let mut results = Vec::with_capacity(chain.len());
        for entry in chain {
            let mut r = self.evaluate(&entry.policy, req, &entry.config);
            r.shadow = entry.shadow;
            results.push(r);
        }
        combine(results)
    }
}

/// One instance kept across calls: the cost floor a benchmark compares a
/// fresh-instance decision against. Not isolation-safe (state survives from
/// one call to the next), so the server never uses it.
pub struct ReusedInstance {
    store: Store<HostState>,
    instance: Instance,
}

impl PolicyHost {
    /// Instantiates `policy` once for repeated calls (benchmarks only),
    /// in a store set up as a fresh decision's is ([`Self::evaluate`]: a
    /// WASI context only for a component that imports WASI), so that
    /// instantiating and dropping one also times what a fresh decision
    /// pays besides its call.
    pub fn instantiate_reused(
        &self,
        policy: &CompiledPolicy,
    ) -> Result<ReusedInstance, PolicyError> {
        let stdio = policy
            .imports_wasi
            .then(|| MemoryOutputPipe::new(self.limits.max_stdio_bytes));
        let state = HostState {
            wasi: stdio
                .as_ref()
                .map(|out| self.wasi_for(&PolicyRequest::sample(), out)),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(64)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(self.engine_of(policy), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = policy
            .pre
            .instantiate(&mut store)
            .map_err(|e| PolicyError::Smoke(format!("{e:#}")))?;
        Ok(ReusedInstance { store, instance })
    }
}

impl ReusedInstance {
    /// One call on the kept instance.
    pub fn evaluate(
        &mut self,
        req: &PolicyRequest,
        config: &[(String, String)],
    ) -> Result<PolicyDecision, PolicyError> {
        self.instance
            .evaluate(&mut self.store, req, config)
            .map_err(|e| PolicyError::Smoke(format!("{e:#}")))
    }
}

/// The chain rule over evaluated results (see [`PolicyHost::evaluate_chain`]).
pub fn combine(results: Vec<PluginResult>) -> ChainDecision {
    let enforcing = || results.iter().filter(|r| !r.shadow);
    let verdict = |outcome, r: &PluginResult| {
        (
            outcome,
            Some(r.plugin.clone()),
            r.decision.reason_code.clone(),
            r.decision.reason.clone(),
        )
    };
    let (outcome, plugin, reason_code, reason) = if enforcing().next().is_none() {
        (
            Outcome::Deny,
            None,
            "policy.none-installed".to_string(),
            "no policy plugin is installed; everything is denied".to_string(),
        )
    } else if let Some(d) = enforcing().find(|r| r.decision.outcome == Outcome::Deny) {
        verdict(Outcome::Deny, d)
    } else if let Some(a) = enforcing().find(|r| r.decision.outcome == Outcome::Allow) {
        verdict(Outcome::Allow, a)
    } else {
        (
            Outcome::Deny,
            None,
            "policy.no-allow".to_string(),
            "every policy abstained; at least one allow is needed".to_string(),
        )
    };
    ChainDecision {
        outcome,
        plugin,
        reason_code,
        reason,
        results,
    }
}
