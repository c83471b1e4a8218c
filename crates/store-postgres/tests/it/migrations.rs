//! Migrations: idempotent, safe when instances start together, and refusing newer schemas.

use sessiond_core::store::{SessionStore, StoreError};
use sessiond_store_postgres::{MIGRATIONS, PostgresSettings};
use uuid::Uuid;

use crate::helpers::TestDb;

#[tokio::test]
async fn migrating_twice_applies_nothing_the_second_time() {
    let Some(db) = TestDb::create("migrations::migrating_twice").await else {
        return;
    };
    let store = db.open(&PostgresSettings::default()).await;
    assert_eq!(store.migrate().await.unwrap(), MIGRATIONS.len());
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations", None)
            .await,
        i64::try_from(MIGRATIONS.len()).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_migrating_at_once_both_succeed_and_apply_each_migration_once() {
    let Some(db) = TestDb::create("migrations::two_instances_migrating_at_once").await else {
        return;
    };
    let one = db.open(&PostgresSettings::default()).await;
    let other = db.open(&PostgresSettings::default()).await;
    let (first, second) = tokio::join!(one.migrate(), other.migrate());
    assert_eq!(first.unwrap() + second.unwrap(), MIGRATIONS.len());
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations", None)
            .await,
        i64::try_from(MIGRATIONS.len()).unwrap()
    );
}

#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused() {
    let Some(db) = TestDb::create("migrations::a_schema_newer_than_the_build").await else {
        return;
    };
    let store = db.store().await;
    let newest_known = MIGRATIONS.last().unwrap().0;
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)",
    )
    .bind(newest_known + 1)
    .execute(&db.raw)
    .await
    .unwrap();
    let refused = store.migrate().await;
    assert!(
        matches!(&refused, Err(StoreError::Corrupt(message)) if message.contains("newer")),
        "{refused:?}"
    );
}

/// A database made by a build that knew the migrations up to `version` and no later one.
async fn a_database_at_version(db: &TestDb, version: i64) {
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&db.raw)
    .await
    .unwrap();
    for (applied, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v <= version) {
        let mut tx = db.raw.begin().await.unwrap();
        sqlx::raw_sql(sql).execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations VALUES ($1, $2, 0)")
            .bind(applied)
            .bind(name)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// A database made by a build that knew only migration 0001, with its one signing key.
async fn a_version_1_database_with_a_key(db: &TestDb) -> sessiond_core::token::StoredKey {
    use sessiond_core::Timestamp;
    use sessiond_core::token::{SigningAlgorithm, StoredKey};
    a_database_at_version(db, 1).await;
    let key = StoredKey::generate(SigningAlgorithm::EdDsa, Timestamp::from_unix_millis(1_000));
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.kid)
    .bind(key.algorithm.jose_name())
    .bind(&key.secret[..])
    .bind(key.created_at.unix_millis())
    .execute(&db.raw)
    .await
    .unwrap();
    key
}

#[tokio::test]
async fn a_version_1_database_upgrades_with_its_key_active_and_rotatable() {
    use sessiond_core::store::KeyStore as _;
    let Some(db) = TestDb::create("migrations::a_version_1_database_upgrades").await else {
        return;
    };
    let key = a_version_1_database_with_a_key(&db).await;
    let store = db.store().await;
    let keys = store.signing_keys().await.unwrap();
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
    let version = store.signing_keys_version().await.unwrap();
    let successor = sessiond_core::token::StoredKey::generate(
        key.algorithm,
        key.created_at.plus(std::time::Duration::from_secs(1)),
    );
    assert!(
        store
            .rotate_signing_key(&successor, Some(&key.kid))
            .await
            .unwrap()
    );
    assert!(store.signing_keys_version().await.unwrap() > version);
    // An edit outside sessiond (here: with no search_path at all) moves the version too.
    let moved = store.signing_keys_version().await.unwrap();
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&db.raw)
        .await
        .unwrap();
    let mut other = db.raw.acquire().await.unwrap();
    sqlx::raw_sql("SET search_path TO pg_catalog")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "UPDATE {schema}.signing_keys SET created_at = created_at WHERE kid = '{}'",
        successor.kid
    ))
    .execute(&mut *other)
    .await
    .unwrap();
    sqlx::raw_sql("RESET search_path")
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(store.signing_keys_version().await.unwrap() > moved);
}

