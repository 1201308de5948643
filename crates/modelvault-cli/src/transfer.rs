//! `push` and `pull`. Files are read and written with blocking std I/O on
//! blocking threads, hashed on the way; pull writes each file to a
//! temporary name beside its target and renames it only after its SHA-256
//! matches the server's manifest.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use modelvault_api::{CommitFile, CommitRequest, UploadResponse, VersionDetail, paths};
use tokio::sync::mpsc;

use crate::Target;
use crate::client::Client;

const CHUNK: usize = 1 << 20;

fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// What a push takes from a directory.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    /// Only paths matching one of these globs (all when empty).
    pub include: Vec<String>,
    /// Never paths matching one of these globs.
    pub exclude: Vec<String>,
    /// Keep `.git/`, `.DS_Store` and `__pycache__/`, skipped by default.
    pub no_default_excludes: bool,
    /// Push the files symlinks point to (a Hugging Face cache snapshot's
    /// files are links into `blobs/`), even outside the directory.
    pub follow_symlinks: bool,
}

/// Skipped unless `--no-default-excludes`.
const DEFAULT_EXCLUDES: [&str; 5] = [
    ".git",
    "**/.git/**",
    "**/.DS_Store",
    "**/__pycache__/**",
    crate::receipt::RECEIPTS_FILE,
];

fn globs(patterns: &[String], what: &str) -> anyhow::Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        // A pattern without a slash matches at any depth, as in .gitignore.
        let p = if p.contains('/') {
            p.clone()
        } else {
            format!("**/{p}")
        };
        let glob = globset::GlobBuilder::new(&p)
            .literal_separator(true)
            .build()
            .with_context(|| format!("{what} pattern {p:?}"))?;
        b.add(glob);
    }
    b.build().with_context(|| format!("{what} patterns"))
}

/// The files a push takes from `root` as (relative `/` path, path to read),
/// sorted. A symlink is refused unless `follow_symlinks`; a followed link
/// that points at a directory is refused (no loops).
pub fn collect_files(root: &Path, sel: &Selection) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let meta = std::fs::symlink_metadata(root).with_context(|| format!("{}", root.display()))?;
    if meta.is_file() || (meta.file_type().is_symlink() && sel.follow_symlinks && root.is_file()) {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{} has no UTF-8 file name", root.display()))?;
        return Ok(vec![(name.to_string(), root.to_path_buf())]);
    }
    if !meta.is_dir() {
        anyhow::bail!("{} is neither a file nor a directory", root.display());
    }
    let include = globs(&sel.include, "--include")?;
    let mut exclude_patterns = sel.exclude.clone();
    if !sel.no_default_excludes {
        exclude_patterns.extend(DEFAULT_EXCLUDES.iter().map(|s| s.to_string()));
    }
    let exclude = globs(&exclude_patterns, "--exclude")?;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(root)?;
            let mut parts = Vec::new();
            for c in rel.components() {
                match c {
                    Component::Normal(s) => parts.push(
                        s.to_str()
                            .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))?
                            .to_string(),
                    ),
                    _ => anyhow::bail!("unexpected path component in {}", path.display()),
                }
            }
            let rel = parts.join("/");
            let mut ft = entry.file_type()?;
            if ft.is_symlink() {
                if !sel.follow_symlinks {
                    anyhow::bail!(
                        "{} is a symlink: pass --follow-symlinks to push what it points to",
                        path.display()
                    );
                }
                ft = std::fs::metadata(&path)
                    .with_context(|| format!("following {}", path.display()))?
                    .file_type();
                if ft.is_dir() {
                    anyhow::bail!(
                        "{} links to a directory; only links to files are followed",
                        path.display()
                    );
                }
            }
            if ft.is_dir() {
                if !exclude.is_match(&rel) && !exclude.is_match(format!("{rel}/x")) {
                    stack.push(path);
                }
            } else if ft.is_file() {
                if exclude.is_match(&rel) || (!sel.include.is_empty() && !include.is_match(&rel)) {
                    continue;
                }
                out.push((rel, path));
            } else {
                anyhow::bail!(
                    "{} is not a regular file (devices and sockets are not pushed)",
                    path.display()
                );
            }
        }
    }
    out.sort();
    if out.is_empty() {
        anyhow::bail!("{} holds no files to push", root.display());
    }
    Ok(out)
}

