//! Property tests of the HTTP edge: every route, fed arbitrary and mutated bodies, query
//! strings, path parameters, credentials and content types through the real router
//! (`tower::ServiceExt::oneshot`, no sockets), never answers 5xx, and answers every 4xx of a
//! `/v1` or `/oauth` route in JSON with a string `error` code.
//!
//! Each property runs `PROPTEST_CASES` cases (default [`DEFAULT_CASES`]) on each store; the
//! CI's fuzz step runs more. A failure prints the smallest request that fails; pin it as a
//! named regression test (see `input.rs`).

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::helpers::{ADMIN_KEY, Backend, TestApp};

/// Cases per property and store when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 96;

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    TestRunner::new(Config {
        cases,
        // A failure is turned into a named regression test, not a file beside the source.
        failure_persistence: None,
        ..Config::default()
    })
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anyone,
    Admin,
    User,
    /// Admin or user.
    Either,
}

/// What a route reads from its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    Json,
    Form,
}

/// One route of the router, with a body that it accepts, to mutate.
#[derive(Debug, Clone)]
struct Route {
    method: Method,
    /// The path, `{name}` for each parameter.
    template: &'static str,
    caller: Caller,
    body: BodyKind,
    /// A body the route accepts (`Value::Null` when it reads none).
    valid_body: Value,
    /// The query parameters it reads.
    query_keys: &'static [&'static str],
}

fn route(
    method: Method,
    template: &'static str,
    caller: Caller,
    body: BodyKind,
    valid_body: Value,
    query_keys: &'static [&'static str],
) -> Route {
    Route {
        method,
        template,
        caller,
        body,
        valid_body,
        query_keys,
    }
}

