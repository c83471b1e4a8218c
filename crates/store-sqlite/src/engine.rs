//! The storage engine: one thread that owns the write connection, and a few read connections
//! for long reads.
//!
//! Every write of the process, and the lookups on the refresh path, are jobs sent to one
//! storage thread. Each time it wakes it takes everything queued (up to [`MAX_BATCH`] jobs),
//! answers the lookups first (they see only committed data, in one read transaction), then runs
//! the writes in one `BEGIN IMMEDIATE … COMMIT` transaction, which the writes queued while it
//! runs join before the commit (lookups queued meanwhile wait for the next wake-up; see
//! [`apply`]), so a wake-up costs one WAL append and at most one sync however many rotations,
//! creations and revocations it carries. With `synchronous = full` the sync is not this
//! thread's: a sync thread syncs the WAL behind each commit and only then sends the answers,
//! while this thread runs the next batch ([`crate::syncer`]). A write that fails is rolled back
//! alone and answered with its error, while the others commit: the batch first runs without
//! savepoints (a savepoint copies every page a write touches into its sub-journal, about a
//! twentieth of a refresh's CPU), and only when one of its writes fails is it rolled back and
//! run again from the start with each write in a savepoint of its own, so writes are closures
//! that may run twice and touch nothing but the transaction. Nobody is answered before the
//! commit is durable, nor shown a commit that is not yet (lookups and reads wait too; see
//! [`Engine::lookup_revealing`] for the one that need not), and when the commit fails every
//! write of the batch is answered with that failure and nothing of it is kept.
//!
//! Because this thread is the process's only writer, its page cache is never invalidated by
//! another connection of the process, so lookups served here read warm pages; because every
//! transaction of the file, in any process, holds SQLite's write lock from `BEGIN IMMEDIATE`
//! to `COMMIT`, the order of commits is the order of the audit chain, and the chain's hashes
//! are computed as the rows are written ([`WriteTx::append_audit`]). The statements of the
//! refresh path (its lookup, a rotation's writes, its audit row and event) run from statements
//! the storage thread keeps prepared itself ([`Prepared`]), cheaper to find than through
//! rusqlite's cache.
//!
//! Reads that may be long (listings, the audit log, event pages, statistics) run on a small
//! pool of read-only connections on Tokio's blocking threads, so they never hold up a commit.
//!
//! A checkpointer thread copies committed WAL pages into the database file and syncs it, on a
//! connection of its own, so that the storage thread neither copies nor waits for that sync;
//! once it has caught up with a large WAL, the storage thread copies the last few batches
//! itself and its next transaction starts the WAL over ([`Checkpointer`]). SQLite is built to
//! sync with `fdatasync`, as the sync thread does (`LIBSQLITE3_FLAGS` in `.cargo/config.toml`):
//! with its default, `fsync`, every checkpoint's sync also committed the file system's journal
//! for the file's new mtime.
//!
//! The storage thread also records whether writes are failing for want of space, permission
//! or a working device ([`WriteHealth`]): a write that fails so marks the store as unable to
//! write, and only a batch that commits a changed row clears the mark. While it is set, the
//! health check runs one small write (at most once per [`PROBE_INTERVAL`]) to learn whether
//! writing works again; while it is clear, the health check writes nothing.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use sessiond_core::Timestamp;
use sessiond_core::audit::{self, AuditEntry, CanonicalEntry, ChainHash, NewAuditEvent};
use sessiond_core::crypt::CipherSlot;
use sessiond_core::event::{self, NewEvent};
use sessiond_core::store::{CannotWrite, StoreError, WriteBlock};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{shared_failure, store_error, write_block, write_block_of};
use crate::syncer::{Deferred, Durability, Syncer};

/// Most jobs taken when the storage thread wakes, most writes in one transaction (with those
/// that join it, see [`apply`]), and most jobs held for the next wake-up while a transaction
/// runs; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 256;
/// Jobs waiting for the storage thread before new requests wait to enqueue (backpressure).
const QUEUE_DEPTH: usize = 8192;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// How soon the checkpointer looks again after a tick that copied pages. Each such tick syncs
/// the database file, and the WAL syncs that answer commits queue behind that sync: the fewer
/// pages it carries, the shorter they wait. Measured under refresh load (250,000 sessions,
/// `wrk -c32`): a p99 of 9–15 ms every 5 ms, against 12–15 ms every 10 ms and 18–22 ms every
/// 50 ms (and, earlier, 31–46 ms every 100 and 200 ms), at the same refresh rate; the
/// checkpointer's CPU per refresh is 22–23 µs every 5 ms, 21–22 µs every 10 ms and 14–15 µs
/// every 50 ms (10,000 sessions), since more frequent copies coalesce fewer rewrites of the
/// same page.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(5);
/// The longest the checkpointer waits between two ticks: once ticks have found nothing to copy
/// (the wait doubles from [`CHECKPOINT_INTERVAL`] with each such tick), so that an idle store
/// costs next to nothing.
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
/// Most checkpoints in one tick of the checkpointer while it catches up with the writer.
const CATCH_UP_PASSES: usize = 16;
/// The WAL size (frames) from which the storage thread starts the WAL over as soon as the
/// checkpointer has caught up, and from which a tick of the checkpointer repeats its passes
/// until it has ([`checkpoint`]); a smaller WAL starts over by itself once writes pause.
const RESTART_FRAMES: i64 = 1_000;
/// The WAL size (pages) at which the storage thread checkpoints by itself (SQLite's automatic
/// checkpoint), copying what the checkpointer has not yet and starting the WAL over: the
/// backstop for when the checkpointer falls behind (a long read holding it back, say). At 1,000
/// (SQLite's default) the writer spent its time copying; 10,000 is 40 MB.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;
/// While writes fail, the shortest time between two write probes of the health check.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// What a write probe inserts (and deletes again): a few pages, so that it needs the database
/// to grow, or free pages to reuse, as the inserts of real writes do.
const PROBE_BYTES: i64 = 16 * 1024;

