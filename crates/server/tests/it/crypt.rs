//! Encryption at rest: what a copy of the database shows, what a moved value does, a wrong or
//! missing master key, rotating the master key under load, and upgrading a database written
//! before encryption existed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sessiond_core::crypt::{self, MasterKey, UnlockError};
use sessiond_core::refresh::RefreshToken;
use sessiond_core::token::{SigningAlgorithm, StoredKey};
use sessiond_server::AppState;
use sessiond_server::config::{Config, RawConfig};
use sessiond_server::database::{OpenMode, open_store};

use crate::helpers::{ADMIN_KEY, Backend, TestApp, bare_refresh_token, text};
use crate::on_every_store;

const METADATA_MARKER: &str = "metadata-marker-7f3a9c";
const AGENT_MARKER: &str = "AgentMarker/9.4.1-b2c81e";
const NAME_MARKER: &str = "Name Marker d41e0b";

async fn create_marked_session(app: &TestApp, user: &str) -> serde_json::Value {
    app.create_session_with(json!({
        "user_id": user,
        "device": {"id": "laptop-1", "name": NAME_MARKER, "user_agent": AGENT_MARKER, "ip": "198.51.100.23"},
        "metadata": {"note": METADATA_MARKER},
    }))
    .await
}

/// `haystack` contains `needle`, byte for byte.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Everything the app's SQLite database holds on disk, the write-ahead log included, read
/// without touching the running server's locks (see [`TestApp::sqlite_bytes`]).
fn sqlite_bytes(app: &TestApp) -> Vec<u8> {
    app.sqlite_bytes()
}

/// How many POSIX locks this process holds on the file at `path`, as the kernel lists them
/// under each of the process's descriptors of that file (`/proc/self/fdinfo`); `None` where
/// there is no `/proc/self/fd`.
///
/// Not `/proc/locks`: it lists every lock of the machine, and a read of more than a page of it
/// is served in pieces, each starting again at a line number, so that a lock released by
/// another test between two pieces shifts the lines and one of ours can be skipped. Each
/// descriptor's `fdinfo` is produced whole.
fn own_locks_on(path: &std::path::Path) -> Option<usize> {
    let path = std::fs::canonicalize(path).expect("the database file exists");
    let descriptors = std::fs::read_dir("/proc/self/fd").ok()?;
    let mut locks = 0;
    for descriptor in descriptors.flatten() {
        // A descriptor closed meanwhile (another test's) has no link or no fdinfo: skipped.
        if std::fs::read_link(descriptor.path()).ok().as_deref() != Some(path.as_path()) {
            continue;
        }
        let info = std::path::Path::new("/proc/self/fdinfo").join(descriptor.file_name());
        let Ok(info) = std::fs::read_to_string(info) else {
            continue;
        };
        // `lock:` and a tab, then `1: POSIX  ADVISORY  READ 1234 fe:00:5980545 128 128`; a waiter
        // has a `->` more.
        locks += info
            .lines()
            .filter(|line| line.starts_with("lock:"))
            .filter(|line| line.contains(" POSIX ") && !line.contains("->"))
            .count();
    }
    Some(locks)
}

/// The locks this process holds on the file at `path` throughout: the fewest of several
/// samples, since the server's connections take and release locks of their own as they work
/// (a transaction, a checkpoint) while one that is lost never comes back.
fn steady_locks_on(path: &std::path::Path) -> Option<usize> {
    let mut fewest = own_locks_on(path)?;
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        fewest = fewest.min(own_locks_on(path)?);
    }
    Some(fewest)
}

