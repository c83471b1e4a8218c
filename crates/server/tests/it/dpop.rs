//! DPoP (RFC 9449): sessions bound to a client's key at creation or at a refresh, refreshes
//! (JSON, cookie, `/oauth/token`) and access routes that need a proof of that key, nonces, and
//! one test per attack. Every refused attack answers `invalid_dpop_proof`, writes a
//! `security.dpop_rejected` audit event naming its reason, spends and writes nothing else, and
//! leaves the session usable by its owner.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_testkit::{DpopKey, RunningServer};

use crate::helpers::{ADMIN_KEY, Answer, FIREFOX, TestApp, text};

/// The issuer of the test apps: proofs name it followed by the route's path.
const ISSUER: &str = "http://sessiond.test";
const REFRESH: &str = "/v1/sessions/refresh";
const TOKEN: &str = "/oauth/token";
const CURRENT: &str = "/v1/sessions/current";

fn url(path: &str) -> String {
    format!("{ISSUER}{path}")
}

/// The claims of a JWT, unverified.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// Creates a session for `alice`, bound to `key` when one is given.
async fn create(app: &TestApp, key: Option<&DpopKey>) -> Value {
    let mut body = json!({
        "user_id": "alice",
        "device": {"name": "Laptop", "user_agent": FIREFOX, "ip": "203.0.113.7"},
    });
    if let Some(key) = key {
        body["dpop_jkt"] = json!(key.thumbprint());
    }
    app.create_session_with(body).await
}

/// `POST /v1/sessions/refresh` with `refresh_token` and, if given, a `DPoP` header.
async fn refresh(app: &TestApp, refresh_token: &str, proof: Option<String>) -> Answer {
    let mut request = app
        .client
        .post(format!("{}{REFRESH}", app.base))
        .json(&json!({ "refresh_token": refresh_token }));
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    app.raw(request).await
}

/// A refresh as the key's owner makes it: a fresh proof for the refresh route.
async fn owner_refresh(app: &TestApp, key: &DpopKey, refresh_token: &str) -> Answer {
    let proof = key.proof("POST", &url(REFRESH), app.clock_now());
    refresh(app, refresh_token, Some(proof)).await
}

/// `GET /v1/sessions/current` with `Authorization: DPoP` and `proof`, if given.
async fn current_with_proof(app: &TestApp, access_token: &str, proof: Option<String>) -> Answer {
    let mut request = app
        .client
        .get(format!("{}{CURRENT}", app.base))
        .header("Authorization", format!("DPoP {access_token}"));
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    app.raw(request).await
}

/// A resource request as the key's owner makes it.
async fn owner_current(app: &TestApp, key: &DpopKey, access_token: &str) -> Answer {
    let proof = key
        .builder("GET", &url(CURRENT), app.clock_now())
        .access_token(access_token)
        .sign();
    current_with_proof(app, access_token, Some(proof)).await
}

/// What a refused attack must leave as it was: the session's tokens (how many, how many
/// spent), its last activity, its `session.refreshed` events and the replay cache.
async fn footprint(app: &TestApp, session_id: &str) -> [i64; 5] {
    [
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{session_id}'"
        ))
        .await,
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{session_id}' \
             AND spent_at IS NOT NULL"
        ))
        .await,
        app.scalar(&format!(
            "SELECT last_active_at FROM {} WHERE id = '{session_id}'",
            app.backend.live_sessions()
        ))
        .await,
        app.scalar(&format!(
            "SELECT COUNT(*) FROM events WHERE type = 'session.refreshed' \
             AND session_id = '{session_id}'"
        ))
        .await,
        app.scalar("SELECT COUNT(*) FROM dpop_proofs").await,
    ]
}

/// Asserts that `answer` refused an attack on a refresh route as `invalid_dpop_proof` for
/// `reason`, audited once with the session named.
async fn assert_refused(app: &TestApp, answer: &Answer, reason: &str, session_id: &str) {
    assert_refused_again(app, answer, reason, session_id, 1).await;
}

