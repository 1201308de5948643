//! The server's config file, `DATA_DIR/modelvault.toml`. Every key is
//! documented in `docs/CONFIG.md`; `init` writes a commented file with all
//! of them. Unknown keys are an error, so a typo never silently weakens a
//! setting.

use std::path::{Path, PathBuf};

use modelvault_auth::RolesTable;
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener settings.
    pub server: ServerConfig,
    /// Where data lives.
    pub store: StoreConfig,
    /// Where keys live.
    pub keys: KeysConfig,
    /// Declared environments.
    #[serde(default)]
    pub environments: EnvironmentsConfig,
    /// Role → permissions.
    #[serde(default)]
    pub roles: RolesTable,
    /// Policy plugins: reload interval, required plugins, limits, per-plugin
    /// configuration.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// OIDC issuers whose access tokens are accepted.
    #[serde(default)]
    pub oidc: OidcConfig,
    /// Role bindings seeded into the store, and how often they are reread.
    #[serde(default)]
    pub access: AccessConfig,
    /// API token lifetimes.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Metadata keys always treated as sensitive.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `GET /metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Alert rules and the webhook.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The web console at `/ui/`.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// OpenSSF model signatures: the signature file and trusted signers.
    #[serde(default)]
    pub model_signing: ModelSigningConfig,
}

/// `[model_signing]`: versions pushed with an OpenSSF `model-signing`
/// signature file are verified at commit against these signers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSigningConfig {
    /// The path, inside a version, of its signature file (default
    /// `model.sig`, what `model_signing sign` writes).
    #[serde(default = "default_signature_file")]
    pub signature_file: String,
    /// Trusted signer keys.
    #[serde(default)]
    pub trusted_keys: Vec<TrustedSignerConfig>,
}

/// One `[[model_signing.trusted_keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedSignerConfig {
    /// The signer's name, as policies see it.
    pub name: String,
    /// Namespaces it is trusted for (`*`: all).
    pub namespaces: Vec<String>,
    /// Its EC P-256 or P-384 public key: PEM text, or the path of a PEM
    /// file.
    pub public_key: String,
}

fn default_signature_file() -> String {
    "model.sig".into()
}

impl Default for ModelSigningConfig {
    fn default() -> Self {
        Self {
            signature_file: default_signature_file(),
            trusted_keys: Vec::new(),
        }
    }
}

impl ModelSigningConfig {
    /// The trusted keys, read and parsed.
    pub fn signer_keys(&self) -> Result<Vec<crate::model_signing::SignerKey>, String> {
        let mut names = std::collections::BTreeSet::new();
        for k in &self.trusted_keys {
            if !names.insert(k.name.as_str()) {
                return Err(format!(
                    "model_signing.trusted_keys: the name {:?} is given twice",
                    k.name
                ));
            }
        }
        self.trusted_keys
            .iter()
            .map(|k| {
                let pem = if k.public_key.contains("BEGIN") {
                    k.public_key.clone()
                } else {
                    std::fs::read_to_string(&k.public_key).map_err(|e| {
                        format!(
                            "model_signing.trusted_keys {}: reading {}: {e}",
                            k.name, k.public_key
                        )
                    })?
                };
                crate::model_signing::SignerKey::from_pem(&k.name, k.namespaces.clone(), &pem)
            })
            .collect()
    }
}

/// `[console]`: the web console served at `/ui/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Lifetime of a console session in seconds (the cookie holds the
    /// session, never the API token or the OIDC token): 60 to 43200,
    /// default 3600.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// The console's public base URL (`https://vault.example.com`), used for
    /// the OIDC redirect URI `<public_url>/ui/oidc/callback`. Unset: taken
    /// from the request's `Host` (the issuer still checks the redirect URI
    /// against the client's registered ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// OIDC sign-in: issuer URL → the public client id registered for the
    /// console (authorization code + PKCE, redirect URI
    /// `<public_url>/ui/oidc/callback`). Each issuer must also be an
    /// `[[oidc.issuers]]` entry (its access tokens are verified the same way).
    #[serde(default)]
    pub oidc_clients: std::collections::BTreeMap<String, String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl_secs: default_session_ttl(),
            public_url: None,
            oidc_clients: std::collections::BTreeMap::new(),
        }
    }
}

