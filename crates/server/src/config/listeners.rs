//! Listeners and timeouts: the API's and the metrics' addresses, the body limit, connection
//! timeouts and cap, and the event streams' retention, heartbeat and caps.

use std::net::SocketAddr;
use std::time::Duration;

use sessiond_core::Policy;

use super::values::*;
use super::*;
use crate::connections::ConnectionSettings;
use crate::events::hub::StreamLimits;

/// How long events are kept by default: a day of reconnects.
const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often an idle stream gets a heartbeat by default: under the usual 30–60 s idle timeout
/// of proxies and load balancers.
const DEFAULT_EVENT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The shortest and longest connection timeouts accepted.
const CONNECTION_TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// A connection timeout: a duration within [`CONNECTION_TIMEOUTS`].
fn connection_timeout(
    value: Option<&str>,
    name: &str,
    default: Duration,
) -> Result<Duration, String> {
    let timeout = duration(value, name, default)?;
    if !CONNECTION_TIMEOUTS.contains(&timeout) {
        return Err(format!(
            "{name} must be between 100ms and 1h (got {})",
            compact_duration(timeout)
        ));
    }
    Ok(timeout)
}

pub(super) fn connection_settings(raw: &RawConfig) -> Result<ConnectionSettings, String> {
    let defaults = ConnectionSettings::default();
    Ok(ConnectionSettings {
        header_timeout: connection_timeout(
            raw.header_timeout.as_deref(),
            "SESSIOND_HEADER_TIMEOUT",
            defaults.header_timeout,
        )?,
        body_timeout: connection_timeout(
            raw.body_timeout.as_deref(),
            "SESSIOND_BODY_TIMEOUT",
            defaults.body_timeout,
        )?,
        keep_alive_timeout: connection_timeout(
            raw.keep_alive_timeout.as_deref(),
            "SESSIOND_KEEP_ALIVE_TIMEOUT",
            defaults.keep_alive_timeout,
        )?,
        max_connections: count(
            raw.max_connections.as_deref(),
            "SESSIOND_MAX_CONNECTIONS",
            defaults.max_connections,
            MAX_COUNT,
        )?,
    })
}

pub(super) fn stream_limits(raw: &RawConfig) -> Result<StreamLimits, String> {
    let defaults = StreamLimits::default();
    Ok(StreamLimits {
        total: count(
            raw.max_streams.as_deref(),
            "SESSIOND_MAX_STREAMS",
            defaults.total,
            MAX_COUNT,
        )?,
        per_user: count(
            raw.max_streams_per_user.as_deref(),
            "SESSIOND_MAX_STREAMS_PER_USER",
            defaults.per_user,
            MAX_COUNT,
        )?,
    })
}

/// The event streams' retention and heartbeat.
pub(super) struct EventSettings {
    pub(super) retention: Duration,
    pub(super) heartbeat: Duration,
}

/// `SESSIOND_LISTEN`: the API's `address:port`.
pub(super) fn listen(raw: &RawConfig) -> Result<SocketAddr, String> {
    let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    listen_text
        .parse()
        .map_err(|_| format!("SESSIOND_LISTEN must be address:port (got {listen_text:?})"))
}

/// `SESSIOND_BODY_LIMIT`: bytes from 1 KiB to 16 MiB.
pub(super) fn body_limit(raw: &RawConfig) -> Result<usize, String> {
    Ok(match raw.body_limit.as_deref().map(str::trim) {
        None => 64 * 1024,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1024..=16 * 1024 * 1024).contains(limit))
            .ok_or_else(|| {
                format!(
                    "SESSIOND_BODY_LIMIT must be bytes between 1024 and 16777216 (got {text:?})"
                )
            })?,
    })
}

/// `SESSIOND_METRICS_LISTEN`: where `/metrics` is served instead, never the API's `listen`.
pub(super) fn metrics_listen(
    raw: &RawConfig,
    listen: SocketAddr,
) -> Result<Option<SocketAddr>, String> {
    let metrics_listen = raw
        .metrics_listen
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("SESSIOND_METRICS_LISTEN must be address:port (got {text:?})"))
        })
        .transpose()?;
    if metrics_listen.is_some_and(|metrics| metrics == listen && listen.port() != 0) {
        return Err(format!(
            "SESSIOND_METRICS_LISTEN must differ from SESSIOND_LISTEN ({listen}); leave it unset to serve /metrics on the API's listener"
        ));
    }
    Ok(metrics_listen)
}

/// `SESSIOND_EVENT_RETENTION` (at least the access tokens' lifetime of `policy`) and
/// `SESSIOND_EVENT_HEARTBEAT`.
pub(super) fn events(raw: &RawConfig, policy: &Policy) -> Result<EventSettings, String> {
    let event_retention = duration(
        raw.event_retention.as_deref(),
        "SESSIOND_EVENT_RETENTION",
        DEFAULT_EVENT_RETENTION,
    )?;
    if event_retention < policy.access_ttl {
        return Err(format!(
            "SESSIOND_EVENT_RETENTION ({}) must be at least SESSIOND_ACCESS_TTL ({}): \
             verifiers that resume a stream must see every revocation of a live token",
            compact_duration(event_retention),
            compact_duration(policy.access_ttl)
        ));
    }
    let event_heartbeat = duration(
        raw.event_heartbeat.as_deref(),
        "SESSIOND_EVENT_HEARTBEAT",
        DEFAULT_EVENT_HEARTBEAT,
    )?;
    if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&event_heartbeat) {
        return Err(format!(
            "SESSIOND_EVENT_HEARTBEAT must be between 100ms and 5m (got {})",
            compact_duration(event_heartbeat)
        ));
    }
    Ok(EventSettings {
        retention: event_retention,
        heartbeat: event_heartbeat,
    })
}
