//! Embedded schema migrations, applied in order inside one transaction each.
//!
//! Each migration runs in its own `BEGIN IMMEDIATE` transaction, so two processes opening one
//! file never apply a migration twice, and each version is looked up by itself, so a migration
//! numbered below one already applied (a branch that landed later) is still applied. A
//! database whose schema is newer than this build is refused rather than opened.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

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
        "hot_path_indexes",
        include_str!("../migrations/0007_hot_path_indexes.sql"),
    ),
    (
        8,
        "write_probe",
        include_str!("../migrations/0008_write_probe.sql"),
    ),
    (
        9,
        "staged_key_rotation",
        include_str!("../migrations/0009_staged_key_rotation.sql"),
    ),
    (
        10,
        "retired_keys",
        include_str!("../migrations/0010_retired_keys.sql"),
    ),
    (11, "dpop", include_str!("../migrations/0011_dpop.sql")),
    (12, "dbsc", include_str!("../migrations/0012_dbsc.sql")),
    (
        13,
        "unread_indexes",
        include_str!("../migrations/0013_unread_indexes.sql"),
    ),
    (
        14,
        "token_tree",
        include_str!("../migrations/0014_token_tree.sql"),
    ),
    (
        15,
        "expiry_check",
        include_str!("../migrations/0015_expiry_check.sql"),
    ),
    (
        16,
        "successor_pair_expiry",
        include_str!("../migrations/0016_successor_pair_expiry.sql"),
    ),
    (
        17,
        "events_purged_by_id",
        include_str!("../migrations/0017_events_purged_by_id.sql"),
    ),
    (
        18,
        "token_session_row",
        include_str!("../migrations/0018_token_session_row.sql"),
    ),
    (
        19,
        "positions_as_row_ids",
        include_str!("../migrations/0019_positions_as_row_ids.sql"),
    ),
    (
        20,
        "session_activity",
        include_str!("../migrations/0020_session_activity.sql"),
    ),
];

