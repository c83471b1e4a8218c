//! What a rotation writes on PostgreSQL: its event and audit row in the rotation's own
//! transaction (one transaction id, the order the event cursor and the sealer follow).

use sessiond_core::SessionId;
use sessiond_core::event;
use sessiond_core::refresh::RefreshToken;
use sessiond_core::session::Session;
use sessiond_core::store::{Rotation, RotationOutcome, SessionStore, StoreError};
use sessiond_store_conformance::Backend;
use sessiond_store_conformance::fixtures::{
    T0, by_admin, create, event_for, ms, rotation_of, session_for,
};
use sessiond_store_postgres::PostgresStore;

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

/// Runs `rotations` on `store` at once, each on a task of its own; their outcomes in order.
async fn rotate_together(
    store: &PostgresStore,
    rotations: &[Rotation],
) -> Vec<Result<RotationOutcome, StoreError>> {
    let tasks: Vec<_> = rotations
        .iter()
        .map(|rotation| {
            let (store, rotation) = (store.clone(), rotation.clone());
            tokio::spawn(async move { store.rotate_refresh_token(&rotation).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("the rotation task ends"));
    }
    outcomes
}

/// `count` sessions of distinct users, created at `T0`, each with its first refresh token.
async fn sessions_of_distinct_users(
    store: &PostgresStore,
    count: usize,
) -> Vec<(Session, RefreshToken)> {
    let mut created = Vec::with_capacity(count);
    for index in 0..count {
        let session = session_for(&format!("user-{index}"), T0);
        let (token, _) = create(store, &session, 5).await;
        created.push((session, token));
    }
    created
}

/// Rotations that arrive together share one statement (one transaction id), and each gets its
/// own outcome: a revoked session's and a wrong token's rotations lose and write nothing, while
/// their neighbours rotate and write their own event, audit row and successor.
#[tokio::test]
async fn rotations_that_arrive_together_share_a_statement_and_each_gets_its_own_outcome() {
    let Some(db) =
        TestDb::create("rotation::rotations_that_arrive_together_share_a_statement").await
    else {
        return;
    };
    let store = db.store().await;
    let now = T0.plus(ms(10));
    let created = sessions_of_distinct_users(&store, 24).await;
    let rotations: Vec<Rotation> = created
        .iter()
        .enumerate()
        .map(|(index, (session, token))| {
            let presented = if index % 6 == 1 {
                RefreshToken::generate(now).hash()
            } else {
                token.hash()
            };
            Rotation {
                audit: Some(event_for(event::SESSION_REFRESHED, session, now)),
                ..rotation_of(presented, session.id, now)
            }
        })
        .collect();
    let sessions: Vec<Session> = created.into_iter().map(|(session, _)| session).collect();
    let audit = sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
        event_for("session.revoked", revoked, now)
    });
    for session in sessions.iter().skip(2).step_by(6) {
        store
            .revoke_session(session.id, by_admin(T0.plus(ms(1))), &audit)
            .await
            .expect("revoke");
    }
    let audit_rows_before: Vec<i64> = {
        let mut counts = Vec::new();
        for session in &sessions {
            counts.push(db.audit_events_of(session.id).await);
        }
        counts
    };

    let outcomes = rotate_together(&store, &rotations).await;

    let mut rotated = 0;
    for (index, (outcome, session)) in outcomes.into_iter().zip(&sessions).enumerate() {
        let outcome = outcome.expect("no rotation fails");
        let loses = index % 6 == 1 || index % 6 == 2;
        if loses {
            assert_eq!(outcome, RotationOutcome::Lost, "rotation {index}");
            assert_eq!(refreshed_events_of(&db, session.id).await, 0, "{index}");
            assert_eq!(
                db.audit_events_of(session.id).await,
                audit_rows_before[index],
                "{index}"
            );
            assert_eq!(db.tokens_of(session.id).await, 1, "{index}: no successor");
        } else {
            rotated += 1;
            assert_eq!(outcome, RotationOutcome::Rotated, "rotation {index}");
            assert_eq!(refreshed_events_of(&db, session.id).await, 1, "{index}");
            assert_eq!(refreshed_audit_rows_of(&db, session.id).await, 1, "{index}");
            assert_eq!(db.tokens_of(session.id).await, 2, "{index}: a successor");
            let stored = store.session(session.id).await.unwrap().unwrap();
            assert_eq!(stored.last_active_at, now, "{index}: the session moved");
        }
    }
    assert_eq!(rotated, 16);
    let transactions = db
        .count(
            "SELECT count(DISTINCT tx) FROM events WHERE type = 'session.refreshed'",
            None,
        )
        .await;
    assert!(
        transactions < rotated,
        "{rotated} rotations arriving together were written by {transactions} transactions"
    );
}

