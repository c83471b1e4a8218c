//! The audit trail: sealing, `GET /v1/audit`, and `sessiond audit verify` finding every kind
//! of tampering by the first bad seq, on both stores.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sessiond_server::cli::{self, AuditCommand};

use sessiond_core::signing_keys::Activation;

use crate::helpers::{ADMIN_KEY, Backend, TestApp, text};
use crate::on_every_store;

on_every_store!(
    events_are_sealed_into_a_chain_and_listed_with_filters_and_paging,
    listing_the_audit_trail_is_for_admins_and_checks_its_query,
    an_untouched_chain_verifies_with_the_real_command,
    an_edited_event_is_named_by_its_seq,
    a_deleted_event_is_named_by_its_seq,
    a_deleted_newest_event_is_named_by_its_seq,
    an_inserted_event_is_named_by_its_seq,
    swapped_events_are_named_at_the_first_of_them,
    pruning_leaves_a_signed_checkpoint_that_verifies,
    a_tampered_checkpoint_is_caught,
    refreshes_are_audited_in_full_by_sample_or_not_at_all,
    signing_key_rotations_and_retirements_are_audited,
    failed_refreshes_are_audited_per_address_and_reason_once_a_period,
    failed_refreshes_are_written_by_the_background_task_each_period,
);

/// The `zeroblob(32)` of both stores.
fn zero_hash(app: &TestApp) -> &'static str {
    match app.backend {
        Backend::Sqlite => "zeroblob(32)",
        Backend::Postgres => "decode(repeat('00', 32), 'hex')",
    }
}

