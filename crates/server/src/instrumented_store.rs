//! [`InstrumentedStore`]: a `Store` that forwards every call to the real one and records its
//! latency, its failures, and the sessions it creates and revokes. Core stays free of metrics:
//! the server wraps the store it opened before handing it to the service.
//!
//! It also pokes the event hub after every write that may have stored events, so this
//! process's own events reach its streams without waiting for the tailer's poll.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sessiond_core::audit::{
    AuditChain, AuditEntry, AuditQuery, CheckpointFor, CheckpointKey, NewAuditEvent,
    SealedAuditEvent,
};
use sessiond_core::crypt::{Cipher, WrappedDataKey};
use sessiond_core::device::DeviceRecord;
use sessiond_core::event::{EventCursor, EventFilter, StoredEvent};
use sessiond_core::refresh::{RefreshTokenHash, RefreshTokenRecord};
use sessiond_core::session::{RevokeReason, Session};
use sessiond_core::store::{
    AuditFor, AuditStore, DbscBinding, DbscCredential, DbscStore, DeviceStore, EncryptionStore,
    EventStore, KeyStore, ProofStore, RetireOutcome, RetiredKey, Revocation, RevocationFeed,
    RevokedSessionRef, Rotation, RotationOutcome, SessionStore, Store, StoreError, StoreStats,
};
use sessiond_core::token::StoredKey;
use sessiond_core::{DeviceId, SessionId, Timestamp, UserId};

use crate::events::EventHub;
use crate::metrics::{Metrics, StoreOperation};

/// The store the service runs on, timed.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    events: Arc<EventHub>,
}

impl InstrumentedStore {
    /// Wraps `inner`, recording into `metrics` and poking `events` after writes.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>, events: Arc<EventHub>) -> Self {
        Self {
            inner,
            metrics,
            events,
        }
    }

    async fn timed<T>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .record_storage(operation, started.elapsed(), result.is_ok());
        result
    }
}

#[async_trait]
impl SessionStore for InstrumentedStore {
    async fn create_session(
        &self,
        session: &Session,
        first_token: &RefreshTokenHash,
        max_active: u32,
        audit: &NewAuditEvent,
        eviction_audit: AuditFor<'_>,
        new_device_audit: &NewAuditEvent,
    ) -> Result<Vec<Session>, StoreError> {
        let evicted = self
            .timed(
                StoreOperation::CreateSession,
                self.inner.create_session(
                    session,
                    first_token,
                    max_active,
                    audit,
                    eviction_audit,
                    new_device_audit,
                ),
            )
            .await?;
        self.events.poke();
        self.metrics.record_session_created();
        self.metrics
            .record_revocations(RevokeReason::SessionLimit, evicted.len());
        Ok(evicted)
    }

