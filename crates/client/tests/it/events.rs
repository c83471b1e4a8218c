//! The event stream: a revocation elsewhere signs the client out at once, a refresh by another
//! process sharing the token store is adopted from the store, a stream refused for an expired
//! token is opened again after one refresh, and a broken stream resumes after its last event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sessiond_client::{
    EncryptedFileStore, FileKey, MemoryStore, SessionClient, SessionState, SignOutReason,
    StoredTokens, TokenStore,
};
use tempfile::TempDir;

use crate::helpers::{
    TestServer, events_open, fast_events, fast_retries, is_empty, on_demand_only, received_ago,
};

/// A client of `server` on `store` that follows the event stream and refreshes only when
/// asked, so that every refresh the server counts is one the test made.
async fn subscribed(server: &TestServer, store: Arc<dyn TokenStore>) -> SessionClient {
    SessionClient::builder(&server.base)
        .store(store)
        .refresh_policy(on_demand_only())
        .retry_policy(fast_retries(3))
        .subscribe_events(fast_events())
        .build()
        .await
        .expect("client builds")
}

#[tokio::test]
async fn a_revocation_reaches_the_client_through_the_event_stream_in_under_a_second() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("ivy").await;
    let store = Arc::new(MemoryStore::new());
    let client = subscribed(&server, store.clone()).await;
    client.sign_in(&pair).await.expect("signs in");
    events_open(&client).await;
    let mut state = client.state();
    state.borrow_and_update();

    let started = Instant::now();
    server.revoke(&pair.session.id).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|state| !state.is_signed_in()),
    )
    .await
    .expect("signed out within 5 s")
    .expect("client alive");
    let latency = started.elapsed();

    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    assert_eq!(
        client.current_state(),
        SessionState::SignedOut {
            reason: SignOutReason::Revoked
        }
    );
    assert!(is_empty(store.as_ref()), "storage is cleared");
    assert_eq!(server.refreshes().await, 0, "learnt without a refresh");
}

#[tokio::test]
async fn a_refresh_by_another_process_sharing_the_store_is_adopted_without_a_refresh_of_its_own() {
    let server = TestServer::spawn().await;
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("tokens");
    let key = FileKey::generate().expect("a key");
    let pair = server.create_session("jack").await;
    // The other process: the same file, no event stream.
    let other = SessionClient::builder(&server.base)
        .store(Arc::new(EncryptedFileStore::new(&path, &key)))
        .refresh_policy(on_demand_only())
        .build()
        .await
        .expect("client builds");
    other.sign_in(&pair).await.expect("signs in");
    let client = subscribed(&server, Arc::new(EncryptedFileStore::new(&path, &key))).await;
    assert!(
        client.current_state().is_signed_in(),
        "loaded from the file"
    );
    events_open(&client).await;
    let mut state = client.state();
    state.borrow_and_update();

    let refreshed = other.refresh().await.expect("the other process refreshes");
    tokio::time::timeout(Duration::from_secs(5), state.changed())
        .await
        .expect("the new pair is adopted within 5 s")
        .expect("client alive");

    let token = client.access_token().await.expect("a token");
    assert_eq!(token, refreshed, "the other process's new token");
    assert_eq!(server.refreshes().await, 1, "one refresh in all");
    // The adopted refresh token is the live one: refreshing with it rotates, rather than
    // replaying a spent token.
    let from_file = EncryptedFileStore::new(&path, &key)
        .load()
        .expect("loads")
        .expect("holds tokens");
    let (status, _) = server.refresh(from_file.refresh_token.expose()).await;
    assert_eq!(status, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn an_older_pair_in_the_store_never_replaces_a_newer_one() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("kim").await;
    let store = Arc::new(MemoryStore::new());
    let client = subscribed(&server, store.clone()).await;
    client.sign_in(&pair).await.expect("signs in");
    let newest = client.refresh().await.expect("refreshes");
    events_open(&client).await;

    // The store goes back to the first pair (say, a stale copy restored by another process),
    // and someone refreshes the session: the event makes the client look at the store.
    let held = store.load().expect("loads").expect("holds tokens");
    store
        .save(&StoredTokens {
            received_at: SystemTime::now() - Duration::from_secs(60),
            ..received_ago(&pair, Duration::from_secs(60))
        })
        .expect("saves");
    let (status, _) = server.refresh(held.refresh_token.expose()).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(4)).await;

    assert_eq!(client.access_token().await.expect("a token"), newest);
}

