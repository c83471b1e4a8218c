//! The device registry: a new device is registered and announced once, a device id is bound to
//! its user, trusting marks it everywhere, and forgetting it revokes its sessions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, FIREFOX, TestApp, text};

const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";

async fn sign_in(app: &TestApp, user: &str, device: &str, agent: &str, ip: &str) -> Value {
    app.create_session_with(json!({
        "user_id": user,
        "device": {"id": device, "name": format!("{user}'s {device}"), "user_agent": agent, "ip": ip},
    }))
    .await
}

async fn devices_of(app: &TestApp, bearer: &str) -> Vec<Value> {
    let answer = app.get("/v1/devices", Some(bearer)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["devices"].as_array().expect("a list").clone()
}

async fn a_new_device_is_registered_and_announced_once() {
    let app = TestApp::spawn().await;
    let first = sign_in(&app, "alice", "laptop-1", FIREFOX, "203.0.113.7").await;
    sign_in(&app, "alice", "laptop-1", FIREFOX, "203.0.113.8").await;
    assert_eq!(app.audit_count("device.new", None).await, 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM events WHERE type = 'device.new'")
            .await,
        1,
        "published on the event stream once"
    );
    app.advance(std::time::Duration::from_secs(60));
    let phone = sign_in(&app, "alice", "phone-1", SAFARI_IPHONE, "198.51.100.2").await;
    assert_eq!(app.audit_count("device.new", None).await, 2);

    let devices = devices_of(&app, text(&phone, "access_token")).await;
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["id"], "phone-1", "most recently seen first");
    assert_eq!(devices[0]["current"], true);
    assert_eq!(devices[0]["type"], "mobile");
    assert_eq!(devices[0]["os"], "iPhone");
    let laptop = &devices[1];
    assert_eq!(laptop["current"], false);
    assert_eq!(laptop["browser"], "Firefox");
    assert_eq!(laptop["last_ip"], "203.0.113.8", "the latest address");
    assert_eq!(laptop["user_agent"], FIREFOX);
    assert_eq!(laptop["trusted"], false);
    assert!(
        laptop["first_seen_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    // Both sessions of the laptop are listed under one device.
    let own = app
        .get("/v1/sessions", Some(text(&first, "access_token")))
        .await;
    assert_eq!(own.body["sessions"].as_array().map(Vec::len), Some(3));
}

async fn another_users_device_id_reaches_nothing_of_theirs() {
    let app = TestApp::spawn().await;
    let alice = sign_in(&app, "alice", "shared-id", FIREFOX, "203.0.113.7").await;
    app.post(
        "/v1/devices/shared-id/trust",
        Some(text(&alice, "access_token")),
        json!({}),
    )
    .await;
    // Mallory sends alice's device id.
    let mallory = sign_in(&app, "mallory", "shared-id", SAFARI_IPHONE, "192.0.2.66").await;
    assert_eq!(
        app.audit_count("device.new", None).await,
        2,
        "a new device for mallory, not alice's"
    );
    let mallorys = devices_of(&app, text(&mallory, "access_token")).await;
    assert_eq!(mallorys.len(), 1);
    assert_eq!(
        mallorys[0]["trusted"], false,
        "alice's trust does not carry over"
    );
    assert_eq!(mallorys[0]["last_ip"], "192.0.2.66");
    assert_eq!(
        mallory["session"]["device"]["trusted"], false,
        "nor does it show on mallory's session"
    );

    // Forgetting "shared-id" as mallory ends mallory's session only.
    let forgotten = app
        .delete(
            "/v1/devices/shared-id",
            Some(text(&mallory, "access_token")),
        )
        .await;
    assert_eq!(forgotten.status, StatusCode::OK);
    assert_eq!(forgotten.body["revoked"], 1);
    let alices = devices_of(&app, text(&alice, "access_token")).await;
    assert_eq!(alices.len(), 1, "alice's device is still registered");
    assert_eq!(alices[0]["trusted"], true);
    assert_eq!(alices[0]["last_ip"], "203.0.113.7", "and untouched");
    let alice_still = app
        .get("/v1/sessions/current", Some(text(&alice, "access_token")))
        .await;
    assert_eq!(alice_still.status, StatusCode::OK);
    let mallory_gone = app
        .get("/v1/sessions/current", Some(text(&mallory, "access_token")))
        .await;
    assert_eq!(mallory_gone.status, StatusCode::UNAUTHORIZED);

    // A device id the caller does not have is simply not found.
    let other = sign_in(&app, "mallory", "mallory-laptop", FIREFOX, "192.0.2.66").await;
    let answer = app
        .post(
            "/v1/devices/shared-id/trust",
            Some(text(&other, "access_token")),
            json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");
}

async fn trusting_a_device_marks_it_in_the_registry_and_on_its_sessions() {
    let app = TestApp::spawn().await;
    let laptop = sign_in(&app, "alice", "laptop-1", FIREFOX, "203.0.113.7").await;
    let token = text(&laptop, "access_token");
    let answer = app
        .raw(
            app.client
                .post(format!("{}/v1/devices/laptop-1/trust", app.base))
                .bearer_auth(token),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "no body means trust");
    assert_eq!(devices_of(&app, token).await[0]["trusted"], true);
    let sessions = app.get("/v1/sessions", Some(token)).await;
    assert_eq!(sessions.body["sessions"][0]["device"]["trusted"], true);
    assert_eq!(app.audit_count("device.trusted", None).await, 1);

    let answer = app
        .post(
            "/v1/devices/laptop-1/trust",
            Some(token),
            json!({"trusted": false}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(devices_of(&app, token).await[0]["trusted"], false);
    assert_eq!(app.audit_count("device.untrusted", None).await, 1);

    let bad = app
        .post(
            "/v1/devices/laptop-1/trust",
            Some(token),
            json!({"trusted": "yes"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

async fn forgetting_a_device_revokes_its_sessions_and_nothing_else() {
    let app = TestApp::spawn().await;
    let laptop_a = sign_in(&app, "alice", "laptop", FIREFOX, "203.0.113.7").await;
    let laptop_b = sign_in(&app, "alice", "laptop", FIREFOX, "203.0.113.7").await;
    let phone = sign_in(&app, "alice", "phone", SAFARI_IPHONE, "198.51.100.2").await;
    let answer = app
        .delete("/v1/devices/laptop", Some(text(&phone, "access_token")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["revoked"], 2);
    for laptop in [&laptop_a, &laptop_b] {
        let refused = app
            .get("/v1/sessions", Some(text(laptop, "access_token")))
            .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.refresh(text(laptop, "refresh_token")).await.body["reason"],
            "revoked"
        );
    }
    let devices = devices_of(&app, text(&phone, "access_token")).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["id"], "phone");
    assert_eq!(app.audit_count("device.forgotten", None).await, 1);
    assert_eq!(
        app.audit_count("session.revoked", Some(("reason", "revoked_by_user")))
            .await,
        2
    );
    let again = app
        .delete("/v1/devices/laptop", Some(text(&phone, "access_token")))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // Signing in from it again makes it new again.
    sign_in(&app, "alice", "laptop", FIREFOX, "203.0.113.7").await;
    assert_eq!(app.audit_count("device.new", None).await, 3);
}

async fn admins_list_trust_and_forget_any_users_devices() {
    let app = TestApp::spawn().await;
    let laptop = sign_in(&app, "alice", "laptop", FIREFOX, "203.0.113.7").await;
    let listed = app.get("/v1/users/alice/devices", Some(ADMIN_KEY)).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["devices"][0]["id"], "laptop");
    assert!(listed.body["devices"][0].get("current").is_none());
    let trusted = app
        .post(
            "/v1/users/alice/devices/laptop/trust",
            Some(ADMIN_KEY),
            json!({}),
        )
        .await;
    assert_eq!(trusted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.audit_count("device.trusted", Some(("actor", "admin")))
            .await,
        1
    );
    let forgotten = app
        .delete("/v1/users/alice/devices/laptop", Some(ADMIN_KEY))
        .await;
    assert_eq!(forgotten.body["revoked"], 1);
    let refused = app
        .get("/v1/sessions", Some(text(&laptop, "access_token")))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // A user's token is not an admin key.
    let other = sign_in(&app, "bob", "pc", FIREFOX, "203.0.113.9").await;
    let denied = app
        .get(
            "/v1/users/alice/devices",
            Some(text(&other, "access_token")),
        )
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
}

crate::on_every_store!(
    a_new_device_is_registered_and_announced_once,
    another_users_device_id_reaches_nothing_of_theirs,
    trusting_a_device_marks_it_in_the_registry_and_on_its_sessions,
    forgetting_a_device_revokes_its_sessions_and_nothing_else,
    admins_list_trust_and_forget_any_users_devices,
);
