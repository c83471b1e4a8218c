//! Group commit for refresh-token rotations.
//!
//! Rotations are the hot write of sessiond, and each one is a few small statements. Committed
//! one by one, the cost is dominated by the transaction around them (the round trips to the
//! connection and the WAL sync), not by the work. So rotations are queued to one task that
//! takes whatever has accumulated, applies it inside a single `BEGIN IMMEDIATE ... COMMIT`, and
//! answers every request only after that commit is durable. Each rotation stays a
//! compare-and-swap: a second rotation of the same token in the same batch sees the first and
//! loses, exactly as it would in its own transaction.
//!
//! If a batch fails, its rotations are retried one transaction each, so a single bad rotation
//! cannot fail the others, and each request gets its own answer.

use sessiond_core::store::{Rotation, RotationOutcome, StoreError};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::error::store_error;

/// Most rotations applied in one transaction; bounds the latency a batch adds to its first
/// request.
const MAX_BATCH: usize = 128;
/// Rotations waiting for the writer before new requests wait to enqueue (backpressure).
const QUEUE_DEPTH: usize = 4096;

struct PendingRotation {
    rotation: Rotation,
    reply: oneshot::Sender<Result<RotationOutcome, StoreError>>,
}

/// The sending side of the rotation queue; cloned into every handle of the store.
#[derive(Debug, Clone)]
pub(crate) struct RotationQueue {
    sender: mpsc::Sender<PendingRotation>,
}

impl std::fmt::Debug for PendingRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRotation")
            .field("session_id", &self.rotation.session_id)
            .finish_non_exhaustive()
    }
}

impl RotationQueue {
    /// Starts the batching task on `writer`; it ends when every queue handle is dropped.
    pub(crate) fn start(writer: SqlitePool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(writer, receiver));
        Self { sender }
    }

    /// Applies `rotation` in the next batch and waits until it is committed.
    pub(crate) async fn rotate(&self, rotation: Rotation) -> Result<RotationOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(PendingRotation { rotation, reply })
            .await
            .map_err(|_| unavailable("the rotation writer has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the rotation writer dropped the request"))?
    }
}

fn unavailable(message: &'static str) -> StoreError {
    StoreError::Unavailable(message.into())
}

async fn run(writer: SqlitePool, mut receiver: mpsc::Receiver<PendingRotation>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match apply_batch(&writer, &batch).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    // The requester may have gone away; the rotation is committed regardless.
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, rotations = batch.len(), "rotation batch failed; retrying one by one");
                for pending in batch.drain(..) {
                    let outcome = apply_batch(&writer, std::slice::from_ref(&pending))
                        .await
                        .map(|mut outcomes| outcomes.pop().unwrap_or(RotationOutcome::Lost));
                    let _ = pending.reply.send(outcome);
                }
            }
        }
    }
}

async fn apply_batch(
    writer: &SqlitePool,
    batch: &[PendingRotation],
) -> Result<Vec<RotationOutcome>, StoreError> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(store_error)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for pending in batch {
        let outcome = rotate(&mut tx, &pending.rotation).await?;
        if outcome == RotationOutcome::Rotated
            && let Some(audit) = &pending.rotation.audit
        {
            crate::store::append_audit(&mut tx, audit).await?;
        }
        outcomes.push(outcome);
    }
    tx.commit().await.map_err(store_error)?;
    Ok(outcomes)
}

