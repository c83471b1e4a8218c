//! [`PostgresStore`]: the [`Store`] trait over a PostgreSQL database shared by several instances.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sessiond_core::audit::{
    self, AuditChain, AuditCheckpoint, AuditEntry, AuditQuery, CanonicalEntry, ChainHash,
    CheckpointFor, CheckpointKey, NewAuditEvent, SealedAuditEvent,
};
use sessiond_core::crypt::columns::{
    DEVICE_LAST_IP, DEVICE_NAME, DEVICE_USER_AGENT, KEY_SECRET, SEALED_SUCCESSOR,
    SESSION_DEVICE_NAME, SESSION_IP, SESSION_METADATA, SESSION_USER_AGENT,
};
use sessiond_core::crypt::{Cipher, CipherSlot, WrappedDataKey, device_row};
use sessiond_core::device::DeviceRecord;
use sessiond_core::event::{self, EventCursor, EventFilter, NewEvent, StoredEvent};
use sessiond_core::refresh::{RefreshTokenHash, RefreshTokenRecord};
use sessiond_core::session::{RevokeReason, Session};
use sessiond_core::store::{
    AuditFor, AuditStore, CannotWrite, DeviceStore, EncryptionStore, EventStore, KeyStore,
    ProofStore, RetireOutcome, RetiredKey, Revocation, RevocationFeed, RevokedSessionRef, Rotation,
    RotationOutcome, SessionStore, Store, StoreError, StoreStats, WriteBlock,
};
use sessiond_core::token::{SigningAlgorithm, StoredKey};
use sessiond_core::{DeviceId, SessionId, Timestamp, UserId};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{NoAnswer, store_error};
use crate::feed::{PostgresRevocationFeed, REVOCATION_CHANNEL};
use crate::migrate;
use crate::rows::{self, SESSION_COLUMN_COUNT, session_columns};

mod batch;
mod dbsc;
mod lookups;
mod rotation;

use batch::Batcher;
use rotation::Rotations;

