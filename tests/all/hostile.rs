//! Hostile plugins installed into a running server: each misbehaves only on
//! a triggering request, which is denied with a reason naming the plugin;
//! other requests keep being served and the server's memory stays bounded.
//! Components of another interface version, or importing a capability the
//! host does not offer, are refused at install.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::common::*;

/// Builds the test plugins of plugins/ once (the bundled three are left
/// as `scripts/build-plugins.sh` built them: lean components; building
/// them with the test plugins would give them the SDK's `std` feature).
/// `lean-hostile` is built on its own first, for the same reason.
pub fn plugins_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let target = root.join("target/plugins");
            let build = |packages: &[&str]| {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = std::process::Command::new(cargo)
                    .current_dir(root.join("plugins"))
                    .args(["build", "--release", "--locked"])
                    .args(packages)
                    .args(["--target", "wasm32-wasip2", "--target-dir"])
                    .arg(&target)
                    .env_remove("CARGO_TARGET_DIR")
                    .env_remove("RUSTFLAGS")
                    .status()
                    .expect("run cargo for plugins/");
                assert!(status.success(), "building plugins/ failed");
            };
            build(&["-p", "lean-hostile"]);
            build(&[
                "--workspace",
                "--exclude",
                "sensitivity-environment",
                "--exclude",
                "approval-gate",
                "--exclude",
                "separation-of-duties",
                "--exclude",
                "lean-hostile",
            ]);
            target.join("wasm32-wasip2/release")
        })
        .clone()
}

/// The lean engine (components that import nothing) under attack: the
/// same limits hold (time, memory, stack, result size), a failure is a
/// deny naming the plugin, the server keeps serving, and every decision
/// starts from a fresh instance (a static counter reads zero each time).
#[test]
fn a_lean_hostile_plugin_is_held_like_any_other() {
    let dir = plugins_dir();
    let kinds = ["loop", "alloc", "trap", "stack", "big-reason", "fresh"];
    let (app, alice) = hostile_app(&kinds);
    let lean = dir.join("lean_hostile.wasm");
    ok(app.cli(
        Some(&app.admin),
        &["policy", "install", "lean-hostile", lean.to_str().unwrap()],
    ));
    let expected = |k: &str| match k {
        "loop" => "plugin.timeout",
        "alloc" => "plugin.memory",
        "trap" | "stack" => "plugin.trap",
        "big-reason" => "plugin.malformed-result",
        _ => "hostile.fresh",
    };
    // Twice over: the second round runs in instances whose pool slots the
    // first round's failures left behind.
    for round in 0..2 {
        for k in kinds {
            let (s, c, body) = error_code(app.get(
                Some(&alice),
                &format!("/v1/models/nlp/h-{k}/versions/1/files/w"),
            ));
            assert_eq!((s, c.as_str()), (403, "policy_denied"), "{k}: {body}");
            assert_eq!(body["error"]["plugin"], "lean-hostile", "{k}: {body}");
            assert_eq!(
                body["error"]["reason_code"],
                expected(k),
                "round {round}, {k}: {body}"
            );
            assert_still_serving(&app, &alice, k);
        }
    }
    assert_memory_bounded(&app);
}

/// A server with the circuit breaker off (every kind is tried in a row;
/// circuit:: tests the breaker), a data scientist's token, a benign model
/// and one model tagged `hostile=<kind>` per kind, each with a file `w`.
fn hostile_app(kinds: &[&str]) -> (TestApp, String) {
    let app = TestApp::start_configured(None, |cfg| {
        let section = "[policy.circuit_breaker]\nfailures = 5\n";
        assert!(cfg.contains(section), "{cfg}");
        *cfg = cfg.replace(section, "[policy.circuit_breaker]\nfailures = 0\n");
    });
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    let src = src.path().to_str().unwrap();
    ok(app.cli(Some(&alice), &["model", "create", "nlp/benign"]));
    ok(app.cli(Some(&alice), &["push", "nlp/benign@1", src]));
    for k in kinds {
        let tag = format!("hostile={k}");
        let model = format!("nlp/h-{k}");
        ok(app.cli(Some(&alice), &["model", "create", &model, "--tag", &tag]));
        ok(app.cli(Some(&alice), &["push", &format!("{model}@1"), src]));
    }
    (app, alice)
}

