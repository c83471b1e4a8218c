//! Browsers: cookie mode (the refresh token in an HttpOnly cookie, refreshes by cookie only
//! with the CSRF header) and CORS for configured origins only.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, Answer, TestApp, text};

const COOKIE: &str = "__Secure-sessiond-refresh";
const APP_ORIGIN: &str = "https://app.example.com";

async fn spawn_in_cookie_mode() -> TestApp {
    TestApp::spawn_with(|raw| {
        raw.cookie_mode = Some("on".into());
        raw.cors_origins = Some(format!("{APP_ORIGIN}, http://localhost:3000"));
    })
    .await
}

/// The refresh cookie a response sets: its value and its attributes.
fn set_cookie(headers: &HeaderMap) -> Option<(String, Vec<String>)> {
    let values: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().expect("ASCII"))
        .collect();
    assert!(values.len() <= 1, "one cookie at most: {values:?}");
    let mut parts = values.first()?.split(';').map(str::trim);
    let (name, value) = parts.next()?.split_once('=')?;
    assert_eq!(name, COOKIE);
    Some((value.to_owned(), parts.map(str::to_owned).collect()))
}

impl TestApp {
    async fn refresh_by_cookie(&self, cookie: &str, csrf: Option<&str>) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/v1/sessions/refresh", self.base))
            .header("cookie", format!("theme=dark; {COOKIE}={cookie}"));
        if let Some(value) = csrf {
            request = request.header("x-sessiond-csrf", value);
        }
        self.raw(request).await
    }
}

async fn cookie_mode_is_off_by_default() {
    let app = TestApp::spawn().await;
    let created = app
        .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "alice"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(set_cookie(&created.headers).is_none());
    let refreshed = app.refresh(text(&created.body, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert!(set_cookie(&refreshed.headers).is_none());

    // A cookie means nothing without cookie mode: the body is required as before.
    let by_cookie = app
        .refresh_by_cookie(text(&refreshed.body, "refresh_token"), Some("1"))
        .await;
    assert_eq!(
        by_cookie.status,
        StatusCode::BAD_REQUEST,
        "{}",
        by_cookie.body
    );
    assert_eq!(by_cookie.error_code(), "invalid_request");
}

async fn refreshes_in_cookie_mode_set_an_httponly_secure_strict_cookie_on_the_refresh_path() {
    let app = spawn_in_cookie_mode().await;
    let created = app
        .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "alice"}))
        .await;
    let (value, attributes) = set_cookie(&created.headers).expect("creation sets the cookie");
    assert_eq!(value, text(&created.body, "refresh_token"));
    assert_eq!(
        attributes,
        [
            "Path=/v1/sessions/refresh",
            "Max-Age=604800",
            "HttpOnly",
            "Secure",
            "SameSite=Strict"
        ]
    );

    // A refresh with the token in the body still answers it there, and moves it to the cookie.
    app.advance(Duration::from_secs(60));
    let refreshed = app.refresh(&value).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let (value, attributes) = set_cookie(&refreshed.headers).expect("a refresh sets the cookie");
    assert_eq!(value, text(&refreshed.body, "refresh_token"));
    assert!(
        attributes.contains(&"HttpOnly".to_owned()),
        "{attributes:?}"
    );
}

async fn a_refresh_by_cookie_rotates_the_cookie_and_keeps_the_token_out_of_the_body() {
    let app = spawn_in_cookie_mode().await;
    let created = app.create_session("alice").await;
    let first = text(&created, "refresh_token");

    let refreshed = app.refresh_by_cookie(first, Some("1")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert!(
        refreshed.body.get("refresh_token").is_none(),
        "{}",
        refreshed.body
    );
    assert_eq!(refreshed.body["token_type"], "Bearer");
    assert_eq!(refreshed.body["session"]["id"], created["session"]["id"]);
    let (second, attributes) = set_cookie(&refreshed.headers).expect("the cookie rotates");
    assert_ne!(second, first);
    assert!(
        attributes.contains(&"Max-Age=604800".to_owned()),
        "{attributes:?}"
    );
    assert_eq!(
        app.get(
            "/v1/sessions/current",
            Some(text(&refreshed.body, "access_token"))
        )
        .await
        .status,
        StatusCode::OK
    );

    // The new cookie works in turn; the first one is spent, and after the grace window its
    // return is reuse: the session ends and the cookie is deleted.
    let next = app.refresh_by_cookie(&second, Some("1")).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    let (third, _) = set_cookie(&next.headers).expect("rotated again");
    app.advance(Duration::from_secs(11));
    let reused = app.refresh_by_cookie(first, Some("1")).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED, "{}", reused.body);
    assert_eq!(reused.body["reason"], "reuse_detected");
    let (cleared, attributes) = set_cookie(&reused.headers).expect("a dead cookie is deleted");
    assert_eq!(cleared, "");
    assert!(
        attributes.contains(&"Max-Age=0".to_owned()),
        "{attributes:?}"
    );
    let after = app.refresh_by_cookie(&third, Some("1")).await;
    assert_eq!(after.body["reason"], "revoked", "{}", after.body);
}

