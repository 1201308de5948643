//! `modelvault._native`: the cryptography of the Python SDK, from the same
//! crates the CLI and server use. A released DEK is opened here (HPKE,
//! `modelvault-release`) and stays here: Python holds an opaque `Dek`
//! whose bytes it cannot read, and file ciphertext is opened segment by
//! segment (`modelvault-format`'s `StreamOpener`), plaintext returned only
//! from segments that authenticated. Work on bytes runs without the GIL.

#![forbid(unsafe_code)]

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pyo3::create_exception!(_native, DecryptError, pyo3::exceptions::PyException);

/// An ephemeral X25519 key for one key release; the DEK is sealed to it.
#[pyclass(module = "modelvault._native")]
struct ReleaseKey {
    inner: modelvault_release::ClientKey,
}

#[pymethods]
impl ReleaseKey {
    #[new]
    fn new() -> Self {
        Self {
            inner: modelvault_release::ClientKey::generate(),
        }
    }

    /// The 32-byte public key to send in the key-release request.
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.public_bytes())
    }

    /// Opens the sealed DEK of a key-release answer; the HPKE info binds it
    /// to the request id, the version and the DEK generation.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        enc: &[u8],
        sealed_dek: &[u8],
        request_id: &str,
        namespace: &str,
        model: &str,
        version: &str,
        dek_generation: u32,
    ) -> PyResult<Dek> {
        let sealed = modelvault_release::SealedDek {
            enc: enc.to_vec(),
            ciphertext: sealed_dek.to_vec(),
        };
        let ctx = modelvault_release::ReleaseContext {
            request_id,
            namespace,
            model,
            version,
            dek_generation,
        };
        let inner = self
            .inner
            .open(&sealed, &ctx)
            .map_err(|e| DecryptError::new_err(format!("key release: {e}")))?;
        Ok(Dek { inner })
    }

    fn __repr__(&self) -> &'static str {
        "ReleaseKey(<private>)"
    }
}

/// A released data key: opaque to Python, zeroized when dropped.
#[pyclass(module = "modelvault._native", frozen)]
struct Dek {
    inner: modelvault_format::Dek,
}

#[pymethods]
impl Dek {
    fn __repr__(&self) -> &'static str {
        "Dek(<redacted>)"
    }
}

/// Opens one file's ciphertext as it arrives, in chunks of any size.
#[pyclass(module = "modelvault._native")]
struct FileOpener {
    inner: Option<modelvault_format::StreamOpener>,
}

impl FileOpener {
    fn opener(&mut self) -> PyResult<&mut modelvault_format::StreamOpener> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("this opener was given to a FileSink"))
    }
}

#[pymethods]
impl FileOpener {
    /// The opener for file `path` of `namespace/model@version`, whose
    /// stored blob is `ciphertext_size` bytes with header salt `salt_hex`
    /// (both from the key-release answer).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        dek: &Dek,
        namespace: &str,
        model: &str,
        version: &str,
        path: &str,
        dek_generation: u32,
        ciphertext_size: u64,
        salt_hex: &str,
    ) -> PyResult<Self> {
        let mut salt = [0u8; modelvault_format::SALT_LEN];
        hex::decode_to_slice(salt_hex, &mut salt)
            .map_err(|_| PyValueError::new_err("salt_hex: 64 hex digits expected"))?;
        let identity = modelvault_format::FileIdentity {
            namespace,
            model,
            version,
            path,
            dek_generation,
        };
        Ok(Self {
            inner: Some(modelvault_format::StreamOpener::new(
                &dek.inner,
                &identity,
                ciphertext_size,
                Some(salt),
            )),
        })
    }

    /// Takes the next chunk of ciphertext; returns the plaintext of every
    /// segment it completed (possibly empty). Raises `DecryptError` when a
    /// segment fails authentication: nothing of it is returned.
    fn update<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let inner = self.opener()?;
        let out = py
            .detach(|| {
                let mut out = Vec::with_capacity(chunk.len());
                inner.update(chunk, &mut out).map(|()| out)
            })
            .map_err(|e| DecryptError::new_err(format!("ciphertext: {e}")))?;
        Ok(PyBytes::new(py, &out))
    }

    /// A [`FileSink`] that opens the ciphertext it is given with this
    /// opener (which it takes) and writes the plaintext to `path`.
    fn sink_to(&mut self, path: std::path::PathBuf) -> PyResult<FileSink> {
        let opener = self
            .inner
            .take()
            .ok_or_else(|| PyValueError::new_err("this opener was given to a FileSink"))?;
        Ok(FileSink::start(path, false, Some(opener)))
    }

    /// Raises `DecryptError` unless the whole file arrived and opened.
    fn finish(&mut self) -> PyResult<()> {
        self.opener()?
            .finish()
            .map_err(|e| DecryptError::new_err(format!("ciphertext: {e}")))
    }
}

/// What a [`FileSink`]'s thread answers: bytes written and their SHA-256.
type SinkResult = Result<(u64, String), SinkError>;

enum SinkError {
    Io(std::io::Error),
    Decrypt(modelvault_format::FormatError),
}

/// Writes a download to a file on a thread of its own, without the GIL:
/// each chunk is (opened, when the sink was made from a `FileOpener`,)
/// hashed with SHA-256 and written; `finish` fsyncs and answers the size
/// and digest of the whole file. Python only reads the socket and hands
/// chunks over, so receiving, hashing and writing overlap.
#[pyclass(module = "modelvault._native")]
struct FileSink {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Buffers the thread is done with, reused so a download allocates
    /// a handful of chunks, not one per read.
    free: std::sync::Mutex<std::sync::mpsc::Receiver<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<SinkResult>>,
}

