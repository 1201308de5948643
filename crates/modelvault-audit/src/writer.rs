//! The writer: one task per server that numbers, chains and stores records
//! in batches (group commit: every record that arrives while a segment is
//! being written goes into the next one), signs checkpoints, and answers
//! durable writers only once their segment is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use modelvault_format::Dek;
use modelvault_storage::{SigningSeed, StorageError, Store};
use tokio::sync::{mpsc, oneshot};

use crate::{AuditError, AuditRecord, Checkpoint, GENESIS, line_hash};

/// The stored checkpoint-signing key, if there is one (never creates it).
pub async fn read_signing_key(
    store: &Store,
) -> Result<Option<ring::signature::Ed25519KeyPair>, AuditError> {
    use ring::signature::KeyPair as _;
    let Some(SigningSeed { seed, public_key }) = store.audit_signing_key().read().await? else {
        return Ok(None);
    };
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.expose_secret())
        .map_err(|_| AuditError::Key("bad seed".into()))?;
    if hex::encode(pair.public_key().as_ref()) != public_key {
        return Err(AuditError::Key("public key does not match the seed".into()));
    }
    Ok(Some(pair))
}

/// Whether the store holds any audit chain or checkpoint.
async fn trail_exists(store: &Store) -> Result<bool, AuditError> {
    Ok(store.audit_objects().exists().await?)
}

/// The signing key for a server starting a chain. On a store with no audit
/// trail yet it is created on first use ([`load_signing_key`]). When chains
/// or checkpoints exist but the key does not, it was lost or deleted: a new
/// key would sign checkpoints that verify while the proof for everything
/// before is gone, so this refuses ([`AuditError::SigningKeyMissing`])
/// unless `options.allow_new_signing_key` says the operator accepts a new
/// key (logged as a warning). With `options.expected_public_key` the key
/// must be that one (a new key never is).
pub async fn start_signing_key(
    store: &Store,
    options: &AuditOptions,
) -> Result<ring::signature::Ed25519KeyPair, AuditError> {
    use ring::signature::KeyPair as _;
    let key = match read_signing_key(store).await? {
        Some(k) => k,
        None => {
            let trail = trail_exists(store).await?;
            // A server that just created the key may have started its chain
            // since the read above: read again before concluding.
            match read_signing_key(store).await? {
                Some(k) => k,
                None if trail && options.expected_public_key.is_some() => {
                    return Err(AuditError::SigningKeyMissing(
                        "audit chains exist but the checkpoint-signing key (audit/signing-keys/) is missing, and audit.public_key pins a key a new one cannot match: restore audit/signing-keys/ from a backup of the bucket".into(),
                    ));
                }
                None if trail && !options.allow_new_signing_key => {
                    return Err(AuditError::SigningKeyMissing(
                        "audit chains exist but the checkpoint-signing key (audit/signing-keys/) is missing: restore it from a backup of the bucket, or start once with --allow-new-audit-signing-key to sign with a new key (docs/AUDIT.md)".into(),
                    ));
                }
                None => {
                    let key = load_signing_key(store).await?;
                    if trail {
                        tracing::warn!(
                            public_key = %hex::encode(key.public_key().as_ref()),
                            "audit chains exist but the checkpoint-signing key was missing; a new key was created as allowed (checkpoints signed before do not verify with it)"
                        );
                    }
                    key
                }
            }
        }
    };
    if let Some(expected) = &options.expected_public_key
        && key.public_key().as_ref() != expected.as_slice()
    {
        return Err(AuditError::SigningKeyMissing(format!(
            "the store's checkpoint-signing key {} is not the one audit.public_key pins ({}): refusing to sign with it",
            hex::encode(key.public_key().as_ref()),
            hex::encode(expected)
        )));
    }
    Ok(key)
}

/// Loads the checkpoint-signing key, creating it (create-if-absent, so all
/// servers over one bucket share one key) on first use. Its seed is wrapped
/// by the KEK; KEK rotation rewraps it ([`rewrap_signing_key`]). A server
/// starting a chain uses [`start_signing_key`], which refuses to create a
/// key for a store whose trail already exists.
pub async fn load_signing_key(
    store: &Store,
) -> Result<ring::signature::Ed25519KeyPair, AuditError> {
    use ring::signature::KeyPair as _;
    for _ in 0..3 {
        if let Some(pair) = read_signing_key(store).await? {
            return Ok(pair);
        }
        let seed = Dek::generate().map_err(|e| AuditError::Key(e.to_string()))?;
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.expose_secret())
            .map_err(|_| AuditError::Key("bad seed".into()))?;
        if store
            .audit_signing_key()
            .create(&seed, &hex::encode(pair.public_key().as_ref()))
            .await?
        {
            return Ok(pair);
        }
    }
    Err(AuditError::Key("signing key could not be read back".into()))
}

