//! [`SqliteStore`]: the [`Store`] trait over one SQLite file.
//!
//! Each method is one job of the [`Engine`]: a write in the storage thread's next
//! transaction, a lookup on the storage thread, or a read on a read connection. The job's
//! closure owns what it needs (cloned from the arguments), since it runs on another thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use sessiond_core::audit::{
    AuditChain, AuditCheckpoint, AuditEntry, AuditQuery, ChainHash, CheckpointFor, CheckpointKey,
    NewAuditEvent, SealedAuditEvent,
};
use sessiond_core::crypt::columns::{
    DEVICE_LAST_IP, DEVICE_NAME, DEVICE_USER_AGENT, KEY_SECRET, SEALED_SUCCESSOR,
    SESSION_DEVICE_NAME, SESSION_IP, SESSION_METADATA, SESSION_USER_AGENT,
};
use sessiond_core::crypt::{Cipher, CipherSlot, WrappedDataKey, device_row};
use sessiond_core::device::DeviceRecord;
use sessiond_core::event::{EventCursor, EventFilter, StoredEvent};
use sessiond_core::refresh::{RefreshTokenHash, RefreshTokenRecord};
use sessiond_core::session::Session;
use sessiond_core::store::{
    AuditFn, AuditFor, AuditStore, DeviceStore, EncryptionStore, EventStore, KeyStore, ProofReplay,
    ProofStore, RetireOutcome, RetiredKey, Revocation, RevokedSessionRef, Rotation,
    RotationOutcome, SessionStore, Store, StoreError, StoreStats,
};
use sessiond_core::token::{SigningAlgorithm, StoredKey};
use sessiond_core::{DeviceId, SessionId, Timestamp, UserId};
use zeroize::Zeroizing;

use crate::engine::{
    ConnectionSettings, Engine, Statements, WriteTx, execute, query_all, query_optional, read_head,
    stored_seq,
};
use crate::error::store_error;
use crate::migrate;
use crate::rows::{self, SESSION_COLUMN_COUNT, get, session_columns};

mod dbsc;

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
    /// Read-only connections for long reads.
    pub readers: u32,
    /// Create the file when it does not exist (the server), or fail (commands that inspect an
    /// existing database, so a mistyped path is an error rather than a new empty database).
    pub create_if_missing: bool,
    /// Page cache of the write connection, in KiB. Sized for the pages a refresh touches
    /// (indexes of tokens and sessions); the rest comes from the operating system's cache.
    ///
    /// Larger is not faster: while the file is under 1 GiB, SQLite walks the whole page cache
    /// at the end of nearly every write transaction (a B-tree split parks a page under the
    /// number of the page past 1 GiB, and `pager_end_transaction` then truncates the cache
    /// from the end of the file, which visits every cached page), so each cached page costs
    /// every commit a little. 8 MiB served refreshes with about a tenth less CPU than 32 MiB.
    pub writer_cache_kib: u32,
    /// Page cache of each read connection, in KiB.
    pub reader_cache_kib: u32,
    /// The size, in bytes, the store never grows the database file beyond (SQLite's
    /// `max_page_count`): at it, writes that need space fail as unavailable until space is
    /// freed inside the file, as on a full disk. `None`: only the disk limits it.
    pub max_size: Option<u64>,
    /// Open for a command that only reads: the schema is not migrated and audit rows left
    /// unchained are not chained, so opening writes nothing
    /// ([`SqliteStore::require_current_schema`] tells whether the schema is up to date).
    pub read_only: bool,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            create_if_missing: true,
            writer_cache_kib: 8 * 1024,
            reader_cache_kib: 2 * 1024,
            max_size: None,
            read_only: false,
        }
    }
}

