//! `TestServer`: the real sessiond server on a port-0 listener with a `ManualClock` (the test
//! kit's `Sessiond`), and `Proxy`: a counting reverse proxy in front of it that can also answer
//! `503` or delay refreshes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;
use sessiond_client::{
    EventStreamPolicy, MemoryStore, RefreshPolicy, RetryPolicy, SessionClient, StoredTokens,
    TokenStore,
};
use sessiond_testkit::{HttpServer, forward};
use sessiond_wire::TokenPairResponse;
use tokio::net::TcpListener;

/// The running sessiond the client talks to.
pub use sessiond_testkit::Sessiond as TestServer;

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
    _server: HttpServer,
}

impl Proxy {
    pub async fn spawn(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::spawn_on(listener, upstream)
    }

    pub fn spawn_on(listener: TcpListener, upstream: &str) -> Self {
        let control = Arc::new(ProxyControl::default());
        let state = ProxyState {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            control: control.clone(),
        };
        let router = axum::Router::new().fallback(intercept).with_state(state);
        let server = HttpServer::spawn_on(listener, router);
        Self {
            base: server.base.clone(),
            control,
            _server: server,
        }
    }

    pub fn refreshes(&self) -> usize {
        self.control.refreshes.load(Ordering::SeqCst)
    }
}

/// Counts, fails or delays what the test asks for, and forwards the rest.
async fn intercept(State(state): State<ProxyState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
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
    forward(&state.http, &state.upstream, request).await
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