/// A query with its parameters bound so far.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// Settings of the PostgreSQL store.
///
/// Three timeouts bound how long a request can wait on a database in trouble, each turning into
/// [`StoreError::Unavailable`]: `acquire_timeout` for a connection (including connecting),
/// `statement_timeout` for the server to run one statement (including waiting for row locks),
/// and `operation_timeout` for a whole operation as the client sees it, which also covers a
/// database that stops answering altogether (a network partition, a frozen host), where the
/// server-side timeout cannot fire.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Most connections this instance's pool opens; the token lookups keep up to eight more
    /// (see `store/lookups.rs`). Every instance has its own, so the database's
    /// `max_connections` must cover the sum over instances.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long an operation waits for a free connection (or for a new one to be established)
    /// before failing as unavailable.
    pub acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout` for every connection: a statement running (or waiting
    /// for a lock) longer than this is cancelled, and the operation fails as unavailable.
    /// Zero turns it off.
    pub statement_timeout: Duration,
    /// PostgreSQL's `idle_in_transaction_session_timeout`: the server ends a connection that sits
    /// inside a transaction this long without sending anything, so a stalled instance cannot
    /// hold row locks that other instances wait for. Zero turns it off.
    pub idle_in_transaction_timeout: Duration,
    /// The longest any single store operation may take end to end, measured by this process.
    /// Should exceed `acquire_timeout` plus `statement_timeout`, so that the more precise
    /// timeouts fire first.
    pub operation_timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(15),
        }
    }
}

/// Sessions, refresh tokens, keys and audit events in a PostgreSQL database that several
/// sessiond instances may share. Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    operation_timeout: Duration,
    /// Seals the encrypted columns once the server installs the data keys.
    cipher: std::sync::Arc<CipherSlot>,
    /// Where rotations queue to be written in batches.
    rotations: Batcher<Rotations>,
    /// The connections token lookups run on, outside the pool.
    lookups: std::sync::Arc<lookups::LookupConnections>,
}

/// How long a pooled connection may sit unused before it is checked with a ping on its next use.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// The isolation level every write transaction asks for explicitly, whatever the database's
/// default: the crate documentation's reasoning relies on READ COMMITTED's re-check of a
/// concurrently updated row.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// The lookup of a presented refresh token, its session and whether its successor is spent.
const FIND_REFRESH_TOKEN: &str = concat!(
    "SELECT ",
    session_columns!(),
    ",
            t.issued_at, t.spent_at, t.sealed_successor,
            successor.spent_at IS NOT NULL
     FROM refresh_tokens t
     JOIN sessions s ON s.id = t.session_id
     LEFT JOIN refresh_tokens successor ON successor.hash = t.successor_hash
     WHERE t.hash = $1"
);

/// Deletes the sessions `$1`, which the caller holds locked, and their refresh tokens, found by
/// walking each session's chain from its first token, each token's successor after it, by
/// primary key. `UNION` stops at a token seen before, and the session check at a successor
/// that is not the session's, whatever the rows say. The chain heads go with their sessions.
const DELETE_SESSIONS_WITH_TOKEN_CHAINS: &str = "WITH RECURSIVE chain (hash, session_id) AS (
         SELECT first_token, session_id FROM refresh_token_chains
         WHERE session_id = ANY($1::UUID[])
         UNION
         SELECT t.successor_hash, t.session_id
         FROM chain JOIN refresh_tokens t
              ON t.hash = chain.hash AND t.session_id = chain.session_id
         WHERE t.successor_hash IS NOT NULL
     ), tokens AS (
         DELETE FROM refresh_tokens t USING chain
         WHERE t.hash = chain.hash AND t.session_id = chain.session_id
     )
     DELETE FROM sessions WHERE id = ANY($1::UUID[])";

/// Serialises the operations that read or change a user's set of active sessions as a whole
/// (creation with eviction, revoking all of them), across instances. The key is a hash of the
/// schema and the user id: advisory locks are per database, and deployments in different
/// schemas have nothing to wait for. Two users sharing a hash merely wait for each other.
const LOCK_USER: &str = "SELECT pg_advisory_xact_lock(hashtextextended(
     coalesce(current_schema(), '') || '/sessiond/user/' || $1, 0))";

/// A user's active sessions at `$2`, locked so that nothing changes them until commit.
const LOCK_ACTIVE_SESSIONS: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions s
     WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.idle_expires_at > $2 AND s.expires_at > $2
     ORDER BY s.id
     FOR UPDATE"
);

const REVOKE_BY_IDS: &str = concat!(
    "UPDATE sessions AS s SET revoked_at = $1, revoke_reason = $2
     WHERE s.id = ANY($3) AND s.revoked_at IS NULL
     RETURNING ",
    session_columns!()
);

const REVOKE_ONE: &str = concat!(
    "UPDATE sessions AS s SET revoked_at = $1, revoke_reason = $2
     WHERE s.id = $3 AND s.revoked_at IS NULL
     RETURNING ",
    session_columns!()
);

/// Revokes a user's active sessions but `$4`, locking them in id order first, as every statement
/// that locks several sessions does (a batch of rotations among them), so that none of them
/// deadlocks another.
const REVOKE_ACTIVE_OF_USER: &str = concat!(
    "UPDATE sessions AS s SET revoked_at = $1, revoke_reason = $2
     WHERE s.id IN (SELECT id FROM sessions
                    WHERE user_id = $3 AND revoked_at IS NULL AND idle_expires_at > $1
                      AND expires_at > $1 AND id IS DISTINCT FROM $4
                    ORDER BY id
                    FOR UPDATE)
       AND s.revoked_at IS NULL AND s.idle_expires_at > $1 AND s.expires_at > $1
     RETURNING ",
    session_columns!()
);

const SESSION_BY_ID: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions s WHERE s.id = $1"
);

const ACTIVE_SESSIONS: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions s
     WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.idle_expires_at > $2 AND s.expires_at > $2
     ORDER BY s.last_active_at DESC, s.created_at DESC, s.id"
);

const INSERT_SESSION: &str = "
    INSERT INTO sessions (id, user_id, tenant_id, device_id, device_name, device_type, browser,
        os, ip, user_agent, claims, metadata, created_at, last_active_at, idle_expires_at,
        expires_at, access_expires_at, revoked_at, revoke_reason, dpop_jkt, expiry_check_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, NULL, NULL,
        $18, $15)";

/// Notifies the other instances of revoked sessions, one notification each, delivered when the
/// transaction commits (see [`crate::feed`] for the payload). `$1` is the channel.
const NOTIFY_REVOKED: &str = "
    SELECT pg_notify($1, r.id::TEXT || ' ' || r.revoked_at || ' ' || r.access_expires_at || ' '
                         || coalesce(current_schema(), ''))
    FROM UNNEST($2::UUID[], $3::BIGINT[], $4::BIGINT[]) AS r (id, revoked_at, access_expires_at)";

/// Appends any number of audit events in one statement, in the order given.
const INSERT_AUDIT: &str = "
    INSERT INTO audit_events (type, severity, user_id, session_id, ip, at, details)
    SELECT type, severity, user_id, session_id, ip, at, details
    FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::UUID[], $5::TEXT[], $6::BIGINT[], $7::TEXT[])
         WITH ORDINALITY AS event (type, severity, user_id, session_id, ip, at, details, position)
    ORDER BY position";

/// Appends any number of events in one statement, in the order given.
const INSERT_EVENTS: &str = "
    INSERT INTO events (type, user_id, session_id, at, data)
    SELECT type, user_id, session_id, at, data
    FROM UNNEST($1::TEXT[], $2::TEXT[], $3::UUID[], $4::BIGINT[], $5::TEXT[])
         WITH ORDINALITY AS event (type, user_id, session_id, at, data, position)
    ORDER BY position";

/// Settled events after the cursor `($1, $2)`, optionally of one user (`$3`) and of some types
/// (`$4`), in cursor order. An event is settled when its `tx` is below the oldest transaction
/// still running: it has committed, and every event that can still commit sorts after it (see
/// the events migration).
const EVENTS_AFTER: &str = "
    SELECT tx, id, type, user_id, session_id, at, data FROM events
    WHERE (tx, id) > ($1, $2)
      AND tx < pg_snapshot_xmin(pg_current_snapshot())::TEXT::BIGINT
      AND ($3::TEXT IS NULL OR user_id = $3)
      AND ($4::TEXT[] IS NULL OR type = ANY($4))
    ORDER BY tx, id
    LIMIT $5";

/// The newest settled event's cursor.
const LATEST_EVENT: &str = "
    SELECT tx, id FROM events
    WHERE tx < pg_snapshot_xmin(pg_current_snapshot())::TEXT::BIGINT
    ORDER BY tx DESC, id DESC
    LIMIT 1";

/// Serialises sealing and pruning of the audit chain across instances, keyed by the schema
/// like the other advisory locks.
const LOCK_AUDIT_CHAIN: &str = "SELECT pg_advisory_xact_lock(hashtextextended(
     coalesce(current_schema(), '') || '/sessiond/audit-chain', 0))";

/// Like [`LOCK_AUDIT_CHAIN`], but answers `false` at once when another instance holds it.
const TRY_LOCK_AUDIT_CHAIN: &str = "SELECT pg_try_advisory_xact_lock(hashtextextended(
     coalesce(current_schema(), '') || '/sessiond/audit-chain', 0))";

/// Unsealed audit events whose writing transaction is below the oldest one still running, in
/// `(tx, seq)` order, which no later commit can change (see the audit chain migration).
const UNSEALED_AUDIT: &str = "
    SELECT seq, type, severity, user_id, session_id::TEXT, ip, at, details FROM audit_events
    WHERE chain_seq IS NULL
      AND tx < pg_snapshot_xmin(pg_current_snapshot())::TEXT::BIGINT
    ORDER BY tx, seq
    LIMIT $1";

/// Seals many audit events in one statement, each found by its primary key. The arrays are
/// read through scalar subqueries so that the planner never sees how many rows a call seals
/// (see the rotation statement): a custom plan for a couple of hundred rows, on a table whose
/// statistics still call it small, joined it by hashing the whole table, read from end to end
/// at every call.
const SEAL_AUDIT: &str = "
    UPDATE audit_events SET chain_seq = sealed.chain_seq, prev_hash = sealed.prev_hash,
                            hash = sealed.hash
    FROM UNNEST((SELECT $1::BIGINT[]), (SELECT $2::BIGINT[]), (SELECT $3::BYTEA[]),
                (SELECT $4::BYTEA[]))
         AS sealed (id, chain_seq, prev_hash, hash)
    WHERE audit_events.seq = sealed.id";

/// Sealed audit events after a seq, optionally of one user (`$2`), session (`$3`), type
/// (`$4`) and from an instant (`$5`), in seq order.
const AUDIT_EVENTS: &str = "
    SELECT chain_seq, type, severity, user_id, session_id::TEXT, ip, at, details, prev_hash, hash
    FROM audit_events
    WHERE chain_seq > $1
      AND ($2::TEXT IS NULL OR user_id = $2)
      AND ($3::UUID IS NULL OR session_id = $3)
      AND ($4::TEXT IS NULL OR type = $4)
      AND ($5::BIGINT IS NULL OR at >= $5)
    ORDER BY chain_seq
    LIMIT $6";

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`,
    /// with any of libpq's query parameters, such as `options=-c search_path=sessiond` to keep
    /// sessiond's tables in a schema of their own). It does not migrate: call
    /// [`PostgresStore::migrate`] for that.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached (the connection is refused,
    /// or not established within the acquire timeout) or is starting up, shutting down or out
    /// of connections; [`StoreError::Backend`] when the URL is malformed or the server turns the
    /// connection down for good (authentication, a missing database).
    pub async fn open(url: &str, settings: &PostgresSettings) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url).map_err(store_error)?;
        if options.get_application_name().is_none() {
            options = options.application_name("sessiond");
        }
        // Appended after whatever `options` the URL carries, so these settings win. The
        // isolation level is READ COMMITTED (see the crate documentation) for the implicit
        // transaction of a single statement as much as for an explicit `BEGIN`, whatever the
        // database's default; startup options cost no round trip, unlike a `SET`. (A space in
        // a value is escaped with a backslash in startup options.)
        let options = options.options([
            (
                "default_transaction_isolation",
                String::from("read\\ committed"),
            ),
            (
                "statement_timeout",
                format!("{}ms", settings.statement_timeout.as_millis()),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}ms", settings.idle_in_transaction_timeout.as_millis()),
            ),
        ]);
        // One connection made by hand first: the pool retries a refused connection until its
        // acquire timeout and then reports only that it timed out, whereas this reports why
        // (connection refused, authentication failed, no such database) and does so at once.
        let first = tokio::time::timeout(
            settings.acquire_timeout,
            PgConnection::connect_with(&options),
        )
        .await
        .map_err(|_| StoreError::Unavailable(Box::new(NoAnswer(settings.acquire_timeout))))?
        .map_err(store_error)?;
        // Only a courtesy to the server; the connection was good, which is all that mattered.
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            // A ping before every use would add a round trip to every operation. Only a
            // connection that sat idle for a while is pinged (and replaced if it died, as all of
            // them do when the server restarts); under load connections are reused at once.
            .test_before_acquire(false)
            .before_acquire(|connection, metadata| {
                Box::pin(async move {
                    if metadata.idle_for >= PING_WHEN_IDLE_FOR {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        let cipher = std::sync::Arc::<CipherSlot>::default();
        Ok(Self {
            rotations: Rotations::start(pool.clone(), std::sync::Arc::clone(&cipher)),
            pool,
            operation_timeout: settings.operation_timeout,
            cipher,
            lookups: std::sync::Arc::default(),
        })
    }

    /// Applies the migrations the database lacks; returns how many were applied. Safe to call
    /// from several instances at once: they take turns, and each migration is applied once.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the database's schema is newer than this build knows;
    /// [`StoreError`] when a migration fails, which is then rolled back whole.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(store_error)?;
        migrate::run(&mut connection).await
    }

    /// Checks, without writing, that the schema has every migration of this build: what a
    /// command that only reads calls instead of [`PostgresStore::migrate`].
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming the first missing migration (and `sessiond migrate`) or
    /// a schema newer than this build; [`StoreError`] when the database cannot be read.
    pub async fn require_current_schema(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await.map_err(store_error)?;
        migrate::require_current(&mut connection).await
    }

    /// The revocation feed of this store: a connection of its own (taken from the pool, so it
    /// counts against `max_connections`) listening for the revocations any instance on this
    /// schema commits. It connects on its first [`RevocationFeed::next`].
    pub fn revocation_listener(&self) -> PostgresRevocationFeed {
        PostgresRevocationFeed::new(self.pool.clone(), self.operation_timeout)
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.lookups.close().await;
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin_with(BEGIN).await.map_err(store_error)
    }

    /// Runs `operation` within the operation timeout. When the timeout fires the operation is
    /// dropped: an open transaction is then rolled back, and the connection is discarded unless
    /// it answers again.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.operation_timeout, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(Box::new(NoAnswer(
                    self.operation_timeout,
                ))))
            })
    }

    async fn create_session_now(
        &self,
        session: &Session,
        first_token: &RefreshTokenHash,
        max_active: u32,
        audit: &NewAuditEvent,
        eviction_audit: AuditFor<'_>,
        new_device_audit: &NewAuditEvent,
    ) -> Result<Vec<Session>, StoreError> {
        let mut tx = self.begin().await?;
        lock_user(&mut tx, &session.user_id).await?;
        let rows = sqlx::query(LOCK_ACTIVE_SESSIONS)
            .bind(session.user_id.as_str())
            .bind(session.created_at.unix_millis())
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut active = rows::sessions(&rows, &self.cipher)?;
        // Sorted here rather than by the query: rows come back as they are after the lock, and
        // the recency of a row that was being rotated is only known then.
        active.sort_by_key(|session| (session.last_active_at, session.created_at, session.id));
        let keep = usize::try_from(max_active)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        let excess = active.len().saturating_sub(keep);
        let to_evict: Vec<Uuid> = active
            .iter()
            .take(excess)
            .map(|session| *session.id.as_uuid())
            .collect();
        let mut evicted = if to_evict.is_empty() {
            Vec::new()
        } else {
            // The rows are locked, so every one of them is still unrevoked here.
            let rows = sqlx::query(REVOKE_BY_IDS)
                .bind(session.created_at.unix_millis())
                .bind(RevokeReason::SessionLimit.as_str())
                .bind(&to_evict)
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
            rows::sessions(&rows, &self.cipher)?
        };
        evicted.sort_by_key(|session| (session.last_active_at, session.created_at, session.id));

        let id = session.id.as_uuid().to_string();
        let seal = |column: &str, text: Option<&str>| {
            self.cipher.seal_optional_text(column, id.as_bytes(), text)
        };
        sqlx::query(INSERT_SESSION)
            .bind(session.id.as_uuid())
            .bind(session.user_id.as_str())
            .bind(session.tenant_id.as_ref().map(|tenant| tenant.as_str()))
            .bind(session.device.id.as_str())
            .bind(seal(SESSION_DEVICE_NAME, session.device.name.as_deref()))
            .bind(session.device.device_type.as_str())
            .bind(session.device.browser.as_deref())
            .bind(session.device.os.as_deref())
            .bind(seal(SESSION_IP, session.ip.as_deref()))
            .bind(seal(SESSION_USER_AGENT, session.user_agent.as_deref()))
            .bind(rows::json_text(&session.claims)?)
            .bind(self.cipher.seal_text(
                SESSION_METADATA,
                id.as_bytes(),
                &rows::json_text(&session.metadata)?,
            ))
            .bind(session.created_at.unix_millis())
            .bind(session.last_active_at.unix_millis())
            .bind(session.idle_expires_at.unix_millis())
            .bind(session.expires_at.unix_millis())
            .bind(session.access_expires_at.unix_millis())
            .bind(session.dpop_jkt.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(
            "WITH token AS (
                 INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)
             )
             INSERT INTO refresh_token_chains (session_id, first_token) VALUES ($2, $1)",
        )
        .bind(&first_token.0[..])
        .bind(session.id.as_uuid())
        .bind(session.created_at.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut events: Vec<NewAuditEvent> = evicted.iter().map(&**eviction_audit).collect();
        events.push(audit.clone());
        if record_device(&mut tx, &self.cipher, session).await? {
            events.push(new_device_audit.clone());
        }
        insert_audit(&self.cipher, &mut tx, &events).await?;
        notify_revoked(&mut tx, &evicted).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(evicted)
    }

    async fn revoke_session_now(
        &self,
        id: SessionId,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Option<(Session, bool)>, StoreError> {
        let mut tx = self.begin().await?;
        // The row lock of the UPDATE makes a second revoker wait, then re-check
        // `revoked_at IS NULL` against the first one's commit and match nothing: one audit event.
        let row = sqlx::query(REVOKE_ONE)
            .bind(revocation.at.unix_millis())
            .bind(revocation.reason.as_str())
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let outcome = match row {
            Some(row) => {
                let session = rows::session(&row, 0, &self.cipher)?;
                insert_audit(&self.cipher, &mut tx, &[audit(&session)]).await?;
                notify_revoked(&mut tx, std::slice::from_ref(&session)).await?;
                Some((session, true))
            }
            // Absent or already revoked; a fresh snapshot shows which, and by whom.
            None => session_by_id(&mut tx, &self.cipher, id)
                .await?
                .map(|session| (session, false)),
        };
        tx.commit().await.map_err(store_error)?;
        Ok(outcome)
    }

    async fn revoke_user_sessions_now(
        &self,
        user: &UserId,
        except: Option<SessionId>,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Vec<Session>, StoreError> {
        let mut tx = self.begin().await?;
        lock_user(&mut tx, user).await?;
        let rows = sqlx::query(REVOKE_ACTIVE_OF_USER)
            .bind(revocation.at.unix_millis())
            .bind(revocation.reason.as_str())
            .bind(user.as_str())
            .bind(except.map(|id| *id.as_uuid()))
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut revoked = rows::sessions(&rows, &self.cipher)?;
        revoked.sort_by_key(|session| {
            std::cmp::Reverse((session.last_active_at, session.created_at, session.id))
        });
        let events: Vec<NewAuditEvent> = revoked.iter().map(&**audit).collect();
        insert_audit(&self.cipher, &mut tx, &events).await?;
        notify_revoked(&mut tx, &revoked).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(revoked)
    }
}

async fn lock_user(connection: &mut PgConnection, user: &UserId) -> Result<(), StoreError> {
    sqlx::query(LOCK_USER)
        .bind(user.as_str())
        .execute(connection)
        .await
        .map_err(store_error)?;
    Ok(())
}

async fn session_by_id(
    connection: &mut PgConnection,
    cipher: &CipherSlot,
    id: SessionId,
) -> Result<Option<Session>, StoreError> {
    let row = sqlx::query(SESSION_BY_ID)
        .bind(id.as_uuid())
        .fetch_optional(connection)
        .await
        .map_err(store_error)?;
    row.map(|row| rows::session(&row, 0, cipher)).transpose()
}

/// Adds or refreshes `session`'s device in its user's registry; `true` when the device is new
/// to the user. The caller holds the user's advisory lock, so two sessions created at once
/// from one new device announce it once.
async fn record_device(
    connection: &mut PgConnection,
    cipher: &CipherSlot,
    session: &Session,
) -> Result<bool, StoreError> {
    let key = device_row(session.user_id.as_str(), session.device.id.as_str());
    let seal = |column: &str, text: Option<&str>| cipher.seal_optional_text(column, &key, text);
    let row = sqlx::query(
        "INSERT INTO devices AS d (user_id, device_id, name, device_type, browser, os,
             user_agent, last_ip, first_seen_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
             name = COALESCE(excluded.name, d.name),
             device_type = excluded.device_type, browser = excluded.browser, os = excluded.os,
             user_agent = excluded.user_agent, last_ip = COALESCE(excluded.last_ip, d.last_ip),
             last_seen_at = GREATEST(d.last_seen_at, excluded.last_seen_at)
         RETURNING (xmax = 0) AS inserted",
    )
    .bind(session.user_id.as_str())
    .bind(session.device.id.as_str())
    .bind(seal(DEVICE_NAME, session.device.name.as_deref()))
    .bind(session.device.device_type.as_str())
    .bind(session.device.browser.as_deref())
    .bind(session.device.os.as_deref())
    .bind(seal(DEVICE_USER_AGENT, session.user_agent.as_deref()))
    .bind(seal(DEVICE_LAST_IP, session.ip.as_deref()))
    .bind(session.created_at.unix_millis())
    .fetch_one(connection)
    .await
    .map_err(store_error)?;
    row.try_get("inserted").map_err(store_error)
}

/// Queues a notification for each of `revoked`, sent by PostgreSQL only if the transaction
/// commits.
async fn notify_revoked(
    connection: &mut PgConnection,
    revoked: &[Session],
) -> Result<(), StoreError> {
    if revoked.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = revoked
        .iter()
        .map(|session| *session.id.as_uuid())
        .collect();
    let revoked_ats: Vec<i64> = revoked
        .iter()
        .map(|session| {
            session
                .revoked_at
                .unwrap_or(session.created_at)
                .unix_millis()
        })
        .collect();
    let access_expiries: Vec<i64> = revoked
        .iter()
        .map(|session| session.access_expires_at.unix_millis())
        .collect();
    sqlx::query(NOTIFY_REVOKED)
        .bind(REVOCATION_CHANNEL)
        .bind(&ids)
        .bind(&revoked_ats)
        .bind(&access_expiries)
        .execute(connection)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// Audit events as the parallel arrays [`INSERT_AUDIT`] and the rotation statement
/// (`store/rotation.rs`) unnest, in order.
struct AuditColumns<'a> {
    kinds: Vec<&'static str>,
    severities: Vec<&'static str>,
    users: Vec<Option<&'a str>>,
    sessions: Vec<Option<Uuid>>,
    /// Sealed under the data key once a cipher is installed (see [`audit::AuditEntry::ip_row`]).
    ips: Vec<Option<String>>,
    ats: Vec<i64>,
    details: Vec<String>,
}

impl<'a> AuditColumns<'a> {
    fn of(events: impl ExactSizeIterator<Item = &'a NewAuditEvent>, cipher: &CipherSlot) -> Self {
        let count = events.len();
        let mut columns = Self {
            kinds: Vec::with_capacity(count),
            severities: Vec::with_capacity(count),
            users: Vec::with_capacity(count),
            sessions: Vec::with_capacity(count),
            ips: Vec::with_capacity(count),
            ats: Vec::with_capacity(count),
            details: Vec::with_capacity(count),
        };
        for event in events {
            columns.kinds.push(event.kind);
            columns.severities.push(event.severity.as_str());
            columns
                .users
                .push(event.user_id.as_ref().map(UserId::as_str));
            columns
                .sessions
                .push(event.session_id.map(|id| *id.as_uuid()));
            let entry = CanonicalEntry::of(event);
            columns
                .ips
                .push(cipher.seal_audit_ip(&entry, event.ip.as_deref()));
            columns.ats.push(event.at.unix_millis());
            columns.details.push(entry.into_entry().details);
        }
        columns
    }

    /// Binds the seven arrays as the query's next parameters.
    fn bind_to<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.kinds)
            .bind(&self.severities)
            .bind(&self.users)
            .bind(&self.sessions)
            .bind(&self.ips)
            .bind(&self.ats)
            .bind(&self.details)
    }
}

