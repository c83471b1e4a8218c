//! DPoP: a session's binding to a key is stored with it and made at most once by a rotation;
//! the replay cache of proofs sees an id as new once until its record expires, whichever
//! instances ask, and expired records are purged in batches.

use std::sync::Arc;

use sessiond_core::refresh::RefreshToken;
use sessiond_core::store::{ProofReplay, ProofStore, Rotation, RotationOutcome, SessionStore};
use tokio::sync::Barrier;

use crate::Backend;
use crate::fixtures::{T0, create, event_for, ms, rotation_of, session_for};

/// Two thumbprints, as `dpop_jkt` holds them.
const KEY_A: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
const KEY_B: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

pub async fn a_binding_is_stored_with_its_session_and_a_rotation_binds_an_unbound_one_once<
    B: Backend,
>() {
    let Some(db) = B::create("proofs::a_binding_is_stored_with_its_session").await else {
        return;
    };
    let store = db.store().await;
    let mut bound = session_for("alice", T0);
    bound.dpop_jkt = Some(KEY_A.into());
    let (bound_token, _) = create(&store, &bound, 10).await;
    let (_, found) = store
        .find_refresh_token(&bound_token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.dpop_jkt.as_deref(), Some(KEY_A));

    let unbound = session_for("alice", T0);
    let (token, _) = create(&store, &unbound, 10).await;
    assert_eq!(
        store.session(unbound.id).await.unwrap().unwrap().dpop_jkt,
        None
    );

    // A rotation without a binding leaves the session unbound.
    let first = rotation_of(token.hash(), unbound.id, T0.plus(ms(1)));
    assert_eq!(
        store.rotate_refresh_token(&first).await.unwrap(),
        RotationOutcome::Rotated
    );
    assert_eq!(
        store.session(unbound.id).await.unwrap().unwrap().dpop_jkt,
        None
    );

    // One that binds: the session holds the key from then on...
    let second = Rotation {
        bind_dpop_jkt: Some(KEY_A.into()),
        ..rotation_of(first.successor, unbound.id, T0.plus(ms(2)))
    };
    assert_eq!(
        store.rotate_refresh_token(&second).await.unwrap(),
        RotationOutcome::Rotated
    );
    let (_, read) = store
        .find_refresh_token(&second.successor)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.dpop_jkt.as_deref(), Some(KEY_A));

    // ...and a later rotation naming another key does not move it.
    let third = Rotation {
        bind_dpop_jkt: Some(KEY_B.into()),
        ..rotation_of(second.successor, unbound.id, T0.plus(ms(3)))
    };
    assert_eq!(
        store.rotate_refresh_token(&third).await.unwrap(),
        RotationOutcome::Rotated
    );
    assert_eq!(
        store
            .session(unbound.id)
            .await
            .unwrap()
            .unwrap()
            .dpop_jkt
            .as_deref(),
        Some(KEY_A)
    );

    // A rotation that loses binds nothing.
    let other = session_for("bob", T0);
    let (other_token, _) = create(&store, &other, 10).await;
    let winner = rotation_of(other_token.hash(), other.id, T0.plus(ms(4)));
    assert_eq!(
        store.rotate_refresh_token(&winner).await.unwrap(),
        RotationOutcome::Rotated
    );
    let loser = Rotation {
        bind_dpop_jkt: Some(KEY_B.into()),
        successor: RefreshToken::generate(T0.plus(ms(5))).hash(),
        ..rotation_of(other_token.hash(), other.id, T0.plus(ms(5)))
    };
    assert_eq!(
        store.rotate_refresh_token(&loser).await.unwrap(),
        RotationOutcome::Lost
    );
    assert_eq!(
        store.session(other.id).await.unwrap().unwrap().dpop_jkt,
        None
    );
}

/// A proof id that differs from every other `index`.
fn replay_id(index: u8) -> [u8; 32] {
    let mut id = [0x5a; 32];
    id[0] = index;
    id
}

async fn stored_proofs<B: Backend>(db: &B) -> i64 {
    db.count("SELECT count(*) FROM dpop_proofs", None).await
}

