//! `TestServer`: the real sessiond server on a port-0 listener with a `ManualClock` (started as
//! the server's own tests start it), and `Proxy`: a counting reverse proxy in front of it that
//! can also answer `503` or delay refreshes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use sessiond_client::{
    EventStreamPolicy, MemoryStore, RefreshPolicy, RetryPolicy, SessionClient, StoredTokens,
    TokenStore,
};
use sessiond_core::{ManualClock, Timestamp};
use sessiond_server::AppState;
use sessiond_server::config::{Config, RawConfig};
use sessiond_wire::TokenPairResponse;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_KEY: &str = "client-test-admin-key-0123456789-abcdefghij";

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug,sqlx=warn,hyper=info,hyper_util=info")
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

/// A running sessiond.
pub struct TestServer {
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut RawConfig)) -> Self {
        init_logging();
        let dir = TempDir::new().expect("temp dir");
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
        let state = AppState::build(
            &config,
            clock.clone(),
            sessiond_server::state::OpenMode::CreateIfMissing,
        )
        .await
        .expect("server state builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let address = listener.local_addr().expect("local address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            sessiond_server::run(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            base: format!("http://{address}"),
            clock,
            http: reqwest::Client::new(),
            _dir: dir,
            shutdown: Some(shutdown),
        }
    }

    /// Moves the server's clock (not the client's).
    pub fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    /// Creates a session for `user` through the admin API.
    pub async fn create_session(&self, user: &str) -> TokenPairResponse {
        let response = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": user, "device": {"name": "CLI"}}))
            .send()
            .await
            .expect("create request is sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("a token pair")
    }

    /// Revokes a session through the admin API.
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

    /// Spends a refresh token directly (not through any client).
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

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// What the proxy counts and how it misbehaves.
#[derive(Default)]
pub struct ProxyControl {
    /// `POST /v1/sessions/refresh` requests received (answered or not).
    pub refreshes: AtomicUsize,
    /// `GET /v1/sessions/current` requests received.
    pub current: AtomicUsize,
    /// How many of the next refreshes to answer `503` itself.
    pub fail_refreshes: AtomicUsize,
    /// The `Retry-After` of those `503`s, in seconds.
    pub retry_after_seconds: AtomicU64,
    /// How long to hold each refresh before forwarding it.
    pub refresh_delay_ms: AtomicU64,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    control: Arc<ProxyControl>,
}

/// A reverse proxy to a `TestServer`.
pub struct Proxy {
    pub base: String,
    pub control: Arc<ProxyControl>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Proxy {
    pub async fn spawn(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::spawn_on(listener, upstream)
    }

    pub fn spawn_on(listener: TcpListener, upstream: &str) -> Self {
        let address = listener.local_addr().expect("local address");
        let control = Arc::new(ProxyControl::default());
        let state = ProxyState {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            control: control.clone(),
        };
        let router = axum::Router::new().fallback(forward).with_state(state);
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("proxy runs");
        });
        Self {
            base: format!("http://{address}"),
            control,
            shutdown: Some(shutdown),
        }
    }

    pub fn refreshes(&self) -> usize {
        self.control.refreshes.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned());
    let control = &state.control;
    if path == "/v1/sessions/refresh" {
        control.refreshes.fetch_add(1, Ordering::SeqCst);
        let failing = control
            .fail_refreshes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            let seconds = control.retry_after_seconds.load(Ordering::SeqCst);
            let mut response = Response::new(Body::from(
                json!({"error": "unavailable", "message": "injected by the test proxy"})
                    .to_string(),
            ));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return response;
        }
        let delay = control.refresh_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    if path == "/v1/sessions/current" {
        control.current.fetch_add(1, Ordering::SeqCst);
    }
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .expect("request body");
    let mut upstream = state
        .http
        .request(method, format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.send().await.expect("upstream answers");
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.expect("upstream body");
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// A port on 127.0.0.1 with nothing listening (it was bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    listener.local_addr().expect("local address")
}

/// Quick retries, for tests.
pub fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_elapsed: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
    }
}

/// A policy without the background task, so that only the test's calls refresh.
pub fn on_demand_only() -> RefreshPolicy {
    RefreshPolicy {
        proactive: false,
        ..RefreshPolicy::default()
    }
}

/// `pair` as if it had been received `ago`.
pub fn received_ago(pair: &TokenPairResponse, ago: Duration) -> StoredTokens {
    StoredTokens::from_response(pair, SystemTime::now() - ago)
}

/// A client of `base` holding `tokens` in a memory store, which is returned too.
pub async fn client_with(
    base: &str,
    tokens: Option<StoredTokens>,
    refresh_policy: RefreshPolicy,
) -> (SessionClient, Arc<MemoryStore>) {
    let store = Arc::new(match tokens {
        Some(tokens) => MemoryStore::with_tokens(tokens),
        None => MemoryStore::new(),
    });
    let client = SessionClient::builder(base)
        .store(store.clone())
        .refresh_policy(refresh_policy)
        .retry_policy(fast_retries(5))
        .build()
        .await
        .expect("client builds");
    (client, store)
}

/// Whether `store` holds no tokens.
pub fn is_empty(store: &dyn TokenStore) -> bool {
    store.load().expect("store loads").is_none()
}

/// Quick reconnects, for tests.
pub fn fast_events() -> EventStreamPolicy {
    EventStreamPolicy {
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(30),
    }
}

/// Waits up to 5 s for `client`'s event stream to be open.
pub async fn events_open(client: &SessionClient) {
    let mut connected = client.events_connected();
    tokio::time::timeout(Duration::from_secs(5), connected.wait_for(|open| *open))
        .await
        .expect("the event stream opens within 5 s")
        .expect("client alive");
}