/// Seals every audit event written so far. On PostgreSQL an event is sealed only once every
/// transaction older than its own has ended, and other tests' transactions on the same server
/// count, so this retries for a while.
pub async fn seal_all(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        app.state.service.seal_audit(1_000).await.expect("seal");
        let unsealed = app
            .scalar("SELECT COUNT(*) FROM audit_events WHERE hash IS NULL")
            .await;
        if unsealed == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{unsealed} events stay unsealed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three sessions, each from a device new to its user (`session.created`, `device.new`), then
/// two revocations: eight events, sealed.
async fn eight_sealed_events(app: &TestApp) -> Vec<Value> {
    let mut created = Vec::new();
    for user in ["alice", "bob", "carol"] {
        created.push(app.create_session(user).await);
    }
    let bobs = text(&created[1]["session"], "id").to_owned();
    let answer = app
        .delete(&format!("/v1/sessions/{bobs}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let answer = app
        .post(
            "/v1/logout",
            Some(text(&created[2], "access_token")),
            Value::Null,
        )
        .await;
    assert!(answer.status.is_success(), "{}", answer.body);
    seal_all(app).await;
    created
}

/// `sessiond audit verify` as the library runs it: `Ok(report)` or `Err(one line)`.
async fn verify(app: &TestApp) -> Result<String, String> {
    let mut out = Vec::new();
    cli::audit(&app.state, AuditCommand::Verify, &mut out)
        .await
        .map(|()| String::from_utf8(out).expect("utf-8"))
        .map_err(|error| format!("{error:#}"))
}

fn assert_broken_at(result: Result<String, String>, seq: u64) {
    let error = result.expect_err("the chain is reported broken");
    assert!(
        error.contains(&format!("broken at seq {seq}:")),
        "expected seq {seq}: {error}"
    );
}

async fn list(app: &TestApp, query: &str) -> Value {
    let answer = app.get(&format!("/v1/audit{query}"), Some(ADMIN_KEY)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

async fn events_are_sealed_into_a_chain_and_listed_with_filters_and_paging() {
    let app = TestApp::spawn().await;
    let created = eight_sealed_events(&app).await;

    let all = list(&app, "").await;
    let events = all["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|event| text(event, "type")).collect();
    assert_eq!(
        kinds,
        [
            "session.created",
            "device.new",
            "session.created",
            "device.new",
            "session.created",
            "device.new",
            "session.revoked",
            "session.revoked"
        ]
    );
    assert_eq!(all["next"], Value::Null);
    let mut prev_hash = "0".repeat(64);
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], index + 1);
        assert_eq!(text(event, "prev_hash"), prev_hash, "{event}");
        assert_eq!(text(event, "hash").len(), 64);
        prev_hash = text(event, "hash").to_owned();
    }
    assert_eq!(events[6]["details"]["reason"], "revoked_by_admin");
    assert_eq!(events[6]["details"]["actor"], "admin");
    assert_eq!(events[7]["details"]["actor"], "user");
    assert_eq!(events[0]["severity"], "info");
    assert_eq!(events[0]["user_id"], "alice");

    let bob = list(&app, "?user_id=bob").await;
    assert_eq!(bob["events"].as_array().expect("events").len(), 3);
    let bobs_session = text(&created[1]["session"], "id");
    let by_session = list(
        &app,
        &format!("?session_id={bobs_session}&type=session.revoked"),
    )
    .await;
    assert_eq!(by_session["events"].as_array().expect("events").len(), 1);
    assert_eq!(by_session["events"][0]["seq"], 7);

    let first = list(&app, "?limit=2").await;
    assert_eq!(first["events"].as_array().expect("events").len(), 2);
    let next = text(&first, "next").to_owned();
    assert_eq!(next, "2");
    let second = list(&app, &format!("?limit=2&since={next}")).await;
    assert_eq!(second["events"][0]["seq"], 3);
    let last = list(&app, "?limit=3&since=6").await;
    assert_eq!(last["events"].as_array().expect("events").len(), 2);
    assert_eq!(last["next"], Value::Null);

    let future = list(&app, "?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["events"].as_array().expect("events").len(), 0);
    let past = list(&app, "?since=2000-01-01T00:00:00Z").await;
    assert_eq!(past["events"].as_array().expect("events").len(), 8);
}

async fn listing_the_audit_trail_is_for_admins_and_checks_its_query() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let answer = app
        .get("/v1/audit", Some(text(&created, "access_token")))
        .await;
    assert!(
        matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ),
        "{}",
        answer.status
    );
    assert_eq!(
        app.get("/v1/audit", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?since=yesterday",
        "?session_id=nope",
        // PostgreSQL's text type refuses a NUL byte; the filter refuses it first (was a 500).
        "?type=%00",
        "?type=session%20created",
    ] {
        let answer = app.get(&format!("/v1/audit{bad}"), Some(ADMIN_KEY)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "invalid_request", "{bad}");
    }
}

/// `sessiond` on the app's database, with none of this process's `SESSIOND_*` variables.
fn sessiond(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SESSIOND_") {
            command.env_remove(name);
        }
    }
    command
        .env("SESSIOND_DATABASE_URL", &app.config.database_url)
        .envs(crate::helpers::master_key_env(&app.config.database_url))
        .env("SESSIOND_ISSUER", "http://sessiond.test")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .expect("sessiond runs")
}

async fn an_untouched_chain_verifies_with_the_real_command() {
    let app = TestApp::spawn().await;
    eight_sealed_events(&app).await;
    let report = verify(&app).await.expect("intact");
    assert!(report.contains("8 events from seq 1 to seq 8"), "{report}");

    let verified = sessiond(&app, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(stdout.contains("audit chain intact"), "{stdout}");

    let exported = sessiond(
        &app,
        &["audit", "export", "--since", "6", "--format", "jsonl"],
    );
    assert!(exported.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&exported.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 7);

    app.execute("UPDATE audit_events SET ip = '198.51.100.1' WHERE chain_seq = 3")
        .await;
    let broken = sessiond(&app, &["audit", "verify"]);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success(), "a broken chain exits non-zero");
    assert!(stderr.contains("broken at seq 3"), "{stderr}");
}

async fn an_edited_event_is_named_by_its_seq() {
    let app = TestApp::spawn().await;
    eight_sealed_events(&app).await;
    let edited = app
        .execute(
            "UPDATE audit_events SET details = '{\"actor\":\"user\",\"reason\":\"logout\"}'
             WHERE chain_seq = 4",
        )
        .await;
    assert_eq!(edited, 1);
    assert_broken_at(verify(&app).await, 4);
}

async fn a_deleted_event_is_named_by_its_seq() {
    let app = TestApp::spawn().await;
    eight_sealed_events(&app).await;
    app.execute("DELETE FROM audit_events WHERE chain_seq = 2")
        .await;
    assert_broken_at(verify(&app).await, 2);
}

async fn a_deleted_newest_event_is_named_by_its_seq() {
    let app = TestApp::spawn().await;
    eight_sealed_events(&app).await;
    app.execute("DELETE FROM audit_events WHERE chain_seq = 8")
        .await;
    assert_broken_at(verify(&app).await, 8);
}

async fn an_inserted_event_is_named_by_its_seq() {
    let app = TestApp::spawn().await;
    eight_sealed_events(&app).await;
    // Make room at seq 3 (through a detour: seqs are unique), then forge an event there that
    // claims to follow seq 2.
    app.execute("UPDATE audit_events SET chain_seq = chain_seq + 100 WHERE chain_seq >= 3")
        .await;
    app.execute("UPDATE audit_events SET chain_seq = chain_seq - 99 WHERE chain_seq >= 103")
        .await;
    let zero = zero_hash(&app);
    let inserted = app
        .execute(&format!(
            "INSERT INTO audit_events (type, severity, user_id, at, details, chain_seq,
                                       prev_hash, hash)
             SELECT 'session.created', 'info', 'mallory', at, '{{}}', 3, hash, {zero}
             FROM audit_events WHERE chain_seq = 2"
        ))
        .await;
    assert_eq!(inserted, 1);
    assert_broken_at(verify(&app).await, 3);
}