#[tokio::test]
async fn a_migration_numbered_below_the_newest_applied_one_is_still_applied() {
    // Migrations may be written out of order (0003 before 0002); each is applied once whatever
    // order builds met the database in.
    let Some(db) = TestDb::create("migrations::numbered_below").await else {
        return;
    };
    a_version_1_database_with_a_key(&db).await;
    // 0010 (DBSC bindings) creates a table of its own that no later migration touches.
    sqlx::query("INSERT INTO schema_migrations VALUES (10, 'from another build', 0)")
        .execute(&db.raw)
        .await
        .unwrap();
    let store = db.open(&PostgresSettings::default()).await;
    // Everything but 0001 (applied by hand) and 0010 (recorded as applied by another build),
    // 0002 to 0009 included, though numbered below it.
    assert_eq!(store.migrate().await.unwrap(), MIGRATIONS.len() - 2);
    assert_eq!(
        db.count("SELECT count(*) FROM signing_keys_version", None)
            .await,
        1
    );
}

/// Migration 0012 on a database written before it: each session's chain head is found, whatever
/// order its tokens were stored in, and a purge then deletes the whole chain, stopping at a
/// successor that belongs to another session.
#[tokio::test]
async fn the_token_chain_migration_finds_each_first_token_and_a_purge_walks_the_chain() {
    let Some(db) = TestDb::create("migrations::token_chains").await else {
        return;
    };
    a_database_at_version(&db, 11).await;
    // Alice's session, revoked long ago: 01 -> 02 -> 03, whose successor is (damaged) one of
    // bob's tokens. Bob's session, alive: 21 -> 22. Rows in no particular order.
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO sessions (id, user_id, device_id, device_type, claims, metadata,
             created_at, last_active_at, idle_expires_at, expires_at, access_expires_at,
             revoked_at, expiry_check_at)
         VALUES ($1, 'alice', 'd', 'unknown', '{}', '{}', 1, 1, 10, 10, 10, 5, 10),
                ($2, 'bob', 'd', 'unknown', '{}', '{}', 1, 1, 9e15, 9e15, 9e15, NULL, 9e15);
         ",
    )
    .bind(alice)
    .bind(bob)
    .execute(&db.raw)
    .await
    .unwrap();
    let hash = |byte: u8| vec![byte; 32];
    for (token, session, issued_at, successor) in [
        (3, alice, 3, Some(22)),
        (22, bob, 2, None),
        (1, alice, 1, Some(2)),
        (21, bob, 1, Some(22)),
        (2, alice, 2, Some(3)),
    ] {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at, successor_hash)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(hash(token))
        .bind(session)
        .bind(issued_at)
        .bind(successor.map(hash))
        .execute(&db.raw)
        .await
        .unwrap();
    }

    let store = db.open(&PostgresSettings::default()).await;
    assert_eq!(store.migrate().await.unwrap(), MIGRATIONS.len() - 11);
    let heads: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT session_id, first_token FROM refresh_token_chains ORDER BY 2")
            .fetch_all(&db.raw)
            .await
            .unwrap();
    assert_eq!(heads, [(alice, hash(1)), (bob, hash(21))]);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_indexes
             WHERE schemaname = current_schema() AND indexname = 'refresh_tokens_by_session'",
            None
        )
        .await,
        0
    );

    let now = sessiond_core::Timestamp::from_unix_millis(1_000_000);
    assert_eq!(store.purge(now, now, 10).await.unwrap(), 1);
    let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM refresh_tokens ORDER BY hash")
        .fetch_all(&db.raw)
        .await
        .unwrap();
    assert_eq!(
        left,
        [hash(21), hash(22)],
        "alice's chain goes, bob's stays"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM refresh_token_chains", None)
            .await,
        1
    );
}
