//! Live session events: what a user's devices (and admins) hear about as it happens.
//!
//! Events are written by the store in the same transaction as the change they describe, so an
//! event exists if and only if its change committed. Most are derived from the audit event the
//! change already appends ([`events_of_audit`]); `session.refreshed`, which has no audit event,
//! is written by the rotation itself.
//!
//! Every stored event has an [`EventCursor`]: a position in one total order that every reader
//! agrees on and that never has an event inserted before a position already read. Readers
//! resume from a cursor and miss nothing that is still retained.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::audit::NewAuditEvent;
use crate::ids::{SessionId, UserId};
use crate::time::Timestamp;

/// A session was created.
pub const SESSION_CREATED: &str = "session.created";
/// A session's refresh token was rotated.
pub const SESSION_REFRESHED: &str = "session.refreshed";
/// A session was revoked (`reason` says why).
pub const SESSION_REVOKED: &str = "session.revoked";
/// A session reached its idle or absolute expiry.
pub const SESSION_EXPIRED: &str = "session.expired";
/// A spent refresh token came back; its session was revoked.
pub const REUSE_DETECTED: &str = "security.reuse_detected";
/// A session was created from a device never seen for its user.
pub const DEVICE_NEW: &str = "device.new";
/// A refresh looked unlike the session's earlier use.
pub const ANOMALY: &str = "security.anomaly";

/// Every event type a stream can carry.
pub const EVENT_TYPES: &[&str] = &[
    SESSION_CREATED,
    SESSION_REFRESHED,
    SESSION_REVOKED,
    SESSION_EXPIRED,
    REUSE_DETECTED,
    DEVICE_NEW,
    ANOMALY,
];

/// The canonical `&'static str` of an event type name, or `None` if there is no such type.
pub fn event_type(name: &str) -> Option<&'static str> {
    EVENT_TYPES.iter().copied().find(|known| *known == name)
}

/// An event about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// One of [`EVENT_TYPES`].
    pub kind: &'static str,
    /// Whose event it is.
    pub user_id: UserId,
    /// The session concerned.
    pub session_id: Option<SessionId>,
    /// When it happened.
    pub at: Timestamp,
    /// Type-specific fields (`reason` of a revocation, ...). Never a secret.
    pub data: Map<String, Value>,
}

/// A stored event, as readers get it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its position in the store's order.
    pub cursor: EventCursor,
    /// One of [`EVENT_TYPES`].
    pub kind: &'static str,
    /// Whose event it is.
    pub user_id: UserId,
    /// The session concerned.
    pub session_id: Option<SessionId>,
    /// When it happened.
    pub at: Timestamp,
    /// Type-specific fields.
    pub data: Map<String, Value>,
}

/// The events to publish alongside `audit`, in order; none for audit events that are not of
/// interest to a user's devices (rate limits, admin actions, key rotations).
///
/// A reuse detection revokes its session, so it also publishes `session.revoked`: a device
/// that listens only for its own revocation must learn of it however it came about.
///
/// A `session.refreshed` audit event publishes nothing: every rotation writes its live event
/// itself, audited or not.
pub fn events_of_audit(audit: &NewAuditEvent) -> impl Iterator<Item = NewEvent> + '_ {
    let published = audit.user_id.as_ref().and_then(|user_id| {
        let kind = event_type(audit.kind).filter(|kind| *kind != SESSION_REFRESHED)?;
        Some((kind, user_id))
    });
    let also_revoked = published
        .filter(|(kind, _)| *kind == REUSE_DETECTED)
        .map(|(_, user_id)| NewEvent {
            kind: SESSION_REVOKED,
            user_id: user_id.clone(),
            session_id: audit.session_id,
            at: audit.at,
            data: audit.details.clone(),
        });
    published
        .map(|(kind, user_id)| NewEvent {
            kind,
            user_id: user_id.clone(),
            session_id: audit.session_id,
            at: audit.at,
            data: audit.details.clone(),
        })
        .into_iter()
        .chain(also_revoked)
}

/// A position in the total order of stored events: `(epoch, sequence)`, compared in that
/// order. What the two parts mean is the store's business (a networked store orders by commit,
/// see its documentation); readers only compare, store and send them back. Its text form,
/// `EPOCH.SEQUENCE`, is what streams send as an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventCursor {
    /// The major part.
    pub epoch: i64,
    /// The minor part.
    pub sequence: i64,
}

