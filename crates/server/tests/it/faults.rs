//! A real `sessiond` process whose PostgreSQL connection is cut, refused and frozen while it is
//! under load: requests answer 503 `unavailable` with `Retry-After` within a bounded time (no
//! hang, no 500), validation of access tokens keeps working from memory, service resumes
//! without a restart, and no acknowledged session or refresh is lost.
//!
//! The machine's PostgreSQL keeps running (other tests share it): the instance reaches it through
//! a TCP proxy inside the test that can be switched `up` (forwarding), `down` (every connection
//! closed at once and new ones refused: the port is closed), `reject` (every connection closed,
//! new ones closed as soon as accepted) or `frozen` (connections accepted but nothing forwarded,
//! as a hung server or a network partition looks), and can cut every open connection at once
//! while staying up (in-flight statements and COMMITs lose their answers).
//!
//! Needs `SESSIOND_TEST_DATABASE_URL` and says it was skipped without it. Run it alone, with its
//! numbers printed, with
//! `SESSIOND_TEST_DATABASE_URL=... cargo test -p sessiond-server --test it faults -- --nocapture`.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::{ADMIN_KEY, PgSchema, postgres_url, text};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const LISTENING: &str = "sessiond listening on http://";
/// Concurrent clients creating and refreshing sessions throughout the test.
const WORKERS: usize = 4;
/// How long PostgreSQL stays unreachable (the port closed) in the outage phase.
const OUTAGE: Duration = Duration::from_secs(6);
/// The bound on any request while PostgreSQL is down (the store's acquire timeout is 5 s).
const DOWN_ANSWER_BOUND: Duration = Duration::from_secs(10);
/// The bound on the time from PostgreSQL's return to the first successful write.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// How long the connections are cut again and again, and how often.
const FLAPPING: Duration = Duration::from_secs(4);
const CUT_EVERY: Duration = Duration::from_millis(150);
/// How long every connection is reset as soon as it is accepted.
const REJECT: Duration = Duration::from_secs(6);
/// How long the connection stays frozen: longer than the store's operation timeout (15 s), so
/// that every client sees its request through to an answer while frozen.
const FREEZE: Duration = Duration::from_secs(18);
/// The bound on any request while PostgreSQL is frozen: the operation timeout plus a margin.
const FROZEN_ANSWER_BOUND: Duration = Duration::from_secs(20);
/// The reuse grace the instance runs with. A refresh answered 503 may still have committed (the
/// answer to COMMIT was lost); the client then retries with the same token, which is replayed
/// only within the grace. The freeze here outlasts the default 10 s, so the grace is longer (the
/// test also passed with the default when tried, since retries come quickly).
const REUSE_GRACE: &str = "5m";

// ---------------------------------------------------------------------------------------------
// The switchable proxy.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Up,
    /// Closes every connection at once, and the port: new connections are refused.
    Down,
    /// Closes every connection at once; new connections are accepted and closed at once (a
    /// server that crashes during start-up, a middlebox resetting everything).
    Reject,
    /// Accepts connections but forwards nothing, either way, on old or new connections.
    Frozen,
}

/// The proxy's switch: its mode, and how many times every open connection was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch {
    mode: Mode,
    cuts: u64,
}

struct Proxy {
    address: SocketAddr,
    switch: watch::Sender<Switch>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (switch, switches) = watch::channel(Switch {
            mode: Mode::Up,
            cuts: 0,
        });
        let accepting = tokio::spawn(accept_loop(listener, address, target, switches));
        Self {
            address,
            switch,
            accepting,
        }
    }

    fn set(&self, mode: Mode) {
        self.switch.send_modify(|switch| {
            // Every change of mode cuts the connections open (a freeze holds them, silent).
            if switch.mode != mode {
                switch.cuts += 1;
            }
            switch.mode = mode;
        });
    }

    /// Closes every open connection at once and stays as it is (a connection reset, a
    /// PostgreSQL backend killed): in-flight statements, and COMMITs, lose their answer.
    fn cut(&self) {
        self.switch.send_modify(|switch| switch.cuts += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Connection tasks end when the sender goes (they watch it).
        self.accepting.abort();
    }
}

