//! Verifying real tokens: claims, revocation, and tokens sessiond never signed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::time::Duration;

use sessiond_core::{SessionId, Timestamp};
use sessiond_verifier::{TokenError, VerifyError};

use crate::helpers::*;

#[tokio::test]
async fn a_real_token_verifies_and_its_claims_come_through() {
    let server = TestServer::spawn().await;
    let pair = server.token_with(&["notes:read", "notes:share:*"]).await;
    let verifier = verifier_of(&server.jwks_url()).build().unwrap();

    let claims = verifier.verify(&pair.access_token).await.unwrap();

    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.sid.to_string(), pair.session.id);
    assert_eq!(claims.tenant_id.as_deref(), Some("acme"));
    assert_eq!(claims.roles, ["user"]);
    assert_eq!(claims.permissions, ["notes:read", "notes:share:*"]);
    assert_eq!(
        claims.exp,
        claims_of(&pair.access_token)["exp"].as_i64().unwrap()
    );
    assert_eq!(claims.raw["iss"], ISSUER);
    assert!(
        claims.raw.contains_key("jti"),
        "the raw claims are all there"
    );
    assert!(claims.has_permission("notes:read"));
    assert!(claims.has_permission("notes:share:public"));
    assert!(!claims.has_permission("notes:write"));

    let stats = verifier.stats();
    assert_eq!((stats.fetches, stats.fetch_failures), (1, 0));
    assert!(!stats.offline);
    assert_eq!(stats.keys, 1);
}

#[tokio::test]
async fn tokens_of_every_published_algorithm_verify_and_tampered_ones_do_not() {
    for algorithm in ["EdDSA", "ES256", "RS256"] {
        let server = spawn_signing_with(algorithm).await;
        let pair = server.token_with(&["notes:read"]).await;
        let verifier = verifier_of(&server.jwks_url()).build().unwrap();
        let claims = verifier
            .verify(&pair.access_token)
            .await
            .unwrap_or_else(|error| panic!("{algorithm}: {error}"));
        assert_eq!(claims.sid.to_string(), pair.session.id, "{algorithm}");
        assert_eq!(verifier.stats().keys, 1, "{algorithm}");

        let (signing_input, _) = pair.access_token.rsplit_once('.').unwrap();
        let other = server.token_with(&["notes:write"]).await;
        let (_, other_signature) = other.access_token.rsplit_once('.').unwrap();
        let spliced = format!("{signing_input}.{other_signature}");
        assert!(
            matches!(
                verifier.verify(&spliced).await,
                Err(VerifyError::Invalid(TokenError::BadSignature))
            ),
            "{algorithm}"
        );
    }
}

#[tokio::test]
async fn a_token_for_another_audience_or_issuer_is_refused() {
    let server = TestServer::spawn().await;
    let pair = server.token_with(&["notes:read"]).await;
    let other_audience = verifier_of(&server.jwks_url())
        .audience("billing-api")
        .build()
        .unwrap();
    assert!(matches!(
        other_audience.verify(&pair.access_token).await,
        Err(VerifyError::Invalid(TokenError::WrongAudience))
    ));
    let other_issuer = verifier_of(&server.jwks_url())
        .issuer("http://elsewhere.test")
        .build()
        .unwrap();
    assert!(matches!(
        other_issuer.verify(&pair.access_token).await,
        Err(VerifyError::Invalid(TokenError::WrongIssuer))
    ));
}