/// Size and hex SHA-256 of what was read, once reading ends.
type Digest = tokio::sync::oneshot::Receiver<std::io::Result<(u64, String)>>;

/// Streams a file from a blocking thread, hashing it; the digest arrives on
/// the returned oneshot once the last chunk is read.
fn file_stream(
    path: PathBuf,
    pb: ProgressBar,
) -> (
    impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    Digest,
) {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let result = (|| -> std::io::Result<(u64, String)> {
            let mut f = std::fs::File::open(&path)?;
            let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
            let mut total = 0u64;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    let n = f.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                sha.update(&buf);
                total += filled as u64;
                pb.inc(filled as u64);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Err(std::io::Error::other("upload stopped"));
                }
                if filled < CHUNK {
                    break;
                }
            }
            Ok((total, hex::encode(sha.finish())))
        })();
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
        let _ = done_tx.send(result);
    });
    (
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)),
        done_rx,
    )
}

/// Metadata recorded with a pushed version.
#[derive(Default)]
pub struct VersionMeta {
    pub metadata: std::collections::BTreeMap<String, String>,
    pub sensitive_fields: Vec<String>,
}

pub async fn push(
    client: &Client,
    t: &Target,
    root: &Path,
    sel: &Selection,
    meta: VersionMeta,
) -> anyhow::Result<VersionDetail> {
    let version = t.version.as_deref().unwrap_or_default();
    let files = collect_files(root, sel)?;
    let base = paths::version(&t.namespace, &t.name, version);
    // What an interrupted push of this version already uploaded: a file
    // whose size and SHA-256 match is not sent again.
    let uploaded: std::collections::BTreeMap<String, (u64, String)> = match client
        .get_json::<modelvault_api::UploadList>(&paths::version_uploads(
            &t.namespace,
            &t.name,
            version,
        ))
        .await
    {
        Ok(list) => list
            .files
            .into_iter()
            .map(|f| (f.path, (f.size, f.sha256)))
            .collect(),
        // Committed already: the commit below says whether with this content.
        Err(e) if crate::client::is_api_error(&e, "version_committed") => {
            return recommit(client, t, &base, &files, meta).await;
        }
        Err(e) => return Err(e),
    };
    let mut commit = Vec::with_capacity(files.len());
    let mut skipped = 0usize;
    for (rel, abs) in &files {
        let size = std::fs::metadata(abs)?.len();
        if let Some((up_size, up_sha)) = uploaded.get(rel)
            && *up_size == size
        {
            let (size, sha256) = file_digest(abs.clone())
                .await
                .with_context(|| format!("reading {}", abs.display()))?;
            if *up_sha == sha256 {
                skipped += 1;
                commit.push(CommitFile {
                    path: rel.clone(),
                    size,
                    sha256,
                });
                continue;
            }
        }
        let pb = progress(size);
        pb.set_message(rel.clone());
        // A whole-file upload the server may have missed (a connection
        // error, or a 502/503/504) is sent again from the start of the
        // file, with backoff; an upload is idempotent (the newest upload of
        // a path wins at commit).
        let mut attempt = 0u32;
        let (resp, digest) = loop {
            let (stream, digest) = file_stream(abs.clone(), pb.clone());
            pb.set_position(0);
            let rb = client
                .request(
                    reqwest::Method::PUT,
                    &paths::version_file(&t.namespace, &t.name, version, rel),
                )
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream));
            match client.send(rb).await {
                Ok(r) => break (r, digest),
                // Committed already: a retry of a push whose commit landed
                // (the answer lost to a crash or a dropped connection).
                Err(e) if crate::client::is_api_error(&e, "version_committed") => {
                    pb.finish_and_clear();
                    return recommit(client, t, &base, &files, meta).await;
                }
                Err(e)
                    if (crate::client::exit_code(&e) == 9
                        || e.downcast_ref::<crate::client::ApiFailure>()
                            .is_some_and(|f| f.status == 429))
                        && attempt < crate::client::net().retries =>
                {
                    tokio::time::sleep(crate::client::backoff(attempt, None)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.context(format!("uploading {rel}"))),
            }
        };
        let receipt: UploadResponse = resp.json().await?;
        let (sent, sha256) = digest
            .await
            .map_err(|_| anyhow::anyhow!("reading {} stopped", abs.display()))?
            .with_context(|| format!("reading {}", abs.display()))?;
        pb.finish_and_clear();
        if receipt.sha256 != sha256 || receipt.size != sent {
            anyhow::bail!(
                "{rel}: the server received other bytes than were sent (file changed during upload?)"
            );
        }
        commit.push(CommitFile {
            path: rel.clone(),
            size: sent,
            sha256,
        });
    }
    let detail: VersionDetail = client
        .post_json(
            &format!("{base}/commit"),
            &CommitRequest {
                files: commit,
                metadata: meta.metadata,
                sensitive_fields: meta.sensitive_fields,
            },
        )
        .await
        .context("committing")?;
    let resumed = if skipped > 0 {
        format!(", {skipped} already uploaded by an earlier push")
    } else {
        String::new()
    };
    eprintln!(
        "pushed {}/{}@{} ({} files{resumed})",
        detail.namespace,
        detail.model,
        detail.version,
        detail.files.len()
    );
    Ok(detail)
}

