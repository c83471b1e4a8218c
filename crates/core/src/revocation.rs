//! The in-memory set of revoked sessions whose access tokens may still be in circulation.
//!
//! Access tokens are self-contained, so a revoked session's tokens would pass validation until
//! their `exp`. The server keeps every such session id here, from its revocation until the last
//! access token it issued has expired, and validation consults the set without any I/O. The
//! set is filled from storage at start and kept current as revocations happen.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::ids::SessionId;
use crate::time::Timestamp;

/// Session ids whose access tokens must be refused, each until the moment its tokens expire.
#[derive(Debug, Default)]
pub struct RevokedSessions {
    until: RwLock<HashMap<SessionId, Timestamp>>,
}

impl RevokedSessions {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether tokens of `session` must be refused.
    pub fn contains(&self, session: &SessionId) -> bool {
        // A poisoned lock only means a writer panicked mid-insert; the map itself is intact.
        let until = self
            .until
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        until.contains_key(session)
    }

    /// Refuses tokens of `session` until `access_expires_at`.
    pub fn insert(&self, session: SessionId, access_expires_at: Timestamp) {
        let mut until = self
            .until
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = until.entry(session).or_insert(access_expires_at);
        *entry = (*entry).max(access_expires_at);
    }

    /// Forgets sessions whose tokens have all expired by `now`; returns how many were dropped.
    pub fn prune(&self, now: Timestamp) -> usize {
        let mut until = self
            .until
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let before = until.len();
        until.retain(|_, expires_at| *expires_at > now);
        before - until.len()
    }

    /// How many sessions are in the set.
    pub fn len(&self) -> usize {
        self.until
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stays_revoked_until_its_last_token_expired() {
        let set = RevokedSessions::new();
        let session = SessionId::generate();
        set.insert(session, Timestamp::from_unix_millis(100));
        set.insert(session, Timestamp::from_unix_millis(50));
        assert!(set.contains(&session));
        assert_eq!(set.prune(Timestamp::from_unix_millis(99)), 0);
        assert!(set.contains(&session));
        assert_eq!(set.prune(Timestamp::from_unix_millis(100)), 1);
        assert!(!set.contains(&session));
    }
}
