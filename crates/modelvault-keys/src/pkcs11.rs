//! The PKCS#11 provider: each KEK version is a non-extractable AES-256 key
//! generated inside a token, and the record MAC key a non-extractable
//! HMAC-SHA256 key beside them. Wrap, unwrap and MAC run inside the token
//! (CKM_AES_GCM and CKM_SHA256_HMAC through C_Encrypt, C_Decrypt, C_Sign
//! and C_Verify); no key byte ever reaches this process.
//!
//! Invariants a reader must keep:
//! - objects are found by label, `<prefix>-kek-<n>` and `<prefix>-mac`, so
//!   several deployments (or tests) can share one token under distinct
//!   prefixes; KEK versions are numbered 1.. without gaps, and a number
//!   below the highest with no object was destroyed;
//! - the current KEK version is the highest one, read from the token on
//!   every wrap, so servers sharing the token agree without coordination;
//! - the wrapped form is the local keyring's (12-byte IV, 32-byte
//!   ciphertext, 16-byte tag) with the same associated data, so the two
//!   providers are interchangeable to the rest of Modelvault;
//! - the PIN is held as a secret string, wiped on drop, and never printed;
//! - token calls block, so they run on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use modelvault_format::{Dek, KEY_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{
    DekBinding, KekState, KekVersion, KekVersionInfo, KeyError, KeyProvider, RecordMac, WrappedDek,
};

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Where the token is and how to log in to it.
#[derive(Clone)]
pub struct Pkcs11Settings {
    /// Path of the vendor's PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Label of the token to use.
    pub token_label: String,
    /// The user PIN.
    pub pin: AuthPin,
    /// Label prefix of Modelvault's objects in the token.
    pub key_prefix: String,
}

impl std::fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// A key provider over a PKCS#11 token.
#[derive(Clone)]
pub struct Pkcs11Provider {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    slot: Slot,
    token_label: String,
    prefix: String,
    /// Open, logged-in sessions ready for reuse. A session serves one call
    /// at a time; more are opened under load.
    idle: Mutex<Vec<Session>>,
    /// Never used for operations: keeps the login alive (a token logs out
    /// when an application's last session closes).
    _anchor: Mutex<Session>,
    mac_handle: Mutex<Option<ObjectHandle>>,
    /// KEK handles found and checked, by version. Cleared on any provider
    /// error (a handle may be stale after another server destroyed a key).
    keks: Mutex<BTreeMap<u32, ObjectHandle>>,
    /// Kept to log in again after the token lost its login state; a
    /// secret string, wiped on drop and never printed.
    pin: AuthPin,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("token_label", &self.inner.token_label)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn provider_err(what: &str, e: CkError) -> KeyError {
    KeyError::Provider(format!("pkcs11 {what}: {e}"))
}

/// Object creation and destruction, one at a time per process: SoftHSM2
/// fails concurrent C_GenerateKey/C_CreateObject calls from several threads
/// with CKR_GENERAL_ERROR (softhsm/SoftHSMv2#573). They are rare (init,
/// rotation, retirement); cryptographic calls stay concurrent.
static OBJECT_WRITES: Mutex<()> = Mutex::new(());

fn object_writes() -> Result<std::sync::MutexGuard<'static, ()>, KeyError> {
    OBJECT_WRITES
        .lock()
        .map_err(|_| KeyError::Provider("pkcs11 object lock poisoned".into()))
}

/// One context per module for the whole process: C_Initialize may run
/// once, and two providers (two servers in one test) share it.
fn context(module: &Path) -> Result<Pkcs11, KeyError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let map = CONTEXTS.get_or_init(Default::default);
    let mut map = map
        .lock()
        .map_err(|_| KeyError::Provider("pkcs11 context lock poisoned".into()))?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        KeyError::Provider(format!("loading PKCS#11 module {}: {e}", module.display()))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(provider_err("C_Initialize", e)),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