/// The KEK version wrapping the signing key's seed, if the key exists.
pub async fn signing_key_kek(store: &Store) -> Result<Option<u32>, AuditError> {
    Ok(store.audit_signing_key().kek_version().await?)
}

/// Rewraps the signing key's seed under the current KEK if it uses a
/// version below `target` (a new record; the key itself is unchanged).
pub async fn rewrap_signing_key(store: &Store, target: u32) -> Result<bool, AuditError> {
    Ok(store.audit_signing_key().rewrap(target).await?)
}

/// Called with the duration of every segment write (for metrics).
#[derive(Clone)]
pub struct SegmentHook(pub Arc<dyn Fn(Duration) + Send + Sync>);

impl std::fmt::Debug for SegmentHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentHook")
    }
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Called after every segment write with its duration.
    pub on_segment: Option<SegmentHook>,
    /// Seconds between checkpoints (when new records exist).
    pub checkpoint_interval: Duration,
    /// A file every checkpoint is appended to as a JSON line (outside the
    /// bucket), if set.
    pub checkpoint_file: Option<std::path::PathBuf>,
    /// Most records in one segment.
    pub max_batch: usize,
    /// Create a new signing key even though audit chains exist and the key
    /// is missing (the operator says so explicitly; see
    /// [`start_signing_key`]).
    pub allow_new_signing_key: bool,
    /// The Ed25519 public key (raw 32 bytes) the signing key must have.
    pub expected_public_key: Option<Vec<u8>>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_file: None,
            max_batch: 4096,
            on_segment: None,
            allow_new_signing_key: false,
            expected_public_key: None,
        }
    }
}

enum Cmd {
    Record(
        Box<AuditRecord>,
        Option<oneshot::Sender<Result<u64, AuditError>>>,
    ),
    Checkpoint(oneshot::Sender<Result<Option<Checkpoint>, AuditError>>),
}

/// A handle to the writer task.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Cmd>,
    chain: Arc<str>,
    public_key: Arc<[u8]>,
    /// The checkpoint key, shared with the writer task (receipts).
    signer: Arc<ring::signature::Ed25519KeyPair>,
    backlog: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    checkpoints: Arc<tokio::sync::broadcast::Sender<Checkpoint>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("chain", &self.chain)
            .finish()
    }
}

impl AuditLog {
    /// Starts a new chain over `store` (its first record, `chain-start`,
    /// is written before this returns) and its writer task.
    pub async fn start(store: Store, options: AuditOptions) -> Result<Self, AuditError> {
        use ring::signature::KeyPair as _;
        let key = Arc::new(start_signing_key(&store, &options).await?);
        let chain: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let (tx, rx) = mpsc::channel(65_536);
        let (cp_tx, _) = tokio::sync::broadcast::channel(64);
        let log = Self {
            tx,
            chain: chain.clone(),
            public_key: key.public_key().as_ref().into(),
            signer: key.clone(),
            backlog: Arc::new(AtomicU64::new(0)),
            healthy: Arc::new(AtomicBool::new(true)),
            checkpoints: Arc::new(cp_tx),
        };
        let writer = Writer {
            store,
            chain,
            next_seq: 0,
            prev: GENESIS.into(),
            key,
            checkpointed: None,
            options,
            backlog: log.backlog.clone(),
            healthy: log.healthy.clone(),
            checkpoints: log.checkpoints.clone(),
            retry: Vec::new(),
        };
        tokio::spawn(writer.run(rx));
        let mut start = AuditRecord::new("chain-start", "chain-start", "complete");
        start.detail = Some(format!("modelvault {}", env!("CARGO_PKG_VERSION")));
        log.durable(start).await?;
        Ok(log)
    }

    /// This server's chain id.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The raw Ed25519 public key that signs checkpoints.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Signs a decision receipt with the checkpoint key; call it only
    /// after the receipt's intent record is durable.
    pub fn sign_receipt(&self, r: &crate::Receipt) -> Result<String, AuditError> {
        crate::sign_receipt(&self.signer, r)
    }

    /// Records waiting to be stored.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Whether the writer is running and its last segment write
    /// succeeded. A writer that stopped (its task ended or panicked) is
    /// not healthy: nothing queued would ever be stored.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    /// Checkpoints as they are signed (to ship them elsewhere).
    pub fn subscribe_checkpoints(&self) -> tokio::sync::broadcast::Receiver<Checkpoint> {
        self.checkpoints.subscribe()
    }

