//! The tailer: reads new events from the store in cursor order and publishes them to the hub.
//!
//! Events come from every process sharing the store. Those written by this process wake the
//! tailer at once (the instrumented store pokes the hub after each write), as do revocations
//! that other instances announce on the revocation feed; everything else is found by a short
//! poll. With no stream open, pokes do not trigger a read and the poll alone keeps the cursor
//! current, so a process without listeners reads its events once a poll, in pages. The cursor only
//! moves forward, past events the store has made final, so each event is
//! published once, in order.

use std::time::Duration;

use sessiond_core::event::{EventCursor, EventFilter};
use tokio::sync::watch;

use crate::state::AppState;

/// Events read and published at a time: a quarter of a stream's queue
/// ([`super::hub::STREAM_QUEUE_DEPTH`]), so one page never fills a queue by itself.
const PAGE: u32 = 256;
/// The first pause after a failed read; doubled on each failure in a row.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest pause between failed reads.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Publishes events until `stopped` turns true. `poll` bounds how late an event written by
/// another process reaches this one's streams.
pub(crate) async fn run(state: AppState, poll: Duration, mut stopped: watch::Receiver<bool>) {
    let store = state.service.store().clone();
    let hub = state.events.clone();
    let mut retry = RETRY_MIN;
    let mut cursor = loop {
        match store.latest_event_cursor().await {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::warn!(error = %error, "cannot read the event position; will retry");
                if pause(retry, &mut stopped).await {
                    return;
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    };
    let everything = EventFilter::default();
    loop {
        match drain(&state, &everything, cursor).await {
            Ok(newest) => {
                cursor = newest;
                retry = RETRY_MIN;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot read events; will retry");
                if pause(retry, &mut stopped).await {
                    return;
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        }
        if hub.open_streams() == 0 {
            // Nobody listens: keep up at the poll's pace, in pages, rather than with a read
            // after every write of this process (the refresh path's hottest neighbour). A
            // write once someone listens again ends the wait at once.
            let idle = tokio::time::sleep(poll);
            tokio::pin!(idle);
            loop {
                tokio::select! {
                    () = &mut idle => break,
                    () = hub.poked() => {
                        if hub.open_streams() > 0 {
                            break;
                        }
                    }
                    _ = stopped.changed() => return,
                }
            }
            continue;
        }
        tokio::select! {
            () = hub.poked() => {
                // Let the writes of the next few milliseconds join this read.
                if pause(COALESCE, &mut stopped).await {
                    return;
                }
            }
            () = tokio::time::sleep(poll) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// How long the tailer lets writes accumulate after a wake-up before it reads: a read per
/// write would cost the store more than the streams gain from the last milliseconds.
const COALESCE: Duration = Duration::from_millis(5);

/// Publishes every final event after `cursor`; returns the new cursor.
async fn drain(
    state: &AppState,
    filter: &EventFilter,
    mut cursor: EventCursor,
) -> Result<EventCursor, sessiond_core::store::StoreError> {
    loop {
        let events = state
            .service
            .store()
            .events_after(cursor, filter, PAGE)
            .await?;
        let Some(last) = events.last() else {
            return Ok(cursor);
        };
        cursor = last.cursor;
        let full_page = events.len() == PAGE as usize;
        state.events.publish(events);
        if !full_page {
            return Ok(cursor);
        }
    }
}

/// Waits `period`; `true` when asked to stop meanwhile.
async fn pause(period: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}
