//! Point 3: rotation, the reuse grace window, and theft detection.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use sessiond_core::refresh::RefreshToken;

use crate::helpers::{Backend, TestApp, bare_refresh_token, text};

fn token_bytes(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.strip_prefix("sdr_").expect("a refresh token"))
        .expect("base64url")
}

async fn a_refresh_spends_the_token_and_issues_a_new_pair() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    app.advance(Duration::from_secs(60));

    let refreshed = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_ne!(
        text(&refreshed.body, "refresh_token"),
        text(&created, "refresh_token")
    );
    assert_ne!(
        text(&refreshed.body, "access_token"),
        text(&created, "access_token")
    );
    assert_eq!(refreshed.body["session"]["id"], created["session"]["id"]);
    assert_eq!(refreshed.body["session"]["current"], true);
    assert_ne!(
        refreshed.body["session"]["last_active_at"], created["session"]["last_active_at"],
        "a refresh marks the session active"
    );

    let next = app.refresh(text(&refreshed.body, "refresh_token")).await;
    assert_eq!(next.status, StatusCode::OK, "the successor works in turn");
}

async fn a_replay_inside_the_grace_window_returns_the_same_successor_pair() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let first = app.refresh(text(&created, "refresh_token")).await;
    app.advance(Duration::from_secs(9));
    let replay = app.refresh(text(&created, "refresh_token")).await;

    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["refresh_token"], first.body["refresh_token"]);
    assert_eq!(replay.body["access_token"], first.body["access_token"]);
    let current = app
        .get(
            "/v1/sessions/current",
            Some(text(&replay.body, "access_token")),
        )
        .await;
    assert_eq!(current.status, StatusCode::OK, "the replayed pair is live");
}

/// The refresh tokens stored, on either store: a token's key is 32 bytes, and the SQLite store
/// also keeps each session's activity row (28 bytes) in that table.
const TOKEN_ROWS: &str = "SELECT COUNT(*) FROM refresh_tokens WHERE length(hash) = 32";

/// Twice: on the token the session was created with (read from storage), then on the
/// successor the race issued (which the instance holds in memory; one request takes it, the
/// others read storage).
async fn thirty_two_concurrent_refreshes_of_one_token_all_get_one_successor() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let mut token = text(&created, "refresh_token").to_owned();

    for stored in [2, 3] {
        let answers = join_all((0..32).map(|_| app.refresh(&token))).await;

        let mut successors = std::collections::HashSet::new();
        for answer in &answers {
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            successors.insert(text(&answer.body, "refresh_token").to_owned());
        }
        assert_eq!(
            successors.len(),
            1,
            "exactly one successor for 32 racing requests"
        );
        let issued = app.scalar(TOKEN_ROWS).await;
        assert_eq!(
            issued, stored,
            "the tokens before and one successor: nothing else was stored"
        );
        token = successors.into_iter().next().unwrap_or_default();
    }
    assert_eq!(app.refresh(&token).await.status, StatusCode::OK);
}

async fn a_replay_after_the_grace_window_revokes_the_whole_session() {
    // With unused successors replayed only inside the grace window, as before that bound
    // existed: the grace window alone decides.
    let app = TestApp::spawn_with(|raw| raw.unused_successor_replay = Some("0".into())).await;
    let created = app.create_session("alice").await;
    let first = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(first.status, StatusCode::OK);
    app.advance(Duration::from_secs(11));

    let stolen = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stolen.error_code(), "invalid_refresh_token");
    assert_eq!(stolen.body["reason"], "reuse_detected");

    // The successor and every access token of the session die with it.
    let successor = app.refresh(text(&first.body, "refresh_token")).await;
    assert_eq!(successor.status, StatusCode::UNAUTHORIZED);
    assert_eq!(successor.body["reason"], "revoked");
    for access in [
        text(&created, "access_token"),
        text(&first.body, "access_token"),
    ] {
        let answer = app.get("/v1/sessions/current", Some(access)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.error_code(), "unauthenticated");
    }

    let critical = app
        .scalar(
            "SELECT COUNT(*) FROM audit_events
             WHERE type = 'security.reuse_detected' AND severity = 'critical'",
        )
        .await;
    assert_eq!(critical, 1, "a critical audit event is written");
    let reason = app
        .scalar("SELECT COUNT(*) FROM sessions WHERE revoke_reason = 'reuse_detected'")
        .await;
    assert_eq!(reason, 1);
}

