//! `sessiond-fanout`: measures the event fan-out of a running sessiond.
//!
//! It opens `--streams` Server-Sent Events streams on `GET /v1/events` with an admin key (so
//! every stream receives every event), then produces `session.refreshed` events at `--rate`
//! per second by refreshing sessions it created, for `--duration`. It reports how many events
//! were produced, how many deliveries the streams received (ideally events × streams), how
//! many streams the server closed, and the delivery latency seen by the first stream (from the
//! event's `at`, stamped by the server, to its arrival here; both clocks are this machine's).
//!
//! ```text
//! sessiond-fanout --url http://127.0.0.1:8080 --admin-key "$KEY" --streams 1000 --rate 500
//! ```
//!
//! One JSON line goes to stdout. Start the server with `SESSIOND_RATE_LIMITS=off`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Open event streams on sessiond and measure how fast events reach all of them.
#[derive(Debug, Parser)]
#[command(name = "sessiond-fanout", version, about, long_about = None)]
struct Args {
    /// Address of the sessiond API (loopback)
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// An admin key the server accepts
    #[arg(long, env = "SESSIOND_LOAD_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// Event streams to open
    #[arg(long, default_value_t = 1000)]
    streams: u32,
    /// Events produced per second
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to produce events, in seconds
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections producing events
    #[arg(long, default_value_t = 8)]
    producers: u32,
}

#[derive(Debug, Default)]
struct Counters {
    deliveries: AtomicU64,
    closed: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rate > 0 && args.streams > 0 && args.producers > 0,
        "counts must be positive"
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let mut streams = JoinSet::new();
    for index in 0..args.streams {
        let sink = (index == 0).then(|| Arc::clone(&latencies));
        let response = open_stream(&args.address, &args.admin_key).await?;
        streams.spawn(read_stream(response, Arc::clone(&counters), sink));
    }
    eprintln!("sessiond-fanout: {} streams open", args.streams);

    let mut producers = JoinSet::new();
    let per_producer = f64::from(args.rate) / f64::from(args.producers);
    let total = Duration::from_secs(args.seconds);
    let started = Instant::now();
    for producer in 0..args.producers {
        let address = args.address.clone();
        let admin_key = args.admin_key.clone();
        producers.spawn(async move {
            produce(&address, &admin_key, producer, per_producer, total).await
        });
    }
    let mut produced = 0_u64;
    while let Some(result) = producers.join_next().await {
        produced += result.context("producer task")??;
    }
    let elapsed = started.elapsed();
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    streams.abort_all();

    let deliveries = counters.deliveries.load(Ordering::Relaxed);
    let expected = produced * u64::from(args.streams);
    let mut latencies = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("latency lock poisoned"))?
        .clone();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| -> Option<f64> {
        if latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        latencies.get(rank).copied()
    };
    let report = json!({
        "streams": args.streams,
        "events": produced,
        "events_per_s": produced as f64 / elapsed.as_secs_f64(),
        "deliveries": deliveries,
        "deliveries_per_s": deliveries as f64 / elapsed.as_secs_f64(),
        "delivered_fraction": if expected == 0 { 0.0 } else { deliveries as f64 / expected as f64 },
        "streams_closed": counters.closed.load(Ordering::Relaxed),
        "latency_p50_ms": percentile(50.0),
        "latency_p99_ms": percentile(99.0),
        "latency_max_ms": percentile(100.0),
    });
    println!("{report}");
    Ok(())
}

async fn connect(address: &str) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn open_stream(
    address: &str,
    admin_key: &str,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let stream = TcpStream::connect(address).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/v1/events?types=session.refreshed")
        .header("host", address)
        .header("authorization", format!("Bearer {admin_key}"))
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        bail!("opening a stream answered {}", response.status());
    }
    Ok(response)
}

/// Counts `data:` lines; the first stream also records each event's latency.
async fn read_stream(
    mut response: hyper::Response<hyper::body::Incoming>,
    counters: Arc<Counters>,
    latencies: Option<Arc<std::sync::Mutex<Vec<f64>>>>,
) {
    let mut pending = Vec::new();
    while let Some(Ok(frame)) = response.body_mut().frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        let mut consumed = 0;
        while let Some(end) = pending[consumed..].iter().position(|byte| *byte == b'\n') {
            let line = &pending[consumed..consumed + end];
            consumed += end + 1;
            let Some(json) = line.strip_prefix(b"data: ") else {
                continue;
            };
            if json.windows(13).any(|window| window == b"stream.closed") {
                counters.closed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            counters.deliveries.fetch_add(1, Ordering::Relaxed);
            if let Some(sink) = &latencies
                && let Some(at) = serde_json::from_slice::<Value>(json)
                    .ok()
                    .and_then(|event| event["at"].as_str().and_then(unix_millis))
                && let Ok(mut sink) = sink.lock()
            {
                sink.push(now_millis() - at);
            }
        }
        pending.drain(..consumed);
    }
}

/// Creates sessions, then refreshes them at `rate` per second until `total` has passed;
/// returns how many refreshes succeeded (each one an event).
async fn produce(
    address: &str,
    admin_key: &str,
    producer: u32,
    rate: f64,
    total: Duration,
) -> anyhow::Result<u64> {
    let mut sender = connect(address).await?;
    let mut tokens = Vec::new();
    for index in 0..4 {
        let body = json!({ "user_id": format!("fanout-{producer}-{index}") }).to_string();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/sessions")
            .header("host", address)
            .header("authorization", format!("Bearer {admin_key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let pair = exchange(&mut sender, request).await?;
        tokens.push(
            pair["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut produced = 0_u64;
    let mut next = 0_usize;
    while started.elapsed() < total {
        let due = started + period.mul_f64(produced as f64);
        tokio::time::sleep_until(due.into()).await;
        let slot = next % tokens.len();
        next += 1;
        let body = json!({ "refresh_token": tokens[slot] }).to_string();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/sessions/refresh")
            .header("host", address)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let pair = exchange(&mut sender, request).await?;
        tokens[slot] = pair["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        produced += 1;
    }
    Ok(produced)
}

async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<Value> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

fn now_millis() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64() * 1000.0)
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn unix_millis(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !text.ends_with('Z') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let millis = text
        .get(20..text.len() - 1)
        .and_then(|fraction| fraction.parse::<f64>().ok())
        .map_or(0.0, |fraction| {
            fraction / 10_f64.powi(text.len() as i32 - 21) * 1000.0
        });
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds as f64 * 1000.0 + millis)
}

#[cfg(test)]
mod tests {
    use super::unix_millis;

    #[test]
    fn parses_the_servers_timestamps() {
        assert_eq!(unix_millis("1970-01-01T00:00:00.000Z"), Some(0.0));
        assert_eq!(
            unix_millis("2023-11-14T22:13:20.500Z"),
            Some(1_700_000_000_500.0)
        );
        assert_eq!(
            unix_millis("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000.0)
        );
        assert_eq!(unix_millis("garbage"), None);
    }
}
