//! Refresh-token lookups and the rotation compare-and-swap, alone and under contention.

use std::sync::Arc;

use sessiond_core::SessionId;
use sessiond_core::refresh::RefreshToken;
use sessiond_core::store::{Rotation, RotationOutcome, SessionStore};
use tokio::sync::Barrier;

use crate::Backend;
use crate::fixtures::{T0, by_admin, create, event_for, ms, rotation_of, session_for};

pub async fn a_created_session_is_found_by_its_token_and_each_token_rotates_once<B: Backend>() {
    let Some(db) = B::create("rotation::a_created_session_is_found_by_its_token").await else {
        return;
    };
    let store = db.store().await;
    let mut session = session_for("alice", T0);
    session
        .claims
        .insert("roles".into(), serde_json::json!(["admin"]));
    session
        .metadata
        .insert("plan".into(), serde_json::json!({"tier": 3}));
    let (token, evicted) = create(&store, &session, 5).await;
    assert!(evicted.is_empty());

    let (record, stored) = store
        .find_refresh_token(&token.hash())
        .await
        .unwrap()
        .expect("the first token is stored");
    assert_eq!(stored, session, "the session reads back exactly as written");
    assert_eq!(record.hash, token.hash());
    assert_eq!(record.issued_at, T0);
    assert_eq!(record.spent_at, None);
    assert_eq!(record.sealed_successor, None);
    assert!(!record.successor_spent);
    assert!(
        store
            .find_refresh_token(&RefreshToken::generate(T0).hash())
            .await
            .unwrap()
            .is_none(),
        "an unknown hash is None, not an error"
    );

    let now = T0.plus(ms(60_000));
    let first = rotation_of(token.hash(), session.id, now);
    assert_eq!(
        store.rotate_refresh_token(&first).await.unwrap(),
        RotationOutcome::Rotated
    );
    let (record, stored) = store
        .find_refresh_token(&token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.spent_at, Some(now));
    assert_eq!(
        record.sealed_successor,
        Some(first.sealed_successor.clone())
    );
    assert!(!record.successor_spent);
    assert_eq!(stored.last_active_at, now);
    assert_eq!(stored.idle_expires_at, first.idle_expires_at);
    assert_eq!(stored.access_expires_at, first.access_expires_at);

    let again = rotation_of(token.hash(), session.id, now.plus(ms(1)));
    assert_eq!(
        store.rotate_refresh_token(&again).await.unwrap(),
        RotationOutcome::Lost,
        "a spent token does not rotate again"
    );
    assert!(
        store
            .find_refresh_token(&again.successor)
            .await
            .unwrap()
            .is_none(),
        "the lost rotation stored no successor"
    );
    let (_, stored) = store
        .find_refresh_token(&token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.last_active_at, now,
        "the lost rotation moved nothing"
    );

    // The successor rotates in turn, with an access expiry earlier than the latest one: the
    // session keeps the latest.
    let mut second = rotation_of(first.successor, session.id, now.plus(ms(2)));
    second.access_expires_at = now;
    assert_eq!(
        store.rotate_refresh_token(&second).await.unwrap(),
        RotationOutcome::Rotated
    );
    let (record, stored) = store
        .find_refresh_token(&token.hash())
        .await
        .unwrap()
        .unwrap();
    assert!(
        record.successor_spent,
        "the first token's successor is spent"
    );
    assert_eq!(stored.access_expires_at, first.access_expires_at);
    assert_eq!(db.tokens_of(session.id).await, 3);
}

pub async fn a_rotation_of_a_revoked_session_writes_nothing<B: Backend>() {
    rotation_after_revocation_writes_nothing::<B>(
        "rotation::a_rotation_of_a_revoked_session_writes_nothing",
        false,
    )
    .await;
}

pub async fn a_rotation_of_a_session_revoked_after_a_refresh_writes_nothing<B: Backend>() {
    // Refreshed once, so that the session has moved forward since it was created: its next
    // rotation must see the revocation wherever the session's moving fields are kept.
    rotation_after_revocation_writes_nothing::<B>(
        "rotation::a_rotation_of_a_session_revoked_after_a_refresh",
        true,
    )
    .await;
}

