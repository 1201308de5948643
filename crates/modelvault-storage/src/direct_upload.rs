//! Multipart uploads (blobs) on the local store, written around the page
//! cache.
//!
//! `LocalFileSystem` writes each part through the page cache: every byte
//! of a new blob is copied into freshly allocated pages, which on a VM cost
//! a first touch each, and the final fsync then writes them all out. Here
//! the aligned body of every part goes to the staged file with `O_DIRECT`
//! (from a reused, aligned buffer: no fresh pages, and the disk write of
//! one part overlaps the sealing of the next); a part's unaligned tail
//! (only the last part has one) and everything on a file system that
//! refuses `O_DIRECT` or keeps files in memory (tmpfs) go through a plain
//! descriptor of the same file.
//!
//! Invariants a change must keep, all as `LocalFileSystem` keeps them:
//! - the object appears only at `complete`, by a rename of the staged file
//!   (`{dest}#{n}`, the name `LocalFileSystem` stages under and the
//!   collector of stale uploads recognizes) after the file is fsynced, and
//!   the directory is fsynced after the rename;
//! - an aborted or dropped upload removes its staged file;
//! - a failed direct write is retried through the plain descriptor, so
//!   `O_DIRECT` never decides whether a part is stored.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt as _;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::FutureExt as _;
use object_store::{MultipartUpload, PutPayload, PutResult, Result, UploadPart};

use crate::local_objects::{blocking, generic};

/// Alignment of direct writes: offsets, lengths and buffer addresses.
const ALIGN: usize = 4096;
/// Bytes copied into the aligned buffer per direct write.
const CHUNK: usize = 1 << 20;

/// Staging buffers kept for reuse (each `CHUNK + ALIGN` bytes, so an
/// aligned `CHUNK` fits): at most [`KEEP`] (the parts an upload keeps in
/// flight on the local store), about 3 MiB of the server's memory whatever
/// the number of uploads or blocking threads.
static BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const KEEP: usize = 3;

fn take_buffer() -> Vec<u8> {
    BUFFERS
        .lock()
        .ok()
        .and_then(|mut b| b.pop())
        .unwrap_or_else(|| vec![0u8; CHUNK + ALIGN])
}

fn give_back(buffer: Vec<u8>) {
    if let Ok(mut b) = BUFFERS.lock()
        && b.len() < KEEP
    {
        b.push(buffer);
    }
}

