//! The OAuth surface: the refresh grant at `/oauth/token` (same rotation and reuse rules as
//! `/v1/sessions/refresh`), introspection, revocation and the RFC 8414 metadata.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sessiond_core::token::decode_claims;

use crate::helpers::{ADMIN_KEY, Answer, TestApp, text};

/// A resource server's credentials, with the characters RFC 6749 §2.3.1's form-urlencoding
/// changes: `+`, `%` and `/` in the id; `+`, `/`, `=`, `%`, `:`, a space and a non-ASCII
/// letter in the secret.
const CLIENT_ID: &str = "notes.api/v1+ro%";
const CLIENT_SECRET: &str = "s3cret+/with=odd%20chars: and ünicode-0123456789abcdef";

/// A second resource server whose secret can also travel in a header as it is.
const PLAIN_CLIENT_ID: &str = "billing-api";
const PLAIN_CLIENT_SECRET: &str = "billing-secret-0123456789-abcdefghijklmnop";

/// A server with two introspection clients: [`CLIENT_ID`] and [`PLAIN_CLIENT_ID`].
async fn spawn_with_introspection_client() -> TestApp {
    TestApp::spawn_with(|raw| {
        raw.introspection_clients = Some(
            format!("{CLIENT_ID}:{CLIENT_SECRET},{PLAIN_CLIENT_ID}:{PLAIN_CLIENT_SECRET}").into(),
        );
    })
    .await
}

/// `value` form-urlencoded, every byte but letters and digits escaped (RFC 6749 §2.3.1 and
/// the HTML form encoding allow escaping more than needed).
fn form_urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// `client_secret_basic` credentials, encoded as RFC 6749 §2.3.1 says.
fn basic(client_id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form_urlencode(client_id), form_urlencode(secret));
    format!("Basic {}", STANDARD.encode(pair))
}

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

    async fn form_with_authorization(
        &self,
        path: &str,
        authorization: &str,
        form: &[(&str, &str)],
    ) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("authorization", authorization)
            .form(form);
        self.raw(request).await
    }

    async fn oauth_refresh_scoped(&self, refresh_token: &str, scope: &str) -> Answer {
        self.form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("scope", scope),
            ],
        )
        .await
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
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(answer.body["scope"], "notes:read");
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
            "revocation_endpoint_auth_methods_supported": ["none", "Bearer"],
            "introspection_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "Bearer"],
            "scopes_supported": [],
        })
    );
}

async fn the_metadata_lists_the_permissions_of_the_configured_roles_as_scopes() {
    let app = TestApp::spawn_with(|raw| {
        raw.roles = Some(sessiond_server::config::RolesSetting::Text(
            "editor=notes:write|notes:read;viewer=notes:read;billing=billing:*".into(),
        ));
    })
    .await;
    let answer = app
        .get("/.well-known/oauth-authorization-server", None)
        .await;
    assert_eq!(
        answer.body["scopes_supported"],
        json!(["billing:*", "notes:read", "notes:write"]),
        "{}",
        answer.body
    );
}