async fn a_replay_after_the_successor_was_used_is_reuse_even_inside_the_window() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let first = app.refresh(text(&created, "refresh_token")).await;
    let second = app.refresh(text(&first.body, "refresh_token")).await;
    assert_eq!(second.status, StatusCode::OK);

    let replay = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replay.body["reason"], "reuse_detected");
    let latest = app.refresh(text(&second.body, "refresh_token")).await;
    assert_eq!(latest.body["reason"], "revoked");
}

/// Regression: a server down longer than the grace window (a PostgreSQL restart of 11 s against
/// a 10 s grace) revoked the sessions of clients retrying a refresh whose rotation had
/// committed but whose answer was lost.
async fn a_spent_token_retried_after_a_long_outage_gets_its_unused_successor_which_then_rotates() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let first = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // The answer was lost; the server is back ten minutes later, far past the grace window.
    app.advance(Duration::from_secs(10 * 60));

    let retried = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body["refresh_token"], first.body["refresh_token"]);
    assert_eq!(retried.body["access_token"], first.body["access_token"]);
    let retried_again = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(
        retried_again.body["refresh_token"], first.body["refresh_token"],
        "every retry gets the same pair while the successor is unused"
    );

    let next = app.refresh(text(&retried.body, "refresh_token")).await;
    assert_eq!(
        next.status,
        StatusCode::OK,
        "the successor rotates: {}",
        next.body
    );
    assert_ne!(next.body["refresh_token"], first.body["refresh_token"]);
    let current = app
        .get(
            "/v1/sessions/current",
            Some(text(&next.body, "access_token")),
        )
        .await;
    assert_eq!(current.status, StatusCode::OK, "the session lives on");
    assert_eq!(
        app.scalar(TOKEN_ROWS).await,
        3,
        "the replays stored nothing"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
}

async fn a_spent_token_is_reuse_once_its_successor_was_used_even_long_after() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let first = app.refresh(text(&created, "refresh_token")).await;
    app.advance(Duration::from_secs(10 * 60));
    let second = app.refresh(text(&first.body, "refresh_token")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    app.advance(Duration::from_secs(60));

    let stolen = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stolen.body["reason"], "reuse_detected");
    let latest = app.refresh(text(&second.body, "refresh_token")).await;
    assert_eq!(latest.body["reason"], "revoked", "the whole session died");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM sessions WHERE revoke_reason = 'reuse_detected'")
            .await,
        1
    );
}

async fn a_spent_token_past_the_unused_successor_bound_is_reuse() {
    let app = TestApp::spawn_with(|raw| raw.unused_successor_replay = Some("5m".into())).await;
    let created = app.create_session("alice").await;
    let first = app.refresh(text(&created, "refresh_token")).await;
    app.advance(Duration::from_secs(5 * 60));
    let at_bound = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(at_bound.status, StatusCode::OK, "{}", at_bound.body);
    assert_eq!(at_bound.body["refresh_token"], first.body["refresh_token"]);
    app.advance(Duration::from_secs(1));

    let late = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    assert_eq!(late.body["reason"], "reuse_detected");
    let successor = app.refresh(text(&first.body, "refresh_token")).await;
    assert_eq!(successor.body["reason"], "revoked");

    // The default bound is an hour.
    let app = TestApp::spawn().await;
    let created = app.create_session("bob").await;
    app.refresh(text(&created, "refresh_token")).await;
    app.advance(Duration::from_secs(3600 + 1));
    let late = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(late.body["reason"], "reuse_detected");
}

