//! Rate limits over HTTP: one test per limit, each checking the `429` (status, headers, body)
//! and its `security.rate_limited` audit row; the client address behind proxies; and
//! `SESSIOND_RATE_LIMITS=off`. Each test lowers only the limit it is about; the others stay
//! out of reach (see `TestApp::spawn_with`). The test apps' clock stands still unless moved,
//! so a spent allowance stays spent until the test advances it.
//!
//! That a flood of distinct addresses keeps the limiter's memory bounded is a unit test of
//! the limiter (`ratelimit::limiter::tests`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sessiond_server::config::RawConfig;

use crate::helpers::{ADMIN_KEY, Answer, FIREFOX, TestApp, text};
use crate::on_every_store;

on_every_store!(
    refreshes_past_the_session_limit_are_refused_and_the_token_stays_live,
    grace_window_replays_do_not_count_against_the_session_limit,
    refreshes_and_creations_past_the_per_address_limit_are_refused,
    failed_authentications_past_the_limit_refuse_invalid_credentials_only,
    a_flood_of_bad_refresh_tokens_behind_a_shared_address_locks_no_one_out,
    the_oauth_token_endpoint_is_limited_per_session_like_the_refresh_route,
    the_oauth_token_endpoint_shares_the_per_address_and_failure_limits,
    admin_requests_past_the_per_key_limit_are_refused_for_that_key_only,
    creations_past_the_per_user_limit_are_refused,
    a_spoofed_forwarded_header_from_an_untrusted_peer_changes_nothing,
    a_trusted_proxys_forwarded_header_is_honoured,
    turning_rate_limits_off_disables_every_limit,
);

const OTHER_ADMIN_KEY: &str = "second-admin-key-0123456789-abcdefghijklm";

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("a {name} header in {:?}", answer.headers))
}

/// Checks a `429` answer: body, `Retry-After`, and the `RateLimit-*` headers.
fn assert_rate_limited(answer: &Answer, limit: u32, retry_after: u64, reset: u64) {
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.body
    );
    assert_eq!(answer.error_code(), "rate_limited", "{}", answer.body);
    assert!(
        text(&answer.body, "message").starts_with("too many "),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["retry_after"], json!(retry_after));
    assert!(answer.body["request_id"].is_string());
    assert_eq!(header(answer, "retry-after"), retry_after.to_string());
    assert_eq!(header(answer, "ratelimit-limit"), limit.to_string());
    assert_eq!(header(answer, "ratelimit-remaining"), "0");
    assert_eq!(header(answer, "ratelimit-reset"), reset.to_string());
}

/// Audit rows of refusals by `limit`, optionally also matching a column (`ip` as an admin
/// reads it, opened).
async fn rate_limited_rows(app: &TestApp, limit: &str, column: Option<(&str, &str)>) -> i64 {
    if let Some(("ip", address)) = column {
        let events = app.audit_events("security.rate_limited").await;
        let matching = events.iter().filter(|event| {
            event["severity"] == "warning"
                && event["details"]["limit"] == limit
                && event["ip"] == address
        });
        return i64::try_from(matching.count()).expect("count fits");
    }
    let condition = column.map_or_else(String::new, |(name, value)| {
        format!(" AND {name} = '{value}'")
    });
    app.scalar(&format!(
        "SELECT COUNT(*) FROM audit_events WHERE type = 'security.rate_limited' \
         AND severity = 'warning' AND CAST(details AS TEXT) LIKE '%\"{limit}\"%'{condition}"
    ))
    .await
}

fn rate_limited_total(app: &TestApp) -> String {
    let metrics = app.state.metrics.render(0, 0);
    metrics
        .lines()
        .find(|line| line.starts_with("sessiond_rate_limited_requests_total "))
        .expect("the rate-limited counter is exported")
        .to_owned()
}

