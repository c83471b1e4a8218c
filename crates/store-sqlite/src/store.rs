//! [`SqliteStore`]: the [`Store`] trait over one SQLite file.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sessiond_core::audit::{
    self, AuditChain, AuditCheckpoint, AuditEntry, AuditQuery, ChainHash, CheckpointFor,
    CheckpointKey, NewAuditEvent, SealedAuditEvent,
};
use sessiond_core::crypt::columns::{
    DEVICE_LAST_IP, DEVICE_NAME, DEVICE_USER_AGENT, KEY_SECRET, SEALED_SUCCESSOR,
    SESSION_DEVICE_NAME, SESSION_IP, SESSION_METADATA, SESSION_USER_AGENT,
};
use sessiond_core::crypt::{Cipher, CipherSlot, WrappedDataKey, device_row};
use sessiond_core::device::DeviceRecord;
use sessiond_core::event::{self, EventCursor, EventFilter, NewEvent, StoredEvent};
use sessiond_core::refresh::{RefreshTokenHash, RefreshTokenRecord};
use sessiond_core::session::{Device, DeviceType, Session};
use sessiond_core::store::{
    AuditFor, RetireOutcome, Revocation, RevokedSessionRef, Rotation, RotationOutcome, Store,
    StoreError, StoreStats,
};
use sessiond_core::token::{SigningAlgorithm, StoredKey};
use sessiond_core::{DeviceId, SessionId, Timestamp, UserId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::store_error;
use crate::migrate;
use crate::rotation_batch::RotationQueue;
use crate::rows::{self, SESSION_COLUMN_COUNT, session_columns};

/// How durable a commit is before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Sync the WAL on every commit: survives power loss as well as a killed process.
    #[default]
    Full,
    /// Sync at checkpoints only: survives a killed process (`kill -9`), but the last
    /// commits may be lost if the machine itself loses power.
    Normal,
}

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// Commit durability.
    pub synchronous: Synchronous,
    /// How long a write waits for another process's lock before failing as unavailable.
    pub busy_timeout: Duration,
    /// Read-only connections for lookups.
    pub readers: u32,
    /// How long a request waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// Create the file when it does not exist (the server), or fail (commands that inspect an
    /// existing database, so a mistyped path is an error rather than a new empty database).
    pub create_if_missing: bool,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            acquire_timeout: Duration::from_secs(5),
            create_if_missing: true,
        }
    }
}

/// Sessions, refresh tokens, keys and audit events in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    rotations: RotationQueue,
    /// Seals the encrypted columns once the server installs the data keys.
    cipher: Arc<CipherSlot>,
}

const INSERT_AUDIT: &str =
    "INSERT INTO audit_events (type, severity, user_id, session_id, ip, at, details)
     VALUES (?, ?, ?, ?, ?, ?, ?)";

const INSERT_EVENT: &str = "INSERT INTO events (type, user_id, session_id, at, data)
     VALUES (?, ?, ?, ?, ?)";

