//! Who is calling and what they may do: permissions, the roles table (data
//! from config, never code), principals, and Modelvault API tokens.
//!
//! Invariants a reader must keep:
//! - a token secret is held only in [`TokenSecret`] (zeroized on drop,
//!   never printed) and stored only as its SHA-256, compared in constant
//!   time;
//! - a principal's roles, namespaces and environment come from a verified
//!   record, never from the request.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bindings;
mod token;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use bindings::{BindingSet, BindingSubject, RoleBinding};
pub use token::{TOKEN_PREFIX, TokenId, TokenRecord, TokenSecret, generate_token, parse_bearer};

/// Errors from this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The bearer token is not of the `mv_<id>_<secret>` form.
    #[error("malformed API token")]
    MalformedToken,
    /// Unknown id, wrong secret or expired: one answer for all.
    #[error("invalid or expired API token")]
    InvalidToken,
    /// A permission name that does not exist.
    #[error("unknown permission {0:?}")]
    UnknownPermission(String),
    /// A role name that the roles table lacks (with the roles it has).
    #[error("unknown role {role:?} (roles: {known})")]
    UnknownRole {
        /// The name given.
        role: String,
        /// The table's roles, comma-separated.
        known: String,
    },
    /// A duration that does not parse.
    #[error("invalid duration {0:?}: use a number followed by s, m, h or d (e.g. 90s, 30m, 7d)")]
    InvalidDuration(String),
    /// The random source failed.
    #[error("random source failed")]
    Random,
}

/// Everything a role can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Read metadata.
    Read,
    /// Create models, upload and commit versions.
    Write,
    /// Change tags, raise sensitivity.
    EditMetadata,
    /// Download plaintext.
    Download,
    /// Receive a version's DEK sealed to a workload.
    KeyRelease,
    /// Approve a version for an environment.
    Approve,
    /// Deploy a version to an environment.
    Deploy,
    /// Delete (crypto-shred).
    Delete,
    /// See metadata marked sensitive.
    ReadSensitive,
    /// Read the audit trail.
    AuditRead,
    /// Install and remove policy plugins.
    ManagePolicies,
    /// Rotate and retire keys.
    ManageKeys,
    /// Create tokens and role bindings.
    ManageAccess,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 13] = [
        Self::Read,
        Self::Write,
        Self::EditMetadata,
        Self::Download,
        Self::KeyRelease,
        Self::Approve,
        Self::Deploy,
        Self::Delete,
        Self::ReadSensitive,
        Self::AuditRead,
        Self::ManagePolicies,
        Self::ManageKeys,
        Self::ManageAccess,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::EditMetadata => "edit-metadata",
            Self::Download => "download",
            Self::KeyRelease => "key-release",
            Self::Approve => "approve",
            Self::Deploy => "deploy",
            Self::Delete => "delete",
            Self::ReadSensitive => "read-sensitive",
            Self::AuditRead => "audit-read",
            Self::ManagePolicies => "manage-policies",
            Self::ManageKeys => "manage-keys",
            Self::ManageAccess => "manage-access",
        }
    }
}

impl std::str::FromStr for Permission {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| AuthError::UnknownPermission(s.into()))
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Role name → permissions, loaded from the server config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RolesTable(pub BTreeMap<String, BTreeSet<Permission>>);

impl Default for RolesTable {
    /// The default table of `DESIGN.md`.
    fn default() -> Self {
        use Permission::*;
        let table = [
            (
                "data-scientist",
                vec![Read, Write, EditMetadata, Download, ReadSensitive],
            ),
            ("ml-engineer", vec![Read, Download, KeyRelease, Deploy]),
            ("model-manager", vec![Read, EditMetadata, Approve]),
            ("compliance-officer", vec![Read, Approve]),
            ("auditor", vec![Read, AuditRead]),
            (
                "admin",
                vec![
                    Read,
                    Write,
                    Delete,
                    AuditRead,
                    ManagePolicies,
                    ManageKeys,
                    ManageAccess,
                ],
            ),
        ];
        Self(
            table
                .into_iter()
                .map(|(r, p)| (r.to_string(), p.into_iter().collect()))
                .collect(),
        )
    }
}

impl RolesTable {
    /// Union of the permissions of `roles`; fails on an unknown role.
    pub fn permissions(&self, roles: &[String]) -> Result<BTreeSet<Permission>, AuthError> {
        let mut out = BTreeSet::new();
        for r in roles {
            let perms = self.0.get(r).ok_or_else(|| AuthError::UnknownRole {
                role: r.clone(),
                known: self.0.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
            out.extend(perms.iter().copied());
        }
        Ok(out)
    }
}

/// Person or service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A human.
    #[default]
    Person,
    /// A workload.
    Service,
}

impl std::str::FromStr for PrincipalKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "person" => Ok(Self::Person),
            "service" => Ok(Self::Service),
            other => Err(format!(
                "unknown principal kind {other:?}: use person or service"
            )),
        }
    }
}

