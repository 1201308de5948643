//! `modelvault keys ...` (server jobs: status, rotate-kek, retire-kek;
//! local: backup and restore of the keyring) and `modelvault delete`.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use modelvault_api::{
    DeleteResponse, JobPhase, JobState, JobView, KeysStatus, RetireRequest, RotateDekRequest, paths,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Output;
use crate::client::Client;

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// KEK versions, how many keys each wraps, and key jobs.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Make a new KEK version current and rewrap every stored key under it
    /// (no blob is rewritten). Waits and shows progress unless --no-wait.
    RotateKek {
        /// Start the job and return.
        #[arg(long)]
        no_wait: bool,
        /// Output format (json: the job as `GET /v1/keys/jobs/{id}` shows it, when started with --no-wait, else when done).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Give one version a new DEK: its blobs are re-encrypted under new
    /// object keys and the version switches to them at once; the old blobs
    /// are deleted after keys.dek_rotation_grace_secs (downloads in flight
    /// finish on them). Revokes a released DEK in the live bucket. Waits for
    /// the switch unless --no-wait (with --complete, for the whole job).
    Rotate {
        /// NS/NAME@VERSION
        target: String,
        /// Start the job and return (prints the job id).
        #[arg(long)]
        no_wait: bool,
        /// After the cleanup, also rotate the KEK and retire every older KEK
        /// version that wrapped a key of the version, so its revoked DEKs
        /// cannot be unwrapped from a copy of the bucket or put back into
        /// it (as `delete --complete` does).
        #[arg(long)]
        complete: bool,
        /// Output format (json: the job, as for rotate-kek).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Destroy a KEK version in the key provider (refused while any live key
    /// record uses it).
    RetireKek {
        /// The version.
        version: u32,
        /// Output format (json: the key status afterwards, as `keys status --output json`).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Write the keyring encrypted under a passphrase (argon2id +
    /// AES-256-GCM). The passphrase comes from MODELVAULT_BACKUP_PASSPHRASE
    /// or, when stdin is not a terminal, its first line.
    Backup {
        /// Data directory of the server whose keyring to back up.
        #[arg(long, env = "MODELVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Output file.
        #[arg(short = 'o', long = "output-file")]
        output: PathBuf,
    },
    /// Restore a keyring backup into a data directory (see OPERATIONS.md).
    Restore {
        /// Data directory to restore into.
        #[arg(long, env = "MODELVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The backup file.
        #[arg(short = 'i', long = "input-file")]
        input: PathBuf,
        /// Replace an existing keyring file.
        #[arg(long)]
        force: bool,
    },
}

/// Polls a job until it ends, with a progress bar.
async fn wait(client: &Client, job: JobView) -> anyhow::Result<JobView> {
    wait_until(client, job, |_| false).await
}

/// Polls a job until it ends or `enough` says so, with a progress bar.
async fn wait_until(
    client: &Client,
    job: JobView,
    enough: impl Fn(&JobView) -> bool,
) -> anyhow::Result<JobView> {
    let pb = indicatif::ProgressBar::new(job.total.max(1));
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(job.kind.to_string());
    let mut job = job;
    while job.state == JobState::Running && !enough(&job) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        job = client
            .get_json(&format!("/v1/keys/jobs/{}", job.id))
            .await?;
        pb.set_length(job.total.max(1));
        pb.set_position(job.done);
    }
    pb.finish_and_clear();
    if job.state != JobState::Done && !enough(&job) {
        anyhow::bail!(
            "job {} {}: {}",
            job.id,
            job.state,
            job.error.clone().unwrap_or_default()
        );
    }
    Ok(job)
}

/// Rotates and waits; returns the new KEK version.
pub async fn rotate_and_wait(client: &Client) -> anyhow::Result<u32> {
    let job: JobView = client
        .post_json("/v1/keys/rotate-kek", &serde_json::json!({}))
        .await?;
    let job = wait(client, job).await?;
    Ok(job.target_kek.unwrap_or_default())
}

#[derive(Serialize, Deserialize)]
struct Backup {
    format: String,
    kdf: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

fn passphrase() -> anyhow::Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("MODELVAULT_BACKUP_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        anyhow::bail!("set MODELVAULT_BACKUP_PASSPHRASE (or pipe the passphrase on stdin)");
    }
    let mut s = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut s)?;
    let line = Zeroizing::new(s.lines().next().unwrap_or("").to_string());
    Ok(line)
}

