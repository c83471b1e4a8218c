//! The real `sessiond` binary as a child process: start-up, readiness, `kill -9`, graceful
//! stops, restarts on the same database, bad configuration, and the `sessions`/`keys`/`migrate`
//! subcommands acting on a running server's database.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{ADMIN_KEY, Answer, PgSchema, postgres_url, text};
use crate::keys::kid_of;

/// How long a child may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a one-shot command (`migrate`, `sessions ...`, a refused `serve`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's reuse grace window (the default, `10s`).
const REUSE_GRACE: Duration = Duration::from_secs(10);
const LISTENING: &str = "sessiond listening on http://";

/// A port nobody listens on right now: bound, read and released.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// `sessiond` with none of this process's `SESSIOND_*` variables and quiet logs.
fn sessiond() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SESSIOND_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "warn").stdin(Stdio::null());
    command
}

/// The settings every test server here uses: its database in `dir`, an admin key, `port`.
///
/// The issuer is fixed: by default it is `http://<listen>`, so a restart on another port would
/// (rightly) refuse every token issued before it as coming from another issuer.
fn configured(dir: &Path, port: u16) -> Command {
    let mut command = sessiond();
    command
        .env("SESSIOND_DATABASE_URL", database_url(dir))
        .env("SESSIOND_ADMIN_KEYS", ADMIN_KEY)
        .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
        .env("SESSIOND_ISSUER", "http://sessiond.test")
        .env("SESSIOND_RATE_LIMITS", "off");
    command
}

fn database_path(dir: &Path) -> PathBuf {
    dir.join("sessiond.db")
}

fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", database_path(dir).display())
}

/// Collects a child's pipe into a shared string on a thread of its own.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let sink = buffer.clone();
    std::thread::spawn(move || {
        let mut chunk = [0_u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .expect("pipe buffer lock")
                    .push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    });
    buffer
}

fn snapshot(buffer: &Mutex<String>) -> String {
    buffer.lock().expect("pipe buffer lock").clone()
}

/// A running `sessiond serve`; killed (SIGKILL) and reaped when dropped.
struct Server {
    child: Child,
    base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Runs `serve` with `command`'s settings on `port` and waits for its listening line.
    fn start(mut command: Command, port: u16) -> Self {
        let mut child = command
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sessiond starts");
        let stderr = collect(child.stderr.take().expect("stderr is piped"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let pipe = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            // Keeps draining after the listening line so the child never blocks on a full pipe.
            for line in pipe.lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .expect("stdout lock")
                    .push_str(&format!("{line}\n"));
                if line.starts_with(LISTENING) {
                    let _ = ready_tx.send(line);
                }
            }
        });
        let mut server = Self {
            child,
            base: String::new(),
            stdout,
            stderr,
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => {
                let address = line.trim_start_matches(LISTENING).trim();
                assert_eq!(
                    address,
                    format!("127.0.0.1:{port}"),
                    "it listens where SESSIOND_LISTEN says: {line:?}"
                );
                server.base = format!("http://{address}");
                server
            }
            Err(error) => {
                let status = server.child.try_wait().ok().flatten();
                // Let the stderr thread catch up with a child that has just exited.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "no listening line ({error}); exit status {status:?}\nstdout:\n{}\nstderr:\n{}",
                    snapshot(&server.stdout),
                    snapshot(&server.stderr)
                );
            }
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn stderr(&self) -> String {
        snapshot(&self.stderr)
    }

