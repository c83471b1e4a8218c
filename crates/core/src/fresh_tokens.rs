//! The refresh tokens this process issued by rotation and has not seen presented since, each
//! with its session as the rotation left it, so that the refresh that presents one next needs
//! no storage read before its rotation.
//!
//! It is never the authority on anything the rotation's compare-and-swap decides. An entry says
//! what storage held when this process wrote it; what another writer may have changed since is
//! exactly what the swap checks again (the token unspent, the session unrevoked), and the rest
//! of a session changes only with a rotation of it, which spends the token. So a refresh served
//! from here either rotates as a lookup would have let it, or loses the swap and reads storage
//! like any refresh that lost a race. Anything else a lookup could answer (a refusal, a replay,
//! reuse) is only ever decided on a storage read: an entry is used only when it leads to a
//! rotation.
//!
//! A presented token's entry is taken out, whatever becomes of the refresh: a second request
//! with the same token (two tabs, a retry) reads storage. At most [`FreshTokens::CAPACITY`]
//! entries are held, whatever the number of sessions stored: each new one past that evicts the
//! oldest, so eviction costs every rotation the same small amount and never stalls one. A token
//! issued more rotations ago than that is read from storage when presented.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::refresh::{RefreshTokenHash, RefreshTokenRecord};
use crate::session::Session;
use crate::time::Timestamp;

/// Successor tokens issued by this process, not yet presented.
#[derive(Debug, Default)]
pub struct FreshTokens {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_token: HashMap<RefreshTokenHash, Fresh>,
    /// Every token put, oldest first, until evicted; a taken token stays here until its turn.
    /// Its length bounds `by_token`'s.
    order: VecDeque<RefreshTokenHash>,
}

/// One token as its rotation stored it.
#[derive(Debug)]
struct Fresh {
    issued_at: Timestamp,
    session: Arc<Session>,
}

impl FreshTokens {
    /// Most entries held.
    pub const CAPACITY: usize = 32_768;

    /// Remembers `token`, issued at `issued_at` by a rotation that left its session as
    /// `session`. A session with encrypted values that did not open is not remembered: its
    /// next lookup reports them again.
    pub fn put(&self, token: RefreshTokenHash, issued_at: Timestamp, session: Arc<Session>) {
        if !session.unreadable.is_empty() {
            return;
        }
        let mut entries = self.entries();
        let evicted = if entries.order.len() >= Self::CAPACITY {
            let oldest = entries.order.pop_front();
            oldest.and_then(|oldest| entries.by_token.remove(&oldest))
        } else {
            None
        };
        entries.order.push_back(token);
        entries.by_token.insert(token, Fresh { issued_at, session });
        drop(entries);
        // Freed outside the lock.
        drop(evicted);
    }

    /// Takes out `token`'s entry: the token as its rotation stored it (unspent) and its session,
    /// or `None` when this process did not issue it or another request presented it first.
    pub fn take(&self, token: &RefreshTokenHash) -> Option<(RefreshTokenRecord, Session)> {
        let fresh = self.entries().by_token.remove(token)?;
        let record = RefreshTokenRecord {
            hash: *token,
            issued_at: fresh.issued_at,
            spent_at: None,
            sealed_successor: None,
            successor_spent: false,
        };
        Some((record, Arc::unwrap_or_clone(fresh.session)))
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries().by_token.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries. No code holding the lock can panic, and the maps stay valid if one ever
    /// did, so a poisoned lock is taken as it is.
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::session::tests::session_at;

    fn hash(n: u64) -> RefreshTokenHash {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        RefreshTokenHash(bytes)
    }

    #[test]
    fn a_token_is_served_once_as_its_rotation_stored_it() {
        let tokens = FreshTokens::default();
        let now = Timestamp::from_unix_millis(10_000);
        let session = session_at(now, &Policy::default());
        let id = session.id;
        tokens.put(hash(1), now, Arc::new(session));
        let (record, session) = tokens.take(&hash(1)).expect("the entry");
        assert_eq!(record.hash, hash(1));
        assert_eq!(record.issued_at, now);
        assert!(record.spent_at.is_none() && record.sealed_successor.is_none());
        assert!(!record.successor_spent);
        assert_eq!(session.id, id);
        assert!(
            tokens.take(&hash(1)).is_none(),
            "taken out by its first use"
        );
        assert!(tokens.take(&hash(2)).is_none());
    }

    #[test]
    fn a_session_with_unreadable_values_is_not_remembered() {
        let tokens = FreshTokens::default();
        let now = Timestamp::from_unix_millis(10_000);
        let mut session = session_at(now, &Policy::default());
        session
            .unreadable
            .push(crate::crypt::columns::SESSION_METADATA);
        tokens.put(hash(1), now, Arc::new(session));
        assert!(tokens.is_empty());
    }

    #[test]
    fn past_the_capacity_each_new_entry_evicts_the_oldest() {
        let tokens = FreshTokens::default();
        let now = Timestamp::from_unix_millis(10_000);
        let session = Arc::new(session_at(now, &Policy::default()));
        let capacity = FreshTokens::CAPACITY as u64;
        for n in 0..capacity {
            tokens.put(hash(n), now, Arc::clone(&session));
        }
        assert!(tokens.take(&hash(1)).is_some(), "taken out before its turn");
        for n in capacity..capacity + 10 {
            tokens.put(hash(n), now, Arc::clone(&session));
        }
        assert_eq!(
            tokens.len(),
            FreshTokens::CAPACITY,
            "the taken place was reused"
        );
        assert!(tokens.take(&hash(0)).is_none(), "the oldest is evicted");
        assert!(tokens.take(&hash(9)).is_none());
        assert!(
            tokens.take(&hash(10)).is_some(),
            "the next ones are still served"
        );
        assert!(tokens.take(&hash(capacity + 9)).is_some());
    }
}
