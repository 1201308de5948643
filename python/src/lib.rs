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
    inner: modelvault_format::StreamOpener,
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
            inner: modelvault_format::StreamOpener::new(
                &dek.inner,
                &identity,
                ciphertext_size,
                Some(salt),
            ),
        })
    }

    /// Takes the next chunk of ciphertext; returns the plaintext of every
    /// segment it completed (possibly empty). Raises `DecryptError` when a
    /// segment fails authentication: nothing of it is returned.
    fn update<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &mut self.inner;
        let out = py
            .detach(|| {
                let mut out = Vec::with_capacity(chunk.len());
                inner.update(chunk, &mut out).map(|()| out)
            })
            .map_err(|e| DecryptError::new_err(format!("ciphertext: {e}")))?;
        Ok(PyBytes::new(py, &out))
    }

    /// Raises `DecryptError` unless the whole file arrived and opened.
    fn finish(&self) -> PyResult<()> {
        self.inner
            .finish()
            .map_err(|e| DecryptError::new_err(format!("ciphertext: {e}")))
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ReleaseKey>()?;
    m.add_class::<Dek>()?;
    m.add_class::<FileOpener>()?;
    m.add("DecryptError", m.py().get_type::<DecryptError>())?;
    Ok(())
}
