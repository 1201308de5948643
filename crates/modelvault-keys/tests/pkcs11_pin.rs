//! A wrong PIN is refused, and the error does not echo it. Its own test
//! binary: PKCS#11 login state is per process, so a login by another test
//! in the same process would mask the refusal.

use modelvault_keys::{Pkcs11Provider, Pkcs11Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_wrong_pin_is_refused_without_echoing_it() {
    let Some(token) = modelvault_test_utils::pkcs11_token() else {
        return;
    };
    let s = Pkcs11Settings {
        module: token.module.clone(),
        token_label: token.token_label.clone(),
        pin: "not-the-pin-314159".to_string().into(),
        key_prefix: token.prefix.clone(),
    };
    let err = Pkcs11Provider::connect(&s).unwrap_err();
    let text = format!("{err} {err:?} {s:?}");
    assert!(text.contains("PIN"), "{text}");
    assert!(!text.contains("314159"), "the PIN leaked: {text}");
}
