//! Model metadata: sensitive fields sealed at rest and redacted for callers
//! without `read-sensitive` (show, list, search, version detail, history);
//! edits under `edit-metadata` / `approve`, recorded as revisions.

use serde_json::Value;

use crate::common::*;

fn json(o: std::process::Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap()
}

#[test]
fn sensitive_metadata_is_sealed_and_redacted() {
    let app = TestApp::start_configured(None, |t| {
        *t = t.replace(
            "sensitive_fields = []",
            "sensitive_fields = [\"training-data\"]",
        );
        assert!(t.contains("training-data"));
    });
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    let auditor = app.token("audrey", &["auditor"], &["nlp"]);
    let manager = app.token("mia", &["model-manager"], &["nlp"]);
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "create",
            "nlp/ranker",
            "--metadata",
            "description=ranks things",
            "--metadata",
            "lineage=secret-lineage-XYZ",
            "--metadata",
            "training-data=s3://secret-bucket-QQQ",
            "--sensitive-field",
            "lineage",
        ],
    ));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"w").unwrap();
    ok(app.cli(
        Some(&ds),
        &["push", "nlp/ranker@1", src.path().to_str().unwrap()],
    ));

    // The bucket alone does not reveal sensitive values.
    for (f, bytes) in stored_files(&app.store_dir()) {
        for secret in ["secret-lineage-XYZ", "secret-bucket-QQQ", "secret-eval-777"] {
            assert!(
                !modelvault_test_utils::contains(&bytes, secret.as_bytes()),
                "{secret} in clear in {}",
                f.display()
            );
        }
    }

    // Visible to read-sensitive, redacted for the auditor: show, list,
    // search, version detail alike.
    let mine = json(app.cli(
        Some(&ds),
        &["model", "show", "nlp/ranker", "--output", "json"],
    ));
    assert_eq!(mine["metadata"]["lineage"], "secret-lineage-XYZ");
    assert_eq!(mine["metadata"]["training-data"], "s3://secret-bucket-QQQ");
    let theirs = json(app.cli(
        Some(&auditor),
        &["model", "show", "nlp/ranker", "--output", "json"],
    ));
    assert_eq!(theirs["metadata"]["lineage"], "[redacted]");
    assert_eq!(theirs["metadata"]["training-data"], "[redacted]");
    assert_eq!(theirs["metadata"]["description"], "ranks things");
    assert_eq!(
        theirs["sensitive_fields"],
        serde_json::json!(["lineage", "training-data"])
    );
    let list = json(app.cli(Some(&auditor), &["model", "list", "--output", "json"]));
    assert_eq!(list["models"][0]["metadata"]["lineage"], "[redacted]");
    let v = json(app.cli(
        Some(&auditor),
        &["model", "show", "nlp/ranker@1", "--output", "json"],
    ));
    assert_eq!(v["metadata"]["lineage"], "[redacted]");
    let v = json(app.cli(
        Some(&ds),
        &["model", "show", "nlp/ranker@1", "--output", "json"],
    ));
    assert_eq!(v["metadata"]["lineage"], "secret-lineage-XYZ");
    // A search never matches on a value the caller cannot see.
    let search = |t: &str, q: &str| {
        json(app.cli(
            Some(t),
            &["model", "list", "--search", q, "--output", "json"],
        ))["models"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(search(&ds, "secret-lineage"), 1);
    assert_eq!(search(&auditor, "secret-lineage"), 0);
    assert_eq!(search(&auditor, "redacted"), 0);
    assert_eq!(search(&auditor, "ranks"), 1);
    assert_eq!(search(&auditor, "nothing-like-it"), 0);

    // Edits: edit-metadata for tags and metadata and raising sensitivity,
    // approve for lowering it.
    fails(
        app.cli(
            Some(&auditor),
            &["model", "set", "nlp/ranker", "--tag", "stage=prod"],
        ),
        "forbidden",
    );
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "set",
            "nlp/ranker",
            "--tag",
            "stage=prod",
            "--metadata",
            "accuracy=0.93",
            "--remove-metadata",
            "description",
            "--sensitivity",
            "restricted",
        ],
    ));
    fails(
        app.cli(
            Some(&ds),
            &["model", "set", "nlp/ranker", "--sensitivity", "public"],
        ),
        "approve",
    );
    ok(app.cli(
        Some(&manager),
        &[
            "model",
            "set",
            "nlp/ranker",
            "--sensitivity",
            "confidential",
        ],
    ));
    fails(
        app.cli(
            Some(&ds),
            &["model", "set", "nlp/ranker", "--sensitivity", "secret"],
        ),
        "unknown sensitivity",
    );
    fails(
        app.cli(
            Some(&ds),
            &["model", "set", "nlp/ranker", "--tag", "novalue"],
        ),
        "KEY=VALUE",
    );
    let m = json(app.cli(
        Some(&ds),
        &["model", "show", "nlp/ranker", "--output", "json"],
    ));
    assert_eq!(m["sensitivity"], "confidential");
    assert_eq!(m["tags"]["stage"], "prod");
    assert_eq!(m["metadata"]["accuracy"], "0.93");
    assert!(m["metadata"].get("description").is_none());
    assert_eq!(
        m["metadata"]["lineage"], "secret-lineage-XYZ",
        "sealed values survive edits"
    );
    // The history: who, when, before and after; redacted for the auditor.
    let h = json(app.cli(
        Some(&auditor),
        &["model", "history", "nlp/ranker", "--output", "json"],
    ));
    let revs = h["revisions"].as_array().unwrap();
    assert_eq!(revs.len(), 3);
    let who: Vec<&str> = revs
        .iter()
        .map(|r| r["changed_by"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["dana", "dana", "mia"]);
    let sens: Vec<&str> = revs
        .iter()
        .map(|r| r["sensitivity"].as_str().unwrap())
        .collect();
    assert_eq!(sens, ["internal", "restricted", "confidential"]);
    assert_eq!(revs[0]["metadata"]["description"], "ranks things");
    assert!(
        revs.iter()
            .all(|r| r["metadata"]["lineage"] == "[redacted]")
    );
    assert!(revs.iter().all(|r| r["changed_at"].is_string()));
    for (f, bytes) in stored_files(&app.store_dir()) {
        assert!(
            !modelvault_test_utils::contains(&bytes, b"secret-lineage-XYZ"),
            "{}",
            f.display()
        );
    }
}