/// Every route the router serves.
fn routes() -> Vec<Route> {
    use BodyKind::{Form, Json, None as NoBody};
    use Caller::{Admin, Anyone, Either, User};
    let none = Value::Null;
    vec![
        route(
            Method::POST,
            "/v1/sessions",
            Admin,
            Json,
            json!({
                "user_id": "fuzz-user", "tenant_id": "acme",
                "device": {"id": "fuzz-device", "name": "Laptop", "user_agent": "Mozilla/5.0", "ip": "203.0.113.9"},
                "claims": {"roles": ["user"], "permissions": ["notes:read"], "plan": {"tier": 2}},
                "metadata": {"note": "x"},
            }),
            &[],
        ),
        route(Method::GET, "/v1/sessions", User, NoBody, none.clone(), &[]),
        route(
            Method::POST,
            "/v1/sessions/refresh",
            Anyone,
            Json,
            json!({"refresh_token": "{refresh}"}),
            &[],
        ),
        route(
            Method::GET,
            "/v1/sessions/current",
            User,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::POST,
            "/v1/sessions/revoke-all",
            User,
            Json,
            json!({"except_current": true}),
            &[],
        ),
        route(
            Method::DELETE,
            "/v1/sessions/{session_id}",
            Either,
            NoBody,
            none.clone(),
            &[],
        ),
        route(Method::POST, "/v1/logout", User, NoBody, none.clone(), &[]),
        route(
            Method::GET,
            "/v1/users/{user_id}/sessions",
            Admin,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::POST,
            "/v1/users/{user_id}/sessions/revoke-all",
            Admin,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::POST,
            "/oauth/token",
            Anyone,
            Form,
            json!({"grant_type": "refresh_token", "refresh_token": "{refresh}"}),
            &[],
        ),
        route(
            Method::POST,
            "/oauth/introspect",
            Admin,
            Form,
            json!({"token": "{access}", "token_type_hint": "access_token"}),
            &[],
        ),
        route(
            Method::POST,
            "/oauth/revoke",
            Anyone,
            Form,
            json!({"token": "{refresh}"}),
            &[],
        ),
        route(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            Anyone,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::GET,
            "/.well-known/jwks.json",
            Anyone,
            NoBody,
            none.clone(),
            &[],
        ),
        route(Method::GET, "/healthz", Anyone, NoBody, none.clone(), &[]),
        route(Method::GET, "/readyz", Anyone, NoBody, none.clone(), &[]),
        route(Method::GET, "/v1/stats", Admin, NoBody, none.clone(), &[]),
        route(
            Method::GET,
            "/v1/stats/history",
            Admin,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::GET,
            "/v1/events",
            Either,
            NoBody,
            none.clone(),
            &["since", "types", "user_id"],
        ),
        route(Method::GET, "/v1/devices", User, NoBody, none.clone(), &[]),
        route(
            Method::DELETE,
            "/v1/devices/{device_id}",
            User,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::POST,
            "/v1/devices/{device_id}/trust",
            User,
            Json,
            json!({"trusted": false}),
            &[],
        ),
        route(
            Method::GET,
            "/v1/users/{user_id}/devices",
            Admin,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::DELETE,
            "/v1/users/{user_id}/devices/{device_id}",
            Admin,
            NoBody,
            none.clone(),
            &[],
        ),
        route(
            Method::POST,
            "/v1/users/{user_id}/devices/{device_id}/trust",
            Admin,
            Json,
            json!({"trusted": true}),
            &[],
        ),
        route(
            Method::GET,
            "/v1/audit",
            Admin,
            NoBody,
            none.clone(),
            &["user_id", "session_id", "type", "since", "limit"],
        ),
        route(
            Method::GET,
            "/v1/audit/verify",
            Admin,
            NoBody,
            none.clone(),
            &[],
        ),
        route(Method::GET, "/v1/keys", Admin, NoBody, none.clone(), &[]),
        route(
            Method::GET,
            "/openapi.json",
            Anyone,
            NoBody,
            none.clone(),
            &[],
        ),
        route(Method::GET, "/metrics", Anyone, NoBody, none.clone(), &[]),
        route(Method::GET, "/ui/{asset}", Anyone, NoBody, none, &[]),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |number| {
            serde_json::Number::from_f64(number).map(Value::Number)
        }),
        ".{0,24}".prop_map(Value::from),
        interesting_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Text that lands near the edges of what the routes parse.
fn interesting_text() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "0",
        "-1",
        "1e3",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551616",
        "99999999999999999999999999999",
        "67e55044-10b1-426f-9247-bb680e5fe0c8",
        "not-a-uuid",
        "2026-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "1970-01-01T00:00:00.000000001Z",
        "fuzz-user",
        "session.created,session.revoked",
        ",,,",
        "sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "sdr_",
        "a.b.c",
        "::1",
        "203.0.113.9",
        "\u{0}",
        "\u{feff}",
        "%FF",
        "%",
    ])
    .prop_map(str::to_owned)
}

/// Text or bytes for a query value or path parameter, before percent-encoding.
fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => interesting_text().prop_map(String::into_bytes),
        // Numbers of every size, around the limits of `u32`, `i64` and `u64` included.
        2 => "-?[0-9]{1,22}".prop_map(String::into_bytes),
        1 => ".{0,24}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

