//! The same round trip with the store on a real S3 server (moto).

use modelvault_test_utils::{pseudo_random, s3_location};

use crate::common::*;

#[test]
fn round_trip_on_s3() {
    let Some(loc) = s3_location() else { return };
    let app = TestApp::start_with_store(Some(&loc.url));
    let ds = app.token("alice", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/s3model"]));
    let src = tempfile::tempdir().unwrap();
    let big = pseudo_random((20 << 20) + 3, 77); // several multipart parts
    std::fs::write(src.path().join("w.bin"), &big).unwrap();
    std::fs::write(src.path().join("empty"), b"").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/s3model@1", src.path().to_str().unwrap()],
    ));
    let dest = tempfile::tempdir().unwrap();
    ok(app.cli(
        Some(&ds),
        &[
            "pull",
            "nlp/s3model@latest",
            "-o",
            dest.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read(dest.path().join("w.bin")).unwrap(), big);
    assert!(std::fs::read(dest.path().join("empty")).unwrap().is_empty());
    let r = app
        .http()
        .get(format!(
            "{}/v1/models/nlp/s3model/versions/1/files/w.bin",
            app.url
        ))
        .bearer_auth(&ds)
        .header("range", "bytes=1048570-1048600")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &big[1_048_570..=1_048_600]);
    // Nothing was stored under the data directory but config and keyring.
    for f in walk(&app.data_dir()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        // ...and the compiled-policy cache (code, not data).
        let cached = f.parent().is_some_and(|p| p.ends_with("policy-cache"));
        assert!(
            cached || ["modelvault.toml", "keyring.json"].contains(&name.as_str()),
            "{}",
            f.display()
        );
    }
}
