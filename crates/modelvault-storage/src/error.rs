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
    /// The store has no space left (ENOSPC or a quota): the write was not
    /// carried out.
    #[error("the store is out of space: {0}")]
    InsufficientStorage(String),
    /// The backend failed.
    #[error("object store: {0}")]
    Backend(#[source] object_store::Error),
    /// The key provider failed.
    #[error("key provider: {0}")]
    Keys(#[source] KeyError),
    /// Local file system I/O (fsync, local reads) failed.
    #[error("i/o: {0}")]
    Io(#[source] std::io::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        if is_storage_full(&e) {
            StorageError::InsufficientStorage(e.to_string())
        } else {
            StorageError::Backend(e)
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        if is_storage_full(&e) {
            StorageError::InsufficientStorage(e.to_string())
        } else {
            StorageError::Io(e)
        }
    }
}

/// ENOSPC, EDQUOT or EFBIG anywhere in an error's chain (the local store
/// wraps the `io::Error` of the failed write in its own errors).
pub(crate) fn is_storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            if matches!(
                io.kind(),
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
            ) {
                return true;
            }
            if let Some(inner) = io.get_ref()
                && is_storage_full(inner)
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the local store answers when a write hits a full disk: its own
    /// error around the `io::Error`, inside `object_store::Error::Generic`.
    #[derive(Debug, thiserror::Error)]
    #[error("Unable to copy data to file: {source}")]
    struct LocalWriteError {
        source: std::io::Error,
    }

    #[test]
    fn a_full_disk_is_insufficient_storage() {
        for errno in [28 /* ENOSPC */, 122 /* EDQUOT */] {
            let e = object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(LocalWriteError {
                    source: std::io::Error::from_raw_os_error(errno),
                }),
            };
            assert!(
                matches!(StorageError::from(e), StorageError::InsufficientStorage(_)),
                "errno {errno}"
            );
            let io = std::io::Error::from_raw_os_error(errno);
            assert!(matches!(
                StorageError::from(io),
                StorageError::InsufficientStorage(_)
            ));
            // Wrapped once more, as `io::Error::other` does.
            let wrapped = std::io::Error::other(std::io::Error::from_raw_os_error(errno));
            assert!(matches!(
                StorageError::from(wrapped),
                StorageError::InsufficientStorage(_)
            ));
        }
        let other = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(LocalWriteError {
                source: std::io::Error::from_raw_os_error(13), // EACCES
            }),
        };
        assert!(matches!(
            StorageError::from(other),
            StorageError::Backend(_)
        ));
    }
}
