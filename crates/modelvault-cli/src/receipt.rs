//! `modelvault receipt verify`, and the receipts file `pull` keeps: one
//! compact JWS per line (docs/AUDIT.md, "Receipts").

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use modelvault_audit::{Receipt, verify_receipt};

use crate::Output;

/// The file `pull` appends the receipts of what it downloaded to, in the
/// output directory.
pub const RECEIPTS_FILE: &str = ".modelvault-receipts";

#[derive(clap::Subcommand)]
pub enum ReceiptCommand {
    /// Verify receipts offline: each line of FILE is one receipt (a
    /// compact JWS), as `pull` keeps them in `.modelvault-receipts`.
    Verify {
        /// The receipts file (or a file holding one receipt).
        file: PathBuf,
        /// The audit signing key: its hex (as `audit public-key` prints
        /// it), or the JSON of GET /v1/audit/public-key.
        #[arg(long)]
        public_key: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// The raw Ed25519 key in a key file: hex, or the public-key JSON.
pub fn read_public_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let hex_key = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.is_object() => v["public_key"].as_str().unwrap_or("").to_string(),
        _ => text.trim().to_string(),
    };
    hex::decode(&hex_key)
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| anyhow::anyhow!("{} holds no Ed25519 public key", path.display()))
}

/// The receipts in a file, one per non-empty line.
pub fn read_receipts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        anyhow::bail!("{} holds no receipt", path.display());
    }
    Ok(lines)
}

/// Appends receipts to the receipts file in `dir`.
pub fn keep(dir: &Path, receipts: &[String]) -> anyhow::Result<()> {
    if receipts.is_empty() {
        return Ok(());
    }
    let path = dir.join(RECEIPTS_FILE);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    for r in receipts {
        writeln!(f, "{r}").with_context(|| format!("writing {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One line for people.
pub fn describe(r: &Receipt) -> String {
    let mut what = format!("{}/{}@{}", r.namespace, r.model, r.version);
    if let Some(f) = &r.file {
        what.push('/');
        what.push_str(f);
    }
    let decisions: Vec<String> = r
        .decisions
        .iter()
        .map(|d| format!("{} {}", d.plugin, d.outcome))
        .collect();
    format!(
        "{} {} by {} in {} at {} (request {}, audit {}/{}): {}",
        r.action,
        what,
        r.principal.id,
        r.environment,
        r.time.to_rfc3339(),
        r.request_id,
        r.audit.chain,
        r.audit.seq,
        decisions.join(", ")
    )
}

pub fn run(cmd: ReceiptCommand) -> anyhow::Result<()> {
    match cmd {
        ReceiptCommand::Verify {
            file,
            public_key,
            output,
        } => {
            let key = read_public_key(&public_key)?;
            let mut good = Vec::new();
            let mut bad = Vec::new();
            for (n, jws) in read_receipts(&file)?.iter().enumerate() {
                match verify_receipt(jws, &key) {
                    Ok(r) => good.push(r),
                    Err(e) => bad.push(format!("receipt {} of {}: {e}", n + 1, file.display())),
                }
            }
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "valid": good,
                        "invalid": bad,
                    }))?
                ),
                Output::Text => {
                    for r in &good {
                        println!("valid  {}", describe(r));
                    }
                    for b in &bad {
                        println!("INVALID  {b}");
                    }
                }
            }
            if !bad.is_empty() {
                return Err(crate::client::Failure::Integrity(format!(
                    "{} of {} receipt(s) do not verify: {}",
                    bad.len(),
                    bad.len() + good.len(),
                    bad[0]
                ))
                .into());
            }
            Ok(())
        }
    }
}
