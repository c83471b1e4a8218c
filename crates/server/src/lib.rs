//! The sessiond server: configuration, the HTTP API over the session service, and the
//! background tasks that keep revocations current and purge old sessions.
//!
//! `main.rs` only parses the command line; everything else is here so that tests start the
//! very same server with [`run`] on a port-0 listener.

pub mod cli;
pub mod config;
mod http;
pub mod state;
pub mod tasks;

use std::future::Future;

pub use http::router;
pub use state::{AppState, SystemClock};

/// Serves the API on `listener` until `shutdown` completes, running the background tasks
/// alongside; in-flight requests finish before it returns.
///
/// # Errors
/// When accepting connections fails.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = tasks::spawn(state.clone());
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    background.stop().await;
    served
}