/// Rebinds the proxy's own port, so that the URL the instance knows stays valid.
fn rebind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    address: SocketAddr,
    target: SocketAddr,
    mut switches: watch::Receiver<Switch>,
) {
    let mut listener = Some(listener);
    loop {
        let mode = switches.borrow_and_update().mode;
        if mode == Mode::Down {
            // Closed port: connection attempts are refused, as with a stopped server.
            listener = None;
            if switches.changed().await.is_err() {
                return;
            }
            continue;
        }
        let current = match listener.take() {
            Some(listener) => listener,
            None => {
                let mut attempts = 0;
                loop {
                    match rebind(address) {
                        Ok(listener) => break listener,
                        Err(error) => {
                            attempts += 1;
                            assert!(attempts < 100, "cannot rebind the proxy port: {error}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        };
        tokio::select! {
            accepted = current.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(connection(client, target, switches.clone()));
                }
                listener = Some(current);
            }
            changed = switches.changed() => {
                if changed.is_err() {
                    return;
                }
                listener = Some(current);
            }
        }
    }
}

/// Returns at the first cut after `cuts` (or when the proxy is gone).
async fn next_cut(switches: &mut watch::Receiver<Switch>, cuts: u64) {
    loop {
        if switches.changed().await.is_err() || switches.borrow_and_update().cuts != cuts {
            return;
        }
    }
}

/// One proxied connection: forwards while up and is closed at the next cut, except by a freeze,
/// which stops it forwarding and holds it open (never answered) until the cut after that.
async fn connection(
    mut client: TcpStream,
    target: SocketAddr,
    mut switches: watch::Receiver<Switch>,
) {
    let Switch { mode, cuts } = *switches.borrow_and_update();
    match mode {
        Mode::Down | Mode::Reject => {}
        Mode::Frozen => next_cut(&mut switches, cuts).await,
        Mode::Up => {
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                () = next_cut(&mut switches, cuts) => {}
            }
            let now = *switches.borrow();
            if now.mode == Mode::Frozen {
                next_cut(&mut switches, now.cuts).await;
            }
        }
    }
}

/// The host and port of a `postgres://` URL, and the URL with them replaced by `proxy`.
async fn via_proxy(url: &str, proxy_placeholder: &str) -> Option<(SocketAddr, String)> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':').unwrap_or("5432"))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (host_port, "5432"),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let rewritten = format!(
        "{}{userinfo}{proxy_placeholder}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    );
    Some((target, rewritten))
}

// ---------------------------------------------------------------------------------------------
// The schema and the instance.

/// How many of `tokens` are spent in storage.
async fn spent_among(schema: &PgSchema, tokens: &[String]) -> i64 {
    use sqlx::Connection as _;
    let mut connection = schema.connect().await;
    let keys: Vec<Vec<u8>> = tokens
        .iter()
        .map(|token| {
            sessiond_core::refresh::RefreshToken::parse(token)
                .expect("a refresh token")
                .hash()
                .0
                .to_vec()
        })
        .collect();
    let value: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NOT NULL AND hash = ANY($1)",
    )
    .bind(keys)
    .fetch_one(&mut connection)
    .await
    .expect("count spent tokens");
    connection.close().await.expect("close");
    value
}

