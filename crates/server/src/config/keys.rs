//! Signing keys and encryption at rest: the access tokens' algorithm, automatic rotation and its
//! publication delay, and where the master key comes from.

use std::path::PathBuf;
use std::time::Duration;

use sessiond_core::crypt::MasterKey;
use sessiond_core::signing_keys::{DEFAULT_PUBLICATION_DELAY, MIN_PUBLICATION_DELAY};
use sessiond_core::token::SigningAlgorithm;

use super::values::*;
use super::*;

/// Where the master key comes from. `Debug` never shows a key.
#[derive(Clone)]
pub enum MasterKeySource {
    /// `SESSIOND_MASTER_KEY`.
    Given(MasterKey),
    /// `SESSIOND_MASTER_KEY_FILE`: read at start; a missing file is an error.
    File(PathBuf),
    /// Development without a key: this file, generated (mode 0600) when missing.
    Development(PathBuf),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given(_) => f.write_str("Given(<redacted>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Development(path) => f.debug_tuple("Development").field(path).finish(),
        }
    }
}

/// The development key file: next to the SQLite database (`sessiond.db.master-key`), or
/// `sessiond.master-key` in the working directory for PostgreSQL or an in-memory database.
pub fn development_key_file(database_url: &str) -> PathBuf {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.starts_with(':'));
    match path {
        Some(path) => PathBuf::from(format!("{path}.master-key")),
        None => PathBuf::from("sessiond.master-key"),
    }
}

pub(super) fn master_key(
    raw: &RawConfig,
    environment: Environment,
    database_url: &str,
    warnings: &mut Vec<String>,
) -> Result<(MasterKeySource, Option<MasterKey>), String> {
    let previous = raw
        .master_key_previous
        .as_ref()
        .map(SecretSetting::expose)
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            MasterKey::from_base64(text)
                .map_err(|_| "SESSIOND_MASTER_KEY_PREVIOUS must be base64 of 32 bytes".to_owned())
        })
        .transpose()?;
    let given = raw
        .master_key
        .as_ref()
        .map(SecretSetting::expose)
        .filter(|text| !text.trim().is_empty());
    let file = raw
        .master_key_file
        .as_deref()
        .map(str::trim)
        .filter(|path| !path.is_empty());
    let source = match (given, file) {
        (Some(_), Some(_)) => {
            return Err("set SESSIOND_MASTER_KEY or SESSIOND_MASTER_KEY_FILE, not both".into());
        }
        (Some(text), None) => MasterKeySource::Given(MasterKey::from_base64(text).map_err(
            // The value is a secret: never repeated.
            |_| {
                "SESSIOND_MASTER_KEY must be base64 of 32 bytes (e.g. openssl rand -base64 32)"
                    .to_owned()
            },
        )?),
        (None, Some(path)) => MasterKeySource::File(PathBuf::from(path)),
        (None, None) if environment == Environment::Production => {
            return Err(
                "production requires SESSIOND_MASTER_KEY or SESSIOND_MASTER_KEY_FILE".into(),
            );
        }
        (None, None) => {
            let path = development_key_file(database_url);
            warnings.push(format!(
                "no SESSIOND_MASTER_KEY: encrypting at rest under the key in {} (generated if \
                 missing); whoever reads that file and the database reads the encrypted columns",
                path.display()
            ));
            MasterKeySource::Development(path)
        }
    };
    Ok((source, previous))
}

/// The shortest automatic key rotation period accepted.
pub const MIN_KEY_ROTATION: Duration = Duration::from_secs(60);

/// How new access tokens are signed, and when the key changes.
pub(super) struct SigningSettings {
    pub(super) algorithm: SigningAlgorithm,
    pub(super) rotation: Option<Duration>,
    pub(super) publication_delay: Duration,
}

/// `SESSIOND_SIGNING_ALG`, `SESSIOND_KEY_ROTATION` (off, or at least [`MIN_KEY_ROTATION`] and
/// the publication delay) and `SESSIOND_KEY_PUBLICATION_DELAY`.
pub(super) fn signing(raw: &RawConfig) -> Result<SigningSettings, String> {
    let signing_algorithm = match raw.signing_alg.as_deref().map(str::trim) {
        None => SigningAlgorithm::EdDsa,
        Some(name) => SigningAlgorithm::from_jose_name(name).ok_or_else(|| {
            format!("SESSIOND_SIGNING_ALG must be EdDSA, ES256, RS256 or HS256 (got {name:?})")
        })?,
    };
    let key_rotation = match duration(
        raw.key_rotation.as_deref(),
        "SESSIOND_KEY_ROTATION",
        Duration::ZERO,
    )? {
        Duration::ZERO => None,
        period if period < MIN_KEY_ROTATION => {
            return Err(format!(
                "SESSIOND_KEY_ROTATION must be 0 (off) or at least 1m (got {})",
                compact_duration(period)
            ));
        }
        period => Some(period),
    };
    let key_publication_delay = match duration(
        raw.key_publication_delay.as_deref(),
        "SESSIOND_KEY_PUBLICATION_DELAY",
        DEFAULT_PUBLICATION_DELAY,
    )? {
        delay if delay < MIN_PUBLICATION_DELAY => {
            return Err(format!(
                "SESSIOND_KEY_PUBLICATION_DELAY must be at least 2s (got {}); an emergency \
                 rotation that signs at once is `sessiond keys rotate --now`",
                compact_duration(delay)
            ));
        }
        delay => delay,
    };
    if let Some(period) = key_rotation.filter(|period| *period < key_publication_delay) {
        return Err(format!(
            "SESSIOND_KEY_ROTATION ({}) must be at least SESSIOND_KEY_PUBLICATION_DELAY ({}): \
             each key is published for the delay before it signs",
            compact_duration(period),
            compact_duration(key_publication_delay)
        ));
    }
    Ok(SigningSettings {
        algorithm: signing_algorithm,
        rotation: key_rotation,
        publication_delay: key_publication_delay,
    })
}