fn default_session_ttl() -> u64 {
    3600
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A file holding the bearer token `/metrics` then requires from every
    /// peer; without it, only loopback peers are answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bearer_token_file: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Where alerts (and audit checkpoints) are POSTed as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// A file holding the HMAC-SHA256 key that signs each POST
    /// (`X-Modelvault-Signature: sha256=<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Failed authentications from one source within the window that fire
    /// an alert (0 = rule off).
    #[serde(default = "default_alert_threshold")]
    pub failed_auth_threshold: u64,
    /// Denials of one principal within the window that fire an alert
    /// (0 = rule off).
    #[serde(default = "default_alert_threshold")]
    pub denial_threshold: u64,
    /// The window of both thresholds, in seconds.
    #[serde(default = "default_alert_window")]
    pub window_secs: u64,
    /// Alert on any access to a `restricted` model from an environment it
    /// is not approved for.
    #[serde(default = "yes")]
    pub restricted_outside_approved: bool,
    /// Alert on every policy install or removal.
    #[serde(default = "yes")]
    pub policy_changes: bool,
    /// Alert when a policy plugin's circuit opens (it keeps timing out or
    /// trapping and is short-circuited).
    #[serde(default = "yes")]
    pub policy_circuit_open: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret_file: None,
            failed_auth_threshold: default_alert_threshold(),
            denial_threshold: default_alert_threshold(),
            window_secs: default_alert_window(),
            restricted_outside_approved: true,
            policy_changes: true,
            policy_circuit_open: true,
        }
    }
}

fn default_alert_threshold() -> u64 {
    20
}
fn default_alert_window() -> u64 {
    60
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Seconds between signed checkpoints (when there are new records).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: u64,
    /// A file outside the store each checkpoint is appended to (JSON lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_file: Option<PathBuf>,
    /// While the audit store fails, keep answering metadata reads (GET
    /// routes other than downloads). Everything else gets 503 regardless.
    #[serde(default)]
    pub allow_reads_when_unavailable: bool,
    /// The checkpoint public key (hex Ed25519) this store's trail must be
    /// signed with: the server refuses to start with any other signing key,
    /// and `audit verify` checks against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Start even though audit chains exist and the signing key is missing,
    /// creating a new key (`serve --allow-new-audit-signing-key` sets it
    /// for one start). Remove it once the server has started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_new_signing_key: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: default_checkpoint_interval(),
            checkpoint_file: None,
            allow_reads_when_unavailable: false,
            public_key: None,
            allow_new_signing_key: false,
        }
    }
}

impl AuditConfig {
    /// The pinned checkpoint public key, raw (`None` when not pinned or not
    /// 32 bytes of hex; [`Config::validate`] refuses the latter).
    pub fn pinned_public_key(&self) -> Option<Vec<u8>> {
        self.public_key
            .as_deref()
            .and_then(|k| hex::decode(k.trim()).ok())
            .filter(|k| k.len() == 32)
    }
}

fn default_checkpoint_interval() -> u64 {
    60
}

/// `[oidc]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// One `[[oidc.issuers]]` table per issuer.
    #[serde(default)]
    pub issuers: Vec<modelvault_oidc::IssuerConfig>,
}

/// `[access]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Seconds a server may use its cached copy of the role bindings before
    /// rereading them from the store (how soon another server's grant or
    /// revoke applies here).
    #[serde(default = "default_access_refresh")]
    pub refresh_secs: u64,
    /// Bindings written to the store when it holds none yet (first start).
    #[serde(default)]
    pub bindings: Vec<SeedBinding>,
    /// Length in seconds of the window failed authentications are counted in.
    #[serde(default = "default_failure_window")]
    pub failure_window_secs: u64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            refresh_secs: default_access_refresh(),
            bindings: Vec::new(),
            failure_window_secs: default_failure_window(),
        }
    }
}

/// One `[[access.bindings]]` table: exactly one of `principal`, `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedBinding {
    /// A principal id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// A group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Role name.
    pub role: String,
    /// Namespaces (`*` = all; empty = all).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// `[tokens]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime of a token created without `--ttl` (e.g. `90d`).
    #[serde(default = "default_token_ttl")]
    pub default_ttl: String,
    /// Longest lifetime a token may be given (e.g. `365d`).
    #[serde(default = "default_token_max_ttl")]
    pub max_ttl: String,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            default_ttl: default_token_ttl(),
            max_ttl: default_token_max_ttl(),
        }
    }
}

/// `[metadata]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// Metadata keys that are sensitive in every model.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
}

