//! Client commands about who may do what: `whoami`, `access
//! grant|revoke|list`, `token list|revoke`.

use anyhow::Context as _;
use modelvault_api::{BindingList, BindingRequest, BindingSubject, TokenList, WhoAmI, paths};

use crate::Output;
use crate::client::Client;

/// `(--principal ID | --group NAME) --role ROLE [--namespace NS]...`
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["principal", "group"])))]
pub struct BindingArgs {
    /// A principal id.
    #[arg(long)]
    principal: Option<String>,
    /// A group from the identity provider.
    #[arg(long)]
    group: Option<String>,
    /// Role name.
    #[arg(long)]
    role: String,
    /// Namespace (repeatable; default or `*`: all).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
}

impl BindingArgs {
    fn request(self) -> BindingRequest {
        let subject = match (self.principal, self.group) {
            (Some(p), _) => BindingSubject::Principal(p),
            // clap's `subject` group requires exactly one of the two.
            (None, g) => BindingSubject::Group(g.unwrap_or_default()),
        };
        BindingRequest {
            subject,
            role: self.role,
            namespaces: self.namespaces,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum AccessCommand {
    /// Bind a role to a principal or group within namespaces.
    Grant(BindingArgs),
    /// Remove a binding (or some of its namespaces).
    Revoke(BindingArgs),
    /// The periodic access review: who can read and download each version
    /// today, beside who did in the period; unused access; expiring tokens.
    Review {
        /// Start of the period: RFC 3339 or an age such as 90d (default 90d).
        #[arg(long)]
        since: Option<String>,
        /// Instead of the review: who would gain or lose download and
        /// key-release access if component FILE replaced installed policy
        /// NAME (needs audit-read and manage-policies).
        #[arg(long, value_name = "NAME=FILE")]
        candidate: Option<String>,
        /// The candidate's detached signature (as for `policy install`).
        #[arg(long, value_name = "FILE", requires = "candidate")]
        signature: Option<std::path::PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: ReviewOutput,
    },
    /// List every role binding.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Formats of `access review`.
#[derive(Clone, Copy, clap::ValueEnum, Default, PartialEq, Eq)]
pub enum ReviewOutput {
    /// A Markdown report for people.
    #[default]
    Markdown,
    /// The JSON document.
    Json,
}

fn candidate_markdown(r: &modelvault_api::CandidateReview) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Who can decrypt: candidate for {}\n\nCandidate sha256 {} {} policy {}. {} decision(s) compared: {} access(es) gained, {} lost.\n",
        r.name,
        r.sha256,
        if r.replaces {
            "replacing the installed"
        } else {
            "added as the new"
        },
        r.name,
        r.evaluated,
        r.gains,
        r.losses
    );
    if r.changes.is_empty() {
        let _ = writeln!(o, "No principal or group gains or loses access.\n");
    } else {
        let _ = writeln!(
            o,
            "| version | environment | subject | action | change | today | with the candidate |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        for c in &r.changes {
            let _ = writeln!(
                o,
                "| {}/{}@{} | {} | {} {} | {} | **{}** | {} | {} |",
                c.namespace,
                c.model,
                c.version,
                c.environment,
                c.subject_type,
                c.subject,
                c.action,
                c.change,
                c.old_reason_code,
                c.new_reason_code
            );
        }
        let _ = writeln!(o);
    }
    for n in &r.notes {
        let _ = writeln!(o, "- {n}");
    }
    o
}

fn markdown(r: &modelvault_api::AccessReview) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Access review
"
    );
    let _ = writeln!(
        o,
        "Generated {} for the period since {}.
",
        r.generated_at.to_rfc3339(),
        r.since.to_rfc3339()
    );
    for v in &r.versions {
        let _ = writeln!(
            o,
            "## {}/{}@{} ({})
",
            v.namespace, v.model, v.version, v.sensitivity
        );
        let _ = writeln!(
            o,
            "| principal | kind | environment | via | read | download today | downloads in period | last |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for a in &v.access {
            let dl = if a.download_permission {
                format!("{} {}", a.policy, a.reason_code).trim().to_string()
            } else {
                "no permission".into()
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                a.principal,
                a.kind,
                a.environment,
                a.via.join(", "),
                if a.can_read { "yes" } else { "no" },
                dl,
                a.downloads,
                a.last_download.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
        }
        if !v.downloaded_without_access_today.is_empty() {
            let _ = writeln!(
                o,
                "
Downloaded in the period without access today: {}",
                v.downloaded_without_access_today.join(", ")
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "## Unused access (candidates for revocation)
"
    );
    if r.unused_access.is_empty() {
        let _ = writeln!(o, "None.");
    }
    for p in &r.unused_access {
        let _ = writeln!(o, "- {p}: may download, downloaded nothing in the period");
    }
    let _ = writeln!(
        o,
        "
## Tokens expiring within 30 days
"
    );
    if r.expiring_tokens.is_empty() {
        let _ = writeln!(o, "None.");
    }
    for t in &r.expiring_tokens {
        let _ = writeln!(
            o,
            "- {} ({}): {}{}",
            t.name,
            t.principal,
            t.expires_at.map(|e| e.to_rfc3339()).unwrap_or_default(),
            if t.expired { " (expired)" } else { "" }
        );
    }
    let _ = writeln!(
        o,
        "
## Group bindings
"
    );
    for b in &r.group_bindings {
        let _ = writeln!(
            o,
            "- group {}: {} in {}",
            b.subject,
            b.role,
            b.namespaces.join(", ")
        );
    }
    let _ = writeln!(
        o,
        "
## Notes
"
    );
    for n in &r.notes {
        let _ = writeln!(o, "- {n}");
    }
    o
}

fn print_bindings(list: &BindingList) {
    for b in &list.bindings {
        println!(
            "{}:{}  {}  {}",
            b.subject_type,
            b.subject,
            b.role,
            b.namespaces.join(",")
        );
    }
}

pub async fn access(cmd: AccessCommand) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    match cmd {
        AccessCommand::Grant(a) => {
            let req = a.request();
            let list: BindingList = client.post_json("/v1/access/grant", &req).await?;
            eprintln!(
                "{} {} in {}",
                if list.changed == Some(true) {
                    "granted"
                } else {
                    "already granted:"
                },
                req.role,
                if req.namespaces.is_empty() {
                    "*".to_string()
                } else {
                    req.namespaces.join(",")
                }
            );
        }
        AccessCommand::Revoke(a) => {
            let req = a.request();
            let list: BindingList = client.post_json("/v1/access/revoke", &req).await?;
            if list.changed != Some(true) {
                anyhow::bail!("no such binding");
            }
            eprintln!("revoked {}", req.role);
        }
        AccessCommand::Review {
            candidate: Some(candidate),
            signature,
            output,
            ..
        } => {
            let (name, file) = candidate.split_once('=').ok_or_else(|| {
                crate::client::UsageError(format!("--candidate {candidate:?} is not NAME=FILE"))
            })?;
            let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
            let mut path = format!("/v1/access/review/candidate?name={}", paths::segment(name));
            if let Some(sig) = signature {
                let raw =
                    std::fs::read(&sig).with_context(|| format!("reading {}", sig.display()))?;
                let sig = modelvault_policy::signing::decode_signature_file(&raw)
                    .with_context(|| format!("reading the signature {}", sig.display()))?;
                path.push_str(&format!("&signature={}", hex::encode(sig)));
            }
            let rb = client
                .request(reqwest::Method::POST, &path)
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes);
            let r: modelvault_api::CandidateReview = client.send(rb).await?.json().await?;
            match output {
                ReviewOutput::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                ReviewOutput::Markdown => print!("{}", candidate_markdown(&r)),
            }
        }
        AccessCommand::Review { since, output, .. } => {
            let path = match since {
                Some(s) => format!(
                    "/v1/access/review?since={}",
                    paths::segment(&crate::audit::parse_time(&s)?)
                ),
                None => "/v1/access/review".to_string(),
            };
            let r: modelvault_api::AccessReview = client.get_json(&path).await?;
            match output {
                ReviewOutput::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                ReviewOutput::Markdown => print!("{}", markdown(&r)),
            }
        }
        AccessCommand::List { output } => {
            let list: BindingList = client.get_json("/v1/access/bindings").await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Text => print_bindings(&list),
            }
        }
    }
    Ok(())
}