    /// Queues a record; returns once queued (waits if the queue is full).
    pub async fn record(&self, r: AuditRecord) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Cmd::Record(Box::new(r), None)).await.is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("audit writer stopped; record lost");
        }
    }

    /// Queues a record without waiting; `false` if the queue is full (the
    /// caller counts it instead).
    pub fn try_record(&self, r: AuditRecord) -> bool {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Cmd::Record(Box::new(r), None)).is_ok() {
            true
        } else {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Queues a record without waiting, giving it back if the queue is
    /// full (the caller can then wait with [`AuditLog::record`]).
    pub fn try_queue(&self, r: AuditRecord) -> Result<(), Box<AuditRecord>> {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Cmd::Record(Box::new(r), None)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.backlog.fetch_sub(1, Ordering::Relaxed);
                match e.into_inner() {
                    Cmd::Record(r, _) => Err(r),
                    // Only records are sent here.
                    Cmd::Checkpoint(_) => Ok(()),
                }
            }
        }
    }

    /// Writes a record and waits until it is durably stored; returns its
    /// sequence number. An error means it is not stored: release nothing.
    pub async fn durable(&self, r: AuditRecord) -> Result<u64, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .send(Cmd::Record(Box::new(r), Some(tx)))
            .await
            .is_err()
        {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditError::Stopped);
        }
        rx.await.map_err(|_| AuditError::Stopped)?
    }

    /// Signs a checkpoint over everything stored so far (after flushing
    /// what is queued). `None` if nothing new since the last one.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Checkpoint(tx))
            .await
            .map_err(|_| AuditError::Stopped)?;
        rx.await.map_err(|_| AuditError::Stopped)?
    }
}

struct Writer {
    store: Store,
    chain: Arc<str>,
    next_seq: u64,
    prev: String,
    key: Arc<ring::signature::Ed25519KeyPair>,
    checkpointed: Option<u64>,
    options: AuditOptions,
    backlog: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    checkpoints: Arc<tokio::sync::broadcast::Sender<Checkpoint>>,
    /// Records (never durable ones) whose segment failed, tried again first.
    retry: Vec<AuditRecord>,
}

