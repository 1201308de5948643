//! Identity against a real OIDC provider (oidc-provider on loopback,
//! started by scripts/test.sh): SSO for people and workloads, group role
//! bindings, JWT attacks, `login`, token lifecycle, TLS.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::common::*;

pub struct Idp {
    pub issuer: String,
    rsa_pem: Vec<u8>,
    ec_pem: Vec<u8>,
}

/// The test IdP from the environment; a missing one fails when
/// `MODELVAULT_REQUIRE_OIDC=1` (scripts/test.sh sets it), else skips.
pub fn idp() -> Option<Idp> {
    let vars = (
        std::env::var("MODELVAULT_TEST_OIDC_ISSUER"),
        std::env::var("MODELVAULT_TEST_OIDC_RSA_KEY"),
        std::env::var("MODELVAULT_TEST_OIDC_EC_KEY"),
    );
    match vars {
        (Ok(issuer), Ok(rsa), Ok(ec)) => Some(Idp {
            issuer,
            rsa_pem: std::fs::read(rsa).expect("rsa key"),
            ec_pem: std::fs::read(ec).expect("ec key"),
        }),
        _ => {
            assert!(
                std::env::var("MODELVAULT_REQUIRE_OIDC").as_deref() != Ok("1"),
                "MODELVAULT_REQUIRE_OIDC=1 but the test IdP is not configured"
            );
            eprintln!("skipping: no test IdP (run scripts/test.sh)");
            None
        }
    }
}

impl Idp {
    /// The `[[oidc.issuers]]` table and seed bindings the tests use.
    pub fn config(&self) -> String {
        format!(
            r#"
[[oidc.issuers]]
issuer = "{issuer}"
audience = "urn:modelvault"
groups_claim = "groups"
attribute_claims = ["department", "cost_center"]
allow_http_issuer = true
cli_client_id = "modelvault-cli"
cli_scope = "openid api"
jwks_min_refresh_secs = 1
[oidc.issuers.kind]
service_clients = ["deployer", "trainer"]
[oidc.issuers.environment.clients]
deployer = "production"
trainer = "dev"

[[access.bindings]]
group = "nlp-writers"
role = "data-scientist"
namespaces = ["nlp"]

[[access.bindings]]
group = "prod-deployers"
role = "ml-engineer"

[[access.bindings]]
group = "trainers"
role = "ml-engineer"

[[access.bindings]]
group = "auditors"
role = "auditor"

[[access.bindings]]
group = "sensitive-readers"
role = "data-scientist"
namespaces = ["nlp"]
"#,
            issuer = self.issuer
        )
    }

    /// A workload token by client credentials.
    pub fn client_token(&self, client: &str, secret: &str) -> String {
        let resp: Value = reqwest::blocking::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", "urn:modelvault"),
                ("scope", "api"),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {resp}"))
            .to_string()
    }

    /// A token signed with the IdP's own RSA key (kid `rsa-1`), claims as
    /// given on top of valid defaults.
    fn forge(&self, edit: impl FnOnce(&mut Header, &mut Value)) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some("rsa-1".into());
        let mut claims = json!({
            "iss": self.issuer, "aud": "urn:modelvault", "sub": "mallory",
            "iat": now, "exp": now + 300, "client_id": "trainer", "groups": ["trainers"],
        });
        edit(&mut header, &mut claims);
        let key = match header.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.ec_pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&self.rsa_pem).unwrap(),
        };
        encode(&header, &claims, &key).unwrap()
    }
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn start(idp: &Idp) -> TestApp {
    let cfg = idp.config();
    TestApp::start_configured(None, move |t| t.push_str(&cfg))
}

fn whoami(app: &TestApp, token: &str) -> Value {
    let r = app.get(Some(token), "/v1/whoami");
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

fn push(app: &TestApp, token: &str, target: &str) -> std::process::Output {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), target.as_bytes()).unwrap();
    app.cli(Some(token), &["push", target, src.path().to_str().unwrap()])
}

