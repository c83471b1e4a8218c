//! Process metrics: counters, fixed-bucket histograms and gauges kept in atomics, and their
//! rendering in the Prometheus text format (version 0.0.4).
//!
//! Every label comes from a fixed list below (route templates, refresh outcomes, revocation
//! reasons, error codes, storage operations), so the number of series is bounded and recording
//! is a few relaxed atomic additions with no allocation and no lock. Rendering, which happens
//! once per scrape, is the only place that allocates.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sessiond_core::error::RefreshRejection;
use sessiond_core::service::IssuedSession;
use sessiond_core::store::StoreStats;
use sessiond_core::{Error, RevokeReason};

use crate::ratelimit::Limit;

/// Route templates as axum matched them; the last entry stands for any unmatched path, so a
/// scanner probing random paths cannot create series.
pub(crate) const ROUTES: [&str; 33] = [
    "/v1/sessions",
    "/v1/sessions/refresh",
    "/v1/sessions/current",
    "/v1/sessions/revoke-all",
    "/v1/sessions/{id}",
    "/v1/logout",
    "/v1/users/{user_id}/sessions",
    "/v1/users/{user_id}/sessions/revoke-all",
    "/v1/stats",
    "/v1/events",
    "/v1/devices",
    "/v1/devices/{id}",
    "/v1/devices/{id}/trust",
    "/v1/users/{user_id}/devices",
    "/v1/users/{user_id}/devices/{id}",
    "/v1/users/{user_id}/devices/{id}/trust",
    "/v1/audit",
    "/v1/audit/verify",
    "/v1/stats/history",
    "/v1/keys",
    "/ui/",
    "/ui/admin",
    "/ui/{asset}",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/metrics",
    "/oauth/token",
    "/oauth/introspect",
    "/oauth/revoke",
    "/.well-known/oauth-authorization-server",
    "/openapi.json",
    "unmatched",
];
const UNMATCHED_ROUTE: usize = ROUTES.len() - 1;

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `error` codes of the contract that this server answers with.
pub(crate) const ERROR_CODES: [&str; 17] = [
    "invalid_request",
    "payload_too_large",
    "request_timeout",
    "too_many_streams",
    "unauthenticated",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "invalid_refresh_token",
    "rate_limited",
    "unavailable",
    "internal",
    // The RFC 6749 §5.2 codes of the `/oauth/*` routes.
    "invalid_grant",
    "unsupported_grant_type",
    "invalid_client",
    "temporarily_unavailable",
    "server_error",
];

const REFRESH_OUTCOMES: [&str; 8] = [
    "rotated",
    "replayed",
    "unknown",
    "expired",
    "revoked",
    "reuse_detected",
    "error",
    "anomaly",
];
const ROTATED: usize = 0;
const REPLAYED: usize = 1;

const REVOKE_REASONS: [RevokeReason; 6] = [
    RevokeReason::Logout,
    RevokeReason::RevokedByUser,
    RevokeReason::RevokedByAdmin,
    RevokeReason::SessionLimit,
    RevokeReason::ReuseDetected,
    RevokeReason::Anomaly,
];

/// The store methods timed by `crate::instrumented_store::InstrumentedStore`, in the order
/// of their label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StoreOperation {
    CreateSession,
    FindRefreshToken,
    RotateRefreshToken,
    RevokeSession,
    RevokeUserSessions,
    Session,
    ActiveSessions,
    RevokedSince,
    Purge,
    SigningKeys,
    InsertSigningKey,
    SigningKeysVersion,
    RotateSigningKey,
    RetireSigningKey,
    AppendAudit,
    Ping,
    Stats,
    AnnounceExpired,
    EventsAfter,
    Devices,
    DeviceWrite,
    SealAudit,
    AuditEvents,
    AuditChain,
    PruneAudit,
    AuditCheckpointKey,
    DbscBinding,
    DbscWrite,
    RememberDpopProof,
}

const STORE_OPERATIONS: [&str; 29] = [
    "create_session",
    "find_refresh_token",
    "rotate_refresh_token",
    "revoke_session",
    "revoke_user_sessions",
    "session",
    "active_sessions",
    "revoked_since",
    "purge",
    "signing_keys",
    "insert_signing_key",
    "signing_keys_version",
    "rotate_signing_key",
    "retire_signing_key",
    "append_audit",
    "ping",
    "stats",
    "announce_expired",
    "events_after",
    "devices",
    "device_write",
    "seal_audit",
    "audit_events",
    "audit_chain",
    "prune_audit",
    "audit_checkpoint_key",
    "dbsc_binding",
    "dbsc_write",
    "remember_dpop_proof",
];

