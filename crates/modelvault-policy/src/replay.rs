//! Policy replay: a candidate component evaluated against decisions the
//! audit trail recorded, reporting the ones it would flip.
//!
//! Invariants a reader must keep:
//! - the candidate sees exactly the recorded input (the complete policy
//!   request, its time and request id included, so clocks and randomness
//!   are the ones the live decision had);
//! - the old verdict is recomputed from the recorded per-plugin decisions
//!   with the live chain rule ([`crate::combine`]), and the new one from the
//!   same decisions with the candidate's in place of the plugin it
//!   replaces (or added, enforcing, when it replaces none); shadow
//!   decisions never decide either;
//! - a candidate failure (trap, timeout, malformed result) is a deny, as it
//!   would be live.

use serde::Serialize;

use crate::{
    ChainDecision, ChainEntry, Outcome, PluginResult, PolicyDecision, PolicyHost, PolicyRequest,
    combine,
};

/// One decision as the audit trail recorded it.
#[derive(Debug, Clone)]
pub struct RecordedDecision {
    /// Plugin name.
    pub plugin: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// Reason code.
    pub reason_code: String,
    /// Reason.
    pub reason: String,
    /// Shadow: recorded, never deciding.
    pub shadow: bool,
}

/// One recorded decision point: the policy input and what each plugin said.
#[derive(Debug, Clone)]
pub struct RecordedCase {
    /// Where it came from (`chain/seq`), for the report.
    pub record: String,
    /// The record's time (RFC 3339).
    pub time: String,
    /// The complete policy input.
    pub input: PolicyRequest,
    /// Each plugin's decision, in chain order.
    pub decisions: Vec<RecordedDecision>,
}

/// A verdict as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `allow` or `deny`.
    pub outcome: Outcome,
    /// The plugin that settled it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Its reason code.
    pub reason_code: String,
    /// Its reason.
    pub reason: String,
}

/// A decision the candidate would change.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    /// `chain/seq` of the audit record.
    pub record: String,
    /// When the live decision was made.
    pub time: String,
    /// The request id.
    pub request_id: String,
    /// The principal id.
    pub principal: String,
    /// The action.
    pub action: String,
    /// `NS/NAME@VERSION`, plus `/FILE` for a file.
    pub resource: String,
    /// The caller's environment.
    pub environment: String,
    /// The live verdict.
    pub old: Verdict,
    /// The verdict with the candidate.
    pub new: Verdict,
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// The candidate's name in the chain.
    pub candidate: String,
    /// The candidate's SHA-256.
    pub sha256: String,
    /// Whether it replaced a plugin the records name (else it was added).
    pub replaces: Option<String>,
    /// Decisions evaluated.
    pub evaluated: u64,
    /// Decisions whose verdict stays.
    pub unchanged: u64,
    /// Allow turned into deny.
    pub allow_to_deny: u64,
    /// Deny turned into allow.
    pub deny_to_allow: u64,
    /// Audit records with decisions but no recorded input (written before
    /// inputs were recorded): not replayable, counted only.
    pub skipped_without_input: u64,
    /// Candidate evaluations that failed (each counted as a deny).
    pub candidate_errors: u64,
    /// Up to the example limit, oldest first.
    pub examples: Vec<Flip>,
}

impl ReplayReport {
    /// Every flip, both ways.
    pub fn flips(&self) -> u64 {
        self.allow_to_deny + self.deny_to_allow
    }
}

/// The chain's verdict with `candidate` in place of the result of the
/// plugin of the same name (enforcing), or added when there is none; and
/// whether it replaced one. Used by replay and the access review's
/// candidate diff.
pub fn substitute(results: &[PluginResult], mut candidate: PluginResult) -> (ChainDecision, bool) {
    candidate.shadow = false;
    let mut replaced = false;
    let mut out: Vec<PluginResult> = Vec::with_capacity(results.len() + 1);
    for r in results {
        if r.plugin == candidate.plugin {
            replaced = true;
            out.push(candidate.clone());
        } else {
            out.push(r.clone());
        }
    }
    if !replaced {
        out.push(candidate);
    }
    (combine(out), replaced)
}

/// Replays `cases` with `candidate` (named `name`, with `config`) in place
/// of `name` in each recorded chain; keeps up to `max_examples` flips.
pub struct Replay<'a> {
    host: &'a PolicyHost,
    candidate: ChainEntry,
    max_examples: usize,
    report: ReplayReport,
}

impl<'a> Replay<'a> {
    /// A replay of `candidate` (its `policy.name` is the plugin it replaces
    /// or is added as).
    pub fn new(host: &'a PolicyHost, candidate: ChainEntry, max_examples: usize) -> Self {
        let report = ReplayReport {
            candidate: candidate.policy.name.clone(),
            sha256: candidate.policy.sha256.clone(),
            ..ReplayReport::default()
        };
        Self {
            host,
            candidate,
            max_examples,
            report,
        }
    }

    /// Counts a record that had decisions but no input.
    pub fn skip_without_input(&mut self) {
        self.report.skipped_without_input += 1;
    }

    /// Replays one recorded decision point.
    pub fn case(&mut self, case: &RecordedCase) {
        let name = &self.candidate.policy.name;
        let recorded = |d: &RecordedDecision| PluginResult {
            plugin: d.plugin.clone(),
            sha256: String::new(),
            shadow: d.shadow,
            decision: PolicyDecision {
                outcome: d.outcome,
                reason_code: d.reason_code.clone(),
                reason: d.reason.clone(),
            },
            error: None,
            micros: 0,
        };
        let old = combine(case.decisions.iter().map(recorded).collect());
        let fresh = self
            .host
            .evaluate(&self.candidate.policy, &case.input, &self.candidate.config);
        if fresh.error.is_some() {
            self.report.candidate_errors += 1;
        }
        let recorded: Vec<PluginResult> = case.decisions.iter().map(recorded).collect();
        let (new, replaced) = substitute(&recorded, fresh);
        if replaced {
            self.report.replaces = Some(name.clone());
        }
        self.report.evaluated += 1;
        let verdict = |c: &ChainDecision| Verdict {
            outcome: c.outcome,
            plugin: c.plugin.clone(),
            reason_code: c.reason_code.clone(),
            reason: c.reason.clone(),
        };
        match (old.outcome, new.outcome) {
            (a, b) if a == b => {
                self.report.unchanged += 1;
                return;
            }
            (Outcome::Allow, _) => self.report.allow_to_deny += 1,
            _ => self.report.deny_to_allow += 1,
        }
        if self.report.examples.len() < self.max_examples {
            let r = &case.input.resource;
            let mut resource = format!(
                "{}/{}@{}",
                r.namespace,
                r.model,
                r.version.as_deref().unwrap_or("-")
            );
            if let Some(f) = &r.file_path {
                resource.push('/');
                resource.push_str(f);
            }
            self.report.examples.push(Flip {
                record: case.record.clone(),
                time: case.time.clone(),
                request_id: case.input.context.request_id.clone(),
                principal: case.input.principal.id.clone(),
                action: case.input.action.as_str().to_string(),
                resource,
                environment: case.input.context.environment.clone(),
                old: verdict(&old),
                new: verdict(&new),
            });
        }
    }

    /// The report.
    pub fn finish(self) -> ReplayReport {
        self.report
    }
}