fn fsync_dir(dir: &FsPath) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors; with `fsync`, every new
/// directory and the first existing ancestor are fsynced, so the new
/// entries are durable.
fn create_dirs(dir: &FsPath, fsync: bool) -> std::io::Result<()> {
    let mut first_existing = dir;
    while !first_existing.exists() {
        match first_existing.parent() {
            Some(p) => first_existing = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    if fsync {
        let mut d = dir;
        loop {
            fsync_dir(d)?;
            if d == first_existing {
                break;
            }
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
    }
    Ok(())
}

/// The staged file of `dest`: `{dest}#{n}` for the first free `n`, created
/// new, and its parent directories if missing.
fn create_staged(dest: &FsPath, fsync: bool) -> std::io::Result<(File, PathBuf)> {
    let mut n = 1u64;
    loop {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let path = PathBuf::from(name);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => match path.parent() {
                Some(parent) if !parent.exists() => create_dirs(parent, fsync)?,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// The staged file's descriptors.
#[derive(Debug)]
struct Staged {
    /// Plain (page-cache) writes: unaligned tails, fallbacks, fsync.
    plain: File,
    /// `O_DIRECT` writes, while the file system takes them.
    direct: Option<File>,
    /// Cleared at the first refused direct write: the rest go plain.
    direct_ok: AtomicBool,
}

impl Staged {
    fn open(path: &FsPath, plain: File) -> Self {
        let direct = open_direct(path, &plain);
        Staged {
            plain,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
        }
    }

    /// Writes `data` at `offset`: its aligned body directly when possible,
    /// the rest plain.
    fn write_part(&self, data: &PutPayload, mut offset: u64) -> std::io::Result<()> {
        let len = data.content_length();
        let direct = match &self.direct {
            Some(d)
                if self.direct_ok.load(Ordering::Relaxed)
                    && offset.is_multiple_of(ALIGN as u64) =>
            {
                d
            }
            _ => return self.write_plain(data.iter().map(|b| &b[..]), offset),
        };
        let body = len - len % ALIGN;
        let mut chunks = data.iter().map(|b| &b[..]);
        let mut pending: &[u8] = &[];
        let mut buffer = take_buffer();
        let result = (|| {
            let start = buffer.as_ptr().align_offset(ALIGN);
            let buf = &mut buffer[start..start + CHUNK];
            let mut done = 0usize;
            while done < body {
                // Fill the aligned buffer with the next `want` bytes.
                let want = (body - done).min(CHUNK);
                let mut filled = 0;
                while filled < want {
                    if pending.is_empty() {
                        pending = chunks.next().unwrap_or_default();
                        if pending.is_empty() {
                            return Err(std::io::Error::new(
                                ErrorKind::UnexpectedEof,
                                "part shorter than its length",
                            ));
                        }
                    }
                    let take = (want - filled).min(pending.len());
                    buf[filled..filled + take].copy_from_slice(&pending[..take]);
                    filled += take;
                    pending = &pending[take..];
                }
                let piece = &buf[..want];
                if self.direct_ok.load(Ordering::Relaxed) {
                    if let Err(e) = direct.write_all_at(piece, offset) {
                        tracing::debug!(error = %e, "direct write refused; writing through the page cache");
                        self.direct_ok.store(false, Ordering::Relaxed);
                        self.plain.write_all_at(piece, offset)?;
                    }
                } else {
                    self.plain.write_all_at(piece, offset)?;
                }
                offset += want as u64;
                done += want;
            }
            Ok(())
        })();
        give_back(buffer);
        result?;
        // The unaligned tail: what is left of the current chunk, then the rest.
        self.write_plain(std::iter::once(pending).chain(chunks), offset)
    }

    fn write_plain<'a>(
        &self,
        pieces: impl Iterator<Item = &'a [u8]>,
        mut offset: u64,
    ) -> std::io::Result<()> {
        for p in pieces {
            self.plain.write_all_at(p, offset)?;
            offset += p.len() as u64;
        }
        Ok(())
    }
}

/// A second descriptor of the staged file `plain` (at `path`) for direct
/// writes, where they pay: not on a memory file system (tmpfs, ramfs),
/// where there is no device to write around the cache and the aligned copy
/// would only add a pass. The path is opened again, so it is checked to
/// still name `plain`'s inode: a bucket writer who swaps the staged name
/// (or a folder above it) for a link between the two opens would
/// otherwise receive the upload's bytes in whatever file the link names.
/// `None` (plain writes only) if it does not.
#[cfg(target_os = "linux")]
fn open_direct(path: &FsPath, plain: &File) -> Option<File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    let file = OpenOptions::new()
        .write(true)
        .custom_flags((rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::NOFOLLOW).bits() as i32)
        .open(path)
        .ok()?;
    let (ours, opened) = (plain.metadata().ok()?, file.metadata().ok()?);
    if (ours.dev(), ours.ino()) != (opened.dev(), opened.ino()) {
        tracing::warn!(path = %path.display(), "staged upload file was replaced; writing through its own descriptor only");
        return None;
    }
    let kind = rustix::fs::fstatfs(&file).ok()?.f_type as u64;
    (kind != TMPFS_MAGIC && kind != RAMFS_MAGIC).then_some(file)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &FsPath, _plain: &File) -> Option<File> {
    None
}

/// A multipart upload to the local store (see the module docs).
#[derive(Debug)]
pub struct DirectUpload {
    staged: Arc<Staged>,
    /// The staged file's path until completed or aborted.
    src: Option<PathBuf>,
    dest: PathBuf,
    /// Where the next part goes.
    offset: u64,
    fsync: bool,
}

impl DirectUpload {
    /// Stages an upload to `dest` (on the blocking pool).
    pub async fn start(dest: PathBuf, fsync: bool) -> Result<Self> {
        blocking(move || {
            let (plain, src) = create_staged(&dest, fsync).map_err(generic)?;
            let staged = Arc::new(Staged::open(&src, plain));
            Ok(DirectUpload {
                staged,
                src: Some(src),
                dest,
                offset: 0,
                fsync,
            })
        })
        .await
    }

    /// Whether parts go to the disk directly (false where the file system
    /// refuses `O_DIRECT`, or after a refused write).
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        self.staged.direct.is_some() && self.staged.direct_ok.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl MultipartUpload for DirectUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let staged = Arc::clone(&self.staged);
        let aborted = self.src.is_none();
        async move {
            if aborted {
                return Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: "upload already completed or aborted".into(),
                });
            }
            blocking(move || staged.write_part(&data, offset).map_err(generic)).await
        }
        .boxed()
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let Some(src) = self.src.take() else {
            return Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: "upload already completed or aborted".into(),
            });
        };
        let staged = Arc::clone(&self.staged);
        let dest = self.dest.clone();
        let fsync = self.fsync;
        let result = blocking({
            let src = src.clone();
            move || {
                if fsync {
                    staged.plain.sync_all().map_err(generic)?;
                }
                let m = staged.plain.metadata().map_err(generic)?;
                std::fs::rename(&src, &dest).map_err(generic)?;
                if fsync && let Some(parent) = dest.parent() {
                    fsync_dir(parent).map_err(generic)?;
                }
                Ok(m)
            }
        })
        .await;
        match result {
            Ok(m) => Ok(PutResult {
                e_tag: Some(crate::local_objects::etag(&m)),
                version: None,
                extensions: Default::default(),
            }),
            Err(e) => {
                // Not published: the staged file goes, as on abort.
                self.src = Some(src);
                Err(e)
            }
        }
    }

    async fn abort(&mut self) -> Result<()> {
        let Some(src) = self.src.take() else {
            return Ok(());
        };
        blocking(move || std::fs::remove_file(&src).map_err(generic)).await
    }
}

