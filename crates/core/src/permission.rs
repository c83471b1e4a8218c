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
//!
//! Permissions are also OAuth scopes (RFC 6749 §3.3): every permission is a scope token, an
//! access token's `scope` claim lists its permissions (RFC 9068 §2.2.3), and a client may ask
//! the token endpoint for a narrower set ([`Scope`], [`narrow`]).

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

/// Whether `text` is a scope token of RFC 6749 §3.3: one or more printable ASCII characters
/// other than space, `"` and `\`. Every permission must be one, so that the space-separated
/// `scope` claim lists permissions without ambiguity.
pub fn is_scope_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|byte| {
            byte == 0x21 || (0x23..=0x5b).contains(&byte) || (0x5d..=0x7e).contains(&byte)
        })
}

/// The `scope` claim (RFC 9068 §2.2.3) of an access token whose claims are `claims`: its
/// permissions that are scope tokens, separated by single spaces; `None` when there are none.
/// Only permissions granted before scope tokens were enforced can be left out.
pub fn scope_claim(claims: &Map<String, Value>) -> Option<String> {
    let permissions = claims.get("permissions").and_then(Value::as_array)?;
    let mut scope = String::new();
    for permission in permissions
        .iter()
        .filter_map(Value::as_str)
        .filter(|permission| is_scope_token(permission))
    {
        if !scope.is_empty() {
            scope.push(' ');
        }
        scope.push_str(permission);
    }
    (!scope.is_empty()).then_some(scope)
}

/// A `scope` request parameter (RFC 6749 §3.3): one or more scope tokens separated by spaces,
/// each kept once, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Vec<String>);

/// Why a `scope` parameter cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Empty, or with a character no scope token may hold.
    #[error("scope must be scope tokens (printable ASCII without \" or \\) separated by spaces")]
    Malformed,
}

impl Scope {
    /// Parses a `scope` parameter. Runs of spaces separate tokens like one space does.
    ///
    /// # Errors
    /// [`ScopeError::Malformed`] when it holds no token, or a token with a character RFC 6749
    /// §3.3 does not allow.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let mut tokens: Vec<String> = Vec::new();
        for token in text.split(' ').filter(|token| !token.is_empty()) {
            if !is_scope_token(token) {
                return Err(ScopeError::Malformed);
            }
            if !tokens.iter().any(|known| known == token) {
                tokens.push(token.to_owned());
            }
        }
        if tokens.is_empty() {
            return Err(ScopeError::Malformed);
        }
        Ok(Self(tokens))
    }

    /// The tokens, each once, in the order given.
    pub fn tokens(&self) -> &[String] {
        &self.0
    }
}

/// `claims` (a session's, its roles' permissions already added) with `permissions` replaced
/// by exactly the `requested` ones, as RFC 6749 §6 narrows a refreshed access token. A
/// requested permission is within the session's when one of the session's grants it
/// ([`permission_matches`]: `notes:*` covers a request for `notes:read`).
///
/// # Errors
/// The first requested token that none of the session's permissions grants.
pub fn narrow(
    claims: &Map<String, Value>,
    requested: &Scope,
) -> Result<Map<String, Value>, String> {
    let granted: Vec<&str> = claims
        .get("permissions")
        .and_then(Value::as_array)
        .map(|permissions| permissions.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(beyond) = requested
        .tokens()
        .iter()
        .find(|token| !any_grants(granted.iter().copied(), token))
    {
        return Err(beyond.clone());
    }
    let mut narrowed = claims.clone();
    narrowed.insert(
        "permissions".to_owned(),
        Value::Array(
            requested
                .tokens()
                .iter()
                .map(|token| Value::from(token.as_str()))
                .collect(),
        ),
    );
    Ok(narrowed)
}

/// Why a role mapping cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleMapError {
    /// A role or permission name is empty, or has spaces or control characters.
    #[error("{0:?} is not a valid role or permission name (no spaces, not empty)")]
    BadName(String),
    /// A permission is not a scope token ([`is_scope_token`]).
    #[error("{0:?} is not a valid permission: printable ASCII without spaces, \" or \\")]
    BadPermission(String),
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
                if !is_scope_token(permission) {
                    return Err(RoleMapError::BadPermission(permission.clone()));
                }
            }
        }
        Ok(Self { roles })
    }

    /// Whether no role is mapped.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// Every permission some role stands for, each once, sorted.
    pub fn all_permissions(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.roles.values().flatten().map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        all
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

    #[test]
    fn permissions_must_be_scope_tokens() {
        for bad in ["caf\u{e9}:read", "say:\"hi\"", "back\\slash"] {
            let roles = BTreeMap::from([("r".to_owned(), vec![bad.to_owned()])]);
            assert_eq!(
                RolePermissions::new(roles),
                Err(RoleMapError::BadPermission(bad.to_owned()))
            );
        }
        assert!(is_scope_token("notes:*"));
        assert!(is_scope_token("a!#[]~"));
        assert!(!is_scope_token(""));
    }

    #[test]
    fn the_scope_claim_lists_the_permissions_separated_by_spaces() {
        assert_eq!(
            scope_claim(&claims(json!({"permissions": ["notes:read", "notes:*"]}))),
            Some("notes:read notes:*".to_owned())
        );
        assert_eq!(scope_claim(&claims(json!({"permissions": []}))), None);
        assert_eq!(scope_claim(&claims(json!({"roles": ["admin"]}))), None);
        // A permission granted before they had to be scope tokens cannot be told apart from
        // two in a space-separated list, so it is left out rather than split.
        assert_eq!(
            scope_claim(&claims(json!({"permissions": ["notes read", "x", 3]}))),
            Some("x".to_owned())
        );
    }

    #[test]
    fn a_scope_parameter_is_space_separated_tokens_each_kept_once() {
        let scope = Scope::parse(" notes:read  notes:write notes:read").expect("valid");
        assert_eq!(scope.tokens(), ["notes:read", "notes:write"]);
        for bad in ["", "   ", "notes:read caf\u{e9}", "a\"b", "tab\tseparated"] {
            assert_eq!(Scope::parse(bad), Err(ScopeError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn narrowing_keeps_exactly_the_requested_permissions_within_the_session() {
        let session = claims(
            json!({"roles": ["editor"], "permissions": ["notes:*", "tasks:read"], "team": "x"}),
        );
        let scope = Scope::parse("notes:read tasks:read").expect("valid");
        let narrowed = narrow(&session, &scope).expect("within");
        assert_eq!(narrowed["permissions"], json!(["notes:read", "tasks:read"]));
        assert_eq!(narrowed["roles"], json!(["editor"]));
        assert_eq!(narrowed["team"], "x");

        let beyond = Scope::parse("notes:read tasks:write").expect("valid");
        assert_eq!(narrow(&session, &beyond), Err("tasks:write".to_owned()));
        let nothing = claims(json!({"roles": ["editor"]}));
        assert_eq!(
            narrow(&nothing, &Scope::parse("notes:read").expect("valid")),
            Err("notes:read".to_owned())
        );
    }
}
