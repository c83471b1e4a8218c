//! What a rotation writes on PostgreSQL: its event and audit row in the rotation's own
//! transaction (one transaction id, the order the event cursor and the sealer follow).

use sessiond_core::SessionId;
use sessiond_core::event;
use sessiond_core::store::{Rotation, RotationOutcome, SessionStore};
use sessiond_store_conformance::Backend;
use sessiond_store_conformance::fixtures::{T0, create, event_for, ms, rotation_of, session_for};

use crate::helpers::TestDb;

/// How many `session.refreshed` events session `id` has.
async fn refreshed_events_of(db: &TestDb, id: SessionId) -> i64 {
    db.count(
        "SELECT count(*) FROM events WHERE type = 'session.refreshed' AND session_id = $1",
        Some(id),
    )
    .await
}

/// How many `session.refreshed` audit rows name session `id`.
async fn refreshed_audit_rows_of(db: &TestDb, id: SessionId) -> i64 {
    db.count(
        "SELECT count(*) FROM audit_events WHERE type = 'session.refreshed' AND session_id = $1",
        Some(id),
    )
    .await
}

#[tokio::test]
async fn a_rotation_writes_its_event_and_any_audit_row_in_its_own_transaction_and_a_lost_one_neither()
 {
    let Some(db) = TestDb::create("rotation::a_rotation_writes_its_event_and_any_audit_row").await
    else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    let (token, _) = create(&store, &session, 5).await;
    let created_audit_rows = db.audit_events_of(session.id).await;

    // Audited: the audit row and the event share the rotation's transaction id, the one the
    // event cursor and the audit sealer order by.
    let now = T0.plus(ms(10));
    let audited = Rotation {
        audit: Some(event_for(event::SESSION_REFRESHED, &session, now)),
        ..rotation_of(token.hash(), session.id, now)
    };
    assert_eq!(
        store.rotate_refresh_token(&audited).await.unwrap(),
        RotationOutcome::Rotated
    );
    assert_eq!(refreshed_events_of(&db, session.id).await, 1);
    assert_eq!(refreshed_audit_rows_of(&db, session.id).await, 1);
    assert_eq!(
        db.count(
            "SELECT count(DISTINCT tx) FROM (
                 SELECT tx FROM events WHERE type = 'session.refreshed' AND session_id = $1
                 UNION ALL
                 SELECT tx FROM audit_events
                 WHERE type = 'session.refreshed' AND session_id = $1) AS written",
            Some(session.id),
        )
        .await,
        1,
        "the event and the audit row were written by one transaction"
    );
    // Lost, audited: nothing at all is written.
    let replayed = Rotation {
        audit: Some(event_for(
            event::SESSION_REFRESHED,
            &session,
            now.plus(ms(1)),
        )),
        ..rotation_of(token.hash(), session.id, now.plus(ms(1)))
    };
    assert_eq!(
        store.rotate_refresh_token(&replayed).await.unwrap(),
        RotationOutcome::Lost
    );
    assert_eq!(refreshed_events_of(&db, session.id).await, 1, "no event");
    assert_eq!(
        db.audit_events_of(session.id).await,
        created_audit_rows + 1,
        "no audit row"
    );
    assert_eq!(db.tokens_of(session.id).await, 2, "no successor");
    let stored = store.session(session.id).await.unwrap().unwrap();
    assert_eq!(stored.last_active_at, now, "the session did not move");

    // Not audited: the event, and no audit row.
    let unaudited = rotation_of(audited.successor, session.id, now.plus(ms(2)));
    assert_eq!(
        store.rotate_refresh_token(&unaudited).await.unwrap(),
        RotationOutcome::Rotated
    );
    assert_eq!(refreshed_events_of(&db, session.id).await, 2);
    assert_eq!(refreshed_audit_rows_of(&db, session.id).await, 1);

    // An audit event that is published as an event of its own (any kind but
    // `session.refreshed` is) follows `session.refreshed` in the events, in one transaction.
    let with_published = Rotation {
        audit: Some(event_for(event::ANOMALY, &session, now.plus(ms(3)))),
        ..rotation_of(unaudited.successor, session.id, now.plus(ms(3)))
    };
    assert_eq!(
        store.rotate_refresh_token(&with_published).await.unwrap(),
        RotationOutcome::Rotated
    );
    let written: Vec<(String, i64)> = sqlx::query_as(
        "SELECT type, tx FROM events WHERE session_id = $1 AND at = $2 ORDER BY tx, id",
    )
    .bind(session.id.as_uuid())
    .bind(now.plus(ms(3)).unix_millis())
    .fetch_all(&db.raw)
    .await
    .unwrap();
    assert_eq!(
        written
            .iter()
            .map(|(kind, _)| kind.as_str())
            .collect::<Vec<_>>(),
        ["session.refreshed", "security.anomaly"]
    );
    assert_eq!(written[0].1, written[1].1, "one transaction");
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE type = 'security.anomaly' AND session_id = $1",
            Some(session.id),
        )
        .await,
        1
    );
}

/// A rotation updates its session row in place (a HOT update, which writes no index entry)
/// only while no index covers a column it changes: `last_active_at`, `idle_expires_at`,
/// `access_expires_at`, `dpop_jkt`. (`expiry_check_at` is indexed, but a rotation changes it
/// only when the idle expiry went down.)
#[tokio::test]
async fn no_index_of_sessions_covers_a_column_a_rotation_changes() {
    let Some(db) = TestDb::create("rotation::no_index_of_sessions_covers").await else {
        return;
    };
    let _migrated = db.store().await;
    // From `pg_index` by the table's own oid: `pg_indexes` would decompile the indexes of every
    // schema, and fail on those of a schema another test is dropping at that moment.
    let of_sessions = "SELECT count(*) FROM pg_index WHERE indrelid = 'sessions'::regclass";
    assert!(db.count(of_sessions, None).await >= 4);
    let covering = db
        .count(
            &format!(
                "{of_sessions} AND CASE WHEN indrelid = 'sessions'::regclass \
                 THEN pg_get_indexdef(indexrelid) \
                      ~ '(last_active_at|idle_expires_at|access_expires_at|dpop_jkt)' END"
            ),
            None,
        )
        .await;
    assert_eq!(covering, 0);
}
