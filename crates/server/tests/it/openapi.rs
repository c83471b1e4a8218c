//! `crates/server/openapi.json` against the server: every `.route(...)` of `src/` is documented
//! with the same methods (and nothing else is), and real answers of every route, successes and
//! errors, match the document's status codes, headers and schemas.
//!
//! Schemas are checked by a small validator of the JSON Schema keywords the document uses;
//! any other keyword is refused, so the document cannot lean on a keyword nothing checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, FIREFOX, TestApp};

const DOCUMENT: &str = include_str!("../../openapi.json");

/// An admin key scoped `read`, for the `403` of routes that need more.
const READ_KEY: &str = "test-read-key-0123456789-abcdefghijklmnopqrs";

/// An introspection client.
const CLIENT_ID: &str = "notes-api";
const CLIENT_SECRET: &str = "notes-api-secret-0123456789-abcdefghijklmn";

/// Documented answers no test here provokes, by status, and why.
const NOT_EXERCISED: &[(u16, &str)] = &[
    (
        500,
        "internal errors (a corrupt row, a panic) cannot be caused through the API",
    ),
    (
        503,
        "storage outages are driven by faults.rs (PostgreSQL behind a cutting proxy), not here",
    ),
];

fn spec() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

// ---------------------------------------------------------------------------------------------
// The validator.

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references: {reference}"));
        value = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling reference {reference}"));
    }
    value
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        other => panic!("unknown type {other}"),
    }
}

fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && (bytes[10] == b'T' || bytes[10] == b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && (text.ends_with('Z') || text.ends_with('z') || text[19..].contains(['+', '-']))
}

/// Checks `value` against `schema`; the error names the JSON path of the first mismatch.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    let Some(keywords) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Ok(()),
            Value::Bool(false) => Err(format!("{at}: nothing is allowed here")),
            other => panic!("a schema is an object or a boolean: {other}"),
        };
    };
    for (keyword, argument) in keywords {
        match keyword.as_str() {
            "type" => {
                let names: Vec<&str> = match argument {
                    Value::String(name) => vec![name.as_str()],
                    Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                    other => panic!("bad type {other}"),
                };
                if !names.iter().any(|name| type_matches(name, value)) {
                    return Err(format!("{at}: {value} is not of type {argument}"));
                }
            }
            "enum" => {
                if !argument
                    .as_array()
                    .expect("enum is an array")
                    .contains(value)
                {
                    return Err(format!("{at}: {value} is not one of {argument}"));
                }
            }
            "const" => {
                if argument != value {
                    return Err(format!("{at}: {value} is not {argument}"));
                }
            }
            "properties" => {
                if let Some(object) = value.as_object() {
                    for (name, property) in argument.as_object().expect("properties is an object") {
                        if let Some(field) = object.get(name) {
                            validate(spec, property, field, &format!("{at}.{name}"))?;
                        }
                    }
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for name in argument.as_array().expect("required is an array") {
                        let name = name.as_str().expect("required names are strings");
                        if !object.contains_key(name) {
                            return Err(format!("{at}: required field {name} is missing"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    let known = keywords.get("properties").and_then(Value::as_object);
                    for (name, field) in object {
                        if known.is_some_and(|known| known.contains_key(name)) {
                            continue;
                        }
                        validate(spec, argument, field, &format!("{at}.{name}"))
                            .map_err(|error| format!("{error} (field {name} is not documented)"))?;
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (index, item) in items.iter().enumerate() {
                        validate(spec, argument, item, &format!("{at}[{index}]"))?;
                    }
                }
            }
            "oneOf" | "anyOf" => {
                let branches = argument.as_array().expect("oneOf/anyOf is an array");
                let errors: Vec<String> = branches
                    .iter()
                    .filter_map(|branch| validate(spec, branch, value, at).err())
                    .collect();
                let matched = branches.len() - errors.len();
                if matched == 0 || (keyword == "oneOf" && matched > 1) {
                    return Err(format!(
                        "{at}: {matched} branches of {keyword} match ({})",
                        errors.join("; ")
                    ));
                }
            }
            "minLength" | "maxLength" => {
                if let (Some(text), Some(bound)) = (value.as_str(), argument.as_u64()) {
                    let length = text.chars().count() as u64;
                    let fine = if keyword == "minLength" {
                        length >= bound
                    } else {
                        length <= bound
                    };
                    if !fine {
                        return Err(format!("{at}: {text:?} has the wrong length ({keyword})"));
                    }
                }
            }
            "minimum" | "maximum" => {
                if let (Some(number), Some(bound)) = (value.as_f64(), argument.as_f64()) {
                    let fine = if keyword == "minimum" {
                        number >= bound
                    } else {
                        number <= bound
                    };
                    if !fine {
                        return Err(format!("{at}: {number} is out of bounds ({keyword})"));
                    }
                }
            }
            "format" => {
                if let Some(text) = value.as_str() {
                    let fine = match argument.as_str().expect("format is a string") {
                        "date-time" => is_rfc3339(text),
                        "uuid" => uuid::Uuid::parse_str(text).is_ok(),
                        other => panic!("unknown format {other}"),
                    };
                    if !fine {
                        return Err(format!("{at}: {text:?} is not a {argument}"));
                    }
                }
            }
            // Annotations: they constrain nothing.
            "description" | "title" | "default" | "examples" | "contentMediaType" => {}
            other => panic!("the validator does not know the keyword {other:?} ({at})"),
        }
    }
    Ok(())
}

#[test]
fn the_validator_refuses_what_its_keywords_forbid() {
    let spec = json!({"components": {"schemas": {"Thing": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "kind": {"enum": ["a", "b"]},
            "n": {"type": "integer", "minimum": 1, "maximum": 3},
            "tags": {"type": "array", "items": {"type": "string"}},
            "fixed": {"const": "x"},
            "name": {"type": "string", "minLength": 1, "maxLength": 3},
        },
        "required": ["id"],
        "additionalProperties": false,
    }}}});
    let thing = json!({"$ref": "#/components/schemas/Thing"});
    let check = |value: Value| validate(&spec, &thing, &value, "$");
    let good = json!({"id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "at": "2026-01-02T03:04:05.678Z",
        "kind": "a", "n": 2, "tags": ["t"], "fixed": "x", "name": "é"});
    assert_eq!(check(good.clone()), Ok(()));
    assert_eq!(
        check(json!({"id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "at": null})),
        Ok(())
    );
    let mut bad = Vec::new();
    for (field, wrong) in [
        ("id", json!("not-a-uuid")),
        ("at", json!("yesterday")),
        ("at", json!(5)),
        ("kind", json!("c")),
        ("n", json!(4)),
        ("n", json!(1.5)),
        ("tags", json!([1])),
        ("fixed", json!("y")),
        ("name", json!("")),
        ("name", json!("long")),
        ("extra", json!(1)),
    ] {
        let mut value = good.clone();
        value[field] = wrong;
        bad.push(check(value));
    }
    bad.push(check(json!({"at": null})));
    bad.push(check(json!([])));
    assert!(bad.iter().all(Result::is_err), "{bad:?}");
    let either = json!({"oneOf": [{"type": "string"}, {"type": ["string", "null"]}]});
    assert!(validate(&spec, &either, &json!(null), "$").is_ok());
    assert!(validate(&spec, &either, &json!("both"), "$").is_err());
    assert!(validate(&spec, &either, &json!(1), "$").is_err());
}

#[test]
#[should_panic(expected = "does not know the keyword")]
fn the_validator_refuses_a_keyword_it_does_not_check() {
    let _ = validate(&json!({}), &json!({"pattern": "^a"}), &json!("a"), "$");
}

// ---------------------------------------------------------------------------------------------
// Routes of the router against paths of the document.

/// Every `.rs` file under `dir`.
fn rust_sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((path.display().to_string(), text));
        }
    }
}

/// The `(path, method)` pairs routed by `.route("PATH", get(..).post(..))` calls in `source`.
/// Panics on a `.route(` it cannot read and on other ways of adding routes, so that a route
/// cannot escape the comparison.
fn routes_in(file: &str, source: &str) -> BTreeSet<(String, String)> {
    for forbidden in [
        ".nest(",
        ".nest_service(",
        ".route_service(",
        "MethodRouter::",
    ] {
        assert!(
            !source.contains(forbidden),
            "{file} adds routes with {forbidden}, which this test cannot read"
        );
    }
    let mut routes = BTreeSet::new();
    let mut rest = source;
    while let Some(start) = rest.find(".route(") {
        rest = &rest[start + ".route(".len()..];
        let trimmed = rest.trim_start();
        let literal = trimmed
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("{file}: .route( not followed by a path literal"));
        let end = literal.find('"').expect("closed literal");
        let path = &literal[..end];
        let mut after = literal[end + 1..].trim_start();
        after = after
            .strip_prefix(',')
            .unwrap_or_else(|| panic!("{file}: {path}: no method router"));
        // The method router runs to the `)` that closes `.route(`; method functions are the
        // identifiers called at its top level (`get(..)`, `.post(..)`).
        let mut depth = 0usize;
        let mut methods = Vec::new();
        let bytes = after.as_bytes();
        let mut index = 0;
        while index < bytes.len() {
            match bytes[index] {
                b'(' | b'{' | b'[' => {
                    if depth == 0 {
                        let head = &after[..index];
                        let name_start = head
                            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .map_or(0, |at| at + 1);
                        methods.push(head[name_start..].to_owned());
                    }
                    depth += 1;
                }
                b')' | b'}' | b']' => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                b'"' => {
                    index += 1;
                    while index < bytes.len() && bytes[index] != b'"' {
                        index += usize::from(bytes[index] == b'\\') + 1;
                    }
                }
                _ => {}
            }
            index += 1;
        }
        assert!(!methods.is_empty(), "{file}: {path}: no method found");
        for method in methods {
            assert!(
                METHODS.contains(&method.as_str()),
                "{file}: {path}: {method:?} is not a method function this test knows"
            );
            routes.insert((path.to_owned(), method));
        }
    }
    routes
}

fn routed() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    rust_sources(&src, &mut sources);
    let mut routes = BTreeSet::new();
    for (file, text) in &sources {
        routes.extend(routes_in(file, text));
    }
    routes
}

fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                operations.insert((path.clone(), method.clone()));
            }
        }
    }
    operations
}

#[test]
fn the_route_reader_reads_chained_methods_and_refuses_what_it_cannot_read() {
    let read = routes_in(
        "example",
        r#"Router::new()
            .route("/a", post(handlers::a).get(|| async { Redirect::permanent("/x") }))
            .route(
                "/b/{id}",
                delete(b),
            )"#,
    );
    let expected: BTreeSet<(String, String)> =
        [("/a", "get"), ("/a", "post"), ("/b/{id}", "delete")]
            .iter()
            .map(|(path, method)| ((*path).to_owned(), (*method).to_owned()))
            .collect();
    assert_eq!(read, expected);
    let nested = std::panic::catch_unwind(|| routes_in("example", r#".nest("/v2", other)"#));
    assert!(nested.is_err());
    let indirect = std::panic::catch_unwind(|| routes_in("example", r#".route(PATH, get(a))"#));
    assert!(indirect.is_err());
}

#[test]
fn every_route_of_the_router_is_documented_and_nothing_else() {
    let routed = routed();
    let documented = documented(&spec());
    assert!(routed.len() > 30, "the route reader found {routed:?}");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routed but not in openapi.json: {undocumented:?}; in openapi.json but not routed: {unrouted:?}"
    );
}

/// `template` with sample values in its `{parameters}`.
fn sample_path(template: &str) -> String {
    template
        .replace("{asset}", "page.js")
        .replace("{user_id}", "alice")
        .replace("{id}", "67e55044-10b1-426f-9247-bb680e5fe0c8")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn router_has_every_documented_operation_and_no_other_method() {
    // With every optional route on: DBSC's answer `404` while it is off.
    let app = TestApp::spawn_with(|raw| {
        raw.cookie_mode = Some("on".into());
        raw.dbsc = Some("on".into());
    })
    .await;
    let spec = spec();
    let client = no_redirects();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        let url = format!("{}{}", app.base, sample_path(path));
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let documented = item.get(method.to_lowercase()).is_some();
            let request = client.request(method.parse().expect("method"), &url);
            let answer = request.send().await.expect("sent");
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            if documented {
                assert!(
                    status != 405 && body["error"] != "not_found",
                    "{method} {path} is documented but answers {status} {body}"
                );
            } else {
                assert_eq!(
                    (status, body["error"].as_str()),
                    (405, Some("method_not_allowed")),
                    "{method} {path} is not documented but answers {status} {body}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Answers against the document.

/// An answer with its raw body.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// Checks answers against the document and remembers which documented answers were seen.
struct Checker {
    spec: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Checker {
    fn new() -> Self {
        Self {
            spec: spec(),
            seen: BTreeSet::new(),
        }
    }

    /// The documented response of `method template` for `status`, after checking the status
    /// and the documented headers of `headers`.
    fn head(&mut self, method: &str, template: &str, status: u16, headers: &HeaderMap) -> Value {
        let spec = &self.spec;
        let operation = spec["paths"][template]
            .get(method)
            .unwrap_or_else(|| panic!("{method} {template} is not documented"));
        let response = operation["responses"]
            .get(status.to_string())
            .map(|response| resolve(spec, response).clone())
            .unwrap_or_else(|| {
                panic!("{method} {template} answered {status}, which is not documented")
            });
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            let header = resolve(spec, header);
            let value = headers.get(name.as_str());
            let Some(value) = value else {
                assert!(
                    header["required"] != true,
                    "{method} {template} {status}: documented header {name} is missing"
                );
                continue;
            };
            let text = value.to_str().expect("visible header").to_owned();
            let schema = resolve(spec, &header["schema"]);
            let value = if schema["type"] == "integer" {
                text.parse::<u64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(text))
            } else {
                Value::String(text)
            };
            if let Err(error) = validate(spec, schema, &value, name) {
                panic!("{method} {template} {status}: header {error}");
            }
        }
        self.seen
            .insert((template.to_owned(), method.to_owned(), status));
        response
    }

    /// Checks `reply` as an answer to `method template`; returns its JSON body.
    fn check(&mut self, method: &str, template: &str, reply: &Reply) -> Value {
        let response = self.head(method, template, reply.status, &reply.headers);
        let context = format!("{method} {template} {}", reply.status);
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            assert!(
                reply.body.is_empty(),
                "{context}: documented without a body, answered {:?}",
                String::from_utf8_lossy(&reply.body)
            );
            return Value::Null;
        };
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .unwrap_or_else(|| panic!("{context}: no content-type"))
            .trim()
            .to_owned();
        let media = content
            .get(&content_type)
            .unwrap_or_else(|| panic!("{context}: content-type {content_type} is not documented"));
        if content_type == "application/json" {
            let body: Value = serde_json::from_slice(&reply.body)
                .unwrap_or_else(|error| panic!("{context}: body is not JSON: {error}"));
            if let Err(error) = validate(&self.spec, &media["schema"], &body, "$") {
                panic!("{context}: {error}\nbody: {body}");
            }
            body
        } else {
            let text = String::from_utf8(reply.body.clone())
                .unwrap_or_else(|_| panic!("{context}: body is not text"));
            assert!(!text.is_empty(), "{context}: empty body");
            Value::Null
        }
    }

    /// Sends `request` and checks its answer, which must have `status`.
    async fn expect(
        &mut self,
        method: &str,
        template: &str,
        status: u16,
        request: reqwest::RequestBuilder,
    ) -> Value {
        let reply = send(request).await;
        assert_eq!(
            reply.status,
            status,
            "{method} {template}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        self.check(method, template, &reply)
    }

    /// Every documented `(path, method, status)` not in [`NOT_EXERCISED`] was seen.
    fn assert_everything_seen(&self) {
        let mut missing = Vec::new();
        for (path, item) in self.spec["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                for status in operation["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                {
                    let status: u16 = status.parse().expect("numeric status");
                    let exempt = NOT_EXERCISED.iter().any(|(code, _)| *code == status);
                    if !exempt && !self.seen.contains(&(path.clone(), method.clone(), status)) {
                        missing.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented answers no test provoked: {missing:?}"
        );
    }
}

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base)
}

/// A body over the 64 KiB limit.
fn oversized() -> Value {
    json!({ "user_id": "x", "metadata": { "blob": "a".repeat(70 * 1024) } })
}

async fn create(app: &TestApp, user: &str, device: &str) -> Value {
    app.create_session_with(json!({
        "user_id": user,
        "device": {"id": device, "name": "Laptop", "user_agent": FIREFOX, "ip": "203.0.113.7"},
        "claims": {"roles": ["user"], "permissions": ["notes:read"]},
    }))
    .await
}

fn token<'a>(pair: &'a Value, field: &str) -> &'a str {
    pair[field].as_str().expect("token field")
}

async fn documented_answers_match_what_the_server_answers() {
    let app = TestApp::spawn_with(|raw| {
        raw.admin_keys = Some(format!("{ADMIN_KEY},{READ_KEY}:read").into());
        // Unused successors replayed inside the grace window only, so that a late replay of a
        // spent token is reuse.
        raw.unused_successor_replay = Some("0".into());
        raw.introspection_clients = Some(format!("{CLIENT_ID}:{CLIENT_SECRET}").into());
    })
    .await;
    let mut c = Checker::new();
    let client = no_redirects();
    let http = |method: reqwest::Method, path: &str| client.request(method, url(&app, path));
    use reqwest::Method as M;

    // POST /v1/sessions
    let t = "/v1/sessions";
    let alice = c
        .expect(
            "post",
            t,
            201,
            http(M::POST, t).bearer_auth(ADMIN_KEY).json(&json!({
                "user_id": "alice", "tenant_id": "acme",
                "device": {"id": "alice-laptop", "name": "Laptop", "user_agent": FIREFOX, "ip": "203.0.113.7"},
                "claims": {"roles": ["user"], "permissions": ["notes:read"], "plan": "pro"},
                "metadata": {"signup": "web"},
            })),
        )
        .await;
    let alice_access = token(&alice, "access_token").to_owned();
    for bad in [
        json!({}),
        json!({"user_id": "a", "colour": "red"}),
        json!({"user_id": 5}),
    ] {
        let body = c
            .expect(
                "post",
                t,
                400,
                http(M::POST, t).bearer_auth(ADMIN_KEY).json(&bad),
            )
            .await;
        assert_eq!(body["error"], "invalid_request");
    }
    c.expect(
        "post",
        t,
        400,
        http(M::POST, t)
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "text/plain")
            .body(r#"{"user_id":"a"}"#),
    )
    .await;
    c.expect(
        "post",
        t,
        401,
        http(M::POST, t).json(&json!({"user_id": "a"})),
    )
    .await;
    c.expect(
        "post",
        t,
        401,
        http(M::POST, t)
            .bearer_auth("not-a-key")
            .json(&json!({"user_id": "a"})),
    )
    .await;
    c.expect(
        "post",
        t,
        403,
        http(M::POST, t)
            .bearer_auth(READ_KEY)
            .json(&json!({"user_id": "a"})),
    )
    .await;
    c.expect(
        "post",
        t,
        413,
        http(M::POST, t).bearer_auth(ADMIN_KEY).json(&oversized()),
    )
    .await;

    // GET /v1/sessions
    let listed = c
        .expect("get", t, 200, http(M::GET, t).bearer_auth(&alice_access))
        .await;
    assert_eq!(listed["sessions"][0]["current"], true);
    c.expect("get", t, 401, http(M::GET, t)).await;
    c.expect("get", t, 401, http(M::GET, t).bearer_auth("a.b.c"))
        .await;

    // POST /v1/sessions/refresh
    let t = "/v1/sessions/refresh";
    let second = create(&app, "alice", "alice-phone").await;
    let refreshed = c
        .expect(
            "post",
            t,
            200,
            http(M::POST, t).json(&json!({"refresh_token": token(&second, "refresh_token")})),
        )
        .await;
    let body = c
        .expect(
            "post",
            t,
            401,
            http(M::POST, t).json(&json!({"refresh_token": "sdr_unknown"})),
        )
        .await;
    assert_eq!(body["reason"], "unknown");
    for bad in [json!({}), json!({"refresh_token": "x", "extra": 1})] {
        c.expect("post", t, 400, http(M::POST, t).json(&bad)).await;
    }
    c.expect("post", t, 413, http(M::POST, t).json(&oversized()))
        .await;
    // A spent token presented again after the grace window: reuse detected.
    app.advance(Duration::from_secs(11));
    let body = c
        .expect(
            "post",
            t,
            401,
            http(M::POST, t).json(&json!({"refresh_token": token(&second, "refresh_token")})),
        )
        .await;
    assert_eq!(body["reason"], "reuse_detected", "{body}");
    drop(refreshed);

    // GET /v1/sessions/current
    let t = "/v1/sessions/current";
    let current = c
        .expect("get", t, 200, http(M::GET, t).bearer_auth(&alice_access))
        .await;
    assert_eq!(current["claims"]["plan"], "pro");
    c.expect("get", t, 401, http(M::GET, t)).await;

    // POST /v1/sessions/revoke-all
    let t = "/v1/sessions/revoke-all";
    let carol = create(&app, "carol", "carol-1").await;
    create(&app, "carol", "carol-2").await;
    let carol_access = token(&carol, "access_token");
    c.expect(
        "post",
        t,
        400,
        http(M::POST, t)
            .bearer_auth(carol_access)
            .json(&json!({"except_current": "yes"})),
    )
    .await;
    c.expect(
        "post",
        t,
        413,
        http(M::POST, t)
            .bearer_auth(carol_access)
            .json(&oversized()),
    )
    .await;
    let revoked = c
        .expect(
            "post",
            t,
            200,
            http(M::POST, t)
                .bearer_auth(carol_access)
                .json(&json!({"except_current": true})),
        )
        .await;
    assert_eq!(revoked["revoked"], 1);
    c.expect("post", t, 200, http(M::POST, t).bearer_auth(carol_access))
        .await;
    c.expect("post", t, 401, http(M::POST, t)).await;

    // DELETE /v1/sessions/{id}
    let t = "/v1/sessions/{id}";
    let bob = create(&app, "bob", "bob-1").await;
    let bob_session = bob["session"]["id"].as_str().expect("id").to_owned();
    let dave = create(&app, "dave", "dave-1").await;
    let dave_session = dave["session"]["id"].as_str().expect("id").to_owned();
    let path = |id: &str| format!("/v1/sessions/{id}");
    c.expect(
        "delete",
        t,
        403,
        http(M::DELETE, &path(&bob_session)).bearer_auth(&alice_access),
    )
    .await;
    c.expect(
        "delete",
        t,
        403,
        http(M::DELETE, &path(&bob_session)).bearer_auth(READ_KEY),
    )
    .await;
    c.expect(
        "delete",
        t,
        404,
        http(M::DELETE, &path("67e55044-10b1-426f-9247-bb680e5fe0c8")).bearer_auth(ADMIN_KEY),
    )
    .await;
    c.expect(
        "delete",
        t,
        404,
        http(M::DELETE, &path("not-a-uuid")).bearer_auth(ADMIN_KEY),
    )
    .await;
    c.expect(
        "delete",
        t,
        400,
        http(M::DELETE, &path("%FF")).bearer_auth(ADMIN_KEY),
    )
    .await;
    c.expect(
        "delete",
        t,
        204,
        http(M::DELETE, &path(&dave_session)).bearer_auth(ADMIN_KEY),
    )
    .await;
    c.expect(
        "delete",
        t,
        204,
        http(M::DELETE, &path(&bob_session)).bearer_auth(token(&bob, "access_token")),
    )
    .await;
    c.expect("delete", t, 401, http(M::DELETE, &path(&bob_session)))
        .await;

    // POST /v1/logout
    let t = "/v1/logout";
    let erin = create(&app, "erin", "erin-1").await;
    c.expect(
        "post",
        t,
        204,
        http(M::POST, t).bearer_auth(token(&erin, "access_token")),
    )
    .await;
    c.expect(
        "post",
        t,
        401,
        http(M::POST, t).bearer_auth(token(&erin, "access_token")),
    )
    .await;

    // Admin views of a user's sessions.
    let t = "/v1/users/{user_id}/sessions";
    let listed = c
        .expect(
            "get",
            t,
            200,
            http(M::GET, "/v1/users/alice/sessions").bearer_auth(READ_KEY),
        )
        .await;
    assert!(listed["sessions"][0].get("current").is_none());
    c.expect("get", t, 401, http(M::GET, "/v1/users/alice/sessions"))
        .await;
    let t = "/v1/users/{user_id}/sessions/revoke-all";
    create(&app, "frank", "frank-1").await;
    let p = "/v1/users/frank/sessions/revoke-all";
    c.expect("post", t, 403, http(M::POST, p).bearer_auth(READ_KEY))
        .await;
    c.expect("post", t, 401, http(M::POST, p)).await;
    let revoked = c
        .expect("post", t, 200, http(M::POST, p).bearer_auth(ADMIN_KEY))
        .await;
    assert_eq!(revoked["revoked"], 1);

    // Devices, the user's own.
    let t = "/v1/devices";
    let devices = c
        .expect("get", t, 200, http(M::GET, t).bearer_auth(&alice_access))
        .await;
    assert!(devices["devices"].as_array().expect("list").len() >= 2);
    c.expect("get", t, 401, http(M::GET, t)).await;
    let t = "/v1/devices/{id}/trust";
    let p = "/v1/devices/alice-laptop/trust";
    c.expect("post", t, 204, http(M::POST, p).bearer_auth(&alice_access))
        .await;
    c.expect(
        "post",
        t,
        204,
        http(M::POST, p)
            .bearer_auth(&alice_access)
            .json(&json!({"trusted": false})),
    )
    .await;
    c.expect(
        "post",
        t,
        400,
        http(M::POST, p)
            .bearer_auth(&alice_access)
            .json(&json!({"trust": true})),
    )
    .await;
    c.expect(
        "post",
        t,
        413,
        http(M::POST, p)
            .bearer_auth(&alice_access)
            .json(&oversized()),
    )
    .await;
    c.expect(
        "post",
        t,
        404,
        http(M::POST, "/v1/devices/bob-1/trust").bearer_auth(&alice_access),
    )
    .await;
    c.expect("post", t, 401, http(M::POST, p)).await;
    let t = "/v1/devices/{id}";
    c.expect(
        "delete",
        t,
        404,
        http(M::DELETE, "/v1/devices/nothing").bearer_auth(&alice_access),
    )
    .await;
    c.expect("delete", t, 401, http(M::DELETE, "/v1/devices/alice-phone"))
        .await;
    c.expect(
        "delete",
        t,
        400,
        http(M::DELETE, "/v1/devices/%FF").bearer_auth(&alice_access),
    )
    .await;
    let forgotten = c
        .expect(
            "delete",
            t,
            200,
            http(M::DELETE, "/v1/devices/alice-phone").bearer_auth(&alice_access),
        )
        .await;
    assert!(forgotten["revoked"].is_u64());

    // Devices, by an admin.
    create(&app, "grace", "grace-1").await;
    create(&app, "grace", "grace-2").await;
    let t = "/v1/users/{user_id}/devices";
    c.expect(
        "get",
        t,
        200,
        http(M::GET, "/v1/users/grace/devices").bearer_auth(READ_KEY),
    )
    .await;
    c.expect("get", t, 401, http(M::GET, "/v1/users/grace/devices"))
        .await;
    let t = "/v1/users/{user_id}/devices/{id}/trust";
    let p = "/v1/users/grace/devices/grace-1/trust";
    c.expect("post", t, 204, http(M::POST, p).bearer_auth(ADMIN_KEY))
        .await;
    c.expect(
        "post",
        t,
        400,
        http(M::POST, p)
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"trusted": 1})),
    )
    .await;
    c.expect(
        "post",
        t,
        413,
        http(M::POST, p).bearer_auth(ADMIN_KEY).json(&oversized()),
    )
    .await;
    c.expect("post", t, 403, http(M::POST, p).bearer_auth(READ_KEY))
        .await;
    c.expect(
        "post",
        t,
        404,
        http(M::POST, "/v1/users/grace/devices/none/trust").bearer_auth(ADMIN_KEY),
    )
    .await;
    c.expect("post", t, 401, http(M::POST, p)).await;
    let t = "/v1/users/{user_id}/devices/{id}";
    let p = "/v1/users/grace/devices/grace-2";
    c.expect("delete", t, 403, http(M::DELETE, p).bearer_auth(READ_KEY))
        .await;
    c.expect("delete", t, 401, http(M::DELETE, p)).await;
    c.expect(
        "delete",
        t,
        404,
        http(M::DELETE, "/v1/users/grace/devices/none").bearer_auth(ADMIN_KEY),
    )
    .await;
    c.expect("delete", t, 200, http(M::DELETE, p).bearer_auth(ADMIN_KEY))
        .await;

    // Every admin route naming a user refuses a user id that is not one.
    let user_routes: Vec<(String, String)> = c.spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/users/{user_id}"))
        .flat_map(|(path, item)| {
            let path = path.clone();
            item.as_object()
                .expect("item")
                .keys()
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    assert_eq!(user_routes.len(), 5, "{user_routes:?}");
    for (template, method) in user_routes {
        let path = sample_path(&template).replace("/alice/", "/%01bad/");
        let body = c
            .expect(
                &method,
                &template,
                400,
                http(method.to_uppercase().parse().expect("method"), &path).bearer_auth(ADMIN_KEY),
            )
            .await;
        assert_eq!(body["error"], "invalid_request");
    }

    // Admin reads.
    app.advance(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for t in [
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/stats",
        "/v1/stats/history",
        "/v1/keys",
    ] {
        c.expect("get", t, 200, http(M::GET, t).bearer_auth(READ_KEY))
            .await;
        c.expect("get", t, 401, http(M::GET, t)).await;
    }
    let t = "/v1/audit";
    let page = c
        .expect(
            "get",
            t,
            200,
            http(
                M::GET,
                "/v1/audit?user_id=alice&type=session.created&since=0&limit=1",
            )
            .bearer_auth(READ_KEY),
        )
        .await;
    drop(page);
    for query in [
        "limit=0",
        "limit=x",
        "session_id=nope",
        "since=yesterday",
        "colour=red",
    ] {
        c.expect(
            "get",
            t,
            400,
            http(M::GET, &format!("/v1/audit?{query}")).bearer_auth(READ_KEY),
        )
        .await;
    }

    // OAuth.
    let t = "/oauth/token";
    let oauth = create(&app, "heidi", "heidi-1").await;
    let form_of = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let form = |method: reqwest::Method, path: &str, body: String| {
        http(method, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let granted = c
        .expect(
            "post",
            t,
            200,
            form(
                M::POST,
                t,
                form_of(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token(&oauth, "refresh_token")),
                    ("client_id", "app"),
                ]),
            ),
        )
        .await;
    for (body, code) in [
        (form_of(&[("refresh_token", "sdr_x")]), "invalid_request"),
        (
            form_of(&[("grant_type", "password"), ("refresh_token", "x")]),
            "unsupported_grant_type",
        ),
        (
            form_of(&[("grant_type", "refresh_token"), ("refresh_token", "sdr_x")]),
            "invalid_grant",
        ),
        (
            form_of(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token(&oauth, "refresh_token")),
                ("scope", "billing:read"),
            ]),
            "invalid_scope",
        ),
    ] {
        let answer = c.expect("post", t, 400, form(M::POST, t, body)).await;
        assert_eq!(answer["error"], code);
    }
    c.expect(
        "post",
        t,
        400,
        http(M::POST, t).json(&json!({"grant_type": "refresh_token"})),
    )
    .await;
    let t = "/oauth/introspect";
    for presented in [
        token(&granted, "access_token"),
        token(&granted, "refresh_token"),
        "garbage",
    ] {
        let answer = c
            .expect(
                "post",
                t,
                200,
                form(M::POST, t, form_of(&[("token", presented)])).bearer_auth(READ_KEY),
            )
            .await;
        assert_eq!(answer["active"], presented != "garbage", "{answer}");
    }
    c.expect(
        "post",
        t,
        400,
        form(M::POST, t, String::new()).bearer_auth(READ_KEY),
    )
    .await;
    c.expect("post", t, 401, form(M::POST, t, form_of(&[("token", "x")])))
        .await;
    let by_client = c
        .expect(
            "post",
            t,
            200,
            form(
                M::POST,
                t,
                form_of(&[("token", token(&granted, "access_token"))]),
            )
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET)),
        )
        .await;
    assert_eq!(by_client["active"], true, "{by_client}");
    let by_post = c
        .expect(
            "post",
            t,
            200,
            form(
                M::POST,
                t,
                form_of(&[
                    ("token", token(&granted, "access_token")),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                ]),
            ),
        )
        .await;
    assert_eq!(by_post["active"], true, "{by_post}");
    c.expect(
        "post",
        t,
        401,
        form(M::POST, t, form_of(&[("token", "x")])).basic_auth(CLIENT_ID, Some("wrong")),
    )
    .await;
    let t = "/oauth/revoke";
    c.expect(
        "post",
        t,
        403,
        form(M::POST, t, form_of(&[("token", "x")])).bearer_auth(READ_KEY),
    )
    .await;
    c.expect(
        "post",
        t,
        401,
        form(M::POST, t, form_of(&[("token", "x")])).bearer_auth("not-a-key"),
    )
    .await;
    c.expect("post", t, 400, form(M::POST, t, String::new()))
        .await;
    c.expect(
        "post",
        t,
        200,
        form(
            M::POST,
            t,
            form_of(&[("token", token(&granted, "refresh_token"))]),
        ),
    )
    .await;
    c.expect(
        "post",
        t,
        200,
        form(M::POST, t, form_of(&[("token", "unknown")])).bearer_auth(ADMIN_KEY),
    )
    .await;

    // Public and operational routes.
    for t in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        c.expect("get", t, 200, http(M::GET, t)).await;
    }

    // The UI and this document, with their validators.
    c.expect("get", "/ui", 308, http(M::GET, "/ui")).await;
    for (t, path) in [
        ("/ui/", "/ui/"),
        ("/ui/admin", "/ui/admin"),
        ("/ui/{asset}", "/ui/sessiond-sessions.js"),
        ("/ui/{asset}", "/ui/sessiond.css"),
        ("/openapi.json", "/openapi.json"),
    ] {
        let first = send(http(M::GET, path)).await;
        assert_eq!(first.status, 200, "{path}");
        c.check("get", t, &first);
        let etag = first.headers["etag"].clone();
        c.expect(
            "get",
            t,
            304,
            http(M::GET, path).header("if-none-match", etag),
        )
        .await;
    }
    c.expect("get", "/ui/{asset}", 404, http(M::GET, "/ui/nothing.js"))
        .await;
    let served = send(http(M::GET, "/openapi.json")).await;
    assert_eq!(served.body, DOCUMENT.as_bytes());

    // GET /v1/events.
    let t = "/v1/events";
    c.expect(
        "get",
        t,
        401,
        http(M::GET, t).header("accept", "text/event-stream"),
    )
    .await;
    c.expect("get", t, 400, http(M::GET, t).bearer_auth(&alice_access))
        .await;
    for query in ["types=nothing", "since=x", "colour=red", "user_id=bob"] {
        c.expect(
            "get",
            t,
            400,
            http(M::GET, &format!("{t}?{query}"))
                .bearer_auth(&alice_access)
                .header("accept", "text/event-stream"),
        )
        .await;
    }
    events_over_sse(&app, &mut c).await;
    events_over_websocket(&app, &mut c, &alice_access).await;

    rate_limited_answers(&mut c).await;
    stalled_body_answers(&mut c).await;
    stream_refusals(&mut c).await;
    cookie_mode_answers(&mut c).await;
    dbsc_answers(&mut c).await;
    c.assert_everything_seen();
}