#[test]
fn workload_and_attack_tokens() {
    let Some(idp) = idp() else { return };
    let app = start(&idp);
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "create",
            "nlp/bert",
            "--sensitivity",
            "confidential",
        ],
    ));
    assert!(push(&app, &ds, "nlp/bert@1").status.success());

    // A workload from the IdP: service, production, roles from its group.
    let deployer = idp.client_token("deployer", "deployer-secret");
    let w = whoami(&app, &deployer);
    assert_eq!(w["id"], "deployer");
    assert_eq!(w["kind"], "service");
    assert_eq!(w["environment"], "production");
    assert_eq!(w["groups"], json!(["prod-deployers"]));
    assert_eq!(w["roles"], json!(["ml-engineer"]));
    assert_eq!(w["authenticated_by"], "oidc");
    assert!(w["expires_at"].is_string());
    // Verified attributes for policies: the configured claims, as text,
    // beside the built-ins; an API token has only its own.
    assert_eq!(
        w["attributes"],
        json!({"auth": "oidc", "cost_center": "4711", "department": "ml-platform",
               "issuer": idp.issuer}),
        "{w}"
    );
    assert_eq!(
        whoami(&app, &app.admin)["attributes"],
        json!({"auth": "api-token"})
    );

    // It downloads only what the policy chain allows in production: not
    // before two distinct production approvals, then yes.
    let file = "/v1/models/nlp/bert/versions/1/files/w";
    let (s, c, _) = error_code(app.get(Some(&deployer), file));
    assert_eq!((s, c.as_str()), (403, "policy_denied"));
    for m in ["mia", "noah"] {
        let t = app.token_in(m, &["model-manager"], &["nlp"], "production", m);
        ok(app.cli(Some(&t), &["approve", "nlp/bert@1", "--env", "production"]));
    }
    let r = app.get(Some(&deployer), file);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"nlp/bert@1");
    // The trainer workload is bound to dev: confidential stays out of reach.
    let trainer = idp.client_token("trainer", "trainer-secret");
    assert_eq!(whoami(&app, &trainer)["environment"], "dev");
    let (s, c, body) = error_code(app.get(Some(&trainer), file));
    assert_eq!((s, c.as_str()), (403, "policy_denied"), "{body}");

    // A token forged with the real key and valid claims is accepted (so the
    // attacks below fail for their own reason, not by accident).
    let good = idp.forge(|_, _| {});
    assert_eq!(whoami(&app, &good)["id"], "mallory");
    let good_es = idp.forge(|h, _| {
        h.alg = Algorithm::ES256;
        h.kid = Some("ec-1".into());
    });
    assert_eq!(whoami(&app, &good_es)["id"], "mallory");

    // Attacks: each is 401 with the same body, and the reason is recorded.
    let now = chrono::Utc::now().timestamp();
    let public_pem = {
        // RS/HS confusion: HS256 keyed with the issuer's public key.
        let out = Command::new("openssl")
            .args(["pkey", "-pubout"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(&idp.rsa_pem)?;
                c.wait_with_output()
            })
            .unwrap();
        out.stdout
    };
    let confused = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some("rsa-1".into());
        let claims = json!({"iss": idp.issuer, "aud": "urn:modelvault", "sub": "mallory",
            "exp": now + 300});
        encode(&h, &claims, &EncodingKey::from_secret(&public_pem)).unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt", "kid": "rsa-1"})),
        b64(
            &json!({"iss": idp.issuer, "aud": "urn:modelvault", "sub": "mallory", "exp": now + 300})
        )
    );
    let wrong_key = {
        let kp = rcgen::KeyPair::generate().unwrap(); // P-256, not the IdP's
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some("at+jwt".into());
        h.kid = Some("ec-1".into());
        let claims = json!({"iss": idp.issuer, "aud": "urn:modelvault", "sub": "mallory",
            "exp": now + 300});
        encode(
            &h,
            &claims,
            &EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let attacks: Vec<(&str, String, &str)> = vec![
        ("alg none", none, "algorithm_not_allowed"),
        (
            "HS256 with the public key",
            confused,
            "algorithm_not_allowed",
        ),
        ("wrong key", wrong_key, "bad_signature"),
        (
            "expired",
            idp.forge(|_, c| c["exp"] = json!(now - 600)),
            "expired",
        ),
        (
            "not yet valid",
            idp.forge(|_, c| c["nbf"] = json!(now + 600)),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            idp.forge(|_, c| c["iss"] = json!("https://evil.example")),
            "unknown_issuer",
        ),
        (
            "wrong audience",
            idp.forge(|_, c| c["aud"] = json!("urn:other")),
            "wrong_audience",
        ),
        (
            "unknown kid",
            idp.forge(|h, _| h.kid = Some("rsa-9".into())),
            "unknown_kid",
        ),
        (
            "ID token",
            idp.forge(|h, _| h.typ = Some("JWT".into())),
            "wrong_token_type",
        ),
        ("garbage", "eyJ.eyJ.sig".into(), "malformed"),
    ];
    let mut bodies = std::collections::BTreeSet::new();
    for (name, token, reason) in &attacks {
        let (s, c, body) = error_code(app.get(Some(token), "/v1/whoami"));
        assert_eq!((s, c.as_str()), (401, "unauthenticated"), "{name}: {body}");
        bodies.insert(body["error"]["message"].to_string());
        let report: Value = app
            .get(Some(&app.admin), "/v1/admin/auth-failures")
            .json()
            .unwrap();
        let last = report["recent"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["reason"], *reason, "{name}: {last}");
        assert_eq!(last["credential"], "jwt");
        assert_eq!(last["source"], "127.0.0.1");
    }
    // A bad API token gets the same answer as a bad JWT.
    let (_, _, body) = error_code(app.get(
        Some("mv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "/v1/whoami",
    ));
    bodies.insert(body["error"]["message"].to_string());
    assert_eq!(bodies.len(), 1, "401 bodies differ: {bodies:?}");
    let report: Value = app
        .get(Some(&app.admin), "/v1/admin/auth-failures")
        .json()
        .unwrap();
    let counted: u64 = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["source"] == "127.0.0.1")
        .map(|w| w["count"].as_u64().unwrap())
        .sum();
    assert!(counted > attacks.len() as u64, "{report}");
    // Only auditors read it.
    assert_eq!(
        error_code(app.get(Some(&ds), "/v1/admin/auth-failures")).0,
        403
    );
}

/// Runs `modelvault login ARGS` with its own config dir, hands the URL it
/// prints to `browser`, and asserts the login succeeds.
fn run_login(
    app: &TestApp,
    config_dir: &std::path::Path,
    args: &[&str],
    browser: impl FnOnce(&str),
) {
    let mut child = Command::new(BIN)
        .arg("login")
        .args(args)
        .env("MODELVAULT_URL", &app.url)
        .env("MODELVAULT_CONFIG_DIR", config_dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let prompt = lines.next().unwrap().unwrap();
    let url = prompt
        .split("open ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no URL in {prompt:?}"))
        .to_string();
    browser(&url);
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "login failed: {rest:?}");
}

