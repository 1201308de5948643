//! The policy host with the real bundled components: their cases files, the
//! chain rule, determinism, the compile cache, and install validation.

use modelvault_policy::*;

fn host() -> PolicyHost {
    PolicyHost::new(Limits::default(), None).unwrap()
}

#[test]
fn bundled_policies_pass_their_cases() {
    let host = host();
    for b in modelvault_bundled_policies::BUNDLED {
        let compiled = host.validate(b.name, b.component).unwrap();
        // Lean components (they import nothing): they run in the lean
        // engine, and pass their cases there.
        assert!(compiled.runs_lean(), "{} does not run lean", b.name);
        let file = cases::parse(b.cases).unwrap();
        assert!(file.cases.len() >= 8, "{} has too few cases", b.name);
        let results = cases::run(&host, &compiled, &file).unwrap();
        let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
        assert!(failed.is_empty(), "{}: {failed:#?}", b.name);
    }
}

#[test]
fn a_case_that_is_wrong_fails() {
    let host = host();
    let b = modelvault_bundled_policies::BUNDLED[0];
    let compiled = host.compile(b.name, b.component).unwrap();
    let mut file = cases::parse(b.cases).unwrap();
    file.cases[2].expect = Outcome::Allow; // "download confidential in dev" is a deny
    let results = cases::run(&host, &compiled, &file).unwrap();
    assert!(!results[2].passed);
}

fn chain(host: &PolicyHost) -> Vec<ChainEntry> {
    modelvault_bundled_policies::BUNDLED
        .iter()
        .map(|b| ChainEntry {
            policy: std::sync::Arc::new(host.compile(b.name, b.component).unwrap()),
            shadow: false,
            config: vec![],
        })
        .collect()
}

fn request(env: &str, sensitivity: SensitivityInfo, approvals: &[(&str, &str)]) -> PolicyRequest {
    let mut r = PolicyRequest::sample();
    r.action = PolicyAction::Download;
    r.context.environment = env.into();
    r.resource.sensitivity = sensitivity;
    r.resource.uploader = Some("alice".into());
    r.resource.approvals = approvals
        .iter()
        .map(|(a, e)| ApprovalInfo {
            approver: a.to_string(),
            environment: e.to_string(),
            time: "2026-11-23T00:00:00Z".into(),
            kind: Default::default(),
            approver_roles: vec![],
        })
        .collect();
    r
}

#[test]
fn the_chain_of_bundled_policies() {
    let host = host();
    let chain = chain(&host);
    // Restricted in production needs two distinct approvals, not by the uploader.
    let d = host.evaluate_chain(
        &chain,
        &request("production", SensitivityInfo::Restricted, &[]),
    );
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.plugin.as_deref(), Some("approval-gate"));
    let d = host.evaluate_chain(
        &chain,
        &request(
            "production",
            SensitivityInfo::Restricted,
            &[("mia", "production")],
        ),
    );
    assert_eq!(
        (d.outcome, d.plugin.as_deref()),
        (Outcome::Deny, Some("separation-of-duties"))
    );
    let both = [("mia", "production"), ("noah", "production")];
    let d = host.evaluate_chain(
        &chain,
        &request("production", SensitivityInfo::Restricted, &both),
    );
    assert_eq!(d.outcome, Outcome::Allow, "{d:#?}");
    assert_eq!(d.results.len(), 3);
    // Restricted never reaches dev.
    let d = host.evaluate_chain(&chain, &request("dev", SensitivityInfo::Restricted, &both));
    assert_eq!(
        (d.outcome, d.plugin.as_deref()),
        (Outcome::Deny, Some("sensitivity-environment"))
    );
    // No plugin: deny. Only abstaining plugins: deny.
    let d = host.evaluate_chain(&[], &request("dev", SensitivityInfo::Public, &[]));
    assert_eq!(
        (d.outcome, d.reason_code.as_str()),
        (Outcome::Deny, "policy.none-installed")
    );
    let abstainers: Vec<_> = chain.iter().skip(1).cloned().collect();
    let d = host.evaluate_chain(&abstainers, &request("dev", SensitivityInfo::Public, &[]));
    assert_eq!(
        (d.outcome, d.reason_code.as_str()),
        (Outcome::Deny, "policy.no-allow")
    );
    // A shadow deny does not decide, but is recorded.
    let mut shadowed = chain.clone();
    shadowed[1].shadow = true;
    let d = host.evaluate_chain(
        &shadowed,
        &request("production", SensitivityInfo::Internal, &both[..0]),
    );
    assert!(d.results[1].shadow && d.results[1].decision.outcome == Outcome::Deny);
    assert_eq!(d.plugin.as_deref(), Some("separation-of-duties"));
}

