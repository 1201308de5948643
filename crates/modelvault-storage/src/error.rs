//! The storage crate's single error type. `Integrity` covers every failed
//! authentication of stored data; callers must treat it as deny and must not
//! show its detail to clients.

use modelvault_format::FormatError;
use modelvault_keys::KeyError;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A name, path or argument is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A create-if-absent write lost (the thing exists already).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The version is committed and immutable.
    #[error("version {0} is committed and immutable")]
    VersionCommitted(String),
    /// The version was deleted (crypto-shredded); its name is never reused.
    #[error("version {0} was deleted")]
    Gone(String),
    /// A commit's file list does not match what was uploaded.
    #[error("commit does not match the uploads: {0}")]
    CommitMismatch(String),
    /// Stored data failed authentication or is inconsistent.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A model body stream failed while uploading.
    #[error("upload body failed: {0}")]
    Body(String),
    /// The store is not initialized or was initialized differently.
    #[error("store: {0}")]
    NotInitialized(String),
    /// The backend failed.
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    /// The key provider failed.
    #[error("key provider: {0}")]
    Keys(KeyError),
    /// Local file system I/O (fsync, local reads) failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<KeyError> for StorageError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::MacMismatch | KeyError::UnwrapFailed | KeyError::UnknownMacKey(_) => {
                StorageError::Integrity(e.to_string())
            }
            other => StorageError::Keys(other),
        }
    }
}

impl From<FormatError> for StorageError {
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Crypto(_) | FormatError::Misuse(_) => {
                StorageError::Integrity(format!("format: {e}"))
            }
            other => StorageError::Integrity(other.to_string()),
        }
    }
}