/// Percent-encodes every byte but the unreserved ones (RFC 3986 §2.3).
fn percent_encode(bytes: &[u8]) -> String {
    let mut encoded = String::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// How a path parameter is filled.
#[derive(Debug, Clone)]
enum PathParam {
    /// The caller's own session, device or user.
    Own,
    Encoded(Vec<u8>),
    /// Verbatim, possibly malformed escapes (`%`, `%G1`).
    Raw(String),
}

fn path_param() -> impl Strategy<Value = PathParam> {
    prop_oneof![
        2 => Just(PathParam::Own),
        3 => raw_bytes().prop_map(PathParam::Encoded),
        1 => "[A-Za-z0-9%._~-]{0,12}".prop_map(PathParam::Raw),
    ]
}

/// The query string.
#[derive(Debug, Clone)]
enum Query {
    None,
    /// Pairs, percent-encoded; a `None` key is one of the route's own.
    Pairs(Vec<(Option<Vec<u8>>, Vec<u8>)>, u8),
    Raw(String),
}

fn query() -> impl Strategy<Value = Query> {
    prop_oneof![
        1 => Just(Query::None),
        4 => (
            prop::collection::vec((prop::option::weighted(0.2, raw_bytes()), raw_bytes()), 0..5),
            any::<u8>(),
        )
            .prop_map(|(pairs, pick)| Query::Pairs(pairs, pick)),
        1 => "[A-Za-z0-9%&=+;._~,:-]{0,40}".prop_map(Query::Raw),
    ]
}

/// The `Authorization` header.
#[derive(Debug, Clone)]
enum Credential {
    /// What the route needs (for `Either`, admin or user by the flag).
    Proper(bool),
    Missing,
    /// The other kind of caller's credential.
    Wrong,
    /// Any header value bytes.
    Garbage(Vec<u8>),
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        6 => any::<bool>().prop_map(Credential::Proper),
        1 => Just(Credential::Missing),
        1 => Just(Credential::Wrong),
        1 => prop::collection::vec(any::<u8>(), 0..60).prop_map(Credential::Garbage),
        1 => ".{0,40}".prop_map(|text| Credential::Garbage(format!("Bearer {text}").into_bytes())),
    ]
}

/// How the body is made.
#[derive(Debug, Clone)]
enum BodyCase {
    /// The route's valid body.
    Valid,
    /// The valid body with the field picked by the number replaced by a value.
    Replaced(u8, Value),
    /// The valid body with the field picked by the number inside an object replaced.
    ReplacedDeep(u8, u8, Value),
    /// The valid body without the field picked by the number.
    Removed(u8),
    /// The valid body with one more field.
    Added(String, Value),
    /// The valid body inside an array (or its values as one).
    AsArray(bool),
    Json(Value),
    /// JSON text nested `n` deep.
    Deep(usize, bool),
    Bytes(Vec<u8>),
    Empty,
}

fn body_case() -> impl Strategy<Value = BodyCase> {
    prop_oneof![
        3 => Just(BodyCase::Valid),
        4 => (any::<u8>(), json_value()).prop_map(|(pick, value)| BodyCase::Replaced(pick, value)),
        2 => (any::<u8>(), any::<u8>(), json_value())
            .prop_map(|(outer, inner, value)| BodyCase::ReplacedDeep(outer, inner, value)),
        1 => any::<u8>().prop_map(BodyCase::Removed),
        1 => (".{0,10}", json_value()).prop_map(|(name, value)| BodyCase::Added(name, value)),
        1 => any::<bool>().prop_map(BodyCase::AsArray),
        2 => json_value().prop_map(BodyCase::Json),
        1 => (0usize..300, any::<bool>()).prop_map(|(depth, objects)| BodyCase::Deep(depth, objects)),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(BodyCase::Bytes),
        1 => Just(BodyCase::Empty),
    ]
}

/// The `Content-Type` header.
fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        8 => Just(None),
        1 => prop::sample::select(vec![
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=x",
            "",
        ])
        .prop_map(|value| Some(value.to_owned())),
        1 => "[ -~]{0,30}".prop_map(Some),
    ]
}

/// One request.
#[derive(Debug, Clone)]
struct Case {
    route: usize,
    params: [PathParam; 2],
    query: Query,
    credential: Credential,
    body: BodyCase,
    /// `None`: the body's natural type.
    content_type: Option<String>,
    accept_event_stream: bool,
}

fn case(routes: usize) -> impl Strategy<Value = Case> {
    (
        0..routes,
        [path_param(), path_param()],
        query(),
        credential(),
        body_case(),
        content_type(),
        any::<bool>(),
    )
        .prop_map(
            |(route, params, query, credential, body, content_type, accept_event_stream)| Case {
                route,
                params,
                query,
                credential,
                body,
                content_type,
                accept_event_stream,
            },
        )
}

