//! The storage boundary: what a store must persist and which atomic operations the rules need.
//!
//! Stores persist; the core decides. A store sees refresh tokens only as hashes, answers a
//! missing row with `Ok(None)`, and makes each method below atomic: either everything it
//! describes is durable when it returns `Ok`, or nothing is.
//!
//! The boundary is split by concern, each trait documenting what an implementer guarantees:
//! [`SessionStore`] (sessions, refresh tokens and their rotation, revocations, expiry, purge,
//! counts), [`DeviceStore`] (the device registry), [`KeyStore`] (signing keys),
//! [`EncryptionStore`] (the keys of encryption at rest), [`AuditStore`] (the audit chain),
//! [`EventStore`] (live events), [`ProofStore`] (the replay cache of DPoP proofs) and
//! [`DbscStore`] (sessions bound to a browser's key).
//! [`Store`] is all of them together with what concerns the store as a whole, and is what the
//! service holds (`Arc<dyn Store>`).

use std::fmt::Debug;

use async_trait::async_trait;

use crate::audit::NewAuditEvent;
use crate::session::Session;

mod audit;
mod dbsc;
mod devices;
mod encryption;
pub mod error;
mod events;
mod keys;
mod proofs;
pub mod rows;
mod sessions;

pub use audit::AuditStore;
pub use dbsc::{DbscBinding, DbscCredential, DbscStore};
pub use devices::DeviceStore;
pub use encryption::EncryptionStore;
pub use error::{BackendError, CannotWrite, StoreError, WriteBlock};
pub use events::EventStore;
pub use keys::{KeyStore, RetireOutcome, RetiredKey};
pub use proofs::{ProofReplay, ProofStore};
pub use sessions::{
    Revocation, RevokedSessionRef, Rotation, RotationOutcome, SessionStore, StoreStats,
};

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

/// What a [`RevocationFeed`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    /// A session was revoked by a transaction that has committed. `revoked_at` is the revoking
    /// instance's clock and only informative.
    Revoked(RevokedSessionRef),
    /// The feed has just (re)connected and may have missed revocations before this point: the
    /// consumer must read every revocation that still matters again
    /// ([`SessionStore::revoked_since`] from the epoch).
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
/// [`SessionStore::revoked_since`] poll as a safety net.
#[async_trait]
pub trait RevocationFeed: Send + Debug {
    /// Waits for the next event. After an `Err` the feed can be asked again (ideally after a
    /// pause): it reconnects, and then reports [`FeedEvent::Resync`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the feed cannot (re)connect.
    async fn next(&mut self) -> Result<FeedEvent, StoreError>;
}

/// Persistent storage of sessiond: every store trait, and what concerns the store as a whole.
/// A backend implements each trait in its own `impl` block, and this one for its health check
/// and its revocation feed.
#[async_trait]
pub trait Store:
    SessionStore
    + DeviceStore
    + KeyStore
    + EncryptionStore
    + AuditStore
    + EventStore
    + DbscStore
    + ProofStore
    + Send
    + Sync
    + Debug
    + 'static
{
    /// Checks that storage answers and, as far as the store can tell cheaply, accepts writes:
    /// the readiness check calls it on every probe, so it must stay about as cheap as one
    /// round trip while all is well.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when storage does not answer; when it answers but cannot
    /// write (a full disk, a read-only database, I/O errors), with a [`CannotWrite`] as its
    /// source ([`StoreError::cannot_write`]).
    async fn ping(&self) -> Result<(), StoreError>;

    /// A push feed of revocations committed by any process sharing this store (see
    /// [`RevocationFeed`]), or `None` when the store offers none; the default. Consumers then
    /// rely on polling [`SessionStore::revoked_since`] alone. It does not connect: the feed's first
    /// [`RevocationFeed::next`] does.
    fn revocation_feed(&self) -> Option<Box<dyn RevocationFeed>> {
        None
    }

    /// Finishes what the store has in flight and releases its connections, leaving the data
    /// entirely in durable storage (an embedded store folds its log into its file). Called
    /// once, at shutdown; later calls to the store fail as unavailable. The default does
    /// nothing.
    async fn close(&self) {}
}

/// Refuses a schema that lacks one of `migrations` (`(version, name, sql)`, as a store crate
/// lists them) or has a version newer than all of them, given the `applied` versions: what a
/// store checks instead of migrating when it is opened by a command that writes nothing.
///
/// # Errors
/// [`StoreError::Corrupt`] naming the first missing migration and `sessiond migrate`, or the
/// newer version.
pub fn require_migrations(
    applied: &[i64],
    migrations: &[(i64, &str, &str)],
) -> Result<(), StoreError> {
    let newest_known = migrations.last().map_or(0, |(version, _, _)| *version);
    if let Some(newer) = applied
        .iter()
        .copied()
        .find(|version| *version > newest_known)
    {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {newer}, newer than this build knows \
             ({newest_known}); run a newer sessiond"
        )));
    }
    if let Some((version, name, _)) = migrations
        .iter()
        .find(|(version, _, _)| !applied.contains(version))
    {
        return Err(StoreError::Corrupt(format!(
            "the database lacks migration {version:04} ({name}) of this build, and this \
             command writes nothing: run `sessiond migrate` first"
        )));
    }
    Ok(())
}