impl Drop for DirectUpload {
    fn drop(&mut self) {
        if let Some(src) = self.src.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || std::fs::remove_file(src))),
                Err(_) => drop(std::fs::remove_file(src)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    /// A payload of `data` split into pieces of the given sizes (the way
    /// `WriteMultipart` hands over several `Bytes`).
    fn payload(data: &[u8], pieces: &[usize]) -> PutPayload {
        let mut out = Vec::new();
        let mut at = 0;
        for p in pieces {
            let end = (at + p).min(data.len());
            out.push(Bytes::copy_from_slice(&data[at..end]));
            at = end;
        }
        if at < data.len() {
            out.push(Bytes::copy_from_slice(&data[at..]));
        }
        out.into_iter().collect()
    }

    /// Parts of any shape (aligned or not, in several pieces, written out of
    /// order) land byte for byte; the object appears only at `complete`,
    /// the staged file is gone after it, the e-tag is `LocalFileSystem`'s.
    #[tokio::test]
    async fn parts_land_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("blobs/ab/blob");
        for (parts, pieces) in [
            // Aligned full parts and a short unaligned last part.
            (vec![3 << 20, 3 << 20, 12_345], vec![1000, 4096, 77]),
            // A first part that is not a multiple of the alignment: every
            // later part is written through the page cache.
            (vec![5000, 1 << 20, 10], vec![3]),
            // One part only, smaller than a page.
            (vec![17], vec![]),
            // No part at all: an empty object.
            (vec![], vec![]),
        ] {
            let total: usize = parts.iter().sum();
            let data = pattern(total, parts.len() as u8);
            let mut up = DirectUpload::start(dest.clone(), true).await.unwrap();
            let mut futs = Vec::new();
            let mut at = 0;
            for len in &parts {
                futs.push(up.put_part(payload(&data[at..at + len], &pieces)));
                at += len;
            }
            assert!(!dest.exists(), "visible before complete");
            // Out of order, as concurrent parts may finish.
            for f in futs.into_iter().rev() {
                f.await.unwrap();
            }
            let r = up.complete().await.unwrap();
            let got = std::fs::read(&dest).unwrap();
            assert_eq!(got.len(), data.len(), "{parts:?}");
            assert!(got == data, "{parts:?}: bytes differ");
            let m = std::fs::metadata(&dest).unwrap();
            assert_eq!(r.e_tag, Some(crate::local_objects::etag(&m)));
            let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("blob")]);
            std::fs::remove_file(&dest).unwrap();
        }
    }

    /// On a file system that takes `O_DIRECT` (the temp dir, when on disk)
    /// full parts go directly; on tmpfs they go through the page cache, and
    /// the upload works either way.
    #[tokio::test]
    async fn direct_where_the_file_system_takes_it() {
        for base in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
            if !base.is_dir() {
                continue;
            }
            let dir = tempfile::tempdir_in(&base).unwrap();
            let dest = dir.path().join("blob");
            let data = pattern(2 << 20, 9);
            let mut up = DirectUpload::start(dest.clone(), false).await.unwrap();
            up.put_part(payload(&data, &[])).await.unwrap();
            let took_direct = up.is_direct();
            up.complete().await.unwrap();
            assert!(std::fs::read(&dest).unwrap() == data);
            let kind = rustix::fs::statfs(dir.path()).unwrap().f_type as u64;
            if kind == 0x0102_1994 {
                assert!(!took_direct, "tmpfs: no direct writes");
            } else if kind == 0xEF53 {
                assert!(took_direct, "ext4: direct writes");
            }
        }
    }

    /// A staged name swapped between its creation and the second (direct)
    /// open, for a link to another file or for another file, never gets
    /// the upload's bytes: the direct descriptor is refused and every write
    /// goes to the staged file's own descriptor.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_swapped_staged_name_gets_nothing() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let victim = dir.path().join("victim");
        let original = vec![7u8; 8192];
        for swap in ["symlink", "file"] {
            std::fs::write(&victim, &original).unwrap();
            let (plain, staged) = create_staged(&dir.path().join("blob"), false).unwrap();
            // The bucket writer's move: the staged name now leads elsewhere.
            std::fs::rename(&staged, dir.path().join("moved")).unwrap();
            match swap {
                "symlink" => std::os::unix::fs::symlink(&victim, &staged).unwrap(),
                _ => std::fs::hard_link(&victim, &staged).unwrap(),
            }
            let s = Staged::open(&staged, plain);
            assert!(
                s.direct.is_none(),
                "{swap}: direct descriptor of another file"
            );
            let data = pattern(8192, 3);
            s.write_part(&payload(&data, &[]), 0).unwrap();
            assert_eq!(
                std::fs::read(&victim).unwrap(),
                original,
                "{swap}: victim written"
            );
            assert!(
                std::fs::read(dir.path().join("moved")).unwrap() == data,
                "{swap}: the upload's own file has its bytes"
            );
            std::fs::remove_file(&staged).unwrap();
            std::fs::remove_file(dir.path().join("moved")).unwrap();
        }
    }

    /// Aborted and dropped uploads leave nothing behind; a completed one
    /// refuses more parts.
    #[tokio::test]
    async fn abort_and_drop_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("blob");
        let mut up = DirectUpload::start(dest.clone(), false).await.unwrap();
        up.put_part(payload(&pattern(8192, 1), &[])).await.unwrap();
        up.abort().await.unwrap();
        let mut up2 = DirectUpload::start(dest.clone(), false).await.unwrap();
        up2.put_part(payload(&pattern(10, 1), &[])).await.unwrap();
        drop(up2);
        // The drop's removal runs on the blocking pool.
        for _ in 0..100 {
            if std::fs::read_dir(dir.path()).unwrap().next().is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        let mut up3 = DirectUpload::start(dest.clone(), false).await.unwrap();
        up3.complete().await.unwrap();
        assert!(up3.put_part(payload(b"late", &[])).await.is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
    }
}