type Waiter = oneshot::Sender<Result<u64, AuditError>>;

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut tick = tokio::time::interval(self.options.checkpoint_interval);
        tick.tick().await;
        loop {
            let first = tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => Some(c),
                    None => break,
                },
                _ = tick.tick() => None,
                _ = tokio::time::sleep(Duration::from_millis(500)), if !self.retry.is_empty() => None,
            };
            let mut batch: Vec<(Box<AuditRecord>, Option<Waiter>)> =
                self.retry.drain(..).map(|r| (Box::new(r), None)).collect();
            let mut checkpoint_waiters = Vec::new();
            let mut take = |c: Cmd, batch: &mut Vec<_>| match c {
                Cmd::Record(r, w) => batch.push((r, w)),
                Cmd::Checkpoint(w) => checkpoint_waiters.push(w),
            };
            match first {
                Some(c) => take(c, &mut batch),
                None => {
                    // Periodic checkpoint (or a retry).
                    if batch.is_empty() {
                        let _ = self.sign_checkpoint().await;
                        continue;
                    }
                }
            }
            while batch.len() < self.options.max_batch {
                match rx.try_recv() {
                    Ok(c) => take(c, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write_batch(batch).await;
            }
            for w in checkpoint_waiters {
                let _ = w.send(self.sign_checkpoint().await);
            }
        }
        // Queue closed (shutdown): whatever is left, then a last checkpoint.
        if !self.retry.is_empty() {
            let batch = self.retry.drain(..).map(|r| (Box::new(r), None)).collect();
            self.write_batch(batch).await;
        }
        let _ = self.sign_checkpoint().await;
    }

    /// A segment already stored at our next sequence number (a write that
    /// failed on our side but reached the store): adopt it, so the chain
    /// continues after it.
    async fn adopt_existing(&mut self) -> bool {
        let Ok(Some(bytes)) = self
            .store
            .audit_objects()
            .segment_at(&self.chain, self.next_seq)
            .await
        else {
            return false;
        };
        let lines: Vec<&[u8]> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let Some(last) = lines.last() else {
            return false;
        };
        tracing::warn!(chain = %self.chain, seq = self.next_seq, records = lines.len(), "audit segment already stored; continuing after it");
        self.prev = line_hash(last);
        self.next_seq += lines.len() as u64;
        true
    }

    async fn write_batch(&mut self, mut batch: Vec<(Box<AuditRecord>, Option<Waiter>)>) {
        let started = std::time::Instant::now();
        let mut result = Err(StorageError::InvalidInput(
            "audit writer: no attempt".into(),
        ));
        let mut seqs = Vec::with_capacity(batch.len());
        let mut prev = self.prev.clone();
        for _attempt in 0..3 {
            let first_seq = self.next_seq;
            prev = self.prev.clone();
            let mut body = Vec::with_capacity(batch.len() * 512);
            seqs.clear();
            // The batch's records are ours: numbered and chained in place
            // (again on a retry), not copied.
            for (i, (r, _)) in batch.iter_mut().enumerate() {
                if *r.chain != *self.chain {
                    r.chain = self.chain.to_string();
                }
                r.seq = first_seq + i as u64;
                r.prev.clone_from(&prev);
                let line = match serde_json::to_vec(&**r) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "audit record does not serialize");
                        continue;
                    }
                };
                prev = line_hash(&line);
                body.extend_from_slice(&line);
                body.push(b'\n');
                seqs.push(r.seq);
            }
            result = self
                .store
                .audit_objects()
                .create_segment(&self.chain, first_seq, body)
                .await;
            match &result {
                Err(StorageError::AlreadyExists(_)) => {
                    if !self.adopt_existing().await {
                        break;
                    }
                }
                _ => break,
            }
        }
        let n = seqs.len() as u64;
        self.backlog
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        if let Some(hook) = &self.options.on_segment {
            (hook.0)(started.elapsed());
        }
        match result {
            Ok(()) => {
                self.next_seq += n;
                self.prev = prev;
                self.healthy.store(true, Ordering::Relaxed);
                tracing::debug!(
                    records = n,
                    micros = started.elapsed().as_micros() as u64,
                    "audit segment stored"
                );
                for ((_, w), seq) in batch.into_iter().zip(seqs) {
                    if let Some(w) = w {
                        let _ = w.send(Ok(seq));
                    }
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, "audit segment write failed");
                let failure = std::sync::Arc::new(e);
                for (r, w) in batch {
                    match w {
                        // The durable writer is refused: it releases nothing.
                        Some(w) => {
                            let _ = w.send(Err(AuditError::Store(failure.clone())));
                        }
                        None if self.retry.len() < 100_000 => {
                            self.backlog.fetch_add(1, Ordering::Relaxed);
                            self.retry.push(*r);
                        }
                        None => tracing::error!("audit retry buffer full; record lost"),
                    }
                }
            }
        }
    }

    async fn sign_checkpoint(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        if self.next_seq == 0 || self.checkpointed == Some(self.next_seq - 1) {
            return Ok(None);
        }
        let seq = self.next_seq - 1;
        let cp = Checkpoint::sign(&self.key, &self.chain, seq, &self.prev);
        let bytes = serde_json::to_vec(&cp).map_err(|e| AuditError::Invalid(e.to_string()))?;
        if let Err(e) = self
            .store
            .audit_objects()
            .put_checkpoint(&self.chain, seq, bytes.clone())
            .await
        {
            tracing::error!(error = %e, "audit checkpoint write failed");
            return Err(e.into());
        }
        if let Some(file) = &self.options.checkpoint_file {
            use std::io::Write as _;
            let line = [bytes.as_slice(), b"\n"].concat();
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .and_then(|mut f| f.write_all(&line).and_then(|()| f.sync_data()));
            if let Err(e) = written {
                tracing::error!(error = %e, file = %file.display(), "could not ship the checkpoint to its file");
            }
        }
        self.checkpointed = Some(seq);
        let _ = self.checkpoints.send(cp.clone());
        tracing::info!(chain = %self.chain, seq, "audit checkpoint signed");
        Ok(Some(cp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose task is gone (here: its runtime shut down) reports
    /// unhealthy, so the server treats the audit trail as down and fails
    /// closed instead of dropping records.
    #[test]
    fn a_stopped_writer_is_not_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(
            modelvault_keys::LocalKeyring::create(&dir.path().join("keyring.json")).unwrap(),
        );
        let store = Store::open(
            &format!("file://{}", dir.path().join("store").display()),
            keys,
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let log = rt
            .block_on(AuditLog::start(store, AuditOptions::default()))
            .unwrap();
        assert!(log.healthy(), "a running writer");
        drop(rt);
        assert!(!log.healthy(), "a writer whose task is gone");
    }
}
