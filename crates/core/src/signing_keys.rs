//! The signing keys in force: loading them, noticing changes other processes make, rotating
//! and retiring.
//!
//! The store holds a keyring shared by every instance: per algorithm one active key, which
//! signs, and older keys that a rotation deactivated and that still verify. A deactivated key
//! is kept until every token it can have signed has expired (its deactivation, plus the access
//! TTL, the leeway and [`RETIREMENT_MARGIN`]) and is then retired, which deletes it, secret and
//! all; an operator may retire it earlier. Each instance holds the keyring in memory and
//! reloads it when the store's cheap key version moves, which the server checks every second,
//! so a rotation or retirement by any process (the `sessiond keys` command included) takes
//! effect everywhere within about a second and never needs a restart.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::audit::{NewAuditEvent, Severity};
use crate::error::Error;
use crate::store::{RetireOutcome, Store};
use crate::time::Timestamp;
use crate::token::{Keyring, SigningAlgorithm, StoredKey};

/// How long a deactivated key is kept beyond the access TTL and the leeway. Until an instance
/// has reloaded the keys after a rotation it still signs with the old key: normally for less
/// than a second, longer only if it cannot read the store, and then it can hardly issue
/// tokens either. The margin covers that.
pub const RETIREMENT_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How often a rotation that lost a race to another process is tried again.
const ROTATION_ATTEMPTS: usize = 3;

/// A signing key's public facts, for listing: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The `kid`.
    pub kid: String,
    /// Its algorithm.
    pub algorithm: SigningAlgorithm,
    /// When it was generated.
    pub created_at: Timestamp,
    /// When a newer key replaced it; `None` while it is the active key of its algorithm.
    pub deactivated_at: Option<Timestamp>,
    /// When every token it can have signed has expired, so that it is retired automatically;
    /// `None` while it is active.
    pub retire_at: Option<Timestamp>,
}

/// What the loaded keyring was built from.
#[derive(Debug)]
struct Loaded {
    /// The store's key version the keys were read at (or after).
    version: i64,
    keyring: Arc<Keyring>,
    keys: Vec<KeyInfo>,
}

/// The keyring of one instance, kept in step with the store.
#[derive(Debug)]
pub struct SigningKeys {
    store: Arc<dyn Store>,
    algorithm: SigningAlgorithm,
    /// How long a deactivated key still verifies.
    retention: Duration,
    /// How old the active key may grow before it is rotated automatically.
    rotation_period: Option<Duration>,
    loaded: RwLock<Arc<Loaded>>,
}

