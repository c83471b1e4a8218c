//! Signing keys: their exact round trip, and one first key among instances starting together.

use sessiond_core::store::{KeyStore, StoreError};
use sessiond_core::token::{SigningAlgorithm, StoredKey};

use crate::Backend;
use crate::fixtures::{T0, ms};

pub async fn signing_keys_round_trip_in_creation_order<B: Backend>() {
    let Some(db) = B::create("storage::signing_keys_round_trip").await else {
        return;
    };
    let store = db.store().await;
    assert!(store.signing_keys().await.unwrap().is_empty());
    let newer = StoredKey::generate(SigningAlgorithm::Hs256, T0.plus(ms(5)));
    let older = StoredKey::generate(SigningAlgorithm::EdDsa, T0);
    store.insert_signing_key(&newer).await.unwrap();
    store.insert_signing_key(&older).await.unwrap();

    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    for (stored, original) in keys.iter().zip([&older, &newer]) {
        assert_eq!(stored.kid, original.kid);
        assert_eq!(stored.algorithm, original.algorithm);
        assert_eq!(*stored.secret, *original.secret);
        assert_eq!(stored.created_at, original.created_at);
    }
    assert!(
        matches!(
            store.insert_signing_key(&older).await,
            Err(StoreError::Backend(_))
        ),
        "a duplicate kid is refused, not retried"
    );
}

pub async fn only_one_first_signing_key_wins_among_instances_starting_together<B: Backend>() {
    let Some(db) = B::create("storage::only_one_first_signing_key_wins").await else {
        return;
    };
    let (first, second) = (db.store().await, db.store().await);
    let candidates: Vec<StoredKey> = (0..8)
        .map(|_| StoredKey::generate(SigningAlgorithm::EdDsa, T0))
        .collect();
    let inserted =
        futures_util::future::join_all(candidates.iter().enumerate().map(|(index, key)| {
            let store = if index % 2 == 0 { &first } else { &second };
            store.insert_first_signing_key(key)
        }))
        .await;
    let winners = inserted
        .into_iter()
        .filter(|won| *won.as_ref().unwrap())
        .count();
    assert_eq!(winners, 1, "exactly one instance stores the first key");
    let keys = first.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    let other = StoredKey::generate(SigningAlgorithm::Hs256, T0);
    assert!(
        second.insert_first_signing_key(&other).await.unwrap(),
        "the first key of another algorithm is stored"
    );
}
