//! Issue 5, point 3: `/metrics` parses as the Prometheus text format and its counters move as
//! operations happen; `/v1/stats` is for admins and adds up; JSON logs carry the request id on
//! every line of a request and never a secret; `/metrics` can move to a listener of its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{ADMIN_KEY, TestApp, text};

crate::on_every_store!(
    metrics_parse_as_prometheus_text_and_counters_move_as_operations_happen,
    stats_are_for_admins_and_add_up,
    a_successor_is_rotated_without_a_storage_read_and_its_replay_reads_storage,
);

// ---------------------------------------------------------------------------------------------
// A strict parser of the Prometheus text exposition format (0.0.4), as much of it as a scraper
// relies on: HELP and TYPE before a family's samples, each family's samples together, valid
// metric and label names, escaped label values, no duplicate series, and for histograms
// cumulative buckets ending in `+Inf` equal to `_count`, with a `_sum`.

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn parse_value(text: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("{other:?} is not a sample value")),
    }
}

/// `name{a="b",c="d"} value` into its parts.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value on {line:?}"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "bad metric name on {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        let consumed;
        loop {
            if let Some(&(index, '}')) = chars.peek() {
                consumed = index + 1;
                break;
            }
            let start = chars.peek().map(|&(index, _)| index).expect("label");
            let mut equals = None;
            for (index, c) in chars.by_ref() {
                if c == '=' {
                    equals = Some(index);
                    break;
                }
            }
            let equals = equals.unwrap_or_else(|| panic!("label without `=` on {line:?}"));
            let label = &after_brace[start..equals];
            assert!(is_label_name(label), "bad label name {label:?} on {line:?}");
            assert_eq!(
                chars.next().map(|(_, c)| c),
                Some('"'),
                "unquoted label value on {line:?}"
            );
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} on {line:?}"),
                    },
                    Some((_, '"')) => break,
                    Some((_, '\n')) | None => panic!("unterminated label value on {line:?}"),
                    Some((_, c)) => value.push(c),
                }
            }
            assert!(
                labels.insert(label.to_owned(), value).is_none(),
                "label {label} twice on {line:?}"
            );
            match chars.next() {
                Some((_, ',')) => {}
                Some((index, '}')) => {
                    consumed = index + 1;
                    break;
                }
                other => panic!("expected `,` or `}}`, got {other:?} on {line:?}"),
            }
        }
        rest = &after_brace[consumed..];
    }
    let rest = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value on {line:?}"));
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().expect("value"));
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("bad timestamp on {line:?}"));
    }
    assert!(fields.next().is_none(), "trailing text on {line:?}");
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|kind| kind == "histogram")
        {
            return base;
        }
    }
    panic!("sample {name} belongs to no family with a TYPE")
}

fn parse_exposition(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut exposition = Exposition::default();
    let mut helps = HashSet::new();
    let mut finished_families = HashSet::new();
    let mut current_family: Option<String> = None;
    let mut series = HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = parts.next().expect("a name after HELP/TYPE");
            assert!(is_metric_name(name), "bad name in {line:?}");
            assert!(
                !finished_families.contains(name) && current_family.as_deref() != Some(name),
                "{keyword} of {name} after its samples"
            );
            if keyword == "HELP" {
                assert!(helps.insert(name.to_owned()), "two HELP lines for {name}");
                assert!(
                    parts.next().is_some_and(|help| !help.is_empty()),
                    "empty HELP for {name}"
                );
            } else {
                let kind = parts.next().expect("a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "unknown type {kind:?} for {name}"
                );
                assert!(
                    exposition
                        .types
                        .insert(name.to_owned(), kind.to_owned())
                        .is_none(),
                    "two TYPE lines for {name}"
                );
            }
            continue;
        }
        assert!(!line.starts_with('#'), "malformed comment {line:?}");
        let sample = parse_sample(line);
        let family = family_of(&sample.name, &exposition.types).to_owned();
        if current_family.as_deref() != Some(family.as_str()) {
            assert!(
                !finished_families.contains(&family),
                "samples of {family} are not together"
            );
            if let Some(previous) = current_family.replace(family.clone()) {
                finished_families.insert(previous);
            }
        }
        if exposition.types[&family] == "counter" {
            assert!(
                family.ends_with("_total"),
                "counter {family} ends in _total"
            );
            assert!(sample.value >= 0.0, "counter {line:?} is negative");
        }
        let key = format!("{}{:?}", sample.name, sample.labels);
        assert!(series.insert(key), "duplicate series {line:?}");
        exposition.samples.push(sample);
    }
    check_histograms(&exposition);
    exposition
}