pub async fn a_proof_id_is_new_once_until_its_record_expires<B: Backend>() {
    let Some(db) = B::create("proofs::a_proof_id_is_new_once").await else {
        return;
    };
    let store = db.store().await;
    let until = T0.plus(ms(65_000));
    assert!(
        store
            .remember_dpop_proof(&replay_id(1), until, T0)
            .await
            .unwrap(),
        "a first use is new"
    );
    for later in [0, 1_000, 64_999] {
        assert!(
            !store
                .remember_dpop_proof(
                    &replay_id(1),
                    T0.plus(ms(later + 65_000)),
                    T0.plus(ms(later))
                )
                .await
                .unwrap(),
            "a replay {later} ms later is seen, and does not extend the record"
        );
    }
    assert!(
        store
            .remember_dpop_proof(&replay_id(2), until, T0)
            .await
            .unwrap(),
        "another id is new"
    );
    // Once the record expired (and before a purge removed it), the id is new again: the
    // caller refuses such a proof as stale before asking.
    let after = T0.plus(ms(65_000));
    assert!(
        store
            .remember_dpop_proof(&replay_id(1), after.plus(ms(65_000)), after)
            .await
            .unwrap(),
        "an expired record does not count"
    );
    assert!(
        !store
            .remember_dpop_proof(&replay_id(1), after.plus(ms(65_000)), after.plus(ms(1)))
            .await
            .unwrap(),
        "the renewed record holds until its new expiry"
    );
    assert_eq!(stored_proofs(&db).await, 2, "one row per id");
}

pub async fn sixteen_concurrent_uses_of_one_proof_on_two_instances_let_one_through<B: Backend>() {
    let Some(db) = B::create("proofs::sixteen_concurrent_uses_of_one_proof").await else {
        return;
    };
    let instances = [db.store().await, db.store().await];
    // A race can go right by luck; several rounds make a wrong answer all but certain to show.
    for round in 0..5_u8 {
        let contenders = 16;
        let barrier = Arc::new(Barrier::new(contenders));
        let mut tasks = Vec::new();
        for contender in 0..contenders {
            let store = instances[contender % 2].clone();
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .remember_dpop_proof(&replay_id(round), T0.plus(ms(60_000)), T0)
                    .await
            }));
        }
        let mut new = 0;
        for task in tasks {
            if task.await.unwrap().expect("no contender fails") {
                new += 1;
            }
        }
        assert_eq!(new, 1, "exactly one use is new (round {round})");
    }
    assert_eq!(stored_proofs(&db).await, 5);
}

/// A rotation carrying a proof `index`, kept until 60 s after `T0`.
fn with_proof(rotation: Rotation, index: u8) -> Rotation {
    Rotation {
        proof: Some(ProofReplay {
            id: replay_id(index),
            until: T0.plus(ms(60_000)),
        }),
        ..rotation
    }
}

pub async fn a_rotation_records_its_proof_first_and_a_replayed_one_changes_nothing<B: Backend>() {
    let Some(db) = B::create("proofs::a_rotation_records_its_proof_first").await else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    let (token, _) = create(&store, &session, 10).await;

    // A rotation with a new proof rotates, and the proof is recorded with it.
    let first = with_proof(rotation_of(token.hash(), session.id, T0.plus(ms(1))), 1);
    assert_eq!(
        store.rotate_refresh_token(&first).await.unwrap(),
        RotationOutcome::Rotated
    );
    assert!(
        !store
            .remember_dpop_proof(&replay_id(1), T0.plus(ms(60_000)), T0.plus(ms(2)))
            .await
            .unwrap(),
        "the rotation recorded its proof"
    );

    // The same proof again, with a binding and an audit event: nothing changes.
    let events_before = db.count("SELECT count(*) FROM audit_events", None).await;
    let replayed = Rotation {
        bind_dpop_jkt: Some(KEY_A.into()),
        audit: Some(event_for("session.refreshed", &session, T0.plus(ms(3)))),
        ..with_proof(rotation_of(first.successor, session.id, T0.plus(ms(3))), 1)
    };
    assert_eq!(
        store.rotate_refresh_token(&replayed).await.unwrap(),
        RotationOutcome::ProofReplayed
    );
    assert_eq!(db.tokens_of(session.id).await, 2, "no successor was stored");
    let (successor, read) = store
        .find_refresh_token(&first.successor)
        .await
        .unwrap()
        .expect("the successor is still stored");
    assert_eq!(successor.spent_at, None, "the presented token stays live");
    assert_eq!(read.dpop_jkt, None, "the session is not bound");
    assert_eq!(
        db.count("SELECT count(*) FROM audit_events", None).await,
        events_before,
        "no audit row was written"
    );

    // A proof recorded alone before is a replay to a rotation as well.
    assert!(
        store
            .remember_dpop_proof(&replay_id(2), T0.plus(ms(60_000)), T0.plus(ms(4)))
            .await
            .unwrap()
    );
    let after_remembered = with_proof(rotation_of(first.successor, session.id, T0.plus(ms(5))), 2);
    assert_eq!(
        store.rotate_refresh_token(&after_remembered).await.unwrap(),
        RotationOutcome::ProofReplayed
    );

    // A rotation that loses its race still records its proof.
    let winner = rotation_of(first.successor, session.id, T0.plus(ms(6)));
    assert_eq!(
        store.rotate_refresh_token(&winner).await.unwrap(),
        RotationOutcome::Rotated
    );
    let loser = with_proof(rotation_of(first.successor, session.id, T0.plus(ms(7))), 3);
    assert_eq!(
        store.rotate_refresh_token(&loser).await.unwrap(),
        RotationOutcome::Lost
    );
    assert!(
        !store
            .remember_dpop_proof(&replay_id(3), T0.plus(ms(60_000)), T0.plus(ms(8)))
            .await
            .unwrap(),
        "the lost rotation recorded its proof"
    );

    // Once its record has expired, the id is new to a rotation again.
    let later = T0.plus(ms(60_000));
    let renewed = with_proof(rotation_of(winner.successor, session.id, later), 1);
    assert_eq!(
        store.rotate_refresh_token(&renewed).await.unwrap(),
        RotationOutcome::Rotated
    );
    assert_eq!(stored_proofs(&db).await, 3, "one row per id");
}

