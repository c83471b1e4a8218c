//! DPoP-bound access tokens (RFC 9449 §7): the settings of [`Verifier::verify_dpop`] and the
//! in-memory replay cache of proof ids.
//!
//! A token of a bound session carries its key's thumbprint (`cnf.jkt`). Such a token is
//! accepted only with the `DPoP` scheme and a proof that [`sessiond_core::dpop::verify_proof`]
//! accepts for the request's method and URL and for this token (`ath`), signed by the key the
//! token names, and never seen before. A bound token presented as `Bearer` is refused, and so is
//! an unbound one presented as `DPoP`: the scheme says what the client claims, and a mismatch
//! is either a client bug or a stolen token used without its key.
//!
//! The replay cache keeps each accepted proof's id ([`VerifiedProof::replay_id`], a hash of key
//! and `jti`) until the proof would be refused as stale anyway. It lives in memory, so it is
//! per process: several instances of a resource server behind a load balancer each catch the
//! replays that reach them, which is why proofs are also short-lived. It holds at most
//! `capacity` ids; when it is full of ids still inside their window, new proofs are refused as
//! "unavailable" (`503`) rather than let an id be forgotten early, which would open a replay
//! window. Expired ids are purged when the cache fills, at most once a second, so a flood of
//! proofs cannot make every request pay for a full scan.
//!
//! [`Verifier::verify_dpop`]: crate::Verifier::verify_dpop
//! [`VerifiedProof::replay_id`]: sessiond_core::dpop::VerifiedProof::replay_id

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sessiond_core::Timestamp;

/// The default most proof ids held at once: about 1,500 proofs a second sustained over a
/// 65-second window, in a few megabytes.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// The least time between two purges of a full cache.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a proof id could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remember {
    /// Never seen: recorded.
    First,
    /// Seen before, still inside its window.
    Replayed,
    /// The cache is full of ids still inside their window.
    Full,
}

/// Proof ids seen, each until the time its proof would be stale anyway.
pub(crate) struct ReplayCache {
    capacity: usize,
    state: Mutex<ReplayState>,
}

struct ReplayState {
    ids: HashMap<[u8; 32], Timestamp>,
    last_purge: Option<Timestamp>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(ReplayState {
                ids: HashMap::new(),
                last_purge: None,
            }),
        }
    }

    /// Records `id` until `until`, unless it is already there.
    pub(crate) fn remember(&self, id: [u8; 32], until: Timestamp, now: Timestamp) -> Remember {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(kept_until) = state.ids.get(&id) {
            if *kept_until >= now {
                return Remember::Replayed;
            }
            state.ids.remove(&id);
        }
        if state.ids.len() >= self.capacity {
            let due = state
                .last_purge
                .is_none_or(|last| now.since(last) >= PURGE_INTERVAL || now < last);
            if due {
                state.ids.retain(|_, kept_until| *kept_until >= now);
                state.last_purge = Some(now);
            }
            if state.ids.len() >= self.capacity {
                return Remember::Full;
            }
        }
        state.ids.insert(id, until);
        Remember::First
    }

    /// How many ids are held (expired ones included until the next purge).
    pub(crate) fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .ids
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(seconds * 1000)
    }

    #[test]
    fn an_id_is_refused_again_until_its_time_is_up() {
        let cache = ReplayCache::new(10);
        assert_eq!(cache.remember([1; 32], at(160), at(100)), Remember::First);
        assert_eq!(
            cache.remember([1; 32], at(160), at(150)),
            Remember::Replayed
        );
        assert_eq!(cache.remember([2; 32], at(160), at(150)), Remember::First);
        // After its window the proof is stale anyway; the id may be forgotten.
        assert_eq!(cache.remember([1; 32], at(220), at(161)), Remember::First);
    }

    #[test]
    fn a_full_cache_purges_expired_ids_and_refuses_when_none_has_expired() {
        let cache = ReplayCache::new(3);
        for id in 0..3u8 {
            assert_eq!(
                cache.remember([id; 32], at(100 + i64::from(id)), at(50)),
                Remember::First
            );
        }
        assert_eq!(cache.remember([9; 32], at(200), at(60)), Remember::Full);
        assert_eq!(cache.len(), 3, "nothing was forgotten early");
        // Within the purge interval a full cache is not scanned again.
        assert_eq!(cache.remember([9; 32], at(200), at(60)), Remember::Full);
        // Two ids have expired by 102: purged, and there is room again.
        assert_eq!(cache.remember([9; 32], at(200), at(102)), Remember::First);
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.remember([2; 32], at(200), at(102)),
            Remember::Replayed
        );
    }
}
