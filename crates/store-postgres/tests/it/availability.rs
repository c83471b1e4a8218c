//! A database that is down, slow or silent makes operations fail as unavailable, within bounded
//! time, having written nothing.

use std::time::{Duration, Instant};

use sessiond_core::store::{SessionStore, StoreError};
use sessiond_store_postgres::{PostgresSettings, PostgresStore};
use sqlx::Connection;

use sessiond_store_conformance::Backend as _;

use crate::helpers::{FreezableProxy, T0, TestDb, by_admin, create, event_for, session_for};

#[tokio::test]
async fn an_unreachable_database_is_unavailable_within_the_acquire_timeout() {
    // Needs no database: nothing listens on port 1.
    let settings = PostgresSettings {
        acquire_timeout: Duration::from_millis(500),
        ..PostgresSettings::default()
    };
    let started = Instant::now();
    let opened = PostgresStore::open("postgres://postgres@127.0.0.1:1/test", &settings).await;
    let elapsed = started.elapsed();
    let Err(StoreError::Unavailable(source)) = opened else {
        panic!("expected unavailable, got {opened:?}");
    };
    assert!(
        source.to_string().to_lowercase().contains("refused"),
        "the reason is kept: {source}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn a_missing_database_is_a_backend_error_not_a_reason_to_retry() {
    let Some(db) = TestDb::create("availability::a_missing_database_is_a_backend_error").await
    else {
        return;
    };
    let opened = PostgresStore::open(
        &db.url_of_database("sessiond_no_such_database"),
        &PostgresSettings::default(),
    )
    .await;
    assert!(matches!(opened, Err(StoreError::Backend(_))), "{opened:?}");
}

#[tokio::test]
async fn a_malformed_url_is_a_backend_error() {
    let opened = PostgresStore::open("postgres://[::1", &PostgresSettings::default()).await;
    assert!(matches!(opened, Err(StoreError::Backend(_))), "{opened:?}");
}

#[tokio::test]
async fn a_statement_stuck_behind_a_lock_is_unavailable_and_writes_nothing() {
    let Some(db) = TestDb::create("availability::a_statement_stuck_behind_a_lock").await else {
        return;
    };
    let store = db
        .open(&PostgresSettings {
            statement_timeout: Duration::from_millis(300),
            ..PostgresSettings::default()
        })
        .await;
    store.migrate().await.unwrap();
    let session = session_for("alice", T0);
    create(&store, &session, 5).await;

    // Another client holds the session's row lock, as a stuck transaction would.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut stuck = blocker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(session.id.as_uuid())
        .execute(&mut *stuck)
        .await
        .unwrap();

    let started = Instant::now();
    let revoked = store
        .revoke_session(
            session.id,
            by_admin(T0),
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, T0)
            }),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(revoked, Err(StoreError::Unavailable(_))),
        "{revoked:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");

    stuck.rollback().await.unwrap();
    let stored = store.session(session.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, None, "nothing was written");
    assert_eq!(db.audit_events_of(session.id).await, 1, "only its creation");
}

#[tokio::test]
async fn a_database_that_stops_answering_is_unavailable_within_the_operation_timeout() {
    let Some(db) = TestDb::create("availability::a_database_that_stops_answering").await else {
        return;
    };
    let Some(server) = db.server_address() else {
        println!("the test database is not reached over TCP: skipped the frozen-server test");
        return;
    };
    let proxy = FreezableProxy::start(server).await;
    let store = PostgresStore::open(
        &db.url_via(proxy.address),
        &PostgresSettings {
            operation_timeout: Duration::from_millis(800),
            ..PostgresSettings::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let session = session_for("alice", T0);
    create(&store, &session, 5).await;

    proxy.freeze();
    let started = Instant::now();
    let read = store.session(session.id).await;
    let elapsed = started.elapsed();
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn connections_the_server_dropped_while_idle_are_replaced_without_an_error() {
    let Some(db) = TestDb::create("availability::connections_the_server_dropped").await else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    create(&store, &session, 5).await;

    end_the_stores_connections(&db).await;

    let stored = store
        .session(session.id)
        .await
        .expect("no error reaches the caller");
    assert_eq!(stored.map(|stored| stored.id), Some(session.id));
}

#[tokio::test]
async fn a_lookup_connection_the_server_dropped_while_parked_is_replaced_without_an_error() {
    let Some(db) = TestDb::create("availability::a_lookup_connection_the_server_dropped").await
    else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    let (token, _) = create(&store, &session, 5).await;
    // Parks a lookup connection.
    assert!(
        store
            .find_refresh_token(&token.hash())
            .await
            .unwrap()
            .is_some()
    );

    end_the_stores_connections(&db).await;

    let found = store
        .find_refresh_token(&token.hash())
        .await
        .expect("no error reaches the caller");
    assert_eq!(found.map(|(_, stored)| stored.id), Some(session.id));
}

#[tokio::test]
async fn a_lookup_cut_off_by_the_operation_timeout_never_answers_a_later_one() {
    let Some(db) = TestDb::create("availability::a_lookup_cut_off").await else {
        return;
    };
    let store = db
        .open(&PostgresSettings {
            operation_timeout: Duration::from_millis(800),
            ..PostgresSettings::default()
        })
        .await;
    store.migrate().await.unwrap();
    let alice = session_for("alice", T0);
    let (alice_token, _) = create(&store, &alice, 5).await;
    let bob = session_for("bob", T0);
    let (bob_token, _) = create(&store, &bob, 5).await;
    assert!(
        store
            .find_refresh_token(&alice_token.hash())
            .await
            .unwrap()
            .is_some()
    );

    // Alice's lookup waits behind the lock until the operation timeout drops it; its answer
    // arrives on its connection only once the lock is gone.
    let mut locker = db.raw.begin().await.unwrap();
    sqlx::query("LOCK TABLE refresh_tokens IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let cut = store.find_refresh_token(&alice_token.hash()).await;
    assert!(matches!(cut, Err(StoreError::Unavailable(_))), "{cut:?}");
    locker.rollback().await.unwrap();

    for _ in 0..8 {
        let found = store.find_refresh_token(&bob_token.hash()).await.unwrap();
        assert_eq!(
            found.map(|(_, stored)| stored.id),
            Some(bob.id),
            "bob's own row"
        );
    }
}

/// Ends every connection of the store, as a server restart does, then waits past the idle time
/// after which a connection is pinged before use.
async fn end_the_stores_connections(db: &TestDb) {
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = current_setting('application_name')
           AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "the store's connections were ended");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}