/// A lookup run on the storage thread outside any transaction; answers with what to send, and
/// whether to send it only once the commits it may have seen are durable.
type ReadJob = Box<dyn FnOnce(&Prepared<'_>) -> (Deferred, bool) + Send>;

enum Job {
    Read(ReadJob),
    Write(Box<dyn WriteJob>),
    /// Checkpoint the WAL into the database file and stop.
    Close(oneshot::Sender<()>),
}

/// Runs SQL given its text, from a statement prepared once: a plain [`Connection`] through
/// rusqlite's statement cache, the storage thread's connection through its own
/// ([`Prepared`]). The text is always a constant, so the storage thread can find a statement by
/// where its text lives rather than by what it says.
pub(crate) trait Statements {
    /// Runs `work` on the statement of `sql`, reset afterwards.
    fn with_statement(
        &self,
        sql: &'static str,
        work: &mut dyn FnMut(&mut rusqlite::Statement<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

impl Statements for Connection {
    fn with_statement(
        &self,
        sql: &'static str,
        work: &mut dyn FnMut(&mut rusqlite::Statement<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut statement = self.prepare_cached(sql).map_err(store_error)?;
        work(&mut statement)
    }
}

/// The storage thread's connection, with the statements run through it (the refresh path's)
/// kept prepared and found by the address and length of their constant text.
///
/// rusqlite's own cache hashes the whole text twice per use (to take the statement out and to
/// put it back) and copies it into a new allocation each time, and a refresh runs about ten
/// statements here, most of them several hundred bytes long: under `bench/instructions.sh`
/// this cache saves about 4,500 instructions per rotation, 4 % of it. Statements are reset
/// after each use (rusqlite resets a statement after `execute` and when its rows are dropped),
/// and SQLite prepares a kept one again by itself when the schema changes. Everything else on
/// this connection (through [`Deref`](std::ops::Deref)) uses rusqlite's cache as before.
pub(crate) struct Prepared<'c> {
    connection: &'c Connection,
    /// Each text's address and length with its statement, in the order first run: a few dozen
    /// at most, since every text is a constant, so a scan beats hashing.
    statements: RefCell<Vec<(StatementKey, Option<rusqlite::Statement<'c>>)>>,
}

/// Where a statement's constant text lives, and its length.
type StatementKey = (usize, usize);

impl<'c> Prepared<'c> {
    fn new(connection: &'c Connection) -> Self {
        Self {
            connection,
            statements: RefCell::new(Vec::new()),
        }
    }
}

impl std::ops::Deref for Prepared<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Statements for Prepared<'_> {
    fn with_statement(
        &self,
        sql: &'static str,
        work: &mut dyn FnMut(&mut rusqlite::Statement<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let key = (sql.as_ptr() as usize, sql.len());
        // Taken out while it runs: a statement that `work` runs again meanwhile is prepared
        // anew, and the copy put back last is the one kept.
        let (slot, kept) = {
            let mut statements = self.statements.borrow_mut();
            match statements.iter().position(|(known, _)| *known == key) {
                Some(slot) => (
                    slot,
                    statements.get_mut(slot).and_then(|(_, kept)| kept.take()),
                ),
                None => {
                    statements.push((key, None));
                    (statements.len() - 1, None)
                }
            }
        };
        let mut statement = match kept {
            Some(statement) => statement,
            None => self.connection.prepare(sql).map_err(store_error)?,
        };
        let outcome = work(&mut statement);
        if let Some((_, place)) = self.statements.borrow_mut().get_mut(slot) {
            *place = Some(statement);
        }
        outcome
    }
}

/// Runs one statement through `connection`'s statements; returns the number of rows it changed.
pub(crate) fn execute(
    connection: &(impl Statements + ?Sized),
    sql: &'static str,
    parameters: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    let mut parameters = Some(parameters);
    let mut changed = 0;
    connection.with_statement(sql, &mut |statement| {
        let parameters = parameters.take().ok_or_else(ran_twice)?;
        changed = statement.execute(parameters).map_err(store_error)?;
        Ok(())
    })?;
    Ok(changed)
}

/// The first row of `sql`, decoded by `decode`, if there is one.
pub(crate) fn query_optional<T>(
    connection: &(impl Statements + ?Sized),
    sql: &'static str,
    parameters: impl rusqlite::Params,
    decode: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut input = Some((parameters, decode));
    let mut found = None;
    connection.with_statement(sql, &mut |statement| {
        let (parameters, decode) = input.take().ok_or_else(ran_twice)?;
        let mut rows = statement.query(parameters).map_err(store_error)?;
        if let Some(row) = rows.next().map_err(store_error)? {
            found = Some(decode(row)?);
        }
        Ok(())
    })?;
    Ok(found)
}

/// Every row of `sql`, decoded by `decode`.
pub(crate) fn query_all<T>(
    connection: &(impl Statements + ?Sized),
    sql: &'static str,
    parameters: impl rusqlite::Params,
    mut decode: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut parameters = Some(parameters);
    let mut decoded = Vec::new();
    connection.with_statement(sql, &mut |statement| {
        let parameters = parameters.take().ok_or_else(ran_twice)?;
        let mut rows = statement.query(parameters).map_err(store_error)?;
        while let Some(row) = rows.next().map_err(store_error)? {
            decoded.push(decode(row)?);
        }
        Ok(())
    })?;
    Ok(decoded)
}

/// [`Statements::with_statement`] runs its work once; a second run would have no input.
fn ran_twice() -> StoreError {
    StoreError::Backend("a statement's work ran twice".into())
}

/// How the connections are opened.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) path: PathBuf,
    pub(crate) synchronous_full: bool,
    pub(crate) busy_timeout: Duration,
    pub(crate) create_if_missing: bool,
    /// Page cache of the write connection, in KiB.
    pub(crate) writer_cache_kib: u32,
    /// Page cache of each read connection, in KiB.
    pub(crate) reader_cache_kib: u32,
    /// The size the write connection never grows the database beyond, in bytes.
    pub(crate) max_size: Option<u64>,
}

impl ConnectionSettings {
    fn open_writer(&self) -> Result<Connection, StoreError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.create_if_missing {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let connection = Connection::open_with_flags(&self.path, flags).map_err(store_error)?;
        connection
            .busy_timeout(self.busy_timeout)
            .map_err(store_error)?;
        // WAL: readers never block the writer and a commit appends to one file.
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(store_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(
                format!("the database refused WAL mode (journal mode {mode})").into(),
            ));
        }
        connection
            .execute_batch(&format!(
                "PRAGMA synchronous = {};
                 PRAGMA foreign_keys = ON;
                 PRAGMA temp_store = MEMORY;
                 PRAGMA cache_size = -{};
                 PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};",
                // With `full`, the WAL is synced after the commit, off this thread (`syncer`).
                "NORMAL",
                self.writer_cache_kib
            ))
            .map_err(store_error)?;
        if let Some(max_size) = self.max_size {
            let page_size: u64 = connection
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .map_err(store_error)?;
            let pages = (max_size / page_size.max(1)).max(1);
            // SQLite keeps the limit at the current size when the file is already larger.
            connection
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(store_error)?;
        }
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
    }

    fn synchronous(&self) -> &'static str {
        if self.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        }
    }

    fn open_checkpointer(&self) -> Result<Connection, StoreError> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(store_error)?;
        connection
            .busy_timeout(self.busy_timeout)
            .map_err(store_error)?;
        connection
            .execute_batch(&format!(
                "PRAGMA synchronous = {}; PRAGMA cache_size = -256;",
                self.synchronous()
            ))
            .map_err(store_error)?;
        Ok(connection)
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(store_error)?;
        connection
            .busy_timeout(self.busy_timeout)
            .map_err(store_error)?;
        connection
            .execute_batch(&format!(
                "PRAGMA cache_size = -{}; PRAGMA temp_store = MEMORY;",
                self.reader_cache_kib
            ))
            .map_err(store_error)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
    }
}

/// The handle to the storage thread and the read pool; cheap to clone.
#[derive(Clone)]
pub(crate) struct Engine {
    jobs: mpsc::Sender<Job>,
    readers: Arc<ReaderPool>,
    health: Arc<WriteHealth>,
    /// With `synchronous = full`: when commits are durable.
    durability: Option<Durability>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.readers.settings.path)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the write connection, runs `prepare` on it (migrations) and starts the storage
    /// thread.
    ///
    /// # Errors
    /// When the file cannot be opened or `prepare` fails.
    pub(crate) async fn start(
        settings: ConnectionSettings,
        readers: usize,
        cipher: Arc<CipherSlot>,
        prepare: impl FnOnce(&mut Connection) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<Self, StoreError> {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        let (started, start_result) = oneshot::channel();
        let writer_settings = settings.clone();
        let health = Arc::new(WriteHealth::default());
        let writer_health = Arc::clone(&health);
        // The store's thread names fit Linux's 15 bytes, so that `/proc/PID/task/*/comm` (and
        // `top -H`, `perf`) tell its three threads apart (`bench/threads.sh` reads them).
        std::thread::Builder::new()
            .name("sqlite-storage".into())
            .spawn(move || {
                let opened = writer_settings.open_writer().and_then(|mut connection| {
                    prepare(&mut connection)?;
                    Ok(connection)
                });
                let started_up = opened.and_then(|connection| {
                    let checkpointer = Checkpointer::start(&writer_settings)?;
                    let syncer = if writer_settings.synchronous_full {
                        Some(start_syncer(&connection, &writer_health)?)
                    } else {
                        None
                    };
                    Ok((connection, checkpointer, syncer))
                });
                match started_up {
                    Ok((connection, checkpointer, syncer)) => {
                        let _ = started.send(Ok(syncer.as_ref().map(Syncer::durability)));
                        serve(
                            connection,
                            receiver,
                            checkpointer,
                            syncer,
                            &writer_health,
                            &cipher,
                        );
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                }
            })
            .map_err(|error| StoreError::Backend(Box::new(error)))?;
        let durability = start_result
            .await
            .map_err(|_| unavailable("the storage thread ended while starting"))??;
        Ok(Self {
            jobs,
            health,
            durability,
            readers: Arc::new(ReaderPool {
                settings,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(readers.max(1))),
            }),
        })
    }

    /// Runs `work` in the next write transaction and answers once it is committed.
    ///
    /// `work` returning an error is rolled back alone and that error is the answer; a commit
    /// that fails answers every write of its batch with the failure. `work` may run twice (see
    /// the module documentation): it must do nothing outside the transaction.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Pending {
            work,
            outcome: None,
            reply,
        };
        self.jobs
            .send(Job::Write(Box::new(job)))
            .await
            .map_err(|_| unavailable("the storage thread has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the storage thread dropped the request"))?
    }

    /// Runs a short lookup on the storage thread, outside any transaction: it sees committed
    /// data only, through the warmest page cache of the process, and is answered once what it
    /// saw is durable.
    pub(crate) async fn lookup<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Prepared<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.lookup_revealing(work, |_| true).await
    }

    /// [`Engine::lookup`] for a caller that shows a client nothing of most answers before a
    /// write of its own, which is itself answered only once durable: `reveals` tells which
    /// answers wait for durability; the others are sent at once.
    pub(crate) async fn lookup_revealing<T, F>(
        &self,
        work: F,
        reveals: fn(&Result<T, StoreError>) -> bool,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Prepared<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Read(Box::new(move |connection: &Prepared<'_>| {
                let result = work(connection);
                let wait = reveals(&result);
                let send: Deferred = Box::new(move |failure: Option<&StoreError>| {
                    let _ = reply.send(match failure {
                        None => result,
                        Some(failure) => Err(failure.duplicate()),
                    });
                });
                (send, wait)
            })))
            .await
            .map_err(|_| unavailable("the storage thread has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the storage thread dropped the request"))?
    }

    /// Runs a read that may be long on a read-only connection, on a blocking thread; answers
    /// once what it saw is durable.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(&self.readers);
        let durability = self.durability.clone();
        let permit = Arc::clone(&pool.permits)
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the read connections are closed"))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let connection = pool.take()?;
            let result = work(&connection);
            pool.put(connection);
            match (result, durability) {
                (Ok(value), Some(durability)) => durability.wait().map(|()| value),
                (result, _) => result,
            }
        })
        .await
        .map_err(|error| StoreError::Backend(Box::new(error)))?
    }

    /// Checkpoints the WAL into the database file, stops the storage thread and closes the
    /// read connections. Later calls answer unavailable.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
        self.readers.permits.close();
        self.readers.clear();
    }

    /// Whether writes work, as cheaply as can be known: nothing at all is written while no
    /// write has failed for want of space, permission or a working device; after one has, a
    /// probe write (at most one per [`PROBE_INTERVAL`]; callers in between get the last
    /// answer) tells whether writing works again.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] with a [`CannotWrite`] source while writes fail so.
    pub(crate) async fn check_writable(&self) -> Result<(), StoreError> {
        match self.health.probe_due() {
            ProbeDue::Writable => Ok(()),
            ProbeDue::Recent(cannot) => Err(StoreError::Unavailable(Box::new(cannot))),
            ProbeDue::Now => match self.write(probe_write).await {
                Ok(()) => Ok(()),
                Err(error) => Err(match self.health.blocked() {
                    Some(cannot) => StoreError::Unavailable(Box::new(cannot)),
                    None => error,
                }),
            },
        }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.readers.settings.path
    }
}

