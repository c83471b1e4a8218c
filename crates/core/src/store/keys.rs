//! Signing keys: the keyring every instance signs and verifies with.

use async_trait::async_trait;

use super::StoreError;
use crate::time::Timestamp;
use crate::token::StoredKey;

/// What [`Store::retire_signing_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireOutcome {
    /// The key was deleted.
    Retired,
    /// No key has that `kid`.
    NotFound,
    /// The key signs, or will sign, so it was kept.
    Active,
}
/// Persistent signing keys and the version that tells instances when to reload them.
///
/// What an implementer guarantees: a key's secret is sealed with the installed cipher
/// ([`EncryptionStore::install_cipher`](super::EncryptionStore::install_cipher)) before it is
/// written; the first key of an algorithm and each rotation are compare-and-swaps across
/// processes, so instances never make two active keys of one algorithm; a key's `signs_from`
/// and `deactivated_at` round-trip exactly; a key that signs or will sign is never deleted;
/// and every change moves [`KeyStore::signing_keys_version`].
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored signing key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Stores a new signing key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Stores `key` unless an active key of its algorithm already exists; returns whether it was
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

    /// Makes `key` the active key of its algorithm, signing from `key.signs_from`, atomically
    /// across processes: if the active key of that algorithm (the newest one not deactivated)
    /// is `replaces` (`None`: there is none), every key of the algorithm that would still sign
    /// at `key.signs_from` (no `deactivated_at`, or a later one) gets
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

    /// Deletes the key `kid`, secret and all, if it stopped signing at or before `now` (its
    /// `deactivated_at`). A key that signs or will sign is never deleted.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn retire_signing_key(
        &self,
        kid: &str,
        now: Timestamp,
    ) -> Result<RetireOutcome, StoreError>;

    /// Deletes every key deactivated before `cutoff`; returns their `kid`s.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn retire_signing_keys_deactivated_before(
        &self,
        cutoff: Timestamp,
    ) -> Result<Vec<String>, StoreError>;
}