/// Other requests keep being served after the hostile run of `kind`.
fn assert_still_serving(app: &TestApp, token: &str, kind: &str) {
    assert_eq!(
        app.get(Some(token), "/v1/models/nlp/benign/versions/1/files/w")
            .status(),
        200,
        "after {kind}"
    );
}

/// The server's memory stayed bounded after the allocation bombs.
fn assert_memory_bounded(app: &TestApp) {
    let rss = app.rss_kib();
    assert!(
        rss < 400 * 1024,
        "server RSS {rss} KiB after the hostile runs"
    );
}

#[test]
fn hostile_plugins_are_denied_and_the_server_survives() {
    let dir = plugins_dir();
    let kinds = [
        "loop",
        "sleep",
        "alloc",
        "trap",
        "stack",
        "big-reason",
        "fs",
        "net",
        "env",
    ];
    // Every kind is tried once in a row, the circuit breaker off.
    let (app, alice) = hostile_app(&kinds);
    // Installs fine: benign on the sample request.
    let hostile = dir.join("hostile.wasm");
    ok(app.cli(
        Some(&app.admin),
        &["policy", "install", "hostile", hostile.to_str().unwrap()],
    ));

    let expected = |k: &str| -> &[&str] {
        match k {
            "loop" | "sleep" => &["plugin.timeout"],
            "alloc" => &["plugin.memory"],
            "trap" | "stack" => &["plugin.trap"],
            "big-reason" => &["plugin.malformed-result"],
            _ => &["hostile.sandbox-held"],
        }
    };
    for k in kinds {
        let (s, c, body) = error_code(app.get(
            Some(&alice),
            &format!("/v1/models/nlp/h-{k}/versions/1/files/w"),
        ));
        assert_eq!((s, c.as_str()), (403, "policy_denied"), "{k}: {body}");
        assert_eq!(body["error"]["plugin"], "hostile", "{k}: {body}");
        let code = body["error"]["reason_code"].as_str().unwrap();
        assert!(expected(k).contains(&code), "{k}: {code} ({body})");
        if code.starts_with("plugin.") {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("plugin hostile"),
                "{body}"
            );
        }
        // A deep recursion is named for what it is, not as the stray
        // memory access the exhausted stack in linear memory ends in.
        if k == "stack" {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("stack exhausted"), "{body}");
            assert!(!message.contains("trapped: out of bounds"), "{body}");
        }
        assert_still_serving(&app, &alice, k);
    }
    assert_memory_bounded(&app);

    // Another interface version, and a capability the host does not offer:
    // refused at install with a clear error.
    let err = fails(
        app.cli(
            Some(&app.admin),
            &[
                "policy",
                "install",
                "wrong",
                dir.join("wrong_version.wasm").to_str().unwrap(),
            ],
        ),
        "invalid_policy",
    );
    assert!(
        err.contains("modelvault:policy/evaluator@0.2.0 or @0.1.0"),
        "{err}"
    );
    assert!(err.contains("evaluator@0.9.0"), "{err}");
    let err = fails(
        app.cli(
            Some(&app.admin),
            &[
                "policy",
                "install",
                "extra",
                dir.join("extra_import.wasm").to_str().unwrap(),
            ],
        ),
        "invalid_policy",
    );
    assert!(err.contains("capability"), "{err}");
}

/// Whether `s` holds a character that could start a line or drive a
/// terminal (control characters, line separators, bidi overrides).
fn has_controls(s: &str) -> bool {
    s.chars().any(is_control_like)
}

