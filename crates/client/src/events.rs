//! Following the session's event stream (`GET /v1/events`, Server-Sent Events), when
//! [`SessionClientBuilder::subscribe_events`](crate::SessionClientBuilder::subscribe_events)
//! asks for it.
//!
//! One background task keeps a stream open with the current access token, asking only for
//! `session.revoked`, `session.expired` and `session.refreshed`. The stream carries every
//! session of the user; only events of the client's own session matter:
//!
//! - `session.revoked` or `session.expired` (or the server ending the stream with
//!   `stream.closed`, reason `session_ended`) signs the client out at once, exactly as a
//!   refused refresh does: storage is cleared, then `SignedOut` is published.
//! - `session.refreshed` while no refresh of this client is in flight means that another
//!   process sharing the token store refreshed. That process saves the new pair only once the
//!   server's answer reaches it, which may be after the event reaches this one, so the store is
//!   read again a few times over about three seconds until it holds a newer pair of the same
//!   session, which is then adopted without a refresh of its own. A pair never replaces a
//!   newer one, and reading the store changes nothing on the server, so the client's own
//!   refresh (whose event comes back too) cannot start a loop: at worst it costs those reads.
//!
//! The stream is opened again after a failure with backoff and jitter
//! ([`EventStreamPolicy`]), resuming after the last event seen (`Last-Event-ID`), and always
//! with the newest access token. The server refuses a stream opened with an expired token
//! (`401`): the client then refreshes once and opens it again, and a session that has ended
//! shows up as that refresh being refused.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use sessiond_wire::sse::{LineTooLong, SseParser};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::inner::Inner;
use crate::{Error, EventStreamPolicy, SignOutReason};

/// The event types the client asks for.
const TYPES: &str = "session.revoked,session.expired,session.refreshed";

/// When to read the store after another process's refresh, in milliseconds after the event.
const RELOAD_DELAYS_MS: [u64; 8] = [0, 25, 50, 100, 200, 400, 800, 1600];

/// The event fields the client reads.
#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// How one stream ended.
#[derive(Debug)]
enum Outcome {
    /// Open again now: the token was refreshed, or the session changed or ended (the task then
    /// waits for a sign-in).
    Reopen,
    /// Open again after a backoff. `connected` says whether the stream had been open (the wait
    /// then starts over from the shortest).
    Retry { connected: bool, why: String },
}

/// The background task: keeps a stream open while signed in, until `stop`.
pub(crate) async fn run(inner: Arc<Inner>, policy: EventStreamPolicy, stop: watch::Receiver<bool>) {
    keep_open(&inner, policy, stop).await;
    inner.events_connected.send_replace(false);
}

async fn keep_open(inner: &Arc<Inner>, policy: EventStreamPolicy, mut stop: watch::Receiver<bool>) {
    let mut state = inner.state.subscribe();
    let mut cursor: Option<String> = None;
    let mut cursor_session: Option<String> = None;
    let mut failures = 0u32;
    let mut refused_before = false;
    let mut reload = Reload::default();
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        state.borrow_and_update();
        let Some((_, session_id)) = inner.current_session() else {
            tokio::select! {
                _ = stop.changed() => return,
                changed = state.changed() => if changed.is_err() { return },
            }
            continue;
        };
        // A new session's stream starts with what happens from now on.
        if cursor_session.as_deref() != Some(session_id.as_str()) {
            cursor = None;
            cursor_session = Some(session_id.clone());
        }
        if failures > 0 {
            let wait = policy.backoff(failures);
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        let outcome = tokio::select! {
            _ = stop.changed() => return,
            outcome = follow(inner, &policy, &session_id, &mut cursor, &mut refused_before, &mut reload) => outcome,
        };
        inner.events_connected.send_replace(false);
        match outcome {
            Outcome::Reopen => failures = 0,
            Outcome::Retry { connected, why } => {
                failures = if connected { 1 } else { failures + 1 };
                tracing::debug!(failures, why, "event stream interrupted; reconnecting");
            }
        }
    }
}

