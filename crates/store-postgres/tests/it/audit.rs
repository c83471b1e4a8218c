//! The audit chain on PostgreSQL: an event is sealed only once its order is final, that is once
//! no older transaction can still commit an event before it. (What every store guarantees of
//! the chain is in the conformance suite.)

use sessiond_core::audit::AuditQuery;
use sessiond_core::store::AuditStore;
use sessiond_store_conformance::audit::seal_until;

use crate::helpers::{T0, TestDb, event_for, session_for};

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