/// Regression: the tests read the running server's database with `std::fs::read` in the
/// server's own process; closing that descriptor dropped every POSIX lock the process held on
/// the file (SQLite's known pitfall), so another process could take the database for unused
/// and checkpoint or reset the WAL under the server.
#[tokio::test]
async fn dumping_the_database_file_keeps_the_running_servers_sqlite_locks() {
    let app = TestApp::spawn().await;
    create_marked_session(&app, "alice").await;
    let Some(before) = steady_locks_on(&app.database_path()) else {
        eprintln!("no /proc/self/fd to read the server's locks from: not run");
        return;
    };
    assert!(
        before > 0,
        "the running server holds a lock on its database"
    );
    let dump = sqlite_bytes(&app);
    assert!(contains(&dump, b"SQLite format 3"), "the database was read");
    assert_eq!(
        steady_locks_on(&app.database_path()),
        Some(before),
        "the server's locks survive the dump"
    );
    let listed = app.get("/v1/users/alice/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(listed.status, StatusCode::OK);
    app.create_session("bob").await;
}

/// A SQL condition: `column` is NULL or sealed (text columns start with `sdenc1:`).
fn sealed_text(column: &str) -> String {
    format!("({column} IS NULL OR {column} LIKE 'sdenc1:%')")
}

async fn a_database_dump_holds_no_plaintext_metadata_user_agent_or_private_key() {
    let app = TestApp::spawn().await;
    let created = create_marked_session(&app, "alice").await;
    // A rotation stores the sealed successor pair of the spent token.
    let refreshed = app
        .refresh(created["refresh_token"].as_str().expect("refresh token"))
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let secrets: Vec<Vec<u8>> = app
        .state
        .service
        .store()
        .signing_keys()
        .await
        .expect("keys")
        .iter()
        .map(|key| key.secret.to_vec())
        .collect();
    assert!(!secrets.is_empty());

    // The API still shows everything in the clear.
    let listed = app.get("/v1/users/alice/sessions", Some(ADMIN_KEY)).await;
    let session = &listed.body["sessions"][0];
    assert_eq!(session["user_agent"], AGENT_MARKER);
    assert_eq!(session["device"]["name"], NAME_MARKER);
    assert_eq!(session["ip"], "198.51.100.23");

    match app.backend {
        Backend::Sqlite => {
            let dump = sqlite_bytes(&app);
            for marker in [METADATA_MARKER, AGENT_MARKER, NAME_MARKER] {
                assert!(
                    !contains(&dump, marker.as_bytes()),
                    "{marker} is in the database file"
                );
            }
            for secret in &secrets {
                assert!(
                    !contains(&dump, secret),
                    "a signing key's secret is in the file"
                );
            }
        }
        Backend::Postgres => {
            // Every row of the tables that hold them, as PostgreSQL renders it as text.
            let leaks = app
                .scalar(&format!(
                    "SELECT COUNT(*) FROM (
                         SELECT t::text AS line FROM sessions t
                         UNION ALL SELECT t::text FROM devices t
                         UNION ALL SELECT t::text FROM events t
                         UNION ALL SELECT t::text FROM audit_events t
                         UNION ALL SELECT t::text FROM refresh_tokens t) dump
                     WHERE line LIKE '%{METADATA_MARKER}%' OR line LIKE '%{AGENT_MARKER}%'
                        OR line LIKE '%{NAME_MARKER}%'"
                ))
                .await;
            assert_eq!(leaks, 0, "a marker is in a row");
            for secret in &secrets {
                let hex: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
                let found = app
                    .scalar(&format!(
                        "SELECT COUNT(*) FROM signing_keys WHERE position('\\x{hex}'::bytea in secret) > 0"
                    ))
                    .await;
                assert_eq!(found, 0, "a signing key's secret is stored in the clear");
            }
        }
    }
    let (prefix_of_secret, prefix_of_successor) = match app.backend {
        Backend::Sqlite => (
            "substr(secret, 1, 6) = CAST('sdenc1' AS BLOB)",
            "substr(sealed_successor, 1, 6) = CAST('sdenc1' AS BLOB)",
        ),
        Backend::Postgres => (
            "substring(secret from 1 for 6) = 'sdenc1'::bytea",
            "substring(sealed_successor from 1 for 6) = 'sdenc1'::bytea",
        ),
    };
    let successors = sealed_successors(app.backend);
    let unsealed_sessions = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM sessions WHERE NOT ({} AND {} AND {} AND {})",
            sealed_text("metadata"),
            sealed_text("user_agent"),
            sealed_text("ip"),
            sealed_text("device_name")
        ))
        .await;
    assert_eq!(unsealed_sessions, 0);
    let unsealed_devices = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM devices WHERE NOT ({} AND {} AND {})",
            sealed_text("name"),
            sealed_text("user_agent"),
            sealed_text("last_ip")
        ))
        .await;
    assert_eq!(unsealed_devices, 0);
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM signing_keys WHERE NOT ({prefix_of_secret})"
        ))
        .await,
        0
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM {successors} WHERE sealed_successor IS NOT NULL AND NOT ({prefix_of_successor})"
        ))
        .await,
        0
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM {successors} WHERE sealed_successor IS NOT NULL"
        ))
        .await,
        1
    );
}

/// A table source of the sealed successor pairs, one row per refresh token, in a column
/// `sealed_successor`: SQLite keeps them in `successor_seals`, the token row pointing at its
/// pair (rows spent before that table existed keep theirs in the row).
fn sealed_successors(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "(SELECT COALESCE(seal.sealed, t.sealed_successor) AS sealed_successor
              FROM refresh_tokens t LEFT JOIN successor_seals seal ON seal.id = t.successor_seal)"
        }
        Backend::Postgres => "refresh_tokens",
    }
}

