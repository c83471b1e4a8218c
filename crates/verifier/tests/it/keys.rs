//! The key cache: `Cache-Control`, and outages of sessiond.

use std::time::Duration;

use sessiond_verifier::{TokenError, VerifyError};

use crate::helpers::*;

#[tokio::test]
async fn the_servers_max_age_sets_the_cache_lifetime() {
    let server = TestServer::spawn().await;
    let first = server.token_with(&["notes:read"]).await;
    let second = server.token_with(&["notes:read"]).await;
    let verifier = verifier_of(&server.jwks_url())
        .min_refetch_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    verifier.refresh().await.unwrap();
    verifier.verify(&first.access_token).await.unwrap();
    verifier.verify(&second.access_token).await.unwrap();

    let stats = verifier.stats();
    assert_eq!(
        stats.cache_lifetime,
        Some(Duration::from_secs(300)),
        "read from `Cache-Control: public, max-age=300`"
    );
    assert_eq!(stats.fetches, 1, "a fresh key set is not fetched again");
}

#[tokio::test]
async fn a_stale_key_set_is_refreshed_in_the_background_while_tokens_still_verify() {
    let server = TestServer::spawn().await;
    let proxy = JwksProxy::spawn(&server.base).await;
    proxy.set_cache_control("public, max-age=2");
    let pair = server.token_with(&["notes:read"]).await;
    let verifier = verifier_of(&proxy.jwks_url())
        .min_refetch_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    verifier.verify(&pair.access_token).await.unwrap();
    assert_eq!(
        verifier.stats().cache_lifetime,
        Some(Duration::from_secs(2))
    );
    verifier.verify(&pair.access_token).await.unwrap();
    assert_eq!(proxy.jwks_requests(), 1, "fresh for two seconds");

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    verifier.verify(&pair.access_token).await.unwrap();
    eventually("the background refresh", async || {
        proxy.jwks_requests() == 2
    })
    .await;
}

#[tokio::test]
async fn max_age_is_clamped_to_the_refetch_interval() {
    let server = TestServer::spawn().await;
    let proxy = JwksProxy::spawn(&server.base).await;
    proxy.set_cache_control("no-store");
    let verifier = verifier_of(&proxy.jwks_url())
        .min_refetch_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    verifier.refresh().await.unwrap();
    assert_eq!(
        verifier.stats().cache_lifetime,
        Some(Duration::from_secs(10))
    );
}

#[tokio::test]
async fn with_sessiond_stopped_cached_keys_keep_verifying_and_stats_say_offline() {
    let mut server = TestServer::spawn().await;
    let pair = server.token_with(&["notes:read"]).await;
    let interval = Duration::from_millis(200);
    let verifier = verifier_of(&server.jwks_url())
        .min_refetch_interval(interval)
        .fetch_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    verifier.verify(&pair.access_token).await.unwrap();
    assert!(!verifier.stats().offline);

    server.stop().await;

    // An unknown kid past the interval makes the verifier try to refetch, which fails.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    let bogus = mint(
        &foreign_key(),
        "bogus-offline",
        &claims_of(&pair.access_token),
    );
    assert!(matches!(
        verifier.verify(&bogus).await,
        Err(VerifyError::Invalid(TokenError::UnknownKey))
    ));
    let stats = verifier.stats();
    assert!(stats.offline, "{stats:?}");
    assert_eq!((stats.fetches, stats.fetch_failures), (2, 1));
    assert!(stats.last_success_age.is_some());
    assert_eq!(stats.keys, 1, "the cached keys are kept");

    let claims = verifier.verify(&pair.access_token).await.unwrap();
    assert_eq!(claims.sub, "user-1");
    assert!(verifier.refresh().await.is_err());
    assert_eq!(verifier.stats().fetch_failures, 2);
    assert!(verifier.verify(&pair.access_token).await.is_ok());
}

#[tokio::test]
async fn before_any_key_set_tokens_cannot_be_judged_and_fetches_stay_rate_limited() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let verifier = verifier_of(&format!("http://{closed}{JWKS_PATH}"))
        .build()
        .unwrap();
    for _ in 0..10 {
        assert!(matches!(
            verifier.verify("a.b.c").await,
            Err(VerifyError::KeysUnavailable)
        ));
    }
    let stats = verifier.stats();
    assert_eq!((stats.fetches, stats.fetch_failures), (1, 1));
    assert!(stats.offline);
    assert_eq!(stats.last_success_age, None);
}
