//! Purging, audit events and the exact round trip of stored values.

use std::time::Duration;

use sessiond_core::Timestamp;
use sessiond_core::audit::{NewAuditEvent, Severity};
use sessiond_core::store::{AuditStore, RotationOutcome, SessionStore, Store};

use crate::Backend;
use crate::fixtures::{T0, by_admin, create, event_for, ms, rotation_of, session_for};

pub async fn purge_deletes_old_dead_sessions_in_batches_with_their_tokens<B: Backend>() {
    let Some(db) = B::create("storage::purge_deletes_old_dead_sessions_in_batches").await else {
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

/// Announces at most four expired sessions at `now`; answers how many.
async fn announce<S: SessionStore + ?Sized>(store: &S, now: Timestamp) -> u64 {
    store
        .announce_expired(
            now,
            4,
            &sessiond_core::store::audit_for(move |expired: &sessiond_core::Session| {
                event_for("session.expired", expired, now)
            }),
        )
        .await
        .expect("announce")
}

pub async fn a_refreshed_session_expires_at_its_latest_idle_expiry_even_a_shortened_one<
    B: Backend,
>() {
    let Some(db) =
        B::create("storage::a_refreshed_session_expires_at_its_latest_idle_expiry").await
    else {
        return;
    };
    let store = db.store().await;
    let minutes = |count: u64| Duration::from_secs(60 * count);
    // Created at T0, idle for an hour: expires at T0 + 60 min.
    let idle = session_for("alice", T0);
    create(&store, &idle, 100).await;
    // Five more, each refreshed at T0 + 30 min: their idle expiry moves to T0 + 90 min.
    let mut refreshed = Vec::new();
    for _ in 0..5 {
        let session = session_for("bob", T0);
        let (token, _) = create(&store, &session, 100).await;
        let rotation = rotation_of(token.hash(), session.id, T0.plus(minutes(30)));
        let outcome = store.rotate_refresh_token(&rotation).await.unwrap();
        assert_eq!(outcome, RotationOutcome::Rotated);
        refreshed.push((session, rotation.successor));
    }

    // Past the first hour: only the session never refreshed has expired, and the ones found
    // due but refreshed since do not fill the batch.
    let hour_later = T0.plus(minutes(61));
    assert_eq!(announce(&store, hour_later).await, 1);
    assert_eq!(announce(&store, hour_later).await, 0);
    let long_after = T0.plus(Duration::from_secs(86_400));
    assert_eq!(
        store.purge(hour_later, long_after, 10).await.unwrap(),
        1,
        "only the expired session is purged"
    );
    assert!(store.session(idle.id).await.unwrap().is_none());

    // A refresh under a shorter idle timeout brings the expiry forward, to T0 + 80 min.
    let (shortened, successor) = &refreshed[0];
    let mut rotation = rotation_of(*successor, shortened.id, T0.plus(minutes(70)));
    rotation.idle_expires_at = T0.plus(minutes(80));
    let outcome = store.rotate_refresh_token(&rotation).await.unwrap();
    assert_eq!(outcome, RotationOutcome::Rotated);
    assert_eq!(
        announce(&store, T0.plus(minutes(81))).await,
        1,
        "a shortened idle expiry is announced when it passes"
    );
    assert_eq!(
        announce(&store, T0.plus(minutes(89))).await,
        0,
        "the other four are still alive"
    );
    let after_all = T0.plus(minutes(91));
    assert_eq!(announce(&store, after_all).await, 4);
    assert_eq!(announce(&store, after_all).await, 0);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE type = 'session.expired'",
            None
        )
        .await,
        6,
        "each session announced once"
    );
    assert_eq!(store.purge(after_all, long_after, 10).await.unwrap(), 5);
}

pub async fn claims_and_metadata_round_trip_exactly_including_escaped_nul_characters<B: Backend>() {
    let Some(db) = B::create("storage::claims_and_metadata_round_trip").await else {
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

pub async fn audit_events_are_appended_together_in_order<B: Backend>() {
    let Some(db) = B::create("storage::audit_events_are_appended").await else {
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
    let rows = db.audit_rows().await;
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
