//! Repositories of the governance records: approvals, deployments, API
//! tokens, policies, key-management jobs and role bindings. Each names its
//! record kind (bound into the record MAC) and its place in the bucket
//! ([`crate::layout`]); callers bring the record type (the server's and the
//! auth crate's), storage decides where and how it is stored. Mutable state
//! is a series of create-if-absent records (the highest number wins).

use super::*;

/// A sequence-numbered series of one kind of record in one folder:
/// approvals or deployments of a version, one job, one policy, the role
/// bindings.
#[derive(Debug, Clone)]
pub struct RecordSeries<'a> {
    pub(crate) store: &'a Store,
    pub(crate) kind: &'static str,
    pub(crate) dir: Path,
}

impl RecordSeries<'_> {
    /// Appends the next record: `make` gets its sequence number; retried
    /// when another writer wins.
    pub async fn append<T: Serialize>(
        &self,
        make: impl FnMut(u64) -> T,
    ) -> Result<(u64, T), StorageError> {
        self.store.append_record(self.kind, &self.dir, make).await
    }

    /// Writes record `seq`, create-if-absent ([`StorageError::AlreadyExists`]
    /// when another writer took the number).
    pub async fn create_at<T: Serialize>(&self, seq: u64, body: &T) -> Result<(), StorageError> {
        self.store
            .create_record(self.kind, &layout::seq_record(&self.dir, seq), body)
            .await
    }

    /// Every record, in order, verified.
    pub async fn all<T: DeserializeOwned>(&self) -> Result<Vec<(u64, T)>, StorageError> {
        self.store.read_series(self.kind, &self.dir).await
    }

    /// The newest record, verified.
    pub async fn latest<T: DeserializeOwned>(&self) -> Result<Option<(u64, T)>, StorageError> {
        self.store.read_latest(self.kind, &self.dir).await
    }
}

impl Store {
    /// A version's approval records.
    pub fn approvals(&self, v: &VersionRef<'_>) -> RecordSeries<'_> {
        RecordSeries {
            store: self,
            kind: "approval",
            dir: layout::approvals_dir(v.namespace, v.model, v.version),
        }
    }

    /// A version's lifecycle-stage records ([`crate::StageRecord`]).
    pub fn stages(&self, v: &VersionRef<'_>) -> RecordSeries<'_> {
        RecordSeries {
            store: self,
            kind: "stage",
            dir: layout::stages_dir(v.namespace, v.model, v.version),
        }
    }

    /// The stage of a version in force: its newest stage record's,
    /// `candidate` when it has none.
    pub async fn stage_of(&self, v: &VersionRef<'_>) -> Result<Stage, StorageError> {
        Ok(self
            .stages(v)
            .latest::<StageRecord>()
            .await?
            .map_or(Stage::Candidate, |(_, r)| r.stage))
    }

    /// Records a version's verified model signature (once: a second
    /// record for the same version is [`StorageError::AlreadyExists`]).
    pub async fn put_version_signature(
        &self,
        v: &VersionRef<'_>,
        sig: &VersionSignature,
    ) -> Result<(), StorageError> {
        let path = layout::signature_record(v.namespace, v.model, v.version);
        self.create_record("signature", &path, sig).await
    }

    /// A version's verified model signature, if one was recorded; a
    /// record naming another version is an integrity error.
    pub async fn version_signature(
        &self,
        v: &VersionRef<'_>,
    ) -> Result<Option<VersionSignature>, StorageError> {
        let path = layout::signature_record(v.namespace, v.model, v.version);
        let Some(sig) = self
            .read_record::<VersionSignature>("signature", &path)
            .await?
        else {
            return Ok(None);
        };
        if sig.version != v.to_string() {
            return Err(StorageError::Integrity(format!(
                "the signature record of {v} names {}",
                sig.version
            )));
        }
        Ok(Some(sig))
    }

    /// A version's deployment records.
    pub fn deployments(&self, v: &VersionRef<'_>) -> RecordSeries<'_> {
        RecordSeries {
            store: self,
            kind: "deployment",
            dir: layout::deployments_dir(v.namespace, v.model, v.version),
        }
    }

    /// One key-management job's records.
    pub fn job(&self, id: &str) -> RecordSeries<'_> {
        RecordSeries {
            store: self,
            kind: "job",
            dir: layout::job_dir(id),
        }
    }

    /// The ids of every job that has records.
    pub async fn job_ids(&self) -> Result<Vec<String>, StorageError> {
        self.list_children(&layout::jobs_root()).await
    }

    /// The role-binding snapshots.
    pub fn role_bindings(&self) -> RecordSeries<'_> {
        RecordSeries {
            store: self,
            kind: "role-bindings",
            dir: layout::bindings_dir(),
        }
    }

    /// One policy's records (installs and removals).
    pub fn policy(&self, name: &str) -> RecordSeries<'_> {
        RecordSeries {
            store: self,
            kind: "policy",
            dir: layout::policy_dir(name),
        }
    }

    /// The names of every policy that has records (installed or removed).
    pub async fn policy_names(&self) -> Result<Vec<String>, StorageError> {
        self.list_children(&layout::policies_root()).await
    }

    /// Stores a policy component's bytes under their SHA-256 (hex);
    /// storing the same bytes again is fine.
    pub async fn put_policy_component(
        &self,
        sha256: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.put_content_addressed(&layout::policy_component(sha256), bytes)
            .await
    }

    /// A policy component's bytes by SHA-256 (hex), unchecked (the caller
    /// hashes them); `None` if absent.
    pub async fn policy_component(
        &self,
        sha256: &str,
    ) -> Result<Option<bytes::Bytes>, StorageError> {
        self.get_bytes(&layout::policy_component(sha256)).await
    }

