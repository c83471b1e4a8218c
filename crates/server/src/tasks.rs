//! Background work: keeping the revoked-session set and the signing keys current, announcing
//! expiries, publishing events to this process's streams, sealing the audit chain, and purging
//! old sessions and events.
//!
//! Revocations made by other processes arrive two ways. When the store offers a push feed
//! (PostgreSQL's `LISTEN/NOTIFY`), a task applies each one as it is committed and resyncs in
//! full whenever the feed (re)connects; that is what makes another instance's revocation take
//! effect here within milliseconds. The one-second poll of `revoked_since` runs in every case:
//! it is all there is for SQLite (the `sessiond sessions revoke` command), and on PostgreSQL it
//! is the safety net for a feed connection that died without the transport noticing yet.
//!
//! Signing keys are checked every second too: one cheap read of the store's key version, and a
//! reload of the keys only when it moved or a key's activation time passed, so that a rotation
//! or retirement by another instance or by `sessiond keys` is in force here within about a
//! second (which key signs is decided from the clock at each signature, so every instance
//! switches to a new key at its `signs_from`). The same task rotates the key when
//! `SESSIOND_KEY_ROTATION` says it is due (the new key is published first and signs after the
//! publication delay), and retires keys whose tokens have all expired.
//!
//! [`GaugeRefresh`], started by `run` beside the others, counts active sessions and devices for
//! the storage-backed gauges of `metrics.rs`.

use std::time::Duration;

use sessiond_core::Timestamp;
use sessiond_core::store::{FeedEvent, RevocationFeed};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often the storage-backed gauges (active sessions and devices) are refreshed, at most.
pub const GAUGE_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// The pause after a count of the gauges, as a multiple of the time the count took: counting
/// reads every session, so with many stored sessions the pause grows with the store, and the
/// counts take about 1 % of one core at most, up to counts of [`GAUGE_PAUSE_MAX`] / 100.
const GAUGE_PAUSE_PER_COUNT: u32 = 100;
/// The longest pause between two counts of the gauges, so that one slow count (a store busy
/// for a while) cannot leave them stale for long.
const GAUGE_PAUSE_MAX: Duration = Duration::from_secs(300);

/// How often revocations made by other processes sharing the store are picked up.
pub const REVOCATION_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How far back each sync looks again, so a revocation committed with a slightly older
/// timestamp than the last one seen is never missed.
const REVOCATION_SYNC_OVERLAP: Duration = Duration::from_secs(10);
/// The first pause after the revocation feed fails; doubled on each failure in a row.
const FEED_RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest pause between attempts to reconnect the revocation feed.
const FEED_RETRY_MAX: Duration = Duration::from_secs(5);
/// How often the signing keys are checked for changes, rotation and retirement.
pub const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired and revoked sessions are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Sessions deleted per purge transaction: small, so requests never wait long for the writer.
pub const PURGE_BATCH: u32 = 500;
/// Events deleted per purge transaction.
const EVENT_PURGE_BATCH: u32 = 2_000;
/// Expired DPoP proof ids deleted per purge transaction.
const PROOF_PURGE_BATCH: u32 = 2_000;
/// Sealed successor pairs forgotten per statement.
const PAIR_PURGE_BATCH: u32 = 2_000;
/// How long after its replay window closes a sealed pair is kept: a safety margin for clocks.
const PAIR_PURGE_MARGIN: Duration = Duration::from_secs(60);
/// How often sessions that reached their expiry are announced: how late a `session.expired`
/// event can be.
pub const EXPIRY_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

/// How often new audit events are sealed into the chain: about how long an event waits before
/// `GET /v1/audit` and `sessiond audit verify` see it.
pub const AUDIT_SEAL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a minute of the stats history is closed.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(60);

/// Audit events sealed per transaction: small, so that a sealing transaction, which runs beside
/// the writes of refreshes (on SQLite, on the one writer they all wait for), stays short.
pub const AUDIT_SEAL_BATCH: u32 = 200;

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
    let mut handles = vec![
        tokio::spawn(sync_revocations(state.clone(), stopped.clone())),
        tokio::spawn(purge(state.clone(), stopped.clone())),
        tokio::spawn(announce_expiries(state.clone(), stopped.clone())),
        tokio::spawn(seal_audit(state.clone(), stopped.clone())),
        tokio::spawn(crate::events::tailer::run(
            state.clone(),
            state.event_poll,
            stopped.clone(),
        )),
        tokio::spawn(maintain_signing_keys(state.clone(), stopped.clone())),
        tokio::spawn(record_history(state.clone(), stopped.clone())),
        tokio::spawn(flush_refresh_failures(state.clone(), stopped.clone())),
    ];
    if let Some(feed) = state.service.store().revocation_feed() {
        handles.push(tokio::spawn(follow_revocation_feed(state, feed, stopped)));
    }
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

