//! Points 2, 6 and 7: creating sessions, device recognition, listing, and the per-user limit.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use sessiond_core::Clock as _;

use crate::helpers::{ADMIN_KEY, FIREFOX, TestApp, text};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

async fn creating_a_session_returns_a_token_pair_and_the_session() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session_with(json!({
            "user_id": "alice",
            "tenant_id": "acme",
            "device": {"id": "device-1", "name": "Alice's phone", "user_agent": IPHONE, "ip": "2001:db8::1"},
            "claims": {"roles": ["admin"], "plan": "pro"},
            "metadata": {"login_method": "passkey"},
        }))
        .await;
    assert_eq!(created["token_type"], "Bearer");
    assert!(
        text(&created, "refresh_token").len() >= 43,
        "at least 256 bits"
    );
    let session = &created["session"];
    assert_eq!(session["user_id"], "alice");
    assert_eq!(session["tenant_id"], "acme");
    assert_eq!(session["device"]["id"], "device-1");
    assert_eq!(session["device"]["name"], "Alice's phone");
    assert_eq!(session["device"]["type"], "mobile");
    assert_eq!(session["device"]["browser"], "Safari");
    assert_eq!(session["device"]["os"], "iPhone");
    assert_eq!(session["device"]["trusted"], false);
    assert_eq!(session["ip"], "2001:db8::1");
    assert_eq!(session["user_agent"], IPHONE);
    assert!(session["revoked_at"].is_null());
    assert!(
        session.get("current").is_none(),
        "no `current` for an admin caller"
    );

    let current = app
        .get("/v1/sessions/current", Some(text(&created, "access_token")))
        .await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(current.body["id"], session["id"]);
    assert_eq!(current.body["current"], true);
    assert_eq!(current.body["claims"]["plan"], "pro");
    assert_eq!(current.body["claims"]["tenant_id"], "acme");
    assert!(
        current.body.get("metadata").is_none(),
        "metadata never leaves the server"
    );
}

async fn a_device_id_is_generated_when_the_client_sends_none() {
    let app = TestApp::spawn().await;
    let first = app.create_session_with(json!({"user_id": "alice"})).await;
    let second = app.create_session_with(json!({"user_id": "alice"})).await;
    let first_id = text(&first["session"]["device"], "id");
    assert!(!first_id.is_empty());
    assert_ne!(first_id, text(&second["session"]["device"], "id"));
    assert_eq!(first["session"]["device"]["type"], "unknown");
}

async fn the_jwks_publishes_the_public_signing_key_that_verifies_tokens() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::Verifier as _;

    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert!(
        jwks.headers["cache-control"]
            .to_str()
            .unwrap_or("")
            .contains("max-age"),
        "verifiers may cache it"
    );
    let keys = jwks.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key.get("d").is_none(), "no private part");

    // Verify the token independently of sessiond's own validator.
    let token = text(&created, "access_token");
    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signing_input.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["kid"], key["kid"]);
    let public: [u8; 32] = URL_SAFE_NO_PAD
        .decode(text(key, "x"))
        .expect("b64")
        .try_into()
        .expect("32 bytes");
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("b64")
        .try_into()
        .expect("64");
    ed25519_dalek::VerifyingKey::from_bytes(&public)
        .expect("valid key")
        .verify(
            signing_input.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .expect("signature verifies against the published key");
}

async fn hs256_signing_works_and_publishes_no_secret() {
    let app = TestApp::spawn_with(|raw| raw.signing_alg = Some("HS256".into())).await;
    let created = app.create_session("alice").await;
    let current = app
        .get("/v1/sessions/current", Some(text(&created, "access_token")))
        .await;
    assert_eq!(current.status, StatusCode::OK);
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.body["keys"].as_array().map(Vec::len), Some(0));
}

async fn es256_and_rs256_signing_work_and_publish_only_the_public_key() {
    for (algorithm, kty, members) in [
        (
            "ES256",
            "EC",
            &["alg", "crv", "kid", "kty", "use", "x", "y"][..],
        ),
        ("RS256", "RSA", &["alg", "e", "kid", "kty", "n", "use"][..]),
    ] {
        let app = TestApp::spawn_with(|raw| raw.signing_alg = Some(algorithm.into())).await;
        let created = app.create_session("alice").await;
        let token = text(&created, "access_token");
        let current = app.get("/v1/sessions/current", Some(token)).await;
        assert_eq!(current.status, StatusCode::OK, "{algorithm}");

        let jwks = app.get("/.well-known/jwks.json", None).await;
        let keys = jwks.body["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1, "{algorithm}");
        assert_eq!(keys[0]["kty"], kty);
        assert_eq!(keys[0]["alg"], algorithm);
        let mut names: Vec<&str> = keys[0]
            .as_object()
            .expect("a JWK")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, members, "{algorithm}: public members only");

        let verification = sessiond_core::token::VerificationKeys::from_public_jwks(&jwks.body)
            .expect("the JWK Set parses");
        let validator = sessiond_core::token::AccessTokenValidator::new(
            sessiond_core::token::ValidationRules {
                issuer: app.config.issuer.clone(),
                audience: app.config.audience.clone(),
                leeway_seconds: 5,
            },
        );
        let revoked = sessiond_core::revocation::RevokedSessions::new();
        let validated = validator
            .validate(token, &verification, &revoked, app.clock.now())
            .expect("the token verifies against the published key");
        assert_eq!(validated.user_id, "alice");
    }
}

