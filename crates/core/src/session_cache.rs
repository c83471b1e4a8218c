//! A short-lived cache of sessions by id, so that the routes a client calls on every page
//! (`GET /v1/sessions/current`) need no storage read.
//!
//! It is never the authority on revocation: validation consults the revoked-session set first,
//! and this process evicts or replaces an entry whenever it changes that session. What may be
//! stale is what another process changed (another instance's refresh moving `last_active_at`),
//! and only for at most [`SessionCache::TTL`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::ids::SessionId;
use crate::session::Session;
use crate::time::Timestamp;

/// Sessions recently read or written by this process.
#[derive(Debug, Default)]
pub struct SessionCache {
    entries: RwLock<HashMap<SessionId, (Timestamp, Arc<Session>)>>,
}

impl SessionCache {
    /// How long an entry is served before storage is read again.
    pub const TTL: Duration = Duration::from_secs(1);
    /// Most entries kept; past it the cache starts over, which costs one read per session.
    pub const CAPACITY: usize = 100_000;

    /// The cached session `id` if it was stored less than [`Self::TTL`] before `now`.
    pub fn get(&self, id: &SessionId, now: Timestamp) -> Option<Arc<Session>> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        entries
            .get(id)
            .filter(|(stored_at, _)| now < stored_at.plus(Self::TTL) && now >= *stored_at)
            .map(|(_, session)| Arc::clone(session))
    }

    /// Caches `session` as read or written at `now`.
    pub fn put(&self, session: Session, now: Timestamp) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        entries.insert(session.id, (now, Arc::new(session)));
    }

    /// Forgets session `id`.
    pub fn evict(&self, id: &SessionId) {
        self.entries
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::session::tests::session_at;

    #[test]
    fn entries_expire_after_the_ttl_and_can_be_evicted() {
        let cache = SessionCache::default();
        let now = Timestamp::from_unix_millis(10_000);
        let session = session_at(now, &Policy::default());
        let id = session.id;
        cache.put(session, now);
        assert!(cache.get(&id, now).is_some());
        assert!(cache.get(&id, now.plus(SessionCache::TTL)).is_none());
        assert!(
            cache
                .get(&id, now.minus(Duration::from_millis(1)))
                .is_none(),
            "a clock moved back"
        );
        cache.evict(&id);
        assert!(cache.get(&id, now).is_none());
    }
}