fn default_access_refresh() -> u64 {
    2
}
fn default_failure_window() -> u64 {
    60
}
fn default_token_ttl() -> String {
    "90d".into()
}
fn default_token_max_ttl() -> String {
    "365d".into()
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Seconds between reloads of the installed policies from the store (how
    /// soon a server sees another server's install or removal).
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// Milliseconds a request that needs the policy chain waits, while the
    /// server is still compiling its enforcing policies after a start,
    /// before it gets a 503 `policies_loading`.
    #[serde(default = "default_load_wait_ms")]
    pub load_wait_ms: u64,
    /// Most policies installed at once, which bounds the compiled
    /// components a server holds in memory (docs/OPERATIONS.md).
    #[serde(default = "default_max_policies")]
    pub max_policies: usize,
    /// Policies that must be installed in enforce mode: the API refuses to
    /// remove them or install them in shadow mode, and if one is missing at
    /// load the chain denies everything.
    #[serde(default)]
    pub required: Vec<String>,
    /// Where compiled components are cached (content hash + engine build).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Refuse to install a component without a signature by a trusted key
    /// (bundled components excepted), and to load an installed one whose
    /// recorded signature no longer verifies.
    #[serde(default)]
    pub require_signed: bool,
    /// Trusted policy-signing keys (Ed25519): each a PEM public key, 64 hex
    /// digits of the raw key, or the path of a file holding either.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Policy evaluations run at once, each on a thread of its own apart
    /// from the ones serving requests (0: one per core the process may use).
    #[serde(default)]
    pub evaluation_threads: usize,
    /// How far below normal priority the evaluation threads run (Linux
    /// nice, 0..=19; 0 keeps them at normal priority).
    #[serde(default = "default_evaluation_nice")]
    pub evaluation_nice: i32,
    /// Bounds every plugin runs under.
    #[serde(default)]
    pub limits: modelvault_policy::Limits,
    /// When a plugin that keeps timing out or trapping is short-circuited.
    #[serde(default)]
    pub circuit_breaker: modelvault_policy::BreakerConfig,
    /// Per-plugin configuration: plugin name → key → value.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let mut config = std::collections::BTreeMap::new();
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        config.insert(
            "sensitivity-environment".to_string(),
            pairs(&[
                ("matrix.public", "*"),
                ("matrix.internal", "*"),
                ("matrix.confidential", "staging,production"),
                ("matrix.restricted", "production"),
            ]),
        );
        config.insert(
            "approval-gate".to_string(),
            pairs(&[("gated", "production")]),
        );
        config.insert(
            "separation-of-duties".to_string(),
            pairs(&[("gated", "production"), ("required_approvals", "2")]),
        );
        Self {
            refresh_secs: default_refresh_secs(),
            load_wait_ms: default_load_wait_ms(),
            max_policies: default_max_policies(),
            required: Vec::new(),
            cache_dir: None,
            require_signed: false,
            trusted_keys: Vec::new(),
            evaluation_threads: 0,
            evaluation_nice: default_evaluation_nice(),
            limits: modelvault_policy::Limits::default(),
            circuit_breaker: modelvault_policy::BreakerConfig::default(),
            config,
        }
    }
}

fn default_evaluation_nice() -> i32 {
    0
}

fn default_refresh_secs() -> u64 {
    10
}

fn default_load_wait_ms() -> u64 {
    2000
}

fn default_max_policies() -> usize {
    32
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, default `127.0.0.1:8780`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Allow plain HTTP on a non-loopback address (never for production).
    #[serde(default)]
    pub insecure_http: bool,
    /// Largest file accepted by an upload, in bytes.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Largest JSON request body, in bytes.
    #[serde(default = "default_max_json_bytes")]
    pub max_json_bytes: usize,
    /// PEM certificate chain; with `tls_key`, the server speaks only HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Most connections served at once; the server lowers it at start to
    /// half of (open-file limit - 64) when that is smaller.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a complete request head (and, with TLS,
    /// to finish the handshake); it also bounds an HTTP/1.1 keep-alive
    /// connection waiting for its next request.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may move no byte before it is closed (once no
    /// request is in progress on it).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a response write may make no progress (the client reads
    /// nothing) before the connection is closed.
    #[serde(default = "default_send_timeout")]
    pub send_timeout_secs: u64,
    /// Seconds a request body may deliver no byte (the client stopped
    /// sending) before the request fails and its connection is closed.
    #[serde(default = "default_receive_timeout")]
    pub receive_timeout_secs: u64,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///path` or `s3://bucket[/prefix]`.
    pub url: String,
    /// Plaintext bytes per segment of new files: 65536, 262144, 1048576
    /// or 4194304.
    #[serde(default = "default_segment_size")]
    pub segment_size: usize,
    /// Seconds between garbage collections of abandoned uploads (0 = off).
    #[serde(default = "default_gc_interval")]
    pub gc_interval_secs: u64,
    /// Age in seconds after which an uncommitted upload is collected.
    #[serde(default = "default_gc_grace")]
    pub gc_grace_secs: u64,
}

/// `[keys]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Key provider: `local` (a keyring file) or `pkcs11` (a token).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Path of the local keyring file (outside the store); `local` only.
    #[serde(default)]
    pub keyring: PathBuf,
    /// The token, for `provider = "pkcs11"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Config>,
    /// The KMS keys, for `provider = "aws-kms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_kms: Option<AwsKmsConfig>,
    /// Lifetime in seconds of the presigned ciphertext URLs a key release
    /// hands out on S3 stores.
    #[serde(default = "default_presign_secs")]
    pub presign_secs: u64,
    /// Seconds a DEK rotation keeps the old blobs after the switch, for
    /// downloads and presigned URLs in flight. At least `presign_secs`;
    /// keep it above your longest download.
    #[serde(default = "default_dek_grace_secs")]
    pub dek_rotation_grace_secs: u64,
}

fn default_dek_grace_secs() -> u64 {
    3600
}

