//! The Modelvault HTTP API (axum). It composes the store, the key provider
//! and the access model; it holds no crypto of its own.
//!
//! Invariants a reader must keep:
//! - every `/v1` route authenticates, then calls [`authn::authorize`]
//!   before reading or writing anything (the seam for policies and audit);
//! - every error leaves through [`ApiError`] (status + JSON body); 5xx
//!   bodies carry only a request id, the detail goes to the log;
//! - plaintext leaves only through the download stream, which ends the
//!   response at the first segment that fails authentication.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod authn;
pub mod config;
pub mod conn;
pub mod console;
mod error;
mod extract;
pub mod gate;
pub mod init;
pub mod jobs;
pub mod metrics;
pub mod model_signing;
pub mod policies;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use modelvault_storage::Store;

pub use config::Config;
pub use error::ApiError;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The config the server started with.
    pub config: Arc<Config>,
    /// Installed policy plugins and their host.
    pub policies: Arc<policies::PolicyRegistry>,
    /// Role bindings (cached from the store).
    pub bindings: Arc<access::Bindings>,
    /// Failed authentications by source and window.
    pub auth_failures: Arc<access::AuthFailures>,
    /// OIDC issuers, when any is configured.
    pub oidc: Option<modelvault_oidc::Verifier>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Alert rules and the webhook.
    pub alerts: Arc<alerts::Alerts>,
    /// The audit trail (always on in a serving server; absent only in
    /// `init` and in the benchmark's unaudited baseline).
    pub audit: Option<modelvault_audit::AuditLog>,
    /// Whether this server speaks TLS (key release off loopback needs it).
    pub tls: bool,
    /// Versions' file facts for policies, unsealed once per manifest.
    pub file_facts: Arc<gate::FileFactsCache>,
    /// Trusted model-signing keys (`[model_signing]`).
    pub signers: Arc<Vec<model_signing::SignerKey>>,
    /// Only false in the authorization benchmark's baseline server (see
    /// [`AppState::without_policy_chain_for_benchmarks`]); no config key or
    /// command reaches it.
    policy_chain: bool,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Config problem.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Keys problem.
    #[error("key provider: {0}")]
    Keys(#[from] modelvault_keys::KeyError),
    /// The configured key provider cannot be opened.
    #[error(transparent)]
    KeyProvider(crate::config::ConfigError),
    /// Store problem.
    #[error(transparent)]
    Storage(#[from] modelvault_storage::StorageError),
    /// Listener problem.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The audit trail could not start.
    #[error("audit: {0}")]
    Audit(#[from] modelvault_audit::AuditError),
    /// OIDC issuer config problem.
    #[error("oidc: {0}")]
    Oidc(#[from] modelvault_oidc::OidcError),
    /// TLS certificate or key problem.
    #[error("tls: {0}")]
    Tls(String),
    /// The policy host could not start.
    #[error(transparent)]
    Policy(#[from] modelvault_policy::PolicyError),
    /// Refused by the transport rule.
    #[error(
        "refusing plain HTTP on non-loopback address {0}: TLS is not configured; pass --insecure-http to override (testing only)"
    )]
    InsecureListen(SocketAddr),
}

impl AppState {
    /// Opens the key provider and store a config names, and checks the store
    /// was initialized with this provider.
    pub async fn open(config: Config) -> Result<Self, ServeError> {
        let keys = config
            .keys
            .open_provider()
            .await
            .map_err(ServeError::KeyProvider)?;
        let segment = modelvault_format::SegmentSize::from_bytes(config.store.segment_size)
            .unwrap_or_default();
        let store = Store::open(&config.store.url, keys)?.with_segment_size(segment);
        store.check_initialized().await?;
        let cache_key = policy_cache_key(&store).await?;
        let state = Self::from_parts(store, config, Some(cache_key))?;
        state
            .bindings
            .seed(&state.store, &state.config.access.bindings)
            .await?;
        state.policies.reload(&state.store).await;
        let mut state = state;
        state.audit = Some(
            modelvault_audit::AuditLog::start(
                state.store.clone(),
                modelvault_audit::AuditOptions {
                    checkpoint_interval: std::time::Duration::from_secs(
                        state.config.audit.checkpoint_interval_secs,
                    ),
                    checkpoint_file: state.config.audit.checkpoint_file.clone(),
                    allow_new_signing_key: state.config.audit.allow_new_signing_key,
                    expected_public_key: state.config.audit.pinned_public_key(),
                    on_segment: Some({
                        let m = state.metrics.clone();
                        modelvault_audit::SegmentHook(Arc::new(move |d| {
                            m.audit_write_latency.observe(d.as_secs_f64())
                        }))
                    }),
                    ..Default::default()
                },
            )
            .await?,
        );
        if let Some(a) = &state.audit {
            state.alerts.attach_audit(a);
        }
        Ok(state)
    }

    /// State over an open store, with the policy host started but nothing
    /// loaded (call `policies.reload`). Compiled policies in the cache
    /// directory are read back only when `cache_key` authenticates them
    /// (see [`policy_cache_key`]).
    pub fn from_parts(
        store: Store,
        config: Config,
        cache_key: Option<[u8; 32]>,
    ) -> Result<Self, ServeError> {
        let mut host = modelvault_policy::PolicyHost::new(
            config.policy.limits.clone(),
            config.policy.cache_dir.clone(),
        )?;
        if let Some(key) = cache_key {
            host = host.with_cache_key(key);
        }
        let registry = policies::PolicyRegistry::new(Arc::new(host), config.policy.clone());
        let metrics = Arc::new(metrics::Metrics::default());
        let oidc = if config.oidc.issuers.is_empty() {
            None
        } else {
            Some(modelvault_oidc::Verifier::new(config.oidc.issuers.clone())?)
        };
        Ok(Self {
            store,
            bindings: Arc::new(access::Bindings::new(std::time::Duration::from_secs(
                config.access.refresh_secs,
            ))),
            auth_failures: Arc::new(access::AuthFailures::new(std::time::Duration::from_secs(
                config.access.failure_window_secs,
            ))),
            oidc,
            audit: None,
            tls: false,
            file_facts: Arc::default(),
            signers: Arc::new(
                config
                    .model_signing
                    .signer_keys()
                    .map_err(|e| ServeError::Config(crate::config::ConfigError::Rule(e)))?,
            ),
            alerts: Arc::new(alerts::Alerts::new(config.alerts.clone(), metrics.clone())),
            metrics,
            config: Arc::new(config),
            policies: registry,
            policy_chain: true,
        }
        .with_policy_monitoring())
    }

    /// Connects the policy registry's circuit breakers to the metrics and
    /// alerts.
    fn with_policy_monitoring(self) -> Self {
        self.policies
            .attach_monitoring(self.metrics.clone(), self.alerts.clone());
        self
    }

    /// The same state without the audit trail: the benchmark's baseline for
    /// what auditing costs; nothing in the server calls it.
    #[doc(hidden)]
    pub fn without_audit_for_benchmarks(mut self) -> Self {
        self.audit = None;
        self
    }

    /// Signs a last checkpoint over everything recorded (call at shutdown).
    pub async fn close_audit(&self) {
        if let Some(a) = &self.audit {
            match a.checkpoint().await {
                Ok(Some(cp)) => tracing::info!(seq = cp.seq, "final audit checkpoint"),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "final audit checkpoint failed"),
            }
        }
    }

    /// The same state with the policy chain skipped: only the native role
    /// check decides. For the authorization benchmark's baseline alone (it
    /// measures what the chain costs); only with the `test-hooks` feature,
    /// which only dev-dependencies enable.
    #[cfg(feature = "test-hooks")]
    pub fn without_policy_chain_for_benchmarks(mut self) -> Self {
        self.policy_chain = false;
        self
    }

    /// Whether the policy chain runs (always, outside that benchmark).
    pub(crate) fn policy_chain_enabled(&self) -> bool {
        self.policy_chain
    }
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    routes::router(state).layer(axum::middleware::from_fn(request_id))
}

/// Binds `addr`, enforcing the transport rule: plain HTTP only on loopback
/// unless `insecure_http` (pass `true` when the listener will serve TLS).
pub async fn bind(addr: &str, insecure_http: bool) -> Result<tokio::net::TcpListener, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: addr.into(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: addr.into(),
        source,
    })?;
    if !local.ip().is_loopback() && !insecure_http {
        return Err(ServeError::InsecureListen(local));
    }
    Ok(listener)
}

