//! What the metrics cost on the refresh path.
//!
//! One iteration does, on one thread, everything the instrumentation adds to one
//! `POST /v1/sessions/refresh`: the middleware's two clock reads, route lookup and request
//! record; the handler's two clock reads and refresh record; and the store decorator's two
//! clock reads and record for each of the two storage calls of a refresh (the token lookup
//! and the rotation). A second benchmark adds the access-log event as it costs when the log
//! level filters it out (`RUST_LOG=warn`, as in the load tests), and a third with the line
//! formatted as JSON and written to a sink (the default `RUST_LOG=info`). The last renders
//! `/metrics`, which happens once per scrape, not per request.
//!
//! Run with `cargo bench -p sessiond-server --bench metrics`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sessiond_core::Error;
use sessiond_core::error::RefreshRejection;
use sessiond_server::metrics::{Metrics, StoreOperation, route_index};

/// The instrumentation of one refresh. The outcome recorded is a refusal rather than a
/// rotation only because building an `IssuedSession` needs a whole session; both are one
/// match and two atomic additions plus a histogram observation.
fn instrument_one_refresh(metrics: &Metrics, outcome: &Error) {
    let request_started = Instant::now();
    let route = route_index(black_box("/v1/sessions/refresh"));
    let refresh_started = Instant::now();
    for operation in [
        StoreOperation::FindRefreshToken,
        StoreOperation::RotateRefreshToken,
    ] {
        let call_started = Instant::now();
        metrics.record_storage(operation, call_started.elapsed(), true);
    }
    metrics.record_refresh(Err(outcome), refresh_started.elapsed());
    metrics.record_request(route, 200, None, request_started.elapsed());
}

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new();
    let outcome = Error::RefreshRejected(RefreshRejection::Expired);
    let mut group = c.benchmark_group("refresh_instrumentation");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("metrics", |b| {
        b.iter(|| instrument_one_refresh(black_box(&metrics), &outcome));
    });

    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("metrics_and_filtered_access_log", |b| {
            b.iter(|| {
                let started = Instant::now();
                instrument_one_refresh(black_box(&metrics), &outcome);
                tracing::info!(
                    method = "POST",
                    route = "/v1/sessions/refresh",
                    status = 200_u16,
                    latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(0),
                    "answered"
                );
            });
        });
    });

    // The same with the line written (the default `RUST_LOG=info`), as JSON, to a sink.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .json()
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("metrics_and_written_access_log", |b| {
            b.iter(|| {
                let started = Instant::now();
                instrument_one_refresh(black_box(&metrics), &outcome);
                tracing::info!(
                    method = "POST",
                    route = "/v1/sessions/refresh",
                    status = 200_u16,
                    latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(0),
                    "answered"
                );
            });
        });
    });
    group.finish();

    c.bench_function("render_metrics", |b| {
        b.iter(|| black_box(metrics.render(black_box(1_000), black_box(10))));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
