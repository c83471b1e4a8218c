//! Signing keys: their exact round trip, one first key among instances starting together, the
//! rotation compare-and-swap, staged rotation (a key published before it signs), one active key
//! whatever the algorithms, and retirement (the row kept without its secret until purged).

use sessiond_core::store::{KeyStore, RetireOutcome, StoreError};
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
        assert_eq!(stored.signs_from, original.signs_from);
        assert_eq!(stored.deactivated_at, original.deactivated_at);
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
        !second.insert_first_signing_key(&other).await.unwrap(),
        "no first key of another algorithm beside the active one"
    );
    assert_eq!(first.signing_keys().await.unwrap().len(), 1);
}

pub async fn a_rotation_is_a_compare_and_swap_and_only_deactivated_keys_retire<B: Backend>() {
    let Some(db) = B::create("keys::a_rotation_is_a_compare_and_swap").await else {
        return;
    };
    let (first, second) = (db.store().await, db.store().await);
    let version = first.signing_keys_version().await.unwrap();
    let original = StoredKey::generate(SigningAlgorithm::EdDsa, T0);
    assert!(first.rotate_signing_key(&original, None).await.unwrap());
    assert_ne!(
        second.signing_keys_version().await.unwrap(),
        version,
        "every process sees the version move"
    );

    // Two instances rotate away from the same key: one wins.
    let one = StoredKey::generate(SigningAlgorithm::EdDsa, T0.plus(ms(10)));
    let other = StoredKey::generate(SigningAlgorithm::EdDsa, T0.plus(ms(10)));
    let (a, b) = tokio::join!(
        first.rotate_signing_key(&one, Some(&original.kid)),
        second.rotate_signing_key(&other, Some(&original.kid)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one rotation from one key wins");
    let winner = if a { &one } else { &other };
    assert!(
        !first.rotate_signing_key(&other, None).await.unwrap(),
        "a rotation that expects no active key loses once one exists"
    );

    let keys = second.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2, "the loser stored nothing");
    let active: Vec<_> = keys
        .iter()
        .filter(|key| key.deactivated_at.is_none())
        .map(|key| key.kid.as_str())
        .collect();
    assert_eq!(active, [winner.kid.as_str()], "one active key");
    let replaced = keys.iter().find(|key| key.kid == original.kid).unwrap();
    assert_eq!(replaced.deactivated_at, Some(winner.created_at));

    assert_eq!(
        first
            .retire_signing_key(&winner.kid, winner.created_at)
            .await
            .unwrap(),
        RetireOutcome::Active,
        "the active key is never retired"
    );
    assert_eq!(
        first
            .retire_signing_key("no-such-kid", winner.created_at)
            .await
            .unwrap(),
        RetireOutcome::NotFound
    );
    assert!(
        first
            .retire_signing_keys_deactivated_before(winner.created_at, winner.created_at)
            .await
            .unwrap()
            .is_empty(),
        "deactivated at the cutoff, not before it"
    );
    let version = first.signing_keys_version().await.unwrap();
    assert_eq!(
        second
            .retire_signing_keys_deactivated_before(
                winner.created_at.plus(ms(1)),
                winner.created_at.plus(ms(1)),
            )
            .await
            .unwrap(),
        std::slice::from_ref(&original.kid)
    );
    assert_ne!(first.signing_keys_version().await.unwrap(), version);
    assert_eq!(
        first
            .retire_signing_key(&original.kid, winner.created_at.plus(ms(1)))
            .await
            .unwrap(),
        RetireOutcome::AlreadyRetired
    );
    let kids: Vec<_> = first
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.kid)
        .collect();
    assert_eq!(kids, std::slice::from_ref(&winner.kid));
}