/// A fresh session's credentials, for the case at hand (cases may revoke what they use).
struct Session {
    access: String,
    refresh: String,
    session_id: String,
}

async fn create_session(router: &Router, user: &str) -> Session {
    let request = Request::post("/v1/sessions")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"user_id": user, "device": {"id": "fuzz-device", "name": "Laptop"}}).to_string(),
        ))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    let text = |value: &Value| value.as_str().expect("a string").to_owned();
    Session {
        access: text(&body["access_token"]),
        refresh: text(&body["refresh_token"]),
        session_id: text(&body["session"]["id"]),
    }
}

/// Puts the session's live credentials where the valid bodies have placeholders.
fn fill(value: &Value, session: &Session) -> Value {
    match value {
        Value::String(text) => Value::String(
            text.replace("{refresh}", &session.refresh)
                .replace("{access}", &session.access),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| (name.clone(), fill(value, session)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `value` with the field `pick` (modulo the field count) transformed by `change`.
fn with_field(value: &Value, pick: u8, change: impl FnOnce(&mut Value, String)) -> Value {
    let mut value = value.clone();
    let names: Vec<String> = value
        .as_object()
        .map(|fields| fields.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() {
        return value;
    }
    let name = names[usize::from(pick) % names.len()].clone();
    change(&mut value, name);
    value
}

fn body_bytes(route: &Route, case: &BodyCase, session: &Session) -> Vec<u8> {
    let valid = fill(&route.valid_body, session);
    let value = match case {
        BodyCase::Valid if valid.is_null() => return Vec::new(),
        BodyCase::Valid => valid,
        BodyCase::Replaced(pick, replacement) => with_field(&valid, *pick, |value, name| {
            value[name] = replacement.clone();
        }),
        BodyCase::ReplacedDeep(outer, inner, replacement) => {
            with_field(&valid, *outer, |value, name| {
                value[name.as_str()] = with_field(&value[name.as_str()], *inner, |inner, name| {
                    inner[name] = replacement.clone();
                });
            })
        }
        BodyCase::Removed(pick) => with_field(&valid, *pick, |value, name| {
            if let Some(fields) = value.as_object_mut() {
                fields.remove(&name);
            }
        }),
        BodyCase::Added(name, extra) => {
            let mut value = valid;
            if let Some(fields) = value.as_object_mut() {
                fields.insert(name.clone(), extra.clone());
            }
            value
        }
        BodyCase::AsArray(values_only) => match (values_only, valid.as_object()) {
            (true, Some(fields)) => Value::from(fields.values().cloned().collect::<Vec<_>>()),
            _ => json!([valid]),
        },
        BodyCase::Json(value) => value.clone(),
        BodyCase::Deep(depth, objects) => {
            let (open, close) = if *objects {
                ("{\"a\":", "}")
            } else {
                ("[", "]")
            };
            return format!("{}1{}", open.repeat(*depth), close.repeat(*depth)).into_bytes();
        }
        BodyCase::Bytes(bytes) => return bytes.clone(),
        BodyCase::Empty => return Vec::new(),
    };
    if route.body == BodyKind::Form {
        // A form of the object's fields, each value as text (JSON text unless a string).
        let pairs: Vec<String> = value
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .map(|(name, value)| {
                        let text = value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_owned);
                        format!(
                            "{}={}",
                            percent_encode(name.as_bytes()),
                            percent_encode(text.as_bytes())
                        )
                    })
                    .collect()
            })
            .unwrap_or_else(|| vec![percent_encode(value.to_string().as_bytes())]);
        pairs.join("&").into_bytes()
    } else {
        value.to_string().into_bytes()
    }
}

/// The request of `case`, or `None` when its parts make no valid HTTP request.
fn request(route: &Route, case: &Case, session: &Session) -> Option<Request<Body>> {
    let mut path = route.template.to_owned();
    for (index, name) in ["{session_id}", "{user_id}", "{device_id}", "{asset}"]
        .iter()
        .enumerate()
    {
        if !path.contains(name) {
            continue;
        }
        let param = &case.params[index % 2];
        let text = match param {
            PathParam::Own => match *name {
                "{session_id}" => session.session_id.clone(),
                "{user_id}" => "fuzz-user".to_owned(),
                "{device_id}" => "fuzz-device".to_owned(),
                _ => "app.js".to_owned(),
            },
            PathParam::Encoded(bytes) => percent_encode(bytes),
            PathParam::Raw(text) => text.clone(),
        };
        path = path.replace(name, &text);
    }
    match &case.query {
        Query::None => {}
        Query::Pairs(pairs, pick) => {
            let encoded: Vec<String> = pairs
                .iter()
                .enumerate()
                .map(|(index, (key, value))| {
                    let key = match key {
                        Some(key) => percent_encode(key),
                        None if route.query_keys.is_empty() => "q".to_owned(),
                        None => route.query_keys
                            [(usize::from(*pick) + index) % route.query_keys.len()]
                        .to_owned(),
                    };
                    format!("{key}={}", percent_encode(value))
                })
                .collect();
            path = format!("{path}?{}", encoded.join("&"));
        }
        Query::Raw(text) => path = format!("{path}?{text}"),
    }
    let mut builder = Request::builder().method(route.method.clone()).uri(path);
    let admin = format!("Bearer {ADMIN_KEY}");
    let user = format!("Bearer {}", session.access);
    let authorization = match (&case.credential, route.caller) {
        (Credential::Missing, _) => None,
        (Credential::Proper(_), Caller::Admin) | (Credential::Wrong, Caller::User) => {
            Some(admin.into_bytes())
        }
        (Credential::Proper(_), Caller::User) | (Credential::Wrong, Caller::Admin) => {
            Some(user.into_bytes())
        }
        (Credential::Proper(as_admin), Caller::Either | Caller::Anyone) => {
            Some(if *as_admin { admin } else { user }.into_bytes())
        }
        (Credential::Wrong, _) => Some(b"Basic Zm9vOmJhcg==".to_vec()),
        (Credential::Garbage(bytes), _) => Some(bytes.clone()),
    };
    if let Some(value) = authorization {
        // Bytes a header cannot hold never reach the service (hyper refuses them).
        builder = builder.header(header::AUTHORIZATION, HeaderValue::from_bytes(&value).ok()?);
    }
    let body = body_bytes(route, &case.body, session);
    let natural = match route.body {
        BodyKind::Form => Some("application/x-www-form-urlencoded"),
        BodyKind::Json | BodyKind::None => Some("application/json"),
    };
    let content_type = case.content_type.as_deref().or(natural);
    if let Some(content_type) = content_type
        && !body.is_empty()
    {
        builder = builder.header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).ok()?,
        );
    }
    if case.accept_event_stream {
        builder = builder.header(header::ACCEPT, "text/event-stream");
    }
    let mut request = builder
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .ok()?;
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    Some(request)
}