/// As [`assert_refused`], for the `times`th refusal of the session for `reason`.
async fn assert_refused_again(
    app: &TestApp,
    answer: &Answer,
    reason: &str,
    session_id: &str,
    times: usize,
) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.error_code(), "invalid_dpop_proof", "{}", answer.body);
    assert_eq!(answer.body["reason"], reason, "{}", answer.body);
    assert_eq!(
        answer.headers["www-authenticate"],
        r#"DPoP error="invalid_dpop_proof""#
    );
    assert_audited_times(app, reason, session_id, times).await;
}

async fn assert_audited(app: &TestApp, reason: &str, session_id: &str) {
    assert_audited_times(app, reason, session_id, 1).await;
}

async fn assert_audited_times(app: &TestApp, reason: &str, session_id: &str, times: usize) {
    let events = app.audit_events("security.dpop_rejected").await;
    let matching: Vec<&Value> = events
        .iter()
        .filter(|event| event["details"]["reason"] == reason)
        .collect();
    assert_eq!(matching.len(), times, "{events:?}");
    for event in matching {
        assert_eq!(event["session_id"], session_id, "{events:?}");
        assert_eq!(event["user_id"], "alice");
        assert_eq!(event["severity"], "warning");
    }
}

/// A session bound to a fresh key, and its key.
async fn bound_session(app: &TestApp) -> (DpopKey, Value) {
    let key = DpopKey::es256();
    let created = create(app, Some(&key)).await;
    (key, created)
}

