//! The AWS KMS key provider (`[keys] provider = "aws-kms"`).
//!
//! Invariants a reader must keep:
//! - KEK version N is the KMS key behind the alias
//!   `alias/<prefix>-kek-<N>` (six digits); the current version is the
//!   highest. A version's alias is never deleted, so its number is never
//!   reused; destroying a version schedules its key's deletion (KMS's
//!   shortest window, 7 days), after which nothing it wrapped unwraps.
//! - A DEK is wrapped with `Encrypt` under that alias and an encryption
//!   context carrying the same binding as the local keyring's associated
//!   data (namespace, model, version, DEK generation) and the KEK version;
//!   `Decrypt` is given the same context and the alias, so a wrap moved to
//!   another version, model, generation or KEK version does not unwrap.
//! - Record MACs are made and checked inside KMS (`GenerateMac`/`VerifyMac`,
//!   HMAC-SHA-256) with the HMAC key behind `alias/<prefix>-mac`, over the
//!   SHA-256 of the record (KMS takes at most 4 KiB per message); the MAC
//!   key never leaves KMS, and neither does a KEK.
//! - Requests are signed with SigV4 from the standard `AWS_*` variables;
//!   no key material is ever logged (errors carry KMS's code and message).

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use modelvault_format::Dek;
use serde_json::{Value, json};

use crate::{
    B64, DekBinding, KekState, KekVersion, KekVersionInfo, KeyError, KeyProvider, RecordMac,
    WrappedDek,
};

/// Where the KMS keys are and how to reach KMS.
#[derive(Clone)]
pub struct AwsKmsSettings {
    /// The region (`AWS_REGION` when unset in the config).
    pub region: String,
    /// The KMS endpoint (`https://kms.<region>.amazonaws.com` by default;
    /// `AWS_ENDPOINT_URL_KMS` or `AWS_ENDPOINT_URL` override it).
    pub endpoint: String,
    /// Aliases are `alias/<prefix>-kek-<N>` and `alias/<prefix>-mac`.
    pub alias_prefix: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key (zeroized on drop).
    pub secret_access_key: zeroize::Zeroizing<String>,
    /// A session token, for temporary credentials.
    pub session_token: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for AwsKmsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsSettings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("alias_prefix", &self.alias_prefix)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsKmsSettings {
    /// Settings from the standard AWS variables, with the config's region,
    /// endpoint and alias prefix when given.
    pub fn from_env(
        region: Option<&str>,
        endpoint: Option<&str>,
        alias_prefix: &str,
    ) -> Result<Self, KeyError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = region
            .map(str::to_string)
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .ok_or_else(|| {
                KeyError::Provider("aws-kms: no region (keys.aws_kms.region or AWS_REGION)".into())
            })?;
        let endpoint = endpoint
            .map(str::to_string)
            .or_else(|| var("AWS_ENDPOINT_URL_KMS"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
        let access_key_id = var("AWS_ACCESS_KEY_ID")
            .ok_or_else(|| KeyError::Provider("aws-kms: AWS_ACCESS_KEY_ID is not set".into()))?;
        let secret = var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            KeyError::Provider("aws-kms: AWS_SECRET_ACCESS_KEY is not set".into())
        })?;
        if alias_prefix.is_empty()
            || !alias_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b))
        {
            return Err(KeyError::Provider(format!(
                "aws-kms: alias prefix {alias_prefix:?} must be letters, digits, -, _ or /"
            )));
        }
        Ok(Self {
            region,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            alias_prefix: alias_prefix.to_string(),
            access_key_id,
            secret_access_key: zeroize::Zeroizing::new(secret),
            session_token: var("AWS_SESSION_TOKEN").map(zeroize::Zeroizing::new),
        })
    }
}

/// KMS's answer to a refused call: its error code and message.
#[derive(Debug)]
struct KmsError {
    code: String,
    message: String,
}