    /// API tokens.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens { store: self }
    }

    /// Web console sessions.
    pub fn console_sessions(&self) -> ConsoleSessions<'_> {
        ConsoleSessions { store: self }
    }
}

/// Web console sessions: one authenticated record per session (the caller
/// brings the type; it holds a hash of the session secret, never the
/// secret) and a revocation marker written at sign-out. Stored in the
/// bucket so every server behind a load balancer sees a sign-out at once.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleSessions<'a> {
    store: &'a Store,
}

impl ConsoleSessions<'_> {
    /// Stores a new session record (create-if-absent: a session id is
    /// never reused).
    pub async fn create<T: Serialize>(&self, id: &str, record: &T) -> Result<(), StorageError> {
        self.store
            .create_record("console-session", &layout::console_session(id), record)
            .await
    }

    /// A session record by id, verified; `None` if absent.
    pub async fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StorageError> {
        self.store
            .read_record("console-session", &layout::console_session(id))
            .await
    }

    /// Whether the session was signed out (the marker wins even over a
    /// session record put back into the bucket).
    pub async fn is_revoked(&self, id: &str) -> Result<bool, StorageError> {
        self.store
            .marker_exists(&layout::console_session_revocation(id))
            .await
    }

    /// Deletes session records and sign-out markers written more than
    /// `older_than` ago (pass more than the longest session lifetime: an
    /// expired session is refused by its own `expires_at`, which the record
    /// MAC protects, so neither object is needed any more). Returns how
    /// many were deleted. Safe with several servers: deletes are
    /// idempotent.
    pub async fn prune(&self, older_than: std::time::Duration) -> Result<usize, StorageError> {
        let cutoff =
            now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut deleted = 0;
        for root in [
            layout::console_sessions_root(),
            layout::console_session_revocations_root(),
        ] {
            let entries: Vec<_> = self.store.objects.list(Some(&root)).try_collect().await?;
            for e in entries.into_iter().filter(|e| e.last_modified < cutoff) {
                match self.store.objects.delete(&e.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(deleted)
    }

    /// Signs a session out: its revocation marker (an existing one is
    /// fine), then its record is removed.
    pub async fn revoke<T: Serialize>(&self, id: &str, marker: &T) -> Result<(), StorageError> {
        self.store
            .revoke_record(
                "console-session-revocation",
                &layout::console_session_revocation(id),
                marker,
                &layout::console_session(id),
            )
            .await
    }
}

impl Store {
    /// Whether the object at `path` exists (a revocation marker).
    async fn marker_exists(&self, path: &Path) -> Result<bool, StorageError> {
        Ok(self.get_bytes(path).await?.is_some())
    }

    /// Writes a revocation marker (create-if-absent; an existing one is
    /// fine), then removes the record it revokes: the marker first, so a
    /// failure in between leaves the record refused, never live.
    async fn revoke_record<T: Serialize>(
        &self,
        kind: &'static str,
        marker_path: &Path,
        marker: &T,
        record_path: &Path,
    ) -> Result<(), StorageError> {
        match self.create_record(kind, marker_path, marker).await {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.delete_object(record_path).await
    }
}

/// API token records, their unique-name claims and revocation markers.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    store: &'a Store,
}

#[derive(Serialize, serde::Deserialize)]
struct NameClaim {
    token_id: String,
}

impl Tokens<'_> {
    /// Stores a new token: the record first, then the claim on its name;
    /// if the name is taken ([`StorageError::AlreadyExists`]) or the claim
    /// fails, the record is removed again, so no nameless token stays
    /// usable.
    pub async fn create<T: Serialize>(
        &self,
        id: &str,
        name: &str,
        record: &T,
    ) -> Result<(), StorageError> {
        let token_path = layout::token(id);
        self.store
            .create_record("token", &token_path, record)
            .await?;
        let claim = self
            .store
            .create_record(
                "token-name",
                &layout::token_name(name),
                &NameClaim {
                    token_id: id.to_string(),
                },
            )
            .await;
        if let Err(e) = claim {
            if let Err(undo) = self.store.delete_object(&token_path).await {
                tracing::error!(token_id = %id, error = %undo, "could not remove a token whose name claim failed");
            }
            return Err(e);
        }
        Ok(())
    }

    /// A token record by id, verified; `None` if absent (or revoked and
    /// removed).
    pub async fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StorageError> {
        self.store.read_record("token", &layout::token(id)).await
    }

    /// The id of the token holding `name`, from its name claim.
    pub async fn id_by_name(&self, name: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .store
            .read_record::<NameClaim>("token-name", &layout::token_name(name))
            .await?
            .map(|c| c.token_id))
    }

    /// Whether a revocation marker exists for the token (it wins even over
    /// a token record put back into the bucket).
    pub async fn is_revoked(&self, id: &str) -> Result<bool, StorageError> {
        self.store
            .marker_exists(&layout::token_revocation(id))
            .await
    }

    /// Revokes a token: writes its revocation marker (create-if-absent; an
    /// existing one is fine), then removes its record.
    pub async fn revoke<T: Serialize>(&self, id: &str, revocation: &T) -> Result<(), StorageError> {
        self.store
            .revoke_record(
                "token-revocation",
                &layout::token_revocation(id),
                revocation,
                &layout::token(id),
            )
            .await
    }

    /// Every stored token record, verified (a record that vanished between
    /// the listing and the read is skipped).
    pub async fn list<T: DeserializeOwned>(&self) -> Result<Vec<T>, StorageError> {
        let entries: Vec<_> = self
            .store
            .objects
            .list(Some(&layout::tokens_root()))
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some(r) = self.store.read_record("token", &e.location).await? {
                out.push(r);
            }
        }
        Ok(out)
    }
}
