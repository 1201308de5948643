//! The audit trail: pages of records, the checkpoint public key and the
//! verification report.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `GET /v1/audit`: records oldest first, each exactly as stored.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// Records, each exactly as stored (so exported lines still hash to
    /// the next record's `prev`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub records: Vec<Box<RawValue>>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/audit/public-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPublicKey {
    /// Always `Ed25519`.
    pub algorithm: String,
    /// Hex of the public key that signs audit checkpoints.
    pub public_key: String,
}

/// One problem found in an audit chain (the shape of
/// `modelvault_audit::Problem`, checked field for field by a server test).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditProblem {
    /// The first bad sequence number.
    pub seq: u64,
    /// `edited`, `dropped`, `reordered`, `duplicated`, `truncated`,
    /// `malformed`, `bad_checkpoint`.
    pub kind: String,
    /// What was found.
    pub message: String,
}

/// The verdict on one audit chain (the shape of
/// `modelvault_audit::ChainReport`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainReport {
    /// Chain id.
    pub chain: String,
    /// Records read.
    pub records: u64,
    /// Highest sequence number read.
    pub last_seq: Option<u64>,
    /// Highest checkpoint that verified (signature and head), if any.
    pub verified_to: Option<u64>,
    /// The first problem, if any (verification stops there).
    pub problem: Option<AuditProblem>,
    /// Intents with no completion.
    pub open_intents: Vec<u64>,
}

/// `GET /v1/audit/verify` (the shape of `modelvault_audit::VerifyReport`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyReport {
    /// Every chain.
    pub chains: Vec<ChainReport>,
    /// True when no chain has a problem.
    pub ok: bool,
}