async fn refresh_with_forwarded_for(app: &TestApp, forwarded_for: Option<&str>) -> Answer {
    let mut request = app
        .client
        .post(format!("{}/v1/sessions/refresh", app.base))
        .json(&json!({ "refresh_token": format!("sdr_{}", "A".repeat(43)) }));
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    app.raw(request).await
}

async fn refreshes_past_the_session_limit_are_refused_and_the_token_stays_live() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_refresh_per_session = Some("3/5m".into());
    })
    .await;
    let created = app.create_session("alice").await;
    let session_id = text(&created["session"], "id").to_owned();
    let mut refresh_token = text(&created, "refresh_token").to_owned();
    for _ in 0..3 {
        let answer = app.refresh(&refresh_token).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        refresh_token = text(&answer.body, "refresh_token").to_owned();
    }

    // 3 per 5 minutes: one every 100 s, the whole allowance back 300 s after the burst.
    let refused = app.refresh(&refresh_token).await;
    assert_rate_limited(&refused, 3, 100, 300);
    assert!(text(&refused.body, "message").contains("refreshes of this session"));
    assert_eq!(
        rate_limited_rows(
            &app,
            "refresh_per_session",
            Some(("session_id", &session_id))
        )
        .await,
        1
    );
    assert_eq!(
        rate_limited_rows(&app, "refresh_per_session", Some(("user_id", "alice"))).await,
        1
    );

    // Refused again within the period: counted, but not audited again.
    app.advance(Duration::from_secs(40));
    let again = app.refresh(&refresh_token).await;
    assert_rate_limited(&again, 3, 60, 260);
    assert_eq!(
        rate_limited_rows(&app, "refresh_per_session", None).await,
        1
    );
    assert_eq!(
        rate_limited_total(&app),
        "sessiond_rate_limited_requests_total 2"
    );

    // Nothing was written by the refusals: the same token rotates once the wait is over, and
    // the session is not taken for a stolen one.
    app.advance(Duration::from_secs(60));
    let answer = app.refresh(&refresh_token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(app.audit_count("security.reuse_detected", None).await, 0);
}

async fn grace_window_replays_do_not_count_against_the_session_limit() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_refresh_per_session = Some("2/5m".into());
    })
    .await;
    let created = app.create_session("bob").await;
    let first = text(&created, "refresh_token").to_owned();

    // Thirty tabs present the same live token at once: one rotates it, the others lose the
    // race and get the winner's pair; then thirty more replay it. One rotation is counted.
    let burst = futures_util::future::join_all((0..30).map(|_| app.refresh(&first))).await;
    let replays = futures_util::future::join_all((0..30).map(|_| app.refresh(&first))).await;
    let second = text(&burst[0].body, "refresh_token").to_owned();
    for answer in burst.iter().chain(&replays) {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(text(&answer.body, "refresh_token"), second);
    }

    // The session has used one of its two rotations, not thirty-one.
    let answer = app.refresh(&second).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let third = text(&answer.body, "refresh_token").to_owned();
    let refused = app.refresh(&third).await;
    assert_rate_limited(&refused, 2, 150, 300);
    assert_eq!(
        rate_limited_rows(&app, "refresh_per_session", None).await,
        1
    );
}