/// `[keys.aws_kms]`: where the KMS keys are. Credentials are never in the
/// file: they come from the standard `AWS_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// Aliases are `alias/<prefix>-kek-<N>` (KEK version N) and
    /// `alias/<prefix>-mac` (the record MAC key).
    #[serde(default = "default_key_prefix")]
    pub alias_prefix: String,
    /// The region (default: `AWS_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The KMS endpoint (default: `AWS_ENDPOINT_URL_KMS`,
    /// `AWS_ENDPOINT_URL`, then `https://kms.<region>.amazonaws.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl AwsKmsConfig {
    fn settings(&self) -> Result<modelvault_keys::AwsKmsSettings, ConfigError> {
        modelvault_keys::AwsKmsSettings::from_env(
            self.region.as_deref(),
            self.endpoint.as_deref(),
            &self.alias_prefix,
        )
        .map_err(ConfigError::Provider)
    }
}

/// `[keys.pkcs11]`: where the token is. The PIN is never in the file: it
/// is read from the environment variable `pin_env` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the vendor's PKCS#11 module.
    pub module: PathBuf,
    /// Label of the token.
    pub token_label: String,
    /// Label prefix of Modelvault's keys in the token.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Environment variable holding the user PIN.
    #[serde(default = "default_pin_env")]
    pub pin_env: String,
}

fn default_key_prefix() -> String {
    "modelvault".into()
}

fn default_pin_env() -> String {
    "MODELVAULT_PKCS11_PIN".into()
}

impl KeysConfig {
    /// The PKCS#11 settings, with the PIN read from the environment.
    pub fn pkcs11_settings(&self) -> Result<modelvault_keys::Pkcs11Settings, ConfigError> {
        let c = self.pkcs11.as_ref().ok_or_else(|| {
            ConfigError::Pkcs11Settings(
                "keys.provider is \"pkcs11\" but [keys.pkcs11] is missing".into(),
            )
        })?;
        let pin = std::env::var(&c.pin_env)
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ConfigError::Pkcs11Settings(format!(
                    "the PKCS#11 PIN is not set: export {}",
                    c.pin_env
                ))
            })?;
        Ok(modelvault_keys::Pkcs11Settings {
            module: c.module.clone(),
            token_label: c.token_label.clone(),
            pin: pin.into(),
            key_prefix: c.key_prefix.clone(),
        })
    }

    fn aws_kms_settings(&self) -> Result<modelvault_keys::AwsKmsSettings, ConfigError> {
        self.aws_kms
            .as_ref()
            .ok_or_else(|| {
                ConfigError::Rule(
                    "keys.provider is \"aws-kms\" but [keys.aws_kms] is missing".into(),
                )
            })?
            .settings()
    }

    /// Opens the configured provider (its keys must exist).
    pub async fn open_provider(
        &self,
    ) -> Result<std::sync::Arc<dyn modelvault_keys::KeyProvider>, ConfigError> {
        match self.provider.as_str() {
            "aws-kms" => modelvault_keys::AwsKmsProvider::open(self.aws_kms_settings()?)
                .await
                .map(|k| std::sync::Arc::new(k) as _)
                .map_err(ConfigError::Provider),
            "local" => modelvault_keys::LocalKeyring::open(&self.keyring)
                .map(|k| std::sync::Arc::new(k) as _)
                .map_err(ConfigError::Provider),
            "pkcs11" => modelvault_keys::Pkcs11Provider::open(&self.pkcs11_settings()?)
                .map(|k| std::sync::Arc::new(k) as _)
                .map_err(ConfigError::Provider),
            other => Err(ConfigError::Rule(format!(
                "keys.provider {other:?} is not supported"
            ))),
        }
    }

    /// Creates the configured provider's keys (first `init`); refuses if
    /// they exist. With `aws-kms`, `kms_key_id` (an existing symmetric KMS
    /// key) becomes KEK version 1; without it a new key is made.
    pub async fn create_provider(
        &self,
        kms_key_id: Option<&str>,
    ) -> Result<std::sync::Arc<dyn modelvault_keys::KeyProvider>, ConfigError> {
        match self.provider.as_str() {
            "aws-kms" => {
                modelvault_keys::AwsKmsProvider::initialize(self.aws_kms_settings()?, kms_key_id)
                    .await
                    .map(|k| std::sync::Arc::new(k) as _)
                    .map_err(ConfigError::Provider)
            }
            "local" => modelvault_keys::LocalKeyring::create(&self.keyring)
                .map(|k| std::sync::Arc::new(k) as _)
                .map_err(ConfigError::Provider),
            "pkcs11" => {
                let p = modelvault_keys::Pkcs11Provider::connect(&self.pkcs11_settings()?)
                    .map_err(ConfigError::Provider)?;
                p.create_keys().map_err(ConfigError::Provider)?;
                Ok(std::sync::Arc::new(p))
            }
            other => Err(ConfigError::Rule(format!(
                "keys.provider {other:?} is not supported"
            ))),
        }
    }
}

fn default_presign_secs() -> u64 {
    300
}

/// `[environments]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentsConfig {
    /// Declared environment names.
    pub names: Vec<String>,
    /// Environment of a token created without `--env`.
    pub default: String,
}

