//! Permissions with wildcards, and the roles that stand for sets of them.
//!
//! A permission is a string of `:`-separated segments, such as `notes:read`. A granted
//! permission matches a required one when:
//! - they are equal (case-sensitive: `Notes:read` does not grant `notes:read`);
//! - the granted one is `*`, which grants everything;
//! - the granted one ends in the segment `*`, say `notes:*`, and the required one starts with
//!   `notes:` and has at least one more character. So `notes:*` grants `notes:read` and every
//!   level below (`notes:share:public`), but neither `notes` itself nor `notesx:read`.
//!
//! A `*` anywhere else (`no*`, `notes:*:read`, `*:read`) is an ordinary character and only
//! matches itself. The required permission is always taken literally.
//!
//! This is the one implementation of the rule: sessiond checks admin key scopes with it, and
//! `sessiond-verifier` re-exports it for resource servers.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Whether `granted` grants `required` (see the module documentation for the rules).
pub fn permission_matches(granted: &str, required: &str) -> bool {
    if granted == required || granted == "*" {
        return true;
    }
    match granted.strip_suffix('*') {
        // `prefix` ends with `:` here, so `notes:*` cannot match `notesx:read` or `notes`.
        Some(prefix) if prefix.ends_with(':') => {
            required.len() > prefix.len() && required.starts_with(prefix)
        }
        _ => false,
    }
}

/// Whether any of `granted` grants `required`.
pub fn any_grants<'a>(granted: impl IntoIterator<Item = &'a str>, required: &str) -> bool {
    granted
        .into_iter()
        .any(|granted| permission_matches(granted, required))
}

/// Whether the `permissions` claim of `claims` (an access token's claims, as
/// [`crate::token::decode_claims`] gives them, or a session's) grants `required`, wildcards
/// included. A missing claim, and entries that are not strings, grant nothing.
pub fn has_permission(claims: &Map<String, Value>, required: &str) -> bool {
    claims
        .get("permissions")
        .and_then(Value::as_array)
        .is_some_and(|permissions| {
            any_grants(permissions.iter().filter_map(Value::as_str), required)
        })
}

/// Why a role mapping cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleMapError {
    /// A role or permission name is empty, or has spaces or control characters.
    #[error("{0:?} is not a valid role or permission name (no spaces, not empty)")]
    BadName(String),
}

/// Which permissions each role stands for (`SESSIOND_ROLES`).
///
/// A session's access tokens carry the permissions it was created with plus those of each of
/// its roles, expanded when the token is signed: a change to the mapping reaches a session's
/// tokens at its next refresh, and never a token already issued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePermissions {
    roles: BTreeMap<String, Vec<String>>,
}

fn check_name(name: &str) -> Result<(), RoleMapError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RoleMapError::BadName(name.to_owned()));
    }
    Ok(())
}

impl RolePermissions {
    /// A mapping from role names to the permissions they grant.
    ///
    /// # Errors
    /// [`RoleMapError::BadName`] for an empty name or one with spaces or control characters.
    pub fn new(roles: BTreeMap<String, Vec<String>>) -> Result<Self, RoleMapError> {
        for (role, permissions) in &roles {
            check_name(role)?;
            for permission in permissions {
                check_name(permission)?;
            }
        }
        Ok(Self { roles })
    }

    /// Whether no role is mapped.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The permissions `role` stands for; none for a role that is not mapped.
    pub fn permissions_of(&self, role: &str) -> &[String] {
        self.roles.get(role).map_or(&[], Vec::as_slice)
    }

