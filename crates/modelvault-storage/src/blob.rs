//! Encrypted blobs: streaming upload into a draft, and streaming, ranged,
//! authenticated reads. Memory stays bounded by a few segments and
//! multipart parts whatever the file size (plus the segment table, 32 bytes
//! a segment). A reader never yields bytes of a segment that did not
//! authenticate; on failure its stream ends in an error.
//!
//! Two checks guard every served segment, and both must hold:
//! - its BLAKE3 digest equals the one in the blob's segment table, whose own
//!   BLAKE3 is pinned by the MAC'd manifest (or upload record). This binds
//!   the bytes to the record; it holds against anyone who can write the
//!   bucket, including a holder of the released DEK;
//! - it opens under the file key (AES-256-GCM), which binds it to its
//!   position, file, version and DEK generation.

use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::{Stream, StreamExt as _};
use modelvault_format::{Decryptor, Encryptor, FileIdentity, FileKey, HEADER_LEN, Header, TAG_LEN};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt as _, WriteMultipart,
};
use tokio::sync::mpsc;

use crate::{
    KeyWant, Manifest, StorageError, Store, UploadRecord, VersionRef, b64_encode, digest_seal_key,
    layout, names,
};

/// Multipart part size: S3's minimum is 5 MiB.
const PART_SIZE: usize = 8 << 20;
/// Part size on the local store, which has no minimum: parts buffered in
/// the server are its largest use of memory during an upload, and its
/// direct writes (`direct_upload.rs`) need no larger ones to keep the
/// disk busy. A multiple of the direct writes' alignment.
const LOCAL_PART_SIZE: usize = 4 << 20;
/// Parts in flight at once during an upload (S3).
const PARTS_IN_FLIGHT: usize = 2;
/// Parts in flight at once on the local store: its parts are half the
/// size, one more keeps the disk as busy.
const LOCAL_PARTS_IN_FLIGHT: usize = 3;
/// Decrypted chunks buffered ahead of a slow reader.
const READ_AHEAD: usize = 2;

/// What an upload returns: its record and the hex SHA-256 of the plaintext
/// (for the uploader's receipt; the record holds it only sealed).
#[derive(Debug, Clone)]
pub struct UploadReceipt {
    /// The upload record as stored.
    pub record: UploadRecord,
    /// Hex SHA-256 of the plaintext received.
    pub sha256: String,
}

/// A stream of authenticated plaintext chunks.
pub type PlaintextStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

impl Store {
    /// Encrypts `body` into a fresh blob of the draft version `v` and
    /// records the upload. Fails if the model is unknown or the version is
    /// committed or deleted. The SHA-256 of the plaintext is computed on the
    /// way, stored sealed, and returned in the receipt.
    pub async fn upload_file<S, E>(
        &self,
        v: &VersionRef<'_>,
        path: &str,
        mut body: S,
        uploader: &str,
    ) -> Result<UploadReceipt, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        names::validate_version(v.version)?;
        // Stored under its NFC form: two spellings are one file.
        let path = names::normalize_file_path(path)?;
        let path = path.as_str();
        if self.get_model(v.namespace, v.model).await?.is_none() {
            return Err(StorageError::NotFound(format!(
                "model {}/{}",
                v.namespace, v.model
            )));
        }
        // A deleted version is Gone here (the manifest read checks the
        // tombstone).
        if self.get_manifest(v).await?.is_some() {
            return Err(StorageError::VersionCommitted(v.to_string()));
        }
        let key = self.version_key(v, KeyWant::NewestOrCreate).await?;
        let (dek, generation) = (key.dek(), key.generation());
        let new = self
            .write_encrypted_blob(v, path, dek, generation, &mut body)
            .await?;
        let (blob, size, ct_size, header) =
            (new.blob.clone(), new.size, new.ciphertext_size, new.header);
        let sha = new.sha256;