/// A small write that needs new pages (or free ones), then gives them back: it fails when the
/// database cannot grow, is read-only, or its device fails, and commits otherwise.
fn probe_write(tx: &mut WriteTx<'_>) -> Result<(), StoreError> {
    let connection = tx.connection();
    connection
        .prepare_cached("INSERT INTO write_probe (filler) VALUES (zeroblob(?1))")
        .map_err(store_error)?
        .execute([PROBE_BYTES])
        .map_err(store_error)?;
    connection
        .prepare_cached("DELETE FROM write_probe")
        .map_err(store_error)?
        .execute([])
        .map_err(store_error)?;
    Ok(())
}

/// Whether the storage thread's writes fail for want of space, permission or a working device.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    blocked: Mutex<Option<Blocked>>,
}

#[derive(Debug, Clone)]
struct Blocked {
    cannot: CannotWrite,
    /// When the health check last probed (or the block was first seen).
    probed_at: Instant,
}

/// What the health check should do about writes.
enum ProbeDue {
    /// No write has failed so since the last commit.
    Writable,
    /// Writes failed, and were probed a moment ago: report this.
    Recent(CannotWrite),
    /// Writes failed: probe now (this caller alone; others get `Recent` meanwhile).
    Now,
}

impl WriteHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Blocked>> {
        self.blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A write failed with `cannot`.
    fn record_blocked(&self, cannot: CannotWrite) {
        let mut blocked = self.lock();
        let probed_at = blocked
            .as_ref()
            .map_or_else(Instant::now, |blocked| blocked.probed_at);
        *blocked = Some(Blocked { cannot, probed_at });
    }

    /// A batch committed that changed a row, with no write failing for want of space,
    /// permission or a device.
    fn record_written(&self) {
        let mut blocked = self.lock();
        if blocked.is_some() {
            tracing::info!("sqlite writes succeed again");
            *blocked = None;
        }
    }

    fn blocked(&self) -> Option<CannotWrite> {
        self.lock().as_ref().map(|blocked| blocked.cannot.clone())
    }

    fn probe_due(&self) -> ProbeDue {
        let mut blocked = self.lock();
        match blocked.as_mut() {
            None => ProbeDue::Writable,
            Some(blocked) if blocked.probed_at.elapsed() < PROBE_INTERVAL => {
                ProbeDue::Recent(blocked.cannot.clone())
            }
            Some(blocked) => {
                blocked.probed_at = Instant::now();
                ProbeDue::Now
            }
        }
    }
}

fn unavailable(message: &'static str) -> StoreError {
    StoreError::Unavailable(message.into())
}

struct ReaderPool {
    settings: ConnectionSettings,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match idle {
            Some(connection) => Ok(connection),
            None => self.settings.open_reader(),
        }
    }

    fn put(&self, connection: Connection) {
        // A connection left inside a transaction (a read that failed half-way) is dropped
        // rather than reused.
        if connection.is_autocommit() {
            self.idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(connection);
        }
    }

    fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// A write waiting for its batch.
trait WriteJob: Send {
    /// Runs the work inside the batch's transaction; `false` if it failed (and must be rolled
    /// back). A batch run again runs each of its jobs again, replacing the earlier outcome.
    fn run(&mut self, tx: &mut WriteTx<'_>) -> bool;
    /// What kept the job from writing, if it failed for want of space, permission or a
    /// working device.
    fn cannot_write(&self) -> Option<CannotWrite>;
    /// A copy of the job's own error, if it failed.
    fn own_error(&self) -> Option<StoreError>;
    /// The batch committed: send the answer.
    fn committed(self: Box<Self>);
    /// The batch did not commit: answer with `error`, or with the job's own error if it had one.
    fn failed(self: Box<Self>, error: StoreError);
}

struct Pending<T, F> {
    work: F,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send,
    F: FnMut(&mut WriteTx<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, tx: &mut WriteTx<'_>) -> bool {
        let outcome = (self.work)(tx).map_err(as_cannot_write);
        let succeeded = outcome.is_ok();
        self.outcome = Some(outcome);
        succeeded
    }

    fn cannot_write(&self) -> Option<CannotWrite> {
        let Some(Err(error)) = &self.outcome else {
            return None;
        };
        error.cannot_write().cloned().or_else(|| {
            write_block_of(error).map(|reason| CannotWrite {
                reason,
                detail: error_chain(error),
            })
        })
    }

    fn own_error(&self) -> Option<StoreError> {
        match &self.outcome {
            Some(Err(error)) => Some(error.duplicate()),
            _ => None,
        }
    }

    fn committed(self: Box<Self>) {
        let outcome = self
            .outcome
            .unwrap_or_else(|| Err(unavailable("the write never ran")));
        // The requester may have gone away; what committed stays committed.
        let _ = self.reply.send(outcome);
    }

    fn failed(self: Box<Self>, error: StoreError) {
        let answer = match self.outcome {
            Some(Err(own)) => Err(own),
            _ => Err(error),
        };
        let _ = self.reply.send(answer);
    }
}

/// The head of the audit chain, as read or as a write transaction has extended it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChainHead {
    pub(crate) seq: u64,
    pub(crate) hash: ChainHash,
}

/// The open write transaction a job runs in.
pub(crate) struct WriteTx<'c> {
    /// The storage thread's prepared statements ([`Prepared`]).
    statements: &'c (dyn Statements + 'c),
    /// The same connection, for everything else.
    connection: &'c Connection,
    /// Seals the audit rows' addresses.
    cipher: &'c CipherSlot,
    /// Read from `audit_head` at the first audit row of the transaction, written back before
    /// the commit.
    head: Option<ChainHead>,
    head_moved: bool,
}

impl std::fmt::Debug for WriteTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").finish_non_exhaustive()
    }
}

const INSERT_AUDIT: &str = "INSERT INTO audit_events
         (type, severity, user_id, session_id, ip, at, details, chain_seq, prev_hash, hash)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// The oldest `?1` audit rows not yet chained, in the order they were written: through the
/// partial index of them (migration 0019), whatever the size of the chain.
pub(crate) const UNCHAINED_AUDIT: &str =
    "SELECT chain_seq, type, severity, user_id, session_id, ip, at, details
     FROM audit_events WHERE hash IS NULL ORDER BY chain_seq LIMIT ?1";

const INSERT_EVENT: &str = "INSERT INTO events (type, user_id, session_id, at, data)
     VALUES (?1, ?2, ?3, ?4, ?5)";

impl<'c> WriteTx<'c> {
    fn new(connection: &'c Prepared<'_>, cipher: &'c CipherSlot) -> Self {
        Self {
            statements: connection,
            connection: connection.connection,
            cipher,
            head: None,
            head_moved: false,
        }
    }