/// A push of a version that is committed already succeeds if the committed
/// content is exactly this push's: the local files are hashed and listed
/// in a commit, which the server accepts only when paths, sizes and
/// SHA-256s (and metadata) all match what it holds; otherwise the push
/// fails with 409 `version_committed`.
async fn recommit(
    client: &Client,
    t: &Target,
    base: &str,
    files: &[(String, PathBuf)],
    meta: VersionMeta,
) -> anyhow::Result<VersionDetail> {
    let mut commit = Vec::with_capacity(files.len());
    for (rel, abs) in files {
        let (size, sha256) = file_digest(abs.clone())
            .await
            .with_context(|| format!("reading {}", abs.display()))?;
        commit.push(CommitFile {
            path: rel.clone(),
            size,
            sha256,
        });
    }
    let version = t.version.as_deref().unwrap_or_default();
    let request = CommitRequest {
        files: commit,
        metadata: meta.metadata,
        sensitive_fields: meta.sensitive_fields,
    };
    let detail: VersionDetail = match client.post_json(&format!("{base}/commit"), &request).await {
        Ok(d) => d,
        Err(e) if crate::client::is_api_error(&e, "version_committed") => {
            return Err(e.context(format!(
                "{}/{}@{version} is committed with other content",
                t.namespace, t.name
            )));
        }
        Err(e) => return Err(e.context("committing")),
    };
    eprintln!(
        "{}/{}@{} was already pushed with this content ({} files); nothing to do",
        detail.namespace,
        detail.model,
        detail.version,
        detail.files.len()
    );
    Ok(detail)
}

/// Size and hex SHA-256 of a local file, read on a blocking thread.
async fn file_digest(path: PathBuf) -> anyhow::Result<(u64, String)> {
    tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut f = std::fs::File::open(&path)?;
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            total += n as u64;
        }
        Ok((total, hex::encode(sha.finish())))
    })
    .await?
    .map_err(Into::into)
}

/// A server-supplied path must stay inside the output directory.
fn safe_relative(p: &str) -> anyhow::Result<PathBuf> {
    if paths::check_file_path(p).is_err() {
        anyhow::bail!("server sent an unsafe file path {p:?}; refusing");
    }
    let path = PathBuf::from(p);
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        anyhow::bail!("server sent an unsafe file path {p:?}; refusing");
    }
    Ok(path)
}

/// The mode pulled files get: `--mode`, else what the user's umask gives a
/// new file (0644 with umask 022), read once at start-up ([`set_file_mode`]).
static FILE_MODE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0o644);

/// Sets the mode pulled files get (the umask's default at start-up, then
/// `--mode` if given).
pub fn set_file_mode(mode: u32) {
    FILE_MODE.store(mode & 0o7777, std::sync::atomic::Ordering::Relaxed);
}

fn file_mode() -> u32 {
    FILE_MODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Gives a finished download its mode and moves it into place.
fn finish_file(part: &Path, target: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(part, std::fs::Permissions::from_mode(file_mode()))
        .with_context(|| format!("setting the mode of {}", part.display()))?;
    std::fs::rename(part, target).with_context(|| format!("writing {}", target.display()))
}

/// Where an interrupted download of `f` into `target` is kept, so the same
/// pull run again continues it: a hidden file beside the target, named with
/// the start of the file's SHA-256 (a partial of other content is never
/// continued).
fn partial_path(target: &Path, sha256: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag: String = sha256.chars().take(12).collect();
    target.with_file_name(format!(".{name}.{tag}.modelvault-part"))
}

/// Hashes (and counts) what a partial file holds.
fn hash_file(file: &mut std::fs::File) -> std::io::Result<(ring::digest::Context, u64)> {
    use std::io::Read as _;
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = file.read(&mut buf)?;
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
        n += k as u64;
    }
    Ok((sha, n))
}