impl Pkcs11Provider {
    /// Opens the token and logs in. Does not require Modelvault's keys to
    /// exist yet; [`Pkcs11Provider::ensure_keys`] creates them.
    pub fn connect(settings: &Pkcs11Settings) -> Result<Self, KeyError> {
        if settings.key_prefix.is_empty() || settings.key_prefix.contains('\0') {
            return Err(KeyError::Provider(
                "pkcs11 key prefix must not be empty".into(),
            ));
        }
        let ctx = context(&settings.module)?;
        let slots = ctx
            .get_slots_with_initialized_token()
            .map_err(|e| provider_err("C_GetSlotList", e))?;
        let mut found = None;
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| provider_err("C_GetTokenInfo", e))?;
            if info.label().trim_end() == settings.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            KeyError::Provider(format!(
                "no initialized PKCS#11 token labelled {:?} in {}",
                settings.token_label,
                settings.module.display()
            ))
        })?;
        let anchor = ctx
            .open_rw_session(slot)
            .map_err(|e| provider_err("C_OpenSession", e))?;
        match anchor.login(UserType::User, Some(&settings.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(KeyError::Provider(format!(
                    "PKCS#11 login to token {:?} refused: incorrect PIN",
                    settings.token_label
                )));
            }
            Err(e) => return Err(provider_err("C_Login", e)),
        }
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                slot,
                token_label: settings.token_label.clone(),
                prefix: settings.key_prefix.clone(),
                idle: Mutex::new(Vec::new()),
                _anchor: Mutex::new(anchor),
                mac_handle: Mutex::new(None),
                keks: Mutex::new(BTreeMap::new()),
                pin: settings.pin.clone(),
            }),
        })
    }

    /// Opens the token and checks that it holds Modelvault's keys.
    pub fn open(settings: &Pkcs11Settings) -> Result<Self, KeyError> {
        let p = Self::connect(settings)?;
        p.inner.with_session(|s| {
            if p.inner.kek_versions(s)?.is_empty() || p.inner.find_mac(s)?.is_none() {
                return Err(KeyError::Provider(format!(
                    "token {:?} holds no Modelvault keys under prefix {:?}; run `modelvault init` with this provider first",
                    p.inner.token_label, p.inner.prefix
                )));
            }
            Ok(())
        })?;
        Ok(p)
    }

    /// Creates KEK version 1 and the MAC key if the token has none under
    /// this prefix. Refuses if they exist already (init never adopts keys).
    pub fn create_keys(&self) -> Result<(), KeyError> {
        self.inner.with_session(|s| {
            if !self.inner.kek_versions(s)?.is_empty() || self.inner.find_mac(s)?.is_some() {
                return Err(KeyError::AlreadyExists(format!(
                    "PKCS#11 keys under prefix {:?} on token {:?}",
                    self.inner.prefix, self.inner.token_label
                )));
            }
            self.inner.generate_kek(s, 1)?;
            self.inner.generate_mac(s)
        })
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.inner.token_label
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, KeyError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Session) -> Result<T, KeyError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_session(|s| f(&inner, s)))
            .await
            .map_err(|_| KeyError::Provider("pkcs11 worker panicked".into()))?
    }
}

fn now_date() -> cryptoki::types::Date {
    let d = chrono::Utc::now().format("%Y%m%d").to_string();
    let b = d.as_bytes();
    let mut year = [b'0'; 4];
    let mut month = [b'0'; 2];
    let mut day = [b'0'; 2];
    if b.len() == 8 {
        year.copy_from_slice(&b[0..4]);
        month.copy_from_slice(&b[4..6]);
        day.copy_from_slice(&b[6..8]);
    }
    cryptoki::types::Date::new(year, month, day)
}

