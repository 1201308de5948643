//! The local keyring: a JSON file, mode 0600, outside the store's root,
//! holding versioned KEKs and the record MAC key. Updates are written to a
//! temporary file, fsynced and renamed, so a crash leaves the old or the new
//! keyring, never half of one.
//!
//! Several servers may share the file. Invariants a reader must keep:
//! - every mutation holds an exclusive advisory lock on `<keyring>.lock`
//!   across re-read, modify, write, fsync and rename, so no update is lost
//!   and a KEK version number is never handed out twice (destroyed versions
//!   stay in the file, without their key, and count for "next version");
//! - before every wrap and unwrap the file's identity (device, inode, size,
//!   mtime) is compared with the one loaded; if another server replaced it,
//!   it is re-read, so a KEK retired elsewhere is gone here too and a wrap
//!   always uses the newest current version.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use async_trait::async_trait;
use modelvault_format::{Dek, KEY_LEN};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    DekBinding, KekState, KekVersion, KekVersionInfo, KeyError, KeyProvider, RecordMac, WrappedDek,
    b64_decode, b64_encode,
};

const FILE_FORMAT: &str = "modelvault-keyring-v1";

/// On-disk form. Key fields are base64 strings, wiped on drop.
#[derive(Serialize, Deserialize)]
struct KeyringFile {
    format: String,
    current: u32,
    keks: Vec<KekEntry>,
    mac_key: MacKeyEntry,
}

