//! The signing keys in force: loading them, noticing changes other processes make, rotating
//! and retiring.
//!
//! The store holds a keyring shared by every instance: one active key, whatever its algorithm,
//! and older keys that a rotation replaced and that still verify. A rotation to another
//! algorithm (`sessiond keys rotate --alg`, which changing `SESSIOND_SIGNING_ALG` calls for) is
//! a rotation like any other: it replaces the key of the old algorithm. A rotation publishes its new key at
//! once (every stored key is in the JWK Set) and lets it sign only from its `signs_from`, a
//! publication delay later, so that a verifier that cached the JWK Set for its `max-age`
//! ([`SigningKeys::jwks_max_age`], at most half the delay) has refetched it before it sees a
//! token the new key signed. Until then the key it replaces signs; its `deactivated_at` is the
//! new key's `signs_from`. Every instance decides which key signs from its clock and the stored
//! times, so all switch at the same moment, and none signs with a key published for less than
//! the delay. An emergency rotation ([`Activation::Now`]) signs at once and is what breaks
//! caching verifiers: it is for a compromised key.
//!
//! A replaced key is kept until every token it can have signed has expired (its deactivation,
//! plus the access TTL, the leeway and [`RETIREMENT_MARGIN`]) and is then retired: its secret
//! is wiped and it leaves the keyring and the JWK Set, while its row stays, with `retired_at`,
//! for listing until the retention passes ([`SigningKeys::purge_retired`]). An operator may
//! retire a key earlier, once it no longer signs.
//! Each instance holds the keyring in memory and reloads it when the store's cheap key version
//! moves or a stored activation time passes, which the server checks every second.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::audit::{NewAuditEvent, Severity};
use crate::error::Error;
use crate::store::{RetireOutcome, RetiredKey, Store};
use crate::time::Timestamp;
use crate::token::{Keyring, SigningAlgorithm, StoredKey, VerificationKey};

/// How long a deactivated key is kept beyond the access TTL and the leeway. Until an instance
/// has reloaded the keys after a rotation it still signs with the old key: normally for less
/// than a second, longer only if it cannot read the store, and then it can hardly issue
/// tokens either. The margin covers that.
pub const RETIREMENT_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The longest time verifiers may cache the JWK Set (`Cache-Control: max-age`).
pub const JWKS_MAX_AGE_LIMIT: Duration = Duration::from_secs(5 * 60);

/// How long a rotation's new key is published before it signs, unless configured otherwise.
pub const DEFAULT_PUBLICATION_DELAY: Duration = Duration::from_secs(10 * 60);

/// The shortest publication delay accepted: the JWK Set's `max-age` is half of it, in whole
/// seconds, and must not be zero.
pub const MIN_PUBLICATION_DELAY: Duration = Duration::from_secs(2);

/// How often a rotation that lost a race to another process is tried again.
const ROTATION_ATTEMPTS: usize = 3;

/// When the key a rotation makes starts signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// After the publication delay: verifiers that cache the JWK Set know it by then.
    AfterPublication,
    /// At once, for a compromised key: verifiers that cached the JWK Set refuse the new
    /// key's tokens until their cache expires.
    Now,
}

/// What [`SigningKeys::rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// A new key was stored (published now, signing from its `signs_from`).
    Rotated(KeyInfo),
    /// A key of the algorithm is already published and waiting to sign; nothing was written.
    AlreadyScheduled(KeyInfo),
}

/// Whether loading the keys may write: only a server generates the first key of a new
/// database; commands only read what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLoading {
    /// Generate the first key when the database has no signing key at all.
    GenerateFirst,
    /// Never write; a database without a key that signs now has none in the keyring.
    ReadOnly,
}

/// Where a key is in its life at an instant, as `sessiond keys list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, signing from its `signs_from`.
    Next,
    /// The key every instance signs with.
    Signing,
    /// Replaced: verifies the tokens it signed until it is retired.
    Verifying,
    /// Its tokens have all expired (or an operator retired it): secret wiped, neither
    /// published nor verifying; its row is purged after the retention.
    Retired,
}

impl KeyState {
    /// Its name: `next`, `signing`, `verifying` or `retired`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Signing => "signing",
            Self::Verifying => "verifying",
            Self::Retired => "retired",
        }
    }
}

/// The settings of the key lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct KeySettings {
    /// The algorithm this instance is configured for: the one `sessiond keys rotate` rotates
    /// to by default, and of the first key of a new database.
    pub algorithm: SigningAlgorithm,
    /// How long a token validates after it is signed (access TTL plus leeway).
    pub token_lifetime: Duration,
    /// How old the active key may grow before it is rotated automatically.
    pub rotation_period: Option<Duration>,
    /// How long a rotation's key is published before it signs.
    pub publication_delay: Duration,
}

