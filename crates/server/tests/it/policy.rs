//! The security policy over HTTP: anomaly detection on refresh (`SESSIOND_ANOMALY_POLICY`),
//! roles expanded into access tokens' permissions (`SESSIOND_ROLES`), and admin key scopes
//! (`SESSIOND_ADMIN_KEYS` entries `KEY:read`, `KEY:revoke`). Each test checks the answer and
//! what the audit trail (and the live events) recorded.
//!
//! Every request of the suite comes from 127.0.0.1, so a session "created elsewhere" is one
//! whose `device.ip`, as the backend reports it, lies in another network.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use sessiond_core::permission::has_permission;

use crate::helpers::{ADMIN_KEY, Answer, FIREFOX, TestApp, text};
use crate::on_every_store;

on_every_store!(
    a_refresh_from_another_network_is_reported_and_allowed_under_notify,
    a_refresh_from_another_network_revokes_the_session_under_revoke,
    a_refresh_from_the_same_network_and_browser_is_no_anomaly,
    a_refresh_from_another_browser_family_is_an_anomaly,
    the_oauth_token_endpoint_applies_the_same_anomaly_policy,
    reuse_detection_stays_a_critical_event,
    a_permission_just_outside_a_wildcard_is_not_granted,
    roles_expand_into_the_permissions_of_every_token_issued,
    a_read_scoped_admin_key_can_read_but_not_revoke_or_create,
    a_revoke_scoped_admin_key_can_revoke_but_not_create,
);

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
const READ_KEY: &str = "read-only-admin-key-0123456789-abcdefghij";
const REVOKE_KEY: &str = "revoking-admin-key-0123456789-abcdefghij";

fn claims(access_token: &str) -> Map<String, Value> {
    let payload = access_token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

async fn spawn_with_anomaly_policy(policy: &str) -> TestApp {
    let policy = policy.to_owned();
    TestApp::spawn_with(|raw| raw.anomaly_policy = Some(policy)).await
}

/// A session of `user` created (as the backend reports it) from `ip` with Firefox on Linux.
async fn session_from(app: &TestApp, user: &str, ip: &str) -> Value {
    app.create_session_with(json!({
        "user_id": user,
        "device": {"name": "Laptop", "user_agent": FIREFOX, "ip": ip},
    }))
    .await
}

async fn refresh_as(app: &TestApp, refresh_token: &str, user_agent: &str) -> Answer {
    app.raw(
        app.client
            .post(format!("{}/v1/sessions/refresh", app.base))
            .header("user-agent", user_agent)
            .json(&json!({ "refresh_token": refresh_token })),
    )
    .await
}

/// `security.anomaly` audit rows of severity `warning` whose details mention `needle`.
async fn anomaly_rows_mentioning(app: &TestApp, needle: &str) -> i64 {
    app.scalar(&format!(
        "SELECT COUNT(*) FROM audit_events WHERE type = 'security.anomaly' \
         AND severity = 'warning' AND CAST(details AS TEXT) LIKE '%{needle}%'"
    ))
    .await
}

async fn events_of_type(app: &TestApp, kind: &str, user: &str) -> i64 {
    app.scalar(&format!(
        "SELECT COUNT(*) FROM events WHERE type = '{kind}' AND user_id = '{user}'"
    ))
    .await
}

async fn a_refresh_from_another_network_is_reported_and_allowed_under_notify() {
    let app = spawn_with_anomaly_policy("notify").await;
    let created = session_from(&app, "alice", "203.0.113.7").await;

    let answer = refresh_as(&app, text(&created, "refresh_token"), FIREFOX).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // One warning, naming the networks by prefix only; the full address is in the row's `ip`
    // column, which only admins read, and never in the details users' streams get.
    assert_eq!(app.audit_count("security.anomaly", None).await, 1);
    assert_eq!(
        app.audit_count("security.anomaly", Some(("action", "notified")))
            .await,
        1
    );
    assert_eq!(anomaly_rows_mentioning(&app, "203.0.0.0/16").await, 1);
    assert_eq!(anomaly_rows_mentioning(&app, "127.0.0.0/16").await, 1);
    assert_eq!(anomaly_rows_mentioning(&app, "203.0.113.7").await, 0);
    let anomalies = app.audit_events("security.anomaly").await;
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0]["ip"], "127.0.0.1");
    assert_eq!(anomalies[0]["user_id"], "alice");
    assert_eq!(events_of_type(&app, "security.anomaly", "alice").await, 1);

    // The session lives on, and the new pair works.
    let current = app
        .get(
            "/v1/sessions/current",
            Some(text(&answer.body, "access_token")),
        )
        .await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    assert_eq!(app.audit_count("session.revoked", None).await, 0);
}