/// Events as the parallel arrays [`INSERT_EVENTS`] and the rotation statement
/// (`store/rotation.rs`) unnest, in order.
struct EventColumns<'a> {
    kinds: Vec<&'static str>,
    users: Vec<&'a str>,
    sessions: Vec<Option<Uuid>>,
    ats: Vec<i64>,
    data: Vec<String>,
}

impl<'a> EventColumns<'a> {
    fn of(events: impl ExactSizeIterator<Item = &'a NewEvent>) -> Result<Self, StoreError> {
        let count = events.len();
        let mut columns = Self {
            kinds: Vec::with_capacity(count),
            users: Vec::with_capacity(count),
            sessions: Vec::with_capacity(count),
            ats: Vec::with_capacity(count),
            data: Vec::with_capacity(count),
        };
        for event in events {
            columns.kinds.push(event.kind);
            columns.users.push(event.user_id.as_str());
            columns
                .sessions
                .push(event.session_id.map(|id| *id.as_uuid()));
            columns.ats.push(event.at.unix_millis());
            columns.data.push(rows::json_text(&event.data)?);
        }
        Ok(columns)
    }

    /// Binds the five arrays as the query's next parameters.
    fn bind_to<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.kinds)
            .bind(&self.users)
            .bind(&self.sessions)
            .bind(&self.ats)
            .bind(&self.data)
    }
}