/// The shortest passphrase `keys backup` accepts, in characters.
const MIN_PASSPHRASE_CHARS: usize = 12;

/// The largest argon2id parameters `keys restore` runs. A backup file's
/// parameters are read before anything in it is authenticated (the tag
/// only checks once the KDF has run), so a damaged or hostile file must not
/// make the KDF take unbounded memory or time: 1 GiB, 10 passes, 8 lanes
/// (this version writes 64 MiB, 3 passes, 1 lane).
const MAX_M_COST_KIB: u32 = 1 << 20;
const MAX_T_COST: u32 = 10;
const MAX_P_COST: u32 = 8;
/// The longest salt accepted in a backup file (this version writes 16 bytes).
const MAX_SALT_LEN: usize = 64;

/// Checks a backup's KDF parameters against the maxima above.
fn check_kdf_bounds(b: &Backup) -> anyhow::Result<()> {
    if b.m_cost_kib > MAX_M_COST_KIB || b.t_cost > MAX_T_COST || b.p_cost > MAX_P_COST {
        anyhow::bail!(
            "the backup asks for argon2id m={} KiB, t={}, p={}: above this version's maxima (m={MAX_M_COST_KIB} KiB, t={MAX_T_COST}, p={MAX_P_COST}); damaged or not a backup of this tool",
            b.m_cost_kib,
            b.t_cost,
            b.p_cost
        );
    }
    Ok(())
}

fn derive(pass: &str, salt: &[u8], b: &Backup) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    check_kdf_bounds(b)?;
    if salt.len() > MAX_SALT_LEN {
        anyhow::bail!("the backup's salt is longer than {MAX_SALT_LEN} bytes; damaged?");
    }
    let params = argon2::Params::new(b.m_cost_kib, b.t_cost, b.p_cost, Some(32))
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass.as_bytes(), salt, key.as_mut())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(key)
}

