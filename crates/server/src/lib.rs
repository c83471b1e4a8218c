//! The sessiond server: configuration, the HTTP API over the session service, and the
//! background tasks that keep revocations current and purge old sessions.
//!
//! `main.rs` only parses the command line; everything else is here so that tests start the
//! very same server with [`run`] on a port-0 listener.

pub(crate) mod admin_auth;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub(crate) mod connections;
pub mod database;
pub(crate) mod dpop;
pub(crate) mod events;
pub(crate) mod history;
mod http;
pub(crate) mod instrumented_store;
mod log_format;
pub(crate) mod log_sink;
pub(crate) mod master_key;
pub mod metrics;
pub mod ratelimit;
pub(crate) mod refresh_failures;
pub(crate) mod state;
pub(crate) mod store_counts;
pub(crate) mod tasks;

use std::future::Future;
use std::sync::Arc;

pub use clock::SystemClock;
pub use http::{api_router, metrics_router, router};
pub use state::{AppState, SharedState};

/// Serves the API on `listener` until `shutdown` completes, running the background tasks
/// alongside; in-flight requests finish before it returns. Connections are capped and timed
/// out as `state.connections` says (see the `connections` module).
///
/// # Errors
/// None at present: an error accepting a connection is logged and the loop goes on (the type
/// leaves room for listeners that can fail for good).
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with_metrics_listener(listener, None, state, shutdown).await
}

/// Like [`run`], but serves `/metrics` on `metrics_listener` instead of the API's listener
/// when one is given, capped and timed out as the API's listener is (each with its own cap).
///
/// # Errors
/// None at present, as [`run`]: accept errors on either listener are logged and the loop
/// goes on.
pub async fn run_with_metrics_listener(
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = tasks::spawn(state.clone());
    let gauges = tasks::GaugeRefresh::spawn(state.clone());
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    // The metrics listener goes through the same accept loop as the API's, with a cap and
    // timeouts of its own, so slow or idle scrapers cannot hold its connections open.
    let metrics_server = metrics_listener.map(|metrics_listener| {
        let mut metrics_stopped = metrics_stopped.clone();
        tokio::spawn(connections::serve(
            metrics_listener,
            metrics_router(state.clone()),
            state.connections,
            async move {
                let _ = metrics_stopped.changed().await;
            },
        ))
    });
    let events = state.events.clone();
    let store = Arc::clone(state.service.store());
    let settings = state.connections;
    let api = api_router(state, metrics_server.is_none());
    connections::serve(listener, api, settings, async move {
        shutdown.await;
        // Event streams never finish on their own; end them so the graceful shutdown can.
        events.close();
    })
    .await;
    let _ = stop_metrics.send(true);
    if let Some(handle) = metrics_server
        && let Err(error) = handle.await
    {
        tracing::warn!(%error, "the metrics listener's accept loop ended abnormally");
    }
    gauges.stop().await;
    background.stop().await;
    // Nothing uses the store any more: let it put its data in durable storage for good.
    store.close().await;
    Ok(())
}