/// A running `sessiond serve`; killed and reaped when dropped. Its stderr is kept.
struct Instance {
    child: Child,
    base: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    fn start(database_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SESSIOND_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .arg("serve")
            .env("RUST_LOG", "warn")
            .env("SESSIOND_DATABASE_URL", database_url)
            .envs(crate::helpers::master_key_env(database_url))
            .env("SESSIOND_ADMIN_KEYS", ADMIN_KEY)
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
            .env("SESSIOND_ISSUER", "http://sessiond.test")
            .env("SESSIOND_RATE_LIMITS", "off")
            .env("SESSIOND_REUSE_GRACE", REUSE_GRACE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sessiond starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let kept = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in pipe.lines() {
                let Ok(line) = line else { break };
                kept.lock().expect("stderr lock").push(line);
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let pipe = BufReader::new(child.stdout.take().expect("stdout is piped"));
        std::thread::spawn(move || {
            for line in pipe.lines() {
                let Ok(line) = line else { break };
                if line.starts_with(LISTENING) {
                    let _ = ready_tx.send(line);
                }
            }
        });
        let line = ready_rx
            .recv_timeout(READY_TIMEOUT)
            .unwrap_or_else(|error| {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "no listening line ({error}); exit status {status:?}; stderr:\n{}",
                    stderr.lock().expect("stderr lock").join("\n")
                )
            });
        let address = line.trim_start_matches(LISTENING).trim().to_owned();
        Self {
            child,
            base: format!("http://{address}"),
            stderr,
        }
    }

    /// The instance is still the process that was started: it neither exited nor restarted.
    fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("child status");
        assert!(
            status.is_none(),
            "sessiond exited ({status:?}); stderr:\n{}",
            self.stderr_lines().join("\n")
        );
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and the load.

struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<String>,
    elapsed: Duration,
}

fn client() -> reqwest::Client {
    // Far above every bound asserted, so that a hang is measured rather than cut short.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|value| value.to_str().unwrap_or("?").to_owned());
    let bytes = response.bytes().await.expect("a whole body");
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after,
        elapsed: started.elapsed(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Refresh,
}

/// One request of the load: what it was, when it was sent, what it got, how long it took.
#[derive(Debug, Clone)]
struct Sample {
    kind: Kind,
    sent: Instant,
    done: Instant,
    status: StatusCode,
    error: String,
    retry_after: Option<String>,
}

impl Sample {
    fn elapsed(&self) -> Duration {
        self.done - self.sent
    }

    fn succeeded(&self) -> bool {
        self.status.is_success()
    }
}

/// An acknowledged session: its user and the refresh token of its last acknowledged pair.
#[derive(Debug, Clone)]
struct Acknowledged {
    user: String,
    refresh_token: String,
    refreshes: usize,
}

#[derive(Default)]
struct Ledger {
    samples: Vec<Sample>,
    sessions: HashMap<String, Acknowledged>,
}

/// Creates and refreshes sessions until `stop`, recording every answer and every
/// acknowledgement.
async fn worker(
    index: usize,
    base: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    counter: Arc<AtomicUsize>,
) {
    let client = client();
    // Sessions of this worker, by id: (user, last acknowledged refresh token).
    let mut own: Vec<String> = Vec::new();
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let kind = if own.is_empty() || round.is_multiple_of(3) {
            Kind::Create
        } else {
            Kind::Refresh
        };
        let sent = Instant::now();
        match kind {
            Kind::Create => {
                let user = format!(
                    "fault-user-{index}-{}",
                    counter.fetch_add(1, Ordering::SeqCst)
                );
                let answer = send(
                    client
                        .post(format!("{base}/v1/sessions"))
                        .bearer_auth(ADMIN_KEY)
                        .json(&json!({"user_id": user, "device": {"name": "Laptop"}})),
                )
                .await;
                let mut ledger = ledger.lock().expect("ledger lock");
                if answer.status == StatusCode::CREATED {
                    let id = text(&answer.body["session"], "id").to_owned();
                    ledger.sessions.insert(
                        id.clone(),
                        Acknowledged {
                            user,
                            refresh_token: text(&answer.body, "refresh_token").to_owned(),
                            refreshes: 0,
                        },
                    );
                    own.push(id);
                }
                ledger.samples.push(sample(kind, sent, &answer));
            }
            Kind::Refresh => {
                let id = own[round % own.len()].clone();
                let token = ledger.lock().expect("ledger lock").sessions[&id]
                    .refresh_token
                    .clone();
                let answer = send(
                    client
                        .post(format!("{base}/v1/sessions/refresh"))
                        .json(&json!({ "refresh_token": token })),
                )
                .await;
                let mut ledger = ledger.lock().expect("ledger lock");
                if answer.status == StatusCode::OK {
                    let session = ledger.sessions.get_mut(&id).expect("known session");
                    session.refresh_token = text(&answer.body, "refresh_token").to_owned();
                    session.refreshes += 1;
                }
                // Anything else keeps the last acknowledged token, which the next refresh of
                // this session presents again (a client retrying).
                ledger.samples.push(sample(kind, sent, &answer));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sample(kind: Kind, sent: Instant, answer: &Answer) -> Sample {
    Sample {
        kind,
        sent,
        done: sent + answer.elapsed,
        status: answer.status,
        error: answer.body["error"].as_str().unwrap_or("").to_owned(),
        retry_after: answer.retry_after.clone(),
    }
}

/// Checks the answers of requests sent in `[from, to)`: successes or 503 `unavailable` with
/// `Retry-After`, each within `bound`. Returns (count, 503s, slowest 503, slowest of all).
fn check_window(
    samples: &[Sample],
    from: Instant,
    to: Instant,
    bound: Duration,
    phase: &str,
) -> (usize, usize, Duration, Duration) {
    let mut count = 0;
    let mut unavailable = 0;
    let mut slowest_503 = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    for sample in samples.iter().filter(|s| s.sent >= from && s.sent < to) {
        count += 1;
        slowest = slowest.max(sample.elapsed());
        assert!(
            sample.elapsed() <= bound,
            "{phase}: a {:?} took {:?} (bound {bound:?}) and got {} {}",
            sample.kind,
            sample.elapsed(),
            sample.status,
            sample.error
        );
        if sample.succeeded() {
            continue;
        }
        assert_eq!(
            sample.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{phase}: a {:?} got {} {:?} (never a 500 or a 4xx)",
            sample.kind,
            sample.status,
            sample.error
        );
        assert_eq!(sample.error, "unavailable", "{phase}: {sample:?}");
        assert_eq!(
            sample.retry_after.as_deref(),
            Some("1"),
            "{phase}: a 503 says when to retry: {sample:?}"
        );
        unavailable += 1;
        slowest_503 = slowest_503.max(sample.elapsed());
    }
    (count, unavailable, slowest_503, slowest)
}

/// The slowest request of those in flight at any moment of `[from, to)`.
fn slowest_overlapping(samples: &[Sample], from: Instant, to: Instant) -> Duration {
    samples
        .iter()
        .filter(|s| s.sent < to && s.done > from)
        .map(Sample::elapsed)
        .max()
        .unwrap_or_default()
}

/// Validation needs no storage: a revoked session's token and a garbage token are refused at
/// once.
async fn refused_from_memory(client: &reqwest::Client, base: &str, revoked: &str, phase: &str) {
    for (token, what) in [
        (revoked, "a revoked session's token"),
        ("garbage.not.ajwt", "a garbage token"),
    ] {
        let answer = send(client.get(format!("{base}/v1/sessions")).bearer_auth(token)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{phase}: {what}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "unauthenticated");
        assert!(
            answer.elapsed < Duration::from_secs(1),
            "{phase}: {what} refused after {:?}",
            answer.elapsed
        );
    }
}

/// Waits until a create answers 201 again; returns how long after `since` it was answered.
async fn time_to_first_success(
    ledger: &Mutex<Ledger>,
    since: Instant,
    bound: Duration,
    phase: &str,
) -> Duration {
    loop {
        let first = ledger
            .lock()
            .expect("ledger lock")
            .samples
            .iter()
            .filter(|s| s.sent >= since && s.kind == Kind::Create && s.succeeded())
            .map(|s| s.done)
            .min();
        if let Some(done) = first {
            return done - since;
        }
        assert!(
            since.elapsed() < bound,
            "{phase}: no session created within {bound:?} of PostgreSQL's return, without \
             restarting sessiond"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_or_frozen_under_load_answers_503_and_recovers_losing_nothing() {
    let Some(base_url) = postgres_url() else {
        eprintln!("SESSIOND_TEST_DATABASE_URL is not set: fault test not run");
        return;
    };
    const PLACEHOLDER: &str = "PROXY_ADDRESS";
    let Some((target, templated)) = via_proxy(&base_url, PLACEHOLDER).await else {
        eprintln!("SESSIOND_TEST_DATABASE_URL names no TCP host: fault test not run");
        return;
    };
    let schema = PgSchema::create(&base_url, "fault").await;
    let proxy = Proxy::start(target).await;
    let proxied = schema.url_on(&templated.replace(PLACEHOLDER, &proxy.address.to_string()));
    let mut instance = Instance::start(&proxied);
    let base = instance.base.clone();
    let client = client();

    // Before the load: a live session, and one revoked (the instance keeps it in memory).
    let live = send(
        client
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "fault-live", "device": {"name": "Laptop"}})),
    )
    .await;
    assert_eq!(live.status, StatusCode::CREATED, "{}", live.body);
    let live_access = text(&live.body, "access_token").to_owned();
    let gone = send(
        client
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "fault-gone", "device": {"name": "Laptop"}})),
    )
    .await;
    assert_eq!(gone.status, StatusCode::CREATED, "{}", gone.body);
    let gone_access = text(&gone.body, "access_token").to_owned();
    let revoked = send(
        client
            .delete(format!(
                "{base}/v1/sessions/{}",
                text(&gone.body["session"], "id")
            ))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|index| {
            tokio::spawn(worker(
                index,
                base.clone(),
                Arc::clone(&ledger),
                Arc::clone(&stop),
                Arc::clone(&counter),
            ))
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // --- (1) PostgreSQL down: every connection closed, the port refused.
    let down_at = Instant::now();
    proxy.set(Mode::Down);
    let probes_until = down_at + OUTAGE - Duration::from_millis(500);
    let mut readyz_503 = 0;
    let mut current_statuses = Vec::new();
    let mut probes = 0;
    // Give the instance a moment to notice (the first requests may have been mid-flight).
    tokio::time::sleep(Duration::from_millis(200)).await;
    while Instant::now() < probes_until {
        probes += 1;
        // (5) Readiness says so.
        let ready = send(client.get(format!("{base}/readyz"))).await;
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "/readyz during the outage: {}",
            ready.body
        );
        assert!(
            ready.elapsed <= DOWN_ANSWER_BOUND,
            "/readyz took {:?}",
            ready.elapsed
        );
        readyz_503 += 1;
        // (2) Validation works from memory: a revoked session's token and a garbage token are
        // refused (401), and a live token is not (the listing itself needs storage: 503).
        refused_from_memory(&client, &base, &gone_access, "PostgreSQL down").await;
        let listed = send(
            client
                .get(format!("{base}/v1/sessions"))
                .bearer_auth(&live_access),
        )
        .await;
        assert_eq!(
            listed.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a live token is accepted and the listing is unavailable: {}",
            listed.body
        );
        assert_eq!(listed.body["error"], "unavailable");
        assert_eq!(listed.retry_after.as_deref(), Some("1"));
        let current = send(
            client
                .get(format!("{base}/v1/sessions/current"))
                .bearer_auth(&live_access),
        )
        .await;
        current_statuses.push(current.status.as_u16());
        assert!(
            current.status == StatusCode::OK
                || (current.status == StatusCode::SERVICE_UNAVAILABLE
                    && current.body["error"] == "unavailable"),
            "GET /v1/sessions/current with a live token during the outage: {} {}",
            current.status,
            current.body
        );
        // Needs no storage at all.
        let jwks = send(client.get(format!("{base}/.well-known/jwks.json"))).await;
        assert_eq!(jwks.status, StatusCode::OK);
        let health = send(client.get(format!("{base}/healthz"))).await;
        assert_eq!(health.status, StatusCode::OK);
    }
    let remaining = OUTAGE.saturating_sub(down_at.elapsed());
    tokio::time::sleep(remaining).await;

    // --- (3) PostgreSQL back, sessiond not restarted.
    let up_at = Instant::now();
    proxy.set(Mode::Up);
    let recovery = time_to_first_success(&ledger, up_at, RECOVERY_BOUND, "after the outage").await;
    let ready_after = loop {
        let ready = send(client.get(format!("{base}/readyz"))).await;
        if ready.status == StatusCode::OK {
            break up_at.elapsed();
        }
        assert!(
            up_at.elapsed() < RECOVERY_BOUND,
            "/readyz still {} after {:?}",
            ready.status,
            up_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // --- Connections cut again and again while the port stays open: statements, and COMMITs,
    // in flight lose their answers.
    let flapping_at = Instant::now();
    let mut cuts = 0;
    while flapping_at.elapsed() < FLAPPING {
        proxy.cut();
        cuts += 1;
        tokio::time::sleep(CUT_EVERY).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // --- Every connection reset, new ones closed as soon as they are accepted.
    let reject_at = Instant::now();
    proxy.set(Mode::Reject);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = send(client.get(format!("{base}/readyz"))).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    let readyz_reject = ready.elapsed;
    refused_from_memory(&client, &base, &gone_access, "connections reset").await;
    tokio::time::sleep(REJECT.saturating_sub(reject_at.elapsed())).await;
    let accepted_at = Instant::now();
    proxy.set(Mode::Up);
    let recovery_reject =
        time_to_first_success(&ledger, accepted_at, RECOVERY_BOUND, "after the resets").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // --- (6) PostgreSQL frozen: connections accepted, nothing answered.
    let frozen_at = Instant::now();
    proxy.set(Mode::Frozen);
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused_from_memory(&client, &base, &gone_access, "PostgreSQL frozen").await;
    let ready = send(client.get(format!("{base}/readyz"))).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    let readyz_frozen = ready.elapsed;
    tokio::time::sleep(FREEZE.saturating_sub(frozen_at.elapsed())).await;
    let thawed_at = Instant::now();
    proxy.set(Mode::Up);
    let recovery_frozen =
        time_to_first_success(&ledger, thawed_at, RECOVERY_BOUND, "after the freeze").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_from = Instant::now() - Duration::from_secs(1);

    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker runs to the end");
    }
    instance.assert_running();
    let total = started.elapsed();

    // --- The answers.
    let ledger = Arc::try_unwrap(ledger)
        .unwrap_or_else(|_| panic!("workers are done"))
        .into_inner()
        .expect("ledger lock");
    let samples = &ledger.samples;
    for sample in samples {
        assert!(
            sample.succeeded() || sample.status == StatusCode::SERVICE_UNAVAILABLE,
            "only successes and 503s: {sample:?}"
        );
    }
    let (before, _, _, before_max) = check_window(
        samples,
        started,
        down_at,
        DOWN_ANSWER_BOUND,
        "before the outage",
    );
    // (A request in flight at the cut may be answered 503: it is counted with the outage.)
    let failed_before: Vec<_> = samples
        .iter()
        .filter(|s| s.done < down_at && !s.succeeded())
        .collect();
    assert!(
        failed_before.is_empty(),
        "before the outage: {failed_before:?}"
    );
    let (during, during_503, down_max_503, down_max) = check_window(
        samples,
        down_at,
        up_at,
        DOWN_ANSWER_BOUND,
        "PostgreSQL down",
    );
    assert!(during_503 > 0, "the outage was seen by the load");
    check_window(
        samples,
        up_at,
        flapping_at,
        DOWN_ANSWER_BOUND,
        "recovery after the outage",
    );
    let (flapping, flapping_503, _, flapping_max) = check_window(
        samples,
        flapping_at,
        reject_at,
        DOWN_ANSWER_BOUND,
        "connections cut",
    );
    let (rejected, rejected_503, rejected_max_503, rejected_max) = check_window(
        samples,
        reject_at,
        accepted_at,
        DOWN_ANSWER_BOUND,
        "connections reset",
    );
    assert!(rejected_503 > 0, "the resets were seen by the load");
    // Requests still in flight when the freeze begins wait as frozen ones do.
    check_window(
        samples,
        accepted_at,
        frozen_at,
        FROZEN_ANSWER_BOUND,
        "recovery before the freeze",
    );
    assert!(
        samples
            .iter()
            .filter(|s| s.sent >= reject_at + Duration::from_secs(1) && s.done < accepted_at)
            .all(|s| !s.succeeded()),
        "nothing succeeds while every connection is reset"
    );
    // Sent a second into the outage: no request can have got through.
    let deep_outage: Vec<_> = samples
        .iter()
        .filter(|s| s.sent >= down_at + Duration::from_secs(1) && s.done < up_at)
        .collect();
    assert!(
        deep_outage.iter().all(|s| !s.succeeded()),
        "nothing succeeds while PostgreSQL is down"
    );
    let (frozen, frozen_503, frozen_max_503, frozen_max) = check_window(
        samples,
        frozen_at,
        thawed_at,
        FROZEN_ANSWER_BOUND,
        "PostgreSQL frozen",
    );
    // The freeze is seen by requests sent during it, or, when the clients were all busy
    // with requests sent just before it (each then waits out the operation timeout), by those.
    let overlapping_503 = samples
        .iter()
        .filter(|s| s.sent < thawed_at && s.done > frozen_at)
        .filter(|s| s.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(overlapping_503 > 0, "the freeze was seen by the load");
    let (_, quiet_503, _, _) = check_window(
        samples,
        quiet_from,
        Instant::now(),
        DOWN_ANSWER_BOUND,
        "after recovery",
    );
    assert_eq!(quiet_503, 0, "no 503 once recovered");

    let down_slowest = slowest_overlapping(samples, down_at, up_at);
    assert!(down_slowest <= DOWN_ANSWER_BOUND, "{down_slowest:?}");
    let frozen_slowest = slowest_overlapping(samples, frozen_at, thawed_at);
    assert!(frozen_slowest <= FROZEN_ANSWER_BOUND, "{frozen_slowest:?}");

    // --- (4) Nothing acknowledged was lost.
    let sessions = &ledger.sessions;
    for (id, session) in sessions {
        let listed = send(
            client
                .get(format!("{base}/v1/users/{}/sessions", session.user))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        let ids: Vec<&str> = listed.body["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|view| text(view, "id"))
            .collect();
        assert_eq!(ids, [id.as_str()], "acknowledged session {id} is kept");
    }
    // Last acknowledged tokens that a refresh answered 503 had spent all the same (its COMMIT
    // went through, its answer did not): presenting them again replays that refresh's pair.
    let tokens: Vec<String> = sessions.values().map(|s| s.refresh_token.clone()).collect();
    let spent_unacknowledged = spent_among(&schema, &tokens).await;
    for (id, session) in sessions {
        let answer = send(
            client
                .post(format!("{base}/v1/sessions/refresh"))
                .json(&json!({ "refresh_token": session.refresh_token })),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "the last acknowledged refresh token of session {id} ({} refreshes) still works: {}",
            session.refreshes,
            answer.body
        );
        assert_eq!(answer.body["session"]["id"], id.as_str());
        // A token that an unacknowledged (503) refresh spent anyway is replayed within the
        // grace: the successor is then the one that refresh minted, already in storage.
        let next = send(
            client
                .post(format!("{base}/v1/sessions/refresh"))
                .json(&json!({ "refresh_token": text(&answer.body, "refresh_token") })),
        )
        .await;
        assert_eq!(
            next.status,
            StatusCode::OK,
            "and its successor: {}",
            next.body
        );
    }

    // Nothing half-written: every session has its creation event and exactly one unspent
    // token, and every spent token's successor exists.
    let orphans = schema
        .scalar(
            "SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS (
                 SELECT 1 FROM audit_events a
                 WHERE a.session_id = s.id AND a.type = 'session.created')",
        )
        .await;
    assert_eq!(orphans, 0, "sessions without their creation event");
    let unspent = schema
        .scalar(
            "SELECT COUNT(*) FROM sessions s WHERE (
                 SELECT COUNT(*) FROM refresh_tokens r
                 WHERE r.session_id = s.id AND r.spent_at IS NULL) <> 1",
        )
        .await;
    assert_eq!(
        unspent, 0,
        "sessions without exactly one unspent refresh token"
    );
    let dangling = schema
        .scalar(
            "SELECT COUNT(*) FROM refresh_tokens r WHERE r.spent_at IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens n WHERE n.hash = r.successor_hash)",
        )
        .await;
    assert_eq!(dangling, 0, "spent tokens whose successor is missing");
    let stored = schema
        .scalar("SELECT COUNT(*) FROM sessions WHERE user_id LIKE 'fault-user-%'")
        .await;
    let acknowledged = i64::try_from(sessions.len()).expect("fits");
    assert!(
        stored >= acknowledged,
        "{stored} stored < {acknowledged} acknowledged"
    );
    let revoked_count = schema
        .scalar("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
        .await;
    assert_eq!(
        revoked_count, 1,
        "only the session the test revoked is revoked"
    );
    instance.assert_running();

    let errors: Vec<String> = instance
        .stderr_lines()
        .into_iter()
        .filter(|line| line.contains("ERROR") || line.contains("panicked"))
        .collect();
    assert!(
        errors.is_empty(),
        "the instance logged errors:\n{}",
        errors.join("\n")
    );

    // Replays: refreshes retried after a 503 whose rotation had committed all the same.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let outcomes: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("sessiond_refreshes_total{"))
        .collect();
    let acknowledged_refreshes: usize = sessions.values().map(|s| s.refreshes).sum();
    println!(
        "fault test ({total:.1?}, {WORKERS} clients, {} requests): {} sessions and \
         {acknowledged_refreshes} refreshes acknowledged, all kept; {} more sessions stored \
         whose creation was answered 503 but committed; {spent_unacknowledged} last acknowledged \
         refresh tokens spent by a refresh answered 503 (replayed afterwards); {outcomes:?}",
        samples.len(),
        sessions.len(),
        stored - acknowledged,
    );
    println!(
        "  before: {before} requests, slowest {before_max:?}; /readyz probes during the outage: \
         {readyz_503}/{probes} answered 503; GET /v1/sessions/current with a live token \
         during the outage answered {current_statuses:?}"
    );
    println!(
        "  PostgreSQL down ({OUTAGE:?}): {during} requests, {during_503} answered 503 \
         unavailable + Retry-After, slowest 503 {down_max_503:?}, slowest of all {down_max:?} \
         (of all requests in flight during the outage: {down_slowest:?}); \
         first session created {recovery:?} after PostgreSQL returned, /readyz 200 after \
         {ready_after:?}"
    );
    println!(
        "  connections cut every {CUT_EVERY:?} for {FLAPPING:?} ({cuts} cuts): {flapping} \
         requests, {flapping_503} answered 503, slowest {flapping_max:?}"
    );
    println!(
        "  connections reset on accept ({REJECT:?}): {rejected} requests, {rejected_503} \
         answered 503, slowest 503 {rejected_max_503:?}, slowest of all {rejected_max:?}; \
         /readyz answered 503 in {readyz_reject:?}; first session created \
         {recovery_reject:?} after the resets ended"
    );
    println!(
        "  PostgreSQL frozen ({FREEZE:?}): {frozen} requests, {frozen_503} answered 503, \
         slowest 503 {frozen_max_503:?}, slowest of all {frozen_max:?} (of all requests in \
         flight during the freeze: {frozen_slowest:?}); /readyz answered 503 in \
         {readyz_frozen:?}; first session created {recovery_frozen:?} after the thaw"
    );
    drop(instance);
    drop(proxy);
}
