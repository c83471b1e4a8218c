//! [`EncryptedFileStore`]: the token pair in one AES-256-GCM encrypted file, replaced
//! atomically, readable only by its owner.
//!
//! File format (version 1), all in one file:
//!
//! ```text
//! "SDCT" (4 bytes) | version = 1 (1 byte) | nonce (12 random bytes) | AES-256-GCM ciphertext and tag
//! ```
//!
//! The plaintext is the pair as JSON. The associated data is the 5-byte header followed by the
//! file's path as given to [`EncryptedFileStore::new`], so a file copied to another path (or
//! another application's store) does not decrypt there.
//!
//! A write goes to a new temporary file in the same directory (created with mode 0600), which
//! is synced, renamed over the store file, and the directory is then synced. A crash at any
//! point leaves either the old file or the new one under the store's name; an interrupted
//! write leaves at most a stray `.NAME.*.tmp` file, which [`EncryptedFileStore::load`] never
//! reads.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::{StoreError, StoredTokens, TokenStore};

const MAGIC: &[u8; 4] = b"SDCT";
const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A 256-bit key for [`EncryptedFileStore`]. Zeroed on drop; `Debug` shows nothing of it.
///
/// The client does not read the key from an OS keyring itself: on Linux that needs D-Bus and a
/// running Secret Service (absent on servers, containers and CI), and the keyring crates pull
/// in a large platform-specific tree. An application that has a keyring stores 32 random bytes
/// there (see [`FileKey::generate`]) and passes them in; one that has none can derive the key
/// from a secret it already keeps. The key must not live next to the file it protects.
#[derive(Clone)]
pub struct FileKey([u8; 32]);

impl FileKey {
    /// The key `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new random key, to be kept by the application (in its keyring).
    ///
    /// # Errors
    /// When the operating system's random generator fails.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(StoreError::Random)?;
        Ok(Self(bytes))
    }

    /// The key's bytes, to be stored by the application.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for FileKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(<redacted>)")
    }
}

/// Keeps the pair in one encrypted file (see the module documentation for the format).
///
/// Guarantees, beyond those of [`TokenStore`]: the file is created with mode 0600 (on Unix);
/// a crash during [`save`](TokenStore::save) leaves the previous file intact and readable; a
/// damaged, truncated or tampered file, or a wrong key, is an error from
/// [`load`](TokenStore::load), never a panic and never a partial pair. Two processes saving at
/// once each write their own temporary file, and the last rename wins whole.
pub struct EncryptedFileStore {
    path: PathBuf,
    cipher: LessSafeKey,
}

impl EncryptedFileStore {
    /// A store at `path` under `key`. Nothing is read or written until the first operation;
    /// the directory must exist.
    pub fn new(path: impl Into<PathBuf>, key: &FileKey) -> Self {
        Self {
            path: path.into(),
            cipher: LessSafeKey::new(
                #[allow(clippy::expect_used)]
                UnboundKey::new(&AES_256_GCM, &key.0).expect("an AES-256 key is 32 bytes"),
            ),
        }
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn associated_data(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_encoded_bytes();
        let mut data = Vec::with_capacity(HEADER_LEN + path.len());
        data.extend_from_slice(MAGIC);
        data.push(VERSION);
        data.extend_from_slice(path);
        data
    }

    fn directory(&self) -> &Path {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        }
    }

    fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    /// Syncs the directory so that a rename or removal in it survives a crash.
    fn sync_directory(&self) -> Result<(), StoreError> {
        #[cfg(unix)]
        {
            let directory = self.directory();
            File::open(directory)
                .and_then(|handle| handle.sync_all())
                .map_err(Self::io_error("sync", directory))?;
        }
        Ok(())
    }

    fn temporary_path(&self) -> Result<PathBuf, StoreError> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(StoreError::Random)?;
        let suffix: String = suffix.iter().map(|byte| format!("{byte:02x}")).collect();
        let name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tokens".to_owned());
        Ok(self.directory().join(format!(".{name}.{suffix}.tmp")))
    }

    fn write_new_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    }

    fn decrypt(&self, bytes: &[u8]) -> Result<StoredTokens, StoreError> {
        let corrupt = |reason| StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt("too short for a header"));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("wrong magic bytes"));
        }
        let version = bytes[MAGIC.len()];
        if version != VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: self.path.clone(),
                found: version,
                supported: VERSION,
            });
        }
        if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(corrupt("too short for a nonce and a tag"));
        }
        let (nonce, ciphertext) = bytes[HEADER_LEN..].split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| corrupt("too short for a nonce and a tag"))?;
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        let opened = self
            .cipher
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(self.associated_data()),
                &mut plaintext,
            )
            .map_err(|_| StoreError::Decrypt {
                path: self.path.clone(),
            })?
            .len();
        plaintext.truncate(opened);
        serde_json::from_slice(&plaintext).map_err(StoreError::Json)
    }
}

impl std::fmt::Debug for EncryptedFileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedFileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TokenStore for EncryptedFileStore {
    fn load(&self) -> Result<Option<StoredTokens>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Self::io_error("read", &self.path)(error)),
        };
        self.decrypt(&bytes).map(Some)
    }

    fn save(&self, tokens: &StoredTokens) -> Result<(), StoreError> {
        let plaintext = Zeroizing::new(serde_json::to_vec(tokens).map_err(StoreError::Json)?);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(StoreError::Random)?;
        let mut contents = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        contents.extend_from_slice(MAGIC);
        contents.push(VERSION);
        contents.extend_from_slice(&nonce);
        contents.extend_from_slice(&plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.associated_data()),
                &mut contents[HEADER_LEN + NONCE_LEN..],
            )
            .map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                reason: "the token pair is too large to encrypt",
            })?;
        contents.extend_from_slice(tag.as_ref());

        let temporary = self.temporary_path()?;
        if let Err(error) = Self::write_new_file(&temporary, &contents) {
            let _ = fs::remove_file(&temporary);
            return Err(Self::io_error("write", &temporary)(error));
        }
        if let Err(error) = fs::rename(&temporary, &self.path) {
            let _ = fs::remove_file(&temporary);
            return Err(Self::io_error("rename", &self.path)(error));
        }
        self.sync_directory()
    }

    fn clear(&self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => self.sync_directory(),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Self::io_error("remove", &self.path)(error)),
        }
    }
}