    async fn find_refresh_token(
        &self,
        hash: &RefreshTokenHash,
    ) -> Result<Option<(RefreshTokenRecord, Session)>, StoreError> {
        self.timed(
            StoreOperation::FindRefreshToken,
            self.inner.find_refresh_token(hash),
        )
        .await
    }

    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<RotationOutcome, StoreError> {
        let outcome = self
            .timed(
                StoreOperation::RotateRefreshToken,
                self.inner.rotate_refresh_token(rotation),
            )
            .await?;
        if outcome == RotationOutcome::Rotated {
            self.events.poke();
        }
        Ok(outcome)
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Option<(Session, bool)>, StoreError> {
        let revoked = self
            .timed(
                StoreOperation::RevokeSession,
                self.inner.revoke_session(id, revocation, audit),
            )
            .await?;
        if matches!(revoked, Some((_, true))) {
            self.events.poke();
            self.metrics.record_revocations(revocation.reason, 1);
        }
        Ok(revoked)
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        except: Option<SessionId>,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Vec<Session>, StoreError> {
        let revoked = self
            .timed(
                StoreOperation::RevokeUserSessions,
                self.inner
                    .revoke_user_sessions(user, except, revocation, audit),
            )
            .await?;
        if !revoked.is_empty() {
            self.events.poke();
        }
        self.metrics
            .record_revocations(revocation.reason, revoked.len());
        Ok(revoked)
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.timed(StoreOperation::Session, self.inner.session(id))
            .await
    }

    async fn active_sessions(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        self.timed(
            StoreOperation::ActiveSessions,
            self.inner.active_sessions(user, now),
        )
        .await
    }

    async fn revoked_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<RevokedSessionRef>, StoreError> {
        self.timed(
            StoreOperation::RevokedSince,
            self.inner.revoked_since(since, now),
        )
        .await
    }

    async fn purge(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.timed(StoreOperation::Purge, self.inner.purge(cutoff, now, batch))
            .await
    }

    async fn purge_successor_pairs(
        &self,
        spent_before: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.timed(
            StoreOperation::Purge,
            self.inner.purge_successor_pairs(spent_before, batch),
        )
        .await
    }

    async fn announce_expired(
        &self,
        now: Timestamp,
        batch: u32,
        audit: AuditFor<'_>,
    ) -> Result<u64, StoreError> {
        let announced = self
            .timed(
                StoreOperation::AnnounceExpired,
                self.inner.announce_expired(now, batch, audit),
            )
            .await?;
        if announced > 0 {
            self.events.poke();
        }
        Ok(announced)
    }

    async fn stats(&self, now: Timestamp) -> Result<StoreStats, StoreError> {
        self.timed(StoreOperation::Stats, self.inner.stats(now))
            .await
    }
}

#[async_trait]
impl DeviceStore for InstrumentedStore {
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.timed(StoreOperation::Devices, self.inner.devices(user))
            .await
    }

    async fn set_device_trusted(
        &self,
        user: &UserId,
        device: &DeviceId,
        trusted: bool,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let changed = self
            .timed(
                StoreOperation::DeviceWrite,
                self.inner.set_device_trusted(user, device, trusted, audit),
            )
            .await?;
        self.events.poke();
        Ok(changed)
    }

    async fn forget_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        revocation: Revocation,
        audit: &NewAuditEvent,
        revoke_audit: AuditFor<'_>,
    ) -> Result<Option<Vec<Session>>, StoreError> {
        let revoked = self
            .timed(
                StoreOperation::DeviceWrite,
                self.inner
                    .forget_device(user, device, revocation, audit, revoke_audit),
            )
            .await?;
        if let Some(revoked) = &revoked {
            self.events.poke();
            self.metrics
                .record_revocations(revocation.reason, revoked.len());
        }
        Ok(revoked)
    }
}

#[async_trait]
impl DbscStore for InstrumentedStore {
    async fn bind_dbsc(
        &self,
        binding: &DbscBinding,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.timed(
            StoreOperation::DbscWrite,
            self.inner.bind_dbsc(binding, audit),
        )
        .await
    }

    async fn dbsc_binding(&self, session: SessionId) -> Result<Option<DbscBinding>, StoreError> {
        self.timed(
            StoreOperation::DbscBinding,
            self.inner.dbsc_binding(session),
        )
        .await
    }

    async fn renew_dbsc_credential(
        &self,
        session: SessionId,
        generation: i64,
        credential: &DbscCredential,
    ) -> Result<bool, StoreError> {
        self.timed(
            StoreOperation::DbscWrite,
            self.inner
                .renew_dbsc_credential(session, generation, credential),
        )
        .await
    }
}

#[async_trait]
impl KeyStore for InstrumentedStore {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.timed(StoreOperation::SigningKeys, self.inner.signing_keys())
            .await
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.timed(
            StoreOperation::InsertSigningKey,
            self.inner.insert_signing_key(key),
        )
        .await
    }

    async fn insert_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        self.timed(
            StoreOperation::InsertSigningKey,
            self.inner.insert_first_signing_key(key),
        )
        .await
    }

    async fn signing_keys_version(&self) -> Result<i64, StoreError> {
        self.timed(
            StoreOperation::SigningKeysVersion,
            self.inner.signing_keys_version(),
        )
        .await
    }

    async fn rotate_signing_key(
        &self,
        key: &StoredKey,
        replaces: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.timed(
            StoreOperation::RotateSigningKey,
            self.inner.rotate_signing_key(key, replaces),
        )
        .await
    }

    async fn retire_signing_key(
        &self,
        kid: &str,
        now: Timestamp,
    ) -> Result<RetireOutcome, StoreError> {
        self.timed(
            StoreOperation::RetireSigningKey,
            self.inner.retire_signing_key(kid, now),
        )
        .await
    }

    async fn retire_signing_keys_deactivated_before(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        self.timed(
            StoreOperation::RetireSigningKey,
            self.inner
                .retire_signing_keys_deactivated_before(cutoff, now),
        )
        .await
    }

    async fn retired_signing_keys(&self) -> Result<Vec<RetiredKey>, StoreError> {
        self.timed(
            StoreOperation::SigningKeys,
            self.inner.retired_signing_keys(),
        )
        .await
    }

    async fn purge_retired_signing_keys(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        self.timed(
            StoreOperation::RetireSigningKey,
            self.inner.purge_retired_signing_keys(cutoff),
        )
        .await
    }
}