pub async fn a_staged_rotation_keeps_the_old_key_signing_until_the_new_one_starts<B: Backend>() {
    let Some(db) = B::create("keys::a_staged_rotation").await else {
        return;
    };
    let (first, second) = (db.store().await, db.store().await);
    let original = StoredKey::generate(SigningAlgorithm::EdDsa, T0);
    assert!(first.insert_first_signing_key(&original).await.unwrap());

    // Published at T0 + 10 ms, signing from T0 + 1 s.
    let staged = StoredKey {
        signs_from: T0.plus(ms(1_000)),
        ..StoredKey::generate(SigningAlgorithm::EdDsa, T0.plus(ms(10)))
    };
    assert!(
        first
            .rotate_signing_key(&staged, Some(&original.kid))
            .await
            .unwrap()
    );
    let keys = second.signing_keys().await.unwrap();
    let old = keys.iter().find(|key| key.kid == original.kid).unwrap();
    let new = keys.iter().find(|key| key.kid == staged.kid).unwrap();
    assert_eq!(
        new.signs_from, staged.signs_from,
        "the activation round-trips"
    );
    assert_eq!(new.created_at, staged.created_at);
    assert_eq!(new.deactivated_at, None);
    assert_eq!(
        old.deactivated_at,
        Some(staged.signs_from),
        "the old key signs until the new one starts"
    );
    for at in [T0.plus(ms(10)), T0.plus(ms(999))] {
        assert!(old.signs_at(at) && !new.signs_at(at), "{at:?}");
    }
    assert!(!old.signs_at(staged.signs_from) && new.signs_at(staged.signs_from));

    // The key that still signs is not retired before its successor starts, even by hand;
    // nor is the key waiting to sign.
    for kid in [&original.kid, &staged.kid] {
        assert_eq!(
            second
                .retire_signing_key(kid, T0.plus(ms(500)))
                .await
                .unwrap(),
            RetireOutcome::Active,
            "{kid}"
        );
    }

    // An emergency rotation before the staged key starts: the new key signs at once, and
    // neither the old key nor the staged one signs after it.
    let emergency = StoredKey::generate(SigningAlgorithm::EdDsa, T0.plus(ms(500)));
    assert!(
        second
            .rotate_signing_key(&emergency, Some(&staged.kid))
            .await
            .unwrap()
    );
    let keys = first.signing_keys().await.unwrap();
    let deactivated = |kid: &str| {
        keys.iter()
            .find(|key| key.kid == kid)
            .unwrap()
            .deactivated_at
    };
    assert_eq!(deactivated(&original.kid), Some(emergency.signs_from));
    assert_eq!(deactivated(&staged.kid), Some(emergency.signs_from));
    assert_eq!(deactivated(&emergency.kid), None);
    let signing: Vec<_> = keys
        .iter()
        .filter(|key| key.signs_at(T0.plus(ms(2_000))))
        .map(|key| key.kid.as_str())
        .collect();
    assert_eq!(
        signing,
        [emergency.kid.as_str()],
        "one key signs afterwards"
    );
    assert_eq!(
        first
            .retire_signing_key(&original.kid, T0.plus(ms(500)))
            .await
            .unwrap(),
        RetireOutcome::Retired,
        "once replaced, the old key may be retired"
    );
}

pub async fn a_rotation_to_another_algorithm_replaces_the_old_algorithms_key<B: Backend>() {
    let Some(db) = B::create("keys::a_rotation_to_another_algorithm").await else {
        return;
    };
    let (first, second) = (db.store().await, db.store().await);
    let eddsa = StoredKey::generate(SigningAlgorithm::EdDsa, T0);
    assert!(first.insert_first_signing_key(&eddsa).await.unwrap());

    // ES256, published at T0 + 10 ms and signing from T0 + 1 s, replaces the EdDSA key.
    let es256 = StoredKey {
        signs_from: T0.plus(ms(1_000)),
        ..StoredKey::generate(SigningAlgorithm::Es256, T0.plus(ms(10)))
    };
    assert!(
        !second.rotate_signing_key(&es256, None).await.unwrap(),
        "the EdDSA key is the active one, whatever the new key's algorithm"
    );
    assert!(
        second
            .rotate_signing_key(&es256, Some(&eddsa.kid))
            .await
            .unwrap()
    );
    let keys = first.signing_keys().await.unwrap();
    let active: Vec<_> = keys
        .iter()
        .filter(|key| key.deactivated_at.is_none())
        .map(|key| key.kid.as_str())
        .collect();
    assert_eq!(active, [es256.kid.as_str()], "never a second active key");
    let old = keys.iter().find(|key| key.kid == eddsa.kid).unwrap();
    assert_eq!(old.deactivated_at, Some(es256.signs_from));
    for (at, signing) in [
        (T0.plus(ms(999)), &eddsa.kid),
        (es256.signs_from, &es256.kid),
    ] {
        let signs: Vec<_> = keys
            .iter()
            .filter(|key| key.signs_at(at))
            .map(|key| &key.kid)
            .collect();
        assert_eq!(signs, [signing], "{at:?}");
    }

    // And back to EdDSA at once: the ES256 key, not yet signing, is replaced too.
    let back = StoredKey::generate(SigningAlgorithm::EdDsa, T0.plus(ms(500)));
    assert!(
        first
            .rotate_signing_key(&back, Some(&es256.kid))
            .await
            .unwrap()
    );
    let keys = second.signing_keys().await.unwrap();
    for kid in [&eddsa.kid, &es256.kid] {
        let key = keys.iter().find(|key| key.kid == *kid).unwrap();
        assert_eq!(key.deactivated_at, Some(back.signs_from), "{kid}");
    }
    assert!(
        !second
            .insert_first_signing_key(&StoredKey::generate(SigningAlgorithm::Hs256, T0))
            .await
            .unwrap()
    );
}

