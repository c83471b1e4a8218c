//! The state every request handler shares, and how it is built from a configuration.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sessiond_core::service::ServiceSettings;
use sessiond_core::store::Store;
use sessiond_core::token::AccessTokenIssuer;
use sessiond_core::{Clock, SessionService, Timestamp};
use sessiond_store_sqlite::{SqliteSettings, SqliteStore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_unix_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The configured admin keys, kept as SHA-256 digests so that every comparison takes the same
/// time whatever the presented key's length, and compared against all keys every time.
pub struct AdminKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKeys(<{} redacted>)", self.digests.len())
    }
}

impl AdminKeys {
    /// Digests of `keys`.
    pub fn new(keys: &[String]) -> Self {
        Self {
            digests: keys
                .iter()
                .map(|key| Sha256::digest(key.as_bytes()).into())
                .collect(),
        }
    }

    /// Whether `presented` is one of the keys, in time independent of which (if any) matches.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = subtle::Choice::from(0);
        for key in &self.digests {
            found |= key.ct_eq(&digest);
        }
        found.into()
    }
}

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The session operations.
    pub service: Arc<SessionService>,
    /// Admin credentials.
    pub admin_keys: Arc<AdminKeys>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

impl AppState {
    /// Opens the store named by `config`, brings its schema up to date, and starts the service.
    ///
    /// # Errors
    /// When the store cannot be opened or the service cannot start.
    pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = open_store(config).await?;
        let service = SessionService::start(
            store,
            clock,
            ServiceSettings {
                policy: config.policy.clone(),
                tokens: AccessTokenIssuer {
                    issuer: config.issuer.clone(),
                    audience: config.audience.clone(),
                    client_id: config.client_id.clone(),
                },
                signing_algorithm: config.signing_algorithm,
            },
        )
        .await
        .context("cannot start the session service")?;
        Ok(Self {
            service: Arc::new(service),
            admin_keys: Arc::new(AdminKeys::new(&config.admin_keys)),
            body_limit: config.body_limit,
        })
    }
}

/// Opens the store named by `config.database_url`.
///
/// # Errors
/// When the database cannot be opened or migrated.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let settings = SqliteSettings {
        synchronous: config.sqlite_synchronous,
        ..SqliteSettings::default()
    };
    let store = SqliteStore::open(&config.database_url, &settings)
        .await
        .with_context(|| format!("cannot open database {}", config.database_url))?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_keys_match_exactly() {
        let keys = AdminKeys::new(&["a".repeat(32), "b".repeat(40)]);
        assert!(keys.matches(&"a".repeat(32)));
        assert!(keys.matches(&"b".repeat(40)));
        assert!(!keys.matches(&"a".repeat(31)));
        assert!(!keys.matches(""));
        assert!(!AdminKeys::new(&[]).matches(""));
    }
}
