//! Shared test helpers: a fresh schema per test, domain fixtures, and row counts.

use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use async_trait::async_trait;
use sessiond_core::SessionId;
use sessiond_store_conformance::{AuditRow, Backend};
use sessiond_store_postgres::{PostgresSettings, PostgresStore};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

pub use sessiond_store_conformance::fixtures::{T0, by_admin, create, event_for, ms, session_for};

/// The variable naming the PostgreSQL server the tests may use.
pub const DATABASE_URL_VARIABLE: &str = "SESSIOND_TEST_DATABASE_URL";

/// A schema of its own for one test, dropped when the test ends (even by a panic).
pub struct TestDb {
    base_url: String,
    schema: String,
    /// The URL that puts a connection in the test's schema.
    pub url: String,
    /// A small pool in the test's schema, for assertions on the rows themselves.
    pub raw: PgPool,
}

impl TestDb {
    /// A fresh, empty schema, or `None` (after saying so) when no database is configured.
    pub async fn create(test: &str) -> Option<Self> {
        let Ok(base_url) = std::env::var(DATABASE_URL_VARIABLE) else {
            say_skipped(test);
            return None;
        };
        let schema = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base_url)
            .await
            .expect("connect to the test database");
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create the test schema");
        admin.close().await.expect("close");
        let url = with_search_path(&base_url, &schema);
        let raw = PgPoolOptions::new()
            .max_connections(3)
            .connect(&url)
            .await
            .expect("connect to the test schema");
        Some(Self {
            base_url,
            schema,
            url,
            raw,
        })
    }

    /// A store on the test's schema, as one more sessiond instance would open it, not migrated.
    pub async fn open(&self, settings: &PostgresSettings) -> PostgresStore {
        PostgresStore::open(&self.url, settings)
            .await
            .expect("open the store")
    }

    /// A migrated store with default settings and a pool big enough for the concurrency tests.
    pub async fn store(&self) -> PostgresStore {
        let store = self
            .open(&PostgresSettings {
                max_connections: 16,
                ..PostgresSettings::default()
            })
            .await;
        store.migrate().await.expect("migrate");
        store
    }

    /// The number `sql` counts, with one optional UUID parameter.
    pub async fn count(&self, sql: &str, id: Option<SessionId>) -> i64 {
        let mut query = sqlx::query_scalar::<_, i64>(sql);
        if let Some(id) = id {
            query = query.bind(*id.as_uuid());
        }
        query.fetch_one(&self.raw).await.expect("count")
    }

    /// Where the server listens, for tests that put something between it and the store.
    pub fn server_address(&self) -> Option<SocketAddr> {
        let options = PgConnectOptions::from_str(&self.base_url).ok()?;
        if options.get_socket().is_some() || options.get_host().starts_with('/') {
            return None;
        }
        let host = if options.get_host() == "localhost" {
            "127.0.0.1"
        } else {
            options.get_host()
        };
        format!("{host}:{}", options.get_port()).parse().ok()
    }

    /// The server's URL naming database `name` instead of the test database.
    pub fn url_of_database(&self, name: &str) -> String {
        let (scheme, rest) = self
            .base_url
            .split_once("://")
            .expect("a URL with a scheme");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let query = path.find('?').map_or("", |start| &path[start..]);
        format!("{scheme}://{authority}/{name}{query}")
    }

    /// [`TestDb::url`] with the server's address replaced by `address`.
    pub fn url_via(&self, address: SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL with a scheme");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{address}{path}")
    }
}

#[async_trait(?Send)]
impl Backend for TestDb {
    type Store = PostgresStore;

    async fn create(test: &str) -> Option<Self> {
        TestDb::create(test).await
    }

    async fn store(&self) -> PostgresStore {
        TestDb::store(self).await
    }

    async fn count(&self, sql: &str, id: Option<SessionId>) -> i64 {
        TestDb::count(self, sql, id).await
    }

    async fn execute(&self, sql: &str) {
        sqlx::query(sql).execute(&self.raw).await.expect("execute");
    }

    async fn audit_rows(&self) -> Vec<AuditRow> {
        sqlx::query_as("SELECT type, severity, ip, at, details FROM audit_events ORDER BY seq")
            .fetch_all(&self.raw)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let base_url = self.base_url.clone();
        let schema = self.schema.clone();
        // Drop cannot await, and the test's runtime may be going away: use a runtime of our own
        // on a thread of our own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&base_url).await?;
                // A store the test did not close may still hold a transaction (a panic, or a
                // dropped transaction whose rollback had not been sent yet): end its
                // connections first so that dropping the schema does not wait for them.
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut admin)
                .await?;
                admin.execute("SET lock_timeout = '10s'").await?;
                admin
                    .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test schema {}", self.schema);
        }
    }
}

/// Says once per run, where it shows even though the harness captures test output, that the
/// tests needing PostgreSQL were skipped.
fn say_skipped(test: &str) {
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let line = format!(
            "{DATABASE_URL_VARIABLE} is unset: the PostgreSQL tests were skipped \
             (they pass without running), starting with {test}\n"
        );
        // Straight to the stream: the harness captures only the print macros.
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

/// `base` with connections put in `schema` and named after it, so that the test's connections
/// can be told apart from every other test's.
fn with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}&application_name={schema}")
}

/// A TCP proxy to the database that can stop forwarding, as a frozen server or a network
/// partition would: connections stay open, and nothing comes back.
pub struct FreezableProxy {
    pub address: SocketAddr,
    frozen: Arc<AtomicBool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let frozen = Arc::new(AtomicBool::new(false));
        let accepting = tokio::spawn({
            let frozen = Arc::clone(&frozen);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, Arc::clone(&frozen)));
                    tokio::spawn(pump(server_read, client_write, Arc::clone(&frozen)));
                }
            }
        });
        Self {
            address,
            frozen,
            accepting,
        }
    }

    /// Stops forwarding in both directions; bytes already read are held back.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Hold the bytes back for a minute at most, then drop the connection, so that no
            // test leaves a pump running for long.
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
