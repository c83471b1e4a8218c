//! Who may call the admin routes and introspection: the configured admin keys with their
//! scopes, and the resource servers' introspection credentials, both kept as SHA-256 digests
//! and compared in constant time against every configured entry.

use sessiond_core::primitives::sha256;
use subtle::ConstantTimeEq;

/// The permission an admin route needs to read: every scope has it.
pub const ADMIN_READ: &str = "admin:read";
/// The permission an admin route needs to revoke sessions (and forget devices).
pub const ADMIN_REVOKE: &str = "admin:revoke";
/// The permission an admin route needs to create sessions or change what a session is
/// allowed (trust a device).
pub const ADMIN_WRITE: &str = "admin:write";

/// What an admin key may do (`SESSIOND_ADMIN_KEYS` entries `KEY:read`, `KEY:revoke`,
/// `KEY:full`, or `KEY` for full). Each scope stands for permissions, checked with the same
/// wildcard rule as access tokens' (`sessiond_core::permission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminScope {
    /// Reads: listings, `/v1/events`, `/v1/audit`, `/v1/stats`, introspection.
    Read,
    /// Reads and revocations.
    Revoke,
    /// Everything, session creation included.
    #[default]
    Full,
}

impl AdminScope {
    /// Every scope, in the order of their codes.
    const ALL: [Self; 3] = [Self::Read, Self::Revoke, Self::Full];

    /// The configuration name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Revoke => "revoke",
            Self::Full => "full",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    /// The permissions the scope stands for.
    pub const fn permissions(self) -> &'static [&'static str] {
        match self {
            Self::Read => &[ADMIN_READ],
            Self::Revoke => &[ADMIN_READ, ADMIN_REVOKE],
            Self::Full => &["admin:*"],
        }
    }

    /// Whether the scope grants `required` (an `admin:…` permission).
    pub fn grants(self, required: &str) -> bool {
        sessiond_core::permission::any_grants(self.permissions().iter().copied(), required)
    }

    fn code(self) -> u8 {
        self as u8
    }
}

/// One configured admin key and its scope.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey {
    /// The secret.
    pub key: String,
    /// What it may do.
    pub scope: AdminScope,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKey(<redacted>:{})", self.scope.as_str())
    }
}

/// The configured admin keys, kept as SHA-256 digests so that every comparison takes the same
/// time whatever the presented key's length, and compared against all keys every time.
pub struct AdminKeys {
    keys: Vec<([u8; 32], AdminScope)>,
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKeys(<{} redacted>)", self.keys.len())
    }
}

/// An admin key a request presented: which one, and its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminIdentity {
    /// Which key.
    pub id: AdminKeyId,
    /// What it may do.
    pub scope: AdminScope,
}

impl AdminKeys {
    /// Digests of `keys`, each with its scope.
    pub fn new(keys: &[AdminKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|entry| (sha256(entry.key.as_bytes()), entry.scope))
                .collect(),
        }
    }

    /// Whether `presented` is one of the keys, in time independent of which (if any) matches.
    pub fn matches(&self, presented: &str) -> bool {
        self.identify(presented).is_some()
    }

    /// The identity and scope of the key `presented` is, if it is one, found in time
    /// independent of which (if any) matches.
    pub fn identify(&self, presented: &str) -> Option<AdminIdentity> {
        use subtle::ConditionallySelectable as _;
        let digest: [u8; 32] = sha256(presented.as_bytes());
        let mut found = subtle::Choice::from(0);
        let mut scope_code = 0u8;
        for (key, scope) in &self.keys {
            let equal = key.ct_eq(&digest);
            found |= equal;
            scope_code.conditional_assign(&scope.code(), equal);
        }
        if !bool::from(found) {
            return None;
        }
        let mut prefix = [0; 16];
        prefix.copy_from_slice(&digest[..16]);
        Some(AdminIdentity {
            id: AdminKeyId(prefix),
            scope: AdminScope::ALL
                .get(usize::from(scope_code))
                .copied()
                .unwrap_or(AdminScope::Read),
        })
    }
}

/// A resource server allowed to introspect tokens (`SESSIOND_INTROSPECTION_CLIENTS`): an
/// OAuth client id and secret that authenticate at `POST /oauth/introspect` and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionClient {
    /// The client id, not secret.
    pub client_id: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for IntrospectionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IntrospectionClient({}:<redacted>)", self.client_id)
    }
}

/// The configured introspection clients, ids and secrets kept as SHA-256 digests and compared
/// against every client every time, so that neither which id exists nor how much of a secret
/// is right shows in the time an answer takes.
pub struct IntrospectionClients {
    clients: Vec<([u8; 32], [u8; 32])>,
}

impl std::fmt::Debug for IntrospectionClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IntrospectionClients(<{} redacted>)", self.clients.len())
    }
}

impl IntrospectionClients {
    /// Digests of `clients`' ids and secrets.
    pub fn new(clients: &[IntrospectionClient]) -> Self {
        Self {
            clients: clients
                .iter()
                .map(|client| {
                    (
                        sha256(client.client_id.as_bytes()),
                        sha256(client.secret.as_bytes()),
                    )
                })
                .collect(),
        }
    }

    /// Whether `client_id` and `secret` are those of one configured client, found in time
    /// independent of which (if any) matches.
    pub fn authenticate(&self, client_id: &str, secret: &str) -> bool {
        let id: [u8; 32] = sha256(client_id.as_bytes());
        let presented: [u8; 32] = sha256(secret.as_bytes());
        let mut found = subtle::Choice::from(0);
        for (known_id, known_secret) in &self.clients {
            found |= known_id.ct_eq(&id) & known_secret.ct_eq(&presented);
        }
        bool::from(found)
    }
}

/// Which admin key a request used: the first half of the key's SHA-256, which rate limits key
/// on and logs may show (as [`AdminKeyId::short`]); never the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminKeyId(pub [u8; 16]);

impl AdminKeyId {
    /// `sha256:` and the digest's first 8 hex digits: enough to tell configured keys apart.
    pub fn short(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::from("sha256:");
        for byte in &self.0[..4] {
            let _ = write!(text, "{byte:02x}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, scope: AdminScope) -> AdminKey {
        AdminKey {
            key: text.repeat(32),
            scope,
        }
    }

    #[test]
    fn each_key_is_identified_with_its_own_scope() {
        let keys = AdminKeys::new(&[
            key("r", AdminScope::Read),
            key("v", AdminScope::Revoke),
            key("f", AdminScope::Full),
        ]);
        let scope = |text: &str| keys.identify(&text.repeat(32)).map(|found| found.scope);
        assert_eq!(scope("r"), Some(AdminScope::Read));
        assert_eq!(scope("v"), Some(AdminScope::Revoke));
        assert_eq!(scope("f"), Some(AdminScope::Full));
        assert_eq!(scope("x"), None);
    }

    #[test]
    fn scopes_grant_the_admin_permissions_they_stand_for() {
        use AdminScope::{Full, Read, Revoke};
        for (scope, read, revoke, write) in [
            (Read, true, false, false),
            (Revoke, true, true, false),
            (Full, true, true, true),
        ] {
            assert_eq!(scope.grants(ADMIN_READ), read, "{scope:?}");
            assert_eq!(scope.grants(ADMIN_REVOKE), revoke, "{scope:?}");
            assert_eq!(scope.grants(ADMIN_WRITE), write, "{scope:?}");
            assert!(!scope.grants("notes:read"), "{scope:?}");
        }
    }
}