async fn a_refresh_from_another_network_revokes_the_session_under_revoke() {
    let app = spawn_with_anomaly_policy("revoke").await;
    let created = session_from(&app, "bob", "198.51.100.4").await;
    let refresh_token = text(&created, "refresh_token");

    let refused = refresh_as(&app, refresh_token, FIREFOX).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(refused.error_code(), "invalid_refresh_token");
    // The refusal says why: an anomaly, not a revocation the client could have heard of.
    assert_eq!(text(&refused.body, "reason"), "anomaly");

    assert_eq!(
        app.audit_count("security.anomaly", Some(("action", "revoked")))
            .await,
        1
    );
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "anomaly")))
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE revoke_reason = 'anomaly'")
            .await,
        1
    );
    assert_eq!(events_of_type(&app, "security.anomaly", "bob").await, 1);
    assert_eq!(events_of_type(&app, "session.revoked", "bob").await, 1);

    // The session's access token is refused at once, and the token stays refused.
    let current = app
        .get("/v1/sessions/current", Some(text(&created, "access_token")))
        .await;
    assert_eq!(current.status, StatusCode::UNAUTHORIZED, "{}", current.body);
    let again = refresh_as(&app, refresh_token, FIREFOX).await;
    assert_eq!(text(&again.body, "reason"), "revoked");
    assert_eq!(app.audit_count("security.anomaly", None).await, 1);
}

async fn a_refresh_from_the_same_network_and_browser_is_no_anomaly() {
    let app = spawn_with_anomaly_policy("revoke").await;
    // 127.0.9.9 and 127.0.0.1 share 127.0.0.0/16.
    let created = session_from(&app, "carol", "127.0.9.9").await;
    let answer = refresh_as(&app, text(&created, "refresh_token"), FIREFOX).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = refresh_as(&app, text(&answer.body, "refresh_token"), FIREFOX).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    assert_eq!(app.audit_count("security.anomaly", None).await, 0);
    assert_eq!(events_of_type(&app, "security.anomaly", "carol").await, 0);
    assert_eq!(app.audit_count("session.revoked", None).await, 0);
}

async fn a_refresh_from_another_browser_family_is_an_anomaly() {
    let app = spawn_with_anomaly_policy("notify").await;
    let created = session_from(&app, "dave", "127.0.0.1").await;
    let answer = refresh_as(&app, text(&created, "refresh_token"), CHROME).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    assert_eq!(app.audit_count("security.anomaly", None).await, 1);
    assert_eq!(anomaly_rows_mentioning(&app, "Chrome").await, 1);
    assert_eq!(anomaly_rows_mentioning(&app, "Firefox").await, 1);
    // Same network and OS: only the browser is named as changed.
    assert_eq!(anomaly_rows_mentioning(&app, "127.0.0.0/16").await, 0);
    assert_eq!(events_of_type(&app, "security.anomaly", "dave").await, 1);

    // With the browser left out of the comparison, the same refresh is quiet.
    let quiet = TestApp::spawn_with(|raw| {
        raw.anomaly_policy = Some("notify".into());
        raw.anomaly_checks = Some("network,os".into());
    })
    .await;
    let created = session_from(&quiet, "dave", "127.0.0.1").await;
    let answer = refresh_as(&quiet, text(&created, "refresh_token"), CHROME).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(quiet.audit_count("security.anomaly", None).await, 0);
}

async fn the_oauth_token_endpoint_applies_the_same_anomaly_policy() {
    let app = spawn_with_anomaly_policy("revoke").await;
    let created = session_from(&app, "erin", "203.0.113.7").await;
    let answer = app
        .raw(
            app.client
                .post(format!("{}/oauth/token", app.base))
                .header("user-agent", FIREFOX)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", text(&created, "refresh_token")),
                ]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.error_code(), "invalid_grant");
    assert!(
        text(&answer.body, "error_description").contains("unlike the session's"),
        "{}",
        answer.body
    );
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "anomaly")))
            .await,
        1
    );
}

async fn reuse_detection_stays_a_critical_event() {
    let app = TestApp::spawn_with(|raw| raw.reuse_grace = Some("0".into())).await;
    let created = app.create_session("frank").await;
    let first = text(&created, "refresh_token");
    assert_eq!(app.refresh(first).await.status, StatusCode::OK);
    let reused = app.refresh(first).await;
    assert_eq!(text(&reused.body, "reason"), "reuse_detected");
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM audit_events WHERE type = 'security.reuse_detected' \
             AND severity = 'critical'"
        )
        .await,
        1
    );
    assert_eq!(
        events_of_type(&app, "security.reuse_detected", "frank").await,
        1
    );
}

async fn a_permission_just_outside_a_wildcard_is_not_granted() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session_with(json!({
            "user_id": "grace",
            "claims": {"permissions": ["notes:*"]},
        }))
        .await;
    let token = claims(text(&created, "access_token"));
    assert!(has_permission(&token, "notes:read"));
    assert!(has_permission(&token, "notes:share:public"));
    for outside in [
        "note:read",
        "notes",
        "notesx:read",
        "Notes:read",
        "billing:read",
    ] {
        assert!(!has_permission(&token, outside), "{outside}");
    }
    // The same answer from the verifier's side of the token: introspection's `scope`.
    let introspected = app
        .raw(
            app.client
                .post(format!("{}/oauth/introspect", app.base))
                .bearer_auth(ADMIN_KEY)
                .form(&[("token", text(&created, "access_token"))]),
        )
        .await;
    assert_eq!(introspected.body["scope"], "notes:*");
    assert_eq!(app.audit_count("session.created", None).await, 1);
}

