//! `GET /v1/events`: live events over SSE and WebSocket, resuming from a cursor, the end of a
//! stream whose session ends, admin streams and filters, and events from another process.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{ADMIN_KEY, Backend, TestApp, text};

/// How long an event may take to reach a stream in these tests: generous, because the
/// PostgreSQL half shares its server with the rest of the suite (a long transaction anywhere
/// on it delays every stream; see the events migration).
const DELIVERY: Duration = Duration::from_secs(10);

/// The session lifecycle without `device.new`, for tests about something else.
const TYPES: &str = "?types=session.created,session.refreshed,session.revoked";

/// A Server-Sent Events stream read message by message.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

/// One SSE message: its `id` (the cursor) and its JSON `data`.
#[derive(Debug)]
struct SseMessage {
    id: Option<String>,
    data: Value,
}

impl SseStream {
    async fn open(app: &TestApp, bearer: &str, query: &str, last_event_id: Option<&str>) -> Self {
        if last_event_id.is_none() && !query.contains("since=") {
            // A stream without a cursor passes over events stamped before it opened; the
            // test clock stands still, so move it past what the test did before.
            app.advance(Duration::from_millis(1));
        }
        let mut request = app
            .client
            .get(format!("{}/v1/events{query}", app.base))
            .bearer_auth(bearer)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream opens");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an SSE stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next message with data (heartbeat comments are skipped), or `None` at the end.
    async fn next(&mut self) -> Option<SseMessage> {
        tokio::time::timeout(DELIVERY, self.next_inner())
            .await
            .expect("an SSE message within the delivery bound")
    }

    async fn next_inner(&mut self) -> Option<SseMessage> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(value.trim()).expect("data is JSON"));
                    }
                }
                if let Some(data) = data {
                    return Some(SseMessage { id, data });
                }
            }
            let chunk = self.response.chunk().await.expect("stream reads")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
        }
    }

    /// The next message, which must be an event of type `kind`.
    async fn expect(&mut self, kind: &str) -> SseMessage {
        let message = self.next().await.expect("stream still open");
        assert_eq!(message.data["type"], kind, "{}", message.data);
        message
    }
}