impl Default for EnvironmentsConfig {
    fn default() -> Self {
        Self {
            names: vec!["dev".into(), "staging".into(), "production".into()],
            default: "dev".into(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8780".into()
}
fn default_max_file_bytes() -> u64 {
    1 << 40
}
fn default_max_json_bytes() -> usize {
    1 << 20
}
fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_send_timeout() -> u64 {
    60
}
fn default_receive_timeout() -> u64 {
    60
}
fn default_segment_size() -> usize {
    1 << 20
}
fn default_gc_interval() -> u64 {
    3600
}
fn default_gc_grace() -> u64 {
    86_400
}
fn default_provider() -> String {
    "local".into()
}

/// Config errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse or a value is invalid.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A value breaks one of the cross-field rules of [`Config::validate`]
    /// (the message names the key).
    #[error("{0}")]
    Rule(String),
    /// A duration (e.g. `tokens.default_ttl`) does not parse.
    #[error("{key}: {message}")]
    Duration {
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
    /// The configured key provider cannot be opened or created.
    #[error("{0}")]
    Provider(#[source] modelvault_keys::KeyError),
    /// The PKCS#11 settings are incomplete (section or PIN missing).
    #[error("{0}")]
    Pkcs11Settings(String),
    /// Writing the commented config file failed.
    #[error("writing the config: {0}")]
    Serialize(#[source] toml::ser::Error),
}

impl Config {
    /// Defaults for a data directory and store URL.
    pub fn new(data_dir: &Path, store_url: String) -> Self {
        Self {
            server: ServerConfig {
                listen: default_listen(),
                insecure_http: false,
                max_file_bytes: default_max_file_bytes(),
                max_json_bytes: default_max_json_bytes(),
                tls_cert: None,
                tls_key: None,
                max_connections: default_max_connections(),
                header_read_timeout_secs: default_header_read_timeout(),
                idle_timeout_secs: default_idle_timeout(),
                send_timeout_secs: default_send_timeout(),
                receive_timeout_secs: default_receive_timeout(),
            },
            store: StoreConfig {
                url: store_url,
                segment_size: default_segment_size(),
                gc_interval_secs: default_gc_interval(),
                gc_grace_secs: default_gc_grace(),
            },
            keys: KeysConfig {
                provider: default_provider(),
                keyring: data_dir.join("keyring.json"),
                pkcs11: None,
                aws_kms: None,
                presign_secs: default_presign_secs(),
                dek_rotation_grace_secs: default_dek_grace_secs(),
            },
            environments: EnvironmentsConfig::default(),
            roles: RolesTable::default(),
            policy: PolicyConfig {
                cache_dir: Some(data_dir.join("policy-cache")),
                ..PolicyConfig::default()
            },
            oidc: OidcConfig::default(),
            access: AccessConfig::default(),
            tokens: TokensConfig::default(),
            metadata: MetadataConfig::default(),
            audit: AuditConfig::default(),
            metrics: MetricsConfig::default(),
            alerts: AlertsConfig::default(),
            console: ConsoleConfig::default(),
            model_signing: ModelSigningConfig::default(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        config
            .check_rules()
            .map_err(|message| ConfigError::Invalid {
                path: path.display().to_string(),
                message,
            })?;
        Ok(config)
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_rules().map_err(ConfigError::Rule)
    }

    /// The rules behind [`Config::validate`]; each message names its key.
    fn check_rules(&self) -> Result<(), String> {
        self.model_signing.signer_keys()?;
        modelvault_storage::names::lookup_file_path(&self.model_signing.signature_file)
            .map_err(|e| format!("model_signing.signature_file: {e}"))?;
        if !(60..=43_200).contains(&self.console.session_ttl_secs) {
            return Err("console.session_ttl_secs must be between 60 and 43200".into());
        }
        for issuer in self.console.oidc_clients.keys() {
            if !self.oidc.issuers.iter().any(|i| &i.issuer == issuer) {
                return Err(format!(
                    "console.oidc_clients: {issuer} is not an [[oidc.issuers]] entry"
                ));
            }
        }
        if let Some(u) = &self.console.public_url {
            let parsed =
                url::Url::parse(u).map_err(|e| format!("console.public_url {u:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("console.public_url {u:?}: must be http or https"));
            }
        }
        if modelvault_format::SegmentSize::from_bytes(self.store.segment_size).is_none() {
            return Err(format!(
                "store.segment_size {} is not one of 65536, 262144, 1048576, 4194304",
                self.store.segment_size
            ));
        }
        if self.store.gc_interval_secs > 0 && self.store.gc_grace_secs < 600 {
            return Err("store.gc_grace_secs must be at least 600 (uploads in flight must never be collected)".into());
        }
        if self.keys.dek_rotation_grace_secs < self.keys.presign_secs {
            return Err(format!(
                "keys.dek_rotation_grace_secs ({}) must be at least keys.presign_secs ({}): a presigned URL must outlive the blobs it names",
                self.keys.dek_rotation_grace_secs, self.keys.presign_secs
            ));
        }
        match self.keys.provider.as_str() {
            "local" if self.keys.keyring.as_os_str().is_empty() => {
                return Err(
                    "keys.keyring must name the keyring file when keys.provider is \"local\""
                        .into(),
                );
            }
            "local" => {}
            "aws-kms" => match &self.keys.aws_kms {
                None => {
                    return Err("keys.provider is \"aws-kms\" but [keys.aws_kms] is missing".into());
                }
                Some(a) if a.alias_prefix.is_empty() => {
                    return Err("keys.aws_kms.alias_prefix must not be empty".into());
                }
                Some(_) => {}
            },
            "pkcs11" => match &self.keys.pkcs11 {
                None => {
                    return Err("keys.provider is \"pkcs11\" but [keys.pkcs11] is missing".into());
                }
                Some(p) if p.token_label.is_empty() || p.key_prefix.is_empty() => {
                    return Err("keys.pkcs11.token_label and key_prefix must not be empty".into());
                }
                Some(_) => {}
            },
            other => {
                return Err(format!(
                    "keys.provider {other:?} is not supported (use \"local\", \"pkcs11\" or \"aws-kms\")"
                ));
            }
        }
        if !self.environments.names.contains(&self.environments.default) {
            return Err(format!(
                "environments.default {:?} is not in environments.names",
                self.environments.default
            ));
        }
        if self.policy.limits.timeout_ms == 0 || self.policy.limits.memory_bytes < (1 << 20) {
            return Err(
                "policy.limits: timeout_ms must be positive and memory_bytes at least 1 MiB".into(),
            );
        }
        if self.policy.limits.compile_timeout_ms == 0 || self.policy.max_policies == 0 {
            return Err(
                "policy.limits.compile_timeout_ms and policy.max_policies must be positive".into(),
            );
        }
        if !(0..=19).contains(&self.policy.evaluation_nice) {
            return Err("policy.evaluation_nice must be between 0 and 19".into());
        }
        let breaker = &self.policy.circuit_breaker;
        if breaker.failures > 0 && (breaker.window_secs == 0 || breaker.cooldown_secs == 0) {
            return Err(
                "policy.circuit_breaker: window_secs and cooldown_secs must be positive".into(),
            );
        }
        let trusted = crate::policies::signing::load_trusted_keys(&self.policy.trusted_keys)?;
        if self.policy.require_signed && trusted.is_empty() {
            return Err(
                "policy.require_signed needs at least one key in policy.trusted_keys".into(),
            );
        }
        if self.roles.0.is_empty() {
            return Err("roles is empty".into());
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err("server.tls_cert and server.tls_key go together".into());
        }
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            return Err("server.max_connections must be between 1 and 1000000".into());
        }
        if self.server.header_read_timeout_secs == 0
            || self.server.idle_timeout_secs == 0
            || self.server.send_timeout_secs == 0
            || self.server.receive_timeout_secs == 0
        {
            return Err(
                "server.header_read_timeout_secs, idle_timeout_secs, send_timeout_secs and receive_timeout_secs must be positive"
                    .into(),
            );
        }
        let (default_ttl, max_ttl) = self.token_ttls().map_err(|e| e.to_string())?;
        if default_ttl > max_ttl {
            return Err("tokens.default_ttl is longer than tokens.max_ttl".into());
        }
        for i in &self.oidc.issuers {
            i.validate()
                .map_err(|e| format!("oidc.issuers {}: {e}", i.issuer))?;
            for env in i
                .environment
                .clients
                .values()
                .chain(i.environment.default.iter())
            {
                if !self.environments.names.contains(env) {
                    return Err(format!(
                        "oidc.issuers {}: environment {env:?} is not declared",
                        i.issuer
                    ));
                }
            }
        }
        for b in &self.access.bindings {
            if b.principal.is_some() == b.group.is_some() {
                return Err("access.bindings: give exactly one of principal, group".into());
            }
            if !self.roles.0.contains_key(&b.role) {
                return Err(format!("access.bindings: unknown role {:?}", b.role));
            }
        }
        if self.audit.checkpoint_interval_secs == 0 {
            return Err("audit.checkpoint_interval_secs must be positive".into());
        }
        if self.audit.public_key.is_some() && self.audit.pinned_public_key().is_none() {
            return Err(
                "audit.public_key must be the 64 hex digits of an Ed25519 public key (modelvault audit public-key)"
                    .into(),
            );
        }
        if self.access.failure_window_secs == 0 {
            return Err("access.failure_window_secs must be positive".into());
        }
        Ok(())
    }

    /// `tokens.default_ttl` and `tokens.max_ttl` in seconds.
    pub fn token_ttls(&self) -> Result<(u64, u64), ConfigError> {
        let d = modelvault_auth::parse_duration(&self.tokens.default_ttl).map_err(|e| {
            ConfigError::Duration {
                key: "tokens.default_ttl",
                message: e.to_string(),
            }
        })?;
        let m = modelvault_auth::parse_duration(&self.tokens.max_ttl).map_err(|e| {
            ConfigError::Duration {
                key: "tokens.max_ttl",
                message: e.to_string(),
            }
        })?;
        Ok((d, m))
    }

    /// The file `init` writes: every key, each with a comment.
    pub fn to_commented_toml(&self) -> Result<String, ConfigError> {
        let roles = toml::to_string(&self.roles).map_err(ConfigError::Serialize)?;
        #[derive(Serialize)]
        struct PolicySection<'a> {
            policy: &'a PolicyConfig,
        }
        let policy = toml::to_string(&PolicySection {
            policy: &self.policy,
        })
        .map_err(ConfigError::Serialize)?;
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        Ok(format!(
            r#"# Modelvault server configuration. `modelvault serve` reads it at start.
# Every key is documented in docs/CONFIG.md.

[server]
# Address to listen on. Plain HTTP is only allowed on loopback unless
# insecure_http is set.
listen = {listen}
# Allow plain HTTP on a non-loopback address (testing only).
insecure_http = {insecure}
# Largest file an upload may carry, in bytes (413 above it).
max_file_bytes = {max_file}
# Largest JSON request body, in bytes (413 above it).
max_json_bytes = {max_json}
# Most connections served at once (lowered at start to half of the
# open-file limit minus 64 when that is smaller); at the limit idle
# connections are closed and new ones wait. docs/OPERATIONS.md.
max_connections = {max_conns}
# Seconds to receive a whole request head (and the TLS handshake); also how
# long an HTTP/1.1 keep-alive connection may wait for its next request.
header_read_timeout_secs = {header_timeout}
# Seconds a connection may move no byte before it is closed (when idle).
idle_timeout_secs = {idle_timeout}
# Seconds a response write may make no progress (a client that stopped
# reading) before the connection is closed.
send_timeout_secs = {send_timeout}
# Seconds a request body may deliver no byte (a client that stopped
# sending, e.g. mid-upload) before the request fails with 408 and the
# connection is closed.
receive_timeout_secs = {receive_timeout}

[store]
# Where models live: file:///absolute/path or s3://bucket[/prefix]
# (S3 settings from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP).
url = {url}
# Plaintext bytes per encrypted segment of new files:
# 65536, 262144, 1048576 or 4194304.
segment_size = {seg}
# Seconds between collections of uploads never committed (0 turns it off).
gc_interval_secs = {gc_interval}
# An upload younger than this many seconds is never collected; keep it
# longer than the slowest push.
gc_grace_secs = {gc_grace}

[keys]
# Key provider holding the KEKs and the record MAC key: "local" (the
# keyring file below), "pkcs11" (a token, [keys.pkcs11]) or "aws-kms"
# (AWS KMS keys, [keys.aws_kms]).
provider = {provider}
# The local keyring file (mode 0600, outside the store). Servers sharing a
# store must share this file.
keyring = {keyring}
# Lifetime in seconds of presigned ciphertext URLs handed out by key
# release on S3 stores.
presign_secs = {presign}
# Seconds a DEK rotation keeps a version's old blobs after switching to the
# new ones, so downloads and presigned URLs in flight finish. At least
# presign_secs; keep it above your longest download.
dek_rotation_grace_secs = {dek_grace}
{pkcs11}{aws_kms}
[environments]
# Declared environments; any other name is rejected.
names = [{names}]
# Environment of a token created without --env.
default = {default}

# Role -> permissions. Permissions: read, write, edit-metadata, download,
# key-release, approve, deploy, delete, read-sensitive, audit-read,
# manage-policies, manage-keys, manage-access.
[roles]
{roles}
# Policy plugins (docs/POLICY-AUTHORING.md). refresh_secs: how often this
# server reloads installed policies from the store; load_wait_ms: how long a
# policy-checked request waits, after a start, for the enforcing policies to
# compile (then 503 policies_loading); max_policies: most installed at once
# (bounds the compiled components held in memory); required: policies that
# must be installed in enforce mode (removal refused; missing = deny all); cache_dir: compiled components;
# require_signed: install only components signed by one of trusted_keys
# (Ed25519 PEM public keys, hex keys, or files holding one); [policy.limits]: the
# bounds every plugin runs under (memory_bytes, timeout_ms, max_reason_bytes,
# max_stdio_bytes, max_component_bytes, max_wasm_stack, pool_instances,
# compile_timeout_ms, max_function_bytes, max_function_locals,
# max_function_complexity, max_component_complexity);
# [policy.config.NAME]: configuration pairs handed to plugin NAME.
{policy}
[tokens]
# Lifetime of an API token created without --ttl, and the longest allowed
# (the bootstrap admin token too: mint its successor before it expires).
default_ttl = {default_ttl}
max_ttl = {max_ttl}

[access]
# Seconds a server may use its cached role bindings before rereading them
# (how soon another server's grant or revoke applies here).
refresh_secs = {access_refresh}
# Window, in seconds, failed authentications are counted in per source.
failure_window_secs = {failure_window}
# Bindings seeded into the store on first start (docs/CONFIG.md), e.g.
# [[access.bindings]]
# group = "nlp-writers"
# role = "data-scientist"
# namespaces = ["nlp"]

[metadata]
# Metadata keys sealed at rest and redacted without read-sensitive, in
# every model (besides keys marked per model).
sensitive_fields = [{sensitive}]

[audit]
# Seconds between signed checkpoints of the audit chain.
checkpoint_interval_secs = {checkpoint_interval}
# While the audit store fails, keep answering metadata reads (downloads and
# every change are refused with 503 regardless).
allow_reads_when_unavailable = {allow_reads}
# A file outside the store every checkpoint is appended to, e.g.
# checkpoint_file = "/var/lib/modelvault-checkpoints.jsonl"
# The checkpoint public key the trail must be signed with (the output of
# `modelvault audit public-key`); the server refuses to start with another
# signing key, and audit verify checks against it, e.g.
# public_key = "<64 hex digits>"

# GET /metrics is open to loopback peers; with a bearer token file it needs
# that token from everyone (docs/CONFIG.md), e.g.
# [metrics]
# bearer_token_file = "/etc/modelvault/metrics.token"

# Alert rules and their webhook (docs/CONFIG.md), e.g.
# [alerts]
# webhook_url = "https://siem.example.com/modelvault"
# webhook_secret_file = "/etc/modelvault/webhook.key"
# failed_auth_threshold = 20
# denial_threshold = 20
# window_secs = 60

# OIDC issuers whose access tokens are accepted (docs/CONFIG.md), e.g.
# [[oidc.issuers]]
# issuer = "https://login.example.com/realms/corp"
# audience = "urn:modelvault"
# groups_claim = "groups"
# cli_client_id = "modelvault-cli"
"#,
            listen = q(&self.server.listen),
            insecure = self.server.insecure_http,
            max_file = self.server.max_file_bytes,
            max_json = self.server.max_json_bytes,
            max_conns = self.server.max_connections,
            header_timeout = self.server.header_read_timeout_secs,
            idle_timeout = self.server.idle_timeout_secs,
            send_timeout = self.server.send_timeout_secs,
            receive_timeout = self.server.receive_timeout_secs,
            url = q(&self.store.url),
            seg = self.store.segment_size,
            gc_interval = self.store.gc_interval_secs,
            gc_grace = self.store.gc_grace_secs,
            provider = q(&self.keys.provider),
            keyring = q(&self.keys.keyring.display().to_string()),
            presign = self.keys.presign_secs,
            dek_grace = self.keys.dek_rotation_grace_secs,
            aws_kms = match &self.keys.aws_kms {
                None => String::new(),
                Some(a) => format!(
                    "\n[keys.aws_kms]\n# KEK version N is the key behind alias/<prefix>-kek-<N>; record MACs use alias/<prefix>-mac.\n# Credentials come from the AWS_* variables, never from this file.\nalias_prefix = {}\n{}{}",
                    q(&a.alias_prefix),
                    a.region
                        .as_ref()
                        .map(|r| format!("region = {}\n", q(r)))
                        .unwrap_or_default(),
                    a.endpoint
                        .as_ref()
                        .map(|e| format!("endpoint = {}\n", q(e)))
                        .unwrap_or_default(),
                ),
            },
            pkcs11 = match &self.keys.pkcs11 {
                None => String::new(),
                Some(p) => format!(
                    "\n[keys.pkcs11]\n# The vendor's PKCS#11 module.\nmodule = {}\n# Label of the token holding the keys.\ntoken_label = {}\n# Label prefix of Modelvault's keys in the token.\nkey_prefix = {}\n# Environment variable holding the user PIN (never put the PIN here).\npin_env = {}\n",
                    q(&p.module.display().to_string()),
                    q(&p.token_label),
                    q(&p.key_prefix),
                    q(&p.pin_env)
                ),
            },
            names = self
                .environments
                .names
                .iter()
                .map(|n| q(n))
                .collect::<Vec<_>>()
                .join(", "),
            default = q(&self.environments.default),
            roles = roles,
            policy = policy,
            default_ttl = q(&self.tokens.default_ttl),
            max_ttl = q(&self.tokens.max_ttl),
            access_refresh = self.access.refresh_secs,
            checkpoint_interval = self.audit.checkpoint_interval_secs,
            allow_reads = self.audit.allow_reads_when_unavailable,
            failure_window = self.access.failure_window_secs,
            sensitive = self
                .metadata
                .sensitive_fields
                .iter()
                .map(|n| q(n))
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_file_round_trips() {
        let c = Config::new(Path::new("/data"), "file:///data/store".into());
        let text = c.to_commented_toml().unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        back.validate().unwrap();
        assert!(
            toml::from_str::<Config>(&text.replace("[server]", "[server]\nlisten_typo = 1"))
                .is_err()
        );
    }
}
