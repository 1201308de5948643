//! Example policies in other languages, built from source by
//! scripts/test.sh, tested offline and installed into a running server.

use crate::common::*;

/// The built component named by `var`, or `None` (a failure when
/// `MODELVAULT_REQUIRE_EXAMPLES=1`, as scripts/test.sh sets).
fn example(var: &str) -> Option<std::path::PathBuf> {
    match std::env::var(var) {
        Ok(p) if std::path::Path::new(&p).exists() => Some(p.into()),
        _ => {
            assert!(
                std::env::var("MODELVAULT_REQUIRE_EXAMPLES").as_deref() != Ok("1"),
                "{var} is not set or missing: run scripts/test.sh"
            );
            eprintln!("note: {var} not set; run scripts/test.sh to build the example policies");
            None
        }
    }
}

#[test]
fn python_policy_decides_in_a_running_server() {
    let Some(wasm) = example("MODELVAULT_TEST_PY_POLICY") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/examples/python-allow-listed-owners");
    // Offline: its cases pass.
    let out = ok(cli(
        "http://127.0.0.1:9",
        None,
        &[
            "policy",
            "test",
            wasm.to_str().unwrap(),
            dir.join("cases.json").to_str().unwrap(),
        ],
    ));
    assert!(out.contains(" 0 failed"), "{out}");

    let app = TestApp::start_configured(None, |cfg| {
        cfg.push_str("\n[policy.config.allow-listed-owners]\nowners = \"alice\"\n");
    });
    let alice = app.token("alice", &["data-scientist"], &["nlp"]);
    let bob = app.token("bob", &["data-scientist"], &["nlp"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    for (who, model) in [(&alice, "nlp/a"), (&bob, "nlp/b")] {
        ok(app.cli(Some(who), &["model", "create", model]));
        ok(app.cli(
            Some(who),
            &["push", &format!("{model}@1"), src.path().to_str().unwrap()],
        ));
    }
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "allow-listed-owners",
            wasm.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        app.get(Some(&alice), "/v1/models/nlp/a/versions/1/files/w")
            .status(),
        200
    );
    let (s, _, body) = error_code(app.get(Some(&bob), "/v1/models/nlp/b/versions/1/files/w"));
    assert_eq!(s, 403);
    assert_eq!(body["error"]["plugin"], "allow-listed-owners", "{body}");
    assert_eq!(body["error"]["reason_code"], "owners.not-listed");
}

#[test]
fn javascript_policy_decides_in_a_running_server() {
    let Some(wasm) = example("MODELVAULT_TEST_JS_POLICY") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/examples/javascript-business-hours");
    let out = ok(cli(
        "http://127.0.0.1:9",
        None,
        &[
            "policy",
            "test",
            wasm.to_str().unwrap(),
            dir.join("cases.json").to_str().unwrap(),
        ],
    ));
    assert!(out.contains(" 0 failed"), "{out}");

    // Gate staging with a window that is always closed.
    let app = TestApp::start_configured(None, |cfg| {
        cfg.push_str(
            "\n[policy.config.business-hours]\nhours = \"0-0\"\nenvironments = \"staging\"\n",
        );
    });
    let staging = app.token_in("sam", &["data-scientist"], &["nlp"], "staging", "sam");
    let dev = app.token_in("dana", &["data-scientist"], &["nlp"], "dev", "dana");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(Some(&dev), &["model", "create", "nlp/m"]));
    ok(app.cli(
        Some(&dev),
        &["push", "nlp/m@1", src.path().to_str().unwrap()],
    ));
    ok(app.cli(
        Some(&app.admin),
        &[
            "policy",
            "install",
            "business-hours",
            wasm.to_str().unwrap(),
        ],
    ));
    let file = "/v1/models/nlp/m/versions/1/files/w";
    let (s, _, body) = error_code(app.get(Some(&staging), file));
    assert_eq!(s, 403);
    assert_eq!(body["error"]["plugin"], "business-hours", "{body}");
    assert_eq!(body["error"]["reason_code"], "hours.closed");
    assert_eq!(
        app.get(Some(&dev), file).status(),
        200,
        "dev is not gated: the JS policy abstains"
    );
}

/// The fenced code block of `lang` in `section` whose text contains `needle`.
fn doc_block(section: &str, lang: &str, needle: &str) -> String {
    let fence = format!("```{lang}\n");
    let mut rest = section;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("\n```").expect("unterminated code block");
        let block = &body[..end + 1];
        if block.contains(needle) {
            return block.to_string();
        }
        rest = &body[end + 4..];
    }
    panic!("no ```{lang} block with {needle:?} in the section");
}