/// A signing key's public facts, for listing: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The `kid`.
    pub kid: String,
    /// Its algorithm.
    pub algorithm: SigningAlgorithm,
    /// When it was generated and published.
    pub created_at: Timestamp,
    /// When it starts signing.
    pub signs_from: Timestamp,
    /// When a newer key takes (or took) over signing from it; `None` while none is scheduled.
    pub deactivated_at: Option<Timestamp>,
    /// When every token it can have signed has expired, so that it is retired automatically;
    /// `None` while it has no successor.
    pub retire_at: Option<Timestamp>,
    /// When it was retired; `None` while it verifies.
    pub retired_at: Option<Timestamp>,
}

impl KeyInfo {
    /// Its state at `at`.
    pub fn state(&self, at: Timestamp) -> KeyState {
        if self.retired_at.is_some() {
            KeyState::Retired
        } else if self.deactivated_at.is_some_and(|until| until <= at) {
            KeyState::Verifying
        } else if self.signs_from > at {
            KeyState::Next
        } else {
            KeyState::Signing
        }
    }
}

/// What the loaded keyring was built from.
#[derive(Debug)]
struct Loaded {
    /// The store's key version the keys were read at (or after).
    version: i64,
    /// The keyring in force when the keys were read; `None` when no key signs then (only when
    /// loaded read-only).
    keyring: Option<Arc<Keyring>>,
    /// The next instant at which another key starts signing, and the keyring from then on.
    switch: Option<(Timestamp, Option<Arc<Keyring>>)>,
    /// Every key, the retired ones included, oldest first.
    keys: Vec<KeyInfo>,
}

impl Loaded {
    fn keyring_at(&self, at: Timestamp) -> Option<&Arc<Keyring>> {
        match &self.switch {
            Some((from, keyring)) if at >= *from => keyring.as_ref(),
            _ => self.keyring.as_ref(),
        }
    }
}

/// The keyring of one instance, kept in step with the store.
#[derive(Debug)]
pub struct SigningKeys {
    store: Arc<dyn Store>,
    settings: KeySettings,
    /// How long a deactivated key still verifies.
    retention: Duration,
    loaded: RwLock<Arc<Loaded>>,
}

