//! Tokens, role bindings, identity, login configuration and the
//! failed-authentication report.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /v1/tokens`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Unique token name (default `token-<id>`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub name: Option<String>,
    /// Principal id (default: the name).
    #[serde(default)]
    pub principal: Option<String>,
    /// `person` (default) or `service`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^(person|service)$"))]
    pub kind: Option<String>,
    /// Roles (at least one).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub roles: Vec<String>,
    /// Namespaces (`*` = all; default: the creator's).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Environment (default from config).
    #[serde(default)]
    pub environment: Option<String>,
    /// Lifetime in seconds (default `tokens.default_ttl`, at most
    /// `tokens.max_ttl`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub ttl_seconds: Option<u64>,
    /// Groups the token's principal is in, as policies see them (like an
    /// identity provider's groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// What the token may use models for (`training`, ...), as policies
    /// see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub purpose: Option<String>,
}

/// `POST /v1/tokens` response. `token` is shown once and never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenResponse {
    /// The secret token text `mv_<id>_<secret>`.
    pub token: String,
    /// Token id.
    pub id: String,
    /// Token name.
    pub name: String,
    /// Principal.
    pub principal: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Environment.
    pub environment: String,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Who a role binding names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindingSubject {
    /// A principal id (a token's principal or an OIDC subject mapping).
    Principal(String),
    /// A group name (from the identity provider's group claim).
    Group(String),
}

impl BindingSubject {
    /// The principal id or group name.
    pub fn name(&self) -> &str {
        match self {
            Self::Principal(s) | Self::Group(s) => s,
        }
    }

    /// `principal` or `group`.
    pub fn kind(&self) -> SubjectType {
        match self {
            Self::Principal(_) => SubjectType::Principal,
            Self::Group(_) => SubjectType::Group,
        }
    }
}

wire_enum! {
    /// What a binding's subject names.
    SubjectType {
        /// A principal id.
        Principal = "principal",
        /// A group name.
        Group = "group",
    }
}

/// `POST /v1/access/grant` and `POST /v1/access/revoke`. On the wire the
/// subject is exactly one of the fields `principal` and `group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "BindingRequestBody", into = "BindingRequestBody")]
pub struct BindingRequest {
    /// Who the binding names.
    pub subject: BindingSubject,
    /// Role name.
    pub role: String,
    /// Namespaces (`*` or empty = all; for revoke, empty = the whole binding).
    pub namespaces: Vec<String>,
}

/// [`BindingRequest`] as its JSON body spells it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = BindingRequest))]
#[serde(deny_unknown_fields)]
struct BindingRequestBody {
    /// A principal id (exactly one of `principal`, `group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    principal: Option<String>,
    /// A group name (exactly one of `principal`, `group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    group: Option<String>,
    /// Role name.
    role: String,
    /// Namespaces (`*` or empty = all; for revoke, empty = the whole binding).
    #[serde(default)]
    namespaces: Vec<String>,
}

impl TryFrom<BindingRequestBody> for BindingRequest {
    type Error = &'static str;
    fn try_from(b: BindingRequestBody) -> Result<Self, Self::Error> {
        let subject = match (b.principal, b.group) {
            (Some(p), None) => BindingSubject::Principal(p),
            (None, Some(g)) => BindingSubject::Group(g),
            _ => return Err("give exactly one of principal and group"),
        };
        Ok(Self {
            subject,
            role: b.role,
            namespaces: b.namespaces,
        })
    }
}

impl From<BindingRequest> for BindingRequestBody {
    fn from(r: BindingRequest) -> Self {
        let (principal, group) = match r.subject {
            BindingSubject::Principal(p) => (Some(p), None),
            BindingSubject::Group(g) => (None, Some(g)),
        };
        Self {
            principal,
            group,
            role: r.role,
            namespaces: r.namespaces,
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for BindingRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <BindingRequestBody as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for BindingRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        "BindingRequest".into()
    }
}

/// One binding as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingView {
    /// `principal` or `group`.
    pub subject_type: SubjectType,
    /// The principal id or group name.
    pub subject: String,
    /// Role name.
    pub role: String,
    /// Namespaces (`*` = all).
    pub namespaces: Vec<String>,
    /// Who last changed it.
    pub updated_by: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/access/bindings`, and the answer to grant and revoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingList {
    /// Whether the request changed anything (grant and revoke only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Every binding.
    pub bindings: Vec<BindingView>,
}

/// One role a principal holds, where, and from what.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantView {
    /// Role name.
    pub role: String,
    /// Namespaces (`*` = all).
    pub namespaces: Vec<String>,
    /// `token` or `binding:<principal|group>:<name>`.
    pub source: String,
    /// The role's permissions.
    pub permissions: Vec<String>,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// Principal id.
    pub id: String,
    /// `person` or `service`.
    pub kind: String,
    /// Verified groups.
    pub groups: Vec<String>,
    /// Role names held anywhere.
    pub roles: Vec<String>,
    /// Each role with its namespaces and source.
    pub grants: Vec<GrantView>,
    /// The environment the identity is bound to.
    pub environment: String,
    /// `api-token` or `oidc`.
    pub authenticated_by: String,
    /// API token name, if one was used.
    pub token_name: Option<String>,
    /// OIDC issuer, if one vouched.
    pub issuer: Option<String>,
    /// When the credential expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Verified attributes policies see (`principal.attributes`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One API token as `GET /v1/tokens` shows it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Principal it acts as.
    pub principal: String,
    /// `person` or `service`.
    pub kind: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Namespaces (`*` = all).
    pub namespaces: Vec<String>,
    /// Environment.
    pub environment: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it has expired.
    pub expired: bool,
    /// Groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    /// Live tokens (revoked ones are gone).
    pub tokens: Vec<TokenView>,
}

/// One issuer `modelvault login` may use (from `GET /v1/auth/config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginIssuer {
    /// Issuer URL.
    pub issuer: String,
    /// The audience tokens must carry.
    pub audience: String,
    /// The public client id for the CLI.
    pub client_id: String,
    /// Scopes to ask for.
    pub scope: String,
}

/// `GET /v1/auth/config` (no token needed): how to log in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthConfig {
    /// Issuers that offer CLI login.
    pub issuers: Vec<LoginIssuer>,
}

/// One failed authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthFailure {
    /// When.
    pub time: DateTime<Utc>,
    /// Source address (`unknown` when the transport gives none).
    pub source: String,
    /// What kind of credential was presented: `api-token`, `jwt`, `none`, or
    /// `unknown` (neither form).
    pub credential: String,
    /// Stable reason code (e.g. `expired`, `bad_signature`).
    pub reason: String,
    /// Whether this was the first failure from `source` in its window.
    pub first_in_window: bool,
}

/// A window's count for one source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureCount {
    /// Source address.
    pub source: String,
    /// Window start.
    pub window_start: DateTime<Utc>,
    /// Failures in the window.
    pub count: u64,
}

/// What `GET /v1/admin/auth-failures` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureReport {
    /// Window length in seconds.
    pub window_secs: u64,
    /// Failures since start.
    pub total: u64,
    /// Counts per source and window.
    pub windows: Vec<FailureCount>,
    /// Most recent failures, newest last.
    pub recent: Vec<AuthFailure>,
}
