//! The key crate's single error type. Messages never carry key bytes.

/// Errors from key providers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the provider's storage failed.
    #[error("keyring i/o on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The keyring file exists already (init refuses to overwrite).
    #[error("keyring {0} already exists")]
    AlreadyExists(String),
    /// The keyring file is readable by group or others.
    #[error(
        "keyring {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)"
    )]
    InsecurePermissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// The keyring content cannot be parsed.
    #[error("keyring is corrupt: {0}")]
    Corrupt(String),
    /// No such KEK version.
    #[error("unknown KEK version {0}")]
    UnknownKekVersion(u32),
    /// The KEK version's material was destroyed.
    #[error("KEK version {0} is destroyed")]
    KekDestroyed(u32),
    /// Refused: the current KEK version cannot be destroyed.
    #[error("KEK version {0} is current and cannot be destroyed")]
    KekIsCurrent(u32),
    /// A wrapped DEK did not authenticate (wrong binding, key or bytes).
    #[error("wrapped DEK failed authentication")]
    UnwrapFailed,
    /// A record MAC did not verify.
    #[error("record authentication failed")]
    MacMismatch,
    /// The MAC names a key this provider does not hold.
    #[error("unknown MAC key {0}")]
    UnknownMacKey(String),
    /// Another server changed the provider at the same time (e.g. both
    /// created the same KEK version); nothing was changed by this call.
    #[error("{0}")]
    Conflict(String),
    /// The provider (a token or service) failed or refused; never a
    /// reason to treat anything as allowed.
    #[error("{0}")]
    Provider(String),
    /// A primitive failed (random source, key setup).
    #[error("cryptographic primitive failed: {0}")]
    Crypto(&'static str),
}