/// Sends `case` and checks the answer.
async fn check_case(router: &Router, routes: &[Route], case: &Case) -> Result<(), TestCaseError> {
    let route = &routes[case.route];
    let session = create_session(router, "fuzz-user").await;
    let Some(request) = request(route, case, &session) else {
        return Ok(());
    };
    let uri = request.uri().to_string();
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let what = format!("{} {uri}", route.method);
    prop_assert!(!status.is_server_error(), "{what} answered {status}");
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if status.is_success() && is_stream {
        // A live event stream: dropping it closes it.
        return Ok(());
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .map_err(|error| TestCaseError::fail(format!("{what}: body: {error}")))?;
    let contract = uri.starts_with("/v1") || uri.starts_with("/oauth");
    if status.is_client_error() && contract {
        prop_assert!(is_json, "{what} answered {status} without JSON");
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        prop_assert!(
            body["error"].as_str().is_some_and(|code| !code.is_empty()),
            "{what} answered {status} without an error code: {body}"
        );
    }
    Ok(())
}

/// Runs `cases` of [`case`] through the router of a fresh app on the test's store.
async fn every_route_answers_arbitrary_input_without_5xx() {
    let app = TestApp::spawn().await;
    let router = sessiond_server::router(app.state.clone());
    let routes = routes();
    let handle = tokio::runtime::Handle::current();
    let failure = tokio::task::block_in_place(|| {
        runner()
            .run(&case(routes.len()), |case| {
                handle.block_on(check_case(&router, &routes, &case))
            })
            .err()
    });
    if let Some(failure) = failure {
        panic!("{failure}");
    }
}

/// Like [`every_route_answers_arbitrary_input_without_5xx`], for cookie-mode refreshes: any
/// cookie, CSRF header and body.
async fn cookie_mode_refreshes_answer_arbitrary_cookies_and_bodies_without_5xx() {
    let app = TestApp::spawn_with(|raw| raw.cookie_mode = Some("on".into())).await;
    let router = sessiond_server::router(app.state.clone());
    let handle = tokio::runtime::Handle::current();
    let refresh = routes()
        .into_iter()
        .find(|route| route.template == "/v1/sessions/refresh")
        .expect("the refresh route");
    let cookie = prop_oneof![
        Just(None),
        Just(Some("{refresh}".to_owned())),
        "[ -~]{0,60}".prop_map(Some),
    ];
    let strategy = (cookie, any::<bool>(), body_case(), any::<bool>());
    let failure = tokio::task::block_in_place(|| {
        runner()
            .run(&strategy, |(cookie, csrf, body, whole_header)| {
                handle.block_on(async {
                    let session = create_session(&router, "fuzz-user").await;
                    let bytes = body_bytes(&refresh, &body, &session);
                    let mut builder = Request::post("/v1/sessions/refresh")
                        .header(header::CONTENT_LENGTH, bytes.len());
                    if !bytes.is_empty() {
                        builder = builder.header(header::CONTENT_TYPE, "application/json");
                    }
                    if let Some(cookie) = cookie {
                        let cookie = cookie.replace("{refresh}", &session.refresh);
                        let value = if whole_header {
                            format!("__Secure-sessiond-refresh={cookie}")
                        } else {
                            cookie
                        };
                        let Ok(value) = HeaderValue::from_str(&value) else {
                            return Ok(());
                        };
                        builder = builder.header(header::COOKIE, value);
                    }
                    if csrf {
                        builder = builder.header("x-sessiond-csrf", "1");
                    }
                    let request = builder.body(Body::from(bytes)).expect("request");
                    let response = router.clone().oneshot(request).await.expect("infallible");
                    let status = response.status();
                    prop_assert!(!status.is_server_error(), "answered {status}");
                    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                        .await
                        .map_err(|error| TestCaseError::fail(error.to_string()))?;
                    if status.is_client_error() {
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        prop_assert!(body["error"].is_string(), "{status} {body}");
                    }
                    Ok(())
                })
            })
            .err()
    });
    if let Some(failure) = failure {
        panic!("{failure}");
    }
}

/// Each property once per store, on a runtime with a worker free while the property blocks.
macro_rules! on_every_store_blocking {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::Backend::Sqlite.run(super::$test()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::Backend::Postgres.run(super::$test()).await;
                }
            )+
        }
    };
}

on_every_store_blocking!(
    every_route_answers_arbitrary_input_without_5xx,
    cookie_mode_refreshes_answer_arbitrary_cookies_and_bodies_without_5xx,
);
