//! The storage boundary: what a store must persist and which atomic operations the rules need.
//!
//! Stores persist; the core decides. A store sees refresh tokens only as hashes, answers a
//! missing row with `Ok(None)`, and makes each method below atomic: either everything it
//! describes is durable when it returns `Ok`, or nothing is.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::audit::{
    AuditChain, AuditQuery, CheckpointFor, CheckpointKey, NewAuditEvent, SealedAuditEvent,
};
use crate::crypt::{Cipher, WrappedDataKey};
use crate::device::DeviceRecord;
use crate::event::{EventCursor, EventFilter, StoredEvent};
use crate::ids::{DeviceId, SessionId, UserId};
use crate::refresh::{RefreshTokenHash, RefreshTokenRecord};
use crate::session::{RevokeReason, Session};
use crate::time::Timestamp;
use crate::token::StoredKey;

/// A boxed error of a storage backend, kept as the source of a [`StoreError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation failed. In every case nothing was half-written: the operation
/// either committed whole or not at all. One case stays undecidable for a networked store: a
/// connection lost while its COMMIT was in flight, reported as [`StoreError::Unavailable`],
/// may have committed. Retrying is safe for rotations (a replay inside the grace window gets
/// the same successor) and for revocations (idempotent); a retried session creation may
/// create a second session.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or is overloaded; the operation may succeed if retried.
    #[error("storage is unavailable")]
    Unavailable(#[source] BackendError),
    /// The backend refused the operation.
    #[error("storage operation failed")]
    Backend(#[source] BackendError),
    /// A stored row cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Builds the audit event for each session an operation revokes, written in the same
/// transaction as the revocation. Shared, so that a store may call it on the thread that
/// runs its transaction.
pub type AuditFn = dyn Fn(&Session) -> NewAuditEvent + Send + Sync;

/// How an operation that revokes sessions is given its [`AuditFn`].
pub type AuditFor<'a> = &'a std::sync::Arc<AuditFn>;

/// Shares an audit builder with a store, which may run it on the thread of its transaction.
pub fn audit_for(
    build: impl Fn(&Session) -> NewAuditEvent + Send + Sync + 'static,
) -> std::sync::Arc<AuditFn> {
    std::sync::Arc::new(build)
}

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
    /// An audit event to append with the rotation, in its transaction, if it happens.
    pub audit: Option<NewAuditEvent>,
}

/// What became of a [`Rotation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The token was spent and its successor stored.
    Rotated,
    /// Another request spent the token, or the session was revoked, first; nothing changed.
    Lost,
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

/// Counts over the sessions active at one instant, as [`Store::stats`] answers them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreStats {
    /// Sessions unrevoked and unexpired.
    pub active_sessions: u64,
    /// Distinct `(user, device)` pairs among them.
    pub active_devices: u64,
    /// Mean of `last_active_at - created_at` over them, in milliseconds; 0 when there are none.
    pub average_session_duration_ms: f64,
}

/// What a [`RevocationFeed`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    /// A session was revoked by a transaction that has committed. `revoked_at` is the revoking
    /// instance's clock and only informative.
    Revoked(RevokedSessionRef),
    /// The feed has just (re)connected and may have missed revocations before this point: the
    /// consumer must read every revocation that still matters again
    /// ([`Store::revoked_since`] from the epoch).
    Resync,
}

/// A push feed of revocations committed by any process sharing the store, for stores whose
/// processes cannot see each other's memory (several instances on one database server).
///
/// What an implementer must guarantee:
///
/// - a revocation is reported only after the transaction that made it has committed, so the
///   consumer never refuses a session that is in fact still valid;
/// - the first event is [`FeedEvent::Resync`], sent once the feed listens, and every time the
///   feed has lost its connection and listens again, so that a revocation is either reported
///   as [`FeedEvent::Revoked`] or committed before a `Resync` that follows it. A missed
///   notification therefore never outlives the resync after it;
/// - a message it cannot read is reported as `Resync`, never dropped silently.
///
/// The feed is best effort about *latency* only: a connection that dies silently (a network
/// partition) is noticed when the transport notices, so consumers keep a periodic
/// [`Store::revoked_since`] poll as a safety net.
#[async_trait]
pub trait RevocationFeed: Send + Debug {
    /// Waits for the next event. After an `Err` the feed can be asked again (ideally after a
    /// pause): it reconnects, and then reports [`FeedEvent::Resync`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the feed cannot (re)connect.
    async fn next(&mut self) -> Result<FeedEvent, StoreError>;
}

