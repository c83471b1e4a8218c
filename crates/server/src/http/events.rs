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
//!
//! Streams are capped per user and in total (see [`crate::events::hub::StreamLimits`]). A
//! WebSocket client sends nothing but control frames, so inbound frames and messages are
//! limited to [`MAX_INBOUND_MESSAGE`] bytes (a larger one closes the socket with 1009), and its
//! buffers are small. Browsers do not apply CORS to WebSockets, so an upgrade that carries an
//! `Origin` must come from the server's own origin or one of `SESSIOND_CORS_ORIGINS`.

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
use crate::events::hub::StreamPermit;
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
/// The largest frame or message a WebSocket client may send: it has nothing to send but
/// control frames (at most 125 bytes each).
pub(crate) const MAX_INBOUND_MESSAGE: usize = 1024;
/// The read buffer of a WebSocket (tungstenite allocates it up front; its default is 128 KiB).
const WEBSOCKET_READ_BUFFER: usize = 4 * 1024;
/// What a WebSocket may hold unsent before writes fail: far above one event, far below what
/// many sockets could make of it.
const WEBSOCKET_MAX_WRITE_BUFFER: usize = 1024 * 1024;

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
        if !origin_allowed(&state, &headers) {
            return Err(ApiError::Forbidden(
                "a WebSocket from this Origin is not allowed: it must be this server's own or one of SESSIOND_CORS_ORIGINS",
            ));
        }
        let upgrade = upgrade.map_err(|rejection| {
            ApiError::BadRequest(format!("invalid WebSocket upgrade: {rejection}"))
        })?;
        let permit = admit(&state, &caller)?;
        let stream = EventStream::open(state, request)
            .await
            .map_err(sessiond_core::Error::from)?;
        return Ok(upgrade
            .read_buffer_size(WEBSOCKET_READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(WEBSOCKET_MAX_WRITE_BUFFER)
            .max_frame_size(MAX_INBOUND_MESSAGE)
            .max_message_size(MAX_INBOUND_MESSAGE)
            .on_upgrade(move |socket| serve_websocket(socket, stream, permit, heartbeat))
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
    let permit = admit(&state, &caller)?;
    let stream = EventStream::open(state, request)
        .await
        .map_err(sessiond_core::Error::from)?;
    Ok(serve_sse(stream, permit, heartbeat).into_response())
}

/// A place for one more stream of `caller`: counted against its user when it is one.
fn admit(state: &AppState, caller: &Caller) -> Result<StreamPermit, ApiError> {
    let user = match caller {
        Caller::User(token) => Some(UserId::from_trusted(token.user_id.clone())),
        Caller::Admin(_) => None,
    };
    state
        .events
        .admit(user.as_ref())
        .map_err(ApiError::TooManyStreams)
}

/// Whether a WebSocket upgrade may proceed given its `Origin`: none (not a browser), the
/// server's own (the origin's host and port are the request's `Host`), or a listed CORS
/// origin.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if state
        .cors_origins
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    matches!((authority, host), (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host))
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
    permit: StreamPermit,
    heartbeat: Duration,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    // The permit lives as long as the response body, which ends with the stream or when the
    // client goes away.
    let state = (stream, permit, true);
    let events = futures_util::stream::unfold(state, |(mut stream, permit, first)| async move {
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
        Some((Ok(message), (stream, permit, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat))
}

async fn serve_websocket(
    mut socket: WebSocket,
    mut stream: EventStream,
    _permit: StreamPermit,
    heartbeat: Duration,
) {
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
                Some(Err(error)) => {
                    if is_too_big(error) {
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame {
                                code: close_code::SIZE,
                                reason: "message too big".into(),
                            })))
                            .await;
                    }
                    return;
                }
                // The client closed.
                None | Some(Ok(Message::Close(_))) => return,
                // Pongs and anything else the client sends are ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Whether a read failed on a frame or message over [`MAX_INBOUND_MESSAGE`].
fn is_too_big(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    error
        .into_inner()
        .downcast::<Error>()
        .is_ok_and(|error| matches!(*error, Error::Capacity(_)))
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