/// Moves alice's sealed device name, user agent and metadata into bob's session row, and
/// alice's sealed device name into bob's registry row, as someone with write access to the
/// database (or a botched restore) would. Returns bob's session as created.
async fn move_alices_ciphertexts_into_bobs_rows(app: &TestApp) -> serde_json::Value {
    create_marked_session(app, "alice").await;
    let bob = app.create_session("bob").await;
    let bob_id = text(&bob["session"], "id").to_owned();
    let alice_id = app
        .get("/v1/users/alice/sessions", Some(ADMIN_KEY))
        .await
        .body["sessions"][0]["id"]
        .as_str()
        .expect("alice's session")
        .to_owned();
    let moved = app
        .execute(&format!(
            "UPDATE sessions SET
                 device_name = (SELECT device_name FROM sessions WHERE id = '{alice_id}'),
                 user_agent = (SELECT user_agent FROM sessions WHERE id = '{alice_id}'),
                 metadata = (SELECT metadata FROM sessions WHERE id = '{alice_id}')
             WHERE id = '{bob_id}'"
        ))
        .await;
    assert_eq!(moved, 1);
    let moved = app
        .execute(
            "UPDATE devices SET name = (SELECT name FROM devices WHERE user_id = 'alice')
             WHERE user_id = 'bob'",
        )
        .await;
    assert_eq!(moved, 1);
    bob
}

