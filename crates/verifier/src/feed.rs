//! Following sessiond's revocation feed: `GET /v1/events?types=session.revoked` over
//! Server-Sent Events, read with a credential that sees every user's events.
//!
//! One background task per [`Verifier`](crate::Verifier) keeps the stream open. It starts
//! from the cursor `0.0`, so the server first replays every revocation it still retains (24 h
//! by default, never less than its access-token lifetime): a verifier started after a
//! revocation refuses that session's tokens too. Each `session.revoked` event puts its session
//! in the verifier's revoked set until the latest moment one of its access tokens could still
//! be accepted: the revocation's time plus the longest access-token lifetime
//! ([`RevocationFeed::max_token_lifetime`]) plus the validation leeway; older revocations are
//! not kept at all, and expired entries are pruned every minute, so the set only holds recent
//! revocations.
//!
//! A stream that fails, ends or stays silent past the idle timeout (sessiond sends a heartbeat
//! every 15 s by default) is opened again with equal-jitter backoff, resuming after the last
//! event seen (`since=CURSOR`). Meanwhile tokens keep being verified with the cached keys and
//! the revoked set as it stands, and [`FeedStats::connected`] is `false`.
//!
//! The task sees the verifier only through [`RevokedSet`]: the revoked set, the clock and the
//! validation leeway, which the verifier's shared state implements.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde_json::Value;
use sessiond_core::{SessionId, Timestamp};
use sessiond_wire::sse::SseParser;
use tokio::task::JoinHandle;

use sessiond_core::revocation::RevokedSessions;

/// How often expired entries are dropped from the revoked set.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Where and how to follow sessiond's revocations; give it to
/// [`VerifierBuilder::revocation_feed`](crate::VerifierBuilder::revocation_feed).
///
/// The credential must be allowed to read every user's events: today that is one of
/// sessiond's admin keys (`SESSIOND_ADMIN_KEYS`). A dedicated key scope that may only read the
/// revocation feed is planned; until then, keep the key as secret as any admin key. `Debug`
/// never shows it.
#[derive(Clone)]
pub struct RevocationFeed {
    pub(crate) base_url: String,
    pub(crate) credential: String,
    pub(crate) max_token_lifetime: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) idle_timeout: Duration,
}

impl fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationFeed")
            .field("base_url", &self.base_url)
            .field("credential", &"<redacted>")
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl RevocationFeed {
    /// The feed of the sessiond at `base_url` (e.g. `https://sessiond.example`), read with
    /// `credential` (an admin key, see above).
    pub fn new(base_url: impl Into<String>, credential: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            credential: credential.into(),
            max_token_lifetime: Duration::from_secs(60 * 60),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
        }
    }

    /// The longest lifetime of sessiond's access tokens (its `SESSIOND_ACCESS_TTL`, 15 min by
    /// default); a revoked session is remembered this long after its revocation, plus the
    /// leeway. Default 1 h, which covers any TTL up to an hour.
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }

    /// The wait before reopening a failed stream doubles from `min` to `max`, half of it
    /// random (default 500 ms to 30 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// A stream silent for this long, not even a heartbeat, is taken as dead (default 45 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let cap = self
            .reconnect_min
            .saturating_mul(1u32 << doublings)
            .min(self.reconnect_max);
        cap / 2 + (cap / 2).mul_f64(jitter())
    }
}

/// The state of the feed, for [`VerifierStats::feed`](crate::VerifierStats::feed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStats {
    /// The stream is open now: revocations arrive within moments. When `false`, revocations
    /// made meanwhile reach the verifier once it has reconnected.
    pub connected: bool,
    /// `session.revoked` events received (replayed ones included).
    pub revocations: u64,
    /// Times the stream was opened.
    pub connections: u64,
    /// The cursor of the last event received; the stream resumes after it.
    pub cursor: String,
}

/// What the task shares with [`Verifier::stats`](crate::Verifier::stats).
#[derive(Debug)]
pub(crate) struct FeedShared {
    connected: AtomicBool,
    revocations: AtomicU64,
    connections: AtomicU64,
    cursor: Mutex<String>,
}

impl FeedShared {
    pub(crate) fn stats(&self) -> FeedStats {
        FeedStats {
            connected: self.connected.load(Ordering::Relaxed),
            revocations: self.revocations.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            cursor: self
                .cursor
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
        }
    }

    fn set_cursor(&self, cursor: &str) {
        cursor.clone_into(
            &mut self
                .cursor
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
    }
}

/// The running feed: stops when dropped (with the last clone of its verifier).
/// What the feed task fills: the verifier's revoked set, with the verifier's clock and the
/// leeway its validation allows (a revoked session stays in the set until its last access
/// token can no longer be accepted). The verifier implements it; the feed knows nothing else
/// of it.
pub(crate) trait RevokedSet: Send + Sync + 'static {
    /// The time by the verifier's clock.
    fn now(&self) -> Timestamp;
    /// The sessions whose access tokens are refused.
    fn revoked(&self) -> &RevokedSessions;
    /// How far past `exp` validation still accepts a token.
    fn leeway(&self) -> Duration;
}

#[derive(Debug)]
pub(crate) struct FeedTask {
    pub(crate) shared: Arc<FeedShared>,
    task: JoinHandle<()>,
}