/// What [`Store::retire_signing_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireOutcome {
    /// The key was deleted.
    Retired,
    /// No key has that `kid`.
    NotFound,
    /// The key still signs, so it was kept.
    Active,
}

/// Persistent storage of sessions, refresh tokens, signing keys and audit events.
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
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

    /// The devices in `user`'s registry, most recently seen first. A device's `last_seen_at`
    /// is the latest activity of any of its sessions.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Marks `user`'s device `device` trusted or not, appending `audit`; `false` when the user
    /// has no such device (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn set_device_trusted(
        &self,
        user: &UserId,
        device: &DeviceId,
        trusted: bool,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// Removes `user`'s device `device` from the registry and revokes its active sessions
    /// (appending `audit` and `revoke_audit` for each), in one transaction. Returns the
    /// sessions revoked, or `None` when the user has no such device (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn forget_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        revocation: Revocation,
        audit: &NewAuditEvent,
        revoke_audit: AuditFor<'_>,
    ) -> Result<Option<Vec<Session>>, StoreError>;

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
    /// spent with the sealed successor, stores the successor token, and moves the session's
    /// activity, idle expiry and latest access-token expiry forward. Two concurrent rotations
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

    /// Every stored signing key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Stores a new signing key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Stores `key` unless an active key of its algorithm already exists; returns whether it was
    /// stored. Atomic across processes, so instances starting together on an empty database
    /// agree on one first key instead of each signing with a key the others do not know.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn insert_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError>;

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

    /// At most `limit` stored events after `after` that pass `filter`, in cursor order.
    ///
    /// What an implementer must guarantee: an event is returned only once its position is
    /// final, that is once no transaction can still commit an event at or before its cursor.
    /// A reader that resumes from the last cursor it saw therefore misses nothing. Every event
    /// is written by [`Store`] methods in the transaction of the change it describes: one per
    /// [`crate::event::events_of_audit`] result of each audit event appended, and a
    /// `session.refreshed` for each successful rotation.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn events_after(
        &self,
        after: EventCursor,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The cursor of the newest event whose position is final ([`EventCursor::START`] when
    /// there is none): where a reader that wants only new events starts.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn latest_event_cursor(&self) -> Result<EventCursor, StoreError>;

    /// Deletes at most `batch` events that happened before `before`; returns how many.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn purge_events(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError>;

    /// A number that changes whenever the stored signing keys change (a key added, replaced or
    /// retired, by any process). Cheap: instances read it every second and reload the keys only
    /// when it moved.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn signing_keys_version(&self) -> Result<i64, StoreError>;

    /// Makes `key` the signing key of its algorithm, atomically across processes: if the active
    /// key of that algorithm (the newest one not deactivated) is `replaces` (`None`: there is
    /// none), every active key of the algorithm gets `deactivated_at = key.created_at` and `key`
    /// is stored, active. Otherwise nothing is written and `false` is returned: another process
    /// rotated first.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn rotate_signing_key(
        &self,
        key: &StoredKey,
        replaces: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Deletes the key `kid`, secret and all, if it has been deactivated. An active key is
    /// never deleted.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn retire_signing_key(&self, kid: &str) -> Result<RetireOutcome, StoreError>;

    /// Deletes every key deactivated before `cutoff`; returns their `kid`s.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn retire_signing_keys_deactivated_before(
        &self,
        cutoff: Timestamp,
    ) -> Result<Vec<String>, StoreError>;

    /// Appends audit events.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError>;

    /// Seals at most `batch` audit events: gives each the next `seq` of the chain, the hash of
    /// the event before it as `prev_hash`, and its own [`crate::audit::chain_hash`]. Returns
    /// how many it sealed; fewer than `batch` means none are left for now.
    ///
    /// What an implementer must guarantee: writers never wait for the chain (events are
    /// appended unsealed in their own transactions); an event is sealed only once no event
    /// that would take a place before it can still commit, so the order never changes once
    /// sealed (commit order, or an order of transaction ids); only one sealer in any process
    /// works on the chain at a time (another call returns 0 at once, or waits); and the chain
    /// continues from its recorded head (seq 0 and [`crate::audit::GENESIS_HASH`] at first),
    /// which moves in the same transaction.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is sealed then.
    async fn seal_audit(&self, batch: u32) -> Result<u64, StoreError>;

    /// At most `limit` sealed audit events that pass `query`, in seq order. Unsealed events
    /// are never returned.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn audit_events(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<SealedAuditEvent>, StoreError>;

    /// The chain's recorded head (the seq and hash of the newest sealed event, kept apart from
    /// the events so that deleting the newest ones shows) and the checkpoint left by the last
    /// pruning, if any.
    ///
    /// # Errors
    /// [`StoreError`]; [`StoreError::Corrupt`] when a stored hash has the wrong length.
    async fn audit_chain(&self) -> Result<AuditChain, StoreError>;

    /// Deletes the longest prefix of the sealed chain whose events all happened before
    /// `before`, and in the same transaction replaces the checkpoint with `checkpoint(seq,
    /// hash)` of the last event deleted. Returns how many were deleted. Excludes
    /// [`Store::seal_audit`] while it runs.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is deleted then.
    async fn prune_audit(
        &self,
        before: Timestamp,
        checkpoint: CheckpointFor<'_>,
    ) -> Result<u64, StoreError>;

    /// The key that signs audit checkpoints: the stored one, or `candidate` after storing it
    /// when there is none. Atomic across processes, so all agree on one key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn audit_checkpoint_key(&self, candidate: &[u8]) -> Result<CheckpointKey, StoreError>;

    /// The key-check value of the master key the data keys are wrapped under, or `None` when
    /// the database was never encrypted.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `check` and the first data key, unless a check value exists already; returns
    /// whether it stored them. Atomic across processes, so instances starting together on an
    /// unencrypted database agree on one data key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn initialize_encryption(
        &self,
        check: &[u8],
        first: &WrappedDataKey,
    ) -> Result<bool, StoreError>;

    /// Every stored data key, wrapped.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError>;

    /// In one transaction: if the check value is `old_check` and `keys` names every stored data
    /// key, replaces each key's wrapped form and the check value with `new_check`; otherwise
    /// writes nothing and answers `false`.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is changed then.
    async fn rewrap_data_keys(
        &self,
        old_check: &[u8],
        new_check: &[u8],
        keys: &[WrappedDataKey],
    ) -> Result<bool, StoreError>;

    /// Seals every encrypted column written from now on with `cipher`, and opens sealed values
    /// with it. Until it is called a store writes values as they are.
    fn install_cipher(&self, cipher: std::sync::Arc<Cipher>);

    /// Checks that storage answers.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Counts over the sessions active at `now` (unrevoked, before both expiries), for
    /// `/v1/stats` and the metrics gauges. A read; it never blocks writers for long.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn stats(&self, now: Timestamp) -> Result<StoreStats, StoreError>;

    /// A push feed of revocations committed by any process sharing this store (see
    /// [`RevocationFeed`]), or `None` when the store offers none; the default. Consumers then
    /// rely on polling [`Store::revoked_since`] alone. It does not connect: the feed's first
    /// [`RevocationFeed::next`] does.
    fn revocation_feed(&self) -> Option<Box<dyn RevocationFeed>> {
        None
    }
}
