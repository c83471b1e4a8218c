//! The audit trail and its hash chain.

use async_trait::async_trait;

use super::StoreError;
use crate::audit::{
    AuditChain, AuditEntry, AuditQuery, CheckpointFor, CheckpointKey, NewAuditEvent,
    SealedAuditEvent,
};
use crate::time::Timestamp;

/// Persistent audit events, chained by hash once sealed.
///
/// What an implementer guarantees: audit events are appended in the transaction of the change
/// they record (by the methods of every store trait that take an audit event); writers never
/// wait for the chain; when no writer is in flight, calling [`AuditStore::seal_audit`] until it
/// returns 0 seals every committed event (a store may also seal as it writes, and then has
/// nothing left to seal), in an order that never changes afterwards, and the chain from the
/// checkpoint (or the genesis hash) to the recorded head verifies; only sealed events are read
/// back; pruning removes a sealed prefix and records its checkpoint in one transaction.
#[async_trait]
pub trait AuditStore: Send + Sync {
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
    /// [`AuditStore::seal_audit`] while it runs.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is deleted then.
    async fn prune_audit(
        &self,
        before: Timestamp,
        checkpoint: CheckpointFor<'_>,
    ) -> Result<u64, StoreError>;

    /// The client address of a stored audit event, opened: `entry.ip` as stored is sealed
    /// under the data key (column [`crate::crypt::columns::AUDIT_IP`], row
    /// [`AuditEntry::ip_row`]) when written with a cipher installed, or plaintext when written
    /// before that. The chain hashes the stored form, so reading never changes what verifies.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when a sealed address does not open (altered, moved from
    /// another event, or sealed under a data key that is not loaded).
    fn open_audit_ip(&self, entry: &AuditEntry) -> Result<Option<String>, StoreError>;

    /// The key that signs audit checkpoints: the stored one, or `candidate` after storing it
    /// when there is none. Atomic across processes, so all agree on one key.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn audit_checkpoint_key(&self, candidate: &[u8]) -> Result<CheckpointKey, StoreError>;
}
