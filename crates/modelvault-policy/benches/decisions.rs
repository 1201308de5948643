//! Decision latency (not a timed test): median and p99 of a fresh-instance
//! decision for each bundled policy and for the chain of three, beside a
//! call on a reused instance of the same policy (the floor) in the same run
//! (goal: fresh ≤ 2× floor per plugin); and the chain against Cedar 4.14.1
//! deciding the same three rules, request and entities built per decision
//! (goal: ≤ 2× Cedar's median and p99). Each plugin's line also gives the
//! fresh instance's own cost (fresh median − reused median), which the
//! ratio hides when the call itself gets cheaper, and the median of an
//! instance alone (a store set up as a decision's, the instance, both
//! dropped; no call): wasmtime's fixed cost, which the ratio's goal needs
//! below the call's.
//!
//! Run: `cargo bench -p modelvault-policy --bench decisions`
//! (`MV_BENCH_ITERS`, default 20000; `MV_BENCH_PY_POLICY` = a built Python
//! example component to include it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use modelvault_policy::*;

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn request() -> PolicyRequest {
    let mut r = PolicyRequest::sample();
    r.action = PolicyAction::Download;
    r.context.environment = "production".into();
    r.resource.sensitivity = SensitivityInfo::Restricted;
    r.resource.approvals = ["mia", "noah"]
        .iter()
        .map(|a| ApprovalInfo {
            approver: a.to_string(),
            environment: "production".into(),
            time: "2026-11-23T00:00:00Z".into(),
            kind: Default::default(),
            approver_roles: vec![],
        })
        .collect();
    r
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("decision bench: run with `cargo bench -p modelvault-policy --bench decisions`");
        return;
    }
    let iters: usize = std::env::var("MV_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let host = PolicyHost::new(Limits::default(), None).unwrap();
    let req = request();
    let mut chain = Vec::new();
    println!("policy decision latency, {iters} calls each (µs)");
    // The bundled policies, then the Python example when built
    // (MV_BENCH_PY_POLICY=path/to/component.wasm, as scripts/test.sh builds it).
    let python = std::env::var("MV_BENCH_PY_POLICY").ok().map(|p| {
        let bytes: &'static [u8] = Box::leak(std::fs::read(p).unwrap().into_boxed_slice());
        modelvault_bundled_policies::BundledPolicy {
            name: "python-allow-listed-owners",
            component: bytes,
            cases: "",
        }
    });
    for b in modelvault_bundled_policies::BUNDLED
        .into_iter()
        .chain(python)
    {
        let is_bundled = !b.cases.is_empty();
        let compiled = Arc::new(host.compile(b.name, b.component).unwrap());
        for _ in 0..1000 {
            host.evaluate(&compiled, &req, &[]);
        }
        let fresh: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                let r = host.evaluate(&compiled, &req, &[]);
                std::hint::black_box(r);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        // An instance alone: a store, an instance, dropped, no call: most
        // of what a fresh decision costs besides its call, and wasmtime's.
        let alone: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                let i = host.instantiate_reused(&compiled).unwrap();
                drop(std::hint::black_box(i));
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let mut reused = host.instantiate_reused(&compiled).unwrap();
        let floor: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                let r = reused.evaluate(&req, &[]).unwrap();
                std::hint::black_box(r);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let (fm, fp) = percentiles(fresh);
        let (rm, rp) = percentiles(floor);
        let (am, _) = percentiles(alone);
        println!(
            "{:<26} fresh median {fm:6.1} p99 {fp:6.1} | reused median {rm:6.1} p99 {rp:6.1} | fresh/floor {:.2} (goal <= 2) | fresh instance's own cost {:.1} us | an instance alone, no call {am:.1} us",
            b.name,
            fm / rm,
            fm - rm
        );
        if is_bundled {
            chain.push(ChainEntry {
                policy: compiled,
                shadow: false,
                config: vec![],
            });
        }
    }
    let times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            let d = host.evaluate_chain(&chain, &req);
            std::hint::black_box(d);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (m, p) = percentiles(times);
    println!("{:<26} fresh median {m:6.1} p99 {p:6.1}", "chain of three");
    let cedar = cedar::Rules::new();
    assert!(cedar.decide(&req), "Cedar and the chain agree: allowed");
    let mut denied = req.clone();
    denied.resource.approvals.pop();
    assert!(
        !cedar.decide(&denied),
        "Cedar and the chain agree: one approval is not two"
    );
    assert_eq!(host.evaluate_chain(&chain, &req).outcome, Outcome::Allow);
    assert_eq!(
        host.evaluate_chain(&chain, &denied).outcome,
        Outcome::Deny,
        "the chain denies one approval"
    );
    for _ in 0..1000 {
        std::hint::black_box(cedar.decide(&req));
    }
    let times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(cedar.decide(&req));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (cm, cp) = percentiles(times);
    println!(
        "chain of three: median {m:.1} us p99 {p:.1} us vs Cedar median {cm:.1} us p99 {cp:.1} us -> ratio {:.2} median, {:.2} p99 (goal <= 2)",
        m / cm,
        p / cp
    );
}

/// The three bundled policies' rules (their default configuration) as
/// Cedar policies, deciding a request built per call from the same
/// `PolicyRequest`. Cedar cannot count or filter a set, so the entity
/// builder computes the approver sets the rules test (part of the timed
/// work, as the host's request lowering is for the chain).
mod cedar {
    use std::collections::{HashMap, HashSet};
    use std::str::FromStr as _;

