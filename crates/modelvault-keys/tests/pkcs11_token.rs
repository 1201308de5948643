//! The PKCS#11 provider passes the provider conformance suite on a real
//! token (SoftHSM2, initialized by `scripts/test.sh`), keeps its keys
//! non-extractable, and refuses a token without keys.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use modelvault_keys::{KeyError, KeyProvider, Pkcs11Provider, Pkcs11Settings, conformance};

fn settings(t: &modelvault_test_utils::TestToken) -> Pkcs11Settings {
    Pkcs11Settings {
        module: t.module.clone(),
        token_label: t.token_label.clone(),
        pin: t.pin.clone().into(),
        key_prefix: t.prefix.clone(),
    }
}

/// The tests here create and destroy token objects behind the provider's
/// back too (a raw session), which SoftHSM2 does not survive concurrently
/// (softhsm/SoftHSMv2#573): one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A logged-in session on the test token through the raw PKCS#11 API, to
/// look at (or tamper with) the token behind the provider's back.
fn raw_session(token: &modelvault_test_utils::TestToken) -> cryptoki::session::Session {
    let ctx = cryptoki::context::Pkcs11::new(&token.module).unwrap();
    let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token.token_label)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    let _ = session.login(
        cryptoki::session::UserType::User,
        Some(&token.pin.clone().into()),
    );
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_conformance() {
    let _serial = SERIAL.lock().await;
    let Some(token) = modelvault_test_utils::pkcs11_token() else {
        return;
    };
    let s = settings(&token);
    assert!(
        matches!(Pkcs11Provider::open(&s), Err(KeyError::Provider(_))),
        "a token without keys under the prefix must be refused"
    );
    let p = Pkcs11Provider::connect(&s).unwrap();
    p.create_keys().unwrap();
    assert!(matches!(p.create_keys(), Err(KeyError::AlreadyExists(_))));
    let p = Pkcs11Provider::open(&s).unwrap();
    conformance::run_all(&p).await;

    // A second provider over the same token (another server) sees the
    // versions the first created and unwraps what it wrapped.
    let other = Pkcs11Provider::open(&s).unwrap();
    assert_eq!(
        other.current_kek_version().await.unwrap(),
        p.current_kek_version().await.unwrap()
    );
    let dek = modelvault_format::Dek::generate().unwrap();
    let b = modelvault_keys::DekBinding {
        namespace: "n",
        model: "m",
        version: "v",
        dek_generation: 1,
    };
    let w = p.wrap_dek(&dek, &b).await.unwrap();
    assert_eq!(other.unwrap_dek(&w, &b).await.unwrap(), dek);
    let mac = other.mac(b"record").await.unwrap();
    p.verify_mac(b"record", &mac).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_keys_are_not_extractable() {
    let _serial = SERIAL.lock().await;
    let Some(token) = modelvault_test_utils::pkcs11_token() else {
        return;
    };
    let s = settings(&token);
    let p = Pkcs11Provider::connect(&s).unwrap();
    p.create_keys().unwrap();
    p.create_kek_version().await.unwrap();

    // Look at the token with the raw PKCS#11 API: every Modelvault key is
    // sensitive and non-extractable, and its value cannot be read.
    let session = raw_session(&token);
    // By exact label: other tests create and destroy keys in the same
    // token meanwhile.
    let mut handles = Vec::new();
    for label in ["kek-1", "kek-2", "mac"] {
        handles.extend(
            session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(format!("{}-{label}", token.prefix).into_bytes()),
                ])
                .unwrap(),
        );
    }
    let mut ours = 0;
    for h in handles {
        let attrs = session
            .get_attributes(
                h,
                &[
                    AttributeType::Label,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Value,
                ],
            )
            .unwrap();
        let label = attrs.iter().find_map(|a| match a {
            Attribute::Label(l) => Some(String::from_utf8_lossy(l).into_owned()),
            _ => None,
        });
        if !label.is_some_and(|l| l.starts_with(&token.prefix)) {
            continue;
        }
        ours += 1;
        assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
        assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
        assert!(
            !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
            "a key value was readable: {attrs:?}"
        );
    }
    assert_eq!(ours, 3, "two KEK versions and the MAC key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_key_under_the_next_kek_label_is_refused() {
    let _serial = SERIAL.lock().await;
    let Some(token) = modelvault_test_utils::pkcs11_token() else {
        return;
    };
    let s = settings(&token);
    let p = Pkcs11Provider::connect(&s).unwrap();
    p.create_keys().unwrap();
    let dek = modelvault_format::Dek::generate().unwrap();
    let b = modelvault_keys::DekBinding {
        namespace: "n",
        model: "m",
        version: "v",
        dek_generation: 1,
    };
    let before = p.wrap_dek(&dek, &b).await.unwrap();

    // Someone with the user PIN imports a key they know as KEK version 2.
    let session = raw_session(&token);
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Value(vec![0x42; 32]),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(format!("{}-kek-2", token.prefix).into_bytes()),
        ])
        .unwrap();

    // New wraps refuse it rather than use a key someone knows; what was
    // wrapped before still unwraps.
    let err = p.wrap_dek(&dek, &b).await.unwrap_err();
    assert!(matches!(err, KeyError::Provider(_)), "{err:?}");
    assert!(err.to_string().contains("refusing"), "{err}");
    assert_eq!(p.unwrap_dek(&before, &b).await.unwrap(), dek);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mac_key_under_the_label_is_refused() {
    let _serial = SERIAL.lock().await;
    let Some(token) = modelvault_test_utils::pkcs11_token() else {
        return;
    };
    let s = settings(&token);
    let p = Pkcs11Provider::connect(&s).unwrap();
    p.create_keys().unwrap();
    Pkcs11Provider::open(&s).unwrap();

    // Someone with the user PIN generates a second MAC key under the same
    // label, as good a key as ours (born in the token, never extractable):
    // which of the two a token lists first is not defined.
    let session = raw_session(&token);
    session
        .generate_key(
            &cryptoki::mechanism::Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(cryptoki::object::KeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Label(format!("{}-mac", token.prefix).into_bytes()),
            ],
        )
        .unwrap();

    // A server opening the token refuses the ambiguous MAC key, as it
    // refuses an ambiguous KEK; so does a fresh provider's first MAC.
    let Err(err) = Pkcs11Provider::open(&s) else {
        panic!("open must refuse an ambiguous MAC key");
    };
    assert!(matches!(err, KeyError::Provider(_)), "{err:?}");
    assert!(err.to_string().contains("ambiguous MAC key"), "{err}");
    let fresh = Pkcs11Provider::connect(&s).unwrap();
    let err = fresh.mac(b"record").await.unwrap_err();
    assert!(err.to_string().contains("ambiguous MAC key"), "{err}");
    // Init never adopts or doubles keys either.
    assert!(fresh.create_keys().is_err());
}