fn check_histograms(exposition: &Exposition) {
    for (family, kind) in &exposition.types {
        if kind != "histogram" {
            continue;
        }
        // Series of the family, keyed by their labels other than `le`.
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut sums = HashMap::new();
        let mut counts = HashMap::new();
        for sample in &exposition.samples {
            let mut labels = sample.labels.clone();
            let le = labels.remove("le");
            let key = format!("{labels:?}");
            if sample.name == format!("{family}_bucket") {
                let le = le.unwrap_or_else(|| panic!("{family}_bucket without le"));
                buckets
                    .entry(key)
                    .or_default()
                    .push((parse_value(&le), sample.value));
            } else if sample.name == format!("{family}_sum") {
                sums.insert(key, sample.value);
            } else if sample.name == format!("{family}_count") {
                counts.insert(key, sample.value);
            }
        }
        assert!(!buckets.is_empty(), "histogram {family} has no buckets");
        for (key, series) in &buckets {
            let bounds: Vec<f64> = series.iter().map(|(le, _)| *le).collect();
            assert!(
                bounds.windows(2).all(|pair| pair[0] < pair[1]),
                "{family}{key}: bucket bounds increase"
            );
            assert_eq!(
                bounds.last().copied(),
                Some(f64::INFINITY),
                "{family}{key}: the last bucket is +Inf"
            );
            assert!(
                series.windows(2).all(|pair| pair[0].1 <= pair[1].1),
                "{family}{key}: buckets are cumulative"
            );
            let count = counts
                .get(key)
                .unwrap_or_else(|| panic!("{family}{key} has no _count"));
            assert_eq!(
                series.last().map(|(_, v)| *v),
                Some(*count),
                "{family}{key}: +Inf = _count"
            );
            let sum = sums
                .get(key)
                .unwrap_or_else(|| panic!("{family}{key} has no _sum"));
            assert!(*sum >= 0.0, "{family}{key}: _sum is not negative");
        }
    }
}

impl Exposition {
    /// The value of the one sample named `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|sample| sample.name == name && sample.labels == wanted)
            .unwrap_or_else(|| panic!("no sample {name}{wanted:?}"))
            .value
    }
}

async fn scrape(app: &TestApp) -> Exposition {
    let response = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_exposition(&response.text().await.expect("body"))
}

/// How much each listed sample grew between two scrapes.
fn grew(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

/// The refresh of a successor this instance issued reads nothing from storage before its
/// rotation; a second presentation of that token (a replay) does, and gets the same pair.
async fn a_successor_is_rotated_without_a_storage_read_and_its_replay_reads_storage() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let first = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let lookups = [("operation", "find_refresh_token")];
    let rotations = [("operation", "rotate_refresh_token")];
    let count = "sessiond_storage_duration_seconds_count";

    let before = scrape(&app).await;
    let second = app.refresh(text(&first.body, "refresh_token")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let after = scrape(&app).await;
    assert_eq!(grew(&before, &after, count, &lookups), 0.0, "no lookup");
    assert_eq!(grew(&before, &after, count, &rotations), 1.0);

    let replay = app.refresh(text(&first.body, "refresh_token")).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["refresh_token"], second.body["refresh_token"]);
    let replayed = scrape(&app).await;
    assert_eq!(grew(&after, &replayed, count, &lookups), 1.0, "a lookup");
    assert_eq!(grew(&after, &replayed, count, &rotations), 0.0);
}

