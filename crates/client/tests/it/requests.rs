//! `SessionClient::send`: the bearer token attached, and one refresh and one retry on a `401`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use sessiond_client::{EncryptedFileStore, Error, FileKey, SessionClient, SignOutReason};
use sessiond_wire::CurrentSession;
use tempfile::TempDir;

use crate::helpers::{Proxy, TestServer, client_with, on_demand_only};

#[tokio::test]
async fn a_401_is_answered_by_one_refresh_and_one_retry() {
    let server = TestServer::spawn().await;
    let proxy = Proxy::spawn(&server.base).await;
    let pair = server.create_session("nora").await;
    let (client, _store) = client_with(&proxy.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");
    // The server's clock runs 16 minutes ahead: it refuses the 15-minute access token that
    // the client, by its own clock, still takes for valid.
    server.advance(Duration::from_secs(16 * 60));

    let response = client
        .send(client.request(Method::GET, format!("{}/v1/sessions/current", proxy.base)))
        .await
        .expect("request succeeds");

    assert_eq!(response.status(), StatusCode::OK);
    let current: CurrentSession = response.json().await.expect("current session");
    assert_eq!(current.session.id, pair.session.id);
    assert_eq!(proxy.control.current.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(proxy.refreshes(), 1, "one refresh");
}

#[tokio::test]
async fn a_request_with_a_valid_token_is_sent_once_without_a_refresh() {
    let server = TestServer::spawn().await;
    let proxy = Proxy::spawn(&server.base).await;
    let pair = server.create_session("olga").await;
    let (client, _store) = client_with(&proxy.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");

    let response = client
        .send(client.request(Method::GET, format!("{}/v1/sessions/current", proxy.base)))
        .await
        .expect("request succeeds");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(proxy.control.current.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.refreshes(), 0);
}

#[tokio::test]
async fn a_401_for_a_revoked_session_ends_in_signed_out() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("pete").await;
    let (client, _store) = client_with(&server.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");
    server.revoke(&pair.session.id).await;

    let sent = client
        .send(client.request(Method::GET, format!("{}/v1/sessions/current", server.base)))
        .await;

    assert!(
        matches!(
            sent,
            Err(Error::SignedOut {
                reason: SignOutReason::Revoked
            })
        ),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_new_client_resumes_the_session_stored_by_the_previous_run() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("quinn").await;
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("tokens");
    let key = [7u8; 32];
    {
        let client = SessionClient::builder(&server.base)
            .store(Arc::new(EncryptedFileStore::new(
                &path,
                &FileKey::from_bytes(key),
            )))
            .build()
            .await
            .expect("client builds");
        client.sign_in(&pair).await.expect("signs in");
        client.refresh().await.expect("refreshes");
        client.shutdown().await;
    }

    let client = SessionClient::builder(&server.base)
        .store(Arc::new(EncryptedFileStore::new(
            &path,
            &FileKey::from_bytes(key),
        )))
        .build()
        .await
        .expect("client builds");

    assert!(client.current_state().is_signed_in());
    let response = client
        .send(client.request(Method::GET, format!("{}/v1/sessions/current", server.base)))
        .await
        .expect("request succeeds");
    assert_eq!(response.status(), StatusCode::OK);
    // The stored refresh token is the rotated one: refreshing with it works.
    client
        .refresh()
        .await
        .expect("the stored refresh token is live");
}
