//! The audit chain: events are sealed only once their order is final, by one instance at a
//! time, and the chain they form verifies.

use std::time::{Duration, Instant};

use sessiond_core::audit::{AuditQuery, ChainVerifier};
use sessiond_core::store::{AuditStore, Store};

use crate::helpers::{T0, TestDb, event_for, session_for};

/// Seals until `expected` events are sealed; other tests' transactions on the server can hold
/// sealing back for a moment.
async fn seal_until(store: &impl Store, db: &TestDb, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.seal_audit(1_000).await.unwrap();
        let sealed = db
            .count(
                "SELECT count(*) FROM audit_events WHERE chain_seq IS NOT NULL",
                None,
            )
            .await;
        if sealed >= expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {sealed} of {expected} sealed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_event_is_not_sealed_while_an_older_transaction_may_still_commit_one_before_it() {
    let Some(db) = TestDb::create("audit::an_event_is_not_sealed_while_an_older_transaction").await
    else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);

    // An older transaction appends an event and stays open.
    let mut older = db.raw.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO audit_events (type, severity, user_id, at, details)
         VALUES ('session.created', 'info', 'older', 1, '{}')",
    )
    .execute(&mut *older)
    .await
    .unwrap();
    store
        .append_audit(&[event_for("session.revoked", &session, T0)])
        .await
        .unwrap();
    assert_eq!(store.seal_audit(1_000).await.unwrap(), 0, "held back");

    older.commit().await.unwrap();
    seal_until(&store, &db, 2).await;
    let events = store
        .audit_events(&AuditQuery::default(), 10)
        .await
        .unwrap();
    let users: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.entry.user_id.as_deref())
        .collect();
    assert_eq!(
        users,
        [Some("older"), Some("alice")],
        "in transaction order"
    );
    assert_eq!(
        events.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[tokio::test]
async fn instances_sealing_at_once_build_one_chain_that_verifies() {
    let Some(db) = TestDb::create("audit::instances_sealing_at_once_build_one_chain").await else {
        return;
    };
    let first = db.store().await;
    let second = db.store().await;
    let session = session_for("alice", T0);
    for _ in 0..10 {
        let events: Vec<_> = (0..20)
            .map(|_| event_for("session.created", &session, T0))
            .collect();
        first.append_audit(&events).await.unwrap();
        let (a, b) = tokio::join!(first.seal_audit(7), second.seal_audit(7));
        a.unwrap();
        b.unwrap();
    }
    seal_until(&first, &db, 200).await;

    let chain = second.audit_chain().await.unwrap();
    assert_eq!(chain.head_seq, 200);
    let mut verifier = ChainVerifier::new(None, b"unused without a checkpoint").unwrap();
    for event in first
        .audit_events(&AuditQuery::default(), 1_000)
        .await
        .unwrap()
    {
        verifier.check(&event).unwrap();
    }
    verifier.finish(chain.head_seq, &chain.head_hash).unwrap();
}