fn keyring_path(data_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = crate::serve::data_dir(data_dir)?;
    let cfg = modelvault_server::Config::load(&modelvault_server::init::config_path(&dir))?;
    if cfg.keys.provider != "local" {
        anyhow::bail!(
            "keys.provider is {:?}: its keys never leave the token, so there is no keyring to back up; back up the token with its vendor's tools (docs/OPERATIONS.md)",
            cfg.keys.provider
        );
    }
    Ok(cfg.keys.keyring)
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use ring::rand::SecureRandom as _;
    match cmd {
        KeysCommand::Status { output } => {
            let client = Client::from_env()?;
            let s: KeysStatus = client.get_json("/v1/keys/status").await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
                Output::Text => {
                    println!("key provider: {}", s.provider);
                    println!("current KEK version: {}", s.current_kek_version);
                    for k in &s.kek_versions {
                        println!(
                            "  KEK {}  {}  wraps {} key(s)",
                            k.version, k.state, k.dek_count
                        );
                    }
                    for j in &s.jobs {
                        let phase = match (j.state, j.phase) {
                            (JobState::Running, Some(JobPhase::Grace)) => format!(
                                " (switched; old blobs kept until {})",
                                j.cleanup_after
                                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                                    .unwrap_or_default()
                            ),
                            (JobState::Running, Some(p)) => format!(" ({p})"),
                            _ => String::new(),
                        };
                        println!(
                            "job {}  {}  {}{}  {}/{}{}",
                            j.id,
                            j.kind,
                            j.state,
                            phase,
                            j.done,
                            j.total,
                            j.version
                                .as_ref()
                                .map(|v| format!("  {v}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
        KeysCommand::RotateKek { no_wait, output } => {
            let client = Client::from_env()?;
            let job: JobView = client
                .post_json("/v1/keys/rotate-kek", &serde_json::json!({}))
                .await?;
            if no_wait {
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&job)?),
                    Output::Text => println!("{}", job.id),
                }
                eprintln!(
                    "started KEK rotation job {} (KEK version {})",
                    job.id,
                    job.target_kek.unwrap_or_default()
                );
            } else {
                let job = wait(&client, job).await?;
                if output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                }
                eprintln!(
                    "KEK version {} is current; {} key(s) rewrapped",
                    job.target_kek.unwrap_or_default(),
                    job.done
                );
            }
        }
        KeysCommand::Rotate {
            target,
            no_wait,
            complete,
            output,
        } => {
            let json = |job: &JobView| -> anyhow::Result<()> {
                if output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(job)?);
                }
                Ok(())
            };
            let t = crate::parse_target(&target, true)?;
            let version = t.version.as_deref().unwrap_or_default();
            let client = Client::from_env()?;
            let job: JobView = client
                .post_json(
                    &format!(
                        "{}/rotate-dek",
                        paths::version(&t.namespace, &t.name, version)
                    ),
                    &RotateDekRequest { complete },
                )
                .await?;
            if no_wait {
                match output {
                    Output::Json => json(&job)?,
                    Output::Text => println!("{}", job.id),
                }
                eprintln!(
                    "started DEK rotation job {} (generation {})",
                    job.id,
                    job.target_generation.unwrap_or_default()
                );
            } else if complete {
                eprintln!(
                    "rotating {}; the job waits keys.dek_rotation_grace_secs after the switch, then cleans up, rotates the KEK and retires the old KEK versions (job {})",
                    job.version.clone().unwrap_or_default(),
                    job.id
                );
                let job = wait(&client, job).await?;
                json(&job)?;
                eprintln!(
                    "{} now uses DEK generation {} and its old blobs are deleted; KEK version {} is current; retired KEK version(s) {:?}: rotation complete (job {})",
                    job.version.clone().unwrap_or_default(),
                    job.target_generation.unwrap_or_default(),
                    job.target_kek.unwrap_or_default(),
                    job.retired_keks,
                    job.id
                );
            } else {
                let job = wait_until(&client, job, |j| j.switched_at.is_some()).await?;
                json(&job)?;
                eprintln!(
                    "{} now uses DEK generation {} ({} file(s) re-encrypted); its old blobs are deleted after {} (job {})",
                    job.version.clone().unwrap_or_default(),
                    job.target_generation.unwrap_or_default(),
                    job.done,
                    job.cleanup_after
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_else(|| "now".into()),
                    job.id
                );
            }
        }
        KeysCommand::RetireKek { version, output } => {
            let client = Client::from_env()?;
            let status: KeysStatus = client
                .post_json("/v1/keys/retire-kek", &RetireRequest { version })
                .await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            }
            eprintln!("KEK version {version} destroyed");
        }
        KeysCommand::Backup { data_dir, output } => {
            let path = keyring_path(data_dir)?;
            let plain = Zeroizing::new(
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            );
            let pass = passphrase()?;
            // Characters, not bytes: "ééééééé" is 7 characters in 14 bytes.
            if pass.chars().count() < MIN_PASSPHRASE_CHARS {
                anyhow::bail!("the passphrase must be at least {MIN_PASSPHRASE_CHARS} characters");
            }
            let rng = ring::rand::SystemRandom::new();
            let mut salt = [0u8; 16];
            let mut nonce = [0u8; 12];
            rng.fill(&mut salt)
                .map_err(|_| anyhow::anyhow!("random source failed"))?;
            rng.fill(&mut nonce)
                .map_err(|_| anyhow::anyhow!("random source failed"))?;
            let mut b = Backup {
                format: "modelvault-keyring-backup-v1".into(),
                kdf: "argon2id".into(),
                m_cost_kib: 65_536,
                t_cost: 3,
                p_cost: 1,
                salt: B64.encode(salt),
                nonce: B64.encode(nonce),
                ciphertext: String::new(),
            };
            let key = derive(&pass, &salt, &b)?;
            let k = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| anyhow::anyhow!("key"))?,
            );
            let mut buf = plain.to_vec();
            k.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b.format.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
            b.ciphertext = B64.encode(&buf);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            f.write_all(&serde_json::to_vec_pretty(&b)?)?;
            f.sync_all()?;
            eprintln!(
                "keyring {} backed up to {} (argon2id + AES-256-GCM)",
                path.display(),
                output.display()
            );
        }
        KeysCommand::Restore {
            data_dir,
            input,
            force,
        } => {
            let path = keyring_path(data_dir)?;
            if path.exists() && !force {
                anyhow::bail!("{} exists; pass --force to replace it", path.display());
            }
            let b: Backup = serde_json::from_slice(
                &std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?,
            )
            .with_context(|| format!("{} is not a keyring backup", input.display()))?;
            if b.format != "modelvault-keyring-backup-v1" || b.kdf != "argon2id" {
                anyhow::bail!(
                    "{} is not a keyring backup this version reads",
                    input.display()
                );
            }
            let pass = passphrase()?;
            let salt = B64.decode(&b.salt)?;
            let nonce: [u8; 12] = B64
                .decode(&b.nonce)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("bad nonce"))?;
            let key = derive(&pass, &salt, &b)?;
            let k = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| anyhow::anyhow!("key"))?,
            );
            let mut buf = Zeroizing::new(B64.decode(&b.ciphertext)?);
            let plain = k
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(b.format.as_bytes()),
                    buf.as_mut_slice(),
                )
                .map_err(|_| anyhow::anyhow!("wrong passphrase or damaged backup"))?;
            let tmp = path.with_extension("restore-tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(plain)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            eprintln!("keyring restored to {}", path.display());
        }
    }
    Ok(())
}

