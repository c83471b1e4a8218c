//! The OAuth surface: the refresh grant at `/oauth/token` (same rotation and reuse rules as
//! `/v1/sessions/refresh`), introspection, revocation and the RFC 8414 metadata.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Answer, TestApp, text};

impl TestApp {
    async fn form(&self, path: &str, bearer: Option<&str>, form: &[(&str, &str)]) -> Answer {
        let mut request = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.raw(request).await
    }

    async fn oauth_refresh(&self, refresh_token: &str) -> Answer {
        self.form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn introspect(&self, token: &str) -> Value {
        let answer = self
            .form("/oauth/introspect", Some(ADMIN_KEY), &[("token", token)])
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_uncacheable(&answer);
        answer.body
    }

    async fn current_status(&self, access_token: &str) -> StatusCode {
        self.get("/v1/sessions/current", Some(access_token))
            .await
            .status
    }
}

fn assert_uncacheable(answer: &Answer) {
    assert_eq!(
        answer.headers["cache-control"], "no-store",
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["pragma"], "no-cache", "{}", answer.body);
}

fn assert_oauth_error(answer: &Answer, status: StatusCode, error: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error"], error, "{}", answer.body);
    assert!(
        answer.body["error_description"].is_string(),
        "{}",
        answer.body
    );
    assert_uncacheable(answer);
}

async fn the_token_endpoint_rotates_the_refresh_token_and_answers_rfc_6749_json() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    app.advance(Duration::from_secs(60));

