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
///
/// Entries live in two generations: `put` writes into the current one, and once the current
/// one is [`SessionCache::TTL`] old it becomes the previous one and the one before is dropped.
/// Every entry still servable is in one of the two, and memory holds only the sessions touched
/// in the last two TTLs (bounded by [`SessionCache::CAPACITY`] besides), whatever the number
/// of sessions stored.
#[derive(Debug, Default)]
pub struct SessionCache {
    generations: RwLock<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    started_at: Timestamp,
    current: HashMap<SessionId, (Timestamp, Arc<Session>)>,
    previous: HashMap<SessionId, (Timestamp, Arc<Session>)>,
}

impl SessionCache {
    /// How long an entry is served before storage is read again.
    pub const TTL: Duration = Duration::from_secs(1);
    /// Most entries of one generation; past it the generation turns early.
    pub const CAPACITY: usize = 100_000;

    /// The cached session `id` if it was stored less than [`Self::TTL`] before `now`.
    pub fn get(&self, id: &SessionId, now: Timestamp) -> Option<Arc<Session>> {
        let generations = self
            .generations
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        generations
            .current
            .get(id)
            .or_else(|| generations.previous.get(id))
            .filter(|(stored_at, _)| now < stored_at.plus(Self::TTL) && now >= *stored_at)
            .map(|(_, session)| Arc::clone(session))
    }

    /// Caches `session` as read or written at `now`.
    pub fn put(&self, session: impl Into<Arc<Session>>, now: Timestamp) {
        let session = session.into();
        let mut generations = self
            .generations
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let turn = now >= generations.started_at.plus(Self::TTL)
            || now < generations.started_at
            || generations.current.len() >= Self::CAPACITY;
        if turn {
            let current = std::mem::take(&mut generations.current);
            generations.previous = current;
            generations.started_at = now;
        }
        // An older entry of the same session in the previous generation must not outlive it.
        generations.previous.remove(&session.id);
        generations.current.insert(session.id, (now, session));
    }

    /// Forgets session `id`.
    pub fn evict(&self, id: &SessionId) {
        let mut generations = self
            .generations
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        generations.current.remove(id);
        generations.previous.remove(id);
    }

    /// How many entries are held, servable or not.
    pub fn len(&self) -> usize {
        let generations = self
            .generations
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        generations.current.len() + generations.previous.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[test]
    fn only_the_sessions_of_the_last_two_ttls_are_held() {
        let cache = SessionCache::default();
        let start = Timestamp::from_unix_millis(10_000);
        for step in 0..50u64 {
            let now = start.plus(Duration::from_millis(100 * step));
            cache.put(session_at(now, &Policy::default()), now);
        }
        // 5 s of puts, 10 a second: at most two seconds' worth are kept.
        assert!(cache.len() <= 20, "{} entries held", cache.len());
        let now = start.plus(Duration::from_millis(4_950));
        let recent = session_at(now, &Policy::default());
        let id = recent.id;
        cache.put(recent, now);
        assert!(
            cache
                .get(&id, now.plus(Duration::from_millis(999)))
                .is_some()
        );
    }
}
