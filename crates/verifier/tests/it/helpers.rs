//! `TestServer`: the real sessiond on a port-0 listener (the test kit's `Sessiond`),
//! `JwksProxy`: a counting reverse proxy in front of it that can rewrite `Cache-Control`, and
//! tokens minted with keys sessiond never published.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use sessiond_testkit::{HttpServer, forward};
use sessiond_verifier::{Verifier, VerifierBuilder};
use sessiond_wire::TokenPairResponse;

/// The running sessiond the verifier checks tokens of.
pub use sessiond_testkit::Sessiond as TestServer;
pub use sessiond_testkit::{ADMIN_KEY, AUDIENCE, ISSUER, JWKS_PATH, eventually, wall_clock_now};

/// A server whose `SESSIOND_SIGNING_ALG` is `algorithm`.
pub async fn spawn_signing_with(algorithm: &str) -> TestServer {
    let algorithm = algorithm.to_owned();
    TestServer::spawn_with(move |raw| raw.signing_alg = Some(algorithm)).await
}

/// Sessions as the verifier's tests need them.
pub trait Sessions {
    /// An access token of a new session whose `permissions` are `permissions`.
    async fn token_with(&self, permissions: &[&str]) -> TokenPairResponse;
}

impl Sessions for TestServer {
    async fn token_with(&self, permissions: &[&str]) -> TokenPairResponse {
        self.create_session_with(json!({
            "user_id": "user-1",
            "tenant_id": "acme",
            "device": {"name": "test"},
            "claims": {"roles": ["user"], "permissions": permissions},
        }))
        .await
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
    _server: HttpServer,
}

impl JwksProxy {
    pub async fn spawn(upstream: &str) -> Self {
        let control = Arc::new(ProxyControl::default());
        let state = ProxyState {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            control: control.clone(),
        };
        let router = axum::Router::new().fallback(intercept).with_state(state);
        let server = HttpServer::spawn(router).await;
        Self {
            base: server.base.clone(),
            control,
            _server: server,
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

/// Counts JWK Set requests and rewrites their `Cache-Control` when asked; forwards everything.
async fn intercept(State(state): State<ProxyState>, request: Request) -> Response {
    let is_jwks = request.uri().path() == JWKS_PATH;
    if is_jwks {
        state.control.jwks_requests.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = forward(&state.http, &state.upstream, request).await;
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