async fn a_users_stream_carries_their_events_as_they_happen_and_no_one_elses() {
    let app = TestApp::spawn().await;
    let phone = app.create_session("alice").await;
    let mut stream = SseStream::open(&app, text(&phone, "access_token"), "", None).await;

    let laptop = app.create_session("alice").await;
    let laptop_id = text(&laptop["session"], "id");
    app.create_session("bob").await;
    let created = stream.expect("session.created").await.data;
    assert_eq!(created["session_id"], laptop_id);
    assert_eq!(created["user_id"], "alice");
    assert!(created["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    // The laptop's device is new to alice.
    let device = stream.expect("device.new").await.data;
    assert_eq!(device["session_id"], laptop_id);
    assert_eq!(device["device_id"], laptop["session"]["device"]["id"]);
    assert_eq!(device["browser"], "Firefox");

    let refreshed = app.refresh(text(&laptop, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(
        stream.expect("session.refreshed").await.data["session_id"],
        laptop_id
    );

    let started = Instant::now();
    let answer = app
        .delete(
            &format!("/v1/sessions/{laptop_id}"),
            Some(text(&phone, "access_token")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let revoked = stream.expect("session.revoked").await;
    let latency = started.elapsed();
    assert_eq!(revoked.data["session_id"], laptop_id);
    assert_eq!(revoked.data["reason"], "revoked_by_user");
    assert!(revoked.id.is_some(), "every event carries its cursor as id");
    assert_eq!(revoked.id.as_deref(), revoked.data["cursor"].as_str());
    if app.backend == Backend::Sqlite {
        assert!(latency < Duration::from_secs(1), "took {latency:?}");
    }
}

async fn a_stream_resumes_after_its_last_event_id_without_loss_or_repeats() {
    let app = TestApp::spawn().await;
    let watcher = app.create_session("alice").await;
    let token = text(&watcher, "access_token").to_owned();
    let mut stream = SseStream::open(&app, &token, TYPES, None).await;
    let first = app.create_session("alice").await;
    let seen = stream.expect("session.created").await.id.expect("cursor");
    drop(stream);

    // Missed while disconnected.
    let second = app.create_session("alice").await;
    let refreshed = app.refresh(text(&first, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK);

    let mut resumed = SseStream::open(&app, &token, TYPES, Some(&seen)).await;
    let missed = resumed.expect("session.created").await.data;
    assert_eq!(missed["session_id"], text(&second["session"], "id"));
    let missed = resumed.expect("session.refreshed").await.data;
    assert_eq!(missed["session_id"], text(&first["session"], "id"));
    // And then live, with nothing repeated.
    app.post(
        "/v1/logout",
        Some(text(&refreshed.body, "access_token")),
        json!({}),
    )
    .await;
    let live = resumed.expect("session.revoked").await.data;
    assert_eq!(live["session_id"], text(&first["session"], "id"));

    // `since` works the same way.
    let mut again = SseStream::open(&app, &token, &format!("{TYPES}&since={seen}"), None).await;
    again.expect("session.created").await;
    again.expect("session.refreshed").await;
    again.expect("session.revoked").await;
}

async fn a_stream_whose_own_session_is_revoked_hears_it_and_is_closed() {
    let app = TestApp::spawn().await;
    let session = app.create_session("alice").await;
    let token = text(&session, "access_token");
    let mut stream = SseStream::open(&app, token, "", None).await;
    app.post(
        "/v1/users/alice/sessions/revoke-all",
        Some(ADMIN_KEY),
        json!({}),
    )
    .await;
    let revoked = stream.expect("session.revoked").await.data;
    assert_eq!(revoked["session_id"], text(&session["session"], "id"));
    let closed = stream.expect("stream.closed").await.data;
    assert_eq!(closed["reason"], "session_ended");
    assert!(
        stream.next().await.is_none(),
        "the server ends the response"
    );

    // The token cannot open a new stream either.
    let again = app
        .raw(
            app.client
                .get(format!("{}/v1/events", app.base))
                .bearer_auth(token)
                .header("accept", "text/event-stream"),
        )
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}

async fn reuse_detection_is_streamed_with_the_revocation_it_causes() {
    let app = TestApp::spawn_with(|raw| raw.reuse_grace = Some("0".into())).await;
    let victim = app.create_session("alice").await;
    let mut stream = SseStream::open(&app, ADMIN_KEY, "?user_id=alice", None).await;
    let stolen = text(&victim, "refresh_token");
    assert_eq!(app.refresh(stolen).await.status, StatusCode::OK);
    stream.expect("session.refreshed").await;
    let replay = app.refresh(stolen).await;
    assert_eq!(replay.body["reason"], "reuse_detected");
    let reuse = stream.expect("security.reuse_detected").await.data;
    assert_eq!(reuse["session_id"], text(&victim["session"], "id"));
    let revoked = stream.expect("session.revoked").await.data;
    assert_eq!(revoked["reason"], "reuse_detected");
}

async fn an_admin_stream_sees_every_user_and_filters_by_user_and_type() {
    let app = TestApp::spawn().await;
    let mut everything = SseStream::open(&app, ADMIN_KEY, "", None).await;
    let mut revocations = SseStream::open(
        &app,
        ADMIN_KEY,
        "?types=session.revoked,session.expired",
        None,
    )
    .await;
    let mut bobs = SseStream::open(&app, ADMIN_KEY, "?user_id=bob", None).await;

    let alice = app.create_session("alice").await;
    let bob = app.create_session("bob").await;
    for user in ["alice", "bob"] {
        for kind in ["session.created", "device.new"] {
            assert_eq!(everything.expect(kind).await.data["user_id"], user);
        }
    }
    assert_eq!(bobs.expect("session.created").await.data["user_id"], "bob");
    assert_eq!(bobs.expect("device.new").await.data["user_id"], "bob");

    app.delete(
        &format!("/v1/sessions/{}", text(&alice["session"], "id")),
        Some(ADMIN_KEY),
    )
    .await;
    app.delete(
        &format!("/v1/sessions/{}", text(&bob["session"], "id")),
        Some(ADMIN_KEY),
    )
    .await;
    let first = revocations.expect("session.revoked").await.data;
    assert_eq!(first["user_id"], "alice");
    assert_eq!(first["reason"], "revoked_by_admin");
    assert_eq!(
        revocations.expect("session.revoked").await.data["user_id"],
        "bob"
    );
    assert_eq!(bobs.expect("session.revoked").await.data["user_id"], "bob");
    assert_eq!(
        everything.expect("session.revoked").await.data["user_id"],
        "alice"
    );
}

async fn expired_sessions_are_announced() {
    let app = TestApp::spawn_with(|raw| raw.idle_timeout = Some("1h".into())).await;
    let session = app.create_session("alice").await;
    let mut stream = SseStream::open(&app, ADMIN_KEY, "?types=session.expired", None).await;
    app.advance(Duration::from_secs(3601));
    let expired = stream.expect("session.expired").await.data;
    assert_eq!(expired["session_id"], text(&session["session"], "id"));
    assert_eq!(expired["timeout"], "idle");
    assert_eq!(app.audit_count("session.expired", None).await, 1);
    // Announced once, however often the announcer runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.audit_count("session.expired", None).await, 1);
}

async fn events_written_by_another_process_reach_the_stream() {
    let app = TestApp::spawn().await;
    let session = app.create_session("alice").await;
    let mut stream = SseStream::open(&app, ADMIN_KEY, "", None).await;
    // A second process on the same database (another instance, or the CLI).
    let other = sessiond_server::AppState::build(
        &app.config,
        app.clock.clone(),
        sessiond_server::database::OpenMode::MustExist,
    )
    .await
    .expect("second instance");
    let id = sessiond_core::SessionId::parse(text(&session["session"], "id"), "id").expect("uuid");
    let started = Instant::now();
    other
        .service
        .revoke_session(sessiond_core::service::Actor::Admin, id)
        .await
        .expect("revoked");
    let revoked = stream.expect("session.revoked").await.data;
    assert_eq!(revoked["session_id"], id.to_string());
    // One poll of the tailer at most (1 s on SQLite, 100 ms on PostgreSQL, whose revocation
    // feed wakes it even sooner), plus scheduling.
    let bound = match app.backend {
        Backend::Sqlite => Duration::from_secs(2),
        Backend::Postgres => DELIVERY,
    };
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
}

async fn the_websocket_stream_resumes_from_since_and_sends_heartbeats() {
    let app = TestApp::spawn_with(|raw| raw.event_heartbeat = Some("200ms".into())).await;
    let session = app.create_session("alice").await;
    let token = text(&session, "access_token").to_owned();
    let mut sse = SseStream::open(&app, &token, TYPES, None).await;
    app.create_session("alice").await;
    let cursor = sse.expect("session.created").await.id.expect("cursor");
    let other = app.create_session("alice").await;
    drop(sse);

    let url = format!(
        "{}/v1/events{TYPES}&since={cursor}",
        app.base.replace("http", "ws")
    );
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");
    let mut pings = 0;
    let mut events = Vec::new();
    let deadline = Instant::now() + DELIVERY;
    while (pings < 2 || events.len() < 2) && Instant::now() < deadline {
        let message = tokio::time::timeout(DELIVERY, socket.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("readable");
        match message {
            Message::Text(body) => {
                events.push(serde_json::from_str::<Value>(&body).expect("JSON"));
                if events.len() == 1 {
                    // Something live after the replayed event.
                    app.delete(
                        &format!("/v1/sessions/{}", text(&other["session"], "id")),
                        Some(ADMIN_KEY),
                    )
                    .await;
                }
            }
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "heartbeats every 200 ms");
    assert_eq!(events[0]["type"], "session.created", "the missed event");
    assert_eq!(events[0]["session_id"], text(&other["session"], "id"));
    assert_eq!(events[1]["type"], "session.revoked", "then live");

    // Revoking the stream's own session ends it with a policy close.
    app.post("/v1/logout", Some(&token), json!({})).await;
    let mut close = None;
    while close.is_none() {
        match tokio::time::timeout(DELIVERY, socket.next())
            .await
            .expect("a message")
        {
            Some(Ok(Message::Close(frame))) => close = frame,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let frame = close.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "session_ended");
    let _ = socket.close(None).await;
}

async fn bad_stream_requests_are_refused_clearly() {
    let app = TestApp::spawn().await;
    let session = app.create_session("alice").await;
    let token = text(&session, "access_token");
    let sse = |query: &str, bearer: Option<&str>| {
        let mut request = app
            .client
            .get(format!("{}/v1/events{query}", app.base))
            .header("accept", "text/event-stream");
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request
    };
    let cases = [
        (
            sse("", None),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "",
        ),
        (
            sse("", Some("garbage")),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "",
        ),
        (
            sse("?since=12", Some(token)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "since",
        ),
        (
            sse("?types=session.created,session.bogus", Some(token)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "types",
        ),
        (
            sse("?user_id=bob", Some(token)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "user_id",
        ),
        (
            sse("?colour=red", Some(token)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "",
        ),
        (
            app.client
                .get(format!("{}/v1/events", app.base))
                .bearer_auth(token),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "text/event-stream",
        ),
    ];
    for (request, status, code, mention) in cases {
        let answer = app.raw(request).await;
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.error_code(), code);
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|message| message.contains(mention)),
            "{}",
            answer.body
        );
    }
}

async fn shutdown_ends_open_streams() {
    let mut app = TestApp::spawn().await;
    let mut stream = SseStream::open(&app, ADMIN_KEY, "", None).await;
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("\nsessiond_open_event_streams 1\n"), "{text}");
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the server stops despite an open stream");
    let closed = stream.expect("stream.closed").await.data;
    assert_eq!(closed["reason"], "shutdown");
}

/// Opens a WebSocket on `/v1/events` with `bearer` and, if given, an `Origin`; the upgrade's
/// answer status when it is refused.
async fn open_websocket(
    app: &TestApp,
    bearer: &str,
    origin: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let mut request = format!("{}/v1/events", app.base.replace("http", "ws"))
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {bearer}").parse().expect("header"),
    );
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

/// The answer to a request on `/v1/events`: a stream's `200` is not read (it never ends), any
/// other answer's JSON body is.
async fn stream_answer(request: reqwest::RequestBuilder) -> crate::helpers::Answer {
    let response = request.send().await.expect("request is sent");
    let status = response.status();
    let headers = response.headers().clone();
    let body = if status == StatusCode::OK {
        Value::Null
    } else {
        response.json().await.expect("a JSON body")
    };
    crate::helpers::Answer {
        status,
        body,
        headers,
    }
}

/// A WebSocket upgrade request sent as plain HTTP, to read a refusal's JSON body.
fn upgrade_request(app: &TestApp, bearer: &str, origin: &str) -> reqwest::RequestBuilder {
    app.client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(bearer)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("origin", origin)
}

async fn a_browser_websocket_from_an_origin_not_allowed_is_refused_before_the_upgrade() {
    let app =
        TestApp::spawn_with(|raw| raw.cors_origins = Some("https://app.example.com".into())).await;
    let session = app.create_session("alice").await;
    let token = text(&session, "access_token");

    let refused = app
        .raw(upgrade_request(&app, token, "https://evil.example"))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.error_code(), "forbidden");
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|message| message.contains("Origin")),
        "{}",
        refused.body
    );
    assert_eq!(
        open_websocket(&app, token, Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        open_websocket(&app, token, Some("null")).await.err(),
        Some(403),
        "an opaque origin is a browser's too"
    );
    assert_eq!(
        open_websocket(&app, token, Some("https://app.example.com.evil.example"))
            .await
            .err(),
        Some(403)
    );

    // A listed origin, the server's own, and a client that is not a browser are let in.
    let own = app.base.clone();
    for origin in [Some("https://app.example.com"), Some(own.as_str()), None] {
        let mut socket = open_websocket(&app, token, origin)
            .await
            .unwrap_or_else(|status| panic!("{origin:?} refused with {status}"));
        let _ = socket.close(None).await;
    }
    // Nothing else was refused on the way: SSE stays governed by CORS.
    let sse = stream_answer(
        app.client
            .get(format!("{}/v1/events", app.base))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert!(
        sse.headers.get("access-control-allow-origin").is_none(),
        "no CORS grant for an unlisted origin"
    );
}

async fn streams_are_capped_per_user_and_in_total_with_a_clear_error() {
    let app = TestApp::spawn_with(|raw| {
        raw.max_streams_per_user = Some("2".into());
        raw.max_streams = Some("3".into());
        raw.event_heartbeat = Some("200ms".into());
    })
    .await;
    let alice = app.create_session("alice").await;
    let alice_token = text(&alice, "access_token").to_owned();
    let bob = app.create_session("bob").await;
    let bob_token = text(&bob, "access_token").to_owned();
    let sse = |bearer: &str| {
        app.client
            .get(format!("{}/v1/events", app.base))
            .bearer_auth(bearer)
            .header("accept", "text/event-stream")
    };

    let first = SseStream::open(&app, &alice_token, "", None).await;
    let socket = open_websocket(&app, &alice_token, None)
        .await
        .expect("alice's second stream, over WebSocket");
    let third = stream_answer(sse(&alice_token)).await;
    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        third.body
    );
    assert_eq!(third.error_code(), "too_many_streams");
    assert_eq!(third.body["retry_after"], 5);
    assert_eq!(third.headers["retry-after"], "5");
    assert_eq!(
        open_websocket(&app, &alice_token, None).await.err(),
        Some(429),
        "SSE and WebSocket count together"
    );

    let bobs = SseStream::open(&app, &bob_token, "", None).await;
    let full = stream_answer(sse(ADMIN_KEY)).await;
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.body
    );
    assert_eq!(full.error_code(), "too_many_streams");
    assert_eq!(full.headers["retry-after"], "5");

    // A stream that ends gives its place back.
    drop(socket);
    let deadline = Instant::now() + DELIVERY;
    loop {
        let again = stream_answer(sse(&alice_token)).await;
        if again.status == StatusCode::OK {
            break;
        }
        assert_eq!(again.error_code(), "too_many_streams");
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((first, bobs));
}

crate::on_every_store!(
    a_users_stream_carries_their_events_as_they_happen_and_no_one_elses,
    a_stream_resumes_after_its_last_event_id_without_loss_or_repeats,
    a_stream_whose_own_session_is_revoked_hears_it_and_is_closed,
    reuse_detection_is_streamed_with_the_revocation_it_causes,
    an_admin_stream_sees_every_user_and_filters_by_user_and_type,
    expired_sessions_are_announced,
    events_written_by_another_process_reach_the_stream,
    the_websocket_stream_resumes_from_since_and_sends_heartbeats,
    bad_stream_requests_are_refused_clearly,
    shutdown_ends_open_streams,
    a_browser_websocket_from_an_origin_not_allowed_is_refused_before_the_upgrade,
    streams_are_capped_per_user_and_in_total_with_a_clear_error,
);
