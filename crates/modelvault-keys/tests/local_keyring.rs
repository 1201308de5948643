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

/// Two processes over one keyring file: a DEK wrapped under a KEK version
/// the other created after this one loaded the file still unwraps (the
/// keyring rereads the file; it once deadlocked doing so).
#[tokio::test]
async fn a_kek_version_created_elsewhere_is_picked_up() {
    use modelvault_keys::{DekBinding, KeyProvider as _, LocalKeyring};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let a = LocalKeyring::create(&path).unwrap();
    let b = LocalKeyring::open(&path).unwrap();
    let binding = DekBinding {
        namespace: "n",
        model: "m",
        version: "1",
        dek_generation: 1,
    };
    let dek = modelvault_format::Dek::generate().unwrap();
    a.create_kek_version().await.unwrap();
    let wrapped = a.wrap_dek(&dek, &binding).await.unwrap();
    assert_eq!(wrapped.kek_version.0, 2);
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        b.unwrap_dek(&wrapped, &binding),
    )
    .await
    .expect("no deadlock")
    .unwrap();
    assert_eq!(got.expose_secret(), dek.expose_secret());
}
