//! Purging, signing keys, audit events and the exact round trip of stored values.

use sessiond_core::audit::{NewAuditEvent, Severity};
use sessiond_core::store::{AuditStore, KeyStore, SessionStore, Store, StoreError};
use sessiond_core::token::{SigningAlgorithm, StoredKey};

use crate::helpers::{T0, TestDb, by_admin, create, event_for, ms, session_for};

#[tokio::test]
async fn purge_deletes_old_dead_sessions_in_batches_with_their_tokens() {
    let Some(db) = TestDb::create("storage::purge_deletes_old_dead_sessions_in_batches").await
    else {
        return;
    };
    let store = db.store().await;
    let audit = sessiond_core::store::audit_for(|revoked: &sessiond_core::Session| {
        event_for("session.revoked", revoked, T0)
    });
    let mut doomed = Vec::new();
    for index in 0..5 {
        let session = session_for("alice", T0.plus(ms(index)));
        create(&store, &session, 100).await;
        store
            .revoke_session(session.id, by_admin(T0.plus(ms(10))), &audit)
            .await
            .unwrap();
        doomed.push(session);
    }
    // Expired long ago without being revoked.
    let mut idle = session_for("alice", T0);
    idle.idle_expires_at = T0.plus(ms(20));
    idle.access_expires_at = T0.plus(ms(20));
    create(&store, &idle, 100).await;
    doomed.push(idle);
    // Revoked long ago, but an access token of it lives on: kept until it expires.
    let mut lingering = session_for("alice", T0);
    lingering.access_expires_at = T0.plus(ms(1_000_000));
    create(&store, &lingering, 100).await;
    store
        .revoke_session(lingering.id, by_admin(T0.plus(ms(10))), &audit)
        .await
        .unwrap();
    let alive = session_for("alice", T0);
    create(&store, &alive, 100).await;

    let now = T0.plus(ms(900_000));
    let cutoff = T0.plus(ms(100));
    let mut batches = Vec::new();
    loop {
        let deleted = store.purge(cutoff, now, 4).await.unwrap();
        batches.push(deleted);
        if deleted < 4 {
            break;
        }
    }
    assert_eq!(batches, [4, 2]);
    for session in &doomed {
        assert!(store.session(session.id).await.unwrap().is_none());
        assert_eq!(
            db.tokens_of(session.id).await,
            0,
            "tokens go with their session"
        );
    }
    assert!(store.session(lingering.id).await.unwrap().is_some());
    assert!(store.session(alive.id).await.unwrap().is_some());
    assert_eq!(store.purge(cutoff, now, 4).await.unwrap(), 0);
}

#[tokio::test]
async fn signing_keys_round_trip_in_creation_order() {
    let Some(db) = TestDb::create("storage::signing_keys_round_trip").await else {
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

#[tokio::test]
async fn claims_and_metadata_round_trip_exactly_including_escaped_nul_characters() {
    let Some(db) = TestDb::create("storage::claims_and_metadata_round_trip").await else {
        return;
    };
    let store = db.store().await;
    let mut session = session_for("alice", T0);
    session.tenant_id = Some(sessiond_core::TenantId::from_trusted("acme".into()));
    session.device.device_type = sessiond_core::DeviceType::Mobile;
    session
        .claims
        .insert("nul".into(), serde_json::json!("a\u{0}b"));
    session
        .claims
        .insert("big".into(), serde_json::json!(9_007_199_254_740_993_u64));
    session.metadata.insert(
        "nested".into(),
        serde_json::json!({"list": [1.5, null, true, "ü"]}),
    );
    create(&store, &session, 5).await;
    assert_eq!(store.session(session.id).await.unwrap().unwrap(), session);
}

#[tokio::test]
async fn audit_events_are_appended_together_in_order() {
    let Some(db) = TestDb::create("storage::audit_events_are_appended").await else {
        return;
    };
    let store = db.store().await;
    store.append_audit(&[]).await.unwrap();
    let mut details = serde_json::Map::new();
    details.insert("actor".into(), serde_json::json!("admin"));
    let events = [
        NewAuditEvent {
            kind: "security.key_rotated",
            severity: Severity::Warning,
            user_id: None,
            session_id: None,
            ip: Some("198.51.100.7".into()),
            at: T0,
            details: details.clone(),
        },
        event_for("session.revoked", &session_for("alice", T0), T0.plus(ms(1))),
    ];
    store.append_audit(&events).await.unwrap();
    let rows: Vec<(String, String, Option<String>, i64, String)> =
        sqlx::query_as("SELECT type, severity, ip, at, details FROM audit_events ORDER BY seq")
            .fetch_all(&db.raw)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            (
                "security.key_rotated".to_owned(),
                "warning".to_owned(),
                Some("198.51.100.7".to_owned()),
                T0.unix_millis(),
                r#"{"actor":"admin"}"#.to_owned()
            ),
            (
                "session.revoked".to_owned(),
                "info".to_owned(),
                None,
                T0.unix_millis() + 1,
                "{}".to_owned()
            ),
        ]
    );
    store.ping().await.unwrap();
}

#[tokio::test]
async fn only_one_first_signing_key_wins_among_instances_starting_together() {
    let Some(db) = TestDb::create("storage::only_one_first_signing_key_wins").await else {
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