    /// The connection, inside the transaction.
    pub(crate) fn connection(&self) -> &'c Connection {
        self.connection
    }

    /// The connection's statements prepared once, inside the transaction: what the statements
    /// of the refresh path run through.
    pub(crate) fn statements(&self) -> &'c (dyn Statements + 'c) {
        self.statements
    }

    fn head(&mut self) -> Result<ChainHead, StoreError> {
        if let Some(head) = self.head {
            return Ok(head);
        }
        let head = read_head(self.statements)?;
        self.head = Some(head);
        Ok(head)
    }

    /// Appends an audit event, chained: its seq is the head's plus one and its hash covers the
    /// head's hash and the row as stored. Also writes the live events it publishes.
    pub(crate) fn append_audit(&mut self, event: &NewAuditEvent) -> Result<(), StoreError> {
        let mut entry = CanonicalEntry::of(event);
        // Sealed before it is chained: the chain covers the address as stored.
        entry.set_ip(self.cipher.seal_audit_ip(&entry, event.ip.as_deref()));
        self.append_entry(&entry)?;
        for published in event::events_of_audit(event) {
            self.insert_event(&published)?;
        }
        Ok(())
    }

    fn append_entry(&mut self, written: &CanonicalEntry) -> Result<(), StoreError> {
        let head = self.head()?;
        let seq = head.seq + 1;
        let hash = written.chain_hash(seq, &head.hash);
        let entry = written.entry();
        execute(
            self.statements,
            INSERT_AUDIT,
            params![
                entry.kind,
                entry.severity,
                entry.user_id,
                entry.session_id,
                entry.ip,
                entry.at.unix_millis(),
                entry.details,
                stored_seq(seq)?,
                &head.hash[..],
                &hash[..],
            ],
        )?;
        self.head = Some(ChainHead { seq, hash });
        self.head_moved = true;
        Ok(())
    }

    /// Writes one live event.
    pub(crate) fn insert_event(&mut self, event: &NewEvent) -> Result<(), StoreError> {
        execute(
            self.statements,
            INSERT_EVENT,
            params![
                event.kind,
                event.user_id.as_str(),
                event.session_id.map(|id| id.to_string()),
                event.at.unix_millis(),
                serde_json::Value::Object(event.data.clone()).to_string(),
            ],
        )?;
        Ok(())
    }

    /// Chains audit rows written without a chain position (by a build that sealed them
    /// afterwards, or by hand), oldest first, at most `batch`; returns how many.
    pub(crate) fn seal_pending(&mut self, batch: u32) -> Result<u64, StoreError> {
        let pending = {
            let mut statement = self
                .connection
                .prepare_cached(UNCHAINED_AUDIT)
                .map_err(store_error)?;
            let rows = statement
                .query_map([i64::from(batch)], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        AuditEntry {
                            kind: row.get(1)?,
                            severity: row.get(2)?,
                            user_id: row.get(3)?,
                            session_id: row.get(4)?,
                            ip: row.get(5)?,
                            at: Timestamp::from_unix_millis(row.get(6)?),
                            details: row.get(7)?,
                        },
                    ))
                })
                .map_err(store_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(store_error)?
        };
        for (row_id, entry) in &pending {
            let head = self.head()?;
            let seq = head.seq + 1;
            let hash = audit::chain_hash(seq, &head.hash, entry);
            self.connection
                .prepare_cached(
                    "UPDATE audit_events SET chain_seq = ?1, prev_hash = ?2, hash = ?3
                     WHERE chain_seq = ?4",
                )
                .map_err(store_error)?
                .execute(params![stored_seq(seq)?, &head.hash[..], &hash[..], row_id])
                .map_err(store_error)?;
            self.head = Some(ChainHead { seq, hash });
            self.head_moved = true;
        }
        Ok(pending.len() as u64)
    }

    fn flush_head(&mut self) -> Result<(), rusqlite::Error> {
        if let (true, Some(head)) = (self.head_moved, self.head) {
            self.connection
                .prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")?
                .execute(params![
                    i64::try_from(head.seq).unwrap_or(i64::MAX),
                    &head.hash[..]
                ])?;
        }
        Ok(())
    }
}

/// The stored form of a chain seq.
pub(crate) fn stored_seq(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt("audit seq is out of range".into()))
}

/// The audit chain's head: the last row's `seq` and hash.
pub(crate) fn read_head(connection: &(impl Statements + ?Sized)) -> Result<ChainHead, StoreError> {
    let (seq, hash): (i64, Vec<u8>) = query_optional(
        connection,
        "SELECT seq, hash FROM audit_head WHERE id = 1",
        [],
        |row| {
            Ok((
                row.get(0).map_err(store_error)?,
                row.get(1).map_err(store_error)?,
            ))
        },
    )?
    .ok_or_else(|| StoreError::Corrupt("the audit head is missing".into()))?;
    Ok(ChainHead {
        seq: u64::try_from(seq)
            .map_err(|_| StoreError::Corrupt("audit head seq is negative".into()))?,
        hash: ChainHash::try_from(&hash[..])
            .map_err(|_| StoreError::Corrupt("audit head hash is not 32 bytes".into()))?,
    })
}

/// The sync thread for the write connection's WAL, named as SQLite names it: after the
/// database file's full path, symbolic links resolved, so that a database opened through a
/// link has its WAL synced where SQLite writes it.
fn start_syncer(connection: &Connection, health: &Arc<WriteHealth>) -> Result<Syncer, StoreError> {
    let database = connection
        .path()
        .filter(|path| !path.is_empty())
        .ok_or_else(|| StoreError::Backend("the database has no file to sync".into()))?;
    let failures = Arc::clone(health);
    Syncer::start(Path::new(database), move |cannot| {
        record_blocked(&failures, cannot);
    })
}

/// The storage thread's loop: until every handle is gone or it is told to close. Kept out of
/// line, so that a profile (and `bench/instructions.sh`) can name the storage thread's work.
#[inline(never)]
fn serve(
    connection: Connection,
    mut receiver: mpsc::Receiver<Job>,
    checkpointer: Checkpointer,
    syncer: Option<Syncer>,
    health: &WriteHealth,
    cipher: &CipherSlot,
) {
    let durability = syncer.as_ref().map(Syncer::durability);
    let prepared = Prepared::new(&connection);
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut writes: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    // Jobs taken while a batch's writes ran that could not join them: the next wake-up's.
    let mut held: Vec<Job> = Vec::new();
    while closing.is_none() {
        if held.is_empty() {
            let Some(first) = receiver.blocking_recv() else {
                break;
            };
            jobs.push(first);
        } else {
            jobs.append(&mut held);
        }
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let shared = begin_reads(&connection, &jobs);
        for job in jobs.drain(..) {
            match job {
                Job::Read(read) => match (read(&prepared), &durability) {
                    ((answer, true), Some(durability)) => durability.after_commits(answer),
                    ((answer, _), _) => answer(None),
                },
                Job::Write(write) => writes.push(write),
                Job::Close(done) => closing = Some(done),
            }
        }
        if shared {
            end_reads(&connection);
        }
        if !writes.is_empty() {
            if let Some(lost) = durability.as_ref().and_then(Durability::lost) {
                // A sync of the WAL failed: nothing committed from now on could be made durable.
                for write in writes.drain(..) {
                    write.failed(lost.duplicate());
                }
                continue;
            }
            // The writes queued while the batch's ran join its transaction; lookups (and a
            // close) queued meanwhile wait for the next wake-up, after the commit, so that no
            // lookup sees a write that is not committed. That wake-up takes at most
            // `MAX_BATCH` jobs too: once as many are held, the rest stay queued.
            let mut queued_write = || {
                while held.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(Job::Write(write)) => return Some(write),
                        Ok(other) => held.push(other),
                        Err(_) => return None,
                    }
                }
                None
            };
            apply(
                &prepared,
                &mut writes,
                health,
                durability.as_ref(),
                cipher,
                &mut queued_write,
            );
            if checkpointer.take_caught_up() {
                restart_wal(&connection);
            }
        }
    }
    // Whatever arrives after a close is refused (its reply is dropped: "unavailable").
    receiver.close();
    checkpointer.stop();
    if let Some(syncer) = syncer {
        syncer.stop();
    }
    // Every page back in the database file and the WAL emptied: the file alone holds the data.
    if let Err(error) = connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %error, "could not checkpoint the WAL at close");
    }
    drop(prepared);
    drop(connection);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Opens one read transaction for the lookups among `jobs` when there are several, so that
