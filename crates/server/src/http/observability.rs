//! `/metrics`, `/v1/stats`, and the middleware that times every request and writes its
//! access-log line.

use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use sessiond_wire::Stats;

use super::ApiError;
use super::convert::rfc3339;
use super::error::ErrorCode;
use super::extract::{AdminCaller, Read};
use crate::history::{HISTORY_MINUTES, HistoryPoint};
use crate::metrics::{route_index, route_name};
use crate::state::AppState;
use crate::tasks::HISTORY_INTERVAL;

/// The media type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Records the latency and status of every request under its route template (never the raw
/// path, so the number of series stays bounded), counts error answers by code, and writes one
/// access-log line. Runs inside the request-id span, so the line carries the id. Neither the
/// headers nor the body are logged. `next` answers the request (see `http::edge`).
pub(crate) async fn observe<F: Future<Output = Response>>(
    state: &AppState,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(usize::MAX, |path| route_index(path.as_str()));
    let method = request.method().clone();
    let response = next(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let error = response.extensions().get::<ErrorCode>().map(|code| code.0);
    state.metrics.record_request(route, status, error, elapsed);
    tracing::info!(
        method = %method,
        route = route_name(route),
        status,
        error,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "answered"
    );
    response
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .render(state.service.revoked().len(), state.events.open_streams());
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    response
}

/// `GET /v1/stats`: session counts read from storage after the request arrived (one count at a
/// time, shared by the requests waiting for it: `store_counts`), and what this process has counted.
pub(crate) async fn stats(
    State(state): State<AppState>,
    _admin: AdminCaller<Read>,
) -> Result<Json<Stats>, ApiError> {
    let service = &state.service;
    let store_stats = state
        .store_stats()
        .await
        .map_err(sessiond_core::Error::from)?;
    state.metrics.set_store_stats(&store_stats);
    let metrics = &state.metrics;
    let mut refreshes_by_outcome = Map::new();
    let mut refreshes = 0;
    for (outcome, count) in metrics.refresh_counts() {
        refreshes += count;
        refreshes_by_outcome.insert(outcome.to_owned(), Value::from(count));
    }
    let errors = metrics
        .error_counts()
        .map(|(code, count)| (code.to_owned(), Value::from(count)))
        .collect();
    Ok(Json(Stats {
        active_sessions: store_stats.active_sessions,
        active_devices: store_stats.active_devices,
        average_session_duration_seconds: store_stats.average_session_duration_ms / 1e3,
        refreshes,
        refresh_failures: refreshes.saturating_sub(metrics.refresh_successes()),
        refreshes_by_outcome,
        average_refresh_ms: metrics.average_refresh_ms(),
        grace_window_hits: metrics.grace_window_hits(),
        errors,
        revoked_set_size: service.revoked().len() as u64,
    }))
}

/// `GET /v1/stats/history`: this process's last hour, a minute at a time (oldest first), and
/// the minute in progress. Counts are per minute; a closed minute's `active_sessions` is the
/// gauge as last counted before it closed, the current one's is counted now. A restart starts
/// an empty hour.
pub(crate) async fn history(
    State(state): State<AppState>,
    _admin: AdminCaller<Read>,
) -> Result<Json<Value>, ApiError> {
    let store_stats = state
        .store_stats()
        .await
        .map_err(sessiond_core::Error::from)?;
    state.metrics.set_store_stats(&store_stats);
    let (points, current) = state.history.snapshot(&state.metrics);
    let view = |point: &HistoryPoint| {
        serde_json::json!({
            "started_at": rfc3339(point.started_at),
            "active_sessions": point.active_sessions,
            "refreshes": point.refreshes,
            "refresh_failures": point.refresh_failures,
            "reuse_detections": point.reuse_detections,
            "rate_limited": point.rate_limited,
        })
    };
    Ok(Json(serde_json::json!({
        "interval_seconds": HISTORY_INTERVAL.as_secs(),
        "capacity": HISTORY_MINUTES,
        "minutes": points.iter().map(view).collect::<Vec<_>>(),
        "current": view(&current),
    })))
}