impl Inner {
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let pooled = self
            .idle
            .lock()
            .map_err(|_| KeyError::Provider("pkcs11 session pool poisoned".into()))?
            .pop();
        let session = match pooled {
            Some(s) => s,
            None => {
                let s = self
                    .ctx
                    .open_rw_session(self.slot)
                    .map_err(|e| provider_err("C_OpenSession", e))?;
                // Logged in already unless the token lost its state (an HSM
                // restart): log in again so the provider recovers by itself.
                match s.login(UserType::User, Some(&self.pin)) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                    Err(e) => return Err(provider_err("C_Login", e)),
                }
                s
            }
        };
        let out = f(&session);
        // A session that failed at the provider level may be dead (token
        // reset, network HSM dropped it): close it rather than reuse it.
        // Refusals (a failed unwrap or MAC) leave the session healthy.
        if matches!(out, Err(KeyError::Provider(_))) {
            if let Ok(mut h) = self.mac_handle.lock() {
                *h = None;
            }
            if let Ok(mut k) = self.keks.lock() {
                k.clear();
            }
        } else if let Ok(mut idle) = self.idle.lock() {
            idle.push(session);
        }
        out
    }

    fn kek_label(&self, version: u32) -> String {
        format!("{}-kek-{version}", self.prefix)
    }

    fn mac_label(&self) -> String {
        format!("{}-mac", self.prefix)
    }

    fn mac_key_id(&self) -> String {
        format!("pkcs11:{}", self.mac_label())
    }

    /// Every KEK version present in the token, ascending, with its handle.
    fn kek_versions(&self, s: &Session) -> Result<Vec<(u32, ObjectHandle)>, KeyError> {
        let handles = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
            ])
            .map_err(|e| provider_err("C_FindObjects", e))?;
        let stem = format!("{}-kek-", self.prefix);
        let mut out = Vec::new();
        for h in handles {
            let attrs = match s.get_attributes(h, &[AttributeType::Label]) {
                Ok(a) => a,
                // Destroyed between the search and now (another deployment
                // sharing the token, or a retirement elsewhere): not listed.
                Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
                Err(e) => return Err(provider_err("C_GetAttributeValue", e)),
            };
            for a in attrs {
                if let Attribute::Label(l) = a
                    && let Some(n) = std::str::from_utf8(&l)
                        .ok()
                        .and_then(|l| l.strip_prefix(&stem))
                        .and_then(|n| n.parse::<u32>().ok())
                {
                    out.push((n, h));
                }
            }
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// The handle of KEK `version`, found by its exact label and checked
    /// once (then cached) to be a key generated in the token that never
    /// left it; `None` if the token has no such key.
    fn lookup(&self, s: &Session, version: u32) -> Result<Option<ObjectHandle>, KeyError> {
        if let Some(h) = self.cache()?.get(&version) {
            return Ok(Some(*h));
        }
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(self.kek_label(version).into_bytes()),
            ])
            .map_err(|e| provider_err("C_FindObjects", e))?;
        let h = match found.as_slice() {
            [] => return Ok(None),
            [h] => *h,
            _ => {
                return Err(KeyError::Provider(format!(
                    "token holds {} keys labelled {:?}; refusing an ambiguous KEK",
                    found.len(),
                    self.kek_label(version)
                )));
            }
        };
        check_born_in_token(s, h, &self.kek_label(version))?;
        self.cache()?.insert(version, h);
        Ok(Some(h))
    }

    fn cache(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<u32, ObjectHandle>>, KeyError> {
        self.keks
            .lock()
            .map_err(|_| KeyError::Provider("pkcs11 lock poisoned".into()))
    }

    /// The current (highest) KEK version: from the highest one known,
    /// probing the next labels, so another server's rotation is seen on
    /// the next wrap without listing the token.
    fn current(&self, s: &Session) -> Result<(u32, ObjectHandle), KeyError> {
        let known = self.cache()?.keys().next_back().copied();
        let mut best = match known {
            Some(v) => self.lookup(s, v)?.map(|h| (v, h)),
            None => None,
        };
        if best.is_none() {
            // First use, or the highest known was destroyed: list once.
            if let Some((v, _)) = self.kek_versions(s)?.last() {
                best = self.lookup(s, *v)?.map(|h| (*v, h));
            }
        }
        let (mut v, mut h) = best.ok_or_else(|| {
            KeyError::Provider(format!("token holds no KEK under prefix {:?}", self.prefix))
        })?;
        while let Some(next) = self.lookup(s, v + 1)? {
            v += 1;
            h = next;
        }
        Ok((v, h))
    }

    fn kek(&self, s: &Session, version: u32) -> Result<ObjectHandle, KeyError> {
        if let Some(h) = self.lookup(s, version)? {
            return Ok(h);
        }
        let (current, _) = self.current(s)?;
        if version >= 1 && version < current {
            Err(KeyError::KekDestroyed(version))
        } else {
            Err(KeyError::UnknownKekVersion(version))
        }
    }

    fn generate_kek(&self, s: &Session, version: u32) -> Result<ObjectHandle, KeyError> {
        let _one_at_a_time = object_writes()?;
        let label = self.kek_label(version);
        let h = s
            .generate_key(
                &Mechanism::AesKeyGen,
                &secret_key_template(
                    KeyType::AES,
                    &label,
                    [
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                    ],
                )?,
            )
            .map_err(|e| provider_err("C_GenerateKey (AES)", e))?;
        // Two servers creating the same version at once: keep neither
        // ambiguous; the loser removes its key and reports a conflict.
        let same = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.into_bytes()),
            ])
            .map_err(|e| provider_err("C_FindObjects", e))?;
        if same.len() > 1 {
            let _ = s.destroy_object(h);
            return Err(KeyError::Conflict(format!(
                "KEK version {version} was created concurrently by another server; retry"
            )));
        }
        Ok(h)
    }

    /// The MAC key, found by its exact label; `None` if the token has
    /// none. Several keys under the label are refused, as for a KEK: which
    /// one a token lists first is not defined, and one of them may be a
    /// key someone planted.
    fn find_mac(&self, s: &Session) -> Result<Option<ObjectHandle>, KeyError> {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Label(self.mac_label().into_bytes()),
            ])
            .map_err(|e| provider_err("C_FindObjects", e))?;
        match found.as_slice() {
            [] => Ok(None),
            [h] => Ok(Some(*h)),
            _ => Err(KeyError::Provider(format!(
                "token holds {} keys labelled {:?}; refusing an ambiguous MAC key",
                found.len(),
                self.mac_label()
            ))),
        }
    }

    fn generate_mac(&self, s: &Session) -> Result<(), KeyError> {
        let _one_at_a_time = object_writes()?;
        let label = self.mac_label();
        let h = s
            .generate_key(
                &Mechanism::GenericSecretKeyGen,
                &secret_key_template(
                    KeyType::GENERIC_SECRET,
                    &label,
                    [Attribute::Sign(true), Attribute::Verify(true)],
                )?,
            )
            .map_err(|e| provider_err("C_GenerateKey (HMAC)", e))?;
        // Two servers creating the keys at once: leave one MAC key, not an
        // ambiguous pair; the loser removes its own and reports a conflict.
        let same = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Label(label.into_bytes()),
            ])
            .map_err(|e| provider_err("C_FindObjects", e))?;
        if same.len() > 1 {
            let _ = s.destroy_object(h);
            return Err(KeyError::Conflict(
                "the MAC key was created concurrently by another server; retry".into(),
            ));
        }
        Ok(())
    }

    fn mac_key(&self, s: &Session) -> Result<ObjectHandle, KeyError> {
        let cached = *self
            .mac_handle
            .lock()
            .map_err(|_| KeyError::Provider("pkcs11 lock poisoned".into()))?;
        if let Some(h) = cached {
            return Ok(h);
        }
        let h = self.find_mac(s)?.ok_or_else(|| {
            KeyError::Provider(format!("token holds no MAC key {:?}", self.mac_label()))
        })?;
        check_born_in_token(s, h, &self.mac_label())?;
        if let Ok(mut c) = self.mac_handle.lock() {
            *c = Some(h);
        }
        Ok(h)
    }

    fn created_at(&self, s: &Session, h: ObjectHandle) -> String {
        match s.get_attributes(h, &[AttributeType::StartDate]) {
            Ok(attrs) => attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::StartDate(d) if !d.is_empty() => Some(format!(
                        "{}-{}-{}",
                        String::from_utf8_lossy(&d.year),
                        String::from_utf8_lossy(&d.month),
                        String::from_utf8_lossy(&d.day)
                    )),
                    _ => None,
                })
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// The template of every key Modelvault generates: a 256-bit token
/// object, private, sensitive and never extractable, with `usage` on top.
fn secret_key_template<const N: usize>(
    key_type: KeyType,
    label: &str,
    usage: [Attribute; N],
) -> Result<Vec<Attribute>, KeyError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(
            KEY_LEN
                .try_into()
                .map_err(|e| provider_err("key length", e))?,
        ),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
        Attribute::StartDate(now_date()),
    ];
    t.extend(usage);
    Ok(t)
}

