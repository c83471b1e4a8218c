//! The token pair as the client keeps it ([`StoredTokens`]), and what the client tells its
//! owner about the session ([`SessionState`], [`SignOutReason`]).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sessiond_wire::TokenPairResponse;

use crate::SecretString;

/// A token pair with the times the client needs to refresh it ahead of expiry.
///
/// Expiry is kept on the *client's* clock: `access_token_expires_at` is the time the pair was
/// asked for plus the server's `expires_in`, so a client whose clock is off by minutes still
/// refreshes on time. (The server's absolute `access_token_expires_at` would be off by the skew.)
/// The fields are public so that an application can restore tokens it kept elsewhere; the
/// `Debug` output shows no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTokens {
    /// The access token (a JWT), sent as `Authorization: Bearer`.
    pub access_token: SecretString,
    /// The refresh token (opaque, single use).
    pub refresh_token: SecretString,
    /// When the pair was asked for (or received), by the client's clock.
    #[serde(with = "unix_millis")]
    pub received_at: SystemTime,
    /// When the access token expires, by the client's clock.
    #[serde(with = "unix_millis")]
    pub access_token_expires_at: SystemTime,
    /// When the refresh token expires, as the server said (by the server's clock); `None` when
    /// the server's answer could not be read as RFC 3339. Informational only.
    #[serde(with = "option_unix_millis", default)]
    pub refresh_token_expires_at: Option<SystemTime>,
    /// The session the pair belongs to.
    pub session_id: String,
    /// The session's user.
    pub user_id: String,
}

impl StoredTokens {
    /// The pair of `response`, which was asked for at `received_at` (by the client's clock;
    /// taking the time *before* sending the request errs on the early side).
    pub fn from_response(response: &TokenPairResponse, received_at: SystemTime) -> Self {
        let expires_in = Duration::from_secs(u64::try_from(response.expires_in).unwrap_or(0));
        Self {
            access_token: SecretString::new(response.access_token.clone()),
            refresh_token: SecretString::new(response.refresh_token.clone()),
            received_at,
            access_token_expires_at: received_at + expires_in,
            refresh_token_expires_at: humantime::parse_rfc3339_weak(
                &response.refresh_token_expires_at,
            )
            .ok(),
            session_id: response.session.id.clone(),
            user_id: response.session.user_id.clone(),
        }
    }

    /// The access token's whole lifetime as issued (zero when the times are inconsistent).
    pub fn lifetime(&self) -> Duration {
        self.access_token_expires_at
            .duration_since(self.received_at)
            .unwrap_or(Duration::ZERO)
    }
}

/// Whether the client holds a session, as published on [`SessionClient::state`].
///
/// [`SessionClient::state`]: crate::SessionClient::state
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// The client holds a token pair.
    SignedIn {
        /// The session.
        session_id: String,
        /// Its user.
        user_id: String,
        /// When the current access token expires, by the client's clock. It changes on every
        /// refresh.
        access_token_expires_at: SystemTime,
    },
    /// The client holds no tokens: the application must sign the user in again.
    SignedOut {
        /// Why.
        reason: SignOutReason,
    },
}

impl SessionState {
    /// Whether this is [`SessionState::SignedIn`].
    pub fn is_signed_in(&self) -> bool {
        matches!(self, Self::SignedIn { .. })
    }

    /// The reason, when signed out.
    pub fn sign_out_reason(&self) -> Option<&SignOutReason> {
        match self {
            Self::SignedIn { .. } => None,
            Self::SignedOut { reason } => Some(reason),
        }
    }

    pub(crate) fn of(tokens: &StoredTokens) -> Self {
        Self::SignedIn {
            session_id: tokens.session_id.clone(),
            user_id: tokens.user_id.clone(),
            access_token_expires_at: tokens.access_token_expires_at,
        }
    }
}

/// Why the client holds no tokens.
///
/// Every reason the server gives with `invalid_refresh_token` signs the client out, because the
/// refresh token will never work again; the client clears its storage first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignOutReason {
    /// Nothing was stored and nobody has signed in yet.
    NoTokens,
    /// The application called [`SessionClient::sign_out`](crate::SessionClient::sign_out).
    LoggedOut,
    /// The session was revoked (by the user, an admin, or the per-user limit).
    Revoked,
    /// The session passed its idle or absolute expiry.
    Expired,
    /// The refresh token was spent before: the server took it as theft and revoked the
    /// session. Worth telling the user.
    ReuseDetected,
    /// A refresh came from a network or device unlike the session's, and the server (under
    /// its `revoke` anomaly policy) revoked the session. Worth telling the user.
    Anomaly,
    /// The server does not know the refresh token (its session was purged, or the token is
    /// from another deployment).
    Unknown,
    /// A reason this version of the client does not know, as the server wrote it.
    Other(String),
}

impl SignOutReason {
    /// The reason from the `reason` field of an `invalid_refresh_token` error.
    pub(crate) fn from_server(reason: Option<&str>) -> Self {
        match reason {
            Some("revoked") => Self::Revoked,
            Some("expired") => Self::Expired,
            Some("reuse_detected") => Self::ReuseDetected,
            Some("anomaly") => Self::Anomaly,
            Some("unknown") => Self::Unknown,
            Some(other) => Self::Other(other.to_owned()),
            None => Self::Other(String::new()),
        }
    }

    /// The reason as a short snake-case word (the server's word where there is one).
    pub fn as_str(&self) -> &str {
        match self {
            Self::NoTokens => "no_tokens",
            Self::LoggedOut => "logged_out",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::ReuseDetected => "reuse_detected",
            Self::Anomaly => "anomaly",
            Self::Unknown => "unknown",
            Self::Other(reason) => reason,
        }
    }
}

impl std::fmt::Display for SignOutReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `SystemTime` as milliseconds since the Unix epoch, so the stored format does not depend on
/// serde's representation of `SystemTime`.
mod unix_millis {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn to_millis(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    pub(super) fn from_millis(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    pub(super) fn serialize<S: Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(to_millis(*time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        u64::deserialize(deserializer).map(from_millis)
    }
}

mod option_unix_millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::unix_millis::{from_millis, to_millis};

    pub(super) fn serialize<S: Serializer>(
        time: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.serialize_some(&to_millis(*time)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(from_millis))
    }
}
