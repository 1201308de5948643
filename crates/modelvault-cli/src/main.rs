//! `modelvault`: the server (`init`, `serve`) and the client (`token`,
//! `model`, `push`, `pull`). Client commands read `MODELVAULT_URL` and
//! `MODELVAULT_TOKEN`. Errors print one line on stderr and exit non-zero;
//! commands that print a secret print it as the only stdout line.

#![forbid(unsafe_code)]

// Everything this crate prints goes through `term::clean_output`, so no
// server-provided text reaches the terminal with control characters (these
// shadow std's macros in every module declared below).
macro_rules! println {
    () => { ::std::println!() };
    ($($arg:tt)*) => { ::std::println!("{}", $crate::term::clean_output(&::std::format!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { ::std::print!("{}", $crate::term::clean_output(&::std::format!($($arg)*))) };
}
macro_rules! eprintln {
    () => { ::std::eprintln!() };
    ($($arg:tt)*) => { ::std::eprintln!("{}", $crate::term::clean_output(&::std::format!($($arg)*))) };
}
macro_rules! eprint {
    ($($arg:tt)*) => { ::std::eprint!("{}", $crate::term::clean_output(&::std::format!($($arg)*))) };
}

mod approvals;
mod audit;
mod client;
mod identity;
mod keys;
mod login;
mod policy;
mod profile;
mod receipt;
mod replay;
mod serve;
mod term;
mod transfer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use modelvault_api::paths;

use crate::client::Client;

#[derive(Parser)]
#[command(
    name = "modelvault",
    version,
    about = "Encrypted, policy-gated model store",
    after_help = "Exit codes: 0 ok; 1 other failure; 2 usage (or a request the server calls invalid); 3 not authenticated (401); 4 forbidden (403, a policy denial included); 5 not found; 6 conflict (409); 7 gone (410, deleted); 8 integrity failure; 9 server or network failure; 10 a gate the caller set not passed (policy replay --max-flips)."
)]
struct Cli {
    /// CA certificate (PEM) to trust for the server and the identity
    /// provider, besides the system's.
    #[arg(long, global = true, env = "MODELVAULT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client profile from the config file (server URL, CA certificate,
    /// token); MODELVAULT_URL, MODELVAULT_TOKEN and MODELVAULT_CA_CERT
    /// override it.
    #[arg(long, global = true, env = "MODELVAULT_PROFILE")]
    profile: Option<String>,
    /// Seconds to open a connection to the server.
    #[arg(
        long,
        global = true,
        env = "MODELVAULT_CONNECT_TIMEOUT",
        default_value_t = 10.0
    )]
    connect_timeout: f64,
    /// Seconds to wait for the next bytes of an answer.
    #[arg(
        long,
        global = true,
        env = "MODELVAULT_READ_TIMEOUT",
        default_value_t = 60.0
    )]
    read_timeout: f64,
    /// Further attempts of an idempotent request (GET, HEAD) after a
    /// connection error, a timeout or a 429/502/503/504 answer, with
    /// exponential backoff and jitter.
    #[arg(long, global = true, env = "MODELVAULT_RETRIES", default_value_t = 4)]
    retries: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the config, keyring and store; print the admin token.
    Init {
        /// Data directory (default: $MODELVAULT_DATA_DIR or the platform data dir).
        #[arg(long, env = "MODELVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Store URL: file:///path or s3://bucket[/prefix] (default: DATA_DIR/store).
        #[arg(long)]
        store: Option<String>,
        /// Where the KEKs live: `local` (a keyring file in the data
        /// directory), `pkcs11` (a token; the PIN is read from
        /// $MODELVAULT_PKCS11_PIN) or `aws-kms` (AWS KMS keys; credentials,
        /// region and endpoint from the standard AWS_* variables).
        #[arg(long, default_value = "local", value_parser = ["local", "pkcs11", "aws-kms"])]
        key_provider: String,
        /// With --key-provider aws-kms: an existing symmetric KMS key (id,
        /// ARN or alias) to use as KEK version 1 (default: a new key).
        #[arg(long)]
        kms_key_id: Option<String>,
        /// With --key-provider aws-kms: the alias prefix of Modelvault's KMS
        /// keys (`alias/<prefix>-kek-<N>`, `alias/<prefix>-mac`).
        #[arg(long, default_value = "modelvault")]
        kms_alias_prefix: String,
        /// The vendor's PKCS#11 module (with --key-provider pkcs11).
        #[arg(long, required_if_eq("key_provider", "pkcs11"))]
        pkcs11_module: Option<PathBuf>,
        /// Label of the token (with --key-provider pkcs11).
        #[arg(long, required_if_eq("key_provider", "pkcs11"))]
        pkcs11_token: Option<String>,
        /// Label prefix of Modelvault's keys in the token.
        #[arg(long, default_value = "modelvault")]
        pkcs11_key_prefix: String,
    },
    /// Run the server (initializing the data directory on first start).
    Serve {
        /// Data directory (default: $MODELVAULT_DATA_DIR or the platform data dir).
        #[arg(long, env = "MODELVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Listen address (default from config: 127.0.0.1:8780).
        #[arg(long)]
        listen: Option<String>,
        /// Allow plain HTTP on a non-loopback address (testing only).
        #[arg(long)]
        insecure_http: bool,
        /// PEM certificate chain: serve HTTPS only.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Start even though audit chains exist and the checkpoint-signing
        /// key is missing, creating a new key (docs/AUDIT.md). Without it
        /// such a start is refused.
        #[arg(long)]
        allow_new_audit_signing_key: bool,
    },
    /// Sign in at the identity provider (device flow) and store the token.
    Login(login::LoginArgs),
    /// Remove the stored login token.
    Logout,
    /// Show who the server thinks you are.
    Whoami {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Role bindings: grant, revoke, list.
    #[command(subcommand)]
    Access(identity::AccessCommand),
    /// The audit trail: export, verify, public key.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Signed decision receipts: verify them offline.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// Keys: status, KEK rotation and retirement, keyring backup.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Crypto-shred a version: its keys are destroyed, the name never reused.
    Delete {
        /// NS/NAME@VERSION
        target: String,
        /// Do not ask (stdin that is not a terminal is never asked).
        #[arg(long)]
        yes: bool,
        /// Also rotate and retire every KEK version that wrapped its key,
        /// so copies of the bucket made before cannot be decrypted either.
        #[arg(long)]
        complete: bool,
        /// Output format (json: {deleted, blobs_deleted, kek_versions_outstanding, retired_kek_versions}).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Models and versions.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Upload a file or directory as a new version and commit it.
    Push {
        /// NS/NAME@VERSION
        target: String,
        /// A file (stored under its base name) or a directory.
        path: PathBuf,
        /// Version metadata KEY=VALUE (repeatable): metrics, lineage...
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        /// Version metadata key to keep sensitive (repeatable).
        #[arg(long = "sensitive-field")]
        sensitive_fields: Vec<String>,
        /// Push only paths matching this glob (repeatable; `*.json`,
        /// `weights/**`; a pattern without `/` matches at any depth).
        #[arg(long)]
        include: Vec<String>,
        /// Never push paths matching this glob (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Also push `.git/`, `.DS_Store` and `__pycache__/`, skipped by
        /// default.
        #[arg(long)]
        no_default_excludes: bool,
        /// Push the files symlinks point to (e.g. a Hugging Face cache
        /// snapshot, whose files link into blobs/); without it a symlink is
        /// refused.
        #[arg(long)]
        follow_symlinks: bool,
        /// List what would be uploaded (path and size), upload nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format (json: the committed version, as `model show NS/NAME@V` prints it; with --dry-run, the list of {path, size}).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Policy plugins: install, list, remove on a server; eval and test
    /// locally, offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Approve a version for your environment.
    Approve {
        /// NS/NAME@VERSION
        target: String,
        /// Environment (must be your token's).
        #[arg(long = "env")]
        environment: String,
        /// What the approval vouches for: review (default), compliance or
        /// training.
        #[arg(long, value_parser = ["review", "compliance", "training"])]
        kind: Option<String>,
        /// Output format (json: the version's effective approvals, [{approver, environment, time, kind}]).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Record a deployment of a version to your environment.
    Deploy {
        /// NS/NAME@VERSION
        target: String,
        /// Environment (must be your token's).
        #[arg(long = "env")]
        environment: String,
        /// Output format (json: the deployment, {environment, version, deployed_by, time, ...}).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Approvals: what waits for one in your environment.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Client profiles: server URL, CA certificate and token per profile.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// Print a shell completion script: `source <(modelvault completions bash)`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Download a version's files, verified against their SHA-256.
    Pull {
        /// NS/NAME@VERSION (VERSION may be `latest`)
        target: String,
        /// Output directory (created if missing).
        #[arg(short = 'o', long = "output-dir", default_value = ".")]
        output_dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Receive the version's key sealed to a fresh ephemeral key and
        /// decrypt here, reading the ciphertext directly (needs key-release).
        #[arg(long)]
        client_side: bool,
        /// File mode of the pulled files, octal (default: what your umask
        /// gives a new file, 0644 with umask 022).
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// Output format (json: {namespace, model, version, output_dir, files: [{path, size, sha256, continued}]}).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 644"))
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; prints it as the only stdout line.
    Create(TokenCreate),
    /// List tokens (never their secrets).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a token by name.
    Revoke {
        /// Token name.
        name: String,
    },
}

#[derive(Args)]
struct TokenCreate {
    /// Role (repeatable).
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// Principal id (default: the token name).
    #[arg(long)]
    principal: Option<String>,
    /// Namespace the token may touch (repeatable; `*` for all; default: yours).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Environment (default from the server config, `dev`).
    #[arg(long = "env")]
    environment: Option<String>,
    /// Lifetime, e.g. 90s, 30m, 12h, 7d (default and maximum from the
    /// server config: 90d and 365d).
    #[arg(long)]
    ttl: Option<String>,
    /// A group the token's principal is in, as policies see it (repeatable;
    /// grants nothing by itself: role bindings on groups apply to identity
    /// provider groups only).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// What the token may use models for, as policies see it (`training`:
    /// the bundled approval gate then needs a training approval).
    #[arg(long)]
    purpose: Option<String>,
    /// Unique token name.
    #[arg(long)]
    name: Option<String>,
    /// person or service.
    #[arg(long)]
    kind: Option<String>,
    /// Output format (json: the whole answer, {token, name, principal,
    /// expires_at, ...}, as the only stdout line; it holds the secret).
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Create a model.
    Create {
        /// NS/NAME
        target: String,
        /// public, internal (default), confidential or restricted.
        #[arg(long)]
        sensitivity: Option<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Metadata KEY=VALUE (repeatable): description, metrics, lineage...
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        /// Metadata key to keep sensitive (repeatable): sealed at rest and
        /// shown only to holders of read-sensitive.
        #[arg(long = "sensitive-field")]
        sensitive_fields: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Change a model's sensitivity, tags or metadata (a new revision).
    Set {
        /// NS/NAME
        target: String,
        /// New sensitivity (raising needs edit-metadata, lowering approve).
        #[arg(long)]
        sensitivity: Option<String>,
        /// KEY=VALUE to set (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Tag KEY to remove (repeatable).
        #[arg(long = "remove-tag")]
        remove_tags: Vec<String>,
        /// Metadata KEY=VALUE to set (repeatable).
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        /// Metadata KEY to remove (repeatable).
        #[arg(long = "remove-metadata")]
        remove_metadata: Vec<String>,
        /// Metadata key to mark sensitive (repeatable).
        #[arg(long = "sensitive-field")]
        sensitive_fields: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Every revision of a model's metadata: who, when, what.
    History {
        /// NS/NAME
        target: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show a model (with its newest versions) or one version.
    Show {
        /// NS/NAME or NS/NAME@VERSION
        target: String,
        /// How many of a model's newest versions to show (at most 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1000))]
        versions: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Set a version's lifecycle stage: candidate, production-ready,
    /// deprecated or archived (needs approve; `latest` skips archived
    /// versions and the bundled policies refuse their downloads).
    Stage {
        /// NS/NAME@VERSION
        target: String,
        /// The stage.
        #[arg(value_parser = ["candidate", "production-ready", "deprecated", "archived"])]
        stage: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List models you can see.
    List {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only models whose name, tags or visible metadata contain TEXT.
        #[arg(long)]
        search: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `NS/NAME[@VERSION]`
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub version: Option<String>,
}

pub(crate) fn parse_target(s: &str, need_version: bool) -> anyhow::Result<Target> {
    let (model, version) = match s.split_once('@') {
        Some((m, v)) => (m, Some(v.to_string())),
        None => (s, None),
    };
    let (ns, name) = model.split_once('/').ok_or_else(|| {
        anyhow::anyhow!(
            "expected NS/NAME{}, got {s:?}",
            if need_version { "@VERSION" } else { "" }
        )
    })?;
    if ns.is_empty() || name.is_empty() || name.contains('/') || version.as_deref() == Some("") {
        anyhow::bail!("expected NS/NAME[@VERSION], got {s:?}");
    }
    if need_version && version.is_none() {
        anyhow::bail!("expected NS/NAME@VERSION, got {s:?}");
    }
    Ok(Target {
        namespace: ns.into(),
        name: name.into(),
        version,
    })
}

/// The server's files are for its own user only: objects of a local store
/// (0600 in 0700 directories), the keyring, audit trail and config. The
/// local store is written by `object_store`, which gives no way to choose a
/// mode (its staging files, renames and directories take the process
/// default), so the server narrows the process umask to 0o077 before any
/// thread starts: every file and directory it creates, by any code path,
/// is then 0600/0700. Client commands keep the user's umask (a `pull`
/// writes model files as the user expects).
fn restrict_umask() {
    // Runs before the runtime starts any thread.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn main() -> ExitCode {
    // One policy compile in a process of its own, started by `serve`
    // (hidden: not a command for people).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == modelvault_policy::COMPILE_SUBCOMMAND)
    {
        return modelvault_policy::compile_child_main(std::env::args_os().skip(2));
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Init { .. } | Command::Serve { .. }) {
        restrict_umask();
    } else {
        // Pulled files get the mode a new file gets under the user's umask
        // (read by setting it and putting it back, before any thread).
        let mask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        rustix::process::umask(mask);
        transfer::set_file_mode(0o666 & !mask.as_raw_mode());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async {
        match run(cli).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let hint = did_you_mean(&e).await;
                Err((e, hint))
            }
        }
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, hint)) => {
            // One clear line on stderr.
            let mut msg = format!("{e:#}").replace('\n', " ");
            if let Some(h) = hint {
                msg.push_str("; ");
                msg.push_str(&h);
            }
            let msg = term::clean_line(&msg);
            eprintln!("error: {msg}");
            ExitCode::from(client::exit_code(&e))
        }
    }
}

/// For a model the server did not find: the closest name among the
/// models the caller can see in that namespace ("did you mean ..."), if
/// one is within two edits.
async fn did_you_mean(e: &anyhow::Error) -> Option<String> {
    let f = e
        .chain()
        .find_map(|c| c.downcast_ref::<client::ApiFailure>())?;
    let wanted = f
        .message
        .strip_prefix("model ")?
        .strip_suffix(" not found")?;
    let (ns, name) = wanted.split_once('/')?;
    let client = Client::from_env().ok()?;
    let list: modelvault_api::ModelList = client
        .get_json(&format!("/v1/models?namespace={}", paths::segment(ns)))
        .await
        .ok()?;
    let best = list
        .models
        .iter()
        .map(|m| (edit_distance(name, &m.name), &m.name))
        .filter(|(d, _)| *d <= 2)
        .min()?;
    Some(format!("did you mean {ns}/{}?", best.1))
}

/// Levenshtein distance of two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = profile::SELECTED.set(cli.profile.clone());
    match cli.ca_cert {
        Some(ca) => {
            let _ = client::CA_CERT.set(ca);
        }
        None => {
            if let Some((_, p)) = profile::selected()?
                && let Some(ca) = p.ca_cert
            {
                let _ = client::CA_CERT.set(ca);
            }
        }
    }
    let secs = |what: &str, s: f64| {
        if s.is_finite() && s > 0.0 && s <= 86_400.0 {
            Ok(std::time::Duration::from_secs_f64(s))
        } else {
            Err(anyhow::Error::from(client::UsageError(format!(
                "{what} must be a number of seconds between 0 and 86400"
            ))))
        }
    };
    let _ = client::NET.set(client::NetSettings {
        connect_timeout: secs("--connect-timeout", cli.connect_timeout)?,
        read_timeout: secs("--read-timeout", cli.read_timeout)?,
        retries: cli.retries.min(20),
    });
    match cli.command {
        Command::Login(args) => login::login(args).await,
        Command::Logout => login::logout(),
        Command::Whoami { output } => identity::whoami(output).await,
        Command::Profile(cmd) => profile::run(cmd),
        Command::Approvals(cmd) => approvals::run(cmd).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "modelvault", &mut buf);
            // Raw: the script is ours, not server text. A reader that
            // stops early (`| head`) is not an error.
            match std::io::Write::write_all(&mut std::io::stdout(), &buf) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Access(cmd) => identity::access(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Receipt(cmd) => receipt::run(cmd),
        Command::Keys(cmd) => keys::run(cmd).await,
        Command::Delete {
            target,
            yes,
            complete,
            output,
        } => {
            let t = parse_target(&target, true)?;
            keys::delete(&t, yes, complete, output).await
        }
        Command::Token(TokenCommand::List { output }) => identity::token_list(output).await,
        Command::Token(TokenCommand::Revoke { name }) => identity::token_revoke(&name).await,
        Command::Init {
            data_dir,
            store,
            key_provider,
            pkcs11_module,
            pkcs11_token,
            pkcs11_key_prefix,
            kms_key_id,
            kms_alias_prefix,
        } => {
            let dir = serve::data_dir(data_dir)?;
            if kms_key_id.is_some() && key_provider != "aws-kms" {
                return Err(
                    client::UsageError("--kms-key-id needs --key-provider aws-kms".into()).into(),
                );
            }
            let keys = match (key_provider.as_str(), pkcs11_module, pkcs11_token) {
                ("aws-kms", _, _) => {
                    let mut k = modelvault_server::Config::new(&dir, String::new()).keys;
                    k.provider = "aws-kms".into();
                    k.keyring = PathBuf::new();
                    k.aws_kms = Some(modelvault_server::config::AwsKmsConfig {
                        alias_prefix: kms_alias_prefix,
                        region: None,
                        endpoint: None,
                    });
                    Some(k)
                }
                ("pkcs11", Some(module), Some(token_label)) => {
                    let mut k = modelvault_server::Config::new(&dir, String::new()).keys;
                    k.provider = "pkcs11".into();
                    k.keyring = PathBuf::new();
                    k.pkcs11 = Some(modelvault_server::config::Pkcs11Config {
                        module,
                        token_label,
                        key_prefix: pkcs11_key_prefix,
                        pin_env: "MODELVAULT_PKCS11_PIN".into(),
                    });
                    Some(k)
                }
                _ => None,
            };
            let (_, token) =
                modelvault_server::init::initialize_with(&dir, store, keys, kms_key_id.as_deref())
                    .await?;
            eprintln!("initialized {}", dir.display());
            println!("{token}");
            Ok(())
        }
        Command::Serve {
            data_dir,
            listen,
            insecure_http,
            tls_cert,
            tls_key,
            allow_new_audit_signing_key,
        } => {
            let tls = tls_cert.zip(tls_key);
            serve::run(
                serve::data_dir(data_dir)?,
                listen,
                insecure_http,
                tls,
                allow_new_audit_signing_key,
            )
            .await
        }
        Command::Token(TokenCommand::Create(t)) => {
            let client = Client::from_env()?;
            let ttl_seconds = t
                .ttl
                .as_deref()
                .map(modelvault_auth::parse_duration)
                .transpose()?;
            let req = modelvault_api::CreateTokenRequest {
                name: t.name,
                principal: t.principal,
                kind: t.kind,
                roles: t.roles,
                namespaces: t.namespaces,
                environment: t.environment,
                ttl_seconds,
                groups: t.groups,
                purpose: t.purpose,
            };
            let resp: modelvault_api::CreateTokenResponse =
                client.post_json("/v1/tokens", &req).await?;
            match t.output {
                Output::Json => println!("{}", serde_json::to_string(&resp)?),
                Output::Text => println!("{}", resp.token),
            }
            Ok(())
        }
        Command::Model(cmd) => model(cmd).await,
        Command::Policy(cmd) => policy::run(cmd).await,
        Command::Approve {
            target,
            environment,
            kind,
            output,
        } => {
            let kind = kind
                .as_deref()
                .map(str::parse::<modelvault_api::ApprovalKind>)
                .transpose()
                .map_err(|e| crate::client::UsageError(e.to_string()))?;
            let list: Vec<modelvault_api::ApprovalView> =
                post_environment(&target, "approvals", &environment, kind).await?;
            let word = kind.unwrap_or_default();
            let n = list
                .iter()
                .filter(|a| a.environment == environment && a.kind == word)
                .count();
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            }
            eprintln!(
                "approved {target} for {environment} ({word}; {n} {word} approval(s) for {environment})"
            );
            Ok(())
        }
        Command::Deploy {
            target,
            environment,
            output,
        } => {
            let t = parse_target(&target, true)?;
            let d: modelvault_api::DeploymentView =
                post_environment(&target, "deployments", &environment, None).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            }
            eprintln!(
                "deployed {}/{}@{} to {}",
                t.namespace,
                t.name,
                d.version.unwrap_or_default(),
                d.environment
            );
            Ok(())
        }
        Command::Push {
            target,
            path,
            metadata,
            sensitive_fields,
            include,
            exclude,
            no_default_excludes,
            follow_symlinks,
            dry_run,
            output,
        } => {
            let t = parse_target(&target, true)?;
            let sel = transfer::Selection {
                include,
                exclude,
                no_default_excludes,
                follow_symlinks,
            };
            if dry_run {
                let mut listed = Vec::new();
                for (rel, abs) in transfer::collect_files(&path, &sel)? {
                    let size = std::fs::metadata(&abs)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", abs.display()))?
                        .len();
                    listed.push(serde_json::json!({ "path": rel, "size": size }));
                    if output == Output::Text {
                        println!("{rel}\t{size}");
                    }
                }
                if output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&listed)?);
                }
                return Ok(());
            }
            let meta = transfer::VersionMeta {
                metadata: pairs("metadata", metadata)?,
                sensitive_fields,
            };
            let detail = transfer::push(&Client::from_env()?, &t, &path, &sel, meta).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            }
            Ok(())
        }
        Command::Pull {
            target,
            output_dir,
            force,
            client_side,
            mode,
            output: format,
        } => {
            if let Some(m) = mode {
                transfer::set_file_mode(m);
            }
            let t = parse_target(&target, true)?;
            let report = if client_side {
                transfer::pull_client_side(&Client::from_env()?, &t, &output_dir, force).await?
            } else {
                transfer::pull(&Client::from_env()?, &t, &output_dir, force).await?
            };
            if format == Output::Json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
    }
}

/// `KEY=VALUE` arguments as a map.
fn pairs(kind: &str, list: Vec<String>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for kv in list {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{kind} {kv:?} is not KEY=VALUE"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

async fn model(cmd: ModelCommand) -> anyhow::Result<()> {
    use modelvault_api::*;
    let client = Client::from_env()?;
    match cmd {
        ModelCommand::Stage {
            target,
            stage,
            output,
        } => {
            let t = parse_target(&target, true)?;
            let stage: modelvault_api::Stage =
                stage.parse().map_err(|e: modelvault_api::UnknownWord| {
                    crate::client::UsageError(e.to_string())
                })?;
            let path = format!(
                "{}/stage",
                paths::version(
                    &t.namespace,
                    &t.name,
                    t.version.as_deref().unwrap_or_default()
                )
            );
            let view: modelvault_api::StageView = client
                .post_json(&path, &modelvault_api::StageRequest { stage })
                .await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            eprintln!("{target} is now {}", view.stage);
        }
        ModelCommand::Create {
            target,
            sensitivity,
            tags,
            metadata,
            sensitive_fields,
            output,
        } => {
            let t = parse_target(&target, false)?;
            if t.version.is_some() {
                anyhow::bail!("model create takes NS/NAME, not a version");
            }
            let req = CreateModelRequest {
                namespace: t.namespace,
                name: t.name,
                sensitivity: sensitivity.as_deref().map(str::parse).transpose()?,
                tags: pairs("tag", tags)?,
                metadata: pairs("metadata", metadata)?,
                sensitive_fields,
            };
            let m: ModelView = client.post_json("/v1/models", &req).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&m)?),
                Output::Text => println!(
                    "created {}/{} (sensitivity {})",
                    m.namespace, m.name, m.sensitivity
                ),
            }
        }
        ModelCommand::Show {
            target,
            versions,
            output,
        } => {
            let t = parse_target(&target, false)?;
            match &t.version {
                Some(v) => {
                    let d: VersionDetail = client
                        .get_json(&paths::version(&t.namespace, &t.name, v))
                        .await?;
                    match output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&d)?),
                        Output::Text => {
                            println!("{}/{}@{}", d.namespace, d.model, d.version);
                            println!("sensitivity: {}", d.sensitivity);
                            println!("uploader:    {}", d.uploader);
                            println!("created:     {}", d.created_at.to_rfc3339());
                            println!("stage:       {}", d.stage);
                            if let Some(s) = &d.signature {
                                println!(
                                    "signature:   {} ({} mode){}{}{}",
                                    s.file,
                                    s.method,
                                    if s.trusted {
                                        format!(", signed by {}", s.signer)
                                    } else {
                                        ", not by a trusted signer".to_string()
                                    },
                                    if s.files_match {
                                        ", files match"
                                    } else {
                                        ", files DO NOT match"
                                    },
                                    if s.detail.is_empty() {
                                        String::new()
                                    } else {
                                        format!(" ({})", s.detail)
                                    }
                                );
                            }
                            for (k, v) in &d.tags {
                                println!("tag:         {k}={v}");
                            }
                            for (k, v) in &d.metadata {
                                println!("metadata:    {k}={v}");
                            }
                            for (k, v) in &d.version_metadata {
                                println!("version metadata: {k}={v}");
                            }
                            println!("files:");
                            for f in &d.files {
                                println!("  {:>14}  {}  {}", f.size, f.sha256, f.path);
                            }
                            println!(
                                "approvals:{}",
                                if d.approvals.is_empty() { " none" } else { "" }
                            );
                            for a in &d.approvals {
                                println!(
                                    "  {}  {}  by {}  {}",
                                    a.environment,
                                    a.kind,
                                    a.approver,
                                    a.time.to_rfc3339()
                                );
                            }
                            println!(
                                "deployments:{}",
                                if d.deployments.is_empty() {
                                    " none"
                                } else {
                                    ""
                                }
                            );
                            for dep in &d.deployments {
                                println!(
                                    "  {}  by {}  {}",
                                    dep.environment,
                                    dep.deployer,
                                    dep.time.to_rfc3339()
                                );
                            }
                        }
                    }
                }
                None => {
                    let m: ModelView = client
                        .get_json(&format!(
                            "{}?versions={versions}",
                            paths::model(&t.namespace, &t.name)
                        ))
                        .await?;
                    match output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&m)?),
                        Output::Text => {
                            println!("{}/{}", m.namespace, m.name);
                            println!("sensitivity: {}", m.sensitivity);
                            println!("owner:       {}", m.owner);
                            for (k, v) in &m.tags {
                                println!("tag:         {k}={v}");
                            }
                            for (k, v) in &m.metadata {
                                println!("metadata:    {k}={v}");
                            }
                            println!("versions:");
                            for v in m.versions.unwrap_or_default() {
                                println!(
                                    "  {}  {} files  {} bytes  {}  {}",
                                    v.version,
                                    v.file_count,
                                    v.total_size,
                                    v.uploader,
                                    v.created_at.to_rfc3339()
                                );
                            }
                            if m.older_versions {
                                println!(
                                    "  (older versions not shown; --versions N shows up to 1000)"
                                );
                            }
                        }
                    }
                }
            }
        }
        ModelCommand::Set {
            target,
            sensitivity,
            tags,
            remove_tags,
            metadata,
            remove_metadata,
            sensitive_fields,
            output,
        } => {
            let t = parse_target(&target, false)?;
            if t.version.is_some() {
                anyhow::bail!("model set takes NS/NAME, not a version");
            }
            let set = |kind, list, remove: Vec<String>| -> anyhow::Result<_> {
                let mut m: BTreeMap<String, Option<String>> = pairs(kind, list)?
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect();
                m.extend(remove.into_iter().map(|k| (k, None)));
                Ok(m)
            };
            let req = PatchModelRequest {
                sensitivity: sensitivity.as_deref().map(str::parse).transpose()?,
                tags: set("tag", tags, remove_tags)?,
                metadata: set("metadata", metadata, remove_metadata)?,
                sensitive_fields,
            };
            let m: ModelView = client
                .patch_json(&paths::model(&t.namespace, &t.name), &req)
                .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&m)?),
                Output::Text => println!(
                    "updated {}/{} (revision {}, sensitivity {})",
                    m.namespace, m.name, m.revision, m.sensitivity
                ),
            }
        }
        ModelCommand::History { target, output } => {
            let t = parse_target(&target, false)?;
            let h: ModelHistory = client
                .get_json(&format!("{}/history", paths::model(&t.namespace, &t.name)))
                .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&h)?),
                Output::Text => {
                    for r in &h.revisions {
                        println!(
                            "{}  {}  {}  sensitivity={} tags={:?} metadata={:?}",
                            r.revision,
                            r.changed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                            r.changed_by,
                            r.sensitivity,
                            r.tags,
                            r.metadata
                        );
                    }
                }
            }
        }
        ModelCommand::List {
            namespace,
            search,
            output,
        } => {
            let mut query = Vec::new();
            if let Some(ns) = &namespace {
                query.push(format!("namespace={}", paths::segment(ns)));
            }
            if let Some(q) = &search {
                query.push(format!("q={}", paths::segment(q)));
            }
            let path = if query.is_empty() {
                "/v1/models".to_string()
            } else {
                format!("/v1/models?{}", query.join("&"))
            };
            let list: modelvault_api::ModelList = client.get_json(&path).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Text => {
                    for m in &list.models {
                        println!("{}/{}  {}", m.namespace, m.name, m.sensitivity);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `approve` and `deploy`: POST `{"environment": ...}` to the version's
/// `approvals` or `deployments` collection.
async fn post_environment<T: serde::de::DeserializeOwned>(
    target: &str,
    collection: &str,
    environment: &str,
    kind: Option<modelvault_api::ApprovalKind>,
) -> anyhow::Result<T> {
    let t = parse_target(target, true)?;
    let client = Client::from_env()?;
    let path = format!(
        "{}/{collection}",
        paths::version(
            &t.namespace,
            &t.name,
            t.version.as_deref().unwrap_or_default()
        )
    );
    client
        .post_json(
            &path,
            &modelvault_api::EnvironmentRequest {
                environment: environment.to_string(),
                kind,
            },
        )
        .await
}