#[derive(Serialize, Deserialize)]
struct KekEntry {
    version: u32,
    state: KekState,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl Drop for KekEntry {
    fn drop(&mut self) {
        if let Some(k) = self.key.as_mut() {
            k.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MacKeyEntry {
    id: String,
    key: String,
}

impl Drop for MacKeyEntry {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

struct Kek {
    version: u32,
    state: KekState,
    created_at: String,
    key: Option<Zeroizing<[u8; KEY_LEN]>>,
}

/// What identifies one written keyring file: a rename by another server
/// changes the inode; an in-place edit changes size or mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

struct State {
    stamp: Option<FileStamp>,
    current: u32,
    keks: Vec<Kek>,
    mac_id: String,
    mac_raw: Zeroizing<[u8; KEY_LEN]>,
    mac_key: hmac::Key,
}

/// The default key provider: versioned KEKs in a 0600 file.
pub struct LocalKeyring {
    path: PathBuf,
    state: RwLock<State>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(k.as_mut())
        .map_err(|_| KeyError::Crypto("random key"))?;
    Ok(k)
}

fn decode_key(s: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let raw = Zeroizing::new(b64_decode(s)?);
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    if raw.len() != KEY_LEN {
        return Err(KeyError::Corrupt("key of the wrong length".into()));
    }
    k.copy_from_slice(&raw);
    Ok(k)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl State {
    fn from_file(file: &KeyringFile) -> Result<Self, KeyError> {
        if file.format != FILE_FORMAT {
            return Err(KeyError::Corrupt(format!(
                "unknown keyring format {:?}",
                file.format
            )));
        }
        let mut keks = Vec::with_capacity(file.keks.len());
        for e in &file.keks {
            let key = match (&e.state, &e.key) {
                (KekState::Active, Some(k)) => Some(decode_key(k)?),
                (KekState::Active, None) => {
                    return Err(KeyError::Corrupt(format!("KEK {} has no key", e.version)));
                }
                (KekState::Destroyed, _) => None,
            };
            keks.push(Kek {
                version: e.version,
                state: e.state,
                created_at: e.created_at.clone(),
                key,
            });
        }
        if !keks
            .iter()
            .any(|k| k.version == file.current && k.key.is_some())
        {
            return Err(KeyError::Corrupt("current KEK missing".into()));
        }
        let mac_raw = decode_key(&file.mac_key.key)?;
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, mac_raw.as_ref());
        Ok(Self {
            stamp: None,
            current: file.current,
            keks,
            mac_id: file.mac_key.id.clone(),
            mac_raw,
            mac_key,
        })
    }

    fn to_file(&self) -> KeyringFile {
        KeyringFile {
            format: FILE_FORMAT.into(),
            current: self.current,
            keks: self
                .keks
                .iter()
                .map(|k| KekEntry {
                    version: k.version,
                    state: k.state,
                    created_at: k.created_at.clone(),
                    key: k.key.as_ref().map(|k| b64_encode(k.as_ref())),
                })
                .collect(),
            mac_key: MacKeyEntry {
                id: self.mac_id.clone(),
                key: b64_encode(self.mac_raw.as_ref()),
            },
        }
    }

    fn kek(&self, version: u32) -> Result<LessSafeKey, KeyError> {
        let kek = self
            .keks
            .iter()
            .find(|k| k.version == version)
            .ok_or(KeyError::UnknownKekVersion(version))?;
        let bytes = kek.key.as_ref().ok_or(KeyError::KekDestroyed(version))?;
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes.as_ref()).map_err(|_| KeyError::Crypto("kek"))?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl LocalKeyring {
    /// Creates a new keyring file with one KEK version and a MAC key.
    /// Refuses if the file exists. The file is created with mode 0600.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let state = {
            let mac_raw = random_key()?;
            let mac_key = hmac::Key::new(hmac::HMAC_SHA256, mac_raw.as_ref());
            State {
                stamp: None,
                current: 1,
                keks: vec![Kek {
                    version: 1,
                    state: KekState::Active,
                    created_at: now(),
                    key: Some(random_key()?),
                }],
                mac_id: "local-1".into(),
                mac_raw,
                mac_key,
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::AlreadyExists(path.display().to_string())
                } else {
                    io_err(path)(e)
                }
            })?;
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(&state.to_file())
                .map_err(|e| KeyError::Corrupt(e.to_string()))?,
        );
        f.write_all(&json).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
        sync_parent(path)?;
        let mut state = state;
        state.stamp = Some(FileStamp::of(&f.metadata().map_err(io_err(path))?));
        Ok(Self {
            path: path.to_path_buf(),
            state: RwLock::new(state),
        })
    }

    /// Opens an existing keyring. Refuses a file readable by group or others.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let state = Self::load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: RwLock::new(state),
        })
    }

    /// The keyring file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(path: &Path) -> Result<State, KeyError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.display().to_string(),
                mode,
            });
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io_err(path))?);
        let file: KeyringFile =
            serde_json::from_slice(&bytes).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let mut state = State::from_file(&file)?;
        // Stat before read: a replacement in between makes the stamp stale,
        // which only causes one more re-read later.
        state.stamp = Some(FileStamp::of(&meta));
        Ok(state)
    }

    fn reload(&self) -> Result<(), KeyError> {
        let fresh = Self::load(&self.path)?;
        *self
            .state
            .write()
            .map_err(|_| KeyError::Crypto("keyring lock poisoned"))? = fresh;
        Ok(())
    }

    /// Re-reads the file if another process replaced or edited it since it
    /// was loaded (one `stat`).
    fn refresh_if_changed(&self) -> Result<(), KeyError> {
        let meta = std::fs::metadata(&self.path).map_err(io_err(&self.path))?;
        let now = FileStamp::of(&meta);
        if self.read()?.stamp == Some(now) {
            return Ok(());
        }
        self.reload()
    }

    /// The lock file beside the keyring that serializes mutations across
    /// processes.
    fn lock_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        self.path.with_file_name(name)
    }

    /// Runs one mutation under the cross-process lock: re-read the file,
    /// apply `change`, write it (fsync, rename, fsync of the directory), and
    /// only then make the result this process's state. An error anywhere
    /// leaves the file and the in-memory state as they were.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let lock_path = self.lock_path();
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        let mut fresh = Self::load(&self.path)?;
        let out = change(&mut fresh)?;
        self.persist(&fresh)?;
        let meta = std::fs::metadata(&self.path).map_err(io_err(&self.path))?;
        fresh.stamp = Some(FileStamp::of(&meta));
        *self
            .state
            .write()
            .map_err(|_| KeyError::Crypto("keyring lock poisoned"))? = fresh;
        drop(lock); // Closing the file releases the lock.
        Ok(out)
    }

    fn persist(&self, state: &State) -> Result<(), KeyError> {
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(&state.to_file())
                .map_err(|e| KeyError::Corrupt(e.to_string()))?,
        );
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(&json).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        sync_parent(&self.path)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>, KeyError> {
        self.state
            .read()
            .map_err(|_| KeyError::Crypto("keyring lock poisoned"))
    }
}