/// Applies the revocations the store's feed reports, and resyncs the whole revoked set each time
/// the feed says it may have missed some. Failures are retried with exponential backoff; the
/// one-second poll keeps running meanwhile.
async fn follow_revocation_feed(
    state: AppState,
    mut feed: Box<dyn RevocationFeed>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut retry = FEED_RETRY_MIN;
    let mut resync_pending = false;
    loop {
        if resync_pending {
            // From the epoch, not from a watermark: what was missed may carry any timestamp
            // (another instance's clock), and the read only returns sessions whose access
            // tokens are still alive.
            match state
                .service
                .sync_revocations(Timestamp::from_unix_millis(0))
                .await
            {
                Ok(_) => {
                    resync_pending = false;
                    retry = FEED_RETRY_MIN;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "revocation resync failed; will retry");
                    if wait_or_stop(retry, &mut stopped).await {
                        return;
                    }
                    retry = (retry * 2).min(FEED_RETRY_MAX);
                    continue;
                }
            }
        }
        let event = tokio::select! {
            event = feed.next() => event,
            _ = stopped.changed() => return,
        };
        match event {
            Ok(FeedEvent::Revoked(revoked)) => {
                state
                    .service
                    .apply_remote_revocation(revoked.id, revoked.access_expires_at);
                // Its `session.revoked` event committed with it: stream it now rather than at
                // the next poll.
                state.events.poke();
            }
            Ok(FeedEvent::Resync) => resync_pending = true,
            Err(error) => {
                tracing::warn!(error = %error, "revocation feed unavailable; will reconnect");
                if wait_or_stop(retry, &mut stopped).await {
                    return;
                }
                retry = (retry * 2).min(FEED_RETRY_MAX);
            }
        }
    }
}

/// Announces (`session.expired`) the sessions that reached their expiry, in batches.
async fn announce_expiries(state: AppState, mut stopped: watch::Receiver<bool>) {
    while !wait_or_stop(EXPIRY_ANNOUNCE_INTERVAL, &mut stopped).await {
        loop {
            match state.service.announce_expired(PURGE_BATCH).await {
                Ok(announced) if announced < u64::from(PURGE_BATCH) => break,
                Ok(_) if *stopped.borrow() => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(error) => {
                    tracing::warn!(error = %error, "announcing expired sessions failed; will retry");
                    break;
                }
            }
        }
    }
}

/// Writes the failed refreshes counted in each period to the audit trail, and what is pending
/// when the server stops. A failed write keeps the counts for the next period.
async fn flush_refresh_failures(state: AppState, mut stopped: watch::Receiver<bool>) {
    let failures = &state.refresh_failures;
    loop {
        let stopping = wait_or_stop(failures.period(), &mut stopped).await;
        let store = state.service.store();
        if let Err(error) = failures.flush(store.as_ref(), state.service.now()).await {
            tracing::warn!(error = %error, "could not audit failed refreshes; will retry");
        }
        if stopping {
            return;
        }
    }
}

/// Closes a minute of the stats history every [`HISTORY_INTERVAL`].
async fn record_history(state: AppState, mut stopped: watch::Receiver<bool>) {
    while !wait_or_stop(HISTORY_INTERVAL, &mut stopped).await {
        state.history.record(&state.metrics, state.service.now());
    }
}

async fn maintain_signing_keys(state: AppState, mut stopped: watch::Receiver<bool>) {
    let keys = state.service.signing_keys();
    while !wait_or_stop(KEY_CHECK_INTERVAL, &mut stopped).await {
        let now = state.service.now();
        if let Err(error) = keys.reload_if_changed(now).await {
            tracing::warn!(error = %error, "reloading the signing keys failed; will retry");
            continue;
        }
        if let Err(error) = keys.rotate_if_due(now).await {
            tracing::warn!(error = %error, "rotating the signing key failed; will retry");
        }
        if let Err(error) = keys.retire_expired(now).await {
            tracing::warn!(error = %error, "retiring expired signing keys failed; will retry");
        }
    }
}

/// Seals new audit events into the chain, in batches. Writers append events unsealed, so
/// they never wait for the chain; on PostgreSQL one instance at a time seals (the others'
/// attempts return at once), so every instance runs this.
async fn seal_audit(state: AppState, mut stopped: watch::Receiver<bool>) {
    while !wait_or_stop(AUDIT_SEAL_INTERVAL, &mut stopped).await {
        loop {
            match state.service.seal_audit(AUDIT_SEAL_BATCH).await {
                Ok(sealed) if sealed < u64::from(AUDIT_SEAL_BATCH) => break,
                Ok(_) if *stopped.borrow() => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(error) => {
                    tracing::warn!(error = %error, "sealing audit events failed; will retry");
                    break;
                }
            }
        }
    }
}

