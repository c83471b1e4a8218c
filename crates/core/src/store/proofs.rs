//! The replay cache of DPoP proofs (RFC 9449 §11.1): the ids of proofs already accepted, kept
//! until the proofs would be refused as stale anyway.

use async_trait::async_trait;

use super::StoreError;
use crate::time::Timestamp;

/// A DPoP proof's entry in the replay cache, to be recorded with a rotation in its transaction
/// (see [`super::Rotation::proof`]), as [`ProofStore::remember_dpop_proof`] records one alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofReplay {
    /// The proof's id: an opaque 32-byte digest, never a secret.
    pub id: [u8; 32],
    /// Until when it is kept: past that, the proof is refused as stale anyway.
    pub until: Timestamp,
}

/// Proof ids a server has accepted, so that a proof is accepted once.
///
/// What an implementer guarantees: ids are opaque 32-byte values (a digest the caller made, never
/// a secret); two processes sharing the storage never both see one id as new; and the records
/// a client can make it keep are bounded by their expiry, which the caller chooses and which
/// [`ProofStore::purge_dpop_proofs`] enforces.
#[async_trait]
pub trait ProofStore: Send + Sync {
    /// Records the proof `replay_id` until `until`, unless it is recorded already with an
    /// expiry after `now`. Answers `true` when the id is new (or its record had expired, and
    /// now holds until `until`), `false` when it was seen before: the proof is a replay, and
    /// nothing changes.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is recorded then, and the caller must refuse the proof.
    async fn remember_dpop_proof(
        &self,
        replay_id: &[u8; 32],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Deletes at most `batch` records whose expiry is at or before `now`; returns how many.
    /// Fewer than `batch` means none are left.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn purge_dpop_proofs(&self, now: Timestamp, batch: u32) -> Result<u64, StoreError>;
}
