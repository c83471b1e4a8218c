//! When to refresh ([`RefreshPolicy`]) and how to retry a refresh that failed for a reason
//! that may pass ([`RetryPolicy`]), with the jitter that keeps many clients from acting in step.

use std::time::{Duration, SystemTime};

use crate::StoredTokens;

/// The background task refreshes a pair no sooner than this after receiving it.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// When the client refreshes ahead of expiry.
///
/// The refresh point is `expiry - window - jitter`, where `window` is the *smaller* of
/// [`max_window`](Self::max_window) and the token's lifetime divided by
/// [`lifetime_divisor`](Self::lifetime_divisor) (5 minutes and 5 by default: a 15-minute token
/// is refreshed 3 minutes before it expires, a 1-hour token 5 minutes before), and `jitter` is
/// random in `0..=window * jitter` so that many clients started together drift apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Refresh at the latest when this much lifetime remains (default 5 minutes)…
    pub max_window: Duration,
    /// …or when `1 / lifetime_divisor` of the lifetime remains, if that is less (default 5).
    pub lifetime_divisor: u32,
    /// Extra random lead, as a fraction of the window (default 0.1).
    pub jitter: f64,
    /// Whether a background task refreshes at the refresh point without anyone asking
    /// (default `true`). Without it, a refresh happens only once the access token has expired
    /// (or a request was answered 401), on the path of the request that needs it.
    pub proactive: bool,
    /// A token closer than this to its expiry is treated as expired by
    /// [`SessionClient::access_token`](crate::SessionClient::access_token), so a request does
    /// not leave with a token that expires on the way (default 1 s, at most a tenth of the
    /// lifetime).
    pub expiry_margin: Duration,
    /// After a background refresh failed (the server unreachable), the background task waits
    /// at least this long before it tries again, doubling on every failure (default 1 s)…
    pub failure_backoff_min: Duration,
    /// …up to this (default 60 s).
    pub failure_backoff_max: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            max_window: Duration::from_secs(5 * 60),
            lifetime_divisor: 5,
            jitter: 0.1,
            proactive: true,
            expiry_margin: Duration::from_secs(1),
            failure_backoff_min: Duration::from_secs(1),
            failure_backoff_max: Duration::from_secs(60),
        }
    }
}

impl RefreshPolicy {
    /// How long before expiry the refresh window opens (without jitter).
    pub fn window(&self, lifetime: Duration) -> Duration {
        let fraction = lifetime / self.lifetime_divisor.max(1);
        self.max_window.min(fraction)
    }

    /// The refresh point of `tokens`, with `random` in `0.0..1.0` choosing the jitter.
    ///
    /// Never sooner than [`MIN_REFRESH_INTERVAL`] after the pair was received: near the
    /// session's absolute expiry the server caps access tokens at it, and their lifetimes
    /// shrink towards zero; without a floor the background task would refresh in a tight loop.
    pub(crate) fn refresh_at(&self, tokens: &StoredTokens, random: f64) -> SystemTime {
        let window = self.window(tokens.lifetime());
        let jitter = window.mul_f64((self.jitter * random).clamp(0.0, 1.0));
        let point = tokens
            .access_token_expires_at
            .checked_sub(window + jitter)
            .unwrap_or(tokens.received_at);
        point.max(tokens.received_at + MIN_REFRESH_INTERVAL)
    }

    /// Whether the access token of `tokens` can still be sent at `now`.
    pub(crate) fn is_usable(&self, tokens: &StoredTokens, now: SystemTime) -> bool {
        let margin = self.expiry_margin.min(tokens.lifetime() / 10);
        now + margin < tokens.access_token_expires_at
    }

    /// The wait after the `failures`-th failed background refresh (1-based): "equal jitter",
    /// half fixed so the client never hammers the server, half random.
    pub(crate) fn failure_backoff(&self, failures: u32) -> Duration {
        let cap = exponential(
            self.failure_backoff_min,
            self.failure_backoff_max,
            failures.saturating_sub(1),
        );
        cap / 2 + (cap / 2).mul_f64(random_fraction())
    }
}

/// How a refresh is retried when the server cannot be reached or answers `503` (or `429`,
/// `502`, `504`): exponential backoff with full jitter, honouring `Retry-After`, bounded in
/// attempts and in time.
///
/// The bound in time matters. A refresh whose answer was lost (a timeout after the request
/// went out) may have rotated the token on the server; presenting the same token again is
/// answered with the same successor while that successor is unused, for up to the server's
/// `SESSIOND_UNUSED_SUCCESSOR_REPLAY` (1 h by default) and at least its reuse grace window
/// (`SESSIOND_REUSE_GRACE`, 10 s by default). After that it counts as reuse and revokes the
/// session. The default [`max_elapsed`](Self::max_elapsed) stays inside the grace window, so
/// it holds even on a server that replays only inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 5).
    pub max_attempts: u32,
    /// The first backoff's upper bound (default 200 ms); it doubles per attempt.
    pub initial_backoff: Duration,
    /// The largest backoff (default 3 s).
    pub max_backoff: Duration,
    /// No attempt starts later than this after the first (default 8 s).
    pub max_elapsed: Duration,
    /// Each attempt's time limit, connection included (default 5 s).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
            max_elapsed: Duration::from_secs(8),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, after `attempt` (1-based) failed: what the server
    /// asked for in `Retry-After` plus up to a tenth more, or else a random wait up to the
    /// exponential cap ("full jitter").
    pub(crate) fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(asked) => asked + (asked / 10).mul_f64(random_fraction()),
            None => exponential(
                self.initial_backoff,
                self.max_backoff,
                attempt.saturating_sub(1),
            )
            .mul_f64(random_fraction()),
        }
    }
}