/// An SSE stream (admin, one user's events) that gets the event of a new session; checks the
/// answer's head and the event's JSON against the documented `x-sessiond-data` schema.
async fn events_over_sse(app: &TestApp, c: &mut Checker) {
    let t = "/v1/events";
    let response = app
        .client
        .get(url(app, "/v1/events?user_id=ivan&types=session.created"))
        .bearer_auth(ADMIN_KEY)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream opens");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let documented = c.head("get", t, status, &headers);
    let media = &documented["content"]["text/event-stream"];
    assert!(
        headers["content-type"]
            .to_str()
            .is_ok_and(|value| value.starts_with("text/event-stream")),
        "{headers:?}"
    );
    create(app, "ivan", "ivan-1").await;
    let mut response = response;
    let mut text = String::new();
    let data = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = response
                .chunk()
                .await
                .expect("chunk")
                .expect("stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = text
                .lines()
                .find(|line| line.starts_with("data:") && text.contains("\n\n"))
            {
                return line["data:".len()..].trim().to_owned();
            }
        }
    })
    .await
    .expect("an event arrives");
    let event: Value = serde_json::from_str(&data).expect("event is JSON");
    assert_eq!(event["type"], "session.created");
    if let Err(error) = validate(&c.spec, &media["x-sessiond-data"], &event, "$") {
        panic!("SSE event: {error}\n{event}");
    }
}