        let segments_blake3 = new.segments_blake3;
        let sealed = digest_seal_key(dek, v, generation)?.seal(blob.as_ref().as_bytes(), &sha)?;
        let upload_id = uuid::Uuid::now_v7().to_string();
        let record = UploadRecord {
            upload_id: upload_id.clone(),
            path: path.into(),
            size,
            blob: blob.to_string(),
            ciphertext_size: ct_size,
            salt: hex::encode(header.salt),
            segments_blake3,
            dek_generation: generation,
            sealed_sha256: b64_encode(&sealed),
            uploaded_by: uploader.into(),
            created_at: Utc::now(),
        };
        let rec_path = layout::upload_record(v.namespace, v.model, v.version, &upload_id);
        if let Err(e) = self.create_record("upload", &rec_path, &record).await {
            // A blob no record points at is of no use: leave nothing
            // half-written (a full disk fails here as well as mid-blob).
            self.delete_blob(&blob).await;
            return Err(e);
        }
        Ok(UploadReceipt {
            record,
            sha256: hex::encode(&sha),
        })
    }

    /// Encrypts `body` under `dek` (generation `generation`) into a fresh
    /// blob key of `v`; aborts the multipart upload on any error.
    pub(crate) async fn write_encrypted_blob<S, E>(
        &self,
        v: &VersionRef<'_>,
        path: &str,
        dek: &modelvault_format::Dek,
        generation: u32,
        body: &mut S,
    ) -> Result<NewBlob, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let header = Header::new(generation, self.segment_size)?;
        let identity = FileIdentity {
            namespace: v.namespace,
            model: v.model,
            version: v.version,
            path,
            dek_generation: generation,
        };
        let key = FileKey::derive(dek, &header, &identity)?;
        let blob = layout::new_blob(v.namespace, v.model, v.version);
        let upload = self.objects.put_multipart(&blob).await?;
        let (part_size, in_flight) = if self.local_root.is_some() {
            (LOCAL_PART_SIZE, LOCAL_PARTS_IN_FLIGHT)
        } else {
            (PART_SIZE, PARTS_IN_FLIGHT)
        };
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        let result = encrypt_body(&key, header, body, &mut writer, in_flight).await;
        let (size, ciphertext_size, sha256, table) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        writer.finish().await?;
        let segments_blake3 = blake3::hash(&table).to_hex().to_string();
        let table_path = layout::segment_table(blob.as_ref());
        if let Err(e) = self.objects.put(&table_path, table.into()).await {
            self.delete_blob(&blob).await;
            return Err(e.into());
        }
        Ok(NewBlob {
            blob,
            size,
            ciphertext_size,
            sha256,
            segments_blake3,
            header,
        })
    }

    /// Deletes a blob and its segment table, best effort (what is left is
    /// unreferenced, and the garbage collector takes it).
    pub(crate) async fn delete_blob(&self, blob: &Path) {
        let _ = self.delete_object(blob).await;
        let _ = self
            .delete_object(&layout::segment_table(blob.as_ref()))
            .await;
    }

    /// Reads a blob's segment table and checks it against the digest the
    /// authenticated record pins, and its length against the segment count.
    async fn verified_segment_table(
        &self,
        blob: &str,
        expected_blake3: &str,
        segments: u64,
        what: &str,
    ) -> Result<Arc<[u8]>, StorageError> {
        let path = layout::segment_table(blob);
        let table = match self.objects.get(&path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::Integrity(format!(
                    "the segment table of {what} is missing"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let digest = blake3::hash(&table);
        let expected = blake3::Hash::from_hex(expected_blake3)
            .map_err(|_| StorageError::Integrity(format!("bad segment table digest for {what}")))?;
        // blake3::Hash compares in constant time.
        if digest != expected || table.len() as u64 != segments.saturating_mul(SEGMENT_DIGEST_LEN) {
            return Err(StorageError::Integrity(format!(
                "the segment table of {what} is not the committed one"
            )));
        }
        Ok(Arc::from(&table[..]))
    }

    /// Opens a file of a committed version for reading: checks the manifest,
    /// key record, blob size and header before any byte is read.
    pub async fn open_file(
        &self,
        v: &VersionRef<'_>,
        path: &str,
    ) -> Result<FileReader, StorageError> {
        names::lookup_file_path(path)?;
        if self.get_model(v.namespace, v.model).await?.is_none() {
            return Err(StorageError::NotFound(format!(
                "model {}/{}",
                v.namespace, v.model
            )));
        }
        let manifest = self
            .get_manifest(v)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("version {v}")))?;
        self.open_file_in(v, &manifest, path).await
    }

    /// Like [`Store::open_file`], with the version's manifest already read
    /// and verified by the caller (saves re-reading it on a download that
    /// already authorized against it).
    pub async fn open_file_in(
        &self,
        v: &VersionRef<'_>,
        manifest: &Manifest,
        path: &str,
    ) -> Result<FileReader, StorageError> {
        let path = names::lookup_file_path(path)?;
        let path = path.as_str();
        if manifest.namespace != v.namespace
            || manifest.model != v.model
            || manifest.version != v.version
        {
            return Err(StorageError::Integrity(format!(
                "manifest passed for {v} names another version"
            )));
        }
        let entry = manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| StorageError::NotFound(format!("file {path} in {v}")))?;
        // The manifest's generation, not the newest key record: during a DEK
        // rotation the new generation's record exists before the switch.
        let generation = manifest.dek_generation;
        let key = self.version_key(v, KeyWant::Generation(generation)).await?;
        let dek = key.dek();
        let digests = crate::unseal_digests(dek, v, generation, manifest)?;
        let manifest_sha256 =
            crate::manifest_digest(digests.iter().map(|(p, d)| (p.as_str(), d.as_str())));
        let sha256 = digests
            .get(path)
            .cloned()
            .ok_or_else(|| StorageError::Integrity(format!("no digest for {path} in {v}")))?;
        let blob = Path::parse(&entry.blob)
            .map_err(|_| StorageError::Integrity(format!("bad blob key in {v}")))?;
        let expected_prefix = format!("blobs/{}/{}/{}/", v.namespace, v.model, v.version);
        if !entry.blob.starts_with(&expected_prefix) {
            return Err(StorageError::Integrity(format!(
                "blob of {path} in {v} lies outside the version"
            )));
        }
        let meta = match self.objects.head(&blob).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::Integrity(format!(
                    "blob of {path} in {v} is missing"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if meta.size != entry.ciphertext_size {
            return Err(StorageError::Integrity(format!(
                "blob of {path} in {v} has {} bytes, the manifest says {}",
                meta.size, entry.ciphertext_size
            )));
        }
        let head = self.objects.get_range(&blob, 0..HEADER_LEN as u64).await?;
        let header = Header::parse(&head)?;
        if hex::encode(header.salt) != entry.salt {
            return Err(StorageError::Integrity(format!(
                "blob of {path} in {v} is not the committed one"
            )));
        }
        let identity = FileIdentity {
            namespace: v.namespace,
            model: v.model,
            version: v.version,
            path,
            dek_generation: generation,
        };
        let key = FileKey::derive(dek, &header, &identity)?;
        let decryptor = Decryptor::new(&key, header, meta.size)?;
        if decryptor.plaintext_len() != entry.size {
            return Err(StorageError::Integrity(format!(
                "blob of {path} in {v} has the wrong length"
            )));
        }
        let segments = self
            .verified_segment_table(
                &entry.blob,
                &entry.segments_blake3,
                decryptor.segment_count(),
                &format!("{path} in {v}"),
            )
            .await?;
        Ok(FileReader {
            segments,
            objects: self.objects.clone(),
            blob,
            key: Arc::new(key),
            header,
            ciphertext_len: meta.size,
            plaintext_len: entry.size,
            sha256,
            manifest_sha256,
        })
    }
}

/// Bytes per entry of a segment table (a BLAKE3-256 digest).
const SEGMENT_DIGEST_LEN: u64 = 32;

/// The name of the plaintext hasher's threads (at most 15 bytes: Linux
/// keeps no more of a thread's name).
const HASHER_THREAD: &str = "mv-plain-sha256";

/// The plaintext's SHA-256, computed on a thread of its own while the
/// caller seals (one pass fewer on the sealing path); in place outside a
/// runtime, or if no thread can be started.
///
/// A thread per upload, not one of the runtime's blocking pool: the hasher
/// waits for chunks as long as the upload lasts, and the part writes the
/// upload itself waits for run on that pool, so enough concurrent uploads
/// parked on it would leave their own writes no thread.
enum PlainDigest {
    Parallel {
        chunks: tokio::sync::mpsc::Sender<Bytes>,
        done: tokio::sync::oneshot::Receiver<Vec<u8>>,
    },
    InPlace(Box<ring::digest::Context>),
}

impl PlainDigest {
    fn start() -> Self {
        let in_place =
            || PlainDigest::InPlace(Box::new(ring::digest::Context::new(&ring::digest::SHA256)));
        if tokio::runtime::Handle::try_current().is_err() {
            return in_place();
        }
        // A few chunks of slack, so the hasher and the sealer run side by
        // side; few, as each queued chunk holds its receive buffer (the
        // server's memory is bounded per upload).
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let (digest, done) = tokio::sync::oneshot::channel();
        let hasher = std::thread::Builder::new()
            .name(HASHER_THREAD.into())
            .spawn(move || {
                let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
                while let Some(c) = rx.blocking_recv() {
                    sha.update(&c);
                }
                // The upload may be gone (dropped request): nobody to tell.
                let _ = digest.send(sha.finish().as_ref().to_vec());
            });
        match hasher {
            Ok(_) => PlainDigest::Parallel { chunks, done },
            Err(_) => in_place(),
        }
    }

    async fn update(&mut self, chunk: &Bytes) -> Result<(), StorageError> {
        match self {
            PlainDigest::Parallel { chunks, .. } => {
                chunks.send(chunk.clone()).await.map_err(|_| {
                    StorageError::Io(std::io::Error::other("the plaintext hasher stopped"))
                })
            }
            PlainDigest::InPlace(sha) => {
                sha.update(chunk);
                Ok(())
            }
        }
    }

    async fn finish(self) -> Result<Vec<u8>, StorageError> {
        match self {
            PlainDigest::Parallel { chunks, done } => {
                drop(chunks);
                done.await.map_err(|_| {
                    StorageError::Io(std::io::Error::other("the plaintext hasher failed"))
                })
            }
            PlainDigest::InPlace(sha) => Ok(sha.finish().as_ref().to_vec()),
        }
    }
}

/// Encrypts `body` into `writer`, with at most `in_flight` parts being
/// written at once; returns (plaintext size, blob size, plaintext SHA-256,
/// segment table).
async fn encrypt_body<S, E>(
    key: &FileKey,
    header: Header,
    body: &mut S,
    writer: &mut WriteMultipart,
    in_flight: usize,
) -> Result<(u64, u64, Vec<u8>, Vec<u8>), StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let mut enc = Encryptor::new(key, header);
    let seg_len = enc.segment_len();
    writer.write(enc.header_bytes());
    let mut ct_size = HEADER_LEN as u64;
    let mut size = 0u64;
    let mut sha = PlainDigest::start();
    let mut table = Vec::new();
    let mut seg: Vec<u8> = Vec::with_capacity(seg_len + TAG_LEN);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StorageError::Body(e.to_string()))?;
        sha.update(&chunk).await?;
        size += chunk.len() as u64;
        let mut data = &chunk[..];
        while !data.is_empty() {
            if seg.len() == seg_len {
                // A full segment followed by more data is not the last one.
                enc.seal_segment(&mut seg, false)?;
                table.extend_from_slice(blake3::hash(&seg).as_bytes());
                ct_size += seg.len() as u64;
                let full = std::mem::replace(&mut seg, Vec::with_capacity(seg_len + TAG_LEN));
                writer.wait_for_capacity(in_flight).await?;
                writer.put(Bytes::from(full));
            }
            let take = (seg_len - seg.len()).min(data.len());
            seg.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }
    enc.seal_segment(&mut seg, true)?;
    table.extend_from_slice(blake3::hash(&seg).as_bytes());
    ct_size += seg.len() as u64;
    writer.wait_for_capacity(in_flight).await?;
    writer.put(Bytes::from(seg));
    Ok((size, ct_size, sha.finish().await?, table))
}

