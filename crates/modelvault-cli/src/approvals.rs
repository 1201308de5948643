//! `modelvault approvals list`: which committed versions in the caller's
//! namespaces wait for an approval in an environment (default: the
//! caller's), and which of them the caller may give (the `approve`
//! permission in that namespace, not the version's uploader: separation of
//! duties), composed from the read API. The policies decide what an
//! approval is needed for; this lists what is missing, not what a policy
//! will require.

use modelvault_api::{ModelList, ModelView, VersionDetail, WhoAmI, paths};
use serde::Serialize;

use crate::Output;
use crate::client::Client;

#[derive(clap::Subcommand)]
pub enum ApprovalsCommand {
    /// Versions without an approval for the environment, newest first, and
    /// whether you may approve each.
    List {
        /// Environment (default: your identity's).
        #[arg(long = "env")]
        environment: Option<String>,
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Output format (json: [{namespace, model, version, uploader,
        /// created_at, environment, approvals, deployed, you_can_approve}]).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// One waiting version.
#[derive(Serialize)]
struct Pending {
    namespace: String,
    model: String,
    version: String,
    uploader: String,
    created_at: chrono::DateTime<chrono::Utc>,
    environment: String,
    /// Approvals it has, in any environment (`env:approver`).
    approvals: Vec<String>,
    /// Whether it is deployed to the environment already.
    deployed: bool,
    you_can_approve: bool,
}

fn may_approve(me: &WhoAmI, namespace: &str) -> bool {
    me.grants.iter().any(|g| {
        g.permissions.iter().any(|p| p == "approve")
            && g.namespaces.iter().any(|n| n == "*" || n == namespace)
    })
}

pub async fn run(cmd: ApprovalsCommand) -> anyhow::Result<()> {
    let ApprovalsCommand::List {
        environment,
        namespace,
        output,
    } = cmd;
    let client = Client::from_env()?;
    let me: WhoAmI = client.get_json("/v1/whoami").await?;
    let env = environment.unwrap_or_else(|| me.environment.clone());
    let query = match &namespace {
        Some(ns) => format!("/v1/models?namespace={}", paths::segment(ns)),
        None => "/v1/models".to_string(),
    };
    let models: ModelList = client.get_json(&query).await?;
    let mut pending = Vec::new();
    for m in &models.models {
        let view: ModelView = client
            .get_json(&paths::model(&m.namespace, &m.name))
            .await?;
        for v in view.versions.unwrap_or_default() {
            let d: VersionDetail = client
                .get_json(&paths::version(&m.namespace, &m.name, &v.version))
                .await?;
            if d.approvals.iter().any(|a| a.environment == env) {
                continue;
            }
            pending.push(Pending {
                you_can_approve: may_approve(&me, &d.namespace) && d.uploader != me.id,
                deployed: d.deployments.iter().any(|x| x.environment == env),
                approvals: d
                    .approvals
                    .iter()
                    .map(|a| format!("{}:{}", a.environment, a.approver))
                    .collect(),
                environment: env.clone(),
                namespace: d.namespace,
                model: d.model,
                version: d.version,
                uploader: d.uploader,
                created_at: d.created_at,
            });
        }
    }
    pending.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&pending)?),
        Output::Text => {
            if pending.is_empty() {
                eprintln!("no version waits for an approval in {env}");
            }
            for p in &pending {
                println!(
                    "{}/{}@{}  waits for {}  uploaded by {}  {}{}",
                    p.namespace,
                    p.model,
                    p.version,
                    p.environment,
                    p.uploader,
                    if p.you_can_approve {
                        "you can approve"
                    } else {
                        "you cannot approve"
                    },
                    if p.approvals.is_empty() {
                        String::new()
                    } else {
                        format!("  (approved: {})", p.approvals.join(", "))
                    }
                );
            }
        }
    }
    Ok(())
}