/// they take and let go of the WAL's read lock once (two `fcntl` calls on the shared-memory
/// file, and a look at the WAL index) instead of once each; answers whether it did. They see
/// the same committed data as they would one by one: nothing is written between them. When
/// the transaction cannot be opened, each lookup runs on its own as before.
fn begin_reads(connection: &Connection, jobs: &[Job]) -> bool {
    let reads = jobs
        .iter()
        .filter(|job| matches!(job, Job::Read(_)))
        .count();
    reads > 1 && statement(connection, "BEGIN").is_ok()
}

/// Ends the read transaction of [`begin_reads`]; it wrote nothing, so ending it cannot lose
/// anything, and a transaction left open by a failure is rolled back.
fn end_reads(connection: &Connection) {
    if statement(connection, "COMMIT").is_err() {
        roll_back_if_open(connection);
    }
}

/// The thread that copies committed pages from the WAL into the database file.
///
/// A checkpoint writes back every page the WAL holds and syncs the file; run by the storage
/// thread after a commit (SQLite's automatic checkpoint), it made every request of that batch
/// wait, and it was the largest single cost of a refresh. Here it runs on a connection of its
/// own every [`CHECKPOINT_INTERVAL`] while there is something to copy (every
/// [`IDLE_CHECKPOINT_INTERVAL`] otherwise), in PASSIVE mode, which never blocks the writer or a
/// reader; pages rewritten between two checkpoints are copied once. Once it has caught up, the
/// storage thread starts the WAL over with a checkpoint of its own that copies only the last
/// batches ([`checkpoint`], [`restart_wal`]).
struct Checkpointer {
    stop: Arc<AtomicBool>,
    /// Set when a tick caught up with a WAL of at least [`RESTART_FRAMES`] frames; taken by
    /// the storage thread.
    caught_up: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(settings: &ConnectionSettings) -> Result<Self, StoreError> {
        let connection = settings.open_checkpointer()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let caught_up = Arc::new(AtomicBool::new(false));
        let reached_end = Arc::clone(&caught_up);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpt".into())
            .spawn(move || {
                let mut pause = IDLE_CHECKPOINT_INTERVAL;
                let mut last = (0, 0);
                while !stopped.load(Ordering::Acquire) {
                    std::thread::park_timeout(pause);
                    if stopped.load(Ordering::Acquire) {
                        break;
                    }
                    pause = match checkpoint(&connection, &mut last) {
                        // Twice as long after each idle tick, up to the idle interval: a
                        // tick that happens to fall between two commits costs little.
                        Ok(Tick::Idle) => (pause * 2).min(IDLE_CHECKPOINT_INTERVAL),
                        Ok(Tick::Copied | Tick::Busy) => CHECKPOINT_INTERVAL,
                        Ok(Tick::CaughtUp) => {
                            reached_end.store(true, Ordering::Release);
                            CHECKPOINT_INTERVAL
                        }
                        Err(error) => {
                            tracing::debug!(error = %error, "checkpoint failed; retrying on the next tick");
                            IDLE_CHECKPOINT_INTERVAL
                        }
                    };
                }
            })
            .map_err(|error| StoreError::Backend(Box::new(error)))?;
        Ok(Self {
            stop,
            caught_up,
            thread,
        })
    }

    /// Whether a tick caught up with a large WAL since the last call.
    fn take_caught_up(&self) -> bool {
        self.caught_up.swap(false, Ordering::AcqRel)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        if self.thread.join().is_err() {
            tracing::warn!("the checkpoint thread panicked");
        }
    }
}

/// What one tick of the checkpointer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// Nothing copied: every committed page was in the database file already, or a reader's
    /// snapshot holds the rest back.
    Idle,
    /// Pages copied; the WAL is not (yet) one to start over.
    Copied,
    /// Another checkpoint held the WAL: nothing copied, but there may be something to.
    Busy,
    /// Caught up with a WAL of at least [`RESTART_FRAMES`] frames, which the storage thread
    /// then starts over ([`restart_wal`]).
    CaughtUp,
}

/// One tick of the checkpointer: PASSIVE checkpoints, which copy what is committed and never
/// wait for the writer. While the WAL is shorter than [`RESTART_FRAMES`], one pass; from
/// there, passes repeated (at most [`CATCH_UP_PASSES`]) until one leaves the WAL as the pass
/// before it did: all of it copied, or what is left held back by a reader. Each pass copies
/// what the writer appended during the one before, so the passes shrink quickly.
///
/// SQLite syncs the database file only in a checkpoint that copies the WAL to its end, and
/// lets a transaction start the WAL over only once it is copied and synced. One pass per tick
/// never caught up under steady writes, which left both to the writer's own checkpoint at
/// [`WRITER_CHECKPOINT_PAGES`]: its sync of every page copied since (tens of megabytes) held up
/// the next batch by 20 to 50 ms, several times a second under refresh load, and set the p99.
/// Repeating the passes on every tick, though, synced the database file two or three times a
/// tick (each pass reaches the WAL's end, since the writer appends only a few frames during
/// the sync before it), and those syncs were most of the checkpointer's CPU: so a small WAL,
/// which will start over by itself once writes pause, is copied once a tick, and the passes
/// repeat only once it is large enough to be worth starting over.
///
/// `last` is the WAL's size and how much of it is copied (frames) as the tick before left
/// them, and is updated; a tick whose first pass finds them unchanged has copied nothing and
/// is idle. (A WAL started over and grown back to exactly that state reads as idle too, which
/// only delays the next tick.)
///
/// Kept out of line, so that a profile (and `bench/instructions.sh`) can name the
/// checkpointer's work.
#[inline(never)]
fn checkpoint(connection: &Connection, last: &mut (i64, i64)) -> Result<Tick, rusqlite::Error> {
    tick(|| passive_checkpoint(connection), last)
}

/// [`checkpoint`], with each pass run by `pass` (which answers as [`passive_checkpoint`]).
fn tick(
    mut pass: impl FnMut() -> Result<(i64, i64), rusqlite::Error>,
    last: &mut (i64, i64),
) -> Result<Tick, rusqlite::Error> {
    let mut copied_any = false;
    for _ in 0..CATCH_UP_PASSES {
        let (frames, copied) = pass()?;
        if frames < 0 {
            // Another checkpoint (the storage thread's) holds the WAL.
            return Ok(if copied_any { Tick::Copied } else { Tick::Busy });
        }
        if (frames, copied) == *last {
            return Ok(if !copied_any {
                Tick::Idle
            } else if copied == frames && frames >= RESTART_FRAMES {
                Tick::CaughtUp
            } else {
                Tick::Copied
            });
        }
        *last = (frames, copied);
        copied_any = true;
        if frames < RESTART_FRAMES {
            return Ok(Tick::Copied);
        }
    }
    Ok(Tick::Copied)
}

/// A PASSIVE checkpoint: copies what is committed to the database file without waiting for
/// the writer or a reader. Answers the WAL's frames when it began and how many of them the
/// database file now holds (both -1 when another checkpoint held the WAL).
fn passive_checkpoint(connection: &Connection) -> Result<(i64, i64), rusqlite::Error> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

/// Run by the storage thread after a batch once the checkpointer has caught up with a large
/// WAL: copies the few frames committed since its last pass and syncs them, after which the
/// next transaction starts the WAL over. (A transaction starts it over by itself only when it
/// begins with every frame copied, which under steady writes the checkpointer rarely achieves
/// between two batches.)
fn restart_wal(connection: &Connection) {
    if let Err(error) = passive_checkpoint(connection) {
        tracing::debug!(error = %error, "could not checkpoint after the checkpointer caught up");
    }
}