/// Opens the stream of `session_id` and follows it until it ends.
async fn follow(
    inner: &Arc<Inner>,
    policy: &EventStreamPolicy,
    session_id: &str,
    cursor: &mut Option<String>,
    refused_before: &mut bool,
    reload: &mut Reload,
) -> Outcome {
    let retry = |connected: bool, why: String| Outcome::Retry { connected, why };
    // Refreshes first when the token has expired: the server would refuse it.
    let (generation, token) = match inner.access_token().await {
        Ok(current) => current,
        Err(Error::SignedOut { .. }) => return Outcome::Reopen,
        Err(error) => return retry(false, error.to_string()),
    };
    let mut request = inner
        .http
        .get(inner.events_url.clone())
        .query(&[("types", TYPES)])
        .header(ACCEPT, "text/event-stream");
    if let Some(cursor) = cursor.as_deref() {
        request = request.header("last-event-id", cursor);
    }
    let sent = match request.build() {
        Ok(request) => inner.send_authorized(&inner.http, request, &token).await,
        Err(error) => Err(Error::from(error)),
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => return retry(false, error.to_string()),
    };
    match response.status() {
        StatusCode::OK => {}
        // Expired by the server's clock, or the session is over: a refresh tells which (a
        // refused refresh signs the client out). Only once in a row, so a server that keeps
        // refusing is not answered with a refresh each time.
        StatusCode::UNAUTHORIZED if !*refused_before => {
            *refused_before = true;
            return match inner.refresh_from(Some(generation)).await {
                Ok(_) | Err(Error::SignedOut { .. }) => Outcome::Reopen,
                Err(error) => retry(false, error.to_string()),
            };
        }
        status => return retry(false, format!("the event stream was answered {status}")),
    }
    *refused_before = false;
    inner.events_connected.send_replace(true);
    tracing::debug!("event stream open");

    let mut state = inner.state.subscribe();
    state.borrow_and_update();
    let mut parser = SseParser::default();
    loop {
        let chunk = tokio::select! {
            chunk = tokio::time::timeout(policy.idle_timeout, response.chunk()) => chunk,
            changed = state.changed() => {
                if changed.is_err() {
                    return Outcome::Reopen;
                }
                match inner.current_session() {
                    Some((_, current)) if current == session_id => continue,
                    // Signed out, or signed in to another session: its own stream.
                    _ => return Outcome::Reopen,
                }
            }
        };
        let bytes = match chunk {
            Err(_) => return retry(true, "nothing received, not even a heartbeat".into()),
            Ok(Err(error)) => return retry(true, Error::from(error).to_string()),
            Ok(Ok(None)) => return retry(true, "the stream ended without saying why".into()),
            Ok(Ok(Some(bytes))) => bytes,
        };
        let messages = match parser.push(&bytes) {
            Ok(messages) => messages,
            Err(LineTooLong) => return retry(true, "an SSE line over 64 KiB".into()),
        };
        for message in messages {
            if let Some(id) = message.id {
                *cursor = Some(id);
            }
            let Some(data) = message.data else { continue };
            let event: WireEvent = match serde_json::from_str(&data) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(error = %error, "an event that is not JSON; skipped");
                    continue;
                }
            };
            if let Some(outcome) = handle(inner, session_id, event, reload).await {
                return outcome;
            }
        }
    }
}

/// Acts on one event of the stream opened for `session_id`; `Some` ends the stream.
async fn handle(
    inner: &Arc<Inner>,
    session_id: &str,
    event: WireEvent,
    reload: &mut Reload,
) -> Option<Outcome> {
    if event.kind == "stream.closed" {
        return Some(match event.reason.as_deref() {
            Some("session_ended") => {
                // The event itself normally came first; this covers a stream that missed it.
                sign_out(inner, session_id, SignOutReason::Revoked).await;
                Outcome::Reopen
            }
            reason => Outcome::Retry {
                connected: true,
                why: format!("the server closed the stream ({})", reason.unwrap_or("?")),
            },
        });
    }
    if event.session_id.as_deref() != Some(session_id) {
        return None;
    }
    match event.kind.as_str() {
        "session.revoked" => {
            let reason = match event.reason.as_deref() {
                Some("logout") => SignOutReason::LoggedOut,
                Some("reuse_detected") => SignOutReason::ReuseDetected,
                Some("anomaly") => SignOutReason::Anomaly,
                _ => SignOutReason::Revoked,
            };
            sign_out(inner, session_id, reason).await;
            Some(Outcome::Reopen)
        }
        "session.expired" => {
            sign_out(inner, session_id, SignOutReason::Expired).await;
            Some(Outcome::Reopen)
        }
        "session.refreshed" => {
            // The event of a refresh of this client's own comes back too; while that refresh
            // is in flight the pair it brings is the newest, and there is nothing to read.
            if !inner.refreshing() {
                reload.start(inner);
            }
            None
        }
        _ => None,
    }
}

async fn sign_out(inner: &Inner, session_id: &str, reason: SignOutReason) {
    if inner.sign_out_session(session_id, reason.clone()).await {
        tracing::info!(%reason, "the session ended on the server; signed out");
    }
}

/// The task that looks for another process's refreshed pair in the store; a new one replaces
/// the last, and dropping this stops it.
#[derive(Debug, Default)]
struct Reload(Option<JoinHandle<()>>);

impl Reload {
    fn start(&mut self, inner: &Arc<Inner>) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
        let inner = Arc::clone(inner);
        let generation = inner.generation();
        self.0 = Some(tokio::spawn(async move {
            for delay in RELOAD_DELAYS_MS {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                // Something newer is in place: this client's own refresh, a sign-in or out.
                if inner.generation() != generation {
                    return;
                }
                match inner.adopt_newer_stored().await {
                    Ok(Some(_)) => return,
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot read the token store to reload");
                    }
                }
            }
            tracing::debug!("the session was refreshed, but the store holds no newer pair");
        }));
    }
}

impl Drop for Reload {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
