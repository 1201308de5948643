//! Client profiles: `config.toml` in the config directory
//! (`$MODELVAULT_CONFIG_DIR`, else `~/.config/modelvault`), one table per
//! profile with the server URL, a CA certificate and a token; chosen with
//! `--profile NAME` or `MODELVAULT_PROFILE` (else the profile named
//! `default`, if any). `MODELVAULT_URL`, `MODELVAULT_TOKEN` and
//! `MODELVAULT_CA_CERT` override it.
//!
//! Invariant: a profile's token (like a stored login) is sent only to the
//! URL it was stored for; the file is written 0600 and tokens are never
//! printed.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Output;

/// One profile.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    /// Server URL.
    pub url: String,
    /// CA certificate (PEM) to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// API token, bound to `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("url", &self.url)
            .field("ca_cert", &self.ca_cert)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// The profile name from `--profile` / `MODELVAULT_PROFILE`.
pub static SELECTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn path() -> anyhow::Result<PathBuf> {
    Ok(crate::login::config_dir()?.join("config.toml"))
}

fn read() -> anyhow::Result<File> {
    let p = path()?;
    match std::fs::read_to_string(&p) {
        Ok(t) => {
            toml::from_str(&t).with_context(|| format!("{} is not a profiles file", p.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn write(file: &File) -> anyhow::Result<PathBuf> {
    let p = path()?;
    let body = Zeroizing::new(toml::to_string(file)?);
    crate::login::write_private(&p, body.as_bytes())?;
    Ok(p)
}

/// The profile in effect: the one named by `--profile`/`MODELVAULT_PROFILE`
/// (an error if it does not exist), else `default` if there is one.
pub fn selected() -> anyhow::Result<Option<(String, Profile)>> {
    let named = SELECTED.get().cloned().flatten();
    let mut file = read()?;
    match named {
        Some(n) => match file.profiles.remove(&n) {
            Some(p) => Ok(Some((n, p))),
            None => anyhow::bail!(
                "no profile {n:?} (profiles: {})",
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        },
        None => Ok(file
            .profiles
            .remove("default")
            .map(|p| ("default".into(), p))),
    }
}

/// Two URLs name the same server (scheme, host, port and path, without a
/// trailing slash).
pub fn same_server(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        }
        _ => false,
    }
}

#[derive(clap::Subcommand)]
pub enum ProfileCommand {
    /// Create or change a profile; the token, if any, is read from stdin
    /// (`--token-stdin`), never from the command line.
    Set {
        /// Profile name.
        name: String,
        /// Server URL.
        #[arg(long)]
        url: String,
        /// CA certificate (PEM) to trust for this server.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Read the profile's API token from stdin.
        #[arg(long)]
        token_stdin: bool,
    },
    /// List profiles (URL, CA certificate, whether a token is stored).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Remove a profile.
    Remove {
        /// Profile name.
        name: String,
    },
}

pub fn run(cmd: ProfileCommand) -> anyhow::Result<()> {
    let mut file = read()?;
    match cmd {
        ProfileCommand::Set {
            name,
            url,
            ca_cert,
            token_stdin,
        } => {
            let parsed = url::Url::parse(&url).with_context(|| format!("{url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("a profile's URL must be http:// or https://");
            }
            let old = file.profiles.remove(&name).unwrap_or_default();
            let token = if token_stdin {
                let mut text = Zeroizing::new(String::new());
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the token from stdin")?;
                let t = text.trim();
                if t.is_empty() {
                    anyhow::bail!("no token on stdin");
                }
                Some(t.to_string())
            } else if same_server(&old.url, &url) {
                old.token
            } else {
                // A token stays bound to the URL it was stored for.
                None
            };
            file.profiles.insert(
                name.clone(),
                Profile {
                    url,
                    ca_cert: ca_cert.or(old.ca_cert),
                    token,
                },
            );
            let p = write(&file)?;
            eprintln!("profile {name} saved in {}", p.display());
        }
        ProfileCommand::List { output } => {
            let rows: Vec<serde_json::Value> = file
                .profiles
                .iter()
                .map(|(n, p)| {
                    serde_json::json!({
                        "name": n,
                        "url": p.url,
                        "ca_cert": p.ca_cert,
                        "token": p.token.is_some(),
                    })
                })
                .collect();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Text => {
                    for (n, p) in &file.profiles {
                        println!(
                            "{n}\t{}\t{}",
                            p.url,
                            if p.token.is_some() {
                                "token"
                            } else {
                                "no token"
                            }
                        );
                    }
                }
            }
        }
        ProfileCommand::Remove { name } => {
            if file.profiles.remove(&name).is_none() {
                anyhow::bail!("no profile {name:?}");
            }
            write(&file)?;
            eprintln!("profile {name} removed");
        }
    }
    Ok(())
}