/// Runs `writes` in one transaction and answers each; records in `health` whether writes fail
/// for want of space, permission or a working device. Audit addresses are sealed with
/// `cipher`.
///
/// The writes first run one after another with nothing between them, and once they have run,
/// each write that `queued_write` still finds (up to [`MAX_BATCH`] in all) joins them before
/// the commit: under load, the rotations whose lookups the same wake-up answered arrive while
/// the batch runs, and each commit then carries more of them, which share its pages (the audit
/// chain's head, the pages rows are appended to), its WAL append and its sync. If one
/// fails, the transaction is rolled back and the batch, with the writes that joined it, runs
/// again from the start, each write in a savepoint of its own, so that the failed one is rolled
/// back alone.
fn apply(
    connection: &Prepared<'_>,
    writes: &mut Vec<Box<dyn WriteJob>>,
    health: &WriteHealth,
    durability: Option<&Durability>,
    cipher: &CipherSlot,
    queued_write: &mut dyn FnMut() -> Option<Box<dyn WriteJob>>,
) {
    if let Err(error) = begin(connection) {
        fail_to_begin(connection, writes, health, &error);
        return;
    }
    let mut tx = WriteTx::new(connection, cipher);
    let mut changed_any = false;
    let mut all_kept = true;
    let mut next = 0;
    loop {
        if next == writes.len() {
            let joining = if writes.len() < MAX_BATCH {
                queued_write()
            } else {
                None
            };
            match joining {
                Some(write) => writes.push(write),
                None => break,
            }
        }
        let job = &mut writes[next];
        next += 1;
        let changes_before = connection.total_changes();
        if !job.run(&mut tx) {
            all_kept = false;
            break;
        }
        changed_any |= connection.total_changes() != changes_before;
    }
    if all_kept {
        let committed = commit(connection, &mut tx).map_err(|error| (error, None));
        answer(
            connection,
            writes,
            (health, durability),
            committed,
            None,
            changed_any,
        );
        return;
    }
    roll_back_if_open(connection);
    if let Err(error) = begin(connection) {
        fail_to_begin(connection, writes, health, &error);
        return;
    }
    let mut tx = WriteTx::new(connection, cipher);
    let mut broken = None;
    let mut cannot_write = None;
    let mut changed_any = false;
    for job in writes.iter_mut() {
        if let Err(error) = statement(connection, "SAVEPOINT job") {
            broken = Some((error, None));
            break;
        }
        let head = (tx.head, tx.head_moved);
        let changes_before = connection.total_changes();
        let kept = job.run(&mut tx);
        let ended = if kept {
            // Only a job that changed a row proves writes work again: one that changed nothing
            // (a revocation of a revoked session, a purge with nothing to purge) commits
            // without writing a page, even on a full disk.
            changed_any |= connection.total_changes() != changes_before;
            statement(connection, "RELEASE job")
        } else {
            (tx.head, tx.head_moved) = head;
            if let Some(cannot) = job.cannot_write() {
                cannot_write = Some(cannot);
            }
            statement(connection, "ROLLBACK TO job")
                .and_then(|()| statement(connection, "RELEASE job"))
        };
        if let Err(error) = ended {
            // SQLite may have rolled the whole transaction back on the job's failure (a full
            // disk or an I/O error can): its savepoint is gone, and the job's error, not
            // "no such savepoint", is what every write of the batch failed of.
            let cause = (!kept && connection.is_autocommit())
                .then(|| job.own_error())
                .flatten();
            broken = Some((error, cause));
            break;
        }
    }
    let committed = match broken {
        Some(broken) => Err(broken),
        None => commit(connection, &mut tx).map_err(|error| (error, None)),
    };
    answer(
        connection,
        writes,
        (health, durability),
        committed,
        cannot_write,
        changed_any,
    );
}

/// Writes back the audit chain's head and commits the batch's transaction.
fn commit(connection: &Connection, tx: &mut WriteTx<'_>) -> Result<(), rusqlite::Error> {
    tx.flush_head()?;
    statement(connection, "COMMIT")
}

/// Answers every write of a batch whose transaction could not begin.
fn fail_to_begin(
    connection: &Connection,
    writes: &mut Vec<Box<dyn WriteJob>>,
    health: &WriteHealth,
    error: &rusqlite::Error,
) {
    tracing::warn!(error = %error, writes = writes.len(), "cannot begin a write transaction");
    record_failure(health, error);
    for job in writes.drain(..) {
        job.failed(shared_failure(error));
    }
    roll_back_if_open(connection);
}

/// Answers every write of a batch once its transaction committed (and, with a [`Durability`],
/// once the commit is durable), or failed to with `committed`'s error (and the job error that
/// caused it, if known); records the outcome in `health`.
fn answer(
    connection: &Connection,
    writes: &mut Vec<Box<dyn WriteJob>>,
    (health, durability): (&WriteHealth, Option<&Durability>),
    committed: Result<(), (rusqlite::Error, Option<StoreError>)>,
    cannot_write: Option<CannotWrite>,
    changed_any: bool,
) {
    match committed {
        Ok(()) => {
            match cannot_write {
                Some(cannot) => record_blocked(health, cannot),
                None if changed_any => health.record_written(),
                None => {}
            }
            match durability {
                Some(durability) => durability.committed(writes.drain(..).map(|job| {
                    Box::new(move |failure: Option<&StoreError>| match failure {
                        None => job.committed(),
                        Some(failure) => job.failed(failure.duplicate()),
                    }) as Deferred
                })),
                None => {
                    for job in writes.drain(..) {
                        job.committed();
                    }
                }
            }
        }
        Err((error, cause)) => {
            tracing::warn!(error = %error, writes = writes.len(), "a write transaction failed; nothing of it was kept");
            roll_back_if_open(connection);
            let failure = match cause {
                Some(cause) => cause,
                None => shared_failure(&error),
            };
            let failure = named_read_only(failure, connection);
            match failure.cannot_write().cloned().or(cannot_write) {
                Some(cannot) => record_blocked(health, cannot),
                None => record_failure(health, &error),
            }
            for job in writes.drain(..) {
                job.failed(failure.duplicate());
            }
        }
    }
}

/// A job's failure for want of space, permission or a working device as a [`CannotWrite`], so
/// that its caller (and the HTTP answer's `reason`) knows it for what it is, like a failed
/// commit's.
fn as_cannot_write(error: StoreError) -> StoreError {
    match write_block_of(&error) {
        Some(reason) if error.cannot_write().is_none() => {
            StoreError::Unavailable(Box::new(CannotWrite {
                reason,
                detail: error_chain(&error),
            }))
        }
        _ => error,
    }
}

/// `failure` as `read_only` when it is an I/O error of a database whose file system has turned
/// read-only under it (ext4's `errors=remount-ro` after a device error, a forced remount):
/// SQLite reports such a write as an I/O error. Other failures are returned as they are.
fn named_read_only(failure: StoreError, connection: &Connection) -> StoreError {
    if write_block_of(&failure) != Some(WriteBlock::IoError) {
        return failure;
    }
    // The WAL, not the database file: SQLite holds no lock on the WAL, whereas closing any
    // descriptor of the database file would drop every POSIX lock this process holds on it.
    let Some(wal) = connection.path().map(|path| format!("{path}-wal")) else {
        return failure;
    };
    match std::fs::OpenOptions::new().write(true).open(&wal) {
        Err(error) if error.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
            StoreError::Unavailable(Box::new(CannotWrite {
                reason: WriteBlock::ReadOnly,
                detail: format!("{}: the file system is read-only", error_chain(&failure)),
            }))
        }
        _ => failure,
    }
}

/// Marks writes as failing when `error` is a want of space, permission or a working device.
fn record_failure(health: &WriteHealth, error: &rusqlite::Error) {
    if let Some(reason) = write_block(error) {
        record_blocked(
            health,
            CannotWrite {
                reason,
                detail: error.to_string(),
            },
        );
    }
}

fn record_blocked(health: &WriteHealth, cannot: CannotWrite) {
    tracing::warn!(reason = cannot.reason.as_str(), error = %cannot.detail, "sqlite cannot write");
    health.record_blocked(cannot);
}

/// `error` and its sources on one line.
fn error_chain(error: &StoreError) -> String {
    let mut line = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn begin(connection: &Connection) -> Result<(), rusqlite::Error> {
    // A transaction left open by a failure the code did not see is ended first, so one
    // failure can never wedge every later write.
    roll_back_if_open(connection);
    statement(connection, "BEGIN IMMEDIATE")
}

fn roll_back_if_open(connection: &Connection) {
    if !connection.is_autocommit()
        && let Err(error) = connection.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %error, "rollback failed");
    }
}

