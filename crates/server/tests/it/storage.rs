//! Storage that answers but cannot write: a SQLite file at its size limit (as on a full disk)
//! and a PostgreSQL server that accepts only read-only transactions. Writes answer 503
//! `unavailable` with `Retry-After` and leave nothing half-written, `/readyz` says why it is not
//! ready, and writes work again, without a restart, once space or write access is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, Answer, TestApp, text};

/// The limit the test app's SQLite file runs at.
const MAX_SIZE: &str = "2MiB";
/// How long readiness may take to follow the store (a write probe runs at most once a second).
const READINESS_BOUND: Duration = Duration::from_secs(10);

fn assert_unavailable(answer: &Answer, what: &str) {
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
    let mut creation_refused = false;
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
            creation_refused = true;
            break;
        }
    }
    assert!(
        creation_refused,
        "creations kept fitting in a full database"
    );
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