async fn refreshes_and_creations_past_the_per_address_limit_are_refused() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_per_ip = Some("4/1m".into());
    })
    .await;
    // Refreshes count against the connection's address (127.0.0.1 here).
    let created = app.create_session("carol").await;
    let mut refresh_token = text(&created, "refresh_token").to_owned();
    for _ in 0..4 {
        let answer = app.refresh(&refresh_token).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        refresh_token = text(&answer.body, "refresh_token").to_owned();
    }
    let refused = app.refresh(&refresh_token).await;
    assert_rate_limited(&refused, 4, 15, 60);
    assert!(text(&refused.body, "message").contains("requests from this address"));
    assert_eq!(
        rate_limited_rows(&app, "per_ip", Some(("ip", "127.0.0.1"))).await,
        1
    );

    // Creations count against the end user's address as the backend reports it, not the
    // backend's own: 203.0.113.7 (the helper's) has used one; 198.51.100.4 gets four.
    let create_from = |user: String, ip: &'static str| {
        app.post(
            "/v1/sessions",
            Some(ADMIN_KEY),
            json!({"user_id": user, "device": {"user_agent": FIREFOX, "ip": ip}}),
        )
    };
    for n in 0..4 {
        let answer = create_from(format!("user-{n}"), "198.51.100.4").await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let refused = create_from("user-4".into(), "198.51.100.4").await;
    assert_rate_limited(&refused, 4, 15, 60);
    assert_eq!(
        rate_limited_rows(&app, "per_ip", Some(("ip", "198.51.100.4"))).await,
        1
    );
    assert_eq!(
        rate_limited_rows(&app, "per_ip", Some(("user_id", "user-4"))).await,
        1
    );
    let elsewhere = create_from("user-5".into(), "192.0.2.55").await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{}", elsewhere.body);
}

async fn failed_authentications_past_the_limit_refuse_invalid_credentials_only() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_failed_auth_per_ip = Some("3/1m".into());
    })
    .await;
    let created = app.create_session("dave").await;
    let access_token = text(&created, "access_token").to_owned();

    // A forged access token, an unknown refresh token and a wrong admin key: three failures.
    let forged = app
        .get("/v1/sessions", Some("eyJhbGciOiJub25lIn0.e30."))
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let unknown = app.refresh(&format!("sdr_{}", "B".repeat(43))).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let wrong_key = app
        .get("/v1/users/dave/sessions", Some(&"x".repeat(40)))
        .await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);

    // The allowance is spent: every further invalid credential is refused with 429.
    let refused = app
        .get("/v1/sessions", Some("eyJhbGciOiJub25lIn0.e30."))
        .await;
    assert_rate_limited(&refused, 3, 20, 60);
    assert!(text(&refused.body, "message").contains("failed authentications"));
    let refused = app.refresh(&format!("sdr_{}", "C".repeat(43))).await;
    assert_eq!(refused.error_code(), "rate_limited", "{}", refused.body);
    let refused = app
        .get("/v1/users/dave/sessions", Some(&"y".repeat(40)))
        .await;
    assert_eq!(refused.error_code(), "rate_limited", "{}", refused.body);
    assert_eq!(
        rate_limited_rows(&app, "failed_auth_per_ip", Some(("ip", "127.0.0.1"))).await,
        1
    );

    // Valid credentials from the same address are never refused by it.
    let own = app.get("/v1/sessions", Some(&access_token)).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let admin = app.get("/v1/users/dave/sessions", Some(ADMIN_KEY)).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    let refreshed = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);

    // Routine refusals are answered as they are: an expired access token is not a guess.
    app.advance(Duration::from_secs(16 * 60));
    for _ in 0..5 {
        let expired = app.get("/v1/sessions", Some(&access_token)).await;
        assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{}", expired.body);
        assert_eq!(expired.error_code(), "unauthenticated");
    }
}

/// `POST /oauth/token` with a form, from `forwarded_for` behind the trusted proxy.
async fn oauth_refresh_from(app: &TestApp, refresh_token: &str, forwarded_for: &str) -> Answer {
    app.raw(
        app.client
            .post(format!("{}/oauth/token", app.base))
            .header("x-forwarded-for", forwarded_for)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ]),
    )
    .await
}

