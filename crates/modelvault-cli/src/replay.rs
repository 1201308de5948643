//! `modelvault policy replay`: the audit trail's recorded decisions (from
//! the server, or an `audit export` file) replayed with a candidate
//! component in the offline policy host ([`modelvault_policy::replay`]).

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::Context as _;
use modelvault_audit::AuditRecord;
use modelvault_policy::replay::{RecordedCase, RecordedDecision, Replay, ReplayReport};
use modelvault_policy::{ChainEntry, Outcome, PolicyRequest};

use crate::client::Client;

/// What to replay.
pub struct Args {
    /// The offline policy host to run the candidate in.
    pub host: modelvault_policy::PolicyHost,
    /// The candidate component.
    pub bytes: Vec<u8>,
    /// The plugin it replaces (or is added as).
    pub name: String,
    /// From this time (RFC 3339 or an age).
    pub since: Option<String>,
    /// An export file to read instead of the server.
    pub audit_file: Option<PathBuf>,
    /// The candidate's configuration.
    pub config: Vec<(String, String)>,
    /// Flips kept as examples.
    pub examples: usize,
}

/// A record with decisions as a replayable case: `Ok(None)` when it holds
/// no decisions (nothing was decided), `Err(())` when it holds decisions
/// but no usable input (written before inputs were recorded).
fn case_of(rec: AuditRecord) -> Result<Option<RecordedCase>, ()> {
    if rec.decisions.is_empty() {
        return Ok(None);
    }
    let input = rec.input.ok_or(())?;
    let input: PolicyRequest = serde_json::from_value(input).map_err(|_| ())?;
    let decisions = rec
        .decisions
        .into_iter()
        .map(|d| {
            let outcome = match d.outcome.as_str() {
                "allow" => Outcome::Allow,
                "abstain" => Outcome::Abstain,
                _ => Outcome::Deny,
            };
            RecordedDecision {
                plugin: d.plugin,
                outcome,
                reason_code: d.reason_code,
                reason: d.reason,
                shadow: d.mode == "shadow",
            }
        })
        .collect();
    Ok(Some(RecordedCase {
        record: format!("{}/{}", rec.chain, rec.seq),
        time: rec.time.to_rfc3339(),
        input,
        decisions,
    }))
}

/// Reads the records, replays each decision point and reports.
pub async fn run(args: Args) -> anyhow::Result<ReplayReport> {
    let since = args
        .since
        .as_deref()
        .map(crate::audit::parse_time)
        .transpose()?;
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut take = |line: &str| -> anyhow::Result<()> {
        let rec: AuditRecord =
            serde_json::from_str(line).context("an audit record that does not parse")?;
        if !rec.decisions.is_empty() {
            records.push(rec);
        }
        Ok(())
    };
    match &args.audit_file {
        Some(path) => {
            let since = since
                .as_deref()
                .map(chrono::DateTime::parse_from_rfc3339)
                .transpose()?;
            let f =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let rec: AuditRecord = serde_json::from_str(&line).with_context(|| {
                    format!(
                        "{} line {} is not an audit record (give the file `audit export` wrote)",
                        path.display(),
                        n + 1
                    )
                })?;
                if since.is_some_and(|t| rec.time < t) || rec.decisions.is_empty() {
                    continue;
                }
                records.push(rec);
            }
        }
        None => {
            let client = Client::from_env()?;
            let since = match since {
                Some(t) => t,
                None => crate::audit::parse_time("30d")?,
            };
            let query = vec![
                "limit=1000".to_string(),
                format!("since={}", modelvault_api::paths::segment(&since)),
            ];
            crate::audit::each_record(&client, &query, &mut take).await?;
        }
    }
    let Args {
        host,
        bytes,
        name,
        config,
        examples,
        ..
    } = args;
    tokio::task::spawn_blocking(move || -> anyhow::Result<ReplayReport> {
        let compiled = host
            .compile(&name, &bytes)
            .context("the candidate is not a policy component this host runs")?;
        let entry = ChainEntry {
            policy: std::sync::Arc::new(compiled),
            shadow: false,
            config,
        };
        let mut replay = Replay::new(&host, entry, examples);
        for rec in records {
            match case_of(rec) {
                Ok(Some(case)) => replay.case(&case),
                Ok(None) => {}
                Err(()) => replay.skip_without_input(),
            }
        }
        Ok(replay.finish())
    })
    .await?
}

/// The report as text: one summary line, then one line per example.
pub fn print(r: &ReplayReport) {
    let word = |o: Outcome| match o {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
        Outcome::Abstain => "abstain",
    };
    println!(
        "candidate {} (sha256 {}, {}): {} decision(s) replayed, {} unchanged, {} allow->deny, {} deny->allow{}{}",
        r.candidate,
        &r.sha256[..16.min(r.sha256.len())],
        if r.replaces.is_some() {
            "replacing the installed policy"
        } else {
            "added to the chain"
        },
        r.evaluated,
        r.unchanged,
        r.allow_to_deny,
        r.deny_to_allow,
        if r.skipped_without_input > 0 {
            format!(
                ", {} record(s) without a recorded input skipped",
                r.skipped_without_input
            )
        } else {
            String::new()
        },
        if r.candidate_errors > 0 {
            format!(
                ", {} candidate failure(s) counted as deny",
                r.candidate_errors
            )
        } else {
            String::new()
        },
    );
    for f in &r.examples {
        println!(
            "  {}->{}  {}  {} {} {} in {} (request {}): {} -> {}: {}",
            word(f.old.outcome),
            word(f.new.outcome),
            f.time,
            f.principal,
            f.action,
            f.resource,
            f.environment,
            f.request_id,
            f.old.reason_code,
            f.new.reason_code,
            f.new.reason,
        );
    }
}