/// A rotation as one multi-statement query, so it costs one round trip to the connection.
///
/// The first statement is the compare-and-swap: the session moves forward only if it is
/// unrevoked and the presented token is still unspent. Each later statement runs only if the
/// one before it changed exactly one row (`changes()` reports the previous statement), so a
/// lost race writes nothing.
///
/// Parameters are `?NNN`, bound by number in every statement: `?1` now, `?2` the session,
/// `?3` the idle expiry, `?4` the access expiry, `?5` the presented token, `?6` the successor,
/// `?7` the sealed pair. The numbering matters: sqlx fills a statement's *unused* slots below
/// its highest number from a running count of earlier unused slots and stops binding (leaving
/// NULLs) once that count passes the number of arguments, so a late statement must not skip
/// numbers. The last one therefore uses exactly `?1` and `?2`.
const ROTATE: &str = "
    UPDATE sessions
    SET last_active_at = ?1, idle_expires_at = ?3, access_expires_at = MAX(access_expires_at, ?4)
    WHERE id = ?2 AND revoked_at IS NULL
      AND EXISTS (SELECT 1 FROM refresh_tokens
                  WHERE hash = ?5 AND session_id = ?2 AND spent_at IS NULL);
    UPDATE refresh_tokens SET spent_at = ?1, successor_hash = ?6, sealed_successor = ?7
    WHERE hash = ?5 AND spent_at IS NULL AND changes() = 1;
    INSERT INTO refresh_tokens (hash, session_id, issued_at)
    SELECT ?6, ?2, ?1 WHERE changes() = 1;
    INSERT INTO events (type, user_id, session_id, at, data)
    SELECT 'session.refreshed', user_id, id, ?1, '{}' FROM sessions WHERE id = ?2 AND changes() = 1;";

/// Rows a successful rotation changes: the session, the spent token, the successor and its
/// `session.refreshed` event.
const ROWS_OF_A_ROTATION: u64 = 4;