fn statement(connection: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc as std_mpsc};
    use std::time::Duration;

    use sessiond_core::crypt::CipherSlot;
    use sessiond_core::store::{StoreError, WriteBlock};

    use super::{
        ConnectionSettings, Engine, Prepared, QUEUE_DEPTH, Statements, Tick, execute,
        query_optional,
    };
    use crate::error::store_error;

    /// Connections to a new file `name` in `dir`.
    fn settings(dir: &tempfile::TempDir, name: &str) -> ConnectionSettings {
        ConnectionSettings {
            path: dir.path().join(name),
            synchronous_full: true,
            busy_timeout: Duration::from_secs(5),
            create_if_missing: true,
            writer_cache_kib: 2048,
            reader_cache_kib: 1024,
            max_size: None,
        }
    }

    async fn engine(dir: &tempfile::TempDir) -> Engine {
        engine_at(dir, "engine.db").await
    }

    /// An engine on the file `name` in `dir`, with its table of rows.
    async fn engine_at(dir: &tempfile::TempDir, name: &str) -> Engine {
        Engine::start(
            settings(dir, name),
            1,
            Arc::new(CipherSlot::default()),
            |connection| {
                connection
                    .execute_batch("CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY) STRICT")
                    .map_err(store_error)
            },
        )
        .await
        .expect("engine")
    }

    async fn insert_row(engine: &Engine, n: i64) -> Result<usize, StoreError> {
        engine
            .write(move |tx| {
                tx.connection()
                    .execute("INSERT INTO rows (n) VALUES (?1)", [n])
                    .map_err(store_error)
            })
            .await
    }

    fn count_rows(connection: &rusqlite::Connection) -> Result<i64, StoreError> {
        connection
            .query_row("SELECT count(*) FROM rows", [], |row| row.get(0))
            .map_err(store_error)
    }

    /// Waits until `jobs` jobs wait in the storage thread's queue.
    async fn until_queued(engine: &Engine, jobs: usize) {
        while QUEUE_DEPTH - engine.jobs.capacity() < jobs {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The numbers in the table of rows, in order.
    fn row_numbers(connection: &rusqlite::Connection) -> Result<Vec<i64>, StoreError> {
        let mut statement = connection
            .prepare("SELECT n FROM rows ORDER BY n")
            .map_err(store_error)?;
        let rows = statement
            .query_map([], |row| row.get(0))
            .map_err(store_error)?;
        rows.collect::<Result<_, _>>().map_err(store_error)
    }

    /// The lookups taken in one wake-up share one read transaction, see what was committed
    /// before it, and leave no transaction open behind them: the write taken with them commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_taken_together_share_one_read_transaction_and_close_it() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let engine = Arc::new(engine(&dir).await);
        insert_row(&engine, 1).await.expect("first row");
        // A lookup that holds the storage thread while the others queue up behind it (a write
        // would take the writes queued meanwhile into its own transaction).
        let (started, holding) = std_mpsc::channel();
        let slow = {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move {
                engine
                    .lookup(move |_| {
                        let _ = started.send(());
                        std::thread::sleep(Duration::from_millis(200));
                        Ok(())
                    })
                    .await
            })
        };
        holding.recv().expect("the slow lookup started");
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let engine = Arc::clone(&engine);
                tokio::spawn(async move {
                    engine
                        .lookup(|connection| {
                            Ok((!connection.is_autocommit(), count_rows(connection)?))
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let write = {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move { insert_row(&engine, 2).await })
        };
        slow.await.expect("task").expect("slow lookup");
        for lookup in lookups {
            let (in_transaction, rows) = lookup.await.expect("task").expect("lookup");
            assert!(
                in_transaction,
                "the queued lookups ran in one read transaction"
            );
            assert_eq!(
                rows, 1,
                "a lookup sees what was committed before its wake-up"
            );
        }
        write
            .await
            .expect("task")
            .expect("the write taken with the lookups commits");
        assert_eq!(
            engine
                .lookup(|connection| count_rows(connection))
                .await
                .expect("lookup"),
            2
        );
        let Ok(engine) = Arc::try_unwrap(engine) else {
            panic!("the tasks hold no engine any more");
        };
        engine.close().await;
    }

    /// The writes queued while a batch's writes run join its transaction, in the order they
    /// came; a lookup queued meanwhile waits for that commit and sees them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_during_a_batch_join_its_commit_and_lookups_wait_for_it() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let engine = Arc::new(engine(&dir).await);
        let durability = engine.durability.clone().expect("full sync has a syncer");
        let commits_before = durability.commits();
        let (started, holding) = std_mpsc::channel();
        let slow = {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move {
                engine
                    .write(move |tx| {
                        let _ = started.send(());
                        std::thread::sleep(Duration::from_millis(200));
                        tx.connection()
                            .execute("INSERT OR IGNORE INTO rows (n) VALUES (1)", [])
                            .map_err(store_error)
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || holding.recv())
            .await
            .expect("join")
            .expect("the slow write started");
        let lookup = {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move { engine.lookup(|connection| row_numbers(connection)).await })
        };
        until_queued(&engine, 1).await;
        let mut queued = Vec::new();
        for n in 2..=4_i64 {
            let engine_for_write = Arc::clone(&engine);
            queued.push(tokio::spawn(async move {
                engine_for_write
                    .write(move |tx| {
                        // Each sees the rows of the writes before it in the transaction.
                        let before = count_rows(tx.connection())?;
                        tx.connection()
                            .execute("INSERT INTO rows (n) VALUES (?1)", [n])
                            .map_err(store_error)?;
                        Ok(before)
                    })
                    .await
            }));
            // Queued one after another, so that their order is known.
            until_queued(&engine, n as usize).await;
        }
        slow.await.expect("task").expect("slow write");
        for (index, write) in queued.into_iter().enumerate() {
            let before = write.await.expect("task").expect("queued write");
            assert_eq!(
                before,
                index as i64 + 1,
                "the writes ran in the order they came"
            );
        }
        assert_eq!(
            durability.commits() - commits_before,
            1,
            "the queued writes committed with the slow one"
        );
        assert_eq!(
            lookup.await.expect("task").expect("lookup"),
            vec![1, 2, 3, 4],
            "the lookup queued before them ran after their commit"
        );
        let Ok(engine) = Arc::try_unwrap(engine) else {
            panic!("the tasks hold no engine any more");
        };
        engine.close().await;
    }

    /// With `synchronous = full`, a write is answered only once its commit is durable, and so
    /// is a lookup that may show it; a read connection's answer likewise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_full_sync_every_answer_comes_after_the_sync_of_what_it_saw() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let engine = engine(&dir).await;
        let durability = engine.durability.clone().expect("full sync has a syncer");
        for n in 1..=20_i64 {
            insert_row(&engine, n).await.expect("write");
            assert!(durability.settled(), "write {n} answered before its sync");
            assert_eq!(
                engine
                    .lookup(|connection| count_rows(connection))
                    .await
                    .expect("lookup"),
                n
            );
        }
        // Every sync found the WAL SQLite writes (a sync that fails fails its writes).
        assert!(dir.path().join("engine.db-wal").exists());
        assert_eq!(engine.read(count_rows).await.expect("read"), 20);
        engine.close().await;
    }

    /// Once a sync of the WAL has failed, writes are refused until the engine is reopened, even
    /// when syncing would succeed again: here the WAL is unlinked under the running engine (its
    /// commits would not survive a restart), and a new file put at its path would sync fine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_sync_of_the_wal_writes_are_refused_until_reopened() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let engine = engine(&dir).await;
        insert_row(&engine, 1).await.expect("write");
        let wal = dir.path().join("engine.db-wal");
        std::fs::remove_file(&wal).expect("unlink the WAL");
        let refused = |result: Result<usize, StoreError>| {
            result
                .err()
                .and_then(|error| error.cannot_write().map(|c| c.reason))
        };
        assert_eq!(
            refused(insert_row(&engine, 2).await),
            Some(WriteBlock::IoError)
        );
        std::fs::write(&wal, b"").expect("a file at the WAL's path");
        assert_eq!(
            refused(insert_row(&engine, 3).await),
            Some(WriteBlock::IoError)
        );
        assert!(
            engine.read(count_rows).await.is_err(),
            "a read of commits not durable"
        );
        assert_eq!(
            refused(engine.check_writable().await.map(|()| 0)),
            Some(WriteBlock::IoError)
        );
        engine.close().await;
        // SQLite removes a WAL by its name when its last connection closes; the stand-in may
        // be gone already.
        let _ = std::fs::remove_file(&wal);
        // Reopened: the commit answered before the failure is there, the refused write is not
        // (the one whose sync failed was committed; its durability was unknown).
        let engine = engine_at(&dir, "engine.db").await;
        let rows = engine.read(row_numbers).await.expect("read");
        assert!(rows == [1] || rows == [1, 2], "{rows:?}");
        engine.close().await;
    }

    /// SQLite names the WAL after the database file with its symbolic links resolved; the
    /// sync thread syncs that file, not one beside the link.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_opened_through_a_symbolic_link_has_the_wal_sqlite_writes_synced() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        engine_at(&dir, "data/engine.db").await.close().await;
        std::os::unix::fs::symlink(
            dir.path().join("data/engine.db"),
            dir.path().join("link.db"),
        )
        .expect("symlink");
        let engine = engine_at(&dir, "link.db").await;
        for n in 1..=3_i64 {
            insert_row(&engine, n)
                .await
                .expect("a write through the link");
        }
        assert!(dir.path().join("data/engine.db-wal").exists());
        assert!(!dir.path().join("link.db-wal").exists());
        assert_eq!(engine.read(count_rows).await.expect("read"), 3);
        engine.close().await;
    }

    /// A batch whose writes all succeed runs without savepoints; one with a failing write is
    /// run again with a savepoint per write. Either way the failed write leaves nothing, every
    /// other write of the batch commits exactly once, and each is answered with its own
    /// outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_rolled_back_alone_and_the_rest_of_its_batch_commits_once() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let engine = engine(&dir).await;

        // Hold the storage thread in a write of its own until the batch under test is queued.
        let (started, has_started) = std_mpsc::channel();
        let (release, released) = std_mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let engine = engine.clone();
            async move {
                engine
                    .write(move |_tx| {
                        let _ = started.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || has_started.recv())
            .await
            .expect("join")
            .expect("the blocker started");

        let failing = 3;
        let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..6).map(|_| AtomicUsize::new(0)).collect());
        let writes: Vec<_> = (1..=5_i64)
            .map(|n| {
                let engine = engine.clone();
                let runs = Arc::clone(&runs);
                tokio::spawn(async move {
                    engine
                        .write(move |tx| {
                            runs[n as usize].fetch_add(1, Ordering::SeqCst);
                            tx.connection()
                                .execute("INSERT INTO rows (n) VALUES (?1)", [n])
                                .map_err(store_error)?;
                            if n == failing {
                                return Err(StoreError::Corrupt("refused after writing".into()));
                            }
                            Ok(n)
                        })
                        .await
                })
            })
            .collect();
        until_queued(&engine, 5).await;
        // The queued writes join the blocker's transaction, and the blocker runs again with
        // them in savepoints: it must not wait a second time.
        release.send(()).expect("release the blocker");
        drop(release);
        blocker.await.expect("join").expect("the blocker committed");

        for (index, write) in writes.into_iter().enumerate() {
            let n = index as i64 + 1;
            let answer = write.await.expect("join");
            if n == failing {
                assert!(matches!(answer, Err(StoreError::Corrupt(_))), "{answer:?}");
            } else {
                assert_eq!(answer.expect("committed"), n);
            }
        }
        // The failing write ran in the first pass and again with savepoints.
        assert_eq!(runs[failing as usize].load(Ordering::SeqCst), 2);
        let stored = engine
            .lookup(|connection| row_numbers(connection))
            .await
            .expect("rows");
        assert_eq!(stored, vec![1, 2, 4, 5]);
        engine.close().await;
    }

    /// The checkpointer's tick reports a large WAL only once it has copied all of it. A
    /// transaction open meanwhile commits onto the same WAL, and so would every later one; the
    /// storage thread's checkpoint after that commit makes the next transaction start the WAL
    /// over.
    #[test]
    fn a_caught_up_checkpointer_lets_the_writer_start_a_large_wal_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(&dir, "wal.db");
        let writer = settings.open_writer().expect("writer");
        writer
            .execute_batch("CREATE TABLE pages (n INTEGER PRIMARY KEY, filler BLOB) STRICT")
            .expect("table");
        let checkpointer = settings.open_checkpointer().expect("checkpointer");
        let write_pages = |pages: i64| {
            writer
                .execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                     INSERT INTO pages (filler) SELECT zeroblob(4000) FROM n",
                    [pages],
                )
                .expect("insert");
        };
        // The WAL's frames once a last checkpoint has copied them.
        let frames = || -> i64 { super::passive_checkpoint(&checkpointer).expect("wal").0 };
        // One tick of the checkpointer, which remembers the WAL's size and how much of it is
        // copied from one tick to the next.
        let last_tick = std::cell::Cell::new((0, 0));
        let tick = || -> Tick {
            let mut last = last_tick.get();
            let tick = super::checkpoint(&checkpointer, &mut last).expect("tick");
            last_tick.set(last);
            tick
        };
        // A write committed while the checkpointer's tick runs.
        let write_during_tick = || -> Tick {
            writer.execute_batch("BEGIN IMMEDIATE").expect("begin");
            write_pages(5);
            let tick = tick();
            writer.execute_batch("COMMIT").expect("commit");
            tick
        };

        // The table's creation is copied; with nothing written since, the next tick is idle.
        assert_eq!(tick(), Tick::Copied);
        assert_eq!(tick(), Tick::Idle);
        // A small WAL, copied whole: caught up, but not worth a checkpoint of the writer's.
        write_pages(10);
        assert_eq!(tick(), Tick::Copied);
        // Nothing new since: idle, so that the next tick comes later.
        assert_eq!(tick(), Tick::Idle);
        write_pages(1);
        assert_eq!(tick(), Tick::Copied);

        // A large WAL that a reader's older snapshot keeps from being copied whole: not caught up.
        let reader = settings.open_reader().expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader
            .query_row("SELECT count(*) FROM pages", [], |row| row.get(0))
            .expect("read");
        write_pages(1_200);
        assert_eq!(tick(), Tick::Copied);
        // Still held back, with nothing written since: idle, so that the next tick comes later.
        assert_eq!(tick(), Tick::Idle);
        reader.execute_batch("COMMIT").expect("end");

        // Copied whole: reported. Without the writer's checkpoint, what follows keeps growing
        // the WAL.
        assert_eq!(write_during_tick(), Tick::CaughtUp);
        write_pages(1);
        let grown = frames();
        assert!(grown > 1_200, "{grown} frames");

        // With it, the next transaction starts the WAL over and the WAL holds that one alone.
        write_pages(1_200);
        assert_eq!(write_during_tick(), Tick::CaughtUp);
        super::restart_wal(&writer);
        write_pages(1);
        let restarted = frames();
        assert!(
            restarted < 10,
            "the WAL was not started over: {restarted} frames"
        );
    }

    /// Each pass that reaches the WAL's end syncs the database file: a tick repeats them only
    /// for a WAL large enough to start over, however much the writer appended meanwhile.
    #[test]
    fn a_tick_repeats_its_passes_only_for_a_wal_worth_starting_over() {
        // The WAL as each pass finds it, (frames, copied): the writer commits a few frames
        // during every pass until the third.
        let run = |start: i64| -> (Tick, usize, (i64, i64)) {
            let states = [
                (start, start),
                (start + 4, start + 4),
                (start + 6, start + 6),
            ];
            let mut passes = 0;
            let mut last = (0, 0);
            let tick = super::tick(
                || {
                    let state = states[passes.min(states.len() - 1)];
                    passes += 1;
                    Ok(state)
                },
                &mut last,
            )
            .expect("tick");
            (tick, passes, last)
        };
        // A small WAL: one pass, one sync, whatever was committed during it.
        assert_eq!(run(100), (Tick::Copied, 1, (100, 100)));
        // A large one: passes until one finds nothing new, so that it can start over.
        let large = super::RESTART_FRAMES + 100;
        assert_eq!(run(large), (Tick::CaughtUp, 4, (large + 6, large + 6)));
        // Nothing new since the last tick: idle after one pass.
        let mut last = (large, large);
        let idle = super::tick(|| Ok((large, large)), &mut last).expect("tick");
        assert_eq!(idle, Tick::Idle);
    }

    #[test]
    fn the_storage_threads_statements_are_prepared_once_and_follow_the_schema() {
        const INSERT: &str = "INSERT INTO t (x) VALUES (?1)";
        const COUNT: &str = "SELECT COUNT(*) FROM t";
        let connection = rusqlite::Connection::open_in_memory().expect("open");
        connection
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("table");
        let prepared = Prepared::new(&connection);
        let count = || {
            query_optional(&prepared, COUNT, [], |row| {
                row.get::<_, i64>(0).map_err(store_error)
            })
            .expect("count")
        };
        for x in 0..3 {
            assert_eq!(execute(&prepared, INSERT, [x]).expect("insert"), 1);
        }
        assert_eq!(count(), Some(3));
        assert_eq!(
            prepared.statements.borrow().len(),
            2,
            "one statement per text"
        );

        // A statement run again while it runs is prepared anew; the one kept still works.
        let mut inner = None;
        prepared
            .with_statement(COUNT, &mut |_| {
                inner = count();
                Ok(())
            })
            .expect("nested");
        assert_eq!(inner, Some(3));
        assert_eq!(count(), Some(3));

        // After the schema changes, a kept statement is prepared again by SQLite.
        connection
            .execute_batch("ALTER TABLE t ADD COLUMN y INTEGER DEFAULT 7")
            .expect("alter");
        assert_eq!(execute(&prepared, INSERT, [9]).expect("insert"), 1);
        assert_eq!(count(), Some(4));

        // A failed statement leaves its kept copy usable.
        assert!(execute(&prepared, "INSERT INTO missing (x) VALUES (?1)", [1]).is_err());
        assert!(
            execute(&prepared, INSERT, [1, 2]).is_err(),
            "wrong parameter count"
        );
        assert_eq!(execute(&prepared, INSERT, [10]).expect("insert"), 1);
        assert_eq!(count(), Some(5));
    }
}