async fn insert_audit(
    cipher: &CipherSlot,
    connection: &mut PgConnection,
    events: &[NewAuditEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let columns = AuditColumns::of(events.iter(), cipher);
    columns
        .bind_to(sqlx::query(INSERT_AUDIT))
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
    let published: Vec<NewEvent> = events.iter().flat_map(event::events_of_audit).collect();
    insert_events(connection, &published).await
}

async fn insert_events(
    connection: &mut PgConnection,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let columns = EventColumns::of(events.iter())?;
    columns
        .bind_to(sqlx::query(INSERT_EVENTS))
        .execute(connection)
        .await
        .map_err(store_error)?;
    Ok(())
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.try_get(2).map_err(store_error)?;
    let data: String = row.try_get(6).map_err(store_error)?;
    Ok(StoredEvent {
        cursor: EventCursor {
            epoch: row.try_get(0).map_err(store_error)?,
            sequence: row.try_get(1).map_err(store_error)?,
        },
        kind: event::event_type(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event type {kind:?}")))?,
        user_id: UserId::from_trusted(row.try_get(3).map_err(store_error)?),
        session_id: row
            .try_get::<Option<Uuid>, _>(4)
            .map_err(store_error)?
            .map(SessionId::from_uuid),
        at: rows::timestamp(row, 5)?,
        data: match serde_json::from_str(&data) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(StoreError::Corrupt(
                    "event data is not a JSON object".into(),
                ));
            }
        },
    })
}

/// The only place a signing key's secret is turned into what is stored: sealed under the data
/// key with the `kid` as the row, once a cipher is installed.
fn seal_key_material(cipher: &CipherSlot, key: &StoredKey) -> Zeroizing<Vec<u8>> {
    cipher.seal_bytes(KEY_SECRET, key.kid.as_bytes(), &key.secret)
}