async fn access_tokens_carry_their_permissions_as_a_scope_claim() {
    let app = TestApp::spawn_with(|raw| {
        raw.roles = Some(sessiond_server::config::RolesSetting::Text(
            "editor=notes:write".into(),
        ));
    })
    .await;
    let created = app
        .create_session_with(json!({
            "user_id": "alice",
            "claims": {"roles": ["editor"], "permissions": ["notes:read", "tasks:*"]},
        }))
        .await;
    let claims = decode_claims(text(&created, "access_token")).expect("a JWT");
    assert_eq!(claims["scope"], "notes:read tasks:* notes:write");
    assert_eq!(
        claims["permissions"],
        json!(["notes:read", "tasks:*", "notes:write"])
    );
    let refreshed = app.oauth_refresh(text(&created, "refresh_token")).await;
    let claims = decode_claims(text(&refreshed.body, "access_token")).expect("a JWT");
    assert_eq!(claims["scope"], "notes:read tasks:* notes:write");
    assert_eq!(refreshed.body["scope"], "notes:read tasks:* notes:write");

    // A session without permissions: no scope claim, and none in the token response.
    let bare = app
        .create_session_with(json!({"user_id": "bob", "claims": {"roles": ["viewer"]}}))
        .await;
    let claims = decode_claims(text(&bare, "access_token")).expect("a JWT");
    assert!(!claims.contains_key("scope"), "{claims:?}");
    let refreshed = app.oauth_refresh(text(&bare, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert!(refreshed.body.get("scope").is_none(), "{}", refreshed.body);

    // A permission that is not a scope token cannot be granted: it would read as two.
    for bad in ["notes read", "say\"hi\"", "caf\u{e9}"] {
        let answer = app
            .post(
                "/v1/sessions",
                Some(ADMIN_KEY),
                json!({"user_id": "carol", "claims": {"permissions": ["ok", bad]}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.body["error"], "invalid_request");
        let message = answer.body["message"].as_str().expect("a message");
        assert!(message.contains("claims.permissions"), "{message}");
    }
}

async fn a_refresh_may_narrow_the_access_token_to_part_of_the_session_scope() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session_with(json!({
            "user_id": "alice",
            "claims": {"roles": ["user"], "permissions": ["notes:*", "tasks:read"]},
        }))
        .await;

    // `notes:*` covers `notes:read`; the token carries exactly what was asked for.
    let narrowed = app
        .oauth_refresh_scoped(text(&created, "refresh_token"), "notes:read  tasks:read")
        .await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.body);
    assert_eq!(narrowed.body["scope"], "notes:read tasks:read");
    let claims = decode_claims(text(&narrowed.body, "access_token")).expect("a JWT");
    assert_eq!(claims["scope"], "notes:read tasks:read");
    assert_eq!(claims["permissions"], json!(["notes:read", "tasks:read"]));
    assert_eq!(claims["roles"], json!(["user"]));
    assert_eq!(
        app.current_status(text(&narrowed.body, "access_token"))
            .await,
        StatusCode::OK
    );

    // The session keeps its permissions: the next refresh without a scope gets them all.
    let full = app
        .oauth_refresh(text(&narrowed.body, "refresh_token"))
        .await;
    assert_eq!(full.status, StatusCode::OK, "{}", full.body);
    assert_eq!(full.body["scope"], "notes:* tasks:read");
    let claims = decode_claims(text(&full.body, "access_token")).expect("a JWT");
    assert_eq!(claims["permissions"], json!(["notes:*", "tasks:read"]));

    // Asking for the session's own wildcard is within it too.
    let wildcard = app
        .oauth_refresh_scoped(text(&full.body, "refresh_token"), "notes:*")
        .await;
    assert_eq!(wildcard.status, StatusCode::OK, "{}", wildcard.body);
    assert_eq!(wildcard.body["scope"], "notes:*");
    // Introspection reports the narrowed scope.
    let introspected = app.introspect(text(&wildcard.body, "access_token")).await;
    assert_eq!(introspected["scope"], "notes:*", "{introspected}");
}

async fn a_scope_beyond_the_session_is_invalid_scope_and_spends_nothing() {
    // Unused successors replayed inside the grace window only, so that a late replay of a
    // spent token is reuse.
    let app = TestApp::spawn_with(|raw| raw.unused_successor_replay = Some("0".into())).await;
    let created = app.create_session("alice").await;
    let refresh = text(&created, "refresh_token");

    for beyond in ["notes:write", "notes:read notes:write", "notes:*", "*"] {
        let answer = app.oauth_refresh_scoped(refresh, beyond).await;
        assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_scope");
        let description = answer.body["error_description"].as_str().expect("text");
        assert!(!description.contains("sdr_"), "{description}");
    }
    for malformed in ["", "   ", "notes:read caf\u{e9}", "a\"b"] {
        let answer = app.oauth_refresh_scoped(refresh, malformed).await;
        assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // A session without permissions grants no scope at all.
    let bare = app.create_session_with(json!({"user_id": "bob"})).await;
    let answer = app
        .oauth_refresh_scoped(text(&bare, "refresh_token"), "notes:read")
        .await;
    assert_oauth_error(&answer, StatusCode::BAD_REQUEST, "invalid_scope");

    // Nothing was spent or written: the token rotates once, as if first presented, and
    // the refusals are not counted as refreshes.
    let stats = app.get("/v1/stats", Some(ADMIN_KEY)).await;
    assert_eq!(
        stats.body["refreshes_by_outcome"]["rotated"], 0,
        "{}",
        stats.body
    );
    assert_eq!(
        stats.body["refreshes_by_outcome"]["error"], 0,
        "{}",
        stats.body
    );
    let rotated = app.oauth_refresh_scoped(refresh, "notes:read").await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let stats = app.get("/v1/stats", Some(ADMIN_KEY)).await;
    assert_eq!(
        stats.body["refreshes_by_outcome"]["rotated"], 1,
        "{}",
        stats.body
    );
    assert_eq!(
        stats.body["refreshes_by_outcome"]["replayed"], 0,
        "{}",
        stats.body
    );
    assert_eq!(app.audit_count("security.reuse_detected", None).await, 0);

    // Inside the grace window the spent token replays the same pair, and a scope beyond the
    // session is still refused.
    let replay = app.oauth_refresh_scoped(refresh, "notes:read").await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["refresh_token"], rotated.body["refresh_token"]);
    let beyond = app.oauth_refresh_scoped(refresh, "admin:*").await;
    assert_oauth_error(&beyond, StatusCode::BAD_REQUEST, "invalid_scope");

    // After the window, reuse is reuse whatever the scope asked: the session is revoked.
    app.advance(Duration::from_secs(11));
    let reused = app.oauth_refresh_scoped(refresh, "admin:*").await;
    assert_oauth_error(&reused, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(app.audit_count("security.reuse_detected", None).await, 1);
}

async fn a_resource_server_introspects_with_client_secret_basic_or_client_secret_post() {
    let app = spawn_with_introspection_client().await;
    let created = app.create_session("alice").await;
    let access = text(&created, "access_token");
    let refresh = text(&created, "refresh_token");

    let by_basic = app
        .form_with_authorization(
            "/oauth/introspect",
            &basic(CLIENT_ID, CLIENT_SECRET),
            &[("token", access), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(by_basic.status, StatusCode::OK, "{}", by_basic.body);
    assert_uncacheable(&by_basic);
    assert_eq!(by_basic.body["active"], true, "{}", by_basic.body);
    assert_eq!(by_basic.body["sub"], "alice");
    assert_eq!(by_basic.body["scope"], "notes:read");

    let by_post = app
        .form(
            "/oauth/introspect",
            None,
            &[
                ("token", refresh),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(by_post.status, StatusCode::OK, "{}", by_post.body);
    assert_eq!(by_post.body["active"], true, "{}", by_post.body);
    assert_eq!(by_post.body["token_type"], "refresh_token");

    // `curl -u id:secret` does not form-urlencode: the secret as written is accepted too.
    let literal = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let by_curl = app
        .form_with_authorization("/oauth/introspect", &literal, &[("token", access)])
        .await;
    assert_eq!(by_curl.status, StatusCode::OK, "{}", by_curl.body);
    assert_eq!(by_curl.body["active"], true, "{}", by_curl.body);

    // A client id that matches the Basic one may be repeated in the body.
    let repeated = app
        .form_with_authorization(
            "/oauth/introspect",
            &basic(CLIENT_ID, CLIENT_SECRET),
            &[("token", access), ("client_id", CLIENT_ID)],
        )
        .await;
    assert_eq!(repeated.status, StatusCode::OK, "{}", repeated.body);

    // Admin keys keep working beside the clients.
    assert_eq!(app.introspect(access).await["active"], true);

    // Asking spent nothing.
    assert_eq!(app.refresh(refresh).await.status, StatusCode::OK);
}

async fn introspection_refuses_wrong_client_credentials_as_invalid_client() {
    let app = spawn_with_introspection_client().await;
    let created = app.create_session("alice").await;
    let access = text(&created, "access_token");
    let wrong_secret = format!("{CLIENT_SECRET}x");

    for authorization in [
        basic(CLIENT_ID, &wrong_secret),
        basic("other-api", CLIENT_SECRET),
        basic(CLIENT_ID, &CLIENT_SECRET[..CLIENT_SECRET.len() - 1]),
        "Basic !!!not-base64".to_owned(),
        format!("Basic {}", STANDARD.encode("no-colon-here")),
        format!("Basic {}", STANDARD.encode([b'a', b':', 0xff, 0xfe])),
        format!("Basic {}", STANDARD.encode("notes.api%2Fv1%2Bro%25:%zz")),
    ] {
        let answer = app
            .form_with_authorization("/oauth/introspect", &authorization, &[("token", access)])
            .await;
        assert_oauth_error(&answer, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(
            answer.headers["www-authenticate"], r#"Basic realm="sessiond", charset="UTF-8""#,
            "{authorization}"
        );
        assert!(answer.body.get("active").is_none(), "{}", answer.body);
    }

    let wrong_post = app
        .form(
            "/oauth/introspect",
            None,
            &[
                ("token", access),
                ("client_id", CLIENT_ID),
                ("client_secret", &wrong_secret),
            ],
        )
        .await;
    assert_oauth_error(&wrong_post, StatusCode::UNAUTHORIZED, "invalid_client");

    // A public client (an id, no secret) is not allowed; both schemes are offered.
    let public = app
        .form(
            "/oauth/introspect",
            None,
            &[("token", access), ("client_id", CLIENT_ID)],
        )
        .await;
    assert_oauth_error(&public, StatusCode::UNAUTHORIZED, "invalid_client");
    let challenges: Vec<&str> = public
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|value| value.to_str().expect("ASCII"))
        .collect();
    assert_eq!(
        challenges,
        [
            r#"Bearer realm="sessiond""#,
            r#"Basic realm="sessiond", charset="UTF-8""#
        ]
    );

    // One authentication method per request (RFC 6749 §2.3), and a secret needs its id.
    let both = app
        .form_with_authorization(
            "/oauth/introspect",
            &basic(CLIENT_ID, CLIENT_SECRET),
            &[
                ("token", access),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_oauth_error(&both, StatusCode::BAD_REQUEST, "invalid_request");
    // Wrong header credentials are refused as such, whatever the body holds.
    for form in [
        vec![("token", access), ("client_secret", CLIENT_SECRET)],
        vec![("token", access), ("client_id", "other-api")],
    ] {
        let answer = app
            .form_with_authorization("/oauth/introspect", &basic(CLIENT_ID, &wrong_secret), &form)
            .await;
        assert_oauth_error(&answer, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let admin_and_post = app
        .form(
            "/oauth/introspect",
            Some(ADMIN_KEY),
            &[
                ("token", access),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_oauth_error(&admin_and_post, StatusCode::BAD_REQUEST, "invalid_request");
    let no_id = app
        .form(
            "/oauth/introspect",
            None,
            &[("token", access), ("client_secret", CLIENT_SECRET)],
        )
        .await;
    assert_oauth_error(&no_id, StatusCode::BAD_REQUEST, "invalid_request");
    let other_id = app
        .form_with_authorization(
            "/oauth/introspect",
            &basic(CLIENT_ID, CLIENT_SECRET),
            &[("token", access), ("client_id", "other-api")],
        )
        .await;
    assert_oauth_error(&other_id, StatusCode::BAD_REQUEST, "invalid_request");
    // Good credentials without a token.
    let no_token = app
        .form_with_authorization("/oauth/introspect", &basic(CLIENT_ID, CLIENT_SECRET), &[])
        .await;
    assert_oauth_error(&no_token, StatusCode::BAD_REQUEST, "invalid_request");
}

async fn introspection_credentials_are_refused_everywhere_else() {
    let app = spawn_with_introspection_client().await;
    let created = app.create_session("alice").await;
    let session_id = text(&created["session"], "id");
    let as_basic = basic(PLAIN_CLIENT_ID, PLAIN_CLIENT_SECRET);
    let introspected = app
        .form_with_authorization(
            "/oauth/introspect",
            &as_basic,
            &[("token", text(&created, "access_token"))],
        )
        .await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.body);

    // The secret is not an admin key, whichever way it is sent.
    for credential in [
        format!("Bearer {PLAIN_CLIENT_SECRET}"),
        format!("Bearer {PLAIN_CLIENT_ID}:{PLAIN_CLIENT_SECRET}"),
        as_basic.clone(),
    ] {
        for (method, path) in [
            ("GET", "/v1/users/alice/sessions".to_owned()),
            ("GET", "/v1/audit".to_owned()),
            ("GET", "/v1/stats".to_owned()),
            ("GET", "/v1/sessions".to_owned()),
            ("GET", "/v1/sessions/current".to_owned()),
            ("POST", "/v1/users/alice/sessions/revoke-all".to_owned()),
            ("DELETE", format!("/v1/sessions/{session_id}")),
        ] {
            let request = app
                .client
                .request(
                    method.parse().expect("a method"),
                    format!("{}{path}", app.base),
                )
                .header("authorization", &credential);
            let answer = app.raw(request).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {}",
                answer.body
            );
            assert_eq!(answer.body["error"], "unauthenticated", "{}", answer.body);
        }
        let create = app
            .raw(
                app.client
                    .post(format!("{}/v1/sessions", app.base))
                    .header("authorization", &credential)
                    .json(&json!({"user_id": "mallory"})),
            )
            .await;
        assert_eq!(create.status, StatusCode::UNAUTHORIZED, "{}", create.body);
    }
    // Nor does a Bearer secret introspect: only Basic or the body carry client credentials.
    let as_bearer = app
        .form(
            "/oauth/introspect",
            Some(PLAIN_CLIENT_SECRET),
            &[("token", text(&created, "access_token"))],
        )
        .await;
    assert_oauth_error(&as_bearer, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(
        app.current_status(text(&created, "access_token")).await,
        StatusCode::OK
    );

    // Revocation takes the credentials for nothing: the request is a holder's, as without
    // them, and is recorded as the user's own logout, never as an admin's revocation.
    let other = app.create_session("bob").await;
    let revoke = app
        .form_with_authorization(
            "/oauth/revoke",
            &as_basic,
            &[("token", text(&other, "refresh_token"))],
        )
        .await;
    assert_eq!(revoke.status, StatusCode::OK, "{}", revoke.body);
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "logout")))
            .await,
        1
    );
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "revoked_by_admin")))
            .await,
        0
    );
}

/// Regression: wrong admin keys and client credentials at `/oauth/introspect` and
/// `/oauth/revoke` were answered 401 for ever, so they could be guessed there without the
/// failed-authentication limit every other route applies.
async fn introspection_and_revocation_credential_failures_count_toward_the_failed_authentication_limit()
 {
    let app = TestApp::spawn_with(|raw| {
        raw.introspection_clients = Some(format!("{CLIENT_ID}:{CLIENT_SECRET}").into());
        raw.rate_limit_failed_auth_per_ip = Some("4/1m".into());
    })
    .await;
    let created = app.create_session("erin").await;
    let refresh_token = text(&created, "refresh_token").to_owned();
    let wrong_key = "w".repeat(40);
    let token = [("token", refresh_token.as_str())];
    let wrong_basic = || {
        app.client
            .post(format!("{}/oauth/introspect", app.base))
            .header("authorization", basic(CLIENT_ID, "not-the-secret"))
            .form(&token)
    };

    // Four failures of four kinds spend the allowance, each answered 401 as before.
    let failures = [
        app.form("/oauth/introspect", Some(&wrong_key), &token)
            .await,
        app.raw(wrong_basic()).await,
        app.form(
            "/oauth/introspect",
            None,
            &[
                ("token", refresh_token.as_str()),
                ("client_id", CLIENT_ID),
                ("client_secret", "not-the-secret"),
            ],
        )
        .await,
        app.form("/oauth/revoke", Some(&wrong_key), &token).await,
    ];
    for failure in &failures {
        assert_eq!(failure.status, StatusCode::UNAUTHORIZED, "{}", failure.body);
        assert_eq!(failure.error_code(), "invalid_client");
    }

    // Then each is refused with 429 and Retry-After, on both endpoints and on `/v1`.
    for refused in [
        app.form("/oauth/introspect", Some(&wrong_key), &token)
            .await,
        app.raw(wrong_basic()).await,
        app.form("/oauth/revoke", Some(&wrong_key), &token).await,
        app.get("/v1/users/erin/sessions", Some(&wrong_key)).await,
    ] {
        assert_eq!(
            refused.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            refused.body
        );
        assert_eq!(refused.error_code(), "rate_limited", "{}", refused.body);
        let retry_after = refused
            .headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .expect("a Retry-After in seconds");
        assert!(retry_after > 0);
    }

    // Valid credentials from the same address are never refused by it.
    let introspected = app.form("/oauth/introspect", Some(ADMIN_KEY), &token).await;
    assert_eq!(introspected.status, StatusCode::OK, "{}", introspected.body);
    assert_eq!(introspected.body["active"], true);
    let introspected = app
        .raw(
            app.client
                .post(format!("{}/oauth/introspect", app.base))
                .header("authorization", basic(CLIENT_ID, CLIENT_SECRET))
                .form(&token),
        )
        .await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.body);
    let revoked = app.form("/oauth/revoke", Some(ADMIN_KEY), &token).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let refresh = app.refresh(&refresh_token).await;
    assert_eq!(refresh.body["reason"], "revoked", "{}", refresh.body);
}

crate::on_every_store!(
    introspection_and_revocation_credential_failures_count_toward_the_failed_authentication_limit,
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
    the_metadata_lists_the_permissions_of_the_configured_roles_as_scopes,
    access_tokens_carry_their_permissions_as_a_scope_claim,
    a_refresh_may_narrow_the_access_token_to_part_of_the_session_scope,
    a_scope_beyond_the_session_is_invalid_scope_and_spends_nothing,
    a_resource_server_introspects_with_client_secret_basic_or_client_secret_post,
    introspection_refuses_wrong_client_credentials_as_invalid_client,
    introspection_credentials_are_refused_everywhere_else,
);
