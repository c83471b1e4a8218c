//! Point 4: access-token lifetime, sliding idle timeout, absolute lifetime.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, text};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn claims(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

async fn access_tokens_carry_the_rfc_9068_claims_and_live_for_the_access_ttl() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let access = text(&created, "access_token");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').next().expect("header"))
            .expect("base64url"),
    )
    .expect("json");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());

    let claims = claims(access);
    assert_eq!(claims["iss"], "http://sessiond.test");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "sessiond");
    assert_eq!(claims["sid"], created["session"]["id"]);
    assert_eq!(claims["roles"][0], "user");
    assert_eq!(claims["permissions"][0], "notes:read");
    assert!(claims["jti"].is_string() && claims["client_id"].is_string());
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(lifetime, 15 * 60);
    assert_eq!(created["expires_in"], 15 * 60);

    // Within the leeway it still passes; past it, it does not.
    app.advance(Duration::from_secs(15 * 60 + 3));
    assert_eq!(
        app.get("/v1/sessions/current", Some(access)).await.status,
        StatusCode::OK
    );
    app.advance(Duration::from_secs(10));
    let expired = app.get("/v1/sessions/current", Some(access)).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.error_code(), "unauthenticated");
}

async fn the_idle_timeout_slides_with_each_refresh_and_expires_an_unused_session() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let mut token = text(&created, "refresh_token").to_owned();
    for _ in 0..3 {
        app.advance(6 * DAY);
        let answer = app.refresh(&token).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "18 days of use, never 7 idle"
        );
        token = text(&answer.body, "refresh_token").to_owned();
    }
    app.advance(7 * DAY + Duration::from_secs(1));
    let idle = app.refresh(&token).await;
    assert_eq!(idle.status, StatusCode::UNAUTHORIZED);
    assert_eq!(idle.body["reason"], "expired");
}

async fn the_absolute_lifetime_is_never_extended() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let expires_at = created["session"]["expires_at"].clone();
    let mut token = text(&created, "refresh_token").to_owned();
    let mut last = Value::Null;
    for _ in 0..4 {
        app.advance(6 * DAY);
        let answer = app.refresh(&token).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["session"]["expires_at"], expires_at);
        token = text(&answer.body, "refresh_token").to_owned();
        last = answer.body;
    }
    // Day 24: sliding the idle timeout by 7 days would pass day 30, so it stops there.
    assert_eq!(last["refresh_token_expires_at"], expires_at);
    assert_eq!(last["session"]["idle_expires_at"], expires_at);
    app.advance(6 * DAY);
    let answer = app.refresh(&token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["reason"], "expired");
}

async fn an_access_token_never_outlives_its_session() {
    let app = TestApp::spawn_with(|raw| {
        raw.access_ttl = Some("2h".into());
        raw.idle_timeout = Some("1h".into());
        raw.absolute_timeout = Some("1h".into());
    })
    .await;
    let created = app.create_session("alice").await;
    let claims = claims(text(&created, "access_token"));
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert!(
        lifetime <= 3600,
        "exp is cut at the absolute expiry, got {lifetime}s"
    );
}

crate::on_every_store!(
    access_tokens_carry_the_rfc_9068_claims_and_live_for_the_access_ttl,
    the_idle_timeout_slides_with_each_refresh_and_expires_an_unused_session,
    the_absolute_lifetime_is_never_extended,
    an_access_token_never_outlives_its_session,
);