pub async fn eight_rotations_with_one_proof_on_two_instances_let_one_through<B: Backend>() {
    let Some(db) = B::create("proofs::eight_rotations_with_one_proof").await else {
        return;
    };
    let instances = [db.store().await, db.store().await];
    // A race can go right by luck; several rounds make a wrong answer all but certain to show.
    for round in 0..4_u8 {
        let contenders = 8;
        let barrier = Arc::new(Barrier::new(contenders));
        let mut tasks = Vec::new();
        for contender in 0..contenders {
            let store = instances[contender % 2].clone();
            // Each contender spends a token of a session of its own, with the same proof.
            let session = session_for(&format!("user-{round}-{contender}"), T0);
            let (token, _) = create(&store, &session, 10).await;
            let rotation = with_proof(rotation_of(token.hash(), session.id, T0), round);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let outcome = store.rotate_refresh_token(&rotation).await;
                (session.id, outcome)
            }));
        }
        let mut rotated = Vec::new();
        for task in tasks {
            let (session, outcome) = task.await.unwrap();
            match outcome.expect("no contender fails") {
                RotationOutcome::Rotated => rotated.push(session),
                RotationOutcome::ProofReplayed => {
                    assert_eq!(
                        db.tokens_of(session).await,
                        1,
                        "nothing rotated (round {round})"
                    );
                }
                RotationOutcome::Lost => panic!("no token is contended (round {round})"),
            }
        }
        assert_eq!(
            rotated.len(),
            1,
            "exactly one rotation is let through (round {round})"
        );
        assert_eq!(db.tokens_of(rotated[0]).await, 2);
    }
    assert_eq!(stored_proofs(&db).await, 4);
}

pub async fn purge_deletes_expired_proof_ids_in_batches_and_keeps_live_ones<B: Backend>() {
    let Some(db) = B::create("proofs::purge_deletes_expired_proof_ids").await else {
        return;
    };
    let store = db.store().await;
    for index in 0..5 {
        assert!(
            store
                .remember_dpop_proof(&replay_id(index), T0.plus(ms(u64::from(index))), T0)
                .await
                .unwrap()
        );
    }
    for index in 10..12 {
        assert!(
            store
                .remember_dpop_proof(&replay_id(index), T0.plus(ms(60_000)), T0)
                .await
                .unwrap()
        );
    }
    let now = T0.plus(ms(4));
    let mut batches = Vec::new();
    loop {
        let deleted = store.purge_dpop_proofs(now, 3).await.unwrap();
        batches.push(deleted);
        if deleted < 3 {
            break;
        }
    }
    assert_eq!(batches, [3, 2], "the expiry is inclusive: ids 0 to 4 go");
    assert_eq!(stored_proofs(&db).await, 2);
    for index in 10..12 {
        assert!(
            !store
                .remember_dpop_proof(&replay_id(index), T0.plus(ms(60_000)), now)
                .await
                .unwrap(),
            "a live record survives the purge"
        );
    }
    assert_eq!(store.purge_dpop_proofs(now, 3).await.unwrap(), 0);
}
