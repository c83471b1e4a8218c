//! The real sessiond server, in-process, as the suites start it: [`RunningServer`] for one
//! configuration, and [`Sessiond`] for the common case of a fresh SQLite database in a
//! temporary directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_core::ManualClock;
use sessiond_server::AppState;
use sessiond_server::config::{Config, RawConfig};
use sessiond_server::database::OpenMode;
use sessiond_wire::TokenPairResponse;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{ADMIN_KEY, ISSUER, JWKS_PATH, init_logging, wall_clock_now};

/// One server started with `sessiond_server::run`, as `sessiond serve` starts it, on a
/// listener the test chose; stopped on [`stop`](Self::stop), or told to stop when dropped.
pub struct RunningServer {
    /// The address it listens on.
    pub address: SocketAddr,
    /// Its state, shared with the running server (the service, the store, the metrics).
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// Builds the state of `config` (creating the database if missing) with `clock`, and
    /// serves it on a port-0 listener.
    ///
    /// # Panics
    ///
    /// If the state cannot be built or no port can be bound.
    pub async fn start(config: &Config, clock: Arc<ManualClock>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::start_on(listener, config, clock).await
    }

    /// As [`start`](Self::start), on `listener`.
    ///
    /// # Panics
    ///
    /// If the state cannot be built, or the server fails while it runs.
    pub async fn start_on(listener: TcpListener, config: &Config, clock: Arc<ManualClock>) -> Self {
        init_logging();
        let state = AppState::build(config, clock, OpenMode::CreateIfMissing)
            .await
            .expect("server state builds");
        let address = listener.local_addr().expect("local address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(sessiond_server::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move {
            server.await.expect("server task").expect("server runs");
        });
        Self {
            address,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Shuts the server down gracefully and waits until it has stopped: its listener is
    /// closed and its background tasks have ended.
    ///
    /// # Panics
    ///
    /// If the server failed.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server stops cleanly");
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A running sessiond on a fresh SQLite database in a temporary directory, with a
/// [`ManualClock`] that starts at the wall clock and moves only when the test moves it, the
/// admin key [`ADMIN_KEY`] and the issuer [`ISSUER`].
pub struct Sessiond {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server's clock.
    pub clock: Arc<ManualClock>,
    /// A client for the test's own requests.
    pub http: reqwest::Client,
    config: Config,
    server: RunningServer,
    _dir: TempDir,
}

impl std::fmt::Debug for Sessiond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessiond")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Sessiond {
    /// A server with the test defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose settings `configure` may change from the test defaults.
    ///
    /// # Panics
    ///
    /// If the configuration is invalid or the server cannot start.
    pub async fn spawn_with(configure: impl FnOnce(&mut RawConfig)) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let mut raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            database_url: Some(
                format!("sqlite://{}", dir.path().join("sessiond.db").display()).into(),
            ),
            admin_keys: Some(ADMIN_KEY.into()),
            issuer: Some(ISSUER.into()),
            sqlite_synchronous: Some("normal".into()),
            ..RawConfig::default()
        };
        configure(&mut raw);
        let config = Config::from_raw(&raw).expect("test configuration is valid");
        let clock = Arc::new(ManualClock::new(wall_clock_now()));
        let server = RunningServer::start(&config, clock.clone()).await;
        Self {
            base: format!("http://{}", server.address),
            clock,
            http: reqwest::Client::new(),
            config,
            server,
            _dir: dir,
        }
    }

    /// The running server's state.
    pub fn state(&self) -> &AppState {
        &self.server.state
    }

    /// Moves the server's clock.
    pub fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    /// The URL of the server's JWK Set.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base)
    }

    /// Stops the server and waits until it has stopped (it refuses connections).
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }

    /// Starts the server again after [`stop`](Self::stop), on the same address, database and
    /// clock (so with the same signing keys).
    ///
    /// # Panics
    ///
    /// If the address is taken by now.
    pub async fn start_again(&mut self) {
        let listener = TcpListener::bind(self.server.address)
            .await
            .expect("the address is free again");
        self.server = RunningServer::start_on(listener, &self.config, self.clock.clone()).await;
        // Connections kept alive to the old server are dead.
        self.http = reqwest::Client::new();
    }

    /// Creates a session for `user` through the admin API, with a device and nothing else.
    pub async fn create_session(&self, user: &str) -> TokenPairResponse {
        self.create_session_with(json!({"user_id": user, "device": {"name": "test"}}))
            .await
    }

    /// Creates a session through the admin API with the request body `body`.
    ///
    /// # Panics
    ///
    /// Unless the server answers `201 Created` with a token pair.
    pub async fn create_session_with(&self, body: Value) -> TokenPairResponse {
        let response = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .expect("create request is sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("a token pair")
    }

    /// Revokes a session through the admin API.
    ///
    /// # Panics
    ///
    /// Unless the server answers `204 No Content`.
    pub async fn revoke(&self, session_id: &str) {
        let response = self
            .http
            .delete(format!("{}/v1/sessions/{session_id}", self.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("revoke request is sent");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// Spends a refresh token directly (through no client library): the status and the JSON
    /// body (`Value::Null` when there is none).
    pub async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/sessions/refresh", self.base))
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .expect("refresh request is sent");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Refresh requests the server has answered, whatever their outcome (from `/metrics`).
    ///
    /// # Panics
    ///
    /// If `/metrics` does not answer or a refresh count is not a number.
    pub async fn refreshes(&self) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics request is sent")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| line.starts_with("sessiond_refreshes_total{"))
            .map(|line| {
                line.rsplit(' ')
                    .next()
                    .and_then(|count| count.parse::<u64>().ok())
                    .expect("a count")
            })
            .sum()
    }

    /// The status of `GET /v1/sessions/current` with `access_token`.
    pub async fn current_status(&self, access_token: &str) -> StatusCode {
        self.http
            .get(format!("{}/v1/sessions/current", self.base))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request is sent")
            .status()
    }
}