async fn a_refresh_by_cookie_without_the_csrf_header_is_refused_and_spends_nothing() {
    let app = spawn_in_cookie_mode().await;
    let created = app.create_session("alice").await;
    let token = text(&created, "refresh_token");

    for csrf in [None, Some("0"), Some("yes")] {
        let refused = app.refresh_by_cookie(token, csrf).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{csrf:?}: {}",
            refused.body
        );
        assert_eq!(refused.error_code(), "forbidden");
        assert!(
            text(&refused.body, "message").contains("X-Sessiond-CSRF"),
            "{}",
            refused.body
        );
        assert!(set_cookie(&refused.headers).is_none());
    }
    let accepted = app.refresh_by_cookie(token, Some("1")).await;
    assert_eq!(
        accepted.status,
        StatusCode::OK,
        "the token was not spent: {}",
        accepted.body
    );

    // No token anywhere is a bad request, as a body without the field is.
    let nothing = app
        .raw(
            app.client
                .post(format!("{}/v1/sessions/refresh", app.base))
                .header("x-sessiond-csrf", "1"),
        )
        .await;
    assert_eq!(nothing.status, StatusCode::BAD_REQUEST, "{}", nothing.body);
    assert_eq!(nothing.error_code(), "invalid_request");
}

async fn logout_in_cookie_mode_deletes_the_cookie() {
    let app = spawn_in_cookie_mode().await;
    let created = app.create_session("alice").await;
    let answer = app
        .post(
            "/v1/logout",
            Some(text(&created, "access_token")),
            json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let (value, attributes) = set_cookie(&answer.headers).expect("logout deletes the cookie");
    assert_eq!(value, "");
    assert!(
        attributes.contains(&"Max-Age=0".to_owned()),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&"Path=/v1/sessions/refresh".to_owned()),
        "{attributes:?}"
    );
}

async fn cors_answers_configured_origins_with_credentials_and_handles_preflight() {
    let app = spawn_in_cookie_mode().await;
    let preflight = app
        .raw(
            app.client
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{}/v1/sessions/refresh", app.base),
                )
                .header("origin", APP_ORIGIN)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "x-sessiond-csrf"),
        )
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    let headers = &preflight.headers;
    assert_eq!(headers["access-control-allow-origin"], APP_ORIGIN);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("ASCII")
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .expect("ASCII")
            .contains("x-sessiond-csrf")
    );

    let created = app.create_session("alice").await;
    let refreshed = app
        .raw(
            app.client
                .post(format!("{}/v1/sessions/refresh", app.base))
                .header("origin", APP_ORIGIN)
                .header("x-sessiond-csrf", "1")
                .header(
                    "cookie",
                    format!("{COOKIE}={}", text(&created, "refresh_token")),
                ),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(refreshed.headers["access-control-allow-origin"], APP_ORIGIN);
    assert_eq!(
        refreshed.headers["access-control-allow-credentials"],
        "true"
    );
    assert!(set_cookie(&refreshed.headers).is_some());
}

async fn an_unlisted_origin_gets_no_cors_headers() {
    let app = spawn_in_cookie_mode().await;
    let no_cors = |headers: &HeaderMap| {
        let cors: Vec<&str> = headers
            .keys()
            .map(|name| name.as_str())
            .filter(|name| name.starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{cors:?}");
    };
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "null",
    ] {
        let preflight = app
            .raw(
                app.client
                    .request(
                        reqwest::Method::OPTIONS,
                        format!("{}/v1/sessions/refresh", app.base),
                    )
                    .header("origin", origin)
                    .header("access-control-request-method", "POST"),
            )
            .await;
        assert_ne!(preflight.status, StatusCode::NO_CONTENT, "{origin}");
        no_cors(&preflight.headers);
        let health = app
            .raw(
                app.client
                    .get(format!("{}/healthz", app.base))
                    .header("origin", origin),
            )
            .await;
        assert_eq!(health.status, StatusCode::OK);
        no_cors(&health.headers);
    }
    // Without SESSIOND_CORS_ORIGINS no origin is listed.
    let plain = TestApp::spawn().await;
    let answer = plain
        .raw(
            plain
                .client
                .get(format!("{}/healthz", plain.base))
                .header("origin", APP_ORIGIN),
        )
        .await;
    no_cors(&answer.headers);
}

crate::on_every_store!(
    cookie_mode_is_off_by_default,
    refreshes_in_cookie_mode_set_an_httponly_secure_strict_cookie_on_the_refresh_path,
    a_refresh_by_cookie_rotates_the_cookie_and_keeps_the_token_out_of_the_body,
    a_refresh_by_cookie_without_the_csrf_header_is_refused_and_spends_nothing,
    logout_in_cookie_mode_deletes_the_cookie,
    cors_answers_configured_origins_with_credentials_and_handles_preflight,
    an_unlisted_origin_gets_no_cors_headers,
);