async fn a_flood_of_bad_refresh_tokens_behind_a_shared_address_locks_no_one_out() {
    // Everyone behind one carrier-grade NAT reaches sessiond as 198.51.100.77, through a
    // trusted proxy on 127.0.0.1.
    const SHARED: &str = "198.51.100.77";
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_failed_auth_per_ip = Some("5/1m".into());
        raw.trusted_proxies = Some("127.0.0.1/32".into());
    })
    .await;
    let created = app.create_session("ivan").await;
    let other = app.create_session("judy").await;

    // An attacker floods bad refresh tokens: five are answered 401, the rest 429.
    let mut statuses = Vec::new();
    for n in 0..40 {
        let answer = app
            .raw(
                app.client
                    .post(format!("{}/v1/sessions/refresh", app.base))
                    .header("x-forwarded-for", SHARED)
                    .json(&json!({ "refresh_token": format!("sdr_{n:0>43}") })),
            )
            .await;
        statuses.push(answer.status);
    }
    assert!(
        statuses[..5]
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert!(
        statuses[5..]
            .iter()
            .all(|status| *status == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // The other users behind the same address, with valid credentials, all get through.
    let admin = app
        .raw(
            app.client
                .get(format!("{}/v1/users/ivan/sessions", app.base))
                .bearer_auth(ADMIN_KEY)
                .header("x-forwarded-for", SHARED),
        )
        .await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    let refreshed = app
        .raw(
            app.client
                .post(format!("{}/v1/sessions/refresh", app.base))
                .header("x-forwarded-for", SHARED)
                .json(&json!({ "refresh_token": text(&created, "refresh_token") })),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let access_token = text(&refreshed.body, "access_token");
    let own = app
        .raw(
            app.client
                .get(format!("{}/v1/sessions/current", app.base))
                .bearer_auth(access_token)
                .header("x-forwarded-for", SHARED),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let oauth = oauth_refresh_from(&app, text(&other, "refresh_token"), SHARED).await;
    assert_eq!(oauth.status, StatusCode::OK, "{}", oauth.body);
    assert!(oauth.body["access_token"].is_string(), "{}", oauth.body);

    // Invalid credentials from there stay throttled, on every route.
    let bad_key = app
        .raw(
            app.client
                .get(format!("{}/v1/users/ivan/sessions", app.base))
                .bearer_auth("z".repeat(40))
                .header("x-forwarded-for", SHARED),
        )
        .await;
    assert_eq!(bad_key.error_code(), "rate_limited", "{}", bad_key.body);
    let bad_oauth = oauth_refresh_from(&app, &format!("sdr_{}", "D".repeat(43)), SHARED).await;
    assert_eq!(bad_oauth.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(bad_oauth.error_code(), "rate_limited", "{}", bad_oauth.body);

    // Another address is not affected by this one's failures.
    let elsewhere = oauth_refresh_from(&app, &format!("sdr_{}", "E".repeat(43)), "192.0.2.8").await;
    assert_eq!(
        elsewhere.status,
        StatusCode::BAD_REQUEST,
        "{}",
        elsewhere.body
    );
    assert_eq!(elsewhere.error_code(), "invalid_grant");
}

async fn the_oauth_token_endpoint_is_limited_per_session_like_the_refresh_route() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_refresh_per_session = Some("2/5m".into());
    })
    .await;
    let created = app.create_session("kim").await;
    let session_id = text(&created["session"], "id").to_owned();
    // One rotation through each route: they share the session's allowance.
    let answer = app.refresh(text(&created, "refresh_token")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = oauth_refresh_from(&app, text(&answer.body, "refresh_token"), "127.0.0.1").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let refresh_token = text(&answer.body, "refresh_token").to_owned();

    let refused = oauth_refresh_from(&app, &refresh_token, "127.0.0.1").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    // RFC 6749's error format, not `/v1`'s, with the same headers.
    assert_eq!(refused.error_code(), "rate_limited");
    assert!(
        text(&refused.body, "error_description").contains("refreshes of this session"),
        "{}",
        refused.body
    );
    assert!(refused.body.get("message").is_none(), "{}", refused.body);
    assert_eq!(header(&refused, "retry-after"), "150");
    assert_eq!(header(&refused, "ratelimit-limit"), "2");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    assert_eq!(header(&refused, "ratelimit-reset"), "300");
    assert_eq!(header(&refused, "cache-control"), "no-store");
    assert_eq!(
        rate_limited_rows(
            &app,
            "refresh_per_session",
            Some(("session_id", &session_id))
        )
        .await,
        1
    );

    // The refusal wrote nothing: the token rotates once the wait is over.
    app.advance(Duration::from_secs(150));
    let answer = oauth_refresh_from(&app, &refresh_token, "127.0.0.1").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(app.audit_count("security.reuse_detected", None).await, 0);
}

async fn the_oauth_token_endpoint_shares_the_per_address_and_failure_limits() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_per_ip = Some("3/1m".into());
    })
    .await;
    let created = app.create_session("lee").await;
    let unknown = format!("sdr_{}", "F".repeat(43));
    for _ in 0..2 {
        let answer = oauth_refresh_from(&app, &unknown, "127.0.0.1").await;
        assert_eq!(answer.error_code(), "invalid_grant", "{}", answer.body);
    }
    let answer = app.refresh(&unknown).await;
    assert_eq!(
        answer.error_code(),
        "invalid_refresh_token",
        "{}",
        answer.body
    );
    // Three requests from 127.0.0.1 on either route: the fourth is refused on both.
    let refused = oauth_refresh_from(&app, text(&created, "refresh_token"), "127.0.0.1").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.error_code(), "rate_limited");
    assert!(text(&refused.body, "error_description").contains("requests from this address"));
    assert_eq!(header(&refused, "retry-after"), "20");
    let refused = app.refresh(text(&created, "refresh_token")).await;
    assert_rate_limited(&refused, 3, 20, 60);

    // The failure limit counts unknown tokens sent to /oauth/token too.
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_failed_auth_per_ip = Some("2/1m".into());
    })
    .await;
    let created = app.create_session("lee").await;
    for _ in 0..2 {
        let answer = oauth_refresh_from(&app, &unknown, "127.0.0.1").await;
        assert_eq!(answer.error_code(), "invalid_grant", "{}", answer.body);
    }
    let refused = oauth_refresh_from(&app, &unknown, "127.0.0.1").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert!(text(&refused.body, "error_description").contains("failed authentications"));
    let refused = app.refresh(&unknown).await;
    assert_eq!(refused.error_code(), "rate_limited", "{}", refused.body);
    // A live token still passes.
    let answer = oauth_refresh_from(&app, text(&created, "refresh_token"), "127.0.0.1").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

