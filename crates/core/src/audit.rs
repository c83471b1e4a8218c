//! Audit events: what happened to which session, for whoever must explain it later.

use serde_json::{Map, Value};

use crate::ids::{SessionId, UserId};
use crate::time::Timestamp;

/// How much an audit event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Warning,
    /// Someone should act: a token was stolen or a key compromised.
    Critical,
}

impl Severity {
    /// The stored and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// An audit event about to be appended.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    /// What happened, e.g. `session.created`, `session.revoked`, `security.reuse_detected`.
    pub kind: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// The user concerned.
    pub user_id: Option<UserId>,
    /// The session concerned.
    pub session_id: Option<SessionId>,
    /// The client address the request came from.
    pub ip: Option<String>,
    /// When it happened.
    pub at: Timestamp,
    /// Anything else worth keeping (reason, actor, ...). Never a secret.
    pub details: Map<String, Value>,
}