/// Refuses a key that was imported or ever extractable: someone holding
/// the user PIN could otherwise plant a key they know under the next KEK
/// label and have new DEKs wrapped under it.
fn check_born_in_token(s: &Session, h: ObjectHandle, label: &str) -> Result<(), KeyError> {
    let attrs = s
        .get_attributes(
            h,
            &[
                AttributeType::Local,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
            ],
        )
        .map_err(|e| provider_err("C_GetAttributeValue", e))?;
    let ok = [
        Attribute::Local(true),
        Attribute::NeverExtractable(true),
        Attribute::AlwaysSensitive(true),
    ]
    .iter()
    .all(|want| attrs.contains(want));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Provider(format!(
            "token key {label:?} was not generated in the token as a never-extractable, always-sensitive key; refusing it"
        )))
    }
}

fn wrap_aad(binding: &DekBinding<'_>, version: u32) -> Vec<u8> {
    let mut aad = binding.aad();
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

#[async_trait]
impl KeyProvider for Pkcs11Provider {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    async fn current_kek_version(&self) -> Result<KekVersion, KeyError> {
        self.blocking(|inner, s| Ok(KekVersion(inner.current(s)?.0)))
            .await
    }

    async fn list_kek_versions(&self) -> Result<Vec<KekVersionInfo>, KeyError> {
        self.blocking(|inner, s| {
            let present = inner.kek_versions(s)?;
            let max = present.last().map(|(n, _)| *n).unwrap_or(0);
            let mut out = Vec::new();
            for v in 1..=max {
                let info = match present.iter().find(|(n, _)| *n == v) {
                    Some((_, h)) => KekVersionInfo {
                        version: KekVersion(v),
                        state: KekState::Active,
                        current: v == max,
                        created_at: inner.created_at(s, *h),
                    },
                    None => KekVersionInfo {
                        version: KekVersion(v),
                        state: KekState::Destroyed,
                        current: false,
                        created_at: String::new(),
                    },
                };
                out.push(info);
            }
            Ok(out)
        })
        .await
    }

    async fn create_kek_version(&self) -> Result<KekVersion, KeyError> {
        self.blocking(|inner, s| {
            let next = inner.current(s)?.0 + 1;
            inner.generate_kek(s, next)?;
            Ok(KekVersion(next))
        })
        .await
    }

    async fn destroy_kek_version(&self, version: KekVersion) -> Result<(), KeyError> {
        self.blocking(move |inner, s| {
            let (current, _) = inner.current(s)?;
            if version.0 == current {
                return Err(KeyError::KekIsCurrent(version.0));
            }
            let h = inner.kek(s, version.0)?;
            inner.cache()?.remove(&version.0);
            let _one_at_a_time = object_writes()?;
            s.destroy_object(h)
                .map_err(|e| provider_err("C_DestroyObject", e))
        })
        .await
    }

    async fn wrap_dek(&self, dek: &Dek, binding: &DekBinding<'_>) -> Result<WrappedDek, KeyError> {
        let plain = Zeroizing::new(dek.expose_secret().to_vec());
        let binding_aad = binding.aad();
        self.blocking(move |inner, s| {
            let (version, h) = inner.current(s)?;
            let mut aad = binding_aad;
            aad.extend_from_slice(&version.to_be_bytes());
            let mut iv = [0u8; IV_LEN];
            SystemRandom::new()
                .fill(&mut iv)
                .map_err(|_| KeyError::Crypto("random IV"))?;
            let params = GcmParams::new(&mut iv, &aad, 128.into())
                .map_err(|e| provider_err("GCM parameters", e))?;
            let sealed = s
                .encrypt(&Mechanism::AesGcm(params), h, &plain)
                .map_err(|e| provider_err("C_Encrypt", e))?;
            if sealed.len() != KEY_LEN + TAG_LEN {
                return Err(KeyError::Provider(
                    "pkcs11 C_Encrypt returned an unexpected length".into(),
                ));
            }
            let mut ciphertext = Vec::with_capacity(IV_LEN + KEY_LEN + TAG_LEN);
            ciphertext.extend_from_slice(&iv);
            ciphertext.extend_from_slice(&sealed);
            Ok(WrappedDek {
                kek_version: KekVersion(version),
                ciphertext,
            })
        })
        .await
    }

    async fn unwrap_dek(
        &self,
        wrapped: &WrappedDek,
        binding: &DekBinding<'_>,
    ) -> Result<Dek, KeyError> {
        if wrapped.ciphertext.len() != IV_LEN + KEY_LEN + TAG_LEN {
            return Err(KeyError::UnwrapFailed);
        }
        let version = wrapped.kek_version.0;
        let aad = wrap_aad(binding, version);
        let ciphertext = wrapped.ciphertext.clone();
        self.blocking(move |inner, s| {
            let h = inner.kek(s, version)?;
            let (iv, body) = ciphertext.split_at(IV_LEN);
            let mut iv = iv.to_vec();
            let params = GcmParams::new(&mut iv, &aad, 128.into())
                .map_err(|e| provider_err("GCM parameters", e))?;
            // Tokens report a failed GCM tag check differently (SoftHSM2:
            // CKR_GENERAL_ERROR): any decrypt failure is a failed unwrap,
            // which the caller treats as deny.
            let plain = Zeroizing::new(s.decrypt(&Mechanism::AesGcm(params), h, body).map_err(
                |e| match e {
                    // A stale handle (another server destroyed the key):
                    // a provider error, which also clears the handle cache.
                    CkError::Pkcs11(
                        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                        _,
                    ) => provider_err("C_Decrypt", e),
                    _ => {
                        tracing::debug!(error = %e, "pkcs11 unwrap refused");
                        KeyError::UnwrapFailed
                    }
                },
            )?);
            Dek::from_slice(&plain).map_err(|_| KeyError::UnwrapFailed)
        })
        .await
    }

    async fn mac(&self, message: &[u8]) -> Result<RecordMac, KeyError> {
        let message = message.to_vec();
        self.blocking(move |inner, s| {
            let h = inner.mac_key(s)?;
            let tag = s
                .sign(&Mechanism::Sha256Hmac, h, &message)
                .map_err(|e| provider_err("C_Sign", e))?;
            Ok(RecordMac {
                key_id: inner.mac_key_id(),
                tag,
            })
        })
        .await
    }

    async fn verify_mac(&self, message: &[u8], mac: &RecordMac) -> Result<(), KeyError> {
        if mac.key_id != self.inner.mac_key_id() {
            return Err(KeyError::UnknownMacKey(mac.key_id.clone()));
        }
        let message = message.to_vec();
        let tag = mac.tag.clone();
        self.blocking(move |inner, s| {
            let h = inner.mac_key(s)?;
            match s.verify(&Mechanism::Sha256Hmac, h, &message, &tag) {
                Ok(()) => Ok(()),
                Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                    Err(KeyError::MacMismatch)
                }
                Err(e) => Err(provider_err("C_Verify", e)),
            }
        })
        .await
    }
}
