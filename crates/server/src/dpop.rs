//! DPoP (RFC 9449) as this server applies it: the rules proofs are checked under, the URL they
//! must name, the nonces it hands out, and the replay cache of proofs sent with access tokens.
//!
//! A proof is checked by `sessiond_core::dpop::verify_proof` against `htu` = the issuer URL
//! (`SESSIOND_ISSUER`, the URL clients reach sessiond at, as in its RFC 8414 metadata) followed
//! by the request's path, so the check does not depend on what `Host` a proxy forwards.
//!
//! Replays are refused two ways. A proof that comes with a refresh token is remembered by the
//! store (`ProofStore`), shared by every instance on PostgreSQL: a refresh mints tokens, so a
//! replay must never succeed anywhere. A proof that comes with an access token (a resource
//! request) is remembered here, in memory: such proofs are bound to one method, one URL and one
//! access token (`ath`) and live a minute, and checking them in storage would cost a write per
//! request. The memory cache holds at most [`RECENT_PROOFS_CAPACITY`] ids; when full, expired
//! ids go first, then those expiring soonest, so a flood of valid proofs can only shorten how
//! long the oldest are remembered, never grow memory.
//!
//! Nonces (`SESSIOND_DPOP_NONCE=required`) are stateless (`sessiond_core::dpop::NonceKey`)
//! under a key derived from the master key, so every instance sharing a database accepts the
//! nonces of the others.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use sessiond_core::Timestamp;
use sessiond_core::crypt::MasterKey;
use sessiond_core::dpop::{self, DpopError, DpopRules, NonceKey, ProofCheck, VerifiedProof};

use crate::config::DpopSettings;

/// The most proof ids the resource routes' replay cache holds (about 6 MB).
pub const RECENT_PROOFS_CAPACITY: usize = 65_536;
/// Clock skew tolerated on a proof's `iat`, either way.
const LEEWAY_SECONDS: i64 = 5;
/// The label of the nonce key derived from the master key.
const NONCE_KEY_LABEL: &str = "dpop-nonce";

/// How this server checks DPoP proofs.
#[derive(Debug)]
pub struct Dpop {
    rules: DpopRules,
    /// The issuer URL without a trailing slash: proofs name it followed by the path.
    base_url: String,
    /// The nonce key, when nonces are required.
    nonces: Option<NonceKey>,
    recent: RecentProofs,
}

impl Dpop {
    /// The checks `settings` ask for, for a server reached at `issuer`; `master_key` is needed
    /// only when nonces are required (their key is derived from it).
    ///
    /// # Errors
    /// When nonces are required and no master key is given.
    pub fn new(
        settings: &DpopSettings,
        issuer: &str,
        master_key: Option<&MasterKey>,
    ) -> Result<Self, String> {
        let nonces = match (settings.nonce_required, master_key) {
            (false, _) => None,
            (true, Some(key)) => Some(NonceKey::new(&key.derive(NONCE_KEY_LABEL))),
            (true, None) => {
                return Err("SESSIOND_DPOP_NONCE=required needs the master key".into());
            }
        };
        Ok(Self {
            rules: DpopRules {
                max_age_seconds: i64::try_from(settings.proof_max_age.as_secs()).unwrap_or(60),
                leeway_seconds: LEEWAY_SECONDS,
            },
            base_url: issuer.trim_end_matches('/').to_owned(),
            nonces,
            recent: RecentProofs::new(RECENT_PROOFS_CAPACITY),
        })
    }

    /// Checks `proof` for a `method` request to `path` (with `access_token` on a resource
    /// route) at `now`.
    ///
    /// # Errors
    /// The first [`DpopError`] found.
    pub fn verify(
        &self,
        proof: &str,
        method: &str,
        path: &str,
        access_token: Option<&str>,
        now: Timestamp,
    ) -> Result<VerifiedProof, DpopError> {
        let url = format!("{}{path}", self.base_url);
        dpop::verify_proof(
            proof,
            &ProofCheck {
                method,
                url: &url,
                access_token,
                nonce: self.nonces.as_ref(),
            },
            &self.rules,
            now,
        )
    }

    /// A fresh nonce to hand out, when nonces are required.
    pub fn nonce(&self, now: Timestamp) -> Option<String> {
        self.nonces.as_ref().map(|key| key.mint(now))
    }

