//! The local store's object store: `object_store`'s `LocalFileSystem`,
//! with whole reads of small objects done in one trip to the blocking
//! pool instead of two.
//!
//! `LocalFileSystem::get` opens the file on a blocking thread and returns
//! it; reading its bytes is a second blocking task. Every authorization
//! reads several small records (model, manifest, approvals, stage, the
//! segment table), and each trip to the blocking pool costs a wake of a
//! blocking thread and a wake of the task on its return: on a 2-core VM the
//! context switches cost more than the reads. Here a plain read (no range,
//! no precondition, not a HEAD) opens, checks and reads an object of at
//! most [`SMALL`] bytes in one blocking task and returns its bytes in
//! memory; on Linux it first tries the read in place, on the request's
//! own thread, when the kernel can do it without waiting
//! ([`read_cached`]: the path resolves from cached directory entries and
//! the bytes are in the page cache), so a hot record costs no trip at all.
//!
//! Multipart uploads (blobs) go around the page cache
//! ([`crate::direct_upload`]).
//!
//! Invariants a change must keep: nothing done in place may wait for the
//! disk or block (a request's thread serves many requests: anything not
//! cached, and anything that is not a small regular file, goes to the
//! blocking pool); answers are those `LocalFileSystem` gives (the same
//! `NotFound` for a missing file or a directory, the same metadata, e-tag
//! included); every other operation, and every read this
//! path does not take, goes to `LocalFileSystem` unchanged (its fsync of
//! writes, its range reads).
//!
//! Create-if-absent writes (every record and audit segment) go through an
//! unnamed file that gets its name only once its bytes are durable
//! ([`create_unnamed_then_link`]); they keep `LocalFileSystem`'s contract:
//! atomic (the name appears with all its bytes or not at all), refused
//! with `AlreadyExists` when the name is taken, durable on return when
//! fsync is on (the file, then its directory), the same e-tag.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result,
};

/// Objects at most this large are read whole in one blocking task (the
/// records and segment tables; blob segments are read by range).
pub const SMALL: u64 = 256 * 1024;

/// [`LocalFileSystem`] with one-trip small reads (see the module docs).
#[derive(Debug)]
pub struct LocalObjects {
    inner: Arc<LocalFileSystem>,
    /// Whether writes are fsynced (`inner` was built `with_fsync(fsync)`).
    fsync: bool,
}

impl LocalObjects {
    /// Wraps `inner`, which was built `with_fsync(fsync)`.
    pub fn new(inner: LocalFileSystem, fsync: bool) -> Self {
        Self {
            inner: Arc::new(inner),
            fsync,
        }
    }
}

impl std::fmt::Display for LocalObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// Whether `o` asks for the whole object with nothing to check.
fn plain(o: &GetOptions) -> bool {
    o.if_match.is_none()
        && o.if_none_match.is_none()
        && o.if_modified_since.is_none()
        && o.if_unmodified_since.is_none()
        && o.range.is_none()
        && o.version.is_none()
        && !o.head
}

fn not_found(path: &std::path::Path, source: std::io::Error) -> object_store::Error {
    object_store::Error::NotFound {
        path: path.to_string_lossy().into_owned(),
        source: Box::new(source),
    }
}

pub(crate) fn generic(source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    }
}

/// Runs `f` on the blocking pool inside a runtime, in place outside one (as
/// `LocalFileSystem` does).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(f)
            .await
            .map_err(|e| generic(std::io::Error::other(e)))?,
        Err(_) => f(),
    }
}

/// `LocalFileSystem`'s e-tag of a file.
pub(crate) fn etag(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let micros = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{micros:x}-{:x}\"", m.ino(), m.len())
}

/// `LocalFileSystem`'s metadata of a file (its e-tag scheme included).
fn meta(location: Path, m: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: m.modified().ok().map(Into::into).unwrap_or_default(),
        size: m.len(),
        e_tag: Some(etag(m)),
        version: None,
    }
}

/// What the one blocking task found: the object's bytes, or its open file
/// when it is too large to read whole here.
enum Read {
    Whole(ObjectMeta, Bytes),
    Large(ObjectMeta, std::fs::File, std::path::PathBuf),
}

