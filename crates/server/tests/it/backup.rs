//! Backups of a SQLite database: after a clean stop the database file alone holds the data,
//! and `sessiond backup PATH` copies a running server's database, under load, into a file that
//! restores every write acknowledged before the backup began.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sessiond_core::refresh::RefreshToken;
use tokio::sync::Mutex;

use crate::helpers::{ADMIN_KEY, TestApp, text};

/// Clients writing while the backup runs.
const WORKERS: usize = 4;

/// `sessiond` with none of this process's `SESSIOND_*` variables, on `database_url`.
fn sessiond(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SESSIOND_") {
            command.env_remove(name);
        }
    }
    command
        .env("RUST_LOG", "warn")
        .env("SESSIOND_DATABASE_URL", database_url)
        .stdin(Stdio::null());
    command
}

fn database_url(app: &TestApp) -> String {
    format!("sqlite://{}", app.database_path().display())
}

/// Runs `sessiond backup ARGS` on `database_url`: (success, stdout, stderr).
async fn run_backup(database_url: String, args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = sessiond(&database_url)
            .arg("backup")
            .args(args)
            .output()
            .expect("sessiond runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("backup thread")
}

fn token_hash_hex(token: &str) -> String {
    RefreshToken::parse(token)
        .expect("a refresh token")
        .hash()
        .0
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect()
}

/// Regression: after a clean stop the data could sit entirely in `sessiond.db-wal`, so a copy
/// of `sessiond.db` alone held nothing.
#[tokio::test]
async fn after_a_clean_stop_the_database_file_alone_holds_every_session() {
    let mut app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for user in 0..20 {
        let created = app.create_session(&format!("user-{user}")).await;
        ids.push(text(&created["session"], "id").to_owned());
    }
    app.stop().await;

    let wal = app.dir.path().join("sessiond.db-wal");
    let wal_size = std::fs::metadata(&wal).map_or(0, |metadata| metadata.len());
    assert_eq!(wal_size, 0, "the WAL is empty or gone after a clean stop");
    let copy = tempfile::TempDir::new().expect("temp dir");
    let copied = copy.path().join("sessiond.db");
    std::fs::copy(app.database_path(), &copied).expect("copy the database file alone");
    let connection = rusqlite::Connection::open(&copied).expect("open the copy");
    let found: i64 = connection
        .query_row(
            &format!(
                "SELECT COUNT(*) FROM sessions WHERE id IN ({})",
                ids.iter()
                    .map(|id| format!("'{id}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            [],
            |row| row.get(0),
        )
        .expect("count sessions");
    assert_eq!(found, 20);
}

/// What the clients saw acknowledged before the backup began.
#[derive(Default)]
struct Acknowledged {
    sessions: HashSet<String>,
    refresh_tokens: HashSet<String>,
}

#[tokio::test]
async fn a_backup_under_load_restores_every_write_acknowledged_before_it_began() {
    let app = Arc::new(TestApp::spawn().await);
    let backup_started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (app, backup_started, stop, acknowledged) = (
            app.clone(),
            backup_started.clone(),
            stop.clone(),
            acknowledged.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::Acquire) {
                round += 1;
                let created = app
                    .post(
                        "/v1/sessions",
                        Some(ADMIN_KEY),
                        json!({"user_id": format!("w{worker}-{round}")}),
                    )
                    .await;
                assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
                let before = !backup_started.load(Ordering::Acquire);
                let mut token = text(&created.body, "refresh_token").to_owned();
                if before {
                    let mut seen = acknowledged.lock().await;
                    seen.sessions
                        .insert(text(&created.body["session"], "id").to_owned());
                    seen.refresh_tokens.insert(token.clone());
                }
                for _ in 0..3 {
                    let refreshed = app.refresh(&token).await;
                    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
                    let before = !backup_started.load(Ordering::Acquire);
                    token = text(&refreshed.body, "refresh_token").to_owned();
                    if before {
                        acknowledged
                            .lock()
                            .await
                            .refresh_tokens
                            .insert(token.clone());
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let backups = tempfile::TempDir::new().expect("temp dir");
    let backup = backups.path().join("sessiond-backup.db");
    backup_started.store(true, Ordering::Release);
    let (succeeded, stdout, stderr) =
        run_backup(database_url(&app), vec![backup.display().to_string()]).await;
    assert!(succeeded, "backup failed: {stderr}");
    assert!(stdout.starts_with("backed up "), "{stdout}");
    // Writes went on during the backup; let a few more land after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.expect("worker");
    }

    // An existing file is kept unless --force is given.
    let size = std::fs::metadata(&backup).expect("backup exists").len();
    let (succeeded, _, stderr) =
        run_backup(database_url(&app), vec![backup.display().to_string()]).await;
    assert!(!succeeded);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::metadata(&backup).expect("kept").len(), size);
    let leftovers: Vec<_> = std::fs::read_dir(backups.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );

    // Restore: stop the server, put the copy in the database's place, start again.
    let seen = std::mem::take(&mut *acknowledged.lock().await);
    assert!(
        seen.sessions.len() >= 4,
        "load ran before the backup: {}",
        seen.sessions.len()
    );
    let mut app = Arc::into_inner(app).expect("workers are done");
    app.stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let file = app.dir.path().join(format!("sessiond.db{suffix}"));
        if file.exists() {
            std::fs::remove_file(&file).expect("remove the damaged database");
        }
    }
    std::fs::copy(&backup, app.database_path()).expect("restore the copy");
    let app = app.restart().await;
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    for session in &seen.sessions {
        let found = app
            .scalar(&format!(
                "SELECT COUNT(*) FROM sessions WHERE id = '{session}'"
            ))
            .await;
        assert_eq!(found, 1, "acknowledged session {session} restored");
    }
    for token in &seen.refresh_tokens {
        let found = app
            .scalar(&format!(
                "SELECT COUNT(*) FROM refresh_tokens WHERE hash = X'{}'",
                token_hash_hex(token)
            ))
            .await;
        assert_eq!(found, 1, "an acknowledged refresh token is restored");
    }
    let verified = app
        .state
        .service
        .verify_audit()
        .await
        .expect("audit readable")
        .expect("the restored audit chain is intact");
    assert!(verified.events > 0);

    // Replacing is asked for explicitly.
    let (succeeded, _, stderr) = run_backup(
        database_url(&app),
        vec!["--force".into(), backup.display().to_string()],
    )
    .await;
    assert!(succeeded, "{stderr}");
}

#[tokio::test]
async fn backup_of_a_postgresql_database_names_pg_dump_in_one_line() {
    let (succeeded, stdout, stderr) = run_backup(
        "postgres://sessiond@127.0.0.1:1/sessiond".into(),
        vec!["backup.db".into()],
    )
    .await;
    assert!(!succeeded);
    assert!(stdout.is_empty(), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("pg_dump"), "{stderr}");
}

/// Regression: `sessiond backup` copied the database whatever master key it was given, unlike
/// every other command, so a mistyped key went unnoticed until the copy had to be restored.
#[tokio::test]
async fn backup_refuses_a_wrong_master_key_and_copies_nothing() {
    let app = TestApp::spawn().await;
    app.create_session("alice").await;
    let copy = tempfile::TempDir::new().expect("temp dir");
    let destination = copy.path().join("copy.db");
    let wrong = tokio::task::spawn_blocking({
        let database_url = database_url(&app);
        let destination = destination.clone();
        move || {
            sessiond(&database_url)
                .env(
                    "SESSIOND_MASTER_KEY",
                    "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMzI=",
                )
                .arg("backup")
                .arg(&destination)
                .output()
                .expect("sessiond runs")
        }
    })
    .await
    .expect("backup thread");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(stderr.contains("wrong master key"), "{stderr}");
    assert!(!destination.exists(), "nothing was copied");

    // The key the database was made with (development's key file beside it) backs it up.
    let (succeeded, stdout, stderr) =
        run_backup(database_url(&app), vec![destination.display().to_string()]).await;
    assert!(succeeded, "{stdout}{stderr}");
    assert!(destination.exists());
}