/// Plays the browser: confirms the device code, signs in as `login`.
fn browser_confirms(url: &str, login: &str) {
    let http = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let field = |html: &str, name: &str| -> String {
        let pat = format!("name=\"{name}\" value=\"");
        let start = html
            .find(&pat)
            .unwrap_or_else(|| panic!("no {name} in {html}"))
            + pat.len();
        html[start..].split('"').next().unwrap().to_string()
    };
    let origin = url.split("/device").next().unwrap().to_string();
    let page = http.get(url).send().unwrap().text().unwrap();
    let (xsrf, code) = (field(&page, "xsrf"), field(&page, "user_code"));
    let page = http
        .post(format!("{origin}/device"))
        .form(&[("xsrf", xsrf.as_str()), ("user_code", code.as_str())])
        .send()
        .unwrap()
        .text()
        .unwrap();
    let xsrf = field(&page, "xsrf");
    let resp = http
        .post(format!("{origin}/device"))
        .form(&[
            ("xsrf", xsrf.as_str()),
            ("user_code", code.as_str()),
            ("confirm", "yes"),
        ])
        .send()
        .unwrap();
    let login_url = resp.url().to_string();
    assert!(login_url.contains("/interaction/"), "{login_url}");
    let done = http
        .post(format!("{login_url}/login"))
        .form(&[("login", login), ("password", &format!("pw-{login}"))])
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(done.contains("signed in"), "{done}");
}

