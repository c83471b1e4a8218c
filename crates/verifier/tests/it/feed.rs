//! The revocation feed: a revoked session's tokens are refused within the propagation target,
//! a verifier started later learns of earlier revocations by replay, and an outage of sessiond
//! leaves verification working on cached keys while the stats say the feed is down.

use std::time::{Duration, Instant};

use sessiond_verifier::{RevocationFeed, TokenError, Verifier, VerifyError};

use crate::helpers::*;

/// Revocations must reach a verifier within this (the propagation target).
const PROPAGATION: Duration = Duration::from_secs(1);

fn feed_of(server: &TestServer) -> RevocationFeed {
    RevocationFeed::new(&server.base, ADMIN_KEY)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn following(server: &TestServer) -> Verifier {
    let verifier = verifier_of(&server.jwks_url())
        .revocation_feed(feed_of(server))
        .build()
        .unwrap();
    verifier.refresh().await.unwrap();
    feed_connected(&verifier, true).await;
    verifier
}

async fn feed_connected(verifier: &Verifier, connected: bool) {
    eventually("the feed to change state", async || {
        verifier.stats().feed.unwrap().connected == connected
    })
    .await;
}

/// How long until `token` is refused as revoked (polled every 2 ms, at most 5 s).
async fn time_until_refused(verifier: &Verifier, token: &str, since: Instant) -> Duration {
    loop {
        match verifier.verify_cached(token) {
            Err(VerifyError::Invalid(TokenError::Revoked)) => return since.elapsed(),
            Ok(_) => {}
            Err(other) => panic!("refused for another reason: {other}"),
        }
        assert!(since.elapsed() < Duration::from_secs(5), "never refused");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_token_is_refused_within_a_second_of_its_session_being_revoked() {
    let server = TestServer::spawn().await;
    let pair = server.token_with(&["notes:read"]).await;
    let verifier = following(&server).await;
    verifier.verify(&pair.access_token).await.unwrap();

    let started = Instant::now();
    server.revoke(&pair.session.id).await;
    let latency = time_until_refused(&verifier, &pair.access_token, started).await;

    assert!(latency < PROPAGATION, "took {latency:?}");
    let stats = verifier.stats();
    let feed = stats.feed.expect("a feed");
    assert!(feed.connected);
    assert_eq!(feed.revocations, 1);
    assert_eq!(stats.revoked_sessions, 1);
}

#[tokio::test]
async fn a_verifier_started_after_the_revocation_refuses_the_token_too() {
    let server = TestServer::spawn().await;
    let revoked = server.token_with(&["notes:read"]).await;
    let live = server.token_with(&["notes:read"]).await;
    server.revoke(&revoked.session.id).await;

    let verifier = following(&server).await;
    eventually("the replayed revocation", async || {
        verifier.stats().feed.unwrap().revocations == 1
    })
    .await;

    assert!(matches!(
        verifier.verify(&revoked.access_token).await,
        Err(VerifyError::Invalid(TokenError::Revoked))
    ));
    verifier.verify(&live.access_token).await.unwrap();
}

#[tokio::test]
async fn while_sessiond_is_down_cached_keys_keep_verifying_and_the_feed_says_disconnected() {
    let mut server = TestServer::spawn().await;
    let first = server.token_with(&["notes:read"]).await;
    let second = server.token_with(&["notes:read"]).await;
    let verifier = following(&server).await;
    server.revoke(&first.session.id).await;
    eventually("the first revocation", async || {
        verifier.stats().revoked_sessions == 1
    })
    .await;
    let cursor = verifier.stats().feed.unwrap().cursor;

    server.stop().await;
    feed_connected(&verifier, false).await;

    let claims = verifier.verify(&second.access_token).await.unwrap();
    assert_eq!(claims.sub, "user-1");
    assert!(matches!(
        verifier.verify(&first.access_token).await,
        Err(VerifyError::Invalid(TokenError::Revoked))
    ));
    let stats = verifier.stats();
    assert!(!stats.feed.as_ref().unwrap().connected, "{stats:?}");

    // Back up: the feed reconnects, resumes after its cursor (the first revocation is not
    // received again), and carries the next revocation as fast as before.
    server.start_again().await;
    feed_connected(&verifier, true).await;
    let started = Instant::now();
    server.revoke(&second.session.id).await;
    let latency = time_until_refused(&verifier, &second.access_token, started).await;
    assert!(latency < PROPAGATION, "took {latency:?}");
    let feed = verifier.stats().feed.unwrap();
    assert_eq!(feed.revocations, 2, "resumed after {cursor}, nothing twice");
    assert!(feed.connections >= 2);
    assert_ne!(feed.cursor, cursor);
}

#[tokio::test]
async fn revocations_older_than_the_longest_token_lifetime_are_not_kept() {
    let server = TestServer::spawn().await;
    let pair = server.token_with(&["notes:read"]).await;
    server.revoke(&pair.session.id).await;
    // The server's clock moves on two hours before the verifier starts: the revocation is
    // still retained (24 h), but no token of that session can be alive any more.
    server.clock.advance(Duration::from_secs(2 * 3600));
    let verifier = verifier_of(&server.jwks_url())
        .clock(server.clock.clone())
        .revocation_feed(feed_of(&server).max_token_lifetime(Duration::from_secs(3600)))
        .build()
        .unwrap();
    verifier.refresh().await.unwrap();
    eventually("the replayed revocation", async || {
        verifier.stats().feed.unwrap().revocations == 1
    })
    .await;

    assert_eq!(verifier.stats().revoked_sessions, 0);
}

#[test]
fn a_feed_needs_a_runtime_and_an_http_base_url() {
    assert!(matches!(
        verifier_of("http://sessiond.test/.well-known/jwks.json")
            .revocation_feed(RevocationFeed::new("http://sessiond.test", ADMIN_KEY))
            .build(),
        Err(sessiond_verifier::BuildError::NoRuntime)
    ));
    assert!(matches!(
        verifier_of("http://sessiond.test/.well-known/jwks.json")
            .revocation_feed(RevocationFeed::new("sessiond.test", ADMIN_KEY))
            .build(),
        Err(sessiond_verifier::BuildError::InvalidUrl(_))
    ));
}
