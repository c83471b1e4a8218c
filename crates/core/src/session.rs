//! A session: one user signed in on one device, and the rules of its lifetime.

use std::fmt;

use serde_json::{Map, Value};

use crate::ids::{DeviceId, SessionId, TenantId, UserId};
use crate::policy::Policy;
use crate::time::Timestamp;

/// The kind of device a session runs on, as guessed from its user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// A desktop or laptop browser or program.
    Desktop,
    /// A phone.
    Mobile,
    /// A tablet.
    Tablet,
    /// A crawler or other automated client.
    Bot,
    /// Anything the parser could not place.
    Unknown,
}

impl DeviceType {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Bot => "bot",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a wire name; anything unrecognised is [`DeviceType::Unknown`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "desktop" => Self::Desktop,
            "mobile" => Self::Mobile,
            "tablet" => Self::Tablet,
            "bot" => Self::Bot,
            _ => Self::Unknown,
        }
    }
}

/// What is known of the device a session was created on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device's id.
    pub id: DeviceId,
    /// A name the user or application gave it.
    pub name: Option<String>,
    /// The kind of device.
    pub device_type: DeviceType,
    /// Browser family, from the user agent.
    pub browser: Option<String>,
    /// Operating system, from the user agent.
    pub os: Option<String>,
    /// Whether the user marked this device as trusted, as of when the session was read
    /// (`false` for a session just created or returned by a write).
    pub trusted: bool,
}

/// Why a session was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user signed out of this session.
    Logout,
    /// The user revoked it from another session.
    RevokedByUser,
    /// An administrator (or the application backend) revoked it.
    RevokedByAdmin,
    /// The user's newest session pushed it out of the per-user limit.
    SessionLimit,
    /// A spent refresh token of this session was presented again.
    ReuseDetected,
    /// A refresh came from a network or user agent unlike the session's, under
    /// `SESSIOND_ANOMALY_POLICY=revoke` (see [`crate::anomaly`]).
    Anomaly,
}

impl RevokeReason {
    /// The stable name stored and shown on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::RevokedByUser => "revoked_by_user",
            Self::RevokedByAdmin => "revoked_by_admin",
            Self::SessionLimit => "session_limit",
            Self::ReuseDetected => "reuse_detected",
            Self::Anomaly => "anomaly",
        }
    }
}

impl fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Its id (the `sid` claim of its access tokens).
    pub id: SessionId,
    /// The user it belongs to (the `sub` claim).
    pub user_id: UserId,
    /// The user's tenant, if the application has tenants.
    pub tenant_id: Option<TenantId>,
    /// The device it runs on.
    pub device: Device,
    /// The client's IP address when the session was created.
    pub ip: Option<String>,
    /// The client's user agent when the session was created.
    pub user_agent: Option<String>,
    /// Claims copied into every access token (`roles`, `permissions` and custom ones).
    pub claims: Map<String, Value>,
    /// Application data kept with the session, never put in tokens.
    pub metadata: Map<String, Value>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was created or last refreshed.
    pub last_active_at: Timestamp,
    /// When it expires unless refreshed before.
    pub idle_expires_at: Timestamp,
    /// When it expires whatever happens.
    pub expires_at: Timestamp,
    /// The latest `exp` of any access token issued for it; revocation must outlast it.
    pub access_expires_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked, if it was.
    pub revoke_reason: Option<String>,
    /// The RFC 7638 thumbprint of the client key the session is bound to (RFC 9449, DPoP):
    /// its refreshes need a proof signed with that key, and its access tokens carry it as
    /// `cnf.jkt`.
    pub dpop_jkt: Option<String>,
    /// The encrypted columns (named as in [`crate::crypt::columns`]) whose stored value did not
    /// open when the session was read: their fields read as absent (`metadata` as empty). A
    /// session built rather than read has none.
    pub unreadable: Vec<&'static str>,
}

impl Session {
    /// The moment it stops being refreshable by time alone.
    pub fn refresh_expires_at(&self) -> Timestamp {
        self.idle_expires_at.min(self.expires_at)
    }

    /// Whether it ran past its idle timeout or absolute lifetime at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.refresh_expires_at()
    }

    /// Whether it is neither revoked nor expired at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && !self.is_expired(now)
    }

    /// The `exp` of an access token issued at `now`: its lifetime, cut at the absolute expiry.
    pub fn access_token_expiry(&self, now: Timestamp, policy: &Policy) -> Timestamp {
        now.plus(policy.access_ttl).min(self.expires_at)
    }

    /// The idle expiry after a refresh at `now`: it slides, but never past the absolute expiry.
    pub fn idle_expiry_after_refresh(&self, now: Timestamp, policy: &Policy) -> Timestamp {
        now.plus(policy.idle_timeout).min(self.expires_at)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn session_at(now: Timestamp, policy: &Policy) -> Session {
        Session {
            id: SessionId::generate(),
            user_id: UserId::from_trusted("alice".into()),
            tenant_id: None,
            device: Device {
                id: DeviceId::from_trusted("laptop".into()),
                name: None,
                device_type: DeviceType::Desktop,
                browser: None,
                os: None,
                trusted: false,
            },
            ip: None,
            user_agent: None,
            claims: Map::new(),
            metadata: Map::new(),
            created_at: now,
            last_active_at: now,
            idle_expires_at: now.plus(policy.idle_timeout),
            expires_at: now.plus(policy.absolute_timeout),
            access_expires_at: now.plus(policy.access_ttl),
            revoked_at: None,
            revoke_reason: None,
            dpop_jkt: None,
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn idle_expiry_slides_but_never_past_the_absolute_expiry() {
        let policy = Policy::default();
        let start = Timestamp::from_unix_millis(0);
        let session = session_at(start, &policy);
        let late = start.plus(Duration::from_secs(29 * 24 * 3600));
        assert_eq!(
            session.idle_expiry_after_refresh(late, &policy),
            session.expires_at
        );
        let early = start.plus(Duration::from_secs(3600));
        assert_eq!(
            session.idle_expiry_after_refresh(early, &policy),
            early.plus(policy.idle_timeout)
        );
    }

    #[test]
    fn access_tokens_never_outlive_the_session() {
        let policy = Policy::default();
        let start = Timestamp::from_unix_millis(0);
        let session = session_at(start, &policy);
        let near_end = session.expires_at.minus(Duration::from_secs(60));
        assert_eq!(
            session.access_token_expiry(near_end, &policy),
            session.expires_at
        );
    }

    #[test]
    fn a_session_expires_at_its_idle_or_absolute_deadline() {
        let policy = Policy::default();
        let start = Timestamp::from_unix_millis(0);
        let session = session_at(start, &policy);
        assert!(session.is_active(start));
        assert!(!session.is_active(session.idle_expires_at));
        let mut revoked = session.clone();
        revoked.revoked_at = Some(start);
        assert!(!revoked.is_active(start));
    }
}