fn read_small(location: Path, path: std::path::PathBuf) -> Result<Read> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // `O_NONBLOCK`: the open of a FIFO planted in the store returns at once
    // (it is refused below) instead of holding a thread until a writer
    // comes; for a regular file the flag changes nothing.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(&path, e),
            _ => generic(e),
        })?;
    let m = file.metadata().map_err(generic)?;
    if m.is_dir() {
        return Err(not_found(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "is directory"),
        ));
    }
    if !m.is_file() {
        // A device, FIFO or socket (a symlink to `/dev/zero` planted by a
        // bucket writer would otherwise be read without end): no object
        // of ours is one, so refuse it.
        return Err(generic(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        )));
    }
    let meta = meta(location, &m);
    if m.len() > SMALL {
        return Ok(Read::Large(meta, file, path));
    }
    let mut buf = Vec::with_capacity(m.len() as usize);
    // At most one byte past the size it had: a file that grows while read
    // is caught below, never read on and on.
    (&file)
        .take(m.len() + 1)
        .read_to_end(&mut buf)
        .map_err(generic)?;
    if buf.len() as u64 != m.len() {
        // Changed while read: objects are replaced by rename, never
        // rewritten in place, so this is not ours; let the caller see it.
        return Err(generic(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} changed size while read ({} bytes, then {})",
                path.display(),
                m.len(),
                buf.len()
            ),
        )));
    }
    Ok(Read::Whole(meta, Bytes::from(buf)))
}

/// A small whole-object read done in place, if the kernel can do it without
/// waiting: the path resolves from cached directory entries only
/// (`RESOLVE_CACHED`), the open does not block (`O_NONBLOCK`: a FIFO
/// planted in the store does not hold the thread), and every byte is in the
/// page cache (`RWF_NOWAIT`). `None` for anything else (not cached, missing,
/// a directory or other non-file, large, an error, a file shorter than it
/// said): the blocking path then gives the answer, its errors included.
#[cfg(target_os = "linux")]
fn read_cached(location: &Path, path: &std::path::Path) -> Option<Read> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use rustix::io::ReadWriteFlags;
    let fd = rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::CACHED,
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    let m = file.metadata().ok()?;
    if !m.is_file() || m.len() > SMALL {
        return None;
    }
    let len = m.len() as usize;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = rustix::io::preadv2(
            &file,
            &mut [std::io::IoSliceMut::new(&mut buf[done..])],
            done as u64,
            ReadWriteFlags::NOWAIT,
        )
        .ok()?;
        if n == 0 {
            return None;
        }
        done += n;
    }
    Some(Read::Whole(meta(location.clone(), &m), Bytes::from(buf)))
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_location: &Path, _path: &std::path::Path) -> Option<Read> {
    None
}

/// Create-if-absent of a whole object from an unnamed file: the bytes go
/// into an `O_TMPFILE` inode in the destination's directory, are fsynced,
/// and only then get their name with `linkat` (atomic, `EEXIST` if the
/// name is taken), then the directory is fsynced. No staged name is ever
/// created or unlinked, so the directory changes once, not three times
/// (`LocalFileSystem` creates `name#N`, fsyncs it, links the name, fsyncs
/// the directory and unlinks `name#N`), and a crash leaves no staged file
/// behind (an unnamed inode is freed).
///
/// `None` when this path cannot be taken and nothing was published (the
/// directory does not exist yet, the file system has no `O_TMPFILE`,
/// `/proc` is not mounted or not ours to use): `LocalFileSystem` then does
/// the write.
#[cfg(target_os = "linux")]
fn create_unnamed_then_link(
    path: &std::path::Path,
    payload: &PutPayload,
    fsync: bool,
) -> Option<Result<PutResult>> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let (parent, name) = (path.parent()?, path.file_name()?);
    let dir = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat(
        &dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )
    .ok()?;
    let mut file = std::fs::File::from(fd);
    let written = (|| {
        for chunk in payload.iter() {
            file.write_all(chunk)?;
        }
        if fsync {
            file.sync_all()?;
        }
        file.metadata()
    })();
    let m = match written {
        Ok(m) => m,
        Err(e) => return Some(Err(generic(e))),
    };
    let unnamed = format!("/proc/self/fd/{}", file.as_raw_fd());
    match rustix::fs::linkat(
        rustix::fs::CWD,
        &unnamed,
        &dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            return Some(Err(object_store::Error::AlreadyExists {
                path: path.to_string_lossy().into_owned(),
                source: Box::new(std::io::Error::from(rustix::io::Errno::EXIST)),
            }));
        }
        // Nothing was published (no `/proc`, or no access to it, or the
        // directory went away): `LocalFileSystem` does the write and gives
        // the answer for a real failure.
        Err(_) => return None,
    }
    if fsync && let Err(e) = rustix::fs::fsync(&dir) {
        return Some(Err(generic(e.into())));
    }
    Some(Ok(PutResult {
        e_tag: Some(etag(&m)),
        version: None,
        extensions: Default::default(),
    }))
}

