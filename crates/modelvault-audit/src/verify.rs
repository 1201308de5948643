//! Verification, offline or in the server: reads every chain straight from
//! the store and checks sequence, hash links, checkpoint signatures and
//! heads, and pairs intents with completions.

use modelvault_storage::AuditObjects;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::{AuditError, AuditRecord, Checkpoint, GENESIS, line_hash};

/// One problem found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The first bad sequence number.
    pub seq: u64,
    /// `edited`, `dropped`, `reordered`, `duplicated`, `truncated`,
    /// `malformed`, `bad_checkpoint`.
    pub kind: String,
    /// What was found.
    pub message: String,
}

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub problem: Option<Problem>,
    /// Intents with no completion (a server stopped mid-download, or the
    /// completion was lost).
    pub open_intents: Vec<u64>,
}

/// The verdict on a whole store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Every chain.
    pub chains: Vec<ChainReport>,
    /// True when no chain has a problem (and every receipt checked has
    /// its record).
    pub ok: bool,
    /// Receipts checked against the trail (`audit verify --receipts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<ReceiptCheck>,
}

/// What the trail holds for one receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptCheck {
    /// The receipt's request id.
    pub request_id: String,
    /// The chain it names.
    pub chain: String,
    /// The intent sequence number it names.
    pub seq: u64,
    /// `recorded`: the named record is the receipt's intent; `missing`: the
    /// trail has no such record; `mismatch`: the record there is another
    /// request's; `bad_signature`: the receipt does not verify.
    pub status: String,
    /// What was found.
    pub message: String,
}

impl ReceiptCheck {
    /// Compares a verified receipt with the record at its pointer.
    pub fn of(r: &crate::Receipt, record: Option<&AuditRecord>) -> Self {
        let (status, message) = match record {
            None => (
                "missing",
                format!(
                    "no record {} in chain {}: the audit trail lacks this {}'s intent",
                    r.audit.seq, r.audit.chain, r.action
                ),
            ),
            Some(rec)
                if rec.kind == "intent"
                    && rec.request_id.as_deref() == Some(r.request_id.as_str())
                    && rec.action == r.action
                    && rec.principal.as_ref().map(|p| p.id.as_str())
                        == Some(r.principal.id.as_str()) =>
            {
                ("recorded", "the intent record is in the trail".to_string())
            }
            Some(rec) => (
                "mismatch",
                format!(
                    "record {} of chain {} is a {} {} of request {}, not this receipt's",
                    rec.seq,
                    rec.chain,
                    rec.kind,
                    rec.action,
                    rec.request_id.as_deref().unwrap_or("-")
                ),
            ),
        };
        Self {
            request_id: r.request_id.clone(),
            chain: r.audit.chain.clone(),
            seq: r.audit.seq,
            status: status.into(),
            message,
        }
    }

    /// A receipt that did not verify.
    pub fn bad_signature(why: String) -> Self {
        Self {
            request_id: String::new(),
            chain: String::new(),
            seq: 0,
            status: "bad_signature".into(),
            message: why,
        }
    }
}

/// The records at `(chain, seq)` pointers, read straight from the store
/// (only the chains named are read).
pub async fn records_at(
    objects: &AuditObjects,
    wanted: &BTreeSet<(String, u64)>,
) -> Result<BTreeMap<(String, u64), AuditRecord>, AuditError> {
    let chains: BTreeSet<&str> = wanted.iter().map(|(c, _)| c.as_str()).collect();
    let mut out = BTreeMap::new();
    for chain in chains {
        for seg in objects.segments(chain).await? {
            let bytes = objects.read(&seg).await?;
            for line in bytes.split(|b| *b == b'\n') {
                let Ok(rec) = serde_json::from_slice::<AuditRecord>(line) else {
                    continue;
                };
                let at = (rec.chain.clone(), rec.seq);
                if rec.chain == chain && wanted.contains(&at) {
                    out.insert(at, rec);
                }
            }
        }
    }
    Ok(out)
}