/// Events after a cursor, optionally of one user and of some types (`?4`, a JSON array).
const EVENTS_AFTER: &str = "SELECT id, type, user_id, session_id, at, data FROM events
     WHERE id > ?1
       AND (?2 IS NULL OR user_id = ?2)
       AND (?4 IS NULL OR type IN (SELECT value FROM json_each(?4)))
     ORDER BY id
     LIMIT ?3";

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`) and brings its schema
    /// up to date.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be opened or migrated.
    pub async fn open(url: &str, settings: &SqliteSettings) -> Result<Self, StoreError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::Backend(Box::new(error)))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match settings.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(settings.busy_timeout)
            .foreign_keys(true)
            // Pages are read through a memory map and a larger per-connection cache instead of
            // a read(2) per page: lookups are most of what a refresh costs besides the commit.
            .pragma("cache_size", "-16384");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone().create_if_missing(settings.create_if_missing))
            .await
            .map_err(store_error)?;
        let store = Self {
            rotations: RotationQueue::start(writer.clone()),
            readers: SqlitePoolOptions::new()
                .max_connections(settings.readers.max(1))
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(base.read_only(true))
                .await
                .map_err(store_error)?,
            writer,
            cipher: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations the database lacks; returns how many were applied.
    ///
    /// # Errors
    /// [`StoreError`] when a migration fails; that migration is then rolled back.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut connection = self.writer.acquire().await.map_err(store_error)?;
        migrate::run(&mut connection).await
    }

    /// Closes every connection, after which the file is consistent on disk.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)
    }
}

pub(crate) async fn append_audit(
    connection: &mut SqliteConnection,
    event: &NewAuditEvent,
) -> Result<(), StoreError> {
    sqlx::query(INSERT_AUDIT)
        .bind(event.kind)
        .bind(event.severity.as_str())
        .bind(event.user_id.as_ref().map(UserId::as_str))
        .bind(event.session_id.map(|id| id.to_string()))
        .bind(event.ip.as_deref())
        .bind(event.at.unix_millis())
        .bind(audit::canonical_details(&event.details))
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
    for published in event::events_of_audit(event) {
        insert_event(&mut *connection, &published).await?;
    }
    Ok(())
}

async fn insert_event(
    connection: &mut SqliteConnection,
    event: &NewEvent,
) -> Result<(), StoreError> {
    sqlx::query(INSERT_EVENT)
        .bind(event.kind)
        .bind(event.user_id.as_str())
        .bind(event.session_id.map(|id| id.to_string()))
        .bind(event.at.unix_millis())
        .bind(serde_json::Value::Object(event.data.clone()).to_string())
        .execute(connection)
        .await
        .map_err(store_error)?;
    Ok(())
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.try_get(1).map_err(store_error)?;
    let session_id: Option<String> = row.try_get(3).map_err(store_error)?;
    let data: String = row.try_get(5).map_err(store_error)?;
    Ok(StoredEvent {
        cursor: EventCursor {
            epoch: 0,
            sequence: row.try_get(0).map_err(store_error)?,
        },
        kind: event::event_type(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event type {kind:?}")))?,
        user_id: UserId::from_trusted(row.try_get(2).map_err(store_error)?),
        session_id: session_id
            .map(|id| {
                Uuid::try_parse(&id)
                    .map(SessionId::from_uuid)
                    .map_err(|_| StoreError::Corrupt("event session id is not a UUID".into()))
            })
            .transpose()?,
        at: Timestamp::from_unix_millis(row.try_get(4).map_err(store_error)?),
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

/// Sealed audit events after a seq, optionally of one user (`?2`), session (`?3`), type
/// (`?4`) and from an instant (`?5`), in seq order.
const AUDIT_EVENTS: &str = "SELECT chain_seq, type, severity, user_id, session_id, ip, at,
            details, prev_hash, hash
     FROM audit_events
     WHERE chain_seq > ?1
       AND (?2 IS NULL OR user_id = ?2)
       AND (?3 IS NULL OR session_id = ?3)
       AND (?4 IS NULL OR type = ?4)
       AND (?5 IS NULL OR at >= ?5)
     ORDER BY chain_seq
     LIMIT ?6";

/// Reads an [`AuditEntry`] from the seven columns starting at `offset`: type, severity,
/// user_id, session_id, ip, at, details.
fn audit_entry(row: &SqliteRow, offset: usize) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        kind: row.try_get(offset).map_err(store_error)?,
        severity: row.try_get(offset + 1).map_err(store_error)?,
        user_id: row.try_get(offset + 2).map_err(store_error)?,
        session_id: row.try_get(offset + 3).map_err(store_error)?,
        ip: row.try_get(offset + 4).map_err(store_error)?,
        at: Timestamp::from_unix_millis(row.try_get(offset + 5).map_err(store_error)?),
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

fn sealed_audit_event(row: &SqliteRow) -> Result<SealedAuditEvent, StoreError> {
    let prev_hash: Vec<u8> = row.try_get(8).map_err(store_error)?;
    let hash: Vec<u8> = row.try_get(9).map_err(store_error)?;
    Ok(SealedAuditEvent {
        seq: chain_seq(row.try_get(0).map_err(store_error)?)?,
        entry: audit_entry(row, 1)?,
        prev_hash: chain_hash_of(&prev_hash, "prev_hash")?,
        hash: chain_hash_of(&hash, "hash")?,
    })
}

async fn audit_head(connection: &mut SqliteConnection) -> Result<(u64, ChainHash), StoreError> {
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

/// Marks `sessions` revoked and appends their audit events; returns them as revoked.
async fn revoke_all_of(
    connection: &mut SqliteConnection,
    sessions: Vec<Session>,
    revocation: Revocation,
    audit: AuditFor<'_>,
) -> Result<Vec<Session>, StoreError> {
    let mut revoked = Vec::with_capacity(sessions.len());
    for mut session in sessions {
        sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(revocation.at.unix_millis())
        .bind(revocation.reason.as_str())
        .bind(session.id.to_string())
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
        session.revoked_at = Some(revocation.at);
        session.revoke_reason = Some(revocation.reason.as_str().to_owned());
        append_audit(&mut *connection, &audit(&session)).await?;
        revoked.push(session);
    }
    Ok(revoked)
}

/// The order in which a user's active sessions are read.
#[derive(Debug, Clone, Copy)]
enum Recency {
    /// Least recently active first: the eviction order.
    OldestFirst,
    /// Most recently active first: the listing order.
    NewestFirst,
}

async fn active_sessions_of(
    connection: &mut SqliteConnection,
    cipher: &CipherSlot,
    user: &UserId,
    now: Timestamp,
    order: Recency,
) -> Result<Vec<Session>, StoreError> {
    let sql = match order {
        Recency::OldestFirst => concat!(
            "SELECT ", session_columns!(), " FROM sessions s
             WHERE s.user_id = ? AND s.revoked_at IS NULL AND s.idle_expires_at > ? AND s.expires_at > ?
             ORDER BY s.last_active_at ASC, s.created_at ASC"
        ),
        Recency::NewestFirst => concat!(
            "SELECT ", session_columns!(), " FROM sessions s
             WHERE s.user_id = ? AND s.revoked_at IS NULL AND s.idle_expires_at > ? AND s.expires_at > ?
             ORDER BY s.last_active_at DESC, s.created_at DESC"
        ),
    };
    let rows = sqlx::query(sql)
        .bind(user.as_str())
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .fetch_all(connection)
        .await
        .map_err(store_error)?;
    rows.iter()
        .map(|row| rows::session(row, 0, cipher))
        .collect()
}

async fn session_by_id(
    connection: &mut SqliteConnection,
    cipher: &CipherSlot,
    id: SessionId,
) -> Result<Option<Session>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions s WHERE s.id = ?"
    ))
    .bind(id.to_string())
    .fetch_optional(connection)
    .await
    .map_err(store_error)?;
    row.map(|row| rows::session(&row, 0, cipher)).transpose()
}

/// Adds or refreshes `session`'s device in its user's registry; `true` when the device is new
/// to the user. The caller holds the write transaction, so the check and the write are atomic.
async fn record_device(
    connection: &mut SqliteConnection,
    cipher: &CipherSlot,
    session: &Session,
) -> Result<bool, StoreError> {
    let known = sqlx::query("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?")
        .bind(session.user_id.as_str())
        .bind(session.device.id.as_str())
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .is_some();
    let row = device_row(session.user_id.as_str(), session.device.id.as_str());
    let seal = |column: &str, text: Option<&str>| cipher.seal_optional_text(column, &row, text);
    sqlx::query(
        "INSERT INTO devices (user_id, device_id, name, device_type, browser, os, user_agent,
             last_ip, first_seen_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
             name = COALESCE(excluded.name, devices.name),
             device_type = excluded.device_type, browser = excluded.browser, os = excluded.os,
             user_agent = excluded.user_agent, last_ip = COALESCE(excluded.last_ip, devices.last_ip),
             last_seen_at = MAX(devices.last_seen_at, excluded.last_seen_at)",
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
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    Ok(!known)
}

fn device_from_row(row: &SqliteRow, cipher: &CipherSlot) -> Result<DeviceRecord, StoreError> {
    let text =
        |index: usize| -> Result<String, StoreError> { row.try_get(index).map_err(store_error) };
    let optional = |index: usize| -> Result<Option<String>, StoreError> {
        row.try_get(index).map_err(store_error)
    };
    let trusted: i64 = row.try_get(6).map_err(store_error)?;
    let (user_id, device_id) = (text(0)?, text(1)?);
    let key = device_row(&user_id, &device_id);
    let open = |column: &str, index: usize| -> Result<Option<String>, StoreError> {
        Ok(cipher.open_optional_text(column, &key, optional(index)?)?)
    };
    Ok(DeviceRecord {
        user_id: UserId::from_trusted(user_id),
        device: Device {
            id: DeviceId::from_trusted(device_id),
            name: open(DEVICE_NAME, 2)?,
            device_type: DeviceType::from_name(&text(3)?),
            browser: optional(4)?,
            os: optional(5)?,
            trusted: trusted != 0,
        },
        user_agent: open(DEVICE_USER_AGENT, 7)?,
        last_ip: open(DEVICE_LAST_IP, 8)?,
        first_seen_at: Timestamp::from_unix_millis(row.try_get(9).map_err(store_error)?),
        last_seen_at: Timestamp::from_unix_millis(row.try_get(10).map_err(store_error)?),
    })
}

/// The outer layer of a sealed successor pair: the pair is sealed under the presented token by
/// core, and that ciphertext again under the data key with the token's hash as the row.
fn seal_successor(cipher: &CipherSlot, rotation: &Rotation) -> Vec<u8> {
    cipher
        .seal_bytes(
            SEALED_SUCCESSOR,
            &rotation.presented.0,
            &rotation.sealed_successor,
        )
        .to_vec()
}

/// The inverse of [`seal_successor`].
fn open_successor(
    cipher: &CipherSlot,
    hash: &RefreshTokenHash,
    stored: Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, StoreError> {
    stored
        .map(|stored| {
            cipher
                .open_bytes(SEALED_SUCCESSOR, &hash.0, stored)
                .map(|inner| inner.to_vec())
                .map_err(StoreError::from)
        })
        .transpose()
}

fn algorithm_name(algorithm: SigningAlgorithm) -> &'static str {
    algorithm.jose_name()
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

const SELECT_KEYS: &str = "SELECT kid, algorithm, secret, created_at, deactivated_at
     FROM signing_keys ORDER BY created_at, kid";

fn key_from_row(row: &SqliteRow, cipher: &CipherSlot) -> Result<StoredKey, StoreError> {
    let algorithm: String = row.try_get("algorithm").map_err(store_error)?;
    let kid: String = row.try_get("kid").map_err(store_error)?;
    let deactivated_at: Option<i64> = row.try_get("deactivated_at").map_err(store_error)?;
    Ok(StoredKey {
        algorithm: SigningAlgorithm::from_jose_name(&algorithm)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key algorithm {algorithm}")))?,
        secret: open_key_material(cipher, &kid, row.try_get("secret").map_err(store_error)?)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(store_error)?),
        deactivated_at: deactivated_at.map(Timestamp::from_unix_millis),
        kid,
    })
}

/// The active key of `algorithm` (the newest one not deactivated), read inside `tx`.
async fn active_kid(
    connection: &mut SqliteConnection,
    algorithm: SigningAlgorithm,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT kid FROM signing_keys WHERE algorithm = ? AND deactivated_at IS NULL
         ORDER BY created_at DESC, kid DESC LIMIT 1",
    )
    .bind(algorithm_name(algorithm))
    .fetch_optional(connection)
    .await
    .map_err(store_error)
}

async fn insert_key(
    connection: &mut SqliteConnection,
    cipher: &CipherSlot,
    key: &StoredKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, deactivated_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&key.kid)
    .bind(algorithm_name(key.algorithm))
    .bind(&seal_key_material(cipher, key)[..])
    .bind(key.created_at.unix_millis())
    .bind(key.deactivated_at.map(Timestamp::unix_millis))
    .execute(connection)
    .await
    .map_err(store_error)?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_session(
        &self,
        session: &Session,
        first_token: &RefreshTokenHash,
        max_active: u32,
        audit: &NewAuditEvent,
        eviction_audit: AuditFor<'_>,
        new_device_audit: &NewAuditEvent,
    ) -> Result<Vec<Session>, StoreError> {
        let mut tx = self.begin_write().await?;
        let active = active_sessions_of(
            &mut tx,
            &self.cipher,
            &session.user_id,
            session.created_at,
            Recency::OldestFirst,
        )
        .await?;
        let keep = usize::try_from(max_active)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        let excess = active.len().saturating_sub(keep);
        let to_evict = active.into_iter().take(excess).collect();
        let evicted = revoke_all_of(
            &mut tx,
            to_evict,
            Revocation {
                at: session.created_at,
                reason: sessiond_core::RevokeReason::SessionLimit,
            },
            eviction_audit,
        )
        .await?;

        let id = session.id.to_string();
        let seal = |column: &str, text: Option<&str>| {
            self.cipher.seal_optional_text(column, id.as_bytes(), text)
        };
        sqlx::query(
            "INSERT INTO sessions (id, user_id, tenant_id, device_id, device_name, device_type,
                 browser, os, ip, user_agent, claims, metadata, created_at, last_active_at,
                 idle_expires_at, expires_at, access_expires_at, revoked_at, revoke_reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        )
        .bind(&id)
        .bind(session.user_id.as_str())
        .bind(session.tenant_id.as_ref().map(|tenant| tenant.as_str()))
        .bind(session.device.id.as_str())
        .bind(seal(SESSION_DEVICE_NAME, session.device.name.as_deref()))
        .bind(session.device.device_type.as_str())
        .bind(session.device.browser.as_deref())
        .bind(session.device.os.as_deref())
        .bind(seal(SESSION_IP, session.ip.as_deref()))
        .bind(seal(SESSION_USER_AGENT, session.user_agent.as_deref()))
        .bind(serde_json::Value::Object(session.claims.clone()).to_string())
        .bind(self.cipher.seal_text(
            SESSION_METADATA,
            id.as_bytes(),
            &serde_json::Value::Object(session.metadata.clone()).to_string(),
        ))
        .bind(session.created_at.unix_millis())
        .bind(session.last_active_at.unix_millis())
        .bind(session.idle_expires_at.unix_millis())
        .bind(session.expires_at.unix_millis())
        .bind(session.access_expires_at.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?, ?, ?)")
            .bind(&first_token.0[..])
            .bind(session.id.to_string())
            .bind(session.created_at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        append_audit(&mut tx, audit).await?;
        if record_device(&mut tx, &self.cipher, session).await? {
            append_audit(&mut tx, new_device_audit).await?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(evicted)
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.user_id, d.device_id, d.name, d.device_type, d.browser, d.os, d.trusted,
                    d.user_agent, d.last_ip, d.first_seen_at,
                    MAX(d.last_seen_at, COALESCE((SELECT MAX(s.last_active_at) FROM sessions s
                        WHERE s.user_id = d.user_id AND s.device_id = d.device_id), 0)) AS seen
             FROM devices d WHERE d.user_id = ?
             ORDER BY seen DESC, d.device_id",
        )
        .bind(user.as_str())
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| device_from_row(row, &self.cipher))
            .collect()
    }

    async fn set_device_trusted(
        &self,
        user: &UserId,
        device: &DeviceId,
        trusted: bool,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed =
            sqlx::query("UPDATE devices SET trusted = ? WHERE user_id = ? AND device_id = ?")
                .bind(i64::from(trusted))
                .bind(user.as_str())
                .bind(device.as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn forget_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        revocation: Revocation,
        audit: &NewAuditEvent,
        revoke_audit: AuditFor<'_>,
    ) -> Result<Option<Vec<Session>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM devices WHERE user_id = ? AND device_id = ?")
            .bind(user.as_str())
            .bind(device.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions s
             WHERE s.user_id = ? AND s.device_id = ? AND s.revoked_at IS NULL
               AND s.idle_expires_at > ? AND s.expires_at > ?"
        ))
        .bind(user.as_str())
        .bind(device.as_str())
        .bind(revocation.at.unix_millis())
        .bind(revocation.at.unix_millis())
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let active = rows
            .iter()
            .map(|row| rows::session(row, 0, &self.cipher))
            .collect::<Result<Vec<_>, _>>()?;
        append_audit(&mut tx, audit).await?;
        let revoked = revoke_all_of(&mut tx, active, revocation, revoke_audit).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(Some(revoked))
    }

    async fn find_refresh_token(
        &self,
        hash: &RefreshTokenHash,
    ) -> Result<Option<(RefreshTokenRecord, Session)>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            ",
                    t.issued_at, t.spent_at, t.sealed_successor, successor.spent_at IS NOT NULL
             FROM refresh_tokens t
             JOIN sessions s ON s.id = t.session_id
             LEFT JOIN refresh_tokens successor ON successor.hash = t.successor_hash
             WHERE t.hash = ?"
        ))
        .bind(&hash.0[..])
        .fetch_optional(&self.readers)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let session = rows::session(&row, 0, &self.cipher)?;
        let base = SESSION_COLUMN_COUNT;
        let spent_at: Option<i64> = row.try_get(base + 1).map_err(store_error)?;
        let record = RefreshTokenRecord {
            hash: *hash,
            issued_at: Timestamp::from_unix_millis(row.try_get(base).map_err(store_error)?),
            spent_at: spent_at.map(Timestamp::from_unix_millis),
            sealed_successor: open_successor(
                &self.cipher,
                hash,
                row.try_get(base + 2).map_err(store_error)?,
            )?,
            successor_spent: row.try_get(base + 3).map_err(store_error)?,
        };
        Ok(Some((record, session)))
    }

    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<RotationOutcome, StoreError> {
        let mut rotation = rotation.clone();
        rotation.sealed_successor = seal_successor(&self.cipher, &rotation);
        self.rotations.rotate(rotation).await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Option<(Session, bool)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(session) = session_by_id(&mut tx, &self.cipher, id).await? else {
            return Ok(None);
        };
        if session.revoked_at.is_some() {
            return Ok(Some((session, false)));
        }
        let mut revoked = revoke_all_of(&mut tx, vec![session], revocation, audit).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(revoked.pop().map(|session| (session, true)))
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        except: Option<SessionId>,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Vec<Session>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut active = active_sessions_of(
            &mut tx,
            &self.cipher,
            user,
            revocation.at,
            Recency::NewestFirst,
        )
        .await?;
        active.retain(|session| Some(session.id) != except);
        let revoked = revoke_all_of(&mut tx, active, revocation, audit).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(revoked)
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let mut connection = self.readers.acquire().await.map_err(store_error)?;
        session_by_id(&mut connection, &self.cipher, id).await
    }

    async fn active_sessions(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        let mut connection = self.readers.acquire().await.map_err(store_error)?;
        active_sessions_of(
            &mut connection,
            &self.cipher,
            user,
            now,
            Recency::NewestFirst,
        )
        .await
    }

    async fn revoked_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<RevokedSessionRef>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, revoked_at, access_expires_at FROM sessions
             WHERE revoked_at >= ? AND access_expires_at > ?",
        )
        .bind(since.unix_millis())
        .bind(now.unix_millis())
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0).map_err(store_error)?;
                Ok(RevokedSessionRef {
                    id: SessionId::from_uuid(
                        Uuid::try_parse(&id)
                            .map_err(|_| StoreError::Corrupt("session id is not a UUID".into()))?,
                    ),
                    revoked_at: Timestamp::from_unix_millis(row.try_get(1).map_err(store_error)?),
                    access_expires_at: Timestamp::from_unix_millis(
                        row.try_get(2).map_err(store_error)?,
                    ),
                })
            })
            .collect()
    }

    async fn purge(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions
                 WHERE (revoked_at < ?1 OR idle_expires_at < ?1) AND access_expires_at < ?2
                 LIMIT ?3)",
        )
        .bind(cutoff.unix_millis())
        .bind(now.unix_millis())
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(deleted.rows_affected())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(SELECT_KEYS)
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| key_from_row(row, &self.cipher))
            .collect()
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_key(&mut tx, &self.cipher, key).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(())
    }

    async fn insert_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        // BEGIN IMMEDIATE serialises this against every other writer, in any process.
        let mut tx = self.begin_write().await?;
        if active_kid(&mut tx, key.algorithm).await?.is_some() {
            return Ok(false);
        }
        insert_key(&mut tx, &self.cipher, key).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn signing_keys_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT version FROM signing_keys_version WHERE id = 1")
            .fetch_one(&self.readers)
            .await
            .map_err(store_error)
    }

    async fn rotate_signing_key(
        &self,
        key: &StoredKey,
        replaces: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if active_kid(&mut tx, key.algorithm).await?.as_deref() != replaces {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE signing_keys SET deactivated_at = ?
             WHERE algorithm = ? AND deactivated_at IS NULL",
        )
        .bind(key.created_at.unix_millis())
        .bind(algorithm_name(key.algorithm))
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
    }

    async fn retire_signing_key(&self, kid: &str) -> Result<RetireOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let found: Option<Option<i64>> =
            sqlx::query_scalar("SELECT deactivated_at FROM signing_keys WHERE kid = ?")
                .bind(kid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        let outcome = match found {
            None => RetireOutcome::NotFound,
            Some(None) => RetireOutcome::Active,
            Some(Some(_)) => {
                sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
                    .bind(kid)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                RetireOutcome::Retired
            }
        };
        tx.commit().await.map_err(store_error)?;
        Ok(outcome)
    }

    async fn retire_signing_keys_deactivated_before(
        &self,
        cutoff: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let retired =
            sqlx::query_scalar("DELETE FROM signing_keys WHERE deactivated_at < ? RETURNING kid")
                .bind(cutoff.unix_millis())
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(retired)
    }

    async fn announce_expired(
        &self,
        now: Timestamp,
        batch: u32,
        audit: AuditFor<'_>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        // BEGIN IMMEDIATE holds the write lock from here to the commit: no other writer, in
        // any process, can announce these sessions in between.
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions s
             WHERE s.revoked_at IS NULL AND s.expiry_announced = 0 AND s.idle_expires_at <= ?
             LIMIT ?"
        ))
        .bind(now.unix_millis())
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        for row in &rows {
            let session = rows::session(row, 0, &self.cipher)?;
            sqlx::query("UPDATE sessions SET expiry_announced = 1 WHERE id = ?")
                .bind(session.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            append_audit(&mut tx, &audit(&session)).await?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(rows.len() as u64)
    }

    async fn events_after(
        &self,
        after: EventCursor,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let kinds = filter
            .kinds
            .as_ref()
            .map(|kinds| serde_json::Value::from(kinds.clone()).to_string());
        // SQLite cursors are plain ids (epoch 0); a cursor from another store kind is past
        // nothing here.
        let after = if after.epoch == 0 { after.sequence } else { 0 };
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(after)
            .bind(filter.user_id.as_ref().map(UserId::as_str))
            .bind(i64::from(limit))
            .bind(kinds)
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn latest_event_cursor(&self) -> Result<EventCursor, StoreError> {
        let newest: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&self.readers)
            .await
            .map_err(store_error)?
            .try_get(0)
            .map_err(store_error)?;
        Ok(EventCursor {
            epoch: 0,
            sequence: newest,
        })
    }

    async fn purge_events(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? LIMIT ?)",
        )
        .bind(before.unix_millis())
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(deleted.rows_affected())
    }

    async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for event in events {
            append_audit(&mut tx, event).await?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(())
    }

    async fn seal_audit(&self, batch: u32) -> Result<u64, StoreError> {
        // Asked on a reader first: an idle sealer then never takes the write lock.
        let pending: bool =
            sqlx::query("SELECT EXISTS (SELECT 1 FROM audit_events WHERE chain_seq IS NULL)")
                .fetch_one(&self.readers)
                .await
                .map_err(store_error)?
                .try_get(0)
                .map_err(store_error)?;
        if !pending {
            return Ok(0);
        }
        // BEGIN IMMEDIATE makes this the only writer, in any process, until it commits: one
        // sealer at a time, and ids are commit order.
        let mut tx = self.begin_write().await?;
        let (mut seq, mut prev_hash) = audit_head(&mut tx).await?;
        let rows = sqlx::query(
            "SELECT seq, type, severity, user_id, session_id, ip, at, details
             FROM audit_events WHERE chain_seq IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        if rows.is_empty() {
            // Ended now, so the write lock goes at once.
            tx.rollback().await.map_err(store_error)?;
            return Ok(0);
        }
        for row in &rows {
            let id: i64 = row.try_get(0).map_err(store_error)?;
            let entry = audit_entry(row, 1)?;
            seq += 1;
            let hash = audit::chain_hash(seq, &prev_hash, &entry);
            sqlx::query(
                "UPDATE audit_events SET chain_seq = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            )
            .bind(stored_seq(seq)?)
            .bind(&prev_hash[..])
            .bind(&hash[..])
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            prev_hash = hash;
        }
        sqlx::query("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
            .bind(stored_seq(seq)?)
            .bind(&prev_hash[..])
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(rows.len() as u64)
    }

    async fn audit_events(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<SealedAuditEvent>, StoreError> {
        let rows = sqlx::query(AUDIT_EVENTS)
            .bind(stored_seq(query.after_seq)?)
            .bind(query.user_id.as_ref().map(UserId::as_str))
            .bind(query.session_id.map(|id| id.to_string()))
            .bind(query.kind.as_deref())
            .bind(query.since.map(Timestamp::unix_millis))
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        rows.iter().map(sealed_audit_event).collect()
    }

    async fn audit_chain(&self) -> Result<AuditChain, StoreError> {
        let mut connection = self.readers.acquire().await.map_err(store_error)?;
        // One read transaction, so head and checkpoint are of one moment.
        let mut tx = sqlx::Connection::begin(&mut *connection)
            .await
            .map_err(store_error)?;
        let (head_seq, head_hash) = audit_head(&mut tx).await?;
        let checkpoint =
            sqlx::query("SELECT seq, hash, at, mac FROM audit_checkpoint WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?
                .map(|row| -> Result<AuditCheckpoint, StoreError> {
                    let hash: Vec<u8> = row.try_get(1).map_err(store_error)?;
                    let mac: Vec<u8> = row.try_get(3).map_err(store_error)?;
                    Ok(AuditCheckpoint {
                        seq: chain_seq(row.try_get(0).map_err(store_error)?)?,
                        hash: chain_hash_of(&hash, "checkpoint hash")?,
                        at: Timestamp::from_unix_millis(row.try_get(2).map_err(store_error)?),
                        mac: chain_hash_of(&mac, "checkpoint mac")?,
                    })
                })
                .transpose()?;
        tx.rollback().await.map_err(store_error)?;
        Ok(AuditChain {
            head_seq,
            head_hash,
            checkpoint,
        })
    }

    async fn prune_audit(
        &self,
        before: Timestamp,
        checkpoint: CheckpointFor<'_>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        // The prefix ends just before the first sealed event at or after `before`, or at the
        // newest sealed event when all are older.
        let last = sqlx::query(
            "SELECT chain_seq, hash FROM audit_events
             WHERE chain_seq IS NOT NULL
               AND chain_seq < COALESCE(
                   (SELECT MIN(chain_seq) FROM audit_events
                    WHERE chain_seq IS NOT NULL AND at >= ?1),
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
        let deleted = sqlx::query("DELETE FROM audit_events WHERE chain_seq <= ?")
            .bind(stored_seq(seq)?)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        sqlx::query(
            "INSERT OR REPLACE INTO audit_checkpoint (id, seq, hash, at, mac) VALUES (1, ?, ?, ?, ?)",
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
    }

    async fn audit_checkpoint_key(&self, candidate: &[u8]) -> Result<CheckpointKey, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT OR IGNORE INTO audit_keys (id, secret) VALUES (1, ?)")
            .bind(candidate)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let secret: Vec<u8> = sqlx::query("SELECT secret FROM audit_keys WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?
            .try_get(0)
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(Zeroizing::new(secret))
    }

    async fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT check_value FROM master_key WHERE id = 1")
            .fetch_optional(&self.readers)
            .await
            .map_err(store_error)
    }

    async fn initialize_encryption(
        &self,
        check: &[u8],
        first: &WrappedDataKey,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted =
            sqlx::query("INSERT OR IGNORE INTO master_key (id, check_value) VALUES (1, ?)")
                .bind(check)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES (?, ?, ?)")
            .bind(i64::from(first.id))
            .bind(&first.wrapped[..])
            .bind(first.created_at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError> {
        let rows = sqlx::query("SELECT id, wrapped, created_at FROM data_keys ORDER BY id")
            .fetch_all(&self.readers)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get(0).map_err(store_error)?;
                Ok(WrappedDataKey {
                    id: u32::try_from(id)
                        .map_err(|_| StoreError::Corrupt("data key id is out of range".into()))?,
                    wrapped: row.try_get(1).map_err(store_error)?,
                    created_at: Timestamp::from_unix_millis(row.try_get(2).map_err(store_error)?),
                })
            })
            .collect()
    }

    async fn rewrap_data_keys(
        &self,
        old_check: &[u8],
        new_check: &[u8],
        keys: &[WrappedDataKey],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let swapped =
            sqlx::query("UPDATE master_key SET check_value = ? WHERE id = 1 AND check_value = ?")
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
            let updated = sqlx::query("UPDATE data_keys SET wrapped = ? WHERE id = ?")
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
    }

    fn install_cipher(&self, cipher: Arc<Cipher>) {
        self.cipher.install(cipher);
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn stats(&self, now: Timestamp) -> Result<StoreStats, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*),
                    COUNT(DISTINCT user_id || char(0) || device_id),
                    COALESCE(AVG(last_active_at - created_at), 0.0)
             FROM sessions
             WHERE revoked_at IS NULL AND idle_expires_at > ? AND expires_at > ?",
        )
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .fetch_one(&self.readers)
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
    }
}