async fn swapped_events_are_named_at_the_first_of_them() {
    let app = TestApp::spawn().await;
    eight_sealed_events(&app).await;
    app.execute("UPDATE audit_events SET chain_seq = 1000 WHERE chain_seq = 2")
        .await;
    app.execute("UPDATE audit_events SET chain_seq = 2 WHERE chain_seq = 4")
        .await;
    app.execute("UPDATE audit_events SET chain_seq = 4 WHERE chain_seq = 1000")
        .await;
    assert_broken_at(verify(&app).await, 2);
}

/// Eight events, then ten days later four more (two sessions from new devices), all sealed;
/// then the first eight pruned.
async fn pruned_chain(app: &TestApp) {
    eight_sealed_events(app).await;
    app.advance(Duration::from_secs(10 * 86_400));
    app.create_session("dave").await;
    app.create_session("erin").await;
    seal_all(app).await;
    let mut out = Vec::new();
    cli::audit(
        &app.state,
        AuditCommand::Prune {
            older_than: Duration::from_secs(5 * 86_400),
        },
        &mut out,
    )
    .await
    .expect("prune");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "pruned 8 audit events\n"
    );
}

async fn pruning_leaves_a_signed_checkpoint_that_verifies() {
    let app = TestApp::spawn().await;
    pruned_chain(&app).await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM audit_events").await, 4);
    let report = verify(&app).await.expect("intact after pruning");
    assert!(
        report.contains("4 events from the checkpoint at seq 8 to seq 12"),
        "{report}"
    );
    // The chain goes on from the checkpoint.
    app.create_session("frank").await;
    seal_all(&app).await;
    let listed = list(&app, "").await;
    assert_eq!(listed["events"][0]["seq"], 9);
    assert_eq!(listed["events"][5]["seq"], 14);
    verify(&app).await.expect("still intact");

    // Deleting the oldest remaining event is a gap after the checkpoint.
    app.execute("DELETE FROM audit_events WHERE chain_seq = 9")
        .await;
    assert_broken_at(verify(&app).await, 9);
}

async fn a_tampered_checkpoint_is_caught() {
    let app = TestApp::spawn().await;
    pruned_chain(&app).await;
    // Pruning one more event by hand needs a checkpoint at seq 9 with seq 9's hash; without
    // the key its MAC cannot be made.
    app.execute(
        "UPDATE audit_checkpoint SET seq = 9,
                hash = (SELECT hash FROM audit_events WHERE chain_seq = 9)",
    )
    .await;
    app.execute("DELETE FROM audit_events WHERE chain_seq = 9")
        .await;
    assert_broken_at(verify(&app).await, 9);
}

/// Refreshes `count` times in a chain; returns the session's id.
async fn refresh_chain(app: &TestApp, count: usize) -> String {
    let created = app.create_session("alice").await;
    let mut token = text(&created, "refresh_token").to_owned();
    for _ in 0..count {
        let answer = app.refresh(&token).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        token = text(&answer.body, "refresh_token").to_owned();
    }
    text(&created["session"], "id").to_owned()
}

async fn refreshes_are_audited_in_full_by_sample_or_not_at_all() {
    for (setting, refreshes, audited) in [("all", 3, 3), ("sample:2", 4, 2), ("off", 3, 0)] {
        let app = TestApp::spawn_with(|raw| raw.audit_refreshes = Some(setting.into())).await;
        let session = refresh_chain(&app, refreshes).await;
        assert_eq!(
            app.audit_count("session.refreshed", None).await,
            audited,
            "{setting}"
        );
        assert_eq!(
            app.scalar(&format!(
                "SELECT COUNT(*) FROM audit_events
                 WHERE type = 'session.refreshed' AND session_id = '{session}'"
            ))
            .await,
            audited,
            "{setting}: written for the refreshed session"
        );
        // Each refresh writes its live event once, audited or not.
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM events WHERE type = 'session.refreshed'")
                .await,
            i64::try_from(refreshes).expect("small"),
            "{setting}"
        );
        seal_all(&app).await;
        verify(&app).await.expect("the chain holds the refreshes");
    }
}

