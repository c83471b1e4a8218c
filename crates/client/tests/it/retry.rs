//! Retrying refreshes: `503` and unreachable servers are retried with backoff, honouring
//! `Retry-After`, within bounds; giving up keeps the tokens.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sessiond_client::{Error, SessionClient, TokenStore};
use tokio::net::TcpListener;

use crate::helpers::{Proxy, TestServer, client_with, closed_port, fast_retries, on_demand_only};

#[tokio::test]
async fn two_503s_are_retried_and_the_third_attempt_refreshes() {
    let server = TestServer::spawn().await;
    let proxy = Proxy::spawn(&server.base).await;
    proxy.control.fail_refreshes.store(2, Ordering::SeqCst);
    proxy.control.retry_after_seconds.store(0, Ordering::SeqCst);
    let pair = server.create_session("ivan").await;
    let (client, store) = client_with(&proxy.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");

    let token = client
        .refresh()
        .await
        .expect("refreshes on the third attempt");

    assert_eq!(proxy.refreshes(), 3);
    assert_ne!(token.expose(), pair.access_token);
    assert_eq!(server.current_status(token.expose()).await, StatusCode::OK);
    assert_eq!(
        store.load().expect("loads").expect("tokens").access_token,
        token
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = TestServer::spawn().await;
    let proxy = Proxy::spawn(&server.base).await;
    proxy.control.fail_refreshes.store(1, Ordering::SeqCst);
    proxy.control.retry_after_seconds.store(1, Ordering::SeqCst);
    let pair = server.create_session("judy").await;
    let (client, _store) = client_with(&proxy.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");

    let started = Instant::now();
    client
        .refresh()
        .await
        .expect("refreshes on the second attempt");

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.refreshes(), 2);
}

#[tokio::test]
async fn a_refresh_that_keeps_failing_gives_up_and_keeps_the_tokens() {
    let server = TestServer::spawn().await;
    let proxy = Proxy::spawn(&server.base).await;
    proxy
        .control
        .fail_refreshes
        .store(usize::MAX, Ordering::SeqCst);
    let pair = server.create_session("kim").await;
    let store = std::sync::Arc::new(sessiond_client::MemoryStore::new());
    let client = SessionClient::builder(&proxy.base)
        .store(store.clone())
        .refresh_policy(on_demand_only())
        .retry_policy(fast_retries(3))
        .build()
        .await
        .expect("client builds");
    client.sign_in(&pair).await.expect("signs in");

    let refreshed = client.refresh().await;

    match &refreshed {
        Err(Error::Unavailable { attempts: 3, last }) => assert!(
            matches!(**last, Error::Status { status: 503, .. }),
            "{last:?}"
        ),
        other => panic!("expected Unavailable after 3 attempts, got {other:?}"),
    }
    assert_eq!(proxy.refreshes(), 3);
    assert!(client.current_state().is_signed_in());
    assert!(store.load().expect("loads").is_some(), "tokens are kept");
    // The still-valid access token is still handed out.
    assert_eq!(
        client.access_token().await.expect("cached").expose(),
        pair.access_token
    );
    // And once the server is back, the same refresh token works.
    proxy.control.fail_refreshes.store(0, Ordering::SeqCst);
    client
        .refresh()
        .await
        .expect("refreshes once the server is back");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_until_it_comes_up() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("leo").await;
    let address = closed_port().await;
    // More attempts than `client_with` gives, so that the server has time to come up.
    let client = SessionClient::builder(format!("http://{address}"))
        .refresh_policy(on_demand_only())
        .retry_policy(fast_retries(50))
        .build()
        .await
        .expect("client builds");
    client.sign_in(&pair).await.expect("signs in");

    let upstream = server.base.clone();
    let started = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let listener = TcpListener::bind(address).await.expect("rebind the port");
        Proxy::spawn_on(listener, &upstream)
    });
    let token = client
        .refresh()
        .await
        .expect("refreshes once the server is up");
    let proxy = started.await.expect("proxy started");

    assert_eq!(proxy.refreshes(), 1, "connection failures never reached it");
    assert_eq!(server.current_status(token.expose()).await, StatusCode::OK);
}

#[tokio::test]
async fn an_unexpected_status_is_not_retried_and_keeps_the_tokens() {
    // A refresh URL that answers 404: a misconfigured base URL, not a passing failure.
    let server = TestServer::spawn().await;
    let pair = server.create_session("mia").await;
    let (client, store) = client_with(
        &format!("{}/not-sessiond/", server.base),
        None,
        on_demand_only(),
    )
    .await;
    client.sign_in(&pair).await.expect("signs in");

    let refreshed = client.refresh().await;

    assert!(
        matches!(refreshed, Err(Error::Status { status: 404, .. })),
        "{refreshed:?}"
    );
    assert!(store.load().expect("loads").is_some());
    assert!(client.current_state().is_signed_in());
}