async fn a_zero_grace_window_treats_any_replay_as_reuse() {
    let app = TestApp::spawn_with(|raw| raw.reuse_grace = Some("0".into())).await;
    let created = app.create_session("alice").await;
    assert_eq!(
        app.refresh(text(&created, "refresh_token")).await.status,
        StatusCode::OK
    );
    let replay = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(replay.body["reason"], "reuse_detected");
}

async fn unknown_and_malformed_refresh_tokens_are_refused_as_unknown() {
    let app = TestApp::spawn().await;
    app.create_session("alice").await;
    let long = "x".repeat(5000);
    for token in [
        "",
        "garbage",
        "sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        long.as_str(),
    ] {
        let answer = app.refresh(token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:.20}");
        assert_eq!(answer.error_code(), "invalid_refresh_token");
        assert_eq!(answer.body["reason"], "unknown");
    }
}

async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let refreshed = app.refresh(text(&created, "refresh_token")).await;
    let mut app = app;
    app.stop().await;

    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", app.database_path().display());
        bytes.extend(crate::helpers::file_bytes_from_a_child(&path));
    }
    for token in [
        text(&created, "refresh_token"),
        text(&refreshed.body, "refresh_token"),
    ] {
        let secret = &token.as_bytes()[4..];
        assert!(
            !bytes.windows(secret.len()).any(|window| window == secret),
            "a plaintext refresh token is in the database files"
        );
        // Its key holds its locator (12 bytes, no secret), never its random part.
        let random = &token_bytes(token)[12..];
        assert!(
            !bytes.windows(random.len()).any(|window| window == random),
            "a refresh token's random bytes are in the database files"
        );
    }
}

async fn a_successor_is_keyed_by_the_time_it_was_issued_so_keys_sort_in_that_order() {
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let mut token = text(&created, "refresh_token").to_owned();
    for _ in 0..3 {
        app.advance(Duration::from_millis(5));
        let now = app.clock_now().unix_millis().to_be_bytes();
        let refreshed = app.refresh(&token).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
        let successor = text(&refreshed.body, "refresh_token").to_owned();
        let (before, after) = (token_bytes(&token), token_bytes(&successor));
        assert_eq!(
            after[..6],
            now[2..],
            "the time it was issued, in milliseconds"
        );
        assert_ne!(after[6..], before[6..], "fresh random bytes");
        let (key, spent) = (
            RefreshToken::parse(&successor).expect("a token").hash(),
            RefreshToken::parse(&token).expect("a token").hash(),
        );
        assert_eq!(key.0[..12], after[..12]);
        assert!(key.0 > spent.0, "issued later, so sorted after");
        assert_eq!(
            app.scalar(&format!(
                "SELECT COUNT(*) FROM refresh_tokens WHERE hash = {}",
                app.bytes_literal(&key.0)
            ))
            .await,
            1,
            "the successor is stored under its key"
        );
        token = successor;
    }
}

async fn a_token_minted_before_locators_refreshes_replays_and_is_reuse_once_succeeded() {
    // A token as releases before locators minted it (`sdr_` and 32 random bytes), stored
    // under its SHA-256: the created session's token row is moved to such a token.
    let app = TestApp::spawn().await;
    let created = app.create_session("alice").await;
    let current = RefreshToken::parse(text(&created, "refresh_token")).expect("a token");
    let bare_token = bare_refresh_token();
    let (keyed, bare) = (
        app.bytes_literal(&current.hash().0),
        app.bytes_literal(&bare_token.hash().0),
    );
    assert_eq!(
        app.execute(&format!(
            "UPDATE refresh_tokens SET hash = {bare} WHERE hash = {keyed}"
        ))
        .await,
        1
    );
    if app.backend == Backend::Sqlite {
        app.execute(&format!(
            "UPDATE refresh_token_chains SET first_token = {bare} WHERE first_token = {keyed}"
        ))
        .await;
    }

    let refreshed = app.refresh(bare_token.expose()).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let successor = text(&refreshed.body, "refresh_token").to_owned();
    assert_eq!(successor.len(), 63, "its successor has a locator");
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE hash = {}",
            app.bytes_literal(&RefreshToken::parse(&successor).expect("a token").hash().0)
        ))
        .await,
        1
    );
    app.advance(Duration::from_secs(1));
    let replay = app.refresh(bare_token.expose()).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(
        replay.body["refresh_token"],
        refreshed.body["refresh_token"]
    );

    let next = app.refresh(&successor).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    let reuse = app.refresh(bare_token.expose()).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reuse.body["reason"], "reuse_detected");
    let revoked = app.refresh(text(&next.body, "refresh_token")).await;
    assert_eq!(revoked.body["reason"], "revoked");
}