/// What a pull wrote (`pull --output json`).
#[derive(Debug, serde::Serialize)]
pub struct PullReport {
    /// Namespace.
    pub namespace: String,
    /// Model.
    pub model: String,
    /// The version pulled (`latest`/`deployed-ENV` resolved).
    pub version: String,
    /// The directory written into.
    pub output_dir: PathBuf,
    /// Each file written.
    pub files: Vec<PulledFile>,
}

/// One file of a [`PullReport`].
#[derive(Debug, serde::Serialize)]
pub struct PulledFile {
    /// Path inside the version (and under `output_dir`).
    pub path: String,
    /// Size.
    pub size: u64,
    /// SHA-256 (hex), checked.
    pub sha256: String,
    /// Whether it continued a partial file of an earlier pull.
    pub continued: bool,
}

/// How one request for a file's bytes ended.
enum Fetched {
    /// The answer ended: the whole partial file's size and SHA-256, and
    /// whether it continued a partial file.
    Done {
        n: u64,
        sha256: String,
        resumed: bool,
    },
    /// The transfer broke off; what arrived is kept in the partial file.
    Broken(reqwest::Error),
}

/// Requests the bytes of `url` from `kept` on (`Range`), appends them to
/// `part` (or writes it afresh on a 200) on a blocking thread that hashes
/// as it writes, and syncs what arrived whatever happens.
async fn fetch_into_part(
    client: &Client,
    url: &str,
    part: &Path,
    kept: u64,
    pb: &ProgressBar,
    receipts: &mut Vec<String>,
) -> anyhow::Result<Fetched> {
    let mut rb = client.request(reqwest::Method::GET, url);
    if kept > 0 {
        rb = rb.header(reqwest::header::RANGE, format!("bytes={kept}-"));
    }
    let resp = client.send(rb).await?;
    // Every answer that releases bytes carries a receipt: kept, even if the
    // transfer then breaks off.
    if let Some(r) = resp
        .headers()
        .get(modelvault_audit::RECEIPT_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        receipts.push(r.to_string());
    }
    // A 206 continues the partial file; a 200 is the whole file.
    let append = kept > 0 && resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    pb.set_position(if append { kept } else { 0 });
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let part_w = part.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(!append)
            .open(&part_w)?;
        let (mut sha, mut n) = if append {
            hash_file(&mut file)?
        } else {
            (ring::digest::Context::new(&ring::digest::SHA256), 0)
        };
        while let Some(chunk) = rx.blocking_recv() {
            sha.update(&chunk);
            n += chunk.len() as u64;
            file.write_all(&chunk)?;
        }
        // Kept, even when the transfer broke off: it is continued later.
        file.sync_all()?;
        Ok((n, hex::encode(sha.finish())))
    });
    let mut stream = resp.bytes_stream();
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                pb.inc(c.len() as u64);
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let (n, sha256) = writer.await??;
    Ok(match failed {
        Some(e) => Fetched::Broken(e),
        None => Fetched::Done {
            n,
            sha256,
            resumed: append,
        },
    })
}

