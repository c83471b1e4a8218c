//! The web UI: its pages and assets are served from the binary with a strict
//! `Content-Security-Policy` and cache validators, and the admin endpoints the dashboard reads
//! (`/v1/stats/history`, `/v1/audit/verify`, `/v1/keys`) refuse anyone but an admin and
//! answer the shapes the dashboard draws. The pages themselves run in a real browser in
//! `ui-tests/`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use serde_json::json;

use sessiond_core::signing_keys::Activation;

use crate::helpers::{ADMIN_KEY, TestApp, text};
use crate::on_every_store;

on_every_store!(
    stats_history_counts_the_minute_in_progress_for_admins_only,
    audit_verify_reports_an_intact_chain_and_names_the_first_bad_seq,
    keys_lists_the_signing_keys_as_the_cli_does,
);

const STRICT_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                          connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                          form-action 'self'; frame-ancestors 'none'";

const UI_PATHS: [(&str, &str); 7] = [
    ("/ui/", "text/html"),
    ("/ui/admin", "text/html"),
    ("/ui/sessiond-sessions.js", "text/javascript"),
    ("/ui/sessiond-client.js", "text/javascript"),
    ("/ui/page.js", "text/javascript"),
    ("/ui/admin.js", "text/javascript"),
    ("/ui/sessiond.css", "text/css"),
];

fn header(headers: &reqwest::header::HeaderMap, name: impl reqwest::header::AsHeaderName) -> &str {
    headers
        .get(name)
        .map(|value| value.to_str().expect("a text header"))
        .unwrap_or_default()
}