/// Collects abandoned uploads every `gc_interval_secs` in the background.
/// Safe with several servers over one bucket: deletes are idempotent and
/// only touch blobs no manifest lists and older than the grace period.
pub fn spawn_garbage_collector(state: &AppState) {
    let interval = state.config.store.gc_interval_secs;
    if interval == 0 {
        return;
    }
    let grace = std::time::Duration::from_secs(state.config.store.gc_grace_secs);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval));
        tick.tick().await; // the first tick is immediate: skip it
        loop {
            tick.tick().await;
            // Console sessions live at most 12 hours (console.session_ttl_secs).
            match store
                .console_sessions()
                .prune(std::time::Duration::from_secs(13 * 3600))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired console sessions pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning console sessions failed"),
            }
            match store.collect_garbage(grace).await {
                Ok(r) => tracing::info!(
                    blobs_seen = r.blobs_seen,
                    blobs_deleted = r.blobs_deleted,
                    staging_files_deleted = r.staging_files_deleted,
                    "garbage collection"
                ),
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
        }
    });
}

/// Reloads installed policies every `policy.refresh_secs` in the background.
pub fn spawn_policy_reloader(state: &AppState) {
    policies::spawn_reloader(
        state.policies.clone(),
        state.store.clone(),
        std::time::Duration::from_secs(state.config.policy.refresh_secs),
    );
}

