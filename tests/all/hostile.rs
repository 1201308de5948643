//! Hostile plugins installed into a running server: each misbehaves only on
//! a triggering request, which is denied with a reason naming the plugin;
//! other requests keep being served and the server's memory stays bounded.
//! Components of another interface version, or importing a capability the
//! host does not offer, are refused at install.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::common::*;

/// Builds every component of plugins/ (test plugins included) once.
pub fn plugins_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let target = root.join("target/plugins");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .current_dir(root.join("plugins"))
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "--target",
                    "wasm32-wasip2",
                    "--target-dir",
                ])
                .arg(&target)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .status()
                .expect("run cargo for plugins/");
            assert!(status.success(), "building plugins/ failed");
            target.join("wasm32-wasip2/release")
        })
        .clone()
}

#[test]
fn hostile_plugins_are_denied_and_the_server_survives() {
    let dir = plugins_dir();
    let app = TestApp::start();
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
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
    ok(app.cli(Some(&alice), &["model", "create", "nlp/benign"]));
    ok(app.cli(
        Some(&alice),
        &["push", "nlp/benign@1", src.path().to_str().unwrap()],
    ));
    for k in kinds {
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
        // Other requests keep being served.
        assert_eq!(
            app.get(Some(&alice), "/v1/models/nlp/benign/versions/1/files/w")
                .status(),
            200,
            "after {k}"
        );
    }
    // Memory stayed bounded after the allocation bomb.
    let rss = app.rss_kib();
    assert!(
        rss < 400 * 1024,
        "server RSS {rss} KiB after the hostile runs"
    );

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
    assert!(err.contains("modelvault:policy/evaluator@0.1.0"), "{err}");
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