async fn signing_key_rotations_and_retirements_are_audited() {
    let app = TestApp::spawn().await;
    let keys = app.state.service.signing_keys();
    let rotated = crate::keys::rotate(&app, Activation::Now).await;
    assert_eq!(
        app.audit_count("key.rotated", Some(("kid", &rotated.kid)))
            .await,
        1
    );
    let retired_kid = app
        .state
        .service
        .store()
        .signing_keys()
        .await
        .expect("keys")
        .into_iter()
        .find(|key| key.kid != rotated.kid)
        .expect("the replaced key")
        .kid;
    keys.retire(&retired_kid, app.state.service.now())
        .await
        .expect("retire");
    assert_eq!(
        app.audit_count("key.retired", Some(("kid", &retired_kid)))
            .await,
        1
    );
}

/// A refresh of `refresh_token` on `path` (`/v1/sessions/refresh` or `/oauth/token`) from
/// `client`, as reported by the trusted proxy on 127.0.0.1.
async fn refresh_from(app: &TestApp, path: &str, refresh_token: &str, client: &str) -> u16 {
    let request = app
        .client
        .post(format!("{}{path}", app.base))
        .header("x-forwarded-for", client);
    let request = if path == "/oauth/token" {
        request.form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
    } else {
        request.json(&serde_json::json!({ "refresh_token": refresh_token }))
    };
    app.raw(request).await.status.as_u16()
}

async fn failed_refreshes_are_audited_per_address_and_reason_once_a_period() {
    let mut app = TestApp::spawn_with(|raw| {
        raw.rate_limits = Some("off".into());
        raw.trusted_proxies = Some("127.0.0.1/32".into());
        raw.audit_failure_period = Some("1h".into());
    })
    .await;
    let revoked = app.create_session("mallory").await;
    let answer = app
        .delete(
            &format!("/v1/sessions/{}", text(&revoked["session"], "id")),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    let unknown = format!("sdr_{}", "G".repeat(43));
    for _ in 0..40 {
        let status = refresh_from(&app, "/v1/sessions/refresh", &unknown, "198.51.100.1").await;
        assert_eq!(status, 401);
    }
    for _ in 0..10 {
        let status = refresh_from(&app, "/oauth/token", &unknown, "198.51.100.1").await;
        assert_eq!(status, 400);
    }
    for _ in 0..3 {
        refresh_from(&app, "/v1/sessions/refresh", "sdr_short", "198.51.100.2").await;
    }
    for _ in 0..2 {
        let token = text(&revoked, "refresh_token");
        refresh_from(&app, "/v1/sessions/refresh", token, "198.51.100.1").await;
    }

    // Nothing is written per failure: 55 failures make three rows, once the period ends.
    assert_eq!(app.audit_count("security.refresh_failures", None).await, 0);
    let failures = &app.state.refresh_failures;
    let store = app.state.service.store();
    let written = failures.flush(store.as_ref(), app.clock_now()).await;
    assert_eq!(written.expect("flush"), 3);
    assert_eq!(
        failures.flush(store.as_ref(), app.clock_now()).await.ok(),
        Some(0)
    );
    seal_all(&app).await;
    let listed = app
        .get("/v1/audit?type=security.refresh_failures", Some(ADMIN_KEY))
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let mut rows: Vec<(String, String, u64)> = listed.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            assert_eq!(event["severity"], "warning", "{event}");
            assert!(event["user_id"].is_null() && event["session_id"].is_null());
            let details = &event["details"];
            assert!(
                details["first_seen"]
                    .as_str()
                    .is_some_and(|at| at.ends_with('Z'))
            );
            assert!(details["first_seen"].as_str() <= details["last_seen"].as_str());
            assert_eq!(details["period_seconds"], 3600);
            (
                text(event, "ip").to_owned(),
                text(details, "reason").to_owned(),
                details["count"].as_u64().expect("count"),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("198.51.100.1".to_owned(), "revoked".to_owned(), 2),
            ("198.51.100.1".to_owned(), "unknown".to_owned(), 50),
            ("198.51.100.2".to_owned(), "unknown".to_owned(), 3),
        ]
    );

    // What is pending when the server stops is written then.
    refresh_from(&app, "/v1/sessions/refresh", &unknown, "198.51.100.3").await;
    app.stop().await;
    assert_eq!(app.audit_count("security.refresh_failures", None).await, 4);
}

async fn failed_refreshes_are_written_by_the_background_task_each_period() {
    let app = TestApp::spawn_with(|raw| {
        raw.trusted_proxies = Some("127.0.0.1/32".into());
        raw.audit_failure_period = Some("1s".into());
    })
    .await;
    let unknown = format!("sdr_{}", "H".repeat(43));
    for _ in 0..5 {
        refresh_from(&app, "/v1/sessions/refresh", &unknown, "192.0.2.44").await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.audit_count("security.refresh_failures", None).await == 0 {
        assert!(Instant::now() < deadline, "no failures written within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.audit_count("security.refresh_failures", Some(("reason", "unknown")))
            .await,
        1
    );
}
