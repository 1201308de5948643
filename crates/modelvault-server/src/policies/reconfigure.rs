//! Plugin configuration without a restart: on SIGHUP the server re-reads
//! its config file and applies the new `[policy.config.*]`, but only if
//! every installed plugin whose configuration changes passes its smoke
//! evaluations ([`modelvault_policy::PolicyHost::smoke`]) with its new one.
//! Otherwise nothing changes and the error log says why. The rest of the
//! file is still read at start only.

use std::path::{Path, PathBuf};

use modelvault_storage::Store;

use super::{PluginConfigs, PolicyRegistry, pairs};
use crate::AppState;
use crate::config::Config;

impl PolicyRegistry {
    /// Replaces every plugin's configuration with `new`, after each
    /// installed plugin whose configuration changes passed its smoke
    /// evaluations with the new one; then reloads the chain. Returns the
    /// names whose configuration changed. Fails closed: on any failure (or
    /// when the installed set is not loaded, so nothing can be checked)
    /// nothing changes.
    pub async fn reconfigure(
        &self,
        store: &Store,
        new: PluginConfigs,
    ) -> Result<Vec<String>, String> {
        let old = self
            .plugin_configs
            .read()
            .map_err(|_| "policy registry lock poisoned".to_string())?
            .clone();
        let mut changed: Vec<String> = old
            .keys()
            .chain(new.keys())
            .filter(|n| old.get(*n) != new.get(*n))
            .cloned()
            .collect();
        changed.sort();
        changed.dedup();
        if changed.is_empty() {
            return Ok(changed);
        }
        let chain = match self.state.read() {
            Ok(s) => match &*s {
                Ok(l) => l.chain.clone(),
                Err(e) => {
                    return Err(format!(
                        "installed policies are unavailable, so the new configuration cannot be checked: {e}"
                    ));
                }
            },
            Err(_) => return Err("policy registry lock poisoned".into()),
        };
        for entry in chain.iter().filter(|e| changed.contains(&e.policy.name)) {
            let name = entry.policy.name.clone();
            // A smoke evaluation takes an instance from the pool, as at
            // install.
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| "evaluation slots closed".to_string())?;
            let host = self.host.clone();
            let policy = entry.policy.clone();
            let config = pairs(new.get(&name));
            tokio::task::spawn_blocking(move || host.smoke(&policy, &config))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("policy {name} with its new configuration: {e}"))?;
        }
        *self
            .plugin_configs
            .write()
            .map_err(|_| "policy registry lock poisoned".to_string())? = new;
        self.reload(store).await;
        Ok(changed)
    }
}

/// Re-reads `path` and reconfigures the plugins, logging the result.
pub async fn reload_config_file(registry: &PolicyRegistry, store: &Store, path: &Path) {
    let one_line = |s: String| modelvault_policy::text::escape_unsafe(&s).into_owned();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                error = %one_line(e.to_string()),
                "policy configuration not reloaded: cannot read the config file; the previous configuration stays"
            );
            return;
        }
    };
    match registry.reconfigure(store, config.policy.config).await {
        Ok(changed) if changed.is_empty() => {
            tracing::info!("policy configuration reloaded: unchanged")
        }
        Ok(changed) => tracing::info!(
            plugins = %changed.join(","),
            "policy configuration reloaded"
        ),
        Err(e) => tracing::error!(
            error = %one_line(e),
            "policy configuration not reloaded; the previous configuration stays"
        ),
    }
}

/// On SIGHUP, re-reads the config file at `path` and applies its
/// `[policy.config.*]` ([`PolicyRegistry::reconfigure`]). Call from within
/// the runtime, at start: from then on SIGHUP no longer ends the process.
pub fn spawn_config_reloader(state: &AppState, path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; policy configuration reloads need a restart");
                return;
            }
        };
        let registry = state.policies.clone();
        let store = state.store.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!(path = %path.display(), "SIGHUP: re-reading the policy configuration");
                reload_config_file(&registry, &store, &path).await;
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (state, path);
    }
}