/// The inverse of [`seal_key_material`]: the secret of the key `kid` from what is stored (a
/// secret stored before encryption existed is read as it is).
fn open_key_material(
    cipher: &CipherSlot,
    kid: &str,
    stored: Vec<u8>,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    Ok(cipher.open_bytes(KEY_SECRET, kid.as_bytes(), stored)?)
}

/// Reads an [`AuditEntry`] from the seven columns starting at `offset`: type, severity,
/// user_id, session_id (as text), ip, at, details.
fn audit_entry(row: &PgRow, offset: usize) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        kind: row.try_get(offset).map_err(store_error)?,
        severity: row.try_get(offset + 1).map_err(store_error)?,
        user_id: row.try_get(offset + 2).map_err(store_error)?,
        session_id: row.try_get(offset + 3).map_err(store_error)?,
        ip: row.try_get(offset + 4).map_err(store_error)?,
        at: rows::timestamp(row, offset + 5)?,
        details: row.try_get(offset + 6).map_err(store_error)?,
    })
}

fn chain_hash_of(bytes: &[u8], column: &str) -> Result<ChainHash, StoreError> {
    ChainHash::try_from(bytes)
        .map_err(|_| StoreError::Corrupt(format!("audit {column} is not 32 bytes")))
}

fn chain_seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("audit seq is negative".into()))
}

fn stored_seq(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt("audit seq is out of range".into()))
}

fn sealed_audit_event(row: &PgRow) -> Result<SealedAuditEvent, StoreError> {
    let prev_hash: Vec<u8> = row.try_get(8).map_err(store_error)?;
    let hash: Vec<u8> = row.try_get(9).map_err(store_error)?;
    Ok(SealedAuditEvent {
        seq: chain_seq(row.try_get(0).map_err(store_error)?)?,
        entry: audit_entry(row, 1)?,
        prev_hash: chain_hash_of(&prev_hash, "prev_hash")?,
        hash: chain_hash_of(&hash, "hash")?,
    })
}

async fn audit_head(connection: &mut PgConnection) -> Result<(u64, ChainHash), StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *connection)
        .await
        .map_err(store_error)?;
    let hash: Vec<u8> = row.try_get(1).map_err(store_error)?;
    Ok((
        chain_seq(row.try_get(0).map_err(store_error)?)?,
        chain_hash_of(&hash, "head hash")?,
    ))
}

fn key_from_row(row: &PgRow, cipher: &CipherSlot) -> Result<StoredKey, StoreError> {
    let algorithm: String = row.try_get("algorithm").map_err(store_error)?;
    let kid: String = row.try_get("kid").map_err(store_error)?;
    let deactivated_at: Option<i64> = row.try_get("deactivated_at").map_err(store_error)?;
    Ok(StoredKey {
        algorithm: SigningAlgorithm::from_jose_name(&algorithm)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key algorithm {algorithm}")))?,
        secret: open_key_material(cipher, &kid, row.try_get("secret").map_err(store_error)?)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(store_error)?),
        signs_from: Timestamp::from_unix_millis(row.try_get("signs_from").map_err(store_error)?),
        deactivated_at: deactivated_at.map(Timestamp::from_unix_millis),
        kid,
    })
}

/// Serialises changes to the signing keys across instances for the rest of the transaction
/// (READ COMMITTED would otherwise let two of them both see the same active key). Keyed by
/// schema, like the per-user lock.
const LOCK_SIGNING_KEYS: &str = "SELECT pg_advisory_xact_lock(hashtextextended(
     'sessiond/signing-keys/' || current_schema(), 0))";

/// The active key, whatever its algorithm (the newest one not deactivated).
async fn active_kid(connection: &mut PgConnection) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT kid FROM signing_keys WHERE deactivated_at IS NULL AND retired_at IS NULL
         ORDER BY created_at DESC, kid DESC LIMIT 1",
    )
    .fetch_optional(connection)
    .await
    .map_err(store_error)
}

/// A retired key's row: kid, algorithm, created_at, signs_from, deactivated_at, retired_at.
type RetiredRow = (String, String, i64, i64, Option<i64>, i64);

fn retired_key(row: RetiredRow) -> Result<RetiredKey, StoreError> {
    let (kid, algorithm, created_at, signs_from, deactivated_at, retired_at) = row;
    Ok(RetiredKey {
        algorithm: SigningAlgorithm::from_jose_name(&algorithm)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key algorithm {algorithm}")))?,
        kid,
        created_at: Timestamp::from_unix_millis(created_at),
        signs_from: Timestamp::from_unix_millis(signs_from),
        deactivated_at: deactivated_at.map(Timestamp::from_unix_millis),
        retired_at: Timestamp::from_unix_millis(retired_at),
    })
}

async fn insert_key(
    connection: &mut PgConnection,
    cipher: &CipherSlot,
    key: &StoredKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, deactivated_at, signs_from)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.kid)
    .bind(key.algorithm.jose_name())
    .bind(&seal_key_material(cipher, key)[..])
    .bind(key.created_at.unix_millis())
    .bind(key.deactivated_at.map(Timestamp::unix_millis))
    .bind(key.signs_from.unix_millis())
    .execute(connection)
    .await
    .map_err(store_error)?;
    Ok(())
}

