//! Key management: status, KEK rotation and retirement, DEK rotation, the
//! crypto-shred delete, and the key jobs they start.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One KEK version in the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KekStatus {
    /// Version.
    pub version: u32,
    /// Live key records it wraps (version DEKs, model metadata keys, the
    /// audit signing key).
    pub dek_count: u64,
    /// `active` or `destroyed`.
    pub state: KekState,
}

/// `GET /v1/keys/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeysStatus {
    /// The key provider.
    pub provider: KeyProviderKind,
    /// The KEK version new wraps use.
    pub current_kek_version: u32,
    /// Every KEK version.
    pub kek_versions: Vec<KekStatus>,
    /// Key jobs, newest first.
    pub jobs: Vec<JobView>,
}

/// `POST .../rotate-dek` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateDekRequest {
    /// After the cleanup, also rotate the KEK and retire (destroy) every
    /// older KEK version that wrapped a key record of the version, so the
    /// revoked generations' wrapped DEKs, wherever copies of them survive,
    /// can no longer be unwrapped.
    #[serde(default)]
    pub complete: bool,
}

/// `POST /v1/keys/retire-kek`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    /// The KEK version to destroy.
    pub version: u32,
}

/// The answer to a delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteResponse {
    /// `ns/model@version`.
    pub deleted: String,
    /// Blobs deleted.
    pub blobs_deleted: usize,
    /// KEK versions that wrapped the version's DEK and are not destroyed
    /// yet: copies of the bucket made before the delete stay decryptable
    /// until each is retired (rotate-kek, then retire-kek).
    pub kek_versions_outstanding: Vec<u32>,
}

wire_enum! {
    /// Whether a KEK version's key material exists.
    KekState {
        /// Usable for wrap and unwrap.
        Active = "active",
        /// Destroyed (retired): what it wrapped can no longer be unwrapped.
        Destroyed = "destroyed",
    }
}

wire_enum! {
    /// Which key provider holds the KEKs (`[keys] provider`).
    KeyProviderKind {
        /// The local keyring file.
        LocalKeyring = "local-keyring",
        /// A PKCS#11 token (an HSM).
        Pkcs11 = "pkcs11",
        /// AWS KMS keys.
        AwsKms = "aws-kms",
    }
}

wire_enum! {
    /// What a key job does.
    JobKind {
        /// Rewrap every key record under a new KEK version.
        RotateKek = "rotate-kek",
        /// Re-encrypt one version under a new DEK generation.
        RotateDek = "rotate-dek",
        /// Crypto-shred one version.
        Delete = "delete",
    }
}

wire_enum! {
    /// Where a key job is.
    JobState {
        /// Started and not ended (resumed after a server restart).
        Running = "running",
        /// Ended successfully.
        Done = "done",
        /// Ended with `error`.
        Failed = "failed",
    }
}

wire_enum! {
    /// The step a DEK rotation is in.
    JobPhase {
        /// Writing the new generation's blobs.
        ReEncrypting = "re-encrypting",
        /// Switched; the old blobs are kept for downloads in flight.
        Grace = "grace",
        /// Deleting the old blobs.
        Cleanup = "cleanup",
        /// `--complete`: rewrapping every key record under a new KEK.
        RotatingKek = "rotating-kek",
        /// `--complete`: retiring the older KEK versions.
        Retiring = "retiring",
        /// Finished.
        Done = "done",
    }
}

/// One key job, as `GET /v1/keys/jobs/{id}` and the key status show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = JobRecord))]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// `rotate-kek`, `rotate-dek` or `delete`.
    pub kind: JobKind,
    /// `running`, `done` or `failed`.
    pub state: JobState,
    /// KEK version the rotation rewraps to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kek: Option<u32>,
    /// `ns/model@version` a delete or DEK rotation is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// DEK generation a DEK rotation creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_generation: Option<u32>,
    /// Where a DEK rotation is: `re-encrypting`, `grace` (switched; old
    /// blobs kept for downloads in flight), `cleanup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// When a DEK rotation switched the version to the new generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<DateTime<Utc>>,
    /// Not before this time are the old blobs deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_after: Option<DateTime<Utc>>,
    /// Items done.
    pub done: u64,
    /// Items in all (0 until known).
    pub total: u64,
    /// Who started it.
    pub started_by: String,
    /// When.
    pub started_at: DateTime<Utc>,
    /// Last progress.
    pub updated_at: DateTime<Utc>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A DEK rotation that, after its cleanup, also rotates the KEK
    /// (`target_kek`) and retires every older KEK version that wrapped a
    /// key record of the version (`keys rotate --complete`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
    /// KEK versions a complete DEK rotation retired (destroyed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_keks: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enums are the strings the API has always used.
    #[test]
    fn job_enums_keep_their_strings() {
        for (k, s) in [
            (JobKind::RotateKek, "rotate-kek"),
            (JobKind::RotateDek, "rotate-dek"),
            (JobKind::Delete, "delete"),
        ] {
            assert_eq!(serde_json::to_value(k).ok(), Some(s.into()));
            assert_eq!(k.to_string(), s);
        }
        for (k, s) in [
            (JobState::Running, "running"),
            (JobState::Done, "done"),
            (JobState::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_value(k).ok(), Some(s.into()));
        }
        for (k, s) in [
            (JobPhase::ReEncrypting, "re-encrypting"),
            (JobPhase::Grace, "grace"),
            (JobPhase::Cleanup, "cleanup"),
            (JobPhase::RotatingKek, "rotating-kek"),
            (JobPhase::Retiring, "retiring"),
            (JobPhase::Done, "done"),
        ] {
            assert_eq!(serde_json::to_value(k).ok(), Some(s.into()));
            assert_eq!(serde_json::from_value::<JobPhase>(s.into()).ok(), Some(k));
        }
    }

    /// The OpenAPI document lists the strings the wire carries.
    #[cfg(feature = "openapi")]
    #[test]
    fn job_enum_schemas_list_the_wire_strings() {
        use utoipa::PartialSchema;
        let listed = |schema| {
            serde_json::to_value(schema)
                .ok()
                .and_then(|v| v.get("enum").cloned())
        };
        assert_eq!(
            listed(JobKind::schema()),
            Some(serde_json::json!(["rotate-kek", "rotate-dek", "delete"]))
        );
        assert_eq!(
            listed(JobState::schema()),
            Some(serde_json::json!(["running", "done", "failed"]))
        );
        assert_eq!(
            listed(JobPhase::schema()),
            Some(serde_json::json!([
                "re-encrypting",
                "grace",
                "cleanup",
                "rotating-kek",
                "retiring",
                "done"
            ]))
        );
    }
}
