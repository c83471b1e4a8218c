//! The tailer: reads new events from the store in cursor order and publishes them to the hub.
//!
//! Events come from every process sharing the store. Those written by this process wake the
//! tailer at once (the instrumented store pokes the hub after each write), as do revocations
//! that other instances announce on the revocation feed; everything else is found by a short
//! poll. With no stream open, pokes do not trigger a read, and once a poll the cursor moves to
//! the newest final event without reading the events it passes: nobody would receive them
//! ([`catch_up`] says why no stream can miss one). The cursor only moves forward, past events
//! the store has made final, so each event is published once, in order.

use std::time::Duration;

use sessiond_core::event::{EventCursor, EventFilter};
use sessiond_core::store::StoreError;
use tokio::sync::watch;

use super::EventHub;
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
        match catch_up(&state, &everything, cursor).await {
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
            // Nobody listens: keep up at the poll's pace rather than after every write of this
            // process (the refresh path's hottest neighbour). A write once someone listens
            // again ends the wait at once.
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

/// Brings `cursor` up to the newest final event and returns it: while a stream is open, by
/// reading and publishing every event after it ([`drain`]); while none is, by moving it there
/// without reading them, unless a stream subscribed in the meantime.
///
/// A stream subscribes before it reads its backlog. One that subscribes after the second look
/// at the hub reads its backlog after the newest event's position was read here, so it finds
/// every event up to that position itself, and the events after it reach it from the tailer.
/// One that subscribed between the two looks may have read its backlog before an event the
/// cursor would pass over; the count of subscriptions made tells, and the events are then read
/// and published from the old cursor (the stream ignores those its backlog held).
async fn catch_up(
    state: &AppState,
    filter: &EventFilter,
    cursor: EventCursor,
) -> Result<EventCursor, StoreError> {
    let store = state.service.store();
    match pass_over(&state.events, cursor, || store.latest_event_cursor()).await? {
        Some(moved) => Ok(moved),
        None => drain(state, filter, cursor).await,
    }
}

/// The cursor moved to the position `newest` reads, if no stream was open before the read and
/// none subscribed until after it ([`catch_up`]); `None` when the events must be read instead.
/// Never moves the cursor back.
async fn pass_over<F, Read>(
    hub: &EventHub,
    cursor: EventCursor,
    newest: F,
) -> Result<Option<EventCursor>, StoreError>
where
    F: FnOnce() -> Read,
    Read: Future<Output = Result<EventCursor, StoreError>>,
{
    let before = hub.listeners();
    if before.open > 0 {
        return Ok(None);
    }
    let newest = newest().await?;
    Ok((hub.listeners().made == before.made).then(|| cursor.max(newest)))
}

/// Publishes every final event after `cursor`; returns the new cursor.
async fn drain(
    state: &AppState,
    filter: &EventFilter,
    mut cursor: EventCursor,
) -> Result<EventCursor, StoreError> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::hub::Interest;

    fn at(sequence: i64) -> EventCursor {
        EventCursor { epoch: 0, sequence }
    }

    fn everyone() -> Interest {
        Interest {
            user_id: None,
            kinds: None,
        }
    }

    #[tokio::test]
    async fn with_no_stream_the_cursor_moves_to_the_newest_event_and_never_back() {
        let hub = Arc::new(EventHub::default());
        let moved = pass_over(&hub, at(5), || async { Ok(at(9)) }).await;
        assert_eq!(moved.expect("read"), Some(at(9)));
        let kept = pass_over(&hub, at(5), || async { Ok(at(3)) }).await;
        assert_eq!(kept.expect("read"), Some(at(5)));
    }

    #[tokio::test]
    async fn with_a_stream_open_the_events_are_read() {
        let hub = Arc::new(EventHub::default());
        let _stream = hub.subscribe(everyone());
        let moved = pass_over(&hub, at(5), || async {
            panic!("no position is read while a stream is open")
        })
        .await;
        assert_eq!(moved.expect("no read"), None);
    }

    #[tokio::test]
    async fn a_stream_that_subscribed_during_the_read_has_the_events_read_even_if_gone_again() {
        let hub = Arc::new(EventHub::default());
        let during = Arc::clone(&hub);
        let moved = pass_over(&hub, at(5), move || async move {
            // It subscribed, may have read its backlog before event 9, and closed again.
            drop(during.subscribe(everyone()));
            Ok(at(9))
        })
        .await;
        assert_eq!(moved.expect("read"), None);
    }

    #[tokio::test]
    async fn a_failed_read_is_an_error() {
        let hub = Arc::new(EventHub::default());
        let failed = pass_over(&hub, at(5), || async {
            Err(StoreError::Backend("down".into()))
        })
        .await;
        assert!(failed.is_err());
    }
}