/// `pull`: every file through the governed download, written beside its
/// target as a partial file and moved into place once its SHA-256 matches.
/// A partial file left by an interrupted pull (Ctrl-C, a dropped
/// connection, a server restart) is continued with `Range`; `--force`
/// starts over.
pub async fn pull(
    client: &Client,
    t: &Target,
    out: &Path,
    force: bool,
) -> anyhow::Result<PullReport> {
    let version = t.version.as_deref().unwrap_or_default();
    let detail: VersionDetail = client
        .get_json(&paths::version(&t.namespace, &t.name, version))
        .await?;
    // Check every target before writing anything.
    let mut plan = Vec::with_capacity(detail.files.len());
    for f in &detail.files {
        let target = out.join(safe_relative(&f.path)?);
        if !force && std::fs::symlink_metadata(&target).is_ok() {
            anyhow::bail!("{} exists; pass --force to overwrite", target.display());
        }
        plan.push((f, target));
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut resumed = 0u64;
    let mut written = Vec::with_capacity(plan.len());
    let mut receipts = Vec::new();
    for (f, target) in plan {
        let resumed_before = resumed;
        let dir = target.parent().unwrap_or(out).to_path_buf();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let part = partial_path(&target, &f.sha256);
        if force {
            let _ = std::fs::remove_file(&part);
        }
        let pb = progress(f.size);
        pb.set_message(f.path.clone());
        let url = paths::version_file(&detail.namespace, &detail.model, &detail.version, &f.path);
        // A transfer that breaks off is continued from the partial file,
        // in this run (with backoff) and, past the retry budget, by the
        // next run of the same pull.
        let mut attempt = 0u32;
        let (n, sha256) = loop {
            let mut kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if kept > f.size {
                std::fs::remove_file(&part)
                    .with_context(|| format!("removing {}", part.display()))?;
                kept = 0;
            }
            if kept == f.size && f.size > 0 {
                let part = part.clone();
                break tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
                    let (sha, n) = hash_file(&mut std::fs::File::open(&part)?)?;
                    Ok((n, hex::encode(sha.finish())))
                })
                .await??;
            }
            let fetched = match fetch_into_part(client, &url, &part, kept, &pb, &mut receipts).await
            {
                Ok(x) => x,
                // The server went away (after this run's retries): what
                // arrived stays in the partial file.
                Err(e) if crate::client::exit_code(&e) == 9 => {
                    pb.finish_and_clear();
                    crate::receipt::keep(out, &receipts)?;
                    return Err(e.context(format!(
                        "downloading {}; run the same pull again to continue it",
                        f.path
                    )));
                }
                Err(e) => {
                    crate::receipt::keep(out, &receipts)?;
                    return Err(e.context(format!("downloading {}", f.path)));
                }
            };
            match fetched {
                Fetched::Done {
                    n,
                    sha256,
                    resumed: r,
                } => {
                    resumed += u64::from(r);
                    break (n, sha256);
                }
                Fetched::Broken(_) if attempt < crate::client::net().retries => {
                    tokio::time::sleep(crate::client::backoff(attempt, None)).await;
                    attempt += 1;
                }
                Fetched::Broken(e) => {
                    pb.finish_and_clear();
                    crate::receipt::keep(out, &receipts)?;
                    return Err(crate::client::Failure::Network(format!(
                        "downloading {}: transfer aborted ({e}); run the same pull again to continue it",
                        f.path
                    ))
                    .into());
                }
            }
        };
        pb.finish_and_clear();
        if n != f.size || sha256 != f.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(crate::client::Failure::Integrity(format!(
                "downloading {}: SHA-256 mismatch; nothing written",
                f.path
            ))
            .into());
        }
        finish_file(&part, &target)?;
        written.push(PulledFile {
            path: f.path.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            continued: resumed > resumed_before,
        });
    }
    crate::receipt::keep(out, &receipts)?;
    let continued = if resumed > 0 {
        format!(", {resumed} continued from a partial file")
    } else {
        String::new()
    };
    eprintln!(
        "pulled {}/{}@{} ({} files{continued}) into {}",
        detail.namespace,
        detail.model,
        detail.version,
        detail.files.len(),
        out.display()
    );
    Ok(PullReport {
        namespace: detail.namespace,
        model: detail.model,
        version: detail.version,
        output_dir: out.to_path_buf(),
        files: written,
    })
}