pub async fn whoami(output: Output) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let w: WhoAmI = client.get_json("/v1/whoami").await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&w)?),
        Output::Text => {
            println!("principal:   {} ({})", w.id, w.kind);
            println!("via:         {}", w.authenticated_by);
            if let Some(i) = &w.issuer {
                println!("issuer:      {i}");
            }
            if let Some(n) = &w.token_name {
                println!("token:       {n}");
            }
            println!("environment: {}", w.environment);
            println!("groups:      {}", w.groups.join(", "));
            for (k, v) in &w.attributes {
                println!("attribute:   {k}={v}");
            }
            println!(
                "expires:     {}",
                w.expires_at.map_or("never".into(), |t| t.to_rfc3339())
            );
            for g in &w.grants {
                println!(
                    "role:        {} in {} (from {})",
                    g.role,
                    g.namespaces.join(","),
                    g.source
                );
            }
        }
    }
    Ok(())
}

pub async fn token_list(output: Output) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let list: TokenList = client.get_json("/v1/tokens").await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Output::Text => {
            for t in &list.tokens {
                println!(
                    "{}  {}  {}  {}  {}{}",
                    t.name,
                    t.principal,
                    t.roles.join(","),
                    t.namespaces.join(","),
                    t.expires_at.map_or("no expiry".into(), |e| e.to_rfc3339()),
                    if t.expired { " (expired)" } else { "" }
                );
            }
        }
    }
    Ok(())
}

pub async fn token_revoke(name: &str) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    client
        .delete(&format!("/v1/tokens/{}", paths::segment(name)))
        .await?;
    eprintln!("revoked token {name}");
    Ok(())
}