impl SigningKeys {
    /// Loads the keys, generating the first key of `algorithm` if there is no active one.
    /// Tokens validate for `token_lifetime` (access TTL plus leeway) after they are signed.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable.
    pub async fn load(
        store: Arc<dyn Store>,
        algorithm: SigningAlgorithm,
        token_lifetime: Duration,
        rotation_period: Option<Duration>,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let loaded = read(
            store.as_ref(),
            algorithm,
            token_lifetime + RETIREMENT_MARGIN,
            now,
        )
        .await?;
        Ok(Self {
            store,
            algorithm,
            retention: token_lifetime + RETIREMENT_MARGIN,
            rotation_period,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` with the keyring in force, without copying it.
    pub fn with_keyring<R>(&self, f: impl FnOnce(&Keyring) -> R) -> R {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        f(&loaded.keyring)
    }

    /// The keyring in force.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.current().keyring.clone()
    }

    /// The keys as last loaded, oldest first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.current().keys.clone()
    }

    /// The algorithm this instance signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// Reloads the keys if the store's key version moved since they were loaded; returns
    /// whether it did.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable (the keys in force
    /// are then kept).
    pub async fn reload_if_changed(&self, now: Timestamp) -> Result<bool, Error> {
        let version = self.store.signing_keys_version().await?;
        if version == self.current().version {
            return Ok(false);
        }
        self.reload(now).await?;
        Ok(true)
    }

    async fn reload(&self, now: Timestamp) -> Result<(), Error> {
        let loaded = read(self.store.as_ref(), self.algorithm, self.retention, now).await?;
        let before = self.current();
        if before.keyring.signing_kid() != loaded.keyring.signing_kid()
            || before.keys.len() != loaded.keys.len()
        {
            tracing::info!(
                signing_kid = loaded.keyring.signing_kid(),
                keys = loaded.keys.len(),
                "signing keys changed"
            );
        }
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }

    /// Generates a new key of this instance's algorithm and makes it the signing key; the key
    /// it replaces keeps verifying until its tokens have expired. Returns the new key.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable or other processes
    /// kept rotating at the same moment.
    pub async fn rotate(&self, now: Timestamp) -> Result<KeyInfo, Error> {
        for _ in 0..ROTATION_ATTEMPTS {
            let stored = self.store.signing_keys().await?;
            let replaces = active_kid(&stored, self.algorithm);
            if let Some(key) = self.rotate_from(replaces.as_deref(), now).await? {
                return Ok(key);
            }
        }
        Err(Error::Corrupt(
            "other processes rotated the signing key at the same moment, repeatedly".into(),
        ))
    }

    /// Replaces `replaces` with a new key, unless another process replaced it first.
    async fn rotate_from(
        &self,
        replaces: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<KeyInfo>, Error> {
        let key = StoredKey::generate(self.algorithm, now);
        let rotated = self.store.rotate_signing_key(&key, replaces).await?;
        self.reload(now).await?;
        if !rotated {
            return Ok(None);
        }
        tracing::info!(
            kid = %key.kid,
            replaces = replaces.unwrap_or("-"),
            alg = self.algorithm.jose_name(),
            "rotated the signing key"
        );
        self.audit(
            "key.rotated",
            now,
            &[
                ("kid", Some(key.kid.as_str())),
                ("replaces", replaces),
                ("alg", Some(self.algorithm.jose_name())),
            ],
        )
        .await;
        Ok(Some(info(&key, self.retention)))
    }

    /// Rotates if the active key is older than the rotation period; returns the new key if
    /// this call rotated. When another instance rotates at the same moment, only one wins.
    ///
    /// # Errors
    /// As [`SigningKeys::rotate`].
    pub async fn rotate_if_due(&self, now: Timestamp) -> Result<Option<KeyInfo>, Error> {
        let Some(period) = self.rotation_period else {
            return Ok(None);
        };
        let loaded = self.current();
        let Some(active) = loaded
            .keys
            .iter()
            .find(|key| key.algorithm == self.algorithm && key.deactivated_at.is_none())
        else {
            return Ok(None);
        };
        if active.created_at.plus(period) > now {
            return Ok(None);
        }
        self.rotate_from(Some(&active.kid), now).await
    }

    /// Retires the key `kid` now, even if tokens it signed are still alive (they are refused
    /// from now on). The active key is never retired.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when a stored key is unusable.
    pub async fn retire(&self, kid: &str, now: Timestamp) -> Result<RetireOutcome, Error> {
        let outcome = self.store.retire_signing_key(kid).await?;
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
            .any(|key| key.retire_at.is_some_and(|at| at <= now));
        if !due {
            return Ok(Vec::new());
        }
        let retired = self
            .store
            .retire_signing_keys_deactivated_before(now.minus(self.retention))
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

fn active_kid(keys: &[StoredKey], algorithm: SigningAlgorithm) -> Option<String> {
    keys.iter()
        .filter(|key| key.algorithm == algorithm && key.is_active())
        .max_by_key(|key| (key.created_at, key.kid.clone()))
        .map(|key| key.kid.clone())
}

fn info(key: &StoredKey, retention: Duration) -> KeyInfo {
    KeyInfo {
        kid: key.kid.clone(),
        algorithm: key.algorithm,
        created_at: key.created_at,
        deactivated_at: key.deactivated_at,
        retire_at: key.deactivated_at.map(|at| at.plus(retention)),
    }
}

/// Reads the keys, generating the first key of `algorithm` when it has no active key.
async fn read(
    store: &dyn Store,
    algorithm: SigningAlgorithm,
    retention: Duration,
    now: Timestamp,
) -> Result<Loaded, Error> {
    // The version is read first: a change committed after it moves it again, so the next
    // check reloads.
    let mut version = store.signing_keys_version().await?;
    let mut keys = store.signing_keys().await?;
    if active_kid(&keys, algorithm).is_none() {
        let key = StoredKey::generate(algorithm, now);
        // Another instance starting at the same moment may win; then its key is used.
        if store.insert_first_signing_key(&key).await? {
            tracing::info!(kid = %key.kid, alg = algorithm.jose_name(), "generated a signing key");
        }
        version = store.signing_keys_version().await?;
        keys = store.signing_keys().await?;
    }
    let keyring = Keyring::from_stored(&keys, algorithm)
        .map_err(|error| Error::Corrupt(error.to_string()))?;
    Ok(Loaded {
        version,
        keyring: Arc::new(keyring),
        keys: keys.iter().map(|key| info(key, retention)).collect(),
    })
}