/// Runs `attack` against a bound session's live refresh token and checks what every refused
/// attack must: the answer, its audit event, nothing spent or written, and the owner's next
/// refresh (a fresh proof) succeeding. Twice: on the token the session was created with, then
/// on the successor the owner's refresh issued, which the instance holds in memory.
async fn refused_attack(
    app: &TestApp,
    reason: &str,
    attack: impl AsyncFn(&DpopKey, &str) -> Answer,
) {
    let (key, created) = bound_session(app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let mut refresh_token = text(&created, "refresh_token").to_owned();
    for times in 1..=2 {
        let before = footprint(app, &session_id).await;
        let answer = attack(&key, &refresh_token).await;
        assert_refused_again(app, &answer, reason, &session_id, times).await;
        assert_eq!(footprint(app, &session_id).await, before, "nothing written");
        let owner = owner_refresh(app, &key, &refresh_token).await;
        assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
        assert_eq!(owner.body["token_type"], "DPoP");
        refresh_token = text(&owner.body, "refresh_token").to_owned();
    }
}

async fn a_session_created_with_dpop_jkt_is_bound_and_its_tokens_say_so() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    assert_eq!(created["token_type"], "DPoP");
    let access = claims(text(&created, "access_token"));
    assert_eq!(access["cnf"], json!({"jkt": key.thumbprint()}));

    let refreshed = owner_refresh(&app, &key, text(&created, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(refreshed.body["token_type"], "DPoP");
    let access = claims(text(&refreshed.body, "access_token"));
    assert_eq!(access["cnf"], json!({"jkt": key.thumbprint()}));
    assert_eq!(
        app.audit_count("security.dpop_rejected", None).await,
        0,
        "an honest refresh refuses nothing"
    );

    // An Ed25519 key binds too.
    let ed25519 = DpopKey::ed25519();
    let created = create(&app, Some(&ed25519)).await;
    let refreshed = owner_refresh(&app, &ed25519, text(&created, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);

    // A session created without a key stays as it was.
    let unbound = create(&app, None).await;
    assert_eq!(unbound["token_type"], "Bearer");
    assert!(claims(text(&unbound, "access_token")).get("cnf").is_none());
    let refreshed = refresh(&app, text(&unbound, "refresh_token"), None).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(refreshed.body["token_type"], "Bearer");
}

async fn a_malformed_dpop_jkt_is_refused_naming_it_and_creates_nothing() {
    let app = TestApp::spawn().await;
    for bad in [
        json!("not-a-thumbprint"),
        json!("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4"),
        json!("0ZcOCORZNYy+DWpqq30jZyJGHTN0d2HglBV3uiguA4I"),
        json!(""),
    ] {
        let answer = app
            .post(
                "/v1/sessions",
                Some(ADMIN_KEY),
                json!({"user_id": "alice", "dpop_jkt": bad}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "invalid_request");
        assert!(
            text(&answer.body, "message").contains("dpop_jkt"),
            "{bad}: {}",
            answer.body
        );
    }
    let not_text = app
        .post(
            "/v1/sessions",
            Some(ADMIN_KEY),
            json!({"user_id": "alice", "dpop_jkt": 42}),
        )
        .await;
    assert_eq!(not_text.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_text.error_code(), "invalid_request");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM sessions").await, 0);
}

async fn an_unbound_session_refreshed_with_a_proof_becomes_bound_at_that_rotation() {
    let app = TestApp::spawn().await;
    let created = create(&app, None).await;
    let key = DpopKey::es256();
    let bound = owner_refresh(&app, &key, text(&created, "refresh_token")).await;
    assert_eq!(bound.status, StatusCode::OK, "{}", bound.body);
    assert_eq!(bound.body["token_type"], "DPoP");
    assert_eq!(
        claims(text(&bound.body, "access_token"))["cnf"],
        json!({"jkt": key.thumbprint()})
    );
    let session_id = text(&created["session"], "id").to_owned();
    let next = text(&bound.body, "refresh_token").to_owned();

    // From now on the key is needed.
    let without = refresh(&app, &next, None).await;
    assert_refused(&app, &without, "missing_proof", &session_id).await;
    let other = DpopKey::es256();
    let with_other = owner_refresh(&app, &other, &next).await;
    assert_refused(&app, &with_other, "wrong_key", &session_id).await;
    let again = owner_refresh(&app, &key, &next).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["token_type"], "DPoP");
}

async fn cookie_mode_refreshes_of_a_bound_session_need_the_proof() {
    let app = TestApp::spawn_with(|raw| raw.cookie_mode = Some("on".into())).await;
    let (key, created) = bound_session(&app).await;
    assert_eq!(created["token_type"], "DPoP");
    let session_id = text(&created["session"], "id").to_owned();
    let cookie = format!(
        "__Secure-sessiond-refresh={}",
        text(&created, "refresh_token")
    );
    let by_cookie = |proof: Option<String>| {
        let mut request = app
            .client
            .post(format!("{}{REFRESH}", app.base))
            .header("x-sessiond-csrf", "1")
            .header("cookie", cookie.clone());
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        app.raw(request)
    };
    let stolen = by_cookie(None).await;
    assert_refused(&app, &stolen, "missing_proof", &session_id).await;
    assert!(
        stolen.headers.get("set-cookie").is_none(),
        "a refused proof leaves the owner's cookie alone"
    );
    let owner = by_cookie(Some(key.proof("POST", &url(REFRESH), app.clock_now()))).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert_eq!(owner.body["token_type"], "DPoP");
    assert!(owner.headers.get("set-cookie").is_some());
}

async fn the_token_endpoint_needs_the_proof_of_a_bound_session_and_answers_in_oauth_format() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let refresh_token = text(&created, "refresh_token").to_owned();
    let grant = |proof: Option<String>| {
        let mut request = app.client.post(format!("{}{TOKEN}", app.base)).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ]);
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        app.raw(request)
    };
    let before = footprint(&app, &session_id).await;
    let stolen = grant(None).await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{}", stolen.body);
    assert_eq!(stolen.body["error"], "invalid_dpop_proof");
    assert!(stolen.body["error_description"].is_string());
    assert_eq!(
        stolen.headers["www-authenticate"],
        r#"DPoP error="invalid_dpop_proof""#
    );
    assert_audited(&app, "missing_proof", &session_id).await;
    // A proof for the JSON route is not one for the token endpoint.
    let elsewhere = grant(Some(key.proof("POST", &url(REFRESH), app.clock_now()))).await;
    assert_eq!(elsewhere.body["error"], "invalid_dpop_proof");
    assert_eq!(footprint(&app, &session_id).await, before);

    let owner = grant(Some(key.proof("POST", &url(TOKEN), app.clock_now()))).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert_eq!(owner.body["token_type"], "DPoP");
    assert_eq!(
        claims(text(&owner.body, "access_token"))["cnf"]["jkt"],
        key.thumbprint()
    );
}

