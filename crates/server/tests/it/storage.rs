//! Storage that answers but cannot write: a SQLite file at its size limit (as on a full disk)
//! and a PostgreSQL server that accepts only read-only transactions. Writes answer 503
//! `unavailable` with `Retry-After` and leave nothing half-written, `/readyz` says why it is not
//! ready, and writes work again, without a restart, once space or write access is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, Answer, Backend, TestApp, postgres_url, text};

/// The limit the test app's SQLite file runs at.
const MAX_SIZE: &str = "2MiB";
/// How long readiness may take to follow the store (a write probe runs at most once a second).
const READINESS_BOUND: Duration = Duration::from_secs(10);

/// Checks a write refused because storage cannot write: 503 `unavailable` with `Retry-After`.
pub(crate) fn assert_unavailable(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        answer.body
    );
    assert_eq!(
        answer.error_code(),
        "unavailable",
        "{what}: {}",
        answer.body
    );
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("1"),
        "{what}: Retry-After"
    );
}

/// Creates sessions with large metadata until one is refused, which must be as
/// [`assert_unavailable`] says, within 50 attempts; returns the refusal.
async fn a_creation_refused_for_space(app: &TestApp) -> Answer {
    for attempt in 0..50 {
        let answer = app
            .post(
                "/v1/sessions",
                Some(ADMIN_KEY),
                json!({"user_id": format!("bob-{attempt}"), "metadata": {"pad": "x".repeat(2000)}}),
            )
            .await;
        if answer.status != StatusCode::CREATED {
            assert_unavailable(&answer, "a creation on a full database");
            return answer;
        }
    }
    panic!("creations kept fitting in a full database");
}

/// Polls `/readyz` until its status is `status`; returns the last answer.
async fn readiness_becomes(app: &TestApp, status: StatusCode) -> Answer {
    let started = Instant::now();
    loop {
        let answer = app.get("/readyz", None).await;
        if answer.status == status || started.elapsed() > READINESS_BOUND {
            assert_eq!(answer.status, status, "/readyz: {}", answer.body);
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fills the database file up to past `bytes` with a table of its own, written by a connection
/// of the test (the server's limit does not bind it), as another program filling the disk
/// would.
fn fill_with_ballast(app: &TestApp, bytes: u64) {
    let connection = rusqlite::Connection::open(app.database_path()).expect("open database");
    connection
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    connection
        .execute_batch("CREATE TABLE ballast (filler BLOB NOT NULL)")
        .expect("create ballast");
    loop {
        let (pages, page_size, free): (u64, u64, u64) = connection
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count()),
                        (SELECT page_size FROM pragma_page_size()),
                        (SELECT freelist_count FROM pragma_freelist_count())",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .expect("page count");
        if pages * page_size > bytes && free == 0 {
            return;
        }
        connection
            .execute("INSERT INTO ballast (filler) VALUES (zeroblob(65536))", [])
            .expect("ballast grows");
    }
}

async fn session_rows(app: &TestApp, session_id: &str) -> (i64, i64, i64, i64) {
    (
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{session_id}'"
        ))
        .await,
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{session_id}' AND spent_at IS NULL"
        ))
        .await,
        app.scalar("SELECT COUNT(*) FROM audit_events").await,
        app.scalar("SELECT COUNT(*) FROM events").await,
    )
}

