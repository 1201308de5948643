//! Shared fixtures for Modelvault tests: temporary local stores and the S3
//! test server that `scripts/test.sh` starts (moto). Tests that need S3 find
//! it through `MODELVAULT_TEST_S3_BUCKET` (plus the standard `AWS_*`
//! variables); when `MODELVAULT_REQUIRE_S3=1` (set by the test script and
//! CI) a missing server is a failure, never a skip.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// A store location for one test; the temporary directory lives as long as
/// this value.
pub struct TestLocation {
    /// Store URL (`file:///...` or `s3://bucket/prefix`).
    pub url: String,
    /// Root directory for local stores.
    pub local_root: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh local store directory.
pub fn local_location() -> TestLocation {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    TestLocation {
        url: format!("file://{}", root.display()),
        local_root: Some(root),
        _dir: Some(dir),
    }
}

/// A fresh prefix in the S3 test bucket, or `None` (with a loud note) when
/// no S3 server is configured and none is required.
pub fn s3_location() -> Option<TestLocation> {
    match std::env::var("MODELVAULT_TEST_S3_BUCKET") {
        Ok(bucket) if !bucket.is_empty() => Some(TestLocation {
            url: format!("s3://{bucket}/t-{}", uuid::Uuid::new_v4().simple()),
            local_root: None,
            _dir: None,
        }),
        _ => {
            if std::env::var("MODELVAULT_REQUIRE_S3").is_ok_and(|v| v == "1") {
                panic!(
                    "MODELVAULT_REQUIRE_S3=1 but MODELVAULT_TEST_S3_BUCKET is not set: start moto with scripts/test.sh"
                );
            }
            eprintln!(
                "note: no S3 test server (MODELVAULT_TEST_S3_BUCKET unset); run scripts/test.sh for the S3 suite"
            );
            None
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so large test files need
/// no fixtures on disk.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The SoftHSM2 token `scripts/test.sh` initializes, with a fresh label
/// prefix so each test owns its keys in the shared token.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// User PIN (a throwaway test PIN).
    pub pin: String,
    /// A label prefix no other test uses.
    pub prefix: String,
}

/// The test token from `MODELVAULT_TEST_PKCS11_MODULE`, `_TOKEN` and `_PIN`,
/// or `None` (with a loud note) when none is configured and
/// `MODELVAULT_REQUIRE_PKCS11=1` is not set.
pub fn pkcs11_token() -> Option<TestToken> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        var("MODELVAULT_TEST_PKCS11_MODULE"),
        var("MODELVAULT_TEST_PKCS11_TOKEN"),
        var("MODELVAULT_TEST_PKCS11_PIN"),
    ) {
        (Some(module), Some(token_label), Some(pin)) => Some(TestToken {
            module: module.into(),
            token_label,
            pin,
            prefix: format!("t-{}", uuid::Uuid::new_v4().simple()),
        }),
        _ => {
            if std::env::var("MODELVAULT_REQUIRE_PKCS11").is_ok_and(|v| v == "1") {
                panic!(
                    "MODELVAULT_REQUIRE_PKCS11=1 but MODELVAULT_TEST_PKCS11_MODULE/_TOKEN/_PIN are not set: run scripts/test.sh"
                );
            }
            eprintln!(
                "note: no PKCS#11 test token (MODELVAULT_TEST_PKCS11_MODULE unset); run scripts/test.sh for the HSM suite"
            );
            None
        }
    }
}

/// A small tmpfs mounted on a fresh directory: a full disk on demand.
/// Unmounted (and its directory removed) on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"1m"`), or `None` with a loud note
    /// where this process may not mount one (not root, or a container
    /// without `CAP_SYS_ADMIN`); tests that need a full disk then skip.
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tmpfs");
        std::fs::create_dir(&path).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("note: cannot mount a tmpfs (not root?): skipping the full-disk test");
            return None;
        }
        Some(Self { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