/// Applies the migrations the database lacks; returns how many were applied.
pub(crate) fn run(connection: &mut Connection) -> Result<usize, StoreError> {
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at INTEGER NOT NULL
             ) STRICT",
        )
        .map_err(store_error)?;
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        // The version is read inside the write transaction, so two processes migrating one
        // file at once apply each migration exactly once.
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_error)?;
        let applied: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(store_error)?;
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
        let is_applied = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [version],
                |_| Ok(()),
            )
            .optional()
            .map_err(store_error)?
            .is_some();
        if is_applied {
            continue;
        }
        tx.execute_batch(sql).map_err(store_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
            params![version, name],
        )
        .map_err(store_error)?;
        tx.commit().map_err(store_error)?;
        tracing::info!(version, name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// Refuses a database that lacks one of this build's migrations (or has a newer schema),
/// reading only: what a command that writes nothing opens the file with.
pub(crate) fn require_current(connection: &Connection) -> Result<(), StoreError> {
    let has_table = connection
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(store_error)?
        .is_some();
    let applied: Vec<i64> = if has_table {
        let mut statement = connection
            .prepare("SELECT version FROM schema_migrations")
            .map_err(store_error)?;
        statement
            .query_map([], |row| row.get(0))
            .map_err(store_error)?
            .collect::<Result<_, _>>()
            .map_err(store_error)?
    } else {
        Vec::new()
    };
    sessiond_core::store::require_migrations(&applied, MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sessiond_core::Timestamp;
    use sessiond_core::store::KeyStore as _;
    use sessiond_core::token::{SigningAlgorithm, StoredKey};

    use super::MIGRATIONS;
    use crate::test_support::column;
    use crate::{SqliteSettings, SqliteStore};

    /// A database file made by a build that knew only migration 0001, with its one signing key
    /// and `extra` more migrations recorded as applied.
    fn a_version_1_database_with_a_key(path: &str, extra: &[i64]) -> StoredKey {
        let connection = rusqlite::Connection::open(path).expect("create the file");
        connection
            .execute_batch(MIGRATIONS[0].2)
            .expect("migration 0001");
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
                 ) STRICT;
                 INSERT INTO schema_migrations VALUES (1, 'initial', 0);",
            )
            .expect("bookkeeping");
        for version in extra {
            connection
                .execute(
                    "INSERT INTO schema_migrations VALUES (?1, 'from another build', 0)",
                    [version],
                )
                .expect("record a migration");
        }
        let key = StoredKey::generate(SigningAlgorithm::EdDsa, Timestamp::from_unix_millis(1_000));
        connection
            .execute(
                "INSERT INTO signing_keys (kid, algorithm, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    key.kid,
                    key.algorithm.jose_name(),
                    &key.secret[..],
                    key.created_at.unix_millis()
                ],
            )
            .expect("a key");
        key
    }

    #[tokio::test]
    async fn a_version_1_database_upgrades_with_its_key_active_and_rotatable() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("s.db").display().to_string();
        let key = a_version_1_database_with_a_key(&path, &[]);
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
        assert_eq!(
            keys[0].signs_from, key.created_at,
            "a key stored before staged rotation signed from its creation"
        );
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
        // 0012 (DBSC bindings) creates a table of its own that no later migration touches.
        a_version_1_database_with_a_key(&path, &[12]);
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

    /// A file at migration 0018, with the schema as it was applied then.
    fn at_version_18() -> rusqlite::Connection {
        let connection = rusqlite::Connection::open_in_memory().expect("open");
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
                 ) STRICT",
            )
            .expect("schema_migrations");
        for (version, name, sql) in &MIGRATIONS[..18] {
            connection.execute_batch(sql).expect("migration");
            connection
                .execute(
                    "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                    rusqlite::params![version, name],
                )
                .expect("record");
        }
        connection
    }

    /// Migration 0019 keeps every chained audit row at its position, moves a row not yet
    /// chained after them (to be chained by the sealer), and lets no event id be handed out
    /// again, even when the purge had deleted the newest events before it.
    #[test]
    fn positions_become_row_ids_and_no_event_id_comes_back() {
        let mut connection = at_version_18();
        connection
            .execute_batch(
                "INSERT INTO audit_events (seq, type, severity, at, details, chain_seq, prev_hash, hash)
                 VALUES (10, 'a', 'info', 1, '{}', 1, zeroblob(32), randomblob(32)),
                        (11, 'b', 'info', 2, '{}', 2, randomblob(32), randomblob(32)),
                        (12, 'c', 'info', 3, '{}', NULL, NULL, NULL),
                        (13, 'd', 'info', 4, '{}', NULL, NULL, NULL);
                 INSERT INTO events (type, user_id, at, data)
                 VALUES ('e', 'u', 1, '{}'), ('e', 'u', 2, '{}'), ('e', 'u', 3, '{}');
                 DELETE FROM events WHERE id = 3;",
            )
            .expect("rows");
        let chained = "SELECT chain_seq || ':' || hex(prev_hash) || ':' || hex(hash)
                       FROM audit_events WHERE hash IS NOT NULL ORDER BY chain_seq";
        let chained_before: Vec<String> = column(&connection, chained);
        // Every migration after 0018 is applied.
        assert_eq!(
            crate::migrate::run(&mut connection).expect("migrate"),
            MIGRATIONS.len() - 18
        );

        assert_eq!(
            column::<i64>(
                &connection,
                "SELECT chain_seq FROM audit_events ORDER BY chain_seq"
            ),
            [1, 2, 3, 4]
        );
        let kinds: Vec<String> = column(
            &connection,
            "SELECT type FROM audit_events ORDER BY chain_seq",
        );
        assert_eq!(
            kinds,
            ["a", "b", "c", "d"],
            "unchained rows follow, in the order written"
        );
        assert_eq!(chained_before.len(), 2);
        assert_eq!(
            column::<String>(&connection, chained),
            chained_before,
            "each chained row keeps its position and both hashes"
        );
        assert_eq!(
            column::<Option<i64>>(
                &connection,
                "SELECT COUNT(*) FROM sqlite_schema
                 WHERE name IN ('audit_events_by_chain_seq') OR sql LIKE '%AUTOINCREMENT%'"
            ),
            [Some(0)]
        );

        // Event 3 was the newest handed out, and its place is held: the next is 4, not 3 again.
        let kinds: Vec<String> = column(&connection, "SELECT type FROM events ORDER BY id");
        assert_eq!(kinds, ["e", "e", ""]);
        assert_eq!(
            column::<i64>(&connection, "SELECT id FROM events ORDER BY id"),
            [1, 2, 3]
        );
        connection
            .execute(
                "INSERT INTO events (type, user_id, at, data) VALUES ('e', 'u', 5, '{}')",
                [],
            )
            .expect("event");
        assert_eq!(
            column::<Option<i64>>(&connection, "SELECT MAX(id) FROM events"),
            [Some(4)]
        );
    }

    /// A table the purge of an older build emptied still goes on from the last id it gave, and
    /// one whose newest events are all there needs no place held.
    #[test]
    fn an_emptied_event_table_goes_on_from_its_last_id() {
        for (deleted, held) in [("DELETE FROM events", Some(2)), ("SELECT 1", None)] {
            let mut connection = at_version_18();
            connection
                .execute_batch(&format!(
                    "INSERT INTO events (type, user_id, at, data)
                     VALUES ('e', 'u', 1, '{{}}'), ('e', 'u', 2, '{{}}');
                     {deleted};"
                ))
                .expect("events");
            crate::migrate::run(&mut connection).expect("migrate");
            assert_eq!(
                column::<Option<i64>>(&connection, "SELECT MAX(id) FROM events WHERE type = ''"),
                [held]
            );
            connection
                .execute(
                    "INSERT INTO events (type, user_id, at, data) VALUES ('e', 'u', 3, '{}')",
                    [],
                )
                .expect("event");
            assert_eq!(
                column::<Option<i64>>(&connection, "SELECT MAX(id) FROM events"),
                [Some(3)]
            );
        }
    }
}
