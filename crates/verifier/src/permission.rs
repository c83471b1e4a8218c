//! Permission checks with wildcards.
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

use crate::Claims;

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

/// Whether the token's `permissions` grant `required`, wildcards included: `*` grants
/// everything, and `notes:*` grants `notes:read` and every level below it but not `notes` or
/// `notesx:read`. Matching is case-sensitive.
pub fn has_permission(claims: &Claims, required: &str) -> bool {
    claims
        .permissions
        .iter()
        .any(|granted| permission_matches(granted, required))
}

#[cfg(test)]
mod tests {
    use super::permission_matches;

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
}
