//! The requests this tool sends: creating sessions in the setup phase, then the refresh and
//! validate loops of the measured phase.
//!
//! Everything that is the same for every request (URIs, `Host`, `Content-Type`, the
//! `Authorization` values of validate mode) is built once, so that a request costs a few
//! reference-count increments plus, for refresh, the one body that must differ each time.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::client::{Body, Connection, Failure};
use crate::histogram::Histogram;
use crate::target::BaseUrl;

/// Pre-built request parts for the three routes this tool uses.
#[derive(Debug)]
pub(crate) struct Endpoints {
    address: SocketAddr,
    timeout: Duration,
    create_uri: Uri,
    refresh_uri: Uri,
    current_uri: Uri,
    host: HeaderValue,
    json: HeaderValue,
}

impl Endpoints {
    /// Builds the parts for a server at `address`, answering as `base`.
    ///
    /// # Errors
    ///
    /// When the URL's host or path prefix cannot form a header value or URI.
    pub(crate) fn new(
        base: &BaseUrl,
        address: SocketAddr,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let uri = |path: &str| -> anyhow::Result<Uri> {
            let full = format!("{}{path}", base.base_path);
            full.parse()
                .with_context(|| format!("{full:?} is not a valid request path"))
        };
        Ok(Self {
            address,
            timeout,
            create_uri: uri("/v1/sessions")?,
            refresh_uri: uri("/v1/sessions/refresh")?,
            current_uri: uri("/v1/sessions/current")?,
            host: HeaderValue::from_str(&base.host_header)
                .context("the URL's host is not a valid Host header")?,
            json: HeaderValue::from_static("application/json"),
        })
    }

    fn connection(&self) -> Connection {
        Connection::new(self.address, self.timeout)
    }

    fn post_json(&self, uri: &Uri, body: Vec<u8>) -> Request<Body> {
        // `Request::new` plus setters instead of the builder: the builder's `Result` could
        // only fail on parts we have already validated.
        let mut request = Request::new(Body::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, self.json.clone());
        request
    }

    fn create_request(&self, admin: &HeaderValue, user_id: &str) -> anyhow::Result<Request<Body>> {
        let body = serde_json::to_vec(&CreateSession {
            user_id,
            device: Device {
                name: "load",
                user_agent: "sessiond-load",
            },
        })
        .context("encoding the create-session body")?;
        let mut request = self.post_json(&self.create_uri, body);
        request.headers_mut().insert(AUTHORIZATION, admin.clone());
        Ok(request)
    }

    fn refresh_request(&self, refresh_token: &str) -> Result<Request<Body>, serde_json::Error> {
        let body = serde_json::to_vec(&RefreshBody { refresh_token })?;
        Ok(self.post_json(&self.refresh_uri, body))
    }

    fn current_request(&self, bearer: &HeaderValue) -> Request<Body> {
        let mut request = Request::new(Body::new(Bytes::new()));
        *request.uri_mut() = self.current_uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, bearer.clone());
        request
    }
}

#[derive(Serialize)]
struct CreateSession<'a> {
    user_id: &'a str,
    device: Device<'a>,
}

#[derive(Serialize)]
struct Device<'a> {
    name: &'a str,
    user_agent: &'a str,
}

#[derive(Serialize)]
struct RefreshBody<'a> {
    refresh_token: &'a str,
}

/// The two fields of a token pair this tool needs; serde skips the rest.
#[derive(Deserialize)]
struct TokenPair {
    access_token: String,
    refresh_token: String,
}

/// One created session's credentials.
#[derive(Debug)]
pub(crate) struct Credentials {
    /// `Bearer <access token>`, ready to be an `Authorization` value.
    pub(crate) bearer: HeaderValue,
    pub(crate) refresh_token: String,
}

/// Makes an `Authorization: Bearer` value that is kept out of debug output.
///
/// # Errors
///
/// When the secret contains bytes a header cannot carry.
pub(crate) fn bearer(secret: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {secret}"))
        .context("the credential contains characters not allowed in a header")?;
    value.set_sensitive(true);
    Ok(value)
}

