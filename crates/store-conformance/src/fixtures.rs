//! Domain fixtures shared by the cases: sessions, audit events, rotations and revocations.

use std::time::Duration;

use serde_json::Map;
use sessiond_core::audit::{NewAuditEvent, Severity};
use sessiond_core::refresh::{RefreshToken, RefreshTokenHash};
use sessiond_core::session::{Device, DeviceType};
use sessiond_core::store::{Revocation, Rotation, SessionStore};
use sessiond_core::{DeviceId, RevokeReason, Session, SessionId, Timestamp, UserId};

/// An instant well after the epoch, so that subtracting durations stays positive.
pub const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// `millis` milliseconds.
pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A fresh session of `user` created at `now`: idle timeout one hour, lifetime one day, access
/// tokens five minutes.
pub fn session_for(user: &str, now: Timestamp) -> Session {
    Session {
        id: SessionId::generate(),
        user_id: UserId::from_trusted(user.into()),
        tenant_id: None,
        device: Device {
            id: DeviceId::from_trusted("laptop".into()),
            name: Some("work laptop".into()),
            device_type: DeviceType::Desktop,
            browser: Some("Firefox".into()),
            os: Some("Linux".into()),
            trusted: false,
        },
        ip: Some("192.0.2.1".into()),
        user_agent: Some("Mozilla/5.0".into()),
        claims: Map::new(),
        metadata: Map::new(),
        created_at: now,
        last_active_at: now,
        idle_expires_at: now.plus(Duration::from_secs(3600)),
        expires_at: now.plus(Duration::from_secs(86_400)),
        access_expires_at: now.plus(Duration::from_secs(300)),
        revoked_at: None,
        revoke_reason: None,
        dpop_jkt: None,
        unreadable: Vec::new(),
    }
}

/// An audit event about `session`.
pub fn event_for(kind: &'static str, session: &Session, at: Timestamp) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        severity: Severity::Info,
        user_id: Some(session.user_id.clone()),
        session_id: Some(session.id),
        ip: None,
        at,
        details: Map::new(),
    }
}

/// Stores `session` with a fresh first token under a limit of `max_active`; returns the token
/// and the sessions evicted.
///
/// # Panics
/// When the store fails.
pub async fn create<S: SessionStore + ?Sized>(
    store: &S,
    session: &Session,
    max_active: u32,
) -> (RefreshToken, Vec<Session>) {
    let token = RefreshToken::generate(session.created_at);
    let created = event_for("session.created", session, session.created_at);
    let evicted = store
        .create_session(
            session,
            &token.hash(),
            max_active,
            &created,
            &sessiond_core::store::audit_for(move |evicted: &sessiond_core::Session| {
                event_for("session.evicted", evicted, evicted.revoked_at.unwrap_or(T0))
            }),
            // Not about the session: tests count a session's own audit events.
            &NewAuditEvent {
                session_id: None,
                ..event_for("device.new", session, session.created_at)
            },
        )
        .await
        .expect("create the session");
    (token, evicted)
}

/// A rotation of `presented` at `now` to a fresh successor issued at `now`.
pub fn rotation_of(presented: RefreshTokenHash, session: SessionId, now: Timestamp) -> Rotation {
    Rotation {
        presented,
        session_id: session,
        successor: RefreshToken::generate(now).hash(),
        sealed_successor: vec![7; 64],
        now,
        idle_expires_at: now.plus(Duration::from_secs(3600)),
        access_expires_at: now.plus(Duration::from_secs(300)),
        bind_dpop_jkt: None,
        audit: None,
        proof: None,
    }
}

/// A revocation by an administrator at `at`.
pub fn by_admin(at: Timestamp) -> Revocation {
    Revocation {
        at,
        reason: RevokeReason::RevokedByAdmin,
    }
}
