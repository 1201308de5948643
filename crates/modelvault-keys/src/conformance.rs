//! The conformance suite every [`KeyProvider`] must pass (the local keyring
//! here, a PKCS#11 token or cloud KMS later). Each function panics with a
//! message naming the broken property; call [`run_all`] from a test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelvault_format::Dek;

use crate::{DekBinding, KekState, KeyError, KeyProvider};

const BINDING: DekBinding<'static> = DekBinding {
    namespace: "nlp",
    model: "bert",
    version: "1",
    dek_generation: 1,
};

/// Runs every check in order. The provider must be fresh (one KEK version).
pub async fn run_all(provider: &dyn KeyProvider) {
    wrap_round_trip(provider).await;
    binding_is_enforced(provider).await;
    tampered_wrap_fails(provider).await;
    mac_round_trip(provider).await;
    rotation_keeps_old_wraps(provider).await;
    destroy_makes_wraps_unreadable(provider).await;
}

/// A wrapped DEK unwraps to the same DEK; two wraps differ.
pub async fn wrap_round_trip(p: &dyn KeyProvider) {
    let dek = Dek::generate().unwrap();
    let w1 = p.wrap_dek(&dek, &BINDING).await.unwrap();
    let w2 = p.wrap_dek(&dek, &BINDING).await.unwrap();
    assert_ne!(w1.ciphertext, w2.ciphertext, "wraps must be randomized");
    assert!(
        !contains(&w1.ciphertext, dek.expose_secret()),
        "wrap leaks the DEK"
    );
    assert_eq!(p.unwrap_dek(&w1, &BINDING).await.unwrap(), dek);
    assert_eq!(w1.kek_version, p.current_kek_version().await.unwrap());
}

/// A wrap moved to another version, model, namespace or generation fails.
pub async fn binding_is_enforced(p: &dyn KeyProvider) {
    let dek = Dek::generate().unwrap();
    let w = p.wrap_dek(&dek, &BINDING).await.unwrap();
    for other in [
        DekBinding {
            version: "2",
            ..BINDING
        },
        DekBinding {
            model: "gpt",
            ..BINDING
        },
        DekBinding {
            namespace: "cv",
            ..BINDING
        },
        DekBinding {
            dek_generation: 2,
            ..BINDING
        },
    ] {
        assert!(
            matches!(p.unwrap_dek(&w, &other).await, Err(KeyError::UnwrapFailed)),
            "wrap accepted under {other:?}"
        );
    }
}

/// Flipped bits and a relabelled KEK version fail.
pub async fn tampered_wrap_fails(p: &dyn KeyProvider) {
    let dek = Dek::generate().unwrap();
    let w = p.wrap_dek(&dek, &BINDING).await.unwrap();
    for i in 0..w.ciphertext.len() {
        let mut t = w.clone();
        t.ciphertext[i] ^= 0x40;
        assert!(
            p.unwrap_dek(&t, &BINDING).await.is_err(),
            "flip at {i} accepted"
        );
    }
    let mut t = w.clone();
    t.ciphertext.truncate(10);
    assert!(p.unwrap_dek(&t, &BINDING).await.is_err());
}

/// MACs verify on the same bytes and fail on any change.
pub async fn mac_round_trip(p: &dyn KeyProvider) {
    let msg = b"{\"kind\":\"manifest\"}";
    let mac = p.mac(msg).await.unwrap();
    p.verify_mac(msg, &mac).await.unwrap();
    assert!(matches!(
        p.verify_mac(b"{\"kind\":\"manifesT\"}", &mac).await,
        Err(KeyError::MacMismatch)
    ));
    let mut bad = mac.clone();
    bad.tag[0] ^= 1;
    assert!(matches!(
        p.verify_mac(msg, &bad).await,
        Err(KeyError::MacMismatch)
    ));
    let mut other = mac.clone();
    other.key_id = "someone-else".into();
    assert!(p.verify_mac(msg, &other).await.is_err());
}

/// A new KEK version becomes current; DEKs wrapped before still unwrap.
pub async fn rotation_keeps_old_wraps(p: &dyn KeyProvider) {
    let dek = Dek::generate().unwrap();
    let before = p.current_kek_version().await.unwrap();
    let old = p.wrap_dek(&dek, &BINDING).await.unwrap();
    let new_version = p.create_kek_version().await.unwrap();
    assert!(new_version > before);
    assert_eq!(p.current_kek_version().await.unwrap(), new_version);
    let new = p.wrap_dek(&dek, &BINDING).await.unwrap();
    assert_eq!(new.kek_version, new_version);
    assert_eq!(p.unwrap_dek(&old, &BINDING).await.unwrap(), dek);
    assert_eq!(p.unwrap_dek(&new, &BINDING).await.unwrap(), dek);
    // A wrap relabelled with another KEK version fails.
    let mut relabelled = old.clone();
    relabelled.kek_version = new_version;
    assert!(p.unwrap_dek(&relabelled, &BINDING).await.is_err());
    let versions = p.list_kek_versions().await.unwrap();
    assert!(versions.iter().any(|v| v.version == before && !v.current));
    assert!(
        versions
            .iter()
            .any(|v| v.version == new_version && v.current)
    );
}

/// Destroying a non-current version makes its wraps unreadable; the
/// current version cannot be destroyed.
pub async fn destroy_makes_wraps_unreadable(p: &dyn KeyProvider) {
    let dek = Dek::generate().unwrap();
    let old = p.wrap_dek(&dek, &BINDING).await.unwrap();
    let current = p.create_kek_version().await.unwrap();
    assert!(matches!(
        p.destroy_kek_version(current).await,
        Err(KeyError::KekIsCurrent(_))
    ));
    p.destroy_kek_version(old.kek_version).await.unwrap();
    assert!(matches!(
        p.unwrap_dek(&old, &BINDING).await,
        Err(KeyError::KekDestroyed(_))
    ));
    let info = p.list_kek_versions().await.unwrap();
    let destroyed = info.iter().find(|v| v.version == old.kek_version).unwrap();
    assert_eq!(destroyed.state, KekState::Destroyed);
    let fresh = p.wrap_dek(&dek, &BINDING).await.unwrap();
    assert_eq!(p.unwrap_dek(&fresh, &BINDING).await.unwrap(), dek);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
