//! Point 5: revocation of one session, of all a user's sessions, and logout, effective at once.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, TestApp, text};

async fn a_user_revokes_their_other_session_and_its_tokens_die_at_once() {
    let app = TestApp::spawn().await;
    let phone = app.create_session("alice").await;
    let laptop = app.create_session("alice").await;
    let phone_id = text(&phone["session"], "id");

    let answer = app
        .delete(
            &format!("/v1/sessions/{phone_id}"),
            Some(text(&laptop, "access_token")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);

    let access = app
        .get("/v1/sessions/current", Some(text(&phone, "access_token")))
        .await;
    assert_eq!(
        access.status,
        StatusCode::UNAUTHORIZED,
        "refused now, not at exp"
    );
    let refresh = app.refresh(text(&phone, "refresh_token")).await;
    assert_eq!(refresh.body["reason"], "revoked");
    let laptop_still = app
        .get("/v1/sessions/current", Some(text(&laptop, "access_token")))
        .await;
    assert_eq!(laptop_still.status, StatusCode::OK);
    let reason = app
        .scalar("SELECT COUNT(*) FROM sessions WHERE revoke_reason = 'revoked_by_user'")
        .await;
    assert_eq!(reason, 1);
}

async fn a_user_cannot_revoke_another_users_session() {
    let app = TestApp::spawn().await;
    let alice = app.create_session("alice").await;
    let mallory = app.create_session("mallory").await;
    let answer = app
        .delete(
            &format!("/v1/sessions/{}", text(&alice["session"], "id")),
            Some(text(&mallory, "access_token")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.error_code(), "forbidden");
    let still = app
        .get("/v1/sessions/current", Some(text(&alice, "access_token")))
        .await;
    assert_eq!(still.status, StatusCode::OK, "nothing was revoked");

    let missing = app
        .delete(
            "/v1/sessions/00000000-0000-4000-8000-000000000000",
            Some(text(&mallory, "access_token")),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn an_admin_revokes_any_session() {
    let app = TestApp::spawn().await;
    let alice = app.create_session("alice").await;
    let id = text(&alice["session"], "id");
    let answer = app
        .delete(&format!("/v1/sessions/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let again = app
        .delete(&format!("/v1/sessions/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(
        again.status,
        StatusCode::NO_CONTENT,
        "revoking twice is harmless"
    );
    assert_eq!(
        app.get("/v1/sessions/current", Some(text(&alice, "access_token")))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let audit = app
        .audit_count("session.revoked", Some(("actor", "admin")))
        .await;
    assert_eq!(audit, 1, "revoked once, audited once");
}

async fn revoke_all_except_current_keeps_only_the_callers_session() {
    let app = TestApp::spawn().await;
    let others = [
        app.create_session("alice").await,
        app.create_session("alice").await,
    ];
    let current = app.create_session("alice").await;
    let bob = app.create_session("bob").await;

    let answer = app
        .post(
            "/v1/sessions/revoke-all",
            Some(text(&current, "access_token")),
            json!({"except_current": true}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["revoked"], 2);
    for other in &others {
        let status = app
            .get("/v1/sessions/current", Some(text(other, "access_token")))
            .await
            .status;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.get("/v1/sessions/current", Some(text(&current, "access_token")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/sessions/current", Some(text(&bob, "access_token")))
            .await
            .status,
        StatusCode::OK,
        "another user's sessions are untouched"
    );

    let all = app
        .post(
            "/v1/sessions/revoke-all",
            Some(text(&current, "access_token")),
            json!({}),
        )
        .await;
    assert_eq!(all.body["revoked"], 1);
    assert_eq!(
        app.get("/v1/sessions/current", Some(text(&current, "access_token")))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

async fn an_admin_revokes_all_of_a_users_sessions() {
    let app = TestApp::spawn().await;
    let sessions = [
        app.create_session("alice").await,
        app.create_session("alice").await,
    ];
    let answer = app
        .post(
            "/v1/users/alice/sessions/revoke-all",
            Some(ADMIN_KEY),
            json!({}),
        )
        .await;
    assert_eq!(answer.body["revoked"], 2);
    for session in &sessions {
        assert_eq!(
            app.refresh(text(session, "refresh_token")).await.body["reason"],
            "revoked"
        );
    }
    let listed = app.get("/v1/users/alice/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(listed.body["sessions"].as_array().map(Vec::len), Some(0));
}

async fn logout_revokes_the_current_session() {
    let app = TestApp::spawn().await;
    let session = app.create_session("alice").await;
    let access = text(&session, "access_token");
    let answer = app.post("/v1/logout", Some(access), json!({})).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/sessions/current", Some(access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(text(&session, "refresh_token")).await.body["reason"],
        "revoked"
    );
    let reason = app
        .scalar("SELECT COUNT(*) FROM sessions WHERE revoke_reason = 'logout'")
        .await;
    assert_eq!(reason, 1);
}

async fn revocations_survive_a_restart_until_the_tokens_expire() {
    let app = TestApp::spawn().await;
    let revoked = app.create_session("alice").await;
    let live = app.create_session("alice").await;
    app.delete(
        &format!("/v1/sessions/{}", text(&revoked["session"], "id")),
        Some(ADMIN_KEY),
    )
    .await;

    let app = app.restart().await;
    let answer = app
        .get("/v1/sessions/current", Some(text(&revoked, "access_token")))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "loaded from storage at start"
    );
    assert_eq!(
        app.get("/v1/sessions/current", Some(text(&live, "access_token")))
            .await
            .status,
        StatusCode::OK,
        "signing keys persisted: tokens from before the restart still verify"
    );
    assert_eq!(app.state.service.revoked().len(), 1);

    // Regression: the set used to forget a session at `exp`, while validation accepts a token
    // until `exp + leeway`, so a revoked token passed again for the length of the leeway.
    app.advance(Duration::from_secs(15 * 60 + 2));
    let epoch = sessiond_core::Timestamp::from_unix_millis(0);
    app.state
        .service
        .sync_revocations(epoch)
        .await
        .expect("sync");
    let inside_leeway = app
        .get("/v1/sessions", Some(text(&revoked, "access_token")))
        .await;
    assert_eq!(
        inside_leeway.status,
        StatusCode::UNAUTHORIZED,
        "still refused inside the leeway"
    );
    assert_eq!(app.state.service.revoked().len(), 1);

    app.advance(Duration::from_secs(60));
    app.state
        .service
        .sync_revocations(epoch)
        .await
        .expect("sync");
    assert_eq!(
        app.state.service.revoked().len(),
        0,
        "forgotten once its tokens expired"
    );
}

async fn a_revocation_by_another_process_sharing_the_database_is_picked_up() {
    let app = TestApp::spawn().await;
    let session = app.create_session("alice").await;
    // A second server on the same file, as the `sessiond sessions revoke` command would be.
    let other = sessiond_server::AppState::build(
        &app.config,
        app.clock.clone(),
        sessiond_server::database::OpenMode::MustExist,
    )
    .await
    .expect("second instance");
    let id = sessiond_core::SessionId::parse(text(&session["session"], "id"), "id").expect("uuid");
    other
        .service
        .revoke_session(sessiond_core::service::Actor::Admin, id)
        .await
        .expect("revoked");

    // Listing validates the token from memory only, so this shows the in-memory set learned
    // of the revocation (the background sync reads the database about once a second).
    let started = std::time::Instant::now();
    loop {
        let answer = app
            .get("/v1/sessions", Some(text(&session, "access_token")))
            .await;
        if answer.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not picked up within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

crate::on_every_store!(
    a_user_revokes_their_other_session_and_its_tokens_die_at_once,
    a_user_cannot_revoke_another_users_session,
    an_admin_revokes_any_session,
    revoke_all_except_current_keeps_only_the_callers_session,
    an_admin_revokes_all_of_a_users_sessions,
    logout_revokes_the_current_session,
    revocations_survive_a_restart_until_the_tokens_expire,
    a_revocation_by_another_process_sharing_the_database_is_picked_up,
);
