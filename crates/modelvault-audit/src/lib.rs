//! Modelvault's audit trail.
//!
//! Invariants a reader must keep:
//! - every record carries its chain id, a sequence number (from 0, no
//!   gaps) and the SHA-256 of the previous record's stored line; a chain is
//!   stored as create-if-absent segments
//!   `audit/chains/<chain>/<first-seq>.jsonl`
//!   of JSON lines in the export format, so no record is ever rewritten and
//!   two servers (two chains) never touch each other's objects;
//! - a record whose writer asks for durability is acknowledged only after
//!   the segment holding it is stored (fsynced on the local store); if the
//!   write fails nothing is acknowledged and the chain does not advance;
//! - checkpoints are Ed25519 signatures over (chain, seq, head hash, time)
//!   with a key whose seed is wrapped by the key provider's KEK, never
//!   stored in clear; the public key suffices to verify offline;
//! - no record holds a token, key or other secret.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod checkpoint;
mod reader;
mod receipt;
mod record;
mod verify;
mod writer;

pub use checkpoint::Checkpoint;
pub use reader::{AuditReader, Entry, StoredRecord};
pub use receipt::{
    AuditPointer, RECEIPT_HEADER, RECEIPT_TYPE, Receipt, manifest_digest, receipt_key_id,
    sign_receipt, verify_receipt,
};
pub use record::{AuditRecord, DecisionRef, GENESIS, KeyRef, PrincipalRef, ResourceRef, line_hash};
pub use verify::{
    ChainReport, Problem, ReceiptCheck, VerifyReport, read_all, records_at, verify_store,
};
pub use writer::{
    AuditLog, AuditOptions, SegmentHook, load_signing_key, read_signing_key, rewrap_signing_key,
    signing_key_kek, start_signing_key,
};

/// Errors of the audit trail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store failed. Shared: one failed segment write fails every
    /// record that was waiting on it, each with the same cause.
    #[error("audit store: {0}")]
    Store(#[source] std::sync::Arc<modelvault_storage::StorageError>),
    /// The writer is gone (server shutting down).
    #[error("audit writer stopped")]
    Stopped,
    /// A checkpoint's signature does not verify.
    #[error("checkpoint {0}: bad signature")]
    BadCheckpoint(u64),
    /// Keys failed.
    #[error("audit signing key: {0}")]
    Key(String),
    /// The signing key is missing while the trail exists, or is not the
    /// pinned one: the server refuses to start.
    #[error("{0}")]
    SigningKeyMissing(String),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
}

impl From<object_store::Error> for AuditError {
    fn from(e: object_store::Error) -> Self {
        Self::Store(std::sync::Arc::new(e.into()))
    }
}

impl From<modelvault_storage::StorageError> for AuditError {
    fn from(e: modelvault_storage::StorageError) -> Self {
        Self::Store(std::sync::Arc::new(e))
    }
}