async fn attack_a_stolen_refresh_token_used_without_the_key_is_refused() {
    let app = TestApp::spawn().await;
    refused_attack(&app, "missing_proof", async |_, token| {
        refresh(&app, token, None).await
    })
    .await;
}

async fn attack_a_stolen_spent_refresh_token_without_the_key_does_not_revoke_the_session() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let first = text(&created, "refresh_token").to_owned();
    let next = owner_refresh(&app, &key, &first).await;
    assert_eq!(next.status, StatusCode::OK);
    let next_token = text(&next.body, "refresh_token").to_owned();
    let second = owner_refresh(&app, &key, &next_token).await;
    assert_eq!(second.status, StatusCode::OK);
    // The first token is spent and so is its successor: without DPoP this is reuse, and would
    // revoke the session. A thief without the key cannot set that off.
    app.advance(Duration::from_secs(3600 * 2));
    let stolen = refresh(&app, &first, None).await;
    assert_refused(&app, &stolen, "missing_proof", &session_id).await;
    let owner = owner_refresh(&app, &key, text(&second.body, "refresh_token")).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
}

async fn attack_a_replayed_proof_is_refused() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let proof = key.proof("POST", &url(REFRESH), app.clock_now());
    let owner = refresh(&app, text(&created, "refresh_token"), Some(proof.clone())).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    // Whoever saw that request and steals the new refresh token replays the proof with it.
    let live = text(&owner.body, "refresh_token").to_owned();
    replay_is_refused(&app, &key, &live, proof, &session_id).await;
}

/// Sends `proof` again with the live token `live` of the session bound to `key`: refused as a
/// replay, nothing written, and the owner's next refresh (with a fresh proof) succeeds.
async fn replay_is_refused(
    app: &TestApp,
    key: &DpopKey,
    live: &str,
    proof: String,
    session_id: &str,
) {
    assert_replay_refused(app, session_id, refresh(app, live, Some(proof))).await;
    let next = owner_refresh(app, key, live).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
}

/// Sends `replay` (a request not sent yet) and checks that it is refused as `replayed`,
/// audited, and writes nothing.
async fn assert_replay_refused(
    app: &TestApp,
    session_id: &str,
    replay: impl Future<Output = Answer>,
) {
    let before = footprint(app, session_id).await;
    let replayed = replay.await;
    assert_refused(app, &replayed, "replayed", session_id).await;
    assert_eq!(footprint(app, session_id).await, before, "nothing written");
}

/// The `_count` of the storage-latency histogram of `operation`: the calls made of it.
fn storage_calls(app: &TestApp, operation: &str) -> u64 {
    let prefix = format!("sessiond_storage_duration_seconds_count{{operation=\"{operation}\"}} ");
    let metrics = app.state.metrics.render(0, 0);
    let line = metrics
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}in the metrics"));
    line[prefix.len()..].parse().expect("a count")
}

async fn a_bound_refresh_records_its_proof_with_the_rotation_in_one_write() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    let remembered = storage_calls(&app, "remember_dpop_proof");
    let rotated = storage_calls(&app, "rotate_refresh_token");
    let proofs = app.scalar("SELECT COUNT(*) FROM dpop_proofs").await;
    // The token the session was created with is read from storage; its successor is the one
    // this instance holds in memory.
    let mut refresh_token = text(&created, "refresh_token").to_owned();
    for _ in 0..2 {
        let answer = owner_refresh(&app, &key, &refresh_token).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        refresh_token = text(&answer.body, "refresh_token").to_owned();
    }
    assert_eq!(storage_calls(&app, "rotate_refresh_token"), rotated + 2);
    assert_eq!(
        storage_calls(&app, "remember_dpop_proof"),
        remembered,
        "no write of its own for the proof"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM dpop_proofs").await,
        proofs + 2,
        "each rotation recorded its proof"
    );
}