async fn a_user_lists_only_their_active_sessions_with_the_current_one_marked() {
    let app = TestApp::spawn().await;
    let old = app.create_session("alice").await;
    app.advance(Duration::from_secs(5));
    let current = app
        .create_session_with(json!({"user_id": "alice", "device": {"user_agent": IPHONE}}))
        .await;
    let revoked = app.create_session("alice").await;
    app.create_session("bob").await;
    app.delete(
        &format!("/v1/sessions/{}", text(&revoked["session"], "id")),
        Some(ADMIN_KEY),
    )
    .await;

    let listed = app
        .get("/v1/sessions", Some(text(&current, "access_token")))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let sessions = listed.body["sessions"].as_array().expect("sessions");
    let ids: Vec<&str> = sessions.iter().map(|session| text(session, "id")).collect();
    assert_eq!(
        ids,
        [text(&current["session"], "id"), text(&old["session"], "id")],
        "active sessions only, most recently active first"
    );
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[1]["current"], false);
    assert_eq!(sessions[0]["device"]["type"], "mobile");

    let admin = app.get("/v1/users/alice/sessions", Some(ADMIN_KEY)).await;
    let admin_sessions = admin.body["sessions"].as_array().expect("sessions");
    assert_eq!(admin_sessions.len(), 2);
    assert!(
        admin_sessions
            .iter()
            .all(|session| session.get("current").is_none())
    );
}

async fn a_sixth_session_evicts_the_least_recently_active_one() {
    let app = TestApp::spawn().await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(app.create_session("alice").await);
        app.advance(Duration::from_secs(1));
    }
    // The oldest session is used, so the second oldest becomes the least recently active.
    let used = app.refresh(text(&sessions[0], "refresh_token")).await;
    assert_eq!(used.status, StatusCode::OK);
    app.advance(Duration::from_secs(1));

    let newest = app.create_session("alice").await;
    let evicted = &sessions[1];
    let answer = app.refresh(text(evicted, "refresh_token")).await;
    assert_eq!(answer.body["reason"], "revoked");
    assert_eq!(
        app.get("/v1/sessions/current", Some(text(evicted, "access_token")))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let listed = app
        .get("/v1/sessions", Some(text(&newest, "access_token")))
        .await;
    assert_eq!(listed.body["sessions"].as_array().map(Vec::len), Some(5));
    let reason = app
        .scalar("SELECT COUNT(*) FROM sessions WHERE revoke_reason = 'session_limit'")
        .await;
    assert_eq!(reason, 1);
    let audit = app
        .audit_count("session.revoked", Some(("reason", "session_limit")))
        .await;
    assert_eq!(audit, 1);
}

async fn the_session_limit_holds_under_concurrent_creation() {
    let app = TestApp::spawn_with(|raw| raw.max_sessions_per_user = Some("3".into())).await;
    let created = futures_util::future::join_all((0..12).map(|_| {
        app.post(
            "/v1/sessions",
            Some(ADMIN_KEY),
            json!({"user_id": "alice", "device": {"user_agent": FIREFOX}}),
        )
    }))
    .await;
    assert!(
        created
            .iter()
            .all(|answer| answer.status == StatusCode::CREATED)
    );
    let active = app.get("/v1/users/alice/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(active.body["sessions"].as_array().map(Vec::len), Some(3));
}

async fn expired_and_revoked_sessions_are_purged_after_retention() {
    let app = TestApp::spawn_with(|raw| raw.retention = Some("1d".into())).await;
    let revoked = app.create_session("alice").await;
    app.create_session("bob").await;
    app.delete(
        &format!("/v1/sessions/{}", text(&revoked["session"], "id")),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(
        app.state.service.purge_batch(100).await.expect("purge"),
        0,
        "kept during retention"
    );

    app.advance(Duration::from_secs(2 * 24 * 3600));
    let live = app.create_session("carol").await;
    let mut purged = 0;
    loop {
        let batch = app.state.service.purge_batch(1).await.expect("purge");
        purged += batch;
        if batch == 0 {
            break;
        }
    }
    assert_eq!(purged, 1, "only the revoked session is past retention");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM sessions").await, 2);
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{}'",
            text(&revoked["session"], "id")
        ))
        .await,
        0,
        "its refresh tokens went with it"
    );
    assert_eq!(
        app.refresh(text(&live, "refresh_token")).await.status,
        StatusCode::OK
    );
}

crate::on_every_store!(
    creating_a_session_returns_a_token_pair_and_the_session,
    a_device_id_is_generated_when_the_client_sends_none,
    the_jwks_publishes_the_public_signing_key_that_verifies_tokens,
    hs256_signing_works_and_publishes_no_secret,
    es256_and_rs256_signing_work_and_publish_only_the_public_key,
    a_user_lists_only_their_active_sessions_with_the_current_one_marked,
    a_sixth_session_evicts_the_least_recently_active_one,
    the_session_limit_holds_under_concurrent_creation,
    expired_and_revoked_sessions_are_purged_after_retention,
);
