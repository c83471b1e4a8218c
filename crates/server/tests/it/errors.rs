//! Point 8: every failure answers the JSON error contract, and bad input leaves no state.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, TestApp, text};

async fn malformed_or_incomplete_bodies_are_invalid_requests_naming_the_field() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v1/sessions", app.base);
    let cases = [
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .header("content-type", "application/json")
                .body("{not json"),
            "JSON",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"tenant_id": "x"})),
            "user_id",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"user_id": 7})),
            "invalid type",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"user_id": "a", "claim": {}})),
            "claim",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"user_id": ""})),
            "user_id",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"user_id": "a", "device": {"ip": "not-an-ip"}})),
            "device.ip",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"user_id": "a", "claims": {"sub": "admin"}})),
            "claims",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"user_id": "a", "claims": {"roles": "admin"}})),
            "claims.roles",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .body(r#"{"user_id":"a"}"#),
            "content-type",
        ),
    ];
    for (request, field) in cases {
        let answer = app.raw(request).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{field}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "invalid_request");
        let message = text(&answer.body, "message");
        assert!(message.contains(field), "{message:?} should name {field:?}");
        assert!(answer.body["request_id"].is_string());
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions").await,
        0,
        "nothing half-written"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM refresh_tokens").await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM audit_events").await, 0);
}

async fn a_body_over_the_limit_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(70 * 1024);
    let answer = app
        .post(
            "/v1/sessions",
            Some(ADMIN_KEY),
            json!({"user_id": "alice", "metadata": {"pad": padding}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "payload_too_large");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM sessions").await, 0);
}

async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn().await;
    let missing = app.get("/v1/nothing-here", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");
    let wrong_method = app
        .raw(app.client.put(format!("{}/v1/sessions/refresh", app.base)))
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.body["error"].is_string());
}

async fn admin_routes_refuse_missing_wrong_and_user_credentials() {
    let app = TestApp::spawn().await;
    let user = app.create_session("alice").await;
    let body = json!({"user_id": "alice"});
    let wrong_key = "wrong-admin-key-0123456789-abcdefghijklmnop";
    for bearer in [None, Some(wrong_key), Some(text(&user, "access_token"))] {
        let answer = app.post("/v1/sessions", bearer, body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.error_code(), "unauthenticated");
        let listed = app.get("/v1/users/alice/sessions", bearer).await;
        assert_eq!(listed.status, StatusCode::UNAUTHORIZED);
    }
    let basic = app
        .raw(
            app.client
                .get(format!("{}/v1/users/alice/sessions", app.base))
                .basic_auth("admin", Some(ADMIN_KEY)),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
}

async fn user_routes_refuse_admin_keys_and_bad_tokens() {
    let app = TestApp::spawn().await;
    let user = app.create_session("alice").await;
    let access = text(&user, "access_token");
    let mut tampered = access.to_owned();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    for bearer in [
        None,
        Some(ADMIN_KEY),
        Some("not.a.jwt"),
        Some(tampered.as_str()),
        Some(""),
    ] {
        let answer = app.get("/v1/sessions", bearer).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(answer.error_code(), "unauthenticated");
        assert!(answer.headers.contains_key("www-authenticate"));
    }
}

async fn admin_routes_refuse_everything_when_no_admin_key_is_configured() {
    let app = TestApp::spawn_with(|raw| raw.admin_keys = None).await;
    let answer = app
        .post("/v1/sessions", Some(""), json!({"user_id": "alice"}))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");
}

crate::on_every_store!(
    malformed_or_incomplete_bodies_are_invalid_requests_naming_the_field,
    a_body_over_the_limit_is_refused_with_413,
    unknown_routes_and_methods_answer_json,
    admin_routes_refuse_missing_wrong_and_user_credentials,
    user_routes_refuse_admin_keys_and_bad_tokens,
    admin_routes_refuse_everything_when_no_admin_key_is_configured,
    health_and_readiness_answer,
);
