//! Background work: keeping the revoked-session set current and purging old sessions.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often revocations made by other processes sharing the store are picked up.
pub const REVOCATION_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How far back each sync looks again, so a revocation committed with a slightly older
/// timestamp than the last one seen is never missed.
const REVOCATION_SYNC_OVERLAP: Duration = Duration::from_secs(10);
/// How often expired and revoked sessions are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Sessions deleted per purge transaction: small, so requests never wait long for the writer.
pub const PURGE_BATCH: u32 = 500;

/// Running background tasks.
#[derive(Debug)]
pub struct BackgroundTasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl BackgroundTasks {
    /// Stops the tasks and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

/// Starts the background tasks for `state`.
pub fn spawn(state: AppState) -> BackgroundTasks {
    let (stop, stopped) = watch::channel(false);
    let handles = vec![
        tokio::spawn(sync_revocations(state.clone(), stopped.clone())),
        tokio::spawn(purge(state, stopped)),
    ];
    BackgroundTasks { stop, handles }
}

/// Waits `period`, or returns `true` at once when asked to stop.
async fn wait_or_stop(period: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}

async fn sync_revocations(state: AppState, mut stopped: watch::Receiver<bool>) {
    let mut watermark = state.service.now();
    while !wait_or_stop(REVOCATION_SYNC_INTERVAL, &mut stopped).await {
        let since = watermark.minus(REVOCATION_SYNC_OVERLAP);
        match state.service.sync_revocations(since).await {
            Ok(latest) => watermark = latest.max(watermark),
            Err(error) => tracing::warn!(error = %error, "revocation sync failed; will retry"),
        }
    }
}

async fn purge(state: AppState, mut stopped: watch::Receiver<bool>) {
    while !wait_or_stop(PURGE_INTERVAL, &mut stopped).await {
        let mut total = 0;
        loop {
            match state.service.purge_batch(PURGE_BATCH).await {
                Ok(deleted) => {
                    total += deleted;
                    if deleted < u64::from(PURGE_BATCH) || *stopped.borrow() {
                        break;
                    }
                    // Let queued requests use the writer between batches.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "purge failed; will retry");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(sessions = total, "purged expired and revoked sessions");
        }
    }
}
