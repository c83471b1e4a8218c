//! Strict input: bodies are JSON objects where objects are expected, bad paths, headers and
//! queries answer the JSON error contract, no input reaches a 500, and every answer that
//! carries a token is marked `Cache-Control: no-store`.

use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use sessiond_core::{SessionId, Timestamp};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{ADMIN_KEY, Answer, TestApp};

/// Asserts a `/v1` error answer: `status`, JSON with the stable `code` and a request id.
fn assert_json_error(answer: &Answer, status: StatusCode, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    assert_eq!(answer.error_code(), code, "{what}: {}", answer.body);
    assert!(answer.body["message"].is_string(), "{what}");
    assert!(answer.body["request_id"].is_string(), "{what}");
}

async fn json_arrays_are_refused_wherever_an_object_is_expected() {
    // Regression: serde reads a struct from a sequence of its fields, so `["alice"]` created
    // a session for alice.
    let app = TestApp::spawn().await;
    let created = app.create_session("bob").await;
    let access = created["access_token"].as_str().expect("access token");
    let send = |path: &str, bearer: Option<&str>, body: &str| {
        let mut request = app
            .client
            .post(format!("{}{path}", app.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request
    };
    let cases = [
        ("/v1/sessions", Some(ADMIN_KEY), r#"["alice"]"#),
        (
            "/v1/sessions",
            Some(ADMIN_KEY),
            r#" ["alice", null, ["d"]]"#,
        ),
        (
            "/v1/sessions",
            Some(ADMIN_KEY),
            r#"{"user_id": "alice", "device": ["d1", "Laptop"]}"#,
        ),
        ("/v1/sessions/refresh", None, r#"["sdr_x"]"#),
        ("/v1/sessions/revoke-all", Some(access), "[true]"),
        ("/v1/devices/some-device/trust", Some(access), "[false]"),
        (
            "/v1/users/bob/devices/some-device/trust",
            Some(ADMIN_KEY),
            "[false]",
        ),
    ];
    for (path, bearer, body) in cases {
        let answer = app.raw(send(path, bearer, body)).await;
        let what = format!("POST {path} {body}");
        assert_json_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", &what);
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("expected a JSON object"),
            "{what}: {message}"
        );
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE user_id = 'alice'")
            .await,
        0,
        "no session was created from an array"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0,
        "nothing was revoked"
    );
    // The same bodies as objects are accepted.
    let answer = app
        .raw(send(
            "/v1/sessions",
            Some(ADMIN_KEY),
            r#"{"user_id": "alice", "device": {"id": "d1", "name": "Laptop"}}"#,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

async fn path_parameters_that_are_not_utf8_answer_json() {
    // Regression: axum answered these in plain text.
    let app = TestApp::spawn().await;
    let created = app.create_session("bob").await;
    let access = created["access_token"].as_str().expect("access token");
    let request = |method: reqwest::Method, path: &str, bearer: &str| {
        app.client
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(bearer)
    };
    let cases = [
        (reqwest::Method::DELETE, "/v1/sessions/%FF", ADMIN_KEY),
        (reqwest::Method::DELETE, "/v1/sessions/%C3%28", access),
        (reqwest::Method::GET, "/v1/users/%FF/sessions", ADMIN_KEY),
        (
            reqwest::Method::POST,
            "/v1/users/%FF%FE/sessions/revoke-all",
            ADMIN_KEY,
        ),
        (reqwest::Method::POST, "/v1/devices/%80/trust", access),
        (reqwest::Method::DELETE, "/v1/devices/%ED%A0%80", access),
        (reqwest::Method::GET, "/v1/users/%FF/devices", ADMIN_KEY),
        (
            reqwest::Method::DELETE,
            "/v1/users/bob/devices/%FF",
            ADMIN_KEY,
        ),
        (
            reqwest::Method::POST,
            "/v1/users/%FF/devices/x/trust",
            ADMIN_KEY,
        ),
    ];
    for (method, path, bearer) in cases {
        let what = format!("{method} {path}");
        let answer = app.raw(request(method, path, bearer)).await;
        assert_json_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", &what);
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|message| message.contains("invalid path")),
            "{what}: {}",
            answer.body
        );
    }
    // Without a credential the caller is refused first, still in JSON.
    let answer = app.delete("/v1/sessions/%FF", None).await;
    assert_json_error(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "no credential",
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
}

async fn unknown_v1_routes_answer_json_404_and_wrong_methods_json_405_with_allow() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/nothing-here",
        "/v1/%FF",
        "/v1/sessions/a/b",
        "/v1/users/bob",
        "/v1/",
        "/v1",
    ] {
        let answer = app.get(path, Some(ADMIN_KEY)).await;
        assert_json_error(&answer, StatusCode::NOT_FOUND, "not_found", path);
    }
    let cases: [(reqwest::Method, &str, &[&str]); 6] = [
        (reqwest::Method::PUT, "/v1/sessions/refresh", &["POST"]),
        (reqwest::Method::GET, "/v1/sessions/refresh", &["POST"]),
        (reqwest::Method::DELETE, "/v1/sessions", &["GET", "POST"]),
        (reqwest::Method::POST, "/v1/audit", &["GET"]),
        (reqwest::Method::GET, "/v1/sessions/some-id", &["DELETE"]),
        (reqwest::Method::PATCH, "/oauth/token", &["POST"]),
    ];
    for (method, path, allowed) in cases {
        let what = format!("{method} {path}");
        let answer = app
            .raw(app.client.request(method, format!("{}{path}", app.base)))
            .await;
        assert_json_error(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &what,
        );
        let allow = answer
            .headers
            .get("allow")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no Allow header"));
        let mut listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        listed.retain(|method| *method != "HEAD");
        listed.sort_unstable();
        assert_eq!(listed, allowed, "{what}: Allow: {allow}");
    }
}

/// Sends `head` (request line and headers) on a fresh connection; returns the status line and
/// the body as JSON (`Value::Null` when it is not JSON).
async fn raw_request(app: &TestApp, head: &[u8]) -> (String, Value) {
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(head).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

async fn headers_with_control_or_non_ascii_bytes_never_reach_a_non_json_answer() {
    let app = TestApp::spawn().await;
    // Bytes above 0x7F are legal in a header value (obs-text), so hyper lets them through:
    // the credential is then malformed, answered in JSON.
    let (status, body) = raw_request(
        &app,
        b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 401 "), "{status}");
    assert_eq!(body["error"], "unauthenticated", "{body}");
    let (status, body) = raw_request(
        &app,
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \x80abc\tdef\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 401 "), "{status}");
    assert_eq!(body["error"], "unauthenticated", "{body}");
    // A control character other than tab is not a header byte at all: hyper refuses the
    // request while parsing it, before any route (or this service's code) sees it, with a
    // bare `400` and closes the connection. No answer of the service is involved.
    let (status, body) = raw_request(
        &app,
        b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer a\x01b\r\n\r\n",
    )
    .await;
    assert!(
        status.is_empty() || status.contains(" 400 "),
        "hyper refuses control characters itself: {status:?}"
    );
    assert_eq!(body, Value::Null);
    // The server is unharmed.
    let answer = app.get("/v1/sessions", Some("not-a-token")).await;
    assert_eq!(answer.error_code(), "unauthenticated");
}

async fn audit_since_beyond_any_seq_answers_an_empty_page_not_500() {
    // Regression: `since=9223372036854775808` answered 500 (`audit seq is out of range`).
    let app = TestApp::spawn().await;
    app.create_session("alice").await;
    for since in [
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        let answer = app
            .get(&format!("/v1/audit?since={since}"), Some(ADMIN_KEY))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{since}: {}", answer.body);
        assert_eq!(answer.body["events"], json!([]), "{since}");
        assert_eq!(answer.body["next"], Value::Null);
    }
    for since in [
        "18446744073709551616",
        "99999999999999999999999999",
        "-1",
        "1e3",
    ] {
        let answer = app
            .get(&format!("/v1/audit?since={since}"), Some(ADMIN_KEY))
            .await;
        assert_json_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", since);
    }
}

/// `depth` arrays nested in one another, innermost empty.
fn nested_arrays(depth: usize) -> Value {
    (1..depth).fold(json!([]), |inner, _| json!([inner]))
}

async fn a_validly_signed_token_with_claims_nested_127_deep_is_inactive_not_500() {
    // Regression: `/oauth/introspect` answered 500 for it, the claims failing to decode
    // after validation had skipped them.
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let id = SessionId::parse(created["session"]["id"].as_str().unwrap_or(""), "id")
        .expect("session id");
    let session = app
        .state
        .service
        .store()
        .session(id)
        .await
        .expect("store answers")
        .expect("session exists");
    let service = &app.state.service;
    let now = app.clock_now();
    let token_with = |depth: usize| {
        let mut custom = Map::new();
        custom.insert("deep".into(), nested_arrays(depth));
        service
            .signing_keys()
            .with_signing_keyring(now, |keyring| {
                service
                    .token_settings()
                    .issue_with_claims(
                        keyring,
                        &session,
                        &custom,
                        now,
                        Timestamp::from_unix_millis(now.unix_millis() + 600_000),
                    )
                    .token
            })
            .expect("a key signs")
    };
    for depth in [127, 200] {
        let token = token_with(depth);
        let introspected = app
            .raw(
                app.client
                    .post(format!("{}/oauth/introspect", app.base))
                    .bearer_auth(ADMIN_KEY)
                    .form(&[("token", token.as_str())]),
            )
            .await;
        assert_eq!(introspected.status, StatusCode::OK, "{}", introspected.body);
        assert_eq!(introspected.body, json!({"active": false}));
        let current = app.get("/v1/sessions/current", Some(&token)).await;
        assert_json_error(
            &current,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "current",
        );
    }
    // Within the limit the same token is active, its claims whole.
    let token = token_with(20);
    let introspected = app
        .raw(
            app.client
                .post(format!("{}/oauth/introspect", app.base))
                .bearer_auth(ADMIN_KEY)
                .form(&[("token", token.as_str())]),
        )
        .await;
    assert_eq!(introspected.body["active"], true);
    assert_eq!(introspected.body["deep"], nested_arrays(20));
}

async fn claims_nested_past_the_token_depth_limit_are_refused_at_creation() {
    let app = TestApp::spawn().await;
    let answer = app
        .post(
            "/v1/sessions",
            Some(ADMIN_KEY),
            json!({"user_id": "alice", "claims": {"deep": nested_arrays(64)}}),
        )
        .await;
    assert_json_error(&answer, StatusCode::BAD_REQUEST, "invalid_request", "deep");
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|message| message.contains("claims")),
        "{}",
        answer.body
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM sessions").await, 0);
    let created = app
        .create_session_with(json!({"user_id": "alice", "claims": {"deep": nested_arrays(63)}}))
        .await;
    let access = created["access_token"].as_str().expect("access token");
    let current = app.get("/v1/sessions/current", Some(access)).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    assert_eq!(current.body["claims"]["deep"], nested_arrays(63));
}

fn assert_no_store(answer: &Answer, what: &str) {
    assert_eq!(
        answer
            .headers
            .get("cache-control")
            .and_then(|value| value.to_str().ok()),
        Some("no-store"),
        "{what}: {} {}",
        answer.status,
        answer.body
    );
    assert_eq!(
        answer
            .headers
            .get("pragma")
            .and_then(|value| value.to_str().ok()),
        Some("no-cache"),
        "{what}"
    );
}

/// The routes whose answers carry an access or refresh token (or set the refresh cookie); the
/// walk below covers each, and
/// `the_token_routes_listed_are_those_whose_documented_answers_carry_tokens` checks this list
/// against the OpenAPI document.
const TOKEN_ROUTES: [(&str, &str); 6] = [
    ("post", "/v1/sessions"),
    ("post", "/v1/sessions/refresh"),
    ("post", "/v1/logout"),
    ("post", "/oauth/token"),
    ("post", "/oauth/introspect"),
    ("post", "/oauth/revoke"),
];

async fn every_answer_of_a_route_that_carries_tokens_is_no_store() {
    // Regression: `POST /v1/sessions` and `POST /v1/sessions/refresh` carried tokens without
    // `Cache-Control: no-store`.
    let app = TestApp::spawn().await;
    let mut walked = Vec::new();

    let created = app
        .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "alice"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_no_store(&created, "created");
    for (answer, what) in [
        (
            app.post("/v1/sessions", Some(ADMIN_KEY), json!({})).await,
            "create: bad body",
        ),
        (
            app.post("/v1/sessions", None, json!({"user_id": "a"}))
                .await,
            "create: no key",
        ),
        (
            app.raw(
                app.client
                    .post(format!("{}/v1/sessions", app.base))
                    .bearer_auth(ADMIN_KEY)
                    .header("content-type", "application/json")
                    .body("x".repeat(70 * 1024)),
            )
            .await,
            "create: too large",
        ),
    ] {
        assert!(answer.status.is_client_error(), "{what}");
        assert_no_store(&answer, what);
    }
    walked.push(("post", "/v1/sessions"));

    let refresh_token = created.body["refresh_token"]
        .as_str()
        .expect("refresh token");
    let refreshed = app.refresh(refresh_token).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_no_store(&refreshed, "refreshed");
    // A replay of the spent token answers (a replayed pair or a refusal) without caching.
    let replayed = app.refresh(refresh_token).await;
    assert!(!replayed.status.is_server_error());
    assert_no_store(&replayed, "refresh: replay");
    assert_no_store(&app.refresh("sdr_unknown").await, "refresh: unknown");
    assert_no_store(
        &app.post("/v1/sessions/refresh", None, json!(["x"])).await,
        "refresh: bad body",
    );
    walked.push(("post", "/v1/sessions/refresh"));

    let second = app.create_session("bob").await;
    let second_refresh = second["refresh_token"].as_str().expect("refresh token");
    let second_access = second["access_token"].as_str().expect("access token");
    let form = |path: &str, bearer: Option<&str>, fields: &[(&str, &str)]| {
        let mut request = app.client.post(format!("{}{path}", app.base)).form(fields);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request
    };
    let oauth_cases = [
        (
            "/oauth/token",
            form(
                "/oauth/token",
                None,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", second_refresh),
                ],
            ),
            StatusCode::OK,
        ),
        (
            "/oauth/token",
            form(
                "/oauth/token",
                None,
                &[("grant_type", "refresh_token"), ("refresh_token", "sdr_x")],
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/oauth/introspect",
            form(
                "/oauth/introspect",
                Some(ADMIN_KEY),
                &[("token", second_access)],
            ),
            StatusCode::OK,
        ),
        (
            "/oauth/introspect",
            form("/oauth/introspect", None, &[("token", second_access)]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/oauth/revoke",
            form("/oauth/revoke", None, &[("token", second_access)]),
            StatusCode::OK,
        ),
        (
            "/oauth/revoke",
            form("/oauth/revoke", None, &[]),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, request, status) in oauth_cases {
        let answer = app.raw(request).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_no_store(&answer, path);
        walked.push(("post", path));
    }

    // Cookie mode: the refresh cookie is a token too.
    let cookie_app = TestApp::spawn_with(|raw| raw.cookie_mode = Some("on".into())).await;
    let created = cookie_app.create_session("carol").await;
    let cookie = format!(
        "__Secure-sessiond-refresh={}",
        created["refresh_token"].as_str().expect("refresh token")
    );
    let by_cookie = |cookie: &str| {
        cookie_app
            .client
            .post(format!("{}/v1/sessions/refresh", cookie_app.base))
            .header("cookie", cookie)
            .header("x-sessiond-csrf", "1")
    };
    let refreshed = cookie_app.raw(by_cookie(&cookie)).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_no_store(&refreshed, "cookie refresh");
    let stale = cookie_app
        .raw(by_cookie("__Secure-sessiond-refresh=sdr_unknown"))
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert_no_store(&stale, "cookie refresh: unknown");
    let no_csrf = cookie_app
        .raw(
            cookie_app
                .client
                .post(format!("{}/v1/sessions/refresh", cookie_app.base))
                .header("cookie", cookie.as_str()),
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    assert_no_store(&no_csrf, "cookie refresh: no CSRF header");
    let access = refreshed.body["access_token"]
        .as_str()
        .expect("access token");
    let logged_out = cookie_app.post("/v1/logout", Some(access), json!({})).await;
    assert_eq!(logged_out.status, StatusCode::NO_CONTENT);
    assert!(logged_out.headers.contains_key("set-cookie"));
    assert_no_store(&logged_out, "logout");
    let refused = cookie_app
        .post("/v1/logout", Some("not-a-token"), json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_no_store(&refused, "logout: bad token");
    walked.push(("post", "/v1/logout"));

    walked.sort_unstable();
    walked.dedup();
    let mut listed = TOKEN_ROUTES.to_vec();
    listed.sort_unstable();
    assert_eq!(walked, listed, "every token route is walked");
}

/// Whether `node` (part of the OpenAPI document `spec`, `$ref`s followed once each) describes
/// a token: an `access_token` or `refresh_token` property, or the refresh cookie.
fn describes_token(spec: &Value, node: &Value, followed: &mut Vec<String>) -> bool {
    match node {
        Value::Object(fields) => fields.iter().any(|(name, value)| {
            if name == "$ref" {
                let Some(target) = value.as_str() else {
                    return false;
                };
                if target.ends_with("/SetRefreshCookie") {
                    return true;
                }
                if followed.iter().any(|seen| seen == target) {
                    return false;
                }
                followed.push(target.to_owned());
                let pointer = target.trim_start_matches('#');
                return spec
                    .pointer(pointer)
                    .is_some_and(|resolved| describes_token(spec, resolved, followed));
            }
            if name == "properties"
                && (value.get("access_token").is_some() || value.get("refresh_token").is_some())
            {
                return true;
            }
            describes_token(spec, value, followed)
        }),
        Value::Array(items) => items
            .iter()
            .any(|item| describes_token(spec, item, followed)),
        _ => false,
    }
}

#[test]
fn the_token_routes_listed_are_those_whose_documented_answers_carry_tokens() {
    let spec: Value = serde_json::from_str(include_str!("../../openapi.json")).expect("JSON");
    let mut carrying = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let Some(responses) = operation.get("responses").and_then(Value::as_object) else {
                continue;
            };
            let carries = responses
                .iter()
                .filter(|(status, _)| status.starts_with('2'))
                .any(|(_, response)| describes_token(&spec, response, &mut Vec::new()));
            if carries {
                carrying.push((method.clone(), path.clone()));
            }
        }
    }
    assert!(carrying.len() >= 3, "{carrying:?}");
    for (method, path) in &carrying {
        assert!(
            TOKEN_ROUTES.contains(&(method.as_str(), path.as_str())),
            "{method} {path} answers tokens but is not walked"
        );
    }
}

crate::on_every_store!(
    json_arrays_are_refused_wherever_an_object_is_expected,
    path_parameters_that_are_not_utf8_answer_json,
    unknown_v1_routes_answer_json_404_and_wrong_methods_json_405_with_allow,
    headers_with_control_or_non_ascii_bytes_never_reach_a_non_json_answer,
    audit_since_beyond_any_seq_answers_an_empty_page_not_500,
    a_validly_signed_token_with_claims_nested_127_deep_is_inactive_not_500,
    claims_nested_past_the_token_depth_limit_are_refused_at_creation,
    every_answer_of_a_route_that_carries_tokens_is_no_store,
);
