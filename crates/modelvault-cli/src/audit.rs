//! `modelvault audit export|verify|public-key`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use modelvault_api::{AuditPage, AuditPublicKey, paths};

use crate::Output;
use crate::client::Client;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Write audit records as JSON lines (one record per line, exactly as
    /// stored), oldest first, for a SIEM.
    Export {
        /// From this time: RFC 3339 or an age such as 24h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Before this time: RFC 3339 or an age.
        #[arg(long)]
        until: Option<String>,
        /// Only this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Only this model (NS/NAME).
        #[arg(long)]
        model: Option<String>,
        /// Only this action (download, approve, authentication, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only this outcome (allowed, denied, unauthenticated, ...).
        #[arg(long)]
        outcome: Option<String>,
        /// Output file (default: stdout).
        #[arg(short = 'o', long = "output-file")]
        output: Option<PathBuf>,
    },
    /// Verify the audit chains: through the server, or offline straight
    /// against the store with --store and --public-key.
    Verify {
        /// Store URL (file:///path or s3://bucket[/prefix]) to read directly.
        #[arg(long, requires = "public_key")]
        store: Option<String>,
        /// A file holding the checkpoint public key: its hex (as `audit
        /// public-key` prints it), or the JSON of GET /v1/audit/public-key.
        #[arg(long, requires = "store")]
        public_key: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print the checkpoint public key (hex) as the only stdout line.
    PublicKey,
}

/// RFC 3339, or an age (`24h`) before now.
pub fn parse_time(s: &str) -> anyhow::Result<String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc).to_rfc3339());
    }
    let secs = modelvault_auth::parse_duration(s)
        .map_err(|_| anyhow::anyhow!("{s:?} is neither an RFC 3339 time nor an age like 24h"))?;
    let t = chrono::Utc::now() - chrono::Duration::seconds(i64::try_from(secs)?);
    Ok(t.to_rfc3339())
}

/// Calls `each` with every record `GET /v1/audit` answers for `query`
/// (`key=value` pairs, already encoded), page by page, oldest first, each
/// exactly as stored.
pub async fn each_record(
    client: &Client,
    query: &[String],
    mut each: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.to_vec();
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", paths::segment(c)));
        }
        let page: AuditPage = client
            .get_json(&format!("/v1/audit?{}", q.join("&")))
            .await?;
        for r in &page.records {
            each(r.get())?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Export {
            since,
            until,
            principal,
            model,
            action,
            outcome,
            output,
        } => {
            let client = Client::from_env()?;
            let mut query = vec!["limit=1000".to_string()];
            for (k, v) in [
                ("since", since.as_deref().map(parse_time).transpose()?),
                ("until", until.as_deref().map(parse_time).transpose()?),
                ("principal", principal),
                ("model", model),
                ("action", action),
                ("outcome", outcome),
            ] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", paths::segment(&v)));
                }
            }
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut n = 0u64;
            each_record(&client, &query, |line| {
                // Exactly as stored: the lines still hash to each next
                // record's `prev`.
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                n += 1;
                Ok(())
            })
            .await?;
            out.flush()?;
            if output.is_some() {
                eprintln!("exported {n} record(s)");
            }
            Ok(())
        }
        AuditCommand::PublicKey => {
            let client = Client::anonymous()?;
            let k: AuditPublicKey = client.get_json("/v1/audit/public-key").await?;
            println!("{}", k.public_key);
            Ok(())
        }
        AuditCommand::Verify {
            store,
            public_key,
            output,
        } => {
            let report: modelvault_audit::VerifyReport = match (store, public_key) {
                (Some(url), Some(key_file)) => {
                    let text = std::fs::read_to_string(&key_file)
                        .with_context(|| format!("reading {}", key_file.display()))?;
                    let hex_key = match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(v) if v.is_object() => {
                            v["public_key"].as_str().unwrap_or("").to_string()
                        }
                        _ => text.trim().to_string(),
                    };
                    let key = hex::decode(&hex_key)
                        .ok()
                        .filter(|k| k.len() == 32)
                        .ok_or_else(|| {
                            anyhow::anyhow!("{} holds no Ed25519 public key", key_file.display())
                        })?;
                    let objects = modelvault_storage::AuditObjects::open(&url)?;
                    modelvault_audit::verify_store(&objects, &key).await?
                }
                _ => Client::from_env()?.get_json("/v1/audit/verify").await?,
            };
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => {
                    for c in &report.chains {
                        println!("{}", c.summary());
                        if !c.open_intents.is_empty() {
                            println!(
                                "  {} intent(s) without completion: {:?}",
                                c.open_intents.len(),
                                c.open_intents
                            );
                        }
                    }
                    if report.chains.is_empty() {
                        println!("no audit chains in the store");
                    }
                }
            }
            if let Some(bad) = report.chains.iter().find(|c| c.problem.is_some()) {
                let p = bad.problem.as_ref().map(|p| (p.seq, p.kind.clone()));
                anyhow::bail!(
                    "audit verification failed: chain {} first bad seq {} ({})",
                    bad.chain,
                    p.as_ref().map_or(0, |p| p.0),
                    p.map_or_else(String::new, |p| p.1)
                );
            }
            Ok(())
        }
    }
}