fn sync_parent(path: &Path) -> Result<(), KeyError> {
    if let Some(dir) = path.parent() {
        let d = std::fs::File::open(dir).map_err(io_err(dir))?;
        d.sync_all().map_err(io_err(dir))?;
    }
    Ok(())
}

fn wrap_aad(binding: &DekBinding<'_>, version: u32) -> Vec<u8> {
    let mut aad = binding.aad();
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

#[async_trait]
impl KeyProvider for LocalKeyring {
    fn kind(&self) -> &'static str {
        "local-keyring"
    }

    async fn current_kek_version(&self) -> Result<KekVersion, KeyError> {
        // Another server sharing the file may have rotated.
        self.refresh_if_changed()?;
        Ok(KekVersion(self.read()?.current))
    }

    async fn list_kek_versions(&self) -> Result<Vec<KekVersionInfo>, KeyError> {
        self.refresh_if_changed()?;
        let s = self.read()?;
        Ok(s.keks
            .iter()
            .map(|k| KekVersionInfo {
                version: KekVersion(k.version),
                state: k.state,
                current: k.version == s.current,
                created_at: k.created_at.clone(),
            })
            .collect())
    }

    async fn create_kek_version(&self) -> Result<KekVersion, KeyError> {
        self.mutate(|s| {
            // Destroyed versions stay listed, so a number is never reused.
            let next = s.keks.iter().map(|k| k.version).max().unwrap_or(0) + 1;
            s.keks.push(Kek {
                version: next,
                state: KekState::Active,
                created_at: now(),
                key: Some(random_key()?),
            });
            s.current = next;
            Ok(KekVersion(next))
        })
    }

    async fn destroy_kek_version(&self, version: KekVersion) -> Result<(), KeyError> {
        self.mutate(|s| {
            if s.current == version.0 {
                return Err(KeyError::KekIsCurrent(version.0));
            }
            let kek = s
                .keks
                .iter_mut()
                .find(|k| k.version == version.0)
                .ok_or(KeyError::UnknownKekVersion(version.0))?;
            kek.state = KekState::Destroyed;
            kek.key = None; // Zeroizing wipes the bytes here.
            Ok(())
        })
    }

    async fn wrap_dek(&self, dek: &Dek, binding: &DekBinding<'_>) -> Result<WrappedDek, KeyError> {
        let version = self.current_kek_version().await?.0;
        let key = self.read()?.kek(version)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Crypto("random nonce"))?;
        let mut buf = Zeroizing::new(dek.expose_secret().to_vec());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(binding, version)),
                buf.as_mut_slice(),
            )
            .map_err(|_| KeyError::Crypto("wrap"))?;
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + KEY_LEN + 16);
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&buf);
        ciphertext.extend_from_slice(tag.as_ref());
        Ok(WrappedDek {
            kek_version: KekVersion(version),
            ciphertext,
        })
    }

    async fn unwrap_dek(
        &self,
        wrapped: &WrappedDek,
        binding: &DekBinding<'_>,
    ) -> Result<Dek, KeyError> {
        let version = wrapped.kek_version.0;
        // A KEK retired by another server must be gone here too.
        self.refresh_if_changed()?;
        let key = self.read()?.kek(version)?;
        if wrapped.ciphertext.len() != NONCE_LEN + KEY_LEN + 16 {
            return Err(KeyError::UnwrapFailed);
        }
        let (nonce, body) = wrapped.ciphertext.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::UnwrapFailed)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain = key
            .open_in_place(
                nonce,
                Aad::from(wrap_aad(binding, version)),
                buf.as_mut_slice(),
            )
            .map_err(|_| KeyError::UnwrapFailed)?;
        Dek::from_slice(plain).map_err(|_| KeyError::UnwrapFailed)
    }

    async fn mac(&self, message: &[u8]) -> Result<RecordMac, KeyError> {
        let s = self.read()?;
        Ok(RecordMac {
            key_id: s.mac_id.clone(),
            tag: hmac::sign(&s.mac_key, message).as_ref().to_vec(),
        })
    }

    async fn verify_mac(&self, message: &[u8], mac: &RecordMac) -> Result<(), KeyError> {
        let s = self.read()?;
        if mac.key_id != s.mac_id {
            return Err(KeyError::UnknownMacKey(mac.key_id.clone()));
        }
        hmac::verify(&s.mac_key, message, &mac.tag).map_err(|_| KeyError::MacMismatch)
    }
}
