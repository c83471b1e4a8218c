//! Embedded schema migrations, each applied in its own transaction, one instance at a time.
//!
//! Several sessiond instances may start at once against one database, and each migrates. Every
//! migration transaction therefore first takes a transaction-scoped advisory lock on a constant
//! key, and only then creates the bookkeeping table (if missing) and reads the applied version.
//! The second instance waits for the first to commit, then reads the new version and applies
//! nothing. PostgreSQL's DDL is transactional, so a failed migration leaves no trace.
//!
//! The store's `statement_timeout` applies here too (waiting for another instance's migration
//! included). A future migration that rewrites a large table should raise it for itself with
//! `SET LOCAL statement_timeout = …` at its top.

use sqlx::{PgConnection, Row};

use crate::error::store_error;
use sessiond_core::store::StoreError;

/// The migrations, in order: `(version, name, sql)`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "events", include_str!("../migrations/0002_events.sql")),
    (
        3,
        "key_rotation",
        include_str!("../migrations/0003_key_rotation.sql"),
    ),
    (
        4,
        "audit_chain",
        include_str!("../migrations/0004_audit_chain.sql"),
    ),
    (5, "devices", include_str!("../migrations/0005_devices.sql")),
    (
        6,
        "encryption_at_rest",
        include_str!("../migrations/0006_encryption_at_rest.sql"),
    ),
    (
        7,
        "staged_key_rotation",
        include_str!("../migrations/0007_staged_key_rotation.sql"),
    ),
    (
        8,
        "retired_keys",
        include_str!("../migrations/0008_retired_keys.sql"),
    ),
    (9, "dpop", include_str!("../migrations/0009_dpop.sql")),
    (10, "dbsc", include_str!("../migrations/0010_dbsc.sql")),
    (
        11,
        "expiry_check",
        include_str!("../migrations/0011_expiry_check.sql"),
    ),
    (
        12,
        "token_chains",
        include_str!("../migrations/0012_token_chains.sql"),
    ),
    (
        13,
        "successor_pair_expiry",
        include_str!("../migrations/0013_successor_pair_expiry.sql"),
    ),
];

/// The advisory lock that serialises migrations across instances, keyed by a hash of the schema
/// and a constant name like the per-user locks (a collision with one of those would only make
/// it wait a moment). Instances share a key exactly when they share the tables.
const LOCK_MIGRATIONS: &str = "SELECT pg_advisory_xact_lock(hashtextextended(
     coalesce(current_schema(), '') || '/sessiond/migrate', 0))";

/// Applies the migrations the database lacks; returns how many were applied.
pub(crate) async fn run(connection: &mut PgConnection) -> Result<usize, StoreError> {
    let newest_known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        let mut tx = sqlx::Connection::begin(&mut *connection)
            .await
            .map_err(store_error)?;
        sqlx::query(LOCK_MIGRATIONS)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        // Created under the lock: `CREATE TABLE IF NOT EXISTS` is not safe against a
        // concurrent twin (both may pass the check and one then fails on the catalog).
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at BIGINT NOT NULL
             )",
        )
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let applied = applied_version(&mut tx).await?;
        if applied > newest_known {
            // Rolled back at once rather than when the connection is next used, so the lock
            // is not held while the caller reports the error.
            tx.rollback().await.map_err(store_error)?;
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {applied}, newer than this build knows \
                 ({newest_known}); run a newer sessiond"
            )));
        }
        // Each version is looked up rather than compared with the newest applied one, so that
        // migrations numbered apart (0003 written before 0002) are each applied once whatever
        // order builds met the database in.
        if is_applied(&mut tx, *version).await? {
            tx.commit().await.map_err(store_error)?;
            continue;
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)",
        )
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        tracing::info!(version, name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// Refuses a database that lacks one of this build's migrations (or has a newer schema),
/// reading only: what a command that writes nothing opens the database with.
pub(crate) async fn require_current(connection: &mut PgConnection) -> Result<(), StoreError> {
    let has_table: bool = sqlx::query("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *connection)
        .await
        .map_err(store_error)?
        .try_get(0)
        .map_err(store_error)?;
    let applied: Vec<i64> = if has_table {
        sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *connection)
            .await
            .map_err(store_error)?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(store_error)?
    } else {
        Vec::new()
    };
    sessiond_core::store::require_migrations(&applied, MIGRATIONS)
}

async fn applied_version(connection: &mut PgConnection) -> Result<i64, StoreError> {
    sqlx::query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations")
        .fetch_one(&mut *connection)
        .await
        .map_err(store_error)?
        .try_get(0)
        .map_err(store_error)
}

async fn is_applied(connection: &mut PgConnection, version: i64) -> Result<bool, StoreError> {
    sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
        .bind(version)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)
        .map(|row| row.is_some())
}