async fn purge(state: AppState, mut stopped: watch::Receiver<bool>) {
    while !wait_or_stop(PURGE_INTERVAL, &mut stopped).await {
        let store = state.service.store();
        let now = state.service.now();
        // Events older than the retention window.
        let before = now.minus(state.event_retention);
        in_batches(
            EVENT_PURGE_BATCH,
            &stopped,
            "purging old events failed",
            |batch| store.purge_events(before, batch),
        )
        .await;
        // DPoP proof ids that would be refused as stale anyway: the replay cache holds about
        // one proof window's worth of refreshes.
        in_batches(
            PROOF_PURGE_BATCH,
            &stopped,
            "purging expired DPoP proof ids failed",
            |batch| store.purge_dpop_proofs(now, batch),
        )
        .await;
        // Sealed successor pairs whose replay window closed at least PAIR_PURGE_MARGIN ago: no
        // refresh can be answered with them any more (`sessiond_core::refresh::decide_refresh`),
        // and each is some 570 bytes per refresh (`bench/growth.sh`).
        let window = state.service.policy().replay_window();
        let spent_before = now.minus(window).minus(PAIR_PURGE_MARGIN);
        in_batches(
            PAIR_PURGE_BATCH,
            &stopped,
            "purging old successor pairs failed",
            |batch| store.purge_successor_pairs(spent_before, batch),
        )
        .await;
        let total = in_batches(PURGE_BATCH, &stopped, "purge failed", |batch| {
            state.service.purge_batch(batch)
        })
        .await;
        if total > 0 {
            tracing::info!(sessions = total, "purged expired and revoked sessions");
        }
        // A retired signing key's row (its secret already wiped) stays as long as sessions do.
        let retention = state.service.policy().retention;
        let keys = state.service.signing_keys();
        if let Err(error) = keys.purge_retired(retention, state.service.now()).await {
            tracing::warn!(error = %error, "purging retired signing keys failed; will retry");
        }
    }
}

/// Runs `purge` (one batch of at most `batch` rows, returning how many it removed) until a
/// batch comes back short or the server stops, 20 ms apart so that queued requests use the
/// writer in between; a failure is logged as `failed` and left to the next round. Returns how
/// many rows the batches removed in all.
async fn in_batches<F, Fut, E>(
    batch: u32,
    stopped: &watch::Receiver<bool>,
    failed: &str,
    purge: F,
) -> u64
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64, E>>,
    E: std::fmt::Display,
{
    let mut total = 0;
    loop {
        match purge(batch).await {
            Ok(removed) => {
                total += removed;
                if removed < u64::from(batch) || *stopped.borrow() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "{failed}; will retry");
                break;
            }
        }
    }
    total
}

/// The task that refreshes the storage-backed gauges.
#[derive(Debug)]
pub(crate) struct GaugeRefresh {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl GaugeRefresh {
    /// Starts counting active sessions now, and again after each count's [`gauge_pause`].
    pub(crate) fn spawn(state: AppState) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let handle = tokio::spawn(async move {
            loop {
                let started = std::time::Instant::now();
                let pause = match state.store_stats().await {
                    Ok(stats) => {
                        state.metrics.set_store_stats(&stats);
                        gauge_pause(started.elapsed())
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "counting active sessions failed");
                        GAUGE_REFRESH_INTERVAL
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Self { stop, handle }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// The pause before the next count of the gauges, after one that took `took`:
/// [`GAUGE_PAUSE_PER_COUNT`] times `took`, within [`GAUGE_REFRESH_INTERVAL`] and
/// [`GAUGE_PAUSE_MAX`]. (On SQLite, counting a million sessions takes one to two seconds of
/// CPU.)
fn gauge_pause(took: Duration) -> Duration {
    took.saturating_mul(GAUGE_PAUSE_PER_COUNT)
        .clamp(GAUGE_REFRESH_INTERVAL, GAUGE_PAUSE_MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{GAUGE_PAUSE_MAX, GAUGE_REFRESH_INTERVAL, gauge_pause};

    #[test]
    fn the_gauges_are_counted_less_often_as_counting_grows_slower() {
        // A small store: every 10 s.
        assert_eq!(
            gauge_pause(Duration::from_millis(3)),
            GAUGE_REFRESH_INTERVAL
        );
        assert_eq!(
            gauge_pause(Duration::from_millis(100)),
            GAUGE_REFRESH_INTERVAL
        );
        // A count of 1.5 s (a million sessions): 150 s later, about 1 % of a core.
        assert_eq!(
            gauge_pause(Duration::from_millis(1_500)),
            Duration::from_secs(150)
        );
        // One count stalled for minutes: the gauges are still counted again within 5 minutes.
        assert_eq!(gauge_pause(Duration::from_secs(600)), GAUGE_PAUSE_MAX);
        assert_eq!(gauge_pause(Duration::MAX), GAUGE_PAUSE_MAX);
    }
}