fn revoked_ref_from_row(row: &PgRow) -> Result<RevokedSessionRef, StoreError> {
    Ok(RevokedSessionRef {
        id: SessionId::from_uuid(row.try_get(0).map_err(store_error)?),
        revoked_at: rows::timestamp(row, 1)?,
        access_expires_at: rows::timestamp(row, 2)?,
    })
}

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT d.user_id, d.device_id, d.name, d.device_type, d.browser, d.os, d.trusted,
                        d.user_agent, d.last_ip, d.first_seen_at,
                        GREATEST(d.last_seen_at, (SELECT MAX(s.last_active_at) FROM sessions s
                            WHERE s.user_id = d.user_id AND s.device_id = d.device_id)) AS seen
                 FROM devices d WHERE d.user_id = $1
                 ORDER BY seen DESC, d.device_id",
            )
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
            rows.iter()
                .map(|row| rows::device(row, &self.cipher))
                .collect()
        })
        .await
    }

    async fn set_device_trusted(
        &self,
        user: &UserId,
        device: &DeviceId,
        trusted: bool,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            let changed = sqlx::query(
                "UPDATE devices SET trusted = $1 WHERE user_id = $2 AND device_id = $3",
            )
            .bind(trusted)
            .bind(user.as_str())
            .bind(device.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            if changed == 0 {
                tx.rollback().await.map_err(store_error)?;
                return Ok(false);
            }
            insert_audit(&self.cipher, &mut tx, std::slice::from_ref(audit)).await?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    async fn forget_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        revocation: Revocation,
        audit: &NewAuditEvent,
        revoke_audit: AuditFor<'_>,
    ) -> Result<Option<Vec<Session>>, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // The user's lock orders this against session creation, which re-adds the device.
            lock_user(&mut tx, user).await?;
            let deleted = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user.as_str())
                .bind(device.as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            if deleted == 0 {
                tx.rollback().await.map_err(store_error)?;
                return Ok(None);
            }
            let rows = sqlx::query(concat!(
                "UPDATE sessions AS s SET revoked_at = $1, revoke_reason = $2
                 WHERE s.id IN (SELECT id FROM sessions
                                WHERE user_id = $3 AND device_id = $4 AND revoked_at IS NULL
                                  AND idle_expires_at > $1 AND expires_at > $1
                                ORDER BY id
                                FOR UPDATE)
                   AND s.revoked_at IS NULL AND s.idle_expires_at > $1 AND s.expires_at > $1
                 RETURNING ",
                session_columns!()
            ))
            .bind(revocation.at.unix_millis())
            .bind(revocation.reason.as_str())
            .bind(user.as_str())
            .bind(device.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
            let revoked = rows::sessions(&rows, &self.cipher)?;
            let mut events = vec![audit.clone()];
            events.extend(revoked.iter().map(&**revoke_audit));
            insert_audit(&self.cipher, &mut tx, &events).await?;
            notify_revoked(&mut tx, &revoked).await?;
            tx.commit().await.map_err(store_error)?;
            Ok(Some(revoked))
        })
        .await
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(
        &self,
        session: &Session,
        first_token: &RefreshTokenHash,
        max_active: u32,
        audit: &NewAuditEvent,
        eviction_audit: AuditFor<'_>,
        new_device_audit: &NewAuditEvent,
    ) -> Result<Vec<Session>, StoreError> {
        self.bounded(self.create_session_now(
            session,
            first_token,
            max_active,
            audit,
            eviction_audit,
            new_device_audit,
        ))
        .await
    }

    async fn find_refresh_token(
        &self,
        hash: &RefreshTokenHash,
    ) -> Result<Option<(RefreshTokenRecord, Session)>, StoreError> {
        self.bounded(async {
            let query = sqlx::query(FIND_REFRESH_TOKEN).bind(&hash.0[..]);
            // On a lookup connection when one is free (see `lookups`), else on the pool.
            let row = match self.lookups.take(&self.pool).await? {
                Some(mut parked) => {
                    let row = query
                        .fetch_optional(&mut parked.connection)
                        .await
                        .map_err(store_error)?;
                    self.lookups.park(parked);
                    row
                }
                None => query
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?,
            };
            let Some(row) = row else {
                return Ok(None);
            };
            let session = rows::session(&row, 0, &self.cipher)?;
            let base = SESSION_COLUMN_COUNT;
            let record = RefreshTokenRecord {
                hash: *hash,
                issued_at: rows::timestamp(&row, base)?,
                spent_at: rows::optional_timestamp(&row, base + 1)?,
                sealed_successor: row
                    .try_get::<Option<Vec<u8>>, _>(base + 2)
                    .map_err(store_error)?
                    // A value that does not open is given as empty, which opens under no
                    // token (see `RefreshTokenRecord::sealed_successor`).
                    .map(|stored| {
                        self.cipher
                            .open_bytes(SEALED_SUCCESSOR, &hash.0, stored)
                            .map(|inner| inner.to_vec())
                            .unwrap_or_default()
                    }),
                successor_spent: row.try_get(base + 3).map_err(store_error)?,
            };
            Ok(Some((record, session)))
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<RotationOutcome, StoreError> {
        // The proof is recorded in a statement of its own before the rotation joins a batch, so
        // it stays recorded whatever the rotation comes to, as the contract asks.
        if let Some(replay) = &rotation.proof
            && !self
                .remember_dpop_proof(&replay.id, replay.until, rotation.now)
                .await?
        {
            return Ok(RotationOutcome::ProofReplayed);
        }
        self.bounded(self.rotations.rotate(&self.cipher, rotation))
            .await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Option<(Session, bool)>, StoreError> {
        self.bounded(self.revoke_session_now(id, revocation, audit))
            .await
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        except: Option<SessionId>,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Vec<Session>, StoreError> {
        self.bounded(self.revoke_user_sessions_now(user, except, revocation, audit))
            .await
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.bounded(async {
            let mut connection = self.pool.acquire().await.map_err(store_error)?;
            session_by_id(&mut connection, &self.cipher, id).await
        })
        .await
    }

    async fn active_sessions(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(ACTIVE_SESSIONS)
                .bind(user.as_str())
                .bind(now.unix_millis())
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
            rows::sessions(&rows, &self.cipher)
        })
        .await
    }

    async fn revoked_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<RevokedSessionRef>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT id, revoked_at, access_expires_at FROM sessions
                 WHERE revoked_at >= $1 AND access_expires_at > $2",
            )
            .bind(since.unix_millis())
            .bind(now.unix_millis())
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
            rows.iter().map(revoked_ref_from_row).collect()
        })
        .await
    }

    async fn purge(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // `SKIP LOCKED` lets purgers on several instances take disjoint batches instead of
            // queueing behind one another, and never waits, so the rows need no locking order.
            // The sessions are locked before their tokens are read, by a statement of their
            // own: the next one's snapshot then holds every token a rotation of them committed,
            // and no rotation of them commits until this transaction has.
            let doomed: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM sessions
                 WHERE access_expires_at < $2
                   AND (revoked_at < $1
                        OR (revoked_at IS NULL AND NOT expiry_announced
                            AND expiry_check_at < $1 AND idle_expires_at < $1)
                        OR (revoked_at IS NULL AND expiry_announced
                            AND expiry_check_at < $1 AND idle_expires_at < $1))
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(cutoff.unix_millis())
            .bind(now.unix_millis())
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
            if doomed.is_empty() {
                return Ok(0);
            }
            let deleted = sqlx::query(DELETE_SESSIONS_WITH_TOKEN_CHAINS)
                .bind(&doomed)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            Ok(deleted.rows_affected())
        })
        .await
    }

    async fn purge_successor_pairs(
        &self,
        spent_before: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.bounded(async {
            // A rotation never writes a spent token again, so the rows cleared here are ones
            // no rotation holds; `SKIP LOCKED` lets purgers on several instances share them.
            let cleared = sqlx::query(
                "UPDATE refresh_tokens SET sealed_successor = NULL
                 WHERE hash IN (
                     SELECT hash FROM refresh_tokens
                     WHERE sealed_successor IS NOT NULL AND spent_at < $1
                     ORDER BY spent_at
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)",
            )
            .bind(spent_before.unix_millis())
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
            Ok(cleared.rows_affected())
        })
        .await
    }

    async fn announce_expired(
        &self,
        now: Timestamp,
        batch: u32,
        audit: AuditFor<'_>,
    ) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // Sessions due a look that were refreshed since are looked at again at their idle
            // expiry; the ones left due have expired. `SKIP LOCKED`: a row another transaction
            // holds is left for the next pass rather than waited for.
            sqlx::query(
                "UPDATE sessions SET expiry_check_at = idle_expires_at
                 WHERE id IN (SELECT id FROM sessions
                              WHERE revoked_at IS NULL AND NOT expiry_announced
                                AND expiry_check_at <= $1 AND idle_expires_at > $1
                              FOR UPDATE SKIP LOCKED)",
            )
            .bind(now.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            // `SKIP LOCKED` gives announcers on several instances disjoint batches; the row
            // locks last until the commit, so no session is announced twice.
            let rows = sqlx::query(concat!(
                "UPDATE sessions AS s SET expiry_announced = TRUE
                 WHERE s.id IN (SELECT id FROM sessions
                                WHERE revoked_at IS NULL AND NOT expiry_announced
                                  AND expiry_check_at <= $1 AND idle_expires_at <= $1
                                LIMIT $2
                                FOR UPDATE SKIP LOCKED)
                   AND s.revoked_at IS NULL
                 RETURNING ",
                session_columns!()
            ))
            .bind(now.unix_millis())
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
            let expired = rows::sessions(&rows, &self.cipher)?;
            let events: Vec<NewAuditEvent> = expired.iter().map(&**audit).collect();
            insert_audit(&self.cipher, &mut tx, &events).await?;
            tx.commit().await.map_err(store_error)?;
            Ok(expired.len() as u64)
        })
        .await
    }

    async fn stats(&self, now: Timestamp) -> Result<StoreStats, StoreError> {
        self.bounded(async {
            let row = sqlx::query(
                "SELECT COUNT(*),
                        COUNT(DISTINCT (user_id, device_id)),
                        COALESCE(AVG(last_active_at - created_at), 0)::float8
                 FROM sessions
                 WHERE revoked_at IS NULL AND idle_expires_at > $1 AND expires_at > $1",
            )
            .bind(now.unix_millis())
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
            let active_sessions: i64 = row.try_get(0).map_err(store_error)?;
            let active_devices: i64 = row.try_get(1).map_err(store_error)?;
            let average: f64 = row.try_get(2).map_err(store_error)?;
            Ok(StoreStats {
                active_sessions: u64::try_from(active_sessions).unwrap_or(0),
                active_devices: u64::try_from(active_devices).unwrap_or(0),
                average_session_duration_ms: average,
            })
        })
        .await
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT kid, algorithm, secret, created_at, deactivated_at,
                 coalesce(signs_from, created_at) AS signs_from
                 FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at, kid",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
            rows.iter()
                .map(|row| key_from_row(row, &self.cipher))
                .collect()
        })
        .await
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.bounded(async {
            let mut connection = self.pool.acquire().await.map_err(store_error)?;
            insert_key(&mut connection, &self.cipher, key).await
        })
        .await
    }

    async fn insert_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            sqlx::query(LOCK_SIGNING_KEYS)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            if active_kid(&mut tx).await?.is_some() {
                return Ok(false);
            }
            insert_key(&mut tx, &self.cipher, key).await?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    async fn signing_keys_version(&self) -> Result<i64, StoreError> {
        self.bounded(async {
            sqlx::query_scalar("SELECT version FROM signing_keys_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)
        })
        .await
    }

    async fn rotate_signing_key(
        &self,
        key: &StoredKey,
        replaces: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            sqlx::query(LOCK_SIGNING_KEYS)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            if active_kid(&mut tx).await?.as_deref() != replaces {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE signing_keys SET deactivated_at = $1
                 WHERE retired_at IS NULL AND (deactivated_at IS NULL OR deactivated_at > $1)",
            )
            .bind(key.signs_from.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            insert_key(
                &mut tx,
                &self.cipher,
                &StoredKey {
                    deactivated_at: None,
                    ..key.clone()
                },
            )
            .await?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    async fn retire_signing_key(
        &self,
        kid: &str,
        now: Timestamp,
    ) -> Result<RetireOutcome, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            sqlx::query(LOCK_SIGNING_KEYS)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            let found: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
                "SELECT deactivated_at, retired_at FROM signing_keys WHERE kid = $1",
            )
            .bind(kid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
            let outcome = match found {
                None => RetireOutcome::NotFound,
                Some((_, Some(_))) => RetireOutcome::AlreadyRetired,
                Some((None, None)) => RetireOutcome::Active,
                Some((Some(until), None)) if until > now.unix_millis() => RetireOutcome::Active,
                Some((Some(_), None)) => {
                    sqlx::query(
                        "UPDATE signing_keys SET retired_at = $2, secret = ''::bytea
                         WHERE kid = $1",
                    )
                    .bind(kid)
                    .bind(now.unix_millis())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                    RetireOutcome::Retired
                }
            };
            tx.commit().await.map_err(store_error)?;
            Ok(outcome)
        })
        .await
    }

    async fn retire_signing_keys_deactivated_before(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        self.bounded(async {
            sqlx::query_scalar(
                "UPDATE signing_keys SET retired_at = $2, secret = ''::bytea
                 WHERE deactivated_at < $1 AND retired_at IS NULL RETURNING kid",
            )
            .bind(cutoff.unix_millis())
            .bind(now.unix_millis())
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)
        })
        .await
    }

    async fn retired_signing_keys(&self) -> Result<Vec<RetiredKey>, StoreError> {
        self.bounded(async {
            let rows: Vec<RetiredRow> = sqlx::query_as(
                "SELECT kid, algorithm, created_at, coalesce(signs_from, created_at),
                 deactivated_at, retired_at
                 FROM signing_keys WHERE retired_at IS NOT NULL ORDER BY created_at, kid",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
            rows.into_iter().map(retired_key).collect()
        })
        .await
    }

    async fn purge_retired_signing_keys(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        self.bounded(async {
            let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at < $1")
                .bind(cutoff.unix_millis())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
            Ok(done.rows_affected())
        })
        .await
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn events_after(
        &self,
        after: EventCursor,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(EVENTS_AFTER)
                .bind(after.epoch)
                .bind(after.sequence)
                .bind(filter.user_id.as_ref().map(UserId::as_str))
                .bind(filter.kinds.as_deref())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
            rows.iter().map(event_from_row).collect()
        })
        .await
    }

    async fn latest_event_cursor(&self) -> Result<EventCursor, StoreError> {
        self.bounded(async {
            let row = sqlx::query(LATEST_EVENT)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
            match row {
                Some(row) => Ok(EventCursor {
                    epoch: row.try_get(0).map_err(store_error)?,
                    sequence: row.try_get(1).map_err(store_error)?,
                }),
                None => Ok(EventCursor::START),
            }
        })
        .await
    }

    async fn purge_events(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError> {
        self.bounded(async {
            let deleted = sqlx::query(
                "DELETE FROM events WHERE id IN (
                     SELECT id FROM events WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before.unix_millis())
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
            Ok(deleted.rows_affected())
        })
        .await
    }
}