#[tokio::test]
async fn every_ui_answer_carries_a_strict_content_security_policy() {
    let app = TestApp::spawn().await;
    for (path, media_type) in UI_PATHS {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("request is sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert!(
            header(headers, CONTENT_TYPE).starts_with(media_type),
            "{path}"
        );
        assert_eq!(
            header(headers, CONTENT_SECURITY_POLICY),
            STRICT_CSP,
            "{path}"
        );
        assert_eq!(header(headers, X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        assert_eq!(header(headers, REFERRER_POLICY), "no-referrer", "{path}");
        assert_eq!(header(headers, "x-frame-options"), "DENY", "{path}");
        assert!(!header(headers, ETAG).is_empty(), "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.is_empty(), "{path}");
    }
    // An unknown asset is a 404 that still carries the headers.
    let missing = app.get("/ui/nothing.js", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        header(&missing.headers, CONTENT_SECURITY_POLICY),
        STRICT_CSP
    );
    // API answers are not the UI's: no CSP is added to them.
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert!(jwks.headers.get(CONTENT_SECURITY_POLICY).is_none());
}

#[tokio::test]
async fn pages_have_no_inline_script_or_style() {
    let app = TestApp::spawn().await;
    for path in ["/ui/", "/ui/admin"] {
        let page = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("request is sent")
            .text()
            .await
            .expect("body");
        for (index, _) in page.match_indices("<script") {
            let tag = &page[index..index + page[index..].find('>').expect("a closed tag")];
            assert!(tag.contains(" src=\"/ui/"), "{path}: inline script {tag}");
        }
        assert!(!page.contains("<style"), "{path}: an inline stylesheet");
        assert!(!page.contains(" style="), "{path}: a style attribute");
        // An inline handler is an attribute ` on<letters>=`.
        for (index, _) in page.match_indices(" on") {
            let name: String = page[index + 3..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            let after = page[index + 3 + name.len()..].chars().next();
            assert!(
                name.is_empty() || after != Some('='),
                "{path}: an inline handler on{name}"
            );
        }
    }
}

#[tokio::test]
async fn assets_are_cached_briefly_and_revalidated_by_etag() {
    let app = TestApp::spawn().await;
    let first = app.get("/ui/sessiond-sessions.js", None).await;
    assert_eq!(header(&first.headers, CACHE_CONTROL), "public, max-age=300");
    let etag = header(&first.headers, ETAG).to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let again = app
        .raw(
            app.client
                .get(format!("{}/ui/sessiond-sessions.js", app.base))
                .header(IF_NONE_MATCH, &etag),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(header(&again.headers, CONTENT_SECURITY_POLICY), STRICT_CSP);
    let page = app.get("/ui/", None).await;
    assert_eq!(header(&page.headers, CACHE_CONTROL), "no-cache");
    let bare = app
        .raw(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client")
                .get(format!("{}/ui", app.base)),
        )
        .await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&bare.headers, "location"), "/ui/");
}

#[tokio::test]
async fn frame_ancestors_follow_the_configuration() {
    let app = TestApp::spawn_with(|raw| {
        raw.ui_frame_ancestors = Some("'self' https://app.example.com".into());
    })
    .await;
    let page = app.get("/ui/", None).await;
    assert!(
        header(&page.headers, CONTENT_SECURITY_POLICY)
            .ends_with("; frame-ancestors 'self' https://app.example.com"),
        "{:?}",
        page.headers
    );
    assert!(page.headers.get("x-frame-options").is_none());
}

#[test]
fn a_frame_ancestors_value_that_could_add_a_directive_is_refused() {
    for bad in [
        "'none'; script-src *",
        "https://a.example, https://b.example",
        "*",
        "'unsafe-inline'",
    ] {
        let raw = sessiond_server::config::RawConfig {
            ui_frame_ancestors: Some(bad.into()),
            ..Default::default()
        };
        let error = sessiond_server::config::Config::from_raw(&raw).expect_err(bad);
        assert!(error.contains("SESSIOND_UI_FRAME_ANCESTORS"), "{error}");
    }
}

#[tokio::test]
async fn the_new_admin_routes_refuse_users_and_strangers() {
    let app = TestApp::spawn().await;
    let pair = app.create_session("alice").await;
    let user_token = text(&pair, "access_token").to_owned();
    for path in ["/v1/stats/history", "/v1/audit/verify", "/v1/keys"] {
        let anonymous = app.get(path, None).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(anonymous.error_code(), "unauthenticated", "{path}");
        let user = app.get(path, Some(&user_token)).await;
        assert!(
            matches!(
                user.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "{path}: {}",
            user.status
        );
        let wrong = app.get(path, Some(&"x".repeat(40))).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

async fn stats_history_counts_the_minute_in_progress_for_admins_only() {
    // Unused successors replayed inside the grace window only, so that the late replay below
    // is reuse.
    let app = TestApp::spawn_with(|raw| raw.unused_successor_replay = Some("0".into())).await;
    let pair = app.create_session("alice").await;
    app.create_session("bob").await;
    // A reuse: the first refresh rotates, the replay after the grace window is reuse.
    let first = app.refresh(text(&pair, "refresh_token")).await;
    assert_eq!(first.status, StatusCode::OK);
    app.advance(Duration::from_secs(60));
    let reused = app.refresh(text(&pair, "refresh_token")).await;
    assert_eq!(reused.error_code(), "invalid_refresh_token");
    let unknown = app.refresh("not-a-token").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);

    let history = app.get("/v1/stats/history", Some(ADMIN_KEY)).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert_eq!(history.body["interval_seconds"], json!(60));
    assert_eq!(history.body["capacity"], json!(60));
    assert_eq!(
        history.body["minutes"],
        json!([]),
        "no minute has closed yet"
    );
    let current = &history.body["current"];
    assert_eq!(current["refreshes"], json!(3), "{current}");
    assert_eq!(current["refresh_failures"], json!(2), "{current}");
    assert_eq!(current["reuse_detections"], json!(1), "{current}");
    assert_eq!(current["rate_limited"], json!(0), "{current}");
    assert_eq!(
        current["active_sessions"],
        json!(1),
        "counted when asked: {current}"
    );
    assert!(current["started_at"].is_string(), "{current}");

    // Closing the minute moves its counts into the ring; the next minute starts at zero.
    app.state
        .history
        .record(&app.state.metrics, app.state.service.now());
    let history = app.get("/v1/stats/history", Some(ADMIN_KEY)).await;
    let minutes = history.body["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0]["refreshes"], json!(3));
    assert_eq!(history.body["current"]["refreshes"], json!(0));
}

async fn audit_verify_reports_an_intact_chain_and_names_the_first_bad_seq() {
    let app = TestApp::spawn().await;
    app.create_session("alice").await;
    app.create_session("bob").await;
    // On PostgreSQL an event is sealed once older transactions anywhere on the server end.
    crate::audit::seal_all(&app).await;
    let verified = app.get("/v1/audit/verify", Some(ADMIN_KEY)).await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert_eq!(verified.body["ok"], json!(true), "{}", verified.body);
    assert_eq!(verified.body["first_bad_seq"], json!(null));
    let events = verified.body["events"].as_u64().expect("events");
    assert!(events >= 2, "{}", verified.body);
    assert_eq!(verified.body["head_seq"].as_u64(), Some(events));
    assert_eq!(text(&verified.body, "head_hash").len(), 64);

    // Someone with write access to the database edits a sealed event.
    app.execute("UPDATE audit_events SET ip = '198.51.100.1' WHERE chain_seq = 2")
        .await;
    let broken = app.get("/v1/audit/verify", Some(ADMIN_KEY)).await;
    assert_eq!(broken.status, StatusCode::OK);
    assert_eq!(broken.body["ok"], json!(false), "{}", broken.body);
    assert_eq!(broken.body["first_bad_seq"], json!(2), "{}", broken.body);
    assert!(!text(&broken.body, "reason").is_empty());
}

async fn keys_lists_the_signing_keys_as_the_cli_does() {
    let app = TestApp::spawn().await;
    let listed = app.get("/v1/keys", Some(ADMIN_KEY)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let keys = listed.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{}", listed.body);
    let key = &keys[0];
    assert_eq!(text(key, "state"), "signing");
    assert!(!text(key, "kid").is_empty());
    assert!(!text(key, "alg").is_empty());
    assert!(key["created_at"].is_string());
    assert_eq!(key["deactivated_at"], json!(null));
    assert_eq!(key["retire_at"], json!(null));

    let next = crate::keys::rotate(&app, Activation::AfterPublication).await;
    let old_kid = text(key, "kid").to_owned();
    let states = |listed: &serde_json::Value| -> Vec<(String, String)> {
        let mut states: Vec<(String, String)> = listed["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| (text(key, "kid").to_owned(), text(key, "state").to_owned()))
            .collect();
        // Keys made in the same millisecond are listed by kid; compare in a fixed order.
        states.sort_by_key(|(kid, _)| kid != &old_kid);
        states
    };
    let listed = app.get("/v1/keys", Some(ADMIN_KEY)).await;
    assert_eq!(
        states(&listed.body),
        [
            (old_kid.clone(), "signing".to_owned()),
            (next.kid.clone(), "next".to_owned())
        ],
        "{}",
        listed.body
    );
    let listed_next = listed.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| key["kid"] == json!(next.kid))
        .expect("the next key");
    assert!(
        text(listed_next, "signs_from") > text(listed_next, "created_at"),
        "published before it signs: {listed_next}"
    );
    app.advance(app.state.service.signing_keys().publication_delay());
    let listed = app.get("/v1/keys", Some(ADMIN_KEY)).await;
    assert_eq!(
        states(&listed.body),
        [
            (old_kid.clone(), "verifying".to_owned()),
            (next.kid.clone(), "signing".to_owned())
        ],
        "{}",
        listed.body
    );
    // No private material, whatever the field names.
    let body = listed.body.to_string();
    for secret in ["\"d\"", "private", "pem"] {
        assert!(!body.contains(secret), "{body}");
    }
}