/// `pull --client-side`: asks for the version's DEK sealed to a fresh
/// ephemeral key, fetches the stored ciphertext directly (presigned URLs on
/// S3), and decrypts and verifies here. The DEK zeroizes when done.
pub async fn pull_client_side(
    client: &Client,
    t: &Target,
    out: &Path,
    force: bool,
) -> anyhow::Result<PullReport> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use modelvault_format::{FileIdentity, StreamOpener};
    let version = t.version.as_deref().unwrap_or_default();
    // Check every target before asking for the key.
    let detail: VersionDetail = client
        .get_json(&paths::version(&t.namespace, &t.name, version))
        .await?;
    for f in &detail.files {
        let target = out.join(safe_relative(&f.path)?);
        if !force && std::fs::symlink_metadata(&target).is_ok() {
            anyhow::bail!("{} exists; pass --force to overwrite", target.display());
        }
    }
    let version = detail.version.as_str();
    let key = modelvault_release::ClientKey::generate();
    let rel: modelvault_api::KeyReleaseResponse = client
        .post_json(
            &format!(
                "{}/key-release",
                paths::version(&t.namespace, &t.name, version)
            ),
            &modelvault_api::KeyReleaseRequest {
                public_key: B64.encode(key.public_bytes()),
            },
        )
        .await?;
    let sealed = modelvault_release::SealedDek {
        enc: B64.decode(&rel.enc).context("release: bad enc")?,
        ciphertext: B64
            .decode(&rel.sealed_dek)
            .context("release: bad sealed_dek")?,
    };
    let ctx = modelvault_release::ReleaseContext {
        request_id: &rel.request_id,
        namespace: &rel.namespace,
        model: &rel.model,
        version: &rel.version,
        dek_generation: rel.dek_generation,
    };
    let dek = key
        .open(&sealed, &ctx)
        .map_err(|e| anyhow::anyhow!("release: {e}"))?;
    drop(key);
    let mut plan = Vec::with_capacity(rel.files.len());
    for f in &rel.files {
        let target = out.join(safe_relative(&f.path)?);
        if !force && std::fs::symlink_metadata(&target).is_ok() {
            anyhow::bail!("{} exists; pass --force to overwrite", target.display());
        }
        plan.push((f, target));
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The key is released: its receipt is kept whatever happens next.
    crate::receipt::keep(out, rel.receipt.as_slice())?;
    let mut pulled = Vec::with_capacity(plan.len());
    for (f, target) in plan {
        let dir = target.parent().unwrap_or(out).to_path_buf();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let rb = if f.presigned {
            client.http.get(&f.url)
        } else {
            client.request(reqwest::Method::GET, &f.url)
        };
        let resp = client
            .send(rb)
            .await
            .with_context(|| format!("fetching the ciphertext of {}", f.path))?;
        let pb = progress(f.size);
        pb.set_message(f.path.clone());
        let mut tmp = tempfile::Builder::new()
            .prefix(".modelvault-")
            .suffix(".part")
            .tempfile_in(&dir)
            .with_context(|| format!("temporary file in {}", dir.display()))?;
        let mut stream = resp.bytes_stream();
        let bad = |what: &str| {
            anyhow::Error::from(crate::client::Failure::Integrity(format!(
                "{}: {what}; nothing written",
                f.path
            )))
        };
        let mut salt = [0u8; modelvault_format::SALT_LEN];
        hex::decode_to_slice(&f.salt, &mut salt).map_err(|_| bad("bad salt in the release"))?;
        let identity = FileIdentity {
            namespace: &rel.namespace,
            model: &rel.model,
            version: &rel.version,
            path: &f.path,
            dek_generation: rel.dek_generation,
        };
        let mut opener = StreamOpener::new(&dek, &identity, f.ciphertext_size, Some(salt));
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut written = 0u64;
        let mut plain = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("fetching {}", f.path))?;
            plain.clear();
            opener
                .update(&chunk, &mut plain)
                .map_err(|e| bad(&format!("the ciphertext failed to open ({e})")))?;
            sha.update(&plain);
            tmp.write_all(&plain)?;
            written += plain.len() as u64;
            pb.inc(plain.len() as u64);
        }
        opener
            .finish()
            .map_err(|e| bad(&format!("ciphertext incomplete ({e})")))?;
        pb.finish_and_clear();
        if written != f.size || hex::encode(sha.finish()) != f.sha256 {
            return Err(bad("SHA-256 mismatch"));
        }
        tmp.as_file().sync_all()?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(file_mode()))?;
        }
        tmp.persist(&target)
            .map_err(|e| anyhow::anyhow!("writing {}: {}", target.display(), e.error))?;
        pulled.push(PulledFile {
            path: f.path.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            continued: false,
        });
    }
    drop(dek);
    eprintln!(
        "pulled {}/{}@{} ({} files, decrypted here) into {}",
        rel.namespace,
        rel.model,
        rel.version,
        rel.files.len(),
        out.display()
    );
    Ok(PullReport {
        namespace: rel.namespace.clone(),
        model: rel.model.clone(),
        version: rel.version.clone(),
        output_dir: out.to_path_buf(),
        files: pulled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_paths_stay_inside_the_output_directory() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "./a", ""] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_relative("a/b.bin").unwrap(), PathBuf::from("a/b.bin"));
    }
}