/// How the client follows its event stream (`GET /v1/events`), when
/// [`SessionClientBuilder::subscribe_events`](crate::SessionClientBuilder::subscribe_events)
/// asks it to.
///
/// A stream that cannot be opened or that breaks is opened again after a wait that doubles
/// from [`reconnect_min`](Self::reconnect_min) to [`reconnect_max`](Self::reconnect_max), half
/// of it random ("equal jitter", so that the clients of a restarted server do not all come
/// back at once); it resumes after the last event it saw (`Last-Event-ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStreamPolicy {
    /// The first wait before reconnecting (default 500 ms).
    pub reconnect_min: Duration,
    /// The longest wait before reconnecting (default 30 s).
    pub reconnect_max: Duration,
    /// A stream that brings nothing for this long, not even the server's heartbeat (every 15 s
    /// by default), is taken as dead and opened again (default 45 s).
    pub idle_timeout: Duration,
}

impl Default for EventStreamPolicy {
    fn default() -> Self {
        Self {
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

impl EventStreamPolicy {
    /// The wait before reconnecting after `failures` (1-based) failures in a row.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let cap = exponential(
            self.reconnect_min,
            self.reconnect_max,
            failures.saturating_sub(1),
        );
        cap / 2 + (cap / 2).mul_f64(random_fraction())
    }
}

/// `min * 2^doublings`, at most `max`.
fn exponential(min: Duration, max: Duration, doublings: u32) -> Duration {
    let factor = 1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

/// A uniformly random number in `0.0..1.0` from the operating system's generator; `0.5` if
/// that fails (jitter is a courtesy, not a security property).
pub(crate) fn random_fraction() -> f64 {
    match getrandom::u64() {
        // 53 random bits fill an f64's mantissa exactly.
        Ok(bits) => (bits >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(lifetime: Duration) -> StoredTokens {
        let received_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        StoredTokens {
            access_token: "a".to_owned().into(),
            refresh_token: "r".to_owned().into(),
            received_at,
            access_token_expires_at: received_at + lifetime,
            refresh_token_expires_at: None,
            session_id: "s".into(),
            user_id: "u".into(),
        }
    }

    #[test]
    fn the_window_is_the_smaller_of_five_minutes_and_a_fifth_of_the_lifetime() {
        let policy = RefreshPolicy::default();
        assert_eq!(
            policy.window(Duration::from_secs(15 * 60)),
            Duration::from_secs(3 * 60)
        );
        assert_eq!(
            policy.window(Duration::from_secs(3600)),
            Duration::from_secs(5 * 60)
        );
        assert_eq!(
            policy.window(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn jitter_moves_the_refresh_point_earlier_by_at_most_a_tenth_of_the_window() {
        let policy = RefreshPolicy::default();
        let pair = tokens(Duration::from_secs(15 * 60));
        let latest = pair.access_token_expires_at - Duration::from_secs(180);
        assert_eq!(policy.refresh_at(&pair, 0.0), latest);
        let earliest = policy.refresh_at(&pair, 0.999_999);
        assert!(earliest < latest);
        assert!(earliest >= latest - Duration::from_secs(18));
        for _ in 0..100 {
            let point = policy.refresh_at(&pair, random_fraction());
            assert!(point <= latest && point >= latest - Duration::from_secs(18));
        }
    }

    #[test]
    fn a_pair_with_next_to_no_lifetime_is_not_refreshed_in_a_tight_loop() {
        let policy = RefreshPolicy::default();
        let pair = tokens(Duration::ZERO);
        assert_eq!(
            policy.refresh_at(&pair, 0.5),
            pair.received_at + MIN_REFRESH_INTERVAL
        );
    }

    #[test]
    fn a_token_is_usable_until_the_margin_before_expiry() {
        let policy = RefreshPolicy::default();
        let pair = tokens(Duration::from_secs(60));
        let expiry = pair.access_token_expires_at;
        assert!(policy.is_usable(&pair, expiry - Duration::from_millis(1001)));
        assert!(!policy.is_usable(&pair, expiry - Duration::from_millis(1000)));
        assert!(!policy.is_usable(&pair, expiry + Duration::from_secs(1)));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        for attempt in 1..10 {
            let wait = policy.backoff(attempt, None);
            let cap = exponential(policy.initial_backoff, policy.max_backoff, attempt - 1);
            assert!(wait <= cap, "attempt {attempt}: {wait:?} > {cap:?}");
        }
        assert_eq!(
            exponential(Duration::from_millis(200), Duration::from_secs(3), 3),
            Duration::from_millis(1600)
        );
        assert_eq!(
            exponential(Duration::from_millis(200), Duration::from_secs(3), 40),
            Duration::from_secs(3)
        );
        let asked = policy.backoff(1, Some(Duration::from_secs(2)));
        assert!(asked >= Duration::from_secs(2) && asked <= Duration::from_millis(2200));
        assert_eq!(policy.backoff(1, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn random_fractions_stay_below_one() {
        for _ in 0..1000 {
            let value = random_fraction();
            assert!((0.0..1.0).contains(&value));
        }
    }
}