impl SigningKeys {
    /// Loads the keys; with [`KeyLoading::GenerateFirst`], generates the first key of the
    /// configured algorithm when the database has no signing key at all.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable, or when loading may
    /// write and still no key signs.
    pub async fn load(
        store: Arc<dyn Store>,
        settings: KeySettings,
        loading: KeyLoading,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let retention = settings.token_lifetime + RETIREMENT_MARGIN;
        let loaded = read(store.as_ref(), settings.algorithm, retention, loading, now).await?;
        if loading == KeyLoading::GenerateFirst && loaded.keyring.is_none() {
            return Err(Error::Corrupt("no signing key signs now".into()));
        }
        Ok(Self {
            store,
            settings,
            retention,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` with the keyring in force (`None` before any key signs), without copying it.
    /// Every stored key verifies, whichever key signs.
    pub fn with_keyring<R>(&self, f: impl FnOnce(Option<&Keyring>) -> R) -> R {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        f(loaded.keyring.as_deref())
    }

    /// Runs `f` with the keyring whose signing key signs at `now`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when no key signs at `now` (never on a server, which refuses to start
    /// without one).
    pub fn with_signing_keyring<R>(
        &self,
        now: Timestamp,
        f: impl FnOnce(&Keyring) -> R,
    ) -> Result<R, Error> {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        match loaded.keyring_at(now) {
            Some(keyring) => Ok(f(keyring)),
            None => Err(Error::Corrupt("no signing key signs now".into())),
        }
    }

    /// The keyring in force at `now`, if a key signs then.
    pub fn keyring(&self, now: Timestamp) -> Option<Arc<Keyring>> {
        self.current().keyring_at(now).cloned()
    }

    /// The `kid` of the key that signs at `now`, if any.
    pub fn signing_kid(&self, now: Timestamp) -> Option<String> {
        self.keyring(now)
            .map(|keyring| keyring.signing_kid().to_owned())
    }

    /// The JWK Set: every asymmetric key not retired, the ones not signing yet included.
    pub fn jwks(&self) -> Value {
        let loaded = self.current();
        let keys: Vec<Value> = loaded
            .keyring
            .as_ref()
            .or_else(|| loaded.switch.as_ref().and_then(|(_, next)| next.as_ref()))
            .map(|keyring| {
                keyring
                    .verification_keys()
                    .filter_map(VerificationKey::public_jwk)
                    .collect()
            })
            .unwrap_or_default();
        json!({ "keys": keys })
    }

    /// How long verifiers may cache the JWK Set: half the publication delay, in whole seconds,
    /// and at most [`JWKS_MAX_AGE_LIMIT`]. The other half leaves room for every instance to
    /// notice a new key (within about a second) and for clocks that differ a little.
    pub fn jwks_max_age(&self) -> Duration {
        Duration::from_secs((self.settings.publication_delay / 2).as_secs()).min(JWKS_MAX_AGE_LIMIT)
    }

    /// How long a rotation's key is published before it signs.
    pub fn publication_delay(&self) -> Duration {
        self.settings.publication_delay
    }

    /// The keys as last loaded, the retired ones included, oldest first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.current().keys.clone()
    }

    /// The algorithm this instance is configured for (`SESSIOND_SIGNING_ALG`).
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.settings.algorithm
    }

    /// Reloads the keys if the store's key version moved since they were loaded, or a key
    /// started signing since; returns whether it did.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable (the keys in force
    /// are then kept).
    pub async fn reload_if_changed(&self, now: Timestamp) -> Result<bool, Error> {
        let version = self.store.signing_keys_version().await?;
        let current = self.current();
        let switched = current
            .switch
            .as_ref()
            .is_some_and(|(from, _)| now >= *from);
        if version == current.version && !switched {
            return Ok(false);
        }
        self.reload(now).await?;
        Ok(true)
    }

    async fn reload(&self, now: Timestamp) -> Result<(), Error> {
        let loaded = read(
            self.store.as_ref(),
            self.settings.algorithm,
            self.retention,
            KeyLoading::ReadOnly,
            now,
        )
        .await?;
        let before = self.current();
        let kid = |keyring: Option<&Arc<Keyring>>| keyring.map(|k| k.signing_kid().to_owned());
        if kid(before.keyring_at(now)) != kid(loaded.keyring.as_ref())
            || before.keys.len() != loaded.keys.len()
        {
            tracing::info!(
                signing_kid = kid(loaded.keyring.as_ref()).as_deref().unwrap_or("-"),
                keys = loaded.keys.len(),
                "signing keys changed"
            );
        }
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }

    /// Generates a new key of `algorithm` and stores it as the active key, replacing the active
    /// key whatever its algorithm: published at once, signing from `now` plus the publication
    /// delay, or from `now` for [`Activation::Now`]. Until then the key it replaces signs, and
    /// afterwards it keeps verifying until its tokens have expired. A rotation after the
    /// publication delay while a key of `algorithm` is already waiting to sign writes nothing
    /// and names that key.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable or other processes
    /// kept rotating at the same moment.
    pub async fn rotate(
        &self,
        algorithm: SigningAlgorithm,
        activation: Activation,
        now: Timestamp,
    ) -> Result<Rotation, Error> {
        for _ in 0..ROTATION_ATTEMPTS {
            let stored = self.store.signing_keys().await?;
            if activation == Activation::AfterPublication
                && let Some(waiting) = stored.iter().find(|key| {
                    key.algorithm == algorithm && key.is_active() && key.signs_from > now
                })
            {
                return Ok(Rotation::AlreadyScheduled(info(waiting, self.retention)));
            }
            let replaces = active_kid(&stored);
            if let Some(key) = self
                .rotate_from(algorithm, replaces.as_deref(), activation, now)
                .await?
            {
                return Ok(Rotation::Rotated(key));
            }
        }
        Err(Error::Corrupt(
            "other processes rotated the signing key at the same moment, repeatedly".into(),
        ))
    }

    /// Replaces `replaces` with a new key, unless another process replaced it first.
    async fn rotate_from(
        &self,
        algorithm: SigningAlgorithm,
        replaces: Option<&str>,
        activation: Activation,
        now: Timestamp,
    ) -> Result<Option<KeyInfo>, Error> {
        let mut key = StoredKey::generate(algorithm, now);
        if activation == Activation::AfterPublication {
            key.signs_from = now.plus(self.settings.publication_delay);
        }
        let rotated = self.store.rotate_signing_key(&key, replaces).await?;
        self.reload(now).await?;
        if !rotated {
            return Ok(None);
        }
        let activation = match activation {
            Activation::AfterPublication => "after the publication delay",
            Activation::Now => "now",
        };
        tracing::info!(
            kid = %key.kid,
            replaces = replaces.unwrap_or("-"),
            alg = algorithm.jose_name(),
            signs_from = key.signs_from.unix_millis(),
            activation,
            "rotated the signing key"
        );
        let signs_from = key.signs_from.unix_millis().to_string();
        self.audit(
            "key.rotated",
            now,
            &[
                ("kid", Some(key.kid.as_str())),
                ("replaces", replaces),
                ("alg", Some(algorithm.jose_name())),
                ("signs_from", Some(signs_from.as_str())),
                ("activation", Some(activation)),
            ],
        )
        .await;
        Ok(Some(info(&key, self.retention)))
    }

    /// Rotates, after the publication delay, to a key of the same algorithm if the active key
    /// is older than the rotation period and no key is waiting to sign; returns the new key if
    /// this call rotated. When another instance rotates at the same moment, only one wins.
    ///
    /// # Errors
    /// As [`SigningKeys::rotate`].
    pub async fn rotate_if_due(&self, now: Timestamp) -> Result<Option<KeyInfo>, Error> {
        let Some(period) = self.settings.rotation_period else {
            return Ok(None);
        };
        let loaded = self.current();
        let Some(active) = loaded
            .keys
            .iter()
            .rev()
            .find(|key| key.deactivated_at.is_none() && key.retired_at.is_none())
        else {
            return Ok(None);
        };
        if active.signs_from > now || active.created_at.plus(period) > now {
            return Ok(None);
        }
        self.rotate_from(
            active.algorithm,
            Some(&active.kid),
            Activation::AfterPublication,
            now,
        )
        .await
    }

    /// Retires the key `kid` now, even if tokens it signed are still alive (they are refused
    /// from now on): its secret is wiped, and its row kept until [`SigningKeys::purge_retired`]
    /// removes it. A key that signs or will sign is never retired.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable.
    pub async fn retire(&self, kid: &str, now: Timestamp) -> Result<RetireOutcome, Error> {
        let outcome = self.store.retire_signing_key(kid, now).await?;
        if outcome == RetireOutcome::Retired {
            tracing::info!(kid, "retired a signing key");
            self.audit(
                "key.retired",
                now,
                &[("kid", Some(kid)), ("when", Some("on request"))],
            )
            .await;
        }
        self.reload(now).await?;
        Ok(outcome)
    }

    /// Retires every deactivated key whose tokens have all expired; returns their `kid`s.
    /// Reads the store only when a loaded key is due.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable.
    pub async fn retire_expired(&self, now: Timestamp) -> Result<Vec<String>, Error> {
        let due = self
            .current()
            .keys
            .iter()
            .any(|key| key.retired_at.is_none() && key.retire_at.is_some_and(|at| at <= now));
        if !due {
            return Ok(Vec::new());
        }
        let retired = self
            .store
            .retire_signing_keys_deactivated_before(now.minus(self.retention), now)
            .await?;
        for kid in &retired {
            tracing::info!(kid, "retired a signing key whose tokens have all expired");
            self.audit(
                "key.retired",
                now,
                &[("kid", Some(kid)), ("when", Some("its tokens expired"))],
            )
            .await;
        }
        self.reload(now).await?;
        Ok(retired)
    }

    /// Deletes the rows of the keys retired more than `retention` before `now` (the store's
    /// retention of sessions and their history); returns how many.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable.
    pub async fn purge_retired(&self, retention: Duration, now: Timestamp) -> Result<u64, Error> {
        let cutoff = now.minus(retention);
        let due = self
            .current()
            .keys
            .iter()
            .any(|key| key.retired_at.is_some_and(|at| at < cutoff));
        if !due {
            return Ok(0);
        }
        let purged = self.store.purge_retired_signing_keys(cutoff).await?;
        if purged > 0 {
            tracing::info!(keys = purged, "purged the rows of retired signing keys");
        }
        self.reload(now).await?;
        Ok(purged)
    }
}

impl SigningKeys {
    /// Appends a key lifecycle audit event. The key change has committed already; a failure
    /// here is logged rather than undoing it.
    async fn audit(&self, kind: &'static str, now: Timestamp, details: &[(&str, Option<&str>)]) {
        let event = NewAuditEvent {
            kind,
            severity: Severity::Info,
            user_id: None,
            session_id: None,
            ip: None,
            at: now,
            details: details
                .iter()
                .filter_map(|(name, value)| {
                    value.map(|value| ((*name).to_owned(), Value::from(value)))
                })
                .collect(),
        };
        if let Err(error) = self.store.append_audit(std::slice::from_ref(&event)).await {
            tracing::warn!(error = %error, kind, "cannot audit a signing key change");
        }
    }
}

fn active_kid(keys: &[StoredKey]) -> Option<String> {
    keys.iter()
        .filter(|key| key.is_active())
        .max_by_key(|key| (key.created_at, key.kid.clone()))
        .map(|key| key.kid.clone())
}

fn info(key: &StoredKey, retention: Duration) -> KeyInfo {
    KeyInfo {
        kid: key.kid.clone(),
        algorithm: key.algorithm,
        created_at: key.created_at,
        signs_from: key.signs_from,
        deactivated_at: key.deactivated_at,
        retire_at: key.deactivated_at.map(|at| at.plus(retention)),
        retired_at: None,
    }
}

fn retired_info(key: &RetiredKey, retention: Duration) -> KeyInfo {
    KeyInfo {
        kid: key.kid.clone(),
        algorithm: key.algorithm,
        created_at: key.created_at,
        signs_from: key.signs_from,
        deactivated_at: key.deactivated_at,
        retire_at: key.deactivated_at.map(|at| at.plus(retention)),
        retired_at: Some(key.retired_at),
    }
}

/// The keyring of `keys` at `at`, signing with the key that signs then: `None` when none does.
/// A database written before one active key at a time may hold one signing key per algorithm;
/// the key of `preferred` (the configured algorithm) then signs, else the newest.
fn keyring_at(
    keys: &[StoredKey],
    preferred: SigningAlgorithm,
    at: Timestamp,
) -> Result<Option<Arc<Keyring>>, Error> {
    let Some(signing) = keys
        .iter()
        .filter(|key| key.signs_at(at))
        .max_by_key(|key| {
            (
                key.algorithm == preferred,
                key.signs_from,
                key.created_at,
                key.kid.clone(),
            )
        })
    else {
        return Ok(None);
    };
    Keyring::from_stored_at(keys, signing.algorithm, at)
        .map(|keyring| Some(Arc::new(keyring)))
        .map_err(|error| Error::Corrupt(error.to_string()))
}

/// Reads the keys; with [`KeyLoading::GenerateFirst`], generates the first key of `algorithm`
/// when the store holds no key at all.
async fn read(
    store: &dyn Store,
    algorithm: SigningAlgorithm,
    retention: Duration,
    loading: KeyLoading,
    now: Timestamp,
) -> Result<Loaded, Error> {
    // The version is read first: a change committed after it moves it again, so the next
    // check reloads.
    let mut version = store.signing_keys_version().await?;
    let mut keys = store.signing_keys().await?;
    let mut now = now;
    if loading == KeyLoading::GenerateFirst && keys.is_empty() {
        // A new database: no verifier can have cached a key set yet, so the first key signs at
        // once. Another instance starting at the same moment may win; then its key is used.
        let key = StoredKey::generate(algorithm, now);
        if store.insert_first_signing_key(&key).await? {
            tracing::info!(kid = %key.kid, alg = algorithm.jose_name(), "generated a signing key");
        }
        version = store.signing_keys_version().await?;
        keys = store.signing_keys().await?;
    }
    // Another instance may have made the first key of a new database a few milliseconds after
    // `now` was read here. A first key that signs from its creation replaces nothing and was
    // published as it was made, so taking it as signing already is harmless.
    let first = keys
        .iter()
        .min_by_key(|key| (key.created_at, key.kid.clone()));
    if let Some(first) = first.filter(|key| key.signs_from == key.created_at && key.is_active()) {
        now = now.max(first.signs_from);
    }
    // The next instant at which the key that signs changes: a key's activation or a
    // deactivation still to come.
    let switch_at = keys
        .iter()
        .flat_map(|key| [Some(key.signs_from), key.deactivated_at])
        .flatten()
        .filter(|at| *at > now)
        .min();
    let switch = match switch_at {
        Some(at) => Some((at, keyring_at(&keys, algorithm, at)?)),
        None => None,
    };
    let retired = store.retired_signing_keys().await?;
    let mut listed: Vec<KeyInfo> = keys
        .iter()
        .map(|key| info(key, retention))
        .chain(retired.iter().map(|key| retired_info(key, retention)))
        .collect();
    listed.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    Ok(Loaded {
        version,
        keyring: keyring_at(&keys, algorithm, now)?,
        switch,
        keys: listed,
    })
}
