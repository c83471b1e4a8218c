//! Migrations: idempotent, safe when instances start together, and refusing newer schemas.

use sessiond_core::store::StoreError;
use sessiond_store_postgres::{MIGRATIONS, PostgresSettings};

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
