//! The local keyring passes the provider conformance suite, and keeps its
//! file private.

use std::os::unix::fs::PermissionsExt as _;

use modelvault_keys::{KeyError, KeyProvider, LocalKeyring, conformance};

#[tokio::test]
async fn local_keyring_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let ring = LocalKeyring::create(&dir.path().join("keyring.json")).unwrap();
    conformance::run_all(&ring).await;
}

#[tokio::test]
async fn file_is_private_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/keyring.json");
    let ring = LocalKeyring::create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        LocalKeyring::create(&path),
        Err(KeyError::AlreadyExists(_))
    ));
    let dek = modelvault_format::Dek::generate().unwrap();
    let binding = modelvault_keys::DekBinding {
        namespace: "a",
        model: "b",
        version: "c",
        dek_generation: 1,
    };
    let w = ring.wrap_dek(&dek, &binding).await.unwrap();
    let v2 = ring.create_kek_version().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "rewrite keeps 0600");

    // A second handle on the same file (another server) sees the rotation.
    let other = LocalKeyring::open(&path).unwrap();
    assert_eq!(other.current_kek_version().await.unwrap(), v2);
    assert_eq!(other.unwrap_dek(&w, &binding).await.unwrap(), dek);
    let mac = ring.mac(b"record").await.unwrap();
    other.verify_mac(b"record", &mac).await.unwrap();
    assert!(!format!("{other:?}").contains("key\""));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        LocalKeyring::open(&path),
        Err(KeyError::InsecurePermissions { .. })
    ));
}
