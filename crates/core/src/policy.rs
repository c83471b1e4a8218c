//! The lifetimes and limits every session obeys.

use std::time::Duration;

/// Lifetimes and limits of sessions and tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long an access token lives (never past its session's absolute expiry).
    pub access_ttl: Duration,
    /// How long a session may go unrefreshed; slides forward on every refresh.
    pub idle_timeout: Duration,
    /// How long a session may live at all; never extended.
    pub absolute_timeout: Duration,
    /// How long after a refresh token is spent it may be presented again and receive the same
    /// successor pair (while that successor is still unused). Zero turns every replay off,
    /// [`Policy::unused_successor_replay`] included.
    pub reuse_grace: Duration,
    /// How long after a refresh token is spent it is still answered with its successor pair
    /// while that successor has never been used, past the grace window: a client whose answer
    /// was lost (a long outage, a dropped connection) retries with the spent token and must not
    /// be taken for a thief. Once the successor has been used, the spent token is reuse at
    /// once, whatever this says. The grace window applies when it is the longer of the two.
    pub unused_successor_replay: Duration,
    /// Most active sessions per user; creating one more evicts the least recently active.
    pub max_sessions_per_user: u32,
    /// Clock skew tolerated when checking `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// How long expired and revoked sessions are kept before they are purged.
    pub retention: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            idle_timeout: Duration::from_secs(7 * 24 * 3600),
            absolute_timeout: Duration::from_secs(30 * 24 * 3600),
            reuse_grace: Duration::from_secs(10),
            unused_successor_replay: Duration::from_secs(3600),
            max_sessions_per_user: 5,
            leeway: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A lifetime that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The idle timeout exceeds the absolute lifetime, which would make it meaningless.
    #[error("idle timeout ({idle:?}) must not exceed the absolute timeout ({absolute:?})")]
    IdleAboveAbsolute {
        /// The idle timeout.
        idle: Duration,
        /// The absolute timeout.
        absolute: Duration,
    },
    /// The leeway is so large that expired tokens would pass for minutes.
    #[error("leeway must be at most 5 minutes")]
    LeewayTooLarge,
    /// Purging revoked sessions before their access tokens expire would let a restart forget them.
    #[error("retention must be at least the access token lifetime")]
    RetentionBelowAccessTtl,
}

impl Policy {
    /// How long after a refresh token is spent its successor pair may still be handed out
    /// (while that successor is unused): the longer of [`Policy::reuse_grace`] and
    /// [`Policy::unused_successor_replay`]. Past it, a spent token presented again is reuse, and
    /// its sealed pair can be forgotten.
    pub fn replay_window(&self) -> Duration {
        self.reuse_grace.max(self.unused_successor_replay)
    }

    /// Checks that the lifetimes are consistent.
    ///
    /// # Errors
    /// The first inconsistency found.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (name, value) in [
            ("access token lifetime", self.access_ttl),
            ("idle timeout", self.idle_timeout),
            ("absolute timeout", self.absolute_timeout),
        ] {
            if value.is_zero() {
                return Err(PolicyError::Zero(name));
            }
        }
        if self.max_sessions_per_user == 0 {
            return Err(PolicyError::Zero("max sessions per user"));
        }
        if self.idle_timeout > self.absolute_timeout {
            return Err(PolicyError::IdleAboveAbsolute {
                idle: self.idle_timeout,
                absolute: self.absolute_timeout,
            });
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(PolicyError::LeewayTooLarge);
        }
        if self.retention < self.access_ttl {
            return Err(PolicyError::RetentionBelowAccessTtl);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        assert_eq!(Policy::default().validate(), Ok(()));
    }

    #[test]
    fn idle_longer_than_absolute_is_refused() {
        let policy = Policy {
            idle_timeout: Duration::from_secs(10),
            absolute_timeout: Duration::from_secs(5),
            ..Policy::default()
        };
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::IdleAboveAbsolute { .. })
        ));
    }

    #[test]
    fn access_ttl_longer_than_idle_is_allowed() {
        let policy = Policy {
            access_ttl: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(60),
            ..Policy::default()
        };
        assert_eq!(policy.validate(), Ok(()));
    }
}