impl ChainReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        let head = format!("chain {}: {} records", self.chain, self.records);
        match (&self.problem, self.verified_to) {
            (Some(p), _) => format!(
                "{head}: FAILED at seq {}: {} ({})",
                p.seq, p.kind, p.message
            ),
            (None, Some(n)) => {
                let tail = self.last_seq.unwrap_or(n).saturating_sub(n);
                if tail == 0 {
                    format!("{head}, verified to checkpoint {n}")
                } else {
                    format!(
                        "{head}, verified to checkpoint {n}; {tail} later record(s) chained but not yet checkpointed"
                    )
                }
            }
            (None, None) => format!("{head}, intact chain, no checkpoint yet"),
        }
    }
}

/// Every chain's stored segments (path order) and checkpoints.
pub struct StoredChain {
    /// Chain id.
    pub chain: String,
    /// (first seq from the object name, bytes).
    pub segments: Vec<(u64, bytes::Bytes)>,
    /// Checkpoints, by seq.
    pub checkpoints: Vec<Checkpoint>,
}

/// Reads every chain from the store's audit objects.
pub async fn read_all(objects: &AuditObjects) -> Result<Vec<StoredChain>, AuditError> {
    let mut out = Vec::new();
    for chain in objects.chains().await? {
        out.push(read_chain(objects, chain).await?);
    }
    Ok(out)
}

/// Reads one chain's segments and checkpoints.
async fn read_chain(objects: &AuditObjects, chain: String) -> Result<StoredChain, AuditError> {
    let mut segments = Vec::new();
    for seg in objects.segments(&chain).await? {
        let bytes = objects.read(&seg).await?;
        segments.push((seg.first_seq, bytes));
    }
    let mut checkpoints = Vec::new();
    for (seq, bytes) in objects.checkpoints(&chain).await? {
        match serde_json::from_slice::<Checkpoint>(&bytes) {
            Ok(c) => checkpoints.push(c),
            Err(_) => checkpoints.push(Checkpoint {
                chain: chain.clone(),
                seq: seq.unwrap_or(0),
                head: String::new(),
                time: chrono::Utc::now(),
                public_key: String::new(),
                signature: String::new(),
            }),
        }
    }
    checkpoints.sort_by_key(|c| c.seq);
    Ok(StoredChain {
        chain,
        segments,
        checkpoints,
    })
}