/// Creates `count` sessions for distinct users `load-user-{i}` over `parallel` connections.
///
/// Distinct users keep the per-user session limit from evicting sessions this run still uses.
///
/// # Errors
///
/// On the first session that cannot be created, with the server's status and error body.
pub(crate) async fn create_sessions(
    endpoints: Arc<Endpoints>,
    admin: HeaderValue,
    count: usize,
    parallel: usize,
) -> anyhow::Result<Vec<Credentials>> {
    let parallel = parallel.clamp(1, count.max(1));
    let mut tasks = JoinSet::new();
    for first in 0..parallel {
        let endpoints = Arc::clone(&endpoints);
        let admin = admin.clone();
        tasks.spawn(async move {
            let mut connection = endpoints.connection();
            let mut created = Vec::new();
            for index in (first..count).step_by(parallel) {
                let credentials = create_one(&endpoints, &mut connection, &admin, index)
                    .await
                    .with_context(|| format!("creating session for load-user-{index}"))?;
                created.push((index, credentials));
            }
            anyhow::Ok(created)
        });
    }
    let mut all = Vec::with_capacity(count);
    // Dropping the set on an early return aborts the other setup tasks.
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.context("a setup task panicked")??);
    }
    all.sort_by_key(|(index, _)| *index);
    Ok(all
        .into_iter()
        .map(|(_, credentials)| credentials)
        .collect())
}

async fn create_one(
    endpoints: &Endpoints,
    connection: &mut Connection,
    admin: &HeaderValue,
    index: usize,
) -> anyhow::Result<Credentials> {
    let user_id = format!("load-user-{index}");
    let request = endpoints.create_request(admin, &user_id)?;
    let answer = match connection.exchange(request, true).await {
        Ok(answer) => answer,
        Err(Failure::Connect) => bail!(
            "cannot connect: {}",
            connection.last_connect_error().unwrap_or("unknown error")
        ),
        Err(failure) => bail!("{failure}"),
    };
    if answer.status != StatusCode::CREATED {
        let body = String::from_utf8_lossy(&answer.body);
        let hint = if answer.status == StatusCode::UNAUTHORIZED {
            " (is --admin-key one of the server's SESSIOND_ADMIN_KEYS?)"
        } else if answer.status == StatusCode::TOO_MANY_REQUESTS {
            " (start the server with SESSIOND_RATE_LIMITS=off for benchmarks)"
        } else {
            ""
        };
        return Err(anyhow!(
            "expected 201, got {}{hint}: {}",
            answer.status,
            body.chars().take(300).collect::<String>()
        ));
    }
    let pair: TokenPair =
        serde_json::from_slice(&answer.body).context("the 201 answer is not a token pair")?;
    Ok(Credentials {
        bearer: bearer(&pair.access_token)?,
        refresh_token: pair.refresh_token,
    })
}

/// When measuring starts and when workers stop starting requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Requests started before this are warmup and not part of the statistics.
    pub(crate) measure_from: Instant,
    /// No request starts at or after this.
    pub(crate) end: Instant,
}

/// What one worker saw; merged across workers at the end.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    /// Latencies of successful requests in the measured window.
    pub(crate) latencies: Histogram,
    /// Requests in the measured window, successful or not.
    pub(crate) requests: u64,
    /// Failed requests in the measured window.
    pub(crate) errors: u64,
    /// Failed requests in the measured window, by kind.
    pub(crate) failures: BTreeMap<Failure, u64>,
    /// Requests and failures during warmup, reported but not measured.
    pub(crate) warmup_requests: u64,
    pub(crate) warmup_errors: u64,
    /// Connections reopened after the first.
    pub(crate) reconnects: u64,
    /// Refresh sessions given up after a failure that may have spent their token.
    pub(crate) sessions_dropped: u64,
    /// Whether the worker stopped before the end because it had no session left.
    pub(crate) ran_out_of_sessions: bool,
    /// The last connect error, when there was one.
    pub(crate) last_connect_error: Option<String>,
}

impl WorkerStats {
    fn observe(
        &mut self,
        started: Instant,
        schedule: &Schedule,
        outcome: Result<Duration, Failure>,
    ) {
        if started < schedule.measure_from {
            self.warmup_requests += 1;
            self.warmup_errors += u64::from(outcome.is_err());
            return;
        }
        self.requests += 1;
        match outcome {
            Ok(latency) => self.latencies.record(latency),
            Err(failure) => {
                self.errors += 1;
                *self.failures.entry(failure).or_default() += 1;
            }
        }
    }

