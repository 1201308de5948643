//! Role bindings: a principal or a group holds a role within namespaces.
//!
//! The whole set is one value ([`BindingSet`]) kept in the store as a
//! series of authenticated snapshots; a change writes the next snapshot
//! create-if-absent, so two servers never lose each other's change.
//!
//! Invariants: a binding names a role that the roles table has (checked
//! when granted; one that disappears from config later grants nothing), and
//! its namespaces are `*` or valid names. A principal's grants are the union
//! of the bindings naming it or one of its verified groups.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Grant, NamespaceScope, RolesTable};

/// Who a binding is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "name")]
pub enum BindingSubject {
    /// One principal id.
    Principal(String),
    /// Everyone whose verified identity carries this group.
    Group(String),
}

impl std::fmt::Display for BindingSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Principal(p) => write!(f, "principal:{p}"),
            Self::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// One binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBinding {
    /// Principal or group.
    pub subject: BindingSubject,
    /// Role name.
    pub role: String,
    /// Namespaces (`*` = all), sorted.
    pub namespaces: Vec<String>,
    /// Who last changed it.
    pub updated_by: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// Every binding (one snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BindingSet {
    /// Bindings, one per (subject, role).
    pub bindings: Vec<RoleBinding>,
}

impl BindingSet {
    /// Adds `namespaces` to the (subject, role) binding, creating it.
    /// Returns whether anything changed.
    pub fn grant(
        &mut self,
        subject: &BindingSubject,
        role: &str,
        namespaces: &[String],
        by: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let wanted: BTreeSet<String> = namespaces.iter().cloned().collect();
        if let Some(b) = self
            .bindings
            .iter_mut()
            .find(|b| &b.subject == subject && b.role == role)
        {
            let mut have: BTreeSet<String> = b.namespaces.iter().cloned().collect();
            have.extend(wanted);
            if have.contains("*") {
                have = ["*".to_string()].into();
            }
            let next: Vec<String> = have.into_iter().collect();
            let changed = next != b.namespaces;
            if changed {
                b.namespaces = next;
                b.updated_by = by.into();
                b.updated_at = now;
            }
            return changed;
        }
        let list = if wanted.contains("*") {
            vec!["*".to_string()]
        } else {
            wanted.into_iter().collect()
        };
        self.bindings.push(RoleBinding {
            subject: subject.clone(),
            role: role.into(),
            namespaces: list,
            updated_by: by.into(),
            updated_at: now,
        });
        self.bindings
            .sort_by(|a, b| (&a.subject, &a.role).cmp(&(&b.subject, &b.role)));
        true
    }

    /// Removes `namespaces` from the (subject, role) binding (all of it
    /// when `namespaces` is empty or holds `*`). Returns whether anything
    /// changed.
    pub fn revoke(
        &mut self,
        subject: &BindingSubject,
        role: &str,
        namespaces: &[String],
        by: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(i) = self
            .bindings
            .iter()
            .position(|b| &b.subject == subject && b.role == role)
        else {
            return false;
        };
        if namespaces.is_empty() || namespaces.iter().any(|n| n == "*") {
            self.bindings.remove(i);
            return true;
        }
        let b = &mut self.bindings[i];
        let before = b.namespaces.len();
        b.namespaces.retain(|n| !namespaces.contains(n));
        if b.namespaces.is_empty() {
            self.bindings.remove(i);
            return true;
        }
        let changed = b.namespaces.len() != before;
        if changed {
            b.updated_by = by.into();
            b.updated_at = now;
        }
        changed
    }

    /// The grants these bindings give `principal` (with `groups`). A binding
    /// whose role the table lacks grants nothing.
    pub fn grants_for(&self, principal: &str, groups: &[String], roles: &RolesTable) -> Vec<Grant> {
        self.bindings
            .iter()
            .filter(|b| match &b.subject {
                BindingSubject::Principal(p) => p == principal,
                BindingSubject::Group(g) => groups.contains(g),
            })
            .filter_map(|b| {
                let permissions = roles.0.get(&b.role)?.clone();
                Some(Grant {
                    role: b.role.clone(),
                    namespaces: NamespaceScope::from_list(&b.namespaces),
                    permissions,
                    source: format!("binding:{}", b.subject),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Permission;

    #[test]
    fn grant_merges_and_revoke_narrows() {
        let now = Utc::now();
        let g = BindingSubject::Group("nlp-writers".into());
        let mut set = BindingSet::default();
        assert!(set.grant(&g, "data-scientist", &["nlp".into()], "admin", now));
        assert!(!set.grant(&g, "data-scientist", &["nlp".into()], "admin", now));
        assert!(set.grant(&g, "data-scientist", &["speech".into()], "admin", now));
        assert_eq!(set.bindings[0].namespaces, vec!["nlp", "speech"]);
        let grants = set.grants_for("alice", &["nlp-writers".into()], &RolesTable::default());
        assert_eq!(grants.len(), 1);
        assert!(grants[0].permissions.contains(&Permission::Write));
        assert!(grants[0].namespaces.contains("nlp") && !grants[0].namespaces.contains("vision"));
        assert!(
            set.grants_for("alice", &[], &RolesTable::default())
                .is_empty()
        );
        assert!(set.revoke(&g, "data-scientist", &["nlp".into()], "admin", now));
        assert_eq!(set.bindings[0].namespaces, vec!["speech"]);
        assert!(set.grant(&g, "data-scientist", &["*".into()], "admin", now));
        assert_eq!(set.bindings[0].namespaces, vec!["*"]);
        assert!(set.revoke(&g, "data-scientist", &[], "admin", now));
        assert!(set.bindings.is_empty());
        assert!(!set.revoke(&g, "data-scientist", &[], "admin", now));
    }

    #[test]
    fn unknown_roles_grant_nothing() {
        let mut set = BindingSet::default();
        let p = BindingSubject::Principal("bob".into());
        set.grant(&p, "retired-role", &["*".into()], "admin", Utc::now());
        assert!(
            set.grants_for("bob", &[], &RolesTable::default())
                .is_empty()
        );
    }
}