/// docs/POLICY-AUTHORING.md's Rust walk-through, as written: its
/// `Cargo.toml`, `src/lib.rs` and `cases.json` in a directory beside a
/// checkout (`../modelvault`), built with the doc's command, tested with
/// the doc's command; every case must pass.
#[test]
fn the_rust_walkthrough_in_the_docs_builds_and_passes_its_cases() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap();
    let doc = std::fs::read_to_string(root.join("docs/POLICY-AUTHORING.md")).unwrap();
    let start = doc
        .find("\n## A policy in Rust, step by step\n")
        .expect("the walk-through section");
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let cargo_toml = doc_block(section, "toml", "[package]");
    let lib_rs = doc_block(section, "rust", "export_policy!");
    let cases = doc_block(section, "json", "\"cases\"");
    for command in [
        "cargo build --release --target wasm32-wasip2",
        "modelvault policy test target/wasm32-wasip2/release/frozen_models.wasm cases.json",
    ] {
        assert!(
            section.contains(command),
            "the doc no longer says {command:?}"
        );
    }

    // Beside a checkout of Modelvault in ../modelvault, as the doc has it.
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&root, tmp.path().join("modelvault")).unwrap();
    let dir = tmp.path().join("frozen-models");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), cargo_toml).unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib_rs).unwrap();
    std::fs::write(dir.join("cases.json"), cases).unwrap();
    // The versions plugins/ builds with (no resolution, no network).
    std::fs::copy(root.join("plugins/Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    // `target/` shared with plugins/ so the SDK's dependencies are built once.
    let target = root.join("target/plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the walk-through does not build: {}",
        stderr(&out)
    );
    let wasm = target.join("wasm32-wasip2/release/frozen_models.wasm");
    let cache = tmp.path().join("cache");
    let out = std::process::Command::new(BIN)
        .current_dir(&dir)
        .args(["policy", "test", wasm.to_str().unwrap(), "cases.json"])
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the walk-through's cases fail: {text}{}",
        stderr(&out)
    );
    assert!(text.contains("4 passed, 0 failed"), "{text}");
}

#[test]
fn c_policy_decides_in_a_running_server() {
    let Some(wasm) = example("MODELVAULT_TEST_C_POLICY") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/examples/c-no-pickles");
    let out = ok(cli(
        "http://127.0.0.1:9",
        None,
        &[
            "policy",
            "test",
            wasm.to_str().unwrap(),
            dir.join("cases.json").to_str().unwrap(),
        ],
    ));
    assert!(out.contains(" 0 failed"), "{out}");

    let app = TestApp::start_configured(None, |cfg| {
        cfg.push_str("\n[policy.config.no-pickles]\nexempt = \"staging\"\n");
    });
    let dev = app.token_in("dana", &["data-scientist"], &["nlp"], "dev", "dana");
    let staging = app.token_in("sam", &["data-scientist"], &["nlp"], "staging", "sam");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("model.pkl"), b"pickle").unwrap();
    std::fs::write(src.path().join("model.safetensors"), b"tensors").unwrap();
    ok(app.cli(Some(&dev), &["model", "create", "nlp/m"]));
    ok(app.cli(
        Some(&dev),
        &["push", "nlp/m@1", src.path().to_str().unwrap()],
    ));
    ok(app.cli(
        Some(&app.admin),
        &["policy", "install", "no-pickles", wasm.to_str().unwrap()],
    ));
    let pkl = "/v1/models/nlp/m/versions/1/files/model.pkl";
    let (s, _, body) = error_code(app.get(Some(&dev), pkl));
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["plugin"], "no-pickles", "{body}");
    assert_eq!(body["error"]["reason_code"], "pickles.blocked");
    assert_eq!(
        body["error"]["message"],
        "model.pkl: pickled files run code when loaded"
    );
    assert_eq!(
        app.get(
            Some(&dev),
            "/v1/models/nlp/m/versions/1/files/model.safetensors"
        )
        .status(),
        200,
        "not a pickle: the C policy abstains"
    );
    assert_eq!(
        app.get(Some(&staging), pkl).status(),
        200,
        "staging is exempt by the server's config"
    );
}

/// The C walk-through in docs/POLICY-AUTHORING.md shows the example's
/// `policy.c` as it is built and tested above, and the build command
/// `build.sh` runs.
#[test]
fn the_c_walkthrough_in_the_docs_is_the_tested_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/POLICY-AUTHORING.md")).unwrap();
    let start = doc.find("\n### C, step by step\n").expect("the C section");
    let section = &doc[start + 1..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |i| i + 4)];
    let code =
        std::fs::read_to_string(root.join("plugins/examples/c-no-pickles/policy.c")).unwrap();
    assert_eq!(
        doc_block(section, "c", "exports_modelvault_policy_evaluator_evaluate"),
        code
    );
    let script =
        std::fs::read_to_string(root.join("plugins/examples/c-no-pickles/build.sh")).unwrap();
    for flag in [
        "--target=wasm32-wasi",
        "-mexec-model=reactor",
        "-Wl,--wasm-ld-path=",
        "-Wl,--stack-first",
        "wit-bindgen",
    ] {
        assert!(section.contains(flag) && script.contains(flag), "{flag}");
    }
}