    fn finish(mut self, connection: &Connection) -> Self {
        self.reconnects = connection.reconnects();
        self.last_connect_error = connection.last_connect_error().map(str::to_owned);
        self
    }

    /// Adds another worker's numbers to these.
    pub(crate) fn merge(&mut self, other: WorkerStats) {
        self.latencies.merge(&other.latencies);
        self.requests += other.requests;
        self.errors += other.errors;
        for (failure, count) in other.failures {
            *self.failures.entry(failure).or_default() += count;
        }
        self.warmup_requests += other.warmup_requests;
        self.warmup_errors += other.warmup_errors;
        self.reconnects += other.reconnects;
        self.sessions_dropped += other.sessions_dropped;
        self.ran_out_of_sessions |= other.ran_out_of_sessions;
        if other.last_connect_error.is_some() {
            self.last_connect_error = other.last_connect_error;
        }
    }
}

/// After a failed connect, wait this long before the next attempt so a dead server is not
/// hammered with SYNs in a tight loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

async fn back_off(schedule: &Schedule) {
    let until = (Instant::now() + CONNECT_BACKOFF).min(schedule.end);
    tokio::time::sleep_until(until.into()).await;
}

/// Refreshes its own sessions in turn until the schedule ends, always with the newest token.
///
/// Each refresh token is sent at most once: the server treats a replay as theft and revokes
/// the session. So a session whose request may have reached the server without yielding a new
/// token is dropped rather than retried; only a failed connect (nothing sent) keeps it.
pub(crate) async fn refresh_worker(
    endpoints: Arc<Endpoints>,
    schedule: Schedule,
    refresh_tokens: Vec<String>,
) -> WorkerStats {
    let mut connection = endpoints.connection();
    let mut tokens: VecDeque<String> = refresh_tokens.into();
    let mut stats = WorkerStats::default();
    while Instant::now() < schedule.end {
        let Some(token) = tokens.pop_front() else {
            stats.ran_out_of_sessions = true;
            break;
        };
        let started = Instant::now();
        let outcome = match endpoints.refresh_request(&token) {
            Ok(request) => match connection.exchange(request, true).await {
                Ok(answer) if answer.status == StatusCode::OK => {
                    match serde_json::from_slice::<TokenPair>(&answer.body) {
                        Ok(pair) => {
                            tokens.push_back(pair.refresh_token);
                            Ok(answer.latency)
                        }
                        Err(_) => Err(Failure::BadBody),
                    }
                }
                Ok(answer) => Err(Failure::Status(answer.status.as_u16())),
                Err(failure) => Err(failure),
            },
            // Encoding a string cannot fail in practice; count it rather than stop the run.
            Err(_) => Err(Failure::BadBody),
        };
        match outcome {
            Err(Failure::Connect) => {
                tokens.push_front(token);
                back_off(&schedule).await;
            }
            Err(failure) if failure.may_have_reached_server() => stats.sessions_dropped += 1,
            _ => {}
        }
        stats.observe(started, &schedule, outcome);
    }
    stats.finish(&connection)
}

/// Validates access tokens round-robin, starting at `first` so workers spread over sessions.
pub(crate) async fn validate_worker(
    endpoints: Arc<Endpoints>,
    schedule: Schedule,
    bearers: Arc<[HeaderValue]>,
    first: usize,
) -> WorkerStats {
    let mut connection = endpoints.connection();
    let mut stats = WorkerStats::default();
    let mut next = first;
    while Instant::now() < schedule.end {
        let Some(bearer) = bearers.get(next % bearers.len().max(1)) else {
            stats.ran_out_of_sessions = true;
            break;
        };
        next = next.wrapping_add(1);
        let started = Instant::now();
        let request = endpoints.current_request(bearer);
        let outcome = match connection.exchange(request, false).await {
            Ok(answer) if answer.status == StatusCode::OK => Ok(answer.latency),
            Ok(answer) => Err(Failure::Status(answer.status.as_u16())),
            Err(failure) => Err(failure),
        };
        if outcome == Err(Failure::Connect) {
            back_off(&schedule).await;
        }
        stats.observe(started, &schedule, outcome);
    }
    stats.finish(&connection)
}