/// The connection limits of `state`'s config, `max_connections` lowered
/// below the process's open-file limit ([`conn::ConnLimits::capped`]).
pub fn connection_limits(state: &AppState) -> conn::ConnLimits {
    conn::ConnLimits::from_config(&state.config.server).capped(conn::open_file_limit())
}

/// Serves plain HTTP/1.1 until `shutdown` resolves, within the connection
/// limits of the config ([`conn`]); connections in flight then get ten
/// seconds to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = connection_limits(&state);
    conn::serve(listener, None, router(state), limits, shutdown).await
}

/// The TLS settings the server uses: rustls with the ring provider, TLS 1.3
/// and 1.2 only, HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Tls(format!("certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Tls(format!("private key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS only (no plaintext listener) until `shutdown` resolves,
/// within the same connection limits as [`serve`] (the TLS handshake is
/// bounded by the header read timeout); connections in flight then get ten
/// seconds to finish.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = connection_limits(&state);
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    );
    conn::serve(listener, Some(acceptor), router(state), limits, shutdown).await
}

/// Gives every request an id (`x-request-id`), logs every answer, and turns
/// a 5xx's detail into a log line whose id the client sees in the body.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert("x-request-id", v);
    }
    let mut resp = next.run(req).await;
    let status = resp.status();
    if let Some(detail) = resp.extensions_mut().remove::<error::InternalDetail>() {
        tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), code = detail.code, detail = %detail.detail, "request failed");
        let body = serde_json::json!({"error": {
            "code": detail.code,
            "message": format!("{} (request id {id})", error::public_message(detail.code)),
            "request_id": id,
        }});
        let mut fresh = (status, axum::Json(body)).into_response();
        std::mem::swap(fresh.headers_mut(), resp.headers_mut());
        resp = Response::from_parts(resp.into_parts().0, fresh.into_body());
    } else {
        tracing::info!(request_id = %id, %method, %path, status = status.as_u16(), "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The key that authenticates compiled policies in `policy.cache_dir`: the
/// key provider's record MAC over a fixed label. Every server sharing the
/// provider derives the same key; whoever can write only the cache
/// directory or the bucket cannot, so cannot choose the native code a
/// server loads.
pub async fn policy_cache_key(store: &Store) -> Result<[u8; 32], ServeError> {
    let mac = store
        .keys()
        .mac(b"modelvault:compiled-policy-cache:v1")
        .await?;
    Ok(*blake3::hash(&mac.tag).as_bytes())
}
