//! Device Bound Session Credentials: a session's binding to a browser's key and the short-lived
//! credential (a cookie) that only that key renews (see [`crate::dbsc`]).

use async_trait::async_trait;

use super::StoreError;
use crate::audit::NewAuditEvent;
use crate::ids::SessionId;
use crate::time::Timestamp;

/// The short-lived credential of a bound session: the SHA-256 of the cookie handed out (the
/// cookie itself is never stored) and when it stops counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbscCredential {
    /// SHA-256 of the cookie's value.
    pub hash: [u8; 32],
    /// When it expires.
    pub expires_at: Timestamp,
}

/// A session bound to a browser's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbscBinding {
    /// The session.
    pub session_id: SessionId,
    /// The browser's public key, as a compact JSON JWK (public members only).
    pub public_key: String,
    /// The credential in force.
    pub credential: DbscCredential,
    /// How many times the credential was renewed; a refresh challenge names the generation it
    /// was minted for, so that a renewal spends every challenge minted before it.
    pub generation: i64,
    /// When the session was bound.
    pub bound_at: Timestamp,
}

/// Sessions' bindings to browser keys.
///
/// What an implementer guarantees: a session is bound at most once, never after it was
/// revoked; a binding goes when its session is purged; a renewal is a compare-and-swap on the
/// generation, so of two renewals from one generation exactly one succeeds, on every instance
/// sharing the store.
#[async_trait]
pub trait DbscStore: Send + Sync {
    /// Stores `binding` if its session exists, is unrevoked, has not reached its idle or
    /// absolute expiry at `binding.bound_at`, and has no binding yet, appending `audit` in the
    /// same transaction. Returns whether it stored it (nothing is written otherwise).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn bind_dbsc(
        &self,
        binding: &DbscBinding,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// The binding of `session`, if it has one.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn dbsc_binding(&self, session: SessionId) -> Result<Option<DbscBinding>, StoreError>;

    /// Replaces the credential of `session`'s binding by `credential` and moves its generation
    /// to `generation + 1`, if its generation is still `generation`. Returns whether it did.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn renew_dbsc_credential(
        &self,
        session: SessionId,
        generation: i64,
        credential: &DbscCredential,
    ) -> Result<bool, StoreError>;
}