fn is_control_like(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The same, newlines allowed (multi-line output).
fn has_controls_but_newlines(s: &str) -> bool {
    s.chars().any(|c| c != '\n' && is_control_like(c))
}

#[test]
fn plugin_text_cannot_forge_log_lines_or_terminal_output() {
    let dir = plugins_dir();
    let app = TestApp::start();
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    for k in ["forge", "forge-code"] {
        let tag = format!("hostile={k}");
        ok(app.cli(
            Some(&alice),
            &["model", "create", &format!("nlp/h-{k}"), "--tag", &tag],
        ));
        ok(app.cli(
            Some(&alice),
            &[
                "push",
                &format!("nlp/h-{k}@1"),
                src.path().to_str().unwrap(),
            ],
        ));
    }
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "hostile",
            dir.join("hostile.wasm").to_str().unwrap(),
        ],
    ));

    // The reason keeps its text, with every control character escaped.
    let (s, c, body) =
        error_code(app.get(Some(&alice), "/v1/models/nlp/h-forge/versions/1/files/w"));
    assert_eq!((s, c.as_str()), (403, "policy_denied"), "{body}");
    assert_eq!(body["error"]["reason_code"], "hostile.forged", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!has_controls(message), "{message:?}");
    assert!(
        message.contains("denied\\nFORGED-REASON") && message.contains("\\u{001b}]0;pwned"),
        "{message:?}"
    );
    // A reason code is an identifier: one with a newline is refused.
    let (s, _, body) = error_code(app.get(
        Some(&alice),
        "/v1/models/nlp/h-forge-code/versions/1/files/w",
    ));
    assert_eq!(s, 403, "{body}");
    assert_eq!(
        body["error"]["reason_code"], "plugin.malformed-result",
        "{body}"
    );
    assert!(
        !has_controls(body["error"]["message"].as_str().unwrap()),
        "{body}"
    );

    // The CLI user sees one line and no escape sequence.
    let out = tempfile::tempdir().unwrap();
    let err = fails(
        app.cli(
            Some(&alice),
            &[
                "pull",
                "nlp/h-forge@1",
                "-o",
                out.path().join("o").to_str().unwrap(),
            ],
        ),
        "policy_denied",
    );
    assert!(!has_controls(err.trim_end()), "{err:?}");

    // The operator log: the plugin's output and reason are there, escaped,
    // and no forged line starts anywhere.
    let log = wait_for_log(&app.log, 0, "FORGED-STDOUT");
    assert!(log.contains("out\\nFORGED-STDOUT"), "{log}");
    for line in log.lines() {
        assert!(!line.starts_with("FORGED"), "forged log line: {line:?}");
        assert!(
            !line.contains("\u{1b}]0;pwned"),
            "escape sequence logged: {line:?}"
        );
        assert!(!line.contains('\r'), "carriage return logged: {line:?}");
    }
}

/// A server that answers every request with `status` and `body`, for what
/// the CLI prints of a hostile server's answers.
fn fake_server(status: &str, body: &'static str) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let status = status.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn the_cli_never_prints_a_servers_control_characters() {
    let url = fake_server(
        "403 Forbidden",
        r#"{"error":{"code":"policy_denied\u001b[2J","message":"denied\nFORGED \u001b]0;pwned\u0007\u001b[31mred\u009b1m\u202e"}}"#,
    );
    let err = fails(
        cli(&url, Some("mv_x_y"), &["model", "show", "nlp/m"]),
        "FORGED",
    );
    assert!(!has_controls(err.trim_end()), "{err:?}");
    assert!(err.contains("denied\\nFORGED"), "{err:?}");

    // Text output of a successful answer too.
    let url = fake_server(
        "200 OK",
        r#"[{"name":"evil\u001b[31m","sha256":"00","size":1,"mode":"enforce","installed_by":"x\u0007\u009b","installed_at":"2026-01-01T00:00:00Z"}]"#,
    );
    let out = ok(cli(&url, Some("mv_x_y"), &["policy", "list"]));
    assert!(!has_controls_but_newlines(&out), "{out:?}");
    assert!(out.contains("evil\\u001b[31m"), "{out:?}");
    let out = ok(cli(
        &url,
        Some("mv_x_y"),
        &["policy", "list", "--output", "json"],
    ));
    assert!(!has_controls_but_newlines(&out), "{out:?}");
    // Still JSON, with the same strings.
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["installed_by"], "x\u{7}\u{9b}");
}