#[tokio::test]
async fn a_session_in_the_revoked_set_is_refused() {
    let server = TestServer::spawn().await;
    let pair = server.token_with(&["notes:read"]).await;
    let other = server.token_with(&["notes:read"]).await;
    let verifier = verifier_of(&server.jwks_url()).build().unwrap();
    verifier.verify(&pair.access_token).await.unwrap();

    let session = SessionId::parse(&pair.session.id, "sid").unwrap();
    let an_hour_on = Timestamp::from_unix_millis(wall_clock_now().unix_millis() + 3_600_000);
    verifier.revoke_session(session, an_hour_on);

    assert!(matches!(
        verifier.verify(&pair.access_token).await,
        Err(VerifyError::Invalid(TokenError::Revoked))
    ));
    assert!(
        verifier.verify(&other.access_token).await.is_ok(),
        "only the revoked session is refused"
    );
    assert_eq!(verifier.stats().revoked_sessions, 1);
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_refused() {
    let server = TestServer::spawn().await;
    let pair = server.token_with(&["notes:read"]).await;
    let verifier = verifier_of(&server.jwks_url()).build().unwrap();
    let claims = claims_of(&pair.access_token);
    let key = foreign_key();

    assert!(matches!(
        verifier.verify(&mint(&key, "bogus-1", &claims)).await,
        Err(VerifyError::Invalid(TokenError::UnknownKey))
    ));
    // Under the real kid, the foreign signature is what fails.
    let real_kid = kid_of(&pair.access_token);
    assert!(matches!(
        verifier.verify(&mint(&key, &real_kid, &claims)).await,
        Err(VerifyError::Invalid(TokenError::BadSignature))
    ));
    assert!(verifier.verify(&pair.access_token).await.is_ok());
}

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_sessiond_at_most_one_fetch_per_interval() {
    let server = TestServer::spawn().await;
    let proxy = JwksProxy::spawn(&server.base).await;
    let pair = server.token_with(&["notes:read"]).await;
    // Long enough that the whole flood lands within one interval even on a loaded machine.
    let interval = Duration::from_millis(1_500);
    let verifier = verifier_of(&proxy.jwks_url())
        .min_refetch_interval(interval)
        .build()
        .unwrap();
    verifier.verify(&pair.access_token).await.unwrap();
    assert_eq!(proxy.jwks_requests(), 1);

    let claims = claims_of(&pair.access_token);
    let key = foreign_key();
    let bogus: Vec<String> = (0..1_000)
        .map(|n| mint(&key, &format!("bogus-{n}"), &claims))
        .collect();
    // Past the interval, so that an unknown kid may trigger exactly one refetch.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;

    let mut tasks = tokio::task::JoinSet::new();
    for token in bogus {
        let verifier = verifier.clone();
        tasks.spawn(async move { verifier.verify(&token).await });
    }
    while let Some(outcome) = tasks.join_next().await {
        assert!(matches!(
            outcome.unwrap(),
            Err(VerifyError::Invalid(TokenError::UnknownKey))
        ));
    }
    assert_eq!(
        proxy.jwks_requests(),
        2,
        "1,000 unknown kids within the interval share one refetch"
    );
    let stats = verifier.stats();
    assert_eq!((stats.fetches, stats.unknown_kid_refetches), (2, 1));
    assert!(verifier.verify(&pair.access_token).await.is_ok());
}

#[tokio::test]
async fn a_registered_claim_present_as_null_is_refused_not_read_as_absent() {
    // Regression: `"nbf": null` passed as if `nbf` were absent. A resource server applies the
    // same rule as sessiond: present means a value of the claim's type.
    let key = foreign_key();
    let jwks = serde_json::json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "local-1",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    }]});
    let keys = sessiond_verifier::VerificationKeys::from_public_jwks(&jwks).unwrap();
    // Never fetched: the keys are given, and the URL leads nowhere.
    let verifier = verifier_of("http://127.0.0.1:9/.well-known/jwks.json")
        .initial_keys(keys)
        .build()
        .unwrap();
    let now = wall_clock_now().unix_millis() / 1000;
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "exp": now + 600, "iat": now,
        "sid": "67e55044-10b1-426f-9247-bb680e5fe0c8",
    });
    assert!(
        verifier
            .verify_cached(&mint(&key, "local-1", &claims))
            .is_ok()
    );
    let mut with_nbf = claims.clone();
    with_nbf["nbf"] = serde_json::json!(now);
    assert!(
        verifier
            .verify_cached(&mint(&key, "local-1", &with_nbf))
            .is_ok()
    );
    for name in ["nbf", "exp", "iat", "iss", "sub", "aud", "sid"] {
        let mut nulled = claims.clone();
        nulled[name] = serde_json::Value::Null;
        assert!(
            matches!(
                verifier.verify_cached(&mint(&key, "local-1", &nulled)),
                Err(VerifyError::Invalid(TokenError::Malformed))
            ),
            "{name}: null"
        );
    }
}