    /// `claims` with the permissions of its `roles` added to its `permissions` (after those
    /// already there, each permission once), or `None` when that adds nothing, so the caller
    /// can keep using `claims` as they are.
    pub fn expand(&self, claims: &Map<String, Value>) -> Option<Map<String, Value>> {
        if self.roles.is_empty() {
            return None;
        }
        let roles = claims.get("roles").and_then(Value::as_array)?;
        let mut permissions: Vec<Value> = claims
            .get("permissions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let before = permissions.len();
        for role in roles.iter().filter_map(Value::as_str) {
            for permission in self.permissions_of(role) {
                if !permissions.iter().any(|known| known == permission.as_str()) {
                    permissions.push(Value::from(permission.as_str()));
                }
            }
        }
        if permissions.len() == before {
            return None;
        }
        let mut expanded = claims.clone();
        expanded.insert("permissions".to_owned(), Value::Array(permissions));
        Some(expanded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_exact_permission_matches_only_itself() {
        assert!(permission_matches("notes:read", "notes:read"));
        assert!(!permission_matches("notes:read", "notes:write"));
        assert!(!permission_matches("notes:read", "notes:read:all"));
        assert!(!permission_matches("notes:read", "notes"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        assert!(!permission_matches("Notes:read", "notes:read"));
        assert!(!permission_matches("notes:*", "NOTES:read"));
    }

    #[test]
    fn a_star_alone_grants_everything() {
        assert!(permission_matches("*", "notes:read"));
        assert!(permission_matches("*", "admin"));
    }

    #[test]
    fn a_trailing_wildcard_grants_every_level_below_its_prefix() {
        assert!(permission_matches("notes:*", "notes:read"));
        assert!(permission_matches("notes:*", "notes:share:public"));
        assert!(permission_matches("notes:share:*", "notes:share:public"));
        assert!(!permission_matches("notes:share:*", "notes:read"));
    }

    #[test]
    fn a_permission_just_outside_a_wildcard_is_not_granted() {
        assert!(!permission_matches("notes:*", "notesx:read"));
        assert!(!permission_matches("notes:*", "notes"));
        assert!(!permission_matches("notes:*", "notes:"));
        assert!(!permission_matches("notes:*", "note:read"));
    }

    #[test]
    fn a_star_that_is_not_a_whole_last_segment_is_literal() {
        assert!(!permission_matches("no*", "notes:read"));
        assert!(!permission_matches("*:read", "notes:read"));
        assert!(!permission_matches("notes:*:read", "notes:x:read"));
        assert!(permission_matches("no*", "no*"));
    }

    #[test]
    fn a_required_wildcard_is_taken_literally() {
        assert!(!permission_matches("notes:read", "notes:*"));
        assert!(permission_matches("notes:*", "notes:*"));
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn claims_grant_through_their_permissions_claim_only() {
        let token = claims(json!({"permissions": ["notes:*", 7], "roles": ["admin"]}));
        assert!(has_permission(&token, "notes:read"));
        assert!(!has_permission(&token, "note:read"));
        assert!(!has_permission(&token, "notes"));
        assert!(!has_permission(&token, "notesx:read"));
        assert!(
            !has_permission(&token, "admin"),
            "a role is not a permission"
        );
        assert!(!has_permission(&Map::new(), "notes:read"));
        assert!(has_permission(&claims(json!({"permissions": ["*"]})), "x"));
    }

    fn mapping() -> RolePermissions {
        RolePermissions::new(BTreeMap::from([
            (
                "editor".to_owned(),
                vec!["notes:read".to_owned(), "notes:write".to_owned()],
            ),
            ("viewer".to_owned(), vec!["notes:read".to_owned()]),
        ]))
        .expect("valid names")
    }

    #[test]
    fn roles_expand_into_permissions_after_the_given_ones_each_once() {
        let given = claims(
            json!({"roles": ["viewer", "editor", "ghost"], "permissions": ["billing:read", "notes:read"], "x": 1}),
        );
        let expanded = mapping().expand(&given).expect("something added");
        assert_eq!(
            expanded["permissions"],
            json!(["billing:read", "notes:read", "notes:write"])
        );
        assert_eq!(expanded["roles"], given["roles"]);
        assert_eq!(expanded["x"], 1);
    }

    #[test]
    fn nothing_to_add_leaves_the_claims_as_they_are() {
        assert_eq!(mapping().expand(&claims(json!({"roles": ["ghost"]}))), None);
        assert_eq!(mapping().expand(&Map::new()), None);
        assert_eq!(
            mapping().expand(&claims(
                json!({"roles": ["viewer"], "permissions": ["notes:read"]})
            )),
            None
        );
        assert_eq!(
            RolePermissions::default().expand(&claims(json!({"roles": ["editor"]}))),
            None
        );
        let only_roles = mapping()
            .expand(&claims(json!({"roles": ["viewer"]})))
            .expect("added");
        assert_eq!(only_roles["permissions"], json!(["notes:read"]));
    }

    #[test]
    fn names_with_spaces_or_empty_are_refused() {
        for bad in ["", "notes read", "a\tb"] {
            let roles = BTreeMap::from([("r".to_owned(), vec![bad.to_owned()])]);
            assert_eq!(
                RolePermissions::new(roles),
                Err(RoleMapError::BadName(bad.to_owned()))
            );
        }
    }
}