fn sink_thread(
    path: std::path::PathBuf,
    append: bool,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    free: std::sync::mpsc::Sender<Vec<u8>>,
) -> SinkResult {
    use std::io::{Read as _, Write as _};
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut written = 0u64;
    if append {
        // A resumed download: the kept prefix counts towards the digest.
        let mut kept = std::fs::File::open(&path).map_err(SinkError::Io)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = kept.read(&mut buf).map_err(SinkError::Io)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            written += n as u64;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&path)
        .map_err(SinkError::Io)?;
    while let Ok(chunk) = rx.recv() {
        sha.update(&chunk);
        file.write_all(&chunk).map_err(SinkError::Io)?;
        written += chunk.len() as u64;
        let _ = free.send(chunk);
    }
    file.sync_all().map_err(SinkError::Io)?;
    Ok((written, hex::encode(sha.finish())))
}

impl FileSink {
    fn start(
        path: std::path::PathBuf,
        append: bool,
        opener: Option<modelvault_format::StreamOpener>,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (free_tx, free) = std::sync::mpsc::channel::<Vec<u8>>();
        let worker = match opener {
            None => std::thread::spawn(move || sink_thread(path, append, rx, free_tx)),
            // Client-side mode: opening (AES-GCM) on a thread of its own,
            // hashing and writing the plaintext on another, so the two
            // overlap as receiving does with both.
            Some(mut o) => std::thread::spawn(move || {
                let (ptx, prx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
                let opening = std::thread::spawn(move || -> Result<(), SinkError> {
                    while let Ok(chunk) = rx.recv() {
                        let mut plain = Vec::with_capacity(chunk.len());
                        o.update(&chunk, &mut plain).map_err(SinkError::Decrypt)?;
                        let _ = free_tx.send(chunk);
                        if ptx.send(plain).is_err() {
                            break;
                        }
                    }
                    o.finish().map_err(SinkError::Decrypt)
                });
                let (unused_tx, _unused) = std::sync::mpsc::channel::<Vec<u8>>();
                let written = sink_thread(path, append, prx, unused_tx);
                let opened = opening.join();
                match (written, opened) {
                    (Err(e), _) => Err(e),
                    (Ok(w), Ok(Ok(()))) => Ok(w),
                    (Ok(_), Ok(Err(e))) => Err(e),
                    (Ok(_), Err(_)) => Err(SinkError::Io(std::io::Error::other(
                        "the opening thread panicked",
                    ))),
                }
            }),
        };
        Self {
            tx: Some(tx),
            free: std::sync::Mutex::new(free),
            worker: Some(worker),
        }
    }

    fn join(&mut self, py: Python<'_>) -> PyResult<(u64, String)> {
        self.tx = None;
        let Some(worker) = self.worker.take() else {
            return Err(PyValueError::new_err("this sink is finished"));
        };
        match py.detach(|| worker.join()) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(SinkError::Io(e))) => Err(e.into()),
            Ok(Err(SinkError::Decrypt(e))) => {
                Err(DecryptError::new_err(format!("ciphertext: {e}")))
            }
            Err(_) => Err(PyValueError::new_err("the file sink's thread panicked")),
        }
    }
}

#[pymethods]
impl FileSink {
    /// A sink writing plaintext to `path` (appending to what is there
    /// when `append`, whose bytes then count towards the digest).
    #[new]
    #[pyo3(signature = (path, append = false))]
    fn new(path: std::path::PathBuf, append: bool) -> Self {
        Self::start(path, append, None)
    }

    /// Hands one chunk (any buffer: bytes, bytearray, memoryview) over,
    /// copied into a reused buffer, so the caller may reuse its own at
    /// once; blocks, without the GIL, while the thread is four chunks
    /// behind. Raises the thread's error if it stopped.
    fn write(&mut self, py: Python<'_>, chunk: pyo3::buffer::PyBuffer<u8>) -> PyResult<()> {
        let mut data = self
            .free
            .lock()
            .ok()
            .and_then(|f| f.try_recv().ok())
            .unwrap_or_default();
        data.resize(chunk.item_count(), 0);
        chunk.copy_to_slice(py, &mut data)?;
        let sent = match &self.tx {
            Some(tx) => py.detach(|| tx.send(data).is_ok()),
            None => return Err(PyValueError::new_err("this sink is finished")),
        };
        if !sent {
            // The thread stopped on an error: report it.
            self.join(py)?;
            return Err(PyValueError::new_err("the file sink stopped"));
        }
        Ok(())
    }

    /// Waits for the thread, fsyncs, and returns `(size, sha256_hex)` of
    /// the whole file; raises `DecryptError` or `OSError`.
    fn finish(&mut self, py: Python<'_>) -> PyResult<(u64, String)> {
        self.join(py)
    }
}

/// Checks a decision receipt (a compact JWS, EdDSA) against the raw
/// 32-byte Ed25519 audit public key; returns its claims as JSON bytes.
/// Raises `ValueError` naming what failed.
#[pyfunction]
fn verify_receipt<'py>(
    py: Python<'py>,
    receipt: &str,
    public_key: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    modelvault_release::jws::verify(receipt, RECEIPT_TYPE, public_key)
        .map(|claims| PyBytes::new(py, &claims))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The JWS `typ` of a receipt (`modelvault_audit::RECEIPT_TYPE`).
const RECEIPT_TYPE: &str = "modelvault-receipt+jws";

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(verify_receipt, m)?)?;
    m.add_class::<ReleaseKey>()?;
    m.add_class::<Dek>()?;
    m.add_class::<FileOpener>()?;
    m.add_class::<FileSink>()?;
    m.add("DecryptError", m.py().get_type::<DecryptError>())?;
    Ok(())
}