#[async_trait]
impl ProofStore for PostgresStore {
    async fn remember_dpop_proof(
        &self,
        replay_id: &[u8; 32],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            // The primary key decides between instances: a second insert of one id waits for
            // the first to commit, then takes the conflict branch, whose update happens only
            // when the record it found has expired.
            let recorded = sqlx::query(
                "INSERT INTO dpop_proofs (replay_id, expires_at) VALUES ($1, $2)
                 ON CONFLICT (replay_id) DO UPDATE SET expires_at = excluded.expires_at
                 WHERE dpop_proofs.expires_at <= $3",
            )
            .bind(&replay_id[..])
            .bind(until.unix_millis())
            .bind(now.unix_millis())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
            Ok(recorded.rows_affected() == 1)
        })
        .await
    }

    async fn purge_dpop_proofs(&self, now: Timestamp, batch: u32) -> Result<u64, StoreError> {
        self.bounded(async {
            let deleted = sqlx::query(
                "DELETE FROM dpop_proofs WHERE replay_id IN (
                     SELECT replay_id FROM dpop_proofs WHERE expires_at <= $1
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(now.unix_millis())
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
            Ok(deleted.rows_affected())
        })
        .await
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
        self.bounded(async {
            let mut connection = self.pool.acquire().await.map_err(store_error)?;
            // One statement for all of them, so they are appended together or not at all.
            insert_audit(&self.cipher, &mut connection, events).await
        })
        .await
    }

    async fn seal_audit(&self, batch: u32) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            let locked: bool = sqlx::query(TRY_LOCK_AUDIT_CHAIN)
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?
                .try_get(0)
                .map_err(store_error)?;
            if !locked {
                // Another instance is sealing; it will seal these too.
                tx.rollback().await.map_err(store_error)?;
                return Ok(0);
            }
            let (mut seq, mut prev_hash) = audit_head(&mut tx).await?;
            let rows = sqlx::query(UNSEALED_AUDIT)
                .bind(i64::from(batch))
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
            if rows.is_empty() {
                // Ended now rather than when the connection is next used, so the lock goes.
                tx.rollback().await.map_err(store_error)?;
                return Ok(0);
            }
            let mut ids = Vec::with_capacity(rows.len());
            let mut seqs = Vec::with_capacity(rows.len());
            let mut prev_hashes = Vec::with_capacity(rows.len());
            let mut hashes = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: i64 = row.try_get(0).map_err(store_error)?;
                let entry = audit_entry(row, 1)?;
                seq += 1;
                let hash = audit::chain_hash(seq, &prev_hash, &entry);
                ids.push(id);
                seqs.push(stored_seq(seq)?);
                prev_hashes.push(prev_hash.to_vec());
                hashes.push(hash.to_vec());
                prev_hash = hash;
            }
            sqlx::query(SEAL_AUDIT)
                .bind(&ids)
                .bind(&seqs)
                .bind(&prev_hashes)
                .bind(&hashes)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(stored_seq(seq)?)
                .bind(&prev_hash[..])
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            Ok(rows.len() as u64)
        })
        .await
    }

    async fn audit_events(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<SealedAuditEvent>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(AUDIT_EVENTS)
                // No event's seq exceeds `i64::MAX`, so after a larger one there is none.
                .bind(i64::try_from(query.after_seq).unwrap_or(i64::MAX))
                .bind(query.user_id.as_ref().map(UserId::as_str))
                .bind(query.session_id.map(|id| *id.as_uuid()))
                .bind(query.kind.as_deref())
                .bind(query.since.map(Timestamp::unix_millis))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
            rows.iter().map(sealed_audit_event).collect()
        })
        .await
    }

    async fn audit_chain(&self) -> Result<AuditChain, StoreError> {
        self.bounded(async {
            // One statement, so head and checkpoint are of one snapshot.
            let row = sqlx::query(
                "SELECT h.seq, h.hash, c.seq, c.hash, c.at, c.mac
                 FROM audit_head h LEFT JOIN audit_checkpoint c ON c.id = 1
                 WHERE h.id = 1",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
            let head_hash: Vec<u8> = row.try_get(1).map_err(store_error)?;
            let checkpoint_seq: Option<i64> = row.try_get(2).map_err(store_error)?;
            let checkpoint = match checkpoint_seq {
                None => None,
                Some(seq) => {
                    let hash: Vec<u8> = row.try_get(3).map_err(store_error)?;
                    let mac: Vec<u8> = row.try_get(5).map_err(store_error)?;
                    Some(AuditCheckpoint {
                        seq: chain_seq(seq)?,
                        hash: chain_hash_of(&hash, "checkpoint hash")?,
                        at: rows::timestamp(&row, 4)?,
                        mac: chain_hash_of(&mac, "checkpoint mac")?,
                    })
                }
            };
            Ok(AuditChain {
                head_seq: chain_seq(row.try_get(0).map_err(store_error)?)?,
                head_hash: chain_hash_of(&head_hash, "head hash")?,
                checkpoint,
            })
        })
        .await
    }

    async fn prune_audit(
        &self,
        before: Timestamp,
        checkpoint: CheckpointFor<'_>,
    ) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            sqlx::query(LOCK_AUDIT_CHAIN)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            // The prefix ends just before the first sealed event at or after `before`, or at
            // the newest sealed event when all are older.
            let last = sqlx::query(
                "SELECT chain_seq, hash FROM audit_events
                 WHERE chain_seq IS NOT NULL
                   AND chain_seq < COALESCE(
                       (SELECT MIN(chain_seq) FROM audit_events
                        WHERE chain_seq IS NOT NULL AND at >= $1),
                       9223372036854775807)
                 ORDER BY chain_seq DESC LIMIT 1",
            )
            .bind(before.unix_millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
            let Some(last) = last else {
                tx.rollback().await.map_err(store_error)?;
                return Ok(0);
            };
            let seq = chain_seq(last.try_get(0).map_err(store_error)?)?;
            let hash: Vec<u8> = last.try_get(1).map_err(store_error)?;
            let signed = checkpoint(seq, chain_hash_of(&hash, "hash")?);
            let deleted = sqlx::query("DELETE FROM audit_events WHERE chain_seq <= $1")
                .bind(stored_seq(seq)?)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            sqlx::query(
                "INSERT INTO audit_checkpoint (id, seq, hash, at, mac) VALUES (1, $1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE
                 SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, at = EXCLUDED.at, mac = EXCLUDED.mac",
            )
            .bind(stored_seq(signed.seq)?)
            .bind(&signed.hash[..])
            .bind(signed.at.unix_millis())
            .bind(&signed.mac[..])
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            Ok(deleted)
        })
        .await
    }

    fn open_audit_ip(&self, entry: &AuditEntry) -> Result<Option<String>, StoreError> {
        Ok(self.cipher.open_audit_ip(entry)?)
    }

    async fn audit_checkpoint_key(&self, candidate: &[u8]) -> Result<CheckpointKey, StoreError> {
        self.bounded(async {
            // Inserted unless present, then read. When a concurrent twin inserted first, the
            // statement's snapshot may predate its commit and see no row: read again.
            let secret: Option<Vec<u8>> = sqlx::query(
                "WITH inserted AS (
                     INSERT INTO audit_keys (id, secret) VALUES (1, $1)
                     ON CONFLICT (id) DO NOTHING
                     RETURNING secret)
                 SELECT secret FROM inserted
                 UNION ALL
                 SELECT secret FROM audit_keys WHERE id = 1
                 LIMIT 1",
            )
            .bind(candidate)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(store_error)?;
            let secret = match secret {
                Some(secret) => secret,
                None => sqlx::query("SELECT secret FROM audit_keys WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?
                    .try_get(0)
                    .map_err(store_error)?,
            };
            Ok(Zeroizing::new(secret))
        })
        .await
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            // One round trip, as `SELECT 1` was: a standby (after a failover the pool has not
            // followed yet) or a database set to read-only transactions answers, but refuses
            // every write.
            let read_only: bool = sqlx::query_scalar(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
            if read_only {
                return Err(StoreError::Unavailable(Box::new(CannotWrite {
                    reason: WriteBlock::ReadOnly,
                    detail: "postgresql accepts only read-only transactions on this connection"
                        .into(),
                })));
            }
            Ok(())
        })
        .await
    }

    fn revocation_feed(&self) -> Option<Box<dyn RevocationFeed>> {
        Some(Box::new(self.revocation_listener()))
    }
}