/// An opened file of a committed version. Cheap to clone-by-Arc; each
/// [`FileReader::read_range`] is an independent stream.
pub struct FileReader {
    objects: Arc<dyn ObjectStore>,
    /// The verified segment table.
    segments: Arc<[u8]>,
    blob: Path,
    key: Arc<FileKey>,
    header: Header,
    ciphertext_len: u64,
    plaintext_len: u64,
    sha256: String,
    manifest_sha256: String,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("blob", &self.blob)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

/// A blob just written by [`Store::write_encrypted_blob`].
pub(crate) struct NewBlob {
    pub(crate) blob: Path,
    pub(crate) size: u64,
    pub(crate) ciphertext_size: u64,
    /// SHA-256 of the plaintext.
    pub(crate) sha256: Vec<u8>,
    /// Hex BLAKE3 of its segment table (written beside it).
    pub(crate) segments_blake3: String,
    pub(crate) header: Header,
}

impl FileReader {
    /// Plaintext size.
    pub fn len(&self) -> u64 {
        self.plaintext_len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.plaintext_len == 0
    }

    /// Hex SHA-256 of the whole plaintext (from the sealed manifest).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// [`crate::manifest_digest`] of the version this file belongs to.
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }

    /// Streams plaintext bytes `range` (clamped to the file), reading only
    /// the segments that cover it. The stream ends with an error at the
    /// first segment that fails authentication; nothing of it is yielded.
    pub fn read_range(&self, range: Range<u64>) -> PlaintextStream {
        let (tx, rx) = mpsc::channel::<Result<Bytes, StorageError>>(READ_AHEAD);
        let objects = self.objects.clone();
        let blob = self.blob.clone();
        let key = self.key.clone();
        let segments = self.segments.clone();
        let header = self.header;
        let ct_len = self.ciphertext_len;
        let range = range.start.min(self.plaintext_len)..range.end.min(self.plaintext_len);
        tokio::spawn(async move {
            let sealed = Sealed {
                key,
                header,
                ct_len,
                segments,
            };
            if let Err(e) = pump(objects, blob, sealed, range, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::pin(tokio_stream_from(rx))
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, StorageError>>,
) -> impl Stream<Item = Result<Bytes, StorageError>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Plaintext of segment `index` restricted to `range`, as a sub-slice.
fn clip(dec: &Decryptor<'_>, index: u64, range: &Range<u64>, plain: Bytes) -> Bytes {
    let seg = dec.segment_plaintext_range(index);
    let lo = (range.start.max(seg.start) - seg.start) as usize;
    let hi = (range.end.min(seg.end) - seg.start) as usize;
    plain.slice(lo..hi)
}

/// What opens one blob's segments: its key, header, length and verified
/// segment table.
struct Sealed {
    key: Arc<FileKey>,
    header: Header,
    ct_len: u64,
    segments: Arc<[u8]>,
}

impl Sealed {
    fn decryptor(&self) -> Result<Decryptor<'_>, StorageError> {
        Ok(Decryptor::new(&self.key, self.header, self.ct_len)?)
    }
}

/// Checks sealed segment `index` against the segment table, then opens it
/// in place; returns the plaintext length. Nothing of a segment that fails
/// either check is ever yielded.
fn check_and_open(
    dec: &Decryptor<'_>,
    table: &[u8],
    index: u64,
    buf: &mut [u8],
) -> Result<usize, StorageError> {
    let at = usize::try_from(index.saturating_mul(SEGMENT_DIGEST_LEN))
        .map_err(|_| StorageError::Integrity("segment index out of range".into()))?;
    let expected = table
        .get(at..at + SEGMENT_DIGEST_LEN as usize)
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or_else(|| StorageError::Integrity("segment table too short".into()))?;
    if blake3::hash(buf) != blake3::Hash::from_bytes(expected) {
        return Err(StorageError::Integrity(format!(
            "segment {index} is not the committed one"
        )));
    }
    Ok(dec.open_segment(index, buf)?.len())
}

async fn pump(
    objects: Arc<dyn ObjectStore>,
    blob: Path,
    sealed: Sealed,
    range: Range<u64>,
    tx: &mpsc::Sender<Result<Bytes, StorageError>>,
) -> Result<(), StorageError> {
    let segments = {
        let dec = sealed.decryptor()?;
        if dec.plaintext_len() == 0 {
            // An empty file is one empty final segment: open it anyway, so
            // a tampered empty file is caught like any other.
            0..1
        } else {
            dec.segments_for(range.clone())
        }
    };
    if segments.is_empty() {
        return Ok(());
    }
    let (ct_start, ct_end) = {
        let dec = sealed.decryptor()?;
        (
            dec.segment_ciphertext_range(segments.start).start,
            dec.segment_ciphertext_range(segments.end - 1).end,
        )
    };
    let opts = GetOptions {
        range: Some(GetRange::Bounded(ct_start..ct_end)),
        ..Default::default()
    };
    let got = objects.get_opts(&blob, opts).await?;
    match got.payload {
        GetResultPayload::File(file, _) => {
            // Local store: positioned reads on a blocking thread, straight
            // into the buffer that is then decrypted in place.
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
                let dec = sealed.decryptor()?;
                for i in segments {
                    let r = dec.segment_ciphertext_range(i);
                    let mut buf = vec![0u8; (r.end - r.start) as usize];
                    file.read_exact_at(&mut buf, r.start)?;
                    let n = check_and_open(&dec, &sealed.segments, i, &mut buf)?;
                    buf.truncate(n);
                    let out = clip(&dec, i, &range, Bytes::from(buf));
                    if tx.blocking_send(Ok(out)).is_err() {
                        return Ok(()); // the reader went away
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
        }
        GetResultPayload::Stream(mut stream) => {
            let dec = sealed.decryptor()?;
            let mut acc = BytesMut::new();
            let mut index = segments.start;
            while index < segments.end {
                let r = dec.segment_ciphertext_range(index);
                let need = (r.end - r.start) as usize;
                while acc.len() < need {
                    match stream.next().await {
                        Some(chunk) => acc.extend_from_slice(&chunk?),
                        None => return Err(StorageError::Integrity("blob ended early".into())),
                    }
                }
                let mut seg = acc.split_to(need);
                let n = check_and_open(&dec, &sealed.segments, index, &mut seg)?;
                seg.truncate(n);
                let out = clip(&dec, index, &range, seg.freeze());
                if tx.send(Ok(out)).await.is_err() {
                    return Ok(());
                }
                index += 1;
            }
            Ok(())
        }
    }
}

/// A stored blob's ciphertext as it lies in the bucket.
pub type CiphertextStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, StorageError>>;

impl Store {
    /// A blob's stored ciphertext, unopened (the key-release route serves
    /// it to a client that holds the DEK); `None` if the blob is gone.
    pub async fn ciphertext(&self, blob: &str) -> Result<Option<CiphertextStream>, StorageError> {
        use futures::StreamExt as _;
        let path = Path::parse(blob)
            .map_err(|_| StorageError::Integrity(format!("bad blob key {blob:?}")))?;
        let size = match self.objects.head(&path).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // Read in ranges of 4 MiB, two in flight: a plain GET stream of
        // the local store reads in small chunks on a blocking thread each,
        // about seven times slower than the decrypting download.
        const STEP: u64 = 4 << 20;
        let objects = self.objects.clone();
        let ranges: Vec<std::ops::Range<u64>> = (0..size.div_ceil(STEP))
            .map(|i| i * STEP..((i + 1) * STEP).min(size))
            .collect();
        Ok(Some(
            futures::stream::iter(ranges)
                .map(move |r| {
                    let objects = objects.clone();
                    let path = path.clone();
                    async move {
                        objects
                            .get_range(&path, r)
                            .await
                            .map_err(StorageError::from)
                    }
                })
                .buffered(2)
                .boxed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process named [`HASHER_THREAD`].
    #[cfg(target_os = "linux")]
    fn hashers_running() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim_end() == HASHER_THREAD)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// The digest is the plaintext's SHA-256 on a hasher thread (in a
    /// runtime) and in place (outside one); a digest dropped before its
    /// end (a request that went away) leaves no thread behind.
    #[test]
    fn plaintext_digest_on_its_own_thread_and_in_place() {
        let chunks: Vec<Bytes> = (0..5u8)
            .map(|i| Bytes::from(vec![i; 100_000 + usize::from(i)]))
            .collect();
        let want = {
            let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
            chunks.iter().for_each(|c| sha.update(c));
            sha.finish().as_ref().to_vec()
        };
        let chunks = &chunks;
        let digest = |in_runtime: bool| async move {
            let mut d = PlainDigest::start();
            assert_eq!(matches!(d, PlainDigest::Parallel { .. }), in_runtime);
            for c in chunks {
                d.update(c).await.unwrap();
            }
            d.finish().await.unwrap()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(digest(true)), want);
        assert_eq!(futures::executor::block_on(digest(false)), want);

        // Uploads that go away mid-body: their hashers end.
        rt.block_on(async {
            let mut dropped = Vec::new();
            for _ in 0..4 {
                let mut d = PlainDigest::start();
                d.update(&Bytes::from_static(b"part of a body"))
                    .await
                    .unwrap();
                dropped.push(d);
            }
            // Each thread names itself once it runs.
            #[cfg(target_os = "linux")]
            {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while hashers_running() < 4 {
                    assert!(std::time::Instant::now() < deadline, "hashers not started");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            drop(dropped);
        });
        #[cfg(target_os = "linux")]
        {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while hashers_running() > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} hasher threads still running",
                    hashers_running()
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}
