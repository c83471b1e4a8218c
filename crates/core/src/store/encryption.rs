//! The keys of encryption at rest: the master key's check value and the wrapped data keys.

use async_trait::async_trait;

use super::StoreError;
use crate::crypt::{Cipher, WrappedDataKey};

/// Persistent keys of encryption at rest. The master key itself is never given to a store.
///
/// What an implementer guarantees: the check value and the first data key are stored once,
/// atomically across processes; a re-wrap replaces every data key and the check value in one
/// compare-and-swap, never rewriting a row of data; and once a cipher is installed, every
/// encrypted column (see [`crate::crypt::columns`]) is sealed on write, bound to its column and
/// row, while values written before encryption existed still read as they are.
#[async_trait]
pub trait EncryptionStore: Send + Sync {
    /// The key-check value of the master key the data keys are wrapped under, or `None` when
    /// the database was never encrypted.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `check` and the first data key, unless a check value exists already; returns
    /// whether it stored them. Atomic across processes, so instances starting together on an
    /// unencrypted database agree on one data key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn initialize_encryption(
        &self,
        check: &[u8],
        first: &WrappedDataKey,
    ) -> Result<bool, StoreError>;

    /// Every stored data key, wrapped.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError>;

    /// In one transaction: if the check value is `old_check` and `keys` names every stored data
    /// key, replaces each key's wrapped form and the check value with `new_check`; otherwise
    /// writes nothing and answers `false`.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is changed then.
    async fn rewrap_data_keys(
        &self,
        old_check: &[u8],
        new_check: &[u8],
        keys: &[WrappedDataKey],
    ) -> Result<bool, StoreError>;

    /// Seals every encrypted column written from now on with `cipher`, and opens sealed values
    /// with it. Until it is called a store writes values as they are.
    fn install_cipher(&self, cipher: std::sync::Arc<Cipher>);
}