#[async_trait]
impl EncryptionStore for PostgresStore {
    async fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.bounded(async {
            sqlx::query_scalar("SELECT check_value FROM master_key WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)
        })
        .await
    }

    async fn initialize_encryption(
        &self,
        check: &[u8],
        first: &WrappedDataKey,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // A concurrent twin's uncommitted row makes this wait, then do nothing.
            let inserted = sqlx::query(
                "INSERT INTO master_key (id, check_value) VALUES (1, $1)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(check)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3)")
                .bind(i64::from(first.id))
                .bind(&first.wrapped[..])
                .bind(first.created_at.unix_millis())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query("SELECT id, wrapped, created_at FROM data_keys ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
            rows.iter()
                .map(|row| {
                    let id: i64 = row.try_get(0).map_err(store_error)?;
                    Ok(WrappedDataKey {
                        id: u32::try_from(id).map_err(|_| {
                            StoreError::Corrupt("data key id is out of range".into())
                        })?,
                        wrapped: row.try_get(1).map_err(store_error)?,
                        created_at: rows::timestamp(row, 2)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn rewrap_data_keys(
        &self,
        old_check: &[u8],
        new_check: &[u8],
        keys: &[WrappedDataKey],
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            let swapped = sqlx::query(
                "UPDATE master_key SET check_value = $1 WHERE id = 1 AND check_value = $2",
            )
            .bind(new_check)
            .bind(old_check)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data_keys")
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
            if swapped != 1 || usize::try_from(stored).ok() != Some(keys.len()) {
                return Ok(false);
            }
            for key in keys {
                let updated = sqlx::query("UPDATE data_keys SET wrapped = $1 WHERE id = $2")
                    .bind(&key.wrapped[..])
                    .bind(i64::from(key.id))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?
                    .rows_affected();
                if updated != 1 {
                    return Ok(false);
                }
            }
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    fn install_cipher(&self, cipher: std::sync::Arc<Cipher>) {
        self.cipher.install(cipher);
    }
}
