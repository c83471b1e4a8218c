//! Opening the store a database URL names (a SQLite file or PostgreSQL), bringing its schema
//! up to date, and the checks a database must pass before a server starts on it.

use std::sync::Arc;

use anyhow::Context as _;
use sessiond_core::Clock;
use sessiond_core::store::Store;
use sessiond_core::token::SigningAlgorithm;
use sessiond_store_postgres::{PostgresSettings, PostgresStore};
use sessiond_store_sqlite::{SqliteSettings, SqliteStore};

use crate::config::{Config, is_postgres_url, redact_password};

/// Whether opening the database may create it, and what starting may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file when it does not exist, initialise encryption and generate the first
    /// signing key on a new database, and refuse a `SESSIOND_SIGNING_ALG` no stored key signs
    /// with: `serve`.
    CreateIfMissing,
    /// Fail when it does not exist, so that a mistyped path is an error rather than a new,
    /// empty database, and generate no signing key: the commands that change something
    /// (`sessions revoke`, `keys rotate`, `audit seal`...).
    MustExist,
    /// As [`OpenMode::MustExist`], and write nothing at all (encryption is not initialised
    /// either): the commands that only read (`keys list`, `sessions list`, `audit verify`...).
    ReadOnly,
    /// As [`OpenMode::ReadOnly`], but the schema is taken as it is, not required to be up to
    /// date: `backup`, which copies a database of any version (before an upgrade migrates it).
    AsIs,
}

/// Refuses to serve with `algorithm` when the database has signing keys but none of
/// `algorithm` that signs now: changing the algorithm is an explicit rotation
/// (`sessiond keys rotate --alg X`), published before it signs, never a side effect of a
/// setting. A new database (no key at all) gets its first key when the service starts.
///
/// # Errors
/// One line naming what to do; a storage failure.
pub(crate) async fn check_signing_algorithm(
    store: &dyn Store,
    algorithm: SigningAlgorithm,
    clock: &dyn Clock,
) -> anyhow::Result<()> {
    let keys = store
        .signing_keys()
        .await
        .context("cannot read the signing keys")?;
    // Read after the keys, so that a first key another instance made a moment ago signs by now.
    let now = clock.now();
    let name = algorithm.jose_name();
    if keys.is_empty()
        || keys
            .iter()
            .any(|key| key.algorithm == algorithm && key.signs_at(now))
    {
        return Ok(());
    }
    if let Some(waiting) = keys
        .iter()
        .find(|key| key.algorithm == algorithm && key.is_active() && key.signs_from > now)
    {
        anyhow::bail!(
            "the {name} signing key {} is published but signs only from {}: start instances with \
             SESSIOND_SIGNING_ALG={name} after then",
            waiting.kid,
            crate::http::convert::rfc3339(waiting.signs_from)
        );
    }
    let mut signing: Vec<&str> = keys
        .iter()
        .filter(|key| key.signs_at(now))
        .map(|key| key.algorithm.jose_name())
        .collect();
    signing.sort_unstable();
    signing.dedup();
    anyhow::bail!(
        "SESSIOND_SIGNING_ALG is {name} but no {name} key signs in this database (it signs with \
         {}): run `sessiond keys rotate --alg {name}` to publish one, which signs after the \
         publication delay, or keep SESSIOND_SIGNING_ALG={}",
        signing.join(", "),
        signing
            .first()
            .copied()
            .unwrap_or("the algorithm its keys have")
    )
}

/// Opens the store named by `config.database_url` with `config`'s durability, creating the
/// file or not as `mode` says, and brings its schema up to date (with [`OpenMode::ReadOnly`],
/// refuses one that is not, writing nothing).
///
/// # Errors
/// When the database cannot be opened or migrated (or, with [`OpenMode::MustExist`], does not
/// exist): `cannot open database URL: reason`.
pub async fn open_sqlite(config: &Config, mode: OpenMode) -> anyhow::Result<SqliteStore> {
    let settings = SqliteSettings {
        synchronous: config.sqlite_synchronous,
        max_size: config.sqlite_max_size,
        create_if_missing: mode == OpenMode::CreateIfMissing,
        read_only: matches!(mode, OpenMode::ReadOnly | OpenMode::AsIs),
        ..SqliteSettings::default()
    };
    let failed = |error: sessiond_core::store::StoreError| {
        anyhow::anyhow!(
            "cannot open database {}: {}",
            config.database_url,
            error_chain(&error)
        )
    };
    let store = SqliteStore::open(&config.database_url, &settings)
        .await
        .map_err(failed)?;
    if mode == OpenMode::ReadOnly
        && let Err(error) = store.require_current_schema().await
    {
        store.close().await;
        return Err(failed(error));
    }
    Ok(store)
}

/// `error` and its sources on one line, leaving out a source that only repeats the message
/// before it (SQLite errors repeat their `(code: N) reason` as their own source).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut previous = line.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !previous.contains(&message) {
            line.push_str(": ");
            line.push_str(&message);
        }
        previous = message;
        source = cause.source();
    }
    line.replace('\n', " ")
}

/// Opens the PostgreSQL database at `config.database_url` and brings its schema up to date,
/// or, with [`OpenMode::ReadOnly`], only checks that it is.
///
/// # Errors
/// When the database cannot be reached or migrated, or opened read-only lacks a migration:
/// `cannot open database URL: reason`.
pub async fn open_postgres(config: &Config, mode: OpenMode) -> anyhow::Result<PostgresStore> {
    let failed = |error: sessiond_core::store::StoreError| {
        anyhow::anyhow!(
            "cannot open database {}: {}",
            redact_password(&config.database_url),
            error_chain(&error)
        )
    };
    let store = PostgresStore::open(&config.database_url, &PostgresSettings::default())
        .await
        .map_err(failed)?;
    match mode {
        OpenMode::ReadOnly => store.require_current_schema().await.map_err(failed)?,
        OpenMode::AsIs => {}
        OpenMode::CreateIfMissing | OpenMode::MustExist => {
            store.migrate().await.map_err(failed)?;
        }
    }
    Ok(store)
}

/// The store named by `config.database_url` (SQLite or PostgreSQL), as the service runs on it.
///
/// # Errors
/// As [`open_sqlite`] and [`open_postgres`].
pub async fn open_store(config: &Config, mode: OpenMode) -> anyhow::Result<Arc<dyn Store>> {
    if is_postgres_url(&config.database_url) {
        Ok(Arc::new(open_postgres(config, mode).await?))
    } else {
        Ok(Arc::new(open_sqlite(config, mode).await?))
    }
}