    /// SIGKILL: no chance to finish anything.
    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL is sent");
        let status = self.child.wait().expect("the killed child is reaped");
        assert!(!status.success(), "a killed server does not exit 0");
    }

    /// SIGTERM, then waits for the exit.
    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sessiond did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a one-shot command left behind.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` to its end, killing it (and failing) after `COMMAND_TIMEOUT`.
fn run(command: &mut Command) -> Finished {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sessiond starts");
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {COMMAND_TIMEOUT:?}; stderr:\n{}",
                snapshot(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes close with the child; give the reader threads a moment to finish.
    let settle = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&stdout) + Arc::strong_count(&stderr) > 2 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(5));
    }
    Finished {
        status,
        stdout: snapshot(&stdout),
        stderr: snapshot(&stderr),
    }
}

/// The non-empty lines of `stderr`, with any `WARNING` lines left out.
fn reason_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("WARNING"))
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// Sends `request`; `Err` when no complete answer came back (connection refused or cut).
async fn try_send(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        body,
        headers,
    })
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    try_send(request).await.expect("the server answers")
}

async fn create_session(client: &reqwest::Client, base: &str, user: &str) -> Value {
    let answer = send(
        client
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": user, "device": {"name": "Laptop"}})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body
}

fn refresh_request(client: &reqwest::Client, base: &str, token: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/v1/sessions/refresh"))
        .json(&json!({ "refresh_token": token }))
}

async fn current(client: &reqwest::Client, base: &str, access_token: &str) -> Answer {
    send(
        client
            .get(format!("{base}/v1/sessions/current"))
            .bearer_auth(access_token),
    )
    .await
}

async fn own_sessions(client: &reqwest::Client, base: &str, access_token: &str) -> Answer {
    send(
        client
            .get(format!("{base}/v1/sessions"))
            .bearer_auth(access_token),
    )
    .await
}

fn session_ids(list: &Value) -> Vec<&str> {
    list["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("a session list: {list}"))
        .iter()
        .map(|session| text(session, "id"))
        .collect()
}

/// One session of the kill test: the tokens of its last acknowledged (200) answer.
#[derive(Clone)]
struct Acknowledged {
    user: String,
    id: String,
    first_access_token: String,
    refresh_token: String,
    access_token: String,
    refreshes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut server = Server::start(configured(dir.path(), port), port);
    let client = client();

    let mut tracked = Vec::new();
    for n in 0..20 {
        let user = format!("kill-nine-user-{n}");
        let created = create_session(&client, &server.base, &user).await;
        tracked.push(Acknowledged {
            user,
            id: text(&created["session"], "id").to_owned(),
            first_access_token: text(&created, "access_token").to_owned(),
            refresh_token: text(&created, "refresh_token").to_owned(),
            access_token: text(&created, "access_token").to_owned(),
            refreshes: 0,
        });
    }
    let tracked = Arc::new(Mutex::new(tracked));
    let unexpected = Arc::new(Mutex::new(Vec::<String>::new()));
    let cut_off = Arc::new(AtomicUsize::new(0));

    // One refresher per session, each spending its latest acknowledged token once.
    let mut refreshers = Vec::new();
    for index in 0..20 {
        let (tracked, unexpected, cut_off) = (tracked.clone(), unexpected.clone(), cut_off.clone());
        let (client, base) = (client.clone(), server.base.clone());
        refreshers.push(tokio::spawn(async move {
            loop {
                let token = tracked.lock().expect("lock")[index].refresh_token.clone();
                match try_send(refresh_request(&client, &base, &token)).await {
                    Ok(answer) if answer.status == StatusCode::OK => {
                        let mut tracked = tracked.lock().expect("lock");
                        let session = &mut tracked[index];
                        session.refresh_token = text(&answer.body, "refresh_token").to_owned();
                        session.access_token = text(&answer.body, "access_token").to_owned();
                        session.refreshes += 1;
                    }
                    Ok(answer) => {
                        unexpected.lock().expect("lock").push(format!(
                            "session #{index}: {} {}",
                            answer.status, answer.body
                        ));
                        return;
                    }
                    // In flight when the server died: unacknowledged, so it proves nothing.
                    Err(_) => {
                        cut_off.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill_9();
    let killed_at = Instant::now();
    for refresher in refreshers {
        tokio::time::timeout(Duration::from_secs(10), refresher)
            .await
            .expect("every refresher stops once the server is gone")
            .expect("refresher task");
    }
    let unexpected = unexpected.lock().expect("lock").clone();
    assert!(
        unexpected.is_empty(),
        "refreshes answered other than 200 before the kill: {unexpected:#?}"
    );
    let tracked = tracked.lock().expect("lock").clone();
    let acknowledged: usize = tracked.iter().map(|session| session.refreshes).sum();
    assert!(
        acknowledged >= 20,
        "the refreshers got going before the kill ({acknowledged} acknowledged refreshes)"
    );
    eprintln!(
        "kill -9 after {acknowledged} acknowledged refreshes; {} cut off in flight",
        cut_off.load(Ordering::Relaxed)
    );

    let port = free_port();
    let restarted = Server::start(configured(dir.path(), port), port);
    let base = restarted.base.clone();
    assert!(
        killed_at.elapsed() < REUSE_GRACE / 2,
        "restart took {:?}: too close to the grace window for the checks below",
        killed_at.elapsed()
    );

    for session in &tracked {
        let listed = send(
            client
                .get(format!("{base}/v1/users/{}/sessions", session.user))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        assert!(
            session_ids(&listed.body).contains(&session.id.as_str()),
            "session {} of {} survives the kill: {}",
            session.id,
            session.user,
            listed.body
        );

        // Signing keys were persisted: tokens from before the kill still verify.
        for access_token in [&session.first_access_token, &session.access_token] {
            let answer = current(&client, &base, access_token).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            assert_eq!(answer.body["id"], session.id.as_str());
        }
    }

    // Every acknowledged rotation is in the file; at most the one in flight beyond it.
    let mut committed_in_flight = 0;
    {
        let connection = rusqlite::Connection::open_with_flags(
            database_path(dir.path()),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open database");
        for session in &tracked {
            let stored: i64 = connection
                .query_row(
                    // A token's key is 32 bytes; the session's activity row (28) is not one.
                    "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?1 AND length(hash) = 32",
                    [&session.id],
                    |row| row.get(0),
                )
                .expect("query runs");
            let acknowledged = i64::try_from(session.refreshes).expect("count fits") + 1;
            assert!(
                stored == acknowledged || stored == acknowledged + 1,
                "session {}: {acknowledged} refresh tokens acknowledged, {stored} stored",
                session.id
            );
            if stored > acknowledged {
                committed_in_flight += 1;
            }
        }
        connection
            .close()
            .map_err(|(_, error)| error)
            .expect("close");
    }
    eprintln!(
        "{committed_in_flight} of 20 sessions had an unacknowledged rotation committed \
         (their last acknowledged token is answered from the grace window)"
    );

    for session in &tracked {
        // Either unspent, or spent by an unacknowledged refresh whose successor is replayed.
        let answer = send(refresh_request(&client, &base, &session.refresh_token)).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "the last acknowledged refresh token of session {} ({} refreshes) still works: {}",
            session.id,
            session.refreshes,
            answer.body
        );
        assert_eq!(answer.body["session"]["id"], session.id.as_str());
        let next = send(refresh_request(
            &client,
            &base,
            text(&answer.body, "refresh_token"),
        ))
        .await;
        assert_eq!(
            next.status,
            StatusCode::OK,
            "and its successor: {}",
            next.body
        );
    }
    drop(restarted);
}

#[tokio::test]
async fn a_restart_keeps_tokens_valid_and_revocations_in_force() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut server = Server::start(configured(dir.path(), port), port);
    let client = client();
    let live = create_session(&client, &server.base, "dave").await;
    let revoked = create_session(&client, &server.base, "dave").await;
    let answer = send(
        client
            .delete(format!(
                "{}/v1/sessions/{}",
                server.base,
                text(&revoked["session"], "id")
            ))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);

    let status = server.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "SIGTERM stops the server cleanly: {status:?}; stderr:\n{}",
        server.stderr()
    );

    let port = free_port();
    let restarted = Server::start(configured(dir.path(), port), port);
    let base = &restarted.base;
    let answer = current(&client, base, text(&live, "access_token")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["id"], live["session"]["id"]);
    let answer = own_sessions(&client, base, text(&live, "access_token")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        session_ids(&answer.body),
        [text(&live["session"], "id")],
        "only the live session is listed"
    );

    // Both the route that reads the session and one that trusts the token alone refuse it.
    for answer in [
        current(&client, base, text(&revoked, "access_token")).await,
        own_sessions(&client, base, text(&revoked, "access_token")).await,
    ] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.error_code(), "unauthenticated");
    }
    let answer = send(refresh_request(
        &client,
        base,
        text(&revoked, "refresh_token"),
    ))
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.body["reason"], "revoked");
    let answer = send(refresh_request(&client, base, text(&live, "refresh_token"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

type BadConfiguration = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn bad_configuration_stops_start_up_with_a_one_line_reason() {
    // (what is wrong, the settings, what the reason must mention)
    let cases: [BadConfiguration; 4] = [
        (
            "a short admin key",
            &[("SESSIOND_ADMIN_KEYS", "short")],
            &["SESSIOND_ADMIN_KEYS: key #1 is shorter than 32 characters"],
        ),
        (
            "an idle timeout above the absolute one",
            &[
                ("SESSIOND_ADMIN_KEYS", ADMIN_KEY),
                ("SESSIOND_IDLE_TIMEOUT", "40d"),
                ("SESSIOND_ABSOLUTE_TIMEOUT", "30d"),
            ],
            &["SESSIOND_IDLE_TIMEOUT (40d) must not exceed SESSIOND_ABSOLUTE_TIMEOUT (30d)"],
        ),
        (
            "an idle timeout above the default absolute one",
            &[
                ("SESSIOND_ADMIN_KEYS", ADMIN_KEY),
                ("SESSIOND_IDLE_TIMEOUT", "40d"),
            ],
            &[
                "SESSIOND_IDLE_TIMEOUT (40d)",
                "SESSIOND_ABSOLUTE_TIMEOUT (30d (default))",
            ],
        ),
        (
            "production without admin keys",
            &[
                ("SESSIOND_ENV", "production"),
                ("SESSIOND_ISSUER", "https://sessions.example.com"),
            ],
            &["SESSIOND_ADMIN_KEYS"],
        ),
    ];
    for (case, settings, mentions) in cases {
        let dir = TempDir::new().expect("temp dir");
        let mut command = sessiond();
        command
            .arg("serve")
            .env("SESSIOND_DATABASE_URL", database_url(dir.path()))
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{}", free_port()))
            .envs(settings.iter().copied());
        let started = Instant::now();
        let finished = run(&mut command);
        assert!(
            !finished.status.success(),
            "{case}: start-up is refused; stdout:\n{}",
            finished.stdout
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{case}: refused at once, not after {:?}",
            started.elapsed()
        );
        assert!(
            !finished.stdout.contains("listening"),
            "{case}: it never listens: {}",
            finished.stdout
        );
        let lines = reason_lines(&finished.stderr);
        assert_eq!(
            lines.len(),
            1,
            "{case}: exactly one line of reason: {:?}",
            finished.stderr
        );
        let reason = lines[0];
        assert!(reason.starts_with("sessiond:"), "{case}: {reason:?}");
        // Exactly: the variable names are what the operator has to find and change.
        for mention in mentions {
            assert!(
                reason.contains(mention),
                "{case}: {reason:?} mentions {mention:?}"
            );
        }
        assert!(
            !database_path(dir.path()).exists(),
            "{case}: nothing is created before the configuration is accepted"
        );
    }
}

#[tokio::test]
async fn cli_lists_and_revokes_sessions_in_the_database_while_the_server_runs() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let server = Server::start(configured(dir.path(), port), port);
    let client = client();
    let created = create_session(&client, &server.base, "carol").await;
    let id = text(&created["session"], "id");
    let access_token = text(&created, "access_token");
    // The token-only route has put nothing of this session in its caches yet.
    assert_eq!(
        own_sessions(&client, &server.base, access_token)
            .await
            .status,
        StatusCode::OK
    );

    let listed =
        run(configured(dir.path(), port).args(["sessions", "list", "--user", "carol", "--json"]));
    assert!(listed.status.success(), "list: {}", listed.stderr);
    let list: Value = serde_json::from_str(&listed.stdout)
        .unwrap_or_else(|error| panic!("list --json prints JSON ({error}): {}", listed.stdout));
    assert_eq!(session_ids(&list), [id], "{list}");
    assert_eq!(list["sessions"][0]["user_id"], "carol");

    let revoked = run(configured(dir.path(), port).args(["sessions", "revoke", id]));
    assert!(
        revoked.status.success(),
        "revoke: {}{}",
        revoked.stdout,
        revoked.stderr
    );
    let revoked_at = Instant::now();

    // The token-only route trusts the in-memory revoked set, which the server refreshes from
    // the database about once a second: poll it first, so that is what gets measured (a call to
    // /v1/sessions/current reads the session and would teach the set at once).
    loop {
        let token_only = own_sessions(&client, &server.base, access_token).await;
        if token_only.status == StatusCode::UNAUTHORIZED {
            assert_eq!(token_only.error_code(), "unauthenticated");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the running server still accepts a session revoked by the CLI {:?} ago: \
             GET /v1/sessions {} {}",
            revoked_at.elapsed(),
            token_only.status,
            token_only.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "revocation by the CLI in force after {:?}",
        revoked_at.elapsed()
    );
    loop {
        let read = current(&client, &server.base, access_token).await;
        if read.status == StatusCode::UNAUTHORIZED {
            assert_eq!(read.error_code(), "unauthenticated");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "GET /v1/sessions/current still accepts a session revoked by the CLI {:?} ago: {} {}",
            revoked_at.elapsed(),
            read.status,
            read.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let answer = send(refresh_request(
        &client,
        &server.base,
        text(&created, "refresh_token"),
    ))
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.error_code(), "invalid_refresh_token");
    assert_eq!(answer.body["reason"], "revoked");

    let listed =
        run(configured(dir.path(), port).args(["sessions", "list", "--user", "carol", "--json"]));
    assert!(listed.status.success(), "list: {}", listed.stderr);
    let list: Value = serde_json::from_str(&listed.stdout).expect("list --json prints JSON");
    assert!(
        session_ids(&list).is_empty(),
        "no active sessions left: {list}"
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    let missing = run(configured(dir.path(), port).args(["sessions", "revoke", &unknown]));
    assert!(
        !missing.status.success(),
        "revoking an unknown session fails"
    );
    let lines = reason_lines(&missing.stderr);
    assert_eq!(lines.len(), 1, "one line: {:?}", missing.stderr);
    assert!(lines[0].starts_with("sessiond:"), "{:?}", lines[0]);
    assert!(lines[0].contains(&unknown), "names the id: {:?}", lines[0]);
}

/// `keys rotate` and `keys retire` from the command line while a server runs on the same
/// database: the server signs with the new key and refuses the retired one within seconds,
/// without a restart, and old tokens stay valid until their key is retired.
async fn cli_rotates_and_retires_keys_while_the_server_runs(database_url: &str) {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let with_database = |command: &mut Command| {
        command
            .env("SESSIOND_DATABASE_URL", database_url)
            .envs(crate::helpers::master_key_env(database_url));
    };
    let mut serve = configured(dir.path(), port);
    with_database(&mut serve);
    let server = Server::start(serve, port);
    let client = client();
    let keys_command = |args: &[&str]| {
        let mut command = configured(dir.path(), port);
        with_database(&mut command);
        command.arg("keys").args(args);
        run(&mut command)
    };
    let published = |client: reqwest::Client, base: String| async move {
        let jwks = send(client.get(format!("{base}/.well-known/jwks.json"))).await;
        let mut kids: Vec<String> = jwks.body["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| text(key, "kid").to_owned())
            .collect();
        kids.sort();
        kids
    };

    let old_token = text(
        &create_session(&client, &server.base, "dana").await,
        "access_token",
    )
    .to_owned();
    let old_kid = kid_of(&old_token);

    let list_keys = || {
        let listed = keys_command(&["list", "--json"]);
        assert!(listed.status.success(), "list: {}", listed.stderr);
        let list: Value = serde_json::from_str(&listed.stdout)
            .unwrap_or_else(|error| panic!("list --json prints JSON ({error}): {}", listed.stdout));
        list["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| (text(key, "kid").to_owned(), text(key, "state").to_owned()))
            .collect::<Vec<_>>()
    };

    // A rotation publishes its key first: listed as `next`, in the JWK Set within seconds,
    // while the server keeps signing with the old key.
    let staged = keys_command(&["rotate"]);
    assert!(
        staged.status.success(),
        "rotate: {}{}",
        staged.stdout,
        staged.stderr
    );
    assert!(
        staged
            .stdout
            .contains("is published now and signs new tokens from"),
        "{}",
        staged.stdout
    );
    let listed = list_keys();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], (old_kid.clone(), "signing".to_owned()));
    assert_eq!(listed[1].1, "next", "{listed:?}");
    let next_kid = listed[1].0.clone();
    assert!(staged.stdout.contains(&next_kid), "{}", staged.stdout);
    let started = Instant::now();
    while !published(client.clone(), server.base.clone())
        .await
        .contains(&next_kid)
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the next key is not published after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = create_session(&client, &server.base, "erin").await;
    assert_eq!(
        kid_of(text(&created, "access_token")),
        old_kid,
        "not signing before the publication delay"
    );
    let again = keys_command(&["rotate"]);
    assert!(!again.status.success(), "a second staged rotation waits");
    let lines = reason_lines(&again.stderr);
    assert_eq!(lines.len(), 1, "one line: {:?}", again.stderr);
    assert!(lines[0].contains("already published"), "{:?}", lines[0]);

    // The emergency rotation signs at once.
    let rotated = keys_command(&["rotate", "--now"]);
    assert!(
        rotated.status.success(),
        "rotate --now: {}{}",
        rotated.stdout,
        rotated.stderr
    );
    assert!(rotated.stdout.contains("rotated now"), "{}", rotated.stdout);
    let listed = list_keys();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let state_of = |kid: &str| {
        listed
            .iter()
            .find(|(listed_kid, _)| listed_kid == kid)
            .map(|(_, state)| state.clone())
    };
    assert_eq!(state_of(&old_kid).as_deref(), Some("verifying"));
    assert_eq!(
        state_of(&next_kid).as_deref(),
        Some("verifying"),
        "the staged key never signs"
    );
    let new_kid = listed
        .iter()
        .find(|(_, state)| state == "signing")
        .map(|(kid, _)| kid.clone())
        .expect("a signing key is listed");
    assert_ne!(new_kid, old_kid);
    assert!(rotated.stdout.contains(&new_kid), "{}", rotated.stdout);
    let table = keys_command(&["list"]);
    assert!(table.status.success(), "list: {}", table.stderr);
    assert!(
        table.stdout.contains(&old_kid)
            && table.stdout.contains(&new_kid)
            && table.stdout.contains("SIGNS FROM"),
        "{}",
        table.stdout
    );

    let started = Instant::now();
    loop {
        let created = create_session(&client, &server.base, "erin").await;
        if kid_of(text(&created, "access_token")) == new_kid {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the running server still signs with {old_kid} {:?} after `keys rotate`",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "a rotation by the CLI in force after {:?}",
        started.elapsed()
    );
    let mut all = vec![old_kid.clone(), next_kid.clone(), new_kid.clone()];
    all.sort();
    assert_eq!(published(client.clone(), server.base.clone()).await, all);
    assert_eq!(
        current(&client, &server.base, &old_token).await.status,
        StatusCode::OK,
        "a rotation never invalidates a live token"
    );

    let refused = keys_command(&["retire", &new_kid]);
    assert!(
        !refused.status.success(),
        "the signing key is never retired"
    );
    let lines = reason_lines(&refused.stderr);
    assert_eq!(lines.len(), 1, "one line: {:?}", refused.stderr);
    assert!(lines[0].contains("rotate first"), "{:?}", lines[0]);

    let retired = keys_command(&["retire", &old_kid]);
    assert!(
        retired.status.success(),
        "retire: {}{}",
        retired.stdout,
        retired.stderr
    );
    let started = Instant::now();
    loop {
        let answer = current(&client, &server.base, &old_token).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the running server still accepts a token of a key retired {:?} ago",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut remaining = vec![next_kid, new_kid];
    remaining.sort();
    assert_eq!(
        published(client.clone(), server.base.clone()).await,
        remaining
    );
    drop(server);
}

#[tokio::test]
async fn cli_rotates_and_retires_keys_while_the_server_runs_on_sqlite() {
    let dir = TempDir::new().expect("temp dir");
    cli_rotates_and_retires_keys_while_the_server_runs(&database_url(dir.path())).await;
}

#[tokio::test]
async fn cli_rotates_and_retires_keys_while_the_server_runs_on_postgres() {
    let Some(base) = postgres_url() else {
        eprintln!("SESSIOND_TEST_DATABASE_URL is not set: PostgreSQL variant not run");
        return;
    };
    let schema = PgSchema::create(&base, "cli_keys").await;
    cli_rotates_and_retires_keys_while_the_server_runs(&schema.url()).await;
}

#[test]
fn help_shows_no_secret_taken_from_the_environment() {
    let secrets = [
        (
            "SESSIOND_DATABASE_URL",
            "postgres://sessiond:hunter2-db@127.0.0.1/x",
        ),
        (
            "SESSIOND_ADMIN_KEYS",
            "hunter2-admin-key-0123456789abcdefghijk",
        ),
        (
            "SESSIOND_MASTER_KEY",
            "aHVudGVyMi1tYXN0ZXIta2V5LTAxMjM0NTY3ODlhYmM=",
        ),
        (
            "SESSIOND_INTROSPECTION_CLIENTS",
            "api:hunter2-client-secret",
        ),
    ];
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let mut command = sessiond();
        command.args(args);
        for (name, value) in secrets {
            command.env(name, value);
        }
        let finished = run(&mut command);
        assert!(finished.status.success(), "{}", finished.stderr);
        assert!(
            finished.stdout.contains("SESSIOND_DATABASE_URL"),
            "{}",
            finished.stdout
        );
        assert!(
            !finished.stdout.contains("hunter2") && !finished.stderr.contains("hunter2"),
            "{args:?} printed a secret:\n{}",
            finished.stdout
        );
    }
}

#[test]
fn a_command_that_only_reads_refuses_a_database_that_needs_migrating_and_changes_nothing() {
    // The fixture was written by an older release: its schema lacks this build's newest
    // migrations, which only `migrate` (or `serve`) may apply.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-crypto/sessiond.db");
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("sessiond.db");
    std::fs::copy(&fixture, &path).expect("copy the fixture");
    let before = std::fs::read(&path).expect("read the copy");
    let with_database = |args: &[&str]| {
        let mut command = sessiond();
        command
            .env(
                "SESSIOND_DATABASE_URL",
                format!("sqlite://{}", path.display()),
            )
            .env(
                "SESSIOND_MASTER_KEY",
                "bGVnYWN5LWNyeXB0by1maXh0dXJlLW1hc3Rlci1rZXk=",
            )
            .env("SESSIOND_ENV", "development")
            .args(args);
        run(&mut command)
    };
    for args in [
        &["keys", "list"][..],
        &["sessions", "list", "--user", "eddsa-user"][..],
        &["audit", "verify"][..],
    ] {
        let refused = with_database(args);
        assert!(!refused.status.success(), "{args:?}: {}", refused.stdout);
        let reasons = reason_lines(&refused.stderr);
        assert_eq!(reasons.len(), 1, "{args:?}: {}", refused.stderr);
        assert!(
            reasons[0].contains("lacks migration")
                && reasons[0].contains("run `sessiond migrate` first"),
            "{args:?}: {}",
            reasons[0]
        );
        assert!(
            std::fs::read(&path).expect("read the copy") == before,
            "{args:?} changed the database file"
        );
    }
    let migrated = with_database(&["migrate"]);
    assert!(migrated.status.success(), "{}", migrated.stderr);
    let listed = with_database(&["keys", "list"]);
    assert!(listed.status.success(), "{}", listed.stderr);
    assert!(listed.stdout.contains("EdDSA"), "{}", listed.stdout);
}

#[tokio::test]
async fn a_command_that_only_reads_refuses_a_postgresql_schema_that_needs_migrating() {
    let Some(base) = postgres_url() else {
        eprintln!("SESSIOND_TEST_DATABASE_URL is not set: PostgreSQL variant not run");
        return;
    };
    let schema = PgSchema::create(&base, "cli_schema").await;
    let with_schema = |args: &[&str]| {
        let mut command = sessiond();
        command
            .env("SESSIOND_DATABASE_URL", schema.url())
            .env(
                "SESSIOND_MASTER_KEY",
                "bGVnYWN5LWNyeXB0by1maXh0dXJlLW1hc3Rlci1rZXk=",
            )
            .env("SESSIOND_ENV", "development")
            .args(args);
        run(&mut command)
    };
    let assert_refused = |finished: &Finished, migration: &str| {
        assert!(!finished.status.success(), "{}", finished.stdout);
        let reasons = reason_lines(&finished.stderr);
        assert_eq!(reasons.len(), 1, "{}", finished.stderr);
        assert!(
            reasons[0].contains(&format!("lacks migration {migration}"))
                && reasons[0].contains("run `sessiond migrate` first"),
            "{}",
            reasons[0]
        );
    };
    // An empty schema: not even the bookkeeping table is created.
    assert_refused(&with_schema(&["keys", "list"]), "0001");
    assert_eq!(
        schema
            .scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()")
            .await,
        0
    );
    let migrated = with_schema(&["migrate"]);
    assert!(migrated.status.success(), "{}", migrated.stderr);
    let newest = schema
        .scalar("SELECT MAX(version) FROM schema_migrations")
        .await;
    schema
        .scalar(&format!(
            "WITH gone AS (DELETE FROM schema_migrations WHERE version = {newest} RETURNING 1) \
             SELECT COUNT(*) FROM gone"
        ))
        .await;
    assert_refused(
        &with_schema(&["sessions", "list", "--user", "alice"]),
        &format!("{newest:04}"),
    );
    assert_eq!(
        schema
            .scalar("SELECT COUNT(*) FROM schema_migrations")
            .await,
        newest - 1
    );
    schema
        .scalar(&format!(
            "WITH back AS (INSERT INTO schema_migrations (version, name, applied_at) \
             VALUES ({newest}, 'restored', 0) RETURNING 1) SELECT COUNT(*) FROM back"
        ))
        .await;
    let listed = with_schema(&["sessions", "list", "--user", "alice"]);
    assert!(listed.status.success(), "{}", listed.stderr);
}

#[test]
fn sessions_commands_refuse_a_database_that_does_not_exist() {
    let dir = TempDir::new().expect("temp dir");
    let unknown = uuid::Uuid::new_v4().to_string();
    let commands: [&[&str]; 2] = [
        &["sessions", "list", "--user", "carol"],
        &["sessions", "revoke", &unknown],
    ];
    // A mistyped file name, and a file in a directory that does not exist either.
    let missing = [
        database_path(dir.path()),
        dir.path().join("nowhere").join("sessiond.db"),
    ];
    for path in &missing {
        let url = format!("sqlite://{}", path.display());
        for args in commands {
            let mut command = sessiond();
            command
                .env("SESSIOND_DATABASE_URL", &url)
                .env("SESSIOND_ADMIN_KEYS", ADMIN_KEY)
                .args(args);
            let finished = run(&mut command);
            assert!(
                !finished.status.success(),
                "{args:?} on {url}: refused; stdout:\n{}",
                finished.stdout
            );
            let lines = reason_lines(&finished.stderr);
            assert_eq!(
                lines.len(),
                1,
                "{args:?} on {url}: exactly one line of reason: {:?}",
                finished.stderr
            );
            let expected = format!("sessiond: cannot open database {url}: ");
            assert!(
                lines[0].starts_with(&expected),
                "{args:?}: {:?} starts with {expected:?}",
                lines[0]
            );
            let created: Vec<_> = std::fs::read_dir(dir.path())
                .expect("read temp dir")
                .map(|entry| entry.expect("dir entry").file_name())
                .collect();
            assert!(
                created.is_empty(),
                "{args:?} on {url}: nothing is created: {created:?}"
            );
        }
    }
}

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let dir = TempDir::new().expect("temp dir");
    for attempt in ["first", "second"] {
        let finished = run(configured(dir.path(), free_port()).arg("migrate"));
        assert!(
            finished.status.success(),
            "{attempt} migrate: {}",
            finished.stderr
        );
        assert!(
            finished.stdout.contains("up to date"),
            "{attempt} migrate: {}",
            finished.stdout
        );
    }
    assert!(
        database_path(dir.path()).is_file(),
        "the database file exists"
    );

    let tables: i64 = rusqlite::Connection::open_with_flags(
        database_path(dir.path()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open database")
    .query_row(
        "SELECT COUNT(*) FROM sqlite_master
         WHERE type = 'table' AND name IN ('sessions', 'refresh_tokens')",
        [],
        |row| row.get(0),
    )
    .expect("query runs");
    assert_eq!(tables, 2, "the schema is there");
}

#[tokio::test]
async fn serve_with_no_configuration_warns_loudly_and_runs() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    command
        .env_clear()
        .current_dir(dir.path())
        .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let server = Server::start(command, port);

    let answer = send(client().get(format!("{}/healthz", server.base))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        database_path(dir.path()).is_file(),
        "sessiond.db is created in the working directory"
    );
    // The warnings go out before the listening line; the reader thread may lag a little.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.stderr().contains("WARNING") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stderr = server.stderr();
    assert!(stderr.contains("WARNING"), "a loud warning: {stderr:?}");
}

/// Waits until `server`'s stderr contains `text`; returns it.
fn stderr_once_it_contains(server: &Server, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stderr = server.stderr();
        if stderr.contains(text) || Instant::now() > deadline {
            assert!(stderr.contains(text), "{text:?} in stderr:\n{stderr}");
            return stderr;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Regression: log lines carried ANSI colour codes into files and log collectors.
#[tokio::test]
async fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut command = configured(dir.path(), port);
    command.env("RUST_LOG", "info");
    let server = Server::start(command, port);
    let created = send(
        client()
            .post(format!("{}/v1/sessions", server.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "alice"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let stderr = stderr_once_it_contains(&server, "answered");
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no escape sequence on a pipe:\n{stderr:?}"
    );
}

/// `serve` holds its `INFO` lines back and writes them in batches (`log_sink`): a warning still
/// goes out at once and after every line logged before it, and nothing held is lost when the
/// server exits on SIGTERM.
#[tokio::test]
async fn log_lines_held_back_keep_their_order_and_are_written_out_at_exit() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut command = configured(dir.path(), port);
    command.env("RUST_LOG", "info");
    let mut server = Server::start(command, port);
    let client = client();
    let created = create_session(&client, &server.base, "alice").await;
    let first = text(&created, "refresh_token");
    let refreshed = send(refresh_request(&client, &server.base, first)).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    // With its successor spent, the first token again is reuse, logged as a warning.
    let second = text(&refreshed.body, "refresh_token");
    let spent = send(refresh_request(&client, &server.base, second)).await;
    assert_eq!(spent.status, StatusCode::OK, "{}", spent.body);
    let reused = send(refresh_request(&client, &server.base, first)).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED, "{}", reused.body);

    let stderr = stderr_once_it_contains(&server, " WARN ");
    let lines: Vec<&str> = stderr.lines().collect();
    let warning = lines
        .iter()
        .position(|line| line.contains(" WARN ") && line.contains("revoking the session"))
        .unwrap_or_else(|| panic!("the reuse warning:\n{stderr}"));
    let answered_before = lines[..warning]
        .iter()
        .filter(|line| line.contains("answered"))
        .count();
    assert_eq!(
        answered_before, 3,
        "the creation's and both refreshes' lines come before the warning:\n{stderr}"
    );

    // Held back when the server is told to stop, written out before it exits.
    let health = send(client.get(format!("{}/healthz", server.base))).await;
    assert_eq!(health.status, StatusCode::OK);
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let stderr = stderr_once_it_contains(&server, "/healthz");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("answered") && line.contains("/healthz")),
        "{stderr}"
    );
}

/// Regression: with `SESSIOND_LOG_FORMAT=json` the development warnings of start-up, and the
/// refusal of a bad configuration, were plain text among the JSON lines.
#[tokio::test]
async fn in_json_format_every_line_from_start_up_to_a_refusal_is_json() {
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut command = configured(dir.path(), port);
    command
        .env("SESSIOND_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    let server = Server::start(command, port);
    let answer = send(client().get(format!("{}/healthz", server.base))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let stderr = stderr_once_it_contains(&server, "development defaults");
    let mut warnings = 0;
    for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}"));
        let message = entry["fields"]["message"].as_str().unwrap_or_default();
        if message.contains("development defaults") {
            assert_eq!(entry["level"], "WARN", "{line}");
            assert!(entry["fields"]["warning"].is_string(), "{line}");
            warnings += 1;
        }
    }
    assert!(warnings >= 1, "{stderr}");
    drop(server);

    let refused = run(dir_command(dir.path())
        .env("SESSIOND_LOG_FORMAT", "json")
        .env("SESSIOND_ACCESS_TTL", "soon")
        .arg("serve"));
    assert!(!refused.status.success());
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", refused.stderr);
    let entry: Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|_| panic!("not JSON: {:?}", lines[0]));
    assert_eq!(entry["level"], "ERROR", "{}", lines[0]);
    let message = entry["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("sessiond: bad configuration")
            && message.contains("SESSIOND_ACCESS_TTL"),
        "{}",
        lines[0]
    );
}

/// `sessiond` on the database in `dir`, with nothing else set.
fn dir_command(dir: &Path) -> Command {
    let mut command = sessiond();
    command.env("SESSIOND_DATABASE_URL", database_url(dir));
    command
}

/// How many file descriptors process `pid` has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd is readable")
        .count()
}

/// The resident set of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// A thousand connections that send nothing or part of their headers, against a server capped
/// at 200 with timeouts longer than the test: the cap alone keeps its descriptors bounded (the
/// connections that waited longest make room), and a request that comes after them is
/// answered at once.
#[tokio::test]
async fn a_thousand_slow_connections_leave_the_binary_answering_with_bounded_descriptors_and_memory()
 {
    use tokio::io::AsyncWriteExt as _;
    const CAP: usize = 200;
    const SLOW: usize = 1000;
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let mut command = configured(dir.path(), port);
    command
        .env("SESSIOND_MAX_CONNECTIONS", CAP.to_string())
        .env("SESSIOND_HEADER_TIMEOUT", "10m")
        .env("SESSIOND_KEEP_ALIVE_TIMEOUT", "10m");
    let server = Server::start(command, port);
    let pid = server.child.id();
    let client = client();
    create_session(&client, &server.base, "warm-up").await;
    let descriptors_before = open_descriptors(pid);
    let resident_before = resident_kib(pid);

    let address = format!("127.0.0.1:{port}");
    let mut slow = Vec::with_capacity(SLOW);
    for index in 0..SLOW {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connects");
        if index % 2 == 1 {
            stream
                .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: sessiond.test\r\nX-Slow: ")
                .await
                .expect("written");
        }
        slow.push(stream);
    }

    let started = Instant::now();
    let fresh = reqwest::Client::new();
    let health = send(fresh.get(format!("{}/healthz", server.base))).await;
    assert_eq!(health.status, StatusCode::OK);
    let session = create_session(&fresh, &server.base, "alice").await;
    assert!(session["access_token"].is_string());
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "answered promptly: {elapsed:?}"
    );

    let descriptors = open_descriptors(pid);
    let resident = resident_kib(pid);
    eprintln!(
        "{SLOW} slow connections, cap {CAP}: descriptors {descriptors_before} -> {descriptors}, \
         RSS {resident_before} -> {resident} KiB, two requests in {elapsed:?}"
    );
    assert!(
        descriptors <= descriptors_before + CAP + 16,
        "descriptors stay within the cap: {descriptors_before} -> {descriptors}"
    );
    assert!(
        resident < resident_before + 64 * 1024,
        "memory stays bounded: {resident_before} -> {resident} KiB"
    );

    // The server closed the connections beyond the cap, oldest first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = slow
        .iter()
        .filter(|stream| {
            let mut byte = [0_u8; 1];
            !matches!(stream.try_read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert!(
        closed >= SLOW - CAP,
        "{closed} of {SLOW} slow connections closed"
    );
    assert!(
        slow[SLOW - 1].try_read(&mut [0_u8; 1]).is_err(),
        "the newest slow connection is still open"
    );
}

/// Twelve WebSockets each of two users send a frame far over the inbound limit or an endless
/// fragmented message: each is closed with 1009 and the server's memory hardly moves (before
/// the limits, each socket could buffer a 60 MiB message).
#[tokio::test]
async fn oversized_and_fragmented_websocket_messages_close_with_1009_and_memory_stays_flat() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    const PER_USER: usize = 12;
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let server = Server::start(configured(dir.path(), port), port);
    let pid = server.child.id();
    let client = client();
    let mut tokens = Vec::new();
    for user in ["alice", "bob"] {
        let session = create_session(&client, &server.base, user).await;
        tokens.push(text(&session, "access_token").to_owned());
    }
    let resident_before = resident_kib(pid);

    let mut sockets = Vec::new();
    for index in 0..2 * PER_USER {
        let mut request = format!("ws://127.0.0.1:{port}/v1/events")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", tokens[index % 2])
                .parse()
                .expect("header"),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connects");
        let (mut sink, stream) = socket.split();
        let sender = tokio::spawn(async move {
            if index % 4 < 2 {
                let _ = sink.send(Message::Binary(vec![7_u8; 1 << 20].into())).await;
                return;
            }
            let first = Frame::message(vec![b'a'; 512], OpCode::Data(Data::Text), false);
            if sink.send(Message::Frame(first)).await.is_err() {
                return;
            }
            // Up to 8 MiB in 512-byte fragments, none of them final.
            for _ in 0..16_384 {
                let more = Frame::message(vec![b'a'; 512], OpCode::Data(Data::Continue), false);
                if sink.send(Message::Frame(more)).await.is_err() {
                    return;
                }
            }
        });
        sockets.push((stream, sender));
    }
    for (index, (mut stream, sender)) in sockets.into_iter().enumerate() {
        let close = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map(|frame| u16::from(frame.code));
                    }
                    Some(Ok(_)) => {}
                    other => panic!("socket {index}: {other:?} before a close frame"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("socket {index} is closed within 10 s"));
        assert_eq!(close, Some(1009), "socket {index}");
        sender.abort();
    }
    let resident = resident_kib(pid);
    eprintln!(
        "{} abusive WebSockets: RSS {resident_before} -> {resident} KiB",
        2 * PER_USER
    );
    assert!(
        resident < resident_before + 32 * 1024,
        "memory stays flat: {resident_before} -> {resident} KiB"
    );
}

/// `tests/fixtures/legacy-crypto`: a database written by the build that signed with
/// `ed25519-dalek`, `p256` and `ring`, generated RSA keys with `rsa` and encrypted with
/// `aes-gcm` (see its `make.sh`), with the settings it was made with.
mod legacy {
    use std::path::PathBuf;

    pub const MASTER_KEY: &str = "bGVnYWN5LWNyeXB0by1maXh0dXJlLW1hc3Rlci1rZXk=";
    pub const ADMIN_KEY: &str = "legacy-crypto-fixture-admin-key-0123456789";
    pub const ISSUER: &str = "https://legacy.sessiond.test";
    pub const AUDIENCE: &str = "legacy-api";
    pub const ALGORITHMS: [&str; 4] = ["EdDSA", "ES256", "RS256", "HS256"];

    pub fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/legacy-crypto")
            .join(name)
    }
}

#[tokio::test]
async fn tokens_and_keys_written_by_the_previous_crypto_code_still_verify_and_sign() {
    use sessiond_core::crypt::{self, MasterKey};
    use sessiond_core::revocation::RevokedSessions;
    use sessiond_core::store::KeyStore as _;
    use sessiond_core::token::{AccessTokenValidator, Keyring, SigningAlgorithm, ValidationRules};
    use sessiond_core::{Timestamp, token::decode_claims};
    use sessiond_store_sqlite::{SqliteSettings, SqliteStore};

    let dir = TempDir::new().expect("temp dir");
    std::fs::copy(legacy::fixture("sessiond.db"), database_path(dir.path()))
        .expect("copy the fixture");
    let tokens: Value = serde_json::from_str(
        &std::fs::read_to_string(legacy::fixture("tokens.json")).expect("tokens.json"),
    )
    .expect("tokens.json is JSON");

    // The keys the old code generated and sealed, opened with the new code.
    let store = SqliteStore::open(&database_url(dir.path()), &SqliteSettings::default())
        .await
        .expect("the fixture opens");
    let master = MasterKey::from_base64(legacy::MASTER_KEY).expect("the fixture's master key");
    crypt::unlock(&store, &master, None, Timestamp::from_unix_millis(0))
        .await
        .expect("the master key unwraps the data keys the old code wrapped");
    let keys = store.signing_keys().await.expect("the signing keys open");
    assert_eq!(keys.len(), 4, "one key per algorithm");
    let validator = AccessTokenValidator::new(ValidationRules {
        issuer: legacy::ISSUER.into(),
        audience: legacy::AUDIENCE.into(),
        leeway_seconds: 0,
    });
    for name in legacy::ALGORITHMS {
        let algorithm = SigningAlgorithm::from_jose_name(name).expect("an algorithm");
        let keyring = Keyring::from_stored(&keys, algorithm).expect("the old keys parse");
        let token = text(&tokens[name], "access_token");
        let issued_at = decode_claims(token).expect("claims")["iat"]
            .as_i64()
            .expect("iat");
        let validated = validator
            .validate(
                token,
                &keyring,
                &RevokedSessions::new(),
                Timestamp::from_unix_millis(issued_at * 1000),
            )
            .unwrap_or_else(|error| panic!("{name}: the old token validates: {error:?}"));
        assert_eq!(validated.user_id, format!("user-{name}"));
        // The kid the old code derived (an RFC 7638 thumbprint) is the one the new code derives.
        assert_eq!(keyring.signing_kid(), {
            let header = token.split('.').next().expect("a header");
            let header: Value = serde_json::from_slice(
                &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                    .expect("base64url"),
            )
            .expect("JSON");
            header["kid"].as_str().expect("a kid").to_owned()
        });
    }
    drop(store);

    // The server, with each algorithm: the old refresh token rotates (its hash is found, its
    // session's sealed columns open), the new token is signed with the old key, and every old
    // public key is published.
    let client = client();
    for name in legacy::ALGORITHMS {
        let port = free_port();
        let mut command = sessiond();
        command
            .env("SESSIOND_DATABASE_URL", database_url(dir.path()))
            .env("SESSIOND_MASTER_KEY", legacy::MASTER_KEY)
            .env("SESSIOND_ADMIN_KEYS", legacy::ADMIN_KEY)
            .env("SESSIOND_ISSUER", legacy::ISSUER)
            .env("SESSIOND_AUDIENCE", legacy::AUDIENCE)
            .env("SESSIOND_IDLE_TIMEOUT", "3650d")
            .env("SESSIOND_ABSOLUTE_TIMEOUT", "3650d")
            .env("SESSIOND_RATE_LIMITS", "off")
            .env("SESSIOND_SIGNING_ALG", name)
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"));
        let mut server = Server::start(command, port);
        let refreshed = send(refresh_request(
            &client,
            &server.base,
            text(&tokens[name], "refresh_token"),
        ))
        .await;
        assert_eq!(
            refreshed.status,
            StatusCode::OK,
            "{name}: {}",
            refreshed.body
        );
        let access_token = text(&refreshed.body, "access_token");
        let header = decode_claims(&format!(
            "x.{}.x",
            access_token.split('.').next().expect("a header")
        ))
        .expect("a JSON header");
        assert_eq!(header["alg"], name);
        let own = current(&client, &server.base, access_token).await;
        assert_eq!(own.status, StatusCode::OK, "{name}: {}", own.body);
        assert_eq!(own.body["device"]["name"], format!("Laptop of {name}"));
        assert_eq!(own.body["ip"], "203.0.113.7");
        assert!(
            own.body["user_agent"]
                .as_str()
                .is_some_and(|agent| agent.contains("Firefox/128.0")),
            "{name}: {}",
            own.body
        );
        let jwks = send(client.get(format!("{}/.well-known/jwks.json", server.base))).await;
        let published = jwks.body["keys"].as_array().expect("keys").len();
        assert_eq!(published, 3, "the three old public keys: {}", jwks.body);
        assert!(server.terminate(Duration::from_secs(10)).success());
    }

    let mut verify = legacy_audit_verify(dir.path());
    let verified = run(&mut verify);
    assert!(
        verified.status.success(),
        "{}\n{}",
        verified.stdout,
        verified.stderr
    );
    assert!(
        verified.stdout.contains("audit chain intact"),
        "{}",
        verified.stdout
    );
}

fn legacy_audit_verify(dir: &Path) -> Command {
    let mut command = sessiond();
    command
        .env("SESSIOND_DATABASE_URL", database_url(dir))
        .env("SESSIOND_MASTER_KEY", legacy::MASTER_KEY)
        .env("SESSIOND_ISSUER", legacy::ISSUER)
        .args(["audit", "verify"]);
    command
}

/// Runs `serve` on a fresh database holding one stored signing key of `algorithm` whose
/// secret is `secret`, and returns its one line of refusal.
fn refusal_with_stored_key(algorithm: &str, secret: &[u8]) -> String {
    let dir = TempDir::new().expect("temp dir");
    let mut migrate = sessiond();
    migrate
        .env("SESSIOND_DATABASE_URL", database_url(dir.path()))
        .arg("migrate");
    assert!(run(&mut migrate).status.success());
    let connection = rusqlite::Connection::open(database_path(dir.path())).expect("open");
    connection
        .execute(
            "INSERT INTO signing_keys (kid, algorithm, secret, created_at) VALUES ('weak', ?1, ?2, 1)",
            rusqlite::params![algorithm, secret],
        )
        .expect("insert the key");
    drop(connection);

    let mut command = configured(dir.path(), free_port());
    command
        .env("SESSIOND_SIGNING_ALG", algorithm)
        .env("SESSIOND_MASTER_KEY", legacy::MASTER_KEY)
        .env("SESSIOND_RATE_LIMITS", "on")
        .arg("serve");
    let finished = run(&mut command);
    assert!(
        !finished.status.success(),
        "{algorithm}: start-up is refused"
    );
    assert!(
        !finished.stdout.contains("listening"),
        "{}",
        finished.stdout
    );
    let lines = reason_lines(&finished.stderr);
    assert_eq!(lines.len(), 1, "one line of reason: {:?}", finished.stderr);
    lines[0].to_owned()
}

#[test]
fn serve_refuses_an_hs256_secret_under_32_bytes_in_one_line() {
    let reason = refusal_with_stored_key("HS256", &[7u8; 31]);
    assert!(reason.starts_with("sessiond:"), "{reason}");
    assert!(
        reason.contains(
            "signing key weak: its HS256 secret is 31 bytes, under the 32 bytes required"
        ),
        "{reason}"
    );
}

#[test]
fn serve_refuses_an_rsa_key_under_2048_bits_in_one_line() {
    let key = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/weak-keys/rsa-1024.pk8.der"),
    )
    .expect("the 1024-bit key");
    let reason = refusal_with_stored_key("RS256", &key);
    assert!(
        reason.contains("signing key weak: its RSA modulus is under the 2048 bits required"),
        "{reason}"
    );
}

#[test]
fn serve_refuses_an_rsa_key_whose_exponent_is_not_65537_in_one_line() {
    let key = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/weak-keys/rsa-2048-e3.pk8.der"),
    )
    .expect("the e = 3 key");
    let reason = refusal_with_stored_key("RS256", &key);
    assert!(
        reason.contains("signing key weak: its RSA public exponent is 3, not 65537"),
        "{reason}"
    );
}

/// Whether `program --version` runs: the tools the disk tests need, or a reason they are not run.
fn tool_runs(program: &str) -> Result<(), String> {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("{program} does not run ({error})")),
    }
}

/// Runs `program args`; its stderr as the error when it fails.
fn succeeds(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{program} does not run ({error})"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Checks a write refused because storage cannot write: 503 `unavailable` with `reason` and
/// `Retry-After`.
fn assert_cannot_write(answer: &Answer, reason: &str, what: &str) {
    crate::storage::assert_unavailable(answer, what);
    assert_eq!(answer.body["reason"], reason, "{what}: {}", answer.body);
}

/// Polls `/readyz` of `base` until its `reason` is `reason` (`None`: ready).
async fn readiness_becomes(client: &reqwest::Client, base: &str, reason: Option<&str>) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = send(client.get(format!("{base}/readyz"))).await;
        let reached = match reason {
            None => answer.status == StatusCode::OK,
            Some(reason) => answer.body["reason"] == reason,
        };
        if reached {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never reached {reason:?}: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes (a refresh, a creation) are refused as `reason`, while reads and validation work.
async fn writes_refused_and_reads_served(
    client: &reqwest::Client,
    base: &str,
    created: &Value,
    refresh_token: &str,
    reason: &str,
) {
    let refused = send(refresh_request(client, base, refresh_token)).await;
    assert_cannot_write(&refused, reason, "a refresh");
    let refused = send(
        client
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "bob", "device": {"name": "Phone"}})),
    )
    .await;
    assert_cannot_write(&refused, reason, "a creation");
    let access_token = text(created, "access_token");
    let validated = current(client, base, access_token).await;
    assert_eq!(validated.status, StatusCode::OK, "{}", validated.body);
    let listed = own_sessions(client, base, access_token).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["sessions"].as_array().map(Vec::len), Some(1));
    let ready = readiness_becomes(client, base, Some(reason)).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A file-size limit of 0 set on the running server makes every write fail with `EFBIG` (the
/// server catches `SIGXFSZ`, which would otherwise end it): writes answer 503 `io_error`, reads
/// keep working, and once the limit is raised writes resume without a restart. Needs
/// `prlimit`; says so and does nothing without it.
#[tokio::test]
async fn an_io_error_on_every_write_answers_503_io_error_and_writes_resume_once_it_passes() {
    if let Err(reason) = tool_runs("prlimit") {
        eprintln!("{reason}: the file-size limit test is not run");
        return;
    }
    let dir = TempDir::new().expect("temp dir");
    let (mut server, client, created, refresh_token) =
        serving_a_refreshed_session(dir.path()).await;

    // The soft limit only: lowering the hard one could not be undone without privileges.
    let pid = server.pid();
    let soft = match succeeds(
        "prlimit",
        &["--pid", &pid, "--output=SOFT", "--noheadings", "--fsize"],
    )
    .and_then(|soft| succeeds("prlimit", &["--pid", &pid, "--fsize=0:"]).map(|_| soft))
    {
        Ok(soft) => soft,
        Err(reason) => {
            eprintln!("{reason}: the file-size limit test is not run");
            return;
        }
    };
    writes_refused_and_reads_served(&client, &server.base, &created, &refresh_token, "io_error")
        .await;
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the server survives SIGXFSZ; stderr:\n{}",
        server.stderr()
    );

    succeeds("prlimit", &["--pid", &pid, &format!("--fsize={soft}:")])
        .expect("the limit is lifted");
    readiness_becomes(&client, &server.base, None).await;
    // The refused refresh spent nothing: the same token rotates now.
    let answer = send(refresh_request(&client, &server.base, &refresh_token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    create_session(&client, &server.base, "carol").await;
    assert_eq!(server.terminate(Duration::from_secs(10)).code(), Some(0));
}

/// A server on a database in `dir` with alice's session, refreshed once: the server, its
/// client, the creation's answer and the live refresh token.
async fn serving_a_refreshed_session(dir: &Path) -> (Server, reqwest::Client, Value, String) {
    let port = free_port();
    let server = Server::start(configured(dir, port), port);
    let client = client();
    let created = create_session(&client, &server.base, "alice").await;
    let refreshed = send(refresh_request(
        &client,
        &server.base,
        text(&created, "refresh_token"),
    ))
    .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let refresh_token = text(&refreshed.body, "refresh_token").to_owned();
    (server, client, created, refresh_token)
}

/// An ext4 file system, on a loop device, mounted with `errors=remount-ro`; unmounted (lazily:
/// a killed server's files may still be closing) when dropped.
struct Ext4Mount {
    dir: TempDir,
    device: String,
}

impl Ext4Mount {
    fn mount() -> Result<Self, String> {
        tool_runs("mkfs.ext4")?;
        tool_runs("findmnt")?;
        let dir = TempDir::new().expect("temp dir");
        let image = dir.path().join("ext4.img");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(64 * 1024 * 1024))
            .expect("image file");
        let image = image.display().to_string();
        succeeds("mkfs.ext4", &["-q", "-F", &image])?;
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        let mount_point = mount_point.display().to_string();
        succeeds(
            "mount",
            &["-o", "loop,errors=remount-ro", &image, &mount_point],
        )?;
        // From here on, dropping it unmounts.
        let mut mounted = Self {
            dir,
            device: String::new(),
        };
        let source = succeeds("findmnt", &["-n", "-o", "SOURCE", &mount_point])?;
        source
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .clone_into(&mut mounted.device);
        Ok(mounted)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Reports an error to ext4, as a failing device would: `errors=remount-ro` turns the file
    /// system read-only under every open file.
    fn fail(&self) -> Result<(), String> {
        let trigger = format!("/sys/fs/ext4/{}/trigger_fs_error", self.device);
        std::fs::write(&trigger, "sessiond test\n").map_err(|error| format!("{trigger}: {error}"))
    }
}

impl Drop for Ext4Mount {
    fn drop(&mut self) {
        // `mount -o loop` made the loop device with autoclear: unmounting frees it.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// The file system under a running server turns read-only (ext4 after a device error): writes
/// answer 503 `read_only`, reads and access-token validation keep working, `/readyz` says
/// `read_only`. Such a file system takes no writes until it is unmounted and checked, so the
/// server is restarted afterwards (see docs/operations.md). Needs root, `mkfs.ext4` and loop
/// devices; says so and does nothing without them.
#[tokio::test]
async fn a_file_system_turned_read_only_under_the_server_answers_503_read_only_and_keeps_reading() {
    let mounted = match Ext4Mount::mount() {
        Ok(mounted) => mounted,
        Err(reason) => {
            eprintln!(
                "cannot mount an ext4 image ({reason}): the read-only file system test is not run"
            );
            return;
        }
    };
    let (mut server, client, created, refresh_token) =
        serving_a_refreshed_session(&mounted.path()).await;

    if let Err(reason) = mounted.fail() {
        eprintln!("cannot make ext4 fail ({reason}): the read-only file system test is not run");
        return;
    }
    writes_refused_and_reads_served(&client, &server.base, &created, &refresh_token, "read_only")
        .await;
    // Still so a probe later: nothing is taken for recovered.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let ready = send(client.get(format!("{}/readyz", server.base))).await;
    assert_eq!(ready.body["reason"], "read_only", "{}", ready.body);
    server.kill_9();
}