/// A WebSocket upgrade: `101` with the documented headers.
async fn events_over_websocket(app: &TestApp, c: &mut Checker, access: &str) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = format!("{}/v1/events", app.base.replacen("http", "ws", 1));
    let mut request = ws_url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {access}")).expect("header"),
    );
    let (_socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).expect("name"),
            HeaderValue::from_bytes(value.as_bytes()).expect("value"),
        );
    }
    c.head("get", "/v1/events", response.status().as_u16(), &headers);
}

/// A server whose failed-authentication allowance is one a minute: after one wrong key, every
/// documented `429` is provoked by sending its route a request with a wrong credential (a
/// valid one is never refused by that limit).
async fn rate_limited_answers(c: &mut Checker) {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_failed_auth_per_ip = Some("1/1m".into());
        raw.cookie_mode = Some("on".into());
        raw.dbsc = Some("on".into());
    })
    .await;
    let refused = app.get("/v1/stats", Some("not-a-key")).await;
    assert_eq!(refused.status.as_u16(), 401);
    let client = no_redirects();
    let operations: Vec<(String, String)> = c.spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("item")
                .iter()
                .filter(|(_, operation)| operation["responses"].get("429").is_some())
                .map(|(method, _)| (path.clone(), method.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(operations.len() > 20, "{operations:?}");
    for (path, method) in operations {
        let mut request = client
            .request(
                method.to_uppercase().parse().expect("method"),
                url(&app, &sample_path(&path)),
            )
            .bearer_auth("not-a-key");
        if path == "/v1/sessions/refresh" {
            request = request.json(&json!({"refresh_token": "sdr_x"}));
        }
        if path.starts_with("/v1/dbsc/") {
            request = request
                .header(
                    "sec-secure-session-id",
                    "\"8a4f2c4e-9d7c-4b8e-8a51-1f3b2c4d5e6f\"",
                )
                .header("secure-session-response", "\"a.b.c\"");
        }
        if path == "/oauth/token" {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=refresh_token&refresh_token=sdr_x");
        }
        let body = c.expect(&method, &path, 429, request).await;
        assert_eq!(body["error"], "rate_limited");
    }
}

/// A server with a short body timeout: every operation that takes a body is sent its headers
/// and the start of a body that never ends, and answers the documented `408`.
async fn stalled_body_answers(c: &mut Checker) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn_with(|raw| raw.body_timeout = Some("200ms".into())).await;
    let user = create(&app, "alice", "alice-1").await;
    let operations: Vec<(String, String, String)> = c.spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("item")
                .iter()
                .filter_map(|(method, operation)| {
                    let body = resolve(&c.spec, operation.get("requestBody")?);
                    let media = body["content"].as_object()?.keys().next()?.clone();
                    Some((path.clone(), method.clone(), media))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(operations.len() >= 8, "{operations:?}");
    for (path, method, media) in operations {
        // Admin routes take the admin key, the user's own routes an access token; a route
        // that refuses the caller before reading the body would never time out.
        let mut reply = None;
        for bearer in [ADMIN_KEY, token(&user, "access_token")] {
            let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
                .await
                .expect("connects");
            let head = format!(
                "{} {} HTTP/1.1\r\nHost: sessiond.test\r\nAuthorization: Bearer {bearer}\r\n\
                 Content-Type: {media}\r\nContent-Length: 100\r\n\r\n{{",
                method.to_uppercase(),
                sample_path(&path)
            );
            stream.write_all(head.as_bytes()).await.expect("written");
            let mut received = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
                .await
                .expect("answered and closed")
                .expect("read");
            let parsed = parse_reply(&received);
            if parsed.status == 408 {
                reply = Some(parsed);
                break;
            }
        }
        let reply = reply.unwrap_or_else(|| panic!("{method} {path}: no 408 for a stalled body"));
        let body = c.check(&method, &path, &reply);
        assert_eq!(body["error"], "request_timeout");
    }
}

/// An HTTP/1.1 answer read off a socket, as a [`Reply`].
fn parse_reply(received: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(received).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().expect("status line")[9..12]
        .parse()
        .expect("status code");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
            HeaderValue::from_str(value.trim()).expect("value"),
        );
    }
    Reply {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// Stream refusals: a WebSocket from a foreign origin (`403`), and streams beyond the caps per
/// user (`429`) and in total (`503`), all with the documented bodies.
async fn stream_refusals(c: &mut Checker) {
    let app = TestApp::spawn_with(|raw| {
        raw.max_streams_per_user = Some("1".into());
        raw.max_streams = Some("2".into());
        raw.cors_origins = Some("https://app.example.com".into());
    })
    .await;
    let t = "/v1/events";
    let user = create(&app, "alice", "alice-1").await;
    let access = token(&user, "access_token");
    c.expect(
        "get",
        t,
        403,
        app.client
            .get(url(&app, t))
            .bearer_auth(access)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", "https://evil.example"),
    )
    .await;
    let sse = |bearer: &str| {
        app.client
            .get(url(&app, t))
            .bearer_auth(bearer)
            .header("accept", "text/event-stream")
    };
    let open = sse(access).send().await.expect("a stream");
    assert_eq!(open.status(), 200);
    let body = c.expect("get", t, 429, sse(access)).await;
    assert_eq!(body["error"], "too_many_streams");
    let admin = sse(ADMIN_KEY).send().await.expect("a stream");
    assert_eq!(admin.status(), 200);
    let body = c.expect("get", t, 503, sse(ADMIN_KEY)).await;
    assert_eq!(body["error"], "too_many_streams");
    drop((open, admin));
}

/// Cookie mode: the refresh cookie, its CSRF header, and the cookie-only pair.
async fn cookie_mode_answers(c: &mut Checker) {
    let app = TestApp::spawn_with(|raw| raw.cookie_mode = Some("on".into())).await;
    let client = no_redirects();
    let created = send(
        client
            .post(url(&app, "/v1/sessions"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "judy"})),
    )
    .await;
    let pair = c.check("post", "/v1/sessions", &created);
    assert!(created.headers.contains_key("set-cookie"));
    let cookie = format!(
        "__Secure-sessiond-refresh={}",
        token(&pair, "refresh_token")
    );
    let t = "/v1/sessions/refresh";
    c.expect(
        "post",
        t,
        403,
        client.post(url(&app, t)).header("cookie", &cookie),
    )
    .await;
    c.expect("post", t, 400, client.post(url(&app, t))).await;
    let body = c
        .expect(
            "post",
            t,
            200,
            client
                .post(url(&app, t))
                .header("cookie", &cookie)
                .header("x-sessiond-csrf", "1"),
        )
        .await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    let spent = send(
        client
            .post(url(&app, t))
            .header("cookie", "__Secure-sessiond-refresh=sdr_unknown")
            .header("x-sessiond-csrf", "1"),
    )
    .await;
    c.check("post", t, &spent);
    assert_eq!(spent.status, 401);
    assert!(spent.headers.contains_key("set-cookie"));
    let logout = send(
        client
            .post(url(&app, "/v1/logout"))
            .bearer_auth(token(&body, "access_token")),
    )
    .await;
    c.check("post", "/v1/logout", &logout);
    assert!(logout.headers.contains_key("set-cookie"));
}

/// Device Bound Session Credentials: the registration offer, a registration, a renewal's
/// challenge and its answer, the end of a revoked session, a refused proof, and both routes
/// with DBSC off.
async fn dbsc_answers(c: &mut Checker) {
    use crate::dbsc::{Es256Key, challenge, offer};
    let off = TestApp::spawn().await;
    let client = no_redirects();
    for t in ["/v1/dbsc/registration", "/v1/dbsc/refresh"] {
        c.expect("post", t, 404, client.post(url(&off, t))).await;
    }
    let app = TestApp::spawn_with(|raw| {
        raw.cookie_mode = Some("on".into());
        raw.dbsc = Some("on".into());
    })
    .await;
    let created = send(
        client
            .post(url(&app, "/v1/sessions"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "kim"})),
    )
    .await;
    let pair = c.check("post", "/v1/sessions", &created);
    let offer = offer(&created.headers).expect("a registration offer");
    let key = Es256Key::generate();
    let t = "/v1/dbsc/registration";
    c.expect("post", t, 400, client.post(url(&app, t))).await;
    let proof = |text: String| format!("\"{text}\"");
    let bound = c
        .expect(
            "post",
            t,
            200,
            client.post(url(&app, t)).header(
                "secure-session-response",
                proof(key.proof(&offer.challenge, true)),
            ),
        )
        .await;
    let id = bound["session_identifier"].as_str().expect("id").to_owned();
    let t = "/v1/dbsc/refresh";
    let session = format!("\"{id}\"");
    c.expect("post", t, 400, client.post(url(&app, t))).await;
    let asked = send(
        client
            .post(url(&app, t))
            .header("sec-secure-session-id", &session),
    )
    .await;
    c.check("post", t, &asked);
    assert_eq!(asked.status, 403);
    let (current, _) = challenge(&asked.headers).expect("a challenge");
    c.expect(
        "post",
        t,
        200,
        client
            .post(url(&app, t))
            .header("sec-secure-session-id", &session)
            .header("secure-session-response", proof(key.proof(&current, false))),
    )
    .await;
    let forged = Es256Key::generate().proof(&current, false);
    c.expect(
        "post",
        t,
        400,
        client
            .post(url(&app, t))
            .header("sec-secure-session-id", &session)
            .header("secure-session-response", proof(forged)),
    )
    .await;
    // The refresh token alone no longer refreshes.
    let refused = send(
        client
            .post(url(&app, "/v1/sessions/refresh"))
            .header(
                "cookie",
                format!(
                    "__Secure-sessiond-refresh={}",
                    token(&pair, "refresh_token")
                ),
            )
            .header("x-sessiond-csrf", "1"),
    )
    .await;
    assert_eq!(
        c.check("post", "/v1/sessions/refresh", &refused)["error"],
        "dbsc_required"
    );
    app.delete(&format!("/v1/sessions/{id}"), Some(ADMIN_KEY))
        .await;
    let ended = c
        .expect(
            "post",
            t,
            200,
            client
                .post(url(&app, t))
                .header("sec-secure-session-id", &session),
        )
        .await;
    assert_eq!(ended, json!({"continue": false}));
}