/// Namespaces a principal may touch. Serialized as a list where `"*"`
/// means all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// Every namespace.
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl NamespaceScope {
    /// From a list where `*` means all.
    pub fn from_list(list: &[String]) -> Self {
        if list.iter().any(|n| n == "*") {
            Self::All
        } else {
            Self::Only(list.iter().cloned().collect())
        }
    }

    /// As a list where `*` means all.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".into()],
            Self::Only(s) => s.iter().cloned().collect(),
        }
    }

    /// Whether `ns` is in scope.
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(s) => s.contains(ns),
        }
    }

    /// Whether every namespace of `other` is in this scope.
    pub fn covers(&self, other: &NamespaceScope) -> bool {
        match (self, other) {
            (Self::All, _) => true,
            (Self::Only(_), Self::All) => false,
            (Self::Only(mine), Self::Only(theirs)) => theirs.is_subset(mine),
        }
    }
}

/// One role a principal holds within some namespaces, and where it came
/// from (the token itself or a role binding in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Role name.
    pub role: String,
    /// Where the role applies.
    #[serde(serialize_with = "scope_as_list")]
    pub namespaces: NamespaceScope,
    /// The role's permissions (from the roles table).
    #[serde(skip)]
    pub permissions: BTreeSet<Permission>,
    /// `token` or `binding:<principal|group>:<name>`.
    pub source: String,
}

fn scope_as_list<S: serde::Serializer>(s: &NamespaceScope, ser: S) -> Result<S::Ok, S::Error> {
    s.to_list().serialize(ser)
}

/// The caller, as the server verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable principal id.
    pub id: String,
    /// Person or service.
    pub kind: PrincipalKind,
    /// Groups from the verified identity (OIDC); empty for API tokens.
    pub groups: Vec<String>,
    /// Every role held, each within its namespaces.
    pub grants: Vec<Grant>,
    /// The one environment the identity is bound to.
    pub environment: String,
    /// Id of the API token used, if any.
    pub token_id: Option<String>,
    /// The OIDC issuer that vouched for the principal, if any.
    pub issuer: Option<String>,
    /// When the credential expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Further verified attributes policies see: `auth` (`oidc` or
    /// `api-token`), `issuer` for OIDC, and the issuer's configured
    /// `attribute_claims`. Never chosen by the client.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Principal {
    /// Whether the principal holds `p` everywhere (global actions: tokens,
    /// policies, keys, the audit trail).
    pub fn can(&self, p: Permission) -> bool {
        self.grants
            .iter()
            .any(|g| g.namespaces == NamespaceScope::All && g.permissions.contains(&p))
    }

    /// Whether the principal holds `p` in namespace `ns`.
    pub fn can_in(&self, p: Permission, ns: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.namespaces.contains(ns) && g.permissions.contains(&p))
    }

    /// Whether any grant reaches `ns` (outside them a caller sees 404).
    pub fn reaches(&self, ns: &str) -> bool {
        self.grants.iter().any(|g| g.namespaces.contains(ns))
    }

    /// The namespaces where the principal holds `p`.
    pub fn scope_of(&self, p: Permission) -> NamespaceScope {
        union_scopes(
            self.grants
                .iter()
                .filter(|g| g.permissions.contains(&p))
                .map(|g| &g.namespaces),
        )
    }

    /// Every namespace any grant reaches.
    pub fn namespaces(&self) -> NamespaceScope {
        union_scopes(self.grants.iter().map(|g| &g.namespaces))
    }

    /// Role names held anywhere, sorted, without repeats.
    pub fn roles(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.grants.iter().map(|g| g.role.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }
}

fn union_scopes<'a>(scopes: impl Iterator<Item = &'a NamespaceScope>) -> NamespaceScope {
    let mut out = BTreeSet::new();
    for s in scopes {
        match s {
            NamespaceScope::All => return NamespaceScope::All,
            NamespaceScope::Only(set) => out.extend(set.iter().cloned()),
        }
    }
    NamespaceScope::Only(out)
}

/// Parses `90s`, `30m`, `12h`, `7d` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, AuthError> {
    let err = || AuthError::InvalidDuration(s.into());
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?);
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    let secs = n.checked_mul(mult).ok_or_else(err)?;
    if secs == 0 {
        return Err(err());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        for bad in ["", "7", "d", "7w", "-1s", "0s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_roles_match_the_design() {
        let t = RolesTable::default();
        let admin = t.permissions(&["admin".into()]).unwrap();
        assert!(admin.contains(&Permission::ManageAccess));
        assert!(
            !admin.contains(&Permission::Download),
            "admins do not download by default"
        );
        let ds = t
            .permissions(&["data-scientist".into(), "auditor".into()])
            .unwrap();
        assert!(ds.contains(&Permission::Download) && ds.contains(&Permission::AuditRead));
        assert_eq!(
            t.permissions(&["root".into()]),
            Err(AuthError::UnknownRole {
                role: "root".into(),
                known:
                    "admin, auditor, compliance-officer, data-scientist, ml-engineer, model-manager"
                        .into()
            })
        );
        assert_eq!(
            "manage-keys".parse::<Permission>().unwrap(),
            Permission::ManageKeys
        );
    }

    #[test]
    fn scopes() {
        let all = NamespaceScope::from_list(&["*".into()]);
        let nlp = NamespaceScope::from_list(&["nlp".into()]);
        assert!(
            all.covers(&nlp) && !nlp.covers(&all) && nlp.contains("nlp") && !nlp.contains("cv")
        );
    }
}