impl From<KmsError> for KeyError {
    fn from(e: KmsError) -> Self {
        KeyError::Provider(format!("aws-kms: {}: {}", e.code, e.message))
    }
}

/// The AWS KMS provider.
pub struct AwsKmsProvider {
    settings: AwsKmsSettings,
    http: reqwest::Client,
}

impl std::fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("settings", &self.settings)
            .finish()
    }
}

const KEK_DIGITS: usize = 6;

impl AwsKmsProvider {
    fn client() -> Result<reqwest::Client, KeyError> {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| KeyError::Provider(format!("aws-kms: HTTP client: {e}")))
    }

    /// Opens the provider: its MAC key and first KEK version must exist
    /// (made by [`Self::initialize`]).
    pub async fn open(settings: AwsKmsSettings) -> Result<Self, KeyError> {
        let p = Self {
            settings,
            http: Self::client()?,
        };
        p.describe(&p.mac_alias()).await.map_err(|e| {
            KeyError::Provider(format!(
                "aws-kms: the MAC key {} is not usable ({}): run `modelvault init --key-provider aws-kms`",
                p.mac_alias(),
                e.code
            ))
        })?;
        p.current_kek_version().await?;
        Ok(p)
    }

    /// Sets KMS up for a new store: an HMAC key for record MACs and KEK
    /// version 1, which is `kek_key_id` (an existing symmetric KMS key, by
    /// id, ARN or alias) or a new key. Refuses if the aliases exist.
    pub async fn initialize(
        settings: AwsKmsSettings,
        kek_key_id: Option<&str>,
    ) -> Result<Self, KeyError> {
        let p = Self {
            settings,
            http: Self::client()?,
        };
        if p.describe(&p.mac_alias()).await.is_ok() {
            return Err(KeyError::AlreadyExists(p.mac_alias()));
        }
        let mac_key = p
            .call(
                "CreateKey",
                json!({
                    "KeySpec": "HMAC_256",
                    "KeyUsage": "GENERATE_VERIFY_MAC",
                    "Description": "Modelvault record MACs",
                }),
            )
            .await?;
        let mac_id = key_id_of(&mac_key)?;
        p.call(
            "CreateAlias",
            json!({"AliasName": p.mac_alias(), "TargetKeyId": mac_id}),
        )
        .await?;
        let kek = match kek_key_id {
            Some(id) => key_id_of(&p.describe(id).await?)?,
            None => p.new_kek_key().await?,
        };
        p.call(
            "CreateAlias",
            json!({"AliasName": p.kek_alias(KekVersion(1)), "TargetKeyId": kek}),
        )
        .await?;
        Ok(p)
    }

    fn mac_alias(&self) -> String {
        format!("alias/{}-mac", self.settings.alias_prefix)
    }

    fn kek_alias(&self, v: KekVersion) -> String {
        format!(
            "alias/{}-kek-{:0width$}",
            self.settings.alias_prefix,
            v.0,
            width = KEK_DIGITS
        )
    }

    async fn new_kek_key(&self) -> Result<String, KeyError> {
        let k = self
            .call(
                "CreateKey",
                json!({
                    "KeySpec": "SYMMETRIC_DEFAULT",
                    "KeyUsage": "ENCRYPT_DECRYPT",
                    "Description": "Modelvault KEK",
                }),
            )
            .await?;
        key_id_of(&k)
    }

    async fn describe(&self, key: &str) -> Result<Value, KmsError> {
        self.call_raw("DescribeKey", json!({ "KeyId": key })).await
    }

    /// Every KEK alias of this prefix: version → target key id.
    async fn kek_aliases(&self) -> Result<BTreeMap<KekVersion, String>, KeyError> {
        let prefix = format!("alias/{}-kek-", self.settings.alias_prefix);
        let mut out = BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            let mut req = json!({ "Limit": 100 });
            if let Some(m) = &marker {
                req["Marker"] = json!(m);
            }
            let page = self.call("ListAliases", req).await?;
            for a in page["Aliases"].as_array().into_iter().flatten() {
                let Some(name) = a["AliasName"].as_str() else {
                    continue;
                };
                let Some(n) = name.strip_prefix(&prefix) else {
                    continue;
                };
                if n.len() != KEK_DIGITS {
                    continue;
                }
                if let (Ok(v), Some(target)) =
                    (n.parse::<u32>().map(KekVersion), a["TargetKeyId"].as_str())
                {
                    out.insert(v, target.to_string());
                }
            }
            match page["NextMarker"].as_str() {
                Some(m) if page["Truncated"].as_bool() == Some(true) => {
                    marker = Some(m.to_string())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// A KEK version's key state, refusing one that is gone or disabled.
    async fn usable(&self, v: KekVersion) -> Result<(), KeyError> {
        let d = self.describe(&self.kek_alias(v)).await.map_err(|e| {
            if e.code == "NotFoundException" {
                KeyError::UnknownKekVersion(v.0)
            } else {
                e.into()
            }
        })?;
        state_verdict(v, d["KeyMetadata"]["KeyState"].as_str())
    }

    async fn call(&self, target: &str, body: Value) -> Result<Value, KeyError> {
        Ok(self.call_raw(target, body).await?)
    }

    /// One signed KMS call (JSON protocol).
    async fn call_raw(&self, target: &str, body: Value) -> Result<Value, KmsError> {
        let payload = serde_json::to_vec(&body).map_err(|e| KmsError {
            code: "Serialize".into(),
            message: e.to_string(),
        })?;
        let url = url_host(&self.settings.endpoint);
        let now = chrono::Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let mut headers = vec![
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            ("host".to_string(), url.host.clone()),
            ("x-amz-date".to_string(), amz_date.clone()),
            ("x-amz-target".to_string(), format!("TrentService.{target}")),
        ];
        if let Some(t) = &self.settings.session_token {
            headers.push(("x-amz-security-token".to_string(), t.to_string()));
        }
        let auth = sigv4::authorization(
            &sigv4::Request {
                method: "POST",
                path: &url.path,
                query: "",
                headers: &headers,
                payload: &payload,
            },
            &sigv4::Credentials {
                access_key_id: &self.settings.access_key_id,
                secret_access_key: &self.settings.secret_access_key,
                region: &self.settings.region,
                service: "kms",
                amz_date: &amz_date,
            },
        );
        let mut req = self.http.post(&self.settings.endpoint);
        for (k, v) in &headers {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req
            .header("authorization", auth)
            .body(payload)
            .send()
            .await
            .map_err(|e| KmsError {
                code: "Unreachable".into(),
                message: e.without_url().to_string(),
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| KmsError {
            code: "Unreadable".into(),
            message: e.to_string(),
        })?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        let message = v["message"]
            .as_str()
            .or_else(|| v["Message"].as_str())
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        Err(KmsError { code, message })
    }
}

/// Whether a KEK version whose KMS key is in `state` may unwrap: only an
/// enabled key. (Real KMS refuses the rest itself; emulators such as moto
/// still decrypt with a disabled key or one pending deletion, so the
/// provider checks first.)
fn state_verdict(v: KekVersion, state: Option<&str>) -> Result<(), KeyError> {
    match state {
        Some("Enabled") => Ok(()),
        Some("PendingDeletion") | Some("PendingReplicaDeletion") | None => {
            Err(KeyError::KekDestroyed(v.0))
        }
        Some(other) => Err(KeyError::Provider(format!(
            "aws-kms: KEK version {v} is {other} in KMS"
        ))),
    }
}

fn key_id_of(v: &Value) -> Result<String, KeyError> {
    v["KeyMetadata"]["KeyId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| KeyError::Provider("aws-kms: an answer without KeyMetadata.KeyId".into()))
}

struct HostPath {
    host: String,
    path: String,
}

fn url_host(endpoint: &str) -> HostPath {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    HostPath {
        host: host.to_string(),
        path: format!("/{path}"),
    }
}

/// The encryption context of a wrap: the binding and the KEK version.
fn context(binding: &DekBinding<'_>, kek: KekVersion) -> Value {
    json!({
        "modelvault": "dek-wrap/v1",
        "namespace": binding.namespace,
        "model": binding.model,
        "version": binding.version,
        "dek_generation": binding.dek_generation.to_string(),
        "kek_version": kek.to_string(),
    })
}

/// What is MAC'd in KMS for a record: a label and the record's SHA-256.
fn mac_message(message: &[u8]) -> String {
    let mut m = b"modelvault/v1/record-mac:".to_vec();
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, message).as_ref());
    B64.encode(m)
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn kind(&self) -> &'static str {
        "aws-kms"
    }

    async fn current_kek_version(&self) -> Result<KekVersion, KeyError> {
        self.kek_aliases()
            .await?
            .keys()
            .next_back()
            .copied()
            .ok_or_else(|| {
                KeyError::Provider(format!(
                    "aws-kms: no KEK alias alias/{}-kek-NNNNNN (run `modelvault init --key-provider aws-kms`)",
                    self.settings.alias_prefix
                ))
            })
    }

    async fn list_kek_versions(&self) -> Result<Vec<KekVersionInfo>, KeyError> {
        let aliases = self.kek_aliases().await?;
        let current = aliases.keys().next_back().copied();
        let mut out = Vec::with_capacity(aliases.len());
        for (v, key) in aliases {
            let d = self.describe(&key).await?;
            let m = &d["KeyMetadata"];
            let state = match m["KeyState"].as_str() {
                Some("PendingDeletion") | Some("PendingReplicaDeletion") => KekState::Destroyed,
                _ => KekState::Active,
            };
            let created_at = m["CreationDate"]
                .as_f64()
                .and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            out.push(KekVersionInfo {
                version: v,
                state,
                current: Some(v) == current,
                created_at,
            });
        }
        Ok(out)
    }

    async fn create_kek_version(&self) -> Result<KekVersion, KeyError> {
        let key = self.new_kek_key().await?;
        // Two servers rotating at once: the alias is the claim; whoever
        // loses schedules its unused key for deletion and takes the next
        // number.
        for _ in 0..8 {
            let next = KekVersion(self.current_kek_version().await?.0 + 1);
            match self
                .call_raw(
                    "CreateAlias",
                    json!({"AliasName": self.kek_alias(next), "TargetKeyId": key}),
                )
                .await
            {
                Ok(_) => return Ok(next),
                Err(e) if e.code == "AlreadyExistsException" => continue,
                Err(e) => {
                    let _ = self
                        .call_raw(
                            "ScheduleKeyDeletion",
                            json!({"KeyId": key, "PendingWindowInDays": 7}),
                        )
                        .await;
                    return Err(e.into());
                }
            }
        }
        Err(KeyError::Conflict(
            "aws-kms: could not claim a KEK version alias after 8 tries".into(),
        ))
    }

    async fn destroy_kek_version(&self, version: KekVersion) -> Result<(), KeyError> {
        let aliases = self.kek_aliases().await?;
        let key = aliases
            .get(&version)
            .ok_or(KeyError::UnknownKekVersion(version.0))?;
        if aliases.keys().next_back() == Some(&version) {
            return Err(KeyError::KekIsCurrent(version.0));
        }
        match self
            .call_raw(
                "ScheduleKeyDeletion",
                json!({"KeyId": key, "PendingWindowInDays": 7}),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Already scheduled (another server retired it).
            Err(e) if e.code == "KMSInvalidStateException" => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn wrap_dek(&self, dek: &Dek, binding: &DekBinding<'_>) -> Result<WrappedDek, KeyError> {
        let v = self.current_kek_version().await?;
        let plaintext = zeroize::Zeroizing::new(B64.encode(dek.expose_secret()));
        let out = self
            .call(
                "Encrypt",
                json!({
                    "KeyId": self.kek_alias(v),
                    "Plaintext": plaintext.as_str(),
                    "EncryptionContext": context(binding, v),
                }),
            )
            .await?;
        let blob = out["CiphertextBlob"]
            .as_str()
            .and_then(|b| B64.decode(b).ok())
            .ok_or_else(|| KeyError::Provider("aws-kms: Encrypt gave no CiphertextBlob".into()))?;
        Ok(WrappedDek {
            kek_version: v,
            ciphertext: blob,
        })
    }

    async fn unwrap_dek(
        &self,
        wrapped: &WrappedDek,
        binding: &DekBinding<'_>,
    ) -> Result<Dek, KeyError> {
        let v = wrapped.kek_version;
        // KMS refuses a key pending deletion or disabled; checked here too,
        // so the answer names the KEK version (and a KMS emulator that still
        // decrypts with such keys is not trusted to refuse).
        self.usable(v).await?;
        let out = self
            .call_raw(
                "Decrypt",
                json!({
                    "KeyId": self.kek_alias(v),
                    "CiphertextBlob": B64.encode(&wrapped.ciphertext),
                    "EncryptionContext": context(binding, v),
                }),
            )
            .await
            .map_err(|e| match e.code.as_str() {
                "InvalidCiphertextException"
                | "IncorrectKeyException"
                | "NotFoundException"
                | "ValidationException"
                | "AccessDeniedException" => KeyError::UnwrapFailed,
                "KMSInvalidStateException" => KeyError::KekDestroyed(v.0),
                _ => e.into(),
            })?;
        let bytes = zeroize::Zeroizing::new(
            out["Plaintext"]
                .as_str()
                .and_then(|p| B64.decode(p).ok())
                .ok_or(KeyError::UnwrapFailed)?,
        );
        Dek::from_slice(&bytes).map_err(|_| KeyError::UnwrapFailed)
    }

    async fn mac(&self, message: &[u8]) -> Result<RecordMac, KeyError> {
        let out = self
            .call(
                "GenerateMac",
                json!({
                    "KeyId": self.mac_alias(),
                    "MacAlgorithm": "HMAC_SHA_256",
                    "Message": mac_message(message),
                }),
            )
            .await?;
        let tag = out["Mac"]
            .as_str()
            .and_then(|m| B64.decode(m).ok())
            .ok_or_else(|| KeyError::Provider("aws-kms: GenerateMac gave no Mac".into()))?;
        Ok(RecordMac {
            key_id: self.mac_alias(),
            tag,
        })
    }

    async fn verify_mac(&self, message: &[u8], mac: &RecordMac) -> Result<(), KeyError> {
        if mac.key_id != self.mac_alias() {
            return Err(KeyError::UnknownMacKey(mac.key_id.clone()));
        }
        let out = self
            .call_raw(
                "VerifyMac",
                json!({
                    "KeyId": self.mac_alias(),
                    "MacAlgorithm": "HMAC_SHA_256",
                    "Message": mac_message(message),
                    "Mac": B64.encode(&mac.tag),
                }),
            )
            .await;
        match out {
            Ok(v) if v["MacValid"].as_bool() == Some(true) => Ok(()),
            Ok(_) => Err(KeyError::MacMismatch),
            Err(e) if e.code == "KMSInvalidMacException" || e.code == "ValidationException" => {
                Err(KeyError::MacMismatch)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// AWS Signature Version 4 for one request (the headers given are signed).
pub(crate) mod sigv4 {
    use ring::hmac;

    pub struct Request<'a> {
        pub method: &'a str,
        pub path: &'a str,
        pub query: &'a str,
        /// Lower-case names.
        pub headers: &'a [(String, String)],
        pub payload: &'a [u8],
    }

    pub struct Credentials<'a> {
        pub access_key_id: &'a str,
        pub secret_access_key: &'a str,
        pub region: &'a str,
        pub service: &'a str,
        /// `YYYYMMDDTHHMMSSZ`.
        pub amz_date: &'a str,
    }

    fn hex_sha256(data: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
    }

    fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
            .as_ref()
            .to_vec()
    }

    /// The `Authorization` header value.
    pub fn authorization(r: &Request<'_>, c: &Credentials<'_>) -> String {
        let mut headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
            r.method,
            r.path,
            r.query,
            hex_sha256(r.payload)
        );
        let date = &c.amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", c.region, c.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            c.amz_date,
            hex_sha256(canonical.as_bytes())
        );
        let k = hmac_sha256(
            format!("AWS4{}", c.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        let k = hmac_sha256(&k, c.region.as_bytes());
        let k = hmac_sha256(&k, c.service.as_bytes());
        let k = hmac_sha256(&k, b"aws4_request");
        let signature = hex::encode(hmac_sha256(&k, to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            c.access_key_id
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn sign(method: &str, query: &str, payload: &[u8]) -> String {
            let headers = vec![
                ("host".to_string(), "example.amazonaws.com".to_string()),
                ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
            ];
            authorization(
                &Request {
                    method,
                    path: "/",
                    query,
                    headers: &headers,
                    payload,
                },
                &Credentials {
                    access_key_id: "AKIDEXAMPLE",
                    secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                    region: "us-east-1",
                    service: "service",
                    amz_date: "20150830T123600Z",
                },
            )
        }

        /// AWS's SigV4 test suite (get-vanilla, get-vanilla-query-order-key-case).
        #[test]
        fn matches_the_aws_test_suite() {
            assert_eq!(
                sign("GET", "", b""),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            );
            assert!(sign("GET", "Param1=value1&Param2=value2", b"").ends_with(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_host_and_path() {
        let h = url_host("http://127.0.0.1:4566");
        assert_eq!((h.host.as_str(), h.path.as_str()), ("127.0.0.1:4566", "/"));
        let h = url_host("https://kms.eu-west-1.amazonaws.com");
        assert_eq!(h.host, "kms.eu-west-1.amazonaws.com");
    }

    #[test]
    fn the_context_binds_every_field() {
        let b = DekBinding {
            namespace: "nlp",
            model: "bert",
            version: "1",
            dek_generation: 2,
        };
        let c = context(&b, KekVersion(3));
        assert_eq!(c["namespace"], "nlp");
        assert_eq!(c["model"], "bert");
        assert_eq!(c["version"], "1");
        assert_eq!(c["dek_generation"], "2");
        assert_eq!(c["kek_version"], "3");
    }

    #[test]
    fn only_an_enabled_key_unwraps() {
        assert!(state_verdict(KekVersion(1), Some("Enabled")).is_ok());
        assert!(matches!(
            state_verdict(KekVersion(2), Some("PendingDeletion")),
            Err(KeyError::KekDestroyed(2))
        ));
        for s in ["Disabled", "PendingImport", "Unavailable", "Creating"] {
            let e = state_verdict(KekVersion(3), Some(s)).unwrap_err();
            assert!(e.to_string().contains(s), "{e}");
        }
        assert!(state_verdict(KekVersion(4), None).is_err());
    }

    #[test]
    fn settings_never_print_the_secret() {
        let s = AwsKmsSettings {
            region: "us-east-1".into(),
            endpoint: "http://x".into(),
            alias_prefix: "mv".into(),
            access_key_id: "AKID".into(),
            secret_access_key: zeroize::Zeroizing::new("very-secret".into()),
            session_token: Some(zeroize::Zeroizing::new("session-secret".into())),
        };
        let d = format!("{s:?}");
        assert!(
            !d.contains("very-secret") && !d.contains("session-secret"),
            "{d}"
        );
    }
}