#[test]
fn decisions_reproduce_and_instances_are_fresh() {
    let host = host();
    let chain = chain(&host);
    let req = request("staging", SensitivityInfo::Confidential, &[]);
    let a = host.evaluate_chain(&chain, &req);
    for _ in 0..50 {
        let b = host.evaluate_chain(&chain, &req);
        assert_eq!(
            (a.outcome, &a.reason_code, &a.reason),
            (b.outcome, &b.reason_code, &b.reason)
        );
    }
}

#[test]
fn compile_cache_is_used_and_bad_components_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key = [7u8; 32];
    let keyed = || {
        PolicyHost::new(Limits::default(), Some(dir.path().to_path_buf()))
            .unwrap()
            .with_cache_key(key)
    };
    let host = keyed();
    let b = modelvault_bundled_policies::BUNDLED[0];
    let first = host.compile(b.name, b.component).unwrap();
    let mut cached: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cached.sort();
    assert_eq!(
        cached.len(),
        2,
        "one compiled artifact and its tag: {cached:?}"
    );
    let artifact = dir.path().join(&cached[0]);
    let tag = dir.path().join(&cached[1]);
    assert!(cached[0].starts_with(&first.sha256), "{cached:?}");
    assert!(cached[1].ends_with(".cwasm.tag"), "{cached:?}");
    // A second host (a restart) with the same key loads it from the cache
    // and it still decides.
    let host2 = keyed();
    let again = host2.validate(b.name, b.component).unwrap();
    assert_eq!(again.sha256, first.sha256);

    // A cache-directory writer swaps in another compiled component (that of
    // another bundled policy, real native code) under this one's name: the
    // tag does not verify, so it is compiled afresh and the right policy
    // decides; the cache is repaired.
    let other = modelvault_bundled_policies::BUNDLED[1];
    let other_host = PolicyHost::new(Limits::default(), None).unwrap();
    let _ = other_host.compile(other.name, other.component).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let h3 = PolicyHost::new(Limits::default(), Some(dir2.path().to_path_buf()))
        .unwrap()
        .with_cache_key(key);
    h3.compile(other.name, other.component).unwrap();
    let other_artifact = std::fs::read_dir(dir2.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let original = std::fs::read(&artifact).unwrap();
    std::fs::copy(&other_artifact, &artifact).unwrap();
    let forged = keyed().compile(b.name, b.component).unwrap();
    assert_eq!(forged.sha256, first.sha256);
    assert_eq!(
        std::fs::read(&artifact).unwrap(),
        original,
        "cache repaired"
    );
    // A tag made without the key does not help.
    std::fs::copy(&other_artifact, &artifact).unwrap();
    std::fs::write(&tag, blake3::hash(b"guess").to_hex().as_bytes()).unwrap();
    keyed().compile(b.name, b.component).unwrap();
    assert_eq!(std::fs::read(&artifact).unwrap(), original);
    // A host without a key never reads the cache (it compiles and does not
    // write either).
    std::fs::copy(&other_artifact, &artifact).unwrap();
    let unkeyed = PolicyHost::new(Limits::default(), Some(dir.path().to_path_buf())).unwrap();
    unkeyed.compile(b.name, b.component).unwrap();
    assert_ne!(std::fs::read(&artifact).unwrap(), original);

    assert!(matches!(
        host.compile("x", b"not wasm"),
        Err(PolicyError::Invalid(_))
    ));
    let limits = Limits {
        max_component_bytes: 1000,
        ..Limits::default()
    };
    let small = PolicyHost::new(limits, None).unwrap();
    assert!(matches!(
        small.compile("x", b.component),
        Err(PolicyError::TooLarge { .. })
    ));
}

#[test]
fn json_mapping_round_trips() {
    let req = request(
        "production",
        SensitivityInfo::Restricted,
        &[("mia", "production")],
    );
    let json = serde_json::to_value(&req).unwrap();
    assert_eq!(json["action"], "download");
    assert_eq!(json["resource"]["sensitivity"], "restricted");
    assert_eq!(json["context"]["request_id"], req.context.request_id);
    let back: PolicyRequest = serde_json::from_value(json).unwrap();
    assert_eq!(back, req);
}
