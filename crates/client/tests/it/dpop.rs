//! DPoP against the real server: a session bound at creation or at its first refresh with a
//! proof, bound tokens sent as `DPoP` to `/v1/sessions/current`, the event stream and logout,
//! a stolen refresh token useless (and not spent) without the key, and the nonce retry.
//!
//! sessiond checks a proof's `htu` against its issuer URL, so the clients reach these servers
//! through a front at that URL, as in a deployment behind a proxy.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sessiond_client::reqwest::Method;
use sessiond_client::{DpopKey, Error, MemoryStore, SessionClient, SessionState, TokenStore};
use sessiond_testkit::{ADMIN_KEY, HttpServer};
use tokio::net::TcpListener;

use crate::helpers::{TestServer, events_open, fast_events, fast_retries, on_demand_only};

/// sessiond behind a front at the URL its issuer names, as it is deployed: clients use the
/// front's URL, which is what their proofs must name.
struct Deployment {
    server: TestServer,
    /// The front's URL, and sessiond's issuer.
    base: String,
    _front: HttpServer,
}

/// A deployment whose sessiond requires DPoP nonces when `nonces` says so.
async fn deploy(nonces: bool) -> Deployment {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let base = format!("http://{}", listener.local_addr().expect("local address"));
    let issuer = base.clone();
    let server = TestServer::spawn_with(move |raw| {
        raw.issuer = Some(issuer);
        if nonces {
            raw.dpop_nonce = Some("required".into());
        }
    })
    .await;
    let upstream = server.base.clone();
    let http = reqwest::Client::new();
    let router = axum::Router::new().fallback(move |request: Request| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move { stream_to(&http, &upstream, request).await }
    });
    Deployment {
        server,
        base,
        _front: HttpServer::spawn_on(listener, router),
    }
}

/// Forwards `request` to `upstream` and streams the answer back as it comes (the event stream
/// never ends, so it cannot be read whole first).
async fn stream_to(http: &reqwest::Client, upstream: &str, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("request body");
    let mut outgoing = http
        .request(parts.method, format!("{upstream}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer: axum::http::Response<reqwest::Body> =
        outgoing.send().await.expect("upstream answers").into();
    let (mut parts, body) = answer.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    Response::from_parts(parts, Body::new(body))
}

async fn client_of(base: &str, key: Option<DpopKey>) -> (SessionClient, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let mut builder = SessionClient::builder(base)
        .store(store.clone())
        .refresh_policy(on_demand_only())
        .retry_policy(fast_retries(2))
        .subscribe_events(fast_events());
    if let Some(key) = key {
        builder = builder.dpop(key);
    }
    (builder.build().await.expect("client builds"), store)
}

/// The claims of a JWT, unchecked.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

async fn current_session(client: &SessionClient, base: &str) -> Value {
    let response = client
        .send(client.request(Method::GET, format!("{base}/v1/sessions/current")))
        .await
        .expect("request sent");
    assert_eq!(
        response.status(),
        200,
        "the bound token is accepted with its proof"
    );
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn a_session_created_with_the_thumbprint_is_used_with_proofs_everywhere() {
    let deployment = deploy(false).await;
    let server = &deployment.server;
    let key = DpopKey::generate().expect("key");
    let jkt = key.thumbprint().to_owned();
    let pair = server
        .create_session_with(json!({"user_id": "dora", "dpop_jkt": jkt}))
        .await;
    assert_eq!(pair.token_type, "DPoP");
    assert_eq!(claims_of(&pair.access_token)["cnf"]["jkt"], jkt.as_str());
    let (client, _) = client_of(&deployment.base, Some(key)).await;
    assert_eq!(client.dpop_thumbprint(), Some(jkt.as_str()));
    client.sign_in(&pair).await.expect("signs in");

    // The event stream opens with the bound token (DPoP scheme and a proof).
    events_open(&client).await;
    assert_eq!(
        current_session(&client, &deployment.base).await["id"],
        pair.session.id.as_str()
    );
    let refreshed = client.refresh().await.expect("refreshes with a proof");
    assert_eq!(claims_of(refreshed.expose())["cnf"]["jkt"], jkt.as_str());
    assert_eq!(
        current_session(&client, &deployment.base).await["id"],
        pair.session.id.as_str()
    );
    // The same token as a bearer token is refused.
    assert_eq!(server.current_status(refreshed.expose()).await, 401);

    // Logout goes with a proof too: the session is over on the server.
    client.sign_out().await.expect("signs out on the server");
    let active: Value = server
        .http
        .get(format!("{}/v1/users/dora/sessions", server.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(active["sessions"], json!([]), "{active}");
}

#[tokio::test]
async fn the_first_refresh_with_a_proof_binds_the_session_and_a_stolen_refresh_token_is_useless() {
    let deployment = deploy(false).await;
    let server = &deployment.server;
    let pair = server.create_session("eli").await;
    assert_eq!(pair.token_type, "Bearer");
    let key = DpopKey::generate().expect("key");
    let jkt = key.thumbprint().to_owned();
    let (client, store) = client_of(&deployment.base, Some(key)).await;
    client.sign_in(&pair).await.expect("signs in");
    // Unbound still: the first token goes as Bearer.
    current_session(&client, &deployment.base).await;
    let bound = client.refresh().await.expect("refreshes");
    assert_eq!(claims_of(bound.expose())["cnf"]["jkt"], jkt.as_str());

    // Someone copies the pair out of the store: without the key, the refresh is refused...
    let stolen = store.load().expect("loads").expect("a pair");
    let (thief, _) = client_of(&deployment.base, None).await;
    thief
        .set_tokens(stolen.clone())
        .await
        .expect("takes the pair");
    match thief.refresh().await {
        Err(Error::Status {
            status: 400, code, ..
        }) => {
            assert_eq!(code.as_deref(), Some("invalid_dpop_proof"));
        }
        other => panic!("expected invalid_dpop_proof, got {other:?}"),
    }
    // ...and so is it with a key of its own.
    let (other_key_thief, _) =
        client_of(&deployment.base, Some(DpopKey::generate().expect("key"))).await;
    other_key_thief
        .set_tokens(stolen)
        .await
        .expect("takes the pair");
    assert!(matches!(
        other_key_thief.refresh().await,
        Err(Error::Status { status: 400, .. })
    ));
    // Nothing was spent: the owner refreshes on.
    client.refresh().await.expect("the owner still refreshes");
    assert!(client.current_state().is_signed_in());
}

#[tokio::test]
async fn with_nonces_required_the_client_sends_the_servers_nonce_and_carries_on() {
    let deployment = deploy(true).await;
    let server = &deployment.server;
    let key = DpopKey::generate().expect("key");
    let pair = server
        .create_session_with(json!({"user_id": "fay", "dpop_jkt": key.thumbprint()}))
        .await;
    let (client, _) = client_of(&deployment.base, Some(key)).await;
    client.sign_in(&pair).await.expect("signs in");
    for _ in 0..3 {
        client
            .refresh()
            .await
            .expect("refreshes, asked for a nonce or not");
        current_session(&client, &deployment.base).await;
    }
    events_open(&client).await;
    server.revoke(&pair.session.id).await;
    let mut state = client.state();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|state| matches!(state, SessionState::SignedOut { .. })),
    )
    .await
    .expect("the revocation arrives over the stream")
    .expect("client alive");
}
