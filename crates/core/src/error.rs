//! The errors of the session domain, with the variants a caller acts on.

use std::fmt;

use crate::dpop::DpopError;
use crate::ids::{InvalidId, SessionId, UserId};
use crate::store::error::StoreError;
use crate::token::TokenError;

/// Why a refresh token was refused. Every variant answers the same way on the wire except for
/// its `reason`, so a caller learns nothing about tokens it does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRejection {
    /// No such token was ever issued (or its session was purged), whatever its shape.
    Unknown,
    /// The session ran past its idle timeout or absolute lifetime.
    Expired,
    /// The session was revoked.
    Revoked,
    /// A spent token was presented again outside the grace window: the session is now revoked.
    ReuseDetected,
    /// The refresh came from a network or device unlike the session's, and the anomaly
    /// policy (`revoke`) revoked the session instead of rotating.
    Anomaly,
}

impl RefreshRejection {
    /// The `reason` of the wire contract.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::ReuseDetected => "reuse_detected",
            Self::Anomaly => "anomaly",
        }
    }
}

impl fmt::Display for RefreshRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of a session operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is missing or invalid.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The field, as named on the wire.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The refresh token is not live.
    #[error("refresh token refused: {0}")]
    RefreshRejected(RefreshRejection),
    /// A refresh of a session bound to a DPoP key came without a valid proof of that key, or
    /// with a proof used before; nothing was spent or written.
    #[error("DPoP proof refused: {}", .0.error)]
    DpopRefused(Box<DpopRefusal>),
    /// A refresh asked for a scope its session was never granted (RFC 6749 §6); the token
    /// presented was not spent.
    #[error("scope {0:?} is beyond the session's permissions")]
    ScopeBeyondSession(String),
    /// The access token is not valid.
    #[error("access token refused: {0}")]
    Unauthenticated(#[from] TokenError),
    /// The caller may not act on this resource.
    #[error("not allowed")]
    Forbidden,
    /// The resource does not exist.
    #[error("not found")]
    NotFound,
    /// Storage failed; nothing was half-written.
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// A stored value could not be decoded or decrypted.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// A refused DPoP proof and the session it was presented for, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopRefusal {
    /// Why.
    pub error: DpopError,
    /// The session whose refresh token came with it.
    pub session_id: SessionId,
    /// Its user.
    pub user_id: UserId,
}

impl From<InvalidId> for Error {
    fn from(invalid: InvalidId) -> Self {
        Self::invalid(invalid.field, invalid.message)
    }
}

impl Error {
    /// An [`Error::InvalidInput`] for `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            message: message.into(),
        }
    }
}
