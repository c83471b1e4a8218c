//! Tests of the store's writes: rotations racing in one batch, refusals that write nothing,
//! and processes sharing one file.

use crate::{SqliteSettings, SqliteStore};
use sessiond_core::refresh::RefreshToken;
use sessiond_core::store::{KeyStore, SessionStore};
use sessiond_core::store::{Rotation, RotationOutcome, audit_for};
use sessiond_core::{Session, SessionId, Timestamp};

fn rotation_of(presented: &RefreshToken, session: SessionId, now: Timestamp) -> Rotation {
    Rotation {
        presented: presented.hash(),
        session_id: session,
        successor: RefreshToken::generate().hash(),
        sealed_successor: vec![1, 2, 3],
        now,
        idle_expires_at: now.plus(std::time::Duration::from_secs(60)),
        access_expires_at: now.plus(std::time::Duration::from_secs(30)),
        audit: None,
    }
}

fn session_at(now: Timestamp) -> Session {
    use sessiond_core::session::{Device, DeviceType};
    Session {
        id: SessionId::generate(),
        user_id: sessiond_core::UserId::from_trusted("alice".into()),
        tenant_id: None,
        device: Device {
            id: sessiond_core::DeviceId::from_trusted("laptop".into()),
            name: None,
            device_type: DeviceType::Desktop,
            browser: None,
            os: None,
            trusted: false,
        },
        ip: None,
        user_agent: None,
        claims: serde_json::Map::new(),
        metadata: serde_json::Map::new(),
        created_at: now,
        last_active_at: now,
        idle_expires_at: now.plus(std::time::Duration::from_secs(3600)),
        expires_at: now.plus(std::time::Duration::from_secs(7200)),
        access_expires_at: now,
        revoked_at: None,
        revoke_reason: None,
    }
}

fn event(kind: &'static str, at: Timestamp) -> sessiond_core::audit::NewAuditEvent {
    sessiond_core::audit::NewAuditEvent {
        kind,
        severity: sessiond_core::audit::Severity::Info,
        user_id: None,
        session_id: None,
        ip: None,
        at,
        details: serde_json::Map::new(),
    }
}

async fn store_with_session() -> (tempfile::TempDir, SqliteStore, Session, RefreshToken) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let store = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .expect("open");
    let now = Timestamp::from_unix_millis(1_000_000);
    let session = session_at(now);
    let token = RefreshToken::generate();
    let created = event("session.created", now);
    store
        .create_session(
            &session,
            &token.hash(),
            5,
            &created,
            &audit_for({
                let created = created.clone();
                move |_: &Session| created.clone()
            }),
            &created,
        )
        .await
        .expect("create");
    (dir, store, session, token)
}

#[tokio::test]
async fn two_rotations_of_one_token_in_one_batch_yield_one_successor() {
    let (_dir, store, session, token) = store_with_session().await;
    let now = session.created_at;
    let (one, other) = (
        rotation_of(&token, session.id, now),
        rotation_of(&token, session.id, now),
    );
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
}

#[tokio::test]
async fn a_rotation_naming_another_session_than_the_tokens_writes_nothing() {
    let (_dir, store, session, token) = store_with_session().await;
    let rotation = rotation_of(&token, SessionId::generate(), session.created_at);
    assert_eq!(
        store.rotate_refresh_token(&rotation).await.expect("rotate"),
        RotationOutcome::Lost
    );
    let (record, _) = store
        .find_refresh_token(&token.hash())
        .await
        .expect("lookup")
        .expect("present");
    assert!(record.spent_at.is_none());
}

#[tokio::test]
async fn a_rotation_of_a_revoked_session_writes_nothing() {
    let (_dir, store, session, token) = store_with_session().await;
    let now = session.created_at;
    store
        .revoke_session(
            session.id,
            sessiond_core::store::Revocation {
                at: now,
                reason: sessiond_core::RevokeReason::RevokedByAdmin,
            },
            &audit_for(move |_: &Session| event("session.revoked", now)),
        )
        .await
        .expect("revoke");
    let rotation = rotation_of(&token, session.id, now);
    assert_eq!(
        store.rotate_refresh_token(&rotation).await.expect("rotate"),
        RotationOutcome::Lost
    );
    let (record, _) = store
        .find_refresh_token(&token.hash())
        .await
        .expect("lookup")
        .expect("present");
    assert!(
        record.spent_at.is_none(),
        "the presented token is not spent"
    );
    assert!(
        store
            .find_refresh_token(&rotation.successor)
            .await
            .expect("lookup")
            .is_none(),
        "no successor was stored"
    );
}

#[tokio::test]
async fn only_one_first_signing_key_wins_among_processes_sharing_the_file() {
    use sessiond_core::token::{SigningAlgorithm, StoredKey};
    let (dir, first, _, _) = store_with_session().await;
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let second = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .expect("second handle");
    let now = Timestamp::from_unix_millis(0);
    let (one, other) = (
        StoredKey::generate(SigningAlgorithm::EdDsa, now),
        StoredKey::generate(SigningAlgorithm::EdDsa, now),
    );
    let (a, b) = tokio::join!(
        first.insert_first_signing_key(&one),
        second.insert_first_signing_key(&other)
    );
    assert_eq!(
        u8::from(a.expect("first")) + u8::from(b.expect("second")),
        1,
        "exactly one first key"
    );
    assert_eq!(first.signing_keys().await.expect("keys").len(), 1);
}