#[test]
fn person_login_groups_and_bindings() {
    let Some(idp) = idp() else { return };
    let app = start(&idp);
    let config = tempfile::tempdir().unwrap();
    let config_dir = config.path().join("modelvault");
    let as_alice = |token: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("MODELVAULT_URL", &app.url)
            .env("MODELVAULT_CONFIG_DIR", &config_dir)
            .env_remove("MODELVAULT_TOKEN");
        if let Some(t) = token {
            cmd.env("MODELVAULT_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    fails(as_alice(None, &["whoami"]), "missing bearer token");

    // `modelvault login`: device flow; the test plays the browser.
    run_login(&app, &config_dir, &[], |url| browser_confirms(url, "alice"));
    let cred = config_dir.join("credentials.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The stored login is used; alice is a person in nlp-writers.
    let w: Value =
        serde_json::from_str(&ok(as_alice(None, &["whoami", "--output", "json"]))).unwrap();
    assert_eq!(w["id"], "alice");
    assert_eq!(w["kind"], "person");
    assert_eq!(w["groups"], json!(["nlp-writers"]));
    assert_eq!(w["environment"], "dev");
    assert_eq!(w["grants"][0]["namespaces"], json!(["nlp"]));
    // MODELVAULT_TOKEN wins over the stored login.
    let w: Value = serde_json::from_str(&ok(as_alice(
        Some(&app.admin),
        &["whoami", "--output", "json"],
    )))
    .unwrap();
    assert_eq!(w["id"], "admin");

    // nlp-writers may write to nlp/* and not to vision/* (404: out of reach).
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("w"), b"x").unwrap();
    let p = src.path().to_str().unwrap();
    ok(as_alice(None, &["model", "create", "nlp/summarizer"]));
    ok(as_alice(None, &["push", "nlp/summarizer@1", p]));
    ok(app.cli(Some(&app.admin), &["model", "create", "vision/detector"]));
    fails(
        as_alice(None, &["push", "vision/detector@1", p]),
        "not found",
    );

    // A new binding applies at once; revoking it takes it away again.
    ok(app.cli(
        Some(&app.admin),
        &[
            "access",
            "grant",
            "--group",
            "nlp-writers",
            "--role",
            "data-scientist",
            "--namespace",
            "vision",
        ],
    ));
    ok(as_alice(None, &["push", "vision/detector@1", p]));
    let list: Value = serde_json::from_str(&ok(
        app.cli(Some(&app.admin), &["access", "list", "--output", "json"])
    ))
    .unwrap();
    let b = list["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"] == "nlp-writers")
        .unwrap();
    assert_eq!(b["namespaces"], json!(["nlp", "vision"]));
    ok(app.cli(
        Some(&app.admin),
        &[
            "access",
            "revoke",
            "--group",
            "nlp-writers",
            "--role",
            "data-scientist",
            "--namespace",
            "vision",
        ],
    ));
    fails(
        as_alice(None, &["push", "vision/detector@2", p]),
        "not found",
    );
    // Bindings need manage-access, and bad input is a clear error.
    fails(
        as_alice(
            None,
            &["access", "grant", "--principal", "alice", "--role", "admin"],
        ),
        "forbidden",
    );
    fails(
        app.cli(
            Some(&app.admin),
            &["access", "grant", "--principal", "alice", "--role", "root"],
        ),
        "unknown role",
    );
    // A principal binding reaches API tokens of that principal too.
    let dana = app.token("dana", &["auditor"], &["nlp"]);
    fails(
        app.cli(Some(&dana), &["model", "create", "nlp/x"]),
        "forbidden",
    );
    ok(app.cli(
        Some(&app.admin),
        &[
            "access",
            "grant",
            "--principal",
            "dana",
            "--role",
            "data-scientist",
            "--namespace",
            "nlp",
        ],
    ));
    ok(app.cli(Some(&dana), &["model", "create", "nlp/x"]));

    ok(as_alice(None, &["logout"]));
    assert!(!cred.exists());
}

/// Runs `modelvault login --browser` for `login` with its own config dir,
/// playing the browser (authorization code + PKCE, loopback redirect).
fn browser_login(app: &TestApp, config_dir: &std::path::Path, login: &str) {
    run_login(app, config_dir, &["--browser"], |url| {
        pkce_browser(url, login)
    });
}

/// Plays the browser of the authorization code flow: signs in as `login`
/// and follows the redirect to the CLI's loopback listener.
fn pkce_browser(url: &str, login: &str) {
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let http = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let page = http.get(url).send().unwrap();
    let login_url = page.url().to_string();
    assert!(login_url.contains("/interaction/"), "{login_url}");
    // Signing in ends with the redirect to the CLI's loopback listener.
    let done = http
        .post(format!("{login_url}/login"))
        .form(&[("login", login), ("password", &format!("pw-{login}"))])
        .send()
        .unwrap();
    assert!(
        done.url().as_str().starts_with("http://127.0.0.1:"),
        "{}",
        done.url()
    );
    assert!(done.text().unwrap().contains("Signed in"));
}

#[test]
fn people_by_pkce_see_sensitive_metadata_by_their_groups() {
    let Some(idp) = idp() else { return };
    let app = start(&idp);
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    ok(app.cli(
        Some(&ds),
        &[
            "model",
            "create",
            "nlp/tagger",
            "--metadata",
            "lineage=from-corpus-42",
            "--sensitive-field",
            "lineage",
        ],
    ));
    let dirs = tempfile::tempdir().unwrap();
    let run_as = |who: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("MODELVAULT_URL", &app.url)
            .env("MODELVAULT_CONFIG_DIR", dirs.path().join(who))
            .env_remove("MODELVAULT_TOKEN")
            .output()
            .unwrap()
    };
    for who in ["carol", "bob"] {
        browser_login(&app, &dirs.path().join(who), who);
    }
    let carol: Value =
        serde_json::from_str(&ok(run_as("carol", &["whoami", "--output", "json"]))).unwrap();
    assert_eq!(carol["kind"], "person");
    assert_eq!(carol["groups"], json!(["sensitive-readers", "nlp-readers"]));
    let show = |who: &str| -> Value {
        serde_json::from_str(&ok(run_as(
            who,
            &["model", "show", "nlp/tagger", "--output", "json"],
        )))
        .unwrap()
    };
    // carol holds read-sensitive in nlp through a group binding; bob, an
    // auditor through his, sees the field redacted.
    assert_eq!(show("carol")["metadata"]["lineage"], "from-corpus-42");
    assert_eq!(show("bob")["metadata"]["lineage"], "[redacted]");
    // Neither may manage access.
    fails(run_as("bob", &["access", "list"]), "forbidden");
}