/// Regression: a ciphertext moved between rows made the user's session list answer 500, for
/// the user and for admins, and the session impossible to revoke, so its tokens stayed valid.
async fn an_encrypted_value_copied_into_another_row_reads_as_unreadable_and_the_session_still_revokes()
 {
    let app = TestApp::spawn().await;
    let bob = move_alices_ciphertexts_into_bobs_rows(&app).await;
    let bob_id = text(&bob["session"], "id").to_owned();
    let bob_access = text(&bob, "access_token").to_owned();

    for (path, bearer) in [
        ("/v1/users/bob/sessions", ADMIN_KEY),
        ("/v1/sessions", bob_access.as_str()),
    ] {
        let answer = app.get(path, Some(bearer)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        let session = &answer.body["sessions"][0];
        assert_eq!(session["id"], bob_id.as_str(), "{path}");
        assert_eq!(
            session["unreadable"],
            json!(["device.name", "user_agent", "metadata"]),
            "{path}: {session}"
        );
        assert_eq!(session["device"]["name"], serde_json::Value::Null);
        assert_eq!(session["user_agent"], serde_json::Value::Null);
        assert_eq!(session["ip"], "203.0.113.7", "what opens still reads");
        let body = answer.body.to_string();
        assert!(
            !body.contains(NAME_MARKER) && !body.contains(AGENT_MARKER),
            "never another row's value: {body}"
        );
    }
    for (path, bearer) in [
        ("/v1/users/bob/devices", ADMIN_KEY),
        ("/v1/devices", bob_access.as_str()),
    ] {
        let answer = app.get(path, Some(bearer)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        let device = &answer.body["devices"][0];
        assert_eq!(device["unreadable"], json!(["name"]), "{path}: {device}");
        assert_eq!(device["name"], serde_json::Value::Null);
        assert_eq!(device["user_agent"], crate::helpers::FIREFOX);
    }
    // Alice's rows still open, and show no `unreadable`.
    let alice = app.get("/v1/users/alice/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(alice.body["sessions"][0]["user_agent"], AGENT_MARKER);
    assert!(alice.body["sessions"][0].get("unreadable").is_none());

    // Each bad value is logged and audited once, naming its row, however often it is read.
    let failures = |column: &'static str| {
        let app = &app;
        async move {
            app.audit_count("security.integrity_failure", Some(("column", column)))
                .await
        }
    };
    for column in [
        "sessions.device_name",
        "sessions.user_agent",
        "sessions.metadata",
        "devices.name",
    ] {
        assert_eq!(failures(column).await, 1, "{column}");
    }
    assert_eq!(
        app.audit_count("security.integrity_failure", Some(("session_id", &bob_id)))
            .await,
        3
    );
    let bob_device = text(&bob["session"]["device"], "id");
    assert_eq!(
        app.audit_count(
            "security.integrity_failure",
            Some(("device_id", bob_device))
        )
        .await,
        1,
        "the device row is named"
    );
    let critical = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE type = 'security.integrity_failure'
               AND severity = 'critical' AND user_id = 'bob' AND session_id = '{bob_id}'"
        ))
        .await;
    assert_eq!(critical, 3);
    // An hour later the same bad value is reported again, once.
    app.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        let answer = app.get("/v1/users/bob/sessions", Some(ADMIN_KEY)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(failures("sessions.device_name").await, 2);

    // The session still refreshes, and the user revokes it; its tokens die with it.
    let refreshed = app.refresh(text(&bob, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(
        refreshed.body["session"]["unreadable"],
        json!(["device.name", "user_agent", "metadata"])
    );
    let bob_access = text(&refreshed.body, "access_token");
    let revoked = app
        .delete(&format!("/v1/sessions/{bob_id}"), Some(bob_access))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let after = app.get("/v1/sessions/current", Some(bob_access)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let refresh = app.refresh(text(&refreshed.body, "refresh_token")).await;
    assert_eq!(refresh.body["reason"], "revoked", "{}", refresh.body);
}

async fn the_cli_lists_and_revokes_a_session_whose_device_name_does_not_open() {
    let app = TestApp::spawn().await;
    let bob = move_alices_ciphertexts_into_bobs_rows(&app).await;
    let bob_id = text(&bob["session"], "id").to_owned();
    let env = crate::helpers::master_key_env(&app.config.database_url);

    let listed = sessiond(&app, &["sessions", "list", "--user", "bob"], &env);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&bob_id))
        .unwrap_or_else(|| panic!("bob's session is listed: {stdout}"));
    assert!(line.contains("<unreadable>"), "{line}");
    assert!(!stdout.contains(NAME_MARKER), "{stdout}");
    let listed = sessiond(&app, &["sessions", "list", "--user", "bob", "--json"], &env);
    let json_list: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("the list is JSON");
    assert_eq!(
        json_list["sessions"][0]["unreadable"],
        json!(["device.name", "user_agent", "metadata"])
    );

    let revoked = sessiond(&app, &["sessions", "revoke", &bob_id], &env);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert!(
        String::from_utf8_lossy(&revoked.stdout).contains(&format!("revoked session {bob_id}"))
    );
    // The running server learns of it from storage.
    let refresh = app.refresh(text(&bob, "refresh_token")).await;
    assert_eq!(refresh.body["reason"], "revoked", "{}", refresh.body);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE revoke_reason = 'revoked_by_admin'")
            .await,
        1
    );
}

/// What a command could have written: row counts of every table that changes, the sealed
/// audit events and the chain's last seq.
async fn written_state(app: &TestApp) -> Vec<(String, i64)> {
    let mut state = Vec::new();
    for query in [
        "SELECT COUNT(*) FROM audit_events",
        "SELECT COUNT(*) FROM audit_events WHERE hash IS NOT NULL",
        "SELECT COALESCE(MAX(chain_seq), 0) FROM audit_events",
        "SELECT COUNT(*) FROM audit_checkpoint",
        "SELECT COUNT(*) FROM audit_keys",
        "SELECT COUNT(*) FROM events",
        "SELECT COUNT(*) FROM sessions",
        "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL",
        "SELECT COUNT(*) FROM refresh_tokens",
        "SELECT COUNT(*) FROM devices",
        "SELECT COUNT(*) FROM signing_keys",
        "SELECT COUNT(*) FROM data_keys",
        "SELECT COUNT(*) FROM master_key",
    ] {
        state.push((query.to_owned(), app.scalar(query).await));
    }
    state
}

/// Regression: `sessions list` on a session whose encrypted fields do not open appended
/// `security.integrity_failure` audit events, so a command that only reads wrote to the
/// database (and could not run on a read-only copy). Read-only commands log instead.
async fn read_only_commands_write_nothing_to_the_database() {
    let mut app = TestApp::spawn().await;
    move_alices_ciphertexts_into_bobs_rows(&app).await;
    // The server reports the bad values itself once; the commands are separate processes.
    let listed = app.get("/v1/users/bob/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(listed.status, StatusCode::OK);
    crate::audit::seal_all(&app).await;
    // Stopped, so that only the commands could change the files.
    app.stop().await;
    let env = crate::helpers::master_key_env(&app.config.database_url);
    let before = written_state(&app).await;
    let bytes_before = (app.backend == Backend::Sqlite).then(|| sqlite_bytes(&app));

    for args in [
        &["sessions", "list", "--user", "bob"][..],
        &["sessions", "list", "--user", "bob", "--json"],
        &["keys", "list"],
        &["keys", "list", "--json"],
        &["audit", "verify"],
        &["audit", "export"],
    ] {
        let output = sessiond(&app, args, &env);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(written_state(&app).await, before, "{args:?} wrote");
        if let Some(bytes_before) = &bytes_before {
            assert!(
                &sqlite_bytes(&app) == bytes_before,
                "{args:?} changed the database files"
            );
        }
    }
    let listed = sessiond(&app, &["sessions", "list", "--user", "bob"], &env);
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        stderr.contains("does not open"),
        "the unreadable values are logged: {stderr}"
    );
}

/// `app`'s configuration with another master key.
fn with_master_key(app: &TestApp, key: &MasterKey, previous: Option<&MasterKey>) -> Config {
    let mut config = app.config.clone();
    config.master_key = sessiond_server::config::MasterKeySource::Given(key.clone());
    config.master_key_previous = previous.cloned();
    config
}

async fn a_wrong_master_key_refuses_to_start_and_changes_nothing() {
    let mut app = TestApp::spawn().await;
    create_marked_session(&app, "alice").await;
    app.stop().await;
    let before = match app.backend {
        Backend::Sqlite => sqlite_bytes(&app),
        Backend::Postgres => Vec::new(),
    };
    let check_before = app.scalar("SELECT COUNT(*) FROM master_key").await;
    let keys_before = app.scalar("SELECT COUNT(*) FROM signing_keys").await;
    let wrong = with_master_key(&app, &MasterKey::generate(), None);
    let error = AppState::build(&wrong, app.clock.clone(), OpenMode::CreateIfMissing)
        .await
        .expect_err("a wrong key refuses to start");
    let message = format!("{error:#}");
    assert!(message.contains("wrong master key"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    match app.backend {
        Backend::Sqlite => assert!(sqlite_bytes(&app) == before, "the file changed"),
        Backend::Postgres => {}
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM master_key").await,
        check_before
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM signing_keys").await,
        keys_before
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM data_keys").await, 1);
}

#[test]
fn production_without_a_master_key_refuses_to_start() {
    let raw = RawConfig {
        env: Some("production".into()),
        admin_keys: Some(ADMIN_KEY.into()),
        issuer: Some("https://sessions.example.com".into()),
        ..RawConfig::default()
    };
    let reason = Config::from_raw(&raw).expect_err("refused");
    assert!(reason.contains("SESSIOND_MASTER_KEY"), "{reason}");
    let with_key = RawConfig {
        master_key: Some(MasterKey::generate().to_base64().as_str().into()),
        ..raw
    };
    assert!(Config::from_raw(&with_key).is_ok());
}

#[test]
fn a_malformed_master_key_is_refused_without_repeating_it() {
    let raw = RawConfig {
        master_key: Some("not-a-key-s3cr3t".into()),
        ..RawConfig::default()
    };
    assert!(!format!("{raw:?}").contains("s3cr3t"), "Debug is redacted");
    let reason = Config::from_raw(&raw).expect_err("refused");
    assert!(reason.contains("SESSIOND_MASTER_KEY"), "{reason}");
    assert!(!reason.contains("s3cr3t"), "{reason}");
}

async fn rotating_the_master_key_under_load_fails_no_request() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let old_text = old.to_base64().to_string();
    let app = TestApp::spawn_with(|raw| raw.master_key = Some(old_text.into())).await;
    let app = Arc::new(app);
    create_marked_session(&app, "carol").await;

    // Instances configured with the new key and the old one as previous start before the
    // rotation, as in a rolling restart.
    let rolling = with_master_key(&app, &new, Some(&old));
    AppState::build(&rolling, app.clock.clone(), OpenMode::MustExist)
        .await
        .expect("the previous key opens the database before the rotation");

    let failures = Arc::new(AtomicU64::new(0));
    let successes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut workers = Vec::new();
    for worker in 0..4 {
        let created = app.create_session(&format!("load-{worker}")).await;
        let app = app.clone();
        let failures = failures.clone();
        let successes = successes.clone();
        workers.push(tokio::spawn(async move {
            let mut token = created["refresh_token"].as_str().expect("token").to_owned();
            while Instant::now() < deadline {
                let answer = app.refresh(&token).await;
                if answer.status == StatusCode::OK {
                    token = answer.body["refresh_token"]
                        .as_str()
                        .expect("token")
                        .to_owned();
                    successes.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let store = open_store(&app.config, OpenMode::MustExist)
        .await
        .expect("open");
    assert_eq!(
        crypt::rotate_master_key(store.as_ref(), &old, &new)
            .await
            .expect("rotate"),
        1
    );
    // A second run finds the work done.
    assert_eq!(
        crypt::rotate_master_key(store.as_ref(), &old, &new)
            .await
            .expect("rotate again"),
        0
    );
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request failed");
    assert!(successes.load(Ordering::Relaxed) > 10, "the load ran");
    // The running server still reads what it wrote before and after.
    let listed = app.get("/v1/users/carol/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(listed.body["sessions"][0]["user_agent"], AGENT_MARKER);

    let stale = open_store(&app.config, OpenMode::MustExist)
        .await
        .expect("open");
    assert!(matches!(
        crypt::unlock(stale.as_ref(), &old, None, app.clock_now()).await,
        Err(UnlockError::WrongMasterKey)
    ));
    let error = AppState::build(
        &with_master_key(&app, &old, None),
        app.clock.clone(),
        OpenMode::MustExist,
    )
    .await
    .expect_err("the old key no longer opens the database");
    assert!(format!("{error:#}").contains("wrong master key"));
    let state = AppState::build(
        &with_master_key(&app, &new, None),
        app.clock.clone(),
        OpenMode::MustExist,
    )
    .await
    .expect("the new key opens the database");
    let sessions = state
        .service
        .store()
        .active_sessions(
            &sessiond_core::UserId::from_trusted("carol".into()),
            app.clock_now(),
        )
        .await
        .expect("sessions");
    assert_eq!(sessions[0].metadata["note"], METADATA_MARKER);
}

async fn a_database_written_before_encryption_keeps_working_and_seals_new_values() {
    // A database as the previous release left it: migrated, with a session, a refresh token
    // and a signing key stored in the clear, and no master key.
    let mut app = TestApp::spawn().await;
    app.stop().await;
    for table in [
        "refresh_tokens",
        "devices",
        "sessions",
        "signing_keys",
        "data_keys",
        "master_key",
    ] {
        app.execute(&format!("DELETE FROM {table}")).await;
    }
    let now = app.clock_now();
    let key = StoredKey::generate(SigningAlgorithm::EdDsa, now);
    // Of the shape tokens had then: `sdr_` and 32 random bytes, stored under its SHA-256.
    let token = bare_refresh_token();
    let session_id = uuid::Uuid::new_v4();
    let (secret, hash) = (
        app.bytes_literal(&key.secret),
        app.bytes_literal(&token.hash().0),
    );
    let millis = now.unix_millis();
    let later = millis + 86_400_000;
    app.execute(&format!(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at) VALUES ('{}', 'EdDSA', {secret}, {millis})",
        key.kid
    ))
    .await;
    app.execute(&format!(
        "INSERT INTO sessions (id, user_id, device_id, device_name, device_type, ip, user_agent,
             claims, metadata, created_at, last_active_at, idle_expires_at, expires_at,
             access_expires_at)
         VALUES ('{session_id}', 'dave', 'old-laptop', 'Old Laptop', 'desktop', '192.0.2.9',
             'LegacyAgent/1.0', '{{}}', '{{\"plan\":\"legacy\"}}', {millis}, {millis}, {later},
             {later}, {millis})"
    ))
    .await;
    app.execute(&format!(
        "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ({hash}, '{session_id}', {millis})"
    ))
    .await;

    let app = app.restart().await;
    // The old values read as they are.
    let listed = app.get("/v1/users/dave/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["sessions"][0]["user_agent"], "LegacyAgent/1.0");
    assert_eq!(listed.body["sessions"][0]["device"]["name"], "Old Laptop");
    // The old token refreshes, and the old key still signs and verifies.
    let refreshed = app.refresh(token.expose()).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert!(jwks.body.to_string().contains(&key.kid));
    let access = refreshed.body["access_token"]
        .as_str()
        .expect("access token");
    assert_eq!(
        app.get("/v1/sessions/current", Some(access)).await.status,
        StatusCode::OK
    );
    // A replay inside the grace window opens the successor sealed under the data key.
    let replayed = app.refresh(token.expose()).await;
    assert_eq!(replayed.status, StatusCode::OK);
    assert_eq!(
        replayed.body["refresh_token"],
        refreshed.body["refresh_token"]
    );
    // New values are sealed.
    create_marked_session(&app, "dave").await;
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM sessions WHERE id <> '{session_id}' AND NOT ({})",
            sealed_text("metadata")
        ))
        .await,
        0
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM data_keys").await, 1);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `sessiond ARGS` on `app`'s database with `env`, and none of this process's `SESSIOND_*`
/// variables.
pub fn sessiond(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SESSIOND_") {
            command.env_remove(name);
        }
    }
    command
        .env("SESSIOND_DATABASE_URL", &app.config.database_url)
        .env("SESSIOND_ISSUER", "http://sessiond.test")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .args(args)
        .output()
        .expect("sessiond runs")
}

async fn the_rotate_master_command_moves_the_database_to_a_new_key_file() {
    let app = TestApp::spawn().await;
    create_marked_session(&app, "erin").await;
    let old_env = crate::helpers::master_key_env(&app.config.database_url);
    let new_file = app.dir.path().join("new.master-key");
    let new_file_text = new_file.display().to_string();

    let rotated = sessiond(
        &app,
        &["keys", "rotate-master", "--new-key-file", &new_file_text],
        &old_env,
    );
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(stdout.contains("generated a new master key"), "{stdout}");
    assert!(stdout.contains("re-wrapped 1 data key"), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&new_file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }

    // The running server is unaffected.
    let listed = app.get("/v1/users/erin/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(listed.body["sessions"][0]["user_agent"], AGENT_MARKER);
    // The old key no longer opens the database; the new file does.
    let refused = sessiond(&app, &["sessions", "list", "--user", "erin"], &old_env);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("wrong master key"), "{stderr}");
    let listed = sessiond(
        &app,
        &["sessions", "list", "--user", "erin", "--json"],
        &[("SESSIOND_MASTER_KEY_FILE", &new_file_text)],
    );
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(stdout.contains(AGENT_MARKER), "{stdout}");
}

/// Regression: replaying a spent refresh token whose sealed successor did not open (its
/// ciphertext altered, or moved from another token's row) answered 500, at rest and under the
/// token alike; it is reuse, since the successor cannot be handed out.
async fn a_spent_tokens_successor_that_does_not_open_refuses_the_replay_as_reuse_and_is_audited() {
    // Without a master key only the token's own sealing guards the pair; with one, the
    // encryption at rest fails first.
    for master_key in [None, Some(crate::helpers::TEST_MASTER_KEY)] {
        let app = TestApp::spawn_with(|raw| raw.master_key = master_key.map(Into::into)).await;
        let alice = app.create_session("alice").await;
        let alice_id = text(&alice["session"], "id").to_owned();
        let alice_successor = app.refresh(text(&alice, "refresh_token")).await;
        assert_eq!(alice_successor.status, StatusCode::OK);
        let bob = app.create_session("bob").await;
        let bob_id = text(&bob["session"], "id").to_owned();
        let bob_successor = app.refresh(text(&bob, "refresh_token")).await;
        assert_eq!(bob_successor.status, StatusCode::OK);
        // A replay of the spent token opens its successor while nothing is wrong.
        let replayed = app.refresh(text(&alice, "refresh_token")).await;
        assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);

        // Alice's sealed pair is altered (its last byte dropped), bob's is alice's. SQLite
        // keeps the pairs in `successor_seals`, each spent token's row pointing at its own.
        let (table, column, spent): (_, _, &dyn Fn(&str) -> String) = match app.backend {
            Backend::Sqlite => ("successor_seals", "sealed", &|session: &str| {
                format!(
                    "id = (SELECT successor_seal FROM refresh_tokens
                           WHERE session_id = '{session}' AND successor_seal IS NOT NULL)"
                )
            }),
            Backend::Postgres => ("refresh_tokens", "sealed_successor", &|session: &str| {
                format!("session_id = '{session}' AND sealed_successor IS NOT NULL")
            }),
        };
        let moved = app
            .execute(&format!(
                "UPDATE {table} SET {column} = (SELECT {column} FROM {table} WHERE {})
                 WHERE {}",
                spent(&alice_id),
                spent(&bob_id)
            ))
            .await;
        assert_eq!(moved, 1);
        let altered = app
            .execute(&format!(
                "UPDATE {table} SET {column} = substr({column}, 1, length({column}) - 1)
                 WHERE {}",
                spent(&alice_id)
            ))
            .await;
        assert_eq!(altered, 1);

        for (user, created, successor, session_id) in [
            ("alice", &alice, &alice_successor, &alice_id),
            ("bob", &bob, &bob_successor, &bob_id),
        ] {
            let what = format!("{user}, master key {}", master_key.is_some());
            let replay = app.refresh(text(created, "refresh_token")).await;
            assert_eq!(
                replay.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                replay.body
            );
            assert_eq!(replay.error_code(), "invalid_refresh_token", "{what}");
            assert_eq!(replay.body["reason"], "reuse_detected", "{what}");
            // The session is revoked: its live successor is refused too.
            let after = app.refresh(text(&successor.body, "refresh_token")).await;
            assert_eq!(after.body["reason"], "revoked", "{what}: {}", after.body);
            let reuse = app
                .scalar(&format!(
                    "SELECT COUNT(*) FROM audit_events
                     WHERE type = 'security.reuse_detected' AND session_id = '{session_id}'"
                ))
                .await;
            assert_eq!(reuse, 1, "{what}");
            let reported = app
                .audit_events("security.integrity_failure")
                .await
                .into_iter()
                .filter(|event| event["details"]["session_id"] == session_id.as_str())
                .collect::<Vec<_>>();
            assert_eq!(reported.len(), 1, "{what}: {reported:?}");
            let details = &reported[0]["details"];
            assert_eq!(
                details["column"], "refresh_tokens.sealed_successor",
                "{what}"
            );
            let hash = RefreshToken::parse(text(created, "refresh_token"))
                .expect("a refresh token")
                .hash();
            assert_eq!(details["refresh_token_hash"], hex(&hash.0), "{what}");
            assert_eq!(reported[0]["severity"], "critical", "{what}");
        }
    }
}

on_every_store!(
    read_only_commands_write_nothing_to_the_database,
    a_spent_tokens_successor_that_does_not_open_refuses_the_replay_as_reuse_and_is_audited,
    a_database_dump_holds_no_plaintext_metadata_user_agent_or_private_key,
    an_encrypted_value_copied_into_another_row_reads_as_unreadable_and_the_session_still_revokes,
    the_cli_lists_and_revokes_a_session_whose_device_name_does_not_open,
    a_wrong_master_key_refuses_to_start_and_changes_nothing,
    rotating_the_master_key_under_load_fails_no_request,
    a_database_written_before_encryption_keeps_working_and_seals_new_values,
    the_rotate_master_command_moves_the_database_to_a_new_key_file,
    audit_addresses_are_sealed_shown_to_admins_and_verify_across_old_rows_and_a_master_key_rotation,
    an_audit_address_moved_onto_another_event_does_not_open_and_is_named_by_verify,
);

async fn audit_addresses_are_sealed_shown_to_admins_and_verify_across_old_rows_and_a_master_key_rotation()
 {
    let app = TestApp::spawn().await;
    // A row an older release wrote, its address in the clear and not yet chained.
    app.execute(&format!(
        "INSERT INTO audit_events (type, severity, ip, at, details) \
         VALUES ('security.rate_limited', 'warning', '192.0.2.77', {}, '{{}}')",
        app.clock_now().unix_millis()
    ))
    .await;
    crate::audit::seal_all(&app).await;
    // New rows: the session's creation from 198.51.100.23.
    create_marked_session(&app, "frank").await;
    crate::audit::seal_all(&app).await;

    // The new address is stored sealed; the old one stays as it was written.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM audit_events WHERE ip LIKE '%198.51.100.23%'")
            .await,
        0
    );
    assert!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE type = 'session.created' AND {} \
             AND ip IS NOT NULL",
            sealed_text("ip")
        ))
        .await
            >= 1
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM audit_events WHERE ip = '192.0.2.77'")
            .await,
        1
    );
    if app.backend == Backend::Sqlite {
        assert!(!contains(&sqlite_bytes(&app), b"198.51.100.23"));
    }

    // Admins read both, opened, through the API and the export.
    let created = app.audit_events("session.created").await;
    assert_eq!(created[0]["ip"], "198.51.100.23", "{created:?}");
    // What the hash covers is shown too, so other tools can still check the chain.
    assert!(
        created[0]["stored_ip"]
            .as_str()
            .is_some_and(|stored| stored.starts_with("sdenc1:")),
        "{created:?}"
    );
    let legacy = app.audit_events("security.rate_limited").await;
    assert_eq!(legacy[0]["ip"], "192.0.2.77", "{legacy:?}");
    assert!(legacy[0]["stored_ip"].is_null(), "{legacy:?}");
    let verified = app.get("/v1/audit/verify", Some(ADMIN_KEY)).await;
    assert_eq!(verified.body["ok"], true, "{}", verified.body);

    let old_env = crate::helpers::master_key_env(&app.config.database_url);
    let verify = sessiond(&app, &["audit", "verify"], &old_env);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let export = sessiond(&app, &["audit", "export", "--since", "0"], &old_env);
    let exported = String::from_utf8_lossy(&export.stdout);
    assert!(exported.contains("\"ip\":\"198.51.100.23\""), "{exported}");
    assert!(exported.contains("\"ip\":\"192.0.2.77\""), "{exported}");

    // A master key rotation re-wraps the data key and rewrites no row: the chain still
    // verifies and the addresses still open, under the new key and in the running server.
    let new_file = app.dir.path().join("audit.master-key");
    let new_file_text = new_file.display().to_string();
    let rotated = sessiond(
        &app,
        &["keys", "rotate-master", "--new-key-file", &new_file_text],
        &old_env,
    );
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let new_env = [("SESSIOND_MASTER_KEY_FILE", new_file_text.as_str())];
    let verify = sessiond(&app, &["audit", "verify"], &new_env);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let export = sessiond(&app, &["audit", "export", "--since", "0"], &new_env);
    let exported = String::from_utf8_lossy(&export.stdout);
    assert!(exported.contains("\"ip\":\"198.51.100.23\""), "{exported}");
    // The running server keeps sealing new addresses and reading old ones. (Read through the
    // API only: the test's own SQLite connections are not used after the commands ran.)
    create_marked_session(&app, "frank").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let created = loop {
        app.state.service.seal_audit(1_000).await.expect("seal");
        let listed = app
            .get("/v1/audit?type=session.created", Some(ADMIN_KEY))
            .await;
        let events = listed.body["events"].as_array().expect("events").clone();
        if events.len() == 2 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(created.iter().all(|event| event["ip"] == "198.51.100.23"));
    let verified = app.get("/v1/audit/verify", Some(ADMIN_KEY)).await;
    assert_eq!(verified.body["ok"], true, "{}", verified.body);
}

async fn an_audit_address_moved_onto_another_event_does_not_open_and_is_named_by_verify() {
    let app = TestApp::spawn().await;
    create_marked_session(&app, "grace").await;
    create_marked_session(&app, "heidi").await;
    crate::audit::seal_all(&app).await;
    // A sealed address moved onto another event does not open there: that event shows no
    // address rather than another's, and verification names it.
    let sealed: i64 = app
        .scalar("SELECT MIN(chain_seq) FROM audit_events WHERE ip LIKE 'sdenc1:%'")
        .await;
    let target: i64 = app
        .scalar("SELECT MAX(chain_seq) FROM audit_events WHERE ip LIKE 'sdenc1:%'")
        .await;
    assert_ne!(sealed, target);
    app.execute(&format!(
        "UPDATE audit_events SET ip = (SELECT ip FROM audit_events WHERE chain_seq = {sealed}) \
         WHERE chain_seq = {target}"
    ))
    .await;
    let listed = app
        .get(&format!("/v1/audit?since={}", target - 1), Some(ADMIN_KEY))
        .await;
    let moved = &listed.body["events"][0];
    assert_eq!(moved["seq"], target, "{}", listed.body);
    assert!(moved["ip"].is_null(), "{moved}");
    let verified = app.get("/v1/audit/verify", Some(ADMIN_KEY)).await;
    assert_eq!(verified.body["first_bad_seq"], target, "{}", verified.body);
}
