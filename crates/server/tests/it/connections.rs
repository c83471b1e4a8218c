//! Slow and idle clients at the connection level, over raw sockets: the header timeout, the
//! body timeout (408), the keep-alive timeout, the connection cap (the longest-waiting
//! connection makes room; when every connection is answering a new one gets 503), event
//! streams that outlive every timeout, and a graceful stop with idle connections open.
//!
//! Timeouts here are short and the bounds asserted generous: the machine may be loaded, so a
//! close is only required to come after its timeout (timers never fire early) and within
//! seconds of it. The same under a thousand connections, measured on the binary, is in
//! `process.rs`.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{ADMIN_KEY, TestApp, text};

/// How long a close may take after its timeout on a loaded machine.
const SLACK: Duration = Duration::from_secs(10);
/// A timeout no test reaches.
const NEVER: &str = "1h";

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(address(app)).await.expect("connects")
}

/// Reads until the server closes the connection (end of file or reset), at most `bound`;
/// returns what was read. Panics if it is still open after `bound`.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(bound, async {
        let mut chunk = [0_u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&chunk[..read]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "still open after {bound:?}; read {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// Whether the server has left the connection open for `window` (nothing to read, no close).
async fn stays_open(stream: &mut TcpStream, window: Duration) -> bool {
    let mut chunk = [0_u8; 1];
    tokio::time::timeout(window, stream.read(&mut chunk))
        .await
        .is_err()
}

/// Reads one answer (head and a `content-length` body) from a keep-alive connection.
async fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let read = tokio::time::timeout(SLACK, stream.read(&mut chunk))
            .await
            .expect("an answer")
            .expect("readable");
        assert!(read > 0, "closed before the answer");
        received.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if received.len() >= end + 4 + length {
            let status = text[9..12].parse().expect("status code");
            return (status, text[end + 4..end + 4 + length].to_owned());
        }
    }
}

/// The status and JSON body of a whole answer read until the connection closed.
fn parse_answer(received: &[u8]) -> (u16, Value, String) {
    let text = String::from_utf8_lossy(received).into_owned();
    assert!(text.starts_with("HTTP/1.1 "), "an HTTP answer: {text:?}");
    let status = text[9..12].parse().expect("status code");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::Null),
        head.to_lowercase(),
    )
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: sessiond.test\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_part_of_its_headers_or_nothing_is_closed_after_the_header_timeout()
{
    let timeout = Duration::from_millis(500);
    let app = TestApp::spawn_with(|raw| {
        raw.header_timeout = Some("500ms".into());
        raw.keep_alive_timeout = Some(NEVER.into());
    })
    .await;
    let opened = Instant::now();
    let mut silent = connect(&app).await;
    let mut partial = connect(&app).await;
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: sessiond.test\r\nX-Slow: ")
        .await
        .expect("written");
    // The classic slowloris: a header byte now and then, each well within the timeout.
    let mut trickling = connect(&app).await;
    trickling
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("written");
    let (mut trickle_reader, mut trickle_writer) = trickling.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            if trickle_writer.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    for stream in [&mut silent, &mut partial] {
        let received = read_until_closed(stream, timeout + SLACK).await;
        assert!(received.is_empty(), "closed without an answer");
    }
    let closed = tokio::time::timeout(timeout + SLACK, async {
        let mut chunk = [0_u8; 64];
        while let Ok(read) = trickle_reader.read(&mut chunk).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickle does not keep the headers open");
    assert!(
        opened.elapsed() >= timeout - Duration::from_millis(100),
        "not before the timeout: {:?}",
        opened.elapsed()
    );
    trickle.abort();

    // A client that sends its request in time is answered.
    let mut prompt = connect(&app).await;
    prompt.write_all(HEALTHZ).await.expect("written");
    assert_eq!(read_answer(&mut prompt).await.0, 200);
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408_and_nothing_is_written() {
    let app = TestApp::spawn_with(|raw| {
        raw.body_timeout = Some("500ms".into());
        raw.keep_alive_timeout = Some(NEVER.into());
    })
    .await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(
            format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: sessiond.test\r\n\
                 Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"user_id\": \"alice\""
            )
            .as_bytes(),
        )
        .await
        .expect("written");
    let received = read_until_closed(&mut stream, SLACK).await;
    let elapsed = started.elapsed();
    let (status, body, head) = parse_answer(&received);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"], "request_timeout");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("500ms")),
        "{body}"
    );
    assert!(head.contains("connection: close"), "{head}");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM sessions").await, 0);

    // A body that arrives in time is not affected.
    let created = app.create_session("alice").await;
    assert!(created["access_token"].is_string());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let app = TestApp::spawn_with(|raw| {
        raw.keep_alive_timeout = Some("500ms".into());
        raw.header_timeout = Some(NEVER.into());
    })
    .await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTHZ).await.expect("written");
    assert_eq!(read_answer(&mut stream).await.0, 200);
    // Requests within the timeout keep the connection.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(HEALTHZ).await.expect("written");
        assert_eq!(read_answer(&mut stream).await.0, 200);
    }
    // The server's idle time starts when it sent the answer, a little before the client read
    // it, and is kept in whole milliseconds: the lower bound leaves room for both.
    let idle = Instant::now();
    let received = read_until_closed(&mut stream, SLACK).await;
    assert!(received.is_empty());
    assert!(
        idle.elapsed() >= Duration::from_millis(400),
        "{:?}",
        idle.elapsed()
    );
}

