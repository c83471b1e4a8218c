//! Sessions and their refresh tokens: creation with eviction, the rotation compare-and-swap,
//! revocations, expiry announcements, purge and counts.

use async_trait::async_trait;

use super::{AuditFor, ProofReplay, StoreError};
use crate::audit::NewAuditEvent;
use crate::ids::{SessionId, UserId};
use crate::refresh::{RefreshTokenHash, RefreshTokenRecord};
use crate::session::{RevokeReason, Session};
use crate::time::Timestamp;

/// A refresh token spent for a successor.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The token being spent.
    pub presented: RefreshTokenHash,
    /// Its session.
    pub session_id: SessionId,
    /// The successor token.
    pub successor: RefreshTokenHash,
    /// The successor pair, sealed under the presented token (see [`crate::refresh`]).
    pub sealed_successor: Vec<u8>,
    /// When the rotation happens.
    pub now: Timestamp,
    /// The session's new idle expiry.
    pub idle_expires_at: Timestamp,
    /// The `exp` of the successor's access token.
    pub access_expires_at: Timestamp,
    /// The thumbprint of the DPoP key the session becomes bound to, if it is not bound yet
    /// (a binding, once made, never changes).
    pub bind_dpop_jkt: Option<String>,
    /// An audit event to append with the rotation, in its transaction, if it happens.
    pub audit: Option<NewAuditEvent>,
    /// The DPoP proof that came with the presented token, to record in the replay cache in the
    /// rotation's transaction before anything else, as [`super::ProofStore::remember_dpop_proof`]
    /// would: when its id is recorded already and unexpired at `now`, the rotation answers
    /// [`RotationOutcome::ProofReplayed`] and changes nothing; otherwise it is recorded
    /// whatever the rotation comes to, a lost race included.
    pub proof: Option<ProofReplay>,
}

/// What became of a [`Rotation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The token was spent and its successor stored.
    Rotated,
    /// Another request spent the token, or the session was revoked, first; nothing changed but
    /// the record of [`Rotation::proof`].
    Lost,
    /// [`Rotation::proof`] was accepted before: the request is a replay, and nothing changed.
    ProofReplayed,
}

/// A revocation about to be applied.
#[derive(Debug, Clone, Copy)]
pub struct Revocation {
    /// When.
    pub at: Timestamp,
    /// Why.
    pub reason: RevokeReason,
}

/// A revoked session as the revocation set needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedSessionRef {
    /// The session.
    pub id: SessionId,
    /// When it was revoked.
    pub revoked_at: Timestamp,
    /// When its last access token expires.
    pub access_expires_at: Timestamp,
}

/// Counts over the sessions active at one instant, as [`SessionStore::stats`] answers them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreStats {
    /// Sessions unrevoked and unexpired.
    pub active_sessions: u64,
    /// Distinct `(user, device)` pairs among them.
    pub active_devices: u64,
    /// Mean of `last_active_at - created_at` over them, in milliseconds; 0 when there are none.
    pub average_session_duration_ms: f64,
}

/// Persistent sessions and refresh tokens.
///
/// What an implementer guarantees, beyond each method's contract: refresh tokens are seen and
/// kept only as hashes; a missing row is `Ok(None)`; each method is one transaction, so a
/// session is never stored without its first token, a rotation never spends a token without
/// storing its successor, and a revocation never lands without its audit event (and the
/// events [`crate::event::events_of_audit`] derives from it). Two processes sharing the
/// storage never both win a rotation of one token, never both report one session revoked, and
/// never let a user exceed the limit [`SessionStore::create_session`] is given.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores `session` with its first refresh token and `audit`. In the same transaction: if
    /// the user would then have more than `max_active` active sessions at `session.created_at`,
    /// revokes the least recently active ones with [`RevokeReason::SessionLimit`], appending
    /// `eviction_audit` for each, and returns them as revoked; and records the session's device
    /// in the user's registry (keyed by user *and* device id), appending `new_device_audit`
    /// when the user had no device of that id.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is stored then.
    async fn create_session(
        &self,
        session: &Session,
        first_token: &RefreshTokenHash,
        max_active: u32,
        audit: &NewAuditEvent,
        eviction_audit: AuditFor<'_>,
        new_device_audit: &NewAuditEvent,
    ) -> Result<Vec<Session>, StoreError>;

    /// The refresh token with hash `hash` and its session, or `None`. The record says whether
    /// its successor (if any) has been spent.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn find_refresh_token(
        &self,
        hash: &RefreshTokenHash,
    ) -> Result<Option<(RefreshTokenRecord, Session)>, StoreError>;

    /// Spends `rotation.presented` if, and only if, it is unspent, belongs to
    /// `rotation.session_id`, and that session is not revoked (compare-and-swap); otherwise
    /// answers [`RotationOutcome::Lost`] and changes nothing. On success it marks the token
    /// spent with the sealed successor, stores the successor token, moves the session's
    /// activity, idle expiry and latest access-token expiry forward, and binds it to
    /// `rotation.bind_dpop_jkt` unless it is bound already. Two concurrent rotations
    /// of one token never both succeed, even from different processes.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is changed then.
    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<RotationOutcome, StoreError>;

    /// Revokes session `id` unless it is already revoked; appends `audit` for it when it was
    /// revoked now. Returns the session as it is afterwards, or `None` if there is none.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn revoke_session(
        &self,
        id: SessionId,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Option<(Session, bool)>, StoreError>;

    /// Revokes every active session of `user` except `except`, appending `audit` for each.
    /// Returns the sessions revoked now.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is revoked then.
    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        except: Option<SessionId>,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Vec<Session>, StoreError>;

    /// Session `id`, revoked or not, or `None`.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// The sessions of `user` active at `now`, most recently active first.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn active_sessions(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError>;

    /// Sessions revoked at or after `since` whose access tokens are still alive at `now`.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn revoked_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<RevokedSessionRef>, StoreError>;

    /// Deletes at most `batch` sessions (with their refresh tokens) that were revoked or
    /// expired before `cutoff` and whose access tokens have all expired by `now`. Returns how
    /// many were deleted; fewer than `batch` means none are left.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn purge(&self, cutoff: Timestamp, now: Timestamp, batch: u32)
    -> Result<u64, StoreError>;

    /// Forgets the sealed successor pairs of at most `batch` refresh tokens spent before
    /// `spent_before`, oldest first, and returns how many it forgot; fewer than `batch` means
    /// none are left. A pair is handed out again only while its token's replay window is open
    /// ([`crate::refresh::decide_refresh`]), so a caller that passes a time at least one window
    /// back forgets only pairs that can never be used again; without this, a session would
    /// keep one pair (some 570 bytes) for each of its refreshes for as long as it lives. The
    /// token rows stay, so a spent token presented again is still recognised as reuse.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn purge_successor_pairs(
        &self,
        spent_before: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError>;

    /// Marks as announced at most `batch` sessions that are unrevoked, reached their idle or
    /// absolute expiry at or before `now`, and were not announced before, appending `audit`
    /// for each (and so its `session.expired` event). Returns how many it marked; fewer than
    /// `batch` means none are left. Processes calling this at the same time never announce one
    /// session twice.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is marked then.
    async fn announce_expired(
        &self,
        now: Timestamp,
        batch: u32,
        audit: AuditFor<'_>,
    ) -> Result<u64, StoreError>;

    /// Counts over the sessions active at `now` (unrevoked, before both expiries), for
    /// `/v1/stats` and the metrics gauges. A read; it never blocks writers for long.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn stats(&self, now: Timestamp) -> Result<StoreStats, StoreError>;
}