/// A rotation PostgreSQL refuses (here its successor is a token already stored) fails alone:
/// the statement it shared is rolled back whole, and its neighbours are written again, each on
/// its own, and rotate.
#[tokio::test]
async fn a_rotation_postgres_refuses_fails_alone_and_its_neighbours_rotate() {
    let Some(db) = TestDb::create("rotation::a_rotation_postgres_refuses_fails_alone").await else {
        return;
    };
    let store = db.store().await;
    let now = T0.plus(ms(10));
    let created = sessions_of_distinct_users(&store, 8).await;
    let mut rotations: Vec<Rotation> = created
        .iter()
        .map(|(session, token)| rotation_of(token.hash(), session.id, now))
        .collect();
    // The successor of rotation 3 collides with the token session 5 presents.
    rotations[3].successor = created[5].1.hash();

    let outcomes = rotate_together(&store, &rotations).await;

    for (index, (outcome, (session, _))) in outcomes.into_iter().zip(&created).enumerate() {
        if index == 3 {
            assert!(
                matches!(outcome, Err(StoreError::Backend(_))),
                "the refused rotation fails: {outcome:?}"
            );
            assert_eq!(db.tokens_of(session.id).await, 1, "nothing was written");
            assert_eq!(refreshed_events_of(&db, session.id).await, 0);
            let stored = store.session(session.id).await.unwrap().unwrap();
            assert_eq!(stored.last_active_at, T0, "the session did not move");
        } else {
            assert_eq!(
                outcome.expect("its neighbours do not fail"),
                RotationOutcome::Rotated,
                "rotation {index}"
            );
            assert_eq!(db.tokens_of(session.id).await, 2, "{index}");
            assert_eq!(refreshed_events_of(&db, session.id).await, 1, "{index}");
        }
    }
}

/// Batches of rotations of one user's sessions, racing revocations of all of that user's
/// sessions, never deadlock with them: every operation succeeds, and every session ends either
/// rotated or revoked by the revocation that came first.
#[tokio::test]
async fn batches_of_one_users_rotations_and_revoking_all_of_them_do_not_deadlock() {
    let Some(db) = TestDb::create("rotation::batches_and_revoking_all_do_not_deadlock").await
    else {
        return;
    };
    let store = db.store().await;
    let user = sessiond_core::UserId::from_trusted("alice".into());
    let audit = sessiond_core::store::audit_for(|revoked: &sessiond_core::Session| {
        event_for("session.revoked", revoked, revoked.revoked_at.unwrap_or(T0))
    });
    for round in 0..5_u64 {
        let now = T0.plus(ms(100 * round + 10));
        let mut rotations = Vec::new();
        for _ in 0..12 {
            let session = session_for("alice", T0.plus(ms(100 * round)));
            let (token, _) = create(&store, &session, 100).await;
            rotations.push(rotation_of(token.hash(), session.id, now));
        }
        let revoking = {
            let (store, user, audit) = (store.clone(), user.clone(), audit.clone());
            tokio::spawn(async move {
                store
                    .revoke_user_sessions(&user, None, by_admin(now), &audit)
                    .await
            })
        };
        for (index, outcome) in rotate_together(&store, &rotations)
            .await
            .into_iter()
            .enumerate()
        {
            let outcome = outcome.expect("no rotation fails");
            let session = store
                .session(rotations[index].session_id)
                .await
                .unwrap()
                .unwrap();
            match outcome {
                RotationOutcome::Rotated => assert_eq!(session.last_active_at, now),
                RotationOutcome::Lost => assert!(session.revoked_at.is_some()),
                RotationOutcome::ProofReplayed => panic!("no rotation carries a proof"),
            }
        }
        revoking
            .await
            .expect("the revoking task ends")
            .expect("revoking all of the user's sessions does not fail");
    }
}

/// A session another transaction holds locked (another instance rotating or revoking it) does
/// not hold up the rotations that share its batch: they are answered while the lock is held,
/// and the contended rotation waits for the lock alone, then rotates.
#[tokio::test]
async fn a_session_locked_elsewhere_does_not_hold_up_its_batch() {
    let Some(db) = TestDb::create("rotation::a_session_locked_elsewhere").await else {
        return;
    };
    let store = db.store().await;
    let now = T0.plus(ms(10));
    let rotations: Vec<Rotation> = sessions_of_distinct_users(&store, 8)
        .await
        .iter()
        .map(|(session, token)| rotation_of(token.hash(), session.id, now))
        .collect();
    let contended = rotations[4].session_id;
    let mut elsewhere = db.raw.begin().await.expect("begin");
    sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(contended.as_uuid())
        .execute(&mut *elsewhere)
        .await
        .expect("lock the session elsewhere");

    let mut tasks: Vec<_> = rotations
        .iter()
        .map(|rotation| {
            let (store, rotation) = (store.clone(), rotation.clone());
            tokio::spawn(async move { store.rotate_refresh_token(&rotation).await })
        })
        .collect();
    let waiting = tasks.remove(4);
    for (index, task) in tasks.into_iter().enumerate() {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(3), task)
            .await
            .expect("answered while the other session is locked")
            .expect("the rotation task ends")
            .expect("no rotation fails");
        assert_eq!(outcome, RotationOutcome::Rotated, "rotation {index}");
    }
    assert!(
        !waiting.is_finished(),
        "the contended rotation waits for the lock"
    );
    assert_eq!(
        db.tokens_of(contended).await,
        1,
        "nothing written for it yet"
    );

    elsewhere.rollback().await.expect("release the lock");
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(3), waiting)
        .await
        .expect("answered once the lock is released")
        .expect("the rotation task ends")
        .expect("the contended rotation does not fail");
    assert_eq!(outcome, RotationOutcome::Rotated);
    assert_eq!(db.tokens_of(contended).await, 2);
    assert_eq!(refreshed_events_of(&db, contended).await, 1);
}
