//! Where everything lives in the bucket (documented in `docs/STORAGE.md`).
//! Private to the crate (public only with the `test-hooks` feature):
//! other crates reach stored things through the store's typed functions
//! and repositories, never by path.
//! Mutable state is a series of create-if-absent records numbered by a
//! zero-padded sequence; the highest number wins.

use object_store::path::Path;

/// Width of zero-padded sequence numbers, so lexical order is numeric order.
pub const SEQ_WIDTH: usize = 12;

/// The init marker.
pub fn marker() -> Path {
    Path::from("modelvault.json")
}

/// All models.
pub fn models_root() -> Path {
    Path::from("models")
}

/// One namespace's models.
pub fn namespace_root(ns: &str) -> Path {
    Path::from(format!("models/{ns}"))
}

/// A model's metadata revisions.
pub fn model_meta_dir(ns: &str, model: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/meta"))
}

/// A model's metadata-key records (seals its sensitive metadata).
pub fn model_keys_dir(ns: &str, model: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/meta-keys"))
}

/// A model's commit log: one sequence-numbered entry per commit.
pub fn commit_log_dir(ns: &str, model: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/commits"))
}

/// A model's versions.
pub fn versions_dir(ns: &str, model: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/versions"))
}

/// A version's manifest revisions.
pub fn manifest_dir(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/versions/{version}/manifest"))
}

/// A version's key records.
pub fn keys_dir(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/versions/{version}/keys"))
}

/// A version's upload records (drafts).
pub fn uploads_dir(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/versions/{version}/uploads"))
}

/// One upload record.
pub fn upload_record(ns: &str, model: &str, version: &str, upload_id: &str) -> Path {
    Path::from(format!(
        "models/{ns}/{model}/versions/{version}/uploads/{upload_id}.json"
    ))
}

/// A sequence-numbered record inside `dir`.
pub fn seq_record(dir: &Path, seq: u64) -> Path {
    Path::from(format!("{dir}/{seq:0width$}.json", width = SEQ_WIDTH))
}

/// Parses the sequence number of a record path made by [`seq_record`].
pub fn parse_seq(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// All blobs.
pub fn blobs_root() -> Path {
    Path::from("blobs")
}

/// A fresh, never reused blob key.
pub fn new_blob(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!(
        "blobs/{ns}/{model}/{version}/{}.mvf",
        uuid::Uuid::now_v7()
    ))
}

/// The segment table of a blob (see `docs/FORMAT.md`): the BLAKE3 digest
/// of each sealed segment, in order. Lives and dies with its blob.
pub fn segment_table(blob: &str) -> Path {
    Path::from(format!("{blob}{SEGMENT_TABLE_SUFFIX}"))
}

/// What a segment table's key adds to its blob's.
pub const SEGMENT_TABLE_SUFFIX: &str = ".segments";

/// An API token record, by token id.
pub fn token(id: &str) -> Path {
    Path::from(format!("tokens/{id}.json"))
}

/// The claim on a token name (unique names).
pub fn token_name(name: &str) -> Path {
    Path::from(format!("token-names/{name}.json"))
}

/// All token records.
pub fn tokens_root() -> Path {
    Path::from("tokens")
}

/// All policy records (one folder per installed name).
pub fn policies_root() -> Path {
    Path::from("policies")
}

/// One policy's sequence-numbered records.
pub fn policy_dir(name: &str) -> Path {
    Path::from(format!("policies/{name}"))
}

/// A policy component's bytes, addressed by their SHA-256.
pub fn policy_component(sha256: &str) -> Path {
    Path::from(format!("policy-components/{sha256}.wasm"))
}

/// A version's approval records.
pub fn approvals_dir(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/versions/{version}/approvals"))
}

/// A version's model-signature record.
pub fn signature_record(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!(
        "models/{ns}/{model}/versions/{version}/signature.json"
    ))
}

/// A version's lifecycle-stage records.
pub fn stages_dir(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/versions/{version}/stages"))
}

/// A version's deployment records.
pub fn deployments_dir(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!(
        "models/{ns}/{model}/versions/{version}/deployments"
    ))
}

/// A deleted version's tombstone (create-if-absent; never removed).
pub fn tombstone(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!(
        "models/{ns}/{model}/versions/{version}/deleted.json"
    ))
}

/// A version's DEK switch records: `{generation}.json` (zero-padded like a
/// sequence number) once a DEK rotation switched the version to that
/// generation (create-if-absent; never removed).
pub fn switches_dir(ns: &str, model: &str, version: &str) -> Path {
    Path::from(format!("models/{ns}/{model}/versions/{version}/switches"))
}

/// All key-management jobs.
pub fn jobs_root() -> Path {
    Path::from("jobs")
}

/// One job's sequence-numbered records.
pub fn job_dir(id: &str) -> Path {
    Path::from(format!("jobs/{id}"))
}

/// All audit chains' segments.
pub fn audit_chains() -> Path {
    Path::from("audit/chains")
}

/// One audit chain's segments.
pub fn audit_chain(chain: &str) -> Path {
    Path::from(format!("audit/chains/{chain}"))
}

/// An audit segment starting at `first_seq`.
pub fn audit_segment(chain: &str, first_seq: u64) -> Path {
    Path::from(format!("audit/chains/{chain}/{first_seq:012}.jsonl"))
}

/// All audit chains' checkpoints.
pub fn audit_checkpoints_root() -> Path {
    Path::from("audit/checkpoints")
}

/// One audit chain's checkpoints.
pub fn audit_checkpoints(chain: &str) -> Path {
    Path::from(format!("audit/checkpoints/{chain}"))
}

/// One audit checkpoint.
pub fn audit_checkpoint(chain: &str, seq: u64) -> Path {
    Path::from(format!("audit/checkpoints/{chain}/{seq:012}.json"))
}

/// The wrapped checkpoint-signing key's records (newest wins).
pub fn audit_signing_keys() -> Path {
    Path::from("audit/signing-keys")
}

/// A console session record, by session id.
pub fn console_session(id: &str) -> Path {
    Path::from(format!("console-sessions/{id}.json"))
}

/// All console session records.
pub fn console_sessions_root() -> Path {
    Path::from("console-sessions")
}

/// All console sign-out markers.
pub fn console_session_revocations_root() -> Path {
    Path::from("console-session-revocations")
}

/// A console session's revocation marker (sign-out; pruned with the
/// session record once any session it could name has expired).
pub fn console_session_revocation(id: &str) -> Path {
    Path::from(format!("console-session-revocations/{id}.json"))
}

/// A token's revocation marker (create-if-absent; never removed).
pub fn token_revocation(id: &str) -> Path {
    Path::from(format!("token-revocations/{id}.json"))
}

/// The role-binding snapshots (sequence-numbered).
pub fn bindings_dir() -> Path {
    Path::from("access/bindings")
}
