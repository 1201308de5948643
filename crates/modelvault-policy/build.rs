//! Builds the bundled policy components from `plugins/` (their own
//! workspace, target wasm32-wasip2) and copies them into OUT_DIR, so a plain
//! `cargo build --release --bin modelvault` yields a binary that carries
//! them. The wasm32-wasip2 target comes with the pinned toolchain
//! (rust-toolchain.toml lists it).

use std::path::PathBuf;
use std::process::Command;

const BUNDLED: [&str; 3] = [
    "sensitivity_environment",
    "approval_gate",
    "separation_of_duties",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let plugins = root.join("plugins");
    let wit = root.join("wit");
    for dir in [&plugins, &wit] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    // One shared target dir for every profile of the outer build, so debug,
    // release and clippy do not each rebuild the plugins.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in [
        "sensitivity-environment",
        "approval-gate",
        "separation-of-duties",
    ] {
        cmd.args(["-p", p]);
    }
    // The outer build's settings must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PKG_NAME",
    ] {
        cmd.env_remove(var);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
        {
            cmd.env_remove(k);
        }
    }
    let status = cmd
        .status()
        .expect("running cargo for the plugins workspace");
    assert!(
        status.success(),
        "building the bundled policies failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for name in BUNDLED {
        let built = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        std::fs::copy(&built, out.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    }
}