/// Verifies one chain.
pub fn verify_chain(c: &StoredChain, public_key: &[u8]) -> ChainReport {
    let mut report = ChainReport {
        chain: c.chain.clone(),
        records: 0,
        last_seq: None,
        verified_to: None,
        problem: None,
        open_intents: Vec::new(),
    };
    let mut hashes: BTreeMap<u64, String> = BTreeMap::new();
    let mut expected = 0u64;
    let mut prev = GENESIS.to_string();
    let mut intents = BTreeSet::new();
    let fail = |report: &mut ChainReport, seq: u64, kind: &str, message: String| {
        if report.problem.is_none() {
            report.problem = Some(Problem {
                seq,
                kind: kind.into(),
                message,
            });
        }
    };
    // Every sequence number present anywhere, to tell a reordering (the
    // missing number comes later) from a drop (it never does).
    let present: BTreeSet<u64> = c
        .segments
        .iter()
        .flat_map(|(_, b)| b.split(|x| *x == b'\n'))
        .filter_map(|l| serde_json::from_slice::<AuditRecord>(l).ok())
        .map(|r| r.seq)
        .collect();
    'segments: for (first, bytes) in &c.segments {
        let mut lines = bytes.split(|b| *b == b'\n').peekable();
        let mut first_in_segment = true;
        while let Some(line) = lines.next() {
            if line.is_empty() && lines.peek().is_none() {
                break;
            }
            let rec: AuditRecord = match serde_json::from_slice(line) {
                Ok(r) => r,
                Err(e) => {
                    fail(
                        &mut report,
                        expected,
                        "malformed",
                        format!("unparsable record: {e}"),
                    );
                    break 'segments;
                }
            };
            if first_in_segment && rec.seq != *first {
                fail(
                    &mut report,
                    expected.min(rec.seq),
                    "reordered",
                    format!("segment named {first} starts with seq {}", rec.seq),
                );
                break 'segments;
            }
            first_in_segment = false;
            if rec.chain != c.chain {
                fail(
                    &mut report,
                    rec.seq,
                    "edited",
                    format!("record names chain {}", rec.chain),
                );
                break 'segments;
            }
            if rec.seq != expected {
                let (kind, message) = if hashes.contains_key(&rec.seq) {
                    ("duplicated", format!("seq {} appears again", rec.seq))
                } else if rec.seq < expected || present.contains(&expected) {
                    (
                        "reordered",
                        format!("seq {} where seq {expected} belongs", rec.seq),
                    )
                } else {
                    (
                        "dropped",
                        format!("expected seq {expected}, found {}", rec.seq),
                    )
                };
                fail(&mut report, expected.min(rec.seq), kind, message);
                break 'segments;
            }
            if rec.prev != prev {
                let bad = rec.seq.saturating_sub(1);
                fail(
                    &mut report,
                    bad,
                    "edited",
                    format!(
                        "record {bad} no longer hashes to the prev of record {}",
                        rec.seq
                    ),
                );
                break 'segments;
            }
            let h = line_hash(line);
            hashes.insert(rec.seq, h.clone());
            prev = h;
            report.records += 1;
            report.last_seq = Some(rec.seq);
            expected += 1;
            match rec.kind.as_str() {
                "intent" => {
                    intents.insert(rec.seq);
                }
                "completion" => {
                    if let Some(i) = rec.intent_seq {
                        intents.remove(&i);
                    }
                }
                _ => {}
            }
        }
    }
    report.open_intents = intents.into_iter().collect();
    // Checkpoints: signature, then the head they name.
    let intact_to = match &report.problem {
        Some(p) => p.seq.checked_sub(1),
        None => report.last_seq,
    };
    for cp in &c.checkpoints {
        if cp.chain != c.chain || cp.verify(public_key).is_err() {
            fail(
                &mut report,
                cp.seq,
                "bad_checkpoint",
                format!("checkpoint {} does not verify with the public key", cp.seq),
            );
            break;
        }
        match hashes.get(&cp.seq) {
            Some(h) if *h == cp.head => {
                if intact_to.is_some_and(|t| cp.seq <= t) {
                    report.verified_to = Some(cp.seq);
                }
            }
            Some(_) => {
                fail(
                    &mut report,
                    cp.seq,
                    "edited",
                    format!(
                        "record {} differs from what checkpoint {} signed",
                        cp.seq, cp.seq
                    ),
                );
                break;
            }
            None if report.problem.is_none() => {
                let last = report.last_seq;
                fail(
                    &mut report,
                    last.map_or(0, |s| s + 1),
                    "truncated",
                    format!(
                        "checkpoint {} covers records the chain no longer has (it ends at {})",
                        cp.seq,
                        last.map_or("nothing".into(), |s| s.to_string())
                    ),
                );
                break;
            }
            None => break,
        }
    }
    report
}

/// Verifies every chain of a store.
pub async fn verify_store(
    objects: &AuditObjects,
    public_key: &[u8],
) -> Result<VerifyReport, AuditError> {
    // One chain in memory at a time.
    let mut reports = Vec::new();
    for chain in objects.chains().await? {
        let c = read_chain(objects, chain).await?;
        reports.push(verify_chain(&c, public_key));
    }
    Ok(VerifyReport {
        ok: reports.iter().all(|r| r.problem.is_none()),
        chains: reports,
        receipts: Vec::new(),
    })
}