/// The document's own shape: OpenAPI 3.1, every operation with an id, every `$ref` resolving,
/// every request body of JSON strict about unknown fields.
#[test]
fn the_document_is_openapi_3_1_with_strict_request_bodies_and_resolvable_references() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    fn walk(spec: &Value, value: &Value, refs: &mut BTreeMap<String, usize>) {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                    let _ = resolve(spec, &json!({ "$ref": reference }));
                    *refs.entry(reference.to_owned()).or_default() += 1;
                }
                map.values().for_each(|value| walk(spec, value, refs));
            }
            Value::Array(values) => values.iter().for_each(|value| walk(spec, value, refs)),
            _ => {}
        }
    }
    let mut refs = BTreeMap::new();
    walk(&spec, &spec, &mut refs);
    for name in spec["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        assert!(
            refs.contains_key(&format!("#/components/schemas/{name}")),
            "schema {name} is never used"
        );
    }
    let mut ids = BTreeSet::new();
    for (path, method) in documented(&spec) {
        let operation = &spec["paths"][&path][&method];
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        let Some(content) = operation.pointer("/requestBody/content/application~1json/schema")
        else {
            continue;
        };
        let schema = resolve(&spec, content);
        let branches = schema["anyOf"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![schema.clone()]);
        for branch in branches {
            let branch = resolve(&spec, &branch);
            assert_eq!(
                branch["additionalProperties"], false,
                "{method} {path}: request bodies refuse unknown fields"
            );
        }
    }
}

crate::on_every_store!(
    router_has_every_documented_operation_and_no_other_method,
    documented_answers_match_what_the_server_answers,
);