    let answer = app.oauth_refresh(text(&created, "refresh_token")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_uncacheable(&answer);
    let fields: Vec<&str> = answer
        .body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        ["access_token", "expires_in", "refresh_token", "token_type"]
    );
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 900);
    let refresh = text(&answer.body, "refresh_token");
    assert_ne!(refresh, text(&created, "refresh_token"));
    assert_eq!(
        app.current_status(text(&answer.body, "access_token")).await,
        StatusCode::OK
    );

    // A replay inside the grace window gets the same successor, as on /v1.
    let replay = app.oauth_refresh(text(&created, "refresh_token")).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["refresh_token"], answer.body["refresh_token"]);
    assert_eq!(replay.body["access_token"], answer.body["access_token"]);

    // The successor is an ordinary refresh token: /v1 takes it and spends it.
    let next = app.refresh(refresh).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    assert_eq!(
        app.oauth_refresh(text(&next.body, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
}

async fn reuse_through_the_token_endpoint_revokes_the_whole_session() {
    // Unused successors replayed inside the grace window only, so that the replay below is
    // reuse although the successor is unused.
    let app = TestApp::spawn_with(|raw| raw.unused_successor_replay = Some("0".into())).await;
    let created = app.create_session("alice").await;
    let first = app.oauth_refresh(text(&created, "refresh_token")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    app.advance(Duration::from_secs(11));

    let reused = app.oauth_refresh(text(&created, "refresh_token")).await;
    assert_oauth_error(&reused, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(
        app.audit_count("security.reuse_detected", None).await,
        1,
        "reuse is recorded as on /v1"
    );

    // The thief's successor and the session's access tokens are dead too.
    let successor = app.oauth_refresh(text(&first.body, "refresh_token")).await;
    assert_oauth_error(&successor, StatusCode::BAD_REQUEST, "invalid_grant");
    let on_v1 = app.refresh(text(&first.body, "refresh_token")).await;
    assert_eq!(on_v1.body["reason"], "revoked", "{}", on_v1.body);
    assert_eq!(
        app.current_status(text(&first.body, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );

    // The token endpoint's refreshes and errors are counted with the others.
    let stats = app.get("/v1/stats", Some(ADMIN_KEY)).await;
    assert_eq!(
        stats.body["refreshes_by_outcome"]["rotated"], 1,
        "{}",
        stats.body
    );
    assert_eq!(stats.body["refreshes_by_outcome"]["reuse_detected"], 1);
    assert_eq!(stats.body["refreshes_by_outcome"]["revoked"], 2);
    assert_eq!(stats.body["errors"]["invalid_grant"], 2, "{}", stats.body);
}

async fn the_token_endpoint_refuses_bad_grants_and_requests_in_rfc_6749_format() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let refresh = text(&created, "refresh_token");

    let unknown = app
        .oauth_refresh("sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_oauth_error(&unknown, StatusCode::BAD_REQUEST, "invalid_grant");
    let garbage = app.oauth_refresh("not-a-token").await;
    assert_oauth_error(&garbage, StatusCode::BAD_REQUEST, "invalid_grant");

    let password = app
        .form(
            "/oauth/token",
            None,
            &[("grant_type", "password"), ("username", "alice")],
        )
        .await;
    assert_oauth_error(&password, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    let no_grant = app
        .form("/oauth/token", None, &[("refresh_token", refresh)])
        .await;
    assert_oauth_error(&no_grant, StatusCode::BAD_REQUEST, "invalid_request");
    let no_token = app
        .form("/oauth/token", None, &[("grant_type", "refresh_token")])
        .await;
    assert_oauth_error(&no_token, StatusCode::BAD_REQUEST, "invalid_request");
    let twice = app
        .form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("refresh_token", refresh),
            ],
        )
        .await;
    assert_oauth_error(&twice, StatusCode::BAD_REQUEST, "invalid_request");
    let json_body = app
        .post(
            "/oauth/token",
            None,
            json!({"grant_type": "refresh_token", "refresh_token": refresh}),
        )
        .await;
    assert_oauth_error(&json_body, StatusCode::BAD_REQUEST, "invalid_request");

    // None of the refused requests spent the token.
    let still_live = app.oauth_refresh(refresh).await;
    assert_eq!(still_live.status, StatusCode::OK, "{}", still_live.body);

    // Expired and revoked sessions are invalid grants too.
    let expiring = app.create_session("bob").await;
    app.advance(Duration::from_secs(8 * 24 * 3600));
    let expired = app.oauth_refresh(text(&expiring, "refresh_token")).await;
    assert_oauth_error(&expired, StatusCode::BAD_REQUEST, "invalid_grant");
    let revoked = app.create_session("carol").await;
    let id = text(&revoked["session"], "id");
    app.delete(&format!("/v1/sessions/{id}"), Some(ADMIN_KEY))
        .await;
    let answer = app.oauth_refresh(text(&revoked, "refresh_token")).await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant");
}

async fn introspection_describes_live_access_and_refresh_tokens() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let session_id = text(&created["session"], "id");

    let access = app.introspect(text(&created, "access_token")).await;
    assert_eq!(access["active"], true, "{access}");
    assert_eq!(access["sub"], "alice");
    assert_eq!(access["sid"], session_id);
    assert_eq!(access["iss"], "http://sessiond.test");
    assert_eq!(access["aud"], "sessiond");
    assert_eq!(access["token_type"], "Bearer");
    assert_eq!(access["scope"], "notes:read");
    assert_eq!(access["permissions"], json!(["notes:read"]));
    let exp = access["exp"].as_i64().expect("exp");
    let iat = access["iat"].as_i64().expect("iat");
    assert_eq!(exp - iat, 900);

    let refresh = app.introspect(text(&created, "refresh_token")).await;
    assert_eq!(refresh["active"], true, "{refresh}");
    assert_eq!(refresh["token_type"], "refresh_token");
    assert_eq!(refresh["sub"], "alice");
    assert_eq!(refresh["sid"], session_id);
    let refresh_expires_at = humantime::parse_rfc3339(text(&created, "refresh_token_expires_at"))
        .expect("RFC 3339")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(refresh["exp"].as_u64(), Some(refresh_expires_at));

    // Asking spent nothing.
    let still_live = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(still_live.status, StatusCode::OK, "{}", still_live.body);
}

async fn introspection_answers_only_active_false_for_dead_tokens() {
    let app = TestApp::spawn().await;
    let inactive = json!({"active": false});
    let created = app.create_session("alice").await;

    for garbage in [
        "garbage",
        "sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "a.b.c",
    ] {
        assert_eq!(app.introspect(garbage).await, inactive, "{garbage}");
    }

    // A spent refresh token is not live, even inside the grace window.
    let rotated = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(
        app.introspect(text(&created, "refresh_token")).await,
        inactive
    );

    // An expired access token.
    app.advance(Duration::from_secs(16 * 60));
    assert_eq!(
        app.introspect(text(&rotated.body, "access_token")).await,
        inactive
    );

    // Everything of a revoked session.
    let next = app.refresh(text(&rotated.body, "refresh_token")).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    assert_eq!(
        app.introspect(text(&next.body, "access_token")).await["active"],
        true
    );
    let id = text(&created["session"], "id");
    app.delete(&format!("/v1/sessions/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(
        app.introspect(text(&next.body, "access_token")).await,
        inactive
    );
    assert_eq!(
        app.introspect(text(&next.body, "refresh_token")).await,
        inactive
    );

    // An expired session's refresh token.
    let expiring = app.create_session("bob").await;
    app.advance(Duration::from_secs(8 * 24 * 3600));
    assert_eq!(
        app.introspect(text(&expiring, "refresh_token")).await,
        inactive
    );
}

async fn introspection_needs_an_admin_key_and_a_token() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let access = text(&created, "access_token");

    let anonymous = app
        .form("/oauth/introspect", None, &[("token", access)])
        .await;
    assert_oauth_error(&anonymous, StatusCode::UNAUTHORIZED, "invalid_client");
    let as_user = app
        .form("/oauth/introspect", Some(access), &[("token", access)])
        .await;
    assert_oauth_error(&as_user, StatusCode::UNAUTHORIZED, "invalid_client");
    let no_token = app
        .form(
            "/oauth/introspect",
            Some(ADMIN_KEY),
            &[("token_type_hint", "access_token")],
        )
        .await;
    assert_oauth_error(&no_token, StatusCode::BAD_REQUEST, "invalid_request");
}

async fn revoking_a_refresh_token_ends_its_session() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let other = app.create_session("alice").await;

    // The holder needs no other credential.
    let answer = app
        .form(
            "/oauth/revoke",
            None,
            &[
                ("token", text(&created, "refresh_token")),
                ("token_type_hint", "refresh_token"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_uncacheable(&answer);

    let refresh = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(refresh.body["reason"], "revoked", "{}", refresh.body);
    assert_eq!(
        app.current_status(text(&created, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "logout")))
            .await,
        1
    );
    // Only that session.
    assert_eq!(
        app.current_status(text(&other, "access_token")).await,
        StatusCode::OK
    );
}

async fn revoking_an_access_token_ends_its_session_and_admins_may_revoke_any() {
    let app = TestApp::spawn().await;
    let by_holder = app.create_session("alice").await;
    let answer = app
        .form(
            "/oauth/revoke",
            None,
            &[("token", text(&by_holder, "access_token"))],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        app.current_status(text(&by_holder, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    let refresh = app.refresh(text(&by_holder, "refresh_token")).await;
    assert_eq!(refresh.body["reason"], "revoked", "{}", refresh.body);

    let by_admin = app.create_session("bob").await;
    let answer = app
        .form(
            "/oauth/revoke",
            Some(ADMIN_KEY),
            &[("token", text(&by_admin, "refresh_token"))],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "revoked_by_admin")))
            .await,
        1
    );
    let refresh = app.refresh(text(&by_admin, "refresh_token")).await;
    assert_eq!(refresh.body["reason"], "revoked", "{}", refresh.body);
}

async fn revoking_an_unknown_token_answers_200_and_bad_requests_400() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;

    for unknown in ["garbage", "sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let answer = app.form("/oauth/revoke", None, &[("token", unknown)]).await;
        assert_eq!(answer.status, StatusCode::OK, "{unknown}: {}", answer.body);
    }
    assert_eq!(app.audit_count("session.revoked", None).await, 0);

    let no_token = app.form("/oauth/revoke", None, &[]).await;
    assert_oauth_error(&no_token, StatusCode::BAD_REQUEST, "invalid_request");
    let json_body = app
        .post(
            "/oauth/revoke",
            None,
            json!({"token": text(&created, "refresh_token")}),
        )
        .await;
    assert_oauth_error(&json_body, StatusCode::BAD_REQUEST, "invalid_request");
    let wrong_key = app
        .form(
            "/oauth/revoke",
            Some("not-the-admin-key-0123456789-abcdefghijkl"),
            &[("token", text(&created, "refresh_token"))],
        )
        .await;
    assert_oauth_error(&wrong_key, StatusCode::UNAUTHORIZED, "invalid_client");

    // None of these ended the session.
    assert_eq!(
        app.current_status(text(&created, "access_token")).await,
        StatusCode::OK
    );
}

async fn the_metadata_document_names_every_endpoint() {
    let app = TestApp::spawn().await;
    let answer = app
        .get("/.well-known/oauth-authorization-server", None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({
            "issuer": "http://sessiond.test",
            "token_endpoint": "http://sessiond.test/oauth/token",
            "introspection_endpoint": "http://sessiond.test/oauth/introspect",
            "revocation_endpoint": "http://sessiond.test/oauth/revoke",
            "jwks_uri": "http://sessiond.test/.well-known/jwks.json",
            "grant_types_supported": ["refresh_token"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
        })
    );
}

crate::on_every_store!(
    the_token_endpoint_rotates_the_refresh_token_and_answers_rfc_6749_json,
    reuse_through_the_token_endpoint_revokes_the_whole_session,
    the_token_endpoint_refuses_bad_grants_and_requests_in_rfc_6749_format,
    introspection_describes_live_access_and_refresh_tokens,
    introspection_answers_only_active_false_for_dead_tokens,
    introspection_needs_an_admin_key_and_a_token,
    revoking_a_refresh_token_ends_its_session,
    revoking_an_access_token_ends_its_session_and_admins_may_revoke_any,
    revoking_an_unknown_token_answers_200_and_bad_requests_400,
    the_metadata_document_names_every_endpoint,
);