#[test]
fn install_smoke_runs_with_the_configured_config_and_every_action() {
    let dir = plugins_dir();
    let app = TestApp::start_configured(None, |cfg| {
        cfg.push_str(concat!(
            "\n[policy.config.hostile]\nhostile = \"trap\"\n",
            "\n[policy.config.hostile-dl]\nhostile = \"trap\"\nhostile_action = \"download\"\n",
            "\n[policy.config.hostile-ok]\nhostile = \"trap\"\nhostile_action = \"none\"\n",
        ));
    });
    let wasm = dir.join("hostile.wasm");
    let wasm = wasm.to_str().unwrap();
    // Benign with an empty config, trapping with the one it would run with.
    let err = fails(
        app.cli(Some(&app.admin), &["policy", "install", "hostile", wasm]),
        "invalid_policy",
    );
    assert!(err.contains("smoke evaluation"), "{err}");
    // Trapping only on downloads: the sample read request alone missed it.
    let err = fails(
        app.cli(Some(&app.admin), &["policy", "install", "hostile-dl", wasm]),
        "invalid_policy",
    );
    assert!(err.contains("sample download request"), "{err}");
    ok(app.cli(Some(&app.admin), &["policy", "install", "hostile-ok", wasm]));
    let list = ok(app.cli(Some(&app.admin), &["policy", "list"]));
    assert!(!list.contains("hostile-dl"), "{list}");
}

/// The first server log line with `needle` after `from` bytes (waits for
/// it).
fn wait_for_log_line(app: &TestApp, from: usize, needle: &str) -> String {
    let log = wait_for_log(&app.log, from, needle);
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .to_string()
}

fn sighup(app: &TestApp) -> usize {
    let from = app.log.lock().unwrap().len();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &app.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    from
}

#[test]
fn policy_config_reloads_on_sighup_once_it_passes_the_smoke_check() {
    let dir = plugins_dir();
    let app = TestApp::start();
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(
        Some(&alice),
        &["model", "create", "nlp/c", "--sensitivity", "confidential"],
    ));
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/c@1", src.path().to_str().unwrap()],
    ));
    let file = "/v1/models/nlp/c/versions/1/files/w";
    let (s, _, body) = error_code(app.get(Some(&alice), file));
    assert_eq!(s, 403, "{body}");
    assert_eq!(
        body["error"]["reason_code"],
        "sensitivity-environment.denied"
    );
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "hostile",
            dir.join("hostile.wasm").to_str().unwrap(),
        ],
    ));

    // Confidential models allowed in dev, by editing the file: SIGHUP
    // applies it, no restart.
    let path = app.data_dir().join("modelvault.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let line = "\"matrix.confidential\" = \"staging,production\"";
    assert!(original.contains(line), "{original}");
    let opened = original.replace(line, "\"matrix.confidential\" = \"dev,staging,production\"");
    std::fs::write(&path, &opened).unwrap();
    let from = sighup(&app);
    let logged = wait_for_log_line(&app, from, "policy configuration reloaded");
    assert!(logged.contains("sensitivity-environment"), "{logged}");
    assert_eq!(app.get(Some(&alice), file).status(), 200);

    // A configuration the installed hostile plugin traps with is refused
    // as a whole: the previous one stays, and the log says why.
    std::fs::write(
        &path,
        format!(
            "{}\n[policy.config.hostile]\nhostile = \"trap\"\n",
            opened.replace("dev,staging,production", "production")
        ),
    )
    .unwrap();
    let from = sighup(&app);
    let logged = wait_for_log_line(&app, from, "policy configuration not reloaded");
    assert!(logged.contains("policy hostile"), "{logged}");
    assert_eq!(app.get(Some(&alice), file).status(), 200, "old config kept");

    // A file that does not parse changes nothing either.
    std::fs::write(&path, "[policy\n").unwrap();
    let from = sighup(&app);
    wait_for_log_line(&app, from, "cannot read the config file");
    assert_eq!(app.get(Some(&alice), file).status(), 200);
    assert_eq!(
        app.get(None, "/healthz").status(),
        200,
        "SIGHUP ends nothing"
    );
}

