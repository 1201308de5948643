//! `modelvault policy`: install, list and remove plugins on a server, and
//! evaluate or test a component locally, offline, with the same host the
//! server runs.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use modelvault_api::{EmbeddedMetadata, PolicyInfo, PolicyMode, paths};
use modelvault_policy::{Limits, PolicyHost, PolicyRequest, cases, metadata, signing};

use crate::Output;
use crate::client::Client;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Install (or replace) a policy component on the server.
    Install {
        /// Policy name.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        /// Evaluate and record it on every request without letting it decide.
        #[arg(long)]
        shadow: bool,
        /// Detached Ed25519 signature of the component by a key the server
        /// trusts (policy.trusted_keys): a file of the 64 raw bytes (what
        /// `openssl pkeyutl -sign -rawin` writes) or of their hex or base64.
        /// The signed message is `modelvault-policy-v1:sha256:<hex digest>`.
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
    },
    /// List installed policies.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Remove a policy.
    Remove {
        /// Policy name.
        name: String,
    },
    /// Show or set the metadata a component carries (its
    /// `modelvault:metadata` section), offline.
    #[command(subcommand)]
    Metadata(MetadataCommand),
    /// Print the key id of a policy-signing public key (PEM or 64 hex
    /// digits), as `policy list` shows the signer.
    KeyId {
        /// The public key file.
        file: PathBuf,
    },
    /// Evaluate a component on one request (JSON), offline; prints the
    /// decision as JSON.
    Eval {
        /// The component (.wasm).
        file: PathBuf,
        /// The request JSON file.
        #[arg(long)]
        request: PathBuf,
        /// Configuration KEY=VALUE (repeatable).
        #[arg(long = "config")]
        config: Vec<String>,
    },
    /// Replay a candidate component against the decisions recorded in the
    /// audit trail (through the server, or offline from an `audit export`
    /// file) and report the ones it would flip. Exits 10 when the flips
    /// exceed --max-flips, so a CI job can gate a policy change.
    Replay {
        /// The candidate component (.wasm).
        file: PathBuf,
        /// The installed policy the candidate would replace (default: it is
        /// added to the chain as a new enforcing policy named `candidate`).
        #[arg(long, value_name = "NAME")]
        replaces: Option<String>,
        /// Decisions from this time: RFC 3339 or an age such as 30d
        /// (default 30d through the server; every record of a file).
        #[arg(long)]
        since: Option<String>,
        /// An `audit export` file (JSON lines) to replay offline instead of
        /// asking the server.
        #[arg(long, value_name = "EXPORT.jsonl")]
        audit_file: Option<PathBuf>,
        /// Fail (exit 10) when more decisions than this would flip.
        #[arg(long, value_name = "N")]
        max_flips: Option<u64>,
        /// The candidate's configuration KEY=VALUE (repeatable): give it the
        /// `[policy.config.NAME]` pairs it will run with.
        #[arg(long = "config")]
        config: Vec<String>,
        /// Flips shown as examples.
        #[arg(long, default_value_t = 20)]
        examples: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Run a cases file against a component, offline; exits non-zero on any
    /// mismatch.
    Test {
        /// The component (.wasm).
        file: PathBuf,
        /// The cases file.
        cases: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum MetadataCommand {
    /// Print a component's metadata as JSON (`null` if it carries none).
    Show {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Write a copy of a component whose top-level `modelvault:metadata`
    /// section holds the given fields (any such section it had is
    /// replaced). Sign the result, not the input.
    Set {
        /// The component (.wasm).
        file: PathBuf,
        /// Where to write the copy.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// The policy's name.
        #[arg(long)]
        name: Option<String>,
        /// Its version.
        #[arg(long)]
        version: Option<String>,
        /// Its author.
        #[arg(long)]
        author: Option<String>,
        /// What it does.
        #[arg(long)]
        description: Option<String>,
    },
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The offline host: default limits, compiled components cached in the
/// user's cache directory (a Python or JavaScript policy takes seconds to
/// compile; a second `policy test` should not pay that again).
fn local_host() -> anyhow::Result<PolicyHost> {
    let cache = dirs::cache_dir().map(|d| d.join("modelvault").join("policy-cache"));
    Ok(PolicyHost::new(Limits::default(), cache)?)
}

/// `name version (author): description` of a component's metadata, `-`
/// for what it lacks.
fn describe(m: Option<&EmbeddedMetadata>) -> String {
    let Some(m) = m else {
        return "-".into();
    };
    let mut s = format!(
        "{} {}",
        m.name.as_deref().unwrap_or("-"),
        m.version.as_deref().unwrap_or("-")
    );
    if let Some(a) = &m.author {
        s.push_str(&format!(" ({a})"));
    }
    if let Some(d) = &m.description {
        s.push_str(&format!(": {d}"));
    }
    s
}

pub async fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Install {
            name,
            file,
            shadow,
            signature,
        } => {
            let client = Client::from_env()?;
            let bytes = read(&file)?;
            let mode = if shadow { "shadow" } else { "enforce" };
            let mut path = format!("/v1/admin/policies/{}?mode={mode}", paths::segment(&name));
            if let Some(sig) = signature {
                let sig = signing::decode_signature_file(&read(&sig)?)
                    .with_context(|| format!("reading the signature {}", sig.display()))?;
                path.push_str(&format!("&signature={}", hex::encode(sig)));
            }
            let rb = client
                .request(reqwest::Method::PUT, &path)
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes);
            let info: PolicyInfo = client.send(rb).await?.json().await?;
            eprintln!(
                "installed policy {} ({} mode, sha256 {}, {})",
                info.name,
                if info.mode == PolicyMode::Shadow {
                    "shadow"
                } else {
                    "enforce"
                },
                info.sha256,
                match &info.signed_by {
                    Some(k) => format!("signed by {k}"),
                    None => "unsigned".into(),
                }
            );
        }
        PolicyCommand::List { output } => {
            let client = Client::from_env()?;
            let list: Vec<PolicyInfo> = client.get_json("/v1/admin/policies").await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Text => {
                    for p in &list {
                        println!(
                            "{:<28} {:<7} {:>10}  {}  {:<16}  {} {}  {}",
                            p.name,
                            if p.mode == PolicyMode::Shadow {
                                "shadow"
                            } else {
                                "enforce"
                            },
                            p.size,
                            &p.sha256[..16.min(p.sha256.len())],
                            p.signed_by.as_deref().unwrap_or("unsigned"),
                            p.installed_by,
                            p.installed_at.to_rfc3339(),
                            describe(p.metadata.as_ref()),
                        );
                    }
                }
            }
        }
        PolicyCommand::Remove { name } => {
            let client = Client::from_env()?;
            client
                .send(client.request(
                    reqwest::Method::DELETE,
                    &format!("/v1/admin/policies/{}", paths::segment(&name)),
                ))
                .await?;
            eprintln!("removed policy {name}");
        }
        PolicyCommand::Metadata(MetadataCommand::Show { file }) => {
            let meta = metadata::read(&read(&file)?)
                .with_context(|| format!("reading the metadata of {}", file.display()))?;
            println!("{}", serde_json::to_string_pretty(&meta)?);
        }
        PolicyCommand::Metadata(MetadataCommand::Set {
            file,
            output,
            name,
            version,
            author,
            description,
        }) => {
            let meta = metadata::PolicyMetadata {
                name,
                version,
                author,
                description,
            };
            let out = metadata::embed(&read(&file)?, &meta)
                .with_context(|| format!("embedding metadata into {}", file.display()))?;
            std::fs::write(&output, out)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {}", output.display());
        }
        PolicyCommand::KeyId { file } => {
            let text = String::from_utf8(read(&file)?)
                .with_context(|| format!("{} is not a text key file", file.display()))?;
            let key = signing::TrustedKey::parse(&text)
                .with_context(|| format!("reading {}", file.display()))?;
            println!("{}", key.id());
        }
        PolicyCommand::Eval {
            file,
            request,
            config,
        } => {
            let bytes = read(&file)?;
            let req: PolicyRequest = serde_json::from_slice(&read(&request)?)
                .with_context(|| format!("{} is not a policy request", request.display()))?;
            let pairs = config_pairs(&config)?;
            let decision = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let host = local_host()?;
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("policy")
                    .to_string();
                let compiled = host.compile(&name, &bytes)?;
                Ok(host.evaluate(&compiled, &req, &pairs))
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&decision.decision)?);
            if let Some(e) = decision.error {
                anyhow::bail!("the plugin failed: {e}");
            }
        }
        PolicyCommand::Replay {
            file,
            replaces,
            since,
            audit_file,
            max_flips,
            config,
            examples,
            output,
        } => {
            let wanted = replaces.clone();
            let report = crate::replay::run(crate::replay::Args {
                host: local_host()?,
                bytes: read(&file)?,
                name: replaces.unwrap_or_else(|| "candidate".into()),
                since,
                audit_file,
                config: config_pairs(&config)?,
                examples,
            })
            .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => crate::replay::print(&report),
            }
            if let Some(name) = wanted
                && report.replaces.is_none()
                && report.evaluated > 0
            {
                eprintln!(
                    "note: no recorded decision names policy {name}; the candidate was added to the chain instead (check the name with `modelvault policy list`)"
                );
            }
            if let Some(max) = max_flips
                && report.flips() > max
            {
                return Err(crate::client::Failure::Gate(format!(
                    "{} decision(s) would flip, more than --max-flips {max}",
                    report.flips()
                ))
                .into());
            }
        }
        PolicyCommand::Test {
            file,
            cases: cases_path,
            output,
        } => {
            let bytes = read(&file)?;
            let text = String::from_utf8(read(&cases_path)?).context("cases file is not UTF-8")?;
            let parsed = cases::parse(&text)?;
            let results = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let host = local_host()?;
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("policy")
                    .to_string();
                let compiled = host.compile(&name, &bytes)?;
                Ok(cases::run(&host, &compiled, &parsed)?)
            })
            .await??;
            let failed = results.iter().filter(|r| !r.passed).count();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
                Output::Text => {
                    println!(
                        "{:<6} {:<58} {:<9} {:<9} reason code",
                        "result", "case", "expected", "got"
                    );
                    for r in &results {
                        println!(
                            "{:<6} {:<58} {:<9} {:<9} {}",
                            if r.passed { "pass" } else { "FAIL" },
                            r.name,
                            format!("{:?}", r.expected).to_lowercase(),
                            format!("{:?}", r.outcome).to_lowercase(),
                            r.reason_code
                        );
                    }
                    println!("{} passed, {failed} failed", results.len() - failed);
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} cases failed", results.len());
            }
        }
    }
    Ok(())
}

/// `KEY=VALUE` arguments as configuration pairs.
fn config_pairs(config: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    config
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("config {kv:?} is not KEY=VALUE"))
        })
        .collect()
}