/// A session created at `T0`, refreshed once at `T0 + 1 ms` if `refreshed`, revoked at
/// `T0 + 2 ms`: a rotation of its newest token then loses and changes nothing.
async fn rotation_after_revocation_writes_nothing<B: Backend>(test: &str, refreshed: bool) {
    let Some(db) = B::create(test).await else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    let (token, _) = create(&store, &session, 5).await;
    let (mut newest, mut moved_at, mut tokens) = (token.hash(), T0, 1);
    if refreshed {
        let first = rotation_of(newest, session.id, T0.plus(ms(1)));
        assert_eq!(
            store.rotate_refresh_token(&first).await.unwrap(),
            RotationOutcome::Rotated
        );
        (newest, moved_at, tokens) = (first.successor, first.now, 2);
    }
    store
        .revoke_session(
            session.id,
            by_admin(T0.plus(ms(2))),
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, T0.plus(ms(2)))
            }),
        )
        .await
        .unwrap();

    let rotation = rotation_of(newest, session.id, T0.plus(ms(10)));
    assert_eq!(
        store.rotate_refresh_token(&rotation).await.unwrap(),
        RotationOutcome::Lost
    );
    let (record, stored) = store.find_refresh_token(&newest).await.unwrap().unwrap();
    assert_eq!(record.spent_at, None, "the presented token is not spent");
    assert_eq!(record.sealed_successor, None);
    assert_eq!(stored.revoked_at, Some(T0.plus(ms(2))));
    assert_eq!(stored.last_active_at, moved_at, "the session did not move");
    assert_eq!(
        db.tokens_of(session.id).await,
        tokens,
        "no successor was stored"
    );
    assert_eq!(refreshed_events_of(&db, session.id).await, tokens - 1);
}

pub async fn pairs_spent_before_the_cutoff_are_forgotten_and_their_tokens_stay<B: Backend>() {
    let Some(db) = B::create("rotation::pairs_spent_before_the_cutoff_are_forgotten").await else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    let (first, _) = create(&store, &session, 5).await;
    // A chain of three rotations, a minute apart: first -> second -> third -> fourth.
    let mut tokens = vec![first];
    let mut rotations = Vec::new();
    for minute in 1..=3 {
        let now = T0.plus(ms(60_000 * minute));
        let next = RefreshToken::generate(now);
        let rotation = Rotation {
            successor: next.hash(),
            sealed_successor: vec![u8::try_from(minute).unwrap(); 64],
            ..rotation_of(tokens.last().unwrap().hash(), session.id, now)
        };
        assert_eq!(
            store.rotate_refresh_token(&rotation).await.unwrap(),
            RotationOutcome::Rotated
        );
        tokens.push(next);
        rotations.push(rotation);
    }
    assert_eq!(
        store
            .purge_successor_pairs(T0.plus(ms(30_000)), 100)
            .await
            .unwrap(),
        0,
        "no pair was spent before the first rotation"
    );
    let cutoff = T0.plus(ms(150_000));
    assert_eq!(
        store.purge_successor_pairs(cutoff, 100).await.unwrap(),
        2,
        "the pairs of the two rotations before the cutoff"
    );
    assert_eq!(store.purge_successor_pairs(cutoff, 100).await.unwrap(), 0);
    for (index, token) in tokens.iter().enumerate().take(2) {
        let (record, _) = store
            .find_refresh_token(&token.hash())
            .await
            .unwrap()
            .expect("a token whose pair is forgotten is still found");
        assert_eq!(record.spent_at, Some(rotations[index].now));
        assert_eq!(
            record.sealed_successor, None,
            "token {index}'s pair is forgotten"
        );
        assert!(record.successor_spent);
    }
    let (record, _) = store
        .find_refresh_token(&tokens[2].hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.sealed_successor,
        Some(rotations[2].sealed_successor.clone()),
        "a pair spent after the cutoff stays"
    );
    assert!(!record.successor_spent);
    let (record, _) = store
        .find_refresh_token(&tokens[3].hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.spent_at, None, "the live token is untouched");
    // Later rotations still write and keep their pairs.
    let now = T0.plus(ms(240_000));
    let rotation = rotation_of(tokens[3].hash(), session.id, now);
    assert_eq!(
        store.rotate_refresh_token(&rotation).await.unwrap(),
        RotationOutcome::Rotated
    );
    let (record, _) = store
        .find_refresh_token(&tokens[3].hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.sealed_successor, Some(rotation.sealed_successor));
}

pub async fn a_rotation_naming_another_session_than_the_tokens_is_lost<B: Backend>() {
    let Some(db) = B::create("rotation::a_rotation_naming_another_session").await else {
        return;
    };
    let store = db.store().await;
    let alice = session_for("alice", T0);
    let bob = session_for("bob", T0);
    let (alice_token, _) = create(&store, &alice, 5).await;
    create(&store, &bob, 5).await;

    let rotation = rotation_of(alice_token.hash(), bob.id, T0.plus(ms(10)));
    assert_eq!(
        store.rotate_refresh_token(&rotation).await.unwrap(),
        RotationOutcome::Lost
    );
    let (record, _) = store
        .find_refresh_token(&alice_token.hash())
        .await
        .unwrap()
        .unwrap();
    assert!(
        record.spent_at.is_none(),
        "the presented token is not spent"
    );
    assert_eq!(db.tokens_of(alice.id).await, 1);
    assert_eq!(db.tokens_of(bob.id).await, 1);
    let stored = store.session(bob.id).await.unwrap().unwrap();
    assert_eq!(stored.last_active_at, T0, "bob's session did not move");
}

