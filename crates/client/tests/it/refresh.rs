//! Refreshing: single-flight on demand, ahead of expiry in the background, and never on the path
//! of a caller whose token is still valid.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use sessiond_client::{
    Error, RefreshPolicy, SecretString, SessionClient, SessionState, SignOutReason, StoredTokens,
};
use tokio::sync::Barrier;

use crate::helpers::{Proxy, TestServer, client_with, closed_port, on_demand_only, received_ago};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_tasks_with_an_expired_token_cause_exactly_one_refresh() {
    let server = TestServer::spawn().await;
    let proxy = Proxy::spawn(&server.base).await;
    // Hold the refresh long enough that every task arrives while it is in flight.
    proxy.control.refresh_delay_ms.store(200, Ordering::SeqCst);
    let pair = server.create_session("alice").await;
    // Received 20 minutes ago: the 15-minute access token has expired by the client's clock.
    let (client, store) = client_with(
        &proxy.base,
        Some(received_ago(&pair, Duration::from_secs(20 * 60))),
        on_demand_only(),
    )
    .await;

    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let client = client.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.access_token().await
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.expect("task runs").expect("a token"));
    }

    assert_eq!(proxy.refreshes(), 1, "one refresh request for 100 callers");
    assert!(tokens.iter().all(|token| token == &tokens[0]));
    assert_ne!(tokens[0].expose(), pair.access_token);
    assert_eq!(
        server.current_status(tokens[0].expose()).await,
        StatusCode::OK
    );
    // The successor was persisted before it was handed out.
    let stored = sessiond_client::TokenStore::load(store.as_ref())
        .expect("loads")
        .expect("holds tokens");
    assert_eq!(stored.access_token, tokens[0]);
    assert_ne!(stored.refresh_token.expose(), pair.refresh_token);
}

#[tokio::test]
async fn a_caller_that_stops_waiting_does_not_cancel_the_refresh() {
    // Were the refresh cancelled after the server rotated, the spent refresh token would be
    // presented again later and taken as theft.
    let server = TestServer::spawn().await;
    let proxy = Proxy::spawn(&server.base).await;
    proxy.control.refresh_delay_ms.store(300, Ordering::SeqCst);
    let pair = server.create_session("zoe").await;
    let (client, store) = client_with(
        &proxy.base,
        Some(received_ago(&pair, Duration::from_secs(20 * 60))),
        on_demand_only(),
    )
    .await;

    let gave_up = tokio::time::timeout(Duration::from_millis(50), client.access_token()).await;
    assert!(gave_up.is_err(), "the caller stopped waiting");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let stored = sessiond_client::TokenStore::load(store.as_ref())
        .expect("loads")
        .expect("holds tokens");
    assert_ne!(
        stored.refresh_token.expose(),
        pair.refresh_token,
        "rotated and saved"
    );
    let token = client.access_token().await.expect("a token");
    assert_eq!(token, stored.access_token);
    assert_eq!(proxy.refreshes(), 1);
}

#[tokio::test]
async fn the_background_task_refreshes_before_expiry_without_anyone_asking() {
    // A 4-second token: the window is a fifth of it (0.8 s), the jitter at most 0.08 s more.
    let server = TestServer::spawn_with(|raw| raw.access_ttl = Some("4s".into())).await;
    let proxy = Proxy::spawn(&server.base).await;
    let pair = server.create_session("bob").await;
    let (client, _store) = client_with(&proxy.base, None, RefreshPolicy::default()).await;
    let mut state = client.state();
    client.sign_in(&pair).await.expect("signs in");
    let SessionState::SignedIn {
        access_token_expires_at: first_expiry,
        ..
    } = *state.borrow_and_update()
    else {
        panic!("signed in");
    };

    tokio::time::timeout(Duration::from_secs(10), state.changed())
        .await
        .expect("a refresh within 10 s")
        .expect("client alive");
    let refreshed_at = SystemTime::now();

    assert_eq!(proxy.refreshes(), 1);
    assert!(
        refreshed_at < first_expiry,
        "refreshed before the old token expired"
    );
    let window_opened = first_expiry - Duration::from_millis(900);
    assert!(
        refreshed_at >= window_opened,
        "not refreshed before the window: {:?} early",
        window_opened.duration_since(refreshed_at)
    );
    assert!(state.borrow().is_signed_in());
    let token = client.access_token().await.expect("a token");
    assert_ne!(token.expose(), pair.access_token);
    assert_eq!(server.current_status(token.expose()).await, StatusCode::OK);
    client.shutdown().await;
}

#[tokio::test]
async fn a_valid_token_is_returned_from_the_cache_without_touching_the_network() {
    // Nothing listens at the server's address, and the token is past its refresh point (2 of
    // its 10 minutes left), so the background task is failing to refresh all along.
    let address = closed_port().await;
    let now = SystemTime::now();
    let tokens = StoredTokens {
        access_token: SecretString::new("cached-access-token"),
        refresh_token: SecretString::new("sdr_cached-refresh-token"),
        received_at: now - Duration::from_secs(8 * 60),
        access_token_expires_at: now + Duration::from_secs(2 * 60),
        refresh_token_expires_at: None,
        session_id: "00000000-0000-4000-8000-000000000000".into(),
        user_id: "carol".into(),
    };
    let (client, _store) = client_with(
        &format!("http://{address}"),
        Some(tokens),
        RefreshPolicy::default(),
    )
    .await;

    for _ in 0..100 {
        let started = Instant::now();
        let token = client.access_token().await.expect("the cached token");
        assert_eq!(token.expose(), "cached-access-token");
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_client_that_never_signed_in_reports_signed_out() {
    let address = closed_port().await;
    let (client, _store) = client_with(&format!("http://{address}"), None, on_demand_only()).await;
    assert_eq!(
        client.current_state(),
        SessionState::SignedOut {
            reason: SignOutReason::NoTokens
        }
    );
    assert!(matches!(
        client.access_token().await,
        Err(Error::SignedOut {
            reason: SignOutReason::NoTokens
        })
    ));
    assert!(matches!(
        client.refresh().await,
        Err(Error::SignedOut { .. })
    ));
}

#[tokio::test]
async fn a_bad_base_url_is_an_error_and_a_trailing_slash_is_fine() {
    assert!(matches!(
        SessionClient::builder("not a url").build().await,
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        SessionClient::builder("ftp://example.com").build().await,
        Err(Error::InvalidUrl { .. })
    ));
    let server = TestServer::spawn().await;
    let pair = server.create_session("dave").await;
    let (client, _store) = client_with(&format!("{}/", server.base), None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");
    client
        .refresh()
        .await
        .expect("refreshes with a trailing slash in the base");
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    // `build` checks for a runtime when first polled; polling it with a bare executor outside
    // any runtime context shows the error instead of a panic.
    let future = SessionClient::builder("http://127.0.0.1:9").build();
    let result = futures_lite_block_on(future);
    assert!(matches!(result, Err(Error::NoRuntime)));
}

/// Polls `future` to completion on this thread without a Tokio runtime.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