/// Regression: on a full disk writes answered 500 `internal`, and once space was freed every
/// write kept failing until a restart while `/readyz` said ready.
#[tokio::test]
async fn a_full_sqlite_database_answers_503_keeps_every_token_and_writes_again_once_space_is_freed()
{
    let app = TestApp::spawn_with(|raw| raw.sqlite_max_size = Some(MAX_SIZE.into())).await;
    let created = app.create_session("alice").await;
    let session_id = text(&created["session"], "id").to_owned();
    let access_token = text(&created, "access_token").to_owned();
    let mut refresh_token = text(&created, "refresh_token").to_owned();
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);

    fill_with_ballast(&app, 2 * 1024 * 1024);

    // Rotations that still fit in the pages the tables have keep working; the first that needs
    // a new page is refused whole.
    let mut refused = None;
    for _ in 0..500 {
        let before = session_rows(&app, &session_id).await;
        let answer = app.refresh(&refresh_token).await;
        if answer.status == StatusCode::OK {
            refresh_token = text(&answer.body, "refresh_token").to_owned();
            continue;
        }
        assert_unavailable(&answer, "a refresh on a full database");
        assert_eq!(
            session_rows(&app, &session_id).await,
            before,
            "the refused refresh wrote nothing: no successor, the token unspent, no audit or event row"
        );
        refused = Some(answer);
        break;
    }
    assert!(refused.is_some(), "the database never filled up");

    // Readiness says why, at once and after a probe of its own.
    let ready = app.get("/readyz", None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert_eq!(ready.body["reason"], "disk_full", "{}", ready.body);
    assert_eq!(ready.body["error"], "unavailable");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(
        ready.body["reason"], "disk_full",
        "after a probe: {}",
        ready.body
    );

    // Creations are refused the same way; reads keep working from what is stored.
    a_creation_refused_for_space(&app).await;
    let current = app.get("/v1/sessions/current", Some(&access_token)).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);

    // Space comes back (the other program deletes its data): no restart.
    let connection = rusqlite::Connection::open(app.database_path()).expect("open database");
    connection
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    connection
        .execute_batch("DROP TABLE ballast")
        .expect("drop ballast");
    drop(connection);
    let ready = readiness_becomes(&app, StatusCode::OK).await;
    assert_eq!(ready.body["status"], "ready");

    // The token the full database refused was never spent: it rotates now.
    let answer = app.refresh(&refresh_token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_ne!(text(&answer.body, "refresh_token"), refresh_token);
    let again = app.create_session("carol").await;
    let revoked = app
        .delete(
            &format!("/v1/sessions/{}", text(&again["session"], "id")),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let verified = app
        .state
        .service
        .verify_audit()
        .await
        .expect("audit readable")
        .expect("the audit chain is intact");
    assert!(verified.events > 0);
}

/// A PostgreSQL login role of its own, dropped (with whatever it owns) at the end.
struct PgRole {
    base: String,
    name: String,
}

impl PgRole {
    async fn create(base: &str) -> Self {
        let name = format!("it_ro_{}", uuid::Uuid::new_v4().simple());
        Self::run(base, &format!("CREATE ROLE {name} LOGIN SUPERUSER")).await;
        Self {
            base: base.to_owned(),
            name,
        }
    }

    async fn run(base: &str, sql: &str) {
        use sqlx::Connection as _;
        let mut connection = sqlx::PgConnection::connect(base)
            .await
            .expect("connect to PostgreSQL");
        sqlx::raw_sql(sql)
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        connection.close().await.expect("close");
    }

    /// `url` connecting as this role.
    fn url_as(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{}@{host}", self.name)
    }

    /// Sets whether new connections of the role default to read-only transactions, and ends
    /// the open ones, as a failover to a standby (and back) does.
    async fn set_read_only(&self, read_only: bool) {
        let setting = if read_only {
            format!(
                "ALTER ROLE {} SET default_transaction_read_only = on",
                self.name
            )
        } else {
            format!(
                "ALTER ROLE {} RESET default_transaction_read_only",
                self.name
            )
        };
        Self::run(&self.base, &setting).await;
        Self::run(
            &self.base,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
                self.name
            ),
        )
        .await;
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // A thread of its own: Drop cannot await.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use sqlx::Connection as _;
                let mut connection = sqlx::PgConnection::connect(&base).await?;
                sqlx::raw_sql(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}';
                     DROP OWNED BY {name}; DROP ROLE {name}"
                ))
                .execute(&mut connection)
                .await?;
                connection.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test role {}", self.name);
        }
    }
}

/// Polls `/readyz` until it reports `reason`.
async fn readiness_reason_becomes(app: &TestApp, reason: &str) -> Answer {
    let started = Instant::now();
    loop {
        let answer = app.get("/readyz", None).await;
        if answer.body["reason"] == reason || started.elapsed() > READINESS_BOUND {
            assert_eq!(
                answer.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                answer.body
            );
            assert_eq!(answer.body["reason"], reason, "{}", answer.body);
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A PostgreSQL server that accepts only read-only transactions (a standby after a failover,
/// `default_transaction_read_only`): writes answer 503 and write nothing, `/readyz` says
/// `read_only`, and both recover once writes are accepted again.
#[tokio::test]
async fn a_read_only_postgresql_answers_503_is_not_ready_and_recovers_without_a_restart() {
    Backend::Postgres
        .run(async {
            let base = postgres_url().expect("run only with a URL");
            let role = PgRole::create(&base).await;
            let app = TestApp::spawn_with(|raw| {
                let url = raw.database_url.clone().expect("the schema's URL");
                raw.database_url = Some(role.url_as(url.expose()).into());
            })
            .await;
            let created = app.create_session("alice").await;
            let session_id = text(&created["session"], "id").to_owned();
            let refresh_token = text(&created, "refresh_token").to_owned();
            assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);

            role.set_read_only(true).await;
            let ready = readiness_reason_becomes(&app, "read_only").await;
            assert_eq!(ready.body["error"], "unavailable");
            let before = session_rows(&app, &session_id).await;
            let refused = app.refresh(&refresh_token).await;
            assert_unavailable(&refused, "a refresh on a read-only database");
            assert_eq!(session_rows(&app, &session_id).await, before);
            let refused = app
                .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "bob"}))
                .await;
            assert_unavailable(&refused, "a creation on a read-only database");

            role.set_read_only(false).await;
            readiness_becomes(&app, StatusCode::OK).await;
            let mut answer = app.refresh(&refresh_token).await;
            // The first request after the connections were cut may meet one of them dead.
            if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                answer = app.refresh(&refresh_token).await;
            }
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            drop(app);
        })
        .await;
}