pub async fn two_rotations_of_one_token_at_once_on_one_store_yield_one_successor<B: Backend>() {
    let Some(db) = B::create("rotation::two_rotations_of_one_token_at_once_on_one_store").await
    else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    let (token, _) = create(&store, &session, 5).await;
    let now = T0.plus(ms(10));
    let (one, other) = (
        rotation_of(token.hash(), session.id, now),
        rotation_of(token.hash(), session.id, now),
    );
    // Submitted together, so that a store batching its writes (SQLite's group commit) puts
    // both in one transaction.
    let (first, second) = tokio::join!(
        store.rotate_refresh_token(&one),
        store.rotate_refresh_token(&other),
    );
    let mut outcomes = [first.expect("first"), second.expect("second")];
    outcomes.sort_by_key(|outcome| *outcome == RotationOutcome::Lost);
    assert_eq!(outcomes, [RotationOutcome::Rotated, RotationOutcome::Lost]);
    let (record, stored) = store
        .find_refresh_token(&token.hash())
        .await
        .expect("lookup")
        .expect("present");
    assert!(record.spent_at.is_some());
    assert_eq!(stored.last_active_at, now);
    assert_eq!(db.tokens_of(session.id).await, 2, "one successor");
}

pub async fn thirty_two_concurrent_rotations_from_two_instances_yield_one_successor<B: Backend>() {
    let Some(db) = B::create("rotation::thirty_two_concurrent_rotations").await else {
        return;
    };
    let instances = [db.store().await, db.store().await];
    // A race can go right by luck; several rounds make a wrong answer all but certain to show.
    for round in 0..5 {
        let session = session_for("alice", T0);
        let (created, _) = create(&instances[0], &session, 10).await;
        // In odd rounds the session has been refreshed once before the race (its moving
        // fields have moved since its creation), in even rounds not.
        let (presented, before) = if round % 2 == 1 {
            let earlier = rotation_of(created.hash(), session.id, T0);
            assert_eq!(
                instances[0].rotate_refresh_token(&earlier).await.unwrap(),
                RotationOutcome::Rotated
            );
            (earlier.successor, 1)
        } else {
            (created.hash(), 0)
        };

        let contenders = 32;
        let barrier = Arc::new(Barrier::new(contenders));
        let mut tasks = Vec::new();
        for contender in 0..contenders {
            let store = instances[contender % 2].clone();
            let barrier = Arc::clone(&barrier);
            let now = T0.plus(ms(1 + contender as u64));
            let rotation = Rotation {
                audit: Some(event_for("session.refreshed", &session, now)),
                ..rotation_of(presented, session.id, now)
            };
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let outcome = store.rotate_refresh_token(&rotation).await;
                (rotation, outcome)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (rotation, outcome) = task.await.unwrap();
            match outcome.expect("no contender fails") {
                RotationOutcome::Rotated => winners.push(rotation),
                RotationOutcome::Lost => {}
                RotationOutcome::ProofReplayed => panic!("no rotation carries a proof"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one rotation wins (round {round})"
        );
        assert_eq!(
            db.tokens_of(session.id).await,
            2 + before,
            "the presented token and the winner's successor, nothing else (round {round})"
        );
        assert_eq!(
            (
                refreshed_events_of(&db, session.id).await,
                refreshed_audit_rows_of(&db, session.id).await
            ),
            (1 + before, 1),
            "only the winner wrote its event and audit row (round {round})"
        );
        let winner = &winners[0];
        let (record, stored) = instances[1]
            .find_refresh_token(&presented)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.spent_at, Some(winner.now));
        assert_eq!(
            stored.last_active_at, winner.now,
            "the session carries the winner's activity, not a loser's (round {round})"
        );
        assert!(
            instances[0]
                .find_refresh_token(&winner.successor)
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// How many `session.refreshed` events session `id` has.
async fn refreshed_events_of<B: Backend>(db: &B, id: SessionId) -> i64 {
    db.count(
        "SELECT count(*) FROM events WHERE type = 'session.refreshed' AND session_id = $1",
        Some(id),
    )
    .await
}

/// How many `session.refreshed` audit rows name session `id`.
async fn refreshed_audit_rows_of<B: Backend>(db: &B, id: SessionId) -> i64 {
    db.count(
        "SELECT count(*) FROM audit_events WHERE type = 'session.refreshed' AND session_id = $1",
        Some(id),
    )
    .await
}
