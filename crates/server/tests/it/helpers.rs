//! `TestApp`: a running server on a port-0 listener, its clock, its database and a client.
//!
//! Every HTTP test runs once per store: `on_every_store!` turns each listed test into a
//! `sqlite::` and a `postgres::` test, and `TestApp::spawn` builds the server on the store of
//! the test it runs in. The PostgreSQL half needs `SESSIOND_TEST_DATABASE_URL` and says so
//! when it is absent; each app gets a schema of its own.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_core::refresh::RefreshToken;
use sessiond_core::{ManualClock, Timestamp};
use sessiond_server::AppState;
use sessiond_server::config::{Config, RawConfig};
use sessiond_testkit::{RunningServer, init_logging, wall_clock_now};
use tempfile::TempDir;

pub use sessiond_testkit::{ADMIN_KEY, PgSchema, postgres_url};
/// A quota no test reaches: the test apps' default for every rate limit.
pub const UNREACHED_LIMIT: &str = "1000000/1m";
/// The master key of PostgreSQL test apps (SQLite apps generate one next to their file, as
/// development does): every app on one schema, restarts included, must share it.
pub const TEST_MASTER_KEY: &str = "c2Vzc2lvbmQtdGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGU=";
/// What a `sessiond` command on `database_url` needs to open the database a test app made:
/// nothing for SQLite (development's key file lies next to the database), the test key for
/// PostgreSQL.
pub fn master_key_env(database_url: &str) -> Vec<(&'static str, &'static str)> {
    if database_url.starts_with("postgres") {
        vec![("SESSIOND_MASTER_KEY", TEST_MASTER_KEY)]
    } else {
        Vec::new()
    }
}
pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// The store a test's servers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

impl Backend {
    /// Runs `test` with servers on this store.
    pub async fn run(self, test: impl std::future::Future<Output = ()>) {
        if self == Backend::Postgres && postgres_url().is_none() {
            eprintln!("SESSIOND_TEST_DATABASE_URL is not set: PostgreSQL variant not run");
            return;
        }
        BACKEND.scope(self, test).await;
    }

    /// The table to read a session's `last_active_at`, `idle_expires_at` and
    /// `access_expires_at` from: SQLite keeps them beside the session's tokens once it has
    /// been refreshed, and its view `live_sessions` shows them in place (migration 0020).
    pub fn live_sessions(self) -> &'static str {
        match self {
            Backend::Sqlite => "live_sessions",
            Backend::Postgres => "sessions",
        }
    }

    fn current() -> Self {
        BACKEND
            .try_with(|backend| *backend)
            .unwrap_or(Backend::Sqlite)
    }
}

/// Declares each listed `async fn` test once per store, as `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_every_store {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::helpers::Backend::Sqlite.run(super::$test()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::helpers::Backend::Postgres.run(super::$test()).await;
                }
            )+
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    pub dir: Arc<TempDir>,
    pub backend: Backend,
    /// The PostgreSQL schema of this app, when it runs on PostgreSQL; shared with the app a
    /// restart makes, and dropped with the last of them.
    pub schema: Option<Arc<PgSchema>>,
    pub config: Config,
    server: RunningServer,
}