/// A small tmpfs mounted on a temporary directory, unmounted when dropped. Mounting needs root
/// (`CAP_SYS_ADMIN`); `mount` says why it could not.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(Self { dir })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server's files may still be open while the test unwinds.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system at `dir` with a file of its own until it is full.
fn fill_file_system(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).expect("ballast file");
    let chunk = vec![0_u8; 64 * 1024];
    loop {
        if let Err(error) = file.write_all(&chunk) {
            assert_eq!(
                error.raw_os_error(),
                Some(28),
                "the file system fills up: {error}"
            );
            break;
        }
    }
    // Fill the last partial chunk too.
    for _ in 0..64 {
        if file.write_all(&[0_u8; 1024]).is_err() {
            break;
        }
    }
    path
}

/// Refreshes the chain of `refresh_token` until one is refused; checks the refusal wrote
/// nothing and returns the token it refused.
async fn refresh_until_refused(
    app: &TestApp,
    session_id: &str,
    mut refresh_token: String,
) -> String {
    for _ in 0..5_000 {
        let before = session_rows(app, session_id).await;
        let answer = app.refresh(&refresh_token).await;
        if answer.status == StatusCode::OK {
            refresh_token = text(&answer.body, "refresh_token").to_owned();
            continue;
        }
        assert_unavailable(&answer, "a refresh that cannot be written");
        assert_eq!(
            session_rows(app, session_id).await,
            before,
            "the refused refresh wrote nothing"
        );
        return refresh_token;
    }
    panic!("no refresh was ever refused");
}

/// The same on a real file system: a tmpfs filled up by another file (`ENOSPC`), then freed.
/// Needs root; says so and does nothing without it.
#[tokio::test]
async fn a_full_file_system_answers_503_and_writes_resume_once_space_is_freed() {
    let tmpfs = match Tmpfs::mount("4m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!(
                "cannot mount a tmpfs ({reason}): the full-disk test on a real file system needs root; not run"
            );
            return;
        }
    };
    let database = tmpfs.dir.path().join("sessiond.db");
    let app = TestApp::spawn_with(|raw| {
        raw.database_url = Some(format!("sqlite://{}", database.display()).into());
    })
    .await;
    let created = app.create_session("alice").await;
    let session_id = text(&created["session"], "id").to_owned();
    let refresh_token = text(&created, "refresh_token").to_owned();

    // Full: another file takes the last byte.
    let ballast = fill_file_system(tmpfs.dir.path());
    let refused = refresh_until_refused(&app, &session_id, refresh_token).await;
    let ready = readiness_reason_becomes(&app, "disk_full").await;
    assert_eq!(ready.body["error"], "unavailable");
    std::fs::remove_file(&ballast).expect("free the space");
    readiness_becomes(&app, StatusCode::OK).await;
    let answer = app.refresh(&refused).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let verified = app
        .state
        .service
        .verify_audit()
        .await
        .expect("audit readable")
        .expect("the audit chain is intact");
    assert!(verified.events > 0);
    drop(app);
}

/// Regression: once writes had failed for want of space, any batch that committed cleared the
/// mark, even one whose writes changed no row (a revocation of an unknown session commits
/// without writing a page on a full disk), so `/readyz` said ready while every real write
/// still failed.
#[tokio::test]
async fn only_a_commit_that_changed_a_row_clears_the_cannot_write_mark() {
    let app = TestApp::spawn_with(|raw| raw.sqlite_max_size = Some(MAX_SIZE.into())).await;
    app.create_session("alice").await;
    fill_with_ballast(&app, 2 * 1024 * 1024);
    let refused = a_creation_refused_for_space(&app).await;
    assert_eq!(refused.body["reason"], "disk_full", "{}", refused.body);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.body["reason"], "disk_full", "{}", ready.body);

    // A write that commits but changes nothing says nothing of space.
    let unknown = uuid::Uuid::new_v4();
    let revoked = app
        .delete(&format!("/v1/sessions/{unknown}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(revoked.status, StatusCode::NOT_FOUND, "{}", revoked.body);
    let ready = app.get("/readyz", None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "still full: {}",
        ready.body
    );
    assert_eq!(ready.body["reason"], "disk_full", "{}", ready.body);

    // A write that changes a row, once space is back, does clear it.
    let connection = rusqlite::Connection::open(app.database_path()).expect("open database");
    connection
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    connection
        .execute_batch("DROP TABLE ballast")
        .expect("drop ballast");
    drop(connection);
    app.create_session("carol").await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
}
