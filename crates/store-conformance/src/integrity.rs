//! Encrypted values that do not open: the row still reads, with the field absent and named as
//! unreadable, and everything that does not need the field (rotation, revocation, new sessions
//! of the same user, the device registry) keeps working.

use std::sync::Arc;

use sessiond_core::crypt::columns::{DEVICE_NAME, SESSION_DEVICE_NAME, SESSION_METADATA};
use sessiond_core::crypt::{Cipher, DataKey};
use sessiond_core::store::{DeviceStore, EncryptionStore, RotationOutcome, SessionStore};
use sessiond_core::{DeviceId, UserId};

use crate::Backend;
use crate::fixtures::{T0, by_admin, create, event_for, ms, rotation_of, session_for};

/// Regression: a `sessions.device_name` moved from another row made the user's session list
/// fail, and the session impossible to revoke.
pub async fn a_ciphertext_moved_from_another_row_reads_as_unreadable_and_the_session_still_revokes<
    B: Backend,
>() {
    let Some(db) = B::create("integrity::a_ciphertext_moved_from_another_row").await else {
        return;
    };
    let store = db.store().await;
    store.install_cipher(Arc::new(
        Cipher::new(&[DataKey::generate(1)]).expect("one key"),
    ));
    let mut victim = session_for("alice", T0);
    victim.device.name = Some("Laptop".into());
    victim
        .metadata
        .insert("plan".into(), serde_json::json!("pro"));
    let mut other = session_for("alice", T0.plus(ms(1)));
    other.device.id = DeviceId::from_trusted("phone".into());
    other.device.name = Some("Phone".into());
    let (token, _) = create(&store, &victim, 5).await;
    create(&store, &other, 5).await;

    // Copy the other session's sealed device name and metadata into the victim's row, and the
    // phone's sealed name into the laptop's registry row, as someone with write access to the
    // database (or a botched restore) would.
    let (victim_id, other_id) = (victim.id, other.id);
    db.execute(&format!(
        "UPDATE sessions SET
             device_name = (SELECT device_name FROM sessions WHERE id = '{other_id}'),
             metadata = (SELECT metadata FROM sessions WHERE id = '{other_id}')
         WHERE id = '{victim_id}'"
    ))
    .await;
    db.execute(
        "UPDATE devices SET name = (SELECT name FROM devices WHERE device_id = 'phone')
         WHERE user_id = 'alice' AND device_id = 'laptop'",
    )
    .await;

    let alice = UserId::from_trusted("alice".into());
    let listed = store
        .active_sessions(&alice, T0.plus(ms(2)))
        .await
        .expect("the list still reads");
    assert_eq!(listed.len(), 2, "both sessions are listed");
    let read = listed
        .iter()
        .find(|session| session.id == victim.id)
        .expect("the victim is listed");
    assert_eq!(read.unreadable, vec![SESSION_DEVICE_NAME, SESSION_METADATA]);
    assert_eq!(read.device.name, None, "never the other row's name");
    assert!(read.metadata.is_empty());
    assert_eq!(read.ip, victim.ip, "the fields that open still read");
    assert_eq!(read.user_agent, victim.user_agent);
    let intact = listed
        .iter()
        .find(|session| session.id == other.id)
        .expect("the other is listed");
    assert!(intact.unreadable.is_empty());
    assert_eq!(intact.device.name.as_deref(), Some("Phone"));

    let single = store.session(victim.id).await.unwrap().expect("found");
    assert_eq!(single.unreadable, read.unreadable);
    let (_, by_token) = store
        .find_refresh_token(&token.hash())
        .await
        .unwrap()
        .expect("the token still finds its session");
    assert_eq!(by_token.unreadable, read.unreadable);

    let devices = store.devices(&alice).await.expect("the registry reads");
    let laptop = devices
        .iter()
        .find(|record| record.device.id.as_str() == "laptop")
        .expect("the laptop is listed");
    assert_eq!(laptop.unreadable, vec![DEVICE_NAME]);
    assert_eq!(laptop.device.name, None);
    assert_eq!(laptop.user_agent, victim.user_agent);
    let phone = devices
        .iter()
        .find(|record| record.device.id.as_str() == "phone")
        .expect("the phone is listed");
    assert!(phone.unreadable.is_empty());

    // What needs none of the unreadable fields keeps working.
    let rotation = rotation_of(token.hash(), victim.id, T0.plus(ms(3)));
    assert_eq!(
        store.rotate_refresh_token(&rotation).await.unwrap(),
        RotationOutcome::Rotated
    );
    let third = session_for("alice", T0.plus(ms(4)));
    let (_, evicted) = create(&store, &third, 2).await;
    assert_eq!(
        evicted.iter().map(|session| session.id).collect::<Vec<_>>(),
        vec![other.id],
        "eviction reads the user's sessions, the victim included"
    );
    let revoked = store
        .revoke_session(
            victim.id,
            by_admin(T0.plus(ms(5))),
            &sessiond_core::store::audit_for(|session: &sessiond_core::Session| {
                event_for("session.revoked", session, T0.plus(ms(5)))
            }),
        )
        .await
        .expect("the revocation needs no decryption")
        .expect("the session exists");
    assert!(revoked.1, "revoked now");
    assert_eq!(revoked.0.revoked_at, Some(T0.plus(ms(5))));
    let refs = store
        .revoked_since(T0, T0.plus(ms(6)))
        .await
        .expect("the revocation feed reads");
    assert!(refs.iter().any(|revoked| revoked.id == victim.id));
}