#[tokio::test]
async fn beyond_the_connection_cap_waiting_connections_make_room_and_busy_ones_refuse_with_503() {
    let app = TestApp::spawn_with(|raw| {
        raw.max_connections = Some("4".into());
        raw.header_timeout = Some(NEVER.into());
        raw.keep_alive_timeout = Some(NEVER.into());
        raw.event_heartbeat = Some("200ms".into());
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(&app).await);
        // Distinct accept times, so that which one waited longest is clear.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fifth client is served: the connection that waited longest makes room.
    let answer = app.get("/healthz", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(read_until_closed(&mut silent[0], SLACK).await.is_empty());
    for stream in &mut silent[1..] {
        assert!(stays_open(stream, Duration::from_millis(200)).await);
    }

    // Four streams fill the cap with connections that are answering.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let response = app
            .client
            .get(format!("{}/v1/events", app.base))
            .bearer_auth(ADMIN_KEY)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("stream opens");
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    for stream in &mut silent[1..] {
        assert!(
            read_until_closed(stream, SLACK).await.is_empty(),
            "waiting connections made room for the streams"
        );
    }
    let mut refused = connect(&app).await;
    let asked = Instant::now();
    refused.write_all(HEALTHZ).await.expect("written");
    let (status, body, head) = parse_answer(&read_until_closed(&mut refused, SLACK).await);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "too_many_connections");
    assert_eq!(body["retry_after"], 1);
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "refused at once, not held: {:?}",
        asked.elapsed()
    );

    // A stream that ends gives its place back.
    streams.pop();
    let deadline = Instant::now() + SLACK;
    loop {
        let mut stream = connect(&app).await;
        stream.write_all(HEALTHZ).await.expect("written");
        let received = read_until_closed_or_answered(&mut stream).await;
        if received.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first answer on `stream`, or what came before it closed.
async fn read_until_closed_or_answered(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0_u8; 4096];
    let _ = tokio::time::timeout(SLACK, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&chunk[..read]),
            }
            if String::from_utf8_lossy(&received).contains("\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    received
}

#[tokio::test]
async fn event_streams_outlive_the_header_body_and_keep_alive_timeouts() {
    let app = TestApp::spawn_with(|raw| {
        raw.header_timeout = Some("300ms".into());
        raw.body_timeout = Some("300ms".into());
        raw.keep_alive_timeout = Some("300ms".into());
        raw.event_heartbeat = Some("5m".into());
    })
    .await;
    let session = app.create_session("alice").await;
    let token = text(&session, "access_token").to_owned();
    app.advance(Duration::from_millis(1));
    let mut sse = app
        .client
        .get(format!("{}/v1/events?types=session.created", app.base))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream opens");
    assert_eq!(sse.status(), StatusCode::OK);
    let mut request = format!(
        "{}/v1/events?types=session.created",
        app.base.replace("http", "ws")
    )
    .into_client_request()
    .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");

    // Several times every timeout, with nothing sent either way.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let created = app.create_session("alice").await;
    let id = text(&created["session"], "id");

    let mut data = String::new();
    tokio::time::timeout(SLACK, async {
        while !data.contains(id) {
            let chunk = sse.chunk().await.expect("reads").expect("SSE still open");
            data.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the SSE stream carries the event");
    let message = tokio::time::timeout(SLACK, socket.next())
        .await
        .expect("a message")
        .expect("WebSocket still open")
        .expect("readable");
    let Message::Text(body) = message else {
        panic!("an event, got {message:?}");
    };
    assert!(body.contains(id), "{body}");
}

#[tokio::test]
async fn a_graceful_stop_closes_idle_connections_and_returns_promptly() {
    let mut app = TestApp::spawn_with(|raw| {
        raw.header_timeout = Some(NEVER.into());
        raw.keep_alive_timeout = Some(NEVER.into());
    })
    .await;
    let mut silent = connect(&app).await;
    let mut idle = connect(&app).await;
    idle.write_all(HEALTHZ).await.expect("written");
    assert_eq!(read_answer(&mut idle).await.0, 200);
    tokio::time::timeout(SLACK, app.stop())
        .await
        .expect("the server stops despite open connections");
    for stream in [&mut silent, &mut idle] {
        assert!(read_until_closed(stream, SLACK).await.is_empty());
    }
}

#[tokio::test]
async fn request_headers_over_64_kib_are_refused_with_431_and_smaller_ones_served() {
    let app = TestApp::spawn().await;
    let mut large = connect(&app).await;
    let padding = "a".repeat(70 * 1024);
    large
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: sessiond.test\r\nX-Padding: {padding}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("written");
    let received = read_until_closed(&mut large, SLACK).await;
    assert!(
        received.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );

    let mut fitting = connect(&app).await;
    let padding = "a".repeat(32 * 1024);
    fitting
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: sessiond.test\r\nX-Padding: {padding}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("written");
    assert_eq!(read_answer(&mut fitting).await.0, 200);
}

/// The app's settings served again with `/metrics` on a listener of its own (the app's own
/// server is stopped first); answers the metrics address and what stops the new server.
async fn serve_with_metrics_listener(
    app: &mut TestApp,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    app.stop().await;
    let state = sessiond_server::AppState::build(
        &app.config,
        app.clock.clone(),
        sessiond_server::database::OpenMode::MustExist,
    )
    .await
    .expect("state builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = metrics.local_addr().expect("address").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sessiond_server::run_with_metrics_listener(
        listener,
        Some(metrics),
        state,
        async move {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

const METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: sessiond.test\r\n\r\n";

/// Regression: the metrics listener was served by a plain accept loop without the header,
/// body and keep-alive timeouts or the connection cap of the API's listener, so a scraper (or
/// anything reaching the port) could hold connections open for ever, as many as it liked.
#[tokio::test]
async fn the_metrics_listener_times_out_slow_and_idle_clients_and_caps_its_connections() {
    let timeout = Duration::from_millis(500);
    let mut app = TestApp::spawn_with(|raw| {
        raw.header_timeout = Some("500ms".into());
        raw.keep_alive_timeout = Some("500ms".into());
    })
    .await;
    let (address, _stop) = serve_with_metrics_listener(&mut app).await;
    // Part of the headers, then nothing: closed after the header timeout.
    let mut slow = TcpStream::connect(&address).await.expect("connects");
    let opened = Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHo")
        .await
        .expect("written");
    read_until_closed(&mut slow, timeout + SLACK).await;
    assert!(opened.elapsed() >= timeout - Duration::from_millis(100));
    // An answered scrape left open: closed after the keep-alive timeout.
    let mut idle = TcpStream::connect(&address).await.expect("connects");
    idle.write_all(METRICS).await.expect("written");
    let (status, body) = read_answer(&mut idle).await;
    assert_eq!(status, 200);
    assert!(body.contains("sessiond_"), "{body}");
    let answered = Instant::now();
    assert!(
        read_until_closed(&mut idle, timeout + SLACK)
            .await
            .is_empty()
    );
    assert!(answered.elapsed() >= timeout - Duration::from_millis(100));

    // Capped: past two connections, the one that waited longest makes room.
    let mut app = TestApp::spawn_with(|raw| {
        raw.max_connections = Some("2".into());
        raw.header_timeout = Some(NEVER.into());
        raw.keep_alive_timeout = Some(NEVER.into());
    })
    .await;
    let (address, _stop) = serve_with_metrics_listener(&mut app).await;
    let mut first = TcpStream::connect(&address).await.expect("connects");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut second = TcpStream::connect(&address).await.expect("connects");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut third = TcpStream::connect(&address).await.expect("connects");
    third.write_all(METRICS).await.expect("written");
    assert_eq!(read_answer(&mut third).await.0, 200);
    assert!(read_until_closed(&mut first, SLACK).await.is_empty());
    assert!(stays_open(&mut second, Duration::from_millis(200)).await);
}