async fn admin_requests_past_the_per_key_limit_are_refused_for_that_key_only() {
    let app = TestApp::spawn_with(|raw| {
        raw.admin_keys = Some(format!("{ADMIN_KEY},{OTHER_ADMIN_KEY}").into());
        raw.rate_limit_admin_per_key = Some("3/1m".into());
    })
    .await;
    for _ in 0..3 {
        let answer = app.get("/v1/users/erin/sessions", Some(ADMIN_KEY)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let refused = app.get("/v1/users/erin/sessions", Some(ADMIN_KEY)).await;
    assert_rate_limited(&refused, 3, 20, 60);
    // Every admin route shares the key's allowance.
    let refused = app
        .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "erin"}))
        .await;
    assert_eq!(refused.error_code(), "rate_limited");
    let other = app
        .get("/v1/users/erin/sessions", Some(OTHER_ADMIN_KEY))
        .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);

    assert_eq!(rate_limited_rows(&app, "admin_per_key", None).await, 1);
    // The row names the key by a digest prefix, never the key itself.
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM audit_events WHERE type = 'security.rate_limited' \
             AND CAST(details AS TEXT) LIKE '%sha256:%'"
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE CAST(details AS TEXT) LIKE '%{}%'",
            &ADMIN_KEY[..20]
        ))
        .await,
        0
    );
}