#[test]
fn token_lifecycle_across_servers() {
    let app = TestApp::start();
    let peer = app.start_peer();
    let t = app.token("ci", &["auditor"], &["nlp"]);
    assert_eq!(app.get(Some(&t), "/v1/whoami").status(), 200);
    let on_peer = |token: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{}/v1/whoami", peer.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(on_peer(&t), 200);
    // Tokens expire by default (90d), never show secrets, and are listed.
    let list: Value = serde_json::from_str(&ok(
        app.cli(Some(&app.admin), &["token", "list", "--output", "json"])
    ))
    .unwrap();
    let ci = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "ci")
        .unwrap()
        .clone();
    assert!(ci["expires_at"].is_string(), "{ci}");
    assert!(!list.to_string().contains(token_secret(&t)));
    let admin = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "admin")
        .unwrap();
    assert!(
        admin["expires_at"].is_string(),
        "the bootstrap token expires too"
    );
    // The maximum TTL holds.
    fails(
        app.cli(
            Some(&app.admin),
            &["token", "create", "--role", "auditor", "--ttl", "400d"],
        ),
        "longer than the maximum",
    );
    // Revoked: 401 here and on the peer at once, even when a bucket writer
    // puts the (authentic) token record back.
    let id = t.split('_').nth(1).unwrap();
    let record = app.store_dir().join(format!("tokens/{id}.json"));
    let saved = std::fs::read(&record).unwrap();
    ok(app.cli(Some(&app.admin), &["token", "revoke", "ci"]));
    assert_eq!(app.get(Some(&t), "/v1/whoami").status(), 401);
    assert_eq!(on_peer(&t), 401);
    fails(
        app.cli(Some(&app.admin), &["token", "revoke", "ci"]),
        "not found",
    );
    std::fs::write(&record, saved).unwrap();
    assert_eq!(app.get(Some(&t), "/v1/whoami").status(), 401);
    let w: Value = serde_json::from_str(&ok(
        app.cli(Some(&app.admin), &["whoami", "--output", "json"])
    ))
    .unwrap();
    assert_eq!(w["token_name"], "admin");
    assert_eq!(w["authenticated_by"], "api-token");
}

