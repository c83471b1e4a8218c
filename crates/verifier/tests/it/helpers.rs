//! `TestServer`: the real sessiond on a port-0 listener (started as the server's and the
//! client's own tests start it), `JwksProxy`: a counting reverse proxy in front of it that can
//! rewrite `Cache-Control`, and tokens minted with keys sessiond never published.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use sessiond_core::{ManualClock, Timestamp};
use sessiond_server::AppState;
use sessiond_server::config::{Config, RawConfig};
use sessiond_verifier::{Verifier, VerifierBuilder};
use sessiond_wire::TokenPairResponse;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_KEY: &str = "verifier-test-admin-key-0123456789-abcdefghij";
pub const ISSUER: &str = "http://sessiond.test";
pub const AUDIENCE: &str = "sessiond";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

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

pub fn wall_clock_now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    Timestamp::from_unix_millis(i64::try_from(millis).expect("millis fit"))
}

/// A running sessiond.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    raw: RawConfig,
    address: std::net::SocketAddr,
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose `SESSIOND_SIGNING_ALG` is `algorithm`.
    pub async fn spawn_signing_with(algorithm: &str) -> Self {
        let algorithm = algorithm.to_owned();
        Self::spawn_with(move |raw| raw.signing_alg = Some(algorithm)).await
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
            issuer: Some(ISSUER.into()),
            sqlite_synchronous: Some("normal".into()),
            ..RawConfig::default()
        };
        configure(&mut raw);
        let clock = Arc::new(ManualClock::new(wall_clock_now()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let address = listener.local_addr().expect("local address");
        let shutdown = Self::serve(&raw, clock.clone(), listener).await;
        Self {
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            clock,
            raw,
            address,
            _dir: dir,
            shutdown: Some(shutdown),
        }
    }

    async fn serve(
        raw: &RawConfig,
        clock: Arc<ManualClock>,
        listener: TcpListener,
    ) -> oneshot::Sender<()> {
        let config = Config::from_raw(raw).expect("test configuration is valid");
        let state = AppState::build(
            &config,
            clock,
            sessiond_server::state::OpenMode::CreateIfMissing,
        )
        .await
        .expect("server state builds");
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            sessiond_server::run(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        shutdown
    }

    /// Starts the server again after [`stop`](Self::stop), on the same address and database
    /// (so with the same signing keys).
    pub async fn start_again(&mut self) {
        let listener = TcpListener::bind(self.address)
            .await
            .expect("the address is free again");
        self.shutdown = Some(Self::serve(&self.raw, self.clock.clone(), listener).await);
        // Connections kept alive to the old server are dead.
        self.http = reqwest::Client::new();
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

    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base)
    }

    /// Creates a session for `user` with `claims` through the admin API.
    pub async fn create_session(&self, user: &str, claims: Value) -> TokenPairResponse {
        let response = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({
                "user_id": user,
                "tenant_id": "acme",
                "device": {"name": "test"},
                "claims": claims,
            }))
            .send()
            .await
            .expect("create request is sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("a token pair")
    }

    /// An access token of a new session whose `permissions` are `permissions`.
    pub async fn token_with(&self, permissions: &[&str]) -> TokenPairResponse {
        self.create_session(
            "user-1",
            json!({"roles": ["user"], "permissions": permissions}),
        )
        .await
    }

    /// Stops the server and waits until it refuses connections.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let probe = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_millis(500))
            .build()
            .expect("probe client");
        for _ in 0..100 {
            if probe
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not stop");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A verifier of `jwks_url` with the test server's issuer and audience.
pub fn verifier_of(jwks_url: &str) -> VerifierBuilder {
    Verifier::builder(jwks_url)
        .issuer(ISSUER)
        .audience(AUDIENCE)
}

/// What the proxy counts and rewrites.
#[derive(Default)]
pub struct ProxyControl {
    /// JWK Set requests received.
    pub jwks_requests: AtomicUsize,
    /// Replaces the upstream `Cache-Control` of the JWK Set when set.
    pub cache_control: Mutex<Option<&'static str>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    control: Arc<ProxyControl>,
}

/// A reverse proxy to a `TestServer`, counting JWK Set requests.
pub struct JwksProxy {
    pub base: String,
    pub control: Arc<ProxyControl>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl JwksProxy {
    pub async fn spawn(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
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

    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base)
    }

    pub fn jwks_requests(&self) -> usize {
        self.control.jwks_requests.load(Ordering::SeqCst)
    }

    pub fn set_cache_control(&self, value: &'static str) {
        *self.control.cache_control.lock().expect("not poisoned") = Some(value);
    }
}

impl Drop for JwksProxy {
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
    let is_jwks = path == JWKS_PATH;
    if is_jwks {
        state.control.jwks_requests.fetch_add(1, Ordering::SeqCst);
    }
    let answer = state
        .http
        .request(
            request.method().clone(),
            format!("{}{path}", state.upstream),
        )
        .send()
        .await
        .expect("upstream answers");
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
    let cache_control = *state.control.cache_control.lock().expect("not poisoned");
    if let (true, Some(value)) = (is_jwks, cache_control) {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    response
}

/// A key sessiond never published.
pub fn foreign_key() -> ed25519_dalek::SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("randomness");
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// The claims of `token`, unchecked.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a compact token");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// A token with `claims`, under header `kid`, signed by `key`.
pub fn mint(key: &ed25519_dalek::SigningKey, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

/// Waits up to 5 s for `condition`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..250 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