/// Upper bounds of the latency buckets, in nanoseconds (100 µs to 5 s); `+Inf` follows.
const BUCKET_BOUNDS_NS: [u64; 15] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];
/// The same bounds as Prometheus `le` labels, in seconds.
const BUCKET_LABELS: [&str; 16] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "+Inf",
];

/// A latency histogram with fixed buckets. Each bucket counts its own observations; they are
/// made cumulative when rendered, and `_count` is their total, so a scrape is always
/// self-consistent even while requests are recorded.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKET_LABELS.len()],
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKET_LABELS.len()],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_NS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKET_BOUNDS_NS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .sum()
    }

    fn sum_seconds(&self) -> f64 {
        nanos_to_seconds(self.sum_ns.load(Ordering::Relaxed))
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; `labels` is empty or `key="value"`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bucket, le) in self.buckets.iter().zip(BUCKET_LABELS) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_seconds());
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[allow(clippy::cast_precision_loss)]
fn nanos_to_seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Cumulative counts since start, and the active-session gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CounterTotals {
    pub(crate) active_sessions: u64,
    pub(crate) refreshes: u64,
    pub(crate) refresh_failures: u64,
    pub(crate) reuse_detections: u64,
    pub(crate) rate_limited: u64,
}

/// Everything this process counts.
#[derive(Debug)]
pub struct Metrics {
    sessions_created: AtomicU64,
    refreshes: [AtomicU64; REFRESH_OUTCOMES.len()],
    reuse_detections: AtomicU64,
    revocations: [AtomicU64; REVOKE_REASONS.len()],
    http_requests: [[AtomicU64; STATUS_CLASSES.len()]; ROUTES.len()],
    http_errors: [AtomicU64; ERROR_CODES.len()],
    request_duration: [Histogram; ROUTES.len()],
    refresh_duration: Histogram,
    storage_duration: [Histogram; STORE_OPERATIONS.len()],
    storage_errors: [AtomicU64; STORE_OPERATIONS.len()],
    active_sessions: AtomicU64,
    active_devices: AtomicU64,
    rate_limited: [AtomicU64; Limit::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            sessions_created: AtomicU64::new(0),
            refreshes: [const { AtomicU64::new(0) }; REFRESH_OUTCOMES.len()],
            reuse_detections: AtomicU64::new(0),
            revocations: [const { AtomicU64::new(0) }; REVOKE_REASONS.len()],
            http_requests: [const { [const { AtomicU64::new(0) }; STATUS_CLASSES.len()] };
                ROUTES.len()],
            http_errors: [const { AtomicU64::new(0) }; ERROR_CODES.len()],
            request_duration: [const { Histogram::new() }; ROUTES.len()],
            refresh_duration: Histogram::new(),
            storage_duration: [const { Histogram::new() }; STORE_OPERATIONS.len()],
            storage_errors: [const { AtomicU64::new(0) }; STORE_OPERATIONS.len()],
            active_sessions: AtomicU64::new(0),
            active_devices: AtomicU64::new(0),
            rate_limited: [const { AtomicU64::new(0) }; Limit::ALL.len()],
        }
    }

    /// Records one request refused by `limit`.
    pub fn record_rate_limited(&self, limit: Limit) {
        self.rate_limited[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one answered HTTP request: `route` is an index into `ROUTES` (see
    /// [`route_index`]), `error_code` the contract's `error` if the answer was an error.
    pub fn record_request(
        &self,
        route: usize,
        status: u16,
        error_code: Option<&str>,
        elapsed: Duration,
    ) {
        let route = route.min(UNMATCHED_ROUTE);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http_requests[route][class].fetch_add(1, Ordering::Relaxed);
        self.request_duration[route].observe(elapsed);
        if let Some(index) =
            error_code.and_then(|code| ERROR_CODES.iter().position(|known| *known == code))
        {
            self.http_errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the outcome and duration of one refresh (`http::refresh::spend`).
    pub fn record_refresh(&self, result: Result<&IssuedSession, &Error>, elapsed: Duration) {
        let outcome = match result {
            // Refused before the token was looked at for a rotation: not a refresh outcome.
            Err(Error::ScopeBeyondSession(_)) => return,
            Ok(issued) if issued.replayed => REPLAYED,
            Ok(_) => ROTATED,
            Err(Error::RefreshRejected(RefreshRejection::Unknown)) => 2,
            Err(Error::RefreshRejected(RefreshRejection::Expired)) => 3,
            Err(Error::RefreshRejected(RefreshRejection::Revoked)) => 4,
            Err(Error::RefreshRejected(RefreshRejection::ReuseDetected)) => {
                self.reuse_detections.fetch_add(1, Ordering::Relaxed);
                5
            }
            Err(Error::RefreshRejected(RefreshRejection::Anomaly)) => 7,
            Err(_) => 6,
        };
        self.refreshes[outcome].fetch_add(1, Ordering::Relaxed);
        self.refresh_duration.observe(elapsed);
    }

    pub(crate) fn record_session_created(&self) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_revocations(&self, reason: RevokeReason, count: usize) {
        if count == 0 {
            return;
        }
        if let Some(index) = REVOKE_REASONS.iter().position(|known| *known == reason) {
            self.revocations[index].fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    /// Records one storage call and whether it succeeded.
    pub fn record_storage(&self, operation: StoreOperation, elapsed: Duration, ok: bool) {
        let index = operation as usize;
        self.storage_duration[index].observe(elapsed);
        if !ok {
            self.storage_errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the storage-backed gauges.
    pub fn set_store_stats(&self, stats: &StoreStats) {
        self.active_sessions
            .store(stats.active_sessions, Ordering::Relaxed);
        self.active_devices
            .store(stats.active_devices, Ordering::Relaxed);
    }

    /// The cumulative counts the per-minute history is made of.
    pub(crate) fn totals(&self) -> CounterTotals {
        let refreshes = self.refresh_counts().map(|(_, count)| count).sum::<u64>();
        CounterTotals {
            active_sessions: self.active_sessions.load(Ordering::Relaxed),
            refreshes,
            refresh_failures: refreshes.saturating_sub(self.refresh_successes()),
            reuse_detections: self.reuse_detections.load(Ordering::Relaxed),
            rate_limited: self
                .rate_limited
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// Refreshes by outcome, in the order of the outcome names.
    pub(crate) fn refresh_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REFRESH_OUTCOMES
            .iter()
            .zip(&self.refreshes)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
    }

    /// Successful refreshes (rotated or replayed).
    pub(crate) fn refresh_successes(&self) -> u64 {
        self.refreshes[ROTATED].load(Ordering::Relaxed)
            + self.refreshes[REPLAYED].load(Ordering::Relaxed)
    }

    /// Grace-window replays.
    pub(crate) fn grace_window_hits(&self) -> u64 {
        self.refreshes[REPLAYED].load(Ordering::Relaxed)
    }

    /// Mean refresh time in milliseconds, 0 before the first.
    pub(crate) fn average_refresh_ms(&self) -> f64 {
        let count = self.refresh_duration.count();
        if count == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let count = count as f64;
        self.refresh_duration.sum_seconds() * 1e3 / count
    }

    /// Error answers by code.
    pub(crate) fn error_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ERROR_CODES
            .iter()
            .zip(&self.http_errors)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
    }

    /// The metrics in the Prometheus text format; `revoked_set_size` is read by the caller.
    pub fn render(&self, revoked_set_size: usize, open_event_streams: usize) -> String {
        let mut out = String::with_capacity(32 * 1024);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

        header(
            &mut out,
            "sessiond_sessions_created_total",
            "Sessions created by this process.",
            "counter",
        );
        let _ = writeln!(
            out,
            "sessiond_sessions_created_total {}",
            load(&self.sessions_created)
        );

        header(
            &mut out,
            "sessiond_refreshes_total",
            "Refresh requests answered by this process, by outcome.",
            "counter",
        );
        for (outcome, count) in self.refresh_counts() {
            let _ = writeln!(
                out,
                "sessiond_refreshes_total{{outcome=\"{outcome}\"}} {count}"
            );
        }

        header(
            &mut out,
            "sessiond_reuse_detections_total",
            "Spent refresh tokens presented again after the grace window (theft suspected).",
            "counter",
        );
        let _ = writeln!(
            out,
            "sessiond_reuse_detections_total {}",
            load(&self.reuse_detections)
        );

        header(
            &mut out,
            "sessiond_revocations_total",
            "Sessions revoked by this process, by reason.",
            "counter",
        );
        for (reason, count) in REVOKE_REASONS.iter().zip(&self.revocations) {
            let _ = writeln!(
                out,
                "sessiond_revocations_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                load(count)
            );
        }

        header(
            &mut out,
            "sessiond_rate_limited_requests_total",
            "Requests refused by rate limits (429).",
            "counter",
        );
        let _ = writeln!(
            out,
            "sessiond_rate_limited_requests_total {}",
            self.rate_limited.iter().map(load).sum::<u64>()
        );
        header(
            &mut out,
            "sessiond_rate_limited_by_limit_total",
            "Requests refused by rate limits (429), by the limit that refused them.",
            "counter",
        );
        for (limit, count) in Limit::ALL.iter().zip(&self.rate_limited) {
            let _ = writeln!(
                out,
                "sessiond_rate_limited_by_limit_total{{limit=\"{}\"}} {}",
                limit.as_str(),
                load(count)
            );
        }

        header(
            &mut out,
            "sessiond_http_requests_total",
            "HTTP requests answered, by route template and status class.",
            "counter",
        );
        for (route, classes) in ROUTES.iter().zip(&self.http_requests) {
            for (class, count) in STATUS_CLASSES.iter().zip(classes) {
                let _ = writeln!(
                    out,
                    "sessiond_http_requests_total{{route=\"{route}\",status=\"{class}\"}} {}",
                    load(count)
                );
            }
        }

        header(
            &mut out,
            "sessiond_http_errors_total",
            "Error answers, by the error code of the contract.",
            "counter",
        );
        for (code, count) in self.error_counts() {
            let _ = writeln!(
                out,
                "sessiond_http_errors_total{{error=\"{code}\"}} {count}"
            );
        }

        header(
            &mut out,
            "sessiond_http_request_duration_seconds",
            "Time from receiving a request to answering it, by route template.",
            "histogram",
        );
        for (route, histogram) in ROUTES.iter().zip(&self.request_duration) {
            histogram.render(
                &mut out,
                "sessiond_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }

        header(
            &mut out,
            "sessiond_refresh_duration_seconds",
            "Time the session service takes to answer a refresh, storage included.",
            "histogram",
        );
        self.refresh_duration
            .render(&mut out, "sessiond_refresh_duration_seconds", "");

        header(
            &mut out,
            "sessiond_storage_duration_seconds",
            "Time of each storage call, by Store method.",
            "histogram",
        );
        for (operation, histogram) in STORE_OPERATIONS.iter().zip(&self.storage_duration) {
            histogram.render(
                &mut out,
                "sessiond_storage_duration_seconds",
                &format!("operation=\"{operation}\""),
            );
        }

        header(
            &mut out,
            "sessiond_storage_errors_total",
            "Storage calls that failed, by Store method.",
            "counter",
        );
        for (operation, count) in STORE_OPERATIONS.iter().zip(&self.storage_errors) {
            let _ = writeln!(
                out,
                "sessiond_storage_errors_total{{operation=\"{operation}\"}} {}",
                load(count)
            );
        }

        header(
            &mut out,
            "sessiond_active_sessions",
            "Sessions neither revoked nor expired, as of the last storage count (every 10 s to 5 min).",
            "gauge",
        );
        let _ = writeln!(
            out,
            "sessiond_active_sessions {}",
            load(&self.active_sessions)
        );
        header(
            &mut out,
            "sessiond_active_devices",
            "Distinct (user, device) pairs among active sessions, as of the last storage count.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "sessiond_active_devices {}",
            load(&self.active_devices)
        );
        header(
            &mut out,
            "sessiond_open_event_streams",
            "Open /v1/events streams of this process.",
            "gauge",
        );
        let _ = writeln!(out, "sessiond_open_event_streams {open_event_streams}");
        header(
            &mut out,
            "sessiond_revoked_set_size",
            "Revoked sessions whose access tokens may still circulate, held in memory.",
            "gauge",
        );
        let _ = writeln!(out, "sessiond_revoked_set_size {revoked_set_size}");
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The index in `ROUTES` of a matched path template; unknown templates count as unmatched.
pub fn route_index(template: &str) -> usize {
    ROUTES
        .iter()
        .position(|route| *route == template)
        .unwrap_or(UNMATCHED_ROUTE)
}

/// The label value of a route index.
pub(crate) fn route_name(route: usize) -> &'static str {
    ROUTES[route.min(UNMATCHED_ROUTE)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_matches() {
        let histogram = Histogram::new();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn unknown_routes_and_codes_stay_in_bounded_labels() {
        let metrics = Metrics::new();
        metrics.record_request(
            route_index("/nope/123"),
            404,
            Some("not_found"),
            Duration::ZERO,
        );
        metrics.record_request(99, 999, Some("made_up"), Duration::ZERO);
        let text = metrics.render(0, 0);
        assert!(
            text.contains("sessiond_http_requests_total{route=\"unmatched\",status=\"4xx\"} 1")
        );
        assert!(
            text.contains("sessiond_http_requests_total{route=\"unmatched\",status=\"5xx\"} 1")
        );
        assert!(text.contains("sessiond_http_errors_total{error=\"not_found\"} 1"));
        assert!(!text.contains("made_up"));
    }
}
