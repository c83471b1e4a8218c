//! `TestApp`: a running server on a port-0 listener, its clock, its database and a client.

use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_core::{ManualClock, Timestamp};
use sessiond_server::AppState;
use sessiond_server::config::{Config, RawConfig};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789-abcdefghijklmnop";
pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    pub dir: Arc<TempDir>,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug,sqlx=warn,hyper=info")
                .with_test_writer()
                .try_init();
        }
    });
}

fn wall_clock_now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    Timestamp::from_unix_millis(i64::try_from(millis).expect("millis fit"))
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
        let mut raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            database_url: Some(format!(
                "sqlite://{}",
                dir.path().join("sessiond.db").display()
            )),
            admin_keys: Some(ADMIN_KEY.into()),
            issuer: Some("http://sessiond.test".into()),
            sqlite_synchronous: Some("normal".into()),
            ..RawConfig::default()
        };
        configure(&mut raw);
        let config = Config::from_raw(&raw).expect("test configuration is valid");
        let clock = Arc::new(ManualClock::new(wall_clock_now()));
        Self::start(dir, config, clock).await
    }

    async fn start(dir: Arc<TempDir>, config: Config, clock: Arc<ManualClock>) -> Self {
        let state = AppState::build(
            &config,
            clock.clone(),
            sessiond_server::state::OpenMode::CreateIfMissing,
        )
        .await
        .expect("server state builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let address = listener.local_addr().expect("local address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(sessiond_server::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let server = tokio::spawn(async move {
            server.await.expect("server task").expect("server runs");
        });
        Self {
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            clock,
            state,
            dir,
            config,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Stops the server and starts a new one on the same database and clock.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let dir = self.dir.clone();
        let config = self.config.clone();
        let clock = self.clock.clone();
        Self::start(dir, config, clock).await
    }

    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server stops cleanly");
        }
    }

    pub fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    pub fn database_path(&self) -> std::path::PathBuf {
        self.dir.path().join("sessiond.db")
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

    /// Runs a scalar query against the database file (read-only).
    pub async fn scalar(&self, sql: &str) -> i64 {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}?mode=ro", self.database_path().display());
        let mut connection = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("open database");
        let value: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut connection)
            .await
            .expect("query runs");
        connection.close().await.expect("close");
        value
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string in {value}"))
}