/// One rotation inside an open write transaction.
async fn rotate(
    connection: &mut SqliteConnection,
    rotation: &Rotation,
) -> Result<RotationOutcome, StoreError> {
    let changed = sqlx::query(ROTATE)
        .bind(rotation.now.unix_millis())
        .bind(rotation.session_id.to_string())
        .bind(rotation.idle_expires_at.unix_millis())
        .bind(rotation.access_expires_at.unix_millis())
        .bind(&rotation.presented.0[..])
        .bind(&rotation.successor.0[..])
        .bind(&rotation.sealed_successor[..])
        .execute(&mut *connection)
        .await
        .map_err(store_error)?
        .rows_affected();
    match changed {
        0 => Ok(RotationOutcome::Lost),
        ROWS_OF_A_ROTATION => Ok(RotationOutcome::Rotated),
        // Anything in between would be a half-applied rotation: fail the transaction.
        partial => Err(StoreError::Corrupt(format!(
            "a rotation changed {partial} rows instead of {ROWS_OF_A_ROTATION}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteSettings, SqliteStore};
    use sessiond_core::refresh::RefreshToken;
    use sessiond_core::store::Store;
    use sessiond_core::{Session, SessionId, Timestamp};

    fn rotation_of(presented: &RefreshToken, session: SessionId, now: Timestamp) -> Rotation {
        Rotation {
            presented: presented.hash(),
            session_id: session,
            successor: RefreshToken::generate().hash(),
            sealed_successor: vec![1, 2, 3],
            now,
            idle_expires_at: now.plus(std::time::Duration::from_secs(60)),
            access_expires_at: now.plus(std::time::Duration::from_secs(30)),
            audit: None,
        }
    }

    fn session_at(now: Timestamp) -> Session {
        use sessiond_core::session::{Device, DeviceType};
        Session {
            id: SessionId::generate(),
            user_id: sessiond_core::UserId::from_trusted("alice".into()),
            tenant_id: None,
            device: Device {
                id: sessiond_core::DeviceId::from_trusted("laptop".into()),
                name: None,
                device_type: DeviceType::Desktop,
                browser: None,
                os: None,
                trusted: false,
            },
            ip: None,
            user_agent: None,
            claims: serde_json::Map::new(),
            metadata: serde_json::Map::new(),
            created_at: now,
            last_active_at: now,
            idle_expires_at: now.plus(std::time::Duration::from_secs(3600)),
            expires_at: now.plus(std::time::Duration::from_secs(7200)),
            access_expires_at: now,
            revoked_at: None,
            revoke_reason: None,
        }
    }

    fn event(kind: &'static str, at: Timestamp) -> sessiond_core::audit::NewAuditEvent {
        sessiond_core::audit::NewAuditEvent {
            kind,
            severity: sessiond_core::audit::Severity::Info,
            user_id: None,
            session_id: None,
            ip: None,
            at,
            details: serde_json::Map::new(),
        }
    }

    async fn store_with_session() -> (tempfile::TempDir, SqliteStore, Session, RefreshToken) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .expect("open");
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now);
        let token = RefreshToken::generate();
        let created = event("session.created", now);
        store
            .create_session(
                &session,
                &token.hash(),
                5,
                &created,
                &|_| created.clone(),
                &created,
            )
            .await
            .expect("create");
        (dir, store, session, token)
    }

    #[tokio::test]
    async fn two_rotations_of_one_token_in_one_batch_yield_one_successor() {
        let (_dir, store, session, token) = store_with_session().await;
        let now = session.created_at;
        let (one, other) = (
            rotation_of(&token, session.id, now),
            rotation_of(&token, session.id, now),
        );
        let (first, second) = tokio::join!(
            store.rotate_refresh_token(&one),
            store.rotate_refresh_token(&other),
        );
        let mut outcomes = [first.expect("first"), second.expect("second")];
        outcomes.sort_by_key(|outcome| *outcome == RotationOutcome::Lost);
        assert_eq!(outcomes, [RotationOutcome::Rotated, RotationOutcome::Lost]);
        let (record, stored) = store
            .find_refresh_token(&token.hash())
            .await
            .expect("lookup")
            .expect("present");
        assert!(record.spent_at.is_some());
        assert_eq!(stored.last_active_at, now);
    }

    #[tokio::test]
    async fn a_rotation_naming_another_session_than_the_tokens_writes_nothing() {
        let (_dir, store, session, token) = store_with_session().await;
        let rotation = rotation_of(&token, SessionId::generate(), session.created_at);
        assert_eq!(
            store.rotate_refresh_token(&rotation).await.expect("rotate"),
            RotationOutcome::Lost
        );
        let (record, _) = store
            .find_refresh_token(&token.hash())
            .await
            .expect("lookup")
            .expect("present");
        assert!(record.spent_at.is_none());
    }

    #[tokio::test]
    async fn a_rotation_of_a_revoked_session_writes_nothing() {
        let (_dir, store, session, token) = store_with_session().await;
        let now = session.created_at;
        store
            .revoke_session(
                session.id,
                sessiond_core::store::Revocation {
                    at: now,
                    reason: sessiond_core::RevokeReason::RevokedByAdmin,
                },
                &|_| event("session.revoked", now),
            )
            .await
            .expect("revoke");
        let rotation = rotation_of(&token, session.id, now);
        assert_eq!(
            store.rotate_refresh_token(&rotation).await.expect("rotate"),
            RotationOutcome::Lost
        );
        let (record, _) = store
            .find_refresh_token(&token.hash())
            .await
            .expect("lookup")
            .expect("present");
        assert!(
            record.spent_at.is_none(),
            "the presented token is not spent"
        );
        assert!(
            store
                .find_refresh_token(&rotation.successor)
                .await
                .expect("lookup")
                .is_none(),
            "no successor was stored"
        );
    }

    #[tokio::test]
    async fn only_one_first_signing_key_wins_among_processes_sharing_the_file() {
        use sessiond_core::token::{SigningAlgorithm, StoredKey};
        let (dir, first, _, _) = store_with_session().await;
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let second = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .expect("second handle");
        let now = Timestamp::from_unix_millis(0);
        let (one, other) = (
            StoredKey::generate(SigningAlgorithm::EdDsa, now),
            StoredKey::generate(SigningAlgorithm::EdDsa, now),
        );
        let (a, b) = tokio::join!(
            first.insert_first_signing_key(&one),
            second.insert_first_signing_key(&other)
        );
        assert_eq!(
            u8::from(a.expect("first")) + u8::from(b.expect("second")),
            1,
            "exactly one first key"
        );
        assert_eq!(first.signing_keys().await.expect("keys").len(), 1);
    }
}
