//! `GET /v1/events`: the live event stream, as a WebSocket or as Server-Sent Events.
//!
//! A user's access token opens a stream of that user's events, which ends (after the event)
//! when the token's own session is revoked or expires; an admin key opens every user's, or one
//! user's with `user_id`. `types` narrows the stream to some event types. A client resumes
//! after the last event it saw with `since=CURSOR` (either transport) or, for SSE, the standard
//! `Last-Event-ID` header; events still retained are replayed first, then the stream goes live.
//!
//! Each message is the event's JSON with its `cursor`. The last message says why the stream
//! ended: `{"type":"stream.closed","reason":"session_ended|lagged|unavailable|shutdown"}`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sessiond_core::UserId;
use sessiond_core::event::{self, EventCursor, EventFilter};

use super::error::ApiError;
use super::extract::{Caller, Read, require};
use crate::events::stream::{EndReason, EventStream, Next, StreamRequest};
use crate::state::AppState;

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Resume after this cursor.
    since: Option<String>,
    /// Comma-separated event types.
    types: Option<String>,
    /// Admin only: one user's events.
    user_id: Option<String>,
}

/// How the stream tells the client when to reconnect, in milliseconds (SSE `retry:`).
const SSE_RETRY: Duration = Duration::from_secs(1);

pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::BadRequest(format!("invalid query: {}", rejection.body_text()))
    })?;
    let wants_websocket = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let last_event_id = if wants_websocket {
        None
    } else {
        headers
            .get("last-event-id")
            .map(|value| value.to_str().unwrap_or("\u{0}"))
    };
    let request = stream_request(&caller, &query, last_event_id)?;
    let heartbeat = state.event_heartbeat;
    if wants_websocket {
        let upgrade = upgrade.map_err(|rejection| {
            ApiError::BadRequest(format!("invalid WebSocket upgrade: {rejection}"))
        })?;
        let stream = EventStream::open(state, request)
            .await
            .map_err(sessiond_core::Error::from)?;
        return Ok(upgrade
            .on_upgrade(move |socket| serve_websocket(socket, stream, heartbeat))
            .into_response());
    }
    let accepts_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"));
    if !accepts_sse {
        return Err(ApiError::BadRequest(
            "GET /v1/events is a WebSocket upgrade or a request with Accept: text/event-stream"
                .into(),
        ));
    }
    let stream = EventStream::open(state, request)
        .await
        .map_err(sessiond_core::Error::from)?;
    Ok(serve_sse(stream, heartbeat).into_response())
}

fn stream_request(
    caller: &Caller,
    query: &EventsQuery,
    last_event_id: Option<&str>,
) -> Result<StreamRequest, ApiError> {
    let since = last_event_id
        .or(query.since.as_deref())
        .filter(|text| !text.is_empty())
        .map(|text| {
            text.parse::<EventCursor>().map_err(|_| {
                ApiError::BadRequest(
                    "invalid since (or Last-Event-ID): must be a cursor of an earlier event".into(),
                )
            })
        })
        .transpose()?;
    let kinds = query
        .types
        .as_deref()
        .map(|types| {
            types
                .split(',')
                .map(|name| {
                    event::event_type(name.trim()).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "invalid types: {:?} is not an event type (known: {})",
                            name.trim(),
                            event::EVENT_TYPES.join(", ")
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let (user_id, own_session) = match caller {
        Caller::Admin(scope) => {
            require::<Read>(*scope)?;
            let user_id = query
                .user_id
                .clone()
                .map(|user| UserId::parse(user, "user_id"))
                .transpose()?;
            (user_id, None)
        }
        Caller::User(token) => {
            if query.user_id.is_some() {
                return Err(ApiError::BadRequest(
                    "invalid user_id: only an admin key chooses the user; a user's stream is its own"
                        .into(),
                ));
            }
            (
                Some(UserId::from_trusted(token.user_id.clone())),
                Some(token.session_id),
            )
        }
    };
    Ok(StreamRequest {
        filter: EventFilter { user_id, kinds },
        since,
        own_session,
    })
}

fn serve_sse(
    stream: EventStream,
    heartbeat: Duration,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let events = futures_util::stream::unfold((stream, true), |(mut stream, first)| async move {
        let next = stream.next().await?;
        let mut message = match next {
            Next::Event(event) => SseEvent::default()
                .id(event.cursor.to_string())
                .data(event.json.as_str()),
            Next::End(reason) => SseEvent::default().data(reason.message()),
        };
        if first {
            message = message.retry(SSE_RETRY);
        }
        Some((Ok(message), (stream, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat))
}

async fn serve_websocket(mut socket: WebSocket, mut stream: EventStream, heartbeat: Duration) {
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.tick().await;
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Next::Event(event)) => {
                    if socket.send(Message::Text(event.json.as_str().into())).await.is_err() {
                        return;
                    }
                }
                Some(Next::End(reason)) => {
                    let _ = socket.send(Message::Text(reason.message().into())).await;
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code_of(reason),
                            reason: reason.as_str().into(),
                        })))
                        .await;
                    finish_closing(&mut socket).await;
                    return;
                }
                None => return,
            },
            _ = ticks.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            received = socket.recv() => match received {
                // The client closed, or the connection broke.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Pongs and anything else the client sends are ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Completes the closing handshake: reads (and drops) what the client still sends until its
/// Close frame, for at most [`CLOSE_GRACE`]. Dropping the connection at once could reset it
/// while the client's last frames (pongs) sit unread, and a reset can destroy the Close frame
/// before the client reads it.
async fn finish_closing(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// How long a closing stream waits for the client's Close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

fn close_code_of(reason: EndReason) -> u16 {
    match reason {
        EndReason::SessionEnded => close_code::POLICY,
        EndReason::Lagged | EndReason::Unavailable => close_code::AGAIN,
        EndReason::Shutdown => close_code::AWAY,
    }
}