impl EventCursor {
    /// Before every event.
    pub const START: Self = Self {
        epoch: 0,
        sequence: 0,
    };
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.sequence)
    }
}

/// A cursor that is not of the form `EPOCH.SEQUENCE` with two non-negative integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event cursor is two non-negative integers separated by a dot")]
pub struct BadCursor;

impl FromStr for EventCursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Self, BadCursor> {
        let (epoch, sequence) = text.split_once('.').ok_or(BadCursor)?;
        let part = |digits: &str| {
            if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(BadCursor);
            }
            digits.parse::<i64>().map_err(|_| BadCursor)
        };
        Ok(Self {
            epoch: part(epoch)?,
            sequence: part(sequence)?,
        })
    }
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this user's; every user's when `None`.
    pub user_id: Option<UserId>,
    /// Only these types; every type when `None`.
    pub kinds: Option<Vec<&'static str>>,
}

impl EventFilter {
    /// Whether `event` passes.
    pub fn accepts(&self, kind: &str, user_id: &UserId) -> bool {
        self.user_id.as_ref().is_none_or(|wanted| wanted == user_id)
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Severity;

    fn audit(kind: &'static str) -> NewAuditEvent {
        NewAuditEvent {
            kind,
            severity: Severity::Info,
            user_id: Some(UserId::parse("u1".to_owned(), "user_id").expect("valid")),
            session_id: Some(SessionId::generate()),
            ip: Some("192.0.2.1".to_owned()),
            at: Timestamp::from_unix_millis(1_000),
            details: Map::from_iter([("reason".to_owned(), Value::from("logout"))]),
        }
    }

    #[test]
    fn session_audit_events_are_published_with_their_details() {
        let revoked = audit(SESSION_REVOKED);
        let events: Vec<NewEvent> = events_of_audit(&revoked).collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, SESSION_REVOKED);
        assert_eq!(events[0].session_id, revoked.session_id);
        assert_eq!(events[0].data["reason"], "logout");
    }

    #[test]
    fn reuse_detection_also_publishes_the_revocation() {
        let kinds: Vec<&str> = events_of_audit(&audit(REUSE_DETECTED))
            .map(|event| event.kind)
            .collect();
        assert_eq!(kinds, [REUSE_DETECTED, SESSION_REVOKED]);
    }

    #[test]
    fn an_audited_refresh_is_not_published_twice() {
        assert_eq!(events_of_audit(&audit(SESSION_REFRESHED)).count(), 0);
    }

    #[test]
    fn other_audit_events_and_userless_ones_are_not_published() {
        assert_eq!(events_of_audit(&audit("security.rate_limited")).count(), 0);
        let mut anonymous = audit(SESSION_REVOKED);
        anonymous.user_id = None;
        assert_eq!(events_of_audit(&anonymous).count(), 0);
    }

    #[test]
    fn cursors_round_trip_and_order_by_epoch_then_sequence() {
        let cursor: EventCursor = "12.345".parse().expect("valid");
        assert_eq!(
            cursor,
            EventCursor {
                epoch: 12,
                sequence: 345
            }
        );
        assert_eq!(cursor.to_string(), "12.345");
        assert!(cursor < "13.1".parse().expect("valid"));
        assert!(cursor > "12.344".parse().expect("valid"));
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "-1.2",
            "1.-2",
            "1.2.3",
            "a.1",
            "+1.2",
            " 1.2",
            "99999999999999999999.1",
        ] {
            assert_eq!(bad.parse::<EventCursor>(), Err(BadCursor), "{bad:?}");
        }
    }

    #[test]
    fn filters_match_user_and_type() {
        let alice = UserId::parse("alice".to_owned(), "user_id").expect("valid");
        let bob = UserId::parse("bob".to_owned(), "user_id").expect("valid");
        let everything = EventFilter::default();
        assert!(everything.accepts(SESSION_CREATED, &bob));
        let alices_revocations = EventFilter {
            user_id: Some(alice.clone()),
            kinds: Some(vec![SESSION_REVOKED]),
        };
        assert!(alices_revocations.accepts(SESSION_REVOKED, &alice));
        assert!(!alices_revocations.accepts(SESSION_CREATED, &alice));
        assert!(!alices_revocations.accepts(SESSION_REVOKED, &bob));
    }
}
