//! Client commands about who may do what: `whoami`, `access
//! grant|revoke|list`, `token list|revoke`.

use modelvault_server::api::{BindingList, BindingRequest, TokenList, WhoAmI};

use crate::Output;
use crate::client::{Client, enc};

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
        BindingRequest {
            principal: self.principal,
            group: self.group,
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
    /// List every role binding.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
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
    client.delete(&format!("/v1/tokens/{}", enc(name))).await?;
    eprintln!("revoked token {name}");
    Ok(())
}