/// A response: status and JSON body (`Value::Null` when the body is empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server whose settings `configure` may change.
    pub async fn spawn_with(configure: impl FnOnce(&mut RawConfig)) -> Self {
        init_logging();
        let dir = Arc::new(TempDir::new().expect("temp dir"));
        let backend = Backend::current();
        let (database_url, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("sessiond.db").display()),
                None,
            ),
            Backend::Postgres => {
                let base = postgres_url().expect("PostgreSQL variant runs only with a URL");
                let schema = PgSchema::create(&base, "it").await;
                (schema.url(), Some(Arc::new(schema)))
            }
        };
        let mut raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            database_url: Some(database_url.into()),
            admin_keys: Some(ADMIN_KEY.into()),
            issuer: Some("http://sessiond.test".into()),
            sqlite_synchronous: Some("normal".into()),
            // Every request comes from 127.0.0.1 and the clock stands still unless a test
            // moves it, so the default limits would soon refuse the suite's own traffic. The
            // limits stay on, so every test goes through them, but no test reaches them
            // unless it lowers one (see `security.rs`).
            rate_limit_refresh_per_session: Some(UNREACHED_LIMIT.into()),
            rate_limit_per_ip: Some(UNREACHED_LIMIT.into()),
            rate_limit_create_per_user: Some(UNREACHED_LIMIT.into()),
            rate_limit_admin_per_key: Some(UNREACHED_LIMIT.into()),
            rate_limit_failed_auth_per_ip: Some(UNREACHED_LIMIT.into()),
            rate_limit_capacity: Some("1024".into()),
            master_key: (backend == Backend::Postgres).then(|| TEST_MASTER_KEY.into()),
            // Every refresh comes from 127.0.0.1 without a user agent, unlike the sessions
            // `create_session` makes, so each would be an anomaly; `policy.rs` turns it on.
            anomaly_policy: Some("allow".into()),
            ..RawConfig::default()
        };
        configure(&mut raw);
        let config = Config::from_raw(&raw).expect("test configuration is valid");
        let clock = Arc::new(ManualClock::new(wall_clock_now()));
        Self::start(dir, config, clock, backend, schema).await
    }

    async fn start(
        dir: Arc<TempDir>,
        config: Config,
        clock: Arc<ManualClock>,
        backend: Backend,
        schema: Option<Arc<PgSchema>>,
    ) -> Self {
        let server = RunningServer::start(&config, clock.clone()).await;
        Self {
            base: format!("http://{}", server.address),
            client: reqwest::Client::new(),
            clock,
            state: server.state.clone(),
            dir,
            backend,
            schema,
            config,
            server,
        }
    }

    /// Stops the server and starts a new one on the same database and clock.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let dir = self.dir.clone();
        let config = self.config.clone();
        let clock = self.clock.clone();
        let schema = self.schema.clone();
        Self::start(dir, config, clock, self.backend, schema).await
    }

    /// Starts another instance on the same database and clock while this one runs (on
    /// PostgreSQL: one SQLite file is served by one process).
    pub async fn sibling(&self) -> Self {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "instances share PostgreSQL only"
        );
        let config = self.config.clone();
        Self::start(
            self.dir.clone(),
            config,
            self.clock.clone(),
            self.backend,
            self.schema.clone(),
        )
        .await
    }

    pub async fn stop(&mut self) {
        self.server.stop().await;
    }

    pub fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    /// The server's (manual) clock reading.
    pub fn clock_now(&self) -> Timestamp {
        use sessiond_core::Clock as _;
        self.clock.now()
    }

    /// The SQLite file the app runs on: in its directory unless the test named another.
    pub fn database_path(&self) -> std::path::PathBuf {
        match self.config.database_url.strip_prefix("sqlite://") {
            Some(path) => std::path::PathBuf::from(path),
            None => self.dir.path().join("sessiond.db"),
        }
    }

    /// `bytes` as an SQL literal of the app's backend (`X'…'` or `'\x…'::bytea`).
    pub fn bytes_literal(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        match self.backend {
            Backend::Sqlite => format!("X'{hex}'"),
            Backend::Postgres => format!("'\\x{hex}'::bytea"),
        }
    }

    /// Everything the app's SQLite database holds on disk: the database file, then its
    /// write-ahead log if there is one.
    pub fn sqlite_bytes(&self) -> Vec<u8> {
        let path = self.database_path().display().to_string();
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            bytes.extend(file_bytes_from_a_child(&format!("{path}{suffix}")));
        }
        bytes
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request is sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body is read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Answer {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn delete(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut request = self.client.delete(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn raw(&self, request: reqwest::RequestBuilder) -> Answer {
        self.send(request).await
    }

    /// Creates a session for `user` through the admin API; panics unless it answers 201.
    pub async fn create_session(&self, user: &str) -> Value {
        self.create_session_with(json!({
            "user_id": user,
            "device": {"name": "Laptop", "user_agent": FIREFOX, "ip": "203.0.113.7"},
            "claims": {"roles": ["user"], "permissions": ["notes:read"]},
        }))
        .await
    }

    pub async fn create_session_with(&self, body: Value) -> Value {
        let answer = self.post("/v1/sessions", Some(ADMIN_KEY), body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post(
            "/v1/sessions/refresh",
            None,
            json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Runs a scalar query (SQL both stores understand) against the app's database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let connection = rusqlite::Connection::open_with_flags(
                    self.database_path(),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .expect("open database");
                connection
                    .query_row(sql, [], |row| row.get(0))
                    .expect("query runs")
            }
            Backend::Postgres => {
                let schema = self.schema.as_ref().expect("a PostgreSQL app has a schema");
                schema.scalar(sql).await
            }
        }
    }

    /// Runs a statement (SQL both stores understand) against the app's database; returns how
    /// many rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        use sqlx::Connection as _;
        match self.backend {
            Backend::Sqlite => {
                let connection =
                    rusqlite::Connection::open(self.database_path()).expect("open database");
                connection
                    .busy_timeout(std::time::Duration::from_secs(5))
                    .expect("busy timeout");
                let changed = connection
                    .execute(sql, [])
                    .unwrap_or_else(|error| panic!("{sql}: {error}"));
                u64::try_from(changed).expect("count fits")
            }
            Backend::Postgres => {
                let schema = self.schema.as_ref().expect("a PostgreSQL app has a schema");
                let mut connection = schema.connect().await;
                let changed = sqlx::query(sql)
                    .execute(&mut connection)
                    .await
                    .unwrap_or_else(|error| panic!("{sql}: {error}"))
                    .rows_affected();
                connection.close().await.expect("close");
                changed
            }
        }
    }

    /// The sealed audit events of `kind` as an admin reads them through `GET /v1/audit`, with
    /// their client addresses opened (the `ip` column holds them sealed). Seals first.
    pub async fn audit_events(&self, kind: &str) -> Vec<Value> {
        crate::audit::seal_all(self).await;
        let answer = self
            .get(
                &format!("/v1/audit?type={kind}&limit=1000"),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["events"].as_array().expect("events").clone()
    }

    /// How many audit events of `kind` there are, optionally with `details[key] == value`.
    pub async fn audit_count(&self, kind: &str, detail: Option<(&str, &str)>) -> i64 {
        let matches_detail = |key: &str, value: &str| match self.backend {
            Backend::Sqlite => format!("json_extract(details, '$.{key}') = '{value}'"),
            Backend::Postgres => format!("(details::jsonb ->> '{key}') = '{value}'"),
        };
        let condition = detail.map_or_else(
            || "TRUE".to_owned(),
            |(key, value)| matches_detail(key, value),
        );
        self.scalar(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE type = '{kind}' AND {condition}"
        ))
        .await
    }
}

/// A refresh token of the shape minted before locators: `sdr_` and 32 random bytes, stored
/// under its SHA-256.
pub fn bare_refresh_token() -> RefreshToken {
    use base64::Engine as _;
    let random = [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ]
    .concat();
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    RefreshToken::parse(&format!("sdr_{text}")).expect("a token of the earlier shape")
}

pub fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string in {value}"))
}

/// The bytes of the file at `path` (none if it does not exist), read by a child process
/// (`cat`). Never read a SQLite file of a server running in this process with `std::fs`:
/// closing any descriptor of a file drops every POSIX lock the process holds on it (SQLite's
/// documented pitfall, "how to corrupt your database files" §2.2), so the server would lose its
/// locks and another process could checkpoint, truncate or reset the WAL under it.
pub fn file_bytes_from_a_child(path: &str) -> Vec<u8> {
    let output = std::process::Command::new("cat")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .expect("cat runs");
    if output.status.success() {
        output.stdout
    } else {
        assert!(
            !std::path::Path::new(path).exists(),
            "cat could not read {path}"
        );
        Vec::new()
    }
}