    use cedar_policy::{
        Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
        PolicySet, Request, RestrictedExpression,
    };
    use modelvault_policy::{
        ApprovalKindInfo, PolicyAction, PolicyRequest, SensitivityInfo, StageInfo,
    };

    const POLICIES: &str = r#"
        // sensitivity-environment: which environments each sensitivity may reach.
        permit (principal, action in [Action::"download", Action::"key-release", Action::"deploy"], resource)
        when {
            resource.sensitivity == "public" || resource.sensitivity == "internal" ||
            (resource.sensitivity == "confidential" &&
                (context.environment == "staging" || context.environment == "production")) ||
            (resource.sensitivity == "restricted" && context.environment == "production")
        };
        // approval-gate: archived versions reach nothing; training use needs a
        // training approval; a gated environment needs a review approval.
        forbid (principal, action in [Action::"download", Action::"key-release", Action::"deploy"], resource)
        when { resource.stage == "archived" };
        forbid (principal, action in [Action::"download", Action::"key-release"], resource)
        when { principal.purpose == "training" && resource.training_approvers.isEmpty() };
        forbid (principal, action in [Action::"download", Action::"key-release", Action::"deploy"], resource)
        when { context.environment == "production" && resource.review_approvers.isEmpty() };
        // separation-of-duties: two distinct approvers, neither the uploader.
        forbid (principal, action in [Action::"download", Action::"key-release", Action::"deploy"], resource)
        when { context.environment == "production" && resource.approvers_not_uploader < 2 };
    "#;

    pub struct Rules {
        policies: PolicySet,
        authorizer: Authorizer,
        user: EntityTypeName,
        version: EntityTypeName,
    }

    impl Rules {
        pub fn new() -> Self {
            Self {
                policies: POLICIES.parse().unwrap(),
                authorizer: Authorizer::new(),
                user: EntityTypeName::from_str("User").unwrap(),
                version: EntityTypeName::from_str("Version").unwrap(),
            }
        }

        /// Builds the request and entities from `r`, then decides.
        pub fn decide(&self, r: &PolicyRequest) -> bool {
            let env = r.context.environment.as_str();
            let action = match r.action {
                PolicyAction::Download => "download",
                PolicyAction::KeyRelease => "key-release",
                PolicyAction::Deploy => "deploy",
                _ => "other",
            };
            let approvers = |kind: ApprovalKindInfo| -> HashSet<&str> {
                r.resource
                    .approvals
                    .iter()
                    .filter(|a| a.environment == env && a.kind == kind)
                    .map(|a| a.approver.as_str())
                    .collect()
            };
            let review = approvers(ApprovalKindInfo::Review);
            let uploader = r.resource.uploader.as_deref().unwrap_or_default();
            let not_uploader = review.iter().filter(|a| **a != uploader).count();
            let set = |s: HashSet<&str>| {
                RestrictedExpression::new_set(
                    s.into_iter()
                        .map(|a| RestrictedExpression::new_string(a.into())),
                )
            };
            let sensitivity = match r.resource.sensitivity {
                SensitivityInfo::Public => "public",
                SensitivityInfo::Internal => "internal",
                SensitivityInfo::Confidential => "confidential",
                SensitivityInfo::Restricted => "restricted",
            };
            let stage = match r.resource.facts.as_ref().map(|f| f.stage) {
                Some(StageInfo::Archived) => "archived",
                Some(StageInfo::Deprecated) => "deprecated",
                Some(StageInfo::ProductionReady) => "production-ready",
                _ => "candidate",
            };
            let resource_id = format!(
                "{}/{}@{}",
                r.resource.namespace,
                r.resource.model,
                r.resource.version.as_deref().unwrap_or_default()
            );
            let resource =
                EntityUid::from_type_name_and_id(self.version.clone(), EntityId::new(&resource_id));
            let principal =
                EntityUid::from_type_name_and_id(self.user.clone(), EntityId::new(&r.principal.id));
            let attrs: HashMap<String, RestrictedExpression> = [
                (
                    "sensitivity",
                    RestrictedExpression::new_string(sensitivity.into()),
                ),
                ("stage", RestrictedExpression::new_string(stage.into())),
                (
                    "uploader",
                    RestrictedExpression::new_string(uploader.into()),
                ),
                ("review_approvers", set(review)),
                (
                    "training_approvers",
                    set(approvers(ApprovalKindInfo::Training)),
                ),
                (
                    "approvers_not_uploader",
                    RestrictedExpression::new_long(not_uploader as i64),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let principal_attrs: HashMap<String, RestrictedExpression> = [(
                "purpose".to_string(),
                RestrictedExpression::new_string(r.principal.purpose.clone().unwrap_or_default()),
            )]
            .into_iter()
            .collect();
            let entities = Entities::from_entities(
                [
                    Entity::new(resource.clone(), attrs, HashSet::new()).unwrap(),
                    Entity::new(principal.clone(), principal_attrs, HashSet::new()).unwrap(),
                ],
                None,
            )
            .unwrap();
            let context = Context::from_pairs([(
                "environment".to_string(),
                RestrictedExpression::new_string(env.into()),
            )])
            .unwrap();
            let action = EntityUid::from_str(&format!("Action::\"{action}\"")).unwrap();
            let request = Request::new(principal, action, resource, context, None).unwrap();
            self.authorizer
                .is_authorized(&request, &self.policies, &entities)
                .decision()
                == Decision::Allow
        }
    }
}