async fn metrics_parse_as_prometheus_text_and_counters_move_as_operations_happen() {
    // Unused successors replayed inside the grace window only, so that the late replay below
    // is reuse.
    let app = TestApp::spawn_with(|raw| raw.unused_successor_replay = Some("0".into())).await;
    let before = scrape(&app).await;

    let first = app.create_session("alice").await;
    let second = app.create_session("bob").await;
    let spent = text(&first, "refresh_token");
    let rotated = app.refresh(spent).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let replayed = app.refresh(spent).await;
    assert_eq!(replayed.status, StatusCode::OK, "inside the grace window");
    app.advance(Duration::from_secs(11));
    let reused = app.refresh(spent).await;
    assert_eq!(reused.body["reason"], "reuse_detected");
    let second_id = text(&second["session"], "id");
    let revoked = app
        .delete(&format!("/v1/sessions/{second_id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let probe = app.get("/no/such/route/7f3a9c", None).await;
    assert_eq!(probe.status, StatusCode::NOT_FOUND);

    let after = scrape(&app).await;
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let counted = |name: &str, labels: &[(&str, &str)]| grew(&before, &after, name, labels);
    assert_eq!(counted("sessiond_sessions_created_total", &[]), 2.0);
    for (outcome, expected) in [
        ("rotated", 1.0),
        ("replayed", 1.0),
        ("reuse_detected", 1.0),
        ("unknown", 0.0),
        ("expired", 0.0),
        ("revoked", 0.0),
        ("error", 0.0),
        ("anomaly", 0.0),
    ] {
        assert_eq!(
            counted("sessiond_refreshes_total", &[("outcome", outcome)]),
            expected,
            "refreshes {outcome}"
        );
    }
    assert_eq!(counted("sessiond_reuse_detections_total", &[]), 1.0);
    assert_eq!(
        counted(
            "sessiond_revocations_total",
            &[("reason", "reuse_detected")]
        ),
        1.0
    );
    assert_eq!(
        counted(
            "sessiond_revocations_total",
            &[("reason", "revoked_by_admin")]
        ),
        1.0
    );
    assert_eq!(
        counted("sessiond_revocations_total", &[("reason", "logout")]),
        0.0
    );
    let refresh_route = [("route", "/v1/sessions/refresh")];
    assert_eq!(
        counted(
            "sessiond_http_request_duration_seconds_count",
            &refresh_route
        ),
        3.0
    );
    assert_eq!(
        counted(
            "sessiond_http_requests_total",
            &[("route", "/v1/sessions/refresh"), ("status", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        counted(
            "sessiond_http_requests_total",
            &[("route", "/v1/sessions/{id}"), ("status", "2xx")]
        ),
        1.0,
        "routes are labelled by template, not by path"
    );
    assert_eq!(
        counted(
            "sessiond_http_requests_total",
            &[("route", "unmatched"), ("status", "4xx")]
        ),
        1.0
    );
    assert!(
        !text.contains("7f3a9c") && !text.contains(second_id),
        "no raw path is a label"
    );
    assert_eq!(
        counted(
            "sessiond_http_errors_total",
            &[("error", "invalid_refresh_token")]
        ),
        1.0
    );
    assert_eq!(
        counted("sessiond_http_errors_total", &[("error", "not_found")]),
        1.0
    );
    assert_eq!(counted("sessiond_refresh_duration_seconds_count", &[]), 3.0);
    assert!(counted("sessiond_refresh_duration_seconds_sum", &[]) > 0.0);
    assert!(
        counted(
            "sessiond_storage_duration_seconds_count",
            &[("operation", "rotate_refresh_token")]
        ) >= 1.0
    );
    assert!(
        counted(
            "sessiond_storage_duration_seconds_count",
            &[("operation", "find_refresh_token")]
        ) >= 3.0
    );
    assert_eq!(
        counted(
            "sessiond_storage_duration_seconds_count",
            &[("operation", "create_session")]
        ),
        2.0
    );
    assert!(after.value("sessiond_revoked_set_size", &[]) >= 2.0);
    assert_eq!(
        after.value("sessiond_rate_limited_requests_total", &[]),
        0.0
    );
    assert_eq!(after.value("sessiond_open_event_streams", &[]), 0.0);
    for gauge in ["sessiond_active_sessions", "sessiond_active_devices"] {
        assert_eq!(after.types[gauge], "gauge");
    }
}

async fn stats_are_for_admins_and_add_up() {
    let app = TestApp::spawn().await;
    let device =
        |user: &str, id: &str| json!({"user_id": user, "device": {"id": id, "name": "Laptop"}});
    let alice_one = app.create_session_with(device("alice", "laptop-1")).await;
    app.create_session_with(device("alice", "laptop-1")).await;
    app.create_session_with(device("alice", "phone-1")).await;
    let bob = app.create_session_with(device("bob", "laptop-1")).await;

    let unauthenticated = app.get("/v1/stats", None).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let as_user = app.get("/v1/stats", Some(text(&bob, "access_token"))).await;
    assert_eq!(
        as_user.status,
        StatusCode::UNAUTHORIZED,
        "users are not admins"
    );

    app.advance(Duration::from_secs(60));
    let spent = text(&alice_one, "refresh_token");
    assert_eq!(app.refresh(spent).await.status, StatusCode::OK);
    assert_eq!(app.refresh(spent).await.status, StatusCode::OK);
    assert_eq!(
        app.refresh("sdr_not-a-token").await.status,
        StatusCode::UNAUTHORIZED
    );

    let stats = app.get("/v1/stats", Some(ADMIN_KEY)).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);
    let body = &stats.body;
    assert_eq!(body["active_sessions"], 4);
    assert_eq!(body["active_devices"], 3, "(user, device) pairs");
    // One session active 60 s after creation, three at 0 s.
    let average = body["average_session_duration_seconds"]
        .as_f64()
        .expect("a number");
    assert!((average - 15.0).abs() < 1e-9, "{average}");
    assert_eq!(body["refreshes"], 3);
    assert_eq!(body["refresh_failures"], 1);
    assert_eq!(body["grace_window_hits"], 1);
    assert_eq!(body["refreshes_by_outcome"]["rotated"], 1);
    assert_eq!(body["refreshes_by_outcome"]["replayed"], 1);
    assert_eq!(body["refreshes_by_outcome"]["unknown"], 1);
    let by_outcome: u64 = body["refreshes_by_outcome"]
        .as_object()
        .expect("an object")
        .values()
        .map(|count| count.as_u64().expect("a count"))
        .sum();
    assert_eq!(Value::from(by_outcome), body["refreshes"]);
    assert!(body["average_refresh_ms"].as_f64().expect("a number") > 0.0);
    assert_eq!(body["errors"]["invalid_refresh_token"], 1);
    assert_eq!(body["errors"]["unauthenticated"], 2);
    assert_eq!(body["revoked_set_size"], 0);

    let bob_id = text(&bob["session"], "id");
    app.delete(&format!("/v1/sessions/{bob_id}"), Some(ADMIN_KEY))
        .await;
    let stats = app.get("/v1/stats", Some(ADMIN_KEY)).await;
    assert_eq!(stats.body["active_sessions"], 3);
    assert_eq!(stats.body["active_devices"], 2);
    assert_eq!(stats.body["revoked_set_size"], 1);
}

// ---------------------------------------------------------------------------------------------
// The binary: JSON logs and the separate metrics listener.

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A `sessiond serve` child with its stderr collected; killed when dropped.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &TempDir, port: u16, settings: &[(&str, &str)]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SESSIOND_") {
            command.env_remove(name);
        }
    }
    command
        .env(
            "SESSIOND_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("sessiond.db").display()),
        )
        .env("SESSIOND_ADMIN_KEYS", ADMIN_KEY)
        .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
        .env("SESSIOND_ISSUER", "http://sessiond.test")
        .env("RUST_LOG", "warn");
    for (name, value) in settings {
        command.env(name, value);
    }
    let mut child = command
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sessiond starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let pipe = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock()
                .expect("stderr lock")
                .push_str(&format!("{line}\n"));
        }
    });
    let (ready, listening) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("sessiond listening on") {
                let _ = ready.send(());
            }
        }
    });
    let started = Running { child, stderr };
    if listening.recv_timeout(Duration::from_secs(20)).is_err() {
        panic!(
            "sessiond did not start; stderr:\n{}",
            started.stderr.lock().expect("stderr lock")
        );
    }
    started
}

