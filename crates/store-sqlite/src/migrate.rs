//! Embedded schema migrations, applied in order inside one transaction each.

use sqlx::{Row, SqliteConnection};

use crate::error::store_error;
use sessiond_core::store::StoreError;

/// The migrations, in order: `(version, name, sql)`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "events", include_str!("../migrations/0002_events.sql")),
    // 0003 is the signing keys migration.
    (
        4,
        "audit_chain",
        include_str!("../migrations/0004_audit_chain.sql"),
    ),
];

/// Applies the migrations the database lacks; returns how many were applied.
pub(crate) async fn run(connection: &mut SqliteConnection) -> Result<usize, StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         ) STRICT",
    )
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        // The version is read inside the write transaction, so two processes migrating one
        // file at once apply each migration exactly once.
        let mut tx = sqlx::Connection::begin_with(&mut *connection, "BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let applied = applied_version(&mut tx).await?;
        let newest_known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
        if applied > newest_known {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {applied}, newer than this build knows \
                 ({newest_known}); run a newer sessiond"
            )));
        }
        if applied >= *version {
            continue;
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES (?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
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

async fn applied_version(connection: &mut SqliteConnection) -> Result<i64, StoreError> {
    sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut *connection)
        .await
        .map_err(store_error)?
        .try_get(0)
        .map_err(store_error)
}