/// The request a guest receives is the request the host sent, field by
/// field: every field of a 0.2.0 request set to a value of its own, the
/// `echo` trigger of `lean-hostile` answers with the request as the guest
/// decoded it, twice (the first instance of a component typechecks the
/// host's borrowed request against its export; later ones skip the check),
/// and a 0.2.0 request with fields swapped would show here.
#[test]
fn a_guest_receives_every_field_of_the_request() {
    use modelvault_policy::*;
    let dir = plugins_dir();
    let bytes = std::fs::read(dir.join("lean_hostile.wasm")).unwrap();
    let host = PolicyHost::new(Limits::default(), None).unwrap();
    let policy = host.compile("lean-hostile", &bytes).unwrap();
    assert!(policy.runs_lean());
    let req = PolicyRequest {
        principal: PrincipalInfo {
            id: "p-id".into(),
            kind: PrincipalKindInfo::Service,
            roles: vec!["role-1".into(), "role-2".into()],
            groups: vec!["group-1".into()],
            namespaces: vec!["ns-1".into(), "*".into()],
            attributes: [("attr-k".to_string(), "attr-v".to_string())].into(),
            purpose: Some("purpose-1".into()),
        },
        action: PolicyAction::KeyRelease,
        resource: ResourceInfo {
            namespace: "res-ns".into(),
            model: "res-model".into(),
            version: Some("res-version".into()),
            sensitivity: SensitivityInfo::Confidential,
            tags: [
                ("hostile".to_string(), "echo".to_string()),
                ("tag-k".to_string(), "tag-v".to_string()),
            ]
            .into(),
            owner: "res-owner".into(),
            uploader: Some("res-uploader".into()),
            approvals: vec![ApprovalInfo {
                approver: "approver-1".into(),
                environment: "approval-env".into(),
                time: "approval-time".into(),
                kind: ApprovalKindInfo::Compliance,
                approver_roles: vec!["approver-role".into()],
            }],
            deployments: vec![DeploymentInfo {
                environment: "deploy-env".into(),
                deployer: "deployer-1".into(),
                time: "deploy-time".into(),
            }],
            file_path: Some("file-path-1".into()),
            target_environment: Some("target-env".into()),
            approval_kind: Some(ApprovalKindInfo::Training),
            facts: Some(VersionFactsInfo {
                created: "facts-created".into(),
                uploader: "facts-uploader".into(),
                stage: StageInfo::Deprecated,
                files: vec![FileFactInfo {
                    path: "facts-file".into(),
                    size: 12345,
                    sha256: "facts-digest".into(),
                }],
                signature: Some(ModelSignatureInfo {
                    method: "sig-method".into(),
                    signer: "sig-signer".into(),
                    trusted: true,
                    files_match: false,
                }),
            }),
        },
        context: ContextInfo {
            environment: "ctx-env".into(),
            time: "ctx-time".into(),
            request_id: "ctx-request-id".into(),
        },
    };
    let expected = concat!(
        r#"Request { principal: Principal { id: "p-id", kind: PrincipalKind::Service, "#,
        r#"roles: ["role-1", "role-2"], groups: ["group-1"], namespaces: ["ns-1", "*"], "#,
        r#"attributes: [("attr-k", "attr-v")], purpose: Some("purpose-1") }, "#,
        r#"action: Action::KeyRelease, resource: Resource { namespace: "res-ns", "#,
        r#"model: "res-model", version: Some("res-version"), "#,
        r#"sensitivity: Sensitivity::Confidential, "#,
        r#"tags: [("hostile", "echo"), ("tag-k", "tag-v")], owner: "res-owner", "#,
        r#"uploader: Some("res-uploader"), approvals: [Approval { approver: "approver-1", "#,
        r#"environment: "approval-env", time: "approval-time", kind: ApprovalKind::Compliance, "#,
        r#"approver-roles: ["approver-role"] }], deployments: [Deployment { "#,
        r#"environment: "deploy-env", deployer: "deployer-1", time: "deploy-time" }], "#,
        r#"file-path: Some("file-path-1"), target-environment: Some("target-env"), "#,
        r#"approval-kind: Some(ApprovalKind::Training), facts: Some(VersionFacts { "#,
        r#"created: "facts-created", uploader: "facts-uploader", stage: Stage::Deprecated, "#,
        r#"files: [File { path: "facts-file", size: 12345, sha256: "facts-digest" }], "#,
        r#"signature: Some(ModelSignature { method: "sig-method", signer: "sig-signer", "#,
        r#"trusted: true, files-match: false }) }) }, context: Context { "#,
        r#"environment: "ctx-env", time: "ctx-time", request-id: "ctx-request-id" } }"#,
    );
    for round in 0..2 {
        let r = host.evaluate(&policy, &req, &[]);
        assert_eq!(r.error, None, "round {round}");
        assert_eq!(r.decision.reason_code, "hostile.echo", "round {round}");
        assert_eq!(r.decision.reason, expected, "round {round}");
    }
}