/// `modelvault delete NS/NAME@VERSION [--yes] [--complete]`.
pub async fn delete(
    target: &crate::Target,
    yes: bool,
    complete: bool,
    output: Output,
) -> anyhow::Result<()> {
    let version = target.version.as_deref().unwrap_or_default();
    let name = format!("{}/{}@{version}", target.namespace, target.name);
    if !yes && std::io::stdin().is_terminal() {
        eprint!("This destroys {name} for good. Type its name to confirm: ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if line.trim() != name {
            anyhow::bail!("not confirmed; nothing deleted");
        }
    }
    let client = Client::from_env()?;
    let resp = client
        .send(client.request(
            reqwest::Method::DELETE,
            &paths::version(&target.namespace, &target.name, version),
        ))
        .await?;
    let r: DeleteResponse = resp.json().await.context("reading the server's answer")?;
    let mut retired: Vec<u32> = Vec::new();
    let report = |retired: &[u32]| -> anyhow::Result<()> {
        if output == Output::Json {
            let mut v = serde_json::to_value(&r)?;
            v["retired_kek_versions"] = serde_json::json!(retired);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Ok(())
    };
    eprintln!(
        "deleted {} ({} blob(s)); its keys are destroyed",
        r.deleted, r.blobs_deleted
    );
    if r.kek_versions_outstanding.is_empty() {
        eprintln!("shred complete: no KEK version that wrapped its key remains");
        return report(&retired);
    }
    if !complete {
        eprintln!(
            "copies of the bucket made before this delete stay readable until KEK version(s) {:?} are retired: run `modelvault keys rotate-kek`, then `modelvault keys retire-kek V` for each (or delete with --complete next time)",
            r.kek_versions_outstanding
        );
        return report(&retired);
    }
    let new = rotate_and_wait(&client).await?;
    eprintln!("rotated to KEK version {new}");
    for v in &r.kek_versions_outstanding {
        let _: KeysStatus = client
            .post_json("/v1/keys/retire-kek", &RetireRequest { version: *v })
            .await
            .with_context(|| format!("retiring KEK version {v}"))?;
        eprintln!("retired KEK version {v}");
        retired.push(*v);
    }
    eprintln!("shred complete");
    report(&retired)
}
