//! The master key of encryption at rest, as the server finds it: from `SESSIOND_MASTER_KEY`,
//! from `SESSIOND_MASTER_KEY_FILE`, or in development from a file it generates (mode 0600).
//! Unlocking the database's data keys with it, and rotating it, are in
//! [`sessiond_core::crypt`]; this module only does the I/O around them.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use sessiond_core::Timestamp;
use sessiond_core::crypt::{self, Cipher, MasterKey, Unlocked};
use sessiond_core::store::Store;

use crate::config::{Config, MasterKeySource};

/// Reads a key file: base64 of 32 bytes, surrounding whitespace ignored.
///
/// # Errors
/// When the file cannot be read or does not hold a key; the message names the file, never its
/// content.
pub fn read_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?,
    );
    MasterKey::from_base64(&text).map_err(|_| {
        anyhow!(
            "the master key file {} must hold base64 of 32 bytes",
            path.display()
        )
    })
}

/// Writes a new key into `path`, which must not exist, readable by its owner only.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn generate_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let key = MasterKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the master key file {}", path.display()))?;
    file.write_all(key.to_base64().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the master key file {}", path.display()))?;
    Ok(key)
}

/// The master key `config` names; in development, generated into its file when missing.
///
/// # Errors
/// When the key file cannot be read, written or parsed.
pub fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    match &config.master_key {
        MasterKeySource::Given(key) => Ok(key.clone()),
        MasterKeySource::File(path) => read_key_file(path),
        MasterKeySource::Development(path) if path.exists() => read_key_file(path),
        MasterKeySource::Development(path) => {
            let key = generate_key_file(path)?;
            tracing::warn!(
                file = %path.display(),
                "generated a master key for development; keep this file with the database"
            );
            Ok(key)
        }
    }
}

/// Unlocks `store`'s data keys with the configured master key (or the previous one) and
/// installs them, so that the store seals and opens the encrypted columns. A wrong key stops
/// here, before anything is written.
///
/// # Errors
/// One line: a wrong master key, an unreadable key file, or a storage failure.
pub async fn unlock(
    config: &Config,
    store: &dyn Store,
    now: Timestamp,
) -> anyhow::Result<Arc<Cipher>> {
    let key = master_key(config)?;
    let (cipher, unlocked) = crypt::unlock(store, &key, config.master_key_previous.as_ref(), now)
        .await
        .map_err(|error| anyhow!("cannot unlock the database: {error}"))?;
    match unlocked {
        Unlocked::Current => {}
        Unlocked::Initialized => tracing::info!(
            "encryption at rest initialised: new values are sealed under a new data key"
        ),
        Unlocked::Previous => tracing::warn!(
            "the database opened with SESSIOND_MASTER_KEY_PREVIOUS; run \
             `sessiond keys rotate-master` to re-wrap it under SESSIOND_MASTER_KEY"
        ),
    }
    Ok(cipher)
}

/// Unlocks `store`'s data keys as [`unlock`] does if the database has a key-check value, and
/// otherwise does nothing: a database where encryption was never initialised holds nothing
/// encrypted, and a command that only reads initialises nothing. A wrong master key is refused
/// all the same.
///
/// # Errors
/// As [`unlock`].
pub async fn unlock_existing(
    config: &Config,
    store: &dyn Store,
    now: Timestamp,
) -> anyhow::Result<Option<Arc<Cipher>>> {
    let check = store
        .master_key_check()
        .await
        .map_err(|error| anyhow!("cannot unlock the database: {error}"))?;
    match check {
        None => Ok(None),
        Some(_) => unlock(config, store, now).await.map(Some),
    }
}
