//! Signing out: a refused refresh token (revoked, reused) clears storage and publishes
//! `SignedOut`; so does `sign_out`, which also ends the session on the server.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sessiond_client::{
    EncryptedFileStore, Error, FileKey, SessionClient, SessionState, SignOutReason, TokenStore,
};
use tempfile::TempDir;

use crate::helpers::{TestServer, client_with, fast_retries, is_empty, on_demand_only};

#[tokio::test]
async fn revoking_the_session_signs_the_client_out_and_clears_the_file_store() {
    let server = TestServer::spawn().await;
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("tokens");
    let key = FileKey::generate().expect("a key");
    let store = Arc::new(EncryptedFileStore::new(&path, &key));
    let client = SessionClient::builder(&server.base)
        .store(store.clone())
        .refresh_policy(on_demand_only())
        .retry_policy(fast_retries(3))
        .build()
        .await
        .expect("client builds");
    let pair = server.create_session("erin").await;
    client.sign_in(&pair).await.expect("signs in");
    assert!(path.exists());
    let mut state = client.state();
    state.borrow_and_update();

    server.revoke(&pair.session.id).await;
    let refreshed = client.refresh().await;

    assert!(
        matches!(
            &refreshed,
            Err(Error::SignedOut {
                reason: SignOutReason::Revoked
            })
        ),
        "{refreshed:?}"
    );
    assert!(state.has_changed().expect("client alive"));
    assert_eq!(
        *state.borrow_and_update(),
        SessionState::SignedOut {
            reason: SignOutReason::Revoked
        }
    );
    assert!(!path.exists(), "the token file is removed");
    assert!(store.load().expect("loads").is_none());
    // Later calls say so too, without asking the server.
    assert!(matches!(
        client.access_token().await,
        Err(Error::SignedOut {
            reason: SignOutReason::Revoked
        })
    ));
}

#[tokio::test]
async fn a_refresh_token_replayed_after_the_grace_window_signs_the_client_out_as_reuse() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("frank").await;
    let (client, store) = client_with(&server.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");

    // Someone else (a thief with a copy) spends the client's refresh token first and then
    // uses its successor, after the server's reuse grace window (10 s by default) passed.
    let (status, stolen) = server.refresh(&pair.refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    server.advance(Duration::from_secs(11));
    let successor = stolen["refresh_token"].as_str().expect("a successor");
    let (status, _) = server.refresh(successor).await;
    assert_eq!(status, StatusCode::OK);

    let refreshed = client.refresh().await;
    assert!(
        matches!(
            &refreshed,
            Err(Error::SignedOut {
                reason: SignOutReason::ReuseDetected
            })
        ),
        "{refreshed:?}"
    );
    assert_eq!(
        client.current_state(),
        SessionState::SignedOut {
            reason: SignOutReason::ReuseDetected
        }
    );
    assert!(is_empty(store.as_ref()));
}

/// Regression: a refresh the server refused with reason `anomaly` (its `revoke` anomaly
/// policy) signed the client out with `Other("anomaly")`, a reason the application could not
/// match on.
#[tokio::test]
async fn a_refresh_refused_as_an_anomaly_signs_the_client_out_with_reason_anomaly() {
    let server = TestServer::spawn_with(|raw| raw.anomaly_policy = Some("revoke".into())).await;
    // The session was created from another network than the client refreshes from.
    let pair = server
        .create_session_with(serde_json::json!({
            "user_id": "gina",
            "device": {"name": "Laptop", "ip": "198.51.100.4"},
        }))
        .await;
    let (client, store) = client_with(&server.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");

    let refreshed = client.refresh().await;
    assert!(
        matches!(
            &refreshed,
            Err(Error::SignedOut {
                reason: SignOutReason::Anomaly
            })
        ),
        "{refreshed:?}"
    );
    assert_eq!(SignOutReason::Anomaly.as_str(), "anomaly");
    assert_eq!(
        client.current_state(),
        SessionState::SignedOut {
            reason: SignOutReason::Anomaly
        }
    );
    assert!(is_empty(store.as_ref()));
}

#[tokio::test]
async fn a_replay_inside_the_grace_window_gets_the_same_successor_and_stays_signed_in() {
    // The case the retry policy relies on: a refresh whose answer was lost is presented
    // again within the grace window and gets the successor the server already made.
    let server = TestServer::spawn().await;
    let pair = server.create_session("grace").await;
    let (client, _store) = client_with(&server.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");
    let (status, first) = server.refresh(&pair.refresh_token).await;
    assert_eq!(status, StatusCode::OK);

    let token = client.refresh().await.expect("the replay is answered");
    assert_eq!(
        token.expose(),
        first["access_token"].as_str().expect("token")
    );
    assert!(client.current_state().is_signed_in());
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server_and_clears_storage() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("gina").await;
    let (client, store) = client_with(&server.base, None, on_demand_only()).await;
    client.sign_in(&pair).await.expect("signs in");

    client.sign_out().await.expect("signs out");

    assert_eq!(
        client.current_state(),
        SessionState::SignedOut {
            reason: SignOutReason::LoggedOut
        }
    );
    assert!(is_empty(store.as_ref()));
    assert_eq!(
        server.current_status(&pair.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = server.refresh(&pair.refresh_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["reason"], "revoked");
}

#[tokio::test]
async fn a_new_sign_in_after_a_sign_out_works_again() {
    let server = TestServer::spawn().await;
    let (client, _store) = client_with(&server.base, None, on_demand_only()).await;
    let first = server.create_session("hank").await;
    client.sign_in(&first).await.expect("signs in");
    server.revoke(&first.session.id).await;
    assert!(client.refresh().await.is_err());
    assert!(!client.current_state().is_signed_in());

    let second = server.create_session("hank").await;
    client.sign_in(&second).await.expect("signs in again");
    let token = client.refresh().await.expect("refreshes the new session");
    assert_eq!(server.current_status(token.expose()).await, StatusCode::OK);
}