crate::on_every_store!(
    a_successor_is_keyed_by_the_time_it_was_issued_so_keys_sort_in_that_order,
    a_token_minted_before_locators_refreshes_replays_and_is_reuse_once_succeeded,
    a_refresh_spends_the_token_and_issues_a_new_pair,
    a_replay_inside_the_grace_window_returns_the_same_successor_pair,
    thirty_two_concurrent_refreshes_of_one_token_all_get_one_successor,
    a_replay_after_the_grace_window_revokes_the_whole_session,
    a_replay_after_the_successor_was_used_is_reuse_even_inside_the_window,
    a_spent_token_retried_after_a_long_outage_gets_its_unused_successor_which_then_rotates,
    a_spent_token_is_reuse_once_its_successor_was_used_even_long_after,
    a_spent_token_past_the_unused_successor_bound_is_reuse,
    a_zero_grace_window_treats_any_replay_as_reuse,
    unknown_and_malformed_refresh_tokens_are_refused_as_unknown,
    refresh_tokens_are_stored_only_as_hashes,
);

/// An instance answers the next refresh of a successor it issued from memory; what another
/// instance did to that token or its session meanwhile is found by the rotation's
/// compare-and-swap, and the refresh then follows storage: a replay inside the grace window
/// gets the other instance's pair, a replay after that pair was used is reuse, and a session
/// revoked elsewhere is refused.
#[tokio::test]
async fn an_instance_follows_storage_when_another_changed_what_it_issued() {
    crate::helpers::Backend::Postgres
        .run(async {
            let first = TestApp::spawn().await;
            let second = first.sibling().await;
            let token = |pair: &Value| text(pair, "refresh_token").to_owned();

            // Replayed inside the grace window after another instance rotated it.
            let created = first.create_session("alice").await;
            let issued_here = rotate(&first, &token(&created)).await;
            let rotated_there = rotate(&second, &token(&issued_here)).await;
            let replay = rotate(&first, &token(&issued_here)).await;
            assert_eq!(
                replay["refresh_token"], rotated_there["refresh_token"],
                "the other instance's pair, replayed"
            );
            assert_eq!(replay["access_token"], rotated_there["access_token"]);

            // Presented again after the pair the other instance issued for it was used.
            let issued_here = rotate(&first, &token(&rotated_there)).await;
            let spent_there = rotate(&second, &token(&issued_here)).await;
            let used_there = rotate(&second, &token(&spent_there)).await;
            let reuse = first.refresh(&token(&issued_here)).await;
            assert_eq!(reuse.status, StatusCode::UNAUTHORIZED, "{}", reuse.body);
            assert_eq!(reuse.body["reason"], "reuse_detected");
            let after = second.refresh(&token(&used_there)).await;
            assert_eq!(after.body["reason"], "revoked", "{}", after.body);

            // Revoked by the other instance.
            let created = first.create_session("bob").await;
            let issued_here = rotate(&first, &token(&created)).await;
            let id = text(&created["session"], "id");
            let revoked = second
                .delete(
                    &format!("/v1/sessions/{id}"),
                    Some(crate::helpers::ADMIN_KEY),
                )
                .await;
            assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
            let refused = first.refresh(&token(&issued_here)).await;
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
            assert_eq!(refused.body["reason"], "revoked");
        })
        .await;
}

/// Refreshes `refresh_token` on `app`, which must answer a pair; returns it.
async fn rotate(app: &TestApp, refresh_token: &str) -> Value {
    let answer = app.refresh(refresh_token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}