/// Sessions, refresh tokens, keys and audit events in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    engine: Engine,
    /// Seals the encrypted columns once the server installs the data keys.
    cipher: Arc<CipherSlot>,
}

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names; a query string is ignored.
pub(crate) fn database_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Backend(format!("not a sqlite URL: {url}").into()))?;
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Backend(
            "a sqlite URL must name a file (sqlite://PATH)".into(),
        ));
    }
    Ok(PathBuf::from(path))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`), brings its schema
    /// up to date, chains audit rows left unchained by an older build, and starts the
    /// storage thread. With [`SqliteSettings::read_only`] it neither migrates nor chains.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be opened or migrated.
    pub async fn open(url: &str, settings: &SqliteSettings) -> Result<Self, StoreError> {
        let connection_settings = ConnectionSettings {
            path: database_path(url)?,
            synchronous_full: settings.synchronous == Synchronous::Full,
            busy_timeout: settings.busy_timeout,
            create_if_missing: settings.create_if_missing,
            writer_cache_kib: settings.writer_cache_kib,
            reader_cache_kib: settings.reader_cache_kib,
            max_size: settings.max_size,
        };
        let readers = usize::try_from(settings.readers).unwrap_or(1);
        let cipher = Arc::<CipherSlot>::default();
        let read_only = settings.read_only;
        let engine = Engine::start(
            connection_settings,
            readers,
            cipher.clone(),
            move |connection| {
                if read_only {
                    Ok(())
                } else {
                    migrate::run(connection).map(drop)
                }
            },
        )
        .await?;
        let store = Self { engine, cipher };
        if !read_only {
            while store.seal_audit(1_000).await? > 0 {}
        }
        Ok(store)
    }

    /// Applies the migrations the database lacks; returns how many were applied.
    ///
    /// # Errors
    /// [`StoreError`] when a migration fails; that migration is then rolled back.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        // Migrations take their own transactions, so they run on a connection of their own.
        let path = self.engine.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut connection = Connection::open(&path).map_err(store_error)?;
            connection
                .busy_timeout(Duration::from_secs(5))
                .map_err(store_error)?;
            migrate::run(&mut connection)
        })
        .await
        .map_err(|error| StoreError::Backend(Box::new(error)))?
    }

    /// Checks, without writing, that the schema has every migration of this build: what a
    /// command that only reads asks after opening with [`SqliteSettings::read_only`].
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming the first missing migration (and `sessiond migrate`) or
    /// a schema newer than this build; [`StoreError`] when the file cannot be read.
    pub async fn require_current_schema(&self) -> Result<(), StoreError> {
        let path = self.engine.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let connection = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(store_error)?;
            connection
                .busy_timeout(Duration::from_secs(5))
                .map_err(store_error)?;
            migrate::require_current(&connection)
        })
        .await
        .map_err(|error| StoreError::Backend(Box::new(error)))?
    }

    /// Checkpoints the WAL into the database file and closes every connection, after which
    /// the file alone holds all the data.
    pub async fn close(&self) {
        self.engine.close().await;
    }

    /// Runs `statement`, a purge of at most `?2` rows that are due at `?1`, as one write;
    /// answers how many it deleted.
    async fn delete_batch(
        &self,
        statement: &'static str,
        before: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.engine
            .write(move |tx| {
                let deleted = execute(
                    tx.connection(),
                    statement,
                    params![before.unix_millis(), i64::from(batch)],
                )?;
                Ok(deleted as u64)
            })
            .await
    }
}

/// Marks `sessions` revoked and appends their audit events; returns them as revoked.
fn revoke_all_of(
    tx: &mut WriteTx<'_>,
    sessions: Vec<Session>,
    revocation: Revocation,
    audit: &AuditFn,
) -> Result<Vec<Session>, StoreError> {
    let mut revoked = Vec::with_capacity(sessions.len());
    for mut session in sessions {
        tx.connection()
            .prepare_cached(
                "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2
                 WHERE id = ?3 AND revoked_at IS NULL",
            )
            .map_err(store_error)?
            .execute(params![
                revocation.at.unix_millis(),
                revocation.reason.as_str(),
                session.id.to_string()
            ])
            .map_err(store_error)?;
        session.revoked_at = Some(revocation.at);
        session.revoke_reason = Some(revocation.reason.as_str().to_owned());
        tx.append_audit(&audit(&session))?;
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

fn active_sessions_of(
    connection: &Connection,
    cipher: &CipherSlot,
    user: &UserId,
    now: Timestamp,
    order: Recency,
) -> Result<Vec<Session>, StoreError> {
    let sql = match order {
        Recency::OldestFirst => concat!(
            "SELECT ", session_columns!(), " FROM live_sessions s
             WHERE s.user_id = ?1 AND s.revoked_at IS NULL AND s.idle_expires_at > ?2 AND s.expires_at > ?2
             ORDER BY s.last_active_at ASC, s.created_at ASC"
        ),
        Recency::NewestFirst => concat!(
            "SELECT ", session_columns!(), " FROM live_sessions s
             WHERE s.user_id = ?1 AND s.revoked_at IS NULL AND s.idle_expires_at > ?2 AND s.expires_at > ?2
             ORDER BY s.last_active_at DESC, s.created_at DESC"
        ),
    };
    query_all(
        connection,
        sql,
        params![user.as_str(), now.unix_millis()],
        |row| rows::session(row, 0, cipher),
    )
}

fn session_by_id(
    connection: &Connection,
    cipher: &CipherSlot,
    id: SessionId,
) -> Result<Option<Session>, StoreError> {
    query_optional(
        connection,
        concat!(
            "SELECT ",
            session_columns!(),
            " FROM live_sessions s WHERE s.id = ?1"
        ),
        [id.to_string()],
        |row| rows::session(row, 0, cipher),
    )
}

/// Adds or refreshes `session`'s device in its user's registry; `true` when the device is new
/// to the user. The caller holds the write transaction, so the check and the write are atomic.
fn record_device(
    connection: &Connection,
    cipher: &CipherSlot,
    session: &Session,
) -> Result<bool, StoreError> {
    let known = query_optional(
        connection,
        "SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2",
        params![session.user_id.as_str(), session.device.id.as_str()],
        |_| Ok(()),
    )?
    .is_some();
    let row = device_row(session.user_id.as_str(), session.device.id.as_str());
    let seal = |column: &str, text: Option<&str>| cipher.seal_optional_text(column, &row, text);
    execute(
        connection,
        "INSERT INTO devices (user_id, device_id, name, device_type, browser, os, user_agent,
             last_ip, first_seen_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
             name = COALESCE(excluded.name, devices.name),
             device_type = excluded.device_type, browser = excluded.browser, os = excluded.os,
             user_agent = excluded.user_agent, last_ip = COALESCE(excluded.last_ip, devices.last_ip),
             last_seen_at = MAX(devices.last_seen_at, excluded.last_seen_at)",
        params![
            session.user_id.as_str(),
            session.device.id.as_str(),
            seal(DEVICE_NAME, session.device.name.as_deref()),
            session.device.device_type.as_str(),
            session.device.browser.as_deref(),
            session.device.os.as_deref(),
            seal(DEVICE_USER_AGENT, session.user_agent.as_deref()),
            seal(DEVICE_LAST_IP, session.ip.as_deref()),
            session.created_at.unix_millis(),
        ],
    )?;
    Ok(!known)
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

/// The inverse of [`seal_successor`]. A value that does not open (altered, or moved from
/// another row) is given as empty, which opens under no token (see
/// [`RefreshTokenRecord::sealed_successor`]): the lookup still answers, and the service
/// refuses the replay and reports the row.
fn open_successor(
    cipher: &CipherSlot,
    hash: &RefreshTokenHash,
    stored: Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    stored.map(|stored| {
        cipher
            .open_bytes(SEALED_SUCCESSOR, &hash.0, stored)
            .map(|inner| inner.to_vec())
            .unwrap_or_default()
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

fn key_from_row(row: &rusqlite::Row<'_>, cipher: &CipherSlot) -> Result<StoredKey, StoreError> {
    let kid: String = get(row, 0)?;
    let algorithm: String = get(row, 1)?;
    let deactivated_at: Option<i64> = get(row, 4)?;
    Ok(StoredKey {
        algorithm: SigningAlgorithm::from_jose_name(&algorithm)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key algorithm {algorithm}")))?,
        secret: open_key_material(cipher, &kid, get(row, 2)?)?,
        created_at: Timestamp::from_unix_millis(get(row, 3)?),
        signs_from: Timestamp::from_unix_millis(get(row, 5)?),
        deactivated_at: deactivated_at.map(Timestamp::from_unix_millis),
        kid,
    })
}

/// The active key, whatever its algorithm (the newest one not deactivated).
fn active_kid(connection: &Connection) -> Result<Option<String>, StoreError> {
    query_optional(
        connection,
        "SELECT kid FROM signing_keys WHERE deactivated_at IS NULL AND retired_at IS NULL
         ORDER BY created_at DESC, kid DESC LIMIT 1",
        [],
        |row| get(row, 0),
    )
}

fn retired_key_from_row(row: &rusqlite::Row<'_>) -> Result<RetiredKey, StoreError> {
    let algorithm: String = get(row, 1)?;
    let deactivated_at: Option<i64> = get(row, 4)?;
    Ok(RetiredKey {
        kid: get(row, 0)?,
        algorithm: SigningAlgorithm::from_jose_name(&algorithm)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key algorithm {algorithm}")))?,
        created_at: Timestamp::from_unix_millis(get(row, 2)?),
        signs_from: Timestamp::from_unix_millis(get(row, 3)?),
        deactivated_at: deactivated_at.map(Timestamp::from_unix_millis),
        retired_at: Timestamp::from_unix_millis(get(row, 5)?),
    })
}

fn insert_key(
    connection: &Connection,
    cipher: &CipherSlot,
    key: &StoredKey,
) -> Result<(), StoreError> {
    execute(
        connection,
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, deactivated_at, signs_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key.kid,
            key.algorithm.jose_name(),
            &seal_key_material(cipher, key)[..],
            key.created_at.unix_millis(),
            key.deactivated_at.map(Timestamp::unix_millis),
            key.signs_from.unix_millis(),
        ],
    )?;
    Ok(())
}

/// Reads an [`AuditEntry`] from the seven columns starting at `offset`: type, severity,
/// user_id, session_id, ip, at, details.
fn audit_entry(row: &rusqlite::Row<'_>, offset: usize) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        kind: get(row, offset)?,
        severity: get(row, offset + 1)?,
        user_id: get(row, offset + 2)?,
        session_id: get(row, offset + 3)?,
        ip: get(row, offset + 4)?,
        at: Timestamp::from_unix_millis(get(row, offset + 5)?),
        details: get(row, offset + 6)?,
    })
}

fn chain_hash_of(bytes: &[u8], column: &str) -> Result<ChainHash, StoreError> {
    ChainHash::try_from(bytes)
        .map_err(|_| StoreError::Corrupt(format!("audit {column} is not 32 bytes")))
}

fn chain_seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("audit seq is negative".into()))
}

fn sealed_audit_event(row: &rusqlite::Row<'_>) -> Result<SealedAuditEvent, StoreError> {
    let prev_hash: Vec<u8> = get(row, 8)?;
    let hash: Vec<u8> = get(row, 9)?;
    Ok(SealedAuditEvent {
        seq: chain_seq(get(row, 0)?)?,
        entry: audit_entry(row, 1)?,
        prev_hash: chain_hash_of(&prev_hash, "prev_hash")?,
        hash: chain_hash_of(&hash, "hash")?,
    })
}

/// Sealed audit events after a seq, optionally of one user (`?2`), session (`?3`), type
/// (`?4`) and from an instant (`?5`), in seq order.
const AUDIT_EVENTS: &str = "SELECT chain_seq, type, severity, user_id, session_id, ip, at,
            details, prev_hash, hash
     FROM audit_events
     WHERE chain_seq > ?1 AND hash IS NOT NULL
       AND (?2 IS NULL OR user_id = ?2)
       AND (?3 IS NULL OR session_id = ?3)
       AND (?4 IS NULL OR type = ?4)
       AND (?5 IS NULL OR at >= ?5)
     ORDER BY chain_seq
     LIMIT ?6";

/// Whether an audit row is not yet chained: one probe of the partial index of such rows
/// (migration 0019), whatever the size of the chain.
const ANY_UNCHAINED_AUDIT: &str = "SELECT 1 FROM audit_events WHERE hash IS NULL LIMIT 1";

/// Events after a cursor, optionally of one user and of some types (`?4`, a JSON array). A
/// row without a type only holds an id in place (migration 0019) and is no event.
const EVENTS_AFTER: &str = "SELECT id, type, user_id, session_id, at, data FROM events
     WHERE id > ?1 AND type <> ''
       AND (?2 IS NULL OR user_id = ?2)
       AND (?4 IS NULL OR type IN (SELECT value FROM json_each(?4)))
     ORDER BY id
     LIMIT ?3";

/// Deletes the refresh tokens of session `?1` by walking its chain from its first token,
/// each token's successor after it, by primary key. `UNION` stops at a token seen before, and
/// the session check at a successor that is not the session's, whatever the rows say.
const DELETE_TOKEN_CHAIN: &str = "WITH RECURSIVE chain (hash) AS (
         SELECT first_token FROM refresh_token_chains WHERE session_id = ?1
         UNION
         SELECT t.successor_hash FROM chain JOIN refresh_tokens t ON t.hash = chain.hash
         WHERE t.session_id = ?1 AND t.successor_hash IS NOT NULL
     )
     DELETE FROM refresh_tokens WHERE session_id = ?1 AND hash IN (SELECT hash FROM chain)";

/// Deletes the activity row of session `?1` (migration 0020).
const DELETE_ACTIVITY: &str = "DELETE FROM refresh_tokens
     WHERE hash = (SELECT activity FROM sessions WHERE id = ?1) AND session_id = ?1";

/// Deletes the sealed pairs spent before `?1` among the `?2` oldest (pairs are appended in the
/// order they are written, so the scan stops at the first batch; a pair written before
/// migration 0016 counts as spent when it ran). The newest pair always stays, so that no pair
/// id is ever handed out again while a token row still points at it: a token's pointer may
/// outlive its pair, whose lookup then finds none.
const PURGE_SUCCESSOR_PAIRS: &str = "DELETE FROM successor_seals
     WHERE id IN (
         SELECT id FROM (SELECT id, spent_at FROM successor_seals ORDER BY id LIMIT ?2)
         WHERE COALESCE(spent_at, (SELECT migrated_at FROM successor_seals_unstamped)) < ?1)
       AND id < (SELECT MAX(id) FROM successor_seals)";

/// Deletes the events before `?1` among the `?2` oldest, read in the order they were committed
/// (`SqliteStore::purge_events`; no index by time is kept, migration 0017). The newest event
/// always stays: SQLite numbers a new row after the largest row id (no AUTOINCREMENT since
/// migration 0019), so an emptied table would hand out ids again.
const PURGE_EVENTS: &str = "DELETE FROM events WHERE id IN (
         SELECT id FROM (SELECT id, at FROM events ORDER BY id LIMIT ?2)
         WHERE at < ?1)
       AND id < (SELECT MAX(id) FROM events)";

/// Deletes up to `?2` of the DPoP proof ids whose replay window closed by `?1`.
const PURGE_DPOP_PROOFS: &str = "DELETE FROM dpop_proofs WHERE replay_id IN (
         SELECT replay_id FROM dpop_proofs WHERE expires_at <= ?1 LIMIT ?2)";

/// The row id of the session of the token row `t`: the one the row keeps (migration 0018) when
/// it is still that session's, else found through the index of sessions by id, which SQLite
/// reads only then: for a token written before the migration, or once the session's row id has
/// changed (a `VACUUM` may renumber the rows of a table without an `INTEGER PRIMARY KEY`, and a
/// dump loaded again does). NULL when the session is gone.
macro_rules! session_row_of_token {
    () => {
        "COALESCE(
             (SELECT rowid FROM sessions WHERE rowid = t.session_row AND id = t.session_id),
             (SELECT rowid FROM sessions WHERE id = t.session_id))"
    };
}

/// The lookup of a presented refresh token, its session and whether its successor is spent.
/// The session's row is reached by its row id ([`session_row_of_token!`]).
const FIND_REFRESH_TOKEN: &str = concat!(
    "SELECT ",
    session_columns!(),
    ",
            t.issued_at, t.spent_at, COALESCE(seal.sealed, t.sealed_successor),
            successor.spent_at IS NOT NULL
     FROM refresh_tokens t
     JOIN live_sessions s ON s.row_id = ",
    session_row_of_token!(),
    "
     LEFT JOIN successor_seals seal ON seal.id = t.successor_seal
     LEFT JOIN refresh_tokens successor ON successor.hash = t.successor_hash
     WHERE t.hash = ?1"
);

/// The presented token (`?1`) of a rotation, if it is unspent and session `?2`'s and the
/// session is unrevoked: from the session's row ([`session_row_of_token!`]), its row id, its
/// activity key (migration 0020), the announcer's next look, the access expiry the row itself
/// holds (the activity row's is never earlier) and its user, for the rotation's event.
const ROTATING_SESSION: &str = concat!(
    "SELECT s.rowid, s.activity, s.expiry_check_at, s.access_expires_at, s.user_id
     FROM refresh_tokens t
     JOIN sessions s ON s.rowid = ",
    session_row_of_token!(),
    "
     WHERE t.hash = ?1 AND t.session_id = ?2 AND t.spent_at IS NULL AND s.revoked_at IS NULL"
);

/// A rotation's move of its session forward (`?1` the activity key, `?2` the session, `?3`
/// now, `?4` the idle expiry, `?5` the access token's, never earlier than the session row's,
/// `?6` the session's row id): into the session's activity row ([`activity_key`], migration
/// 0020), written by the session's first rotation and updated in place by every other; the
/// access expiry is the latest `exp` issued.
const MOVE_SESSION: &str = "INSERT INTO refresh_tokens
         (hash, session_id, issued_at, idle_expires_at, access_expires_at, session_row)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (hash) DO UPDATE SET issued_at = excluded.issued_at,
         idle_expires_at = excluded.idle_expires_at,
         access_expires_at = MAX(access_expires_at, excluded.access_expires_at)";

/// The key of the activity row of `session`, from `token`, the key of the session's first
/// token (for a session created before migration 0020, of the successor its first rotation
/// since issued): that key's stamp (the time the token was issued and 2 random bytes), the
/// bytes 0xFFFFFFFF and the session's id. It sorts right after the tokens issued with that
/// stamp, so sessions that began together, and come back together, have their activity rows on
/// shared pages as they have their own rows; at 28 bytes it is no token's key (a token's is
/// 32). Two sessions whose tokens share a stamp still have rows of their own.
fn activity_key(token: &RefreshTokenHash, session: SessionId) -> [u8; 28] {
    // The types pin the layout: a stamp or an id of another length does not compile.
    let stamp: [u8; 8] = token.stamp();
    let id: &[u8; 16] = session.as_uuid().as_bytes();
    let mut key = [0xff; 28];
    key[..8].copy_from_slice(&stamp);
    key[12..].copy_from_slice(id);
    key
}

/// A session as a rotation finds it ([`ROTATING_SESSION`]).
struct Rotating {
    row: i64,
    activity: Option<Vec<u8>>,
    expiry_check_at: i64,
    access_expires_at: i64,
    user_id: String,
}

/// A rotation's `session.refreshed` event (`?1` the session's user as [`ROTATING_SESSION`]
/// read it, `?2` the session, `?3` now). One row of values: SQLite opens a statement journal
/// for an `INSERT … SELECT` inside a transaction, copying every page the insert touches. The
/// engine's `INSERT_EVENT` with the type and data bound instead of written here cost a
/// rotation about 0.6 thousand instructions more under callgrind (84.1–84.7 against
/// 83.4–83.8, `bench/instructions.sh`).
const INSERT_REFRESHED_EVENT: &str = "INSERT INTO events (type, user_id, session_id, at, data)
     VALUES ('session.refreshed', ?1, ?2, ?3, '{}')";

/// Session `session_id` for a rotation of `presented`, which must be unspent and the
/// session's ([`ROTATING_SESSION`]). `None` when the token is spent, not the session's, or
/// unknown, or the session is revoked or gone: the rotation has lost.
fn rotating_session(
    connection: &(impl Statements + ?Sized),
    presented: &RefreshTokenHash,
    session_id: &str,
) -> Result<Option<Rotating>, StoreError> {
    query_optional(
        connection,
        ROTATING_SESSION,
        params![&presented.0[..], session_id],
        |row| {
            Ok(Rotating {
                row: get(row, 0)?,
                activity: get(row, 1)?,
                expiry_check_at: get(row, 2)?,
                access_expires_at: get(row, 3)?,
                user_id: get(row, 4)?,
            })
        },
    )
}

/// Records `replay` in the replay cache unless it is recorded already with an expiry after
/// `now`; answers whether it was recorded. The write lock is held from `BEGIN IMMEDIATE`, so no
/// other process can record the id between the conflict check and the insert.
fn record_proof(
    connection: &Connection,
    replay: &ProofReplay,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let recorded = execute(
        connection,
        "INSERT INTO dpop_proofs (replay_id, expires_at) VALUES (?1, ?2)
         ON CONFLICT (replay_id) DO UPDATE SET expires_at = excluded.expires_at
         WHERE dpop_proofs.expires_at <= ?3",
        params![
            &replay.id[..],
            replay.until.unix_millis(),
            now.unix_millis()
        ],
    )?;
    Ok(recorded == 1)
}

/// One rotation inside the batch's transaction, as a compare-and-swap: the session moves
/// forward only if it is unrevoked and the presented token is still unspent (read first, in
/// the same transaction of the only writer, so nothing changes between the read and the
/// writes); then the token is spent, its successor stored and the `session.refreshed` event
/// written, each of which must change exactly one row. A rotation that loses writes nothing but
/// its DPoP proof's record, which comes first: a proof recorded already makes it answer
/// [`RotationOutcome::ProofReplayed`] before anything is read or written.
/// The session's row is reached by its row id throughout (see migration 0018), and is only
/// read: the session moves forward in its activity row (migration 0020), unless the rotation
/// shortens its idle expiry or binds it to a DPoP key.
fn rotate(tx: &mut WriteTx<'_>, rotation: &Rotation) -> Result<RotationOutcome, StoreError> {
    if let Some(replay) = &rotation.proof
        && !record_proof(tx.connection(), replay, rotation.now)?
    {
        return Ok(RotationOutcome::ProofReplayed);
    }
    let connection = tx.statements();
    let session_id = rotation.session_id.to_string();
    let now = rotation.now.unix_millis();
    let Some(session) = rotating_session(connection, &rotation.presented, &session_id)? else {
        return Ok(RotationOutcome::Lost);
    };
    let session_row = session.row;
    let activity = match session.activity {
        Some(key) => key,
        None => {
            // A session created before migration 0020: its activity row is keyed by this
            // rotation's successor.
            let key = activity_key(&rotation.successor, rotation.session_id);
            execute(
                connection,
                "UPDATE sessions SET activity = ?1 WHERE rowid = ?2",
                params![&key[..], session_row],
            )?;
            key.to_vec()
        }
    };
    let idle_expires_at = rotation.idle_expires_at.unix_millis();
    if idle_expires_at < session.expiry_check_at {
        // The idle expiry moves back before the announcer's next look (the idle timeout was
        // shortened), and the look, never later than the idle expiry, comes forward with it
        // (see migration 0015). Usually the expiry moves forward and the look stays where it
        // is, leaving `expiry_check_at` and its indexes alone.
        execute(
            connection,
            "UPDATE sessions SET expiry_check_at = ?1 WHERE rowid = ?2",
            params![idle_expires_at, session_row],
        )?;
    }
    if let Some(jkt) = rotation.bind_dpop_jkt.as_deref() {
        // A binding, once made, never changes.
        execute(
            connection,
            "UPDATE sessions SET dpop_jkt = ?1 WHERE rowid = ?2 AND dpop_jkt IS NULL",
            params![jkt, session_row],
        )?;
    }
    let moved = execute(
        connection,
        MOVE_SESSION,
        params![
            activity,
            session_id,
            now,
            idle_expires_at,
            session
                .access_expires_at
                .max(rotation.access_expires_at.unix_millis()),
            session_row,
        ],
    )?;
    // The sealed pair is appended to a table of its own (see migration 0014): the token's row
    // keeps its size and only points at it. Its spending time lets the purge forget it once
    // its replay window has closed (migration 0016).
    let sealed = execute(
        connection,
        "INSERT INTO successor_seals (sealed, spent_at) VALUES (?1, ?2)",
        params![&rotation.sealed_successor[..], now],
    )?;
    let seal = tx.connection().last_insert_rowid();
    let steps = [
        moved,
        sealed,
        execute(
            connection,
            "UPDATE refresh_tokens SET spent_at = ?1, successor_hash = ?2, successor_seal = ?3
             WHERE hash = ?4 AND spent_at IS NULL",
            params![
                now,
                &rotation.successor.0[..],
                seal,
                &rotation.presented.0[..],
            ],
        )?,
        execute(
            connection,
            "INSERT INTO refresh_tokens (hash, session_id, issued_at, session_row)
             VALUES (?1, ?2, ?3, ?4)",
            params![&rotation.successor.0[..], session_id, now, session_row],
        )?,
        execute(
            connection,
            INSERT_REFRESHED_EVENT,
            params![session.user_id, session_id, now],
        )?,
    ];
    if steps != [1, 1, 1, 1, 1] {
        // A half-applied rotation: fail, so that it is rolled back.
        return Err(StoreError::Corrupt(format!(
            "a rotation changed {steps:?} rows instead of one each"
        )));
    }
    if let Some(audit) = &rotation.audit {
        tx.append_audit(audit)?;
    }
    Ok(RotationOutcome::Rotated)
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        session: &Session,
        first_token: &RefreshTokenHash,
        max_active: u32,
        audit: &NewAuditEvent,
        eviction_audit: AuditFor<'_>,
        new_device_audit: &NewAuditEvent,
    ) -> Result<Vec<Session>, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let (session, first_token) = (session.clone(), *first_token);
        let (audit, new_device_audit) = (audit.clone(), new_device_audit.clone());
        let eviction_audit = Arc::clone(eviction_audit);
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                let active = active_sessions_of(
                    connection,
                    &cipher,
                    &session.user_id,
                    session.created_at,
                    Recency::OldestFirst,
                )?;
                let keep = usize::try_from(max_active)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(1);
                let excess = active.len().saturating_sub(keep);
                let to_evict = active.into_iter().take(excess).collect();
                let evicted = revoke_all_of(
                    tx,
                    to_evict,
                    Revocation {
                        at: session.created_at,
                        reason: sessiond_core::RevokeReason::SessionLimit,
                    },
                    &*eviction_audit,
                )?;
                let id = session.id.to_string();
                let seal = |column: &str, text: Option<&str>| {
                    cipher.seal_optional_text(column, id.as_bytes(), text)
                };
                execute(
                    connection,
                    "INSERT INTO sessions (id, user_id, tenant_id, device_id, device_name,
                         device_type, browser, os, ip, user_agent, claims, metadata, created_at,
                         last_active_at, idle_expires_at, expires_at, access_expires_at,
                         revoked_at, revoke_reason, dpop_jkt, expiry_check_at, activity)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16, ?17, NULL, NULL, ?18, ?15, ?19)",
                    params![
                        id,
                        session.user_id.as_str(),
                        session.tenant_id.as_ref().map(|tenant| tenant.as_str()),
                        session.device.id.as_str(),
                        seal(SESSION_DEVICE_NAME, session.device.name.as_deref()),
                        session.device.device_type.as_str(),
                        session.device.browser.as_deref(),
                        session.device.os.as_deref(),
                        seal(SESSION_IP, session.ip.as_deref()),
                        seal(SESSION_USER_AGENT, session.user_agent.as_deref()),
                        serde_json::Value::Object(session.claims.clone()).to_string(),
                        cipher.seal_text(
                            SESSION_METADATA,
                            id.as_bytes(),
                            &serde_json::Value::Object(session.metadata.clone()).to_string(),
                        ),
                        session.created_at.unix_millis(),
                        session.last_active_at.unix_millis(),
                        session.idle_expires_at.unix_millis(),
                        session.expires_at.unix_millis(),
                        session.access_expires_at.unix_millis(),
                        session.dpop_jkt.as_deref(),
                        &activity_key(&first_token, session.id)[..],
                    ],
                )?;
                execute(
                    connection,
                    "INSERT INTO refresh_tokens (hash, session_id, issued_at, session_row)
                     VALUES (?1, ?2, ?3, (SELECT rowid FROM sessions WHERE id = ?2))",
                    params![&first_token.0[..], id, session.created_at.unix_millis()],
                )?;
                execute(
                    connection,
                    "INSERT INTO refresh_token_chains (session_id, first_token) VALUES (?1, ?2)",
                    params![id, &first_token.0[..]],
                )?;
                tx.append_audit(&audit)?;
                if record_device(connection, &cipher, &session)? {
                    tx.append_audit(&new_device_audit)?;
                }
                Ok(evicted)
            })
            .await
    }

    async fn find_refresh_token(
        &self,
        hash: &RefreshTokenHash,
    ) -> Result<Option<(RefreshTokenRecord, Session)>, StoreError> {
        /// An unspent token leads to a rotation, a write answered only once durable, or to a
        /// refusal; a spent one may be answered as it is (a grace-window replay of the pair a
        /// rotation not yet durable issued), so it waits until what it saw is durable.
        fn spent(found: &Result<Option<(RefreshTokenRecord, Session)>, StoreError>) -> bool {
            matches!(found, Ok(Some((record, _))) if record.spent_at.is_some())
        }
        let cipher = Arc::clone(&self.cipher);
        let hash = *hash;
        self.engine
            .lookup_revealing(
                move |connection| {
                    query_optional(connection, FIND_REFRESH_TOKEN, [&hash.0[..]], |row| {
                        let session = rows::session(row, 0, &cipher)?;
                        let base = SESSION_COLUMN_COUNT;
                        let spent_at: Option<i64> = get(row, base + 1)?;
                        let record = RefreshTokenRecord {
                            hash,
                            issued_at: Timestamp::from_unix_millis(get(row, base)?),
                            spent_at: spent_at.map(Timestamp::from_unix_millis),
                            sealed_successor: open_successor(&cipher, &hash, get(row, base + 2)?),
                            successor_spent: get(row, base + 3)?,
                        };
                        Ok((record, session))
                    })
                },
                spent,
            )
            .await
    }

    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<RotationOutcome, StoreError> {
        let mut rotation = rotation.clone();
        rotation.sealed_successor = seal_successor(&self.cipher, &rotation);
        self.engine.write(move |tx| rotate(tx, &rotation)).await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Option<(Session, bool)>, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let audit = Arc::clone(audit);
        self.engine
            .write(move |tx| {
                let Some(session) = session_by_id(tx.connection(), &cipher, id)? else {
                    return Ok(None);
                };
                if session.revoked_at.is_some() {
                    return Ok(Some((session, false)));
                }
                let mut revoked = revoke_all_of(tx, vec![session], revocation, &*audit)?;
                Ok(revoked.pop().map(|session| (session, true)))
            })
            .await
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        except: Option<SessionId>,
        revocation: Revocation,
        audit: AuditFor<'_>,
    ) -> Result<Vec<Session>, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let user = user.clone();
        let audit = Arc::clone(audit);
        self.engine
            .write(move |tx| {
                let mut active = active_sessions_of(
                    tx.connection(),
                    &cipher,
                    &user,
                    revocation.at,
                    Recency::NewestFirst,
                )?;
                active.retain(|session| Some(session.id) != except);
                revoke_all_of(tx, active, revocation, &*audit)
            })
            .await
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        self.engine
            .lookup(move |connection| session_by_id(connection, &cipher, id))
            .await
    }

    async fn active_sessions(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let user = user.clone();
        self.engine
            .read(move |connection| {
                active_sessions_of(connection, &cipher, &user, now, Recency::NewestFirst)
            })
            .await
    }

    async fn revoked_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<RevokedSessionRef>, StoreError> {
        self.engine
            .read(move |connection| {
                query_all(
                    connection,
                    "SELECT id, revoked_at, access_expires_at FROM live_sessions
                     WHERE revoked_at >= ?1 AND access_expires_at > ?2",
                    params![since.unix_millis(), now.unix_millis()],
                    rows::revoked_ref,
                )
            })
            .await
    }

    async fn purge(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                let doomed: Vec<String> = query_all(
                    connection,
                    // Revoked, or expired (before or after the announcement), each branch
                    // through an index of its own.
                    "SELECT id FROM live_sessions
                     WHERE revoked_at < ?1 AND access_expires_at < ?2
                     UNION ALL
                     SELECT id FROM live_sessions
                     WHERE revoked_at IS NULL AND expiry_announced = 0
                       AND expiry_check_at < ?1 AND idle_expires_at < ?1
                       AND access_expires_at < ?2
                     UNION ALL
                     SELECT id FROM live_sessions
                     WHERE revoked_at IS NULL AND expiry_announced = 1
                       AND expiry_check_at < ?1 AND idle_expires_at < ?1
                       AND access_expires_at < ?2
                     LIMIT ?3",
                    params![cutoff.unix_millis(), now.unix_millis(), i64::from(batch)],
                    |row| get(row, 0),
                )?;
                let mut deleted = 0;
                for id in &doomed {
                    // The session's tokens first (no index finds them by session: see
                    // migration 0014) and its activity row (migration 0020), then the
                    // session, its chain head with it.
                    execute(connection, DELETE_TOKEN_CHAIN, [id])?;
                    execute(connection, DELETE_ACTIVITY, [id])?;
                    deleted += execute(connection, "DELETE FROM sessions WHERE id = ?1", [id])?;
                }
                Ok(deleted as u64)
            })
            .await
    }

    async fn purge_successor_pairs(
        &self,
        spent_before: Timestamp,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.delete_batch(PURGE_SUCCESSOR_PAIRS, spent_before, batch)
            .await
    }

    async fn announce_expired(
        &self,
        now: Timestamp,
        batch: u32,
        audit: AuditFor<'_>,
    ) -> Result<u64, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let audit = Arc::clone(audit);
        self.engine
            .write(move |tx| {
                // The transaction holds the write lock from its first read to its commit: no
                // other writer, in any process, can announce these sessions in between.
                // Sessions due a look that were refreshed since are looked at again at their
                // idle expiry; the ones left due have expired.
                execute(
                    tx.connection(),
                    "UPDATE sessions SET expiry_check_at = live.idle_expires_at
                     FROM live_sessions live
                     WHERE live.row_id = sessions.rowid
                       AND live.revoked_at IS NULL AND live.expiry_announced = 0
                       AND live.expiry_check_at <= ?1 AND live.idle_expires_at > ?1",
                    [now.unix_millis()],
                )?;
                let expired = query_all(
                    tx.connection(),
                    concat!(
                        "SELECT ",
                        session_columns!(),
                        " FROM live_sessions s
                         WHERE s.revoked_at IS NULL AND s.expiry_announced = 0
                           AND s.expiry_check_at <= ?1 AND s.idle_expires_at <= ?1
                         LIMIT ?2"
                    ),
                    params![now.unix_millis(), i64::from(batch)],
                    |row| rows::session(row, 0, &cipher),
                )?;
                for session in &expired {
                    execute(
                        tx.connection(),
                        "UPDATE sessions SET expiry_announced = 1 WHERE id = ?1",
                        [session.id.to_string()],
                    )?;
                    tx.append_audit(&audit(session))?;
                }
                Ok(expired.len() as u64)
            })
            .await
    }

    async fn stats(&self, now: Timestamp) -> Result<StoreStats, StoreError> {
        self.engine
            .read(move |connection| {
                let (active_sessions, active_devices, average): (i64, i64, f64) = connection
                    .prepare_cached(
                        "SELECT COUNT(*),
                                COUNT(DISTINCT user_id || char(0) || device_id),
                                COALESCE(AVG(last_active_at - created_at), 0.0)
                         FROM live_sessions
                         WHERE revoked_at IS NULL AND idle_expires_at > ?1 AND expires_at > ?1",
                    )
                    .map_err(store_error)?
                    .query_row([now.unix_millis()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .map_err(store_error)?;
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
impl DeviceStore for SqliteStore {
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let user = user.clone();
        self.engine
            .read(move |connection| {
                query_all(
                    connection,
                    "SELECT d.user_id, d.device_id, d.name, d.device_type, d.browser, d.os,
                            d.trusted, d.user_agent, d.last_ip, d.first_seen_at,
                            MAX(d.last_seen_at, COALESCE((SELECT MAX(s.last_active_at)
                                FROM live_sessions s
                                WHERE s.user_id = d.user_id AND s.device_id = d.device_id), 0))
                                AS seen
                     FROM devices d WHERE d.user_id = ?1
                     ORDER BY seen DESC, d.device_id",
                    [user.as_str()],
                    |row| rows::device(row, &cipher),
                )
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
        let (user, device, audit) = (user.clone(), device.clone(), audit.clone());
        self.engine
            .write(move |tx| {
                let changed = execute(
                    tx.connection(),
                    "UPDATE devices SET trusted = ?1 WHERE user_id = ?2 AND device_id = ?3",
                    params![i64::from(trusted), user.as_str(), device.as_str()],
                )?;
                if changed == 0 {
                    return Ok(false);
                }
                tx.append_audit(&audit)?;
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
        let cipher = Arc::clone(&self.cipher);
        let (user, device, audit) = (user.clone(), device.clone(), audit.clone());
        let revoke_audit = Arc::clone(revoke_audit);
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                let deleted = execute(
                    connection,
                    "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
                    params![user.as_str(), device.as_str()],
                )?;
                if deleted == 0 {
                    return Ok(None);
                }
                let active = query_all(
                    connection,
                    concat!(
                        "SELECT ",
                        session_columns!(),
                        " FROM live_sessions s
                         WHERE s.user_id = ?1 AND s.device_id = ?2 AND s.revoked_at IS NULL
                           AND s.idle_expires_at > ?3 AND s.expires_at > ?3"
                    ),
                    params![user.as_str(), device.as_str(), revocation.at.unix_millis()],
                    |row| rows::session(row, 0, &cipher),
                )?;
                tx.append_audit(&audit)?;
                let revoked = revoke_all_of(tx, active, revocation, &*revoke_audit)?;
                Ok(Some(revoked))
            })
            .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        self.engine
            .read(move |connection| {
                query_all(
                    connection,
                    "SELECT kid, algorithm, secret, created_at, deactivated_at,
                     coalesce(signs_from, created_at) AS signs_from
                     FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at, kid",
                    [],
                    |row| key_from_row(row, &cipher),
                )
            })
            .await
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let key = key.clone();
        self.engine
            .write(move |tx| insert_key(tx.connection(), &cipher, &key))
            .await
    }

    async fn insert_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let key = key.clone();
        // The write transaction holds the file's write lock: serialised against every other
        // writer, in any process.
        self.engine
            .write(move |tx| {
                if active_kid(tx.connection())?.is_some() {
                    return Ok(false);
                }
                insert_key(tx.connection(), &cipher, &key)?;
                Ok(true)
            })
            .await
    }

    async fn signing_keys_version(&self) -> Result<i64, StoreError> {
        self.engine
            .read(|connection| {
                connection
                    .prepare_cached("SELECT version FROM signing_keys_version WHERE id = 1")
                    .map_err(store_error)?
                    .query_row([], |row| row.get(0))
                    .map_err(store_error)
            })
            .await
    }

    async fn rotate_signing_key(
        &self,
        key: &StoredKey,
        replaces: Option<&str>,
    ) -> Result<bool, StoreError> {
        let cipher = Arc::clone(&self.cipher);
        let key = StoredKey {
            deactivated_at: None,
            ..key.clone()
        };
        let replaces = replaces.map(str::to_owned);
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                if active_kid(connection)? != replaces {
                    return Ok(false);
                }
                execute(
                    connection,
                    "UPDATE signing_keys SET deactivated_at = ?1
                     WHERE retired_at IS NULL AND (deactivated_at IS NULL OR deactivated_at > ?1)",
                    params![key.signs_from.unix_millis()],
                )?;
                insert_key(connection, &cipher, &key)?;
                Ok(true)
            })
            .await
    }

    async fn retire_signing_key(
        &self,
        kid: &str,
        now: Timestamp,
    ) -> Result<RetireOutcome, StoreError> {
        let kid = kid.to_owned();
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                let found: Option<(Option<i64>, Option<i64>)> = query_optional(
                    connection,
                    "SELECT deactivated_at, retired_at FROM signing_keys WHERE kid = ?1",
                    [&kid],
                    |row| Ok((get(row, 0)?, get(row, 1)?)),
                )?;
                Ok(match found {
                    None => RetireOutcome::NotFound,
                    Some((_, Some(_))) => RetireOutcome::AlreadyRetired,
                    Some((None, None)) => RetireOutcome::Active,
                    Some((Some(until), None)) if until > now.unix_millis() => RetireOutcome::Active,
                    Some((Some(_), None)) => {
                        execute(
                            connection,
                            "UPDATE signing_keys SET retired_at = ?2, secret = X'' WHERE kid = ?1",
                            params![kid, now.unix_millis()],
                        )?;
                        RetireOutcome::Retired
                    }
                })
            })
            .await
    }

    async fn retire_signing_keys_deactivated_before(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        self.engine
            .write(move |tx| {
                query_all(
                    tx.connection(),
                    "UPDATE signing_keys SET retired_at = ?2, secret = X''
                     WHERE deactivated_at < ?1 AND retired_at IS NULL RETURNING kid",
                    params![cutoff.unix_millis(), now.unix_millis()],
                    |row| get(row, 0),
                )
            })
            .await
    }

    async fn retired_signing_keys(&self) -> Result<Vec<RetiredKey>, StoreError> {
        self.engine
            .read(move |connection| {
                query_all(
                    connection,
                    "SELECT kid, algorithm, created_at, coalesce(signs_from, created_at),
                     deactivated_at, retired_at
                     FROM signing_keys WHERE retired_at IS NOT NULL ORDER BY created_at, kid",
                    [],
                    retired_key_from_row,
                )
            })
            .await
    }

    async fn purge_retired_signing_keys(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        self.engine
            .write(move |tx| {
                let deleted = execute(
                    tx.connection(),
                    "DELETE FROM signing_keys WHERE retired_at < ?1",
                    [cutoff.unix_millis()],
                )?;
                Ok(deleted as u64)
            })
            .await
    }
}

#[async_trait]
impl EventStore for SqliteStore {
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
        let user = filter.user_id.clone();
        // SQLite cursors are plain ids (epoch 0); a cursor from another store kind is past
        // nothing here.
        let after = if after.epoch == 0 { after.sequence } else { 0 };
        self.engine
            .read(move |connection| {
                query_all(
                    connection,
                    EVENTS_AFTER,
                    params![
                        after,
                        user.as_ref().map(UserId::as_str),
                        i64::from(limit),
                        kinds
                    ],
                    rows::event,
                )
            })
            .await
    }

    async fn latest_event_cursor(&self) -> Result<EventCursor, StoreError> {
        self.engine
            .read(|connection| {
                let newest: i64 = connection
                    .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events")
                    .map_err(store_error)?
                    .query_row([], |row| row.get(0))
                    .map_err(store_error)?;
                Ok(EventCursor {
                    epoch: 0,
                    sequence: newest,
                })
            })
            .await
    }

    /// Looks only at the oldest `batch` events, in the order they were committed (no index by
    /// time is kept: see migration 0017), and deletes those that happened before `before`. An
    /// event's time is read when its request begins, so one a few milliseconds older than an
    /// event committed before it can wait behind that one for a later purge (as can every event
    /// written after the clock was stepped back, until the time it was stepped back from).
    async fn purge_events(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError> {
        self.delete_batch(PURGE_EVENTS, before, batch).await
    }
}

#[async_trait]
impl ProofStore for SqliteStore {
    async fn remember_dpop_proof(
        &self,
        replay_id: &[u8; 32],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let replay = ProofReplay {
            id: *replay_id,
            until,
        };
        self.engine
            .write(move |tx| record_proof(tx.connection(), &replay, now))
            .await
    }

    async fn purge_dpop_proofs(&self, now: Timestamp, batch: u32) -> Result<u64, StoreError> {
        self.delete_batch(PURGE_DPOP_PROOFS, now, batch).await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
        let events = events.to_vec();
        self.engine
            .write(move |tx| {
                for event in &events {
                    tx.append_audit(event)?;
                }
                Ok(())
            })
            .await
    }

    async fn seal_audit(&self, batch: u32) -> Result<u64, StoreError> {
        // Rows are chained as they are written; only rows written without a chain position
        // (by an older build, or by hand) are left, and asking costs one index probe.
        let pending = self
            .engine
            .lookup(|connection| {
                Ok(query_optional(connection, ANY_UNCHAINED_AUDIT, [], |_| Ok(()))?.is_some())
            })
            .await?;
        if !pending {
            return Ok(0);
        }
        self.engine.write(move |tx| tx.seal_pending(batch)).await
    }

    async fn audit_events(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<SealedAuditEvent>, StoreError> {
        // No event's seq exceeds `i64::MAX`, so after a larger one there is none.
        let after = i64::try_from(query.after_seq).unwrap_or(i64::MAX);
        let query = query.clone();
        self.engine
            .read(move |connection| {
                query_all(
                    connection,
                    AUDIT_EVENTS,
                    params![
                        after,
                        query.user_id.as_ref().map(UserId::as_str),
                        query.session_id.map(|id| id.to_string()),
                        query.kind.as_deref(),
                        query.since.map(Timestamp::unix_millis),
                        i64::from(limit),
                    ],
                    sealed_audit_event,
                )
            })
            .await
    }

    async fn audit_chain(&self) -> Result<AuditChain, StoreError> {
        self.engine
            .read(|connection| {
                // One read transaction, so head and checkpoint are of one moment.
                let tx = connection.unchecked_transaction().map_err(store_error)?;
                let head = read_head(&*tx)?;
                let checkpoint = query_optional(
                    &*tx,
                    "SELECT seq, hash, at, mac FROM audit_checkpoint WHERE id = 1",
                    [],
                    |row| {
                        let hash: Vec<u8> = get(row, 1)?;
                        let mac: Vec<u8> = get(row, 3)?;
                        Ok(AuditCheckpoint {
                            seq: chain_seq(get(row, 0)?)?,
                            hash: chain_hash_of(&hash, "checkpoint hash")?,
                            at: Timestamp::from_unix_millis(get(row, 2)?),
                            mac: chain_hash_of(&mac, "checkpoint mac")?,
                        })
                    },
                )?;
                tx.rollback().map_err(store_error)?;
                Ok(AuditChain {
                    head_seq: head.seq,
                    head_hash: head.hash,
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
        let checkpoint = Arc::clone(checkpoint);
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                // The prefix ends just before the first sealed event at or after `before`, or
                // at the newest sealed event when all are older.
                let last = query_optional(
                    connection,
                    "SELECT chain_seq, hash FROM audit_events
                     WHERE hash IS NOT NULL
                       AND chain_seq < COALESCE(
                           (SELECT MIN(chain_seq) FROM audit_events
                            WHERE hash IS NOT NULL AND at >= ?1),
                           9223372036854775807)
                     ORDER BY chain_seq DESC LIMIT 1",
                    [before.unix_millis()],
                    |row| {
                        let hash: Vec<u8> = get(row, 1)?;
                        Ok((chain_seq(get(row, 0)?)?, chain_hash_of(&hash, "hash")?))
                    },
                )?;
                let Some((seq, hash)) = last else {
                    return Ok(0);
                };
                let signed = checkpoint(seq, hash);
                let deleted = execute(
                    connection,
                    "DELETE FROM audit_events WHERE chain_seq <= ?1 AND hash IS NOT NULL",
                    [stored_seq(seq)?],
                )?;
                execute(
                    connection,
                    "INSERT OR REPLACE INTO audit_checkpoint (id, seq, hash, at, mac)
                     VALUES (1, ?1, ?2, ?3, ?4)",
                    params![
                        stored_seq(signed.seq)?,
                        &signed.hash[..],
                        signed.at.unix_millis(),
                        &signed.mac[..]
                    ],
                )?;
                Ok(deleted as u64)
            })
            .await
    }

    fn open_audit_ip(&self, entry: &AuditEntry) -> Result<Option<String>, StoreError> {
        Ok(self.cipher.open_audit_ip(entry)?)
    }

    async fn audit_checkpoint_key(&self, candidate: &[u8]) -> Result<CheckpointKey, StoreError> {
        let candidate = Zeroizing::new(candidate.to_vec());
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                execute(
                    connection,
                    "INSERT OR IGNORE INTO audit_keys (id, secret) VALUES (1, ?1)",
                    [&candidate[..]],
                )?;
                let secret: Vec<u8> = connection
                    .prepare_cached("SELECT secret FROM audit_keys WHERE id = 1")
                    .map_err(store_error)?
                    .query_row([], |row| row.get(0))
                    .map_err(store_error)?;
                Ok(Zeroizing::new(secret))
            })
            .await
    }
}

#[async_trait]
impl EncryptionStore for SqliteStore {
    async fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine
            .read(|connection| {
                connection
                    .prepare_cached("SELECT check_value FROM master_key WHERE id = 1")
                    .map_err(store_error)?
                    .query_row([], |row| row.get(0))
                    .optional()
                    .map_err(store_error)
            })
            .await
    }

    async fn initialize_encryption(
        &self,
        check: &[u8],
        first: &WrappedDataKey,
    ) -> Result<bool, StoreError> {
        let (check, first) = (check.to_vec(), first.clone());
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                let inserted = execute(
                    connection,
                    "INSERT OR IGNORE INTO master_key (id, check_value) VALUES (1, ?1)",
                    [&check[..]],
                )?;
                if inserted == 0 {
                    return Ok(false);
                }
                execute(
                    connection,
                    "INSERT INTO data_keys (id, wrapped, created_at) VALUES (?1, ?2, ?3)",
                    params![
                        i64::from(first.id),
                        &first.wrapped[..],
                        first.created_at.unix_millis()
                    ],
                )?;
                Ok(true)
            })
            .await
    }

    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError> {
        self.engine
            .read(|connection| {
                query_all(
                    connection,
                    "SELECT id, wrapped, created_at FROM data_keys ORDER BY id",
                    [],
                    |row| {
                        let id: i64 = get(row, 0)?;
                        Ok(WrappedDataKey {
                            id: u32::try_from(id).map_err(|_| {
                                StoreError::Corrupt("data key id is out of range".into())
                            })?,
                            wrapped: get(row, 1)?,
                            created_at: Timestamp::from_unix_millis(get(row, 2)?),
                        })
                    },
                )
            })
            .await
    }

    async fn rewrap_data_keys(
        &self,
        old_check: &[u8],
        new_check: &[u8],
        keys: &[WrappedDataKey],
    ) -> Result<bool, StoreError> {
        let (old_check, new_check, keys) = (old_check.to_vec(), new_check.to_vec(), keys.to_vec());
        self.engine
            .write(move |tx| {
                let connection = tx.connection();
                let swapped = execute(
                    connection,
                    "UPDATE master_key SET check_value = ?1 WHERE id = 1 AND check_value = ?2",
                    [&new_check[..], &old_check[..]],
                )?;
                let stored: i64 = connection
                    .prepare_cached("SELECT COUNT(*) FROM data_keys")
                    .map_err(store_error)?
                    .query_row([], |row| row.get(0))
                    .map_err(store_error)?;
                if swapped != 1 || usize::try_from(stored).ok() != Some(keys.len()) {
                    // Nothing was changed that must be kept: the check did not match.
                    return Err(StoreError::Corrupt(REWRAP_REFUSED.into()));
                }
                for key in &keys {
                    let updated = execute(
                        connection,
                        "UPDATE data_keys SET wrapped = ?1 WHERE id = ?2",
                        params![&key.wrapped[..], i64::from(key.id)],
                    )?;
                    if updated != 1 {
                        return Err(StoreError::Corrupt(REWRAP_REFUSED.into()));
                    }
                }
                Ok(())
            })
            .await
            .map(|()| true)
            .or_else(|error| match error {
                // Refused: rolled back, so nothing of it was written.
                StoreError::Corrupt(message) if message == REWRAP_REFUSED => Ok(false),
                other => Err(other),
            })
    }

    fn install_cipher(&self, cipher: Arc<Cipher>) {
        self.cipher.install(cipher);
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn close(&self) {
        self.engine.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.engine
            .lookup(|connection| {
                connection
                    .prepare_cached("SELECT 1")
                    .map_err(store_error)?
                    .query_row([], |_| Ok(()))
                    .map_err(store_error)
            })
            .await?;
        self.engine.check_writable().await
    }
}

/// The marker of a re-wrap whose compare-and-swap did not match.
const REWRAP_REFUSED: &str = "the master key check or the data keys changed";

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OptionalExtension, params};

    use super::{
        ANY_UNCHAINED_AUDIT, AUDIT_EVENTS, DELETE_ACTIVITY, DELETE_TOKEN_CHAIN, EVENTS_AFTER,
        FIND_REFRESH_TOKEN, MOVE_SESSION, PURGE_EVENTS, PURGE_SUCCESSOR_PAIRS, ROTATING_SESSION,
        activity_key, rotating_session,
    };
    use crate::engine::UNCHAINED_AUDIT;
    use crate::rows::SESSION_COLUMN_COUNT;
    use crate::test_support::column;

    /// Two sessions, `s1` of alice and `s2` of bob, as the tests below need them.
    const TWO_SESSIONS: &str = "INSERT INTO sessions (id, user_id, device_id, device_type,
             claims, metadata, created_at, last_active_at, idle_expires_at, expires_at,
             access_expires_at)
         VALUES ('s1', 'alice', 'd1', 'desktop', '{}', '{}', 1, 1, 9, 9, 1),
                ('s2', 'bob', 'd2', 'desktop', '{}', '{}', 1, 1, 9, 9, 1)";

    /// SQLite's plan for `sql` with `parameters`, its steps joined by " | ".
    fn plan(connection: &Connection, sql: &str, parameters: impl rusqlite::Params) -> String {
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let steps: Vec<String> = statement
            .query_map(parameters, |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("steps");
        steps.join(" | ")
    }

    /// A refresh may write its session's `last_active_at`, `idle_expires_at`,
    /// `access_expires_at` (in the session's row until its activity row exists, migration 0020)
    /// and `dpop_jkt`: no index may cover them, or such a refresh writes one more page of it
    /// (see migrations 0007 and 0015). The announcer and the purge use `expiry_check_at`.
    #[test]
    fn no_index_of_sessions_covers_a_column_a_refresh_writes() {
        let connection = migrated();
        let indexes: Vec<String> = connection
            .prepare(
                "SELECT sql FROM sqlite_master
                 WHERE type = 'index' AND tbl_name = 'sessions' AND sql IS NOT NULL",
            )
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(indexes.len() >= 4, "{indexes:?}");
        for index in &indexes {
            for column in [
                "last_active_at",
                "idle_expires_at",
                "access_expires_at",
                "dpop_jkt",
            ] {
                assert!(!index.contains(column), "{index} covers {column}");
            }
        }
    }

    /// A database in memory with every migration applied.
    fn migrated() -> Connection {
        let mut connection = Connection::open_in_memory().expect("open");
        crate::migrate::run(&mut connection).expect("migrate");
        connection
    }

    /// A rotation moves its session forward in the session's activity row, next to the tokens
    /// issued when the session began, and leaves the session's own row as it was: `live_sessions` shows the
    /// row's values until the activity row exists, then the activity row's (migration 0020).
    #[test]
    fn a_rotation_moves_its_session_in_the_token_tree() {
        let connection = migrated();
        connection.execute_batch(TWO_SESSIONS).expect("sessions");
        let session = sessiond_core::SessionId::generate();
        let id = session.to_string();
        // Two tokens of stamp 7…7, as issued when the session began.
        let token = |position: u8| {
            let mut hash = [7u8; 32];
            hash[8..12].copy_from_slice(&[0, 0, 0, position]);
            sessiond_core::refresh::RefreshTokenHash(hash)
        };
        let key = activity_key(&token(5), session);
        connection
            .execute(
                "INSERT INTO sessions (id, user_id, device_id, device_type, claims, metadata,
                     created_at, last_active_at, idle_expires_at, expires_at, access_expires_at,
                     activity)
                 VALUES (?1, 'carol', 'd3', 'desktop', '{}', '{}', 1, 1, 9, 99, 2, ?2)",
                params![id, &key[..]],
            )
            .expect("session");
        for position in [5, 6] {
            connection
                .execute(
                    "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, 1)",
                    params![&token(position).0[..], id],
                )
                .expect("token");
        }
        // The session's times as `table` (its row, or the view) shows them.
        let times = |table: &str| -> (i64, i64, i64) {
            connection
                .query_row(
                    &format!(
                        "SELECT last_active_at, idle_expires_at, access_expires_at FROM {table}
                         WHERE id = ?1"
                    ),
                    [&id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .expect("times")
        };
        assert_eq!(times("live_sessions"), (1, 9, 2));
        let row = connection
            .query_row("SELECT rowid FROM sessions WHERE id = ?1", [&id], |row| {
                row.get::<_, i64>(0)
            })
            .expect("rowid");
        for (now, idle, access) in [(3, 30, 4), (5, 50, 6)] {
            let moved = connection
                .execute(MOVE_SESSION, params![&key[..], id, now, idle, access, row])
                .expect("move");
            assert_eq!(moved, 1);
            assert_eq!(times("live_sessions"), (now, idle, access));
            assert_eq!(
                times("sessions"),
                (1, 9, 2),
                "the session's row is not written"
            );
        }
        // The activity row comes right after the tokens of its stamp.
        let keys: Vec<Vec<u8>> = connection
            .prepare("SELECT hash FROM refresh_tokens WHERE session_id = ?1 ORDER BY hash")
            .expect("prepare")
            .query_map([&id], |row| row.get(0))
            .expect("keys")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            keys,
            [token(5).0.to_vec(), token(6).0.to_vec(), key.to_vec()]
        );
        // Another session whose first token has the same stamp has an activity row of its own.
        assert_ne!(
            activity_key(&token(5), sessiond_core::SessionId::generate()),
            key
        );
        // The other sessions, without an activity row, show their own row's values.
        let others: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM live_sessions
                 WHERE id IN ('s1', 's2') AND last_active_at = 1 AND idle_expires_at = 9",
                [],
                |row| row.get(0),
            )
            .expect("others");
        assert_eq!(others, 2);
    }

    /// `live_sessions` has every column of `sessions`: a column added to one must be added to
    /// the other, or reads through the view would not see it.
    #[test]
    fn live_sessions_has_every_column_of_sessions() {
        let connection = migrated();
        let columns = |table: &str| -> Vec<String> {
            connection
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .expect("prepare")
                .query_map([], |row| row.get(0))
                .expect("columns")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        let view = columns("live_sessions");
        for column in columns("sessions") {
            assert!(view.contains(&column), "live_sessions lacks {column}");
        }
    }

    /// A refresh reaches its session's row by row id (migration 0018), and through the index of
    /// sessions by id only as the fallback for a missing or stale row id: the lookup and a
    /// rotation's read of its session (whose user its event takes); a rotation reads its
    /// presented token by key.
    #[test]
    fn a_refresh_reaches_its_session_by_row_id() {
        let connection = migrated();
        let token = [1u8; 32];
        // The index of sessions by id is read only by the fallback for a missing or stale row
        // id, a scalar subquery SQLite runs only then.
        let by_row_id = |sql: &str, parameters: &[&dyn rusqlite::ToSql]| {
            let joined = plan(&connection, sql, parameters);
            let steps: Vec<&str> = joined.split(" | ").collect();
            assert!(
                steps.iter().any(|step| {
                    *step == "SEARCH sessions USING INTEGER PRIMARY KEY (rowid=?)"
                        || *step == "SEARCH s USING INTEGER PRIMARY KEY (rowid=?)"
                }),
                "{sql}: {joined}"
            );
            for (at, step) in steps.iter().enumerate() {
                if step.contains("sqlite_autoindex_sessions") {
                    assert!(
                        at > 0 && steps[at - 1].contains("SCALAR SUBQUERY"),
                        "{sql} reads the index of sessions by id: {joined}"
                    );
                }
            }
        };
        by_row_id(FIND_REFRESH_TOKEN, &[&&token[..]]);
        by_row_id(ROTATING_SESSION, &[&&token[..], &"s1"]);
        let presented = plan(&connection, ROTATING_SESSION, params![&token[..], "s1"]);
        assert!(
            presented.starts_with("SEARCH t USING PRIMARY KEY (hash=?)"),
            "{presented}"
        );
        // The lookup reads the activity row by its key (migration 0020).
        let lookup = plan(&connection, FIND_REFRESH_TOKEN, params![&token[..]]);
        assert!(
            lookup.contains("SEARCH a USING PRIMARY KEY (hash=?)"),
            "{lookup}"
        );
    }

    /// A token's row id of its session is a hint: a token written before migration 0018 (none),
    /// or whose session's row id has changed since (a row renumbered, or another session's row
    /// now at that id), is found and rotates through the index, and only ever with its own
    /// session; a spent token, or one of another session, does not rotate.
    #[test]
    fn a_tokens_row_id_of_its_session_is_only_a_hint() {
        let connection = migrated();
        connection.execute_batch(TWO_SESSIONS).expect("sessions");
        let row_of = |id: &str| -> i64 {
            connection
                .query_row("SELECT rowid FROM sessions WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .expect("session")
        };
        let (s1, s2) = (row_of("s1"), row_of("s2"));
        // Token n: its hash is n repeated; 1 without a row id, 2 with s1's, 3 with s2's (wrong),
        // 4 spent, 5 with a row id no row has.
        for (n, spent_at, row) in [(1u8, None, None), (2, None, Some(s1)), (3, None, Some(s2))]
            .into_iter()
            .chain([(4, Some(2), Some(s1)), (5, None, Some(s1 + s2 + 100))])
        {
            connection
                .execute(
                    "INSERT INTO refresh_tokens (hash, session_id, issued_at, spent_at, session_row)
                     VALUES (?1, 's1', 1, ?2, ?3)",
                    params![&[n; 32][..], spent_at, row],
                )
                .expect("token");
        }
        let found = |n: u8| -> Option<String> {
            connection
                .query_row(FIND_REFRESH_TOKEN, [&[n; 32][..]], |row| {
                    row.get::<_, String>(0)
                })
                .optional()
                .expect("lookup")
        };
        for n in [1, 2, 3, 5] {
            assert_eq!(
                found(n).as_deref(),
                Some("s1"),
                "token {n} finds its session"
            );
        }
        let rotating = |n: u8, session: &str| {
            rotating_session(
                &connection,
                &sessiond_core::refresh::RefreshTokenHash([n; 32]),
                session,
            )
            .expect("read")
            .map(|rotating| rotating.row)
        };
        assert_eq!(rotating(9, "s1"), None, "an unknown token");
        for n in [1, 2, 3, 5] {
            assert_eq!(rotating(n, "s1"), Some(s1), "token {n} rotates its session");
        }
        assert_eq!(rotating(2, "s2"), None, "another session's token");
        assert_eq!(rotating(4, "s1"), None, "a spent token");
        // s1 renumbered (as a VACUUM may do): its tokens follow it through the index.
        connection
            .execute(
                "UPDATE sessions SET rowid = ?1 WHERE id = 's1'",
                [s1 + s2 + 200],
            )
            .expect("renumber");
        assert_eq!(found(2).as_deref(), Some("s1"));
        assert_eq!(rotating(2, "s1"), Some(s1 + s2 + 200));
        // A revoked session does not rotate.
        connection
            .execute("UPDATE sessions SET revoked_at = 3 WHERE id = 's1'", [])
            .expect("revoke");
        assert_eq!(rotating(2, "s1"), None, "a revoked session");
    }

    /// The purge forgets, among the oldest pairs, those spent before its cutoff; a pair from
    /// before migration 0016 counts as spent when the migration ran; the newest pair stays
    /// whatever its age, so that its id is never given to another pair.
    #[test]
    fn the_pair_purge_reads_the_oldest_pairs_and_keeps_the_newest() {
        let connection = migrated();
        connection
            .execute_batch(
                "UPDATE successor_seals_unstamped SET migrated_at = 100;
                 INSERT INTO successor_seals (id, sealed, spent_at) VALUES
                     (1, X'01', NULL), (2, X'02', NULL), (3, X'03', 150), (4, X'04', 300),
                     (5, X'05', 120), (6, X'06', 130);",
            )
            .expect("pairs");
        let left = |connection: &Connection| -> Vec<i64> {
            connection
                .prepare("SELECT id FROM successor_seals ORDER BY id")
                .expect("prepare")
                .query_map([], |row| row.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("ids")
        };
        let purge = |connection: &Connection, before: i64, batch: i64| -> usize {
            connection
                .execute(PURGE_SUCCESSOR_PAIRS, params![before, batch])
                .expect("purge")
        };
        assert_eq!(purge(&connection, 100, 10), 0, "nothing spent before 100");
        assert_eq!(purge(&connection, 101, 2), 2, "the two unstamped pairs");
        assert_eq!(left(&connection), [3, 4, 5, 6]);
        // Only the oldest `batch` are read: of 3 (150) and 4 (300), 3 goes; 5 (120) waits.
        assert_eq!(purge(&connection, 200, 2), 1);
        assert_eq!(left(&connection), [4, 5, 6]);
        assert_eq!(
            purge(&connection, 200, 10),
            1,
            "5 goes; 6, the newest, stays"
        );
        assert_eq!(left(&connection), [4, 6]);
        assert_eq!(purge(&connection, 1_000, 10), 1);
        assert_eq!(left(&connection), [6]);
        let walk = plan(&connection, PURGE_SUCCESSOR_PAIRS, params![1_000, 10]);
        assert!(!walk.contains("TEMP B-TREE"), "{walk}");
    }

    /// The event purge reads the oldest events in commit order, through no index and no sort,
    /// and deletes among them only those before its cutoff, never the newest.
    #[test]
    fn the_event_purge_reads_the_oldest_events_in_commit_order() {
        let connection = migrated();
        connection
            .execute_batch(
                "INSERT INTO events (id, type, user_id, at, data) VALUES
                     (1, 'session.created', 'u', 100, '{}'), (2, 'session.created', 'u', 300, '{}'),
                     (3, 'session.created', 'u', 110, '{}'), (4, 'session.created', 'u', 120, '{}');",
            )
            .expect("events");
        let purge = |before: i64, batch: i64| -> usize {
            connection
                .execute(PURGE_EVENTS, params![before, batch])
                .expect("purge")
        };
        // Of the two oldest, 1 goes and 2 (not yet due) stays; 3, due, waits behind 2.
        assert_eq!(purge(200, 2), 1);
        assert_eq!(
            purge(200, 10),
            1,
            "3 goes once the whole table is read; 4, the newest, stays"
        );
        let left: Vec<i64> = column(&connection, "SELECT id FROM events ORDER BY id");
        assert_eq!(left, [2, 4]);
        assert_eq!(purge(1_000, 10), 1, "2 goes, 4 stays");
        let walk = plan(&connection, PURGE_EVENTS, params![200, 10]);
        assert!(
            !walk.contains("TEMP B-TREE") && !walk.contains("INDEX"),
            "{walk}"
        );
    }

    /// Asking whether anything is left to chain, and reading it, go through the partial index
    /// of unchained rows: the seal task asks on every tick, and the chain may hold millions.
    #[test]
    fn unchained_audit_rows_are_found_through_their_index() {
        let connection = migrated();
        let through_the_index = "SCAN audit_events USING INDEX audit_events_unsealed";
        assert_eq!(
            plan(&connection, ANY_UNCHAINED_AUDIT, []),
            through_the_index
        );
        assert_eq!(plan(&connection, UNCHAINED_AUDIT, [10]), through_the_index);
    }

    /// A row that holds an event id in place (migration 0019) is no event to a reader, and
    /// the purge deletes it once a newer event exists.
    #[test]
    fn a_row_holding_an_id_is_skipped_and_then_purged() {
        let connection = migrated();
        connection
            .execute_batch(
                "INSERT INTO events (id, type, user_id, at, data) VALUES (5, '', '', 0, '{}');
                 INSERT INTO events (type, user_id, at, data)
                 VALUES ('session.created', 'u', 100, '{}');",
            )
            .expect("events");
        let read: Vec<i64> = connection
            .prepare(EVENTS_AFTER)
            .expect("prepare")
            .query_map(
                params![0, Option::<String>::None, 10, Option::<String>::None],
                |row| row.get(0),
            )
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("ids");
        assert_eq!(read, [6]);
        assert_eq!(
            connection
                .execute(PURGE_EVENTS, params![50, 10])
                .expect("purge"),
            1
        );
        let left: i64 = connection
            .query_row("SELECT MIN(id) FROM events", [], |row| row.get(0))
            .expect("left");
        assert_eq!(left, 6);
    }

    /// The listings read forward from their cursor and filter on the way, whatever the
    /// filters: no index on users, sessions or types is read (so none is kept, migration 0013).
    #[test]
    fn listings_read_in_cursor_order_whatever_their_filters() {
        let connection = migrated();
        let audit = plan(
            &connection,
            AUDIT_EVENTS,
            params![
                0,
                "alice",
                "7f0e8ab4-46d4-4b38-9a43-0f0a8ef1c8a5",
                "session.refreshed",
                0,
                50
            ],
        );
        assert_eq!(
            audit,
            "SEARCH audit_events USING INTEGER PRIMARY KEY (rowid>?)"
        );
        let events = plan(
            &connection,
            EVENTS_AFTER,
            params![0, "alice", 50, r#"["session.refreshed"]"#],
        );
        assert!(
            events.starts_with("SEARCH events USING INTEGER PRIMARY KEY (rowid>?)"),
            "{events}"
        );
    }

    /// A spent token's sealed pair is read from `successor_seals` (where rotations put it) or,
    /// for a token spent before that table existed, from its own row.
    #[test]
    fn sealed_pairs_are_read_from_either_place() {
        let connection = migrated();
        connection.execute_batch(TWO_SESSIONS).expect("sessions");
        connection
            .execute_batch(
                "INSERT INTO successor_seals (id, sealed) VALUES (7, X'0A0B');
                 INSERT INTO refresh_tokens (hash, session_id, issued_at, spent_at,
                     successor_hash, sealed_successor)
                 VALUES (X'01', 's1', 1, 2, X'02', X'0C0D');
                 INSERT INTO refresh_tokens (hash, session_id, issued_at, spent_at,
                     successor_hash, successor_seal)
                 VALUES (X'02', 's1', 2, 3, X'03', 7);
                 INSERT INTO refresh_tokens (hash, session_id, issued_at)
                 VALUES (X'03', 's1', 3);",
            )
            .expect("rows");
        let sealed = |hash: &[u8]| -> Option<Vec<u8>> {
            connection
                .query_row(FIND_REFRESH_TOKEN, [hash], |row| {
                    row.get(SESSION_COLUMN_COUNT + 2)
                })
                .expect("found")
        };
        assert_eq!(sealed(&[1]), Some(vec![0x0C, 0x0D]), "in the row");
        assert_eq!(sealed(&[2]), Some(vec![0x0A, 0x0B]), "in successor_seals");
        assert_eq!(sealed(&[3]), None, "unspent");
        // Every table of the lookup is reached by its key, the session and the pair by their
        // row ids, the session's activity row by its key (the index of sessions by id only for
        // a missing or stale row id).
        let lookup = plan(&connection, FIND_REFRESH_TOKEN, [&[2u8][..]]);
        assert!(
            lookup.starts_with(
                "SEARCH t USING PRIMARY KEY (hash=?) | \
                 SEARCH s USING INTEGER PRIMARY KEY (rowid=?) | \
                 CORRELATED SCALAR SUBQUERY 2 | \
                 SEARCH sessions USING INTEGER PRIMARY KEY (rowid=?) | \
                 CORRELATED SCALAR SUBQUERY 3 | \
                 SEARCH sessions USING COVERING INDEX sqlite_autoindex_sessions_1 (id=?) | \
                 SEARCH a USING PRIMARY KEY (hash=?) LEFT-JOIN | \
                 SEARCH seal USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN | \
                 SEARCH successor USING PRIMARY KEY (hash=?) LEFT-JOIN"
            ) && !lookup.contains("SCAN"),
            "{lookup}"
        );
    }

    /// A purge deletes a session's tokens by walking its chain from the first token, and their
    /// sealed pairs with them; it stops at a successor of another session and at a token seen
    /// before, and reads no token by anything but its primary key.
    #[test]
    fn a_sessions_token_chain_goes_with_its_pairs_and_nothing_else() {
        let mut connection = Connection::open_in_memory().expect("open");
        connection
            .execute_batch("PRAGMA foreign_keys = ON")
            .expect("foreign keys");
        crate::migrate::run(&mut connection).expect("migrate");
        connection.execute_batch(TWO_SESSIONS).expect("sessions");
        connection
            .execute_batch(
                "INSERT INTO refresh_token_chains (session_id, first_token)
                 VALUES ('s1', X'01'), ('s2', X'21');
                 INSERT INTO successor_seals (id, sealed) VALUES (1, X'AA'), (2, X'BB'), (3, X'CC');
                 INSERT INTO refresh_tokens (hash, session_id, issued_at, spent_at,
                     successor_hash, successor_seal)
                 VALUES (X'01', 's1', 1, 2, X'02', 1),
                        (X'02', 's1', 2, 3, X'03', 2),
                        -- A damaged row: its successor is bob's first token.
                        (X'03', 's1', 3, 4, X'21', NULL),
                        -- A token no chain reaches.
                        (X'04', 's1', 4, 5, NULL, NULL),
                        (X'21', 's2', 1, 2, X'22', 3),
                        -- A damaged row: its successor is bob's first token again.
                        (X'22', 's2', 2, 3, X'21', NULL);
                 -- Each session's activity row (migration 0020).
                 UPDATE sessions SET activity = X'7331FF' WHERE id = 's1';
                 UPDATE sessions SET activity = X'7332FF' WHERE id = 's2';
                 INSERT INTO refresh_tokens (hash, session_id, issued_at)
                 VALUES (X'7331FF', 's1', 5), (X'7332FF', 's2', 5);",
            )
            .expect("rows");
        let left = |sql: &str| -> Vec<Vec<u8>> { column(&connection, sql) };
        let purge = |session: &str| {
            connection
                .execute(DELETE_TOKEN_CHAIN, [session])
                .expect("delete the chain");
            connection
                .execute(DELETE_ACTIVITY, [session])
                .expect("delete the activity row");
            connection
                .execute("DELETE FROM sessions WHERE id = ?1", [session])
                .expect("delete the session");
        };

        // Alice's walk stops at bob's token: his chain and his activity row are untouched.
        // X'04' is on no chain, so only a damaged database leaves a token behind.
        purge("s1");
        assert_eq!(
            left("SELECT hash FROM refresh_tokens ORDER BY hash"),
            vec![vec![0x04], vec![0x21], vec![0x22], b"s2\xff".to_vec()]
        );
        assert_eq!(left("SELECT sealed FROM successor_seals"), vec![vec![0xCC]]);
        assert_eq!(
            left("SELECT CAST(session_id AS BLOB) FROM refresh_token_chains"),
            vec![b"s2".to_vec()]
        );
        let walk = plan(&connection, DELETE_TOKEN_CHAIN, ["s2"]);
        assert!(
            !walk.contains("SCAN t") && !walk.contains("SCAN refresh_tokens"),
            "{walk}"
        );

        // Bob's chain loops back to its head: the walk ends, and all of it goes.
        purge("s2");
        assert_eq!(
            left("SELECT hash FROM refresh_tokens ORDER BY hash"),
            vec![vec![0x04]]
        );
        assert!(left("SELECT sealed FROM successor_seals").is_empty());
        assert!(left("SELECT CAST(session_id AS BLOB) FROM refresh_token_chains").is_empty());
    }

    /// Migration 0014 on a database written before it: each session's chain head is found,
    /// every token row is kept as it was, and no index or foreign key on the session is left.
    #[test]
    fn migration_0014_finds_each_chain_head_and_keeps_every_token() {
        let mut connection = Connection::open_in_memory().expect("open");
        connection
            .execute_batch("PRAGMA foreign_keys = ON")
            .expect("foreign keys");
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
                 ) STRICT",
            )
            .expect("migrations table");
        for (version, name, sql) in &crate::migrate::MIGRATIONS[..13] {
            assert!(*version <= 13);
            connection.execute_batch(sql).expect("an older migration");
            connection
                .execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 0)",
                    params![version, name],
                )
                .expect("recorded");
        }
        connection.execute_batch(TWO_SESSIONS).expect("sessions");
        connection
            .execute_batch(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at, spent_at,
                     successor_hash, sealed_successor)
                 VALUES (X'03', 's1', 3, NULL, NULL, NULL),
                        (X'02', 's1', 2, 3, X'03', X'0B'),
                        (X'01', 's1', 1, 2, X'02', X'0A'),
                        (X'21', 's2', 1, NULL, NULL, NULL);",
            )
            .expect("rows");
        let tokens = |connection: &Connection| -> Vec<(Vec<u8>, String, Option<Vec<u8>>)> {
            let mut statement = connection
                .prepare(
                    "SELECT hash, session_id, sealed_successor FROM refresh_tokens ORDER BY hash",
                )
                .expect("prepare");
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        let before = tokens(&connection);
        crate::migrate::run(&mut connection).expect("migrate to 0014");
        assert_eq!(tokens(&connection), before);
        let heads: Vec<(String, Vec<u8>)> = {
            let mut statement = connection
                .prepare("SELECT session_id, first_token FROM refresh_token_chains ORDER BY 1")
                .expect("prepare");
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(
            heads,
            vec![("s1".to_owned(), vec![0x01]), ("s2".to_owned(), vec![0x21])]
        );
        let indexes: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master
                 WHERE type = 'index' AND tbl_name = 'refresh_tokens'",
                [],
                |row| row.get(0),
            )
            .expect("indexes");
        assert_eq!(indexes, 0, "the table is its own primary key index");
        let foreign_keys: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM pragma_foreign_key_list('refresh_tokens')",
                [],
                |row| row.get(0),
            )
            .expect("foreign keys");
        assert_eq!(foreign_keys, 0);
    }
}