#[test]
fn tls_round_trip_with_a_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "modelvault test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_path = dir.path().join("ca.pem");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let app = TestApp::start_full(
        None,
        |_| {},
        &[
            "--tls-cert".into(),
            cert_path.display().to_string(),
            "--tls-key".into(),
            key_path.display().to_string(),
        ],
    );
    assert!(app.url.starts_with("https://"), "{}", app.url);
    let run = |token: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("MODELVAULT_URL", &app.url)
            .env("MODELVAULT_TOKEN", token)
            .env("MODELVAULT_CA_CERT", &ca_path)
            .env(
                "MODELVAULT_CONFIG_DIR",
                "/nonexistent/modelvault-test-config",
            )
            .output()
            .unwrap()
    };
    let ds = ok(run(
        &app.admin,
        &[
            "token",
            "create",
            "--name",
            "ds",
            "--role",
            "data-scientist",
        ],
    ))
    .trim()
    .to_string();
    let with_ca = |args: &[&str]| run(&ds, args);
    ok(with_ca(&["model", "create", "nlp/tls"]));
    let src = tempfile::tempdir().unwrap();
    let payload = modelvault_test_utils::pseudo_random(3 << 20, 7);
    std::fs::write(src.path().join("w.bin"), &payload).unwrap();
    ok(with_ca(&[
        "push",
        "nlp/tls@1",
        src.path().to_str().unwrap(),
    ]));
    let out = tempfile::tempdir().unwrap();
    ok(with_ca(&[
        "pull",
        "nlp/tls@1",
        "-o",
        out.path().to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(out.path().join("w.bin")).unwrap(), payload);
    // Without the CA the client refuses the server; plain HTTP gets nothing.
    let no_ca = Command::new(BIN)
        .args(["model", "list"])
        .env("MODELVAULT_URL", &app.url)
        .env("MODELVAULT_TOKEN", &ds)
        .env_remove("MODELVAULT_CA_CERT")
        .env(
            "MODELVAULT_CONFIG_DIR",
            "/nonexistent/modelvault-test-config",
        )
        .output()
        .unwrap();
    fails(no_ca, "cannot reach");
    let plain = app.url.replace("https://", "http://");
    assert!(
        reqwest::blocking::get(format!("{plain}/healthz"))
            .map(|r| !r.status().is_success())
            .unwrap_or(true),
        "plain HTTP must not be served beside TLS"
    );
}

#[test]
fn plain_http_only_on_loopback() {
    let app = TestApp::start();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            app.data_dir().to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    fails(out, "refusing plain HTTP");
}
