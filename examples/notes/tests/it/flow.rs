//! The CLI signed in for an hour of simulated time, refreshing as its tokens near expiry, then
//! signed out through the event stream when another of the user's sessions revokes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use notes::cli::{CliError, CliSettings, NotesCli};
use sessiond_client::reqwest::StatusCode;
use sessiond_client::{Error, FileKey, SessionState, SignOutReason};
use tempfile::TempDir;

use crate::helpers::{Backend as _, NotesApi, Sessiond, SharedClock, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_stays_signed_in_for_an_hour_and_is_signed_out_when_revoked_elsewhere() {
    let sessiond = Sessiond::spawn().await;
    let api = NotesApi::spawn(&sessiond).await;
    let dir = TempDir::new().unwrap();
    let cli = NotesCli::open(CliSettings {
        sessiond_url: sessiond.base.clone(),
        api_url: api.base.clone(),
        token_file: dir.path().join("tokens"),
        key: FileKey::generate().unwrap(),
        follow_events: true,
        clock: Some(Arc::new(SharedClock(sessiond.clock.clone()))),
    })
    .await
    .unwrap();

    // The application's backend authenticates the user and hands the pair to the CLI.
    let pair = sessiond.backend_session("nora", &["notes:read"]).await;
    cli.sign_in(&pair).await.unwrap();
    let mut connected = cli.client.events_connected();
    tokio::time::timeout(Duration::from_secs(5), connected.wait_for(|open| *open))
        .await
        .unwrap()
        .unwrap();

    // An hour, a minute at a time, with a request each minute. The 15-minute access tokens
    // are refreshed by the client's background task about three minutes before they expire.
    let mut tokens_seen = std::collections::HashSet::new();
    for _minute in 0..60 {
        sessiond.clock.advance(Duration::from_secs(60));
        // The background task looks at the clock every 50 ms.
        tokio::time::sleep(Duration::from_millis(120)).await;
        let notes = cli.list().await.unwrap();
        assert_eq!(notes.owner, "nora");
        tokens_seen.insert(cli.client.access_token().await.unwrap().expose().to_owned());
    }
    // A refresh due in the last minute may land after that minute's request; the clock stands
    // still from here, so once the client holds it no further refresh can start.
    eventually("the client to use every refresh", async || {
        let notes = cli.list().await.unwrap();
        assert_eq!(notes.owner, "nora");
        tokens_seen.insert(cli.client.access_token().await.unwrap().expose().to_owned());
        tokens_seen.len() as u64 == sessiond.refreshes().await + 1
    })
    .await;
    let refreshes = sessiond.refreshes().await;
    assert!(
        (4..=6).contains(&refreshes),
        "an hour of 15-minute tokens takes 4 or 5 refreshes, not {refreshes}"
    );
    assert!(cli.signed_in());

    // The user, on another device, revokes the CLI's session.
    let phone = sessiond.backend_session("nora", &["notes:read"]).await;
    let last_token = cli.client.access_token().await.unwrap();
    let mut state = cli.client.state();
    state.borrow_and_update();
    let started = Instant::now();
    let revoked = sessiond
        .http
        .delete(format!("{}/v1/sessions/{}", sessiond.base, pair.session.id))
        .bearer_auth(&phone.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|state| !state.is_signed_in()),
    )
    .await
    .unwrap()
    .unwrap();
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    assert_eq!(
        cli.client.current_state(),
        SessionState::SignedOut {
            reason: SignOutReason::Revoked
        }
    );
    assert!(
        !dir.path().join("tokens").exists(),
        "the token file is gone"
    );
    assert!(matches!(
        cli.list().await,
        Err(CliError::Session(Error::SignedOut { .. }))
    ));

    // The API refuses the CLI's last token too (its revocation feed), while the phone's works.
    eventually("the API to refuse the revoked token", async || {
        api_status(&api, last_token.expose()).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(api_status(&api, &phone.access_token).await, StatusCode::OK);
    let status = api.status().await;
    assert_eq!(status["revocation_feed_connected"], true, "{status}");
    assert_eq!(api.verifier.stats().revoked_sessions, 1);
}

async fn api_status(api: &NotesApi, token: &str) -> StatusCode {
    sessiond_client::reqwest::Client::new()
        .get(format!("{}/notes", api.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}
