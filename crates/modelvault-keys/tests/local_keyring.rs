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

/// Two handles on one file (two servers over one data dir) racing KEK
/// creation and retirement: every update lands, no version number is handed
/// out twice, and a KEK retired by one handle is gone for the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_racing_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    LocalKeyring::create(&path).unwrap();
    let binding = modelvault_keys::DekBinding {
        namespace: "a",
        model: "b",
        version: "c",
        dek_generation: 1,
    };
    const ROUNDS: usize = 40;
    let mut creators = Vec::new();
    for _ in 0..2 {
        let path = path.clone();
        creators.push(tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let ring = LocalKeyring::open(&path).unwrap();
            let mut made = Vec::new();
            for _ in 0..ROUNDS {
                made.push(rt.block_on(ring.create_kek_version()).unwrap().0);
            }
            made
        }));
    }
    // Meanwhile a third handle retires every version it sees that is not
    // current, the way `keys retire-kek` would.
    let retirer = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let ring = LocalKeyring::open(&path).unwrap();
            let mut retired = Vec::new();
            for _ in 0..ROUNDS {
                let list = rt.block_on(ring.list_kek_versions()).unwrap();
                for k in list {
                    if k.state == modelvault_keys::KekState::Active && !k.current {
                        match rt.block_on(ring.destroy_kek_version(k.version)) {
                            Ok(()) => retired.push(k.version.0),
                            // Became current meanwhile? No: versions only
                            // grow, but a racing create may have made the
                            // list stale; anything else is a bug.
                            Err(KeyError::KekIsCurrent(_)) => {}
                            Err(e) => panic!("retire {}: {e}", k.version.0),
                        }
                    }
                }
            }
            retired
        })
    };
    let mut made: Vec<u32> = Vec::new();
    for c in creators {
        made.extend(c.await.unwrap());
    }
    let retired = retirer.await.unwrap();
    made.sort_unstable();
    let n = made.len();
    made.dedup();
    assert_eq!(made.len(), n, "a KEK version number was handed out twice");

    let fresh = LocalKeyring::open(&path).unwrap();
    let listed = fresh.list_kek_versions().await.unwrap();
    for v in &made {
        assert!(
            listed.iter().any(|k| k.version.0 == *v),
            "KEK version {v} reported created vanished from the file"
        );
    }
    for v in &retired {
        let k = listed.iter().find(|k| k.version.0 == *v).unwrap();
        assert_eq!(
            k.state,
            modelvault_keys::KekState::Destroyed,
            "KEK version {v} reported retired is still active in the file"
        );
    }
    assert_eq!(listed.len(), 1 + 2 * ROUNDS);

    // A handle opened before a retirement cannot unwrap under it after.
    let a = LocalKeyring::open(&path).unwrap();
    let dek = modelvault_format::Dek::generate().unwrap();
    let wrapped = a.wrap_dek(&dek, &binding).await.unwrap();
    a.unwrap_dek(&wrapped, &binding).await.unwrap();
    let b = LocalKeyring::open(&path).unwrap();
    b.create_kek_version().await.unwrap();
    b.destroy_kek_version(wrapped.kek_version).await.unwrap();
    assert!(matches!(
        a.unwrap_dek(&wrapped, &binding).await,
        Err(KeyError::KekDestroyed(_))
    ));
    // And a wrap on the stale handle uses the newest current version.
    let w2 = a.wrap_dek(&dek, &binding).await.unwrap();
    assert_eq!(w2.kek_version, b.current_kek_version().await.unwrap());
}