async fn creations_past_the_per_user_limit_are_refused() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_create_per_user = Some("2/1m".into());
    })
    .await;
    app.create_session("frank").await;
    app.create_session("frank").await;
    let refused = app
        .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "frank"}))
        .await;
    assert_rate_limited(&refused, 2, 30, 60);
    assert!(text(&refused.body, "message").contains("sessions created for this user"));
    assert_eq!(
        rate_limited_rows(&app, "create_per_user", Some(("user_id", "frank"))).await,
        1
    );
    app.create_session("grace").await;
}

async fn a_spoofed_forwarded_header_from_an_untrusted_peer_changes_nothing() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_per_ip = Some("2/1m".into());
    })
    .await;
    for spoofed in ["198.51.100.1", "198.51.100.2"] {
        let answer = refresh_with_forwarded_for(&app, Some(spoofed)).await;
        assert_eq!(answer.error_code(), "invalid_refresh_token");
    }
    let refused = refresh_with_forwarded_for(&app, Some("198.51.100.3")).await;
    assert_rate_limited(&refused, 2, 30, 60);
    assert_eq!(
        rate_limited_rows(&app, "per_ip", Some(("ip", "127.0.0.1"))).await,
        1
    );
    let events = app.audit_events("security.rate_limited").await;
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|event| event["ip"].as_str() == Some("127.0.0.1")),
        "{events:?}"
    );
}

async fn a_trusted_proxys_forwarded_header_is_honoured() {
    let app = TestApp::spawn_with(|raw| {
        raw.rate_limit_per_ip = Some("2/1m".into());
        raw.trusted_proxies = Some("127.0.0.1/32".into());
    })
    .await;
    // The client claims 192.0.2.1; the proxy on 127.0.0.1 saw 198.51.100.1.
    for _ in 0..2 {
        let answer = refresh_with_forwarded_for(&app, Some("192.0.2.1, 198.51.100.1")).await;
        assert_eq!(answer.error_code(), "invalid_refresh_token");
    }
    let refused = refresh_with_forwarded_for(&app, Some("192.0.2.2, 198.51.100.1")).await;
    assert_rate_limited(&refused, 2, 30, 60);
    assert_eq!(
        rate_limited_rows(&app, "per_ip", Some(("ip", "198.51.100.1"))).await,
        1
    );
    // Other clients behind the same proxy, and the proxy's own requests, are not affected.
    let other = refresh_with_forwarded_for(&app, Some("198.51.100.2")).await;
    assert_eq!(other.error_code(), "invalid_refresh_token");
    let direct = refresh_with_forwarded_for(&app, None).await;
    assert_eq!(direct.error_code(), "invalid_refresh_token");
}

async fn turning_rate_limits_off_disables_every_limit() {
    let app = TestApp::spawn_with(|raw: &mut RawConfig| {
        raw.rate_limits = Some("off".into());
        for quota in [
            &mut raw.rate_limit_refresh_per_session,
            &mut raw.rate_limit_per_ip,
            &mut raw.rate_limit_create_per_user,
            &mut raw.rate_limit_admin_per_key,
            &mut raw.rate_limit_failed_auth_per_ip,
        ] {
            *quota = Some("1/1h".into());
        }
    })
    .await;
    let created = app.create_session("heidi").await;
    app.create_session("heidi").await;
    let mut refresh_token = text(&created, "refresh_token").to_owned();
    for _ in 0..5 {
        let answer = app.refresh(&refresh_token).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        refresh_token = text(&answer.body, "refresh_token").to_owned();
    }
    for _ in 0..5 {
        let forged = app.get("/v1/sessions", Some("forged")).await;
        assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
        let listed = app.get("/v1/users/heidi/sessions", Some(ADMIN_KEY)).await;
        assert_eq!(listed.status, StatusCode::OK);
    }
    assert_eq!(
        rate_limited_total(&app),
        "sessiond_rate_limited_requests_total 0"
    );
    assert_eq!(app.audit_count("security.rate_limited", None).await, 0);
}
