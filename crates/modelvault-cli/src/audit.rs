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
        /// Receipts files (as `pull` keeps them): report any receipt whose
        /// intent record the trail lacks (repeatable).
        #[arg(long, value_name = "FILE")]
        receipts: Vec<PathBuf>,
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
            receipts,
            output,
        } => {
            let mut receipt_texts = Vec::new();
            for f in &receipts {
                receipt_texts.extend(crate::receipt::read_receipts(f)?);
            }
            let mut report: modelvault_audit::VerifyReport = match (store, public_key) {
                (Some(url), Some(key_file)) => {
                    let key = crate::receipt::read_public_key(&key_file)?;
                    let objects = modelvault_storage::AuditObjects::open(&url)?;
                    let mut report = modelvault_audit::verify_store(&objects, &key).await?;
                    if !receipt_texts.is_empty() {
                        report.receipts =
                            check_receipts_offline(&objects, &key, &receipt_texts).await?;
                    }
                    report
                }
                _ => {
                    let client = Client::from_env()?;
                    let mut report: modelvault_audit::VerifyReport =
                        client.get_json("/v1/audit/verify").await?;
                    if !receipt_texts.is_empty() {
                        report.receipts = check_receipts_online(&client, &receipt_texts).await?;
                    }
                    report
                }
            };
            if report.receipts.iter().any(|r| r.status != "recorded") {
                report.ok = false;
            }
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
                    for r in &report.receipts {
                        println!(
                            "receipt of request {} (chain {} seq {}): {}: {}",
                            r.request_id, r.chain, r.seq, r.status, r.message
                        );
                    }
                }
            }
            if let Some(bad) = report.receipts.iter().find(|r| r.status != "recorded") {
                return Err(crate::client::Failure::Integrity(format!(
                    "audit verification failed: receipt of request {} ({}/{}) {}: {}",
                    bad.request_id, bad.chain, bad.seq, bad.status, bad.message
                ))
                .into());
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

/// Each receipt verified with `key`, then looked up in the store.
async fn check_receipts_offline(
    objects: &modelvault_storage::AuditObjects,
    key: &[u8],
    texts: &[String],
) -> anyhow::Result<Vec<modelvault_audit::ReceiptCheck>> {
    use modelvault_audit::ReceiptCheck;
    let mut verified = Vec::new();
    let mut out = Vec::new();
    for t in texts {
        match modelvault_audit::verify_receipt(t, key) {
            Ok(r) => verified.push(r),
            Err(e) => out.push(ReceiptCheck::bad_signature(e.to_string())),
        }
    }
    let wanted = verified
        .iter()
        .map(|r| (r.audit.chain.clone(), r.audit.seq))
        .collect();
    let found = modelvault_audit::records_at(objects, &wanted).await?;
    for r in &verified {
        out.push(ReceiptCheck::of(
            r,
            found.get(&(r.audit.chain.clone(), r.audit.seq)),
        ));
    }
    Ok(out)
}

/// Each receipt verified with the server's audit key, then looked up
/// through `GET /v1/audit` (the intents of its principal around its time).
async fn check_receipts_online(
    client: &Client,
    texts: &[String],
) -> anyhow::Result<Vec<modelvault_audit::ReceiptCheck>> {
    use modelvault_audit::ReceiptCheck;
    let k: AuditPublicKey = client.get_json("/v1/audit/public-key").await?;
    let key = hex::decode(&k.public_key).context("the server's audit public key is not hex")?;
    let mut out = Vec::new();
    for t in texts {
        let r = match modelvault_audit::verify_receipt(t, &key) {
            Ok(r) => r,
            Err(e) => {
                out.push(ReceiptCheck::bad_signature(e.to_string()));
                continue;
            }
        };
        let window = chrono::Duration::minutes(10);
        let query = vec![
            "limit=1000".to_string(),
            "type=intent".to_string(),
            format!("principal={}", paths::segment(&r.principal.id)),
            format!("since={}", paths::segment(&(r.time - window).to_rfc3339())),
            format!("until={}", paths::segment(&(r.time + window).to_rfc3339())),
        ];
        let mut found: Option<modelvault_audit::AuditRecord> = None;
        each_record(client, &query, |line| {
            let rec: modelvault_audit::AuditRecord = serde_json::from_str(line)?;
            if rec.chain == r.audit.chain && rec.seq == r.audit.seq {
                found = Some(rec);
            }
            Ok(())
        })
        .await?;
        out.push(ReceiptCheck::of(&r, found.as_ref()));
    }
    Ok(out)
}
