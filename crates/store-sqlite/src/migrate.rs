//! Embedded schema migrations, applied in order inside one transaction each.

use sqlx::{Row, SqliteConnection};

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
        // Each version is looked up rather than compared with the newest applied one, so that
        // migrations numbered apart (0003 written before 0002) are each applied once whatever
        // order builds met the database in.
        if is_applied(&mut tx, *version).await? {
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

async fn is_applied(connection: &mut SqliteConnection, version: i64) -> Result<bool, StoreError> {
    sqlx::query("SELECT 1 FROM schema_migrations WHERE version = ?")
        .bind(version)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)
        .map(|row| row.is_some())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sessiond_core::Timestamp;
    use sessiond_core::store::Store as _;
    use sessiond_core::token::{SigningAlgorithm, StoredKey};
    use sqlx::Connection as _;

    use super::MIGRATIONS;
    use crate::{SqliteSettings, SqliteStore};

    /// A database file made by a build that knew only migration 0001, with its one signing key
    /// and `extra` more migrations recorded as applied.
    async fn a_version_1_database_with_a_key(path: &str, extra: &[i64]) -> StoredKey {
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{path}?mode=rwc"))
            .await
            .expect("create the file");
        sqlx::raw_sql(MIGRATIONS[0].2)
            .execute(&mut connection)
            .await
            .expect("migration 0001");
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
             ) STRICT;
             INSERT INTO schema_migrations VALUES (1, 'initial', 0);",
        )
        .execute(&mut connection)
        .await
        .expect("bookkeeping");
        for version in extra {
            sqlx::query("INSERT INTO schema_migrations VALUES (?, 'from another build', 0)")
                .bind(version)
                .execute(&mut connection)
                .await
                .expect("record a migration");
        }
        let key = StoredKey::generate(SigningAlgorithm::EdDsa, Timestamp::from_unix_millis(1_000));
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, secret, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(key.algorithm.jose_name())
        .bind(&key.secret[..])
        .bind(key.created_at.unix_millis())
        .execute(&mut connection)
        .await
        .expect("a key");
        connection.close().await.expect("close");
        key
    }

    #[tokio::test]
    async fn a_version_1_database_upgrades_with_its_key_active_and_rotatable() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("s.db").display().to_string();
        let key = a_version_1_database_with_a_key(&path, &[]).await;
        let store = SqliteStore::open(&format!("sqlite://{path}"), &SqliteSettings::default())
            .await
            .expect("open and migrate");
        let keys = store.signing_keys().await.expect("keys");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid, key.kid);
        assert!(
            keys[0].is_active(),
            "the only key of its algorithm stays active"
        );
        assert_eq!(*keys[0].secret, *key.secret);
        let version = store.signing_keys_version().await.expect("version");
        let successor =
            StoredKey::generate(key.algorithm, key.created_at.plus(Duration::from_secs(1)));
        assert!(
            store
                .rotate_signing_key(&successor, Some(&key.kid))
                .await
                .expect("rotate")
        );
        assert!(store.signing_keys_version().await.expect("version") > version);
    }

    #[tokio::test]
    async fn a_migration_numbered_below_the_newest_applied_one_is_still_applied() {
        // Migrations may be written out of order (0003 before 0002); each is applied once
        // whatever order builds met the database in.
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("s.db").display().to_string();
        a_version_1_database_with_a_key(&path, &[2]).await;
        let store = SqliteStore::open(&format!("sqlite://{path}"), &SqliteSettings::default())
            .await
            .expect("open and migrate");
        assert_eq!(store.signing_keys_version().await.expect("version"), 0);
        assert_eq!(
            store.migrate().await.expect("migrate"),
            0,
            "nothing left to apply"
        );
    }
}