#[tokio::test]
async fn the_clients_own_refresh_is_not_followed_by_a_reload_or_a_second_refresh() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("lou").await;
    let client = subscribed(&server, Arc::new(MemoryStore::new())).await;
    client.sign_in(&pair).await.expect("signs in");
    events_open(&client).await;
    let changes = Arc::new(AtomicUsize::new(0));
    let mut state = client.state();
    state.borrow_and_update();
    let counter = changes.clone();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let token = client.refresh().await.expect("refreshes");
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(
        changes.load(Ordering::SeqCst),
        1,
        "one new pair, nothing after"
    );
    assert_eq!(server.refreshes().await, 1);
    assert_eq!(client.access_token().await.expect("a token"), token);
    assert!(*client.events_connected().borrow(), "still following");
}

#[tokio::test]
async fn a_stream_refused_for_an_expired_token_is_opened_again_after_one_refresh() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("max").await;
    let client = subscribed(&server, Arc::new(MemoryStore::new())).await;
    // By the server's clock the access token has expired; by the client's it has not.
    server.advance(Duration::from_secs(20 * 60));
    client.sign_in(&pair).await.expect("signs in");

    events_open(&client).await;

    assert_eq!(server.refreshes().await, 1);
    let token = client.access_token().await.expect("a token");
    assert_ne!(token.expose(), pair.access_token, "the refreshed token");
    // And the stream it opened works: a revocation still arrives.
    let mut state = client.state();
    server.revoke(&pair.session.id).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|state| !state.is_signed_in()),
    )
    .await
    .expect("signed out")
    .expect("client alive");
}

/// What the scripted event endpoint saw: the `Last-Event-ID` of each request.
#[derive(Default)]
struct Script {
    last_event_ids: std::sync::Mutex<Vec<Option<String>>>,
}

/// `GET /v1/events` that answers, in turn: an event of another session, then the end of the
/// body without a closing message; then `stream.closed` with `session_ended`.
async fn scripted_events(
    axum::extract::State(script): axum::extract::State<Arc<Script>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let body = {
        let mut seen = script.last_event_ids.lock().expect("not poisoned");
        seen.push(last_event_id);
        match seen.len() {
            1 => concat!(
                ": heartbeat\n\n",
                "id: 5.7\n",
                "data: {\"type\":\"session.refreshed\",\"cursor\":\"5.7\",\"session_id\":\"another\"}\n\n",
            ),
            _ => "data: {\"type\":\"stream.closed\",\"reason\":\"session_ended\"}\n\n",
        }
    };
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(body))
        .expect("a response")
}

#[tokio::test]
async fn a_broken_stream_resumes_after_its_last_event_and_session_ended_signs_out() {
    let script = Arc::new(Script::default());
    let router = axum::Router::new()
        .route("/v1/events", axum::routing::get(scripted_events))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serves") });
    let now = SystemTime::now();
    let tokens = StoredTokens {
        access_token: "access".to_owned().into(),
        refresh_token: "sdr_refresh".to_owned().into(),
        received_at: now,
        access_token_expires_at: now + Duration::from_secs(900),
        refresh_token_expires_at: None,
        session_id: "mine".into(),
        user_id: "olga".into(),
    };
    let client = SessionClient::builder(&base)
        .store(Arc::new(MemoryStore::with_tokens(tokens)))
        .refresh_policy(on_demand_only())
        .subscribe_events(fast_events())
        .build()
        .await
        .expect("client builds");
    let mut state = client.state();

    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|state| !state.is_signed_in()),
    )
    .await
    .expect("signed out within 5 s")
    .expect("client alive");

    assert_eq!(
        client.current_state(),
        SessionState::SignedOut {
            reason: SignOutReason::Revoked
        }
    );
    let seen = script.last_event_ids.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        [None, Some("5.7".to_owned())],
        "the first stream starts live, the second resumes after the last event"
    );
}