async fn roles_expand_into_the_permissions_of_every_token_issued() {
    let app = TestApp::spawn_with(|raw| {
        raw.roles = Some(sessiond_server::config::RolesSetting::Text(
            "editor=notes:read|notes:write;viewer=notes:read".into(),
        ));
    })
    .await;
    let created = app
        .create_session_with(json!({
            "user_id": "heidi",
            "claims": {"roles": ["editor", "unmapped"], "permissions": ["billing:read"]},
        }))
        .await;
    let expected = json!(["billing:read", "notes:read", "notes:write"]);
    let token = claims(text(&created, "access_token"));
    assert_eq!(token["permissions"], expected);
    assert_eq!(token["roles"], json!(["editor", "unmapped"]));
    assert!(has_permission(&token, "notes:write"));

    // Expanded again at every refresh, and shown as the token carries it.
    let refreshed = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let access = text(&refreshed.body, "access_token");
    assert_eq!(claims(access)["permissions"], expected);
    let current = app.get("/v1/sessions/current", Some(access)).await;
    assert_eq!(current.body["claims"]["permissions"], expected);

    // The session keeps what the backend gave; the expansion is the token's.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE CAST(claims AS TEXT) LIKE '%notes:write%'")
            .await,
        0
    );
    assert_eq!(app.audit_count("session.created", None).await, 1);
}

async fn spawn_with_scoped_keys() -> TestApp {
    TestApp::spawn_with(|raw| {
        raw.admin_keys = Some(format!("{ADMIN_KEY},{READ_KEY}:read,{REVOKE_KEY}:revoke").into());
    })
    .await
}

fn assert_forbidden(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.error_code(), "forbidden", "{}", answer.body);
    assert!(
        text(&answer.body, "message").contains("scope"),
        "{}",
        answer.body
    );
}

async fn a_read_scoped_admin_key_can_read_but_not_revoke_or_create() {
    let app = spawn_with_scoped_keys().await;
    let created = app.create_session("ivan").await;
    let session_id = text(&created["session"], "id");

    let listed = app.get("/v1/users/ivan/sessions", Some(READ_KEY)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["sessions"][0]["id"], session_id);
    for path in ["/v1/stats", "/v1/audit", "/v1/users/ivan/devices"] {
        let answer = app.get(path, Some(READ_KEY)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    let introspected = app
        .raw(
            app.client
                .post(format!("{}/oauth/introspect", app.base))
                .bearer_auth(READ_KEY)
                .form(&[("token", text(&created, "access_token"))]),
        )
        .await;
    assert_eq!(introspected.body["active"], true);

    assert_forbidden(
        &app.delete(&format!("/v1/sessions/{session_id}"), Some(READ_KEY))
            .await,
    );
    assert_forbidden(
        &app.post(
            "/v1/users/ivan/sessions/revoke-all",
            Some(READ_KEY),
            json!({}),
        )
        .await,
    );
    assert_forbidden(
        &app.post("/v1/sessions", Some(READ_KEY), json!({"user_id": "ivan"}))
            .await,
    );
    let oauth_revoke = app
        .raw(
            app.client
                .post(format!("{}/oauth/revoke", app.base))
                .bearer_auth(READ_KEY)
                .form(&[("token", text(&created, "refresh_token"))]),
        )
        .await;
    assert_eq!(oauth_revoke.status, StatusCode::FORBIDDEN);
    assert_eq!(oauth_revoke.error_code(), "insufficient_scope");

    // Nothing was revoked or created, and the session still refreshes.
    assert_eq!(app.audit_count("session.revoked", None).await, 0);
    assert_eq!(app.audit_count("session.created", None).await, 1);
    let refreshed = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
}

async fn a_revoke_scoped_admin_key_can_revoke_but_not_create() {
    let app = spawn_with_scoped_keys().await;
    let created = app.create_session("judy").await;
    let session_id = text(&created["session"], "id");

    assert_forbidden(
        &app.post("/v1/sessions", Some(REVOKE_KEY), json!({"user_id": "judy"}))
            .await,
    );
    assert_eq!(app.audit_count("session.created", None).await, 1);

    let listed = app.get("/v1/users/judy/sessions", Some(REVOKE_KEY)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let revoked = app
        .delete(&format!("/v1/sessions/{session_id}"), Some(REVOKE_KEY))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "revoked_by_admin")))
            .await,
        1
    );
    let second = app.create_session("judy").await;
    let all = app
        .post(
            "/v1/users/judy/sessions/revoke-all",
            Some(REVOKE_KEY),
            json!({}),
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["revoked"], 1);
    assert_eq!(
        app.audit_count("session.revoked", Some(("actor", "admin")))
            .await,
        2
    );
    let refused = app.refresh(text(&second, "refresh_token")).await;
    assert_eq!(text(&refused.body, "reason"), "revoked");
}