#[tokio::test]
async fn json_logs_carry_the_request_id_on_every_request_line_and_no_secret() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut server = serve(
        &dir,
        port,
        &[
            ("SESSIOND_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug,sqlx=warn,hyper=warn,hyper_util=warn"),
            // A spent token presented again is then reuse at once, which logs a warning from
            // deep inside the request (the service's `refresh` span).
            ("SESSIOND_REUSE_GRACE", "0"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"user_id": "alice"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let first_refresh = text(&created, "refresh_token").to_owned();
    let refreshed: Value = client
        .post(format!("{base}/v1/sessions/refresh"))
        .json(&json!({"refresh_token": first_refresh}))
        .send()
        .await
        .expect("refresh")
        .json()
        .await
        .expect("json");
    let current = client
        .get(format!("{base}/v1/sessions/current"))
        .bearer_auth(text(&refreshed, "access_token"))
        .send()
        .await
        .expect("current");
    assert_eq!(current.status(), StatusCode::OK);
    let refused = client
        .get(format!("{base}/v1/sessions/current"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .expect("current");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let stats = client
        .get(format!("{base}/v1/stats"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("stats");
    assert_eq!(stats.status(), StatusCode::OK);
    let reused = client
        .post(format!("{base}/v1/sessions/refresh"))
        .json(&json!({"refresh_token": first_refresh}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);

    // Let the log lines of the last request reach the pipe, then stop the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.child.kill();
    let _ = server.child.wait();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stderr = server.stderr.lock().expect("stderr lock").clone();

    for secret in [
        ADMIN_KEY,
        first_refresh.as_str(),
        text(&created, "access_token"),
        text(&refreshed, "refresh_token"),
        text(&refreshed, "access_token"),
    ] {
        assert!(
            !stderr.contains(secret),
            "a secret reached the log:\n{stderr}"
        );
    }
    let mut request_ids = HashSet::new();
    let mut answered = 0;
    let mut nested_warnings = 0;
    for line in stderr.lines().filter(|line| !line.starts_with("WARNING:")) {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}"));
        let spans = entry["spans"].as_array().cloned().unwrap_or_default();
        let request = spans.iter().find(|span| span["name"] == "request");
        let is_answer = entry["fields"]["message"] == "answered";
        if is_answer {
            answered += 1;
            assert!(entry["fields"]["route"].is_string(), "{line}");
            assert!(entry["fields"]["status"].is_u64(), "{line}");
            assert!(entry["fields"]["latency_us"].is_u64(), "{line}");
        }
        if entry["level"] == "WARN" && spans.len() > 1 {
            nested_warnings += 1;
        }
        if is_answer || request.is_some() {
            let id = request
                .and_then(|span| span["request_id"].as_str())
                .unwrap_or_else(|| panic!("a request's line without request_id: {line}"));
            assert_eq!(id.len(), 32, "{line}");
            request_ids.insert(id.to_owned());
        }
    }
    assert_eq!(answered, 6, "one access-log line per request:\n{stderr}");
    assert_eq!(
        request_ids.len(),
        6,
        "each request has its own id:\n{stderr}"
    );
    assert!(
        nested_warnings >= 1,
        "the reuse warning, nested in the service's span, is there:\n{stderr}"
    );
}

#[tokio::test]
async fn metrics_move_to_their_own_listener_when_one_is_configured() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let metrics_port = free_port();
    let _server = serve(
        &dir,
        port,
        &[(
            "SESSIOND_METRICS_LISTEN",
            &format!("127.0.0.1:{metrics_port}"),
        )],
    );
    let client = reqwest::Client::new();
    let on_api = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("api listener answers");
    assert_eq!(on_api.status(), StatusCode::NOT_FOUND);
    let healthy = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("api listener answers");
    assert_eq!(healthy.status(), StatusCode::OK);
    let scraped = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics listener answers");
    assert_eq!(scraped.status(), StatusCode::OK);
    let exposition = parse_exposition(&scraped.text().await.expect("body"));
    assert_eq!(
        exposition.value(
            "sessiond_http_requests_total",
            &[("route", "unmatched"), ("status", "4xx")]
        ),
        1.0,
        "the refused /metrics on the API listener was counted"
    );
    let elsewhere = client
        .get(format!("http://127.0.0.1:{metrics_port}/v1/stats"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("metrics listener answers");
    assert_eq!(
        elsewhere.status(),
        StatusCode::NOT_FOUND,
        "only /metrics there"
    );
}