impl Drop for FeedTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FeedTask {
    /// Starts following `feed` on `runtime`, filling the revoked set of `inner`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        inner: Arc<dyn RevokedSet>,
        feed: RevocationFeed,
        http: reqwest::Client,
    ) -> Self {
        let shared = Arc::new(FeedShared {
            connected: AtomicBool::new(false),
            revocations: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            cursor: Mutex::new("0.0".to_owned()),
        });
        let task = runtime.spawn(run(inner, feed, http, Arc::clone(&shared)));
        Self { shared, task }
    }
}

/// How one stream ended.
struct Ended {
    /// It had been open (the backoff starts over).
    connected: bool,
    why: String,
}

async fn run(
    inner: Arc<dyn RevokedSet>,
    feed: RevocationFeed,
    http: reqwest::Client,
    shared: Arc<FeedShared>,
) {
    let url = format!("{}/v1/events", feed.base_url.trim_end_matches('/'));
    let mut failures = 0u32;
    let mut last_prune = Instant::now();
    loop {
        if failures > 0 {
            tokio::time::sleep(feed.backoff(failures)).await;
        }
        let ended = follow(inner.as_ref(), &feed, &http, &url, &shared, &mut last_prune).await;
        shared.connected.store(false, Ordering::Relaxed);
        failures = if ended.connected { 1 } else { failures + 1 };
        if failures <= 1 {
            tracing::info!(why = %ended.why, "revocation feed interrupted; reconnecting");
        } else {
            tracing::warn!(why = %ended.why, failures, "revocation feed unavailable; retrying");
        }
    }
}

async fn follow(
    inner: &dyn RevokedSet,
    feed: &RevocationFeed,
    http: &reqwest::Client,
    url: &str,
    shared: &FeedShared,
    last_prune: &mut Instant,
) -> Ended {
    let ended = |connected: bool, why: String| Ended { connected, why };
    let since = shared.stats().cursor;
    let response = http
        .get(url)
        .query(&[("types", "session.revoked"), ("since", since.as_str())])
        .bearer_auth(&feed.credential)
        .header(ACCEPT, "text/event-stream")
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(error) => return ended(false, format!("{error}")),
    };
    match response.status() {
        StatusCode::OK => {}
        status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            return ended(
                false,
                format!("the credential was refused ({status}): the feed needs an admin key"),
            );
        }
        status => return ended(false, format!("the event stream was answered {status}")),
    }
    shared.connected.store(true, Ordering::Relaxed);
    shared.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(since, "revocation feed open");
    let mut parser = SseParser::default();
    loop {
        if last_prune.elapsed() >= PRUNE_INTERVAL {
            inner.revoked().prune(inner.now());
            *last_prune = Instant::now();
        }
        let bytes = match tokio::time::timeout(feed.idle_timeout, response.chunk()).await {
            Err(_) => return ended(true, "nothing received, not even a heartbeat".into()),
            Ok(Err(error)) => return ended(true, format!("{error}")),
            Ok(Ok(None)) => return ended(true, "the stream ended without saying why".into()),
            Ok(Ok(Some(bytes))) => bytes,
        };
        let Ok(messages) = parser.push(&bytes) else {
            return ended(true, "an SSE line over 64 KiB".into());
        };
        for message in messages {
            if let Some(id) = &message.id {
                shared.set_cursor(id);
            }
            let Some(data) = message.data else { continue };
            let Ok(event) = serde_json::from_str::<Value>(&data) else {
                tracing::warn!("an event that is not JSON; skipped");
                continue;
            };
            match event.get("type").and_then(Value::as_str) {
                Some("session.revoked") => {
                    apply(inner, feed, &event);
                    shared.revocations.fetch_add(1, Ordering::Relaxed);
                }
                Some("stream.closed") => {
                    let reason = event.get("reason").and_then(Value::as_str).unwrap_or("?");
                    return ended(true, format!("the server closed the stream ({reason})"));
                }
                _ => {}
            }
        }
    }
}

/// Puts the session of a `session.revoked` event in the revoked set, until its last access
/// token can no longer be accepted.
fn apply(inner: &dyn RevokedSet, feed: &RevocationFeed, event: &Value) {
    let Some(session) = event
        .get("session_id")
        .and_then(Value::as_str)
        .and_then(|id| SessionId::parse(id, "session_id").ok())
    else {
        tracing::warn!("a session.revoked event without a valid session_id; skipped");
        return;
    };
    let now = inner.now();
    // A token issued at the latest at the revocation expires at the latest a lifetime later;
    // when the time cannot be read, count from now (longer, never shorter).
    let revoked_at = event
        .get("at")
        .and_then(Value::as_str)
        .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .and_then(|since| i64::try_from(since.as_millis()).ok())
        .map_or(now, Timestamp::from_unix_millis)
        .min(now);
    let until = revoked_at
        .plus(feed.max_token_lifetime)
        .plus(inner.leeway());
    if until > now {
        inner.revoked().insert(session, until);
    }
}

/// A random number in `0.0..1.0` from the subsecond clock: jitter spreads reconnections, it
/// protects nothing, and the verifier has no random generator of its own.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_half_of_it_random() {
        let feed = RevocationFeed::new("http://sessiond.test", "key")
            .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1));
        for (failures, cap) in [(1, 100), (2, 200), (3, 400), (5, 1000), (40, 1000)] {
            let wait = feed.backoff(failures);
            let cap = Duration::from_millis(cap);
            assert!(wait >= cap / 2 && wait <= cap, "{failures}: {wait:?}");
        }
    }

    #[test]
    fn the_credential_never_shows_in_debug_output() {
        let feed = RevocationFeed::new("http://sessiond.test", "admin-key-0123456789");
        assert!(!format!("{feed:?}").contains("admin-key"));
    }
}