    /// Remembers a proof sent with an access token; `false` when this process saw it before.
    pub fn first_use_on_resource(&self, proof: &VerifiedProof, now: Timestamp) -> bool {
        self.recent
            .remember(proof.replay_id, proof.replay_until, now)
    }
}

/// Proof ids seen on resource routes, each until its expiry, at most `capacity` of them.
#[derive(Debug)]
struct RecentProofs {
    capacity: usize,
    inner: Mutex<RecentInner>,
}

#[derive(Debug, Default)]
struct RecentInner {
    expiry_of: HashMap<[u8; 32], Timestamp>,
    /// The same entries by expiry, to drop the soonest first.
    by_expiry: BTreeSet<(Timestamp, [u8; 32])>,
}

impl RecentProofs {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(RecentInner::default()),
        }
    }

    /// Records `id` until `until`; `false` when it is recorded already and not expired at
    /// `now`.
    fn remember(&self, id: [u8; 32], until: Timestamp, now: Timestamp) -> bool {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let RecentInner {
            expiry_of,
            by_expiry,
        } = &mut *inner;
        if let Some(&expiry) = expiry_of.get(&id) {
            if expiry > now {
                return false;
            }
            by_expiry.remove(&(expiry, id));
            expiry_of.remove(&id);
        }
        // Expired entries first; then, if still full, the ones expiring soonest.
        while let Some(&(expiry, oldest)) = by_expiry.first() {
            if expiry > now && expiry_of.len() < self.capacity {
                break;
            }
            by_expiry.pop_first();
            expiry_of.remove(&oldest);
        }
        expiry_of.insert(id, until);
        by_expiry.insert((until, id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    fn id(index: u8) -> [u8; 32] {
        [index; 32]
    }

    fn at(seconds: u64) -> Timestamp {
        T0.plus(std::time::Duration::from_secs(seconds))
    }

    #[test]
    fn a_proof_id_is_new_once_until_it_expires() {
        let recent = RecentProofs::new(10);
        assert!(recent.remember(id(1), at(60), at(0)));
        assert!(!recent.remember(id(1), at(90), at(30)));
        assert!(recent.remember(id(2), at(60), at(30)));
        assert!(recent.remember(id(1), at(120), at(60)), "expired");
        assert!(!recent.remember(id(1), at(120), at(61)));
    }

    #[test]
    fn a_full_cache_drops_expired_ids_then_the_soonest_expiring_and_never_grows() {
        let recent = RecentProofs::new(3);
        assert!(recent.remember(id(1), at(10), at(0)));
        assert!(recent.remember(id(2), at(50), at(0)));
        assert!(recent.remember(id(3), at(40), at(0)));
        // Full, nothing expired: the one expiring soonest (1) makes room.
        assert!(recent.remember(id(4), at(60), at(5)));
        let inner = recent.inner.lock().unwrap();
        assert_eq!(inner.expiry_of.len(), 3);
        assert_eq!(inner.by_expiry.len(), 3);
        assert!(!inner.expiry_of.contains_key(&id(1)));
        drop(inner);
        assert!(!recent.remember(id(2), at(70), at(6)), "still remembered");
        // Later, every expired entry goes at once.
        assert!(recent.remember(id(5), at(100), at(55)));
        let inner = recent.inner.lock().unwrap();
        assert_eq!(
            inner.expiry_of.keys().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([id(4), id(5)])
        );
    }

    #[test]
    fn nonces_need_the_master_key_and_one_instances_nonce_passes_on_another() {
        let required = DpopSettings {
            nonce_required: true,
            ..DpopSettings::default()
        };
        assert!(Dpop::new(&required, "https://auth.example", None).is_err());
        let key = MasterKey::generate();
        let one = Dpop::new(&required, "https://auth.example/", Some(&key)).unwrap();
        let other = Dpop::new(&required, "https://auth.example", Some(&key)).unwrap();
        let nonce = one.nonce(T0).unwrap();
        assert!(other.nonces.as_ref().unwrap().accepts(&nonce, T0));
        let stranger = Dpop::new(
            &required,
            "https://auth.example",
            Some(&MasterKey::generate()),
        )
        .unwrap();
        assert!(!stranger.nonces.as_ref().unwrap().accepts(&nonce, T0));
        let off = Dpop::new(&DpopSettings::default(), "https://auth.example", None).unwrap();
        assert_eq!(off.nonce(T0), None);
        assert_eq!(one.base_url, "https://auth.example");
    }
}
