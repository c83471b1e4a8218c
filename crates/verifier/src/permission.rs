//! Permission checks with wildcards, by the rule of `sessiond_core::permission` (the one
//! implementation, which sessiond also checks admin key scopes with).
//!
//! A permission is a string of `:`-separated segments, such as `notes:read`. A granted
//! permission matches a required one when they are equal (case-sensitive), when the granted
//! one is `*`, or when it ends in the segment `*` (`notes:*`) and the required one starts with
//! its prefix (`notes:`) and has at least one more character: `notes:*` grants `notes:read`
//! and `notes:share:public`, but neither `notes` nor `notesx:read`. A `*` anywhere else is an
//! ordinary character, and the required permission is always taken literally.

pub use sessiond_core::permission::permission_matches;

use crate::Claims;

/// Whether the token's `permissions` grant `required`, wildcards included: `*` grants
/// everything, and `notes:*` grants `notes:read` and every level below it but not `notes` or
/// `notesx:read`. Matching is case-sensitive.
pub fn has_permission(claims: &Claims, required: &str) -> bool {
    sessiond_core::permission::any_grants(claims.permissions.iter().map(String::as_str), required)
}