#[cfg(not(target_os = "linux"))]
fn create_unnamed_then_link(
    _path: &std::path::Path,
    _payload: &PutPayload,
    _fsync: bool,
) -> Option<Result<PutResult>> {
    None
}

#[async_trait]
impl ObjectStore for LocalObjects {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if matches!(opts.mode, object_store::PutMode::Create) && opts.attributes.is_empty() {
            let path = self.inner.path_to_filesystem(location)?;
            let fsync = self.fsync;
            let (done, payload) =
                blocking(move || Ok((create_unnamed_then_link(&path, &payload, fsync), payload)))
                    .await?;
            if let Some(done) = done {
                return done;
            }
            return self.inner.put_opts(location, payload, opts).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            // Refused there, as it should be.
            return self.inner.put_multipart_opts(location, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        Ok(Box::new(
            crate::direct_upload::DirectUpload::start(dest, self.fsync).await?,
        ))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !plain(&options) {
            return self.inner.get_opts(location, options).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let read = match read_cached(location, &path) {
            Some(read) => read,
            // As `LocalFileSystem` does: on the blocking pool inside a
            // runtime, in place outside one.
            None => {
                let location = location.clone();
                blocking(move || read_small(location, path)).await?
            }
        };
        let (meta, payload) = match read {
            Read::Whole(meta, bytes) => (
                meta,
                GetResultPayload::Stream(Box::pin(futures::stream::once(async move { Ok(bytes) }))),
            ),
            Read::Large(meta, file, path) => (meta, GetResultPayload::File(file, path)),
        };
        Ok(GetResult {
            payload,
            attributes: Attributes::default(),
            range: 0..meta.size,
            meta,
            extensions: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt as _;

    /// The one-trip read answers as `LocalFileSystem` does: bytes, metadata
    /// (e-tag included), a missing object, a directory, a large object.
    #[tokio::test]
    async fn reads_answer_as_the_local_file_system_does() {
        let dir = tempfile::tempdir().unwrap();
        let fs = || LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let ours = LocalObjects::new(fs(), false);
        let theirs = fs();
        let small = Path::from("a/small");
        let large = Path::from("a/large");
        theirs
            .put(&small, Bytes::from_static(b"record").into())
            .await
            .unwrap();
        let big = Bytes::from(vec![7u8; SMALL as usize + 1]);
        theirs.put(&large, big.clone().into()).await.unwrap();
        for (p, want) in [(&small, Bytes::from_static(b"record")), (&large, big)] {
            let a = ours.get(p).await.unwrap();
            let b = theirs.get(p).await.unwrap();
            assert_eq!(a.meta, b.meta);
            assert_eq!(a.range, b.range);
            assert_eq!(a.bytes().await.unwrap(), want);
        }
        for missing in [Path::from("a/none"), Path::from("a")] {
            let a = ours.get(&missing).await.unwrap_err();
            assert!(
                matches!(a, object_store::Error::NotFound { .. }),
                "{missing}: {a}"
            );
            let b = theirs.get(&missing).await.unwrap_err();
            assert!(matches!(b, object_store::Error::NotFound { .. }));
        }
        // What the fast path does not take goes through unchanged.
        assert_eq!(
            ours.get_range(&small, 1..3).await.unwrap(),
            Bytes::from_static(b"ec")
        );
        assert_eq!(
            ours.head(&small).await.unwrap(),
            theirs.head(&small).await.unwrap()
        );
    }

    /// Create-if-absent through an unnamed file: the object is there with
    /// its bytes and `LocalFileSystem`'s e-tag, a second create is refused
    /// without touching it, a directory that does not exist yet is made
    /// (through `LocalFileSystem`), and no staged file is left beside it.
    #[tokio::test]
    async fn create_if_absent_through_an_unnamed_file() {
        use object_store::{PutMode, PutOptions};
        let dir = tempfile::tempdir().unwrap();
        let fs = || LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        for fsync in [true, false] {
            let ours = LocalObjects::new(fs().with_fsync(fsync), fsync);
            let create = || PutOptions::from(PutMode::Create);
            let p = Path::from(format!("seg-{fsync}/new/0001"));
            // A directory not there yet: LocalFileSystem makes it.
            let first = ours
                .put_opts(&p, Bytes::from_static(b"one").into(), create())
                .await
                .unwrap();
            assert_eq!(first.e_tag, ours.head(&p).await.unwrap().e_tag);
            // In an existing directory: the unnamed-file path.
            let q = Path::from(format!("seg-{fsync}/new/0002"));
            let os_path = dir.path().join(format!("seg-{fsync}/new/0002"));
            let done = create_unnamed_then_link(
                &os_path,
                &[Bytes::from_static(b"tw"), Bytes::from_static(b"o")]
                    .into_iter()
                    .collect::<PutPayload>(),
                fsync,
            );
            let put = done.expect("the unnamed-file path is taken").unwrap();
            let head = fs().head(&q).await.unwrap();
            assert_eq!(put.e_tag, head.e_tag);
            assert_eq!(fs().get(&q).await.unwrap().bytes().await.unwrap(), "two");
            for taken in [&p, &q] {
                let err = ours
                    .put_opts(taken, Bytes::from_static(b"other").into(), create())
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, object_store::Error::AlreadyExists { .. }),
                    "{err}"
                );
            }
            assert_eq!(fs().get(&p).await.unwrap().bytes().await.unwrap(), "one");
            assert_eq!(fs().get(&q).await.unwrap().bytes().await.unwrap(), "two");
            let mut names: Vec<_> = std::fs::read_dir(dir.path().join(format!("seg-{fsync}/new")))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["0001", "0002"]);
        }
    }

    /// Writers racing to create one name (two servers over one store, a
    /// bucket writer): exactly one wins, every other is refused with
    /// `AlreadyExists`, and the object holds the winner's bytes whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_creates_of_one_name_have_one_winner() {
        use object_store::{PutMode, PutOptions};
        let dir = tempfile::tempdir().unwrap();
        let fs = || LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let ours = Arc::new(LocalObjects::new(fs().with_fsync(false), false));
        // The directory exists, so every writer takes the unnamed-file path.
        ours.put(&Path::from("race/first"), Bytes::from_static(b"x").into())
            .await
            .unwrap();
        for round in 0..20 {
            let p = Path::from(format!("race/{round}"));
            let writers: Vec<_> = (0..8u8)
                .map(|w| {
                    let (ours, p) = (ours.clone(), p.clone());
                    tokio::spawn(async move {
                        let body = Bytes::from(vec![w; 4096]);
                        let r = ours
                            .put_opts(&p, body.into(), PutOptions::from(PutMode::Create))
                            .await;
                        (w, r)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in writers {
                match t.await.unwrap() {
                    (w, Ok(_)) => winners.push(w),
                    (_, Err(object_store::Error::AlreadyExists { .. })) => {}
                    (_, Err(e)) => panic!("unexpected error: {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            let got = fs().get(&p).await.unwrap().bytes().await.unwrap();
            assert_eq!(got, Bytes::from(vec![winners[0]; 4096]));
        }
    }

    /// The in-place read takes only what the kernel can give without
    /// waiting: a cached small file (with `LocalFileSystem`'s metadata),
    /// never a missing file, a directory, a FIFO (whose open would block),
    /// a large file or a file whose pages are not in memory; `get` answers
    /// all of them as before.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn in_place_reads_take_only_what_is_cached() {
        use rustix::fs::{Advice, FileType, Mode};
        let dir = tempfile::tempdir().unwrap();
        let fs = || LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let ours = LocalObjects::new(fs(), false);
        let theirs = fs();
        let record = Path::from("r/record");
        theirs
            .put(&record, Bytes::from_static(b"cached").into())
            .await
            .unwrap();
        let file = dir.path().join("r/record");
        match read_cached(&record, &file) {
            Some(Read::Whole(meta, bytes)) => {
                assert_eq!(bytes, Bytes::from_static(b"cached"));
                assert_eq!(meta, theirs.head(&record).await.unwrap());
            }
            _ => panic!("a cached small file is read in place"),
        }
        let big = Path::from("r/big");
        theirs
            .put(&big, Bytes::from(vec![1u8; SMALL as usize + 1]).into())
            .await
            .unwrap();
        let fifo = dir.path().join("r/fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::RUSR, 0).unwrap();
        for (name, location) in [
            ("missing", Path::from("r/none")),
            ("directory", Path::from("r")),
            ("large", big),
            ("FIFO", Path::from("r/fifo")),
        ] {
            let path = dir.path().join(location.as_ref());
            assert!(read_cached(&location, &path).is_none(), "{name}");
        }

        // Pages not in memory (written, synced, dropped from the cache; a
        // memory file system keeps them): the blocking path reads them.
        let cold = Path::from("r/cold");
        let cold_file = dir.path().join("r/cold");
        std::fs::write(&cold_file, b"on disk").unwrap();
        let f = std::fs::File::open(&cold_file).unwrap();
        f.sync_all().unwrap();
        rustix::fs::fadvise(&f, 0, None, Advice::DontNeed).unwrap();
        let on_tmpfs = rustix::fs::statfs(dir.path()).unwrap().f_type as u64 == 0x0102_1994;
        if !on_tmpfs {
            assert!(read_cached(&cold, &cold_file).is_none(), "pages not cached");
        }
        assert_eq!(
            ours.get(&cold).await.unwrap().bytes().await.unwrap(),
            Bytes::from_static(b"on disk")
        );
    }

    /// What a bucket writer can plant in place of an object and no object
    /// of ours is: a FIFO (whose plain open would wait for a writer) and a
    /// link to an endless device. A read of either is refused at once;
    /// it never hangs and never reads without end.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn special_files_are_refused() {
        use rustix::fs::{FileType, Mode};
        let dir = tempfile::tempdir().unwrap();
        let ours = LocalObjects::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap(), false);
        std::fs::create_dir_all(dir.path().join("r")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("r/fifo"),
            FileType::Fifo,
            Mode::RUSR,
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("r/zero")).unwrap();
        for name in ["r/fifo", "r/zero"] {
            let got = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                ours.get(&Path::from(name)),
            )
            .await
            .unwrap_or_else(|_| panic!("{name}: the read hangs"));
            let e = match got {
                Ok(_) => panic!("{name}: read as an object"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("not a regular file"), "{name}: {e}");
        }
    }

    /// Outside a runtime the read happens in place, as `LocalFileSystem`'s.
    #[test]
    fn reads_outside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r"), b"x").unwrap();
        let ours = LocalObjects::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap(), false);
        let got = futures::executor::block_on(async {
            ours.get(&Path::from("r"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        assert_eq!(got, Bytes::from_static(b"x"));
    }

    /// A flat listing of a missing folder is empty, as a recursive one is;
    /// a sub-folder is a common prefix, not an object.
    #[tokio::test]
    async fn flat_listings() {
        let dir = tempfile::tempdir().unwrap();
        let ours = LocalObjects::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap(), false);
        let none = ours
            .list_with_delimiter(Some(&Path::from("s")))
            .await
            .unwrap();
        assert!(none.objects.is_empty() && none.common_prefixes.is_empty());
        ours.put(&Path::from("s/1.json"), Bytes::from_static(b"a").into())
            .await
            .unwrap();
        ours.put(&Path::from("s/sub/2.json"), Bytes::from_static(b"b").into())
            .await
            .unwrap();
        let flat = ours
            .list_with_delimiter(Some(&Path::from("s")))
            .await
            .unwrap();
        let names: Vec<_> = flat
            .objects
            .iter()
            .map(|m| m.location.to_string())
            .collect();
        assert_eq!(names, ["s/1.json"]);
        assert_eq!(flat.common_prefixes, [Path::from("s/sub")]);
    }
}
