//! One client's event stream, independent of its transport: what was missed since its cursor
//! (read from the store), then what the hub publishes, each event once and in cursor order, and
//! finally why it ended.

use std::collections::VecDeque;
use std::sync::Arc;

use sessiond_core::event::{EventCursor, EventFilter, SESSION_EXPIRED, SESSION_REVOKED};
use sessiond_core::store::StoreError;
use sessiond_core::{SessionId, Timestamp};
use tokio::sync::watch;

use super::hub::{Interest, PublishedEvent, Subscription};
use crate::state::AppState;

/// Events read from the store per query while catching up.
const REPLAY_PAGE: u32 = 200;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The session whose access token opened the stream was revoked or expired.
    SessionEnded,
    /// The client did not keep up; it should reconnect from its last cursor.
    Lagged,
    /// Storage failed while catching up; reconnect from the last cursor.
    Unavailable,
    /// The server is shutting down; reconnect (to another instance) from the last cursor.
    Shutdown,
}

impl EndReason {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SessionEnded => "session_ended",
            Self::Lagged => "lagged",
            Self::Unavailable => "unavailable",
            Self::Shutdown => "shutdown",
        }
    }

    /// The last message of a stream that ends for this reason.
    pub fn message(self) -> String {
        format!(r#"{{"type":"stream.closed","reason":"{}"}}"#, self.as_str())
    }
}

/// What a stream yields next.
#[derive(Debug)]
pub enum Next {
    /// An event to send.
    Event(Arc<PublishedEvent>),
    /// The stream is over.
    End(EndReason),
}

/// Who opened a stream and what it asked for.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Which events.
    pub filter: EventFilter,
    /// Resume after this cursor; only new events when `None`.
    pub since: Option<EventCursor>,
    /// The session of the access token that opened it (none for an admin key): the stream
    /// ends when that session does.
    pub own_session: Option<SessionId>,
}

/// A stream in progress.
#[derive(Debug)]
pub struct EventStream {
    state: AppState,
    request: StreamRequest,
    subscription: Subscription,
    closing: watch::Receiver<bool>,
    /// Every event at or before this cursor has been yielded or passed over; nothing at or
    /// before it is yielded again, and the store is read after it.
    position: EventCursor,
    /// For a stream opened without a cursor: events stamped before it opened are passed
    /// over. They may still be on their way when it opens (an event's position becomes final
    /// only once older transactions end), and they are not news to a client that just
    /// connected.
    not_before: Option<Timestamp>,
    /// Events read from the store and not yet yielded.
    backlog: VecDeque<Arc<PublishedEvent>>,
    /// Whether the backlog since the requested cursor has been read in full.
    caught_up: bool,
    /// The end to report next, if the stream is ending.
    ending: Option<EndReason>,
    ended: bool,
}

impl EventStream {
    /// Opens a stream: subscribes first, so that nothing published while the backlog is read
    /// can slip between the two. A stream without a cursor starts after the newest event
    /// stored when it opens and passes over any stamped before that instant, so it carries
    /// what happens from then on.
    ///
    /// # Errors
    /// [`StoreError`] when that position cannot be read.
    pub async fn open(state: AppState, request: StreamRequest) -> Result<Self, StoreError> {
        let subscription = state.events.subscribe(Interest {
            user_id: request.filter.user_id.clone(),
            kinds: request.filter.kinds.clone(),
        });
        let (position, not_before) = match request.since {
            Some(since) => (since, None),
            None => (
                state.service.store().latest_event_cursor().await?,
                Some(state.service.now()),
            ),
        };
        let closing = state.events.closing();
        Ok(Self {
            caught_up: false,
            position,
            not_before,
            state,
            request,
            subscription,
            closing,
            backlog: VecDeque::new(),
            ending: None,
            ended: false,
        })
    }

    /// The next event, or why the stream ended; `None` once the end has been reported.
    pub async fn next(&mut self) -> Option<Next> {
        if self.ended {
            return None;
        }
        let next = match self.ending.take() {
            Some(reason) => Next::End(reason),
            None => self.next_event().await,
        };
        match &next {
            Next::Event(event) => {
                if self.request.own_session.is_some()
                    && event.session_id == self.request.own_session
                    && (event.kind == SESSION_REVOKED || event.kind == SESSION_EXPIRED)
                {
                    self.ending = Some(EndReason::SessionEnded);
                }
            }
            Next::End(_) => self.ended = true,
        }
        Some(next)
    }

    async fn next_event(&mut self) -> Next {
        if *self.closing.borrow() {
            return Next::End(EndReason::Shutdown);
        }
        while !self.caught_up {
            if let Some(event) = self.next_from_backlog() {
                return Next::Event(event);
            }
            let after = self.position;
            let page = self
                .state
                .service
                .store()
                .events_after(after, &self.request.filter, REPLAY_PAGE)
                .await;
            match page {
                Ok(events) => {
                    self.caught_up = events.len() < REPLAY_PAGE as usize;
                    self.backlog.extend(
                        events
                            .into_iter()
                            .map(|event| Arc::new(PublishedEvent::new(event))),
                    );
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot read events for a stream");
                    return Next::End(EndReason::Unavailable);
                }
            }
        }
        if let Some(event) = self.next_from_backlog() {
            return Next::Event(event);
        }
        loop {
            let received = tokio::select! {
                received = self.subscription.recv() => received,
                _ = self.closing.changed() => return Next::End(EndReason::Shutdown),
            };
            match received {
                // Already handled from the backlog.
                Some(event) if event.cursor <= self.position => {}
                Some(event) => {
                    self.position = event.cursor;
                    if self.wanted(&event) {
                        return Next::Event(event);
                    }
                }
                None if self.subscription.lagged() => return Next::End(EndReason::Lagged),
                None => return Next::End(EndReason::Shutdown),
            }
        }
    }

    /// The next backlog event to yield, passing over unwanted ones.
    fn next_from_backlog(&mut self) -> Option<Arc<PublishedEvent>> {
        while let Some(event) = self.backlog.pop_front() {
            self.position = event.cursor;
            if self.wanted(&event) {
                return Some(event);
            }
        }
        None
    }

    fn wanted(&self, event: &PublishedEvent) -> bool {
        self.not_before.is_none_or(|opened| event.at >= opened)
    }
}
