//! Where the client keeps its token pair between runs: the [`TokenStore`] trait, its error,
//! and [`MemoryStore`]. The encrypted file store is in `file_store.rs`.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use crate::StoredTokens;

/// Persistence for the token pair.
///
/// The client calls these methods from a blocking thread (`spawn_blocking`), so they may do
/// synchronous I/O. It calls them one at a time per client and in order: `save` of a refreshed
/// pair completes before anyone is given the new access token, and `clear` before
/// `SignedOut` is published.
///
/// What an implementation must guarantee:
/// - **`load`** returns the pair of the last `save` that returned `Ok`, or `None` after a
///   `clear` (or when nothing was ever saved). It never returns a mix of two saves, a
///   truncated pair or a pair it cannot vouch for: anything it cannot read is an error, and a
///   missing store is `Ok(None)`.
/// - **`save`** replaces the pair atomically: if it fails, or the process dies during it,
///   `load` returns either the previous pair or the new one, nothing else. Once it returns
///   `Ok`, the pair survives a crash (it is on stable storage, not only in a buffer).
/// - **`clear`** forgets the pair durably; clearing an empty store is `Ok`.
/// - None of them panics, and none writes a token to a log.
pub trait TokenStore: Send + Sync + std::fmt::Debug + 'static {
    /// The stored pair, if any.
    ///
    /// # Errors
    /// When the store exists but cannot be read, decrypted or parsed.
    fn load(&self) -> Result<Option<StoredTokens>, StoreError>;

    /// Replaces the stored pair with `tokens`.
    ///
    /// # Errors
    /// When the pair cannot be written durably; the previous pair is then still in place.
    fn save(&self, tokens: &StoredTokens) -> Result<(), StoreError>;

    /// Removes the stored pair.
    ///
    /// # Errors
    /// When it cannot be removed.
    fn clear(&self) -> Result<(), StoreError>;
}

/// A failed [`TokenStore`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`read`, `write`, `rename`, `remove`, `sync`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a token file of this format (too short, wrong magic).
    #[error("{path} is not a sessiond token file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file was written by a newer format version.
    #[error("{path} has token file format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// Authenticated decryption failed: the key is wrong, or the file was altered, truncated
    /// or moved to another path (the path is authenticated too).
    #[error("cannot decrypt {path}: wrong key, or the file was altered or moved")]
    Decrypt {
        /// The file.
        path: PathBuf,
    },
    /// The tokens could not be encoded, or decrypted data is not a token pair.
    #[error("cannot encode or decode the token pair")]
    Json(#[source] serde_json::Error),
    /// The operating system's random generator failed.
    #[error("no randomness for a nonce")]
    Random(#[source] getrandom::Error),
    /// A failure of another implementation of [`TokenStore`].
    #[error("token store failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Keeps the pair in memory only: nothing survives the process. For tests, and for
/// applications that persist the pair themselves (they may read it back with [`load`]).
///
/// [`load`]: TokenStore::load
#[derive(Default)]
pub struct MemoryStore {
    tokens: Mutex<Option<StoredTokens>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `tokens`.
    pub fn with_tokens(tokens: StoredTokens) -> Self {
        Self {
            tokens: Mutex::new(Some(tokens)),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<StoredTokens>> {
        // A panic while holding the lock cannot leave a half-written pair: assignments of a
        // whole `Option` are the only writes.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("holds_tokens", &self.slot().is_some())
            .finish()
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Result<Option<StoredTokens>, StoreError> {
        Ok(self.slot().clone())
    }

    fn save(&self, tokens: &StoredTokens) -> Result<(), StoreError> {
        *self.slot() = Some(tokens.clone());
        Ok(())
    }

    fn clear(&self) -> Result<(), StoreError> {
        *self.slot() = None;
        Ok(())
    }
}
