//! First-time set-up of a data directory: keyring, store marker, config
//! file and the bootstrap admin token. The store marker is create-if-absent,
//! so two `init`s against one bucket cannot both succeed.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use modelvault_storage::{StorageError, Store};

use crate::api::CreateTokenRequest;
use crate::{AppState, Config};

/// Name of the config file inside the data directory.
pub const CONFIG_FILE: &str = "modelvault.toml";

/// Errors of `init`.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The data directory has a config already.
    #[error("{0} is already initialized (found {1})")]
    AlreadyInitialized(String, String),
    /// The store was initialized by someone else.
    #[error("store {0} is already initialized; point --store at an empty location")]
    StoreInUse(String),
    /// The configuration is unusable (a rule, the key provider).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

/// The config file of a data directory.
pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONFIG_FILE)
}

/// Initializes `data_dir` (and the store at `store_url`, default
/// `DATA_DIR/store`). Returns the config and the bootstrap admin token.
pub async fn initialize(
    data_dir: &Path,
    store_url: Option<String>,
) -> Result<(Config, String), InitError> {
    initialize_with(data_dir, store_url, None, None).await
}

/// [`initialize`] with a chosen key provider (`None`: the local keyring in
/// the data directory). A PKCS#11 provider gets its keys created in the
/// token; init refuses a token that already holds keys under the prefix.
pub async fn initialize_with(
    data_dir: &Path,
    store_url: Option<String>,
    keys_config: Option<crate::config::KeysConfig>,
    kms_key_id: Option<&str>,
) -> Result<(Config, String), InitError> {
    let other = |e: &dyn std::fmt::Display| InitError::Other(e.to_string());
    let cfg_path = config_path(data_dir);
    if cfg_path.exists() {
        return Err(InitError::AlreadyInitialized(
            data_dir.display().to_string(),
            cfg_path.display().to_string(),
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| InitError::Other(format!("create {}: {e}", data_dir.display())))?;
    let data_dir = data_dir
        .canonicalize()
        .map_err(|e| InitError::Other(format!("{}: {e}", data_dir.display())))?;
    let store_url = match store_url {
        Some(u) => u,
        None => format!("file://{}", data_dir.join("store").display()),
    };
    let mut config = Config::new(&data_dir, store_url.clone());
    if let Some(k) = keys_config {
        config.keys = k;
    }
    config.validate()?;
    let keyring_path = (config.keys.provider == "local").then(|| config.keys.keyring.clone());
    let keys = config.keys.create_provider(kms_key_id).await?;
    let cleanup = || {
        if let Some(p) = &keyring_path {
            let _ = std::fs::remove_file(p);
        }
    };
    let store = match Store::open(&store_url, keys) {
        Ok(s) => s,
        Err(e) => {
            cleanup();
            return Err(other(&e));
        }
    };
    match store.initialize().await {
        Ok(()) => {}
        Err(StorageError::AlreadyExists(_)) => {
            cleanup();
            return Err(InitError::StoreInUse(store_url));
        }
        Err(e) => {
            cleanup();
            return Err(other(&e));
        }
    }
    config.store.url = store_url;
    let text = config.to_commented_toml()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&cfg_path)
        .map_err(|e| InitError::Other(format!("write {}: {e}", cfg_path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| InitError::Other(format!("write {}: {e}", cfg_path.display())))?;

    let state = AppState::from_parts(store, config.clone(), None).map_err(|e| other(&e))?;
    crate::policies::install_bundled(&state.policies, &state.store)
        .await
        .map_err(|e| InitError::Other(format!("installing the bundled policies: {}", e.message)))?;
    let req = CreateTokenRequest {
        name: Some("admin".into()),
        principal: Some("admin".into()),
        roles: vec!["admin".into()],
        ..Default::default()
    };
    let (resp, _) = crate::routes::issue_admin_token(&state, req)
        .await
        .map_err(|e| InitError::Other(e.message))?;
    Ok((config, resp.token))
}
