//! Modelvault's persistence, all through `object_store`: a local directory
//! (the embedded default) or any S3-compatible bucket.
//!
//! Invariants a reader must keep:
//! - no plaintext model byte, plaintext digest or DEK is ever written; blobs
//!   are in the format of `modelvault-format`, digests are sealed under the
//!   version DEK, DEKs are wrapped by the key provider;
//! - every control record is authenticated (`records`) and bound to its
//!   path; a record that fails is an [`StorageError::Integrity`] error;
//! - nothing is overwritten: blobs get fresh keys, records are
//!   create-if-absent (mutable state is sequence-numbered records), so
//!   racing writers never tear state;
//! - on the local store, every write is fsynced (file and directory) before
//!   it returns (`LocalFileSystem::with_fsync`), so an acknowledged commit
//!   survives a crash.

//!
//! Where things are: [`Store`] is opened in `store`; `series` writes and
//! reads authenticated records; `models`, `versions` and `commit` hold the
//! model and version life cycle; `commit_log` orders a model's commits and
//! answers `latest` from its newest entries; `deks` is the one place a version's key
//! records are read, created and unwrapped; `blob` encrypts and serves
//! files; `rotation`, `dek_rotation` and `shred` change keys; `gc` deletes
//! what nothing references.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod audit_objects;
mod blob;
mod commit;
mod commit_log;
mod dek_rotation;
mod deks;
mod error;
mod failpoint;
mod gc;
// The bucket's paths: private, except to tests that tamper with the
// bucket (the `test-hooks` feature).
mod direct_upload;
#[cfg(any(test, feature = "test-hooks"))]
pub mod layout;
#[cfg(not(any(test, feature = "test-hooks")))]
mod layout;
mod local_objects;
mod metadata;
mod models;
pub mod names;
mod records;
mod repos;
mod rotation;
mod series;
mod shred;
mod signing_key;
mod store;
mod types;
mod versions;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use futures::TryStreamExt as _;
use modelvault_format::{Dek, SegmentSize};
use modelvault_keys::{DekBinding, KekVersion, KeyProvider};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use audit_objects::{AuditObjects, SegmentRef, SegmentSummary};
pub use blob::{CiphertextStream, FileReader, PlaintextStream, UploadReceipt};
pub use deks::{KeyWant, VersionKey};
pub(crate) use deks::{digest_seal_key, seal_digests, unseal_digests, version_metadata_key};
pub use error::StorageError;
pub use failpoint::failpoint;
pub use gc::GcReport;
pub use repos::{ConsoleSessions, RecordSeries, Tokens};
pub use rotation::{KeyDir, Rewrap};
pub use shred::ShredReport;
pub use signing_key::{AuditSigningKey, SigningSeed};
pub use store::Readiness;
#[cfg(any(test, feature = "test-hooks"))]
pub use store::open_object_store;
pub use types::*;
pub use versions::VersionInForce;

/// An open store: the object store, and the key provider that
/// authenticates its records and wraps its DEKs.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Root directory when the store is the local file system.
    local_root: Option<PathBuf>,
    keys: Arc<dyn KeyProvider>,
    url: String,
    segment_size: SegmentSize,
    /// Presigns GET URLs on S3 stores: the client and the key prefix.
    signer: Option<(Arc<object_store::aws::AmazonS3>, String)>,
    /// Summaries of audit segments, shared by every clone of the store.
    audit_summaries: Arc<audit_objects::SummaryCache>,
    /// What this process learnt of the commit logs (head numbers,
    /// immutable entries and committed versions' briefs), shared by every
    /// clone of the store.
    log_cache: Arc<commit_log::LogCache>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn b64_decode(s: &str) -> Result<Vec<u8>, StorageError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| StorageError::Integrity("invalid base64 in a record".into()))
}