async fn a_proof_whose_refresh_the_rate_limit_refuses_is_spent_all_the_same() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_refresh_per_session = Some("1/20s".into());
    })
    .await;
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let owner = owner_refresh(&app, &key, text(&created, "refresh_token")).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    let live = text(&owner.body, "refresh_token").to_owned();
    let proof = key.proof("POST", &url(REFRESH), app.clock_now());
    let limited = refresh(&app, &live, Some(proof.clone())).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );

    // The allowance is back and the proof is still young, but it was seen: the same request
    // sent again is refused as a replay and spends nothing.
    app.advance(Duration::from_secs(20));
    replay_is_refused(&app, &key, &live, proof, &session_id).await;
}

async fn attack_a_spent_token_with_a_replayed_proof_does_not_revoke_the_session() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let first = text(&created, "refresh_token").to_owned();
    let proof = key.proof("POST", &url(REFRESH), app.clock_now());
    let owner = refresh(&app, &first, Some(proof.clone())).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    let second = owner_refresh(&app, &key, text(&owner.body, "refresh_token")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);

    // Past the grace window, with its successor spent, the first token would be taken for
    // reuse; with the proof that spent it, it is a replay, and the session lives on.
    app.advance(Duration::from_secs(11));
    assert_replay_refused(&app, &session_id, refresh(&app, &first, Some(proof))).await;
    assert_eq!(app.audit_count("security.reuse_detected", None).await, 0);
    let next = owner_refresh(&app, &key, text(&second.body, "refresh_token")).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
}