pub async fn a_retired_key_keeps_its_row_without_its_secret_until_purged<B: Backend>() {
    let Some(db) = B::create("keys::a_retired_key_keeps_its_row").await else {
        return;
    };
    let (first, second) = (db.store().await, db.store().await);
    let old = StoredKey::generate(SigningAlgorithm::Es256, T0);
    assert!(first.insert_first_signing_key(&old).await.unwrap());
    let new = StoredKey::generate(SigningAlgorithm::EdDsa, T0.plus(ms(10)));
    assert!(
        first
            .rotate_signing_key(&new, Some(&old.kid))
            .await
            .unwrap()
    );
    assert!(second.retired_signing_keys().await.unwrap().is_empty());

    let version = first.signing_keys_version().await.unwrap();
    let retired_at = T0.plus(ms(20));
    assert_eq!(
        second
            .retire_signing_keys_deactivated_before(T0.plus(ms(11)), retired_at)
            .await
            .unwrap(),
        std::slice::from_ref(&old.kid)
    );
    assert_ne!(first.signing_keys_version().await.unwrap(), version);

    // Out of the keys that sign and verify, listed as retired, its row still there.
    let kids: Vec<_> = first
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.kid)
        .collect();
    assert_eq!(kids, std::slice::from_ref(&new.kid));
    let retired = first.retired_signing_keys().await.unwrap();
    assert_eq!(retired.len(), 1);
    let row = &retired[0];
    assert_eq!(
        (
            row.kid.as_str(),
            row.algorithm,
            row.created_at,
            row.signs_from
        ),
        (
            old.kid.as_str(),
            old.algorithm,
            old.created_at,
            old.signs_from
        )
    );
    assert_eq!(row.deactivated_at, Some(new.signs_from));
    assert_eq!(row.retired_at, retired_at);
    assert_eq!(db.count("SELECT count(*) FROM signing_keys", None).await, 2);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM signing_keys WHERE length(secret) = 0 AND retired_at IS NOT NULL",
            None
        )
        .await,
        1,
        "the retired key's secret is wiped"
    );
    assert_eq!(
        second
            .retire_signing_key(&old.kid, T0.plus(ms(30)))
            .await
            .unwrap(),
        RetireOutcome::AlreadyRetired
    );
    assert!(
        second
            .retire_signing_keys_deactivated_before(T0.plus(ms(100)), T0.plus(ms(100)))
            .await
            .unwrap()
            .is_empty(),
        "retired once"
    );
    assert_eq!(
        first.retired_signing_keys().await.unwrap()[0].retired_at,
        retired_at
    );

    // Purged once the retention passes, not before.
    assert_eq!(
        first.purge_retired_signing_keys(retired_at).await.unwrap(),
        0,
        "retired at the cutoff, not before it"
    );
    assert_eq!(
        second
            .purge_retired_signing_keys(retired_at.plus(ms(1)))
            .await
            .unwrap(),
        1
    );
    assert!(first.retired_signing_keys().await.unwrap().is_empty());
    assert_eq!(db.count("SELECT count(*) FROM signing_keys", None).await, 1);
    assert_eq!(
        first
            .retire_signing_key(&old.kid, T0.plus(ms(200)))
            .await
            .unwrap(),
        RetireOutcome::NotFound
    );
}