#[async_trait]
impl EventStore for InstrumentedStore {
    async fn events_after(
        &self,
        after: EventCursor,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.timed(
            StoreOperation::EventsAfter,
            self.inner.events_after(after, filter, limit),
        )
        .await
    }

    async fn latest_event_cursor(&self) -> Result<EventCursor, StoreError> {
        self.timed(
            StoreOperation::EventsAfter,
            self.inner.latest_event_cursor(),
        )
        .await
    }

    async fn purge_events(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError> {
        self.timed(
            StoreOperation::Purge,
            self.inner.purge_events(before, batch),
        )
        .await
    }
}

#[async_trait]
impl ProofStore for InstrumentedStore {
    async fn remember_dpop_proof(
        &self,
        replay_id: &[u8; 32],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.timed(
            StoreOperation::RememberDpopProof,
            self.inner.remember_dpop_proof(replay_id, until, now),
        )
        .await
    }

    async fn purge_dpop_proofs(&self, now: Timestamp, batch: u32) -> Result<u64, StoreError> {
        self.timed(
            StoreOperation::Purge,
            self.inner.purge_dpop_proofs(now, batch),
        )
        .await
    }
}

#[async_trait]
impl AuditStore for InstrumentedStore {
    async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
        self.timed(StoreOperation::AppendAudit, self.inner.append_audit(events))
            .await?;
        self.events.poke();
        Ok(())
    }

    async fn seal_audit(&self, batch: u32) -> Result<u64, StoreError> {
        self.timed(StoreOperation::SealAudit, self.inner.seal_audit(batch))
            .await
    }

    async fn audit_events(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<SealedAuditEvent>, StoreError> {
        self.timed(
            StoreOperation::AuditEvents,
            self.inner.audit_events(query, limit),
        )
        .await
    }

    async fn audit_chain(&self) -> Result<AuditChain, StoreError> {
        self.timed(StoreOperation::AuditChain, self.inner.audit_chain())
            .await
    }

    async fn prune_audit(
        &self,
        before: Timestamp,
        checkpoint: CheckpointFor<'_>,
    ) -> Result<u64, StoreError> {
        self.timed(
            StoreOperation::PruneAudit,
            self.inner.prune_audit(before, checkpoint),
        )
        .await
    }

    fn open_audit_ip(&self, entry: &AuditEntry) -> Result<Option<String>, StoreError> {
        self.inner.open_audit_ip(entry)
    }

    async fn audit_checkpoint_key(&self, candidate: &[u8]) -> Result<CheckpointKey, StoreError> {
        self.timed(
            StoreOperation::AuditCheckpointKey,
            self.inner.audit_checkpoint_key(candidate),
        )
        .await
    }
}

#[async_trait]
impl EncryptionStore for InstrumentedStore {
    // Key bootstrap and rotation happen at start and from the command line: not timed.
    async fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.master_key_check().await
    }

    async fn initialize_encryption(
        &self,
        check: &[u8],
        first: &WrappedDataKey,
    ) -> Result<bool, StoreError> {
        self.inner.initialize_encryption(check, first).await
    }

    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError> {
        self.inner.data_keys().await
    }

    async fn rewrap_data_keys(
        &self,
        old_check: &[u8],
        new_check: &[u8],
        keys: &[WrappedDataKey],
    ) -> Result<bool, StoreError> {
        self.inner
            .rewrap_data_keys(old_check, new_check, keys)
            .await
    }

    fn install_cipher(&self, cipher: Arc<Cipher>) {
        self.inner.install_cipher(cipher);
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn close(&self) {
        self.inner.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(StoreOperation::Ping, self.inner.ping()).await
    }

    // Forwarded untimed: the feed is long-lived, and a wrapper that kept the default `None`
    // would silently turn the feed off.
    fn revocation_feed(&self) -> Option<Box<dyn RevocationFeed>> {
        self.inner.revocation_feed()
    }
}
