//! The revocation feed: a revocation committed through one pool reaches the feed of another,
//! a rolled-back one never does, another schema's never does, and a lost listening connection
//! is followed by a resync.

use std::time::Duration;

use sessiond_core::store::{FeedEvent, RevocationFeed, SessionStore};
use sessiond_store_postgres::PostgresRevocationFeed;

use crate::helpers::{T0, TestDb, by_admin, create, event_for, ms, session_for};

/// How long a notification may take to arrive before the test gives up on it.
const ARRIVAL: Duration = Duration::from_secs(5);

async fn next_event(feed: &mut PostgresRevocationFeed) -> FeedEvent {
    tokio::time::timeout(ARRIVAL, feed.next())
        .await
        .expect("the feed reports something in time")
        .expect("the feed is available")
}

/// Whether the feed stays silent for a while.
async fn stays_silent(feed: &mut PostgresRevocationFeed) -> bool {
    tokio::time::timeout(ms(300), feed.next()).await.is_err()
}

#[tokio::test]
async fn a_revocation_through_one_pool_arrives_on_the_feed_of_another() {
    let Some(db) = TestDb::create("feed::a_revocation_through_one_pool_arrives").await else {
        return;
    };
    let revoker = db.store().await;
    let listener = db.store().await;
    let mut feed = listener.revocation_listener();
    assert_eq!(
        next_event(&mut feed).await,
        FeedEvent::Resync,
        "first, a resync"
    );
    assert!(feed.backend_pid().is_some());

    let session = session_for("alice", T0);
    create(&revoker, &session, 5).await;
    let at = T0.plus(ms(100));
    revoker
        .revoke_session(
            session.id,
            by_admin(at),
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, at)
            }),
        )
        .await
        .unwrap();
    let FeedEvent::Revoked(revoked) = next_event(&mut feed).await else {
        panic!("expected a revocation");
    };
    assert_eq!(revoked.id, session.id);
    assert_eq!(revoked.revoked_at, at);
    assert_eq!(revoked.access_expires_at, session.access_expires_at);

    // Revoking it again revokes nothing, and notifies nothing.
    revoker
        .revoke_session(
            session.id,
            by_admin(at),
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, at)
            }),
        )
        .await
        .unwrap();
    assert!(stays_silent(&mut feed).await);

    // Revoking all of a user's sessions notifies each, and so does eviction past the limit.
    let sessions: Vec<_> = (0..3)
        .map(|index| session_for("bob", T0.plus(ms(index))))
        .collect();
    for session in &sessions {
        create(&revoker, session, 5).await;
    }
    let (_, evicted) = create(&revoker, &session_for("bob", T0.plus(ms(10))), 3).await;
    assert_eq!(evicted.len(), 1);
    let FeedEvent::Revoked(first) = next_event(&mut feed).await else {
        panic!("expected the eviction");
    };
    assert_eq!(first.id, evicted[0].id);
    let all = revoker
        .revoke_user_sessions(
            &sessions[0].user_id,
            None,
            by_admin(T0.plus(ms(20))),
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, T0)
            }),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let mut notified = Vec::new();
    for _ in 0..3 {
        let FeedEvent::Revoked(revoked) = next_event(&mut feed).await else {
            panic!("expected a revocation");
        };
        notified.push(revoked.id);
    }
    let mut expected: Vec<_> = all.iter().map(|session| session.id).collect();
    expected.sort();
    notified.sort();
    assert_eq!(notified, expected);
}

#[tokio::test]
async fn a_rolled_back_revocation_or_another_schemas_is_never_reported() {
    let Some(db) = TestDb::create("feed::a_rolled_back_revocation_is_never_reported").await else {
        return;
    };
    let Some(other_db) = TestDb::create("feed::another_schema").await else {
        return;
    };
    let store = db.store().await;
    let other = other_db.store().await;
    let mut feed = store.revocation_listener();
    assert_eq!(next_event(&mut feed).await, FeedEvent::Resync);

    // A revocation in another schema of the same database.
    let elsewhere = session_for("alice", T0);
    create(&other, &elsewhere, 5).await;
    other
        .revoke_session(
            elsewhere.id,
            by_admin(T0),
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, T0)
            }),
        )
        .await
        .unwrap();

    // A notification queued by a transaction that rolls back, as a revocation that fails
    // after its `pg_notify` does.
    let session = session_for("carol", T0);
    create(&store, &session, 5).await;
    let mut tx = db.raw.begin().await.unwrap();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(sessiond_store_postgres::REVOCATION_CHANNEL)
        .bind(format!("{} 1 2 {}", session.id, db_schema(&db).await))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        stays_silent(&mut feed).await,
        "neither reaches this schema's feed"
    );
}

#[tokio::test]
async fn a_lost_listening_connection_is_followed_by_a_resync() {
    let Some(db) = TestDb::create("feed::a_lost_listening_connection").await else {
        return;
    };
    let store = db.store().await;
    let mut feed = store.revocation_listener();
    assert_eq!(next_event(&mut feed).await, FeedEvent::Resync);
    let pid = feed.backend_pid().expect("listening");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&db.raw)
        .await
        .unwrap();
    assert!(terminated);
    assert_eq!(
        next_event(&mut feed).await,
        FeedEvent::Resync,
        "the feed reconnects and says it may have missed something"
    );
    let new_pid = feed.backend_pid().expect("listening again");
    assert_ne!(new_pid, pid);

    // And it listens again.
    let session = session_for("alice", T0);
    create(&store, &session, 5).await;
    store
        .revoke_session(
            session.id,
            by_admin(T0),
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, T0)
            }),
        )
        .await
        .unwrap();
    let FeedEvent::Revoked(revoked) = next_event(&mut feed).await else {
        panic!("expected a revocation");
    };
    assert_eq!(revoked.id, session.id);
}

async fn db_schema(db: &TestDb) -> String {
    sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&db.raw)
        .await
        .unwrap()
}
