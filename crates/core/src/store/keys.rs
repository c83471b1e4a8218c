//! Signing keys: the keyring every instance signs and verifies with.

use async_trait::async_trait;

use super::StoreError;
use crate::time::Timestamp;
use crate::token::{SigningAlgorithm, StoredKey};

/// What [`KeyStore::retire_signing_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireOutcome {
    /// The key was retired: its secret wiped, its row kept with `retired_at`.
    Retired,
    /// No key has that `kid`.
    NotFound,
    /// The key was retired before.
    AlreadyRetired,
    /// The key signs, or will sign, so it was kept.
    Active,
}

/// A retired signing key's row: its public facts, its secret wiped. Kept for listing until
/// the store's retention passes, then purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    /// The `kid`.
    pub kid: String,
    /// Its algorithm.
    pub algorithm: SigningAlgorithm,
    /// When it was generated and published.
    pub created_at: Timestamp,
    /// When it started signing.
    pub signs_from: Timestamp,
    /// When its successor took over signing.
    pub deactivated_at: Option<Timestamp>,
    /// When it was retired.
    pub retired_at: Timestamp,
}
/// Persistent signing keys and the version that tells instances when to reload them.
///
/// What an implementer guarantees: a key's secret is sealed with the installed cipher
/// ([`EncryptionStore::install_cipher`](super::EncryptionStore::install_cipher)) before it is
/// written; the first key of an algorithm and each rotation are compare-and-swaps across
/// processes, so instances never make two active keys, whatever their algorithms; a key's
/// `signs_from` and `deactivated_at` round-trip exactly; a key that signs or will sign is never
/// retired; a retired key keeps its row (with `retired_at`, its secret wiped) until it is
/// purged; and every change moves [`KeyStore::signing_keys_version`].
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored signing key that is not retired (retired ones have no secret).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Stores a new signing key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Stores `key` unless an active key (of any algorithm) already exists; returns whether it was
    /// stored. Atomic across processes, so instances starting together on an empty database
    /// agree on one first key instead of each signing with a key the others do not know.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn insert_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError>;

    /// A number that changes whenever the stored signing keys change (a key added, replaced or
    /// retired, by any process). Cheap: instances read it every second and reload the keys only
    /// when it moved.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn signing_keys_version(&self) -> Result<i64, StoreError>;

    /// Makes `key` the active key, signing from `key.signs_from`, atomically across processes:
    /// if the active key (the newest one not deactivated, whatever its algorithm) is `replaces`
    /// (`None`: there is none), every key that would still sign at `key.signs_from` (no
    /// `deactivated_at`, or a later one), of any algorithm, gets
    /// `deactivated_at = key.signs_from`, and `key` is stored with no `deactivated_at`.
    /// Otherwise nothing is written and `false` is returned: another process rotated first.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn rotate_signing_key(
        &self,
        key: &StoredKey,
        replaces: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Retires the key `kid` if it stopped signing at or before `now` (its `deactivated_at`):
    /// sets its `retired_at` to `now` and wipes its secret, keeping the row. A key that signs
    /// or will sign is never retired.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn retire_signing_key(
        &self,
        kid: &str,
        now: Timestamp,
    ) -> Result<RetireOutcome, StoreError>;

    /// Retires, as [`KeyStore::retire_signing_key`] does at `now`, every key not retired yet
    /// that was deactivated before `cutoff`; returns their `kid`s.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn retire_signing_keys_deactivated_before(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError>;

    /// The retired keys' rows, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn retired_signing_keys(&self) -> Result<Vec<RetiredKey>, StoreError>;

    /// Deletes the rows of the keys retired before `cutoff`; returns how many.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn purge_retired_signing_keys(&self, cutoff: Timestamp) -> Result<u64, StoreError>;
}
