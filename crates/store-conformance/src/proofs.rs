//! The replay cache of DPoP proofs: an id is new once until its record expires, whichever
//! instances ask, and expired records are purged in batches.

use std::sync::Arc;

use sessiond_core::store::ProofStore;
use tokio::sync::Barrier;

use crate::Backend;
use crate::fixtures::{T0, ms};

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
