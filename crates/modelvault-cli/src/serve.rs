//! `modelvault serve`: load (or create) the data directory, open the store
//! and key provider, listen, and shut down cleanly on SIGINT/SIGTERM.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use modelvault_server::{AppState, Config, init};

/// The data directory: the flag (or `MODELVAULT_DATA_DIR`, via clap), else
/// the platform data directory.
pub fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(d) => Ok(d),
        None => dirs::data_dir()
            .map(|d| d.join("modelvault"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no platform data directory; pass --data-dir or set MODELVAULT_DATA_DIR"
                )
            }),
    }
}

pub async fn run(
    dir: PathBuf,
    listen: Option<String>,
    insecure_http: bool,
    tls: Option<(PathBuf, PathBuf)>,
    allow_new_audit_signing_key: bool,
) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MODELVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // JSON lines for log collectors when stderr is not a terminal (a
    // container, systemd's journal, a pipe); MODELVAULT_LOG_FORMAT=text
    // or =json says which.
    let json = match std::env::var("MODELVAULT_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        Ok(other) => anyhow::bail!("MODELVAULT_LOG_FORMAT={other:?}: use text or json"),
        Err(_) => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        logs.init();
    }

    // Before anything opens files: a server with many clients needs more
    // descriptors than the usual default soft limit (1,024).
    match modelvault_server::conn::raise_open_file_limit() {
        Ok(l) if l.soft > l.before => tracing::info!(
            from = l.before,
            to = l.soft,
            "raised the open-file limit to the hard limit"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }

    let cfg_path = init::config_path(&dir);
    if !cfg_path.exists() {
        let (_, token) = init::initialize(&dir, None).await?;
        let token_path = dir.join("admin-token");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_path)
            .with_context(|| format!("writing {}", token_path.display()))?;
        writeln!(f, "{token}")?;
        announce(
            json,
            format!(
                "initialized {}; the admin token is in {} (mode 0600)",
                dir.display(),
                token_path.display()
            ),
        );
    }
    let mut config = Config::load(&cfg_path)?;
    config.audit.allow_new_signing_key |= allow_new_audit_signing_key;
    let listen = listen.unwrap_or_else(|| config.server.listen.clone());
    let insecure = insecure_http || config.server.insecure_http;
    // Flags win over the config file; with TLS there is no plain listener.
    let tls = tls.or_else(|| {
        config
            .server
            .tls_cert
            .clone()
            .zip(config.server.tls_key.clone())
    });
    let tls = match tls {
        Some((cert, key)) => Some(modelvault_server::tls_config(&cert, &key)?),
        None => None,
    };
    // Bind first: a server that cannot listen starts no audit chain.
    let listener = modelvault_server::bind(&listen, insecure || tls.is_some()).await?;
    // Policy components compile in child processes of this executable
    // (/proc/self/exe: still there when the file was replaced), so the
    // memory a compile takes never stays in the server and one over its
    // time budget is killed.
    let exe = std::path::Path::new("/proc/self/exe");
    match if exe.exists() {
        Ok(exe.to_path_buf())
    } else {
        std::env::current_exe()
    } {
        Ok(exe) => modelvault_policy::compile_out_of_process(exe),
        Err(e) => {
            tracing::warn!(error = %e, "policy components will compile in the server process")
        }
    }
    let mut state = AppState::open(config).await?;
    state.tls = tls.is_some();
    let addr = listener.local_addr()?;
    modelvault_server::spawn_garbage_collector(&state);
    modelvault_server::spawn_policy_reloader(&state);
    // SIGHUP re-reads [policy.config.*] (checked before it is applied).
    modelvault_server::policies::spawn_config_reloader(&state, cfg_path.clone());
    modelvault_server::audit::spawn_failure_flusher(&state);
    // Key jobs a crash interrupted finish now.
    modelvault_server::jobs::resume_all(&state).await;
    let limits = modelvault_server::connection_limits(&state);
    if limits.max_connections < state.config.server.max_connections {
        tracing::warn!(
            "server.max_connections {} lowered to {}: the open-file limit is {:?} and a connection may need two descriptors",
            state.config.server.max_connections,
            limits.max_connections,
            modelvault_server::conn::open_file_limit()
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        send_timeout_secs = limits.send_timeout.as_secs(),
        receive_timeout_secs = limits.receive_timeout.as_secs(),
        "connection limits"
    );
    let closing = state.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    announce(
        json,
        format!(
            "modelvault listening on {scheme}://{addr} (store {})",
            state.store.url()
        ),
    );
    match tls {
        Some(tls) => modelvault_server::serve_tls(listener, tls, state, shutdown_signal()).await?,
        None => modelvault_server::serve(listener, state, shutdown_signal()).await?,
    }
    closing.close_audit().await;
    announce(json, "modelvault stopped".into());
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A line a supervisor waits for (initialized, listening, stopped): printed
/// whatever the log level, as text or, in JSON mode, as a JSON log line.
fn announce(json: bool, message: String) {
    if json {
        eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "INFO",
                "message": message,
                "target": "modelvault",
            })
        );
    } else {
        eprintln!("{message}");
    }
}
