//! The audit checkpoint-signing key's stored form: a 32-byte seed wrapped
//! by the KEK (the same envelope as a version DEK, bound to a reserved
//! name no version can take), and its public key. Records under
//! `audit/signing-keys/` are a series: the first is created once
//! (create-if-absent, so servers over one bucket share one key), a KEK
//! rewrap is the next record, the newest wins. The seed is unwrapped here
//! and only here; it leaves as a zeroizing [`Dek`].

use modelvault_keys::WrappedDek;
use serde::{Deserialize, Serialize};

use super::*;

/// The stored record (layout unchanged since the first release).
#[derive(Serialize, Deserialize)]
struct SigningKeyRecord {
    wrapped: WrappedDek,
    public_key: String,
}

/// The binding that names the signing key's seed in its envelope (`.audit`
/// is not a valid namespace, so no version's DEK can be swapped in).
fn binding() -> DekBinding<'static> {
    DekBinding {
        namespace: ".audit",
        model: "checkpoint-signing-key",
        version: ".audit",
        dek_generation: 1,
    }
}

/// The checkpoint-signing key's seed and the public key stored beside it
/// (hex). The caller derives the key pair and checks the two agree.
pub struct SigningSeed {
    /// The 32-byte Ed25519 seed (zeroized on drop).
    pub seed: Dek,
    /// The public key the record names, hex.
    pub public_key: String,
}

impl std::fmt::Debug for SigningSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSeed")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The audit checkpoint-signing key's records ([`Store::audit_signing_key`]).
pub struct AuditSigningKey<'a> {
    store: &'a Store,
}

impl Store {
    /// The audit checkpoint-signing key.
    pub fn audit_signing_key(&self) -> AuditSigningKey<'_> {
        AuditSigningKey { store: self }
    }
}

impl AuditSigningKey<'_> {
    fn series(&self) -> RecordSeries<'_> {
        RecordSeries {
            store: self.store,
            kind: "audit-signing-key",
            dir: layout::audit_signing_keys(),
        }
    }

    /// The stored key's seed, unwrapped; `None` if no key was created.
    pub async fn read(&self) -> Result<Option<SigningSeed>, StorageError> {
        let Some((_, r)) = self.series().latest::<SigningKeyRecord>().await? else {
            return Ok(None);
        };
        let seed = self.store.keys().unwrap_dek(&r.wrapped, &binding()).await?;
        Ok(Some(SigningSeed {
            seed,
            public_key: r.public_key,
        }))
    }

    /// Stores a new key (the first record). `Ok(false)` when another
    /// server created one first: read that one.
    pub async fn create(&self, seed: &Dek, public_key: &str) -> Result<bool, StorageError> {
        let record = SigningKeyRecord {
            wrapped: self.store.keys().wrap_dek(seed, &binding()).await?,
            public_key: public_key.to_owned(),
        };
        match self.series().create_at(0, &record).await {
            Ok(()) => Ok(true),
            Err(StorageError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The KEK version wrapping the seed, if the key exists.
    pub async fn kek_version(&self) -> Result<Option<u32>, StorageError> {
        Ok(self
            .series()
            .latest::<SigningKeyRecord>()
            .await?
            .map(|(_, r)| r.wrapped.kek_version.0))
    }

    /// Rewraps the seed under the current KEK if it uses a version below
    /// `target` (a new record; the key itself is unchanged). `Ok(false)`
    /// when there is no key or it is already at `target` or above.
    pub async fn rewrap(&self, target: u32) -> Result<bool, StorageError> {
        for _ in 0..8 {
            let Some((seq, r)) = self.series().latest::<SigningKeyRecord>().await? else {
                return Ok(false);
            };
            if r.wrapped.kek_version.0 >= target {
                return Ok(false);
            }
            let seed = self.store.keys().unwrap_dek(&r.wrapped, &binding()).await?;
            let next = SigningKeyRecord {
                wrapped: self.store.keys().wrap_dek(&seed, &binding()).await?,
                public_key: r.public_key,
            };
            match self.series().create_at(seq + 1, &next).await {
                Ok(()) => return Ok(true),
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists(
            "audit signing key: too many concurrent rewraps".into(),
        ))
    }
}