async fn attack_a_replayed_proof_sets_off_no_anomaly_revocation() {
    let app = TestApp::spawn_with(|raw| raw.anomaly_policy = Some("revoke".into())).await;
    let key = DpopKey::es256();
    // Created from the address the tests' requests come from, with their browser: the owner's
    // refreshes are nothing unusual.
    let created = app
        .create_session_with(json!({
            "user_id": "alice",
            "device": {"name": "Laptop", "user_agent": FIREFOX, "ip": "127.0.0.1"},
            "dpop_jkt": key.thumbprint(),
        }))
        .await;
    let session_id = text(&created["session"], "id").to_owned();
    let send = async |refresh_token: &str, proof: String, user_agent: &str| {
        app.raw(
            app.client
                .post(format!("{}{REFRESH}", app.base))
                .header("user-agent", user_agent)
                .header("DPoP", proof)
                .json(&json!({ "refresh_token": refresh_token })),
        )
        .await
    };
    let proof = key.proof("POST", &url(REFRESH), app.clock_now());
    let owner = send(text(&created, "refresh_token"), proof.clone(), FIREFOX).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    let live = text(&owner.body, "refresh_token").to_owned();

    // The request replayed from another browser would be an anomaly that revokes the session,
    // were its proof not refused first.
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                  (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    assert_replay_refused(&app, &session_id, send(&live, proof, chrome)).await;
    assert_eq!(app.audit_count("security.anomaly", None).await, 0);
    assert_eq!(app.audit_count("session.revoked", None).await, 0);
    let next = send(
        &live,
        key.proof("POST", &url(REFRESH), app.clock_now()),
        FIREFOX,
    )
    .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
}

async fn attack_a_proof_replayed_on_another_instance_is_refused() {
    let app = TestApp::spawn().await;
    // A second server on the same database, as another instance of a deployment.
    let mut other = RunningServer::start(&app.config, app.clock.clone()).await;
    let other_base = format!("http://{}", other.address);
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let proof = key.proof("POST", &url(REFRESH), app.clock_now());
    let owner = refresh(&app, text(&created, "refresh_token"), Some(proof.clone())).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    let live = text(&owner.body, "refresh_token").to_owned();
    let before = footprint(&app, &session_id).await;
    let replayed = app
        .raw(
            app.client
                .post(format!("{other_base}{REFRESH}"))
                .header("DPoP", proof)
                .json(&json!({ "refresh_token": live })),
        )
        .await;
    assert_refused(&app, &replayed, "replayed", &session_id).await;
    assert_eq!(
        footprint(&app, &session_id).await,
        before,
        "nothing written"
    );
    let next = app
        .raw(
            app.client
                .post(format!("{other_base}{REFRESH}"))
                .header("DPoP", key.proof("POST", &url(REFRESH), app.clock_now()))
                .json(&json!({ "refresh_token": live })),
        )
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    other.stop().await;
}

async fn attack_a_proof_for_another_url_is_refused() {
    let app = TestApp::spawn().await;
    refused_attack(&app, "wrong_url", async |key, token| {
        let proof = key.proof(
            "POST",
            "https://elsewhere.example/v1/sessions/refresh",
            app.clock_now(),
        );
        refresh(&app, token, Some(proof)).await
    })
    .await;
}

async fn attack_a_proof_for_another_method_is_refused() {
    let app = TestApp::spawn().await;
    refused_attack(&app, "wrong_method", async |key, token| {
        let proof = key.proof("GET", &url(REFRESH), app.clock_now());
        refresh(&app, token, Some(proof)).await
    })
    .await;
}

async fn attack_a_proof_an_hour_old_is_refused() {
    let app = TestApp::spawn().await;
    refused_attack(&app, "stale", async |key, token| {
        let hour_ago = app.clock_now().minus(Duration::from_secs(3600));
        let proof = key.proof("POST", &url(REFRESH), hour_ago);
        refresh(&app, token, Some(proof)).await
    })
    .await;
}

async fn attack_a_valid_proof_signed_by_another_key_is_refused() {
    let app = TestApp::spawn().await;
    refused_attack(&app, "wrong_key", async |_, token| {
        let thief = DpopKey::es256();
        refresh(
            &app,
            token,
            Some(thief.proof("POST", &url(REFRESH), app.clock_now())),
        )
        .await
    })
    .await;
}

async fn attack_an_unsigned_proof_is_refused() {
    let app = TestApp::spawn().await;
    refused_attack(&app, "unsupported_algorithm", async |key, token| {
        let proof = key
            .builder("POST", &url(REFRESH), app.clock_now())
            .unsigned();
        refresh(&app, token, Some(proof)).await
    })
    .await;
}

async fn attack_an_hs256_proof_keyed_with_the_public_key_is_refused() {
    let app = TestApp::spawn().await;
    refused_attack(&app, "unsupported_algorithm", async |key, token| {
        let public = key.public_jwk().to_string();
        let proof = key
            .builder("POST", &url(REFRESH), app.clock_now())
            .hs256(public.as_bytes());
        refresh(&app, token, Some(proof)).await
    })
    .await;
}

async fn attack_a_bound_access_token_presented_as_bearer_is_refused() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let access = text(&created, "access_token").to_owned();
    let before = footprint(&app, &session_id).await;
    let stolen = app.get(CURRENT, Some(&access)).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED, "{}", stolen.body);
    assert_eq!(stolen.error_code(), "unauthenticated");
    assert_eq!(
        stolen.headers["www-authenticate"],
        r#"DPoP error="invalid_token""#
    );
    assert_audited(&app, "missing_proof", &session_id).await;
    let events = app.audit_events("security.dpop_rejected").await;
    assert_eq!(events[0]["details"]["path"], CURRENT);
    assert_eq!(footprint(&app, &session_id).await, before);

    let owner = owner_current(&app, &key, &access).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert_eq!(owner.body["id"], session_id.as_str());
    let refreshed = owner_refresh(&app, &key, text(&created, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
}

async fn access_routes_take_a_bound_token_as_dpop_with_a_proof_carrying_ath() {
    let app = TestApp::spawn().await;
    let (key, created) = bound_session(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    let access = text(&created, "access_token").to_owned();
    let now = app.clock_now();

    let listed = app
        .raw(
            app.client
                .get(format!("{}/v1/sessions", app.base))
                .header("Authorization", format!("DPoP {access}"))
                .header(
                    "DPoP",
                    key.builder("GET", &url("/v1/sessions"), now)
                        .access_token(&access)
                        .sign(),
                ),
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);

    let refused = |answer: &Answer, reason: &str| {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.error_code(), "invalid_dpop_proof", "{}", answer.body);
        assert_eq!(answer.body["reason"], reason, "{}", answer.body);
        assert_eq!(
            answer.headers["www-authenticate"],
            r#"DPoP error="invalid_dpop_proof""#
        );
    };
    let no_proof = current_with_proof(&app, &access, None).await;
    refused(&no_proof, "missing_proof");
    let no_ath = key.proof("GET", &url(CURRENT), now);
    refused(
        &current_with_proof(&app, &access, Some(no_ath)).await,
        "wrong_access_token_hash",
    );
    let other_token = key
        .builder("GET", &url(CURRENT), now)
        .access_token("another.access.token")
        .sign();
    refused(
        &current_with_proof(&app, &access, Some(other_token)).await,
        "wrong_access_token_hash",
    );
    let other_route = key
        .builder("GET", &url("/v1/sessions"), now)
        .access_token(&access)
        .sign();
    refused(
        &current_with_proof(&app, &access, Some(other_route)).await,
        "wrong_url",
    );
    let thief = DpopKey::es256();
    let thiefs = thief
        .builder("GET", &url(CURRENT), now)
        .access_token(&access)
        .sign();
    refused(
        &current_with_proof(&app, &access, Some(thiefs)).await,
        "wrong_key",
    );
    let once = key
        .builder("GET", &url(CURRENT), now)
        .access_token(&access)
        .sign();
    let first = current_with_proof(&app, &access, Some(once.clone())).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    refused(
        &current_with_proof(&app, &access, Some(once)).await,
        "replayed",
    );
    assert_eq!(
        app.audit_count("security.dpop_rejected", None).await,
        6,
        "every refusal is audited"
    );
    assert_eq!(
        app.audit_count("security.dpop_rejected", Some(("reason", "replayed")))
            .await,
        1
    );

    // An unbound token is a Bearer token, and nothing else.
    let unbound = create(&app, None).await;
    let as_dpop = current_with_proof(
        &app,
        text(&unbound, "access_token"),
        Some(
            key.builder("GET", &url(CURRENT), now)
                .access_token(text(&unbound, "access_token"))
                .sign(),
        ),
    )
    .await;
    assert_eq!(as_dpop.status, StatusCode::UNAUTHORIZED, "{}", as_dpop.body);
    assert_eq!(as_dpop.error_code(), "unauthenticated");
    assert_eq!(
        as_dpop.headers["www-authenticate"],
        r#"DPoP error="invalid_token""#
    );
    let as_bearer = app.get(CURRENT, Some(text(&unbound, "access_token"))).await;
    assert_eq!(as_bearer.status, StatusCode::OK, "{}", as_bearer.body);

    // The session is still its owner's.
    let owner = owner_current(&app, &key, &access).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert_eq!(owner.body["id"], session_id.as_str());
}

async fn required_nonces_are_asked_for_handed_out_and_accepted_by_every_instance() {
    let app = TestApp::spawn_with(|raw| raw.dpop_nonce = Some("required".into())).await;
    let mut other = RunningServer::start(&app.config, app.clock.clone()).await;
    let other_base = format!("http://{}", other.address);
    let (key, created) = bound_session(&app).await;
    let refresh_token = text(&created, "refresh_token").to_owned();

    let without = owner_refresh(&app, &key, &refresh_token).await;
    assert_eq!(without.status, StatusCode::BAD_REQUEST, "{}", without.body);
    assert_eq!(without.error_code(), "use_dpop_nonce");
    assert_eq!(
        without.headers["www-authenticate"],
        r#"DPoP error="use_dpop_nonce""#
    );
    let nonce = without.headers["dpop-nonce"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(
        app.audit_count("security.dpop_rejected", None).await,
        0,
        "asking for a nonce is no refusal to audit"
    );

    // The retry with the nonce succeeds, on another instance too, and gets the next nonce.
    let proof = key
        .builder("POST", &url(REFRESH), app.clock_now())
        .nonce(&nonce)
        .sign();
    let retried = app
        .raw(
            app.client
                .post(format!("{other_base}{REFRESH}"))
                .header("DPoP", proof)
                .json(&json!({ "refresh_token": refresh_token })),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert!(retried.headers.contains_key("dpop-nonce"));
    let access = text(&retried.body, "access_token").to_owned();

    // Resource routes ask the same way, as RFC 9449 §9 says (401).
    let no_nonce = owner_current(&app, &key, &access).await;
    assert_eq!(
        no_nonce.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        no_nonce.body
    );
    assert_eq!(no_nonce.error_code(), "use_dpop_nonce");
    let fresh = no_nonce.headers["dpop-nonce"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let with_nonce = key
        .builder("GET", &url(CURRENT), app.clock_now())
        .access_token(&access)
        .nonce(&fresh)
        .sign();
    let answer = current_with_proof(&app, &access, Some(with_nonce)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.headers.contains_key("dpop-nonce"));

    // A nonce goes stale after its period and the next.
    app.advance(Duration::from_secs(11 * 60));
    let stale = key
        .builder("GET", &url(CURRENT), app.clock_now())
        .access_token(&access)
        .nonce(&fresh)
        .sign();
    let answer = current_with_proof(&app, &access, Some(stale)).await;
    assert_eq!(answer.error_code(), "use_dpop_nonce", "{}", answer.body);
    other.stop().await;
}

async fn cors_lets_browsers_send_dpop_proofs_and_read_the_nonce() {
    const ORIGIN: &str = "https://app.example.com";
    let app = TestApp::spawn_with(|raw| raw.cors_origins = Some(ORIGIN.into())).await;
    let preflight = app
        .raw(
            app.client
                .request(reqwest::Method::OPTIONS, format!("{}{REFRESH}", app.base))
                .header("origin", ORIGIN)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "dpop, content-type"),
        )
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    let allowed = preflight.headers["access-control-allow-headers"]
        .to_str()
        .expect("ASCII");
    assert!(allowed.split(", ").any(|name| name == "dpop"), "{allowed}");
    let answer = app
        .raw(
            app.client
                .get(format!("{}/healthz", app.base))
                .header("origin", ORIGIN),
        )
        .await;
    let exposed = answer.headers["access-control-expose-headers"]
        .to_str()
        .expect("ASCII");
    assert!(
        exposed.split(", ").any(|name| name == "dpop-nonce"),
        "{exposed}"
    );
}

crate::on_every_store!(
    a_session_created_with_dpop_jkt_is_bound_and_its_tokens_say_so,
    a_malformed_dpop_jkt_is_refused_naming_it_and_creates_nothing,
    an_unbound_session_refreshed_with_a_proof_becomes_bound_at_that_rotation,
    cookie_mode_refreshes_of_a_bound_session_need_the_proof,
    the_token_endpoint_needs_the_proof_of_a_bound_session_and_answers_in_oauth_format,
    attack_a_stolen_refresh_token_used_without_the_key_is_refused,
    attack_a_stolen_spent_refresh_token_without_the_key_does_not_revoke_the_session,
    attack_a_replayed_proof_is_refused,
    a_bound_refresh_records_its_proof_with_the_rotation_in_one_write,
    a_proof_whose_refresh_the_rate_limit_refuses_is_spent_all_the_same,
    attack_a_spent_token_with_a_replayed_proof_does_not_revoke_the_session,
    attack_a_replayed_proof_sets_off_no_anomaly_revocation,
    attack_a_proof_replayed_on_another_instance_is_refused,
    attack_a_proof_for_another_url_is_refused,
    attack_a_proof_for_another_method_is_refused,
    attack_a_proof_an_hour_old_is_refused,
    attack_a_valid_proof_signed_by_another_key_is_refused,
    attack_an_unsigned_proof_is_refused,
    attack_an_hs256_proof_keyed_with_the_public_key_is_refused,
    attack_a_bound_access_token_presented_as_bearer_is_refused,
    access_routes_take_a_bound_token_as_dpop_with_a_proof_carrying_ath,
    required_nonces_are_asked_for_handed_out_and_accepted_by_every_instance,
    cors_lets_browsers_send_dpop_proofs_and_read_the_nonce,
);
